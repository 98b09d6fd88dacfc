CREATE TABLE discard_sink (auction BIGINT, bidder BIGINT, price BIGINT,
    `dateTime` TIMESTAMP_LTZ(3), extra STRING) WITH ('connector' = 'blackhole');
INSERT INTO discard_sink SELECT auction, bidder, price, `dateTime`, extra FROM bid;
