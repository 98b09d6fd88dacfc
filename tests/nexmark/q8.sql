-- q8, new users: the persons who opened an auction in the ten-second window in which they
-- registered. Two windowed tables joined on key and window.
CREATE TABLE nexmark_q8_persons AS
  SELECT id, LATEST_BY_OFFSET(name) AS name
  FROM person WINDOW TUMBLING (SIZE 10 SECONDS)
  GROUP BY id;
CREATE TABLE nexmark_q8_sellers AS
  SELECT seller, COUNT(*) AS auctions
  FROM auction WINDOW TUMBLING (SIZE 10 SECONDS)
  GROUP BY seller;
CREATE TABLE nexmark_q8 AS
  SELECT p.id AS id, p.name AS name, p.windowstart AS starttime
  FROM nexmark_q8_persons p JOIN nexmark_q8_sellers a ON p.id = a.seller;
