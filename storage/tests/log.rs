//! End-to-end behaviour of the log: topics, appends, reads, offsets, waiting, restarts.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use eddy_storage::{
    CleanupPolicy, Commit, GroupOffset, OffsetAndMetadata, Record, StorageError, Store,
    StoreOptions, SyncPolicy, TopicConfig, partition_for_key,
};

fn open(dir: &std::path::Path) -> Store {
    Store::open(
        dir,
        StoreOptions {
            sync: SyncPolicy::Os,
            ..StoreOptions::default()
        },
    )
    .expect("open store")
}

fn values(records: &[eddy_storage::LogRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| {
            String::from_utf8_lossy(r.record.value.as_deref().unwrap_or(b"<null>")).into_owned()
        })
        .collect()
}

#[test]
fn topics_are_created_described_listed_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let described = store
        .create_topic("orders", TopicConfig::with_partitions(3))
        .unwrap();
    assert_eq!(described.partitions.len(), 3);
    assert!(
        described
            .partitions
            .iter()
            .all(|p| p.end_offset == 0 && p.log_start_offset == 0)
    );
    store.create_topic("audit", TopicConfig::default()).unwrap();
    assert_eq!(store.list_topics(), vec!["audit", "orders"]);

    let err = store
        .create_topic("orders", TopicConfig::default())
        .unwrap_err();
    assert!(matches!(err, StorageError::TopicExists(_)), "{err}");
    let err = store
        .create_topic("bad name", TopicConfig::default())
        .unwrap_err();
    assert!(err.to_string().contains("not allowed"), "{err}");
    let err = store
        .create_topic("zero", TopicConfig::with_partitions(0))
        .unwrap_err();
    assert!(err.to_string().contains("partition count"), "{err}");

    store
        .append_blocking("orders", 1, vec![Record::unkeyed("x", 1)])
        .unwrap();
    store.delete_topic("orders").unwrap();
    assert_eq!(store.list_topics(), vec!["audit"]);
    assert!(matches!(
        store.describe_topic("orders"),
        Err(StorageError::UnknownTopic(_))
    ));
    assert!(matches!(
        store.delete_topic("orders"),
        Err(StorageError::UnknownTopic(_))
    ));

    // A new topic of the same name starts empty.
    store
        .create_topic("orders", TopicConfig::with_partitions(3))
        .unwrap();
    assert_eq!(store.end_offset("orders", 1).unwrap(), 0);
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.list_topics(), vec!["audit", "orders"]);
    assert_eq!(store.end_offset("orders", 1).unwrap(), 0);
    assert_eq!(store.describe_topic("orders").unwrap().config.partitions, 3);
}

#[test]
fn appends_get_dense_offsets_and_read_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_topic("t", TopicConfig::default()).unwrap();
    let first = store
        .append_blocking(
            "t",
            0,
            (0..5)
                .map(|i| Record::unkeyed(format!("a{i}"), i))
                .collect(),
        )
        .unwrap();
    assert_eq!((first.base_offset, first.last_offset), (0, 4));
    let second = store
        .append_blocking(
            "t",
            0,
            (0..3)
                .map(|i| Record::keyed("k", format!("b{i}"), 10 + i))
                .collect(),
        )
        .unwrap();
    assert_eq!((second.base_offset, second.last_offset), (5, 7));
    assert_eq!(store.end_offset("t", 0).unwrap(), 8);

    let all = store.read_records("t", 0, 0, usize::MAX).unwrap();
    assert_eq!(
        all.records.iter().map(|r| r.offset).collect::<Vec<_>>(),
        (0..8).collect::<Vec<_>>()
    );
    assert_eq!(
        values(&all.records),
        vec!["a0", "a1", "a2", "a3", "a4", "b0", "b1", "b2"]
    );
    assert_eq!(all.next_offset, 8);
    assert_eq!(all.records[6].record.timestamp, 11);
    assert_eq!(all.records[6].record.key.as_deref(), Some(b"k".as_slice()));

    // A read inside a batch starts at the requested offset.
    let mid = store.read_records("t", 0, 3, usize::MAX).unwrap();
    assert_eq!(mid.records.first().map(|r| r.offset), Some(3));
    // Raw reads return whole batches, and always at least one.
    let raw = store.read("t", 0, 3, 1).unwrap();
    assert_eq!(raw.batches.len(), 1);
    assert_eq!(raw.high_watermark, 8);
    // At the end: nothing, no error. Past it or before the start: out of range.
    assert!(
        store
            .read_records("t", 0, 8, 1024)
            .unwrap()
            .records
            .is_empty()
    );
    assert!(matches!(
        store.read("t", 0, 9, 1024),
        Err(StorageError::OffsetOutOfRange {
            offset: 9,
            end: 8,
            ..
        })
    ));
    assert!(matches!(
        store.read("t", 0, -1, 1024),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    assert!(matches!(
        store.read("t", 1, 0, 1024),
        Err(StorageError::UnknownPartition { .. })
    ));

    // Everything survives a restart, and offsets continue densely.
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.end_offset("t", 0).unwrap(), 8);
    let next = store
        .append_blocking("t", 0, vec![Record::unkeyed("c", 99)])
        .unwrap();
    assert_eq!(next.base_offset, 8);
    assert_eq!(
        values(&store.read_records("t", 0, 0, usize::MAX).unwrap().records).len(),
        9
    );
}

#[test]
fn headers_and_tombstones_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_topic("t", TopicConfig::default()).unwrap();
    let record = Record {
        key: Some(Bytes::from_static(b"k")),
        value: None,
        timestamp: 5,
        headers: vec![
            eddy_storage::RecordHeader {
                key: "a".into(),
                value: Some(Bytes::from_static(b"1")),
            },
            eddy_storage::RecordHeader {
                key: "b".into(),
                value: None,
            },
        ],
    };
    store.append_blocking("t", 0, vec![record.clone()]).unwrap();
    let back = store.read_records("t", 0, 0, usize::MAX).unwrap();
    assert_eq!(back.records[0].record, record);
}

#[test]
fn keyed_records_go_where_kafka_would_put_them_and_keyless_ones_spread() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .create_topic("t", TopicConfig::with_partitions(6))
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let keys: Vec<String> = (0..50).map(|i| format!("user-{i}")).collect();
    let results = rt
        .block_on(
            store.produce(
                "t",
                keys.iter()
                    .map(|k| Record::keyed(k.clone(), "v", 0))
                    .collect(),
            ),
        )
        .unwrap();
    assert!(results.len() > 1);
    for p in 0..6 {
        for r in store.read_records("t", p, 0, usize::MAX).unwrap().records {
            let key = r.record.key.unwrap();
            assert_eq!(
                partition_for_key(&key, 6),
                p,
                "key {:?}",
                String::from_utf8_lossy(&key)
            );
        }
    }
    rt.block_on(
        store.produce(
            "t",
            (0..12)
                .map(|i| Record::unkeyed(format!("{i}"), 0))
                .collect(),
        ),
    )
    .unwrap();
    let keyless: usize = (0..6)
        .map(|p| {
            store
                .read_records("t", p, 0, usize::MAX)
                .unwrap()
                .records
                .iter()
                .filter(|r| r.record.key.is_none())
                .count()
        })
        .filter(|n| *n > 0)
        .count();
    assert_eq!(keyless, 6, "keyless records should reach every partition");
}

#[test]
fn limits_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let small = TopicConfig::default()
        .apply("small", [("max.message.bytes", "200")])
        .unwrap();
    store.create_topic("small", small).unwrap();
    let err = store
        .append_blocking("small", 0, vec![Record::unkeyed(vec![b'x'; 500], 0)])
        .unwrap_err();
    assert!(
        matches!(err, StorageError::RecordTooLarge { limit: 200, .. }),
        "{err}"
    );

    let compacted = TopicConfig::default()
        .apply("c", [("cleanup.policy", "compact")])
        .unwrap();
    store.create_topic("c", compacted).unwrap();
    let err = store
        .append_blocking("c", 0, vec![Record::unkeyed("v", 0)])
        .unwrap_err();
    assert!(
        err.to_string().contains("only accepts records with a key"),
        "{err}"
    );
    assert_eq!(store.end_offset("c", 0).unwrap(), 0);
    assert_eq!(
        store.describe_topic("c").unwrap().config.cleanup_policy,
        CleanupPolicy::Compact
    );
}

#[test]
fn offsets_by_timestamp_and_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_topic("t", TopicConfig::default()).unwrap();
    store
        .append_blocking(
            "t",
            0,
            [100, 300, 200]
                .iter()
                .map(|ts| Record::unkeyed("v", *ts))
                .collect(),
        )
        .unwrap();
    store
        .append_blocking(
            "t",
            0,
            [500, 400]
                .iter()
                .map(|ts| Record::unkeyed("v", *ts))
                .collect(),
        )
        .unwrap();
    assert_eq!(
        store.offset_for_timestamp("t", 0, 0).unwrap(),
        Some((0, 100))
    );
    assert_eq!(
        store.offset_for_timestamp("t", 0, 150).unwrap(),
        Some((1, 300))
    );
    assert_eq!(
        store.offset_for_timestamp("t", 0, 350).unwrap(),
        Some((3, 500))
    );
    assert_eq!(
        store.offset_for_timestamp("t", 0, 450).unwrap(),
        Some((3, 500))
    );
    assert_eq!(store.offset_for_timestamp("t", 0, 501).unwrap(), None);
    assert_eq!(store.log_start_offset("t", 0).unwrap(), 0);
}

#[tokio::test]
async fn a_read_at_the_end_waits_for_the_next_append() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_topic("t", TopicConfig::default()).unwrap();

    let started = std::time::Instant::now();
    let got = store
        .wait_for_data("t", 0, 0, Duration::from_millis(150))
        .await
        .unwrap();
    assert!(!got);
    assert!(started.elapsed() >= Duration::from_millis(140));

    let waiter = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .wait_for_data("t", 0, 0, Duration::from_secs(10))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = std::time::Instant::now();
    store
        .append("t", 0, vec![Record::unkeyed("v", 0)])
        .await
        .unwrap();
    assert!(waiter.await.unwrap().unwrap());
    assert!(started.elapsed() < Duration::from_secs(5));
    // Data already there: no wait.
    assert!(
        store
            .wait_for_data("t", 0, 0, Duration::from_secs(10))
            .await
            .unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appenders_to_one_partition_get_dense_unique_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_topic("t", TopicConfig::default()).unwrap();
    let mut tasks = Vec::new();
    for writer in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut ranges = Vec::new();
            for n in 0..40 {
                let size = 1 + (writer + n) % 5;
                let records = (0..size)
                    .map(|i| Record::unkeyed(format!("{writer}-{n}-{i}"), 0))
                    .collect();
                let r = store.append("t", 0, records).await.unwrap();
                assert_eq!(r.last_offset - r.base_offset + 1, size as i64);
                ranges.push((r.base_offset, r.last_offset, writer, n));
            }
            ranges
        }));
    }
    let mut ranges = Vec::new();
    for t in tasks {
        ranges.extend(t.await.unwrap());
    }
    ranges.sort();
    let mut expected = 0;
    for (base, last, _, _) in &ranges {
        assert_eq!(*base, expected, "offsets must be dense with no overlap");
        expected = last + 1;
    }
    assert_eq!(store.end_offset("t", 0).unwrap(), expected);
    // Each writer's appends are in its own submission order.
    for writer in 0..16 {
        let mine: Vec<_> = ranges
            .iter()
            .filter(|r| r.2 == writer)
            .map(|r| r.3)
            .collect();
        assert!(mine.windows(2).all(|w| w[0] < w[1]));
    }
    let read = store.read_records("t", 0, 0, usize::MAX).unwrap().records;
    assert_eq!(read.len() as i64, expected);
    let unique: HashSet<_> = values(&read).into_iter().collect();
    assert_eq!(unique.len() as i64, expected);
}

#[tokio::test]
async fn group_offsets_commit_and_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .create_topic("a", TopicConfig::with_partitions(2))
        .unwrap();
    store.create_topic("b", TopicConfig::default()).unwrap();
    let offset = |o: i64, meta: &str| OffsetAndMetadata {
        offset: o,
        leader_epoch: 0,
        metadata: meta.into(),
        commit_timestamp: 7,
    };
    store
        .commit_offsets(
            "g1",
            vec![
                GroupOffset {
                    topic: "a".into(),
                    partition: 1,
                    offset: offset(10, "m1"),
                },
                GroupOffset {
                    topic: "b".into(),
                    partition: 0,
                    offset: offset(3, ""),
                },
            ],
        )
        .await
        .unwrap();
    store
        .commit_offsets(
            "g10",
            vec![GroupOffset {
                topic: "a".into(),
                partition: 0,
                offset: offset(1, "x"),
            }],
        )
        .await
        .unwrap();
    assert_eq!(
        store.fetch_offset("g1", "a", 1).unwrap(),
        Some(offset(10, "m1"))
    );
    assert_eq!(store.fetch_offset("g1", "a", 0).unwrap(), None);
    assert_eq!(store.fetch_group_offsets("g1").unwrap().len(), 2);
    assert_eq!(store.list_groups().unwrap(), vec!["g1", "g10"]);
    // A commit moves the offset.
    store
        .commit_offsets(
            "g1",
            vec![GroupOffset {
                topic: "a".into(),
                partition: 1,
                offset: offset(12, "m2"),
            }],
        )
        .await
        .unwrap();
    assert_eq!(
        store.fetch_offset("g1", "a", 1).unwrap().unwrap().metadata,
        "m2"
    );
    // Unknown partitions are refused.
    let err = store
        .commit_offsets(
            "g1",
            vec![GroupOffset {
                topic: "a".into(),
                partition: 9,
                offset: offset(1, ""),
            }],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::UnknownPartition { .. }));
    // Deleting a topic forgets the offsets committed on it.
    store.delete_topic("a").unwrap();
    assert_eq!(store.fetch_group_offsets("g1").unwrap().len(), 1);
    assert_eq!(store.list_groups().unwrap(), vec!["g1"]);
}

#[tokio::test]
async fn one_commit_appends_changes_state_and_commits_offsets_together() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_topic("in", TopicConfig::default()).unwrap();
    store
        .create_topic("out", TopicConfig::with_partitions(2))
        .unwrap();
    let mut commit = Commit::new();
    commit
        .append("out", Some(0), vec![Record::keyed("a", "1", 0)])
        .append(
            "out",
            Some(1),
            vec![Record::keyed("b", "2", 0), Record::keyed("c", "3", 0)],
        )
        .put_state("agg", b"a".to_vec(), b"1".to_vec())
        .put_state("agg", b"b".to_vec(), b"2".to_vec())
        .put_state("other", b"a".to_vec(), b"x".to_vec())
        .commit_offset("query-1", "in", 0, OffsetAndMetadata::new(42));
    let results = store.commit(commit).await.unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!((results[1].partition, results[1].last_offset), (1, 1));
    assert_eq!(store.end_offset("out", 1).unwrap(), 2);
    assert_eq!(store.state_get("agg", b"a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(
        store
            .fetch_offset("query-1", "in", 0)
            .unwrap()
            .map(|o| o.offset),
        Some(42)
    );

    // Scans stay inside their namespace, and snapshots do not see later commits.
    let snapshot = store.state_snapshot();
    let mut next = Commit::new();
    next.delete_state("agg", b"a".to_vec())
        .put_state("agg", b"c".to_vec(), b"3".to_vec());
    store.commit(next).await.unwrap();
    let now: Vec<_> = store
        .state_scan_prefix("agg", b"")
        .unwrap()
        .map(|r| r.unwrap().0)
        .collect();
    assert_eq!(now, vec![b"b".to_vec(), b"c".to_vec()]);
    let then: Vec<_> = snapshot
        .scan_prefix("agg", b"")
        .unwrap()
        .map(|r| r.unwrap().0)
        .collect();
    assert_eq!(then, vec![b"a".to_vec(), b"b".to_vec()]);
    assert_eq!(snapshot.get("agg", b"a").unwrap(), Some(b"1".to_vec()));
    let range: Vec<_> = store
        .state_scan_range("agg", b"b", Some(b"c"))
        .unwrap()
        .map(|r| r.unwrap().0)
        .collect();
    assert_eq!(range, vec![b"b".to_vec()]);

    // A commit that names an unknown topic is refused whole.
    let mut bad = Commit::new();
    bad.put_state("agg", b"z".to_vec(), b"9".to_vec()).append(
        "missing",
        Some(0),
        vec![Record::unkeyed("v", 0)],
    );
    assert!(store.commit(bad).await.is_err());
    assert_eq!(store.state_get("agg", b"z").unwrap(), None);
}

#[tokio::test]
async fn forgetting_local_state_deletes_those_namespaces_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut commit = Commit::new();
    for namespace in ["q_task_0", "q_task_1", "q_task_10", "q"] {
        commit.put_state(namespace, b"k".to_vec(), b"v".to_vec());
    }
    store.commit(commit).await.unwrap();
    let forgotten = ["q_task_0".to_string(), "q_task_1".to_string()];
    store.forget_local_state(&forgotten).unwrap();
    assert_eq!(store.state_get("q_task_0", b"k").unwrap(), None);
    assert_eq!(store.state_get("q_task_1", b"k").unwrap(), None);
    // A namespace whose name begins like a forgotten one's, and the query's own, stay.
    assert_eq!(
        store.state_get("q_task_10", b"k").unwrap(),
        Some(b"v".to_vec())
    );
    assert_eq!(store.state_get("q", b"k").unwrap(), Some(b"v".to_vec()));
}

#[test]
fn a_corrupt_batch_is_an_error_naming_where_it_is() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.create_topic("t", TopicConfig::default()).unwrap();
        store
            .append_blocking(
                "t",
                0,
                (0..3)
                    .map(|i| Record::unkeyed(format!("v{i}"), 0))
                    .collect(),
            )
            .unwrap();
        store
            .append_blocking("t", 0, vec![Record::unkeyed("w", 0)])
            .unwrap();
        store.close().unwrap();
    }
    {
        // Flip one payload bit of the second batch behind the store's back.
        let cfs = ["log", "meta", "offsets", "state", "raft"];
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir.path(), cfs).unwrap();
        let log = db.cf_handle("log").unwrap();
        let mut found = None;
        for item in db.iterator_cf(log, rocksdb::IteratorMode::Start) {
            let (k, v) = item.unwrap();
            found = Some((k.to_vec(), v.to_vec()));
        }
        let (key, mut value) = found.unwrap();
        let last = value.len() - 1;
        value[last] ^= 0x40;
        db.put_cf(log, key, value).unwrap();
    }
    let store = open(dir.path());
    assert_eq!(
        values(&store.read_records("t", 0, 0, 10).unwrap().records),
        vec!["v0", "v1", "v2"]
    );
    let err = store.read_records("t", 0, 3, usize::MAX).unwrap_err();
    match &err {
        StorageError::CorruptBatch {
            topic,
            partition,
            offset,
            ..
        } => {
            assert_eq!((topic.as_str(), *partition, *offset), ("t", 0, 3));
        }
        other => panic!("expected a corrupt-batch error, got {other}"),
    }
    assert!(err.to_string().contains("t-0 at offset 3"), "{err}");
}

#[test]
fn a_batch_with_a_broken_header_is_reported_and_the_store_still_opens() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.create_topic("t", TopicConfig::default()).unwrap();
        store
            .append_blocking(
                "t",
                0,
                vec![Record::unkeyed("a", 0), Record::unkeyed("b", 0)],
            )
            .unwrap();
        store
            .append_blocking("t", 0, vec![Record::unkeyed("c", 0)])
            .unwrap();
        store.close().unwrap();
    }
    {
        let cfs = ["log", "meta", "offsets", "state", "raft"];
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir.path(), cfs).unwrap();
        let log = db.cf_handle("log").unwrap();
        let (key, mut value) = db
            .iterator_cf(log, rocksdb::IteratorMode::End)
            .next()
            .unwrap()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .unwrap();
        value[16] = 7; // the magic byte
        db.put_cf(log, key, value).unwrap();
    }
    let store = open(dir.path());
    assert_eq!(
        store.end_offset("t", 0).unwrap(),
        3,
        "the segment table still knows the end"
    );
    let err = store.read_records("t", 0, 2, usize::MAX).unwrap_err();
    assert!(
        matches!(err, StorageError::CorruptBatch { offset: 2, .. }),
        "{err}"
    );
    let err = store.read_records("t", 0, 0, usize::MAX).unwrap_err();
    assert!(err.to_string().contains("magic"), "{err}");
}

/// A partition count above the cap is refused before anything is stored, and a store
/// reopened with a lower cap refuses to recover the topic rather than allocating it.
#[test]
fn partition_counts_are_capped_when_created_and_when_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let capped = |max_partitions| StoreOptions {
        sync: SyncPolicy::Os,
        max_partitions,
        ..StoreOptions::default()
    };
    let store = Store::open(dir.path(), capped(8)).unwrap();
    let refused = store
        .create_topic("huge", TopicConfig::with_partitions(4_000_000_000))
        .unwrap_err();
    assert!(
        matches!(
            refused,
            StorageError::TooManyPartitions {
                partitions: 4_000_000_000,
                max: 8,
                ..
            }
        ),
        "{refused}"
    );
    assert!(!refused.is_fault());
    assert!(!store.topic_exists("huge"));
    store
        .create_topic("eight", TopicConfig::with_partitions(8))
        .unwrap();
    drop(store);
    let error = Store::open(dir.path(), capped(4)).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("\"eight\" asks for 8 partitions"),
        "{error}"
    );
    let store = Store::open(dir.path(), capped(8)).unwrap();
    assert_eq!(store.partition_count("eight").unwrap(), 8);
}

fn idempotent(
    values: &[&str],
    producer_id: i64,
    epoch: i16,
    sequence: i32,
) -> eddy_storage::EncodedBatch {
    let records: Vec<Record> = values
        .iter()
        .map(|v| Record::unkeyed(v.as_bytes().to_vec(), 0))
        .collect();
    let mut batch = eddy_storage::EncodedBatch::encode(&records).unwrap();
    batch.set_producer(producer_id, epoch, sequence);
    batch
}

/// An idempotent producer's state is written with its batches: a retry after a restart is
/// answered with the offset the batch first got and not stored again, and sequence gaps and
/// fenced epochs are refused, as Kafka's broker does.
#[test]
fn an_idempotent_retry_after_a_restart_is_not_stored_twice() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let first = {
        let store = open(dir.path());
        store.create_topic("t", TopicConfig::default()).unwrap();
        runtime
            .block_on(store.append_encoded("t", 0, idempotent(&["other"], -1, -1, -1)))
            .unwrap();
        let first = runtime
            .block_on(store.append_encoded("t", 0, idempotent(&["a", "b"], 42, 0, 0)))
            .unwrap();
        store.close().unwrap();
        first
    };
    let store = open(dir.path());
    let retried = runtime
        .block_on(store.append_encoded("t", 0, idempotent(&["a", "b"], 42, 0, 0)))
        .unwrap();
    assert_eq!((retried.base_offset, retried.last_offset), (1, 2));
    assert_eq!(retried.base_offset, first.base_offset);
    assert_eq!(
        store.end_offset("t", 0).unwrap(),
        3,
        "the retry was not stored"
    );

    let next = runtime
        .block_on(store.append_encoded("t", 0, idempotent(&["c"], 42, 0, 2)))
        .unwrap();
    assert_eq!(next.base_offset, 3);
    let gap = runtime
        .block_on(store.append_encoded("t", 0, idempotent(&["e"], 42, 0, 9)))
        .unwrap_err();
    assert!(
        matches!(
            gap,
            StorageError::OutOfOrderSequence {
                expected: 3,
                got: 9,
                ..
            }
        ),
        "{gap}"
    );
    runtime
        .block_on(store.append_encoded("t", 0, idempotent(&["new epoch"], 42, 1, 0)))
        .unwrap();
    let fenced = runtime
        .block_on(store.append_encoded("t", 0, idempotent(&["zombie"], 42, 0, 3)))
        .unwrap_err();
    assert!(
        matches!(fenced, StorageError::InvalidProducerEpoch { .. }),
        "{fenced}"
    );
    assert_eq!(
        values(&store.read_records("t", 0, 0, usize::MAX).unwrap().records),
        ["other", "a", "b", "c", "new epoch"]
    );
}
