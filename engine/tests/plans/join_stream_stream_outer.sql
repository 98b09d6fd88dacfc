-- A full outer stream-stream join with a grace period: unmatched rows wait for the window.
CREATE STREAM lefts (id INT KEY, a STRING)
    WITH (kafka_topic='lefts', partitions=1, value_format='JSON');
CREATE STREAM rights (id INT KEY, b STRING)
    WITH (kafka_topic='rights', partitions=1, value_format='JSON');
CREATE STREAM both_sides AS
    SELECT ROWKEY AS k, l.a, r.b
    FROM lefts l FULL OUTER JOIN rights r WITHIN (1 MINUTE, 2 MINUTES) GRACE PERIOD 30 SECONDS
    ON l.id = r.id;
