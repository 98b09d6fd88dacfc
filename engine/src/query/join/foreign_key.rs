//! Foreign-key table–table joins: the left table's rows point at the right table's key through
//! an expression; an index from each foreign key to the left rows pointing at it lets a change
//! of a right row update every left row that points at it. Results are keyed by the left key.

use super::JoinType;
use super::rows::{InputRow, Output};
use super::state::{JoinState, Stored, keys, with_len};
use crate::error::Result;

/// A foreign-key join's left row: the foreign key it points at, then the record.
fn encode_left_row(foreign: Option<&[u8]>, record: &Stored) -> Vec<u8> {
    let mut out = vec![u8::from(foreign.is_some())];
    with_len(&mut out, foreign.unwrap_or_default());
    out.extend_from_slice(&record.encode());
    out
}

fn decode_left_row(bytes: &[u8]) -> Option<(Option<Vec<u8>>, Stored)> {
    let present = *bytes.first()? != 0;
    let len = u32::from_be_bytes(bytes.get(1..5)?.try_into().ok()?) as usize;
    let foreign = bytes.get(5..5 + len)?.to_vec();
    let record = Stored::decode(bytes.get(5 + len..)?)?;
    Some((present.then_some(foreign), record))
}

fn foreign_index_key(foreign: &[u8], left_key: &[u8]) -> Vec<u8> {
    let mut k = vec![keys::FOREIGN];
    with_len(&mut k, foreign);
    k.extend_from_slice(left_key);
    k
}

/// Keeps a left row and its foreign key (side 0), or a right row (side 1), and emits the
/// results the change makes: one for a left row, one per left row pointing at a right row.
pub(super) fn foreign_key(
    join_type: JoinType,
    state: &mut JoinState,
    side: usize,
    (key, record, has_value, from): InputRow,
    out: &mut Vec<Output>,
) -> Result<()> {
    if side == 1 {
        // A right row changed: every left row pointing at it changes with it.
        let Some(key) = key else { return Ok(()) };
        let row_key = JoinState::row_key(1, &key);
        let new = has_value.then(|| record.clone());
        let old = state.table_row(1, &key)?;
        match &new {
            Some(r) => state.put(row_key, r.encode()),
            None => state.delete(&row_key),
        }
        if new.is_none() && old.is_none() {
            return Ok(());
        }
        let mut prefix = vec![keys::FOREIGN];
        with_len(&mut prefix, &key);
        for index in state.keys_with_prefix(&prefix)? {
            let left_key = &index[prefix.len()..];
            let Some((_, left)) = state
                .get(&JoinState::row_key(0, left_key))?
                .and_then(|v| decode_left_row(&v))
            else {
                continue;
            };
            let timestamp = record.timestamp.max(left.timestamp);
            let tombstone = new.is_none() && join_type == JoinType::Inner;
            out.push(Output {
                left: Some(if tombstone { key_only(&left) } else { left }),
                right: if tombstone { None } else { new.clone() },
                timestamp,
                key: key.clone(),
                tombstone,
                from,
                current: None,
            });
        }
        return Ok(());
    }
    // A left row changed: its own key is the record key.
    let Some(left_key) = record.key.clone() else {
        return Ok(());
    };
    let row_key = JoinState::row_key(0, &left_key);
    let old = state.get(&row_key)?.and_then(|v| decode_left_row(&v));
    if let Some((Some(old_foreign), _)) = &old {
        state.delete(&foreign_index_key(old_foreign, &left_key));
    }
    if !has_value {
        state.delete(&row_key);
        if old.is_some() {
            out.push(Output {
                left: Some(key_only(&record)),
                right: None,
                timestamp: record.timestamp,
                key: Vec::new(),
                tombstone: true,
                from,
                current: None,
            });
        }
        return Ok(());
    }
    state.put(row_key, encode_left_row(key.as_deref(), &record));
    if let Some(foreign) = &key {
        state.put(foreign_index_key(foreign, &left_key), Vec::new());
    }
    let partner = match &key {
        Some(k) => state.table_row(1, k)?,
        None => None,
    };
    let timestamp = record
        .timestamp
        .max(partner.as_ref().map_or(i64::MIN, |p| p.timestamp));
    match (partner, join_type) {
        (Some(partner), _) => out.push(Output {
            left: Some(record),
            right: Some(partner),
            timestamp,
            key: key.unwrap_or_default(),
            tombstone: false,
            from,
            current: None,
        }),
        (None, JoinType::Left) => out.push(Output {
            left: Some(record),
            right: None,
            timestamp,
            key: key.unwrap_or_default(),
            tombstone: false,
            from,
            current: None,
        }),
        (None, _) => {
            // An inner result that no longer joins is deleted.
            let had = match old.and_then(|(f, _)| f) {
                Some(f) => state.table_row(1, &f)?.is_some(),
                None => false,
            };
            if had {
                out.push(Output {
                    left: Some(key_only(&record)),
                    right: None,
                    timestamp,
                    key: Vec::new(),
                    tombstone: true,
                    from,
                    current: None,
                });
            }
        }
    }
    Ok(())
}

/// A record with its key only: a deleted row that still names its key.
fn key_only(record: &Stored) -> Stored {
    Stored {
        value: None,
        ..record.clone()
    }
}
