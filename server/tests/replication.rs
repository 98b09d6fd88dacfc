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

/// One direction of a link between two nodes: a TCP proxy to the target's replication
/// listener, which the test can cut and heal. Cut, it closes the connections it carried and
/// holds new ones without an answer, as a network that drops packets: a peer's requests time
/// out rather than fail at once.
struct Link {
    address: String,
    cut: Arc<std::sync::atomic::AtomicBool>,
    /// How long each byte takes to cross, in ms: latency, not a limit on bandwidth.
    delay: Arc<std::sync::atomic::AtomicU64>,
    open: Arc<Mutex<Vec<std::net::TcpStream>>>,
}

impl Link {
    fn to(target: String) -> Link {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port for a link");
        let address = listener.local_addr().expect("an address").to_string();
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let delay = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let open: Arc<Mutex<Vec<std::net::TcpStream>>> = Arc::default();
        let (is_cut, opened, delayed) = (cut.clone(), open.clone(), delay.clone());
        std::thread::spawn(move || {
            for incoming in listener.incoming() {
                let Ok(from) = incoming else { continue };
                if is_cut.load(Ordering::SeqCst) {
                    // Held unanswered until the link heals, then closed.
                    opened.lock().unwrap_or_else(|e| e.into_inner()).push(from);
                    continue;
                }
                let Ok(to) = std::net::TcpStream::connect(&target) else {
                    continue;
                };
                let (Ok(from_copy), Ok(to_copy)) = (from.try_clone(), to.try_clone()) else {
                    continue;
                };
                {
                    let mut opened = opened.lock().unwrap_or_else(|e| e.into_inner());
                    opened.extend(from.try_clone());
                    opened.extend(to.try_clone());
                }
                pipe(from, to_copy, delayed.clone());
                pipe(to, from_copy, delayed.clone());
            }
        });
        Link {
            address,
            cut,
            delay,
            open,
        }
    }

    /// Delays what crosses the link by `ms` from now on (0: none).
    fn slow(&self, ms: u64) {
        self.delay.store(ms, std::sync::atomic::Ordering::SeqCst);
    }

    /// Closes what the link carried, and holds new connections unanswered.
    fn cut(&self) {
        self.set(true);
    }

    /// Closes the connections held while cut, and carries new ones again.
    fn heal(&self) {
        self.set(false);
    }

    fn set(&self, cut: bool) {
        self.cut.store(cut, std::sync::atomic::Ordering::SeqCst);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        for stream in open.drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Copies `from` into `to` until either ends, each chunk `delay` ms after it was read.
fn pipe(
    mut from: std::net::TcpStream,
    mut to: std::net::TcpStream,
    delay: Arc<std::sync::atomic::AtomicU64>,
) {
    use std::io::{Read, Write};
    let (chunks, arrived) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
    let ends = (from.try_clone(), to.try_clone());
    std::thread::spawn(move || {
        let mut buffer = vec![0u8; 64 << 10];
        while let Ok(n) = from.read(&mut buffer) {
            if n == 0 || chunks.send((Instant::now(), buffer[..n].to_vec())).is_err() {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        for (read_at, chunk) in arrived {
            let due =
                read_at + Duration::from_millis(delay.load(std::sync::atomic::Ordering::SeqCst));
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        if let (Ok(from), Ok(to)) = ends {
            let _ = to.shutdown(std::net::Shutdown::Both);
            let _ = from.shutdown(std::net::Shutdown::Both);
        }
    });
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
    /// Each node's replication listener.
    raft: Vec<String>,
    /// When the nodes reach each other through proxies the test can cut: each directed link
    /// (from, to).
    links: BTreeMap<(u64, u64), Link>,
    nodes: BTreeMap<u64, (Child, Log)>,
    /// The Kafka listeners' protocol, when not PLAINTEXT.
    kafka_protocol: Option<&'static str>,
    /// More flags, and environment variables, for every node.
    extra: Vec<String>,
    env: Vec<(String, String)>,
    /// When set, each node runs with libfaketime preloaded, its wall clock offset by what its
    /// file `clock-<id>` here says (`+0`, `+600s`, `-20m`), read again every second; its
    /// monotonic clock is left alone, as a step of the system clock leaves it.
    clocks: Option<tempfile::TempDir>,
}

impl Group {
    fn new(size: usize) -> Group {
        // One call for every port: ports freed by separate calls may be handed out twice.
        let mut addresses = free_addresses(3 * size);
        let kafka = addresses.split_off(2 * size);
        let http = addresses.split_off(size);
        let raft = addresses;
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
            http,
            kafka,
            raft,
            links: BTreeMap::new(),
            nodes: BTreeMap::new(),
            kafka_protocol: None,
            extra: Vec::new(),
            env: Vec::new(),
            clocks: None,
        }
    }

    /// Gives every node a wall clock the test can step ([`Group::step_clock`]).
    fn with_steppable_clocks(mut self) -> Group {
        let dir = tempfile::tempdir().expect("a directory");
        for id in 1..=self.dirs.len() {
            std::fs::write(dir.path().join(format!("clock-{id}")), "+0").expect("written");
        }
        self.clocks = Some(dir);
        self
    }

    /// Sets node `id`'s wall clock to `offset` from the real one (libfaketime's syntax); the
    /// node sees it within a second.
    fn step_clock(&self, id: u64, offset: &str) {
        let dir = self.clocks.as_ref().expect("steppable clocks");
        std::fs::write(dir.path().join(format!("clock-{id}")), offset).expect("written");
    }

    /// A group of `size` nodes that reach each other through a proxy per directed link, so a
    /// node can be cut off from the others while it runs (and its clients still reach it).
    fn linked(size: u64) -> Group {
        let mut group = Group::new(size as usize);
        for from in 1..=size {
            for to in (1..=size).filter(|to| *to != from) {
                let target = group.raft[(to - 1) as usize].clone();
                group.links.insert((from, to), Link::to(target));
            }
        }
        group
    }

    /// Cuts node `id` off from every other node, both ways, while it runs.
    fn isolate(&self, id: u64) {
        for ((from, to), link) in &self.links {
            if *from == id || *to == id {
                link.cut();
            }
        }
    }

    /// Cuts the links between nodes `a` and `b`, both ways, leaving each in touch with the
    /// others.
    fn cut_between(&self, a: u64, b: u64) {
        self.cut_one_way(a, b);
        self.cut_one_way(b, a);
    }

    /// Cuts only the connections node `from` makes to node `to`: `to` still reaches `from`.
    fn cut_one_way(&self, from: u64, to: u64) {
        if let Some(link) = self.links.get(&(from, to)) {
            link.cut();
        }
    }

    /// Delays every link by `ms` (0: none).
    fn slow(&self, ms: u64) {
        for link in self.links.values() {
            link.slow(ms);
        }
    }

    /// Lets every link carry traffic again.
    fn heal(&self) {
        for link in self.links.values() {
            link.heal();
        }
    }

    /// The `--peers` node `id` starts with: through the links when there are some.
    fn peers_of(&self, id: u64) -> String {
        if self.links.is_empty() {
            return self.peers.clone();
        }
        (1..=self.raft.len() as u64)
            .map(|to| match self.links.get(&(id, to)) {
                Some(link) => format!("{to}={}", link.address),
                None => format!("{to}={}", self.raft[(to - 1) as usize]),
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A group of `size` nodes reaching each other through links ([`Group::linked`]), every
    /// one started.
    fn running_linked(size: u64) -> Group {
        let mut group = Group::linked(size);
        for id in 1..=size {
            group.start(id);
        }
        group
    }

    /// A group of `size` nodes, every one started.
    fn running(size: u64) -> Group {
        let mut group = Group::new(size as usize);
        for id in 1..=size {
            group.start(id);
        }
        group
    }

    fn start(&mut self, id: u64) {
        let i = (id - 1) as usize;
        let kafka = match self.kafka_protocol {
            Some(protocol) => format!("{protocol}://{}", self.kafka[i]),
            None => self.kafka[i].clone(),
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_eddy"))
            .args(["server", "--data-dir"])
            .arg(self.dirs[i].path())
            .args(["--node-id", &id.to_string(), "--peers", &self.peers_of(id)])
            .args(["--listen", &self.http[i], "--kafka-listen", &kafka])
            .args(&self.extra)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(self.clocks.iter().flat_map(|dir| {
                [
                    ("LD_PRELOAD", common::tools::libfaketime()),
                    (
                        "FAKETIME_TIMESTAMP_FILE",
                        dir.path().join(format!("clock-{id}")),
                    ),
                    ("FAKETIME_CACHE_DURATION", "1".into()),
                    ("FAKETIME_DONT_FAKE_MONOTONIC", "1".into()),
                ]
            }))
            .args(["--schema-registry-listen", "off", "--log-level", "info"])
            .args(["--replica-lag-time-max-ms", "2000"])
            // Snapshots often, so the log is purged and a node that comes back after a
            // while catches up from the leader's snapshot, as a long-running group's does.
            .args(["--replica-snapshot-entries", "8"])
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

    /// Waits until node `id`'s process ends by itself, and says how it ended.
    fn await_exit(&mut self, id: u64) -> std::process::ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            let exited = self
                .nodes
                .get_mut(&id)
                .and_then(|(child, _)| child.try_wait().ok().flatten());
            if let Some(status) = exited {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "node {id} runs on\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Node `id`'s log lines so far.
    fn log_of(&self, id: u64) -> String {
        self.nodes.get(&id).map_or(String::new(), |(_, log)| {
            log.lock().unwrap_or_else(|e| e.into_inner()).join("\n")
        })
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
                let tail = log.len().saturating_sub(120);
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
            // Followers name the leader they know, which may have just died: the leader is
            // the node that says so itself.
            let confirmed = controller.filter(|id| {
                try_request(self.http(*id), "GET", "/api/replication", "")
                    .is_some_and(|(s, body)| s == 200 && body.contains("\"role\":\"LEADER\""))
            });
            if let Some(id) = confirmed {
                return id;
            }
            assert!(Instant::now() < deadline, "no leader\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The node that says it leads, asked over HTTP.
    fn leader_over_http(&self) -> u64 {
        let deadline = Instant::now() + WAIT;
        loop {
            let leading = self.nodes.keys().copied().find(|id| {
                try_request(self.http(*id), "GET", "/api/replication", "")
                    .is_some_and(|(s, body)| s == 200 && body.contains("\"role\":\"LEADER\""))
            });
            if let Some(id) = leading {
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

    /// The table `buckets` (each last digit and its count), by a pull query to node `id`.
    fn buckets(&self, id: u64) -> BTreeMap<i64, i64> {
        let body = json!({"ksql": "SELECT * FROM buckets;"}).to_string();
        let (status, answer) = common::request(self.http(id), "POST", "/query", Some(&body));
        assert_eq!(status, 200, "{answer}\n{}", self.logs());
        answer
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|line| {
                let columns = line["row"]["columns"].as_array()?;
                Some((columns.first()?.as_i64()?, columns.get(1)?.as_i64()?))
            })
            .collect()
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
    /// Writes `line` to `topic` with `acks=all` and no retries; what kcat said of it.
    fn produce_acks_all(&self, topic: &str, line: &str) -> String {
        let out = Command::new(common::tools::kcat())
            .args(["-b", &self.bootstrap(), "-t", topic, "-P", "-X", "acks=all"])
            .args(["-X", "retries=0", "-X", "enable.idempotence=false"])
            .args(["-X", "message.timeout.ms=5000"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                let mut stdin = child.stdin.take().expect("stdin");
                stdin.write_all(format!("{line}\n").as_bytes())?;
                drop(stdin);
                child.wait_with_output()
            })
            .expect("kcat runs");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

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
    let mut group = Group::running(3);
    let first = group.leader();
    group.ksql(
        first,
        "CREATE STREAM events (id BIGINT) WITH (kafka_topic='events', value_format='JSON', partitions=2);
         CREATE STREAM doubled WITH (kafka_topic='doubled') AS SELECT id * 2 AS twice FROM events;
         CREATE TABLE buckets AS SELECT id % 10 AS bucket, COUNT(*) AS n FROM events GROUP BY id % 10;",
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
    // In many small writes, so the new leader snapshots its store and purges the entries the
    // old one missed: coming back, it catches up from the snapshot.
    for from in (300..600).step_by(30) {
        group.produce(from..from + 30);
    }
    group.start(first);
    group.await_placement("events", "the old leader back in sync", everyone);
    group.await_metrics(first, "a snapshot installed", |m| {
        series(m, "eddy_replication_snapshots_installed_total") >= Some(1.0)
    });

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
    // The aggregation ends as a run without faults would: 90 of each last digit, each
    // record counted once through both failovers.
    let deadline = Instant::now() + WAIT;
    loop {
        let counts = group.buckets(third.leader);
        let expected: BTreeMap<i64, i64> = (0..10).map(|b| (b, 90)).collect();
        if counts == expected {
            break;
        }
        assert!(Instant::now() < deadline, "{counts:?}\n{}", group.logs());
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
    let said = group.produce_acks_all("events", "late");
    assert!(said.contains("Not enough in-sync replicas"), "{said}");
}

/// One HTTP/1.1 request to a node that may not listen (yet): the status and body, or `None`.
/// The text messages of a `/ws/query` of `sql` at `http`, from the earliest offsets, until
/// it closes, and the close frame's code.
fn ws_query(http: &str, sql: &str) -> (Vec<Value>, Option<u16>) {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    let request = json!({"ksql": sql, "streamsProperties": {"auto.offset.reset": "earliest"}});
    let url = reqwest::Url::parse_with_params(
        &format!("ws://{http}/ws/query"),
        [("request", request.to_string())],
    )
    .expect("a URL");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("the WebSocket opens");
        let mut messages = Vec::new();
        loop {
            let next = tokio::time::timeout(WAIT, socket.next())
                .await
                .expect("a message in time");
            match next {
                Some(Ok(Message::Text(text))) => {
                    messages.push(serde_json::from_str(&text).expect("JSON"));
                }
                Some(Ok(Message::Close(frame))) => {
                    return (messages, frame.map(|f| u16::from(f.code)));
                }
                Some(Ok(_)) => {}
                other => panic!("the WebSocket ended without closing: {other:?}"),
            }
        }
    })
}

fn try_request(address: &str, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(raw.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, rest) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, rest.to_string()))
}

/// A node whose storage fails under it (here its snapshots' directory turned into a file, so
/// its next snapshot cannot be written) stops with the reason rather than running on as a
/// node that follows nothing; the two others go on.
#[test]
fn a_node_whose_storage_fails_stops_with_the_reason_and_the_others_go_on() {
    let mut group = Group::running(3);
    let leader = group.leader();
    group.ksql(
        leader,
        "CREATE STREAM events (id BIGINT) WITH (kafka_topic='events', value_format='JSON', partitions=2);",
    );
    let victim = (1..=3).find(|id| *id != leader).expect("a follower");
    let snapshots = group.dirs[(victim - 1) as usize].path().join("snapshots");
    std::fs::remove_dir_all(&snapshots).expect("the snapshots' directory goes");
    std::fs::write(&snapshots, b"not a directory").expect("a file in its place");
    // Small writes, so the follower soon takes a snapshot (every 8 entries in these tests).
    for from in (0..200).step_by(20) {
        group.produce(from..from + 20);
    }
    let status = group.await_exit(victim);
    assert!(!status.success(), "{}", group.log_of(victim));
    let said = group.log_of(victim);
    assert!(
        said.contains(&format!("the replicated log stopped on node {victim}")),
        "{said}"
    );
    // A majority is left: writes go on, and the node that stopped is out of sync.
    group.produce(200..220);
    group.await_placement("events", "the stopped node out of sync", |p| {
        !p.in_sync.contains(&victim) && p.in_sync.len() == 2
    });
    let ids = ids_in_order(&group.consume("events"), "ID", true);
    assert_eq!(ids, (0..220).collect::<Vec<u64>>());
}

/// The value of the series `name` (with no labels) in a Prometheus text exposition.
fn series(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

impl Group {
    /// Waits until node `id` answers `GET path` with something `check` accepts, and returns it.
    fn await_answer(
        &self,
        id: u64,
        path: &str,
        what: &str,
        check: impl Fn(u16, &str) -> bool,
    ) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let answer = try_request(self.http(id), "GET", path, "");
            if let Some((status, body)) = &answer
                && check(*status, body)
            {
                return body.clone();
            }
            assert!(
                Instant::now() < deadline,
                "node {id} {path}: {what}: {answer:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until node `id`'s `/metrics` shows the series `check` accepts.
    fn await_metrics(&self, id: u64, what: &str, check: impl Fn(&str) -> bool) -> String {
        self.await_answer(id, "/metrics", what, |status, text| {
            status == 200 && check(text)
        })
    }
}

/// Steps of a node's wall clock (NTP correcting it, an operator setting it) move no replica in
/// or out of the ISR, and lose no acknowledged record: the leader steps ten minutes ahead and
/// then twenty back, a follower ten minutes back. The ISR still shrinks, within its lag, when a
/// follower dies after the leader's clock went back, where a wall-clock lag would keep the
/// dead follower in sync for the twenty minutes.
#[test]
fn steps_of_the_wall_clock_move_no_replica_in_or_out_of_the_isr() {
    let mut group = Group::new(3).with_steppable_clocks();
    for id in 1..=3 {
        group.start(id);
    }
    let leader = group.leader();
    let followers: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    group.ksql(
        leader,
        "CREATE STREAM clocks (v STRING) WITH (kafka_topic='clocks', value_format='KAFKA', partitions=1);",
    );
    let in_sync = |m: &str| series(m, "eddy_replication_in_sync_replicas") == Some(3.0);
    group.await_metrics(leader, "all three in sync", in_sync);
    // Each write is tried up to three times (a busy machine may time one out), each try a
    // value of its own. kcat says nothing of a write it delivered, but for its complaints
    // about a broker of the bootstrap list that is down (`dead`).
    let (mut acknowledged, mut tried) = (Vec::new(), Vec::new());
    let mut produce = |group: &Group, name: &str, dead: Option<&str>| {
        for attempt in 1..=3 {
            let value = format!("{name} #{attempt}");
            let said = group.produce_acks_all("clocks", &value);
            tried.push(value.clone());
            let complaints = said
                .lines()
                .filter(|line| dead.is_none_or(|address| !line.contains(address)))
                .any(|line| !line.trim().is_empty());
            if !complaints {
                acknowledged.push(value);
                return;
            }
            eprintln!("{value}: {said}");
        }
        panic!(
            "{name}: no write acknowledged in three tries\n{}",
            group.logs()
        );
    };
    produce(&group, "before", None);

    let steps = [
        (leader, "+600s", "leader ahead"),
        (followers[0], "-600s", "follower behind"),
        (leader, "-1200s", "leader behind"),
    ];
    for (id, offset, name) in steps {
        group.step_clock(id, offset);
        // The node reads its clock file each second; the ISR is looked at more often, with
        // a lag of 2 s.
        std::thread::sleep(Duration::from_secs(4));
        produce(&group, name, None);
        let metrics = group.await_metrics(leader, name, |m| {
            series(m, "eddy_replication_in_sync_replicas").is_some()
        });
        assert_eq!(
            series(&metrics, "eddy_replication_in_sync_replicas"),
            Some(3.0),
            "{name}: {metrics}"
        );
        assert_eq!(
            series(&metrics, "eddy_replication_isr_shrinks_total"),
            Some(0.0),
            "{name}: {metrics}"
        );
    }
    assert_eq!(group.leader(), leader, "{}", group.logs());

    // With the leader's clock twenty minutes behind, a follower that dies leaves the ISR
    // within its lag all the same.
    let gone = followers[1];
    group.kill(gone);
    let started = Instant::now();
    let metrics = group.await_metrics(leader, "the ISR shrunk", |m| {
        series(m, "eddy_replication_in_sync_replicas") == Some(2.0)
    });
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        series(&metrics, "eddy_replication_isr_shrinks_total"),
        Some(1.0),
        "{metrics}"
    );
    let dead = group.kafka[(gone - 1) as usize].clone();
    produce(&group, "one node gone", Some(&dead));

    // Every acknowledged record is there, once, in order; a try that timed out may have
    // landed too, but once at most.
    let read: Vec<String> = group
        .consume("clocks")
        .into_iter()
        .filter_map(|line| line.split_once(' ').map(|(_, value)| value.to_string()))
        .collect();
    let read_acknowledged: Vec<&String> =
        read.iter().filter(|v| acknowledged.contains(v)).collect();
    assert_eq!(
        read_acknowledged,
        acknowledged.iter().collect::<Vec<_>>(),
        "{read:?}"
    );
    for value in &read {
        assert!(tried.contains(value), "{value} was never written: {read:?}");
        assert_eq!(read.iter().filter(|v| *v == value).count(), 1, "{read:?}");
    }
}

/// Followers answer health checks and metrics, and send everything else to the leader; the
/// leader's Metadata names every node, and its metrics count the ISR shrinking when a node
/// goes and expanding when it returns, and the leader changing.
#[test]
fn followers_answer_health_and_metrics_and_the_leader_counts_isr_changes() {
    let mut group = Group::running(3);
    let leader = group.leader();
    group.ksql(
        leader,
        "CREATE STREAM events (id BIGINT) WITH (kafka_topic='events', value_format='JSON', partitions=2);",
    );
    // Metadata lists the three nodes as brokers, each at its own Kafka address.
    let deadline = Instant::now() + WAIT;
    loop {
        let listing = common::kcat(&["-b", &group.bootstrap(), "-L", "-m", "3"], None);
        if listing.contains(" 3 brokers:") {
            for (i, address) in group.kafka.iter().enumerate() {
                assert!(
                    listing.contains(&format!("broker {} at {address}", i + 1)),
                    "{listing}"
                );
            }
            break;
        }
        assert!(Instant::now() < deadline, "{listing}\n{}", group.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    group.ksql(
        leader,
        "CREATE STREAM pushed (id BIGINT) WITH (kafka_topic='pushed', value_format='JSON', partitions=1);
         INSERT INTO pushed (id) VALUES (7); INSERT INTO pushed (id) VALUES (8);",
    );
    let leader_url = format!("http://{}", group.http(leader));
    let followers: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    for &id in &followers {
        let health = group.await_answer(id, "/healthcheck", "a follower's health", |s, body| {
            s == 200 && body.contains(&leader_url)
        });
        let health: Value = serde_json::from_str(&health).expect("JSON");
        assert_eq!(health["isHealthy"], true, "{health}");
        assert_eq!(
            health["details"]["replication"]["role"], "FOLLOWER",
            "{health}"
        );
        assert_eq!(
            health["details"]["replication"]["leader"], leader,
            "{health}"
        );
        // The rest of the REST API is the leader's: a follower forwards a request there and
        // passes its answer back.
        let (status, answer) = try_request(
            group.http(id),
            "POST",
            "/ksql",
            r#"{"ksql":"SHOW STREAMS;"}"#,
        )
        .expect("the follower answers");
        assert_eq!(status, 200, "{answer}");
        assert!(answer.contains("\"EVENTS\""), "{answer}");
        // So is a WebSocket: a push query through the follower streams the leader's rows,
        // and one the leader refuses closes with its error.
        let (messages, closed) =
            ws_query(group.http(id), "SELECT * FROM pushed EMIT CHANGES LIMIT 2;");
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert_eq!(messages[0][0]["name"], "ID", "{messages:?}");
        assert_eq!(messages[1], json!({"row": {"columns": [7]}}));
        assert_eq!(messages[2], json!({"row": {"columns": [8]}}));
        assert_eq!(closed, Some(1000));
        let (messages, closed) = ws_query(group.http(id), "SELECT * FROM nowhere EMIT CHANGES;");
        assert_eq!(messages.len(), 1, "{messages:?}");
        assert_eq!(
            messages[0]["message"], "Line: 1, Col: 15: NOWHERE does not exist.",
            "{messages:?}"
        );
        assert_eq!(closed, Some(1003));
        // An upgrade the leader refuses (no WebSocket key) gets the leader's refusal.
        let refused = {
            use std::io::{Read, Write};
            let mut socket = std::net::TcpStream::connect(group.http(id)).expect("connects");
            socket
                .set_read_timeout(Some(Duration::from_secs(10)))
                .expect("a timeout");
            socket
                .write_all(
                    b"GET /ws/query HTTP/1.1\r\nHost: eddy\r\nUpgrade: websocket\r\n\
                      Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
                )
                .expect("written");
            let mut answer = String::new();
            let _ = socket.read_to_string(&mut answer);
            answer
        };
        assert!(refused.starts_with("HTTP/1.1 400"), "{refused}");
        let metrics = group.await_metrics(id, "a follower's series", |m| {
            m.contains("eddy_replication_term")
        });
        assert_eq!(
            series(&metrics, "eddy_replication_leader"),
            Some(0.0),
            "{metrics}"
        );
        assert_eq!(
            series(&metrics, "eddy_replication_under_replicated_partitions"),
            Some(0.0)
        );
    }
    // A follower answers Kafka clients as a broker that leads nothing: Metadata names the
    // leader of every partition and all three brokers, and a Produce is refused with
    // NOT_LEADER_OR_FOLLOWER, so a client goes to the leader.
    for &id in &followers {
        use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
        use kafka_protocol::messages::{
            ApiKey, MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse, TopicName,
        };
        let mut wire = common::wire::Wire::connect(&group.kafka[(id - 1) as usize]);
        // Each follower hears of the other from the leader's heartbeats.
        let deadline = Instant::now() + WAIT;
        let metadata = loop {
            let (metadata, _): (MetadataResponse, _) = wire.call(
                ApiKey::Metadata,
                8,
                &MetadataRequest::default().with_topics(None),
            );
            if metadata.brokers.len() == 3 || Instant::now() > deadline {
                break metadata;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        assert_eq!(i64::from(metadata.controller_id.0), leader as i64);
        assert_eq!(metadata.brokers.len(), 3, "{metadata:?}");
        let events = metadata
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == "events"))
            .unwrap_or_else(|| panic!("events is not listed: {metadata:?}"));
        assert_eq!(events.partitions.len(), 2);
        assert!(
            events
                .partitions
                .iter()
                .all(|p| i64::from(p.leader_id.0) == leader as i64)
        );
        let batch = eddy_storage::EncodedBatch::encode(&[eddy_storage::Record::unkeyed("{}", 0)])
            .expect("a batch");
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(5_000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(
                        kafka_protocol::protocol::StrBytes::from_static_str("events"),
                    ))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(bytes::Bytes::copy_from_slice(batch.as_bytes()))),
                    ]),
            ]);
        let (produced, _): (ProduceResponse, _) = wire.call(ApiKey::Produce, 7, &request);
        assert_eq!(produced.responses[0].partition_responses[0].error_code, 6);
    }
    // Hostile bytes on a follower's Kafka and HTTP ports close their own connection, and the
    // follower goes on answering.
    let follower = followers[0];
    let kafka_port = group.kafka[(follower - 1) as usize].clone();
    let hostile: [&[u8]; 4] = [
        &[0x7f, 0xff, 0xff, 0xff],
        b"\x00\x00\x00\x10garbage garbage!",
        b"GET / HTTP/1.1\r\n\r\n",
        // A JoinGroup (key 11) header: a follower coordinates nothing.
        &[0, 0, 0, 10, 0, 11, 0, 5, 0, 0, 0, 1, 0xff, 0xff],
    ];
    for bytes in hostile {
        use std::io::{Read, Write};
        let mut socket = std::net::TcpStream::connect(&kafka_port).expect("the follower listens");
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("a timeout");
        socket.write_all(bytes).expect("written");
        let mut answer = Vec::new();
        let _ = socket.read_to_end(&mut answer);
        assert!(answer.is_empty(), "{bytes:?} got {answer:?}");
    }
    // Forwarded, the leader refuses it; over the body limit, the follower does.
    for huge in ["x".repeat(8 << 20), "x".repeat(11 << 20)] {
        let refused = try_request(group.http(follower), "POST", "/ksql", &huge);
        assert!(
            refused.as_ref().is_none_or(|(status, _)| *status >= 400),
            "{refused:?}"
        );
    }
    group.await_answer(
        follower,
        "/healthcheck",
        "health after hostile bytes",
        |s, _| s == 200,
    );
    let listing = common::kcat(&["-b", &kafka_port, "-L", "-t", "events"], None);
    assert!(listing.contains("partition 0, leader"), "{listing}");

    // kcat bootstrapped from one follower alone finds the leader and writes there.
    let follower_kafka = group.kafka[(followers[0] - 1) as usize].clone();
    common::kcat(
        &[
            "-b",
            &follower_kafka,
            "-t",
            "events",
            "-P",
            "-X",
            "acks=all",
        ],
        Some("{\"ID\":1}\n{\"ID\":2}\n"),
    );
    let read = common::kcat(
        &["-b", &follower_kafka, "-t", "events", "-C", "-e", "-q"],
        None,
    );
    assert_eq!(read.lines().count(), 2, "{read}");
    let metrics = group.await_metrics(leader, "all three in sync", |m| {
        series(m, "eddy_replication_in_sync_replicas") == Some(3.0)
    });
    assert_eq!(
        series(&metrics, "eddy_replication_leader"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        series(&metrics, "eddy_replication_replicas"),
        Some(3.0),
        "{metrics}"
    );
    assert_eq!(
        series(&metrics, "eddy_replication_under_replicated_partitions"),
        Some(0.0)
    );
    assert_eq!(
        series(&metrics, "eddy_replication_isr_shrinks_total"),
        Some(0.0),
        "{metrics}"
    );

    // A follower goes: after the lag, every partition is under-replicated and the ISR shrank
    // once; it comes back, and the ISR expands again.
    // A topic that asks for all three in sync (min.insync.replicas=3, above the majority
    // Raft commits on) takes acks=all writes only while all three are.
    {
        use kafka_protocol::messages::create_topics_request::{
            CreatableTopic, CreatableTopicConfig,
        };
        use kafka_protocol::messages::{
            ApiKey, CreateTopicsRequest, CreateTopicsResponse, TopicName,
        };
        use kafka_protocol::protocol::StrBytes;
        let mut wire = common::wire::Wire::connect(&group.kafka[(leader - 1) as usize]);
        let request = CreateTopicsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![
                CreatableTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str("strict")))
                    .with_num_partitions(1)
                    .with_replication_factor(3)
                    .with_configs(vec![
                        CreatableTopicConfig::default()
                            .with_name(StrBytes::from_static_str("min.insync.replicas"))
                            .with_value(Some(StrBytes::from_static_str("3"))),
                    ]),
            ]);
        let (created, _): (CreateTopicsResponse, _) = wire.call(ApiKey::CreateTopics, 5, &request);
        assert_eq!(created.topics[0].error_code, 0, "{created:?}");
    }
    let said = group.produce_acks_all("strict", "while all are in sync");
    assert!(!said.contains("Not enough in-sync replicas"), "{said}");
    let gone = followers[0];
    group.kill(gone);
    let metrics = group.await_metrics(leader, "the ISR shrunk", |m| {
        series(m, "eddy_replication_in_sync_replicas") == Some(2.0)
    });
    let said = group.produce_acks_all("strict", "with one node gone");
    assert!(said.contains("Not enough in-sync replicas"), "{said}");
    let said = group.produce_acks_all("events", "{\"ID\":3}");
    assert!(!said.contains("Not enough in-sync replicas"), "{said}");
    // `events` has 2 partitions; the internal topics count too.
    let under = series(&metrics, "eddy_replication_under_replicated_partitions").unwrap_or(0.0);
    assert!(under >= 2.0, "{metrics}");
    assert_eq!(
        series(&metrics, "eddy_replication_isr_shrinks_total"),
        Some(1.0),
        "{metrics}"
    );
    let replication =
        group.await_answer(leader, "/api/replication", "the console's view", |s, _| {
            s == 200
        });
    let replication: Value = serde_json::from_str(&replication).expect("JSON");
    let out_of_sync: Vec<&Value> = replication["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|n| n["inSync"] == false)
        .collect();
    assert_eq!(out_of_sync.len(), 1, "{replication}");
    assert_eq!(out_of_sync[0]["id"], gone, "{replication}");
    group.start(gone);
    let metrics = group.await_metrics(leader, "the ISR expanded", |m| {
        series(m, "eddy_replication_in_sync_replicas") == Some(3.0)
    });
    assert!(
        series(&metrics, "eddy_replication_isr_expands_total") >= Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        series(&metrics, "eddy_replication_under_replicated_partitions"),
        Some(0.0)
    );

    // The leader goes: a follower takes over on the same HTTP port, serving the REST API, and
    // counts the leader change.
    group.kill(leader);
    let next = group.leader();
    assert_ne!(next, leader);
    group.await_answer(next, "/info", "the new leader's REST API", |s, _| s == 200);
    group.ksql(next, "SHOW STREAMS;");
    let metrics = group.await_metrics(next, "the new leader's series", |m| {
        series(m, "eddy_replication_leader") == Some(1.0)
    });
    assert!(
        series(&metrics, "eddy_replication_leader_changes_total") >= Some(2.0),
        "{metrics}"
    );

    // The old leader's directory, opened on its own (here by `eddy users`), is refused: written
    // alone it would drift from the others.
    let out = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["users", "list", "--data-dir"])
        .arg(group.dirs[(leader - 1) as usize].path())
        .stdin(Stdio::null())
        .output()
        .expect("eddy runs");
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("holds a node of a replicated log"), "{said}");
}

/// kafka-python, bootstrapped from the leader alone, goes on to the next leader when that node
/// dies: it knows the other nodes only from the brokers Metadata named. Every record its
/// idempotent producer wrote is in the log once.
#[test]
fn kafka_python_follows_metadata_to_the_next_leader() {
    let mut group = Group::running(3);
    let leader = group.leader();
    group.ksql(
        leader,
        "CREATE STREAM plain (v STRING) WITH (kafka_topic='plain', value_format='KAFKA', partitions=2);",
    );
    let deadline = Instant::now() + WAIT;
    while !common::kcat(&["-b", &group.bootstrap(), "-L", "-m", "3"], None).contains(" 3 brokers:")
    {
        assert!(
            Instant::now() < deadline,
            "Metadata never named 3 brokers\n{}",
            group.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let script = format!(
        "{}/tests/clients/kafka_python_failover.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let client_log = group.dirs[1].path().with_extension("client.log");
    let mut client = Command::new(common::tools::python())
        .arg(script)
        .args([group.kafka[(leader - 1) as usize].as_str(), "plain"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&client_log).expect("the client's log"))
        .spawn()
        .expect("python3 runs");
    let (lines, printed) = std::sync::mpsc::channel();
    let stdout = client.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let client_said = || std::fs::read_to_string(&client_log).unwrap_or_default();
    let read_until = |end: &str, acks: &mut Vec<String>| loop {
        match printed.recv_timeout(WAIT * 2) {
            Ok(line) if line == end => return true,
            Ok(line) => acks.push(line),
            Err(_) => return false,
        }
    };
    let mut acks = Vec::new();
    let read = read_until("first", &mut acks);
    assert!(read, "no first 100:\n{}\n{}", client_said(), group.logs());
    assert_eq!(acks.len(), 100, "{acks:?}");
    group.kill(leader);
    {
        use std::io::Write;
        let mut stdin = client.stdin.take().expect("stdin");
        stdin.write_all(b"go\n").expect("the client reads");
    }
    let read = read_until("done", &mut acks);
    assert!(read, "not done:\n{}\n{}", client_said(), group.logs());
    assert_eq!(acks.len(), 200, "{acks:?}");
    assert!(
        client.wait().expect("the client ends").success(),
        "{}",
        client_said()
    );
    let next = group.leader();
    assert_ne!(next, leader);
    let mut values: Vec<u64> = common::kcat(
        &[
            "-b",
            &group.bootstrap(),
            "-t",
            "plain",
            "-C",
            "-e",
            "-q",
            "-f",
            "%s\n",
        ],
        None,
    )
    .lines()
    .map(|v| v.parse().expect("a number"))
    .collect();
    values.sort_unstable();
    assert_eq!(values, (0..200).collect::<Vec<u64>>());
}

/// As the admin, through one follower only: creates two topics, the user carol, and lets her
/// describe and write the topics named `shared-`.
const SASL_ADMIN: &str = r#"
import sys
from confluent_kafka.admin import (AdminClient, NewTopic, UserScramCredentialUpsertion,
    ScramCredentialInfo, ScramMechanism, AclBinding, ResourceType, ResourcePatternType,
    AclOperation, AclPermissionType)
admin = AdminClient({'bootstrap.servers': sys.argv[1], 'security.protocol': 'SASL_PLAINTEXT',
    'sasl.mechanisms': 'SCRAM-SHA-256', 'sasl.username': 'admin',
    'sasl.password': 'admin-secret'})
for topic, future in admin.create_topics([NewTopic('shared-a', 1), NewTopic('secret-b', 1)]).items():
    future.result(30)
upsert = UserScramCredentialUpsertion('carol',
    ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), b'carol-secret')
for user, future in admin.alter_user_scram_credentials([upsert]).items():
    future.result(30)
grants = [AclBinding(ResourceType.TOPIC, 'shared-', ResourcePatternType.PREFIXED, 'User:carol',
                     '*', AclOperation.ALL, AclPermissionType.ALLOW)]
for binding, future in admin.create_acls(grants).items():
    future.result(30)
print('done')
"#;

/// kcat through `bootstrap` over SASL_PLAINTEXT as `user`: whether it succeeded, its output
/// and its errors.
fn kcat_as(
    bootstrap: &str,
    (user, password): (&str, &str),
    args: &[&str],
) -> (bool, String, String) {
    let (username, password) = (
        format!("sasl.username={user}"),
        format!("sasl.password={password}"),
    );
    let mut all = vec!["-b", bootstrap, "-X", "security.protocol=SASL_PLAINTEXT"];
    all.extend(["-X", "sasl.mechanisms=SCRAM-SHA-256", "-X", &username]);
    all.extend(["-X", &password, "-m", "5"]);
    all.extend(args);
    common::kcat_run(&all, Some("hello\n"))
}

#[test]
fn a_followers_sasl_listener_knows_the_users_and_acls_the_leader_wrote() {
    let mut group = Group::new(3);
    group.kafka_protocol = Some("SASL_PLAINTEXT");
    group.extra = [
        "--admin-user",
        "admin",
        "--sasl-mechanisms",
        "SCRAM-SHA-256",
    ]
    .map(String::from)
    .to_vec();
    group.env = vec![("EDDY_ADMIN_PASSWORD".into(), "admin-secret".into())];
    for id in 1..=3 {
        group.start(id);
    }
    let leader = group.leader_over_http();
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let at = group.kafka[(follower - 1) as usize].clone();

    // The admin the leader created authenticates on the follower, and through it alone
    // creates topics, a user and an ACL, which librdkafka sends on to the leader.
    let deadline = Instant::now() + WAIT;
    loop {
        let (ok, out, err) = kcat_as(&at, ("admin", "admin-secret"), &["-L"]);
        if ok && out.contains("(controller)") {
            break;
        }
        assert!(Instant::now() < deadline, "{out}\n{err}\n{}", group.logs());
        std::thread::sleep(Duration::from_millis(300));
    }
    let created = Command::new(common::tools::python())
        .arg("-c")
        .arg(SASL_ADMIN)
        .arg(&at)
        .output()
        .expect("python runs");
    assert!(
        created.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&created.stderr),
        group.logs()
    );

    // carol, created on the leader, authenticates on the follower once it applied her, and
    // its Metadata shows her the topics her ACL names and not the other.
    let deadline = Instant::now() + WAIT;
    let listing = loop {
        let (ok, out, err) = kcat_as(&at, ("carol", "carol-secret"), &["-L"]);
        if ok && out.contains("\"shared-a\"") {
            break out;
        }
        assert!(Instant::now() < deadline, "{out}\n{err}\n{}", group.logs());
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(!listing.contains("secret-b"), "{listing}");
    let (ok, _, err) = kcat_as(&at, ("carol", "wrong"), &["-L"]);
    assert!(!ok);
    assert!(err.contains("Authentication failed"), "{err}");
    // A request before authenticating, and a frame over the unauthenticated limit, close the
    // connection unanswered.
    let metadata_v0: &[u8] = &[0, 0, 0, 12, 0, 3, 0, 0, 0, 0, 0, 7, 0xff, 0xff, 0, 0, 0, 0];
    let oversized: &[u8] = &[0, 0x10, 0, 0, 0, 17];
    for hostile in [metadata_v0, oversized] {
        use std::io::{Read, Write};
        let mut socket = std::net::TcpStream::connect(&at).expect("the follower listens");
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("a timeout");
        socket.write_all(hostile).expect("the frame is sent");
        let mut answer = Vec::new();
        // Closed with the frame unread, the connection may be reset rather than ended.
        let read = socket.read_to_end(&mut answer);
        let closed = read.is_ok()
            || read
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset);
        assert!(
            closed && answer.is_empty(),
            "{read:?}, {} bytes answered",
            answer.len()
        );
    }

    // Bootstrapped on the follower, carol writes to her topic on the leader and reads it back.
    let (ok, _, err) = kcat_as(&at, ("carol", "carol-secret"), &["-P", "-t", "shared-a"]);
    assert!(ok, "{err}\n{}", group.logs());
    let (ok, out, err) = kcat_as(
        &at,
        ("carol", "carol-secret"),
        &["-C", "-t", "shared-a", "-e", "-f", "%s\n"],
    );
    assert!(ok, "{err}");
    assert_eq!(out, "hello\n");
}

/// A CA, a certificate it signed for 127.0.0.1 (every node presents it) and its key, and a
/// certificate and key it did not sign, as PEM files in `dir`.
fn replication_certificates(dir: &std::path::Path) -> [String; 5] {
    let ca_key = rcgen::KeyPair::generate().expect("a key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("the CA");
    let node_key = rcgen::KeyPair::generate().expect("a key");
    let node = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("params")
        .signed_by(&node_key, &ca, &ca_key)
        .expect("the node's certificate");
    let rogue_key = rcgen::KeyPair::generate().expect("a key");
    let rogue = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("params")
        .self_signed(&rogue_key)
        .expect("a certificate of no CA");
    let files = [
        ("ca.pem", ca.pem()),
        ("node.pem", node.pem()),
        ("node-key.pem", node_key.serialize_pem()),
        ("rogue.pem", rogue.pem()),
        ("rogue-key.pem", rogue_key.serialize_pem()),
    ];
    files.map(|(name, pem)| {
        let path = dir.join(name);
        std::fs::write(&path, pem).expect("a PEM file");
        path.to_string_lossy().into_owned()
    })
}

/// Connects to a replication listener over TLS, trusting `ca` and presenting `cert`, sends a
/// frame and reads: the bytes answered, or why the connection failed.
fn tls_exchange(address: &str, ca: &str, (cert, key): (&str, &str)) -> Result<usize, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let mut roots = tokio_rustls::rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(ca).map_err(|e| e.to_string())? {
            roots
                .add(c.map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        }
        let chain = CertificateDer::pem_file_iter(cert)
            .map_err(|e| e.to_string())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| e.to_string())?;
        let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| e.to_string())?;
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|e| e.to_string())?;
        let name = ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        // A frame of 12 bytes that is no request: a peer answers nothing and hangs up.
        tls.write_all(&[0, 0, 0, 12, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
            .await
            .map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut answer))
            .await
            .map_err(|_| "no answer and no close within 10 s".to_string())?;
        read.map_err(|e| e.to_string())?;
        Ok(answer.len())
    })
}

#[test]
fn nodes_speak_mutual_tls_and_refuse_a_peer_the_ca_did_not_sign() {
    let files = tempfile::tempdir().expect("a directory");
    let [ca, node, node_key, rogue, rogue_key] = replication_certificates(files.path());
    let mut group = Group::new(3);
    group.extra = vec![
        "--replication-tls-cert".into(),
        node.clone(),
        "--replication-tls-key".into(),
        node_key.clone(),
        "--replication-tls-ca".into(),
        ca.clone(),
    ];
    for id in 1..=3 {
        group.start(id);
    }
    // Over TLS the nodes elect a leader, and every follower is in sync.
    let leader = group.leader();
    group.ksql(
        leader,
        "CREATE STREAM secured (v STRING) WITH (kafka_topic='secured', value_format='KAFKA', partitions=1);",
    );
    let placement = group.await_placement("secured", "all three in sync", |p| p.in_sync.len() == 3);
    assert_eq!(placement.leader, leader);
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    assert!(
        group.log_of(follower).contains("speak mutual TLS"),
        "{}",
        group.log_of(follower)
    );

    // A peer with a certificate of no CA the nodes trust is refused at the handshake; one
    // speaking plain TCP too; a node with the right certificate gets a connection.
    let at = &group.raft[(follower - 1) as usize];
    let refused = tls_exchange(at, &ca, (&rogue, &rogue_key));
    assert!(refused.is_err(), "{refused:?}");
    {
        use std::io::{Read, Write};
        let mut plain = std::net::TcpStream::connect(at).expect("the listener");
        plain
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("a timeout");
        plain
            .write_all(&[0, 0, 0, 4, 1, 2, 3, 4])
            .expect("the bytes are sent");
        let mut answer = Vec::new();
        let _ = plain.read_to_end(&mut answer);
        assert!(answer.is_empty() || answer[0] == 0x15, "{answer:?}");
    }
    // The node hangs up on the frame it cannot read, with or without TLS's close_notify.
    let accepted = tls_exchange(at, &ca, (&node, &node_key));
    assert!(
        accepted == Ok(0) || accepted.as_ref().is_err_and(|e| e.contains("close_notify")),
        "a peer with the CA's certificate: {accepted:?}"
    );
    let deadline = Instant::now() + WAIT;
    while !group.log_of(follower).contains("failed its TLS handshake") {
        assert!(Instant::now() < deadline, "{}", group.log_of(follower));
        std::thread::sleep(Duration::from_millis(100));
    }
    // The group goes on with the same leader.
    assert_eq!(group.leader(), leader);
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

/// Sends a keep-alive `GET path` on `stream` and reads its answer; `None` when the
/// connection was closed instead.
fn keep_alive_get(stream: &mut std::net::TcpStream, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    // The server checks Host against the addresses it serves (DNS rebinding).
    let host = stream.peer_addr().ok()?;
    let raw = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    stream.write_all(raw.as_bytes()).ok()?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&answer).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse().ok())?;
            if body.len() >= length {
                let status = head.split_whitespace().nth(1)?.parse().ok()?;
                return Some((status, body.to_string()));
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A node that stops leading closes its clients' HTTP connections, keep-alive ones too, as it
/// closes their Kafka connections: otherwise a client (the REPL, a ksqlDB client) stays on it
/// and is answered by its closed store for as long as it keeps the connection.
#[test]
fn a_leader_that_stops_leading_closes_its_http_connections() {
    let group = Group::running_linked(3);
    let leader = group.leader_over_http();
    let mut kept = std::net::TcpStream::connect(group.http(leader)).expect("connected");
    kept.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a timeout");
    let role = |id: u64| {
        try_request(group.http(id), "GET", "/api/replication", "")
            .filter(|(status, _)| *status == 200)
            .map(|(_, body)| body)
            .unwrap_or_default()
    };
    assert_eq!(
        keep_alive_get(&mut kept, "/healthcheck").map(|(status, _)| status),
        Some(200)
    );

    group.isolate(leader);
    let deadline = Instant::now() + WAIT;
    while !(1..=3)
        .filter(|id| *id != leader)
        .any(|id| role(id).contains("\"role\":\"LEADER\""))
    {
        assert!(Instant::now() < deadline, "no new leader\n{}", group.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    group.heal();
    // Back in touch, the old leader sees the newer term and follows.
    while !role(leader).contains("\"role\":\"FOLLOWER\"") {
        assert!(
            Instant::now() < deadline,
            "the old leader never followed\n{}",
            group.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        keep_alive_get(&mut kept, "/healthcheck"),
        None,
        "a connection of the old term still answers"
    );
}

/// What the client printed: acknowledgements, reads, and whether it finished.
#[derive(Default)]
struct History {
    acked: BTreeMap<String, (u32, i64)>,
    read: Vec<(u32, i64, String)>,
    failed: Vec<String>,
    finished: Vec<String>,
}

impl History {
    fn parse(lines: &[String]) -> History {
        let mut history = History::default();
        for line in lines {
            let words: Vec<&str> = line.split_whitespace().collect();
            let place = |p: &str, o: &str| {
                (
                    p.parse().expect("a partition"),
                    o.parse().expect("an offset"),
                )
            };
            match words.as_slice() {
                ["ack", p, o, value] => {
                    let previous = history.acked.insert(value.to_string(), place(p, o));
                    assert!(previous.is_none(), "{value} acknowledged twice");
                }
                ["read", p, o, value] => {
                    let (p, o) = place(p, o);
                    history.read.push((p, o, value.to_string()));
                }
                ["failed", ..] => history.failed.push(line.clone()),
                _ => history.finished.push(line.clone()),
            }
        }
        history
    }
}

/// One fault the Jepsen-style test's nemesis brings about, on the leader or a follower.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// `kill -9`, and a restart 2 s later.
    Kill { leader: bool },
    /// `SIGSTOP` (to the others, a partitioned node), and `SIGCONT` 3 s later.
    Pause { leader: bool },
    /// Cut off from both other nodes for 5 s while it runs and its clients still reach it.
    Isolate { leader: bool },
    /// Only the link between the leader and one follower cut for 5 s: that follower still
    /// hears the other, and calls elections when its timer runs out.
    CutLink,
    /// The leader's connections to one follower cut for 5 s, that follower's to the leader
    /// not: it hears no heartbeat, and its vote requests reach the leader (an asymmetric
    /// partition, as a firewall that lets connections through one way makes).
    OneWay,
    /// Every link 80 ms slower each way for 5 s (latency, not a cap on bandwidth); writes
    /// must still be acknowledged meanwhile.
    Slow,
}

/// The faults every run goes through, in order.
const SCHEDULE: [Fault; 11] = [
    Fault::Kill { leader: true },
    Fault::Pause { leader: true },
    Fault::Kill { leader: false },
    Fault::Pause { leader: false },
    Fault::Kill { leader: true },
    Fault::Pause { leader: true },
    Fault::Isolate { leader: true },
    Fault::Isolate { leader: false },
    Fault::CutLink,
    Fault::OneWay,
    Fault::Slow,
];

/// The random faults of a run longer than the schedule: xorshift from EDDY_JEPSEN_SEED, or
/// from the clock (printed, so a failing run can be repeated).
struct Random(u64);

impl Random {
    fn from_env() -> Random {
        let seed = std::env::var("EDDY_JEPSEN_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            })
            .max(1);
        eprintln!("EDDY_JEPSEN_SEED={seed}");
        Random(seed)
    }

    fn fault(&mut self) -> Fault {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let leader = self.0 & 1 == 0;
        match (self.0 >> 1) % 6 {
            0 => Fault::Kill { leader },
            1 => Fault::Pause { leader },
            2 => Fault::Isolate { leader },
            3 => Fault::CutLink,
            4 => Fault::OneWay,
            _ => Fault::Slow,
        }
    }
}

/// The numbers each producer of the Jepsen-style test writes from: its index times this.
const PRODUCER_SPAN: i64 = 1_000_000_000;

/// Jepsen's register of a log, on three processes: two idempotent `acks=all` producers and
/// their consumers run throughout while the nemesis goes through [`SCHEDULE`] (processes
/// killed and paused, nodes cut off, one link cut both ways and one one way, links slowed;
/// each link between two nodes goes through a proxy the test cuts). At the end every
/// acknowledged record is in the log at the offset it was acknowledged at, no record is there
/// twice, each partition holds each producer's records in the order sent, and everything the
/// consumers ever read is still there: no read saw a record that was later lost.
#[test]
fn acknowledged_records_survive_leaders_killed_paused_and_cut_off_under_load() {
    let mut group = Group::running_linked(3);
    let first = group.leader();
    group.ksql(
        first,
        "CREATE STREAM jepsen (v BIGINT) WITH (kafka_topic='jepsen', value_format='JSON', partitions=2);",
    );
    let script = format!(
        "{}/tests/clients/replicated_log_client.py",
        env!("CARGO_MANIFEST_DIR")
    );
    // Two producers, each writing numbers of its own (the second's from PRODUCER_SPAN), into
    // the same partitions.
    let client_log = group.dirs[0].path().with_extension("client.log");
    let printed: Log = Arc::default();
    let mut clients = Vec::new();
    for n in 0..2 {
        let mut client = Command::new(common::tools::python())
            .arg(&script)
            .args([
                &group.bootstrap(),
                "jepsen",
                &(n * PRODUCER_SPAN).to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(
                std::fs::File::create(client_log.with_extension(n.to_string()))
                    .expect("the client's log"),
            )
            .spawn()
            .expect("python3 runs");
        let printed = printed.clone();
        let stdout = client.stdout.take().expect("stdout");
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                printed.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        clients.push((client, reader));
    }
    let client_said = || {
        let mut said = String::new();
        for n in 0..2 {
            let text = std::fs::read_to_string(client_log.with_extension(n.to_string()))
                .unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            said.push_str(&lines[lines.len().saturating_sub(20)..].join("\n"));
            said.push('\n');
        }
        said
    };
    let acked = || {
        let printed = printed.lock().unwrap_or_else(|e| e.into_inner());
        printed.iter().filter(|l| l.starts_with("ack ")).count()
    };

    // The nemesis: the fixed schedule ([`SCHEDULE`]), then as many random faults as
    // EDDY_JEPSEN_ROUNDS asks for beyond it (a longer run by hand; CI runs the schedule).
    let rounds: usize = std::env::var("EDDY_JEPSEN_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(SCHEDULE.len());
    let mut random = Random::from_env();
    for round in 0..rounds {
        let before = acked();
        let deadline = Instant::now() + WAIT;
        while acked() < before + 200 {
            assert!(
                Instant::now() < deadline,
                "no progress in round {round}\nclient:\n{}\n{}",
                client_said(),
                group.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let fault = SCHEDULE
            .get(round)
            .copied()
            .unwrap_or_else(|| random.fault());
        let leader = group.leader();
        let follower = (1..=3).find(|id| *id != leader).expect("a follower");
        let pick = |on_leader: bool| if on_leader { leader } else { follower };
        eprintln!("round {round}: {fault:?} (leader {leader})");
        match fault {
            Fault::Kill { leader } => {
                group.kill(pick(leader));
                std::thread::sleep(Duration::from_secs(2));
                group.start(pick(leader));
            }
            Fault::Pause { leader } => {
                group.signal(pick(leader), "-STOP");
                std::thread::sleep(Duration::from_secs(3));
                group.signal(pick(leader), "-CONT");
            }
            Fault::Isolate { leader } => {
                group.isolate(pick(leader));
                std::thread::sleep(Duration::from_secs(5));
                group.heal();
            }
            Fault::CutLink => {
                group.cut_between(leader, follower);
                std::thread::sleep(Duration::from_secs(5));
                group.heal();
            }
            Fault::OneWay => {
                group.cut_one_way(leader, follower);
                std::thread::sleep(Duration::from_secs(5));
                group.heal();
            }
            Fault::Slow => {
                group.slow(80);
                let before = acked();
                std::thread::sleep(Duration::from_secs(5));
                let during = acked() - before;
                group.slow(0);
                assert!(
                    during > 0,
                    "nothing acknowledged over slowed links\nclient:\n{}\n{}",
                    client_said(),
                    group.logs()
                );
            }
        }
    }
    let before = acked();
    let deadline = Instant::now() + WAIT;
    while acked() < before + 200 {
        assert!(
            Instant::now() < deadline,
            "no progress at the end\nclient:\n{}\nprinted:\n{}\n{}",
            client_said(),
            {
                let printed = printed.lock().unwrap_or_else(|e| e.into_inner());
                printed[printed.len().saturating_sub(30)..].join("\n")
            },
            group.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut succeeded = Vec::new();
    for (client, _) in &mut clients {
        drop(client.stdin.take());
    }
    for (mut client, reader) in clients {
        succeeded.push(client.wait().expect("the client ends").success());
        reader.join().expect("the reader ends");
    }
    let lines = printed.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let history = History::parse(&lines);
    assert_eq!(succeeded, [true, true], "{:?}", history.finished);
    assert!(history.failed.is_empty(), "{:?}", history.failed);
    let written: usize = history
        .finished
        .iter()
        .filter_map(|line| line.strip_prefix("flushed 0 left, "))
        .filter_map(|rest| rest.strip_suffix(" written")?.parse::<usize>().ok())
        .sum();
    assert_eq!(
        written,
        history.acked.len(),
        "every record written was acknowledged: {:?}",
        history.finished
    );

    // The log as it is now, read from the leader.
    let log: BTreeMap<(u32, i64), String> = common::kcat(
        &[
            "-b",
            &group.bootstrap(),
            "-t",
            "jepsen",
            "-C",
            "-e",
            "-q",
            "-f",
            "%p %o %s\n",
        ],
        None,
    )
    .lines()
    .filter_map(|line| {
        let mut words = line.split_whitespace();
        let p = words.next()?.parse().ok()?;
        let o = words.next()?.parse().ok()?;
        Some(((p, o), words.next()?.to_string()))
    })
    .collect();
    let found: BTreeMap<&String, &(u32, i64)> = log.iter().map(|(place, v)| (v, place)).collect();
    let wrong: Vec<String> = history
        .acked
        .iter()
        .filter(|(value, place)| log.get(place) != Some(value))
        .map(|(value, place)| {
            format!(
                "{value} acknowledged at {place:?}, which holds {:?}; {value} is at {:?}",
                log.get(place),
                found.get(value)
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} acknowledged records are not where they were acknowledged: {:?}\n{}",
        wrong.len(),
        history.acked.len(),
        &wrong[..wrong.len().min(20)],
        group.logs()
    );
    let mut values: Vec<i64> = log.values().map(|v| v.parse().expect("a number")).collect();
    let count = values.len();
    values.sort_unstable();
    values.dedup();
    assert_eq!(values.len(), count, "a record is in the log twice");
    for partition in 0..2 {
        for producer in 0..2 {
            let span = producer * PRODUCER_SPAN..(producer + 1) * PRODUCER_SPAN;
            let in_partition: Vec<i64> = log
                .range((partition, i64::MIN)..=(partition, i64::MAX))
                .map(|(_, v)| v.parse().expect("a number"))
                .filter(|v| span.contains(v))
                .collect();
            assert!(
                in_partition.windows(2).all(|w| w[0] < w[1]),
                "producer {producer}'s records in partition {partition} out of order"
            );
        }
    }
    for (p, o, value) in &history.read {
        assert_eq!(
            log.get(&(*p, *o)),
            Some(value),
            "read {value} at {p}/{o}, later lost"
        );
    }
    assert!(!history.read.is_empty(), "the consumer read nothing");
}
