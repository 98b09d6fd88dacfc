-- A table filtered into a table: rows that stop passing become tombstones.
CREATE TABLE users (id STRING PRIMARY KEY, name STRING, age INT)
    WITH (kafka_topic='users', partitions=1, value_format='JSON');
CREATE TABLE adults AS SELECT id, name FROM users WHERE age >= 18;
