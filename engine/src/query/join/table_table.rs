//! Table–table joins on the primary key: both sides keep their latest row per key; a change on
//! either side emits the new result for its key, or deletes one that existed.

use super::JoinType;
use super::rows::{InputRow, Output, pair};
use super::state::JoinState;
use crate::error::Result;

/// Whether a pair of rows makes a result row of the join.
fn result_exists(join_type: JoinType, left: bool, right: bool) -> bool {
    match join_type {
        JoinType::Inner => left && right,
        JoinType::Left => left,
        JoinType::Right => right,
        JoinType::Outer => left || right,
    }
}

/// Stores a table row of `side` (or deletes it) and emits the result for its key: the new
/// joined row, or a deletion when a result existed and no longer does.
pub(super) fn table_table(
    join_type: JoinType,
    state: &mut JoinState,
    side: usize,
    (key, record, has_value, from): InputRow,
    out: &mut Vec<Output>,
) -> Result<()> {
    let Some(key) = key else { return Ok(()) };
    let row_key = JoinState::row_key(side, &key);
    let old = state.table_row(side, &key)?;
    let new = has_value.then(|| record.clone());
    match &new {
        Some(r) => state.put(row_key, r.encode()),
        None => state.delete(&row_key),
    }
    let other = state.table_row(1 - side, &key)?;
    let (old_l, old_r) = pair(side, old.as_ref().map(|_| ()), other.as_ref().map(|_| ()));
    let had = result_exists(join_type, old_l.is_some(), old_r.is_some());
    let (left, right) = pair(side, new, other);
    let timestamp = [&left, &right]
        .iter()
        .filter_map(|s| s.as_ref().map(|s| s.timestamp))
        .max()
        .unwrap_or(record.timestamp)
        .max(record.timestamp);
    if result_exists(join_type, left.is_some(), right.is_some()) {
        out.push(Output {
            left,
            right,
            timestamp,
            key,
            tombstone: false,
            from,
            current: None,
        });
    } else if had {
        out.push(Output {
            left: None,
            right: None,
            timestamp,
            key,
            tombstone: true,
            from,
            current: None,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::join::state::Stored;

    fn record(offset: i64, timestamp: i64) -> Stored {
        Stored {
            key: Some(b"k".to_vec()),
            value: Some(b"v".to_vec()),
            timestamp,
            partition: 0,
            offset,
            headers: Vec::new(),
        }
    }

    #[test]
    fn each_join_type_keeps_the_pairs_it_should() {
        let cases = [
            (JoinType::Inner, [false, false, false, true]),
            (JoinType::Left, [false, false, true, true]),
            (JoinType::Right, [false, true, false, true]),
            (JoinType::Outer, [false, true, true, true]),
        ];
        for (join_type, expected) in cases {
            let got = [(false, false), (false, true), (true, false), (true, true)]
                .map(|(l, r)| result_exists(join_type, l, r));
            assert_eq!(got, expected, "{join_type:?}");
        }
    }

    #[test]
    fn a_table_join_deletes_a_result_only_when_one_existed() {
        let mut st = JoinState::empty_for_tests();
        let mut out = Vec::new();
        let key = Some(b"k".to_vec());
        let row = |offset, present| (key.clone(), record(offset, offset), present, 0);
        table_table(JoinType::Inner, &mut st, 0, row(1, true), &mut out).expect("joins");
        assert!(out.is_empty(), "no right row yet");
        table_table(JoinType::Inner, &mut st, 1, row(2, true), &mut out).expect("joins");
        table_table(JoinType::Inner, &mut st, 0, row(3, false), &mut out).expect("joins");
        assert_eq!(out.len(), 2);
        assert!(!out[0].tombstone && out[1].tombstone);
        // Deleting the right row now changes nothing: there is no result left.
        table_table(JoinType::Inner, &mut st, 1, row(4, false), &mut out).expect("joins");
        assert_eq!(out.len(), 2);
    }
}
