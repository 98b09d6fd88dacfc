-- EXPLODE: one output row per array element.
CREATE STREAM orders (id INT KEY, tags ARRAY<STRING>, counts ARRAY<INT>)
    WITH (kafka_topic='orders', partitions=1, value_format='JSON');
CREATE STREAM tagged AS SELECT id, EXPLODE(tags) AS tag, EXPLODE(counts) AS n FROM orders;
