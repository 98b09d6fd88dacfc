//! The `stateless` scenario: a persistent query filters and projects JSON (AVRO, PROTOBUF) records
//! from one stream into another, timed from its creation until it has processed every input
//! record.
//!
//! The baseline, measured in the same run, is DataFusion doing the same work as a batch job:
//! the same records read into Arrow (NDJSON with Arrow's JSON reader, or the same
//! Confluent-framed AVRO bytes with `arrow-avro`'s decoder), the same filter and projection
//! evaluated with DataFusion's physical expressions, and the result written back in the same
//! format.

use std::sync::Arc;

use anyhow::Context;
use datafusion::arrow::array::{BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::json::{LineDelimitedWriter, ReaderBuilder};
use datafusion::common::DFSchema;
use datafusion::prelude::{SessionContext, col, lit};
use eddy_storage::Record;

use crate::bench::{BenchEngine, Comparison, Stopwatch, Timed};

mod avro;
mod protobuf;

/// What to run.
#[derive(Debug, Clone)]
pub struct StatelessBenchConfig {
    /// Input records.
    pub records: u64,
    /// Their value format.
    pub format: ValueFormat,
}

/// The value format of the scenario's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ValueFormat {
    /// JSON objects.
    Json,
    /// Confluent-framed AVRO, written by a client with its own schema.
    Avro,
    /// Confluent-framed PROTOBUF, written by a client with its own schema.
    Protobuf,
}

/// About 200 bytes of JSON with five fields; roughly 60% pass the filter.
fn record_json(i: u64) -> String {
    format!(
        r#"{{"id":{i},"user":"user_{:05}","category":"category_{:02}","amount":{}.{:02},"note":"{}"}}"#,
        i % 50_000,
        i % 20,
        i % 250,
        i % 100,
        "x".repeat(80 + (i % 16) as usize)
    )
}

/// The query both sides run: `WHERE amount > 100`, projecting three columns and one expression.
pub(super) const QUERY: &str = "CREATE STREAM big_orders AS SELECT user, id, category, amount * 2 AS doubled FROM orders WHERE amount > 100;";

/// Runs the scenario once.
pub fn run(config: &StatelessBenchConfig) -> anyhow::Result<Comparison> {
    let inputs: Vec<String> = (0..config.records).map(record_json).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match config.format {
        ValueFormat::Json => {}
        ValueFormat::Avro => return avro::run(config, &inputs, &runtime),
        ValueFormat::Protobuf => return protobuf::run(config, &inputs, &runtime),
    }
    let bytes: u64 = inputs.iter().map(|s| s.len() as u64).sum();
    let eddy = runtime.block_on(run_eddy(&inputs))?;
    Comparison::of((config.records, bytes), eddy, run_datafusion(&inputs)?)
}

/// Declares the `orders` stream in `format` (its columns from the registered schema), appends
/// the `framed` records keyed by user and times the query.
async fn time_framed(
    bench: BenchEngine,
    format: &str,
    framed: &[Vec<u8>],
) -> anyhow::Result<(Timed, u64)> {
    bench
        .run(&format!(
            "CREATE STREAM orders WITH (kafka_topic='orders', partitions=1, value_format='{format}');"
        ))
        .await?;
    let records = framed
        .iter()
        .enumerate()
        .map(|(i, v)| Record::keyed(format!("user_{:05}", i % 2_000).into_bytes(), v.clone(), 0));
    bench.append("orders", records).await?;
    bench.time_query(QUERY, "BIG_ORDERS").await
}

async fn run_eddy(inputs: &[String]) -> anyhow::Result<(Timed, u64)> {
    let bench = BenchEngine::open(
        "SET 'auto.offset.reset' = 'earliest';
         CREATE STREAM orders (user STRING KEY, id BIGINT, category STRING, amount DOUBLE, note STRING)
             WITH (kafka_topic='orders', partitions=1, value_format='JSON');",
    )
    .await?;
    let records = inputs.iter().enumerate().map(|(i, v)| {
        Record::keyed(
            format!("user_{:05}", i % 2_000).into_bytes(),
            v.clone().into_bytes(),
            0,
        )
    });
    bench.append("orders", records).await?;
    bench.time_query(QUERY, "BIG_ORDERS").await
}

/// The filter and projections of [`QUERY`] as DataFusion's physical expressions over the
/// input's columns, and the output's schema.
pub(super) struct Plan {
    filter: Arc<dyn datafusion::physical_expr::PhysicalExpr>,
    projections: Vec<Arc<dyn datafusion::physical_expr::PhysicalExpr>>,
    pub(super) output: Arc<Schema>,
}

impl Plan {
    pub(super) fn new(schema: &Schema) -> anyhow::Result<Self> {
        let ctx = SessionContext::new();
        let df_schema = DFSchema::try_from(schema.clone())?;
        let filter = ctx.create_physical_expr(col("amount").gt(lit(100.0)), &df_schema)?;
        let projections = [
            col("user"),
            col("id"),
            col("category"),
            col("amount") * lit(2.0),
        ]
        .into_iter()
        .map(|e| ctx.create_physical_expr(e, &df_schema))
        .collect::<Result<Vec<_>, _>>()?;
        let output = Arc::new(Schema::new(vec![
            Field::new("USER", DataType::Utf8, true),
            Field::new("ID", DataType::Int64, true),
            Field::new("CATEGORY", DataType::Utf8, true),
            Field::new("DOUBLED", DataType::Float64, true),
        ]));
        Ok(Plan {
            filter,
            projections,
            output,
        })
    }

    /// The query's output rows of `batch`.
    pub(super) fn apply(&self, batch: &RecordBatch) -> anyhow::Result<RecordBatch> {
        let mask = self.filter.evaluate(batch)?.into_array(batch.num_rows())?;
        let mask = mask
            .as_any()
            .downcast_ref::<BooleanArray>()
            .context("the filter is not boolean")?;
        let kept = filter_record_batch(batch, mask)?;
        let columns = self
            .projections
            .iter()
            .map(|p| {
                p.evaluate(&kept)
                    .and_then(|v| v.into_array(kept.num_rows()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RecordBatch::try_new(self.output.clone(), columns)?)
    }
}

/// The input records' columns as the baselines read them.
pub(super) fn input_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("user", DataType::Utf8, true),
        Field::new("category", DataType::Utf8, true),
        Field::new("amount", DataType::Float64, true),
        Field::new("note", DataType::Utf8, true),
    ]))
}

fn run_datafusion(inputs: &[String]) -> anyhow::Result<(Timed, u64)> {
    let ndjson = inputs.join("\n");
    let schema = input_schema();
    let plan = Plan::new(&schema)?;
    let started = Stopwatch::start();
    let reader = ReaderBuilder::new(schema)
        .with_batch_size(8192)
        .build(ndjson.as_bytes())?;
    let mut output = Vec::with_capacity(ndjson.len() / 2);
    let mut writer = LineDelimitedWriter::new(&mut output);
    for batch in reader {
        writer.write(&plan.apply(&batch?)?)?;
    }
    writer.finish()?;
    let elapsed = started.stop();
    let lines = output.iter().filter(|b| **b == b'\n').count() as u64;
    Ok((elapsed, lines))
}
