//! The stateless scenario over Confluent-framed AVRO: the JSON records' values, written by a
//! client with its own schema.

use datafusion::arrow::array::RecordBatch;

use super::{Plan, StatelessBenchConfig};
use crate::bench::{BenchEngine, Comparison, Stopwatch, Timed};

/// The client's schema of the AVRO records: the JSON records' fields.
const ORDER_SCHEMA: &str = r#"{"type":"record","name":"Order","fields":[
    {"name":"id","type":"long"},{"name":"user","type":"string"},{"name":"category","type":"string"},
    {"name":"amount","type":"double"},{"name":"note","type":"string"}]}"#;

/// The AVRO variant: the same records, written by a client with [`ORDER_SCHEMA`].
pub(super) fn run(
    config: &StatelessBenchConfig,
    inputs: &[String],
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<Comparison> {
    let bench = runtime.block_on(BenchEngine::open("SET 'auto.offset.reset' = 'earliest';"))?;
    let request = eddy_registry::SchemaRequest {
        schema: ORDER_SCHEMA.to_string(),
        schema_type: eddy_registry::SchemaType::Avro,
        references: Vec::new(),
    };
    let id = runtime.block_on(bench.schema_registry().register("orders-value", &request))?;
    let schema = apache_avro::Schema::parse_str(ORDER_SCHEMA)?;
    let writer = apache_avro::writer::datum::GenericDatumWriter::builder(&schema).build()?;
    let mut framed = Vec::with_capacity(inputs.len());
    for json in inputs {
        let value: serde_json::Value = serde_json::from_str(json)?;
        let avro = apache_avro::types::Value::Record(vec![
            (
                "id".into(),
                apache_avro::types::Value::Long(value["id"].as_i64().unwrap_or(0)),
            ),
            ("user".into(), text(&value["user"])),
            ("category".into(), text(&value["category"])),
            (
                "amount".into(),
                apache_avro::types::Value::Double(value["amount"].as_f64().unwrap_or(0.0)),
            ),
            ("note".into(), text(&value["note"])),
        ]);
        let mut bytes = vec![0];
        bytes.extend_from_slice(&id.to_be_bytes());
        bytes.extend(writer.write_value_to_vec(avro)?);
        framed.push(bytes);
    }
    let bytes: u64 = framed.iter().map(|b| b.len() as u64).sum();
    let eddy = runtime.block_on(super::time_framed(bench, "AVRO", &framed))?;
    Comparison::of((config.records, bytes), eddy, run_datafusion(&framed, id)?)
}

fn text(value: &serde_json::Value) -> apache_avro::types::Value {
    apache_avro::types::Value::String(value.as_str().unwrap_or_default().to_string())
}

/// The baseline over the AVRO bytes: `arrow-avro` decodes the framed records (schema by id)
/// and encodes the output framed with an id, as Eddy's codec does.
fn run_datafusion(framed: &[Vec<u8>], id: u32) -> anyhow::Result<(Timed, u64)> {
    use arrow_avro::schema::SchemaStore;
    use arrow_avro::schema::{AvroSchema, Fingerprint, FingerprintAlgorithm, FingerprintStrategy};
    let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
    store.set(
        Fingerprint::Id(id),
        AvroSchema::new(ORDER_SCHEMA.to_string()),
    )?;
    let mut decoder = arrow_avro::reader::ReaderBuilder::new()
        .with_writer_schema_store(store)
        .with_batch_size(8192)
        .build_decoder()?;
    let schema = decoder.schema();
    let plan = Plan::new(&schema)?;
    let mut encoder = arrow_avro::writer::WriterBuilder::new(plan.output.as_ref().clone())
        .with_fingerprint_strategy(FingerprintStrategy::Id(id + 1))
        .build_encoder::<arrow_avro::writer::format::AvroSoeFormat>()?;
    let started = Stopwatch::start();
    let mut written = 0u64;
    let mut process = |batch: Option<RecordBatch>| -> anyhow::Result<()> {
        if let Some(batch) = batch {
            encoder.encode(&plan.apply(&batch)?)?;
            written += encoder.flush().iter().count() as u64;
        }
        Ok(())
    };
    for bytes in framed {
        if decoder.batch_is_full() {
            process(decoder.flush()?)?;
        }
        decoder.decode(bytes)?;
    }
    process(decoder.flush()?)?;
    let elapsed = started.stop();
    Ok((elapsed, written))
}
