//! The stateless scenario over Confluent-framed PROTOBUF: the JSON records' values, written
//! by a client with its own `.proto` schema.
//!
//! No Arrow reader of Protobuf exists, so the baseline does what a hand-written batch job
//! would: `prost-reflect` (the library Eddy's codec uses) decodes each message, its fields go
//! straight into Arrow builders, DataFusion's physical expressions filter and project, and each
//! output row is encoded and framed again.

use std::sync::Arc;

use anyhow::Context as _;
use datafusion::arrow::array::{
    ArrayRef, AsArray, Float64Builder, Int64Builder, RecordBatch, StringBuilder,
};
use datafusion::arrow::datatypes::{Float64Type, Int64Type, Schema};
use prost::Message as _;
use prost_reflect::{DynamicMessage, MessageDescriptor, Value};

use super::{Plan, StatelessBenchConfig};
use crate::bench::{BenchEngine, Comparison, Stopwatch, Timed};

/// The client's schema of the PROTOBUF records: the JSON records' fields.
const ORDER_SCHEMA: &str = r#"syntax = "proto3";

message Order {
  int64 id = 1;
  string user = 2;
  string category = 3;
  double amount = 4;
  string note = 5;
}
"#;

/// The schema the baseline writes its output with.
const OUTPUT_SCHEMA: &str = r#"syntax = "proto3";

message BigOrders {
  string USER = 1;
  int64 ID = 2;
  string CATEGORY = 3;
  double DOUBLED = 4;
}
"#;

/// Rows per batch on the baseline's side, as with the other formats' readers.
const BATCH: usize = 8192;

/// The PROTOBUF variant: the same records, written by a client with [`ORDER_SCHEMA`].
pub(super) fn run(
    config: &StatelessBenchConfig,
    inputs: &[String],
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<Comparison> {
    let bench = runtime.block_on(BenchEngine::open("SET 'auto.offset.reset' = 'earliest';"))?;
    let registry = bench.schema_registry().clone();
    let id = runtime.block_on(registry.register("orders-value", &request(ORDER_SCHEMA)))?;
    let output_id =
        runtime.block_on(registry.register("baseline-value", &request(OUTPUT_SCHEMA)))?;
    let order = message(&registry, id)?;
    let mut framed = Vec::with_capacity(inputs.len());
    for json in inputs {
        let value: serde_json::Value = serde_json::from_str(json)?;
        let mut message = DynamicMessage::new(order.clone());
        message.set_field_by_name("id", Value::I64(value["id"].as_i64().unwrap_or(0)));
        for name in ["user", "category", "note"] {
            let text = value[name].as_str().unwrap_or_default().to_string();
            message.set_field_by_name(name, Value::String(text));
        }
        message.set_field_by_name(
            "amount",
            Value::F64(value["amount"].as_f64().unwrap_or(0.0)),
        );
        framed.push(frame(id, &message.encode_to_vec()));
    }
    let bytes: u64 = framed.iter().map(|b| b.len() as u64).sum();
    let baseline = run_datafusion(&framed, &order, &message(&registry, output_id)?, output_id)?;
    let eddy = runtime.block_on(super::time_framed(bench, "PROTOBUF", &framed))?;
    Comparison::of((config.records, bytes), eddy, baseline)
}

fn request(schema: &str) -> eddy_registry::SchemaRequest {
    eddy_registry::SchemaRequest {
        schema: schema.to_string(),
        schema_type: eddy_registry::SchemaType::Protobuf,
        references: Vec::new(),
    }
}

/// The first message of registered schema `id`.
fn message(registry: &eddy_registry::SchemaRegistry, id: u32) -> anyhow::Result<MessageDescriptor> {
    match registry.parsed_by_id(id)? {
        Some(eddy_registry::Parsed::Protobuf(schema)) => schema
            .messages()
            .into_iter()
            .next()
            .context("the schema has no message"),
        _ => anyhow::bail!("schema {id} is not a registered PROTOBUF schema"),
    }
}

/// Confluent's framing of the first message of schema `id`: the magic byte, the id, and the
/// one zero byte that stands for message indexes `[0]`.
fn frame(id: u32, body: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(body.len() + 6);
    bytes.push(0);
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.push(0);
    bytes.extend_from_slice(body);
    bytes
}

/// Builders of the input's columns, filled one message at a time.
struct Columns {
    id: Int64Builder,
    user: StringBuilder,
    category: StringBuilder,
    amount: Float64Builder,
    note: StringBuilder,
}

impl Columns {
    fn new() -> Self {
        Columns {
            id: Int64Builder::with_capacity(BATCH),
            user: StringBuilder::new(),
            category: StringBuilder::new(),
            amount: Float64Builder::with_capacity(BATCH),
            note: StringBuilder::new(),
        }
    }

    fn push(&mut self, message: &DynamicMessage) {
        let text = |name: &str| {
            message
                .get_field_by_name(name)
                .and_then(|v| v.as_str().map(str::to_string))
        };
        let id = message.get_field_by_name("id").and_then(|v| v.as_i64());
        self.id.append_option(id);
        self.user.append_option(text("user"));
        self.category.append_option(text("category"));
        let amount = message.get_field_by_name("amount").and_then(|v| v.as_f64());
        self.amount.append_option(amount);
        self.note.append_option(text("note"));
    }

    fn finish(&mut self, schema: &Arc<Schema>) -> anyhow::Result<RecordBatch> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.id.finish()),
            Arc::new(self.user.finish()),
            Arc::new(self.category.finish()),
            Arc::new(self.amount.finish()),
            Arc::new(self.note.finish()),
        ];
        Ok(RecordBatch::try_new(schema.clone(), columns)?)
    }
}

fn run_datafusion(
    framed: &[Vec<u8>],
    order: &MessageDescriptor,
    output: &MessageDescriptor,
    output_id: u32,
) -> anyhow::Result<(Timed, u64)> {
    let schema = super::input_schema();
    let plan = Plan::new(&schema)?;
    let started = Stopwatch::start();
    let mut columns = Columns::new();
    let mut written = 0u64;
    let mut process = |batch: RecordBatch| -> anyhow::Result<()> {
        let out = plan.apply(&batch)?;
        let (user, id, category, doubled) = (
            out.column(0).as_string::<i32>(),
            out.column(1).as_primitive::<Int64Type>(),
            out.column(2).as_string::<i32>(),
            out.column(3).as_primitive::<Float64Type>(),
        );
        for row in 0..out.num_rows() {
            let mut message = DynamicMessage::new(output.clone());
            message.set_field_by_name("USER", Value::String(user.value(row).to_string()));
            message.set_field_by_name("ID", Value::I64(id.value(row)));
            message.set_field_by_name("CATEGORY", Value::String(category.value(row).to_string()));
            message.set_field_by_name("DOUBLED", Value::F64(doubled.value(row)));
            std::hint::black_box(frame(output_id, &message.encode_to_vec()));
            written += 1;
        }
        Ok(())
    };
    let mut rows = 0;
    for bytes in framed {
        let body = bytes
            .get(6..)
            .context("a record is shorter than its framing")?;
        columns.push(&DynamicMessage::decode(order.clone(), body)?);
        rows += 1;
        if rows == BATCH {
            process(columns.finish(&schema)?)?;
            rows = 0;
        }
    }
    if rows > 0 {
        process(columns.finish(&schema)?)?;
    }
    Ok((started.stop(), written))
}
