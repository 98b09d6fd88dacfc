//! Transactions in the log: random interleavings of plain appends, transactional appends,
//! commits, aborts and restarts; a read_committed reader sees exactly the committed records in
//! offset order, a read_uncommitted one everything, and compaction keeps the committed values.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use eddy_storage::{
    Commit, EncodedBatch, Isolation, Record, Store, StoreOptions, SyncPolicy, TopicConfig,
    TxnMarker, split_batches,
};
use proptest::prelude::*;

const TOPIC: &str = "t";

fn open(dir: &std::path::Path) -> Store {
    let options = StoreOptions {
        sync: SyncPolicy::Os,
        ..StoreOptions::default()
    };
    Store::open(dir, options).unwrap()
}

fn record(value: &str) -> Record {
    Record::keyed(
        Bytes::from(value.to_string()),
        Bytes::from(value.to_string()),
        0,
    )
}

/// One step of a history.
#[derive(Debug, Clone)]
enum Step {
    /// A batch with no producer.
    Plain(u8),
    /// A batch of producer `p`'s transaction.
    Transactional { producer: u8, count: u8 },
    /// Producer `p` commits (`true`) or aborts its transaction.
    End { producer: u8, commit: bool },
    /// The store closes and opens again.
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (1u8..4).prop_map(Step::Plain),
        (0u8..3, 1u8..4).prop_map(|(producer, count)| Step::Transactional { producer, count }),
        (0u8..3, any::<bool>()).prop_map(|(producer, commit)| Step::End { producer, commit }),
        Just(Step::Restart),
    ]
}

/// What happened, as a read_committed reader must see it.
#[derive(Default)]
struct Model {
    next: u32,
    /// Committed values by offset.
    committed: BTreeMap<i64, String>,
    /// Every value appended, by offset.
    all: BTreeMap<i64, String>,
    /// Each producer's open transaction: its values by offset, and its next sequence.
    open: HashMap<u8, Vec<(i64, String)>>,
    sequences: HashMap<u8, i32>,
}

impl Model {
    fn values(&mut self, count: u8) -> Vec<String> {
        (0..count)
            .map(|_| {
                self.next += 1;
                format!("v{}", self.next)
            })
            .collect()
    }
}

fn apply(store: &Store, model: &mut Model, step: &Step, runtime: &tokio::runtime::Runtime) {
    match *step {
        Step::Plain(count) => {
            let values = model.values(count);
            let records: Vec<Record> = values.iter().map(|v| record(v)).collect();
            let at = store.append_blocking(TOPIC, 0, records).unwrap();
            for (i, v) in values.into_iter().enumerate() {
                model.committed.insert(at.base_offset + i as i64, v.clone());
                model.all.insert(at.base_offset + i as i64, v);
            }
        }
        Step::Transactional { producer, count } => {
            let values = model.values(count);
            let records: Vec<Record> = values.iter().map(|v| record(v)).collect();
            let mut batch = EncodedBatch::encode(&records).unwrap();
            let sequence = model.sequences.entry(producer).or_default();
            batch.set_transactional(1000 + i64::from(producer), 0, *sequence);
            *sequence += i32::from(count);
            let at = runtime
                .block_on(store.append_encoded(TOPIC, 0, batch))
                .unwrap();
            for (i, v) in values.into_iter().enumerate() {
                let offset = at.base_offset + i as i64;
                model.all.insert(offset, v.clone());
                model.open.entry(producer).or_default().push((offset, v));
            }
        }
        Step::End { producer, commit } => {
            let mut c = Commit::new();
            c.marker(TxnMarker {
                topic: TOPIC.into(),
                partition: 0,
                producer_id: 1000 + i64::from(producer),
                producer_epoch: 0,
                commit,
                coordinator_epoch: 0,
            });
            store.commit_blocking(c).unwrap();
            let values = model.open.remove(&producer).unwrap_or_default();
            if commit {
                model.committed.extend(values);
            }
        }
        Step::Restart => {}
    }
}

/// Every value a read_committed reader of the store's `read_records` sees, from the start.
fn read_committed(store: &Store) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let read = store.read_records(TOPIC, 0, at, 64).unwrap();
        out.extend(read.records.iter().map(|r| {
            let value = r.record.value.as_deref().unwrap_or_default();
            (r.offset, String::from_utf8_lossy(value).into_owned())
        }));
        if read.next_offset == at {
            return out;
        }
        at = read.next_offset;
    }
}

/// The data batches a read_committed Fetch returns, dropping those the answer lists as aborted,
/// as a Kafka consumer does.
fn fetch_committed(store: &Store) -> Vec<i64> {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let read = store
            .read_isolated(TOPIC, 0, at, 64, Isolation::ReadCommitted)
            .unwrap();
        let mut next = at;
        for bytes in &read.batches {
            for batch in split_batches(bytes) {
                let (header, _) = batch.unwrap();
                next = next.max(header.last_offset() + 1);
                let aborted = read.aborted.iter().any(|a| {
                    a.producer_id == header.producer_id
                        && a.first_offset <= header.base_offset
                        && header.base_offset < a.last_offset
                });
                if header.is_control() || (header.is_transactional() && aborted) {
                    continue;
                }
                out.extend((header.base_offset..=header.last_offset()).filter(|o| *o >= at));
            }
        }
        if next == at {
            return out;
        }
        at = next;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_read_committed_reader_sees_exactly_the_committed_records_in_order(
        steps in proptest::collection::vec(step(), 1..40),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        store.create_topic(TOPIC, TopicConfig::with_partitions(1)).unwrap();
        let mut model = Model::default();
        for step in &steps {
            if let Step::Restart = step {
                store.close().unwrap();
                drop(store);
                store = open(dir.path());
            }
            apply(&store, &mut model, step, &runtime);
            // The last stable offset is the oldest open transaction's first offset.
            let oldest_open = model.open.values().filter_map(|v| v.first()).map(|(o, _)| *o).min();
            let end = store.end_offset(TOPIC, 0).unwrap();
            prop_assert_eq!(
                store.last_stable_offset(TOPIC, 0).unwrap(),
                oldest_open.unwrap_or(end)
            );
            let stable = oldest_open.unwrap_or(end);
            let expected: Vec<(i64, String)> = model
                .committed
                .range(..stable)
                .map(|(o, v)| (*o, v.clone()))
                .collect();
            prop_assert_eq!(&read_committed(&store), &expected);
            let offsets: Vec<i64> = expected.iter().map(|(o, _)| *o).collect();
            prop_assert_eq!(fetch_committed(&store), offsets);
            let all = store.read(TOPIC, 0, 0, usize::MAX).unwrap();
            let data: i64 = all.batches.iter()
                .flat_map(|b| split_batches(b).map(|r| r.unwrap().0))
                .filter(|h| !h.is_control())
                .map(|h| i64::from(h.record_count))
                .sum();
            prop_assert_eq!(data as usize, model.all.len());
        }
    }
}

#[test]
fn a_client_may_not_write_a_transaction_marker() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .create_topic(TOPIC, TopicConfig::with_partitions(1))
        .unwrap();
    let mut commit = Commit::new();
    commit.marker(TxnMarker {
        topic: TOPIC.into(),
        partition: 0,
        producer_id: 5,
        producer_epoch: 0,
        commit: true,
        coordinator_epoch: 0,
    });
    store.commit_blocking(commit).unwrap();
    let stored = store.read(TOPIC, 0, 0, usize::MAX).unwrap();
    let marker = EncodedBatch::from_bytes(bytes::BytesMut::from(&stored.batches[0][..])).unwrap();
    assert!(marker.header().is_control());
    let refused = runtime.block_on(store.append_encoded(TOPIC, 0, marker));
    assert!(
        refused.is_err_and(|e| e.to_string().contains("control batch")),
        "a client's marker was accepted"
    );
}

#[test]
fn compaction_keeps_the_committed_value_under_an_aborted_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let config = TopicConfig::default()
        .apply(
            TOPIC,
            [("cleanup.policy", "compact"), ("segment.bytes", "100")],
        )
        .unwrap();
    store.create_topic(TOPIC, config).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    store
        .append_blocking(TOPIC, 0, vec![Record::keyed("k", "committed", 0)])
        .unwrap();
    let mut batch = EncodedBatch::encode(&[Record::keyed("k", "aborted", 0)]).unwrap();
    batch.set_transactional(9, 0, 0);
    runtime
        .block_on(store.append_encoded(TOPIC, 0, batch))
        .unwrap();
    let mut abort = Commit::new();
    abort.marker(TxnMarker {
        topic: TOPIC.into(),
        partition: 0,
        producer_id: 9,
        producer_epoch: 0,
        commit: false,
        coordinator_epoch: 0,
    });
    store.commit_blocking(abort).unwrap();
    // Something after, so every batch above is in a closed segment.
    store
        .append_blocking(TOPIC, 0, vec![Record::keyed("other", "x", 0)])
        .unwrap();
    store.run_maintenance().unwrap();
    let values: Vec<String> = store
        .read_records(TOPIC, 0, 0, usize::MAX)
        .unwrap()
        .records
        .iter()
        .map(|r| String::from_utf8_lossy(r.record.value.as_deref().unwrap_or_default()).into())
        .collect();
    assert_eq!(values, ["committed", "x"]);
    // The aborted record is gone from the log itself; its marker stays.
    let stored = store.read(TOPIC, 0, 0, usize::MAX).unwrap();
    let headers: Vec<_> = stored
        .batches
        .iter()
        .flat_map(|b| split_batches(b).map(|r| r.unwrap().0))
        .collect();
    assert_eq!(headers.iter().filter(|h| h.is_control()).count(), 1);
    assert_eq!(
        headers.iter().filter(|h| !h.is_control()).count(),
        2,
        "{headers:?}"
    );
}
