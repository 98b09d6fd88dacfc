//! Stream–windowed-table joins (beyond ksqlDB): a stream record joins the rows that a table
//! written with `EMIT FINAL` has for the record's tumbling window and its join key. A window's
//! rows are written once it closes, after the records that fall in it, so each side keeps what
//! the other may still join: the stream its records until their window is complete, the table
//! its rows until the stream is a window past them. A window is complete once the table's time
//! passes its end (a row of a later window has come); a left join then emits the records that
//! found no row.

use super::rows::{InputRow, Output, pair};
use super::state::{JoinState, Stored, keys, time_bytes, time_from_bytes, with_len};
use super::{JoinType, WindowRows};
use crate::error::Result;

/// The start of the tumbling window of `size` milliseconds that `ts` falls in.
fn window_start(ts: i64, size: i64) -> i64 {
    ts - ts.rem_euclid(size)
}

/// `[kind][start][key]`: where a window's rows or waiting records for `key` begin.
fn window_prefix(kind: u8, start: i64, key: &[u8]) -> Vec<u8> {
    let mut prefix = vec![kind];
    prefix.extend_from_slice(&time_bytes(start));
    with_len(&mut prefix, key);
    prefix
}

/// The window start and join key at the head of a key [`window_prefix`] made.
fn split_window_prefix(key: &[u8]) -> Option<(i64, &[u8])> {
    let start = time_from_bytes(key.get(1..9)?)?;
    let len = u32::from_be_bytes(key.get(9..13)?.try_into().ok()?) as usize;
    Some((start, key.get(13..13 + len)?))
}

/// Takes out every entry of `kind` whose window starts at or before `last`.
fn take_through(state: &mut JoinState, kind: u8, last: i64) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut upper = vec![kind];
    upper.extend_from_slice(&time_bytes(last.saturating_add(1)));
    let taken = state.range(&[kind], Some(&upper))?;
    for (key, _) in &taken {
        state.delete(key);
    }
    Ok(taken)
}

/// Entries under `prefix`, decoded.
fn stored_under(state: &JoinState, prefix: &[u8]) -> Result<Vec<Stored>> {
    let end = eddy_storage::prefix_successor(prefix);
    Ok(state
        .range(prefix, end.as_deref())?
        .into_iter()
        .filter_map(|(_, v)| Stored::decode(&v))
        .collect())
}

/// Joins a stream record (side 0) with its window's rows, or a table row (side 1, its window
/// starting at `row_window`) with the records waiting for it.
pub(super) fn stream_window(
    (join_type, size, many): (JoinType, i64, WindowRows),
    state: &mut JoinState,
    side: usize,
    (key, record, has_value, from): InputRow,
    row_window: Option<i64>,
    out: &mut Vec<Output>,
) -> Result<()> {
    let ts = record.timestamp;
    if side == 1 {
        state.observed[1] = state.observed[1].max(ts);
        state.put_number(keys::OBSERVED[1], state.observed[1]);
        if let (Some(key), Some(start)) = (key, row_window) {
            table_row(state, (key, start, many), record, has_value, from, out)?;
        }
        return complete_windows(join_type, size, state, from, out);
    }
    if !has_value {
        return Ok(());
    }
    // The stream's time only paces the expiry of rows, so it is not kept: after a restart,
    // expiry waits for the next record.
    state.observed[0] = state.observed[0].max(ts);
    expire_rows(state, size)?;
    let Some(key) = key else {
        if join_type == JoinType::Left {
            out.push(joined(None, Some(record), None, from));
        }
        return Ok(());
    };
    let start = window_start(ts, size);
    let row_key = window_prefix(keys::FINAL_ROW, start, &key);
    // A window's rows are written at times within it: none has come while the table's time
    // is before the window.
    let (rows, settled) = if state.observed[1] < start {
        (Vec::new(), false)
    } else if many == WindowRows::Many {
        (stored_under(state, &row_key)?, false)
    } else {
        // The only row there can be is under the key itself, and once it (or, for a table
        // of one row per window, the window's row) has come, nothing more will.
        let row = state.get(&row_key)?.and_then(|v| Stored::decode(&v));
        let settled = row.is_some()
            || (many == WindowRows::OnePerWindow
                && state
                    .get(&window_prefix(keys::FINAL_ROW, start, &[]))?
                    .is_some());
        (row.into_iter().collect(), settled)
    };
    let complete = settled || state.observed[1] >= start.saturating_add(size);
    if rows.is_empty() && complete && join_type == JoinType::Left {
        out.push(joined(Some(key.clone()), Some(record.clone()), None, from));
    }
    for row in rows {
        out.push(joined(
            Some(key.clone()),
            Some(record.clone()),
            Some(row),
            from,
        ));
    }
    if !complete {
        // The record's place in its input tells it apart from others of the same key and time.
        let mut waiting = window_prefix(keys::WAITING, start, &key);
        waiting.extend_from_slice(&time_bytes(ts));
        waiting.extend_from_slice(&record.partition.to_be_bytes());
        waiting.extend_from_slice(&record.offset.to_be_bytes());
        state.put(waiting, record.encode());
    }
    Ok(())
}

/// A result: the stream record, at its own time, and the row it joined (if any).
fn joined(
    key: Option<Vec<u8>>,
    left: Option<Stored>,
    right: Option<Stored>,
    from: usize,
) -> Output {
    let timestamp = left.as_ref().map_or(0, |l| l.timestamp);
    let (left, right) = pair(0, left, right);
    Output {
        left,
        right,
        timestamp,
        key: key.unwrap_or_default(),
        tombstone: false,
        from,
        current: None,
    }
}

/// Keeps (or, for a tombstone, forgets) a table row of window `start`, and joins it with the
/// records of that window waiting for their key.
fn table_row(
    state: &mut JoinState,
    (key, start, many): (Vec<u8>, i64, WindowRows),
    record: Stored,
    has_value: bool,
    from: usize,
    out: &mut Vec<Output>,
) -> Result<()> {
    // Where several rows may share a join key, the table's own key tells them apart.
    let mut row_key = window_prefix(keys::FINAL_ROW, start, &key);
    if many == WindowRows::Many {
        row_key.extend_from_slice(record.key.as_deref().unwrap_or_default());
    }
    if !has_value {
        state.delete(&row_key);
        return Ok(());
    }
    if many == WindowRows::OnePerWindow {
        // The window has its row, whatever it joins on: a mark under the empty join key (a
        // join key is never empty), expired with the rows.
        state.put(window_prefix(keys::FINAL_ROW, start, &[]), Vec::new());
    }
    state.put(row_key, record.encode());
    for waiting in stored_under(state, &window_prefix(keys::WAITING, start, &key))? {
        out.push(joined(
            Some(key.clone()),
            Some(waiting),
            Some(record.clone()),
            from,
        ));
    }
    Ok(())
}

/// Lets go of the records of windows the table's time has passed: they have joined every row
/// their window has; a left join emits those that found none.
fn complete_windows(
    join_type: JoinType,
    size: i64,
    state: &mut JoinState,
    from: usize,
    out: &mut Vec<Output>,
) -> Result<()> {
    let Some(last) = state.observed[1]
        .checked_sub(size)
        .map(|t| window_start(t, size))
    else {
        return Ok(());
    };
    if last <= state.expired_through[0] {
        return Ok(());
    }
    state.expired_through[0] = last;
    let waiting = take_through(state, keys::WAITING, last)?;
    if join_type != JoinType::Left {
        return Ok(());
    }
    for (waiting_key, value) in waiting {
        let Some((start, key)) = split_window_prefix(&waiting_key) else {
            continue;
        };
        let prefix = window_prefix(keys::FINAL_ROW, start, key);
        if state.keys_with_prefix(&prefix)?.is_empty()
            && let Some(record) = Stored::decode(&value)
        {
            out.push(joined(Some(key.to_vec()), Some(record), None, from));
        }
    }
    Ok(())
}

/// Forgets the table rows of complete windows the stream is more than a window past: a record
/// that late finds none. (Rows of a window not yet complete are still owed to the records
/// waiting in it.)
fn expire_rows(state: &mut JoinState, size: i64) -> Result<()> {
    let Some(last) = state.observed[0]
        .checked_sub(size.saturating_mul(2))
        .map(|t| window_start(t, size).min(state.expired_through[0]))
    else {
        return Ok(());
    };
    if last <= state.expired_through[1] {
        return Ok(());
    }
    state.expired_through[1] = last;
    take_through(state, keys::FINAL_ROW, last)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: i64 = 10;

    fn stored(key: &str, ts: i64, offset: i64) -> Stored {
        Stored {
            key: Some(key.as_bytes().to_vec()),
            value: Some(b"v".to_vec()),
            timestamp: ts,
            partition: 0,
            offset,
            headers: Vec::new(),
        }
    }

    fn bid(
        state: &mut JoinState,
        join_type: JoinType,
        (key, ts, offset): (&str, i64, i64),
    ) -> Vec<Output> {
        let mut out = Vec::new();
        let row = (
            Some(key.as_bytes().to_vec()),
            stored(key, ts, offset),
            true,
            0,
        );
        stream_window(
            (join_type, SIZE, WindowRows::Many),
            state,
            0,
            row,
            None,
            &mut out,
        )
        .unwrap();
        out
    }

    fn final_row(
        state: &mut JoinState,
        join_type: JoinType,
        (key, start, ts, offset): (&str, i64, i64, i64),
    ) -> Vec<Output> {
        let mut out = Vec::new();
        let mut table_key = key.as_bytes().to_vec();
        table_key.extend_from_slice(&start.to_be_bytes());
        let mut record = stored(key, ts, offset);
        record.key = Some(table_key);
        let row = (Some(key.as_bytes().to_vec()), record, true, 0);
        stream_window(
            (join_type, SIZE, WindowRows::Many),
            state,
            1,
            row,
            Some(start),
            &mut out,
        )
        .unwrap();
        out
    }

    fn joined_offsets(out: &[Output]) -> Vec<(i64, Option<i64>)> {
        out.iter()
            .map(|o| {
                (
                    o.left.as_ref().map_or(-1, |l| l.offset),
                    o.right.as_ref().map(|r| r.offset),
                )
            })
            .collect()
    }

    /// Records wait for their window's row; the row joins them when it comes, and records
    /// after it join it at once.
    #[test]
    fn records_wait_for_their_windows_final_row() {
        let mut state = JoinState::empty_for_tests();
        assert!(bid(&mut state, JoinType::Inner, ("a", 1, 1)).is_empty());
        assert!(bid(&mut state, JoinType::Inner, ("a", 4, 2)).is_empty());
        assert!(bid(&mut state, JoinType::Inner, ("b", 5, 3)).is_empty());
        // Bids of the next window do not join the first window's row.
        assert!(bid(&mut state, JoinType::Inner, ("a", 12, 4)).is_empty());
        let out = final_row(&mut state, JoinType::Inner, ("a", 0, 4, 100));
        assert_eq!(joined_offsets(&out), [(1, Some(100)), (2, Some(100))]);
        let late = bid(&mut state, JoinType::Inner, ("a", 9, 5));
        assert_eq!(joined_offsets(&late), [(5, Some(100))]);
        assert!(late.iter().all(|o| o.timestamp == 9));
    }

    /// A left join emits a record without a row once a later window's row shows the table is
    /// past its window, and never a record that found one.
    #[test]
    fn a_left_join_emits_unmatched_records_once_their_window_is_complete() {
        let mut state = JoinState::empty_for_tests();
        bid(&mut state, JoinType::Left, ("a", 1, 1));
        bid(&mut state, JoinType::Left, ("b", 2, 2));
        let out = final_row(&mut state, JoinType::Left, ("a", 0, 1, 100));
        assert_eq!(joined_offsets(&out), [(1, Some(100))]);
        bid(&mut state, JoinType::Left, ("b", 11, 3));
        let out = final_row(&mut state, JoinType::Left, ("c", 10, 11, 101));
        assert_eq!(joined_offsets(&out), [(2, None)]);
        // A record of a complete window without a row is emitted at once.
        let out = bid(&mut state, JoinType::Left, ("b", 3, 4));
        assert_eq!(joined_offsets(&out), [(4, None)]);
        let inner = bid(&mut state, JoinType::Inner, ("b", 3, 5));
        assert!(inner.is_empty());
    }

    /// Rows of complete windows the stream is well past are forgotten; those of a window
    /// still incomplete stay for the records waiting in it.
    #[test]
    fn rows_expire_once_their_window_is_complete_and_the_stream_is_past_it() {
        let mut state = JoinState::empty_for_tests();
        final_row(&mut state, JoinType::Inner, ("a", 0, 5, 100));
        assert!(bid(&mut state, JoinType::Inner, ("a", 19, 1)).is_empty());
        assert_eq!(bid(&mut state, JoinType::Inner, ("a", 8, 2)).len(), 1);
        bid(&mut state, JoinType::Inner, ("z", 31, 3));
        assert_eq!(bid(&mut state, JoinType::Inner, ("a", 8, 4)).len(), 1);
        final_row(&mut state, JoinType::Inner, ("b", 10, 11, 101));
        bid(&mut state, JoinType::Inner, ("z", 32, 5));
        assert!(bid(&mut state, JoinType::Inner, ("a", 8, 6)).is_empty());
    }

    /// Once a table of one row per window has its window's row, the window's records need not
    /// wait: a left join emits one that does not match it at once.
    #[test]
    fn a_window_with_its_only_row_is_settled() {
        let mut state = JoinState::empty_for_tests();
        let mut out = Vec::new();
        let mut record = stored("", 4, 100);
        record.key = Some(0i64.to_be_bytes().to_vec());
        let row = (Some(b"7".to_vec()), record, true, 0);
        let one = (JoinType::Left, SIZE, WindowRows::OnePerWindow);
        stream_window(one, &mut state, 1, row, Some(0), &mut out).unwrap();
        for (price, offset) in [("7", 1), ("3", 2)] {
            let bid = (
                Some(price.as_bytes().to_vec()),
                stored(price, 6, offset),
                true,
                0,
            );
            stream_window(one, &mut state, 0, bid, None, &mut out).unwrap();
        }
        assert_eq!(joined_offsets(&out), [(1, Some(100)), (2, None)]);
        assert!(state.keys_with_prefix(&[keys::WAITING]).unwrap().is_empty());
    }
}
