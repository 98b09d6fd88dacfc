CREATE TABLE discard_sink (auction BIGINT, price BIGINT, bidder BIGINT, `dateTime` TIMESTAMP(3),
    extra STRING)
  WITH ('connector' = 'blackhole');
INSERT INTO discard_sink
  SELECT B.auction, B.price, B.bidder, B.`dateTime`, B.extra
  FROM bid B
  JOIN (
    SELECT MAX(B1.price) AS maxprice, TUMBLE_ROWTIME(B1.`dateTime`, INTERVAL '10' SECOND) AS `dateTime`
    FROM bid B1
    GROUP BY TUMBLE(B1.`dateTime`, INTERVAL '10' SECOND)
  ) B1
  ON B.price = B1.maxprice
  WHERE B.`dateTime` BETWEEN B1.`dateTime` - INTERVAL '10' SECOND AND B1.`dateTime`;
