//! Date and time functions: parsing and formatting with Java's patterns in a time zone,
//! converting between zones, dates and days, the current time, and arithmetic in time units
//! (`DATEADD(DAYS, 1, d)`), as ksqlDB defines them. Patterns and zones are in [`super::time`].

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, Int32Array, Int64Array, StringArray, StringBuilder, TimestampMillisecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::logical_expr::TypeSignature;

use super::time::{
    Zone, format_timestamp, format_timestamp_in, parse_timestamp, parse_timestamp_in,
};
use super::udf::{
    BIGINT, INT, STRING, Scalar, any1, function, long_at, longs, string_at, string_pairs, strings,
};

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

/// `FORMAT_TIME(time, pattern)`: a TIME (milliseconds of the day) as text in a Java pattern.
fn time_to_string(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let time =
        cast(&args[0], &DataType::Time32(TimeUnit::Millisecond)).map_err(|e| e.to_string())?;
    let millis = longs(&cast(&time, &DataType::Int32).map_err(|e| e.to_string())?)?;
    let pattern = strings(&args[1])?;
    let mut out = StringBuilder::new();
    for i in 0..rows {
        match (long_at(&millis, i), string_at(&pattern, i)) {
            (Some(ms), Some(p)) => out.append_value(format_timestamp(ms, p)?),
            _ => out.append_null(),
        }
    }
    Ok(Arc::new(out.finish()))
}

/// `FORMAT_TIME`'s arguments: a TIME and a pattern.
fn format_time_type(args: &[DataType]) -> Result<DataType, String> {
    match args {
        [
            DataType::Time32(_) | DataType::Time64(_) | DataType::Null,
            DataType::Utf8 | DataType::Null,
        ] => Ok(DataType::Utf8),
        _ => Err(super::udf::refused("FORMAT_TIME", args)),
    }
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

/// `LOG(x)` is the natural logarithm; `LOG(base, x)` the logarithm in a base.
/// `FROM_UNIXTIME(millis)`: the TIMESTAMP that many milliseconds after the epoch.
fn from_unixtime(args: &[ArrayRef], _rows: usize) -> Result<ArrayRef, String> {
    let millis = longs(&args[0])?;
    Ok(Arc::new(TimestampMillisecondArray::from(
        millis.iter().collect::<Vec<_>>(),
    )))
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

/// The functions of this file, as the catalogue registers them.
pub(super) fn functions() -> Vec<Scalar> {
    vec![
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
        function(
            "FORMAT_TIME",
            TypeSignature::Any(2),
            format_time_type,
            time_to_string,
        ),
        function(
            "UNIX_TIMESTAMP",
            TypeSignature::Nullary,
            BIGINT,
            unix_timestamp,
        )
        .volatile(),
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
        )
        .volatile(),
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
    ]
}
