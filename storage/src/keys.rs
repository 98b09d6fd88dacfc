//! Byte layouts of the keys in each RocksDB column family.
//!
//! All integers are big-endian so that RocksDB's byte order is numeric order.

/// Column family holding record batches.
pub const CF_LOG: &str = "log";
/// Column family holding topic metadata, segment tables and log start offsets.
pub const CF_META: &str = "meta";
/// Column family holding consumer-group offsets.
pub const CF_OFFSETS: &str = "offsets";
/// Column family holding operator state and materialized tables.
pub const CF_STATE: &str = "state";
/// Column family of the replicated log's Raft log, vote and applied position.
pub const CF_RAFT: &str = "raft";

/// `log`: topic id · partition · base offset.
pub fn log_key(topic_id: u32, partition: u32, base_offset: i64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[0..4].copy_from_slice(&topic_id.to_be_bytes());
    key[4..8].copy_from_slice(&partition.to_be_bytes());
    key[8..16].copy_from_slice(&(base_offset as u64).to_be_bytes());
    key
}

/// The prefix shared by every batch of one partition.
pub fn log_partition_prefix(topic_id: u32, partition: u32) -> [u8; 8] {
    let mut key = [0u8; 8];
    key[0..4].copy_from_slice(&topic_id.to_be_bytes());
    key[4..8].copy_from_slice(&partition.to_be_bytes());
    key
}

/// The base offset encoded in a `log` key.
pub fn log_key_offset(key: &[u8]) -> Option<i64> {
    let bytes: [u8; 8] = key.get(8..16)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes) as i64)
}

/// `meta`: a topic's description, by name.
pub fn topic_key(name: &str) -> Vec<u8> {
    [b"topic/".as_slice(), name.as_bytes()].concat()
}

/// `meta`: prefix of all topic descriptions.
pub const TOPIC_PREFIX: &[u8] = b"topic/";

/// `meta`: the next topic id to hand out.
pub const NEXT_TOPIC_ID_KEY: &[u8] = b"next-topic-id";
/// Meta key of the node's id on a Kafka cluster, made when the store is first opened on one.
pub const NODE_ID_KEY: &[u8] = b"node-id";

/// `meta`: a partition's log start offset, written when retention or compaction advances it.
pub fn log_start_key(topic_id: u32, partition: u32) -> Vec<u8> {
    [
        b"log-start/".as_slice(),
        &log_partition_prefix(topic_id, partition),
    ]
    .concat()
}

/// `meta`: one segment of a partition, by its base offset.
pub fn segment_key(topic_id: u32, partition: u32, base_offset: i64) -> Vec<u8> {
    [
        segment_prefix(topic_id, partition).as_slice(),
        &(base_offset as u64).to_be_bytes(),
    ]
    .concat()
}

/// `meta`: prefix of all segments of a partition.
pub fn segment_prefix(topic_id: u32, partition: u32) -> Vec<u8> {
    [
        b"segment/".as_slice(),
        &log_partition_prefix(topic_id, partition),
    ]
    .concat()
}

/// `meta`: an idempotent producer's state on a partition.
pub fn producer_key(topic_id: u32, partition: u32, producer_id: i64) -> Vec<u8> {
    [
        producer_prefix(topic_id, partition).as_slice(),
        &producer_id.to_be_bytes(),
    ]
    .concat()
}

/// `meta`: prefix of every producer's state on a partition.
pub fn producer_prefix(topic_id: u32, partition: u32) -> Vec<u8> {
    [
        b"producer/".as_slice(),
        &log_partition_prefix(topic_id, partition),
    ]
    .concat()
}

/// `meta`: prefix of a partition's open transactions.
pub fn open_txn_prefix(topic_id: u32, partition: u32) -> Vec<u8> {
    [
        b"txn-open/".as_slice(),
        &log_partition_prefix(topic_id, partition),
    ]
    .concat()
}

/// `meta`: a transactional producer's open transaction on a partition; the value is its first
/// offset there.
pub fn open_txn_key(topic_id: u32, partition: u32, producer_id: i64) -> Vec<u8> {
    [
        open_txn_prefix(topic_id, partition).as_slice(),
        &producer_id.to_be_bytes(),
    ]
    .concat()
}

/// `meta`: prefix of a partition's aborted-transaction index.
pub fn aborted_txn_prefix(topic_id: u32, partition: u32) -> Vec<u8> {
    [
        b"txn-aborted/".as_slice(),
        &log_partition_prefix(topic_id, partition),
    ]
    .concat()
}

/// `meta`: an aborted transaction, by the offset of its abort marker; the value is the producer
/// id, the transaction's first offset on the partition and the last stable offset just after
/// the marker.
pub fn aborted_txn_key(topic_id: u32, partition: u32, marker_offset: i64) -> Vec<u8> {
    [
        aborted_txn_prefix(topic_id, partition).as_slice(),
        &(marker_offset as u64).to_be_bytes(),
    ]
    .concat()
}

/// `meta`: prefix of everything a topic id owns in `meta` besides its description.
pub fn topic_id_meta_prefixes(topic_id: u32) -> [Vec<u8>; 5] {
    [
        [b"log-start/".as_slice(), &topic_id.to_be_bytes()].concat(),
        [b"segment/".as_slice(), &topic_id.to_be_bytes()].concat(),
        [b"producer/".as_slice(), &topic_id.to_be_bytes()].concat(),
        [b"txn-open/".as_slice(), &topic_id.to_be_bytes()].concat(),
        [b"txn-aborted/".as_slice(), &topic_id.to_be_bytes()].concat(),
    ]
}

fn push_str(out: &mut Vec<u8>, s: &str) {
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..usize::from(len)]);
}

/// `offsets`: group · topic · partition, each string length-prefixed.
pub fn group_offset_key(group: &str, topic: &str, partition: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + group.len() + topic.len());
    push_str(&mut key, group);
    push_str(&mut key, topic);
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

/// `offsets`: prefix of every offset a group committed.
pub fn group_prefix(group: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + group.len());
    push_str(&mut key, group);
    key
}

/// Splits an `offsets` key into group, topic and partition.
pub fn parse_group_offset_key(key: &[u8]) -> Option<(String, String, u32)> {
    let (group, rest) = take_str(key)?;
    let (topic, rest) = take_str(rest)?;
    let partition = u32::from_be_bytes(rest.try_into().ok()?);
    Some((group, topic, partition))
}

fn take_str(bytes: &[u8]) -> Option<(String, &[u8])> {
    let len = usize::from(u16::from_be_bytes(bytes.get(0..2)?.try_into().ok()?));
    let s = std::str::from_utf8(bytes.get(2..2 + len)?).ok()?;
    Some((s.to_string(), &bytes[2 + len..]))
}

/// `state`: namespace (length-prefixed) · key.
pub fn state_key(namespace: &str, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + namespace.len() + key.len());
    push_str(&mut out, namespace);
    out.extend_from_slice(key);
    out
}

/// Length of the namespace prefix that [`state_key`] puts before the user key.
pub fn state_prefix_len(namespace: &str) -> usize {
    2 + namespace.len().min(usize::from(u16::MAX))
}

/// The smallest key greater than every key that starts with `prefix`, if there is one.
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last != u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_keys_sort_by_topic_partition_offset() {
        let a = log_key(1, 0, 5);
        let b = log_key(1, 0, 300);
        let c = log_key(1, 1, 0);
        let d = log_key(2, 0, 0);
        assert!(a < b && b < c && c < d);
        assert_eq!(log_key_offset(&b), Some(300));
        assert!(a.starts_with(&log_partition_prefix(1, 0)));
    }

    #[test]
    fn group_offset_keys_round_trip() {
        let key = group_offset_key("g1", "orders", 7);
        assert_eq!(
            parse_group_offset_key(&key),
            Some(("g1".to_string(), "orders".to_string(), 7))
        );
        assert!(key.starts_with(&group_prefix("g1")));
        // A group whose name is a prefix of another does not share its key prefix.
        assert!(!group_offset_key("g10", "orders", 7).starts_with(&group_prefix("g1")));
    }

    #[test]
    fn prefix_successor_bounds_the_prefix() {
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_successor(&[0xff, 0xff]), None);
    }
}
