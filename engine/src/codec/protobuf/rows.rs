//! A query's result rows as Protobuf messages, for the REST API's
//! `application/vnd.ksql.v1+protobuf` answers: as ksqlDB does, each row is a bare message (no
//! registry framing) of the `ConnectDefault1` schema its columns generate, and the schema's
//! text goes out in the answer's header.

use serde_json::{Map, Value};

use super::schema;
use crate::codec::{RowCodec, Schemas};
use crate::error::{EngineError, Result};
use crate::format::{Format, FormatSpec};
use crate::schema::{Column, ColumnKind};

/// Encodes rows of a fixed set of columns as Protobuf messages.
#[derive(Debug)]
pub struct ProtobufRows {
    names: Vec<String>,
    schema: String,
    /// Reads a row, as the JSON format writes it, back into Arrow.
    json: RowCodec,
    protobuf: RowCodec,
}

impl ProtobufRows {
    /// An encoder for rows of `columns` (all of them fields of one message, keys included).
    pub fn new(columns: &[Column]) -> Result<Self> {
        let columns: Vec<Column> = columns
            .iter()
            .map(|c| Column {
                kind: ColumnKind::Value,
                ..c.clone()
            })
            .collect();
        let refs: Vec<&Column> = columns.iter().collect();
        let named: Vec<(&str, &eddy_sql::ast::SqlType)> =
            columns.iter().map(|c| (c.name.as_str(), &c.ty)).collect();
        let codec =
            |format| RowCodec::new(&FormatSpec::of(format), &refs, true, &Schemas::default());
        Ok(ProtobufRows {
            names: columns.iter().map(|c| c.name.clone()).collect(),
            schema: schema::generate(&named, None, None)?,
            json: codec(Format::Json)?,
            protobuf: codec(Format::ProtobufNoSr)?,
        })
    }

    /// The `.proto` text of the rows' message.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// One row (its values as the JSON format writes them, in column order) as a message.
    pub fn encode(&self, values: &[Value]) -> Result<Vec<u8>> {
        let object: Map<String, Value> = self
            .names
            .iter()
            .cloned()
            .zip(values.iter().cloned())
            .collect();
        let bytes = serde_json::to_vec(&Value::Object(object))
            .map_err(|e| EngineError::internal_from("cannot write a row as JSON", e))?;
        let decoded = self.json.decode(&[Some(&bytes)]);
        if let Some((_, reason)) = decoded.errors.first() {
            return Err(EngineError::internal(format!(
                "cannot read a result row back: {reason}"
            )));
        }
        let mut encoded = self.protobuf.encode(&decoded.columns, 1)?;
        Ok(encoded.pop().flatten().unwrap_or_default())
    }
}
