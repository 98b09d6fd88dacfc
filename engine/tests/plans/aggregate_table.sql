-- Aggregating a table takes a row's old value back out when it changes.
CREATE TABLE users (id STRING PRIMARY KEY, region STRING, age INT)
    WITH (kafka_topic='users', partitions=1, value_format='JSON');
CREATE TABLE by_region AS
    SELECT region, COUNT(*) AS n, SUM(age) AS ages FROM users GROUP BY region;
