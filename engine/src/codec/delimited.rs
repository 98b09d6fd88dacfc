//! The DELIMITED format: one field per column, separated by a delimiter, quoted as CSV.

use datafusion::arrow::array::{ArrayRef, BooleanArray, new_null_array};
use datafusion::arrow::compute::nullif;
use datafusion::arrow::datatypes::SchemaRef;

use super::Decoded;
use super::primitive::{PrimitiveBuilder, to_text};
use crate::error::{EngineError, Result};

/// Decodes each payload as one CSV record with `delimiter`. Empty fields are nulls; a record with
/// the wrong number of fields, or a field that does not parse, is an error for that row.
pub(super) fn decode(schema: &SchemaRef, delimiter: char, payloads: &[Option<&[u8]>]) -> Decoded {
    let n = payloads.len();
    let mut builders: Vec<Option<PrimitiveBuilder>> = schema
        .fields()
        .iter()
        .map(|f| PrimitiveBuilder::new(f.data_type(), n))
        .collect();
    if let Some(i) = builders.iter().position(Option::is_none) {
        let field = &schema.fields()[i];
        return Decoded {
            columns: schema
                .fields()
                .iter()
                .map(|f| new_null_array(f.data_type(), n))
                .collect(),
            errors: (0..n)
                .map(|row| {
                    (
                        row,
                        format!(
                            "the DELIMITED format cannot carry {} ({})",
                            field.name(),
                            field.data_type()
                        ),
                    )
                })
                .collect(),
        };
    }
    let mut builders: Vec<PrimitiveBuilder> =
        builders.iter_mut().filter_map(Option::take).collect();
    let mut errors = Vec::new();
    let mut record = csv::StringRecord::new();
    for (row, payload) in payloads.iter().enumerate() {
        let outcome = match payload {
            None => Err(None),
            Some(bytes) => parse_row(bytes, delimiter, &mut record, builders.len()),
        };
        let fields = match outcome {
            Ok(()) => Some(&record),
            Err(reason) => {
                if let Some(reason) = reason {
                    errors.push((row, reason));
                }
                None
            }
        };
        let Some(fields) = fields else {
            builders.iter_mut().for_each(PrimitiveBuilder::append_null);
            continue;
        };
        // Fields are appended as they parse; a bad field nulls the rest of the row, and the whole
        // row is nulled afterwards, so the common case parses each field once.
        let mut failure = None;
        for ((text, builder), field) in fields.iter().zip(builders.iter_mut()).zip(schema.fields())
        {
            if failure.is_some() || text.is_empty() {
                builder.append_null();
            } else if let Err(e) = builder.append_text(text) {
                builder.append_null();
                failure = Some(format!("column {}: {e}", field.name()));
            }
        }
        if let Some(reason) = failure {
            errors.push((row, reason));
        }
    }
    let mut columns: Vec<ArrayRef> = builders.iter_mut().map(PrimitiveBuilder::finish).collect();
    if !errors.is_empty() {
        let bad: BooleanArray = (0..n)
            .map(|row| Some(errors.iter().any(|(r, _)| *r == row)))
            .collect();
        for column in &mut columns {
            if let Ok(nulled) = nullif(column.as_ref(), &bad) {
                *column = nulled;
            }
        }
    }
    Decoded { columns, errors }
}

fn parse_row(
    bytes: &[u8],
    delimiter: char,
    record: &mut csv::StringRecord,
    expected: usize,
) -> Result<(), Option<String>> {
    let mut delimiter_bytes = [0u8; 4];
    let delimiter_bytes = delimiter.encode_utf8(&mut delimiter_bytes).as_bytes();
    if delimiter_bytes.len() != 1 {
        return Err(Some(format!(
            "the delimiter {delimiter:?} is not a single byte"
        )));
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .delimiter(delimiter_bytes[0])
        .from_reader(bytes);
    match reader.read_record(record) {
        Ok(true) => {}
        Ok(false) => record.clear(),
        Err(e) => return Err(Some(format!("not a valid delimited record: {e}"))),
    }
    if record.len() != expected {
        return Err(Some(format!(
            "Unexpected field count, csvFields:{} schemaFields:{expected}",
            record.len()
        )));
    }
    Ok(())
}

/// Encodes each row as one delimited record; nulls are empty fields, and text that needs it is
/// quoted.
pub(super) fn encode(
    columns: &[ArrayRef],
    rows: usize,
    delimiter: char,
) -> Result<Vec<Option<Vec<u8>>>> {
    let mut delimiter_bytes = [0u8; 4];
    let delimiter_bytes = delimiter.encode_utf8(&mut delimiter_bytes).as_bytes();
    if delimiter_bytes.len() != 1 {
        return Err(EngineError::statement(format!(
            "the delimiter {delimiter:?} is not a single byte"
        )));
    }
    let mut out = Vec::with_capacity(rows);
    for row in 0..rows {
        let mut writer = csv::WriterBuilder::new()
            .delimiter(delimiter_bytes[0])
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(Vec::new());
        let fields: Vec<String> = columns
            .iter()
            .map(|c| to_text(c.as_ref(), row).unwrap_or_default())
            .collect();
        writer
            .write_record(&fields)
            .map_err(|e| EngineError::statement(format!("cannot write a delimited record: {e}")))?;
        let mut bytes = writer
            .into_inner()
            .map_err(|e| EngineError::statement(format!("cannot write a delimited record: {e}")))?;
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
        }
        out.push(Some(bytes));
    }
    Ok(out)
}
