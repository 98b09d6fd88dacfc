-- q0, pass-through: every bid, as it is.
CREATE STREAM nexmark_q0 AS
  SELECT auction, bidder, price, date_time, extra FROM bid;
