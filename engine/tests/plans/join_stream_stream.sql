-- An inner stream-stream join within a window.
CREATE STREAM orders (id INT KEY, item STRING)
    WITH (kafka_topic='orders', partitions=1, value_format='JSON');
CREATE STREAM shipments (id INT KEY, carrier STRING)
    WITH (kafka_topic='shipments', partitions=1, value_format='JSON');
CREATE STREAM shipped AS
    SELECT o.id AS id, o.item, s.carrier
    FROM orders o JOIN shipments s WITHIN 1 HOUR ON o.id = s.id;
