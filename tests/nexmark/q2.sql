-- q2, selection: the bids on a set of auctions (every 123rd).
CREATE STREAM nexmark_q2 AS
  SELECT auction, price FROM bid WHERE auction % 123 = 0;
