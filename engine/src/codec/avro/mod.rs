//! The AVRO format: records in Confluent's wire format (a zero magic byte, the writer schema's
//! 4-byte registry id, then Avro's binary encoding), decoded straight into Arrow arrays and
//! encoded from them with `arrow-avro`.
//!
//! Each writer schema gets its own `arrow-avro` decoder, built once from the registry; the
//! arrays it decodes (shaped as the writer wrote them) are then made into the columns' types
//! with ksqlDB's rules ([`conform`]). A record that does not decode is reported and its row left
//! null, without stopping the others.
//!
//! `arrow-avro` decodes and encodes only records at the top level, so every schema is handed to
//! it as the one field of a wrapper record: Avro encodes a record as its fields one after the
//! other, so the wrapper's bytes are exactly the wrapped value's.

pub mod conform;
pub mod physical;
pub mod schema;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use arrow_avro::reader::{Decoder, ReaderBuilder};
use arrow_avro::schema::{
    AvroSchema, Fingerprint, FingerprintAlgorithm, FingerprintStrategy, SCHEMA_METADATA_KEY,
    SchemaStore,
};
use arrow_avro::writer::format::AvroSoeFormat;
use arrow_avro::writer::{Encoder, WriterBuilder};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, new_null_array};
use datafusion::arrow::compute::{concat, interleave};
use datafusion::arrow::datatypes::{Field, FieldRef, Schema, SchemaRef};
use eddy_registry::{SchemaRegistry, SchemaType};
use eddy_sql::ast::SqlType;
use parking_lot::Mutex;

use super::Decoded;
use crate::error::{EngineError, Result};
use crate::format::FormatSpec;

/// The name of the wrapper record's one field.
const PAYLOAD: &str = "payload";

/// The most rows one `arrow-avro` decoder holds before it is flushed.
const DECODER_ROWS: usize = 8192;

/// What Confluent's deserializers say of a payload without the wire format's magic byte.
const UNKNOWN_MAGIC_BYTE: &str = "Unknown magic byte!";

/// `schema` (Avro JSON text) as the one field of a record, as `arrow-avro` wants it.
fn wrapper(schema: &str) -> String {
    format!(
        r#"{{"type":"record","name":"EddyAvroPayload","namespace":"io.eddy.wrapper","fields":[{{"name":"{PAYLOAD}","type":{schema}}}]}}"#
    )
}

/// A group's decoded columns and the rows (of the whole batch) they hold, in order.
type Part = (Vec<ArrayRef>, Vec<usize>);

/// A codec of the AVRO format for one set of columns.
pub struct AvroCodec {
    registry: Arc<SchemaRegistry>,
    /// The columns' names and types.
    columns: Vec<(String, SqlType)>,
    /// The columns as Arrow fields.
    fields: Vec<FieldRef>,
    wrapped: bool,
    /// The registered schema rows are written with (`KEY_SCHEMA_ID` / `VALUE_SCHEMA_ID`),
    /// instead of the one the columns generate.
    schema_id: Option<u32>,
    /// The name of the generated record schema, when not ksqlDB's default.
    full_name: Option<String>,
    /// A decoder per writer schema id, or why that schema cannot be read.
    writers: Mutex<HashMap<u32, std::result::Result<Decoder, String>>>,
    /// How rows are written, once the schema is known to be registered.
    writer: Mutex<Option<Writer>>,
}

/// How a codec writes rows.
enum Writer {
    /// With the schema the columns generate.
    Generated(Encoder),
    /// With a registered schema, the rows shaped to it first (see [`physical`]).
    Registered {
        encoder: Encoder,
        /// The Arrow field the schema is read as: what rows are shaped to.
        payload: FieldRef,
        schema: physical::Physical,
    },
}

impl fmt::Debug for AvroCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AvroCodec")
            .field("columns", &self.columns)
            .field("wrapped", &self.wrapped)
            .finish_non_exhaustive()
    }
}

impl AvroCodec {
    /// A codec for `fields` (with their column types) in the AVRO format `spec` describes,
    /// reading writer schemas from `registry`.
    pub fn new(
        registry: Arc<SchemaRegistry>,
        spec: &FormatSpec,
        columns: Vec<(String, SqlType)>,
        fields: Vec<FieldRef>,
        wrapped: bool,
    ) -> Self {
        AvroCodec {
            registry,
            columns,
            fields,
            wrapped,
            schema_id: spec.schema_id,
            full_name: spec.full_name.clone(),
            writers: Mutex::new(HashMap::new()),
            writer: Mutex::new(None),
        }
    }

    /// Decodes a batch of payloads; see [`super::RowCodec::decode`].
    pub fn decode(&self, payloads: &[Option<&[u8]>]) -> Decoded {
        let mut errors = Vec::new();
        let mut groups: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (row, payload) in payloads.iter().enumerate() {
            let Some(bytes) = payload else { continue };
            match bytes {
                [0, a, b, c, d, ..] => groups
                    .entry(u32::from_be_bytes([*a, *b, *c, *d]))
                    .or_default()
                    .push(row),
                _ => errors.push((row, UNKNOWN_MAGIC_BYTE.to_string())),
            }
        }
        let mut parts: Vec<Part> = Vec::with_capacity(groups.len());
        for (id, rows) in groups {
            match self.decode_group(id, &rows, payloads, &mut errors) {
                Ok(Some(part)) => parts.push(part),
                Ok(None) => {}
                Err(reason) => errors.extend(rows.into_iter().map(|r| (r, reason.clone()))),
            }
        }
        errors.sort_by_key(|(row, _)| *row);
        Decoded {
            columns: self.assemble(payloads.len(), &parts),
            errors,
        }
    }

    /// The rows of `payloads` written with schema `id`, decoded and conformed to the columns;
    /// `Err` when the schema cannot be read as the columns at all.
    fn decode_group(
        &self,
        id: u32,
        rows: &[usize],
        payloads: &[Option<&[u8]>],
        errors: &mut Vec<(usize, String)>,
    ) -> std::result::Result<Option<Part>, String> {
        let mut writers = self.writers.lock();
        let decoder = match writers.entry(id) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(self.writer_decoder(id)),
        };
        let decoder = decoder.as_mut().map_err(|e| e.clone())?;
        let bytes = |row: usize| payloads[row].unwrap_or_default();
        let mut batches = Vec::new();
        let mut decoded_rows = Vec::with_capacity(rows.len());
        let all_fed = rows
            .iter()
            .all(|&row| feed(decoder, bytes(row), &mut batches).is_ok());
        if all_fed {
            decoded_rows.extend_from_slice(rows);
            flush(decoder, &mut batches)?;
        } else {
            // A record stopped part-way leaves the decoder's arrays uneven: start again, one
            // record at a time, so that only the bad ones are lost.
            batches.clear();
            *decoder = self.writer_decoder(id)?;
            for &row in rows {
                match feed(decoder, bytes(row), &mut batches)
                    .and_then(|()| flush(decoder, &mut batches))
                {
                    Ok(()) => decoded_rows.push(row),
                    Err(reason) => {
                        errors.push((row, reason));
                        *decoder = self.writer_decoder(id)?;
                    }
                }
            }
        }
        drop(writers);
        if decoded_rows.is_empty() {
            return Ok(None);
        }
        let payload_columns: Vec<&dyn Array> =
            batches.iter().map(|b| b.column(0).as_ref()).collect();
        let payload = concat(&payload_columns).map_err(|e| e.to_string())?;
        Ok(Some((self.conform(&payload)?, decoded_rows)))
    }

    /// A decoder for writer schema `id`, or why there can be none.
    fn writer_decoder(&self, id: u32) -> std::result::Result<Decoder, String> {
        let text = self
            .registry
            .schema_by_id(id)
            .ok_or_else(|| format!("Schema not found for id {id} in the schema registry"))?;
        if text.schema_type != SchemaType::Avro {
            return Err(format!(
                "Schema {id} is a {} schema, not an AVRO one",
                text.schema_type
            ));
        }
        let schema = self.self_contained(id, &text)?;
        let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
        store
            .set(Fingerprint::Id(id), AvroSchema::new(wrapper(&schema)))
            .map_err(|e| e.to_string())?;
        ReaderBuilder::new()
            .with_writer_schema_store(store)
            .with_batch_size(DECODER_ROWS)
            .build_decoder()
            .map_err(|e| format!("Cannot read schema {id}: {e}"))
    }

    /// Schema `id`'s text with the named types of the schemas it references written in, as
    /// the registry parsed it.
    fn self_contained(
        &self,
        id: u32,
        text: &eddy_registry::SchemaText,
    ) -> std::result::Result<String, String> {
        if text.references.is_empty() {
            return Ok(text.schema.clone());
        }
        match self.registry.parsed_by_id(id) {
            Ok(Some(eddy_registry::Parsed::Avro(schema))) => {
                serde_json::to_string(&schema).map_err(|e| e.to_string())
            }
            Ok(_) => Err(format!("Schema {id} is not an AVRO schema")),
            Err(e) => Err(format!("Schema {id} cannot be read: {e}")),
        }
    }

    /// The writer-shaped payload column as the columns.
    fn conform(&self, payload: &ArrayRef) -> std::result::Result<Vec<ArrayRef>, String> {
        if !self.wrapped
            && let [field] = self.fields.as_slice()
        {
            return Ok(vec![conform::conform(payload, field.data_type(), "")?]);
        }
        let Some(record) = payload.as_struct_opt() else {
            return Err(format!(
                "The value's schema is {}, not a record of the columns {}",
                payload.data_type(),
                self.columns
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        let matched = conform::match_fields(record.fields(), record.columns(), &self.fields, "")?;
        Ok(matched
            .into_iter()
            .zip(&self.fields)
            .map(|(m, f)| m.unwrap_or_else(|| new_null_array(f.data_type(), payload.len())))
            .collect())
    }

    /// The columns of all rows: each decoded group's rows in place, null elsewhere.
    fn assemble(&self, rows: usize, parts: &[Part]) -> Vec<ArrayRef> {
        // The usual batch: every row decoded with one schema, already in place.
        if let [(columns, part_rows)] = parts
            && part_rows.len() == rows
        {
            return columns.clone();
        }
        let nulls = parts.len();
        let mut indices = vec![(nulls, 0usize); rows];
        for (part, (_, part_rows)) in parts.iter().enumerate() {
            for (at, &row) in part_rows.iter().enumerate() {
                indices[row] = (part, at);
            }
        }
        self.fields
            .iter()
            .enumerate()
            .map(|(c, field)| {
                let null = new_null_array(field.data_type(), 1);
                let mut sources: Vec<&dyn Array> = parts
                    .iter()
                    .map(|(columns, _)| columns[c].as_ref())
                    .collect();
                sources.push(null.as_ref());
                // Every source has the column's type, so interleaving cannot fail.
                interleave(&sources, &indices)
                    .unwrap_or_else(|_| new_null_array(field.data_type(), rows))
            })
            .collect()
    }

    /// Encodes `rows` rows of the columns; a single unwrapped null is no payload.
    pub fn encode(&self, columns: &[ArrayRef], rows: usize) -> Result<Vec<Option<Vec<u8>>>> {
        let mut guard = self.writer.lock();
        let writer = match &mut *guard {
            Some(writer) => writer,
            empty => empty.insert(self.build_writer()?),
        };
        let (encoder, batch) = match writer {
            Writer::Generated(encoder) => {
                let batch = RecordBatch::try_new(encoder.schema(), columns.to_vec());
                (encoder, batch)
            }
            Writer::Registered {
                encoder,
                payload,
                schema,
            } => {
                let value = if self.wrapped {
                    physical::row_struct(&self.fields, columns)
                } else {
                    Ok(columns[0].clone())
                };
                let shaped = value
                    .and_then(|v| schema.shape(&v, payload, !self.wrapped))
                    .map_err(|e| EngineError::Execution {
                        context: "Unable to serialize record".into(),
                        cause: e.into(),
                    })?;
                let batch = RecordBatch::try_new(encoder.schema(), vec![shaped]);
                (encoder, batch)
            }
        };
        let batch = batch
            .map_err(|e| EngineError::internal_from("AVRO rows do not fit their schema", e))?;
        encoder
            .encode(&batch)
            .map_err(|e| EngineError::internal_from("cannot encode rows as AVRO", e))?;
        let encoded = encoder.flush();
        let single_null =
            |row: usize| !self.wrapped && columns.len() == 1 && columns[0].is_null(row);
        Ok(encoded
            .iter()
            .take(rows)
            .enumerate()
            .map(|(row, bytes)| (!single_null(row)).then(|| bytes.to_vec()))
            .collect())
    }

    /// How rows are written: with the registered schema the codec names, or with the one
    /// the columns generate, which must have been registered (the statement that created
    /// the source or query registers it).
    fn build_writer(&self) -> Result<Writer> {
        if let Some(id) = self.schema_id {
            return self.registered_writer(id);
        }
        let columns: Vec<(&str, &SqlType)> =
            self.columns.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let request = schema::registry_request(&columns, self.wrapped, self.full_name.as_deref())?;
        let generated = &request.schema;
        let id = self
            .registry
            .registered_id(&request)
            .map_err(|e| EngineError::internal_from("the generated AVRO schema is invalid", e))?
            .ok_or_else(|| {
                EngineError::statement(format!(
                    "The AVRO schema {generated} is not registered in the schema registry"
                ))
            })?;
        let fields: Vec<FieldRef> = if !self.wrapped && self.fields.len() == 1 {
            vec![Arc::new(Field::new(
                PAYLOAD,
                self.fields[0].data_type().clone(),
                true,
            ))]
        } else {
            self.fields.clone()
        };
        let avro = if !self.wrapped && self.fields.len() == 1 {
            wrapper(generated)
        } else {
            generated.clone()
        };
        Ok(Writer::Generated(encoder(fields, avro, id)?))
    }

    /// A writer of registered schema `id`, always as the one field of the wrapper record.
    fn registered_writer(&self, id: u32) -> Result<Writer> {
        let text = self.registry.schema_by_id(id).ok_or_else(|| {
            EngineError::statement(format!(
                "Schema {id} is not in the schema registry, so rows cannot be written with it"
            ))
        })?;
        let unreadable =
            |e: String| EngineError::statement(format!("Schema {id} cannot be written with: {e}"));
        let payload = self
            .writer_decoder(id)
            .map_err(unreadable)?
            .schema()
            .field(0)
            .clone();
        let payload: FieldRef = Arc::new(payload);
        let full = self.self_contained(id, &text).map_err(unreadable)?;
        let schema = physical::Physical::parse(&full).map_err(unreadable)?;
        let encoder = encoder(vec![payload.clone()], wrapper(&full), id)?;
        Ok(Writer::Registered {
            encoder,
            payload,
            schema,
        })
    }
}

/// An `arrow-avro` encoder of `fields` as Avro schema `avro`, framed with registry id `id`.
fn encoder(fields: Vec<FieldRef>, avro: String, id: u32) -> Result<Encoder> {
    let metadata = HashMap::from([(SCHEMA_METADATA_KEY.to_string(), avro)]);
    let schema: SchemaRef = Arc::new(Schema::new_with_metadata(fields, metadata));
    WriterBuilder::new(schema.as_ref().clone())
        .with_fingerprint_strategy(FingerprintStrategy::Id(id))
        .build_encoder::<AvroSoeFormat>()
        .map_err(|e| EngineError::internal_from("cannot build the AVRO encoder", e))
}

/// Feeds one framed record to `decoder`; refuses a record that does not end exactly where its
/// bytes do (a truncated one, or one with bytes left over).
fn feed(
    decoder: &mut Decoder,
    bytes: &[u8],
    batches: &mut Vec<RecordBatch>,
) -> std::result::Result<(), String> {
    if decoder.batch_is_full() {
        flush(decoder, batches)?;
    }
    let before = decoder.capacity();
    let consumed = decoder
        .decode(bytes)
        .map_err(|e| format!("The AVRO record is malformed: {e}"))?;
    if consumed != bytes.len() || decoder.capacity() + 1 != before {
        return Err(format!(
            "The AVRO record is malformed: {} bytes do not hold one record of its schema",
            bytes.len()
        ));
    }
    Ok(())
}

fn flush(decoder: &mut Decoder, batches: &mut Vec<RecordBatch>) -> std::result::Result<(), String> {
    if let Some(batch) = decoder.flush().map_err(|e| e.to_string())? {
        batches.push(batch);
    }
    Ok(())
}
