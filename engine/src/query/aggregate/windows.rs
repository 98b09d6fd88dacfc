//! Window decisions as pure functions over plain numbers: which windows a record falls in,
//! when a window or session closes and leaves the state, which sessions a record merges, and
//! which windows `EMIT FINAL` writes. No I/O, so they are tested on their own.

/// Time windows of an aggregation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeWindows {
    /// Fixed windows that do not overlap: `[n * size, (n + 1) * size)`.
    Tumbling {
        /// Window size in milliseconds.
        size: i64,
    },
    /// Fixed windows of `size` starting every `advance`; a record is in `size / advance` of them.
    Hopping {
        /// Window size in milliseconds.
        size: i64,
        /// Distance between window starts in milliseconds.
        advance: i64,
    },
}

impl TimeWindows {
    /// The windows, as `(start, end)` with the end exclusive, that hold a record at `timestamp`,
    /// earliest first. Windows never start before the epoch.
    pub fn windows_for(&self, timestamp: i64) -> Vec<(i64, i64)> {
        match *self {
            TimeWindows::Tumbling { size } => {
                let start = timestamp - timestamp.rem_euclid(size);
                vec![(start, start.saturating_add(size))]
            }
            TimeWindows::Hopping { size, advance } => {
                let last = timestamp - timestamp.rem_euclid(advance);
                let mut windows = Vec::with_capacity((size / advance).clamp(1, 64) as usize);
                let mut start = last;
                while start > timestamp.saturating_sub(size) && start >= 0 {
                    windows.push((start, start.saturating_add(size)));
                    start -= advance;
                }
                windows.reverse();
                windows
            }
        }
    }

    /// The windows a record at `timestamp` still updates once stream time is `stream_time`:
    /// those that have not closed. None means the record is late.
    pub fn open_windows_for(
        &self,
        timestamp: i64,
        grace: i64,
        stream_time: i64,
    ) -> Vec<(i64, i64)> {
        let mut windows = self.windows_for(timestamp);
        windows.retain(|(_, end)| !window_closed(*end, grace, stream_time));
        windows
    }

    /// The window size in milliseconds.
    pub fn size(&self) -> i64 {
        match *self {
            TimeWindows::Tumbling { size } | TimeWindows::Hopping { size, .. } => size,
        }
    }

    /// How far behind stream time a window's start is once the window has closed (its end
    /// plus the grace period is behind): windows filed by start at or before stream time less
    /// this leave the state.
    pub fn expiry_lag(&self, grace: i64) -> i64 {
        grace.saturating_add(self.size())
    }

    /// `EMIT FINAL`: the latest window start whose window has closed at `stream_time`.
    /// A start itself, so stream time moving within one advance asks for no new windows.
    pub fn last_closable_start(&self, grace: i64, stream_time: i64) -> i64 {
        self.start_at_or_before(
            stream_time
                .saturating_sub(grace)
                .saturating_sub(self.size()),
        )
    }

    /// Whether these are hopping windows whose size is a multiple of their advance (and more
    /// than one), so they are made of panes one advance wide: a record falls in one pane, the
    /// one starting at its latest window's start, and a window is the panes from its start to
    /// its end.
    pub fn made_of_panes(&self) -> bool {
        matches!(*self, TimeWindows::Hopping { size, advance }
            if advance > 0 && size > advance && size % advance == 0)
    }

    /// The starts of the windows that hold the pane starting at `pane` (see
    /// [`TimeWindows::made_of_panes`]), from `from` through `through`, earliest first: windows
    /// from the one ending with the pane to the one it starts. None start before the epoch.
    pub fn windows_of_pane(&self, pane: i64, from: i64, through: i64) -> Vec<i64> {
        let (size, advance) = match *self {
            TimeWindows::Hopping { size, advance } => (size, advance),
            TimeWindows::Tumbling { size } => (size, size),
        };
        let first = pane
            .saturating_sub(size)
            .saturating_add(advance)
            .max(from)
            .max(0);
        // Round up to a window start; `first` is not negative, so this cannot overflow short
        // of the largest times, where the rounding saturates instead.
        let first = first.saturating_add((advance - first.rem_euclid(advance)) % advance);
        let last = pane.min(through);
        let mut starts = Vec::new();
        let mut start = first;
        while start <= last {
            starts.push(start);
            match start.checked_add(advance) {
                Some(next) => start = next,
                None => break,
            }
        }
        starts
    }

    /// The latest window start at or before `time`: starts are multiples of the advance.
    pub fn start_at_or_before(&self, time: i64) -> i64 {
        let step = match *self {
            TimeWindows::Tumbling { size } => size,
            TimeWindows::Hopping { advance, .. } => advance,
        };
        time.saturating_sub(time.rem_euclid(step))
    }

    /// `EMIT FINAL`: the earliest window start still kept, as Kafka Streams' window store
    /// keeps windows within its retention (size plus grace) of the latest start written;
    /// older windows are gone rather than emitted.
    pub fn oldest_kept_start(&self, grace: i64, latest_start: i64) -> i64 {
        latest_start.saturating_sub(self.size().saturating_add(grace))
    }
}

/// The most hopping windows one record may fall in (`SIZE` over `ADVANCE BY`): each is a
/// group update per record, so a tiny advance would make every record cost millions.
pub const MAX_WINDOWS_PER_RECORD: i64 = 10_000;

impl TimeWindows {
    /// Refuses windows Kafka Streams refuses (an advance of zero, or beyond the size) and
    /// hopping windows so dense that each record falls in more than [`MAX_WINDOWS_PER_RECORD`].
    pub fn check(&self) -> Result<(), String> {
        let TimeWindows::Hopping { size, advance } = *self else {
            return Ok(());
        };
        if advance <= 0 || advance > size {
            return Err(format!(
                "Window advancement interval should be more than zero and less than window duration which is {size} ms, but given advancement interval is: {advance} ms"
            ));
        }
        let windows = size / advance;
        if windows > MAX_WINDOWS_PER_RECORD {
            return Err(format!(
                "A hopping window of {size} ms that advances by {advance} ms puts each record in {windows} windows; at most {MAX_WINDOWS_PER_RECORD} are allowed. Advance by at least {} ms.",
                (size + MAX_WINDOWS_PER_RECORD - 1) / MAX_WINDOWS_PER_RECORD
            ));
        }
        Ok(())
    }
}

/// ksqlDB's grace period when a query gives none: 24 hours.
pub const DEFAULT_GRACE_MS: i64 = 24 * 60 * 60 * 1000;

/// Whether a window ending at `end` has closed once stream time reached `stream_time`: records
/// for it arrive later than its end plus the grace period, and are dropped.
pub fn window_closed(end: i64, grace: i64, stream_time: i64) -> bool {
    end.saturating_add(grace) <= stream_time
}

/// A session window: its start and end (both inclusive), in milliseconds.
pub type Session = (i64, i64);

/// Session windows: records of a key closer than the gap share a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionWindows {
    /// The inactivity gap, in milliseconds.
    pub gap: i64,
    /// The grace period, in milliseconds.
    pub grace: i64,
}

/// What a record does to its key's open sessions: the ones it merges into one, the ones it
/// leaves alone, and the session they become.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionMerge {
    /// The sessions within the gap of the record, which the merged session swallows.
    pub merging: Vec<Session>,
    /// The other sessions.
    pub keeping: Vec<Session>,
    /// The record's session: it and every merging session.
    pub merged: Session,
}

impl SessionWindows {
    /// Sessions ending before this are closed at `stream_time`: no record can join them
    /// again, since stream time has passed their end plus the gap and the grace period.
    pub fn close_time(&self, stream_time: i64) -> i64 {
        stream_time
            .saturating_sub(self.grace)
            .saturating_sub(self.gap)
    }

    /// `sessions` split into the open ones and the closed ones, at `stream_time`.
    pub fn split_closed(
        &self,
        sessions: Vec<Session>,
        stream_time: i64,
    ) -> (Vec<Session>, Vec<Session>) {
        let close_time = self.close_time(stream_time);
        sessions
            .into_iter()
            .partition(|(_, end)| *end >= close_time)
    }

    /// How `open` sessions take a record at `timestamp`: it merges every session it is within
    /// the gap of (and bridges them), or starts a session of its own.
    pub fn merge(&self, open: &[Session], timestamp: i64) -> SessionMerge {
        let (merging, keeping): (Vec<Session>, Vec<Session>) =
            open.iter().partition(|(start, end)| {
                *end >= timestamp.saturating_sub(self.gap)
                    && *start <= timestamp.saturating_add(self.gap)
            });
        let start = merging.iter().map(|s| s.0).fold(timestamp, i64::min);
        let end = merging.iter().map(|s| s.1).fold(timestamp, i64::max);
        SessionMerge {
            merging,
            keeping,
            merged: (start, end),
        }
    }

    /// How far behind stream time a session's end is once it has closed: sessions filed by
    /// end at or before stream time less this leave the state.
    pub fn expiry_lag(&self) -> i64 {
        self.gap.saturating_add(self.grace).saturating_add(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hopping_windows_are_made_of_panes_one_advance_wide() {
        let w = TimeWindows::Hopping {
            size: 10,
            advance: 2,
        };
        assert!(w.made_of_panes());
        // A record's pane is its latest window's start; the pane is in the windows that
        // cover it, and no others.
        for t in [0, 1, 7, 12, 13, 99] {
            let pane = w.start_at_or_before(t);
            let of_pane = w.windows_of_pane(pane, i64::MIN, i64::MAX);
            let of_record: Vec<i64> = w.windows_for(t).into_iter().map(|(s, _)| s).collect();
            assert_eq!(of_pane, of_record, "t = {t}");
        }
        // Bounded on both sides.
        assert_eq!(w.windows_of_pane(12, 5, 10), vec![6, 8, 10]);
        assert!(w.windows_of_pane(12, 13, 20).is_empty());
        // Sizes that are not a multiple of the advance, equal to it, or tumbling windows are
        // not made of panes.
        let uneven = TimeWindows::Hopping {
            size: 10,
            advance: 3,
        };
        assert!(!uneven.made_of_panes());
        let even = TimeWindows::Hopping {
            size: 10,
            advance: 10,
        };
        assert!(!even.made_of_panes());
        assert!(!TimeWindows::Tumbling { size: 10 }.made_of_panes());
        // The far ends of time neither overflow nor loop.
        assert_eq!(
            w.windows_of_pane(i64::MAX - 1, i64::MAX - 3, i64::MAX),
            vec![i64::MAX - 3, i64::MAX - 1]
        );
    }

    #[test]
    fn a_record_falls_in_one_tumbling_window() {
        let w = TimeWindows::Tumbling { size: 10 };
        assert_eq!(w.windows_for(0), vec![(0, 10)]);
        assert_eq!(w.windows_for(9), vec![(0, 10)]);
        assert_eq!(w.windows_for(10), vec![(10, 20)]);
        assert_eq!(w.windows_for(25), vec![(20, 30)]);
    }

    #[test]
    fn a_record_falls_in_every_hopping_window_that_covers_it() {
        let w = TimeWindows::Hopping {
            size: 10,
            advance: 5,
        };
        assert_eq!(w.windows_for(12), vec![(5, 15), (10, 20)]);
        assert_eq!(w.windows_for(10), vec![(5, 15), (10, 20)]);
        // No window starts before the epoch.
        assert_eq!(w.windows_for(3), vec![(0, 10)]);
    }

    #[test]
    fn advances_of_zero_beyond_the_size_or_too_small_are_refused() {
        let hop = |size, advance| TimeWindows::Hopping { size, advance }.check();
        assert!(hop(10_000, 5_000).is_ok());
        assert!(hop(10_000, 10_000).is_ok());
        assert!(hop(10_000, 0).unwrap_err().contains("more than zero"));
        assert!(
            hop(10_000, 20_000)
                .unwrap_err()
                .contains("which is 10000 ms")
        );
        let dense = hop(86_400_000, 1_000).unwrap_err();
        assert!(
            dense.contains("86400 windows") && dense.contains("at least 8640 ms"),
            "{dense}"
        );
        assert!(TimeWindows::Tumbling { size: 1 }.check().is_ok());
    }

    #[test]
    fn windows_close_after_their_grace_period() {
        assert!(!window_closed(10, 5, 14));
        assert!(window_closed(10, 5, 15));
        assert!(window_closed(10, 0, 10));
        // No overflow at the ends of time.
        assert!(!window_closed(i64::MAX, 5, i64::MAX - 1));
    }

    #[test]
    fn a_late_record_updates_only_the_windows_still_open() {
        let w = TimeWindows::Hopping {
            size: 10,
            advance: 5,
        };
        // With 2 of grace, (5, 15) has closed at 17 while (10, 20) stays open until 22.
        assert_eq!(w.open_windows_for(12, 2, 16), vec![(5, 15), (10, 20)]);
        assert_eq!(w.open_windows_for(12, 2, 17), vec![(10, 20)]);
        assert!(w.open_windows_for(12, 0, 20).is_empty());
    }

    #[test]
    fn closed_windows_expire_and_final_windows_are_chosen_by_start() {
        let w = TimeWindows::Tumbling { size: 60 };
        // A window starting at 0 ends at 60; with 10 of grace it has closed at 70.
        assert_eq!(w.expiry_lag(10), 70);
        assert_eq!(w.last_closable_start(10, 70), 0);
        assert_eq!(w.last_closable_start(10, 69), -60);
        assert_eq!(w.last_closable_start(10, 129), 0);
        let h = TimeWindows::Hopping {
            size: 10,
            advance: 4,
        };
        assert_eq!(h.last_closable_start(0, 21), 8);
        assert_eq!(h.last_closable_start(0, 22), 12);
        assert_eq!(h.last_closable_start(0, i64::MIN), i64::MIN);
        // Kept: windows within size + grace of the latest start written.
        assert_eq!(w.oldest_kept_start(10, 1_000), 930);
        assert_eq!(w.oldest_kept_start(10, i64::MIN), i64::MIN);
    }

    #[test]
    fn a_record_merges_every_session_within_the_gap_and_bridges_them() {
        let s = SessionWindows { gap: 5, grace: 0 };
        let merge = s.merge(&[(0, 10), (14, 20), (40, 50)], 12);
        assert_eq!(merge.merging, vec![(0, 10), (14, 20)]);
        assert_eq!(merge.keeping, vec![(40, 50)]);
        assert_eq!(merge.merged, (0, 20));
        // Alone, a record is a session of one instant.
        let alone = s.merge(&[(40, 50)], 100);
        assert!(alone.merging.is_empty());
        assert_eq!(alone.merged, (100, 100));
    }

    #[test]
    fn sessions_close_once_stream_time_passes_end_plus_gap_and_grace() {
        let s = SessionWindows { gap: 5, grace: 3 };
        assert_eq!(s.close_time(100), 92);
        let (open, closed) = s.split_closed(vec![(80, 91), (85, 92), (95, 99)], 100);
        assert_eq!(open, vec![(85, 92), (95, 99)]);
        assert_eq!(closed, vec![(80, 91)]);
        assert_eq!(s.expiry_lag(), 9);
    }
}
