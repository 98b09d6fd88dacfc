-- A full outer table-table join on the primary key.
CREATE TABLE a (id INT PRIMARY KEY, x STRING)
    WITH (kafka_topic='a', partitions=1, value_format='JSON');
CREATE TABLE b (id INT PRIMARY KEY, y STRING)
    WITH (kafka_topic='b', partitions=1, value_format='JSON');
CREATE TABLE ab AS
    SELECT ROWKEY AS id, a.x, b.y FROM a FULL OUTER JOIN b ON a.id = b.id;
