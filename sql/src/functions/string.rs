//! String functions that DataFusion lacks or defines differently: `SPLIT` (over text or
//! bytes), `SUBSTRING`, `LPAD`, `RPAD`, `TRIM`, `INITCAP` and `CHR`, with ksqlDB's positions,
//! padding and null rules, and `ELT` and `FIELD`, which pick from and search a list of strings.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, ListBuilder, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::logical_expr::TypeSignature;

use super::udf::{
    STRING, Scalar, any1, at, binaries, check_built_len, function, is_bytes, long_at, longs,
    string_at, strings, text_or_bytes,
};

/// `SPLIT(text, delimiter)`: the pieces between delimiters; an empty delimiter splits into
/// characters.
fn split(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    if is_bytes(args[0].data_type()) {
        return split_bytes(args, rows);
    }
    let (text, delimiter) = (strings(&args[0])?, strings(&args[1])?);
    let mut out = ListBuilder::new(StringBuilder::new());
    for i in 0..rows {
        match (string_at(&text, i), string_at(&delimiter, i)) {
            // Every character alone; empty text is one empty piece, as in ksqlDB.
            (Some(""), Some("")) => {
                out.values().append_value("");
                out.append(true);
            }
            (Some(t), Some("")) => {
                for c in t.chars() {
                    out.values().append_value(c.to_string());
                }
                out.append(true);
            }
            (Some(t), Some(d)) => {
                for piece in t.split(d) {
                    out.values().append_value(piece);
                }
                out.append(true);
            }
            _ => out.append(false),
        }
    }
    Ok(Arc::new(out.finish()))
}

/// `SPLIT(bytes, delimiter_bytes)`: the pieces between delimiters, or every byte alone for an
/// empty delimiter.
fn split_bytes(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let (input, delimiter) = (binaries(&args[0])?, binaries(&args[1])?);
    let mut out = ListBuilder::new(datafusion::arrow::array::BinaryBuilder::new());
    for i in 0..rows {
        let (j, k) = (at(i, input.len()), at(i, delimiter.len()));
        if input.is_null(j) || delimiter.is_null(k) {
            out.append(false);
            continue;
        }
        let (bytes, d) = (input.value(j), delimiter.value(k));
        if d.is_empty() && bytes.is_empty() {
            out.values().append_value([]);
        } else if d.is_empty() {
            for b in bytes {
                out.values().append_value([*b]);
            }
        } else {
            let mut rest = bytes;
            while let Some(at) = rest.windows(d.len()).position(|w| w == d) {
                out.values().append_value(&rest[..at]);
                rest = &rest[at + d.len()..];
            }
            out.values().append_value(rest);
        }
        out.append(true);
    }
    Ok(Arc::new(out.finish()))
}

/// The one character Java escapes (`\u004b`, or a surrogate pair `\ud820\udeb8`) spell;
/// `None` for anything else.
fn escaped_char(text: &str) -> Option<char> {
    let mut units = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let hex = rest
            .strip_prefix("\\u")
            .or_else(|| rest.strip_prefix("\\U"))?;
        let digits = hex.get(..4)?;
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        units.push(u16::from_str_radix(digits, 16).ok()?);
        rest = &hex[4..];
    }
    let mut chars = char::decode_utf16(units);
    match (chars.next(), chars.next()) {
        (Some(Ok(c)), None) => Some(c),
        _ => None,
    }
}

/// `CHR(code)`: the character of a code point, given as a number or as `'\u0041'` text (a
/// character beyond the BMP as its UTF-16 surrogate pair).
fn chr(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let mut out = StringBuilder::new();
    if matches!(
        args[0].data_type(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    ) {
        let text = strings(&args[0])?;
        for i in 0..rows {
            let c = string_at(&text, i).and_then(escaped_char);
            out.append_option(c.map(String::from));
        }
    } else {
        let codes = longs(&args[0])?;
        for i in 0..rows {
            let c = long_at(&codes, i)
                .and_then(|n| u32::try_from(n).ok())
                .and_then(char::from_u32);
            out.append_option(c.map(String::from));
        }
    }
    Ok(Arc::new(out.finish()))
}

/// ksqlDB's substring bounds: 1-based `pos`, negative from the end, clamped to the text.
fn substring_range(length: usize, pos: i64, len: Option<i64>) -> (usize, usize) {
    let length_i = length as i64;
    let start = if pos < 0 {
        (length_i + pos).max(0)
    } else {
        (pos - 1).clamp(0, length_i)
    };
    let end = match len {
        Some(l) => (start + l).clamp(start, length_i),
        None => length_i,
    };
    (start as usize, end as usize)
}

/// `SUBSTRING(text|bytes, pos[, len])`.
fn substring(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let pos = longs(&args[1])?;
    let len = match args.get(2) {
        Some(l) => Some(longs(l)?),
        None => None,
    };
    let bounds = |i: usize| -> Option<(i64, Option<i64>)> {
        let p = long_at(&pos, i)?;
        match &len {
            Some(l) => Some((p, Some(long_at(l, i)?))),
            None => Some((p, None)),
        }
    };
    if is_bytes(args[0].data_type()) {
        let bytes = binaries(&args[0])?;
        let mut out = datafusion::arrow::array::BinaryBuilder::new();
        for i in 0..rows {
            let j = at(i, bytes.len());
            match (!bytes.is_null(j), bounds(i)) {
                (true, Some((p, l))) => {
                    let b = bytes.value(j);
                    let (s, e) = substring_range(b.len(), p, l);
                    out.append_value(&b[s..e]);
                }
                _ => out.append_null(),
            }
        }
        return Ok(Arc::new(out.finish()));
    }
    let text = strings(&args[0])?;
    let mut out = StringBuilder::new();
    for i in 0..rows {
        match (string_at(&text, i), bounds(i)) {
            (Some(t), Some((p, l))) => {
                let chars: Vec<char> = t.chars().collect();
                let (s, e) = substring_range(chars.len(), p, l);
                out.append_value(chars[s..e].iter().collect::<String>());
            }
            _ => out.append_null(),
        }
    }
    Ok(Arc::new(out.finish()))
}

/// `TRIM(text)`: without the characters up to a space (spaces, tabs, line breaks, other control
/// characters) at either end, as Java's `String.trim` that ksqlDB calls.
fn trim(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let text = strings(&args[0])?;
    let mut out = StringBuilder::new();
    for i in 0..rows {
        match string_at(&text, i) {
            Some(t) => out.append_value(t.trim_matches(|c: char| c <= ' ')),
            None => out.append_null(),
        }
    }
    Ok(Arc::new(out.finish()))
}

/// `INITCAP(text)`: each word (run of characters between whitespace) with its first letter
/// upper-case and the rest lower-case, as ksqlDB does it (`some_string` is one word).
fn initcap(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let text = strings(&args[0])?;
    let mut out = StringBuilder::new();
    for i in 0..rows {
        match string_at(&text, i) {
            Some(t) => {
                let mut word_start = true;
                let capped: String = t
                    .chars()
                    .flat_map(|c| {
                        let mapped: Vec<char> = if word_start {
                            c.to_uppercase().collect()
                        } else {
                            c.to_lowercase().collect()
                        };
                        word_start = c.is_whitespace();
                        mapped
                    })
                    .collect();
                out.append_value(capped);
            }
            None => out.append_null(),
        }
    }
    Ok(Arc::new(out.finish()))
}

/// Pads `input` to `length` units on the left (or right) with `padding` repeated, or cuts it to
/// `length`, as ksqlDB's `LPAD` and `RPAD` do; `None` (SQL null) for a negative length or an
/// empty padding.
fn pad<T: Clone>(
    input: &[T],
    length: i64,
    padding: &[T],
    left: bool,
) -> Result<Option<Vec<T>>, String> {
    if length < 0 || padding.is_empty() {
        return Ok(None);
    }
    let name = if left { "LPAD" } else { "RPAD" };
    check_built_len(name, length as u128, "characters or bytes")?;
    let length = length as usize;
    if input.len() >= length {
        return Ok(Some(input[..length].to_vec()));
    }
    let fill: Vec<T> = padding
        .iter()
        .cycle()
        .take(length - input.len())
        .cloned()
        .collect();
    Ok(Some(if left {
        [fill.as_slice(), input].concat()
    } else {
        [input, fill.as_slice()].concat()
    }))
}

/// `LPAD`/`RPAD(text|bytes, length, padding)`: characters for text, bytes for bytes.
fn pad_either(args: &[ArrayRef], rows: usize, left: bool) -> Result<ArrayRef, String> {
    let length = longs(&args[1])?;
    if is_bytes(args[0].data_type()) {
        let (input, padding) = (binaries(&args[0])?, binaries(&args[2])?);
        let mut out = datafusion::arrow::array::BinaryBuilder::new();
        for i in 0..rows {
            let (j, k) = (at(i, input.len()), at(i, padding.len()));
            let padded = match (input.is_null(j), padding.is_null(k), long_at(&length, i)) {
                (false, false, Some(n)) => pad(input.value(j), n, padding.value(k), left)?,
                _ => None,
            };
            match padded {
                Some(v) => out.append_value(v),
                None => out.append_null(),
            }
        }
        return Ok(Arc::new(out.finish()));
    }
    let (input, padding) = (strings(&args[0])?, strings(&args[2])?);
    let mut out = StringBuilder::new();
    for i in 0..rows {
        let padded = match (
            string_at(&input, i),
            string_at(&padding, i),
            long_at(&length, i),
        ) {
            (Some(t), Some(p), Some(n)) => {
                let (t, p): (Vec<char>, Vec<char>) = (t.chars().collect(), p.chars().collect());
                pad(&t, n, &p, left)?.map(|v| v.into_iter().collect::<String>())
            }
            _ => None,
        };
        match padded {
            Some(v) => out.append_value(v),
            None => out.append_null(),
        }
    }
    Ok(Arc::new(out.finish()))
}

/// `REPLACE(text, target, replacement)`: every occurrence of `target` replaced, as Java's
/// `String.replace` (an empty target goes between every character). The result's length is
/// known before it is built, so a replacement that would multiply the text past
/// [`MAX_BUILT_LEN`](super::udf::MAX_BUILT_LEN) is refused without building it.
fn replace(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let (text, target, replacement) = (strings(&args[0])?, strings(&args[1])?, strings(&args[2])?);
    let mut out = StringBuilder::new();
    for i in 0..rows {
        let (Some(t), Some(from), Some(to)) = (
            string_at(&text, i),
            string_at(&target, i),
            string_at(&replacement, i),
        ) else {
            out.append_null();
            continue;
        };
        let occurrences = if from.is_empty() {
            t.chars().count() + 1
        } else {
            t.matches(from).count()
        };
        let length = t.len() as u128 - (occurrences * from.len()) as u128
            + occurrences as u128 * to.len() as u128;
        if length > t.len() as u128 {
            check_built_len("REPLACE", length, "bytes")?;
        }
        out.append_value(t.replace(from, to));
    }
    Ok(Arc::new(out.finish()))
}

fn lpad(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    pad_either(args, rows, true)
}

fn rpad(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    pad_either(args, rows, false)
}

/// `ELT(n, s1, s2, ...)`: the `n`th string (1-based), or null past either end.
fn elt(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let n = longs(&args[0])?;
    let texts: Vec<_> = args[1..].iter().map(strings).collect::<Result<_, _>>()?;
    let mut out = StringBuilder::new();
    for i in 0..rows {
        let picked = long_at(&n, i)
            .and_then(|n| usize::try_from(n).ok()?.checked_sub(1))
            .and_then(|at| texts.get(at))
            .and_then(|text| string_at(text, i));
        out.append_option(picked);
    }
    Ok(Arc::new(out.finish()))
}

/// `FIELD(s, s1, s2, ...)`: the 1-based position of the first string equal to `s`, or 0 (also
/// for a null `s`, which equals nothing).
fn field(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let texts: Vec<_> = args.iter().map(strings).collect::<Result<_, _>>()?;
    let mut out = datafusion::arrow::array::Int32Builder::with_capacity(rows);
    for i in 0..rows {
        let position = string_at(&texts[0], i).and_then(|wanted| {
            texts[1..]
                .iter()
                .position(|t| string_at(t, i) == Some(wanted))
        });
        out.append_value(position.map_or(0, |p| p as i32 + 1));
    }
    Ok(Arc::new(out.finish()))
}

/// ELT's and FIELD's arguments: a first one, then strings.
fn first_then_strings(
    name: &str,
    first_ok: fn(&DataType) -> bool,
    args: &[DataType],
) -> Result<(), String> {
    if args.first().is_some_and(first_ok) && args[1..].iter().all(super::udf::is_text) {
        return Ok(());
    }
    Err(super::udf::refused(name, args))
}

/// The functions of this file, as the catalogue registers them.
pub(super) fn functions() -> Vec<Scalar> {
    vec![
        function(
            "SPLIT",
            TypeSignature::OneOf(vec![
                TypeSignature::Exact(vec![DataType::Utf8, DataType::Utf8]),
                TypeSignature::Exact(vec![DataType::Binary, DataType::Binary]),
            ]),
            |args| {
                let item = match args.first() {
                    Some(t) if is_bytes(t) => DataType::Binary,
                    _ => DataType::Utf8,
                };
                Ok(DataType::List(Arc::new(Field::new_list_field(item, true))))
            },
            split,
        ),
        function("CHR", any1(), STRING, chr),
        function(
            "SUBSTRING",
            TypeSignature::OneOf(vec![TypeSignature::Any(2), TypeSignature::Any(3)]),
            text_or_bytes,
            substring,
        ),
        function("REPLACE", TypeSignature::String(3), STRING, replace),
        function("LPAD", TypeSignature::Any(3), text_or_bytes, lpad),
        function("RPAD", TypeSignature::Any(3), text_or_bytes, rpad),
        function("INITCAP", any1(), STRING, initcap),
        function("TRIM", any1(), STRING, trim),
        function(
            "ELT",
            TypeSignature::VariadicAny,
            |args| {
                first_then_strings("ELT", |t| t.is_integer() || *t == DataType::Null, args)?;
                Ok(DataType::Utf8)
            },
            elt,
        ),
        function(
            "FIELD",
            TypeSignature::VariadicAny,
            |args| {
                first_then_strings("FIELD", super::udf::is_text, args)?;
                Ok(DataType::Int32)
            },
            field,
        ),
    ]
}
