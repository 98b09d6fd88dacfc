//! Crash tests: a child process writes and reports what was acknowledged, is killed with SIGKILL
//! mid-stream, and the store is reopened.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use eddy_storage::{
    Commit, OffsetAndMetadata, Record, Store, StoreOptions, SyncPolicy, TopicConfig,
};

const CHILD_DIR: &str = "EDDY_CRASH_CHILD_DIR";
const CHILD_MODE: &str = "EDDY_CRASH_CHILD_MODE";

fn open(dir: &str) -> Store {
    Store::open(
        dir,
        StoreOptions {
            sync: SyncPolicy::Always,
            ..StoreOptions::default()
        },
    )
    .unwrap()
}

/// The child: runs only when the parent test starts this binary with the environment set.
#[test]
#[ignore = "started as a child process by the crash tests"]
fn crash_child() {
    let (Ok(dir), Ok(mode)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_MODE)) else {
        return;
    };
    let store = open(&dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    match mode.as_str() {
        "appends" => {
            store
                .create_topic("crash", TopicConfig::with_partitions(2))
                .unwrap();
            rt.block_on(async {
                let mut tasks = Vec::new();
                for task in 0..4u32 {
                    let store = store.clone();
                    tasks.push(tokio::spawn(async move {
                        for n in 0u64.. {
                            let partition = task % 2;
                            let size = 1 + (n % 3) as usize;
                            let records = (0..size)
                                .map(|i| Record::unkeyed(format!("{task}-{n}-{i}"), 0))
                                .collect();
                            let r = store.append("crash", partition, records).await.unwrap();
                            println!(
                                "ack {partition} {} {} {task}-{n}",
                                r.base_offset, r.last_offset
                            );
                        }
                    }));
                }
                for t in tasks {
                    t.await.unwrap();
                }
            });
        }
        "commits" => {
            store.create_topic("in", TopicConfig::default()).unwrap();
            store.create_topic("out", TopicConfig::default()).unwrap();
            for n in 1u64.. {
                let mut commit = Commit::new();
                commit
                    .append("out", Some(0), vec![Record::keyed("k", n.to_string(), 0)])
                    .put_state("counter", b"n".to_vec(), n.to_be_bytes().to_vec())
                    .commit_offset("q", "in", 0, OffsetAndMetadata::new(n as i64));
                store.commit_blocking(commit).unwrap();
                println!("ack {n}");
            }
        }
        other => panic!("unknown child mode {other}"),
    }
}

/// Starts the child, collects `ack` lines until `wanted` arrived, then kills it with SIGKILL.
fn run_child_and_kill(dir: &str, mode: &str, wanted: usize) -> Vec<String> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_DIR, dir)
        .env(CHILD_MODE, mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut acks = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while acks.len() < wanted && Instant::now() < deadline {
        match lines.next() {
            Some(Ok(line)) if line.starts_with("ack ") => acks.push(line),
            Some(Ok(_)) => {}
            _ => break,
        }
    }
    assert!(
        acks.len() >= wanted,
        "child stopped early after {} acks",
        acks.len()
    );
    child.kill().unwrap();
    child.wait().unwrap();
    // Lines the child printed before it died were acknowledged too.
    for line in lines.map_while(Result::ok) {
        if line.starts_with("ack ") {
            acks.push(line);
        }
    }
    acks
}

#[test]
fn acknowledged_appends_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    let acks = run_child_and_kill(&path, "appends", 400);

    let store = open(&path);
    let mut expected: BTreeMap<(u32, i64), String> = BTreeMap::new();
    for line in &acks {
        let parts: Vec<&str> = line.split(' ').collect();
        let (partition, base, last, id) = (
            parts[1].parse::<u32>().unwrap(),
            parts[2].parse::<i64>().unwrap(),
            parts[3].parse::<i64>().unwrap(),
            parts[4],
        );
        for (i, offset) in (base..=last).enumerate() {
            expected.insert((partition, offset), format!("{id}-{i}"));
        }
    }
    for partition in 0..2u32 {
        let records = store
            .read_records("crash", partition, 0, usize::MAX)
            .unwrap()
            .records;
        // Dense from 0, no gaps, no duplicates.
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.offset, i as i64, "partition {partition} has a gap");
        }
        let mut seen = std::collections::HashSet::new();
        for r in &records {
            assert!(
                seen.insert(r.record.value.clone()),
                "duplicate record at {}",
                r.offset
            );
        }
        let acked: Vec<_> = expected.range((partition, 0)..(partition + 1, 0)).collect();
        assert!(!acked.is_empty());
        for ((_, offset), value) in acked {
            let got = records.get(*offset as usize).unwrap_or_else(|| {
                panic!("acknowledged offset {offset} of partition {partition} lost")
            });
            assert_eq!(
                got.record.value.as_deref(),
                Some(value.as_bytes()),
                "offset {offset}"
            );
        }
    }
}

#[test]
fn a_commit_is_all_or_nothing_across_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    let acks = run_child_and_kill(&path, "commits", 200);
    let last_acked: u64 = acks.last().unwrap()[4..].parse().unwrap();

    let store = open(&path);
    let counter = store
        .state_get("counter", b"n")
        .unwrap()
        .map(|v| u64::from_be_bytes(v.try_into().unwrap()))
        .unwrap();
    let committed = store.fetch_offset("q", "in", 0).unwrap().unwrap().offset as u64;
    let out = store.read_records("out", 0, 0, usize::MAX).unwrap().records;
    assert!(
        counter >= last_acked,
        "acknowledged commit {last_acked} lost (state says {counter})"
    );
    assert_eq!(committed, counter, "offsets and state disagree");
    assert_eq!(out.len() as u64, counter, "appends and state disagree");
    assert_eq!(
        out.last().unwrap().record.value.as_deref(),
        Some(counter.to_string().as_bytes())
    );
}
