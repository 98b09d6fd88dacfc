//! The store's disk: how much space is left, and whether writes still succeed.
//!
//! RocksDB treats a write that fails for want of space as a hard error and refuses every write
//! after it until it recovers (by itself, seconds after space returns). So the store tries not
//! to let the disk get that full:
//! while less than the reserve is free, commits are refused with [`StorageError::DiskFull`], which
//! clients retry, and they are accepted again as soon as space returns (retention, compaction
//! and deleted topics still write, since freeing space takes a little). Should RocksDB fail a
//! write anyway, the failure is kept and reported until a write succeeds.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;
use tracing::{info, warn};

use crate::error::{Result, StorageError};

/// How often free space is measured while there is plenty, at the least.
const CHECK_EVERY_MS: u64 = 500;
/// The share of the reserve that may be written between two measures, so a burst of writes
/// cannot eat the reserve between them.
const RESERVE_SHARE_BETWEEN_CHECKS: u64 = 8;

/// The most the default reserve keeps free: 1 GiB, or 5% of a smaller filesystem.
const DEFAULT_RESERVE_CAP: u64 = 1 << 30;
/// The least the default reserve keeps free: a memtable flush writes a file of up to 70 MB, and
/// RocksDB allocates it whole. Half of a filesystem smaller than twice this.
const DEFAULT_RESERVE_FLOOR: u64 = 256 << 20;

/// What the store's disk looks like now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskHealth {
    /// Bytes free for the store on its filesystem, at the last measure.
    pub free_bytes: u64,
    /// Bytes the store keeps free; below it, writes are refused.
    pub reserve_bytes: u64,
    /// Whether writes are being refused because less than the reserve is free.
    pub low_space: bool,
    /// The last write RocksDB failed, when no write has succeeded since.
    pub write_failure: Option<String>,
}

impl DiskHealth {
    /// Whether the store accepts writes.
    pub fn writable(&self) -> bool {
        !self.low_space && self.write_failure.is_none()
    }
}

/// Watches the filesystem under the store.
pub(crate) struct DiskGuard {
    path: PathBuf,
    reserve: u64,
    started: Instant,
    last_check_ms: AtomicU64,
    written_since_check: AtomicU64,
    free: AtomicU64,
    low: AtomicBool,
    write_failure: Mutex<Option<String>>,
}

/// The free and total bytes of the filesystem holding `path`.
fn measure(path: &Path) -> Option<(u64, u64)> {
    let stats = rustix::fs::statvfs(path).ok()?;
    let unit = stats.f_frsize.max(1);
    Some((
        stats.f_bavail.saturating_mul(unit),
        stats.f_blocks.saturating_mul(unit),
    ))
}

impl DiskGuard {
    /// A guard keeping `reserve` bytes free under `path`; `None` is 5% of the filesystem, at most
    /// 1 GiB and at least 256 MiB (or half of a smaller filesystem).
    pub(crate) fn new(path: &Path, reserve: Option<u64>) -> DiskGuard {
        let (free, total) = measure(path).unwrap_or((u64::MAX, u64::MAX));
        let reserve = reserve.unwrap_or_else(|| {
            (total / 20)
                .clamp(DEFAULT_RESERVE_FLOOR, DEFAULT_RESERVE_CAP)
                .min(total / 2)
        });
        let guard = DiskGuard {
            path: path.to_path_buf(),
            reserve,
            started: Instant::now(),
            last_check_ms: AtomicU64::new(0),
            written_since_check: AtomicU64::new(0),
            free: AtomicU64::new(free),
            low: AtomicBool::new(false),
            write_failure: Mutex::new(None),
        };
        guard.update(free);
        guard
    }

    fn update(&self, free: u64) {
        self.free.store(free, Ordering::Relaxed);
        let low = free < self.reserve;
        if self.low.swap(low, Ordering::AcqRel) != low {
            if low {
                warn!(
                    path = %self.path.display(),
                    free_bytes = free,
                    reserve_bytes = self.reserve,
                    "the store's disk is nearly full: writes are refused until space is freed"
                );
            } else {
                info!(
                    free_bytes = free,
                    "the store's disk has space again: writes resume"
                );
            }
        }
    }

    /// Measures again when the last measure is old or an eighth of the reserve was written
    /// since, or at once while space is low, so writes resume as soon as it returns.
    fn refresh(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.last_check_ms.load(Ordering::Relaxed);
        let written = self.written_since_check.load(Ordering::Relaxed);
        let due = self.low.load(Ordering::Relaxed)
            || now.saturating_sub(last) >= CHECK_EVERY_MS
            || written >= self.reserve / RESERVE_SHARE_BETWEEN_CHECKS;
        if due
            && self
                .last_check_ms
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            && let Some((free, _)) = measure(&self.path)
        {
            self.written_since_check.store(0, Ordering::Relaxed);
            self.update(free);
        }
    }

    /// Refuses a write of about `bytes` while less than the reserve is free.
    pub(crate) fn check_space(&self, bytes: u64) -> Result<()> {
        self.written_since_check.fetch_add(bytes, Ordering::Relaxed);
        self.refresh();
        if self.low.load(Ordering::Acquire) {
            return Err(StorageError::DiskFull {
                free: self.free.load(Ordering::Relaxed),
                reserve: self.reserve,
            });
        }
        Ok(())
    }

    /// Notes how a write to RocksDB went.
    pub(crate) fn record_write(&self, outcome: std::result::Result<(), &rocksdb::Error>) {
        match outcome {
            Ok(()) => {
                if self.write_failure.lock().take().is_some() {
                    info!("the store writes again");
                }
            }
            Err(e) => *self.write_failure.lock() = Some(e.to_string()),
        }
    }

    /// The disk's state now.
    pub(crate) fn health(&self) -> DiskHealth {
        self.refresh();
        DiskHealth {
            free_bytes: self.free.load(Ordering::Relaxed),
            reserve_bytes: self.reserve,
            low_space: self.low.load(Ordering::Acquire),
            write_failure: self.write_failure.lock().clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_refused_below_the_reserve_and_accepted_above_it() {
        let dir = tempfile::tempdir().unwrap();
        let guard = DiskGuard::new(dir.path(), Some(u64::MAX));
        let refused = guard.check_space(1).unwrap_err();
        assert!(
            matches!(refused, StorageError::DiskFull { .. }),
            "{refused}"
        );
        assert!(refused.is_retriable());
        assert!(!guard.health().writable());

        let guard = DiskGuard::new(dir.path(), Some(0));
        guard.check_space(1).unwrap();
        assert!(guard.health().writable());
    }

    #[test]
    fn a_failed_write_is_reported_until_one_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let guard = DiskGuard::new(dir.path(), Some(0));
        let failure = rocksdb::DB::open_default(dir.path().join("missing/\0bad")).unwrap_err();
        guard.record_write(Err(&failure));
        assert!(guard.health().write_failure.is_some());
        guard.record_write(Ok(()));
        assert!(guard.health().writable());
    }
}
