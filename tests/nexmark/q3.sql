-- q3, local item suggestion: who sells in category 10 in Oregon, Idaho or California. Flink
-- joins the two append-only streams and keeps both sides; Eddy says the same as a join of the
-- auctions table with the persons table on a foreign key, since an auction may name a seller
-- whose person event comes after it.
CREATE TABLE nexmark_q3 AS
  SELECT a.id AS id, p.name AS name, p.city AS city, p.state AS state
  FROM auction_by_id a JOIN person_by_id p ON a.seller = p.id
  WHERE a.category = 10 AND (p.state = 'OR' OR p.state = 'ID' OR p.state = 'CA');
