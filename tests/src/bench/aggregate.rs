//! The `aggregate` scenario: a persistent query keeps a one-minute tumbling `COUNT` and `SUM`
//! per key over 10,000 keys, with the default record cache (updates to a key coalesced per
//! commit), timed from its creation until it has processed every input record.
//!
//! The baseline, measured in the same run, is DataFusion's batch `GROUP BY` over the same
//! records: read from NDJSON into Arrow, grouped by key and minute on one partition, and the
//! result written back as NDJSON. The run fails unless Eddy's final table (the last update of
//! each windowed key) holds exactly DataFusion's groups, counts and sums.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use datafusion::arrow::array::{Float64Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::json::{LineDelimitedWriter, ReaderBuilder};
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use eddy_storage::Record;

use crate::bench::{BenchEngine, Throughput};

/// What to run.
#[derive(Debug, Clone)]
pub struct AggregateBenchConfig {
    /// Input records.
    pub records: u64,
    /// Distinct keys.
    pub keys: u64,
    /// Minutes of event time the records span (one window each).
    pub minutes: u64,
    /// The most groups the query keeps in memory (`--state-cache-entries`).
    pub state_cache_entries: usize,
    /// The Kafka cluster the log runs on, or `None` for the embedded log.
    pub cluster: Option<eddy_storage::ClusterOptions>,
    /// Records keyed by their id rather than their user, so that grouping by user on a
    /// cluster repartitions them.
    pub keyed_by_id: bool,
}

/// Figures of one run.
#[derive(Debug, Clone, Copy)]
pub struct AggregateReport {
    /// The persistent aggregation, from its creation until all input is processed.
    pub eddy: Throughput,
    /// DataFusion's batch `GROUP BY` over the same records.
    pub datafusion: Throughput,
    /// Records the query wrote: one per key and window per commit that changed it.
    pub updates: u64,
    /// Groups (key and window) in the final table, the same on both sides.
    pub groups: u64,
    /// Peak memory while the query ran (not counting the bench reading its output back).
    pub peak_rss: crate::bench::PeakRss,
    /// Resident set size just before the query started (the store holding the input), in
    /// bytes, if known.
    pub rss_before: Option<u64>,
}

const START_MS: i64 = 1_700_000_000_000;

fn user(i: u64, keys: u64) -> String {
    // Spread consecutive records over the keys rather than cycling through them in order.
    format!("user_{:05}", (i * 7_919) % keys)
}

fn timestamp(i: u64, config: &AggregateBenchConfig) -> i64 {
    START_MS + (i as u128 * config.minutes as u128 * 60_000 / config.records.max(1) as u128) as i64
}

/// About 150 bytes of JSON with six fields, the event time among them.
fn record_json(i: u64, config: &AggregateBenchConfig) -> String {
    format!(
        r#"{{"id":{i},"user":"{}","amount":{}.{:02},"category":"category_{:02}","ts":{},"note":"{}"}}"#,
        user(i, config.keys),
        i % 250,
        i % 100,
        i % 20,
        timestamp(i, config),
        "x".repeat(30 + (i % 16) as usize)
    )
}

/// The query: a one-minute tumbling count and sum per user.
const QUERY: &str = "CREATE TABLE per_user AS SELECT user, COUNT(*) AS orders, SUM(amount) AS total FROM orders WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY user;";

/// A group of the final table: (user, window start) with its count and sum.
type Groups = HashMap<(String, i64), (i64, f64)>;

/// Runs the scenario once.
pub fn run(config: &AggregateBenchConfig) -> anyhow::Result<AggregateReport> {
    anyhow::ensure!(
        config.keys > 0 && config.minutes > 0,
        "keys and minutes must be positive"
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    crate::bench::reset_peak_rss();
    let EddyRun {
        elapsed,
        updates,
        groups: eddy_groups,
        bytes,
        rss_before,
        peak_rss,
    } = runtime.block_on(run_eddy(config))?;
    let (df_elapsed, df_groups) = runtime.block_on(run_datafusion(config))?;
    anyhow::ensure!(
        eddy_groups.len() == df_groups.len(),
        "the query's final table has {} groups but DataFusion found {}",
        eddy_groups.len(),
        df_groups.len()
    );
    for (group, (count, sum)) in &df_groups {
        let (eddy_count, eddy_sum) = eddy_groups
            .get(group)
            .with_context(|| format!("group {group:?} is missing from the query's table"))?;
        anyhow::ensure!(
            eddy_count == count && (eddy_sum - sum).abs() <= 1e-6 * sum.abs().max(1.0),
            "group {group:?}: the query has ({eddy_count}, {eddy_sum}), DataFusion ({count}, {sum})"
        );
    }
    let throughput = |time| Throughput::of(config.records, bytes, time);
    Ok(AggregateReport {
        eddy: throughput(elapsed),
        datafusion: throughput(df_elapsed),
        updates,
        groups: df_groups.len() as u64,
        peak_rss,
        rss_before,
    })
}

/// What the query side of a run measured.
struct EddyRun {
    elapsed: crate::bench::Timed,
    updates: u64,
    groups: Groups,
    bytes: u64,
    rss_before: Option<u64>,
    /// The peak once the query was done, before the bench read its output back.
    peak_rss: crate::bench::PeakRss,
}

async fn run_eddy(config: &AggregateBenchConfig) -> anyhow::Result<EddyRun> {
    let options = eddy_engine::EngineOptions {
        state_cache_entries: config.state_cache_entries,
        ..eddy_engine::EngineOptions::default()
    };
    let declaration = if config.keyed_by_id {
        "SET 'auto.offset.reset' = 'earliest';
         CREATE STREAM orders (order_id BIGINT KEY, id BIGINT, user STRING, amount DOUBLE, category STRING, ts BIGINT, note STRING)
             WITH (kafka_topic='orders', partitions=1, value_format='JSON');"
    } else {
        "SET 'auto.offset.reset' = 'earliest';
         CREATE STREAM orders (user STRING KEY, id BIGINT, amount DOUBLE, category STRING, ts BIGINT, note STRING)
             WITH (kafka_topic='orders', partitions=1, value_format='JSON');"
    };
    let bench = BenchEngine::open_on(
        declaration,
        options,
        config.cluster.clone(),
        &["orders", "PER_USER"],
    )
    .await?;
    let mut bytes = 0;
    // Appended in slices, so the inputs are never all in memory at once.
    for slice in (0..config.records).collect::<Vec<_>>().chunks(100_000) {
        let records = slice.iter().map(|&i| {
            let value = record_json(i, config);
            bytes += value.len() as u64;
            let key = if config.keyed_by_id {
                (i as i64).to_be_bytes().to_vec()
            } else {
                user(i, config.keys).into_bytes()
            };
            Record::keyed(key, value.into_bytes(), timestamp(i, config))
        });
        bench.append("orders", records).await?;
    }
    let rss_before = crate::bench::current_rss_bytes();
    let (elapsed, output, peak_rss) = bench.time_query_reading(QUERY, "PER_USER").await?;
    let updates = output.len() as u64;
    // The final table: the last update of each windowed key (the user, then the window start).
    let mut groups = Groups::new();
    for (key, value) in output {
        let at = key
            .len()
            .checked_sub(8)
            .context("a windowed key is too short")?;
        let start = i64::from_be_bytes(key[at..].try_into()?);
        let user = String::from_utf8(key[..at].to_vec())?;
        let value = value.context("an aggregate was deleted")?;
        let row: serde_json::Value = serde_json::from_slice(&value)?;
        let count = row["ORDERS"].as_i64().context("ORDERS is not a number")?;
        let sum = row["TOTAL"].as_f64().context("TOTAL is not a number")?;
        groups.insert((user, start), (count, sum));
    }
    Ok(EddyRun {
        elapsed,
        updates,
        groups,
        bytes,
        rss_before,
        peak_rss,
    })
}

async fn run_datafusion(
    config: &AggregateBenchConfig,
) -> anyhow::Result<(crate::bench::Timed, Groups)> {
    let ndjson = (0..config.records)
        .map(|i| record_json(i, config))
        .collect::<Vec<_>>()
        .join("\n");
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("user", DataType::Utf8, true),
        Field::new("amount", DataType::Float64, true),
        Field::new("category", DataType::Utf8, true),
        Field::new("ts", DataType::Int64, true),
        Field::new("note", DataType::Utf8, true),
    ]));
    // One partition: one core, as the query runs.
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));

    let started = crate::bench::Stopwatch::start();
    let batches = ReaderBuilder::new(schema.clone())
        .with_batch_size(8192)
        .build(ndjson.as_bytes())?
        .collect::<Result<Vec<_>, _>>()?;
    ctx.register_table(
        "orders",
        Arc::new(MemTable::try_new(schema, vec![batches])?),
    )?;
    let result = ctx
        .sql(
            "SELECT user, ts - ts % 60000 AS window_start, COUNT(*) AS orders, SUM(amount) AS total \
             FROM orders GROUP BY user, ts - ts % 60000",
        )
        .await?
        .collect()
        .await?;
    let mut output = Vec::new();
    let mut writer = LineDelimitedWriter::new(&mut output);
    for batch in &result {
        writer.write(batch)?;
    }
    writer.finish()?;
    let elapsed = started.stop();

    let mut groups = Groups::new();
    for batch in &result {
        let column = |i: usize| batch.column(i).as_ref();
        let users = column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .context("user is not a string")?;
        let starts = column(1)
            .as_any()
            .downcast_ref::<Int64Array>()
            .context("the window start is not a BIGINT")?;
        let counts = column(2)
            .as_any()
            .downcast_ref::<Int64Array>()
            .context("the count is not a BIGINT")?;
        let sums = column(3)
            .as_any()
            .downcast_ref::<Float64Array>()
            .context("the sum is not a DOUBLE")?;
        for r in 0..batch.num_rows() {
            groups.insert(
                (users.value(r).to_string(), starts.value(r)),
                (counts.value(r), sums.value(r)),
            );
        }
    }
    Ok((elapsed, groups))
}
