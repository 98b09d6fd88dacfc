-- PARTITION BY re-keys a stream, with the timestamp taken from a column.
CREATE STREAM orders (id INT KEY, item STRING, ts BIGINT)
    WITH (kafka_topic='orders', partitions=2, value_format='JSON', timestamp='ts');
CREATE STREAM by_item WITH (key_format='DELIMITED') AS
    SELECT item, id, ts FROM orders PARTITION BY item EMIT CHANGES;
