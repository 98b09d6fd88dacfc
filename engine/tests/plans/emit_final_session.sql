-- EMIT FINAL over session windows.
CREATE STREAM clicks (user STRING KEY, page STRING)
    WITH (kafka_topic='clicks', partitions=1, value_format='JSON');
CREATE TABLE final_sessions AS
    SELECT user, COUNT(*) AS n
    FROM clicks WINDOW SESSION (30 SECONDS, GRACE PERIOD 5 SECONDS)
    GROUP BY user EMIT FINAL;
