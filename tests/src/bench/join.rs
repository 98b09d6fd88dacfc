//! The `join` scenario: a persistent query enriches JSON events with a table (a stream–table
//! join), timed from its creation until it has processed every event and table row.
//!
//! The baseline, measured in the same run, is DataFusion doing the same work as a batch job:
//! both inputs read from NDJSON into Arrow, joined by DataFusion's hash join on one partition,
//! and the result written back as NDJSON.

use std::sync::Arc;

use anyhow::Context;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::json::{LineDelimitedWriter, ReaderBuilder};
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use eddy_storage::Record;

use crate::bench::{BenchEngine, Comparison, Stopwatch, Timed};

/// What to run.
#[derive(Debug, Clone)]
pub struct JoinBenchConfig {
    /// Events in the stream.
    pub events: u64,
    /// Rows in the table.
    pub rows: u64,
    /// The most entries of join state the query keeps in memory (the server's
    /// `--state-cache-entries`).
    pub state_cache_entries: usize,
    /// The Kafka cluster the log runs on, or `None` for the embedded log.
    pub cluster: Option<eddy_storage::ClusterOptions>,
    /// The joined events are counted and summed per region (the table's, not the join
    /// key), instead of written out one by one.
    pub by_region: bool,
}

fn user_key(i: u64) -> String {
    format!("user_{i:06}")
}

/// About 110 bytes of JSON per event.
fn event_json(i: u64, rows: u64) -> String {
    format!(
        r#"{{"id":{i},"user":"{}","amount":{}.{:02},"page":"/products/{:05}/reviews"}}"#,
        user_key(i % rows),
        i % 500,
        i % 100,
        i % 20_000
    )
}

/// About 70 bytes of JSON per table row.
fn row_json(i: u64) -> String {
    format!(
        r#"{{"name":"customer number {i}","region":"region_{:02}","tier":{}}}"#,
        i % 40,
        i % 4
    )
}

const QUERY: &str = "CREATE STREAM enriched AS SELECT e.user, e.id, e.amount, u.name, u.region FROM events e JOIN users u ON e.user = u.id;";

/// The joined events counted and summed per region: on a cluster, the joined rows go on to
/// their region's task through a repartition topic.
const BY_REGION: &str = "CREATE TABLE per_region AS SELECT u.region AS region, COUNT(*) AS n, SUM(e.amount) AS total FROM events e JOIN users u ON e.user = u.id GROUP BY u.region;";

/// Each region's count and sum of amounts.
type Regions = std::collections::BTreeMap<String, (i64, f64)>;

/// Runs the scenario once.
pub fn run(config: &JoinBenchConfig) -> anyhow::Result<Comparison> {
    anyhow::ensure!(config.rows > 0, "the table needs rows");
    let events: Vec<String> = (0..config.events)
        .map(|i| event_json(i, config.rows))
        .collect();
    let rows: Vec<String> = (0..config.rows).map(row_json).collect();
    let bytes: u64 = events.iter().map(|s| s.len() as u64).sum();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let bench = runtime.block_on(open_eddy(&events, &rows, config))?;
    if !config.by_region {
        let eddy = runtime.block_on(bench.time_query(QUERY, "ENRICHED"))?;
        let datafusion = runtime.block_on(run_datafusion(&events, &rows))?;
        return Comparison::of((config.events, bytes), eddy, datafusion);
    }
    let (elapsed, output, _) =
        runtime.block_on(bench.time_query_reading(BY_REGION, "PER_REGION"))?;
    // The table's final rows: the last update of each region.
    let mut regions = Regions::new();
    for (key, value) in output {
        let value = value.context("a region's row was deleted")?;
        let row: serde_json::Value = serde_json::from_slice(&value)?;
        let n = row["N"].as_i64().context("N is not a number")?;
        let total = row["TOTAL"].as_f64().context("TOTAL is not a number")?;
        regions.insert(String::from_utf8(key)?, (n, total));
    }
    let (df_elapsed, expected) = runtime.block_on(regions_by_datafusion(&events, &rows))?;
    anyhow::ensure!(
        regions.len() == expected.len(),
        "the query has {} regions, DataFusion {}",
        regions.len(),
        expected.len()
    );
    for (region, (n, total)) in &expected {
        let (got_n, got_total) = regions
            .get(region)
            .with_context(|| format!("region {region} is missing from the query's table"))?;
        anyhow::ensure!(
            got_n == n && (got_total - total).abs() <= 1e-6 * total.abs().max(1.0),
            "region {region}: the query has ({got_n}, {got_total}), DataFusion ({n}, {total})"
        );
    }
    let groups = expected.len() as u64;
    Comparison::of(
        (config.events, bytes),
        (elapsed, groups),
        (df_elapsed, groups),
    )
}

/// An engine holding the table's rows and the events, on the embedded log or the cluster.
async fn open_eddy(
    events: &[String],
    rows: &[String],
    config: &JoinBenchConfig,
) -> anyhow::Result<BenchEngine> {
    let table_rows = config.rows;
    let options = eddy_engine::EngineOptions {
        state_cache_entries: config.state_cache_entries,
        ..eddy_engine::EngineOptions::default()
    };
    let bench = BenchEngine::open_on(
        "SET 'auto.offset.reset' = 'earliest';
         CREATE STREAM events (k STRING KEY, id BIGINT, user STRING, amount DOUBLE, page STRING)
             WITH (kafka_topic='events', partitions=1, value_format='JSON');
         CREATE TABLE users (id STRING PRIMARY KEY, name STRING, region STRING, tier INT)
             WITH (kafka_topic='users', partitions=1, value_format='JSON');",
        options,
        config.cluster.clone(),
        &["events", "users", "ENRICHED", "PER_REGION"],
    )
    .await?;
    // The table's rows come first in time, as a table loaded before the events arrive. The
    // times are recent: a broker's retention deletes records older than a week.
    let base = eddy_storage::now_ms() - table_rows as i64 - 1;
    let users = rows.iter().enumerate().map(|(i, v)| {
        Record::keyed(
            user_key(i as u64).into_bytes(),
            v.clone().into_bytes(),
            base,
        )
    });
    bench.append("users", users).await?;
    let events = events.iter().enumerate().map(|(i, v)| {
        Record::keyed(
            format!("e{i}").into_bytes(),
            v.clone().into_bytes(),
            base + 1 + (i as u64 % table_rows) as i64,
        )
    });
    bench.append("events", events).await?;
    Ok(bench)
}

fn read_ndjson(
    lines: &str,
    schema: &SchemaRef,
) -> anyhow::Result<Vec<datafusion::arrow::array::RecordBatch>> {
    let reader = ReaderBuilder::new(schema.clone())
        .with_batch_size(8192)
        .build(lines.as_bytes())?;
    Ok(reader.collect::<Result<Vec<_>, _>>()?)
}

/// DataFusion's count and sum per region of the joined events, timed.
async fn regions_by_datafusion(
    events: &[String],
    rows: &[String],
) -> anyhow::Result<(Timed, Regions)> {
    use datafusion::arrow::array::{Array, Float64Array, Int64Array, StringArray};
    let (events_ndjson, rows_ndjson) = ndjson(events, rows);
    let started = Stopwatch::start();
    let ctx = datafusion_inputs(&events_ndjson, &rows_ndjson)?;
    let result = ctx
        .sql("SELECT u.region, COUNT(*), SUM(e.amount) FROM events e JOIN users u ON e.user = u.id GROUP BY u.region")
        .await?
        .collect()
        .await?;
    let elapsed = started.stop();
    let mut regions = Regions::new();
    for batch in &result {
        let column = |i: usize| batch.column(i).as_any();
        let names = column(0)
            .downcast_ref::<StringArray>()
            .context("region is not a string")?;
        let counts = column(1)
            .downcast_ref::<Int64Array>()
            .context("the count is not a BIGINT")?;
        let sums = column(2)
            .downcast_ref::<Float64Array>()
            .context("the sum is not a DOUBLE")?;
        for r in 0..batch.num_rows() {
            if names.is_valid(r) {
                regions.insert(names.value(r).to_string(), (counts.value(r), sums.value(r)));
            }
        }
    }
    Ok((elapsed, regions))
}

/// The events and the table's rows as NDJSON, the table's key in each line as the record
/// key would be.
fn ndjson(events: &[String], rows: &[String]) -> (String, String) {
    let rows_ndjson = rows
        .iter()
        .enumerate()
        .map(|(i, r)| format!(r#"{{"id":"{}",{}"#, user_key(i as u64), &r[1..]))
        .collect::<Vec<_>>()
        .join("\n");
    (events.join("\n"), rows_ndjson)
}

/// A one-partition DataFusion context (one core, as the query runs) with `events` and
/// `users` read from NDJSON.
fn datafusion_inputs(events_ndjson: &str, rows_ndjson: &str) -> anyhow::Result<SessionContext> {
    let event_schema: SchemaRef = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("user", DataType::Utf8, true),
        Field::new("amount", DataType::Float64, true),
        Field::new("page", DataType::Utf8, true),
    ]));
    let row_schema: SchemaRef = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("region", DataType::Utf8, true),
        Field::new("tier", DataType::Int32, true),
    ]));
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
    let event_batches = read_ndjson(events_ndjson, &event_schema)?;
    let row_batches = read_ndjson(rows_ndjson, &row_schema)?;
    ctx.register_table(
        "events",
        Arc::new(MemTable::try_new(event_schema, vec![event_batches])?),
    )?;
    ctx.register_table(
        "users",
        Arc::new(MemTable::try_new(row_schema, vec![row_batches])?),
    )?;
    Ok(ctx)
}

async fn run_datafusion(events: &[String], rows: &[String]) -> anyhow::Result<(Timed, u64)> {
    let (events_ndjson, rows_ndjson) = ndjson(events, rows);
    let started = Stopwatch::start();
    let ctx = datafusion_inputs(&events_ndjson, &rows_ndjson)?;
    let joined = ctx
        .sql("SELECT e.user, e.id, e.amount, u.name, u.region FROM events e JOIN users u ON e.user = u.id")
        .await?
        .collect()
        .await?;
    let mut output = Vec::with_capacity(events_ndjson.len());
    let mut writer = LineDelimitedWriter::new(&mut output);
    for batch in &joined {
        writer.write(batch)?;
    }
    writer.finish()?;
    let elapsed = started.stop();
    let lines = output.iter().filter(|b| **b == b'\n').count() as u64;
    Ok((elapsed, lines))
}
