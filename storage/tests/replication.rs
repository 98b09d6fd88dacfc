//! The replicated log: three replicas on loopback keep one store through one Raft group.

use std::collections::BTreeMap;
use std::time::Duration;

use eddy_storage::{
    AppendResult, EncodedBatch, Record, Replica, ReplicaOptions, StorageError, Store, StoreOptions,
    SyncPolicy, TopicConfig,
};
use tokio::io::AsyncWriteExt;

const WAIT: Duration = Duration::from_secs(20);
/// Each replica's `replica.lag.time.max.ms`: short, so a test sees the ISR change soon.
const LAG: Duration = Duration::from_millis(800);

/// Addresses on loopback that were free a moment ago.
fn free_addresses(count: usize) -> Vec<String> {
    let listeners: Vec<std::net::TcpListener> = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("an address").to_string())
        .collect()
}

struct Group {
    dirs: Vec<tempfile::TempDir>,
    peers: BTreeMap<u64, String>,
    replicas: BTreeMap<u64, Replica>,
    snapshot_entries: u64,
    snapshot_bytes: u64,
}

impl Group {
    async fn start(nodes: u64) -> anyhow::Result<Group> {
        Group::with_snapshots(
            nodes,
            eddy_storage::DEFAULT_SNAPSHOT_ENTRIES,
            eddy_storage::DEFAULT_SNAPSHOT_BYTES,
        )
        .await
    }

    /// A group whose replicas take a snapshot every `snapshot_entries` entries or
    /// `snapshot_bytes` bytes of them.
    async fn with_snapshots(
        nodes: u64,
        snapshot_entries: u64,
        snapshot_bytes: u64,
    ) -> anyhow::Result<Group> {
        let addresses = free_addresses(nodes as usize);
        let peers: BTreeMap<u64, String> = (1..=nodes).zip(addresses).collect();
        let dirs = (0..nodes)
            .map(|_| tempfile::tempdir())
            .collect::<Result<Vec<_>, _>>()?;
        let mut group = Group {
            dirs,
            peers,
            replicas: BTreeMap::new(),
            snapshot_entries,
            snapshot_bytes,
        };
        for id in 1..=nodes {
            group.restart(id).await?;
        }
        Ok(group)
    }

    async fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        let options = ReplicaOptions {
            node_id: id,
            peers: self.peers.clone(),
            listen: None,
            sync: SyncPolicy::Os,
            lag: LAG,
            snapshot_entries: self.snapshot_entries,
            snapshot_bytes: self.snapshot_bytes,
            tls: None,
        };
        let dir = self.dirs[(id - 1) as usize].path();
        let replica = Replica::start(dir, options).await?;
        self.replicas.insert(id, replica);
        Ok(())
    }

    async fn stop(&mut self, id: u64) -> anyhow::Result<()> {
        if let Some(replica) = self.replicas.remove(&id) {
            replica.shutdown().await?;
        }
        Ok(())
    }

    fn replica(&self, id: u64) -> &Replica {
        &self.replicas[&id]
    }

    /// The leader the running replicas agree on, other than `not`, and a store built for its
    /// term.
    async fn leader(&self, not: Option<u64>) -> anyhow::Result<(u64, Store)> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let any = self.replicas.values().next().expect("a running replica");
            let leader = any.await_leader(WAIT).await?;
            if Some(leader) != not && self.replicas.contains_key(&leader) {
                let replica = self.replica(leader);
                if let Ok(term) = replica.await_leading(Duration::from_secs(2)).await {
                    let store = Store::open_replica(replica, StoreOptions::default(), Some(term))?;
                    return Ok((leader, store));
                }
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "no new leader among {:?}",
                self.replicas.keys()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What replica `id` holds of `topic` once it applied what `leader` applied (or, as the
    /// leader's view of its own progress may trail its last write, once it holds `expected`),
    /// read through a store that only reads.
    async fn contents(
        &self,
        id: u64,
        leader: u64,
        topic: &str,
        expected: &[Vec<String>],
    ) -> anyhow::Result<Vec<Vec<String>>> {
        let applied = self.replica(leader).leadership().applied.unwrap_or(0);
        let replica = self.replica(id);
        replica.await_applied(applied, WAIT).await?;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let store = Store::open_replica(replica, StoreOptions::default(), None)?;
            let contents = read_all(&store, topic)?;
            store.close()?;
            if contents == expected || tokio::time::Instant::now() > deadline {
                return Ok(contents);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Every value of `topic`, per partition, in offset order.
fn read_all(store: &Store, topic: &str) -> anyhow::Result<Vec<Vec<String>>> {
    let mut partitions = Vec::new();
    for partition in 0..store.partition_count(topic)? {
        let mut values = Vec::new();
        let mut at = store.log_start_offset(topic, partition)?;
        let end = store.end_offset(topic, partition)?;
        while at < end {
            let fetched = store.read_records(topic, partition, at, 1 << 20)?;
            anyhow::ensure!(fetched.next_offset > at, "reading made no progress at {at}");
            at = fetched.next_offset;
            for record in fetched.records {
                let value = record.record.value.unwrap_or_default();
                values.push(String::from_utf8(value.to_vec())?);
            }
        }
        partitions.push(values);
    }
    Ok(partitions)
}

/// Appends `values` one by one, spread over two partitions, and notes what was acknowledged.
async fn write(
    store: &Store,
    values: std::ops::Range<u32>,
    acked: &mut [Vec<String>],
) -> anyhow::Result<()> {
    for i in values {
        let partition = i % 2;
        let value = format!("v{i}");
        let written = store
            .append(
                "events",
                partition,
                vec![Record::unkeyed(value.clone(), 1_000 + i64::from(i))],
            )
            .await?;
        anyhow::ensure!(
            written.base_offset == acked[partition as usize].len() as i64,
            "offset {} given to the {}th record of partition {partition}",
            written.base_offset,
            acked[partition as usize].len()
        );
        acked[partition as usize].push(value);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_keep_one_log_and_go_on_without_their_leader() -> anyhow::Result<()> {
    let mut group = Group::start(3).await?;
    let (leader, store) = group.leader(None).await?;
    store.create_topic("events", TopicConfig::with_partitions(2))?;
    let mut acked = vec![Vec::new(), Vec::new()];
    write(&store, 0..200, &mut acked).await?;

    // A follower holds what the leader acknowledged, and refuses writes, naming the leader.
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    assert_eq!(
        group.contents(follower, leader, "events", &acked).await?,
        acked
    );
    let reader = Store::open_replica(group.replica(follower), StoreOptions::default(), None)?;
    match reader
        .append("events", 0, vec![Record::unkeyed("refused", 1)])
        .await
    {
        Err(StorageError::NotLeader { leader: named }) => assert_eq!(named, Some(leader)),
        other => panic!("a follower wrote: {other:?}"),
    }
    reader.close()?;

    // The leader goes: the two others elect one of themselves and go on from the same offsets.
    // Its status says Raft stopped there, as it says of a storage fault.
    let gone = group.replica(leader).status().clone();
    assert_eq!(gone.fault(), None);
    store.close()?;
    drop(store);
    group.stop(leader).await?;
    assert!(gone.fault().is_some(), "Raft stopped, yet no fault is told");
    let (second, store) = group.leader(Some(leader)).await?;
    assert_eq!(read_all(&store, "events")?, acked);
    write(&store, 200..300, &mut acked).await?;

    // The old leader comes back on its directory, catches up, and holds the same log.
    group.restart(leader).await?;
    for id in 1..=3 {
        if id != second {
            assert_eq!(
                group.contents(id, second, "events", &acked).await?,
                acked,
                "node {id}"
            );
        }
    }
    assert_eq!(read_all(&store, "events")?, acked);
    store.close()?;
    for id in 1..=3 {
        group.stop(id).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_goes_leaves_the_isr_and_without_a_majority_nothing_is_acknowledged()
-> anyhow::Result<()> {
    let mut group = Group::start(3).await?;
    let (leader, store) = group.leader(None).await?;
    store.create_topic("events", TopicConfig::with_partitions(2))?;
    let mut acked = vec![Vec::new(), Vec::new()];
    write(&store, 0..10, &mut acked).await?;
    // Every node is in sync; a follower that goes leaves the ISR once it has not answered for
    // the lag, and comes back once it caught up.
    let status = group.replica(leader).status().clone();
    assert_eq!(status.voters(), vec![1, 2, 3]);
    await_in_sync(&status, &[1, 2, 3]).await?;
    assert_eq!(status.counts().isr_shrinks, 0);
    // Each node's client addresses ride on Raft's messages: the leader learns every node's
    // from their answers, and each follower every node's from the leader's heartbeats.
    for id in 1..=3 {
        group
            .replica(id)
            .status()
            .advertise(format!("clients of {id}"));
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    for id in 1..=3 {
        let expected: Vec<u64> = vec![1, 2, 3];
        loop {
            let directory = group.replica(id).status().directory();
            if expected
                .iter()
                .all(|node| directory.get(node) == Some(&format!("clients of {node}")))
            {
                break;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "node {id} knows {directory:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(status.counts().leader_changes >= 1, "{:?}", status.counts());
    let followers: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    group.stop(followers[1]).await?;
    let mut left: Vec<u64> = vec![leader, followers[0]];
    left.sort_unstable();
    await_in_sync(&status, &left).await?;
    // The follower left running hears the ISR from the leader's heartbeats.
    let told = group.replica(followers[0]).status().clone();
    await_in_sync(&told, &left).await?;
    await_counted(&status, |c| c.isr_shrinks >= 1).await?;
    let lagging = status.follower_lag();
    assert_eq!(lagging.keys().copied().collect::<Vec<_>>(), followers);
    write(&store, 10..20, &mut acked).await?;
    group.restart(followers[1]).await?;
    await_in_sync(&status, &[1, 2, 3]).await?;
    await_counted(&status, |c| c.isr_expands >= 1).await?;
    // With both followers gone, nothing commits: the write waits, unacknowledged.
    group.stop(followers[1]).await?;
    group.stop(followers[0]).await?;
    let pending = store.append("events", 0, vec![Record::unkeyed("v-late", 5)]);
    let waited = tokio::time::timeout(Duration::from_secs(3), pending).await;
    assert!(
        waited.is_err(),
        "a write was acknowledged without a majority: {waited:?}"
    );
    // One follower back makes a majority again.
    group.restart(followers[0]).await?;
    let retried = tokio::time::timeout(
        WAIT,
        store.append("events", 1, vec![Record::unkeyed("v-after", 6)]),
    )
    .await;
    // The leader may have lost its term while alone; then the write is refused, not lost.
    match retried {
        Ok(Ok(_)) | Ok(Err(StorageError::NotLeader { .. })) => {}
        other => panic!("{other:?}"),
    }
    store.close()?;
    for id in 1..=3 {
        group.stop(id).await?;
    }
    Ok(())
}

/// Waits until the leader's counts of ISR and leader changes satisfy `check`.
async fn await_counted(
    status: &eddy_storage::ReplicaStatus,
    check: impl Fn(&eddy_storage::ReplicaCounts) -> bool,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let counts = status.counts();
        if check(&counts) {
            return Ok(());
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "counted {counts:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the leader counts `expected` in sync.
async fn await_in_sync(
    status: &eddy_storage::ReplicaStatus,
    expected: &[u64],
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let in_sync = status.in_sync();
        if in_sync == expected {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "in sync: {in_sync:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Bytes that are not Raft's messages, sent to a replica's listener, close that connection
/// and nothing else: the group still elects and commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replication_listener_shrugs_off_hostile_bytes() -> anyhow::Result<()> {
    let mut group = Group::start(3).await?;
    let (leader, store) = group.leader(None).await?;
    let address = group.replica(leader).address().to_string();
    let hostile: Vec<Vec<u8>> = vec![
        // A length over the limit.
        vec![0xff, 0xff, 0xff, 0xff],
        // A frame that is not MessagePack of a request.
        [&8u32.to_be_bytes()[..], b"garbage!"].concat(),
        // A frame cut short.
        [&1000u32.to_be_bytes()[..], b"short"].concat(),
        // A frame too short to hold its message's length, and one whose message is longer
        // than the frame.
        [&2u32.to_be_bytes()[..], b"ab"].concat(),
        [
            &12u32.to_be_bytes()[..],
            &100u32.to_be_bytes()[..],
            b"messages",
        ]
        .concat(),
        // Plain HTTP.
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
    ];
    for bytes in hostile {
        let mut stream = tokio::net::TcpStream::connect(&address).await?;
        stream.write_all(&bytes).await?;
        stream.shutdown().await?;
    }
    // More idle connections to a follower than it serves take slots, not memory, and the
    // leader's connection still gets through.
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let mut idle = Vec::new();
    for _ in 0..200 {
        if let Ok(stream) = tokio::net::TcpStream::connect(group.replica(follower).address()).await
        {
            idle.push(stream);
        }
    }
    store.create_topic("events", TopicConfig::with_partitions(2))?;
    let mut acked = vec![Vec::new(), Vec::new()];
    write(&store, 0..20, &mut acked).await?;
    assert_eq!(
        group.contents(follower, leader, "events", &acked).await?,
        acked
    );
    drop(idle);
    store.close()?;
    for id in 1..=3 {
        group.stop(id).await?;
    }
    Ok(())
}

/// Waits until replica `status`'s Raft log satisfies `check`.
async fn await_extent(
    status: &eddy_storage::ReplicaStatus,
    check: impl Fn(&eddy_storage::LogExtent) -> bool,
) -> anyhow::Result<eddy_storage::LogExtent> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let extent = status.log_extent();
        if check(&extent) {
            return Ok(extent);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the log is {extent:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_missed_the_purged_log_catches_up_from_a_snapshot() -> anyhow::Result<()> {
    // A snapshot every 20 entries, and the log purged up to each but its last 20.
    let mut group = Group::with_snapshots(3, 20, eddy_storage::DEFAULT_SNAPSHOT_BYTES).await?;
    let (leader, store) = group.leader(None).await?;
    store.create_topic("events", TopicConfig::with_partitions(2))?;
    let mut acked = vec![Vec::new(), Vec::new()];
    write(&store, 0..30, &mut acked).await?;
    let behind = (1..=3).find(|id| *id != leader).expect("a follower");
    group.stop(behind).await?;

    // While it is away each write is an entry: the leader snapshots its store and purges
    // the entries the node that went would need.
    write(&store, 30..200, &mut acked).await?;
    store.create_topic("later", TopicConfig::with_partitions(1))?;
    store
        .append("later", 0, vec![Record::unkeyed("made while away", 7)])
        .await?;
    let status = group.replica(leader).status().clone();
    // The log keeps at most the 20 entries before the last snapshot, and the 20 since. (The
    // leader's snapshots trail its writes: once none is due, the node that comes back gets
    // one snapshot, where it could get a second one taken while it catches up from the first.)
    await_extent(&status, |e| {
        e.snapshot
            .is_some_and(|s| e.last.is_some_and(|last| last < s + 20))
            && e.purged.is_some()
            && e.entries() <= 45
    })
    .await?;

    // It comes back behind the purged entries: it installs the leader's snapshot, then
    // follows the log, and holds exactly what the leader does, the topic made without it too.
    group.restart(behind).await?;
    assert_eq!(
        group.contents(behind, leader, "events", &acked).await?,
        acked
    );
    let later = vec![vec!["made while away".to_string()]];
    assert_eq!(
        group.contents(behind, leader, "later", &later).await?,
        later
    );
    let counts = group.replica(behind).status().counts();
    assert_eq!(counts.snapshots_installed, 1, "{counts:?}");
    let counts = group.replica(leader).status().counts();
    assert!(counts.snapshots_taken >= 5, "{counts:?}");

    // It keeps what it installed across a restart, and leads on from it when the leader goes.
    group.stop(behind).await?;
    group.restart(behind).await?;
    assert_eq!(
        group.contents(behind, leader, "events", &acked).await?,
        acked
    );
    store.close()?;
    drop(store);
    group.stop(leader).await?;
    let (next, store) = group.leader(Some(leader)).await?;
    assert_eq!(read_all(&store, "events")?, acked);
    write(&store, 200..260, &mut acked).await?;
    assert_eq!(read_all(&store, "events")?, acked);
    group.restart(leader).await?;
    assert_eq!(group.contents(leader, next, "events", &acked).await?, acked);
    store.close()?;
    for id in 1..=3 {
        group.stop(id).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_of_few_large_entries_is_snapshotted_by_its_bytes() -> anyhow::Result<()> {
    // Far more entries than written between snapshots, but 256 KiB of them.
    let mut group = Group::with_snapshots(3, 1_000_000, 256 << 10).await?;
    let (leader, store) = group.leader(None).await?;
    store.create_topic("events", TopicConfig::with_partitions(1))?;
    let status = group.replica(leader).status().clone();
    for i in 0..12 {
        let value = format!("{i}{}", "x".repeat(64 << 10));
        store
            .append("events", 0, vec![Record::unkeyed(value, i64::from(i))])
            .await?;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while status.counts().snapshots_taken == 0 {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no snapshot after 768 KiB of entries: {:?}",
            status.log_extent()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(status.log_extent().snapshot.is_some());
    store.close()?;
    for id in 1..=3 {
        group.stop(id).await?;
    }
    Ok(())
}

/// Idempotent producers that each keep one batch in flight, so the leader's writer proposes
/// group commits before the earlier ones are answered.
const PRODUCERS: i64 = 24;

/// Producer `producer`'s batch of sequence `sequence`: one record naming both.
fn producer_batch(producer: i64, sequence: i32) -> anyhow::Result<EncodedBatch> {
    let value = format!("p{producer}-{sequence}");
    let mut batch =
        EncodedBatch::encode(&[Record::unkeyed(value, 1_000)]).map_err(anyhow::Error::msg)?;
    batch.set_producer(5_000 + producer, 0, sequence);
    Ok(batch)
}

/// Sends producer `producer`'s batches `sequences` one after another, every fifth one twice at
/// once (as a client retries a request it gave up on), until one is refused. It returns each
/// acknowledged batch's value and offset, and the refusal if there was one.
async fn produce(
    store: Store,
    producer: i64,
    sequences: std::ops::Range<i32>,
) -> anyhow::Result<(Vec<(String, i64)>, Option<StorageError>)> {
    let partition = (producer % 2) as u32;
    let mut acked = Vec::new();
    for sequence in sequences {
        let batch = producer_batch(producer, sequence)?;
        let written: Result<AppendResult, StorageError> = if sequence % 5 == 0 {
            let (first, again) = tokio::join!(
                store.append_encoded("events", partition, batch.clone()),
                store.append_encoded("events", partition, batch),
            );
            match (first, again) {
                (Ok(first), Ok(again)) => {
                    anyhow::ensure!(
                        first.base_offset == again.base_offset,
                        "a retry of p{producer}-{sequence} was written again at {} (first at {})",
                        again.base_offset,
                        first.base_offset
                    );
                    Ok(first)
                }
                (Err(e), _) | (_, Err(e)) => Err(e),
            }
        } else {
            store.append_encoded("events", partition, batch).await
        };
        match written {
            Ok(written) => acked.push((format!("p{producer}-{sequence}"), written.base_offset)),
            Err(e) => return Ok((acked, Some(e))),
        }
    }
    Ok((acked, None))
}

/// Checks that `log` (a partition's values in offset order) holds each acknowledged value at
/// its offset, no value twice, and each producer's values in its order.
fn check_log(log: &[Vec<String>], acked: &[(String, i64)]) -> anyhow::Result<()> {
    for values in log {
        let mut seen = std::collections::HashSet::new();
        let mut last: BTreeMap<&str, i32> = BTreeMap::new();
        for value in values {
            anyhow::ensure!(seen.insert(value), "{value} is in the log twice");
            let (producer, sequence) = value.split_once('-').unwrap_or((value, "0"));
            let sequence: i32 = sequence.parse()?;
            if let Some(before) = last.insert(producer, sequence) {
                anyhow::ensure!(before < sequence, "{value} comes after sequence {before}");
            }
        }
    }
    for (value, offset) in acked {
        let partition = value[1..]
            .split_once('-')
            .and_then(|(p, _)| p.parse::<i64>().ok())
            .map_or(0, |p| (p % 2) as usize);
        anyhow::ensure!(
            log[partition].get(*offset as usize) == Some(value),
            "{value}, acknowledged at {offset}, is not there"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaders_pipelined_group_commits_keep_every_producers_order_through_a_failover()
-> anyhow::Result<()> {
    let mut group = Group::start(3).await?;
    let (leader, store) = group.leader(None).await?;
    store.create_topic("events", TopicConfig::with_partitions(2))?;

    // Without faults: every batch is acknowledged once, at its place, retries included.
    let tasks: Vec<_> = (0..PRODUCERS)
        .map(|p| tokio::spawn(produce(store.clone(), p, 0..30)))
        .collect();
    let mut acked = Vec::new();
    for task in tasks {
        let (written, refused) = task.await??;
        assert!(refused.is_none(), "refused without a fault: {refused:?}");
        acked.extend(written);
    }
    assert_eq!(acked.len(), (PRODUCERS * 30) as usize);
    let log = read_all(&store, "events")?;
    assert_eq!(log.iter().map(Vec::len).sum::<usize>(), acked.len());
    check_log(&log, &acked)?;

    // The leader goes while groups are in flight: what it acknowledged is on the new leader,
    // and what it had not is refused, never written twice.
    let tasks: Vec<_> = (0..PRODUCERS)
        .map(|p| tokio::spawn(produce(store.clone(), p, 30..100_000)))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    group.stop(leader).await?;
    for task in tasks {
        let (written, refused) = task.await??;
        assert!(
            matches!(
                refused,
                Some(StorageError::NotLeader { .. } | StorageError::Closed)
            ),
            "the writes went on without their leader: {refused:?}"
        );
        acked.extend(written);
    }
    // A later write is refused at once: the store's term is over.
    match store
        .append("events", 0, vec![Record::unkeyed("late", 1)])
        .await
    {
        Err(StorageError::NotLeader { .. } | StorageError::Closed) => {}
        other => panic!("a write after the leader went: {other:?}"),
    }
    store.close()?;
    let (_, store) = group.leader(Some(leader)).await?;
    let log = read_all(&store, "events")?;
    check_log(&log, &acked)?;
    store.close()?;
    for id in 1..=3 {
        group.stop(id).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_hangs_up_at_once_is_backed_off_from_not_hammered() -> anyhow::Result<()> {
    // Node 3's address is taken by something that accepts connections and closes them.
    let slammer = std::net::TcpListener::bind("127.0.0.1:0")?;
    let slammed = slammer.local_addr()?.to_string();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counting = accepted.clone();
    std::thread::spawn(move || {
        for incoming in slammer.incoming() {
            if incoming.is_ok() {
                counting.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    });
    let addresses = free_addresses(2);
    let peers: BTreeMap<u64, String> = [
        (1, addresses[0].clone()),
        (2, addresses[1].clone()),
        (3, slammed),
    ]
    .into_iter()
    .collect();
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
    let mut replicas = Vec::new();
    for id in 1..=2u64 {
        let options = ReplicaOptions {
            node_id: id,
            peers: peers.clone(),
            listen: None,
            sync: SyncPolicy::Os,
            lag: LAG,
            snapshot_entries: eddy_storage::DEFAULT_SNAPSHOT_ENTRIES,
            snapshot_bytes: eddy_storage::DEFAULT_SNAPSHOT_BYTES,
            tls: None,
        };
        replicas.push(Replica::start(dirs[(id - 1) as usize].path(), options).await?);
    }
    // Two of three elect a leader, which keeps trying node 3.
    let leader = replicas[0].await_leader(WAIT).await?;
    let before = accepted.load(std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let tries = accepted.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert!(
        tries <= 30,
        "leader {leader} connected to the peer that hangs up {tries} times in 3 s"
    );
    for replica in replicas {
        replica.shutdown().await?;
    }
    Ok(())
}
