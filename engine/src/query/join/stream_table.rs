//! Stream–table joins: the table side keeps its latest row per key; a stream record looks its
//! key up there, and a left join emits it without a partner when there is none.

use super::JoinType;
use super::rows::{InputRow, Output};
use super::state::JoinState;
use crate::error::Result;

/// Keeps a table row (side 1), or looks a stream record (side 0) up in the table.
pub(super) fn stream_table(
    join_type: JoinType,
    state: &mut JoinState,
    side: usize,
    (key, record, has_value, from): InputRow,
    out: &mut Vec<Output>,
) -> Result<()> {
    if side == 1 {
        // The table: remember its latest row per key.
        let Some(key) = key else { return Ok(()) };
        let row_key = JoinState::row_key(1, &key);
        if has_value {
            state.put(row_key, record.encode());
        } else {
            state.delete(&row_key);
        }
        return Ok(());
    }
    if !has_value {
        return Ok(());
    }
    let partner = match &key {
        Some(k) => state.table_row(1, k)?,
        None => None,
    };
    if partner.is_some() || join_type == JoinType::Left {
        let timestamp = record.timestamp;
        out.push(Output {
            left: Some(record),
            right: partner,
            timestamp,
            key: key.unwrap_or_default(),
            tombstone: false,
            from,
            current: None,
        });
    }
    Ok(())
}
