-- Nexmark's three kinds of event for Flink, read from the same JSON lines Eddy loads
-- ('{dir}' is the folder of the run's files). `dateTime` (quoted: a keyword in Flink 2) is
-- each event's time, with the watermark Nexmark's Flink suite declares.
CREATE TABLE person (id BIGINT, name STRING, email_address STRING, credit_card STRING,
    city STRING, state STRING, date_time BIGINT, extra STRING,
    `dateTime` AS TO_TIMESTAMP_LTZ(date_time, 3),
    WATERMARK FOR `dateTime` AS `dateTime` - INTERVAL '4' SECOND)
  WITH ('connector' = 'filesystem', 'path' = '{dir}/person.json', 'format' = 'json');
CREATE TABLE auction (id BIGINT, item_name STRING, description STRING, initial_bid BIGINT,
    reserve BIGINT, date_time BIGINT, expires BIGINT, seller BIGINT, category BIGINT,
    extra STRING,
    `dateTime` AS TO_TIMESTAMP_LTZ(date_time, 3),
    WATERMARK FOR `dateTime` AS `dateTime` - INTERVAL '4' SECOND)
  WITH ('connector' = 'filesystem', 'path' = '{dir}/auction.json', 'format' = 'json');
CREATE TABLE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING,
    date_time BIGINT, extra STRING,
    `dateTime` AS TO_TIMESTAMP_LTZ(date_time, 3),
    WATERMARK FOR `dateTime` AS `dateTime` - INTERVAL '4' SECOND)
  WITH ('connector' = 'filesystem', 'path' = '{dir}/bid.json', 'format' = 'json');
