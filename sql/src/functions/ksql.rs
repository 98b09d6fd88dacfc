//! ksqlDB functions that DataFusion lacks or defines differently, as `ScalarUDF`s.
//!
//! Each function is a plain description: its name, its signature, how its return type follows
//! from its argument types, and a batch implementation over Arrow arrays.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, Int32Array, Int64Array, ListBuilder, StringArray, StringBuilder,
    TimestampMillisecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};

use base64::Engine as _;

use crate::functions::time::{
    Zone, format_timestamp, format_timestamp_in, parse_timestamp, parse_timestamp_in,
};

type ReturnType = fn(&[DataType]) -> Result<DataType, String>;
type Invoke = fn(&[ArrayRef], usize) -> Result<ArrayRef, String>;

/// A ksqlDB scalar function implemented over Arrow arrays.
#[derive(Debug)]
struct KsqlFunction {
    name: &'static str,
    signature: Signature,
    return_type: ReturnType,
    invoke: Invoke,
}

// Names are unique in the catalogue, so a function is known by its name.
impl PartialEq for KsqlFunction {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for KsqlFunction {}

impl std::hash::Hash for KsqlFunction {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl ScalarUDFImpl for KsqlFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        (self.return_type)(args).map_err(DataFusionError::Plan)
    }

    /// A row the function fails on is null, as a ksqlDB function that throws: the rest of the
    /// expression, and the record, go on.
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let rows = args.number_rows;
        match (self.invoke)(&arrays, rows) {
            Ok(array) => return Ok(ColumnarValue::Array(array)),
            Err(e) => tracing::debug!(function = self.name, error = %e, "evaluating row by row"),
        }
        let return_type = args.return_field.data_type();
        let mut pieces: Vec<ArrayRef> = Vec::with_capacity(rows);
        for i in 0..rows {
            let row: Vec<ArrayRef> = arrays
                .iter()
                .map(|a| {
                    if a.len() == 1 {
                        a.clone()
                    } else {
                        a.slice(i, 1)
                    }
                })
                .collect();
            match (self.invoke)(&row, 1) {
                Ok(a) => pieces.push(a),
                Err(e) => {
                    crate::functions::report_function_error(crate::functions::FunctionError {
                        function: self.name,
                        row: i,
                        rows,
                        message: e,
                    });
                    pieces.push(datafusion::arrow::array::new_null_array(return_type, 1));
                }
            }
        }
        let refs: Vec<&dyn Array> = pieces.iter().map(|a| a.as_ref()).collect();
        datafusion::arrow::compute::concat(&refs)
            .map(ColumnarValue::Array)
            .map_err(|e| DataFusionError::Execution(e.to_string()))
    }
}

fn function(
    name: &'static str,
    signature: TypeSignature,
    return_type: ReturnType,
    invoke: Invoke,
) -> Arc<ScalarUDF> {
    let volatility = if matches!(name, "UNIX_TIMESTAMP" | "UNIX_DATE") {
        Volatility::Volatile
    } else {
        Volatility::Immutable
    };
    Arc::new(ScalarUDF::from(KsqlFunction {
        name,
        signature: Signature::new(signature, volatility),
        return_type,
        invoke,
    }))
}

fn strings(array: &ArrayRef) -> Result<StringArray, String> {
    let cast = cast(array, &DataType::Utf8).map_err(|e| e.to_string())?;
    cast.as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .ok_or_else(|| "expected a string".to_string())
}

fn binaries(array: &ArrayRef) -> Result<datafusion::arrow::array::BinaryArray, String> {
    let cast = cast(array, &DataType::Binary).map_err(|e| e.to_string())?;
    cast.as_any()
        .downcast_ref::<datafusion::arrow::array::BinaryArray>()
        .cloned()
        .ok_or_else(|| "expected bytes".to_string())
}

fn longs(array: &ArrayRef) -> Result<Int64Array, String> {
    let cast = cast(array, &DataType::Int64).map_err(|e| e.to_string())?;
    cast.as_any()
        .downcast_ref::<Int64Array>()
        .cloned()
        .ok_or_else(|| "expected a number".to_string())
}

/// The value at row `i` of an argument that may be a one-row constant.
fn at(i: usize, len: usize) -> usize {
    if len == 1 { 0 } else { i }
}

fn string_at(a: &StringArray, i: usize) -> Option<&str> {
    let i = at(i, a.len());
    (!a.is_null(i)).then(|| a.value(i))
}

fn long_at(a: &Int64Array, i: usize) -> Option<i64> {
    let i = at(i, a.len());
    (!a.is_null(i)).then(|| a.value(i))
}

const STRING: fn(&[DataType]) -> Result<DataType, String> = |_| Ok(DataType::Utf8);
const BIGINT: fn(&[DataType]) -> Result<DataType, String> = |_| Ok(DataType::Int64);
const INT: fn(&[DataType]) -> Result<DataType, String> = |_| Ok(DataType::Int32);
const STRING_LIST: fn(&[DataType]) -> Result<DataType, String> = |_| {
    Ok(DataType::List(Arc::new(Field::new_list_field(
        DataType::Utf8,
        true,
    ))))
};

fn string_pairs() -> TypeSignature {
    TypeSignature::OneOf(vec![
        TypeSignature::Exact(vec![DataType::Utf8, DataType::Utf8]),
        TypeSignature::Exact(vec![DataType::Utf8, DataType::Utf8, DataType::Utf8]),
    ])
}

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

/// Follows a simple JSON path (`$.a.b[0]`, `$['a']`) through a JSON text.
fn serde_json_path(json: &str, path: &str) -> Option<String> {
    // Like Jackson under ksqlDB, read the first JSON value and ignore whatever follows it.
    let value: serde_json::Value = serde_json::Deserializer::from_str(json)
        .into_iter()
        .next()?
        .ok()?;
    let mut current = &value;
    let rest = path.trim().strip_prefix('$')?;
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '.' => {
                let mut name = String::new();
                while let Some(&n) = chars.peek() {
                    if n == '.' || n == '[' {
                        break;
                    }
                    name.push(n);
                    chars.next();
                }
                current = current.get(name.as_str())?;
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
                if let Some(quoted) = inner
                    .strip_prefix('\'')
                    .and_then(|s| s.strip_suffix('\''))
                    .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
                {
                    current = current.get(quoted)?;
                } else {
                    current = current.get(inner.parse::<usize>().ok()?)?;
                }
            }
            _ => return None,
        }
    }
    match current {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

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

/// `ARRAY_LENGTH(array)`: the element count as an INT.
fn array_length(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let array = &args[0];
    let lengths: Int32Array = (0..rows)
        .map(|i| {
            let i = at(i, array.len());
            if array.is_null(i) {
                return None;
            }
            match array.data_type() {
                DataType::List(_) => array
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::ListArray>()
                    .map(|l| l.value_length(i)),
                _ => None,
            }
        })
        .collect();
    Ok(Arc::new(lengths))
}

/// `STRINGTOTIMESTAMP(text, pattern)`: milliseconds since the epoch.
fn string_to_timestamp(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let (text, pattern) = (strings(&args[0])?, strings(&args[1])?);
    let mut zones = ZoneArgument::new(args.get(2))?;
    let mut out = Vec::with_capacity(rows);
    for i in 0..rows {
        out.push(match (string_at(&text, i), string_at(&pattern, i)) {
            (Some(t), Some(p)) => match zones.at(i)? {
                Some(zone) => Some(parse_timestamp_in(t, p, zone)?),
                None => None,
            },
            _ => None,
        });
    }
    Ok(Arc::new(Int64Array::from(out)))
}

/// An optional time-zone argument (the last of several functions), read once per distinct
/// text rather than once per row. Without the argument the zone is UTC.
struct ZoneArgument {
    texts: Option<StringArray>,
    last: Option<(String, Zone)>,
}

impl ZoneArgument {
    fn new(argument: Option<&ArrayRef>) -> Result<Self, String> {
        Ok(ZoneArgument {
            texts: argument.map(strings).transpose()?,
            last: None,
        })
    }

    /// The zone of row `i`; `None` when the argument is null there.
    fn at(&mut self, i: usize) -> Result<Option<Zone>, String> {
        let Some(texts) = &self.texts else {
            return Ok(Some(Zone::UTC));
        };
        let Some(text) = string_at(texts, i) else {
            return Ok(None);
        };
        if let Some((seen, zone)) = &self.last
            && seen == text
        {
            return Ok(Some(*zone));
        }
        let zone = Zone::parse(text)?;
        self.last = Some((text.to_string(), zone));
        Ok(Some(zone))
    }
}

/// `CONVERT_TZ(timestamp, from_zone, to_zone)`: the timestamp moved by the difference between
/// the two zones' offsets at that instant, as ksqlDB computes it.
fn convert_tz(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let millis = longs(
        &cast(&args[0], &DataType::Timestamp(TimeUnit::Millisecond, None))
            .and_then(|t| cast(&t, &DataType::Int64))
            .map_err(|e| e.to_string())?,
    )?;
    let (mut from, mut to) = (
        ZoneArgument::new(Some(&args[1]))?,
        ZoneArgument::new(Some(&args[2]))?,
    );
    let mut out = Vec::with_capacity(rows);
    for i in 0..rows {
        out.push(match (long_at(&millis, i), from.at(i)?, to.at(i)?) {
            (Some(ms), Some(from), Some(to)) => {
                Some(ms + to.offset_ms_at(ms) - from.offset_ms_at(ms))
            }
            _ => None,
        });
    }
    Ok(Arc::new(TimestampMillisecondArray::from(out)))
}

/// `PARSE_TIME(text, pattern)`: a TIME, the milliseconds of the day the text gives.
fn parse_time(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let (text, pattern) = (strings(&args[0])?, strings(&args[1])?);
    let mut out = Vec::with_capacity(rows);
    for i in 0..rows {
        out.push(match (string_at(&text, i), string_at(&pattern, i)) {
            (Some(t), Some(p)) => Some(parse_timestamp(t, p)?.rem_euclid(DAY_MS) as i32),
            _ => None,
        });
    }
    Ok(Arc::new(
        datafusion::arrow::array::Time32MillisecondArray::from(out),
    ))
}

/// A regular-expression argument, compiled once per distinct pattern rather than per row.
#[derive(Default)]
struct RegexCache(Option<(String, regex::Regex)>);

impl RegexCache {
    fn get(&mut self, pattern: &str) -> Result<&regex::Regex, String> {
        if self.0.as_ref().is_none_or(|(seen, _)| seen != pattern) {
            let re = regex::Regex::new(pattern)
                .map_err(|e| format!("Invalid regular expression: {e}"))?;
            self.0 = Some((pattern.to_string(), re));
        }
        match &self.0 {
            Some((_, re)) => Ok(re),
            None => Err("no regular expression".to_string()),
        }
    }
}

/// `REGEXP_REPLACE(text, regex, replacement)`: every match replaced, as Java's `replaceAll`,
/// whose replacement refers to groups as `$1` or `${name}` and escapes with a backslash.
fn regexp_replace(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let (text, pattern, replacement) = (strings(&args[0])?, strings(&args[1])?, strings(&args[2])?);
    let mut out = StringBuilder::new();
    let mut regexes = RegexCache::default();
    for i in 0..rows {
        let (Some(t), Some(p), Some(r)) = (
            string_at(&text, i),
            string_at(&pattern, i),
            string_at(&replacement, i),
        ) else {
            out.append_null();
            continue;
        };
        let re = regexes.get(p)?;
        out.append_value(re.replace_all(t, java_replacement(r)?.as_str()));
    }
    Ok(Arc::new(out.finish()))
}

/// Rewrites a Java replacement string (`$1`, `${name}`, `\$`) in the `regex` crate's syntax.
fn java_replacement(java: &str) -> Result<String, String> {
    let mut out = String::with_capacity(java.len());
    let mut chars = java.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('$') => out.push_str("$$"),
                Some(escaped) => out.push(escaped),
                None => return Err("character to be escaped is missing".to_string()),
            },
            '$' => match chars.peek() {
                Some('{') => {
                    chars.next();
                    let name: String = chars.by_ref().take_while(|c| *c != '}').collect();
                    out.push_str(&format!("${{{name}}}"));
                }
                Some(d) if d.is_ascii_digit() => {
                    let mut group = String::new();
                    while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                        group.push(*d);
                        chars.next();
                    }
                    out.push_str(&format!("${{{group}}}"));
                }
                _ => return Err("Illegal group reference in the replacement".to_string()),
            },
            other => out.push(other),
        }
    }
    Ok(out)
}

/// `REGEXP_SPLIT_TO_ARRAY(text, regex)`: the text split around every match of the regular
/// expression, keeping empty pieces, as Java's `Pattern.split(text, -1)`.
fn regexp_split_to_array(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let (text, pattern) = (strings(&args[0])?, strings(&args[1])?);
    let mut out = ListBuilder::new(StringBuilder::new());
    let mut regexes = RegexCache::default();
    for i in 0..rows {
        let (Some(t), Some(p)) = (string_at(&text, i), string_at(&pattern, i)) else {
            out.append_null();
            continue;
        };
        let re = regexes.get(p)?;
        let mut start = 0;
        for m in re.find_iter(t) {
            // Java never splits off an empty first piece at a zero-width match at the start.
            if m.start() == 0 && m.end() == 0 {
                continue;
            }
            out.values().append_value(&t[start..m.start()]);
            start = m.end();
        }
        out.values().append_value(&t[start..]);
        out.append(true);
    }
    Ok(Arc::new(out.finish()))
}

/// `PARSE_TIMESTAMP(text, pattern)`: a TIMESTAMP.
fn parse_timestamp_fn(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let millis = string_to_timestamp(args, rows)?;
    let millis = longs(&millis)?;
    Ok(Arc::new(TimestampMillisecondArray::from(
        millis.iter().collect::<Vec<_>>(),
    )))
}

/// `TIMESTAMPTOSTRING(millis, pattern)` and `FORMAT_TIMESTAMP(timestamp, pattern)`.
fn timestamp_to_string(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let millis = match args[0].data_type() {
        DataType::Timestamp(..) => {
            let ts = cast(&args[0], &DataType::Timestamp(TimeUnit::Millisecond, None))
                .map_err(|e| e.to_string())?;
            let ts = ts
                .as_any()
                .downcast_ref::<TimestampMillisecondArray>()
                .cloned()
                .ok_or("expected a timestamp")?;
            Int64Array::from(ts.iter().collect::<Vec<_>>())
        }
        _ => longs(&args[0])?,
    };
    let pattern = strings(&args[1])?;
    let mut zones = ZoneArgument::new(args.get(2))?;
    let mut out = StringBuilder::new();
    for i in 0..rows {
        match (long_at(&millis, i), string_at(&pattern, i), zones.at(i)?) {
            (Some(ms), Some(p), Some(zone)) => out.append_value(format_timestamp_in(ms, p, zone)?),
            _ => out.append_null(),
        }
    }
    Ok(Arc::new(out.finish()))
}

const DAY_MS: i64 = 86_400_000;

/// `STRINGTODATE(text, pattern)`: days since the epoch as an INT.
fn string_to_date(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let millis = longs(&string_to_timestamp(args, rows)?)?;
    Ok(Arc::new(Int32Array::from(
        millis
            .iter()
            .map(|m| m.map(|m| m.div_euclid(DAY_MS) as i32))
            .collect::<Vec<_>>(),
    )))
}

/// `PARSE_DATE(text, pattern)`: a DATE, which is `STRINGTODATE`'s day count typed as a date.
fn parse_date(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    cast(&string_to_date(args, rows)?, &DataType::Date32).map_err(|e| e.to_string())
}

/// `DATETOSTRING(days, pattern)` and `FORMAT_DATE(date, pattern)`.
fn date_to_string(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let days = match args[0].data_type() {
        DataType::Date32 => {
            let d = cast(&args[0], &DataType::Int32).map_err(|e| e.to_string())?;
            longs(&d)?
        }
        _ => longs(&args[0])?,
    };
    let pattern = strings(&args[1])?;
    let mut out = StringBuilder::new();
    for i in 0..rows {
        match (long_at(&days, i), string_at(&pattern, i)) {
            (Some(d), Some(p)) => out.append_value(format_timestamp(d * DAY_MS, p)?),
            _ => out.append_null(),
        }
    }
    Ok(Arc::new(out.finish()))
}

/// `AS_VALUE(x)`: a copy of a key column to put in the value.
fn identity(args: &[ArrayRef], _rows: usize) -> Result<ArrayRef, String> {
    Ok(args[0].clone())
}

/// `SIGN(x)`: -1, 0 or 1 as an INT.
fn sign(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let values = cast(&args[0], &DataType::Float64).map_err(|e| e.to_string())?;
    let values = values
        .as_any()
        .downcast_ref::<datafusion::arrow::array::Float64Array>()
        .cloned()
        .ok_or("expected a number")?;
    Ok(Arc::new(Int32Array::from(
        (0..rows)
            .map(|i| {
                let i = at(i, values.len());
                (!values.is_null(i)).then(|| {
                    let v = values.value(i);
                    if v > 0.0 {
                        1
                    } else if v < 0.0 {
                        -1
                    } else {
                        0
                    }
                })
            })
            .collect::<Vec<_>>(),
    )))
}

/// `UNIX_TIMESTAMP()`: now, in milliseconds.
fn unix_timestamp(_args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let now = chrono::Utc::now().timestamp_millis();
    Ok(Arc::new(Int64Array::from(vec![now; rows])))
}

/// `UNIX_DATE()`: today, in days since the epoch.
/// `UNIX_DATE()`: today as days since the epoch; `UNIX_DATE(date)`: that date's days.
fn unix_date(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    if let Some(date) = args.first() {
        return cast(date, &DataType::Int32).map_err(|e| e.to_string());
    }
    let today = chrono::Utc::now().timestamp_millis().div_euclid(DAY_MS) as i32;
    Ok(Arc::new(Int32Array::from(vec![today; rows])))
}

/// `FROM_DAYS(days)`: the date that many days after the epoch.
fn from_days(args: &[ArrayRef], _rows: usize) -> Result<ArrayRef, String> {
    let days = cast(&args[0], &DataType::Int32).map_err(|e| e.to_string())?;
    cast(&days, &DataType::Date32).map_err(|e| e.to_string())
}

fn doubles(array: &ArrayRef) -> Result<datafusion::arrow::array::Float64Array, String> {
    let cast = cast(array, &DataType::Float64).map_err(|e| e.to_string())?;
    cast.as_any()
        .downcast_ref::<datafusion::arrow::array::Float64Array>()
        .cloned()
        .ok_or_else(|| "expected a number".to_string())
}

/// `ROUND(x)` and `ROUND(x, places)`: halves round up (towards positive infinity) for DOUBLE, as
/// Java's `Math.round`, and away from zero for DECIMAL; `ROUND(DOUBLE)` is a BIGINT.
fn round_type(args: &[DataType]) -> Result<DataType, String> {
    Ok(match (args.first(), args.len()) {
        (Some(DataType::Decimal128(p, s)), 1) => {
            DataType::Decimal128((p.saturating_sub(*s as u8)).max(1), 0)
        }
        (Some(DataType::Float64 | DataType::Float32), 1) => DataType::Int64,
        (Some(DataType::Float32), _) => DataType::Float64,
        (Some(t), _) if t.is_numeric() => t.clone(),
        (Some(t), _) => return Err(format!("ROUND does not accept {t}")),
        (None, _) => return Err("ROUND takes one or two arguments".into()),
    })
}

fn round(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let places = match args.get(1) {
        Some(p) => Some(longs(p)?),
        None => None,
    };
    let places_at = |i: usize| places.as_ref().map_or(Some(0), |p| long_at(p, i));
    let input = &args[0];
    let out_type = round_type(
        &args
            .iter()
            .map(|a| a.data_type().clone())
            .collect::<Vec<_>>(),
    )?;
    match input.data_type() {
        DataType::Decimal128(_, scale) => {
            let scale = i64::from(*scale);
            let decimals = input
                .as_any()
                .downcast_ref::<datafusion::arrow::array::Decimal128Array>()
                .ok_or("expected a decimal")?;
            let mut out = Vec::with_capacity(rows);
            for i in 0..rows {
                let j = at(i, decimals.len());
                let (Some(n), false) = (places_at(i), decimals.is_null(j)) else {
                    out.push(None);
                    continue;
                };
                let v = decimals.value(j);
                let drop = (scale - n.clamp(0, scale)) as u32;
                let d = 10i128.pow(drop);
                let (mut q, r) = (v / d, v % d);
                if r.abs() * 2 >= d {
                    q += v.signum();
                }
                out.push(Some(if args.len() == 1 { q } else { q * d }));
            }
            let array = datafusion::arrow::array::Decimal128Array::from(out);
            let (p, s) = match out_type {
                DataType::Decimal128(p, s) => (p, s),
                _ => (38, 0),
            };
            Ok(Arc::new(
                array
                    .with_precision_and_scale(p, s)
                    .map_err(|e| e.to_string())?,
            ))
        }
        DataType::Float64 | DataType::Float32 => {
            let values = doubles(input)?;
            let rounded: Vec<Option<f64>> = (0..rows)
                .map(|i| {
                    let j = at(i, values.len());
                    let n = places_at(i)?;
                    (!values.is_null(j)).then(|| {
                        let factor = 10f64.powi(n as i32);
                        (values.value(j) * factor + 0.5).floor() / factor
                    })
                })
                .collect();
            if args.len() == 1 {
                Ok(Arc::new(Int64Array::from(
                    rounded
                        .into_iter()
                        .map(|v| v.map(|v| v as i64))
                        .collect::<Vec<_>>(),
                )))
            } else {
                Ok(Arc::new(datafusion::arrow::array::Float64Array::from(
                    rounded,
                )))
            }
        }
        // Whole numbers are already round.
        _ => Ok(input.clone()),
    }
}

/// `LOG(x)` is the natural logarithm; `LOG(base, x)` the logarithm in a base.
/// `FROM_UNIXTIME(millis)`: the TIMESTAMP that many milliseconds after the epoch.
fn from_unixtime(args: &[ArrayRef], _rows: usize) -> Result<ArrayRef, String> {
    let millis = longs(&args[0])?;
    Ok(Arc::new(TimestampMillisecondArray::from(
        millis.iter().collect::<Vec<_>>(),
    )))
}

/// `SQRT(x)`: a DOUBLE; NaN for a negative number, as Java's `Math.sqrt` (DataFusion's refuses).
fn sqrt(args: &[ArrayRef], _rows: usize) -> Result<ArrayRef, String> {
    let values = doubles(&args[0])?;
    Ok(Arc::new(
        datafusion::arrow::compute::kernels::arity::unary::<
            _,
            _,
            datafusion::arrow::datatypes::Float64Type,
        >(&values, f64::sqrt),
    ))
}

fn log(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let (base, value) = match args {
        [value] => (None, doubles(value)?),
        [base, value] => (Some(doubles(base)?), doubles(value)?),
        _ => return Err("LOG takes one or two arguments".into()),
    };
    let out: Vec<Option<f64>> = (0..rows)
        .map(|i| {
            let j = at(i, value.len());
            if value.is_null(j) {
                return None;
            }
            let ln = value.value(j).ln();
            match &base {
                None => Some(ln),
                Some(b) => {
                    let k = at(i, b.len());
                    // As ksqlDB: no logarithm to a base of 1 or below zero.
                    (!b.is_null(k)).then(|| match b.value(k) {
                        base if base <= 0.0 || base == 1.0 => f64::NAN,
                        base => ln / base.ln(),
                    })
                }
            }
        })
        .collect();
    Ok(Arc::new(datafusion::arrow::array::Float64Array::from(out)))
}

/// `GEO_DISTANCE(lat1, lon1, lat2, lon2[, 'KM'|'MI'])`: the great-circle distance, with the
/// earth's mean radius as ksqlDB takes it.
fn geo_distance(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let coords = args[..4]
        .iter()
        .map(doubles)
        .collect::<Result<Vec<_>, _>>()?;
    let unit = match args.get(4) {
        Some(u) => Some(strings(u)?),
        None => None,
    };
    let mut out = Vec::with_capacity(rows);
    for i in 0..rows {
        let values: Option<Vec<f64>> = coords
            .iter()
            .map(|c| {
                let j = at(i, c.len());
                (!c.is_null(j)).then(|| c.value(j))
            })
            .collect();
        let Some(v) = values else {
            out.push(None);
            continue;
        };
        let radius = match unit.as_ref().map(|u| string_at(u, i)) {
            None => 6371.0,
            Some(Some(u))
                if u.eq_ignore_ascii_case("KM") || u.eq_ignore_ascii_case("KILOMETERS") =>
            {
                6371.0
            }
            Some(Some(u)) if u.eq_ignore_ascii_case("MI") || u.eq_ignore_ascii_case("MILES") => {
                3959.0
            }
            Some(Some(u)) => {
                return Err(format!(
                    "GeoDistance function units parameter must be one of 'MI', 'MILES', 'KM', 'KILOMETERS'. Values passed were: {u}"
                ));
            }
            // No unit is kilometres.
            Some(None) => 6371.0,
        };
        for (lat, lon) in [(v[0], v[1]), (v[2], v[3])] {
            if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
                return Err(format!(
                    "valid latitude values for GeoDistance function are in the range of -90 to 90 decimal degrees, and longitude values -180 to 180; got {lat}, {lon}"
                ));
            }
        }
        // In ksqlDB's order of operations, so results agree to the last bit.
        let dlat = (v[2] - v[0]).to_radians();
        let dlon = (v[3] - v[1]).to_radians();
        let a = (dlat / 2.0).sin().powi(2)
            + (dlon / 2.0).sin().powi(2) * v[0].to_radians().cos() * v[2].to_radians().cos();
        out.push(Some(2.0 * a.sqrt().asin() * radius));
    }
    Ok(Arc::new(datafusion::arrow::array::Float64Array::from(out)))
}

/// `CHR(code)`: the character of a code point, given as a number or as `'\u0041'` text.
fn chr(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let mut out = StringBuilder::new();
    if matches!(
        args[0].data_type(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    ) {
        let text = strings(&args[0])?;
        for i in 0..rows {
            let c = string_at(&text, i).and_then(|t| {
                let hex = t.strip_prefix("\\u").or_else(|| t.strip_prefix("\\U"))?;
                u32::from_str_radix(hex, 16).ok().and_then(char::from_u32)
            });
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

/// Bytes from text in an encoding: `hex`, `utf8`, `ascii` or `base64`.
fn decode_text(text: &str, encoding: &str) -> Result<Vec<u8>, String> {
    match encoding.to_ascii_lowercase().as_str() {
        "hex" => {
            let t = text
                .strip_prefix("0x")
                .or_else(|| text.strip_prefix("0X"))
                .unwrap_or(text);
            let t = if t.len() % 2 == 1 {
                format!("0{t}")
            } else {
                t.to_string()
            };
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

/// The functions that take a time unit word first.
pub(crate) const TIME_UNIT_FUNCTIONS: &[&str] = &[
    "DATEADD",
    "DATESUB",
    "TIMEADD",
    "TIMESUB",
    "TIMESTAMPADD",
    "TIMESTAMPSUB",
];

/// A time unit by any of its names: its plural name and its length in milliseconds.
pub(crate) fn time_unit_ms(word: &str) -> Option<(&'static str, i64)> {
    let upper = word.to_ascii_uppercase();
    let singular = upper.strip_suffix('S').unwrap_or(&upper);
    Some(match singular {
        "MILLISECOND" => ("MILLISECONDS", 1),
        "SECOND" => ("SECONDS", 1_000),
        "MINUTE" => ("MINUTES", 60_000),
        "HOUR" => ("HOURS", 3_600_000),
        "DAY" => ("DAYS", DAY_MS),
        _ => return None,
    })
}

/// The return type of `DATEADD` and its kin: what they add to, once the unit is a unit word
/// and the amount a whole number; else ksqlDB's message naming the parameters.
fn time_arithmetic_type(
    name: &str,
    target: DataType,
    args: &[DataType],
) -> Result<DataType, String> {
    let named = |t: &DataType| match crate::types::from_arrow(t) {
        Ok(ty) => crate::types::type_display(&ty),
        Err(_) => t.to_string(),
    };
    let fits = args.len() == 3
        && matches!(args[0], DataType::Utf8)
        && (args[1].is_integer() || args[1] == DataType::Null)
        && (args[2] == target || args[2] == DataType::Null);
    if fits {
        Ok(target)
    } else {
        Err(format!(
            "Function '{}' does not accept parameters ({}).",
            name.to_ascii_lowercase(),
            args.iter().map(named).collect::<Vec<_>>().join(", ")
        ))
    }
}

fn date_type(name: &str, args: &[DataType]) -> Result<DataType, String> {
    time_arithmetic_type(name, DataType::Date32, args)
}

fn time_type(name: &str, args: &[DataType]) -> Result<DataType, String> {
    time_arithmetic_type(name, DataType::Time32(TimeUnit::Millisecond), args)
}

fn timestamp_type(name: &str, args: &[DataType]) -> Result<DataType, String> {
    time_arithmetic_type(name, DataType::Timestamp(TimeUnit::Millisecond, None), args)
}

/// Adds (`sign` 1) or subtracts (-1) `n` units to dates, times or timestamps: dates move by
/// whole days, times wrap around midnight, timestamps move by milliseconds.
fn time_arithmetic(args: &[ArrayRef], rows: usize, sign: i64) -> Result<ArrayRef, String> {
    let units = strings(&args[0])?;
    let amounts = longs(&args[1])?;
    let target = args[2].data_type().clone();
    // Dates and times are 32-bit counts (days, milliseconds) underneath.
    let values = match target {
        DataType::Date32 | DataType::Time32(_) => {
            longs(&cast(&args[2], &DataType::Int32).map_err(|e| e.to_string())?)?
        }
        _ => longs(&cast(&args[2], &DataType::Int64).map_err(|e| e.to_string())?)?,
    };
    let mut out = Int64Array::builder(rows);
    for i in 0..rows {
        let unit = string_at(&units, i).and_then(time_unit_ms);
        match (unit, long_at(&amounts, i), long_at(&values, i)) {
            (Some((_, unit_ms)), Some(n), Some(v)) => {
                let delta = sign.saturating_mul(n).saturating_mul(unit_ms);
                let moved = match target {
                    DataType::Date32 => v + delta.div_euclid(DAY_MS),
                    DataType::Time32(_) | DataType::Time64(_) => (v + delta).rem_euclid(DAY_MS),
                    _ => v.saturating_add(delta),
                };
                out.append_value(moved);
            }
            _ => out.append_null(),
        }
    }
    let moved: ArrayRef = Arc::new(out.finish());
    let narrowed = match target {
        DataType::Date32 | DataType::Time32(_) => cast(&moved, &DataType::Int32),
        _ => Ok(moved),
    }
    .map_err(|e| e.to_string())?;
    cast(&narrowed, &target).map_err(|e| e.to_string())
}

fn add_time(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    time_arithmetic(args, rows, 1)
}

fn sub_time(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    time_arithmetic(args, rows, -1)
}

/// `ARRAY_SORT(array[, 'ASC'|'DESC'])`: each array's elements sorted, nulls last either way, as
/// ksqlDB sorts them; null for a direction it does not know.
fn array_sort(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    use datafusion::arrow::array::{ListArray, new_null_array};
    use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
    use datafusion::arrow::compute::{SortOptions, sort};
    let list_type = args[0].data_type().clone();
    let DataType::List(field) = &list_type else {
        return Err(format!("ARRAY_SORT takes an array, not {list_type}"));
    };
    let lists = args[0]
        .as_any()
        .downcast_ref::<ListArray>()
        .ok_or("expected an array")?;
    let directions = match args.get(1) {
        Some(d) => Some(strings(d)?),
        None => None,
    };
    let mut pieces: Vec<ArrayRef> = Vec::with_capacity(rows);
    let mut lengths: Vec<usize> = Vec::with_capacity(rows);
    let mut valid: Vec<bool> = Vec::with_capacity(rows);
    for i in 0..rows {
        let j = at(i, lists.len());
        let descending = match &directions {
            None => Some(false),
            Some(d) => match string_at(d, i).map(str::to_ascii_uppercase).as_deref() {
                Some("ASC") => Some(false),
                Some("DESC") => Some(true),
                _ => None,
            },
        };
        match (lists.is_null(j), descending) {
            (false, Some(descending)) => {
                let sorted = sort(
                    &lists.value(j),
                    Some(SortOptions {
                        descending,
                        nulls_first: false,
                    }),
                )
                .map_err(|e| e.to_string())?;
                lengths.push(sorted.len());
                pieces.push(sorted);
                valid.push(true);
            }
            _ => {
                lengths.push(0);
                valid.push(false);
            }
        }
    }
    let values = if pieces.is_empty() {
        new_null_array(field.data_type(), 0)
    } else {
        let refs: Vec<&dyn Array> = pieces.iter().map(|a| a.as_ref()).collect();
        datafusion::arrow::compute::concat(&refs).map_err(|e| e.to_string())?
    };
    let sorted = ListArray::try_new(
        field.clone(),
        OffsetBuffer::from_lengths(lengths),
        values,
        Some(NullBuffer::from(valid)),
    )
    .map_err(|e| e.to_string())?;
    Ok(Arc::new(sorted))
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
    let inner = compact.strip_prefix('[')?.strip_suffix(']')?;
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
                items.push(inner[start..i].to_string());
                start = i + 1;
            }
            _ => {}
        }
    }
    if !inner.is_empty() {
        items.push(inner[start..].to_string());
    }
    Some(items)
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
fn pad<T: Clone>(input: &[T], length: i64, padding: &[T], left: bool) -> Option<Vec<T>> {
    if length < 0 || padding.is_empty() {
        return None;
    }
    let length = length as usize;
    if input.len() >= length {
        return Some(input[..length].to_vec());
    }
    let fill: Vec<T> = padding
        .iter()
        .cycle()
        .take(length - input.len())
        .cloned()
        .collect();
    Some(if left {
        [fill.as_slice(), input].concat()
    } else {
        [input, fill.as_slice()].concat()
    })
}

fn is_bytes(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView
    )
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
                (false, false, Some(n)) => pad(input.value(j), n, padding.value(k), left),
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
                pad(&t, n, &p, left).map(|v| v.into_iter().collect::<String>())
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

fn lpad(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    pad_either(args, rows, true)
}

fn rpad(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    pad_either(args, rows, false)
}

/// Every function defined here, by ksqlDB name.
pub fn functions() -> Vec<Arc<ScalarUDF>> {
    let any1 = || TypeSignature::Any(1);
    vec![
        function("AS_VALUE", any1(), |a| Ok(a[0].clone()), identity),
        function(
            "EXTRACTJSONFIELD",
            string_pairs(),
            STRING,
            extract_json_field,
        ),
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
        function("ARRAY_LENGTH", any1(), INT, array_length),
        function(
            "STRINGTOTIMESTAMP",
            string_pairs(),
            BIGINT,
            string_to_timestamp,
        ),
        function(
            "PARSE_TIMESTAMP",
            string_pairs(),
            |_| Ok(DataType::Timestamp(TimeUnit::Millisecond, None)),
            parse_timestamp_fn,
        ),
        function(
            "TIMESTAMPTOSTRING",
            TypeSignature::OneOf(vec![TypeSignature::Any(2), TypeSignature::Any(3)]),
            STRING,
            timestamp_to_string,
        ),
        function(
            "FORMAT_TIMESTAMP",
            TypeSignature::OneOf(vec![TypeSignature::Any(2), TypeSignature::Any(3)]),
            STRING,
            timestamp_to_string,
        ),
        function(
            "CONVERT_TZ",
            TypeSignature::Any(3),
            |args| match args.first() {
                Some(DataType::Timestamp(..) | DataType::Null) => {
                    Ok(DataType::Timestamp(TimeUnit::Millisecond, None))
                }
                _ => Err("Function 'convert_tz' does not accept parameters".into()),
            },
            convert_tz,
        ),
        function(
            "PARSE_TIME",
            TypeSignature::Exact(vec![DataType::Utf8, DataType::Utf8]),
            |_| Ok(DataType::Time32(TimeUnit::Millisecond)),
            parse_time,
        ),
        function(
            "FROM_UNIXTIME",
            any1(),
            |args| match args.first() {
                Some(t) if t.is_integer() || *t == DataType::Null => {
                    Ok(DataType::Timestamp(TimeUnit::Millisecond, None))
                }
                _ => Err("Function 'from_unixtime' does not accept parameters".into()),
            },
            from_unixtime,
        ),
        function(
            "SQRT",
            any1(),
            |args| match args.first() {
                Some(t) if t.is_numeric() || *t == DataType::Null => Ok(DataType::Float64),
                _ => Err("Function 'sqrt' does not accept parameters".into()),
            },
            sqrt,
        ),
        function(
            "REGEXP_REPLACE",
            TypeSignature::Exact(vec![DataType::Utf8, DataType::Utf8, DataType::Utf8]),
            STRING,
            regexp_replace,
        ),
        function(
            "REGEXP_SPLIT_TO_ARRAY",
            TypeSignature::Exact(vec![DataType::Utf8, DataType::Utf8]),
            STRING_LIST,
            regexp_split_to_array,
        ),
        function("STRINGTODATE", string_pairs(), INT, string_to_date),
        function(
            "PARSE_DATE",
            string_pairs(),
            |_| Ok(DataType::Date32),
            parse_date,
        ),
        function(
            "DATETOSTRING",
            TypeSignature::Any(2),
            STRING,
            date_to_string,
        ),
        function("FORMAT_DATE", TypeSignature::Any(2), STRING, date_to_string),
        function("SIGN", any1(), INT, sign),
        function(
            "GEO_DISTANCE",
            TypeSignature::OneOf(vec![TypeSignature::Any(4), TypeSignature::Any(5)]),
            |args| {
                if args
                    .iter()
                    .take(4)
                    .all(|t| t.is_numeric() || *t == DataType::Null)
                {
                    Ok(DataType::Float64)
                } else {
                    Err("Function 'geo_distance' does not accept parameters".into())
                }
            },
            geo_distance,
        ),
        function("CHR", any1(), STRING, chr),
        function(
            "AS_MAP",
            TypeSignature::Any(2),
            |args| match args.get(1) {
                Some(DataType::List(item)) => Ok(super::collections::map_type(item.data_type())),
                _ => Err("AS_MAP takes an array of keys and an array of values".into()),
            },
            super::collections::as_map,
        ),
        function(
            "SPLIT_TO_MAP",
            TypeSignature::Any(3),
            |_| Ok(super::collections::map_type(&DataType::Utf8)),
            super::collections::split_to_map,
        ),
        function(
            "MAP_UNION",
            TypeSignature::Any(2),
            |args| {
                args.iter()
                    .find(|t| matches!(t, DataType::Map(..)))
                    .cloned()
                    .ok_or_else(|| "MAP_UNION takes two maps".to_string())
            },
            super::collections::map_union,
        ),
        function(
            "ENTRIES",
            TypeSignature::Any(2),
            |args| super::collections::entries_type(&args[0]),
            super::collections::entries,
        ),
        function(
            "GENERATE_SERIES",
            TypeSignature::OneOf(vec![TypeSignature::Any(2), TypeSignature::Any(3)]),
            super::collections::series_type,
            super::collections::generate_series,
        ),
        function("ENCODE", TypeSignature::Any(3), STRING, encode),
        function(
            "TO_BYTES",
            TypeSignature::Any(2),
            |_| Ok(DataType::Binary),
            to_bytes,
        ),
        function("FROM_BYTES", TypeSignature::Any(2), STRING, from_bytes),
        function(
            "SUBSTRING",
            TypeSignature::OneOf(vec![TypeSignature::Any(2), TypeSignature::Any(3)]),
            text_or_bytes,
            substring,
        ),
        function(
            "ROUND",
            TypeSignature::OneOf(vec![TypeSignature::Any(1), TypeSignature::Any(2)]),
            round_type,
            round,
        ),
        function(
            "LOG",
            TypeSignature::OneOf(vec![TypeSignature::Any(1), TypeSignature::Any(2)]),
            |_| Ok(DataType::Float64),
            log,
        ),
        function(
            "UNIX_TIMESTAMP",
            TypeSignature::Nullary,
            BIGINT,
            unix_timestamp,
        ),
        function(
            "UNIX_DATE",
            TypeSignature::OneOf(vec![TypeSignature::Nullary, TypeSignature::Any(1)]),
            |args| match args.first() {
                None | Some(DataType::Date32 | DataType::Null) => Ok(DataType::Int32),
                Some(t) => Err(format!(
                    "Function 'unix_date' does not accept parameters ({t})."
                )),
            },
            unix_date,
        ),
        function(
            "FROM_DAYS",
            any1(),
            |args| match args.first() {
                Some(t) if t.is_integer() || *t == DataType::Null => Ok(DataType::Date32),
                Some(t) => Err(format!(
                    "Function 'from_days' does not accept parameters ({t})."
                )),
                None => Err("Function 'from_days' does not accept parameters ().".into()),
            },
            from_days,
        ),
        function("LPAD", TypeSignature::Any(3), text_or_bytes, lpad),
        function(
            "DATEADD",
            TypeSignature::Any(3),
            |a| date_type("DATEADD", a),
            add_time,
        ),
        function(
            "DATESUB",
            TypeSignature::Any(3),
            |a| date_type("DATESUB", a),
            sub_time,
        ),
        function(
            "TIMEADD",
            TypeSignature::Any(3),
            |a| time_type("TIMEADD", a),
            add_time,
        ),
        function(
            "TIMESUB",
            TypeSignature::Any(3),
            |a| time_type("TIMESUB", a),
            sub_time,
        ),
        function(
            "TIMESTAMPADD",
            TypeSignature::Any(3),
            |a| timestamp_type("TIMESTAMPADD", a),
            add_time,
        ),
        function(
            "TIMESTAMPSUB",
            TypeSignature::Any(3),
            |a| timestamp_type("TIMESTAMPSUB", a),
            sub_time,
        ),
        function(
            "ARRAY_SORT",
            TypeSignature::OneOf(vec![TypeSignature::Any(1), TypeSignature::Any(2)]),
            |args| match args.first() {
                Some(t @ DataType::List(_)) => Ok(t.clone()),
                Some(t) => Err(format!(
                    "Function 'array_sort' does not accept parameters ({t})."
                )),
                None => Err("Function 'array_sort' does not accept parameters ().".into()),
            },
            array_sort,
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
        function(
            "JSON_ITEMS",
            TypeSignature::Exact(vec![DataType::Utf8]),
            STRING_LIST,
            json_items,
        ),
        function("JSON_KEYS", any1(), STRING_LIST, json_keys),
        function("INITCAP", any1(), STRING, initcap),
        function("TRIM", any1(), STRING, trim),
        function("RPAD", TypeSignature::Any(3), text_or_bytes, rpad),
    ]
}

/// What `SUBSTRING`, `LPAD` and `RPAD` return: bytes for bytes, else text.
fn text_or_bytes(args: &[DataType]) -> Result<DataType, String> {
    match args.first() {
        Some(t) if is_bytes(t) => Ok(DataType::Binary),
        _ => Ok(DataType::Utf8),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(values: &[Option<&str>]) -> ArrayRef {
        Arc::new(StringArray::from(values.to_vec()))
    }

    fn string_list(array: &ArrayRef) -> Vec<Option<Vec<String>>> {
        use datafusion::arrow::array::AsArray;
        array
            .as_list::<i32>()
            .iter()
            .map(|row| {
                row.map(|items| {
                    items
                        .as_string::<i32>()
                        .iter()
                        .map(|s| s.unwrap_or_default().to_string())
                        .collect()
                })
            })
            .collect()
    }

    #[test]
    fn timestamps_format_and_parse_in_a_zone() {
        let millis: ArrayRef = Arc::new(Int64Array::from(vec![Some(1_526_075_913_000), None]));
        let out = timestamp_to_string(
            &[
                millis.clone(),
                texts(&[Some("yyyy-MM-dd HH:mm:ss zzz")]),
                texts(&[Some("America/Los_Angeles")]),
            ],
            2,
        )
        .unwrap();
        let out = out.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(out.value(0), "2018-05-11 14:58:33 PDT");
        assert!(out.is_null(1));
        let parsed = string_to_timestamp(
            &[
                texts(&[Some("2018-05-11 14:58:33")]),
                texts(&[Some("yyyy-MM-dd HH:mm:ss")]),
                texts(&[Some("America/Los_Angeles")]),
            ],
            1,
        )
        .unwrap();
        assert_eq!(longs(&parsed).unwrap().value(0), 1_526_075_913_000);
        let unknown = timestamp_to_string(
            &[
                millis,
                texts(&[Some("HH")]),
                texts(&[Some("Mars/Olympus_Mons")]),
            ],
            2,
        );
        assert_eq!(
            unknown.unwrap_err(),
            "Unknown time zone: 'Mars/Olympus_Mons'"
        );
    }

    #[test]
    fn zones_read_as_javas_zone_ids() {
        let offset = |text: &str| Zone::parse(text).map(|z| z.offset_ms_at(0) / 60_000);
        assert_eq!(offset("+0200"), Ok(120));
        assert_eq!(offset("+02:00"), Ok(120));
        assert_eq!(offset("-5"), Ok(-300));
        assert_eq!(offset("UTC+05:30"), Ok(330));
        assert_eq!(offset("Z"), Ok(0));
        assert_eq!(offset("GMT"), Ok(0));
        assert_eq!(offset("Asia/Kolkata"), Ok(330));
        assert!(Zone::parse("+25").is_err());
        assert!(Zone::parse("Nowhere").is_err());
        // Daylight saving time: the offset depends on the instant.
        let la = Zone::parse("America/Los_Angeles").unwrap();
        assert_eq!(la.offset_ms_at(1_526_075_913_000) / 3_600_000, -7);
        assert_eq!(la.offset_ms_at(1_516_075_913_000) / 3_600_000, -8);
    }

    #[test]
    fn convert_tz_moves_by_the_difference_of_offsets_at_the_instant() {
        let ts: ArrayRef = Arc::new(TimestampMillisecondArray::from(vec![
            Some(1_589_234_313_000),
            None,
        ]));
        let out = convert_tz(
            &[
                ts,
                texts(&[Some("America/Los_Angeles")]),
                texts(&[Some("America/New_York")]),
            ],
            2,
        )
        .unwrap();
        let out = out
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .unwrap();
        assert_eq!(out.value(0), 1_589_245_113_000);
        assert!(out.is_null(1));
    }

    #[test]
    fn times_parse_to_milliseconds_of_the_day() {
        let out = parse_time(
            &[
                texts(&[Some("01:00:00 PM"), Some("00:01:05Lit"), None]),
                texts(&[Some("hh:mm:ss a"), Some("HH:mm:ss'Lit'"), Some("HH")]),
            ],
            3,
        )
        .unwrap();
        let out = out
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Time32MillisecondArray>()
            .unwrap();
        assert_eq!(out.value(0), 46_800_000);
        assert_eq!(out.value(1), 65_000);
        assert!(out.is_null(2));
    }

    #[test]
    fn regexp_replace_replaces_every_match_with_javas_replacement_syntax() {
        let out = regexp_replace(
            &[
                texts(&[Some("baabbabaa"), Some("2024-05-01"), None, Some("a$b")]),
                texts(&[
                    Some("(ab)+"),
                    Some("(\\d+)-(\\d+)-(\\d+)"),
                    Some("x"),
                    Some("\\$"),
                ]),
                texts(&[Some("cat"), Some("$3/$2/$1"), Some("y"), Some("\\$\\$")]),
            ],
            4,
        )
        .unwrap();
        let out = out.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(out.value(0), "bacatbcataa");
        assert_eq!(out.value(1), "01/05/2024");
        assert!(out.is_null(2));
        assert_eq!(out.value(3), "a$$b");
        assert!(java_replacement("$").is_err());
    }

    #[test]
    fn json_items_keep_key_order_and_compact_each_item() {
        let items = json_array_items(r#"[{"type": "A", "n": [1, 2]}, "a, \"b\" ]", 3, null]"#);
        let expected = [r#"{"type":"A","n":[1,2]}"#, r#""a, \"b\" ]""#, "3", "null"];
        assert_eq!(
            items,
            Some(expected.iter().map(|s| s.to_string()).collect())
        );
        assert_eq!(json_array_items("[ ]"), Some(vec![]));
        assert_eq!(json_array_items(r#"{"a": 1}"#), None);
        assert_eq!(json_array_items("[1,"), None);
    }

    #[test]
    fn extractjsonfield_reads_the_first_json_value_and_ignores_the_rest() {
        assert_eq!(
            serde_json_path(r#"{"name": "cdd", "version": "2"}}"#, "$.version").as_deref(),
            Some("2")
        );
        assert_eq!(serde_json_path("not json", "$.a"), None);
    }

    #[test]
    fn from_unixtime_reads_milliseconds() {
        let millis: ArrayRef = Arc::new(Int64Array::from(vec![Some(1_589_234_313_000), None]));
        let out = from_unixtime(&[millis], 2).unwrap();
        let out = out
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .unwrap();
        assert_eq!(out.value(0), 1_589_234_313_000);
        assert!(out.is_null(1));
    }

    #[test]
    fn sqrt_and_log_give_nan_where_java_does() {
        use datafusion::arrow::array::Float64Array;
        let numbers = |v: Vec<Option<f64>>| -> ArrayRef { Arc::new(Float64Array::from(v)) };
        let roots = sqrt(&[numbers(vec![Some(4.0), Some(-1.0), None])], 3).unwrap();
        let roots = roots.as_any().downcast_ref::<Float64Array>().unwrap();
        assert_eq!(roots.value(0), 2.0);
        assert!(roots.value(1).is_nan());
        assert!(roots.is_null(2));
        let bases = numbers(vec![Some(0.0), Some(1.0), Some(-15.0), Some(10.0)]);
        let logs = log(&[bases, numbers(vec![Some(13.0); 4])], 4).unwrap();
        let logs = logs.as_any().downcast_ref::<Float64Array>().unwrap();
        assert!((0..3).all(|i| logs.value(i).is_nan()));
        assert!((logs.value(3) - 13f64.log10()).abs() < 1e-12);
    }

    #[test]
    fn regexp_split_keeps_empty_pieces_as_java_does() {
        let out = regexp_split_to_array(
            &[
                texts(&[
                    Some("aabcda"),
                    Some("zxy"),
                    None,
                    Some("abc"),
                    Some("a,b,,"),
                ]),
                texts(&[
                    Some("(ab|cd)"),
                    Some("(ab|cd)"),
                    Some("x"),
                    Some(""),
                    Some(","),
                ]),
            ],
            5,
        )
        .unwrap();
        let piece = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            string_list(&out),
            vec![
                piece(&["a", "", "a"]),
                piece(&["zxy"]),
                None,
                piece(&["a", "b", "c", ""]),
                piece(&["a", "b", "", ""]),
            ]
        );
    }

    #[test]
    fn substrings_are_one_based_and_negative_positions_count_from_the_end() {
        assert_eq!(substring_range(5, 2, None), (1, 5));
        assert_eq!(substring_range(5, 2, Some(2)), (1, 3));
        assert_eq!(substring_range(5, -2, None), (3, 5));
        assert_eq!(substring_range(5, 0, Some(2)), (0, 2));
        assert_eq!(substring_range(5, 9, Some(2)), (5, 5));
    }

    #[test]
    fn padding_fills_or_cuts_and_refuses_what_ksqldb_does() {
        let chars = |s: &str| s.chars().collect::<Vec<char>>();
        let text = |v: Option<Vec<char>>| v.map(|v| v.into_iter().collect::<String>());
        assert_eq!(
            text(pad(&chars("yes"), 8, &chars("no"), true)).as_deref(),
            Some("nononyes")
        );
        assert_eq!(
            text(pad(&chars("yes"), 8, &chars("no"), false)).as_deref(),
            Some("yesnonon")
        );
        assert_eq!(
            text(pad(&chars("naïve"), 3, &chars("-"), true)).as_deref(),
            Some("naï")
        );
        assert_eq!(pad(b"ab", 4, b"\0", true), Some(b"\0\0ab".to_vec()));
        assert_eq!(pad(b"ab", -1, b"x", true), None);
        assert_eq!(pad(b"ab", 4, b"", false), None);
    }

    #[test]
    fn arrays_sort_with_nulls_last_either_way() {
        use datafusion::arrow::array::{Int32Array, ListArray};
        use datafusion::arrow::datatypes::Int32Type;
        let lists: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(3), None, Some(1)]),
            None,
        ]));
        let sorted = |direction: Option<&str>| {
            let mut args = vec![lists.clone()];
            if let Some(d) = direction {
                args.push(Arc::new(StringArray::from(vec![d])) as ArrayRef);
            }
            let out = array_sort(&args, 2).unwrap();
            let out = out.as_any().downcast_ref::<ListArray>().unwrap().clone();
            let first = out.value(0);
            let first = first.as_any().downcast_ref::<Int32Array>().unwrap();
            (first.iter().collect::<Vec<_>>(), out.is_null(1))
        };
        assert_eq!(sorted(None), (vec![Some(1), Some(3), None], true));
        assert_eq!(sorted(Some("desc")), (vec![Some(3), Some(1), None], true));
    }

    #[test]
    fn trim_removes_every_control_character_and_space_at_the_ends() {
        let out = trim(
            &[Arc::new(StringArray::from(vec![Some(" \t a b \n"), None])) as ArrayRef],
            2,
        )
        .unwrap();
        let out = out.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(out.value(0), "a b");
        assert!(out.is_null(1));
    }

    #[test]
    fn days_convert_to_dates_and_back() {
        use datafusion::arrow::array::Date32Array;
        let days: ArrayRef = Arc::new(Int32Array::from(vec![Some(10), Some(-10), None]));
        let dates = from_days(std::slice::from_ref(&days), 3).unwrap();
        let as_dates = dates.as_any().downcast_ref::<Date32Array>().unwrap();
        assert_eq!(
            as_dates.iter().collect::<Vec<_>>(),
            vec![Some(10), Some(-10), None]
        );
        let back = unix_date(&[dates], 3).unwrap();
        assert_eq!(back.as_ref(), days.as_ref());
    }

    #[test]
    fn time_arithmetic_moves_dates_times_and_timestamps() {
        use datafusion::arrow::array::{Date32Array, Time32MillisecondArray};
        let unit = |u: &str| Arc::new(StringArray::from(vec![u])) as ArrayRef;
        let n = |v: i64| Arc::new(Int64Array::from(vec![v])) as ArrayRef;
        let dates: ArrayRef = Arc::new(Date32Array::from(vec![Some(40), Some(5), None]));
        let out = sub_time(&[unit("DAYS"), n(10), dates], 3).unwrap();
        let out = out.as_any().downcast_ref::<Date32Array>().unwrap();
        assert_eq!(
            out.iter().collect::<Vec<_>>(),
            vec![Some(30), Some(-5), None]
        );
        // Times wrap around midnight.
        let times: ArrayRef = Arc::new(Time32MillisecondArray::from(vec![20, 5]));
        let out = sub_time(&[unit("MILLISECONDS"), n(10), times], 2).unwrap();
        let out = out
            .as_any()
            .downcast_ref::<Time32MillisecondArray>()
            .unwrap();
        assert_eq!(out.values().to_vec(), vec![10, 86_399_995]);
        assert_eq!(time_unit_ms("second"), Some(("SECONDS", 1_000)));
        assert_eq!(time_unit_ms("weeks"), None);
        assert_eq!(
            date_type(
                "DATESUB",
                &[DataType::Date32, DataType::Int32, DataType::Date32]
            )
            .unwrap_err(),
            "Function 'datesub' does not accept parameters (DATE, INTEGER, DATE)."
        );
    }

    #[test]
    fn bytes_split_like_text() {
        use datafusion::arrow::array::{BinaryArray, ListArray};
        let input: ArrayRef = Arc::new(BinaryArray::from(vec![&b"a.b..c"[..], &b""[..]]));
        let pieces = |d: &'static [u8]| {
            let delimiter: ArrayRef = Arc::new(BinaryArray::from(vec![d]));
            let out = split(&[input.clone(), delimiter], 2).unwrap();
            let out = out.as_any().downcast_ref::<ListArray>().unwrap().clone();
            (0..2)
                .map(|i| {
                    let row = out.value(i);
                    let row = row.as_any().downcast_ref::<BinaryArray>().unwrap();
                    row.iter().map(|b| b.unwrap().to_vec()).collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        };
        let b = |s: &str| s.as_bytes().to_vec();
        assert_eq!(
            pieces(b"."),
            vec![vec![b("a"), b("b"), b(""), b("c")], vec![b("")]]
        );
        assert_eq!(pieces(b"").last(), Some(&vec![b("")]));
        assert_eq!(pieces(b"")[0].len(), 6);
    }

    #[test]
    fn json_object_keys_keep_their_order() {
        assert_eq!(
            json_object_keys(r#"{"Red": 3, "Green": {"x": [1]}}"#),
            Some(vec!["Red".to_string(), "Green".to_string()])
        );
        assert_eq!(json_object_keys("{}"), Some(vec![]));
        assert_eq!(json_object_keys("[1]"), None);
        assert_eq!(json_object_keys(r#"{"a": 1} trailing"#), None);
        assert_eq!(json_object_keys(""), None);
    }

    #[test]
    fn encodings_convert_both_ways() {
        assert_eq!(decode_text("4869", "hex").unwrap(), b"Hi");
        assert_eq!(encode_bytes(b"Hi", "base64").unwrap(), "SGk=");
        assert_eq!(
            encode_bytes(&decode_text("SGk=", "base64").unwrap(), "utf8").unwrap(),
            "Hi"
        );
        assert!(decode_text("x", "rot13").is_err());
    }

    #[test]
    fn json_paths_follow_fields_and_indexes() {
        let json = r#"{"a": {"b": [10, {"c": "x"}]}, "s": "t"}"#;
        assert_eq!(serde_json_path(json, "$.a.b[0]").as_deref(), Some("10"));
        assert_eq!(serde_json_path(json, "$.a.b[1].c").as_deref(), Some("x"));
        assert_eq!(serde_json_path(json, "$['s']").as_deref(), Some("t"));
        assert_eq!(serde_json_path(json, "$.missing"), None);
        assert_eq!(serde_json_path("not json", "$.a"), None);
    }
}
