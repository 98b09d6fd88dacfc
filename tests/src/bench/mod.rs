//! Benchmark scenarios and what they share: timing, throughput and memory figures.

pub mod aggregate;
pub mod cdc;
pub mod flink;
pub mod join;
pub mod kafka;
mod kafka_transactions;
pub mod log;
pub mod nexmark;
pub mod nexmark_load;
pub mod pull;
pub mod push;
pub mod stateless;

use std::time::Duration;

/// A field of this process's `/proc/self/status` given in kB, in bytes, if known.
fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Peak resident set size of this process in bytes (Linux `VmHWM`), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    status_bytes("VmHWM:")
}

/// Resident set size of this process in bytes (Linux `VmRSS`), if known.
pub fn current_rss_bytes() -> Option<u64> {
    status_bytes("VmRSS:")
}

/// Samples this process's anonymous resident memory (Linux `RssAnon`: the heap and stacks,
/// without the file pages the store maps, which the kernel can drop) until stopped, keeping
/// the peak.
pub struct AnonRssSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<Option<u64>>,
}

impl AnonRssSampler {
    /// Starts sampling every 20 ms.
    pub fn start() -> Self {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut peak = None;
            loop {
                peak = peak.max(status_bytes("RssAnon:"));
                if stopped.load(Ordering::Relaxed) {
                    return peak;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        AnonRssSampler { stop, handle }
    }

    /// Stops sampling; the peak seen, if known.
    pub fn peak(self) -> Option<u64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.join().ok().flatten()
    }
}

/// The peak memory of a run, in bytes where known.
#[derive(Debug, Clone, Copy, Default)]
pub struct PeakRss {
    /// Resident set size (Linux `VmHWM`), file pages mapped by the store included.
    pub resident: Option<u64>,
    /// Anonymous resident memory (`RssAnon`), sampled: what the process itself allocated.
    pub anonymous: Option<u64>,
}

/// `records` in batches of at most 2,000 records and about half a MiB of keys and values,
/// well under a topic's default `max.message.bytes` (1 MiB).
pub(crate) fn batches(
    records: impl IntoIterator<Item = eddy_storage::Record>,
) -> impl Iterator<Item = Vec<eddy_storage::Record>> {
    let mut records = records.into_iter();
    std::iter::from_fn(move || {
        let mut batch = Vec::with_capacity(2_000);
        let mut bytes = 0;
        while batch.len() < 2_000 && bytes < 512 << 10 {
            let Some(record) = records.next() else { break };
            bytes += record.key.as_ref().map_or(0, |k| k.len())
                + record.value.as_ref().map_or(0, |v| v.len());
            batch.push(record);
        }
        (!batch.is_empty()).then_some(batch)
    })
}

/// Resets this process's peak resident set size to its current one (Linux `clear_refs`), so a
/// later [`peak_rss_bytes`] covers only what runs in between; a no-op where unsupported.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// CPU time this process has used so far, over all its threads (`CLOCK_PROCESS_CPUTIME_ID`,
/// to the nanosecond rather than `/proc`'s 10 ms ticks, which blur a half-second run), if known.
pub fn process_cpu_time() -> Option<Duration> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec for the duration of the call.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut now) };
    (status == 0).then(|| Duration::new(now.tv_sec as u64, now.tv_nsec as u32))
}

/// The process id of the Kafka broker a cluster scenario runs against, when it runs on this
/// machine (`--cluster-pid`): its CPU time is measured beside the bench's own.
pub static CLUSTER_PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// The CPU time (user and system) another process has used, from `/proc/<pid>/stat`.
pub fn other_process_cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may itself hold spaces, up to its ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf reads a constant of the system and has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (per_second > 0).then(|| Duration::from_secs_f64(ticks as f64 / per_second as f64))
}

fn cluster_cpu_time() -> Option<Duration> {
    match CLUSTER_PID.load(std::sync::atomic::Ordering::Relaxed) {
        0 => None,
        pid => other_process_cpu_time(pid),
    }
}

/// Wall-clock and CPU time of a measured phase.
#[derive(Debug, Clone, Copy)]
pub struct Timed {
    /// Wall-clock time.
    pub wall: Duration,
    /// CPU time of every thread of the process meanwhile, if known.
    pub cpu: Option<Duration>,
    /// CPU time the cluster's broker used meanwhile, when it is known (`CLUSTER_PID`).
    pub cluster_cpu: Option<Duration>,
}

/// Measures a phase's [`Timed`] from its start.
pub struct Stopwatch {
    started: std::time::Instant,
    cpu: Option<Duration>,
    cluster_cpu: Option<Duration>,
}

impl Stopwatch {
    /// Starts measuring.
    pub fn start() -> Self {
        Stopwatch {
            started: std::time::Instant::now(),
            cpu: process_cpu_time(),
            cluster_cpu: cluster_cpu_time(),
        }
    }

    /// The time since the start.
    pub fn stop(&self) -> Timed {
        let since = |before: Option<Duration>, after: Option<Duration>| {
            before
                .zip(after)
                .map(|(before, after)| after.saturating_sub(before))
        };
        Timed {
            wall: self.started.elapsed(),
            cpu: since(self.cpu, process_cpu_time()),
            cluster_cpu: since(self.cluster_cpu, cluster_cpu_time()),
        }
    }
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
    /// CPU time every thread used meanwhile, if known.
    pub cpu: Option<Duration>,
    /// CPU time the cluster's broker used meanwhile, if known.
    pub cluster_cpu: Option<Duration>,
}

impl Throughput {
    /// A phase of `records` records and `bytes` bytes that took `time`.
    pub fn of(records: u64, bytes: u64, time: Timed) -> Self {
        Throughput {
            records,
            bytes,
            elapsed: time.wall,
            cpu: time.cpu,
            cluster_cpu: time.cluster_cpu,
        }
    }

    /// Records per second of CPU time, over every thread: the rate per core busy.
    pub fn records_per_cpu_sec(&self) -> Option<f64> {
        self.cpu
            .filter(|c| !c.is_zero())
            .map(|c| self.records as f64 / c.as_secs_f64())
    }

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
        )?;
        if let (Some(cpu), Some(rate)) = (self.cpu, self.records_per_cpu_sec()) {
            write!(
                f,
                "; {:.2} CPU-s ({:.1} cores busy), {rate:.0} records per CPU-second",
                cpu.as_secs_f64(),
                cpu.as_secs_f64() / self.elapsed.as_secs_f64().max(1e-9)
            )?;
        }
        Ok(())
    }
}

/// The `q` quantile (0 to 1) of sorted durations; zero when there are none.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted
        .get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

/// An engine on a temporary store with its HTTP API served on a free local port, for the
/// scenarios measured over HTTP.
pub struct HttpBench {
    /// The engine.
    pub engine: std::sync::Arc<eddy_engine::Engine>,
    /// Its store.
    pub store: eddy_storage::Store,
    /// Where the HTTP API listens.
    pub address: std::net::SocketAddr,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

impl HttpBench {
    /// Opens the engine, runs `ddl`, and starts serving.
    pub async fn start(ddl: &str) -> anyhow::Result<HttpBench> {
        use anyhow::Context;
        let dir = tempfile::tempdir()?;
        let store = eddy_storage::Store::open(dir.path(), eddy_storage::StoreOptions::default())?;
        let engine = std::sync::Arc::new(eddy_engine::Engine::open(store.clone()).await?);
        engine
            .execute(&mut eddy_engine::Session::default(), ddl)
            .await
            .with_context(|| format!("running {ddl}"))?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let router = eddy_server::http::router(
            eddy_server::http::AppState::new(engine.clone())?,
            eddy_server::http::BodyLimits::new(1 << 20),
            eddy_server::http::BrowserPolicy::new(address, &[], &[]),
        );
        let connections = eddy_server::connections::ConnectionLimit::new("http", 1024);
        let server = tokio::spawn(eddy_server::http::serve(
            listener,
            router,
            connections,
            None,
        ));
        Ok(HttpBench {
            engine,
            store,
            address,
            server,
            _dir: dir,
        })
    }

    /// Stops serving and stops the engine's queries.
    pub async fn stop(self) {
        self.server.abort();
        self.engine.shutdown().await;
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
    fn another_process_cpu_time_is_read_from_proc() {
        // This process's own figure, read the way a broker's is.
        let own = other_process_cpu_time(std::process::id());
        assert!(own.is_some());
    }

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
            cpu: Some(Duration::from_secs(4)),
            cluster_cpu: None,
        };
        assert_eq!(t.records_per_cpu_sec(), Some(500.0));
        assert_eq!(t.records_per_sec(), 1_000.0);
        assert_eq!(t.mb_per_sec(), 2.0);
    }
}

/// Figures of one run of a query scenario: Eddy's persistent query against DataFusion doing the
/// same work as a batch job.
#[derive(Debug, Clone, Copy)]
pub struct Comparison {
    /// The persistent query, from its `CREATE ... AS SELECT` until all input is processed.
    pub eddy: Throughput,
    /// DataFusion on the same records as a batch job.
    pub datafusion: Throughput,
    /// Records each side wrote (the same, or the run fails).
    pub output_records: u64,
}

impl Comparison {
    /// The comparison of `records` input records (`bytes` of them) processed by Eddy in `eddy`
    /// and by DataFusion in `datafusion`, each with how many records it wrote.
    pub fn of(
        (records, bytes): (u64, u64),
        (eddy, eddy_output): (Timed, u64),
        (datafusion, datafusion_output): (Timed, u64),
    ) -> anyhow::Result<Self> {
        // Both sides must have done the same work.
        anyhow::ensure!(
            eddy_output == datafusion_output,
            "the query wrote {eddy_output} records but DataFusion {datafusion_output}"
        );
        let throughput = |time| Throughput::of(records, bytes, time);
        Ok(Comparison {
            eddy: throughput(eddy),
            datafusion: throughput(datafusion),
            output_records: eddy_output,
        })
    }
}

/// An engine on a fresh store in a temporary directory, for a query scenario.
pub struct BenchEngine {
    _dir: tempfile::TempDir,
    /// The store, to append input to.
    pub store: eddy_storage::Store,
    engine: eddy_engine::Engine,
    session: eddy_engine::Session,
}

/// Whether the query scenarios' stores read their files through mmap (`--store-mmap-reads`).
pub static STORE_MMAP_READS: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

impl BenchEngine {
    /// Opens the store and engine and runs `setup` (the sources' declarations).
    pub async fn open(setup: &str) -> anyhow::Result<Self> {
        Self::open_with(setup, eddy_engine::EngineOptions::default()).await
    }

    /// [`BenchEngine::open`] with the engine's options.
    pub async fn open_with(
        setup: &str,
        options: eddy_engine::EngineOptions,
    ) -> anyhow::Result<Self> {
        Self::open_on(setup, options, None, &[]).await
    }

    /// [`BenchEngine::open_with`] with the log on a Kafka cluster when `cluster` says so;
    /// `topics` left there by an earlier run are deleted first.
    pub async fn open_on(
        setup: &str,
        options: eddy_engine::EngineOptions,
        cluster: Option<eddy_storage::ClusterOptions>,
        topics: &[&str],
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let on_cluster = cluster.is_some();
        let store = eddy_storage::Store::open(
            dir.path(),
            eddy_storage::StoreOptions {
                cluster,
                sync: eddy_storage::SyncPolicy::Os,
                mmap_reads: STORE_MMAP_READS.load(std::sync::atomic::Ordering::Relaxed),
                ..eddy_storage::StoreOptions::default()
            },
        )?;
        if on_cluster {
            for topic in topics {
                if store.topic_exists(topic) {
                    store.delete_topic(topic)?;
                }
            }
        }
        let engine = eddy_engine::Engine::open_with(store.clone(), options).await?;
        let mut session = eddy_engine::Session::default();
        engine.execute(&mut session, setup).await?;
        Ok(BenchEngine {
            _dir: dir,
            store,
            engine,
            session,
        })
    }

    /// The engine's schema registry, for a client's schemas.
    pub fn schema_registry(&self) -> &std::sync::Arc<eddy_registry::SchemaRegistry> {
        self.engine.schema_registry()
    }

    /// Runs statements (declarations) outside any timing.
    pub async fn run(&self, sql: &str) -> anyhow::Result<()> {
        let mut session = self.session.clone();
        self.engine.execute(&mut session, sql).await?;
        Ok(())
    }

    /// Appends records to partition 0 of `topic` in batches that stay under a topic's default
    /// `max.message.bytes` (1 MiB).
    pub async fn append(
        &self,
        topic: &str,
        records: impl Iterator<Item = eddy_storage::Record>,
    ) -> anyhow::Result<()> {
        for batch in batches(records) {
            self.store.append(topic, 0, batch).await?;
        }
        Ok(())
    }

    /// Runs `query` until it has processed every input record; how long that took.
    async fn run_to_the_end(&mut self, query: &str) -> anyhow::Result<Timed> {
        let started = Stopwatch::start();
        self.engine.execute(&mut self.session, query).await?;
        if !self
            .engine
            .wait_until_processed(std::time::Duration::from_secs(600))
            .await
        {
            anyhow::bail!("the query did not finish within 10 minutes");
        }
        Ok(started.stop())
    }

    /// Times `query` from its creation until it has processed every input record; returns the
    /// time, every record it wrote to `sink` (its key and value) in order per partition, and
    /// the peak resident set size once the query was done, before its output was read back.
    pub async fn time_query_reading(
        mut self,
        query: &str,
        sink: &str,
    ) -> anyhow::Result<(Timed, Vec<(Vec<u8>, Option<Vec<u8>>)>, PeakRss)> {
        let sampler = AnonRssSampler::start();
        let elapsed = self.run_to_the_end(query).await?;
        let peak_rss = PeakRss {
            resident: peak_rss_bytes(),
            anonymous: sampler.peak(),
        };
        let mut output = Vec::new();
        for partition in 0..self.store.partition_count(sink)? {
            let end = self.store.end_offset(sink, partition)?;
            let mut at = self.store.log_start_offset(sink, partition)?;
            while at < end {
                let fetched = self.store.read_records(sink, partition, at, 1 << 20)?;
                if fetched.next_offset == at {
                    // A log on a cluster fetches ahead: what is not there yet is on its way.
                    let wait = std::time::Duration::from_secs(10);
                    anyhow::ensure!(
                        self.store.wait_for_data(sink, partition, at, wait).await?,
                        "reading {sink} made no progress"
                    );
                    continue;
                }
                at = fetched.next_offset;
                output.extend(fetched.records.into_iter().map(|r| {
                    (
                        r.record.key.map(|k| k.to_vec()).unwrap_or_default(),
                        r.record.value.map(|v| v.to_vec()),
                    )
                }));
            }
        }
        self.engine.shutdown().await;
        Ok((elapsed, output, peak_rss))
    }

    /// Times `query` from its creation until it has processed every input record; returns the
    /// time and how many records it wrote to partition 0 of `sink` (counted, since on a
    /// cluster transaction markers take offsets too).
    pub async fn time_query(mut self, query: &str, sink: &str) -> anyhow::Result<(Timed, u64)> {
        let elapsed = self.run_to_the_end(query).await?;
        let end = self.store.end_offset(sink, 0)?;
        let (mut at, mut output) = (self.store.log_start_offset(sink, 0)?, 0u64);
        while at < end {
            let fetched = self.store.read_records(sink, 0, at, 1 << 20)?;
            if fetched.next_offset == at {
                let wait = std::time::Duration::from_secs(10);
                anyhow::ensure!(
                    self.store.wait_for_data(sink, 0, at, wait).await?,
                    "reading {sink} made no progress"
                );
                continue;
            }
            at = fetched.next_offset;
            output += fetched.records.len() as u64;
        }
        self.engine.shutdown().await;
        Ok((elapsed, output))
    }
}
