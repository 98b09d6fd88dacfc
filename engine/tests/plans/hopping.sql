-- A hopping window.
CREATE STREAM clicks (user STRING KEY, page STRING, ms BIGINT)
    WITH (kafka_topic='clicks', partitions=1, value_format='JSON');
CREATE TABLE hops AS
    SELECT user, AVG(ms) AS mean, MAX(ms) AS longest
    FROM clicks WINDOW HOPPING (SIZE 30 SECONDS, ADVANCE BY 10 SECONDS) GROUP BY user;
