//! A store on a filesystem that fills up: writes are refused while it is full, nothing
//! acknowledged is lost, and writes resume by themselves once space returns.
//!
//! The filesystem is a small tmpfs the test mounts, which takes root (or CAP_SYS_ADMIN). Where
//! it cannot mount, the test says so and passes, except under `CI=true`, where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use eddy_storage::{
    Commit, CommitChain, OffsetAndMetadata, Record, StorageError, Store, StoreOptions, SyncPolicy,
    TopicConfig,
};

/// A tmpfs of `megabytes`, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(megabytes: u32) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(dir.path())
            .output();
        match mounted {
            Ok(out) if out.status.success() => Some(SmallDisk { dir }),
            outcome => {
                let why = match outcome {
                    Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
                    Err(e) => e.to_string(),
                };
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "CI must run the disk-full test, but a tmpfs cannot be mounted: {why}"
                );
                eprintln!("SKIPPED: cannot mount a tmpfs for the disk-full test ({why})");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn record(i: u32) -> Record {
    let mut value = format!("{i:08}").into_bytes();
    // Incompressible enough that the filesystem fills at the rate the log grows.
    value.extend(
        (0..16 * 1024).map(|j| (i.wrapping_mul(2_654_435_761).wrapping_add(j * 40_503) >> 7) as u8),
    );
    Record::unkeyed(Bytes::from(value), 0)
}

/// Fills the disk but `leave` bytes with a file that can be removed later.
fn fill(path: &Path, leave: u64) -> PathBuf {
    let filler = path.join("filler");
    let free = fs_free(path);
    let size = free.saturating_sub(leave);
    std::fs::write(&filler, vec![0u8; size as usize]).unwrap();
    filler
}

fn fs_free(path: &Path) -> u64 {
    let stats = rustix::fs::statvfs(path).unwrap();
    stats.f_bavail * stats.f_frsize
}

fn values(store: &Store) -> Vec<u32> {
    let read = store.read_records("t", 0, 0, usize::MAX).unwrap();
    read.records
        .iter()
        .map(|r| {
            let value = r.record.value.as_deref().unwrap();
            std::str::from_utf8(&value[..8]).unwrap().parse().unwrap()
        })
        .collect()
}

/// On a 384 MB filesystem with 128 MB left and 96 MB kept in reserve (RocksDB preallocates
/// files of 70 MB for a flush), appends are refused with a
/// retriable error before RocksDB meets the full disk (after which it would refuse every write
/// until it recovers); every acknowledged record is read back, before and after a restart; and once a
/// file is removed, appends are accepted again without a restart.
#[test]
fn writes_are_refused_while_the_disk_is_full_and_resume_when_space_returns() {
    let Some(disk) = SmallDisk::mount(384) else {
        return;
    };
    let data = disk.path().join("data");
    let options = StoreOptions {
        sync: SyncPolicy::Always,
        disk_reserve_bytes: Some(96 << 20),
        ..StoreOptions::default()
    };
    let store = Store::open(&data, options.clone()).unwrap();
    store
        .create_topic("t", TopicConfig::with_partitions(1))
        .unwrap();
    assert!(store.disk_health().writable());
    let filler = fill(disk.path(), 128 << 20);

    let mut acknowledged = Vec::new();
    let mut refused = None;
    for i in 0..100_000u32 {
        match store.append_blocking("t", 0, vec![record(i)]) {
            Ok(_) => acknowledged.push(i),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let refused = refused.expect("the disk never filled");
    assert!(refused.is_retriable(), "{refused}");
    assert!(refused.to_string().contains("nearly full"), "{refused}");
    assert!(acknowledged.len() > 100, "{} records", acknowledged.len());
    let health = store.disk_health();
    assert!(
        health.low_space && health.write_failure.is_none(),
        "{health:?}"
    );
    assert_eq!(values(&store), acknowledged);

    std::fs::remove_file(&filler).unwrap();
    let started = Instant::now();
    let resumed = loop {
        match store.append_blocking("t", 0, vec![record(1_000_000)]) {
            Ok(_) => break true,
            Err(e) if started.elapsed() > Duration::from_secs(10) => panic!("{e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    assert!(resumed && store.disk_health().writable());
    acknowledged.push(1_000_000);
    store.close().unwrap();
    drop(store);

    let store = Store::open(&data, options).unwrap();
    assert_eq!(values(&store), acknowledged);
}

/// Commits kept in flight together (a query's) land in order and never one after another that
/// failed: with no reserve, RocksDB itself meets the full disk and fails a commit of the chain;
/// every later commit of the chain is refused, even once space returns and other writes land,
/// so no later commit's offsets can pass output that was never written.
#[test]
fn a_commit_the_full_disk_failed_refuses_the_rest_of_its_chain() {
    let Some(disk) = SmallDisk::mount(256) else {
        return;
    };
    let data = disk.path().join("data");
    let options = StoreOptions {
        sync: SyncPolicy::Always,
        disk_reserve_bytes: Some(0),
        ..StoreOptions::default()
    };
    let store = Store::open(&data, options).unwrap();
    store
        .create_topic("t", TopicConfig::with_partitions(1))
        .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let chain = CommitChain::new();
    let chained = |i: u32| {
        let mut commit = Commit::new();
        commit.append("t", Some(0), (0..8).map(|j| record(i * 8 + j)).collect());
        commit.commit_offset("g", "t", 0, OffsetAndMetadata::new(i64::from(i)));
        store.commit_pending(commit, &chain)
    };
    let filler = fill(disk.path(), 4 << 20);

    let mut landed = 0;
    let failure = loop {
        let pending = chained(landed).unwrap();
        match runtime.block_on(pending.wait()) {
            Ok(_) => landed += 1,
            Err(e) => break e,
        }
        assert!(landed < 10_000, "the disk never filled");
    };
    assert!(matches!(failure, StorageError::RocksDb(_)), "{failure}");
    assert!(chain.is_broken());
    assert!(matches!(
        chained(landed),
        Err(StorageError::EarlierCommitFailed)
    ));

    std::fs::remove_file(&filler).unwrap();
    let started = Instant::now();
    while let Err(e) = store.append_blocking("t", 0, vec![record(1_000_000)]) {
        assert!(started.elapsed() < Duration::from_secs(30), "{e}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let refused = chained(landed).unwrap_err();
    assert!(
        matches!(refused, StorageError::EarlierCommitFailed),
        "{refused}"
    );
    assert_eq!(
        store.fetch_offset("g", "t", 0).unwrap().map(|o| o.offset),
        Some(i64::from(landed) - 1)
    );
    let read = values(&store);
    assert_eq!(read.len(), landed as usize * 8 + 1);
    assert_eq!(read.last(), Some(&1_000_000));
}
