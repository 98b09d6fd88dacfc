-- Nexmark's three kinds of event, one topic each, as JSON objects whose fields are the
-- generator's (the `nexmark` crate's), each record's time its `date_time`.
CREATE STREAM person (id BIGINT, name STRING, email_address STRING, credit_card STRING,
    city STRING, state STRING, date_time BIGINT, extra STRING)
  WITH (kafka_topic='nexmark-person', value_format='JSON', timestamp='date_time', partitions=1);
CREATE STREAM auction (id BIGINT, item_name STRING, description STRING, initial_bid BIGINT,
    reserve BIGINT, date_time BIGINT, expires BIGINT, seller BIGINT, category BIGINT, extra STRING)
  WITH (kafka_topic='nexmark-auction', value_format='JSON', timestamp='date_time', partitions=1);
CREATE STREAM bid (auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING,
    date_time BIGINT, extra STRING)
  WITH (kafka_topic='nexmark-bid', value_format='JSON', timestamp='date_time', partitions=1);
-- The persons again, as a table by id: the topic is keyed by each person's id.
CREATE TABLE person_by_id (id BIGINT PRIMARY KEY, name STRING, email_address STRING,
    credit_card STRING, city STRING, state STRING, date_time BIGINT, extra STRING)
  WITH (kafka_topic='nexmark-person', key_format='KAFKA', value_format='JSON',
    timestamp='date_time');
-- The auctions again, as a table by id: the topic is keyed by each auction's id.
CREATE TABLE auction_by_id (id BIGINT PRIMARY KEY, item_name STRING, description STRING,
    initial_bid BIGINT, reserve BIGINT, date_time BIGINT, expires BIGINT, seller BIGINT,
    category BIGINT, extra STRING)
  WITH (kafka_topic='nexmark-auction', key_format='KAFKA', value_format='JSON',
    timestamp='date_time');
