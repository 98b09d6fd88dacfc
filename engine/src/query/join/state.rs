//! A join's state: the records each stage keeps (a table's latest row per key, a stream's
//! records within the window, records waiting for a partner, a foreign-key index) and its
//! clocks, read through from the store with a cache of what was read or written since it was
//! last dropped, and written to the store with each commit.

use std::collections::BTreeMap;
use std::ops::Bound;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::row::{RowConverter, SortField};
use eddy_storage::{LogRecord, Record, RecordHeader, Store};

use super::JoinStage;
use crate::error::{EngineError, Result};
use crate::query::state::StateWrites;
pub(super) use crate::query::state::{time_bytes, time_from_bytes};

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
    pub const FINAL_ROW: u8 = b'v';
    pub const FOREIGN: u8 = b'f';
    pub const PRESENT: u8 = b'p';
    pub const STREAM_TIME: &[u8] = b"mt";
    pub const OBSERVED: [&[u8]; 2] = [b"mo0", b"mo1"];
    pub const SEQUENCE: &[u8] = b"ms";
}

/// A join query's state: read through from the store, with the entries read or written since
/// the cache was last dropped kept in memory; writes go to the store with each commit.
pub struct JoinState {
    namespace: String,
    /// Which stage's state this is: the first byte of its keys in the store.
    stage: u8,
    /// The store entries are read through from; `None` keeps every entry in memory.
    store: Option<Store>,
    /// Entries read or written since the cache was last dropped, by key without the stage
    /// byte; `None` for one known to be absent. Every write not yet committed is here, so it
    /// shadows what the store holds.
    cache: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
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
    /// Per side, the time through which windowed records are already expired, so expiry need
    /// not pass over the deleted ones again.
    pub(super) expired_through: [i64; 2],
}

impl JoinState {
    /// The state kept in `namespace`: its clocks are read now, its entries as records need
    /// them.
    pub fn load(store: &Store, namespace: &str, plan: &JoinStage, stage: u8) -> Result<Self> {
        let mut fields = vec![SortField::new(plan.key_type.clone())];
        if plan.keyed_by_window() {
            fields.push(SortField::new(DataType::Int64));
            fields.push(SortField::new(DataType::Int64));
        }
        let converter = RowConverter::new(fields)
            .map_err(|e| EngineError::internal_from("cannot key a join", e))?;
        let mut state = JoinState {
            namespace: namespace.to_string(),
            stage,
            store: Some(store.clone()),
            cache: BTreeMap::new(),
            writes: Vec::new(),
            converter,
            stream_time: i64::MIN,
            observed: [i64::MIN; 2],
            sequence: 0,
            expired_through: [i64::MIN; 2],
        };
        state.stream_time = state.number(keys::STREAM_TIME)?.unwrap_or(i64::MIN);
        for side in 0..2 {
            state.observed[side] = state.number(keys::OBSERVED[side])?.unwrap_or(i64::MIN);
        }
        state.sequence = state.number(keys::SEQUENCE)?.unwrap_or(0) as u64;
        Ok(state)
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

    /// The entry under `key`, read from the store the first time.
    pub(super) fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(cached) = self.cache.get(key) {
            return Ok(cached.clone());
        }
        let Some(store) = &self.store else {
            return Ok(None);
        };
        let value = store.state_get(&self.namespace, &self.stored_key(key))?;
        self.cache.insert(key.to_vec(), value.clone());
        Ok(value)
    }

    /// Whether there is an entry under `key`.
    pub(super) fn contains(&mut self, key: &[u8]) -> Result<bool> {
        Ok(self.get(key)?.is_some())
    }

    fn number(&mut self, key: &[u8]) -> Result<Option<i64>> {
        Ok(self
            .get(key)?
            .and_then(|v| v.as_slice().try_into().ok())
            .map(i64::from_be_bytes))
    }

    pub(super) fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes
            .push((self.stored_key(&key), Some(value.clone())));
        self.cache.insert(key, Some(value));
    }

    pub(super) fn delete(&mut self, key: &[u8]) {
        if let Some(None) = self.cache.get(key) {
            return;
        }
        let stored = self.stored_key(key);
        self.writes.push((stored, None));
        self.cache.insert(key.to_vec(), None);
    }

    /// The entries from `from` up to `to` (exclusive; `None` for the end of the stage), in key
    /// order: the store's, with the cache's newer ones over them.
    pub(super) fn range(&self, from: &[u8], to: Option<&[u8]>) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        if to.is_some_and(|to| to <= from) {
            return Ok(Vec::new());
        }
        let mut found = BTreeMap::new();
        if let Some(store) = &self.store {
            let lower = self.stored_key(from);
            let upper = match to {
                Some(to) => Some(self.stored_key(to)),
                None => self.stage.checked_add(1).map(|next| vec![next]),
            };
            for entry in store.state_scan_range(&self.namespace, &lower, upper.as_deref())? {
                let (key, value) = entry?;
                found.insert(key.get(1..).unwrap_or_default().to_vec(), value);
            }
        }
        let upper = to.map_or(Bound::Unbounded, Bound::Excluded);
        for (key, value) in self.cache.range::<[u8], _>((Bound::Included(from), upper)) {
            match value {
                Some(value) => found.insert(key.clone(), value.clone()),
                None => found.remove(key),
            };
        }
        Ok(found.into_iter().collect())
    }

    /// Keys whose entries start with `prefix`.
    pub(super) fn keys_with_prefix(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>> {
        let end = eddy_storage::prefix_successor(prefix);
        Ok(self
            .range(prefix, end.as_deref())?
            .into_iter()
            .map(|(key, _)| key)
            .collect())
    }

    /// How many entries the cache holds.
    pub(super) fn cached_entries(&self) -> usize {
        self.cache.len()
    }

    /// Forgets the cached entries, to be read from the store again as records need them;
    /// only once every write has been taken to be committed, and never without a store.
    pub(super) fn drop_cached(&mut self) {
        if self.store.is_some() && self.writes.is_empty() {
            self.cache = BTreeMap::new();
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

    pub(super) fn table_row(&mut self, side: usize, key: &[u8]) -> Result<Option<Stored>> {
        Ok(self
            .get(&Self::row_key(side, key))?
            .and_then(|v| Stored::decode(&v)))
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
            store: None,
            cache: BTreeMap::new(),
            writes: Vec::new(),
            converter: RowConverter::new(vec![SortField::new(DataType::Utf8)])
                .expect("a string converter"),
            stream_time: i64::MIN,
            observed: [i64::MIN; 2],
            sequence: 0,
            expired_through: [i64::MIN; 2],
        }
    }
}
