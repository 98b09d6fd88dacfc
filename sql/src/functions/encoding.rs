//! How values are represented: bytes and text in hex, base64, UTF-8 or ASCII (`ENCODE`,
//! `TO_BYTES`, `FROM_BYTES`), numbers from their bytes in either byte order (`INT_FROM_BYTES`,
//! `BIGINT_FROM_BYTES`, `DOUBLE_FROM_BYTES`), and `AS_VALUE`, which copies a key column into
//! the value.

use std::sync::Arc;

use base64::Engine as _;

use datafusion::arrow::array::{Array, ArrayRef, StringBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::TypeSignature;

use super::udf::{STRING, Scalar, any1, at, binaries, function, string_at, strings};

/// `AS_VALUE(x)`: a copy of a key column to put in the value.
fn identity(args: &[ArrayRef], _rows: usize) -> Result<ArrayRef, String> {
    Ok(args[0].clone())
}

/// Bytes from text in an encoding: `hex`, `utf8`, `ascii` or `base64`.
fn decode_text(text: &str, encoding: &str) -> Result<Vec<u8>, String> {
    match encoding.to_ascii_lowercase().as_str() {
        "hex" => {
            // As ksqlDB reads hex: `0x...` (an odd digit count padded with a leading 0), a
            // bytes literal `X'...'`, or bare digits (both of an even count).
            let literal = text
                .strip_prefix("X'")
                .or_else(|| text.strip_prefix("x'"))
                .map(|t| t.strip_suffix('\'').ok_or("an unterminated hex literal"))
                .transpose()?;
            let prefixed = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X"));
            let t = match (literal, prefixed) {
                (Some(t), _) => t.to_string(),
                (None, Some(t)) if t.len() % 2 == 1 => format!("0{t}"),
                (None, Some(t)) => t.to_string(),
                (None, None) => text.to_string(),
            };
            if t.len() % 2 == 1 {
                return Err(format!("An odd number of hex digits: {text}"));
            }
            if !t.is_ascii() {
                return Err(format!("Not hex digits: {text}"));
            }
            (0..t.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&t[i..i + 2], 16).map_err(|e| e.to_string()))
                .collect()
        }
        "utf8" => Ok(text.as_bytes().to_vec()),
        // As Java encodes text in US-ASCII: a character outside it becomes '?'.
        "ascii" => Ok(text
            .chars()
            .map(|c| if c.is_ascii() { c as u8 } else { b'?' })
            .collect()),
        "base64" => base64_engine().decode(text).map_err(|e| e.to_string()),
        other => Err(format!(
            "Supported input and output encodings are: hex, utf8, ascii and base64. Got {other}"
        )),
    }
}

/// Text of bytes in an encoding: `hex`, `utf8`, `ascii` or `base64`.
fn encode_bytes(bytes: &[u8], encoding: &str) -> Result<String, String> {
    match encoding.to_ascii_lowercase().as_str() {
        "hex" => Ok(bytes.iter().map(|b| format!("{b:02x}")).collect()),
        "utf8" => Ok(String::from_utf8_lossy(bytes).into_owned()),
        "ascii" => Ok(bytes
            .iter()
            .map(|&b| if b.is_ascii() { b as char } else { '\u{fffd}' })
            .collect()),
        "base64" => Ok(base64_engine().encode(bytes)),
        other => Err(format!(
            "Supported input and output encodings are: hex, utf8, ascii and base64. Got {other}"
        )),
    }
}

fn base64_engine() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// `ENCODE(text, from, to)`: text in one encoding re-encoded in another.
fn encode(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let (text, from, to) = (strings(&args[0])?, strings(&args[1])?, strings(&args[2])?);
    let mut out = StringBuilder::new();
    for i in 0..rows {
        match (string_at(&text, i), string_at(&from, i), string_at(&to, i)) {
            (Some(t), Some(f), Some(o)) => out.append_value(encode_bytes(&decode_text(t, f)?, o)?),
            _ => out.append_null(),
        }
    }
    Ok(Arc::new(out.finish()))
}

/// `TO_BYTES(text, encoding)`.
fn to_bytes(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let (text, encoding) = (strings(&args[0])?, strings(&args[1])?);
    let mut out = datafusion::arrow::array::BinaryBuilder::new();
    for i in 0..rows {
        match (string_at(&text, i), string_at(&encoding, i)) {
            (Some(t), Some(e)) => out.append_value(decode_text(t, e)?),
            _ => out.append_null(),
        }
    }
    Ok(Arc::new(out.finish()))
}

/// `FROM_BYTES(bytes, encoding)`.
fn from_bytes(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let bytes = binaries(&args[0])?;
    let encoding = strings(&args[1])?;
    let mut out = StringBuilder::new();
    for i in 0..rows {
        let j = at(i, bytes.len());
        match (!bytes.is_null(j), string_at(&encoding, i)) {
            (true, Some(e)) => out.append_value(encode_bytes(bytes.value(j), e)?),
            _ => out.append_null(),
        }
    }
    Ok(Arc::new(out.finish()))
}

/// A number read from exactly `N` bytes in a byte order, `BIG_ENDIAN` unless given.
fn number_from_bytes<const N: usize, T>(
    args: &[ArrayRef],
    rows: usize,
    read: fn([u8; N], bool) -> T,
) -> Result<Vec<Option<T>>, String> {
    let bytes = binaries(&args[0])?;
    let orders = args.get(1).map(strings).transpose()?;
    let mut out = Vec::with_capacity(rows);
    for i in 0..rows {
        let j = at(i, bytes.len());
        let big = match orders.as_ref().map(|o| string_at(o, i)) {
            None => Some(true),
            Some(Some(order)) if order.eq_ignore_ascii_case("BIG_ENDIAN") => Some(true),
            Some(Some(order)) if order.eq_ignore_ascii_case("LITTLE_ENDIAN") => Some(false),
            Some(Some(order)) => {
                return Err(format!(
                    "Byte order must be BIG_ENDIAN or LITTLE_ENDIAN. Unknown byte order '{order}'."
                ));
            }
            Some(None) => None,
        };
        let value = match (bytes.is_null(j), big) {
            (false, Some(big)) => {
                let raw: [u8; N] = bytes.value(j).try_into().map_err(|_| {
                    format!(
                        "Number of bytes must be equal to {N}, but found {}",
                        bytes.value(j).len()
                    )
                })?;
                Some(read(raw, big))
            }
            _ => None,
        };
        out.push(value);
    }
    Ok(out)
}

/// `INT_FROM_BYTES(bytes [, order])`: an INT from exactly 4 bytes.
fn int_from_bytes(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let values = number_from_bytes::<4, i32>(args, rows, |b, big| {
        if big {
            i32::from_be_bytes(b)
        } else {
            i32::from_le_bytes(b)
        }
    })?;
    Ok(Arc::new(datafusion::arrow::array::Int32Array::from(values)))
}

/// `BIGINT_FROM_BYTES(bytes [, order])`: a BIGINT from exactly 8 bytes.
fn bigint_from_bytes(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let values = number_from_bytes::<8, i64>(args, rows, |b, big| {
        if big {
            i64::from_be_bytes(b)
        } else {
            i64::from_le_bytes(b)
        }
    })?;
    Ok(Arc::new(datafusion::arrow::array::Int64Array::from(values)))
}

/// `DOUBLE_FROM_BYTES(bytes [, order])`: a DOUBLE from exactly 8 bytes.
fn double_from_bytes(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let values = number_from_bytes::<8, f64>(args, rows, |b, big| {
        if big {
            f64::from_be_bytes(b)
        } else {
            f64::from_le_bytes(b)
        }
    })?;
    Ok(Arc::new(datafusion::arrow::array::Float64Array::from(
        values,
    )))
}

/// The argument types of the `*_FROM_BYTES` functions: bytes, and maybe a byte order.
fn from_bytes_type(name: &str, args: &[DataType], result: DataType) -> Result<DataType, String> {
    let bytes = |t: &DataType| super::udf::is_bytes(t) || *t == DataType::Null;
    match args {
        [b] if bytes(b) => Ok(result),
        [b, o] if bytes(b) && super::udf::is_text(o) => Ok(result),
        _ => Err(super::udf::refused(name, args)),
    }
}

/// The functions of this file, as the catalogue registers them.
pub(super) fn functions() -> Vec<Scalar> {
    vec![
        function("AS_VALUE", any1(), |a| Ok(a[0].clone()), identity),
        function("ENCODE", TypeSignature::Any(3), STRING, encode),
        function(
            "TO_BYTES",
            TypeSignature::Any(2),
            |_| Ok(DataType::Binary),
            to_bytes,
        ),
        function("FROM_BYTES", TypeSignature::Any(2), STRING, from_bytes),
        function(
            "INT_FROM_BYTES",
            TypeSignature::OneOf(vec![TypeSignature::Any(1), TypeSignature::Any(2)]),
            |a| from_bytes_type("INT_FROM_BYTES", a, DataType::Int32),
            int_from_bytes,
        ),
        function(
            "BIGINT_FROM_BYTES",
            TypeSignature::OneOf(vec![TypeSignature::Any(1), TypeSignature::Any(2)]),
            |a| from_bytes_type("BIGINT_FROM_BYTES", a, DataType::Int64),
            bigint_from_bytes,
        ),
        function(
            "DOUBLE_FROM_BYTES",
            TypeSignature::OneOf(vec![TypeSignature::Any(1), TypeSignature::Any(2)]),
            |a| from_bytes_type("DOUBLE_FROM_BYTES", a, DataType::Float64),
            double_from_bytes,
        ),
    ]
}
