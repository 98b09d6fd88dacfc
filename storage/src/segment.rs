//! Segments and the decisions made over them: when to roll, what retention deletes, what
//! compaction drops. Everything here is a pure function over plain data.
//!
//! A segment is a run of consecutive batches of one partition, as in Kafka. The newest one is
//! active: appends go to it and neither retention nor compaction touches it. The log itself is
//! one RocksDB key per batch; segments are only bookkeeping in the `meta` column family.

use crate::config::TopicConfig;

/// Bookkeeping for one segment of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentMeta {
    /// Offset of the first batch in the segment.
    pub base_offset: i64,
    /// One past the last offset the segment covers.
    pub next_offset: i64,
    /// Bytes of batches in the segment.
    pub bytes: u64,
    /// Largest record timestamp in the segment.
    pub max_timestamp: i64,
    /// Wall-clock time of the first append, in ms.
    pub created_ms: i64,
    /// Wall-clock time of the last append, in ms.
    pub last_append_ms: i64,
}

/// Encoded size of a [`SegmentMeta`].
pub const SEGMENT_META_LEN: usize = 48;

impl SegmentMeta {
    /// A new, empty segment starting at `base_offset`.
    pub fn new(base_offset: i64, now_ms: i64) -> Self {
        SegmentMeta {
            base_offset,
            next_offset: base_offset,
            bytes: 0,
            max_timestamp: i64::MIN,
            created_ms: now_ms,
            last_append_ms: now_ms,
        }
    }

    /// Records a batch appended to this segment.
    pub fn add_batch(&mut self, next_offset: i64, bytes: usize, max_timestamp: i64, now_ms: i64) {
        self.next_offset = next_offset;
        self.bytes += bytes as u64;
        self.max_timestamp = self.max_timestamp.max(max_timestamp);
        self.last_append_ms = now_ms;
    }

    /// The stored form.
    pub fn encode(&self) -> [u8; SEGMENT_META_LEN] {
        let mut out = [0u8; SEGMENT_META_LEN];
        out[0..8].copy_from_slice(&self.base_offset.to_be_bytes());
        out[8..16].copy_from_slice(&self.next_offset.to_be_bytes());
        out[16..24].copy_from_slice(&self.bytes.to_be_bytes());
        out[24..32].copy_from_slice(&self.max_timestamp.to_be_bytes());
        out[32..40].copy_from_slice(&self.created_ms.to_be_bytes());
        out[40..48].copy_from_slice(&self.last_append_ms.to_be_bytes());
        out
    }

    /// Reads the stored form; `None` when it is not [`SEGMENT_META_LEN`] bytes.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != SEGMENT_META_LEN {
            return None;
        }
        let at = |i: usize| i64::from_be_bytes(bytes[i..i + 8].try_into().unwrap_or([0; 8]));
        Some(SegmentMeta {
            base_offset: at(0),
            next_offset: at(8),
            bytes: at(16) as u64,
            max_timestamp: at(24),
            created_ms: at(32),
            last_append_ms: at(40),
        })
    }
}

/// Whether the active segment must close before a batch of `incoming_bytes` is appended.
pub fn should_roll(
    active: &SegmentMeta,
    incoming_bytes: usize,
    now_ms: i64,
    config: &TopicConfig,
) -> bool {
    if active.bytes == 0 {
        return false;
    }
    active.bytes + incoming_bytes as u64 > config.segment_bytes
        || now_ms.saturating_sub(active.created_ms) >= config.segment_ms
}

/// How many of the oldest segments retention deletes now. The active (last) segment is never
/// deleted; deletion stops at the first segment the policy keeps, as in Kafka.
pub fn expired_segment_count(segments: &[SegmentMeta], config: &TopicConfig, now_ms: i64) -> usize {
    if !config.cleanup_policy.deletes() || segments.len() < 2 {
        return 0;
    }
    let mut remaining_bytes: u64 = segments.iter().map(|s| s.bytes).sum();
    let mut count = 0;
    for segment in &segments[..segments.len() - 1] {
        let too_old = config.retention_ms >= 0
            && segment.max_timestamp != i64::MIN
            && now_ms.saturating_sub(segment.max_timestamp) > config.retention_ms;
        let too_big = config.retention_bytes >= 0
            && remaining_bytes - segment.bytes >= config.retention_bytes as u64;
        if !(too_old || too_big) {
            break;
        }
        remaining_bytes -= segment.bytes;
        count += 1;
    }
    count
}

/// Whether compaction keeps the record at `offset`. One without a key (`None`) always. One with
/// a key compaction mapped to its latest offset (`Some(Some(latest))`) when it is that latest
/// record. One with a key compaction did not map (`Some(None)`) lies in the part compacted
/// before, where each key is left once, so it is its key's latest. A tombstone past
/// `delete.retention.ms` that is its key's latest goes too.
pub fn survives(
    key: Option<Option<i64>>,
    offset: i64,
    tombstone: bool,
    past_delete_retention: bool,
) -> bool {
    let expired = tombstone && past_delete_retention;
    match key {
        None => true,
        Some(None) => !expired,
        Some(Some(latest)) => latest == offset && !expired,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CleanupPolicy;

    fn seg(base: i64, next: i64, bytes: u64, max_ts: i64) -> SegmentMeta {
        SegmentMeta {
            base_offset: base,
            next_offset: next,
            bytes,
            max_timestamp: max_ts,
            created_ms: 0,
            last_append_ms: 0,
        }
    }

    #[test]
    fn segment_meta_round_trips() {
        let s = SegmentMeta {
            base_offset: 5,
            next_offset: 9,
            bytes: 1234,
            max_timestamp: -3,
            created_ms: 77,
            last_append_ms: 88,
        };
        assert_eq!(SegmentMeta::decode(&s.encode()), Some(s));
        assert_eq!(SegmentMeta::decode(&[1, 2, 3]), None);
    }

    #[test]
    fn rolls_on_size_and_age_but_never_an_empty_segment() {
        let cfg = TopicConfig {
            segment_bytes: 100,
            segment_ms: 1_000,
            ..TopicConfig::default()
        };
        let mut active = SegmentMeta::new(0, 0);
        assert!(!should_roll(&active, 500, 5_000, &cfg));
        active.add_batch(1, 60, 0, 0);
        assert!(!should_roll(&active, 40, 10, &cfg));
        assert!(should_roll(&active, 41, 10, &cfg));
        assert!(should_roll(&active, 1, 1_000, &cfg));
    }

    #[test]
    fn time_retention_stops_at_the_first_young_segment_and_spares_the_active_one() {
        let cfg = TopicConfig {
            retention_ms: 100,
            ..TopicConfig::default()
        };
        let segments = [
            seg(0, 10, 10, 0),
            seg(10, 20, 10, 950),
            seg(20, 30, 10, 0),
            seg(30, 40, 10, 0),
        ];
        assert_eq!(expired_segment_count(&segments, &cfg, 1_000), 1);
        assert_eq!(expired_segment_count(&segments, &cfg, 100), 0);
        // Everything old: all but the active segment go.
        assert_eq!(expired_segment_count(&segments, &cfg, 10_000), 3);
    }

    #[test]
    fn size_retention_keeps_at_least_retention_bytes() {
        let cfg = TopicConfig {
            retention_ms: -1,
            retention_bytes: 25,
            ..TopicConfig::default()
        };
        let segments = [
            seg(0, 1, 10, 0),
            seg(1, 2, 10, 0),
            seg(2, 3, 10, 0),
            seg(3, 4, 10, 0),
        ];
        // 40 bytes; dropping two leaves 20 < 25, so only one goes (30 left >= 25).
        assert_eq!(expired_segment_count(&segments, &cfg, 0), 1);
    }

    #[test]
    fn compact_only_topics_never_expire() {
        let cfg = TopicConfig {
            cleanup_policy: CleanupPolicy::Compact,
            retention_ms: 0,
            ..TopicConfig::default()
        };
        let segments = [seg(0, 1, 10, 0), seg(1, 2, 10, 0)];
        assert_eq!(expired_segment_count(&segments, &cfg, 1_000_000), 0);
    }

    #[test]
    fn compaction_keeps_last_value_per_key_and_young_tombstones() {
        // (offset, key, tombstone, past delete.retention.ms)
        let records: [(i64, Option<&[u8]>, bool, bool); 7] = [
            (0, Some(b"a"), false, true),
            (1, Some(b"b"), false, true),
            (2, None, false, true),
            (3, Some(b"a"), false, true),
            (4, Some(b"b"), true, false),
            (5, Some(b"c"), false, true),
            (6, Some(b"c"), true, true),
        ];
        let mut latest = std::collections::HashMap::new();
        for (offset, key, _, _) in records {
            if let Some(key) = key {
                latest.insert(key, offset);
            }
        }
        let kept: Vec<i64> = records
            .iter()
            .filter(|(offset, key, tombstone, old)| {
                survives(
                    key.map(|k| latest.get(k).copied()),
                    *offset,
                    *tombstone,
                    *old,
                )
            })
            .map(|(offset, ..)| *offset)
            .collect();
        assert_eq!(kept, vec![2, 3, 4]);
        // A key left from an earlier pass, not in this pass's map, is its key's latest.
        assert!(survives(Some(None), 9, false, true));
        assert!(!survives(Some(None), 9, true, true));
    }
}
