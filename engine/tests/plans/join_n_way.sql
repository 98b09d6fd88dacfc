-- A stream enriched by two tables in one query: two join stages.
CREATE STREAM clicks (user STRING KEY, page STRING)
    WITH (kafka_topic='clicks', partitions=1, value_format='JSON');
CREATE TABLE users (id STRING PRIMARY KEY, name STRING)
    WITH (kafka_topic='users', partitions=1, value_format='JSON');
CREATE TABLE pages (page STRING PRIMARY KEY, title STRING)
    WITH (kafka_topic='pages', partitions=1, value_format='JSON');
CREATE STREAM enriched AS
    SELECT c.page, c.user, u.name, p.title
    FROM clicks c
    JOIN users u ON c.user = u.id
    LEFT JOIN pages p ON c.page = p.page;
