//! JSON functions over text: `EXTRACTJSONFIELD`, `IS_JSON_STRING`, `JSON_ARRAY_LENGTH`,
//! `JSON_ARRAY_CONTAINS`, `JSON_KEYS`, `JSON_ITEMS`, `JSON_RECORDS` and `JSON_CONCAT`, read
//! with serde_json as ksqlDB reads them with Jackson (the first JSON value of the text, key
//! order kept: values are cut from the compacted text rather than re-serialized).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, ListBuilder, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::TypeSignature;

use super::udf::{
    INT, STRING, STRING_LIST, Scalar, any1, at, doubles, function, long_at, longs, string_at,
    string_pairs, strings,
};

/// `EXTRACTJSONFIELD(json, '$.path')`: the value at a JSON path, as a string.
fn extract_json_field(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let (json, path) = (strings(&args[0])?, strings(&args[1])?);
    let mut out = StringBuilder::new();
    for i in 0..rows {
        let found = match (string_at(&json, i), string_at(&path, i)) {
            (Some(j), Some(p)) => serde_json_path(j, p),
            _ => None,
        };
        out.append_option(found);
    }
    Ok(Arc::new(out.finish()))
}

/// Follows a simple JSON path (`$.a.b[0]`, `$['a']`) through a JSON text. The value found is
/// cut from the compacted text, so numbers stay as written (`1.23450`), as ksqlDB reads them
/// with big decimals, and objects keep their key order; a string comes out unquoted.
fn serde_json_path(json: &str, path: &str) -> Option<String> {
    // Like Jackson under ksqlDB, read the first JSON value and ignore whatever follows it.
    let (_, mut current) = first_json_value(json)?;
    let rest = path.trim().strip_prefix('$')?;
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        let next = match c {
            '.' => {
                let mut name = String::new();
                while let Some(&n) = chars.peek() {
                    if n == '.' || n == '[' {
                        break;
                    }
                    name.push(n);
                    chars.next();
                }
                member_text(&current, &name)?
            }
            '[' => {
                let mut inner = String::new();
                for n in chars.by_ref() {
                    if n == ']' {
                        break;
                    }
                    inner.push(n);
                }
                let inner = inner.trim();
                match inner
                    .strip_prefix('\'')
                    .and_then(|s| s.strip_suffix('\''))
                    .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
                {
                    Some(quoted) => member_text(&current, quoted)?,
                    None if current.starts_with('[') => top_level_items(&current)
                        .get(inner.parse::<usize>().ok()?)?
                        .to_string(),
                    None => return None,
                }
            }
            _ => return None,
        };
        current = next;
    }
    match current.as_str() {
        "null" => None,
        text if text.starts_with('"') => serde_json::from_str::<String>(text).ok(),
        text => Some(text.to_string()),
    }
}

/// The compact text of member `name` of a compact JSON object (the last, if repeated);
/// `None` when it is not an object or has no such member.
fn member_text(object: &str, name: &str) -> Option<String> {
    if !object.starts_with('{') {
        return None;
    }
    top_level_items(object)
        .into_iter()
        .rev()
        .filter_map(object_member)
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.to_string())
}

/// The keys of a JSON object in the order written (values skipped), or `None` when the text
/// is not one.
fn json_object_keys(text: &str) -> Option<Vec<String>> {
    struct Keys;
    impl<'de> serde::de::Visitor<'de> for Keys {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut keys = Vec::new();
            while let Some((key, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                keys.push(key);
            }
            Ok(keys)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let keys = serde::Deserializer::deserialize_map(&mut de, Keys).ok()?;
    de.end().ok()?;
    Some(keys)
}

/// `IS_JSON_STRING(text)`: whether the text is a JSON value; false for null or empty.
fn is_json_string(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let text = strings(&args[0])?;
    let out: datafusion::arrow::array::BooleanArray = (0..rows)
        .map(|i| {
            Some(
                string_at(&text, i)
                    .is_some_and(|t| serde_json::from_str::<serde::de::IgnoredAny>(t).is_ok()),
            )
        })
        .collect();
    Ok(Arc::new(out))
}

/// `JSON_ARRAY_LENGTH(text)`: the length of a JSON array; null for anything else.
fn json_array_length(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let text = strings(&args[0])?;
    let out: datafusion::arrow::array::Int32Array = (0..rows)
        .map(|i| {
            let t = string_at(&text, i)?;
            match serde_json::from_str::<serde_json::Value>(t).ok()? {
                serde_json::Value::Array(items) => i32::try_from(items.len()).ok(),
                _ => None,
            }
        })
        .collect();
    Ok(Arc::new(out))
}

/// `JSON_ARRAY_CONTAINS(text, value)`: whether a JSON array holds an element equal to the
/// value (a number to a number, a string to a string, a boolean to a boolean, null to null);
/// false for anything that is not an array.
fn json_array_contains(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    use serde_json::Value;
    let text = strings(&args[0])?;
    let wanted = &args[1];
    let wanted_at = |i: usize| -> Result<Value, String> {
        let j = at(i, wanted.len());
        if wanted.is_null(j) {
            return Ok(Value::Null);
        }
        let one = wanted.slice(j, 1);
        Ok(match one.data_type() {
            DataType::Boolean => {
                let b = cast(&one, &DataType::Boolean).map_err(|e| e.to_string())?;
                let b = b
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::BooleanArray>()
                    .ok_or("expected a boolean")?;
                Value::Bool(b.value(0))
            }
            t if t.is_integer() => Value::from(long_at(&longs(&one)?, 0).unwrap_or_default()),
            t if t.is_numeric() => {
                let d = doubles(&one)?;
                serde_json::Number::from_f64(d.value(0)).map_or(Value::Null, Value::Number)
            }
            _ => Value::String(
                string_at(&strings(&one)?, 0)
                    .unwrap_or_default()
                    .to_string(),
            ),
        })
    };
    let same = |a: &Value, b: &Value| match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    };
    let mut out = datafusion::arrow::array::BooleanBuilder::with_capacity(rows);
    for i in 0..rows {
        let wanted = wanted_at(i)?;
        let found = string_at(&text, i)
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
            .is_some_and(|v| match v {
                Value::Array(items) => items.iter().any(|item| same(item, &wanted)),
                _ => false,
            });
        out.append_value(found);
    }
    Ok(Arc::new(out.finish()))
}

/// A list of strings per row of a text argument: `pieces` gives a row's list, or `None` for a
/// null list.
fn text_to_string_lists(
    args: &[ArrayRef],
    rows: usize,
    pieces: impl Fn(&str) -> Option<Vec<String>>,
) -> Result<ArrayRef, String> {
    let text = strings(&args[0])?;
    let mut out = ListBuilder::new(StringBuilder::new());
    for i in 0..rows {
        match string_at(&text, i).and_then(&pieces) {
            Some(list) => {
                for piece in list {
                    out.values().append_value(piece);
                }
                out.append(true);
            }
            None => out.append(false),
        }
    }
    Ok(Arc::new(out.finish()))
}

/// `JSON_KEYS(text)`: a JSON object's keys in order; null for anything else.
fn json_keys(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    text_to_string_lists(args, rows, json_object_keys)
}

/// `JSON_ITEMS(text)`: the items of a JSON array, each as compact JSON text with its object
/// keys in the order written; null when the text is not a JSON array.
fn json_items(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    text_to_string_lists(args, rows, json_array_items)
}

/// The first JSON value of `text` (as Jackson reads it under ksqlDB, ignoring what follows),
/// parsed and as compact text; `None` when the text does not start with one.
fn first_json_value(text: &str) -> Option<(serde_json::Value, String)> {
    let mut values = serde_json::Deserializer::from_str(text).into_iter::<serde_json::Value>();
    let value = values.next()?.ok()?;
    let end = values.byte_offset();
    Some((value, compact_json(&text[..end])))
}

/// The items of a JSON array or the members of an object (`key: value`) as compact text, in
/// the order written: `compact` without its brackets, cut at the commas between them.
fn top_level_items(compact: &str) -> Vec<&str> {
    let inner = &compact[1..compact.len().saturating_sub(1).max(1)];
    let mut items = Vec::new();
    let (mut depth, mut in_string, mut escaped, mut start) = (0usize, false, false, 0usize);
    for (i, c) in inner.char_indices() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '[' | '{' => depth += 1,
            ']' | '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if !inner.is_empty() {
        items.push(&inner[start..]);
    }
    items
}

/// A member of a compact JSON object, `"key":value`, as its key and its value's text.
fn object_member(member: &str) -> Option<(String, &str)> {
    let mut keys = serde_json::Deserializer::from_str(member).into_iter::<String>();
    let key = keys.next()?.ok()?;
    let value = member[keys.byte_offset()..].strip_prefix(':')?;
    Some((key, value))
}

/// The items of a JSON array as compact text, in order; `None` unless `text` is a JSON array.
fn json_array_items(text: &str) -> Option<Vec<String>> {
    // Parsing checks the text is JSON; the items are then cut from the text itself, which
    // keeps each object's keys in the order written.
    if !serde_json::from_str::<serde_json::Value>(text)
        .ok()?
        .is_array()
    {
        return None;
    }
    let compact = compact_json(text);
    Some(
        top_level_items(&compact)
            .into_iter()
            .map(str::to_string)
            .collect(),
    )
}

/// `JSON_RECORDS(text)`: a JSON object's members as a map from key to the value's compact JSON
/// text, in the order written; null for anything else.
fn json_records(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let text = strings(&args[0])?;
    let mut values: Vec<String> = Vec::new();
    let mut out = Vec::with_capacity(rows);
    for i in 0..rows {
        let object = string_at(&text, i)
            .and_then(first_json_value)
            .filter(|(value, _)| value.is_object());
        let Some((_, compact)) = object else {
            out.push(None);
            continue;
        };
        let mut entries = Vec::new();
        for member in top_level_items(&compact) {
            let (key, value) = object_member(member).ok_or("a JSON member without a key")?;
            values.push(value.to_string());
            entries.push((key, 0, values.len() - 1));
        }
        out.push(Some(entries));
    }
    let values = datafusion::arrow::array::StringArray::from(values);
    super::collections::build_map(out, &[&values], &DataType::Utf8)
}

/// Concatenates parsed JSON values as PostgreSQL's `||`: objects merge (a later key's value
/// wins, in the first key's place), anything else concatenates as arrays (a non-array is one
/// item); one value alone is itself. Compact JSON text.
fn concat_json(values: &[(serde_json::Value, String)]) -> String {
    if values.len() == 1 {
        return values[0].1.clone();
    }
    if values.iter().all(|(v, _)| v.is_object()) {
        let mut members: Vec<(String, &str)> = Vec::new();
        for (_, compact) in values {
            for member in top_level_items(compact) {
                let Some((key, value)) = object_member(member) else {
                    continue;
                };
                match members.iter_mut().find(|(k, _)| *k == key) {
                    Some(slot) => slot.1 = value,
                    None => members.push((key, value)),
                }
            }
        }
        let body: Vec<String> = members
            .iter()
            .map(|(k, v)| format!("{}:{v}", serde_json::Value::from(k.as_str())))
            .collect();
        return format!("{{{}}}", body.join(","));
    }
    let mut items: Vec<&str> = Vec::new();
    for (value, compact) in values {
        if value.is_array() {
            items.extend(top_level_items(compact));
        } else {
            items.push(compact);
        }
    }
    format!("[{}]", items.join(","))
}

/// `JSON_CONCAT(text, ...)`: the texts' JSON values concatenated (see [`concat_json`]); null
/// when any is null, and an error when any is not JSON.
fn json_concat(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let texts: Vec<_> = args.iter().map(strings).collect::<Result<_, _>>()?;
    let mut out = StringBuilder::new();
    for i in 0..rows {
        let Some(row) = texts
            .iter()
            .map(|t| string_at(t, i))
            .collect::<Option<Vec<&str>>>()
        else {
            out.append_null();
            continue;
        };
        let values = row
            .iter()
            .map(|t| first_json_value(t).ok_or_else(|| format!("Invalid JSON format: {t}")))
            .collect::<Result<Vec<_>, _>>()?;
        if values.is_empty() {
            out.append_null();
        } else {
            out.append_value(concat_json(&values));
        }
    }
    Ok(Arc::new(out.finish()))
}

/// JSON text without the whitespace between tokens.
fn compact_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            out.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
        } else if !c.is_whitespace() {
            in_string = c == '"';
            out.push(c);
        }
    }
    out
}

/// The functions of this file, as the catalogue registers them.
pub(super) fn functions() -> Vec<Scalar> {
    vec![
        function(
            "EXTRACTJSONFIELD",
            string_pairs(),
            STRING,
            extract_json_field,
        ),
        function(
            "IS_JSON_STRING",
            any1(),
            |_| Ok(DataType::Boolean),
            is_json_string,
        ),
        function("JSON_ARRAY_LENGTH", any1(), INT, json_array_length),
        function(
            "JSON_ARRAY_CONTAINS",
            TypeSignature::Any(2),
            |_| Ok(DataType::Boolean),
            json_array_contains,
        ),
        function("JSON_KEYS", any1(), STRING_LIST, json_keys),
        function(
            "JSON_ITEMS",
            TypeSignature::Exact(vec![DataType::Utf8]),
            STRING_LIST,
            json_items,
        ),
        function(
            "JSON_RECORDS",
            TypeSignature::Exact(vec![DataType::Utf8]),
            |_| Ok(super::collections::map_type(&DataType::Utf8)),
            json_records,
        ),
        function(
            "JSON_CONCAT",
            TypeSignature::Variadic(vec![DataType::Utf8]),
            STRING,
            json_concat,
        ),
    ]
}
