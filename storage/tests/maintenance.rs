//! Retention and compaction, driven with an explicit clock.

use eddy_storage::{LogRecord, Record, StorageError, Store, StoreOptions, SyncPolicy, TopicConfig};

const HOUR: i64 = 3_600_000;

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

fn record_at(ts: i64) -> Record {
    Record::unkeyed(vec![b'x'; 100], ts)
}

fn read_all(store: &Store, topic: &str) -> Vec<LogRecord> {
    let start = store.log_start_offset(topic, 0).unwrap();
    store
        .read_records(topic, 0, start, usize::MAX)
        .unwrap()
        .records
}

#[test]
fn time_retention_deletes_old_closed_segments_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // Every batch of ~170 bytes fills a segment, so each append closes the previous segment.
    let config = TopicConfig::default()
        .apply("t", [("segment.bytes", "100"), ("retention.ms", "3600000")])
        .unwrap();
    store.create_topic("t", config).unwrap();
    let now = eddy_storage::now_ms();
    for ts in [
        now - 5 * HOUR,
        now - 4 * HOUR,
        now - HOUR / 2,
        now - 3 * HOUR,
        now - 5 * HOUR,
    ] {
        store.append_blocking("t", 0, vec![record_at(ts)]).unwrap();
    }
    assert_eq!(store.describe_topic("t").unwrap().partitions[0].segments, 5);

    let report = store.run_maintenance_at(now).unwrap();
    // The two oldest go; the young third segment stops retention even though the fourth is old;
    // the last (active) one is never deleted.
    assert_eq!(report.segments_deleted, 2);
    assert_eq!(store.log_start_offset("t", 0).unwrap(), 2);
    assert!(matches!(
        store.read("t", 0, 0, 1024),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    assert_eq!(
        read_all(&store, "t")
            .iter()
            .map(|r| r.offset)
            .collect::<Vec<_>>(),
        vec![2, 3, 4]
    );

    // Much later everything but the active segment goes; offsets keep counting from the end.
    let report = store.run_maintenance_at(now + 100 * HOUR).unwrap();
    assert_eq!(report.segments_deleted, 2);
    assert_eq!(store.log_start_offset("t", 0).unwrap(), 4);
    assert_eq!(store.end_offset("t", 0).unwrap(), 5);

    // The log start survives a restart.
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.log_start_offset("t", 0).unwrap(), 4);
    assert_eq!(store.end_offset("t", 0).unwrap(), 5);
    assert_eq!(
        store
            .append_blocking("t", 0, vec![record_at(now)])
            .unwrap()
            .base_offset,
        5
    );
}

#[test]
fn size_retention_keeps_retention_bytes_per_partition() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let config = TopicConfig::default()
        .apply(
            "t",
            [
                ("segment.bytes", "100"),
                ("retention.ms", "-1"),
                ("retention.bytes", "500"),
            ],
        )
        .unwrap();
    store.create_topic("t", config).unwrap();
    let now = eddy_storage::now_ms();
    for _ in 0..10 {
        store.append_blocking("t", 0, vec![record_at(now)]).unwrap();
    }
    let before = store.describe_topic("t").unwrap().partitions[0];
    store.run_maintenance_at(now).unwrap();
    let after = store.describe_topic("t").unwrap().partitions[0];
    assert!(
        after.size_bytes >= 500,
        "retention must keep at least retention.bytes"
    );
    assert!(after.size_bytes < before.size_bytes);
    let batch = before.size_bytes / 10;
    assert!(
        after.size_bytes < 500 + batch,
        "no more than one extra segment is kept"
    );
    assert_eq!(after.end_offset, 10);
    assert_eq!(
        read_all(&store, "t").len() as i64,
        10 - after.log_start_offset
    );
}

#[test]
fn compaction_keeps_the_last_value_per_key_and_expires_tombstones() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let config = TopicConfig::default()
        .apply(
            "c",
            [
                ("cleanup.policy", "compact"),
                ("segment.bytes", "100"),
                ("delete.retention.ms", "3600000"),
            ],
        )
        .unwrap();
    store.create_topic("c", config).unwrap();
    let writes: &[(&str, Option<&str>)] = &[
        ("a", Some("a1")),
        ("b", Some("b1")),
        ("a", Some("a2")),
        ("c", Some("c1")),
        ("b", None),
        ("a", Some("a3")),
        ("d", Some("d1")),
    ];
    // Two records per batch, so batches hold survivors and casualties side by side.
    for pair in writes.chunks(2) {
        let records = pair
            .iter()
            .map(|(k, v)| match v {
                Some(v) => Record::keyed(k.to_string(), v.to_string(), 0),
                None => Record::tombstone(k.to_string(), 0),
            })
            .collect();
        store.append_blocking("c", 0, records).unwrap();
    }
    let now = eddy_storage::now_ms();
    let report = store.run_maintenance_at(now).unwrap();
    assert!(report.records_compacted > 0);
    let seen: Vec<(i64, String, Option<String>)> = read_all(&store, "c")
        .into_iter()
        .map(|r| {
            (
                r.offset,
                String::from_utf8(r.record.key.unwrap().to_vec()).unwrap(),
                r.record
                    .value
                    .map(|v| String::from_utf8(v.to_vec()).unwrap()),
            )
        })
        .collect();
    // Offsets 0..=5 are in closed segments; 6 (d1) is in the active one and untouched.
    assert_eq!(
        seen,
        vec![
            (3, "c".into(), Some("c1".into())),
            (4, "b".into(), None),
            (5, "a".into(), Some("a3".into())),
            (6, "d".into(), Some("d1".into())),
        ]
    );
    assert_eq!(store.end_offset("c", 0).unwrap(), 7);

    // Past delete.retention.ms the tombstone goes too; offsets are never renumbered.
    store.run_maintenance_at(now + 2 * 3_600_000).unwrap();
    let offsets: Vec<i64> = read_all(&store, "c").iter().map(|r| r.offset).collect();
    assert_eq!(offsets, vec![3, 5, 6]);
    // Reads from a removed offset continue at the next surviving one.
    let from_four = store.read_records("c", 0, 4, usize::MAX).unwrap().records;
    assert_eq!(from_four.first().map(|r| r.offset), Some(5));

    drop(store);
    let store = open(dir.path());
    assert_eq!(
        read_all(&store, "c")
            .iter()
            .map(|r| r.offset)
            .collect::<Vec<_>>(),
        vec![3, 5, 6]
    );
    assert_eq!(
        store
            .append_blocking("c", 0, vec![Record::keyed("e", "e1", 0)])
            .unwrap()
            .base_offset,
        7
    );
}

/// A record left by compaction: its offset, key and value.
type Left = (i64, Vec<u8>, Vec<u8>);

/// Compacts a topic of 200 keys written five times over, with a key map of `map_bytes`; the
/// records left, and how many maintenance passes removed some.
fn compact_with_map(map_bytes: usize) -> (Vec<Left>, usize) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        StoreOptions {
            sync: SyncPolicy::Os,
            compaction_map_bytes: map_bytes,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let config = TopicConfig::default()
        .apply(
            "c",
            [("cleanup.policy", "compact"), ("segment.bytes", "2000")],
        )
        .unwrap();
    store.create_topic("c", config).unwrap();
    for round in 0..5 {
        for chunk in (0..200).collect::<Vec<_>>().chunks(10) {
            let records = chunk
                .iter()
                .map(|k| Record::keyed(format!("key-{k:03}"), format!("v{round}-{k}"), 0))
                .collect();
            store.append_blocking("c", 0, records).unwrap();
        }
    }
    // A pass may map keys without removing anything yet, so run plenty; count those that did.
    let passes = (0..60)
        .filter(|_| {
            store
                .run_maintenance_at(eddy_storage::now_ms())
                .unwrap()
                .records_compacted
                > 0
        })
        .count();
    let left = read_all(&store, "c")
        .into_iter()
        .map(|r| {
            (
                r.offset,
                r.record.key.unwrap().to_vec(),
                r.record.value.unwrap().to_vec(),
            )
        })
        .collect();
    (left, passes)
}

/// Compaction's key map is bounded, as Kafka's cleaner's is: with room for a few dozen keys it
/// compacts the log a part at a time over several passes, and ends with exactly what a map with
/// room for every key leaves after one.
#[test]
fn a_bounded_key_map_compacts_over_several_passes_to_the_same_log() {
    let (unbounded, one_pass) = compact_with_map(64 << 20);
    let (bounded, passes) = compact_with_map(4_000);
    assert_eq!(one_pass, 1);
    assert!(passes > 1, "{passes} passes");
    assert_eq!(bounded, unbounded);
}

/// The bytes of the files under `dir` whose names end in `.{extension}`.
fn bytes_in(dir: &std::path::Path, extension: &str) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == extension))
        .map(|path| std::fs::metadata(path).unwrap().len())
        .sum()
}

/// The 10 KB value of the record at offset `n`, every byte telling its offset and place.
fn large_value(n: usize) -> Vec<u8> {
    (0..10_000).map(|i| (n * 31 + i) as u8).collect()
}

/// A batch of ten records of 10 KB each, from offset `first`.
fn large_batch(ts: i64, first: usize) -> Vec<Record> {
    (first..first + 10)
        .map(|n| Record::unkeyed(large_value(n), ts))
        .collect()
}

#[test]
fn expired_batches_give_their_disk_back_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // Ten batches of about 100 KB fill a segment.
    let config = TopicConfig::default()
        .apply(
            "t",
            [("segment.bytes", "1100000"), ("retention.ms", "3600000")],
        )
        .unwrap();
    let now = eddy_storage::now_ms();
    // Two flushes apart (a restart flushes): three segments of old records, then one of young.
    let mut written = 0;
    for (ts, batches) in [(now - 5 * HOUR, 30), (now, 10)] {
        let store = open(dir.path());
        if !store.topic_exists("t") {
            store.create_topic("t", config.clone()).unwrap();
        }
        for _ in 0..batches {
            store
                .append_blocking("t", 0, large_batch(ts, written))
                .unwrap();
            written += 10;
        }
        store.close().unwrap();
    }
    let store = open(dir.path());
    // Batches this large are kept in blob files, not in the SSTs.
    let before = bytes_in(dir.path(), "blob");
    assert!(before > 4_000_000, "blob files hold {before} bytes");
    assert!(bytes_in(dir.path(), "sst") < 1_000_000);

    let report = store.run_maintenance_at(now).unwrap();
    assert_eq!(report.segments_deleted, 3, "{report:?}");
    let start = store.log_start_offset("t", 0).unwrap() as usize;
    assert_eq!(start, 300);
    // The old records' blob file is gone with them, without waiting for later writes.
    let after = bytes_in(dir.path(), "blob");
    assert!(
        after < 1_500_000,
        "blob files hold {after} bytes after retention"
    );

    // What is left reads back whole, after a restart too.
    drop(store);
    let store = open(dir.path());
    let records = read_all(&store, "t");
    assert_eq!(records.len(), written - start);
    for record in &records {
        let n = record.offset as usize;
        assert_eq!(
            record.record.value.as_deref(),
            Some(&large_value(n)[..]),
            "offset {n}"
        );
    }
}
