-- q5, hot items: per ten-second window sliding every two seconds, the auctions with the most
-- bids. Each auction's count per window, final once the window closes; those final counts,
-- read back as a windowed stream, give the highest count per window; and each count joined
-- with its window's highest on the window's start, a foreign key, keeps the hot ones.
CREATE TABLE nexmark_q5_counts AS
  SELECT auction, COUNT(*) AS num
  FROM bid WINDOW HOPPING (SIZE 10 SECONDS, ADVANCE BY 2 SECONDS, GRACE PERIOD 0 SECONDS)
  GROUP BY auction EMIT FINAL;
CREATE STREAM nexmark_q5_final (auction BIGINT KEY, num BIGINT)
  WITH (kafka_topic='NEXMARK_Q5_COUNTS', value_format='JSON', window_type='HOPPING',
    window_size='10 SECONDS');
CREATE TABLE nexmark_q5_max AS
  SELECT WINDOWSTART AS starttime, MAX(num) AS maxn
  FROM nexmark_q5_final
  GROUP BY WINDOWSTART;
CREATE TABLE nexmark_q5 AS
  SELECT c.auction AS auction, c.num AS num, c.windowstart AS starttime
  FROM nexmark_q5_counts c JOIN nexmark_q5_max m ON c.windowstart = m.starttime
  WHERE c.num >= m.maxn;
