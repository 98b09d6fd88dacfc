-- q7, highest bid: per ten-second tumbling window, the bids at the window's highest price.
-- Each window's highest price, final once the window closes (a windowed aggregate without
-- GROUP BY, keyed by its window alone); each bid joined with its own window's final row on
-- the price keeps the highest, as soon as its window has closed.
CREATE TABLE nexmark_q7_max AS
  SELECT MAX(price) AS maxprice
  FROM bid WINDOW TUMBLING (SIZE 10 SECONDS, GRACE PERIOD 0 SECONDS)
  EMIT FINAL;
CREATE STREAM nexmark_q7 AS
  SELECT b.auction AS auction, b.price AS price, b.bidder AS bidder,
    b.date_time AS date_time, b.extra AS extra
  FROM bid b JOIN nexmark_q7_max m ON b.price = m.maxprice;
