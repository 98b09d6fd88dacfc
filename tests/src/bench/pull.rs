//! `pull`: key lookups over HTTP (`POST /query-stream`, `SELECT * FROM users WHERE id = ?`) on a
//! table of many keys, from concurrent clients, against a server in this process. The baseline,
//! measured in the same run with the same clients, is `GET /healthcheck`: the HTTP round trip
//! with no query, so the ratio is what the SQL path costs on top of HTTP.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use eddy_engine::Session;
use eddy_storage::Record;

use crate::bench::{HttpBench, quantile};

/// What the scenario runs.
#[derive(Debug, Clone)]
pub struct PullBenchConfig {
    /// Keys in the table.
    pub keys: u64,
    /// Concurrent clients, each with one request in flight.
    pub clients: usize,
    /// How long each measured phase runs.
    pub seconds: u64,
}

/// One measured phase.
#[derive(Debug, Clone)]
pub struct LatencyFigures {
    /// Requests completed per second.
    pub per_sec: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th-percentile latency.
    pub p99: Duration,
    /// Requests answered with an unexpected body or status.
    pub errors: u64,
}

impl std::fmt::Display for LatencyFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {}",
            self.per_sec,
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3,
            self.errors
        )
    }
}

/// The figures of one run.
#[derive(Debug, Clone)]
pub struct PullBenchResult {
    /// How long the first pull query took, which materializes the table.
    pub materialize: Duration,
    /// One lookup through the engine alone (no HTTP), one at a time.
    pub in_process: Duration,
    /// Key lookups.
    pub pull: LatencyFigures,
    /// `GET /healthcheck`, the baseline.
    pub baseline: LatencyFigures,
}

/// Loads the table, starts the server, and measures both phases.
pub fn run(config: &PullBenchConfig) -> anyhow::Result<PullBenchResult> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_async(config))
}

async fn run_async(config: &PullBenchConfig) -> anyhow::Result<PullBenchResult> {
    let bench = HttpBench::start(
        "CREATE TABLE users (id BIGINT PRIMARY KEY, name STRING, score BIGINT)
         WITH (kafka_topic='users', partitions=4, key_format='KAFKA', value_format='JSON');",
    )
    .await?;
    let (engine, store, address) = (bench.engine.clone(), bench.store.clone(), bench.address);
    let mut batch = Vec::with_capacity(10_000);
    for id in 0..config.keys {
        batch.push(Record::keyed(
            id.to_be_bytes().to_vec(),
            format!(r#"{{"NAME":"user-{id}","SCORE":{}}}"#, id % 1000).into_bytes(),
            1_700_000_000_000 + id as i64,
        ));
        if batch.len() == batch.capacity() {
            store.produce("users", std::mem::take(&mut batch)).await?;
        }
    }
    if !batch.is_empty() {
        store.produce("users", batch).await?;
    }

    eddy_security::tls::install_default_provider();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(config.clients)
        .build()?;
    // Parsed once, as a long-lived client would; the load generator shares the server's cores.
    let base = Urls {
        query: reqwest::Url::parse(&format!("http://{address}/query-stream"))?,
        health: reqwest::Url::parse(&format!("http://{address}/healthcheck"))?,
    };

    let started = Instant::now();
    let first = lookup(&http, &base, 0).await?;
    anyhow::ensure!(first, "the first lookup found no row");
    let materialize = started.elapsed();

    // The engine alone, one query at a time, without HTTP.
    let in_process = {
        let session = Session::default();
        let started = Instant::now();
        let mut n = 0u64;
        while started.elapsed() < Duration::from_secs(config.seconds.min(3)) {
            let id = n.wrapping_mul(2_654_435_761) % config.keys;
            let mut query = engine
                .query(&session, &format!("SELECT * FROM users WHERE id = {id};"))
                .await?;
            while let Some(event) = query.events.recv().await {
                if !matches!(
                    event,
                    eddy_engine::query::transient::TransientEvent::Row { .. }
                ) {
                    break;
                }
            }
            n += 1;
        }
        Duration::from_secs_f64(started.elapsed().as_secs_f64() / n.max(1) as f64)
    };

    let keys = config.keys;
    let duration = Duration::from_secs(config.seconds);
    let pull = measure(config.clients, duration, {
        let (http, base) = (http.clone(), base.clone());
        move |n| {
            let (http, base) = (http.clone(), base.clone());
            // A spread of keys, different per request, without a random-number crate.
            let id = n.wrapping_mul(2_654_435_761) % keys;
            async move { lookup(&http, &base, id).await.unwrap_or(false) }
        }
    })
    .await;
    let baseline = measure(config.clients, duration, {
        let (http, base) = (http.clone(), base.clone());
        move |_| {
            let (http, base) = (http.clone(), base.clone());
            async move {
                match http.get(base.health.clone()).send().await {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                }
            }
        }
    })
    .await;
    bench.stop().await;
    Ok(PullBenchResult {
        materialize,
        in_process,
        pull,
        baseline,
    })
}

/// The server's endpoints the clients call.
#[derive(Debug, Clone)]
struct Urls {
    query: reqwest::Url,
    health: reqwest::Url,
}

/// One key lookup; whether it answered with one row.
async fn lookup(http: &reqwest::Client, base: &Urls, id: u64) -> anyhow::Result<bool> {
    let body = format!(r#"{{"sql": "SELECT * FROM users WHERE id = {id};"}}"#);
    let response = http
        .post(base.query.clone())
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await?;
    let ok = response.status().is_success();
    let text = response.bytes().await?;
    // The metadata line, then one row line.
    Ok(ok && text.iter().filter(|b| **b == b'\n').count() == 2)
}

/// Runs `clients` loops of `request` for `duration`; each call gets a distinct number.
async fn measure<F, Fut>(clients: usize, duration: Duration, request: F) -> LatencyFigures
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let counter = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (request, counter, errors) = (request.clone(), counter.clone(), errors.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let t = Instant::now();
                    if !request(n).await {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap_or_default());
    }
    let elapsed = started.elapsed();
    latencies.sort();
    LatencyFigures {
        per_sec: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: quantile(&latencies, 0.50),
        p99: quantile(&latencies, 0.99),
        errors: errors.load(Ordering::Relaxed),
    }
}
