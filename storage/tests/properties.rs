//! Property tests for the log's invariants.

use std::collections::HashMap;

use eddy_storage::{
    LogRecord, Record, SegmentMeta, Store, StoreOptions, SyncPolicy, TopicConfig,
    expired_segment_count,
};
use proptest::prelude::*;

fn open(dir: &std::path::Path) -> Store {
    Store::open(
        dir,
        StoreOptions {
            sync: SyncPolicy::Os,
            ..StoreOptions::default()
        },
    )
    .unwrap()
}

fn read_all(store: &Store, topic: &str, partition: u32) -> Vec<LogRecord> {
    let start = store.log_start_offset(topic, partition).unwrap();
    store
        .read_records(topic, partition, start, usize::MAX)
        .unwrap()
        .records
}

fn arb_record() -> impl Strategy<Value = Record> {
    (
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
        -1_000i64..1_000_000_000_000,
    )
        .prop_map(|(key, value, timestamp)| Record {
            key: key.map(Into::into),
            value: value.map(Into::into),
            timestamp,
            headers: Vec::new(),
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Offsets are dense and increasing, and a read returns exactly what was appended.
    #[test]
    fn reads_return_exactly_what_was_appended(
        batches in proptest::collection::vec(
            (0u32..3, proptest::collection::vec(arb_record(), 1..10)), 1..20),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.create_topic("t", TopicConfig::with_partitions(3)).unwrap();
        let mut expected: HashMap<u32, Vec<Record>> = HashMap::new();
        for (partition, records) in &batches {
            let before = store.end_offset("t", *partition).unwrap();
            let r = store.append_blocking("t", *partition, records.clone()).unwrap();
            prop_assert_eq!(r.base_offset, before);
            prop_assert_eq!(r.last_offset, before + records.len() as i64 - 1);
            expected.entry(*partition).or_default().extend(records.iter().cloned());
        }
        for partition in 0..3 {
            let got = read_all(&store, "t", partition);
            let want = expected.remove(&partition).unwrap_or_default();
            prop_assert_eq!(got.len(), want.len());
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                prop_assert_eq!(g.offset, i as i64);
                prop_assert_eq!(&g.record, w);
            }
            // Reading from any offset returns the suffix.
            if !want.is_empty() {
                let from = (want.len() / 2) as i64;
                let suffix = store.read_records("t", partition, from, usize::MAX).unwrap().records;
                prop_assert_eq!(suffix.len(), want.len() - from as usize);
                prop_assert_eq!(suffix[0].offset, from);
            }
        }
    }

    /// Compaction keeps the last value of every key, never changes an offset or the order, and
    /// only removes records.
    #[test]
    fn compaction_keeps_last_value_per_key_and_offsets(
        writes in proptest::collection::vec((0u8..6, proptest::option::of(0u32..1000)), 1..60),
        per_batch in 1usize..5,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let config = TopicConfig::default()
            .apply("c", [("cleanup.policy", "compact"), ("segment.bytes", "120")])
            .unwrap();
        store.create_topic("c", config).unwrap();
        for chunk in writes.chunks(per_batch) {
            let records = chunk
                .iter()
                .map(|(k, v)| match v {
                    Some(v) => Record::keyed(vec![*k], v.to_string(), 0),
                    None => Record::tombstone(vec![*k], 0),
                })
                .collect();
            store.append_blocking("c", 0, records).unwrap();
        }
        let before = read_all(&store, "c", 0);
        store.run_maintenance_at(eddy_storage::now_ms()).unwrap();
        let after = read_all(&store, "c", 0);

        let by_offset: HashMap<i64, &LogRecord> = before.iter().map(|r| (r.offset, r)).collect();
        prop_assert!(after.windows(2).all(|w| w[0].offset < w[1].offset));
        for r in &after {
            prop_assert_eq!(Some(&r), by_offset.get(&r.offset));
        }
        let mut last: HashMap<Vec<u8>, i64> = HashMap::new();
        for r in &before {
            last.insert(r.record.key.clone().unwrap().to_vec(), r.offset);
        }
        for (key, offset) in last {
            prop_assert!(
                after.iter().any(|r| r.offset == offset),
                "last value of key {:?} at offset {} was removed", key, offset
            );
        }
        prop_assert_eq!(store.end_offset("c", 0).unwrap(), writes.len() as i64);
    }

    /// Time retention never deletes a record younger than retention.ms, and size retention never
    /// leaves less than retention.bytes.
    #[test]
    fn retention_never_deletes_what_the_policy_keeps(
        ages in proptest::collection::vec(0i64..10_000, 1..30),
        retention_ms in 0i64..10_000,
        retention_bytes in proptest::option::of(0i64..3_000),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        // One policy at a time: with both set, either one deletes.
        let (retention_ms, retention_bytes) = match retention_bytes {
            Some(bytes) => (-1, bytes),
            None => (retention_ms, -1),
        };
        let config = TopicConfig::default()
            .apply("t", [
                ("segment.bytes", "200"),
                ("retention.ms", &retention_ms.to_string()),
                ("retention.bytes", &retention_bytes.to_string()),
            ])
            .unwrap();
        store.create_topic("t", config).unwrap();
        let now = 1_000_000_000_000i64;
        for (i, age) in ages.iter().enumerate() {
            store.append_blocking("t", 0, vec![Record::unkeyed(format!("{i:0>80}"), now - age)]).unwrap();
        }
        let total_before = store.describe_topic("t").unwrap().partitions[0].size_bytes;
        store.run_maintenance_at(now).unwrap();
        let survivors = read_all(&store, "t", 0);
        let start = store.log_start_offset("t", 0).unwrap();
        // Survivors are exactly the suffix from the log start.
        prop_assert_eq!(survivors.len() as i64, ages.len() as i64 - start);
        if retention_bytes < 0 {
            for (i, age) in ages.iter().enumerate() {
                if *age <= retention_ms {
                    prop_assert!(i as i64 >= start, "record {} aged {} ms was deleted", i, age);
                }
            }
        } else {
            let left = store.describe_topic("t").unwrap().partitions[0].size_bytes;
            prop_assert!(left >= (retention_bytes as u64).min(total_before) || start == 0);
        }
        // The newest record (in the active segment) always survives.
        prop_assert_eq!(survivors.last().map(|r| r.offset), Some(ages.len() as i64 - 1));
    }

    /// The pure retention decision deletes a prefix of segments that the policy condemns, stops at
    /// the first one it keeps, and spares the active segment.
    #[test]
    fn expired_segments_are_a_prefix_that_spares_the_active_one(
        segments in proptest::collection::vec((1u64..500, 0i64..1_000), 1..12),
        by_time in any::<bool>(),
        limit in 0i64..3_000,
    ) {
        let metas: Vec<SegmentMeta> = segments.iter().enumerate().map(|(i, (bytes, ts))| SegmentMeta {
            base_offset: i as i64,
            next_offset: i as i64 + 1,
            bytes: *bytes,
            max_timestamp: *ts,
            created_ms: 0,
            last_append_ms: 0,
        }).collect();
        let now = 1_000;
        let config = if by_time {
            TopicConfig { retention_ms: limit % 1_000, retention_bytes: -1, ..TopicConfig::default() }
        } else {
            TopicConfig { retention_ms: -1, retention_bytes: limit, ..TopicConfig::default() }
        };
        let n = expired_segment_count(&metas, &config, now);
        prop_assert!(n < metas.len(), "the active segment must survive");
        let total: u64 = metas.iter().map(|s| s.bytes).sum();
        let removed: u64 = metas[..n].iter().map(|s| s.bytes).sum();
        if by_time {
            let too_old = |s: &SegmentMeta| now - s.max_timestamp > config.retention_ms;
            prop_assert!(metas[..n].iter().all(too_old));
            if n + 1 < metas.len() {
                prop_assert!(!too_old(&metas[n]));
            }
        } else {
            prop_assert!(total - removed >= (limit as u64).min(total) || n == 0);
            if n + 1 < metas.len() {
                prop_assert!(total - removed - metas[n].bytes < limit as u64);
            }
        }
    }
}
