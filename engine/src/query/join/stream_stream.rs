//! Stream–stream joins: each side keeps its records for the window plus the grace period;
//! a record joins every record of the other side within the window. Outer results of a join
//! with an explicit grace period wait until the window closes, so none is spurious.

use super::rows::{InputRow, Output, pair};
use super::state::{JoinState, Stored, keys, time_bytes, time_from_bytes, with_len};
use super::{JoinType, JoinWindowMs};
use crate::error::Result;

/// The times of the other side's records that a record of `side` at `ts` joins: the window
/// before and after it (a right record's window is the left's mirrored), never before 0.
fn partner_times(window: JoinWindowMs, side: usize, ts: i64) -> (i64, i64) {
    let (from, to) = if side == 0 {
        (
            ts.saturating_sub(window.before),
            ts.saturating_add(window.after),
        )
    } else {
        (
            ts.saturating_sub(window.after),
            ts.saturating_add(window.before),
        )
    };
    (from.max(0), to.max(0))
}

/// Whether a record of `side` at `ts`, still without a partner, can get none any more once
/// stream time is `stream_time`: its window and grace period are behind it.
fn unmatched_is_final(window: JoinWindowMs, side: usize, ts: i64, stream_time: i64) -> bool {
    let look = if side == 0 {
        window.after
    } else {
        window.before
    };
    ts.saturating_add(look).saturating_add(window.grace) < stream_time
}

/// Joins one record of `side` with the other side's records within the window, keeps it for
/// the other side's later records, and emits (or keeps waiting) what an outer join owes.
pub(super) fn stream_stream(
    join_type: JoinType,
    window: JoinWindowMs,
    state: &mut JoinState,
    side: usize,
    (key, record, has_value, from): InputRow,
    out: &mut Vec<Output>,
) -> Result<()> {
    // Records without a key or a value cannot join.
    let Some(key) = key else { return Ok(()) };
    if !has_value {
        return Ok(());
    }
    let ts = record.timestamp;
    let other = 1 - side;
    let retention = window.retention();
    // This side's window store: keep the record unless it is already expired, and forget
    // what has.
    state.observed[side] = state.observed[side].max(ts);
    state.put_number(keys::OBSERVED[side], state.observed[side]);
    let expired_before = state.observed[side].saturating_sub(retention);
    let sequence = state.next_sequence();
    if ts > expired_before {
        let mut window_key = vec![keys::WINDOW, side as u8];
        with_len(&mut window_key, &key);
        window_key.extend_from_slice(&time_bytes(ts));
        window_key.extend_from_slice(&sequence.to_be_bytes());
        let mut expiry_key = vec![keys::EXPIRY, side as u8];
        expiry_key.extend_from_slice(&time_bytes(ts));
        expiry_key.extend_from_slice(&sequence.to_be_bytes());
        state.put(window_key.clone(), record.encode());
        state.put(expiry_key, window_key);
    }
    expire(state, side, expired_before)?;

    let (from_ts, to_ts) = partner_times(window, side, ts);
    state.stream_time = state.stream_time.max(ts);
    state.put_number(keys::STREAM_TIME, state.stream_time);
    if window.wait_for_close && ts == state.stream_time {
        emit_closed(state, window, out, from)?;
    }
    let from_ts = from_ts.max(state.observed[other].saturating_sub(retention) + 1);
    let mut prefix = vec![keys::WINDOW, other as u8];
    with_len(&mut prefix, &key);
    let mut matched = false;
    if from_ts <= to_ts {
        let mut lower = prefix.clone();
        lower.extend_from_slice(&time_bytes(from_ts));
        let mut upper = prefix.clone();
        upper.extend_from_slice(&time_bytes(to_ts));
        upper.extend_from_slice(&u64::MAX.to_be_bytes());
        // Just past the last key at `to_ts`.
        upper.push(0);
        let partners: Vec<Stored> = state
            .range(&lower, Some(&upper))?
            .into_iter()
            .filter_map(|(_, v)| Stored::decode(&v))
            .collect();
        for partner in partners {
            matched = true;
            if window.wait_for_close {
                let mut waiting = vec![keys::WAITING];
                waiting.extend_from_slice(&time_bytes(partner.timestamp));
                waiting.push(other as u8);
                with_len(&mut waiting, &key);
                for k in state.keys_with_prefix(&waiting)? {
                    state.delete(&k);
                }
            }
            let timestamp = ts.max(partner.timestamp);
            let (left, right) = pair(side, Some(record.clone()), Some(partner));
            out.push(Output {
                left,
                right,
                timestamp,
                key: key.clone(),
                tombstone: false,
                from,
                current: None,
            });
        }
    }
    if !matched && join_type.preserves(side) {
        if !window.wait_for_close || to_ts < state.stream_time {
            let (left, right) = pair(side, Some(record), None);
            out.push(Output {
                left,
                right,
                timestamp: ts,
                key,
                tombstone: false,
                from,
                current: None,
            });
        } else {
            let mut waiting = vec![keys::WAITING];
            waiting.extend_from_slice(&time_bytes(ts));
            waiting.push(side as u8);
            with_len(&mut waiting, &key);
            waiting.extend_from_slice(&sequence.to_be_bytes());
            state.put(waiting, record.encode());
        }
    }
    Ok(())
}

/// Forgets a side's windowed records at or before `expired_before`, from where the last
/// expiry stopped.
fn expire(state: &mut JoinState, side: usize, expired_before: i64) -> Result<()> {
    let through = state.expired_through[side];
    if expired_before <= through {
        return Ok(());
    }
    let prefix = [keys::EXPIRY, side as u8];
    let mut from = prefix.to_vec();
    if through != i64::MIN {
        from.extend_from_slice(&time_bytes(through.saturating_add(1)));
    }
    let to = match expired_before.checked_add(1) {
        Some(after) => Some([prefix.as_slice(), &time_bytes(after)].concat()),
        None => eddy_storage::prefix_successor(&prefix),
    };
    for (expiry, window_key) in state.range(&from, to.as_deref())? {
        state.delete(&expiry);
        state.delete(&window_key);
    }
    state.expired_through[side] = expired_before;
    Ok(())
}

/// Emits the records still waiting for a partner whose window has closed.
fn emit_closed(
    state: &mut JoinState,
    window: JoinWindowMs,
    out: &mut Vec<Output>,
    from: usize,
) -> Result<()> {
    // Only records before stream time less the shorter look and the grace can be final.
    let look = window.after.min(window.before);
    let bound = i128::from(state.stream_time) - i128::from(look) - i128::from(window.grace);
    let to = match i64::try_from(bound.max(i128::from(i64::MIN))) {
        Ok(bound) => [&[keys::WAITING][..], &time_bytes(bound)].concat(),
        Err(_) => vec![keys::WAITING + 1],
    };
    let mut closed = Vec::new();
    for (k, v) in state.range(&[keys::WAITING], Some(&to))? {
        let Some(ts) = time_from_bytes(&k[1..]) else {
            continue;
        };
        let side = usize::from(k.get(9).copied().unwrap_or(0) != 0);
        if !unmatched_is_final(window, side, ts, state.stream_time) {
            continue;
        }
        let key_len = k
            .get(10..14)
            .and_then(|b| b.try_into().ok())
            .map_or(0, |b| u32::from_be_bytes(b) as usize);
        let key = k
            .get(14..14 + key_len)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        if let Some(record) = Stored::decode(&v) {
            closed.push((k, side, key, record));
        }
    }
    for (k, side, key, record) in closed {
        state.delete(&k);
        let timestamp = record.timestamp;
        let (left, right) = pair(side, Some(record), None);
        out.push(Output {
            left,
            right,
            timestamp,
            key,
            tombstone: false,
            from,
            current: None,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(before: i64, after: i64, grace: i64) -> JoinWindowMs {
        JoinWindowMs {
            before,
            after,
            grace,
            wait_for_close: true,
        }
    }

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

    /// (left offset, right offset, timestamp) of each result.
    fn summary(out: &[Output]) -> Vec<(Option<i64>, Option<i64>, i64)> {
        out.iter()
            .map(|o| {
                (
                    o.left.as_ref().map(|s| s.offset),
                    o.right.as_ref().map(|s| s.offset),
                    o.timestamp,
                )
            })
            .collect()
    }

    #[test]
    fn a_record_joins_the_window_around_it_mirrored_for_the_right_side() {
        let w = window(10, 30, 0);
        assert_eq!(partner_times(w, 0, 100), (90, 130));
        assert_eq!(partner_times(w, 1, 100), (70, 110));
        // Nothing before the epoch.
        assert_eq!(partner_times(w, 0, 5), (0, 35));
    }

    #[test]
    fn an_unmatched_record_is_final_once_its_window_and_grace_are_behind_stream_time() {
        let w = window(10, 30, 5);
        // A left record waits for right records up to 30 ms later, plus 5 of grace.
        assert!(!unmatched_is_final(w, 0, 100, 135));
        assert!(unmatched_is_final(w, 0, 100, 136));
        // A right record waits for left records up to 10 ms later.
        assert!(!unmatched_is_final(w, 1, 100, 115));
        assert!(unmatched_is_final(w, 1, 100, 116));
    }

    #[test]
    fn a_left_join_with_grace_emits_the_unmatched_row_once_its_window_closes() {
        let w = window(10, 10, 5);
        let mut st = JoinState::empty_for_tests();
        let mut out = Vec::new();
        let key = Some(b"k".to_vec());
        stream_stream(
            JoinType::Left,
            w,
            &mut st,
            0,
            (key, record(1, 100), true, 0),
            &mut out,
        )
        .expect("joins");
        // Still within the window plus grace: nothing yet.
        let other = Some(b"x".to_vec());
        stream_stream(
            JoinType::Left,
            w,
            &mut st,
            0,
            (other, record(2, 114), true, 1),
            &mut out,
        )
        .expect("joins");
        assert!(out.is_empty());
        // Time passes 100 + 10 + 5: the first row comes out alone, at its own time.
        let later = Some(b"y".to_vec());
        stream_stream(
            JoinType::Left,
            w,
            &mut st,
            0,
            (later, record(3, 116), true, 2),
            &mut out,
        )
        .expect("joins");
        assert_eq!(summary(&out), [(Some(1), None, 100)]);
    }

    #[test]
    fn a_stream_stream_match_takes_the_later_time_and_cancels_the_outer_row() {
        let w = window(10, 10, 0);
        let mut st = JoinState::empty_for_tests();
        let mut out = Vec::new();
        let key = Some(b"k".to_vec());
        let left = (key.clone(), record(1, 100), true, 0);
        stream_stream(JoinType::Outer, w, &mut st, 0, left, &mut out).expect("joins");
        let right = (key, record(7, 105), true, 1);
        stream_stream(JoinType::Outer, w, &mut st, 1, right, &mut out).expect("joins");
        assert_eq!(summary(&out), [(Some(1), Some(7), 105)]);
        // Long after: neither side is emitted again as unmatched.
        let late = (Some(b"z".to_vec()), record(2, 500), true, 2);
        stream_stream(JoinType::Outer, w, &mut st, 0, late, &mut out).expect("joins");
        assert_eq!(out.len(), 1);
    }
}
