//! Benchmark scenarios and what they share: timing, throughput and memory figures.

pub mod join;
pub mod log;
pub mod stateless;

use std::time::Duration;

/// Peak resident set size of this process in bytes (Linux `VmHWM`), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A measured phase: how many records and bytes went through in how long.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    /// Records processed.
    pub records: u64,
    /// Payload bytes processed.
    pub bytes: u64,
    /// Wall-clock time taken.
    pub elapsed: Duration,
}

impl Throughput {
    /// Records per second.
    pub fn records_per_sec(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Megabytes (10^6 bytes) per second.
    pub fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl std::fmt::Display for Throughput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} records in {:.3} s = {:.0} records/s, {:.1} MB/s",
            self.records,
            self.elapsed.as_secs_f64(),
            self.records_per_sec(),
            self.mb_per_sec()
        )
    }
}

/// The median of some measurements.
pub fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(vec![]).is_nan());
    }

    #[test]
    fn throughput_rates() {
        let t = Throughput {
            records: 2_000,
            bytes: 4_000_000,
            elapsed: Duration::from_secs(2),
        };
        assert_eq!(t.records_per_sec(), 1_000.0);
        assert_eq!(t.mb_per_sec(), 2.0);
    }
}
