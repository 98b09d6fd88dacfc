-- A join of two windowed streams: `*` lists each side's key, then its window bounds, then its
-- other columns, and the result is windowed as its sources are.
CREATE STREAM s1 (k INT KEY, id BIGINT)
    WITH (kafka_topic='left_topic', partitions=1, value_format='JSON', window_type='Tumbling', window_size='2 SECONDS');
CREATE STREAM s2 (k INT KEY, id BIGINT)
    WITH (kafka_topic='right_topic', partitions=1, value_format='JSON', window_type='Tumbling', window_size='2 SECONDS');
CREATE STREAM joined AS SELECT * FROM s1 JOIN s2 WITHIN 1 MINUTE ON s1.k = s2.k;
