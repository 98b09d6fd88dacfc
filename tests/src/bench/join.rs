//! The `join` scenario: a persistent query enriches JSON events with a table (a stream–table
//! join), timed from its creation until it has processed every event and table row.
//!
//! The baseline, measured in the same run, is DataFusion doing the same work as a batch job:
//! both inputs read from NDJSON into Arrow, joined by DataFusion's hash join on one partition,
//! and the result written back as NDJSON.

use std::sync::Arc;

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
    let eddy = runtime.block_on(run_eddy(&events, &rows, config))?;
    let datafusion = runtime.block_on(run_datafusion(&events, &rows))?;
    Comparison::of((config.events, bytes), eddy, datafusion)
}

async fn run_eddy(
    events: &[String],
    rows: &[String],
    config: &JoinBenchConfig,
) -> anyhow::Result<(Timed, u64)> {
    let table_rows = config.rows;
    let options = eddy_engine::EngineOptions {
        state_cache_entries: config.state_cache_entries,
        ..eddy_engine::EngineOptions::default()
    };
    let bench = BenchEngine::open_with(
        "SET 'auto.offset.reset' = 'earliest';
         CREATE STREAM events (k STRING KEY, id BIGINT, user STRING, amount DOUBLE, page STRING)
             WITH (kafka_topic='events', partitions=1, value_format='JSON');
         CREATE TABLE users (id STRING PRIMARY KEY, name STRING, region STRING, tier INT)
             WITH (kafka_topic='users', partitions=1, value_format='JSON');",
        options,
    )
    .await?;
    // The table's rows come first in time, as a table loaded before the events arrive.
    let users = rows
        .iter()
        .enumerate()
        .map(|(i, v)| Record::keyed(user_key(i as u64).into_bytes(), v.clone().into_bytes(), 0));
    bench.append("users", users).await?;
    let events = events.iter().enumerate().map(|(i, v)| {
        Record::keyed(
            format!("e{i}").into_bytes(),
            v.clone().into_bytes(),
            1 + (i as u64 % table_rows) as i64,
        )
    });
    bench.append("events", events).await?;
    bench.time_query(QUERY, "ENRICHED").await
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

async fn run_datafusion(events: &[String], rows: &[String]) -> anyhow::Result<(Timed, u64)> {
    let events_ndjson = events.join("\n");
    // The table's key is in each line, as the record key would be.
    let rows_ndjson = rows
        .iter()
        .enumerate()
        .map(|(i, r)| format!(r#"{{"id":"{}",{}"#, user_key(i as u64), &r[1..]))
        .collect::<Vec<_>>()
        .join("\n");
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
    // One partition: one core, as the query runs.
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));

    let started = Stopwatch::start();
    let event_batches = read_ndjson(&events_ndjson, &event_schema)?;
    let row_batches = read_ndjson(&rows_ndjson, &row_schema)?;
    ctx.register_table(
        "events",
        Arc::new(MemTable::try_new(event_schema, vec![event_batches])?),
    )?;
    ctx.register_table(
        "users",
        Arc::new(MemTable::try_new(row_schema, vec![row_batches])?),
    )?;
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
