-- A foreign-key table-table join: the result is keyed by the left table's key.
CREATE TABLE orders (id INT PRIMARY KEY, user_id STRING, amount DOUBLE)
    WITH (kafka_topic='orders', partitions=1, value_format='JSON');
CREATE TABLE users (id STRING PRIMARY KEY, name STRING)
    WITH (kafka_topic='users', partitions=1, value_format='JSON');
CREATE TABLE order_users AS
    SELECT o.id, o.amount, u.name FROM orders o JOIN users u ON o.user_id = u.id;
