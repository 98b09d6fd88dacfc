//! Three `eddy server` processes keep one replicated log (docs/replication.md): the leader
//! serves Kafka clients and runs the queries, and when it is killed or paused another takes
//! over with every acknowledged record and the queries' output exactly once.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

fn free_addresses(count: usize) -> Vec<String> {
    let listeners: Vec<std::net::TcpListener> = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("an address").to_string())
        .collect()
}

/// A partition as Metadata tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Placement {
    leader: u64,
    replicas: Vec<u64>,
    in_sync: Vec<u64>,
}

/// What a node printed, line by line.
type Log = Arc<Mutex<Vec<String>>>;

struct Group {
    dirs: Vec<tempfile::TempDir>,
    peers: String,
    http: Vec<String>,
    kafka: Vec<String>,
    nodes: BTreeMap<u64, (Child, Log)>,
}

impl Group {
    fn new(size: usize) -> Group {
        let raft = free_addresses(size);
        let peers = raft
            .iter()
            .enumerate()
            .map(|(i, address)| format!("{}={address}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        Group {
            dirs: (0..size)
                .map(|_| tempfile::tempdir().expect("a directory"))
                .collect(),
            peers,
            http: free_addresses(size),
            kafka: free_addresses(size),
            nodes: BTreeMap::new(),
        }
    }

    fn start(&mut self, id: u64) {
        let i = (id - 1) as usize;
        let mut child = Command::new(env!("CARGO_BIN_EXE_eddy"))
            .args(["server", "--data-dir"])
            .arg(self.dirs[i].path())
            .args(["--node-id", &id.to_string(), "--peers", &self.peers])
            .args(["--listen", &self.http[i], "--kafka-listen", &self.kafka[i]])
            .args(["--schema-registry-listen", "off", "--log-level", "info"])
            .args(["--replica-lag-time-max-ms", "2000"])
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("eddy starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        let kept = log.clone();
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                kept.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        self.nodes.insert(id, (child, log));
    }

    fn kill(&mut self, id: u64) {
        if let Some((mut child, _)) = self.nodes.remove(&id) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, id: u64, signal: &str) {
        let pid = self.nodes[&id].0.id().to_string();
        let status = Command::new("kill").args([signal, &pid]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill {signal} {pid}");
    }

    fn bootstrap(&self) -> String {
        self.kafka.join(",")
    }

    fn http(&self, id: u64) -> &str {
        &self.http[(id - 1) as usize]
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|(id, (_, log))| {
                let log = log.lock().unwrap_or_else(|e| e.into_inner());
                let tail = log.len().saturating_sub(15);
                format!("node {id}:\n{}", log[tail..].join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Partition 0 of `topic` as the cluster's Metadata tells it now, if a broker answers.
    fn placement(&self, topic: &str) -> Option<Placement> {
        let out = Command::new(common::tools::kcat())
            .args(["-b", &self.bootstrap(), "-L", "-t", topic, "-m", "3"])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with("partition 0,"))?;
        let ids = |after: &str| -> Vec<u64> {
            line.split(after)
                .nth(1)
                .and_then(|rest| rest.split([' ', '\t']).find(|s| !s.is_empty()))
                .map(|list| {
                    list.trim_end_matches(',')
                        .split(',')
                        .filter_map(|id| id.parse().ok())
                        .collect()
                })
                .unwrap_or_default()
        };
        Some(Placement {
            leader: ids("leader ").first().copied()?,
            replicas: ids("replicas: "),
            in_sync: ids("isrs: "),
        })
    }

    /// The broker Metadata names the controller (the leader), once one answers.
    fn leader(&self) -> u64 {
        let deadline = Instant::now() + WAIT;
        loop {
            let out = Command::new(common::tools::kcat())
                .args(["-b", &self.bootstrap(), "-L", "-m", "3"])
                .output()
                .expect("kcat runs");
            let text = String::from_utf8_lossy(&out.stdout);
            let controller = text
                .lines()
                .find(|l| l.contains("(controller)"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|id| id.parse().ok());
            if let Some(id) = controller {
                return id;
            }
            assert!(Instant::now() < deadline, "no leader\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until Metadata of `topic` shows a placement `check` accepts.
    fn await_placement(
        &self,
        topic: &str,
        what: &str,
        check: impl Fn(&Placement) -> bool,
    ) -> Placement {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(placement) = self.placement(topic).filter(&check) {
                return placement;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {:?}\n{}",
                self.placement(topic),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn ksql(&self, id: u64, sql: &str) -> Value {
        let body = json!({"ksql": sql}).to_string();
        let (status, answer) = common::request(self.http(id), "POST", "/ksql", Some(&body));
        assert_eq!(status, 200, "{sql}: {answer}\n{}", self.logs());
        answer
    }

    /// Writes `ids` to `events` with `acks=all`; kcat fails unless every record was acknowledged.
    fn produce(&self, ids: std::ops::Range<u64>) {
        let text: String = ids.map(|i| format!("{i}|{{\"ID\":{i}}}\n")).collect();
        common::kcat(
            &[
                "-b",
                &self.bootstrap(),
                "-t",
                "events",
                "-P",
                "-K",
                "|",
                "-X",
                "acks=all",
                "-X",
                "topic.partitioner=murmur2_random",
            ],
            Some(&text),
        );
    }

    /// Every value of `topic`, read from the leader through the bootstrap list.
    fn consume(&self, topic: &str) -> Vec<String> {
        common::kcat(
            &[
                "-b",
                &self.bootstrap(),
                "-t",
                topic,
                "-C",
                "-e",
                "-q",
                "-f",
                "%p %s\n",
            ],
            None,
        )
        .lines()
        .map(str::to_string)
        .collect()
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        for (child, _) in self.nodes.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The numbers `field` holds in `lines` (`partition value`), sorted; with `ordered`, checking
/// each partition holds them in the order they were written.
fn ids_in_order(lines: &[String], field: &str, ordered: bool) -> Vec<u64> {
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    let mut ids = Vec::new();
    for line in lines {
        let (partition, value) = line.split_once(' ').expect("partition and value");
        let value: Value = serde_json::from_str(value).expect("a JSON value");
        let id = value[field].as_u64().expect("an id");
        ids.push(id);
        let previous = last.insert(partition.to_string(), id);
        assert!(
            !ordered || previous.is_none_or(|p| p < id),
            "{field}: partition {partition}: {id} after {previous:?} in {lines:?}"
        );
    }
    ids.sort_unstable();
    ids
}

#[test]
fn three_nodes_keep_every_acknowledged_record_and_the_queries_output_through_failovers() {
    let mut group = Group::new(3);
    for id in 1..=3 {
        group.start(id);
    }
    let first = group.leader();
    group.ksql(
        first,
        "CREATE STREAM events (id BIGINT) WITH (kafka_topic='events', value_format='JSON', partitions=2);
         CREATE STREAM doubled WITH (kafka_topic='doubled') AS SELECT id * 2 AS twice FROM events;",
    );
    let everyone = |p: &Placement| p.replicas == [1, 2, 3] && p.in_sync == [1, 2, 3];
    let placement = group.await_placement("events", "all three in sync", everyone);
    assert_eq!(placement.leader, first);
    group.produce(0..300);

    // The leader is killed: another takes over with every record, and the query goes on.
    group.kill(first);
    let second = group
        .await_placement("events", "a new leader", |p| p.leader != first)
        .leader;
    group.produce(300..600);
    group.start(first);
    group.await_placement("events", "the old leader back in sync", everyone);

    // The new leader is paused (as if cut off): the others elect a third, and the paused one
    // steps down when it wakes.
    group.signal(second, "-STOP");
    let third = group.await_placement("events", "a leader while one is paused", |p| {
        p.leader != second
    });
    group.produce(600..900);
    group.signal(second, "-CONT");
    group.await_placement("events", "the paused node back in sync", |p| {
        everyone(p) && p.leader == third.leader
    });

    // Every acknowledged record is there once, and the query doubled each once.
    let expected: Vec<u64> = (0..900).collect();
    assert_eq!(ids_in_order(&group.consume("events"), "ID", true), expected);
    let deadline = Instant::now() + WAIT;
    loop {
        let doubled = group.consume("doubled");
        if doubled.len() >= 900 || Instant::now() > deadline {
            let twice: Vec<u64> = (0..900).map(|i| 2 * i).collect();
            // The result's rows have no key, so any partition may hold them: only their
            // count and values say whether each was written once.
            assert_eq!(
                ids_in_order(&doubled, "TWICE", false),
                twice,
                "{}",
                group.logs()
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }

    // With both followers gone, the leader refuses acks=all writes: too few are in sync.
    let leader = third.leader;
    for id in (1..=3).filter(|id| *id != leader) {
        group.kill(id);
    }
    group.await_placement("events", "the leader alone in sync", |p| {
        p.in_sync == [leader]
    });
    let refused = Command::new(common::tools::kcat())
        .args([
            "-b",
            &group.bootstrap(),
            "-t",
            "events",
            "-P",
            "-X",
            "acks=all",
        ])
        .args(["-X", "retries=0", "-X", "enable.idempotence=false"])
        .args(["-X", "message.timeout.ms=5000"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().expect("stdin").write_all(b"late\n")?;
            child.wait_with_output()
        })
        .expect("kcat runs");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("Not enough in-sync replicas"), "{said}");
}

/// A node started with peers it cannot use stops at once, saying what is wrong.
#[test]
fn bad_peers_stop_the_server_with_the_reason() {
    let dir = tempfile::tempdir().expect("a directory");
    let refused = |flags: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_eddy"))
            .args(["server", "--data-dir"])
            .arg(dir.path())
            .args(["--listen", "127.0.0.1:0", "--kafka-listen", "127.0.0.1:0"])
            .args(["--schema-registry-listen", "off"])
            .args(flags)
            .stdin(Stdio::null())
            .output()
            .expect("eddy runs");
        assert!(!out.status.success(), "{flags:?} started");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let said = refused(&["--node-id", "1", "--peers", "1=nowhere"]);
    assert!(said.contains("node 1's address is not host:port"), "{said}");
    let said = refused(&["--node-id", "1", "--peers", "1=127.0.0.1:1,1=127.0.0.1:2"]);
    assert!(said.contains("node 1 is named twice"), "{said}");
    let said = refused(&["--node-id", "1", "--peers", "x=127.0.0.1:1"]);
    assert!(said.contains("a node id is a number"), "{said}");
    let said = refused(&["--node-id", "4", "--peers", "1=127.0.0.1:1,2=127.0.0.1:2"]);
    assert!(said.contains("node 4 is not among the peers"), "{said}");
    let said = refused(&["--peers", "1=127.0.0.1:1"]);
    assert!(said.contains("--node-id"), "{said}");
    let said = refused(&[
        "--node-id",
        "1",
        "--peers",
        "1=127.0.0.1:1",
        "--bootstrap-servers",
        "127.0.0.1:9092",
    ]);
    assert!(said.contains("cannot be used with"), "{said}");
}
