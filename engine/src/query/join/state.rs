//! A join's state: the records each stage keeps (a table's latest row per key, a stream's
//! records within the window, records waiting for a partner, a foreign-key index) and its
//! clocks, mirrored in memory and written through to the store with each commit.

use std::collections::BTreeMap;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::row::{RowConverter, SortField};
use eddy_storage::{LogRecord, Record, RecordHeader, Store};

use super::JoinStage;
use crate::error::{EngineError, Result};
use crate::query::state::StateWrites;

/// A record kept in join state: enough to decode it again.
#[derive(Debug, Clone)]
pub(super) struct Stored {
    pub(super) key: Option<Vec<u8>>,
    pub(super) value: Option<Vec<u8>>,
    pub(super) timestamp: i64,
    pub(super) partition: u32,
    pub(super) offset: i64,
    pub(super) headers: Vec<RecordHeader>,
}

/// Appends an optional byte string: a presence flag, its length, its bytes.
pub(super) fn put_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    out.push(u8::from(bytes.is_some()));
    with_len(out, bytes.unwrap_or_default());
}

/// Reads what [`put_bytes`] wrote, advancing `at`.
pub(super) fn take_bytes<'b>(bytes: &'b [u8], at: &mut usize) -> Option<Option<&'b [u8]>> {
    let present = *bytes.get(*at)? != 0;
    let len = u32::from_be_bytes(bytes.get(*at + 1..*at + 5)?.try_into().ok()?) as usize;
    let value = bytes.get(*at + 5..*at + 5 + len)?;
    *at += 5 + len;
    Some(present.then_some(value))
}

impl Stored {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            40 + self.key.as_ref().map_or(0, Vec::len) + self.value.as_ref().map_or(0, Vec::len),
        );
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.partition.to_be_bytes());
        out.extend_from_slice(&self.offset.to_be_bytes());
        put_bytes(&mut out, self.key.as_deref());
        put_bytes(&mut out, self.value.as_deref());
        out.extend_from_slice(&(self.headers.len() as u32).to_be_bytes());
        for header in &self.headers {
            put_bytes(&mut out, Some(header.key.as_bytes()));
            put_bytes(&mut out, header.value.as_deref());
        }
        out
    }

    pub(super) fn decode(bytes: &[u8]) -> Option<Stored> {
        let timestamp = i64::from_be_bytes(bytes.get(0..8)?.try_into().ok()?);
        let partition = u32::from_be_bytes(bytes.get(8..12)?.try_into().ok()?);
        let offset = i64::from_be_bytes(bytes.get(12..20)?.try_into().ok()?);
        let mut at = 20;
        let key = take_bytes(bytes, &mut at)?.map(<[u8]>::to_vec);
        let value = take_bytes(bytes, &mut at)?.map(<[u8]>::to_vec);
        let count = u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?);
        at += 4;
        let mut headers = Vec::new();
        for _ in 0..count {
            let name = take_bytes(bytes, &mut at)??;
            let value = take_bytes(bytes, &mut at)?;
            headers.push(RecordHeader {
                key: String::from_utf8_lossy(name).into_owned(),
                value: value.map(bytes::Bytes::copy_from_slice),
            });
        }
        Some(Stored {
            key,
            value,
            timestamp,
            partition,
            offset,
            headers,
        })
    }

    pub(super) fn log_record(&self) -> LogRecord {
        LogRecord {
            offset: self.offset,
            record: Record {
                key: self.key.clone().map(Into::into),
                value: self.value.clone().map(Into::into),
                timestamp: self.timestamp,
                headers: self.headers.clone(),
            },
        }
    }
}

/// A timestamp as bytes that sort as the numbers do.
pub(super) fn time_bytes(ts: i64) -> [u8; 8] {
    ((ts as u64) ^ (1 << 63)).to_be_bytes()
}

/// A timestamp back from [`time_bytes`].
pub(super) fn time_from_bytes(bytes: &[u8]) -> Option<i64> {
    Some((u64::from_be_bytes(bytes.get(0..8)?.try_into().ok()?) ^ (1 << 63)) as i64)
}

/// Appends `bytes` after their length, so a key can hold several of them.
pub(super) fn with_len(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// State keys: a table's row per key, a stream's windowed records and their expiry index,
/// records waiting for a partner, a foreign-key index, and the clocks.
pub(super) mod keys {
    pub const ROW: u8 = b'r';
    pub const WINDOW: u8 = b'w';
    pub const EXPIRY: u8 = b'e';
    pub const WAITING: u8 = b'x';
    pub const FOREIGN: u8 = b'f';
    pub const PRESENT: u8 = b'p';
    pub const STREAM_TIME: &[u8] = b"mt";
    pub const OBSERVED: [&[u8]; 2] = [b"mo0", b"mo1"];
    pub const SEQUENCE: &[u8] = b"ms";
}

/// A join query's state: mirrored in memory, written through to the store with each commit.
pub struct JoinState {
    namespace: String,
    /// Which stage's state this is: the first byte of its keys in the store.
    stage: u8,
    /// Every entry of the stage, by key without the stage byte.
    pub(super) entries: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Changes since the caller last took them.
    pub(super) writes: StateWrites,
    /// Join keys (and window bounds) to and from their stored form.
    pub(super) converter: RowConverter,
    /// The latest timestamp either side has seen.
    pub(super) stream_time: i64,
    /// The latest timestamp each side has seen.
    pub(super) observed: [i64; 2],
    /// Numbers records kept under the same key and time, and records handed to the next stage.
    pub(super) sequence: u64,
}

impl JoinState {
    /// The state of query `query_id`, read back from the store.
    pub fn load(store: &Store, query_id: &str, plan: &JoinStage, stage: u8) -> Result<Self> {
        let namespace = crate::query::state::namespace(query_id);
        let mut entries = BTreeMap::new();
        for entry in store.state_scan_prefix(&namespace, &[stage])? {
            let (k, v) = entry?;
            entries.insert(k[1..].to_vec(), v);
        }
        let number = |key: &[u8]| {
            entries
                .get(key)
                .and_then(|v: &Vec<u8>| v.as_slice().try_into().ok())
                .map(i64::from_be_bytes)
        };
        let stream_time = number(keys::STREAM_TIME).unwrap_or(i64::MIN);
        let observed = [
            number(keys::OBSERVED[0]).unwrap_or(i64::MIN),
            number(keys::OBSERVED[1]).unwrap_or(i64::MIN),
        ];
        let sequence = number(keys::SEQUENCE).unwrap_or(0) as u64;
        let mut fields = vec![SortField::new(plan.key_type.clone())];
        if plan.window.is_some() {
            fields.push(SortField::new(DataType::Int64));
            fields.push(SortField::new(DataType::Int64));
        }
        let converter = RowConverter::new(fields)
            .map_err(|e| EngineError::internal_from("cannot key a join", e))?;
        Ok(JoinState {
            namespace,
            stage,
            entries,
            writes: Vec::new(),
            converter,
            stream_time,
            observed,
            sequence,
        })
    }

    /// Where its state lives in the store.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub(super) fn stored_key(&self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(key.len() + 1);
        k.push(self.stage);
        k.extend_from_slice(key);
        k
    }

    pub(super) fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes
            .push((self.stored_key(&key), Some(value.clone())));
        self.entries.insert(key, value);
    }

    pub(super) fn delete(&mut self, key: &[u8]) {
        if self.entries.remove(key).is_some() {
            let stored = self.stored_key(key);
            self.writes.push((stored, None));
        }
    }

    pub(super) fn put_number(&mut self, key: &[u8], n: i64) {
        self.put(key.to_vec(), n.to_be_bytes().to_vec());
    }

    pub(super) fn next_sequence(&mut self) -> u64 {
        self.sequence += 1;
        self.put_number(keys::SEQUENCE, self.sequence as i64);
        self.sequence
    }

    pub(super) fn row_key(side: usize, key: &[u8]) -> Vec<u8> {
        let mut k = vec![keys::ROW, side as u8];
        k.extend_from_slice(key);
        k
    }

    pub(super) fn table_row(&self, side: usize, key: &[u8]) -> Option<Stored> {
        self.entries
            .get(&Self::row_key(side, key))
            .and_then(|v| Stored::decode(v))
    }

    /// Keys whose entries start with `prefix`.
    pub(super) fn keys_with_prefix(&self, prefix: &[u8]) -> Vec<Vec<u8>> {
        self.entries
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The join keys (with the window bounds of windowed sources) in the converter's
    /// format; `None` for a null key.
    pub(super) fn join_keys(&self, columns: &[ArrayRef]) -> Result<Vec<Option<Vec<u8>>>> {
        let rows = self
            .converter
            .convert_columns(columns)
            .map_err(|e| EngineError::internal_from("cannot key a join", e))?;
        let keys = &columns[0];
        Ok((0..keys.len())
            .map(|i| keys.is_valid(i).then(|| rows.row(i).as_ref().to_vec()))
            .collect())
    }
}

#[cfg(test)]
impl JoinState {
    /// An empty state keyed by strings, for the join kinds' unit tests.
    pub(super) fn empty_for_tests() -> Self {
        JoinState {
            namespace: "test".into(),
            stage: 0,
            entries: BTreeMap::new(),
            writes: Vec::new(),
            converter: RowConverter::new(vec![SortField::new(DataType::Utf8)])
                .expect("a string converter"),
            stream_time: i64::MIN,
            observed: [i64::MIN; 2],
            sequence: 0,
        }
    }
}
