//! The DELIMITED format: one field per column, separated by a delimiter, quoted as CSV.

use datafusion::arrow::array::{ArrayRef, BooleanArray, new_null_array};
use datafusion::arrow::compute::nullif;
use datafusion::arrow::datatypes::SchemaRef;

use super::Decoded;
use super::primitive::{PrimitiveBuilder, to_text};
use crate::error::Result;

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

/// Encodes each row as one delimited record; nulls are empty fields, and a field is quoted by
/// the rules of the CSV printer ksqlDB uses (see [`needs_quotes`]).
pub(super) fn encode(
    columns: &[ArrayRef],
    rows: usize,
    delimiter: char,
) -> Result<Vec<Option<Vec<u8>>>> {
    let mut out = Vec::with_capacity(rows);
    for row in 0..rows {
        let mut record = String::new();
        for (i, column) in columns.iter().enumerate() {
            if i > 0 {
                record.push(delimiter);
            }
            let Some(text) = to_text(column.as_ref(), row) else {
                continue;
            };
            if needs_quotes(&text, i == 0, delimiter) {
                record.push('"');
                record.push_str(&text.replace('"', "\"\""));
                record.push('"');
            } else {
                record.push_str(&text);
            }
        }
        out.push(Some(record.into_bytes()));
    }
    Ok(out)
}

/// Whether a field is quoted, as Apache Commons CSV's minimal quoting (which ksqlDB writes
/// DELIMITED with) decides: the first field of a record when empty or when it starts with
/// anything but a letter or digit (so `-10` alone is `"-10"`), any field that starts with a
/// character up to `#` (a space, a tab, `"`, ...), holds a line break, a quote or the
/// delimiter, or ends in whitespace.
fn needs_quotes(text: &str, first: bool, delimiter: char) -> bool {
    let Some(c) = text.chars().next() else {
        return first;
    };
    if first && !c.is_ascii_alphanumeric() {
        return true;
    }
    if c <= '#' {
        return true;
    }
    if text
        .chars()
        .any(|c| c == '\n' || c == '\r' || c == '"' || c == delimiter)
    {
        return true;
    }
    text.chars().last().is_some_and(|c| c <= ' ')
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int32Array, StringArray};
    use std::sync::Arc;

    #[test]
    fn fields_are_quoted_as_ksqldbs_csv_printer_quotes_them() {
        // The first field: anything but a letter or digit first, or empty.
        assert!(needs_quotes("-10", true, ','));
        assert!(!needs_quotes("-10", false, ','));
        assert!(needs_quotes("", true, ','));
        assert!(!needs_quotes("", false, ','));
        // Any field: a leading character up to '#', a delimiter, quote or line break inside,
        // or trailing whitespace.
        assert!(needs_quotes(" a", false, ','));
        assert!(needs_quotes("\ta", false, ','));
        assert!(needs_quotes("a,b", false, ','));
        assert!(!needs_quotes("a,b", false, '|'));
        assert!(needs_quotes("say \"hi\"", false, ','));
        assert!(needs_quotes("a\nb", false, ','));
        assert!(needs_quotes("a ", false, ','));
        assert!(!needs_quotes("with white space", false, ','));

        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int32Array::from(vec![Some(-5), None])),
            Arc::new(StringArray::from(vec![Some("x \"y\""), Some("")])),
        ];
        let records = encode(&columns, 2, ',').unwrap();
        assert_eq!(records[0].as_deref(), Some(&b"\"-5\",\"x \"\"y\"\"\""[..]));
        assert_eq!(records[1].as_deref(), Some(&b","[..]));
    }
}
