-- Session windows merge records closer than the gap.
CREATE STREAM clicks (user STRING KEY, page STRING)
    WITH (kafka_topic='clicks', partitions=1, value_format='JSON');
CREATE TABLE sessions AS
    SELECT user, COUNT(*) AS n, LATEST_BY_OFFSET(page) AS last_page
    FROM clicks WINDOW SESSION (5 MINUTES) GROUP BY user;
