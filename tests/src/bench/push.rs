//! `push-latency`: rows appended to a stream at a steady rate, and the time until each arrives
//! at a push-query client over HTTP (`SELECT * FROM events EMIT CHANGES` on `/query-stream`).
//! Each row carries the wall-clock time it was appended. The baseline, in the same run, is a
//! reader of the topic itself (long-polling the log as the query does), so the ratio is what
//! the query and HTTP add on top of the log's own append-to-read latency.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use eddy_storage::Record;

use crate::bench::{HttpBench, quantile};

/// What the scenario runs.
#[derive(Debug, Clone)]
pub struct PushBenchConfig {
    /// Rows per second appended.
    pub rate: u64,
    /// Seconds of appending.
    pub seconds: u64,
}

/// Latency percentiles of rows that arrived.
#[derive(Debug, Clone, Copy)]
pub struct Percentiles {
    /// Rows measured.
    pub rows: usize,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// The slowest row.
    pub max: Duration,
}

impl std::fmt::Display for Percentiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        write!(
            f,
            "{:>8} rows  p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms",
            self.rows,
            ms(self.p50),
            ms(self.p99),
            ms(self.max)
        )
    }
}

/// The figures of one run.
#[derive(Debug, Clone, Copy)]
pub struct PushBenchResult {
    /// Append to arrival at the push-query client.
    pub push: Percentiles,
    /// Append to arrival at a reader of the log.
    pub log: Percentiles,
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn percentiles(mut latencies: Vec<Duration>) -> Percentiles {
    latencies.sort();
    Percentiles {
        rows: latencies.len(),
        p50: quantile(&latencies, 0.5),
        p99: quantile(&latencies, 0.99),
        max: latencies.last().copied().unwrap_or_default(),
    }
}

/// Runs the scenario once.
pub fn run(config: &PushBenchConfig) -> anyhow::Result<PushBenchResult> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_async(config))
}

async fn run_async(config: &PushBenchConfig) -> anyhow::Result<PushBenchResult> {
    let bench = HttpBench::start(
        "CREATE STREAM events (id BIGINT KEY, sent BIGINT)
         WITH (kafka_topic='events', partitions=1, value_format='JSON');",
    )
    .await?;
    let (store, address) = (bench.store.clone(), bench.address);
    let total = config.rate * config.seconds;

    // The push-query client: reads lines as they come and times each row.
    eddy_security::tls::install_default_provider();
    let mut response = reqwest::Client::new()
        .post(format!("http://{address}/query-stream"))
        .header("Content-Type", "application/json")
        .body(r#"{"sql": "SELECT * FROM events EMIT CHANGES;"}"#)
        .send()
        .await?;
    anyhow::ensure!(response.status().is_success(), "the push query was refused");
    let push = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(total as usize);
        let mut buffer = Vec::new();
        let mut header = true;
        while let Ok(Some(chunk)) = response.chunk().await {
            let arrived = now_micros();
            buffer.extend_from_slice(&chunk);
            while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                if std::mem::take(&mut header) {
                    continue;
                }
                // A row is `[id, sent]`.
                if let Ok(serde_json::Value::Array(row)) = serde_json::from_slice(&line)
                    && let Some(sent) = row.get(1).and_then(|v| v.as_i64())
                {
                    latencies.push(Duration::from_micros((arrived - sent).max(0) as u64));
                }
            }
            if latencies.len() as u64 >= total {
                break;
            }
        }
        latencies
    });

    // The baseline: a reader of the log.
    let reader_store = store.clone();
    let log = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(total as usize);
        let mut offset = reader_store.end_offset("events", 0).unwrap_or(0);
        while (latencies.len() as u64) < total {
            let _ = reader_store
                .wait_for_data("events", 0, offset, Duration::from_secs(5))
                .await;
            let Ok(fetched) = reader_store.read_records("events", 0, offset, 1 << 20) else {
                break;
            };
            let arrived = now_micros();
            if fetched.next_offset == offset {
                break;
            }
            for r in &fetched.records {
                if let Some(sent) = r
                    .record
                    .value
                    .as_ref()
                    .and_then(|v| serde_json::from_slice::<serde_json::Value>(v).ok())
                    .and_then(|v| v["SENT"].as_i64())
                {
                    latencies.push(Duration::from_micros((arrived - sent).max(0) as u64));
                }
            }
            offset = fetched.next_offset;
        }
        latencies
    });

    // Let the push query start reading before the first row.
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Rows go in small batches every millisecond, as a steady producer's would.
    let per_tick = (config.rate / 1000).max(1);
    let started = Instant::now();
    let mut id = 0u64;
    while id < total {
        let tick = started + Duration::from_micros(id * 1_000_000 / config.rate);
        tokio::time::sleep_until(tick.into()).await;
        let sent = now_micros();
        let records: Vec<Record> = (0..per_tick.min(total - id))
            .map(|i| {
                Record::keyed(
                    (id + i).to_be_bytes().to_vec(),
                    format!(r#"{{"SENT":{sent}}}"#).into_bytes(),
                    sent / 1000,
                )
            })
            .collect();
        id += records.len() as u64;
        store.produce("events", records).await?;
    }
    let push = tokio::time::timeout(Duration::from_secs(30), push)
        .await
        .context("the push query did not deliver every row in 30 s")??;
    let log = tokio::time::timeout(Duration::from_secs(30), log)
        .await
        .context("the log reader did not see every row in 30 s")??;
    bench.stop().await;
    Ok(PushBenchResult {
        push: percentiles(push),
        log: percentiles(log),
    })
}
