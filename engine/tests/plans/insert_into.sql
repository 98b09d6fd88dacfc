-- INSERT INTO ... SELECT writes into an existing stream.
CREATE STREAM a (id INT KEY, v STRING)
    WITH (kafka_topic='a', partitions=1, value_format='JSON');
CREATE STREAM merged (id INT KEY, v STRING)
    WITH (kafka_topic='merged', partitions=1, value_format='JSON');
INSERT INTO merged SELECT id, CONCAT(v, '!') AS v FROM a;
