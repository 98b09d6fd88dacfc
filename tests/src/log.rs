//! Reading Eddy's log in end-to-end tests: a topic's records, waiting until enough have come,
//! a record's header as text, and waiting for any condition with a deadline.

use std::time::{Duration, Instant};

use eddy_storage::{LogRecord, Store};

/// How long a test waits for something that should happen soon.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Every record of `topic` (all partitions, in partition order); none while it does not exist.
pub fn topic_records(store: &Store, topic: &str) -> Vec<LogRecord> {
    let Ok(partitions) = store.partition_count(topic) else {
        return Vec::new();
    };
    (0..partitions)
        .flat_map(|p| {
            store
                .read_records(topic, p, 0, usize::MAX)
                .map(|fetched| fetched.records)
                .unwrap_or_default()
        })
        .collect()
}

/// `topic`'s records once there are `count` of them; fails the test when there are more, or
/// fewer after [`PATIENCE`].
pub async fn wait_for_records(store: &Store, topic: &str, count: usize) -> Vec<LogRecord> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let got = topic_records(store, topic);
        if got.len() >= count || Instant::now() > deadline {
            assert_eq!(got.len(), count, "{topic}: {got:#?}");
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `done` holds, failing the test with `what` after [`PATIENCE`].
pub async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of `record`'s header `name` as text.
pub fn header(record: &LogRecord, name: &str) -> Option<String> {
    record
        .record
        .headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value.as_ref())
        .map(|v| String::from_utf8_lossy(v).into_owned())
}
