//! The PROTOBUF format: records in Confluent's Protobuf wire format (see [`wire`]), each read
//! with the message its schema id and message indexes name, and written with the message
//! ksqlDB's schema for the columns generates (or the one `KEY_SCHEMA_ID` / `VALUE_SCHEMA_ID`
//! and the full schema name name).
//!
//! A batch whose records share one message type and whose columns are of the common types is
//! read straight from the wire into Arrow builders ([`direct`]); any other is read with
//! `prost-reflect` and made into the columns through ksqlDB's JSON rules ([`convert`]), one
//! message at a time.

pub mod convert;
mod direct;
pub mod rows;
pub mod schema;
pub mod wire;
mod write;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::SchemaRef;
use eddy_registry::protobuf::ProtobufSchema;
use eddy_registry::{Parsed, SchemaRegistry};
use eddy_sql::ast::SqlType;
use parking_lot::Mutex;
use prost::Message as _;
use prost_reflect::{DynamicMessage, MessageDescriptor};

use super::{Decoded, json};
use crate::error::{EngineError, Result};
use crate::format::FormatSpec;

/// Where a codec's schemas come from.
enum Schemas {
    /// PROTOBUF: the registry, by the id each framed record names.
    Registry(Arc<SchemaRegistry>),
    /// PROTOBUF_NOSR: the message ksqlDB's schema for the columns generates; records are the
    /// bare message, with no framing.
    Local(MessageDescriptor),
}

/// A codec of the PROTOBUF (or PROTOBUF_NOSR) format for one set of columns (always a message
/// of them: Protobuf has no bare values).
pub struct ProtobufCodec {
    schemas: Schemas,
    columns: Vec<(String, SqlType)>,
    names: Vec<String>,
    /// The columns' Arrow schema, which the JSON rules decode into.
    schema: SchemaRef,
    json: json::DecoderCache,
    schema_id: Option<u32>,
    full_name: Option<String>,
    nullable: Option<crate::format::ProtobufNullable>,
    /// Whether a row whose columns are all null is written as no payload (keys).
    null_rows_absent: bool,
    /// Each writer schema by id, or why it cannot be read.
    readers: Mutex<HashMap<u32, std::result::Result<ProtobufSchema, String>>>,
    /// The message rows are written as, once known: its schema id and message indexes.
    writer: Mutex<Option<(u32, MessageDescriptor, Vec<usize>)>>,
}

impl fmt::Debug for ProtobufCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProtobufCodec")
            .field("columns", &self.columns)
            .finish_non_exhaustive()
    }
}

impl ProtobufCodec {
    /// A codec for `columns` (with their Arrow `schema`) in the PROTOBUF format `spec`
    /// describes, with `registry`'s schemas; without one (PROTOBUF_NOSR), with the message
    /// ksqlDB's schema for the columns generates.
    pub fn new(
        registry: Option<Arc<SchemaRegistry>>,
        spec: &FormatSpec,
        columns: Vec<(String, SqlType)>,
        schema: SchemaRef,
        null_rows_absent: bool,
    ) -> Result<Self> {
        let schemas = match registry {
            Some(registry) => Schemas::Registry(registry),
            None => {
                let named: Vec<(&str, &SqlType)> =
                    columns.iter().map(|(n, t)| (n.as_str(), t)).collect();
                let text =
                    schema::generate(&named, spec.full_name.as_deref(), spec.protobuf_nullable)?;
                let compiled = eddy_registry::protobuf::compile(&text, &[])
                    .map_err(|e| EngineError::internal_from("the generated schema", e))?;
                Schemas::Local(named_message(&compiled, spec.full_name.as_deref())?.0)
            }
        };
        Ok(ProtobufCodec {
            schemas,
            names: columns.iter().map(|(n, _)| n.clone()).collect(),
            columns,
            schema,
            json: json::DecoderCache::default(),
            schema_id: spec.schema_id,
            full_name: spec.full_name.clone(),
            nullable: spec.protobuf_nullable,
            null_rows_absent,
            readers: Mutex::new(HashMap::new()),
            writer: Mutex::new(None),
        })
    }

    /// Decodes a batch of payloads; see [`super::RowCodec::decode`].
    pub fn decode(&self, payloads: &[Option<&[u8]>]) -> Decoded {
        if let Some(columns) = self.decode_direct(payloads) {
            return Decoded {
                columns,
                errors: Vec::new(),
            };
        }
        self.decode_general(payloads)
    }

    /// Decodes a batch one message at a time through ksqlDB's JSON rules.
    fn decode_general(&self, payloads: &[Option<&[u8]>]) -> Decoded {
        let mut errors = Vec::new();
        let objects: Vec<Option<Vec<u8>>> = payloads
            .iter()
            .enumerate()
            .map(|(row, payload)| {
                let bytes = (*payload)?;
                match self.read(bytes) {
                    Ok(object) => Some(object),
                    Err(reason) => {
                        errors.push((row, reason));
                        None
                    }
                }
            })
            .collect();
        let refs: Vec<Option<&[u8]>> = objects.iter().map(Option::as_deref).collect();
        let mut decoded = json::decode(&self.schema, true, &refs, &self.json);
        decoded.errors.extend(errors);
        decoded.errors.sort_by_key(|(row, _)| *row);
        decoded
    }

    /// The batch read straight into columns, when every record is of one message type and
    /// [`direct`] reads it; `None` sends the batch the general way.
    fn decode_direct(&self, payloads: &[Option<&[u8]>]) -> Option<Vec<ArrayRef>> {
        let registry = match &self.schemas {
            Schemas::Local(message) => {
                return direct::decode(self.schema.fields(), message, payloads);
            }
            Schemas::Registry(registry) => registry,
        };
        let mut frame = None;
        let mut bodies = Vec::with_capacity(payloads.len());
        for payload in payloads {
            let Some(bytes) = payload else {
                bodies.push(None);
                continue;
            };
            let framed = wire::read(bytes).ok()?;
            match &frame {
                None => frame = Some((framed.id, framed.indexes)),
                Some((id, indexes)) if *id == framed.id && *indexes == framed.indexes => {}
                Some(_) => return None,
            }
            bodies.push(Some(framed.body));
        }
        // A batch of tombstones names no message.
        let (id, indexes) = frame?;
        let message = {
            let mut readers = self.readers.lock();
            let schema = readers
                .entry(id)
                .or_insert_with(|| reader(registry, id))
                .as_ref()
                .ok()?;
            message_at(schema, &indexes).ok()?
        };
        direct::decode(self.schema.fields(), &message, &bodies)
    }

    /// One framed record as the JSON object of its message's fields.
    fn read(&self, bytes: &[u8]) -> std::result::Result<Vec<u8>, String> {
        let registry = match &self.schemas {
            Schemas::Registry(registry) => registry,
            Schemas::Local(message) => {
                let message = DynamicMessage::decode(message.clone(), bytes)
                    .map_err(|e| format!("The PROTOBUF record is malformed: {e}"))?;
                return serde_json::to_vec(&convert::message_json(&message))
                    .map_err(|e| e.to_string());
            }
        };
        let framed = wire::read(bytes)?;
        let message = {
            let mut readers = self.readers.lock();
            let schema = readers
                .entry(framed.id)
                .or_insert_with(|| reader(registry, framed.id))
                .as_ref()
                .map_err(Clone::clone)?;
            message_at(schema, &framed.indexes)?
        };
        let message = DynamicMessage::decode(message, framed.body)
            .map_err(|e| format!("The PROTOBUF record is malformed: {e}"))?;
        serde_json::to_vec(&convert::message_json(&message)).map_err(|e| e.to_string())
    }

    /// Encodes `rows` rows of the columns.
    pub fn encode(&self, columns: &[ArrayRef], rows: usize) -> Result<Vec<Option<Vec<u8>>>> {
        let mut guard = self.writer.lock();
        let (id, message, indexes) = match &mut *guard {
            Some(writer) => writer,
            empty => empty.insert(self.build_writer()?),
        };
        if let Some(flat) = write::FlatWriter::new(message, &self.names, columns) {
            let prefix = match self.schemas {
                Schemas::Registry(_) => wire::write(*id, indexes, &[]),
                Schemas::Local(_) => Vec::new(),
            };
            return Ok((0..rows)
                .map(|row| {
                    if self.null_rows_absent && columns.iter().all(|c| c.is_null(row)) {
                        return None;
                    }
                    let mut bytes = Vec::with_capacity(prefix.len() + 64);
                    bytes.extend_from_slice(&prefix);
                    flat.encode(columns, row, &mut bytes);
                    Some(bytes)
                })
                .collect());
        }
        (0..rows)
            .map(|row| {
                if self.null_rows_absent && columns.iter().all(|c| c.is_null(row)) {
                    return Ok(None);
                }
                let body = convert::row_message(message, &self.names, columns, row)
                    .map_err(|e| EngineError::Execution {
                        context: "Unable to serialize record".into(),
                        cause: e.into(),
                    })?
                    .encode_to_vec();
                Ok(Some(match self.schemas {
                    Schemas::Registry(_) => wire::write(*id, indexes, &body),
                    Schemas::Local(_) => body,
                }))
            })
            .collect()
    }

    /// The message rows are written as: of the registered schema the codec names, or of the
    /// one the columns generate, which the statement that made the source registered.
    fn build_writer(&self) -> Result<(u32, MessageDescriptor, Vec<usize>)> {
        let registry = match &self.schemas {
            Schemas::Registry(registry) => registry,
            Schemas::Local(message) => return Ok((0, message.clone(), vec![0])),
        };
        let id = match self.schema_id {
            Some(id) => id,
            None => {
                let columns: Vec<(&str, &SqlType)> =
                    self.columns.iter().map(|(n, t)| (n.as_str(), t)).collect();
                let request =
                    schema::registry_request(&columns, self.full_name.as_deref(), self.nullable)?;
                registry
                    .registered_id(&request)
                    .map_err(|e| {
                        EngineError::internal_from("the generated PROTOBUF schema is invalid", e)
                    })?
                    .ok_or_else(|| {
                        EngineError::statement(format!(
                            "The PROTOBUF schema {} is not registered in the schema registry",
                            request.schema
                        ))
                    })?
            }
        };
        let schema = reader(registry, id).map_err(EngineError::statement)?;
        let (message, indexes) = named_message(&schema, self.full_name.as_deref())?;
        Ok((id, message, indexes))
    }
}

/// Schema `id` of `registry`, compiled, or why it cannot be read.
fn reader(registry: &SchemaRegistry, id: u32) -> std::result::Result<ProtobufSchema, String> {
    match registry.parsed_by_id(id) {
        Ok(Some(Parsed::Protobuf(schema))) => Ok(schema),
        Ok(Some(_)) => Err(format!("Schema {id} is not a PROTOBUF schema")),
        Ok(None) => Err(format!(
            "Schema not found for id {id} in the schema registry"
        )),
        Err(e) => Err(format!("Schema {id} cannot be read: {e}")),
    }
}

/// The message `indexes` name in `schema`: a top-level one, then nested ones.
pub(crate) fn message_at(
    schema: &ProtobufSchema,
    indexes: &[usize],
) -> std::result::Result<MessageDescriptor, String> {
    let missing = || format!("The PROTOBUF schema has no message at indexes {indexes:?}");
    let (first, rest) = indexes.split_first().ok_or_else(missing)?;
    let mut message = schema.messages().get(*first).cloned().ok_or_else(missing)?;
    for index in rest {
        let child = message.child_messages().nth(*index);
        message = child.ok_or_else(missing)?;
    }
    Ok(message)
}

/// The message `full_name` names in `schema` (the first one when `None`), with its indexes.
pub fn named_message(
    schema: &ProtobufSchema,
    full_name: Option<&str>,
) -> Result<(MessageDescriptor, Vec<usize>)> {
    let Some(name) = full_name else {
        let first = schema
            .messages()
            .into_iter()
            .next()
            .ok_or_else(|| EngineError::statement("The PROTOBUF schema defines no message"))?;
        return Ok((first, vec![0]));
    };
    fn find(
        messages: Vec<MessageDescriptor>,
        name: &str,
        path: &mut Vec<usize>,
    ) -> Option<MessageDescriptor> {
        for (i, message) in messages.into_iter().enumerate() {
            path.push(i);
            if message.full_name() == name || message.name() == name {
                return Some(message);
            }
            if let Some(found) = find(message.child_messages().collect(), name, path) {
                return Some(found);
            }
            path.pop();
        }
        None
    }
    let mut path = Vec::new();
    find(schema.messages(), name, &mut path)
        .map(|m| (m, path))
        .ok_or_else(|| {
            EngineError::statement(format!("Schema does not contain a message named {name}"))
        })
}
