-- A left stream-table join on a non-key column of the stream, which re-keys it.
CREATE STREAM clicks (id INT KEY, user STRING, page STRING)
    WITH (kafka_topic='clicks', partitions=1, value_format='JSON');
CREATE TABLE users (id STRING PRIMARY KEY, name STRING)
    WITH (kafka_topic='users', partitions=1, value_format='JSON');
CREATE STREAM enriched AS
    SELECT c.user, c.page, u.name
    FROM clicks c LEFT JOIN users u ON c.user = u.id
    WHERE c.page <> 'home';
