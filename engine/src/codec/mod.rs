//! Encoding and decoding keys and values of whole batches of records to and from Arrow arrays.
//!
//! Each format works a batch at a time: a decoder turns the payloads of many records into one
//! array per column, and an encoder turns columns back into payloads. A payload that cannot be
//! decoded becomes a null row and is reported with its index and the reason, so the caller can
//! drop it and send it to the processing log; it never stops the batch.

pub mod avro;
mod delimited;
mod json;
mod json_decimal;
pub mod json_sr;
mod json_text;
mod kafka;
mod primitive;
pub mod protobuf;

use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use eddy_registry::SchemaRegistry;

use crate::error::{EngineError, Result};
use crate::format::{Format, FormatSpec};
use crate::schema::Column;

/// Columns decoded from a batch of payloads, one row per payload.
#[derive(Debug)]
pub struct Decoded {
    /// One array per column, as long as the input.
    pub columns: Vec<ArrayRef>,
    /// Rows that could not be decoded (their values are null), with the reason.
    pub errors: Vec<(usize, String)>,
}

/// The schema registry that the registry formats (AVRO) read writer schemas from; none where
/// only the schemaless formats are used.
#[derive(Clone, Default)]
pub struct Schemas(Option<Arc<SchemaRegistry>>);

impl Schemas {
    /// Formats that use `registry`.
    pub fn new(registry: Arc<SchemaRegistry>) -> Self {
        Schemas(Some(registry))
    }

    /// The registry a DataFusion session carries (the engine's session carries its own).
    pub fn of(ctx: &datafusion::prelude::SessionContext) -> Self {
        ctx.state_ref()
            .read()
            .config()
            .get_extension::<Schemas>()
            .map(|s| s.as_ref().clone())
            .unwrap_or_default()
    }

    /// The registry, or an error naming the format that needs one.
    pub fn registry(&self, format: Format) -> Result<&Arc<SchemaRegistry>> {
        self.0.as_ref().ok_or_else(|| {
            EngineError::Unsupported(format!(
                "The {} format without a schema registry",
                format.name()
            ))
        })
    }
}

impl std::fmt::Debug for Schemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Schemas(registry)"
        } else {
            "Schemas(none)"
        })
    }
}

/// Turns payloads of one format into Arrow columns and back.
#[derive(Debug, Clone)]
pub struct RowCodec {
    format: FormatSpec,
    schema: SchemaRef,
    wrapped: bool,
    json_decoder: json::DecoderCache,
    avro: Option<Arc<avro::AvroCodec>>,
    protobuf: Option<Arc<protobuf::ProtobufCodec>>,
    json_sr: Option<Arc<json_sr::JsonSrCodec>>,
}

impl RowCodec {
    /// A codec for `columns` (all key columns or all value columns of a source) in `format`.
    ///
    /// `wrapped` says whether a single column is written as an object holding it (JSON values by
    /// default) or bare (keys, and values with `WRAP_SINGLE_VALUE=false`). Several columns are
    /// always wrapped.
    pub fn new(
        format: &FormatSpec,
        columns: &[&Column],
        wrapped: bool,
        schemas: &Schemas,
    ) -> Result<Self> {
        let fields = columns
            .iter()
            .map(|c| {
                eddy_sql::types::to_arrow(&c.ty)
                    .map(|t| Field::new(c.name.clone(), t, true))
                    .map_err(|e| EngineError::statement(e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        // Protobuf has no bare values: keys and single values are messages too, but a key
        // whose columns are all null is written as no key, as ksqlDB writes a null key.
        let null_rows_absent = !wrapped;
        let wrapped = wrapped
            || fields.len() != 1
            || matches!(format.format, Format::Protobuf | Format::ProtobufNoSr);
        let schema = Arc::new(Schema::new(fields.clone()));
        let mut avro = None;
        let mut protobuf = None;
        let mut json_sr = None;
        match format.format {
            Format::Kafka | Format::Delimited | Format::None | Format::Json => {}
            Format::Avro => {
                avro = Some(Arc::new(avro::AvroCodec::new(
                    schemas.registry(Format::Avro)?.clone(),
                    format,
                    columns
                        .iter()
                        .map(|c| (c.name.clone(), c.ty.clone()))
                        .collect(),
                    fields.iter().cloned().map(Arc::new).collect(),
                    wrapped,
                )));
            }
            Format::Protobuf | Format::ProtobufNoSr => {
                let registry = match format.format {
                    Format::Protobuf => Some(schemas.registry(Format::Protobuf)?.clone()),
                    _ => None,
                };
                protobuf = Some(Arc::new(protobuf::ProtobufCodec::new(
                    registry,
                    format,
                    columns
                        .iter()
                        .map(|c| (c.name.clone(), c.ty.clone()))
                        .collect(),
                    schema.clone(),
                    null_rows_absent,
                )?));
            }
            Format::JsonSr => {
                json_sr = Some(Arc::new(json_sr::JsonSrCodec::new(
                    schemas.registry(Format::JsonSr)?.clone(),
                    columns
                        .iter()
                        .map(|c| (c.name.clone(), c.ty.clone()))
                        .collect(),
                    schema.clone(),
                    wrapped,
                    format.schema_id,
                )));
            }
        }
        Ok(RowCodec {
            format: format.clone(),
            schema,
            wrapped,
            json_decoder: json::DecoderCache::default(),
            avro,
            protobuf,
            json_sr,
        })
    }

    /// The Arrow schema of the decoded columns.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Decodes the payloads of a batch; `None` (a null key or value) decodes to a null row.
    pub fn decode(&self, payloads: &[Option<&[u8]>]) -> Decoded {
        match self.format.format {
            Format::Kafka => kafka::decode(&self.schema, payloads),
            Format::Delimited => delimited::decode(&self.schema, self.format.delimiter(), payloads),
            Format::Json => json::decode(&self.schema, self.wrapped, payloads, &self.json_decoder),
            Format::Avro if let Some(avro) = &self.avro => avro.decode(payloads),
            Format::Protobuf | Format::ProtobufNoSr if let Some(protobuf) = &self.protobuf => {
                protobuf.decode(payloads)
            }
            Format::JsonSr if let Some(json_sr) = &self.json_sr => json_sr.decode(payloads),
            _ => Decoded {
                columns: Vec::new(),
                errors: Vec::new(),
            },
        }
    }

    /// Encodes `rows` rows of `columns` (in schema order); a row of all nulls encodes to `None`
    /// in the formats that cannot tell it from a null payload.
    pub fn encode(&self, columns: &[ArrayRef], rows: usize) -> Result<Vec<Option<Vec<u8>>>> {
        if columns.len() != self.schema.fields().len() {
            return Err(EngineError::internal(format!(
                "expected {} columns to encode, got {}",
                self.schema.fields().len(),
                columns.len()
            )));
        }
        match self.format.format {
            Format::Kafka => kafka::encode(columns, rows),
            Format::Delimited => delimited::encode(columns, rows, self.format.delimiter()),
            Format::Json => json::encode(&self.schema, columns, rows, self.wrapped),
            Format::Avro if let Some(avro) = &self.avro => avro.encode(columns, rows),
            Format::Protobuf | Format::ProtobufNoSr if let Some(protobuf) = &self.protobuf => {
                protobuf.encode(columns, rows)
            }
            Format::JsonSr if let Some(json_sr) = &self.json_sr => json_sr.encode(columns, rows),
            _ => Ok(vec![None; rows]),
        }
    }

    /// [`RowCodec::encode`] for values that go into records as they are: JSON objects are
    /// slices of one buffer instead of a copy each.
    pub fn encode_shared(&self, columns: &[ArrayRef], rows: usize) -> Result<Vec<Option<Bytes>>> {
        if self.format.format == Format::Json && columns.len() == self.schema.fields().len() {
            return json::encode_shared(&self.schema, columns, rows, self.wrapped);
        }
        Ok(self
            .encode(columns, rows)?
            .into_iter()
            .map(|row| row.map(Bytes::from))
            .collect())
    }
}
