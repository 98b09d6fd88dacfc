-- A tumbling window with a grace period and retention.
CREATE STREAM clicks (user STRING KEY, page STRING)
    WITH (kafka_topic='clicks', partitions=1, value_format='JSON');
CREATE TABLE per_minute AS
    SELECT user, COUNT(*) AS n, WINDOWSTART AS ws, WINDOWEND AS we
    FROM clicks WINDOW TUMBLING (SIZE 1 MINUTE, RETENTION 2 HOURS, GRACE PERIOD 10 SECONDS)
    GROUP BY user;
