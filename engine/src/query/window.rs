//! Window decisions as pure functions over plain numbers: which windows a record falls in, and
//! whether a window has closed. No I/O, so they are tested on their own.

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
                vec![(start, start + size)]
            }
            TimeWindows::Hopping { size, advance } => {
                let last = timestamp - timestamp.rem_euclid(advance);
                let mut starts = Vec::new();
                let mut start = last;
                while start > timestamp - size && start >= 0 {
                    starts.push(start);
                    start -= advance;
                }
                starts.reverse();
                starts.into_iter().map(|s| (s, s + size)).collect()
            }
        }
    }

    /// The window size in milliseconds.
    pub fn size(&self) -> i64 {
        match *self {
            TimeWindows::Tumbling { size } | TimeWindows::Hopping { size, .. } => size,
        }
    }
}

/// ksqlDB's grace period when a query gives none: 24 hours.
pub const DEFAULT_GRACE_MS: i64 = 24 * 60 * 60 * 1000;

/// Whether a window ending at `end` has closed once stream time reached `stream_time`: records
/// for it arrive later than its end plus the grace period, and are dropped.
pub fn window_closed(end: i64, grace: i64, stream_time: i64) -> bool {
    end.saturating_add(grace) <= stream_time
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_falls_in_one_tumbling_window() {
        let w = TimeWindows::Tumbling { size: 30_000 };
        assert_eq!(w.windows_for(0), [(0, 30_000)]);
        assert_eq!(w.windows_for(29_999), [(0, 30_000)]);
        assert_eq!(w.windows_for(30_000), [(30_000, 60_000)]);
        assert_eq!(w.windows_for(89_999), [(60_000, 90_000)]);
    }

    #[test]
    fn a_record_falls_in_every_hopping_window_that_covers_it() {
        let w = TimeWindows::Hopping {
            size: 30_000,
            advance: 10_000,
        };
        assert_eq!(
            w.windows_for(25_000),
            [(0, 30_000), (10_000, 40_000), (20_000, 50_000)]
        );
        // Near the epoch there are fewer.
        assert_eq!(w.windows_for(5_000), [(0, 30_000)]);
        assert_eq!(w.windows_for(10_000), [(0, 30_000), (10_000, 40_000)]);
    }

    #[test]
    fn windows_close_after_their_grace_period() {
        assert!(!window_closed(30_000, 0, 29_999));
        assert!(window_closed(30_000, 0, 30_000));
        assert!(!window_closed(30_000, 60_000, 89_999));
        assert!(window_closed(30_000, 60_000, 90_000));
    }
}
