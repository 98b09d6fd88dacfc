//! `eddy-bench log`: append records in batches to several partitions, then read them all back.
//! The baseline, measured in the same run, writes and reads the same bytes as a plain file.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use eddy_storage::{Record, Store, StoreOptions, SyncPolicy, TopicConfig};

use super::Throughput;

/// Settings of the log scenario.
#[derive(Debug, Clone)]
pub struct LogBenchConfig {
    /// Total records to append.
    pub records: u64,
    /// Value size of each record in bytes.
    pub record_size: usize,
    /// Partitions of the topic; one appender task each.
    pub partitions: u32,
    /// Records per appended batch.
    pub batch_size: usize,
    /// Sync policy of the store.
    pub sync: SyncPolicy,
    /// Where the store goes; a temporary directory when `None`.
    pub data_dir: Option<PathBuf>,
    /// Above 1: also append the same records to a replicated log of this many nodes (in this
    /// process, on loopback), through its leader with `acks=all` semantics.
    pub replicas: u32,
    /// How many entries each replica's Raft log grows by between snapshots of its store.
    pub snapshot_entries: u64,
}

/// What the log scenario measured.
#[derive(Debug, Clone)]
pub struct LogBenchReport {
    /// Appending through the store.
    pub append: Throughput,
    /// Reading and decoding every record back.
    pub read: Throughput,
    /// Writing the same bytes to a plain file, with the same sync behaviour.
    pub file_write: Throughput,
    /// Reading that file back.
    pub file_read: Throughput,
    /// Appending through the leader of a replicated log, when asked for.
    pub replicated_append: Option<Throughput>,
    /// Snapshots the replicas took of their stores meanwhile, all together.
    pub replicated_snapshots: u64,
}

/// Runs the scenario.
pub fn run(config: &LogBenchConfig) -> anyhow::Result<LogBenchReport> {
    let temp = tempfile::TempDir::new_in(std::env::temp_dir()).context("temporary directory")?;
    let dir = config
        .data_dir
        .clone()
        .unwrap_or_else(|| temp.path().join("store"));
    // Distinct payloads: slices of one random buffer, so the bench measures the log, not allocation.
    let payload = random_bytes(config.record_size * 1024 + config.record_size);
    let payload = Bytes::from(payload);

    let store = Store::open(
        &dir,
        StoreOptions {
            sync: config.sync,
            ..StoreOptions::default()
        },
    )?;
    store.create_topic("bench", TopicConfig::with_partitions(config.partitions))?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let append = append_all(&runtime, &store, config, &payload)?;
    if config.sync != SyncPolicy::Os {
        // The interval policy's last sync is part of the cost.
        store.close()?;
    }
    drop(store);
    let total = append.records;
    let (replicated_append, replicated_snapshots) = if config.replicas > 1 {
        let (append, snapshots) = replicated(&runtime, temp.path(), config, &payload)?;
        (Some(append), snapshots)
    } else {
        (None, 0)
    };

    let store = Store::open(
        &dir,
        StoreOptions {
            sync: config.sync,
            ..StoreOptions::default()
        },
    )?;
    let started = Instant::now();
    let (records, bytes) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..config.partitions)
            .map(|partition| {
                let store = &store;
                scope.spawn(move || -> anyhow::Result<(u64, u64)> {
                    let (mut offset, mut records, mut bytes) = (0i64, 0u64, 0u64);
                    let end = store.end_offset("bench", partition)?;
                    while offset < end {
                        let fetched = store.read_records("bench", partition, offset, 1 << 20)?;
                        for r in &fetched.records {
                            bytes += r.record.value.as_ref().map_or(0, |v| v.len()) as u64;
                        }
                        records += fetched.records.len() as u64;
                        offset = fetched.next_offset;
                    }
                    Ok((records, bytes))
                })
            })
            .collect();
        handles.into_iter().try_fold((0u64, 0u64), |acc, h| {
            let (r, b) = h
                .join()
                .map_err(|_| anyhow::anyhow!("reader thread panicked"))??;
            anyhow::Ok((acc.0 + r, acc.1 + b))
        })
    })?;
    let read = Throughput {
        records,
        bytes,
        elapsed: started.elapsed(),
        cpu: None,
        cluster_cpu: None,
    };
    anyhow::ensure!(records == total, "read {records} records, appended {total}");
    drop(store);

    let file = temp.path().join("baseline.bin");
    let (file_write, file_read) = file_baseline(&file, total, config, &payload)?;
    Ok(LogBenchReport {
        append,
        read,
        file_write,
        file_read,
        replicated_append,
        replicated_snapshots,
    })
}

/// Appends the records to a replicated log of `config.replicas` nodes on loopback, through the
/// leader, each append acknowledged once a majority has it and the leader applied it; also
/// how many snapshots the replicas took meanwhile.
fn replicated(
    runtime: &tokio::runtime::Runtime,
    dir: &Path,
    config: &LogBenchConfig,
    payload: &Bytes,
) -> anyhow::Result<(Throughput, u64)> {
    let listeners: Vec<std::net::TcpListener> = (0..config.replicas)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    let peers: std::collections::BTreeMap<u64, String> = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| Ok((i as u64 + 1, l.local_addr()?.to_string())))
        .collect::<anyhow::Result<_>>()?;
    drop(listeners);
    let replicas = runtime.block_on(async {
        let mut replicas = Vec::new();
        for id in peers.keys() {
            let options = eddy_storage::ReplicaOptions {
                node_id: *id,
                peers: peers.clone(),
                listen: None,
                sync: config.sync,
                lag: eddy_storage::DEFAULT_REPLICA_LAG,
                snapshot_entries: config.snapshot_entries,
                snapshot_bytes: eddy_storage::DEFAULT_SNAPSHOT_BYTES,
                tls: None,
            };
            replicas.push(
                eddy_storage::Replica::start(dir.join(format!("replica-{id}")), options).await?,
            );
        }
        anyhow::Ok(replicas)
    })?;
    let wait = std::time::Duration::from_secs(30);
    let leader = runtime.block_on(replicas[0].await_leader(wait))?;
    let leader = replicas
        .iter()
        .find(|r| r.id() == leader)
        .context("the leader is not among the replicas")?;
    let term = runtime.block_on(leader.await_leading(wait))?;
    let store = {
        let _entered = runtime.enter();
        Store::open_replica(leader, StoreOptions::default(), Some(term))?
    };
    store.create_topic("bench", TopicConfig::with_partitions(config.partitions))?;
    let append = append_all(runtime, &store, config, payload)?;
    store.close()?;
    drop(store);
    let snapshots = replicas
        .iter()
        .map(|r| r.status().counts().snapshots_taken)
        .sum();
    runtime.block_on(async {
        for replica in &replicas {
            replica.shutdown().await?;
        }
        anyhow::Ok(())
    })?;
    Ok((append, snapshots))
}

/// Appends `config.records` records to the topic `bench` of `store`, one task per partition.
fn append_all(
    runtime: &tokio::runtime::Runtime,
    store: &Store,
    config: &LogBenchConfig,
    payload: &Bytes,
) -> anyhow::Result<Throughput> {
    let per_partition = config.records / u64::from(config.partitions);
    let (started, cpu) = (Instant::now(), super::process_cpu_time());
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for partition in 0..config.partitions {
            let store = store.clone();
            let payload = payload.clone();
            let (batch_size, record_size) = (config.batch_size, config.record_size);
            tasks.push(tokio::spawn(async move {
                let mut written = 0u64;
                while written < per_partition {
                    let n = batch_size.min((per_partition - written) as usize);
                    let records: Vec<Record> = (0..n)
                        .map(|i| {
                            let at = ((written as usize + i) % 1024) * record_size;
                            Record::unkeyed(
                                payload.slice(at..at + record_size),
                                written as i64 + i as i64,
                            )
                        })
                        .collect();
                    store.append("bench", partition, records).await?;
                    written += n as u64;
                }
                anyhow::Ok(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        anyhow::Ok(())
    })?;
    let total = per_partition * u64::from(config.partitions);
    Ok(Throughput {
        records: total,
        bytes: total * config.record_size as u64,
        elapsed: started.elapsed(),
        // Every thread's: the appenders', the store's, and (replicated) all the nodes'.
        cpu: cpu.and_then(|cpu| Some(super::process_cpu_time()?.saturating_sub(cpu))),
        cluster_cpu: None,
    })
}

fn file_baseline(
    path: &Path,
    total: u64,
    config: &LogBenchConfig,
    payload: &Bytes,
) -> anyhow::Result<(Throughput, Throughput)> {
    let chunk = config.batch_size * config.record_size;
    let bytes_total = total * config.record_size as u64;
    let block = payload.slice(0..chunk.min(payload.len()));
    let started = Instant::now();
    let mut file = std::fs::File::create(path)?;
    let mut written = 0u64;
    while written < bytes_total {
        let n = (block.len() as u64).min(bytes_total - written) as usize;
        file.write_all(&block[..n])?;
        if config.sync == SyncPolicy::Always {
            file.sync_data()?;
        }
        written += n as u64;
    }
    if config.sync != SyncPolicy::Os {
        file.sync_data()?;
    }
    let write = Throughput {
        records: total,
        bytes: bytes_total,
        elapsed: started.elapsed(),
        cpu: None,
        cluster_cpu: None,
    };
    drop(file);
    let started = Instant::now();
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut read_bytes = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        read_bytes += n as u64;
    }
    let read = Throughput {
        records: total,
        bytes: read_bytes,
        elapsed: started.elapsed(),
        cpu: None,
        cluster_cpu: None,
    };
    Ok((write, read))
}

fn random_bytes(len: usize) -> Vec<u8> {
    // xorshift: cheap, deterministic, incompressible enough for a log benchmark.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
