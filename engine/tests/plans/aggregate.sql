-- GROUP BY two expressions without a window, with HAVING.
CREATE STREAM orders (id INT KEY, region STRING, item STRING, amount DOUBLE)
    WITH (kafka_topic='orders', partitions=2, value_format='JSON');
CREATE TABLE totals WITH (key_format='JSON') AS
    SELECT region, item, COUNT(*) AS n, SUM(amount) AS total, COLLECT_LIST(id) AS ids
    FROM orders WHERE amount > 0 GROUP BY region, item HAVING COUNT(*) > 1;
