//! The key-value state store: namespaced keys, point gets, prefix and range scans, snapshots.
//!
//! Writes go through [`crate::Commit`] so they land atomically with the log appends and offsets
//! of the same query step.

use rocksdb::{DB, DBRawIteratorWithThreadMode, ReadOptions, SnapshotWithThreadMode};

use crate::error::Result;
use crate::keys::{self, CF_STATE};
use crate::store::Store;

/// A key and its value, with the namespace stripped from the key.
pub type StateEntry = (Vec<u8>, Vec<u8>);

/// An ordered scan over state keys of one namespace.
pub struct StateScan<'a> {
    iter: DBRawIteratorWithThreadMode<'a, DB>,
    strip: usize,
    done: bool,
}

impl Iterator for StateScan<'_> {
    type Item = Result<StateEntry>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if !self.iter.valid() {
            self.done = true;
            return match self.iter.status() {
                Ok(()) => None,
                Err(e) => Some(Err(e.into())),
            };
        }
        let item = match (self.iter.key(), self.iter.value()) {
            (Some(k), Some(v)) => (k[self.strip.min(k.len())..].to_vec(), v.to_vec()),
            _ => {
                self.done = true;
                return None;
            }
        };
        self.iter.next();
        Some(Ok(item))
    }
}

/// A consistent, read-only view of the state store at one moment.
pub struct StateSnapshot<'a> {
    store: &'a Store,
    snapshot: SnapshotWithThreadMode<'a, DB>,
}

fn scan_bounds(namespace: &str, from: &[u8], to: Option<&[u8]>) -> (Vec<u8>, Vec<u8>) {
    let lower = keys::state_key(namespace, from);
    let upper = match to {
        Some(to) => keys::state_key(namespace, to),
        None => keys::prefix_successor(&keys::state_key(namespace, b""))
            .unwrap_or_else(|| vec![0xff; 4]),
    };
    (lower, upper)
}

fn prefix_bounds(namespace: &str, prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let lower = keys::state_key(namespace, prefix);
    let upper = keys::prefix_successor(&lower).unwrap_or_else(|| {
        keys::prefix_successor(&keys::state_key(namespace, b"")).unwrap_or_else(|| vec![0xff; 4])
    });
    (lower, upper)
}

impl Store {
    fn state_scan_with(
        &self,
        snapshot: Option<&SnapshotWithThreadMode<'_, DB>>,
        namespace: &str,
        (lower, upper): (Vec<u8>, Vec<u8>),
    ) -> Result<StateScan<'_>> {
        let mut read = ReadOptions::default();
        if let Some(snapshot) = snapshot {
            read.set_snapshot(snapshot);
        }
        read.set_iterate_lower_bound(lower.clone());
        read.set_iterate_upper_bound(upper);
        let mut iter = self.inner.db.raw_iterator_cf_opt(self.cf(CF_STATE)?, read);
        iter.seek(&lower);
        Ok(StateScan {
            iter,
            strip: keys::state_prefix_len(namespace),
            done: false,
        })
    }

    /// The value of `key` in `namespace`.
    pub fn state_get(&self, namespace: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .inner
            .db
            .get_cf(self.cf(CF_STATE)?, keys::state_key(namespace, key))?)
    }

    /// Keys of `namespace` that start with `prefix`, in key order.
    pub fn state_scan_prefix(&self, namespace: &str, prefix: &[u8]) -> Result<StateScan<'_>> {
        self.state_scan_with(None, namespace, prefix_bounds(namespace, prefix))
    }

    /// Keys of `namespace` in `[from, to)`; `to: None` scans to the end of the namespace.
    pub fn state_scan_range(
        &self,
        namespace: &str,
        from: &[u8],
        to: Option<&[u8]>,
    ) -> Result<StateScan<'_>> {
        self.state_scan_with(None, namespace, scan_bounds(namespace, from, to))
    }

    /// A consistent view: later commits do not show through it.
    pub fn state_snapshot(&self) -> StateSnapshot<'_> {
        StateSnapshot {
            store: self,
            snapshot: self.inner.db.snapshot(),
        }
    }
}

impl StateSnapshot<'_> {
    /// The value of `key` in `namespace` as of the snapshot.
    pub fn get(&self, namespace: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .snapshot
            .get_cf(self.store.cf(CF_STATE)?, keys::state_key(namespace, key))?)
    }

    /// Keys of `namespace` that start with `prefix`, as of the snapshot.
    pub fn scan_prefix(&self, namespace: &str, prefix: &[u8]) -> Result<StateScan<'_>> {
        self.store.state_scan_with(
            Some(&self.snapshot),
            namespace,
            prefix_bounds(namespace, prefix),
        )
    }

    /// Keys of `namespace` in `[from, to)`, as of the snapshot.
    pub fn scan_range(
        &self,
        namespace: &str,
        from: &[u8],
        to: Option<&[u8]>,
    ) -> Result<StateScan<'_>> {
        self.store.state_scan_with(
            Some(&self.snapshot),
            namespace,
            scan_bounds(namespace, from, to),
        )
    }
}
