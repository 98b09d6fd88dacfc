//! The KAFKA format: Kafka's own serializers for one INT, BIGINT, DOUBLE, STRING or BYTES.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BinaryArray, BinaryBuilder, Float64Array, Float64Builder, Int32Array,
    Int32Builder, Int64Array, Int64Builder, StringArray, StringBuilder, new_null_array,
};
use datafusion::arrow::datatypes::{DataType, SchemaRef};

use super::Decoded;
use crate::error::{EngineError, Result};

/// Decodes one column. Integers and doubles are big-endian, as Kafka's serializers write them.
pub(super) fn decode(schema: &SchemaRef, payloads: &[Option<&[u8]>]) -> Decoded {
    let Some(field) = schema.fields().first() else {
        return Decoded {
            columns: Vec::new(),
            errors: Vec::new(),
        };
    };
    let mut errors = Vec::new();
    let n = payloads.len();
    let column: ArrayRef = match field.data_type() {
        DataType::Int32 => {
            let mut b = Int32Builder::with_capacity(n);
            for (i, p) in payloads.iter().enumerate() {
                match p {
                    None => b.append_null(),
                    Some(bytes) => match <[u8; 4]>::try_from(*bytes) {
                        Ok(v) => b.append_value(i32::from_be_bytes(v)),
                        Err(_) => {
                            errors.push((i, format!("Size of data received by IntegerDeserializer is not 4: {} bytes", bytes.len())));
                            b.append_null();
                        }
                    },
                }
            }
            Arc::new(b.finish())
        }
        DataType::Int64 => {
            let mut b = Int64Builder::with_capacity(n);
            for (i, p) in payloads.iter().enumerate() {
                match p {
                    None => b.append_null(),
                    Some(bytes) => {
                        match <[u8; 8]>::try_from(*bytes) {
                            Ok(v) => b.append_value(i64::from_be_bytes(v)),
                            Err(_) => {
                                errors.push((i, format!("Size of data received by LongDeserializer is not 8: {} bytes", bytes.len())));
                                b.append_null();
                            }
                        }
                    }
                }
            }
            Arc::new(b.finish())
        }
        DataType::Float64 => {
            let mut b = Float64Builder::with_capacity(n);
            for (i, p) in payloads.iter().enumerate() {
                match p {
                    None => b.append_null(),
                    Some(bytes) => match <[u8; 8]>::try_from(*bytes) {
                        Ok(v) => b.append_value(f64::from_be_bytes(v)),
                        Err(_) => {
                            errors.push((i, format!("Size of data received by DoubleDeserializer is not 8: {} bytes", bytes.len())));
                            b.append_null();
                        }
                    },
                }
            }
            Arc::new(b.finish())
        }
        DataType::Utf8 => {
            // Checking the UTF-8 of all the payloads at once is much cheaper than one by one;
            // only a batch with a bad payload is checked again row by row, to find it.
            let total = payloads.iter().flatten().map(|p| p.len()).sum();
            let mut bytes = BinaryBuilder::with_capacity(n, total);
            for p in payloads {
                bytes.append_option(*p);
            }
            if let Ok(strings) = StringArray::try_from_binary(bytes.finish()) {
                return Decoded {
                    columns: vec![Arc::new(strings)],
                    errors,
                };
            }
            let mut b = StringBuilder::with_capacity(n, total);
            for (i, p) in payloads.iter().enumerate() {
                match p.map(std::str::from_utf8) {
                    None => b.append_null(),
                    Some(Ok(s)) => b.append_value(s),
                    Some(Err(e)) => {
                        errors.push((i, format!("the value is not valid UTF-8: {e}")));
                        b.append_null();
                    }
                }
            }
            Arc::new(b.finish())
        }
        DataType::Binary => {
            let mut b = BinaryBuilder::with_capacity(n, n * 16);
            for p in payloads {
                match p {
                    None => b.append_null(),
                    Some(bytes) => b.append_value(bytes),
                }
            }
            Arc::new(b.finish())
        }
        other => {
            errors.extend((0..n).map(|i| (i, format!("the KAFKA format cannot carry {other}"))));
            new_null_array(other, n)
        }
    };
    Decoded {
        columns: vec![column],
        errors,
    }
}

/// Encodes one column; nulls encode to no payload.
pub(super) fn encode(columns: &[ArrayRef], rows: usize) -> Result<Vec<Option<Vec<u8>>>> {
    let Some(column) = columns.first() else {
        return Ok(vec![None; rows]);
    };
    let any = column.as_any();
    let value = |i: usize| -> Option<Vec<u8>> {
        if column.is_null(i) {
            return None;
        }
        Some(match column.data_type() {
            DataType::Int32 => any
                .downcast_ref::<Int32Array>()?
                .value(i)
                .to_be_bytes()
                .to_vec(),
            DataType::Int64 => any
                .downcast_ref::<Int64Array>()?
                .value(i)
                .to_be_bytes()
                .to_vec(),
            DataType::Float64 => any
                .downcast_ref::<Float64Array>()?
                .value(i)
                .to_be_bytes()
                .to_vec(),
            DataType::Utf8 => any
                .downcast_ref::<StringArray>()?
                .value(i)
                .as_bytes()
                .to_vec(),
            DataType::Binary => any.downcast_ref::<BinaryArray>()?.value(i).to_vec(),
            _ => return None,
        })
    };
    if !matches!(
        column.data_type(),
        DataType::Int32 | DataType::Int64 | DataType::Float64 | DataType::Utf8 | DataType::Binary
    ) {
        return Err(EngineError::statement(format!(
            "The 'KAFKA' format does not support type {}",
            column.data_type()
        )));
    }
    Ok((0..rows.min(column.len())).map(value).collect())
}
