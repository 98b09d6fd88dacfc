-- EMIT FINAL: one row per window, once it closes.
CREATE STREAM clicks (user STRING KEY, page STRING)
    WITH (kafka_topic='clicks', partitions=1, value_format='JSON');
CREATE TABLE finals AS
    SELECT user, COUNT(*) AS n
    FROM clicks WINDOW TUMBLING (SIZE 1 MINUTE, GRACE PERIOD 0 SECONDS)
    GROUP BY user EMIT FINAL;
