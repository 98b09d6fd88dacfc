-- A filter and a projection over a stream.
CREATE STREAM orders (id INT KEY, item STRING, amount DOUBLE, tags ARRAY<STRING>)
    WITH (kafka_topic='orders', partitions=2, value_format='JSON');
CREATE STREAM big AS
    SELECT id, UCASE(item) AS item, amount * 2 AS doubled
    FROM orders WHERE amount > 10 EMIT CHANGES;
