//! `cdc`: rows changed in PostgreSQL read into Eddy's log by the change-data-capture connector,
//! beside `pg_recvlogical` reading the same changes from its own `pgoutput` slot, in the same
//! run. Each run makes both slots at the same point, commits the rows' inserts while neither
//! reads, then lets each catch up alone (the one going first alternates, so neither always finds
//! the WAL in the page cache): `pg_recvlogical` until the WAL's end (`--endpos`), writing the
//! raw stream to `/dev/null`, and the connector until the topic holds every row, each in
//! Debezium's envelope, committed to the store with its position. The server's own work
//! (decoding the WAL in the walsender) is in both.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use eddy_connect::postgres::{PostgresSource, PostgresSourceConfig};
use eddy_storage::{Store, StoreOptions};
use tokio::sync::watch;

use crate::bench::{Stopwatch, Throughput, Timed};
use crate::postgres::{PASSWORD, Postgres};

const TOPIC: &str = "bench.public.changes";
const PUBLICATION: &str = "eddy_bench";

/// What the scenario runs.
#[derive(Debug, Clone)]
pub struct CdcBenchConfig {
    /// Rows inserted per run.
    pub rows: u64,
    /// Rows per committed transaction.
    pub transaction_rows: u64,
    /// Bytes of text per row (beside its integer key).
    pub row_size: usize,
}

/// The figures of one run.
#[derive(Debug, Clone, Copy)]
pub struct CdcBenchResult {
    /// The connector reading the changes into Eddy's log.
    pub eddy: Throughput,
    /// `pg_recvlogical` reading them from its own slot (its CPU is its own process's).
    pub recvlogical: Throughput,
}

/// Runs the scenario `runs` times on one PostgreSQL server.
pub fn run(config: &CdcBenchConfig, runs: usize) -> anyhow::Result<Vec<CdcBenchResult>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let pg = Postgres::start()?;
    let recvlogical = pg.tool("pg_recvlogical");
    anyhow::ensure!(
        recvlogical.is_file(),
        "{} is missing",
        recvlogical.display()
    );
    runtime.block_on(async {
        let db = pg.connect().await?;
        db.batch_execute(&format!(
            "CREATE TABLE changes (id bigint PRIMARY KEY, body text NOT NULL);
             CREATE PUBLICATION {PUBLICATION} FOR TABLE changes;"
        ))
        .await?;
        anyhow::Ok(())
    })?;
    let mut results = Vec::with_capacity(runs);
    for run in 0..runs {
        let result = runtime.block_on(one_run(&pg, config, run))?;
        results.push(result);
    }
    Ok(results)
}

async fn one_run(
    pg: &Postgres,
    config: &CdcBenchConfig,
    run: usize,
) -> anyhow::Result<CdcBenchResult> {
    let db = pg.connect().await?;
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), StoreOptions::default())?;
    let eddy_slot = format!("eddy_bench_{run}");
    let recv_slot = format!("recv_bench_{run}");
    let source_config = PostgresSourceConfig::from_properties(&BTreeMap::from(
        [
            ("database.hostname", "127.0.0.1".to_string()),
            ("database.port", pg.port().to_string()),
            ("database.user", "postgres".into()),
            ("database.password", PASSWORD.into()),
            ("database.dbname", "postgres".into()),
            ("topic.prefix", "bench".into()),
            ("slot.name", eddy_slot.clone()),
            ("publication.name", PUBLICATION.into()),
            ("publication.autocreate.mode", "disabled".into()),
            ("snapshot.mode", "never".into()),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    ))?;
    let source = Arc::new(PostgresSource::new("bench", source_config, store.clone()));

    // Both slots, at the same point: the connector makes its own, and stops once it has
    // written where it starts.
    let (stop, stopped) = watch::channel(false);
    let running = tokio::spawn({
        let source = source.clone();
        async move { source.run(stopped).await }
    });
    wait_until(Duration::from_secs(60), || async {
        Ok(source.position()?.snapshot_done && slot_exists(&db, &eddy_slot).await?)
    })
    .await
    .context("the connector never made its slot")?;
    let _ = stop.send(true);
    running.await??;
    db.execute(
        "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
        &[&recv_slot],
    )
    .await?;

    // The changes, committed while neither reads.
    let first = run as u64 * config.rows;
    let mut id = first;
    while id < first + config.rows {
        let last = (id + config.transaction_rows).min(first + config.rows) - 1;
        db.batch_execute(&format!(
            "INSERT INTO changes SELECT g, repeat('x', {}) FROM generate_series({id}, {last}) g",
            config.row_size
        ))
        .await?;
        id = last + 1;
    }
    let end: String = db
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await?
        .get(0);
    let bytes = config.rows * (config.row_size as u64 + 8);

    let recv = || -> anyhow::Result<Timed> {
        let before = children_cpu();
        let started = Instant::now();
        let status = Command::new(pg.tool("pg_recvlogical"))
            .env("PGPASSWORD", PASSWORD)
            .args(["-h", "127.0.0.1", "-p", &pg.port().to_string()])
            .args(["-U", "postgres", "-d", "postgres", "--slot", &recv_slot])
            .args(["--start", "--no-loop", "-f", "/dev/null"])
            .arg(format!("--endpos={end}"))
            .args(["-o", "proto_version=1"])
            .args(["-o", &format!("publication_names={PUBLICATION}")])
            .status()?;
        let wall = started.elapsed();
        if !status.success() {
            bail!("pg_recvlogical failed: {status}");
        }
        Ok(Timed {
            wall,
            cpu: Some(children_cpu().saturating_sub(before)),
            cluster_cpu: None,
        })
    };
    let eddy = || async {
        let (stop, stopped) = watch::channel(false);
        let clock = Stopwatch::start();
        let running = tokio::spawn({
            let source = source.clone();
            async move { source.run(stopped).await }
        });
        let wanted = config.rows as i64;
        wait_until(Duration::from_secs(600), || async {
            Ok(store.last_stable_offset(TOPIC, 0).unwrap_or(0) >= wanted)
        })
        .await
        .context("the connector never wrote every row")?;
        let timed = clock.stop();
        let _ = stop.send(true);
        running.await??;
        anyhow::Ok(timed)
    };
    let (eddy_time, recv_time) = if run.is_multiple_of(2) {
        let e = eddy().await?;
        (e, recv()?)
    } else {
        let r = recv()?;
        (eddy().await?, r)
    };
    anyhow::ensure!(
        store.last_stable_offset(TOPIC, 0)? == config.rows as i64,
        "the connector wrote {} records for {} rows",
        store.last_stable_offset(TOPIC, 0)?,
        config.rows
    );
    for slot in [&eddy_slot, &recv_slot] {
        db.execute("SELECT pg_drop_replication_slot($1)", &[slot])
            .await?;
    }
    store.close()?;
    Ok(CdcBenchResult {
        eddy: Throughput::of(config.rows, bytes, eddy_time),
        recvlogical: Throughput::of(config.rows, bytes, recv_time),
    })
}

async fn slot_exists(db: &tokio_postgres::Client, slot: &str) -> anyhow::Result<bool> {
    Ok(!db
        .query(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?
        .is_empty())
}

async fn wait_until<F, Fut>(limit: Duration, mut done: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + limit;
    while !done().await? {
        anyhow::ensure!(Instant::now() < deadline, "timed out after {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// CPU time of this process's waited-for children so far.
fn children_cpu() -> Duration {
    // SAFETY: `usage` is a valid, writable rusage for the call.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let status = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    if status != 0 {
        return Duration::ZERO;
    }
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}
