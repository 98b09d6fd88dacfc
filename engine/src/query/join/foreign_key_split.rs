//! A foreign-key join split among the nodes of a service, as Kafka Streams splits one
//! (KIP-213): the left table's rows and the right table's rows live in different partitions,
//! so each side's tasks keep their own table and the two talk through two topics of the
//! query's.
//!
//! - A *left* task (one per partition of the left table) keeps the left rows. For each change
//!   it sends a subscription for the row's foreign key to the partition of the query's
//!   subscription topic that the key hashes to as the right table writes its keys (and an
//!   unsubscription from the key the row pointed at before), tagged with the change's offset.
//! - A *right* task (one per partition of the right table) keeps the right rows and the
//!   subscriptions. It answers each subscription, and each change of a subscribed row, with
//!   the right row (or none) to the partition of the query's response topic that the left key
//!   hashes to, tagged with the subscription's offset.
//! - The left task emits a result only for an answer tagged with the offset of the row it
//!   holds now, so every result for a left key comes from that key's task, in order, however
//!   often the row's foreign key moves. A deleted left row, or one without a foreign key, is
//!   answered at once.

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::physical_expr::expressions::Column as ColumnRef;
use eddy_storage::{LogRecord, Record, Store, partition_for_key};
use std::sync::Arc;

use super::rows::{Output, joined_rows};
use super::state::{JoinState, Stored, keys, put_bytes, take_bytes, with_len};
use super::{JoinStage, JoinType};
use crate::catalog::DataSource;
use crate::error::{EngineError, Result};
use crate::query::evaluate::evaluate_step;
use crate::query::operator::{Input, Operator, RowsOperator, StepOutput};
use crate::query::rows::Rows;
use crate::query::sink::{OutputColumn, SinkEncoder};
use crate::query::source::{RecordError, RecordErrorKind};

/// A subscription's first byte: the left row now points at the key.
const SUBSCRIBE: u8 = 1;
/// ... or no longer does.
const UNSUBSCRIBE: u8 = 0;

/// The first byte of a left task's keys naming where a left row's subscription went: the
/// subscription topic's partition and the foreign key, in the join key's stored form.
const SUBSCRIBED: u8 = keys::FOREIGN;
/// The first byte of a left task's keys marking a left key whose result holds a right row,
/// so an inner join deletes it when the row goes.
const JOINED: u8 = keys::PRESENT;

/// A subscription record's value: what it does, the left row's offset, the foreign key
/// (stored form), then the left key.
fn subscription(op: u8, version: i64, foreign: &[u8], left_key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(13 + foreign.len() + left_key.len());
    out.push(op);
    out.extend_from_slice(&version.to_be_bytes());
    with_len(&mut out, foreign);
    out.extend_from_slice(left_key);
    out
}

/// What [`subscription`] wrote: the op, the version, the foreign key and the left key.
fn read_subscription(bytes: &[u8]) -> Option<(u8, i64, &[u8], &[u8])> {
    let op = *bytes.first()?;
    let version = i64::from_be_bytes(bytes.get(1..9)?.try_into().ok()?);
    let len = u32::from_be_bytes(bytes.get(9..13)?.try_into().ok()?) as usize;
    let foreign = bytes.get(13..13 + len)?;
    Some((op, version, foreign, bytes.get(13 + len..)?))
}

/// A response record's value: the subscription's version, then the right row, if any.
fn response(version: i64, right: Option<&Stored>) -> Vec<u8> {
    let encoded = right.map(Stored::encode);
    let mut out = Vec::with_capacity(13 + encoded.as_ref().map_or(0, Vec::len));
    out.extend_from_slice(&version.to_be_bytes());
    put_bytes(&mut out, encoded.as_deref());
    out
}

/// What [`response`] wrote: the version and the right row.
fn read_response(bytes: &[u8]) -> Option<(i64, Option<Stored>)> {
    let version = i64::from_be_bytes(bytes.get(0..8)?.try_into().ok()?);
    let mut at = 8;
    let right = match take_bytes(bytes, &mut at)? {
        Some(encoded) => Some(Stored::decode(encoded)?),
        None => None,
    };
    Some((version, right))
}

fn keyed(prefix: u8, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + key.len());
    k.push(prefix);
    k.extend_from_slice(key);
    k
}

/// A record as a join keeps it.
fn stored(record: &LogRecord, partition: u32) -> Stored {
    Stored {
        key: record.record.key.as_ref().map(|k| k.to_vec()),
        value: record.record.value.as_ref().map(|v| v.to_vec()),
        timestamp: record.record.timestamp,
        partition,
        offset: record.offset,
        headers: record.record.headers.clone(),
    }
}

/// A failed record of partition `partition`.
fn unreadable(partition: u32, offset: i64, reason: &str) -> RecordError {
    RecordError {
        kind: RecordErrorKind::Value,
        partition,
        offset,
        reason: reason.to_string(),
    }
}

/// A result for the left row `left`: joined with `right`, or deleting its key.
fn result(
    (left, right): (Stored, Option<Stored>),
    timestamp: i64,
    tombstone: bool,
    from: usize,
) -> Output {
    let left = if tombstone {
        Stored {
            value: None,
            ..left
        }
    } else {
        left
    };
    Output {
        left: Some(left),
        right,
        timestamp,
        key: Vec::new(),
        tombstone,
        from,
        current: None,
    }
}

/// The left side of a split foreign-key join.
pub(crate) struct ForeignLeft<'p> {
    stage: &'p JoinStage,
    state: JoinState,
    then: Box<dyn RowsOperator + 'p>,
    /// Writes foreign keys as the right table writes its keys.
    encoder: SinkEncoder,
    key: [OutputColumn; 1],
    /// The subscription topic, and its partitions (the right table's).
    subscriptions: (String, u32),
}

impl<'p> ForeignLeft<'p> {
    /// The left task of `stage`'s join, its state in `namespace`, feeding `then`; it
    /// subscribes through `subscriptions`, partitioned as `right` is.
    pub(crate) fn new(
        store: &Store,
        (stage, namespace): (&'p JoinStage, &str),
        (right, subscriptions, schemas): (&DataSource, &str, &crate::codec::Schemas),
        then: Box<dyn RowsOperator + 'p>,
    ) -> Result<Self> {
        let column =
            right.key_columns().next().cloned().ok_or_else(|| {
                EngineError::internal("a foreign-key join's right table has no key")
            })?;
        Ok(ForeignLeft {
            state: JoinState::load(store, namespace, stage, 0)?,
            stage,
            then,
            encoder: SinkEncoder::new(right, schemas)?,
            key: [OutputColumn {
                column,
                expr: Arc::new(ColumnRef::new("key", 0)),
            }],
            subscriptions: (
                subscriptions.to_string(),
                store.partition_count(subscriptions)?.max(1),
            ),
        })
    }

    /// The partition of the subscription topic each foreign key goes to.
    fn partitions(&self, foreign: &ArrayRef) -> Result<Vec<Option<u32>>> {
        let schema = Schema::new(vec![Field::new("key", foreign.data_type().clone(), true)]);
        let batch = RecordBatch::try_new(Arc::new(schema), vec![foreign.clone()])
            .map_err(|e| EngineError::internal_from("cannot lay foreign keys out", e))?;
        let written = self.encoder.encode_keys(&self.key, &batch)?;
        Ok(written
            .iter()
            .map(|k| {
                k.as_deref()
                    .map(|k| partition_for_key(k, self.subscriptions.1))
            })
            .collect())
    }

    /// Keeps the left rows `records` change, subscribes them, and answers what needs no
    /// right row.
    fn left_changes(
        &mut self,
        partition: u32,
        records: &[LogRecord],
        out: &mut (Vec<Output>, StepOutput),
    ) -> Result<()> {
        let decoded = self.stage.left.decoder.decode(partition, records)?;
        let mut rows = Rows::decoded(partition, records, decoded);
        let (foreign, _) = evaluate_step(
            &self.stage.left.key,
            &mut rows,
            ("Error computing the join key", RecordErrorKind::Dropped),
        )?;
        let stored_keys = self.state.join_keys(std::slice::from_ref(&foreign))?;
        let targets = self.partitions(&foreign)?;
        out.1.errors.append(&mut rows.errors);
        for (row, &from) in rows.rows_from.iter().enumerate() {
            let record = &records[from];
            let Some(left_key) = record.record.key.as_deref() else {
                continue;
            };
            let now = stored(record, partition);
            let subscribed = keyed(SUBSCRIBED, left_key);
            let before = self.state.get(&subscribed)?;
            let target = stored_keys[row].as_deref().zip(targets[row]);
            let row_key = JoinState::row_key(0, left_key);
            let had_row = self.state.get(&row_key)?.is_some();
            if rows.has_value[row] {
                self.state.put(row_key, now.encode());
            } else {
                self.state.delete(&row_key);
            }
            if let Some(before) = &before
                && let Some((at, old)) = before.split_first_chunk::<4>()
                && (!rows.has_value[row] || target.map(|(fk, _)| fk) != Some(old))
            {
                self.subscribe(
                    (u32::from_be_bytes(*at), record),
                    subscription(UNSUBSCRIBE, record.offset, old, left_key),
                    &mut out.1,
                );
                self.state.delete(&subscribed);
            }
            match (rows.has_value[row], target) {
                (true, Some((fk, at))) => {
                    self.subscribe(
                        (at, record),
                        subscription(SUBSCRIBE, record.offset, fk, left_key),
                        &mut out.1,
                    );
                    let mut where_to = at.to_be_bytes().to_vec();
                    where_to.extend_from_slice(fk);
                    self.state.put(subscribed, where_to);
                }
                // No foreign key: answered now, as a right row that is not there.
                (true, None) => self.answer(now, None, from, &mut out.0)?,
                (false, _) if had_row => {
                    self.state.delete(&keyed(JOINED, left_key));
                    let timestamp = record.record.timestamp;
                    out.0.push(result((now, None), timestamp, true, from));
                }
                (false, _) => {}
            }
        }
        Ok(())
    }

    fn subscribe(&self, (at, record): (u32, &LogRecord), value: Vec<u8>, out: &mut StepOutput) {
        out.to.push((
            self.subscriptions.0.clone(),
            at,
            Record {
                key: record.record.key.clone(),
                value: Some(value.into()),
                timestamp: record.record.timestamp,
                headers: Vec::new(),
            },
        ));
    }

    /// The result for the left row `left` given the right row it points at (or none).
    fn answer(
        &mut self,
        left: Stored,
        right: Option<Stored>,
        from: usize,
        out: &mut Vec<Output>,
    ) -> Result<()> {
        let left_key = left.key.clone().unwrap_or_default();
        let joined = keyed(JOINED, &left_key);
        let timestamp = left
            .timestamp
            .max(right.as_ref().map_or(i64::MIN, |r| r.timestamp));
        match (right, self.stage.join_type) {
            (Some(right), _) => {
                self.state.put(joined, Vec::new());
                out.push(result((left, Some(right)), timestamp, false, from));
            }
            (None, JoinType::Left) => {
                self.state.delete(&joined);
                out.push(result((left, None), timestamp, false, from));
            }
            // An inner result that no longer joins is deleted.
            (None, _) => {
                if self.state.get(&joined)?.is_some() {
                    self.state.delete(&joined);
                    out.push(result((left, None), timestamp, true, from));
                }
            }
        }
        Ok(())
    }

    /// Answers from the right tasks: each for the left row it was asked for, if that row is
    /// still the one held.
    fn responses(
        &mut self,
        partition: u32,
        records: &[LogRecord],
        out: &mut (Vec<Output>, StepOutput),
    ) -> Result<()> {
        for (from, record) in records.iter().enumerate() {
            let parsed = record.record.value.as_deref().and_then(read_response);
            let (Some(left_key), Some((version, right))) = (record.record.key.as_deref(), parsed)
            else {
                out.1.errors.push(unreadable(
                    partition,
                    record.offset,
                    "not an answer to a foreign-key join's subscription",
                ));
                continue;
            };
            let Some(left) = self.state.table_row(0, left_key)? else {
                continue;
            };
            if left.offset == version {
                self.answer(left, right, from, &mut out.0)?;
            }
        }
        Ok(())
    }
}

impl Operator for ForeignLeft<'_> {
    fn process(
        &mut self,
        store: &Store,
        input: &Input,
        records: &[LogRecord],
    ) -> Result<StepOutput> {
        let mut out = (Vec::new(), StepOutput::empty());
        if input.side == 0 {
            self.left_changes(input.partition, records, &mut out)?;
        } else {
            self.responses(input.partition, records, &mut out)?;
        }
        let (outputs, mut step) = out;
        step.writes.append(&mut self.state.writes);
        if outputs.is_empty() {
            return Ok(step);
        }
        let none = RecordBatch::new_empty(self.stage.left.decoder.schema().clone());
        let joined = joined_rows(self.stage, &self.state, &outputs, (0, &none))?;
        let results: Vec<LogRecord> = outputs
            .iter()
            .map(|o| LogRecord {
                offset: records[o.from].offset,
                record: Record {
                    key: None,
                    value: None,
                    timestamp: o.timestamp,
                    headers: records[o.from].record.headers.clone(),
                },
            })
            .collect();
        let tombstone = outputs.iter().map(|o| o.tombstone).collect();
        let errors = std::mem::take(&mut step.errors);
        let rows = Rows::joined(input.partition, &results, joined, tombstone, errors);
        let then = self.then.process_rows(store, rows)?;
        step.extend(then);
        Ok(step)
    }

    fn state_namespace(&self) -> Option<&str> {
        Some(self.state.namespace())
    }

    fn cached_state(&self) -> usize {
        self.state.cached_entries() + self.then.cached_state()
    }

    fn drop_cached_state(&mut self) {
        self.state.drop_cached();
        self.then.drop_cached_state();
    }
}

/// The right side of a split foreign-key join.
pub(crate) struct ForeignRight<'p> {
    stage: &'p JoinStage,
    state: JoinState,
    /// The response topic's partitions (the left table's).
    responses: u32,
}

impl<'p> ForeignRight<'p> {
    /// The right task of `stage`'s join, its state in `namespace`, answering through
    /// `responses`.
    pub(crate) fn new(
        store: &Store,
        (stage, namespace): (&'p JoinStage, &str),
        responses: &str,
    ) -> Result<Self> {
        Ok(ForeignRight {
            state: JoinState::load(store, namespace, stage, 0)?,
            stage,
            responses: store.partition_count(responses)?.max(1),
        })
    }

    fn respond(&self, left_key: &[u8], value: Vec<u8>, timestamp: i64, out: &mut StepOutput) {
        out.records.push(Record {
            key: Some(left_key.to_vec().into()),
            value: Some(value.into()),
            timestamp,
            headers: Vec::new(),
        });
        out.routes.push(partition_for_key(left_key, self.responses));
    }

    fn subscriptions(
        &mut self,
        partition: u32,
        records: &[LogRecord],
        out: &mut StepOutput,
    ) -> Result<()> {
        for record in records {
            let Some((op, version, foreign, left_key)) =
                record.record.value.as_deref().and_then(read_subscription)
            else {
                out.errors.push(unreadable(
                    partition,
                    record.offset,
                    "not a foreign-key join's subscription",
                ));
                continue;
            };
            let mut index = vec![keys::FOREIGN];
            with_len(&mut index, foreign);
            index.extend_from_slice(left_key);
            if op == SUBSCRIBE {
                self.state.put(index, version.to_be_bytes().to_vec());
                let right = self.state.table_row(1, foreign)?;
                let value = response(version, right.as_ref());
                self.respond(left_key, value, record.record.timestamp, out);
            } else {
                self.state.delete(&index);
            }
        }
        Ok(())
    }

    fn right_changes(
        &mut self,
        partition: u32,
        records: &[LogRecord],
        out: &mut StepOutput,
    ) -> Result<()> {
        let decoded = self.stage.right.decoder.decode(partition, records)?;
        let mut rows = Rows::decoded(partition, records, decoded);
        let (keys_now, _) = evaluate_step(
            &self.stage.right.key,
            &mut rows,
            ("Error computing the join key", RecordErrorKind::Dropped),
        )?;
        let stored_keys = self.state.join_keys(&[keys_now])?;
        out.errors.append(&mut rows.errors);
        for (row, &from) in rows.rows_from.iter().enumerate() {
            let Some(key) = &stored_keys[row] else {
                continue;
            };
            let record = &records[from];
            let now = rows.has_value[row].then(|| stored(record, partition));
            let row_key = JoinState::row_key(1, key);
            match &now {
                Some(r) => self.state.put(row_key, r.encode()),
                None => self.state.delete(&row_key),
            }
            let mut prefix = vec![keys::FOREIGN];
            with_len(&mut prefix, key);
            for index in self.state.keys_with_prefix(&prefix)? {
                let left_key = &index[prefix.len()..];
                let Some(version) = self
                    .state
                    .get(&index)?
                    .and_then(|v| Some(i64::from_be_bytes(v.get(0..8)?.try_into().ok()?)))
                else {
                    continue;
                };
                let value = response(version, now.as_ref());
                self.respond(left_key, value, record.record.timestamp, out);
            }
        }
        Ok(())
    }
}

impl Operator for ForeignRight<'_> {
    fn process(
        &mut self,
        _store: &Store,
        input: &Input,
        records: &[LogRecord],
    ) -> Result<StepOutput> {
        let mut out = StepOutput::empty();
        if input.side == 0 {
            self.subscriptions(input.partition, records, &mut out)?;
        } else {
            self.right_changes(input.partition, records, &mut out)?;
        }
        out.writes.append(&mut self.state.writes);
        Ok(out)
    }

    fn state_namespace(&self) -> Option<&str> {
        Some(self.state.namespace())
    }

    fn cached_state(&self) -> usize {
        self.state.cached_entries()
    }

    fn drop_cached_state(&mut self) {
        self.state.drop_cached();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_and_responses_read_back_as_written() {
        let written = subscription(SUBSCRIBE, 42, b"fk\x00", b"left");
        assert_eq!(
            read_subscription(&written),
            Some((SUBSCRIBE, 42, &b"fk\x00"[..], &b"left"[..]))
        );
        let right = Stored {
            key: Some(b"fk".to_vec()),
            value: Some(b"{}".to_vec()),
            timestamp: 7,
            partition: 1,
            offset: 9,
            headers: Vec::new(),
        };
        let (version, back) = read_response(&response(42, Some(&right))).unwrap();
        assert_eq!(version, 42);
        assert_eq!(
            back.map(|r| (r.key, r.value, r.offset)),
            Some((right.key, right.value, 9))
        );
        assert_eq!(
            read_response(&response(3, None)).map(|(v, r)| (v, r.is_none())),
            Some((3, true))
        );
    }

    #[test]
    fn truncated_messages_are_refused_not_misread() {
        let written = subscription(UNSUBSCRIBE, 1, b"foreign", b"left");
        for cut in 0..13 + 7 {
            assert!(read_subscription(&written[..cut]).is_none(), "cut at {cut}");
        }
        let answer = response(5, None);
        for cut in 0..answer.len() {
            assert!(read_response(&answer[..cut]).is_none(), "cut at {cut}");
        }
    }
}
