-- q4, average selling price per category: each auction's winning bid (its highest bid
-- between its opening and its expiry), then the average of those per category. An
-- aggregate over an aggregate is two queries: the second reads the first's table, and
-- follows its changes (a higher bid replaces an auction's former maximum in the average).
-- The first table has two key columns, so its keys are JSON.
CREATE TABLE nexmark_q4_final WITH (key_format='JSON') AS
  SELECT a.id AS id, a.category AS category, MAX(b.price) AS final
  FROM bid b JOIN auction_by_id a ON b.auction = a.id
  WHERE b.date_time BETWEEN a.date_time AND a.expires
  GROUP BY a.id, a.category;
CREATE TABLE nexmark_q4 WITH (key_format='KAFKA') AS
  SELECT category, AVG(final) AS avg_final
  FROM nexmark_q4_final
  GROUP BY category;
