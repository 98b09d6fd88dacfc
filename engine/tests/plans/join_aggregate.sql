-- A join aggregated in the same query.
CREATE STREAM clicks (user STRING KEY, page STRING)
    WITH (kafka_topic='clicks', partitions=1, value_format='JSON');
CREATE TABLE users (id STRING PRIMARY KEY, region STRING)
    WITH (kafka_topic='users', partitions=1, value_format='JSON');
CREATE TABLE clicks_per_region AS
    SELECT u.region, COUNT(*) AS n
    FROM clicks c JOIN users u ON c.user = u.id
    GROUP BY u.region;
