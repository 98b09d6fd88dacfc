//! Values as the Java libraries behind ksqlDB's `PRINT` write them: Avro's `GenericData`
//! `toString`, Java's `Double.toString`, Kafka's `Bytes.toString`, Protobuf's
//! `shortDebugString`, and JSON without the whitespace between tokens.

use apache_avro::types::Value as Avro;

/// An Avro value as `GenericData.toString` writes it (the deserializer applies no logical
/// types, so decimals are bytes and timestamps numbers).
pub fn avro(value: &Avro) -> String {
    let mut out = String::new();
    write_avro(value, &mut out);
    out
}

fn write_avro(value: &Avro, out: &mut String) {
    match value {
        Avro::Null => out.push_str("null"),
        Avro::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
        Avro::Int(n) | Avro::Date(n) | Avro::TimeMillis(n) => out.push_str(&n.to_string()),
        Avro::Long(n)
        | Avro::TimeMicros(n)
        | Avro::TimestampMillis(n)
        | Avro::TimestampMicros(n)
        | Avro::TimestampNanos(n)
        | Avro::LocalTimestampMillis(n)
        | Avro::LocalTimestampMicros(n)
        | Avro::LocalTimestampNanos(n) => out.push_str(&n.to_string()),
        Avro::Float(n) => out.push_str(&java_double(f64::from(*n), true)),
        Avro::Double(n) => out.push_str(&java_double(*n, false)),
        Avro::String(s) | Avro::Enum(_, s) => quoted(s, out),
        Avro::Uuid(u) => quoted(&u.to_string(), out),
        Avro::Bytes(bytes) => avro_bytes(bytes, out),
        Avro::Decimal(decimal) => {
            let bytes: Vec<u8> = decimal.try_into().unwrap_or_default();
            avro_bytes(&bytes, out);
        }
        Avro::BigDecimal(decimal) => quoted(&decimal.to_string(), out),
        Avro::Fixed(_, bytes) => {
            let items: Vec<String> = bytes.iter().map(|b| (*b as i8).to_string()).collect();
            out.push('[');
            out.push_str(&items.join(", "));
            out.push(']');
        }
        Avro::Duration(d) => {
            let bytes: [u8; 12] = (*d).into();
            let items: Vec<String> = bytes.iter().map(|b| (*b as i8).to_string()).collect();
            out.push('[');
            out.push_str(&items.join(", "));
            out.push(']');
        }
        Avro::Union(_, inner) => write_avro(inner, out),
        Avro::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_avro(item, out);
            }
            out.push(']');
        }
        Avro::Map(entries) => {
            // Java's HashMap has no order to match; sorted keys at least print alike each time.
            let mut entries: Vec<_> = entries.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            object(entries.into_iter().map(|(k, v)| (k.as_str(), v)), out);
        }
        Avro::Record(fields) => object(fields.iter().map(|(k, v)| (k.as_str(), v)), out),
    }
}

fn object<'a>(entries: impl Iterator<Item = (&'a str, &'a Avro)>, out: &mut String) {
    out.push('{');
    for (i, (name, value)) in entries.enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        quoted(name, out);
        out.push_str(": ");
        write_avro(value, out);
    }
    out.push('}');
}

/// `{"bytes": "..."}` with each byte as the character of its code, as Avro writes a buffer.
fn avro_bytes(bytes: &[u8], out: &mut String) {
    out.push_str("{\"bytes\": \"");
    out.extend(bytes.iter().map(|b| char::from(*b)));
    out.push_str("\"}");
}

/// A string quoted and escaped as Avro's `writeEscapedString` does.
fn quoted(text: &str, out: &mut String) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c <= '\u{1f}'
                || ('\u{7f}'..='\u{9f}').contains(&c)
                || ('\u{2000}'..='\u{20ff}').contains(&c) =>
            {
                out.push_str(&format!("\\u{:04X}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A double as Java's `Double.toString` (or, for a float's value, `Float.toString`) writes it:
/// plain between 10^-3 and 10^7, else `d.dddE±n`, always with a fractional digit.
pub fn java_double(value: f64, float: bool) -> String {
    if value.is_nan() {
        return "NaN".into();
    }
    if value.is_infinite() {
        return if value > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if value == 0.0 {
        return if value.is_sign_negative() {
            "-0.0"
        } else {
            "0.0"
        }
        .into();
    }
    // The shortest digits that read back as the same value, as `{:e}` gives them.
    let scientific = if float {
        format!("{:e}", value as f32)
    } else {
        format!("{value:e}")
    };
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if (-3..7).contains(&exponent) {
        let point = exponent + 1;
        let (whole, fraction) = if point <= 0 {
            (
                "0".to_string(),
                format!("{}{digits}", "0".repeat(point.unsigned_abs() as usize)),
            )
        } else {
            let point = point as usize;
            let padded = format!("{digits:0<point$}");
            let (w, f) = padded.split_at(point);
            (w.to_string(), f.to_string())
        };
        let fraction = if fraction.is_empty() { "0" } else { &fraction };
        format!("{sign}{whole}.{fraction}")
    } else {
        let (first, rest) = digits.split_at(1);
        let rest = if rest.is_empty() { "0" } else { rest };
        format!("{sign}{first}.{rest}E{exponent}")
    }
}

/// Bytes as Kafka's `Bytes.toString`: printable ASCII as is (but `\`), others as `\xHH`.
pub fn kafka_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for b in bytes {
        if (b' '..=b'~').contains(b) && *b != b'\\' {
            out.push(char::from(*b));
        } else {
            out.push_str(&format!("\\x{b:02X}"));
        }
    }
    out
}

/// A message in Protobuf's short text format (`shortDebugString`): `a: 1 b { c: "x" }`.
pub fn protobuf(message: &prost_reflect::DynamicMessage) -> String {
    // The pretty text format puts each field and brace on a line of its own, and escapes line
    // breaks inside strings, so joining its trimmed lines gives the short form.
    format!("{message:#}")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// JSON text without the whitespace between its tokens (`text` is valid JSON), keeping the
/// order of object keys, as Jackson's `JsonNode.toString` writes what it read.
pub fn compact_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !c.is_whitespace() {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_print_as_java_prints_them() {
        for (value, text) in [
            (1.0, "1.0"),
            (9.5, "9.5"),
            (0.001, "0.001"),
            (0.0001, "1.0E-4"),
            (1234567.0, "1234567.0"),
            (12345678.0, "1.2345678E7"),
            (-1.5e300, "-1.5E300"),
            (100.0, "100.0"),
            (0.1 + 0.2, "0.30000000000000004"),
            (f64::NAN, "NaN"),
            (-0.0, "-0.0"),
        ] {
            assert_eq!(java_double(value, false), text, "{value}");
        }
        assert_eq!(java_double(f64::from(0.1f32), true), "0.1");
    }

    #[test]
    fn bytes_avro_and_json_print_as_the_java_libraries_do() {
        assert_eq!(kafka_bytes(b"a\\b\x00\xff~"), "a\\x5Cb\\x00\\xFF~");
        let record = Avro::Record(vec![
            ("id".into(), Avro::Long(1)),
            (
                "name".into(),
                Avro::Union(1, Box::new(Avro::String("a\"b".into()))),
            ),
            ("tags".into(), Avro::Array(vec![Avro::Int(1), Avro::Int(2)])),
            ("none".into(), Avro::Union(0, Box::new(Avro::Null))),
            ("price".into(), Avro::Double(9.5)),
        ]);
        assert_eq!(
            avro(&record),
            r#"{"id": 1, "name": "a\"b", "tags": [1, 2], "none": null, "price": 9.5}"#
        );
        assert_eq!(
            compact_json("{ \"b\" : [1, 2],\n \"a\": \"x y\\\" z\" }"),
            r#"{"b":[1,2],"a":"x y\" z"}"#
        );
    }
}
