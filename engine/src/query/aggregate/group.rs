//! One group of an aggregation: its accumulators, whether its last result stands, and its
//! latest timestamp; its result as ksqlDB reports it; and how it is kept in the store: a flags
//! byte, the latest timestamp, the number of state values of each accumulator, then the
//! values, compactly when they are plain numbers and strings, else as one Arrow IPC batch.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;

use datafusion::common::ScalarValue;
use datafusion::logical_expr::Accumulator;

use super::AggregateCall;
use crate::error::{EngineError, Result};

/// One group's aggregates, and whether its last result passed `HAVING` (so a later one that
/// fails deletes it).
pub(super) struct Group {
    /// One accumulator per aggregate call.
    pub(super) accumulators: Vec<Box<dyn Accumulator>>,
    /// Whether its last result was emitted (passed `HAVING`).
    pub(super) emitted: bool,
    /// The latest timestamp among the rows aggregated, which is the result's timestamp (as
    /// Kafka Streams stamps an aggregate with the maximum of its records' timestamps).
    pub(super) latest: Option<i64>,
    /// Whether its window is filed in the index of open windows since it was read: a window
    /// updated again need not be filed again.
    pub(super) filed: bool,
    /// `EMIT FINAL`: whether the group changed since its state was last handed to be written,
    /// so further changes need not mark it again.
    pub(super) unwritten: bool,
}

impl Group {
    /// Each aggregate's current result, as ksqlDB reports it.
    pub(super) fn results(&mut self, calls: &[AggregateCall]) -> Result<Vec<ScalarValue>> {
        self.accumulators
            .iter_mut()
            .zip(calls)
            .map(|(acc, call)| current_result(acc, call))
            .collect()
    }
}

/// An accumulator's current result, as ksqlDB reports it: `SUM` starts at zero, so it is
/// never null; `AVG` of no values is 0.0, and so is `STDDEV_SAMPLE` of fewer than two.
pub(super) fn current_result(
    acc: &mut Box<dyn Accumulator>,
    call: &AggregateCall,
) -> Result<ScalarValue> {
    let value = acc
        .evaluate()
        .map_err(|e| EngineError::execution("aggregation failed", e))?;
    Ok(match (&value, call.limit) {
        (v, _)
            if v.is_null()
                && matches!(
                    call.name.as_str(),
                    "SUM" | "AVG" | "STDDEV_SAMPLE" | "STDDEV_SAMP"
                ) =>
        {
            ScalarValue::new_zero(&value.data_type()).unwrap_or(value)
        }
        (ScalarValue::List(list), Some(limit)) if list.value_length(0) as usize > limit => {
            use datafusion::arrow::array::Array;
            let kept = list.value(0).slice(0, limit);
            let item = match list.data_type() {
                datafusion::arrow::datatypes::DataType::List(item) => item.as_ref().clone(),
                _ => Field::new_list_field(kept.data_type().clone(), true),
            };
            ScalarValue::List(Arc::new(
                datafusion::common::utils::SingleRowListArrayBuilder::new(kept)
                    .with_field(&item)
                    .build_list_array(),
            ))
        }
        _ => value,
    })
}

/// A group's state: a flags byte (whether it was emitted; whether its latest timestamp
/// follows; whether the values are in the compact encoding), the latest timestamp, the number
/// of state values of each accumulator, then the values: each as a type tag and its bytes when
/// every one is a plain number, boolean or string, else all as one Arrow IPC batch.
pub(super) fn serialize(group: &mut Group) -> Result<Vec<u8>> {
    let fail = |e: &dyn std::fmt::Display| {
        EngineError::internal(format!("cannot save aggregate state: {e}"))
    };
    let mut counts = Vec::new();
    let mut values = Vec::new();
    for acc in &mut group.accumulators {
        let state = acc.state().map_err(|e| fail(&e))?;
        counts.push(state.len() as u16);
        values.extend(state);
    }
    let compact = values.iter().all(compact_scalar::encodable);
    let mut out = Vec::with_capacity(16 + 12 * values.len());
    out.push(
        u8::from(group.emitted)
            | (u8::from(group.latest.is_some()) << 1)
            | (u8::from(compact) << 2),
    );
    if let Some(latest) = group.latest {
        out.extend_from_slice(&latest.to_be_bytes());
    }
    out.extend_from_slice(&(counts.len() as u16).to_be_bytes());
    for c in &counts {
        out.extend_from_slice(&c.to_be_bytes());
    }
    if compact {
        for value in &values {
            compact_scalar::encode(value, &mut out);
        }
        return Ok(out);
    }
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for value in values {
        let array = value.to_array().map_err(|e| fail(&e))?;
        fields.push(Field::new(
            format!("s{}", fields.len()),
            array.data_type().clone(),
            true,
        ));
        columns.push(array);
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(1)),
    )
    .map_err(|e| fail(&e))?;
    let mut writer = StreamWriter::try_new(&mut out, &schema).map_err(|e| fail(&e))?;
    writer.write(&batch).map_err(|e| fail(&e))?;
    writer.finish().map_err(|e| fail(&e))?;
    drop(writer);
    Ok(out)
}

/// A compact encoding of the scalar state values most accumulators keep (counts, sums,
/// minimums, strings), a few bytes each where an Arrow IPC batch takes about a kilobyte.
mod compact_scalar {
    use datafusion::common::ScalarValue;

    const NULL: u8 = 0x80;

    /// Whether `value` has a compact encoding.
    pub(super) fn encodable(value: &ScalarValue) -> bool {
        tag(value).is_some()
    }

    fn tag(value: &ScalarValue) -> Option<u8> {
        Some(match value {
            ScalarValue::Boolean(_) => 1,
            ScalarValue::Int8(_) => 2,
            ScalarValue::Int16(_) => 3,
            ScalarValue::Int32(_) => 4,
            ScalarValue::Int64(_) => 5,
            ScalarValue::UInt8(_) => 6,
            ScalarValue::UInt16(_) => 7,
            ScalarValue::UInt32(_) => 8,
            ScalarValue::UInt64(_) => 9,
            ScalarValue::Float32(_) => 10,
            ScalarValue::Float64(_) => 11,
            ScalarValue::Utf8(_) => 12,
            ScalarValue::Decimal128(_, _, _) => 13,
            _ => return None,
        })
    }

    /// Appends `value`: its tag (with the null bit), then its bytes.
    pub(super) fn encode(value: &ScalarValue, out: &mut Vec<u8>) {
        let Some(tag) = tag(value) else { return };
        if let ScalarValue::Decimal128(_, precision, scale) = value {
            out.push(tag | if value.is_null() { NULL } else { 0 });
            out.push(*precision);
            out.push(*scale as u8);
        } else {
            out.push(tag | if value.is_null() { NULL } else { 0 });
        }
        match value {
            ScalarValue::Boolean(Some(v)) => out.push(u8::from(*v)),
            ScalarValue::Int8(Some(v)) => out.extend_from_slice(&v.to_le_bytes()),
            ScalarValue::Int16(Some(v)) => out.extend_from_slice(&v.to_le_bytes()),
            ScalarValue::Int32(Some(v)) => out.extend_from_slice(&v.to_le_bytes()),
            ScalarValue::Int64(Some(v)) => out.extend_from_slice(&v.to_le_bytes()),
            ScalarValue::UInt8(Some(v)) => out.push(*v),
            ScalarValue::UInt16(Some(v)) => out.extend_from_slice(&v.to_le_bytes()),
            ScalarValue::UInt32(Some(v)) => out.extend_from_slice(&v.to_le_bytes()),
            ScalarValue::UInt64(Some(v)) => out.extend_from_slice(&v.to_le_bytes()),
            ScalarValue::Float32(Some(v)) => out.extend_from_slice(&v.to_le_bytes()),
            ScalarValue::Float64(Some(v)) => out.extend_from_slice(&v.to_le_bytes()),
            ScalarValue::Decimal128(Some(v), _, _) => out.extend_from_slice(&v.to_le_bytes()),
            ScalarValue::Utf8(Some(v)) => {
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                out.extend_from_slice(v.as_bytes());
            }
            _ => {}
        }
    }

    /// Reads one value at the start of `bytes`; returns it and the bytes it took, or `None`
    /// when they are not a value.
    pub(super) fn decode(bytes: &[u8]) -> Option<(ScalarValue, usize)> {
        let first = *bytes.first()?;
        let null = first & NULL != 0;
        let mut at = 1;
        let mut take = |n: usize| -> Option<&[u8]> {
            let slice = bytes.get(at..at + n)?;
            at += n;
            Some(slice)
        };
        macro_rules! fixed {
            ($variant:ident, $ty:ty) => {{
                if null {
                    ScalarValue::$variant(None)
                } else {
                    let raw = take(std::mem::size_of::<$ty>())?;
                    ScalarValue::$variant(Some(<$ty>::from_le_bytes(raw.try_into().ok()?)))
                }
            }};
        }
        let value = match first & !NULL {
            1 => ScalarValue::Boolean(if null { None } else { Some(take(1)?[0] != 0) }),
            2 => fixed!(Int8, i8),
            3 => fixed!(Int16, i16),
            4 => fixed!(Int32, i32),
            5 => fixed!(Int64, i64),
            6 => fixed!(UInt8, u8),
            7 => fixed!(UInt16, u16),
            8 => fixed!(UInt32, u32),
            9 => fixed!(UInt64, u64),
            10 => fixed!(Float32, f32),
            11 => fixed!(Float64, f64),
            12 => ScalarValue::Utf8(if null {
                None
            } else {
                let len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
                Some(String::from_utf8(take(len)?.to_vec()).ok()?)
            }),
            13 => {
                let precision = take(1)?[0];
                let scale = take(1)?[0] as i8;
                let value = if null {
                    None
                } else {
                    Some(i128::from_le_bytes(take(16)?.try_into().ok()?))
                };
                ScalarValue::Decimal128(value, precision, scale)
            }
            _ => return None,
        };
        Some((value, at))
    }
}

/// Reads a group's state back into `group`'s fresh accumulators.
pub(super) fn restore(group: &mut Group, bytes: &[u8]) -> Result<()> {
    let fail = |e: &dyn std::fmt::Display| {
        EngineError::internal(format!("cannot read aggregate state: {e}"))
    };
    let read_u16 = |at: usize| -> Result<u16> {
        bytes
            .get(at..at + 2)
            .and_then(|b| b.try_into().ok())
            .map(u16::from_be_bytes)
            .ok_or_else(|| fail(&"truncated"))
    };
    let flags = bytes.first().copied().unwrap_or(0);
    group.emitted = flags & 1 == 1;
    let mut at = 1;
    if flags & 2 == 2 {
        let latest = bytes
            .get(1..9)
            .and_then(|b| b.try_into().ok())
            .map(i64::from_be_bytes)
            .ok_or_else(|| fail(&"truncated"))?;
        group.latest = Some(latest);
        at = 9;
    }
    let n = read_u16(at)? as usize;
    let counts = (0..n)
        .map(|i| read_u16(at + 2 + 2 * i))
        .collect::<Result<Vec<_>>>()?;
    let mut rest = bytes
        .get(at + 2 + 2 * n..)
        .ok_or_else(|| fail(&"truncated"))?;
    if flags & 4 == 4 {
        for (acc, count) in group.accumulators.iter_mut().zip(counts) {
            let mut columns = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let (value, used) =
                    compact_scalar::decode(rest).ok_or_else(|| fail(&"a value is malformed"))?;
                rest = &rest[used..];
                columns.push(value.to_array().map_err(|e| fail(&e))?);
            }
            acc.merge_batch(&columns).map_err(|e| fail(&e))?;
        }
        return Ok(());
    }
    let ipc = rest;
    let mut reader = StreamReader::try_new(ipc, None).map_err(|e| fail(&e))?;
    let batch = reader
        .next()
        .ok_or_else(|| fail(&"no batch"))?
        .map_err(|e| fail(&e))?;
    let mut at = 0;
    for (acc, count) in group.accumulators.iter_mut().zip(counts) {
        let columns = &batch.columns()[at..at + count as usize];
        acc.merge_batch(columns).map_err(|e| fail(&e))?;
        at += count as usize;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use datafusion::arrow::datatypes::DataType;
    use proptest::prelude::*;

    fn round_trip(value: &ScalarValue) -> Option<ScalarValue> {
        let mut bytes = Vec::new();
        compact_scalar::encode(value, &mut bytes);
        let (decoded, used) = compact_scalar::decode(&bytes)?;
        assert_eq!(used, bytes.len(), "{value:?} left bytes behind");
        Some(decoded)
    }

    #[test]
    fn compact_state_values_round_trip_nulls_and_extremes() {
        let values = [
            ScalarValue::Boolean(Some(true)),
            ScalarValue::Boolean(None),
            ScalarValue::Int8(Some(i8::MIN)),
            ScalarValue::Int16(Some(-2)),
            ScalarValue::Int32(None),
            ScalarValue::Int64(Some(i64::MAX)),
            ScalarValue::UInt8(Some(255)),
            ScalarValue::UInt16(Some(7)),
            ScalarValue::UInt32(Some(u32::MAX)),
            ScalarValue::UInt64(None),
            ScalarValue::Float32(Some(-0.5)),
            ScalarValue::Float64(Some(f64::MIN_POSITIVE)),
            ScalarValue::Float64(None),
            ScalarValue::Utf8(Some(String::new())),
            ScalarValue::Utf8(Some("naïve".into())),
            ScalarValue::Utf8(None),
            ScalarValue::Decimal128(Some(-12_345), 10, 2),
            ScalarValue::Decimal128(None, 38, 0),
        ];
        for value in values {
            assert_eq!(round_trip(&value).as_ref(), Some(&value));
        }
        // Lists and other nested values take the Arrow IPC path instead.
        assert!(!compact_scalar::encodable(&ScalarValue::new_null_list(
            DataType::Int64,
            true,
            1
        )));
        // Truncated or unknown bytes are an error, not a panic.
        assert!(compact_scalar::decode(&[5, 1, 2]).is_none());
        assert!(compact_scalar::decode(&[12, 9, 0, 0, 0, b'a']).is_none());
        assert!(compact_scalar::decode(&[0x7f]).is_none());
        assert!(compact_scalar::decode(&[]).is_none());
    }

    proptest! {
        #[test]
        fn compact_state_values_round_trip(
            i in any::<i64>(),
            f in any::<f64>().prop_filter("NaN is not equal to itself", |f| !f.is_nan()),
            s in ".*",
            d in any::<i128>(),
        ) {
            for value in [
                ScalarValue::Int64(Some(i)),
                ScalarValue::Float64(Some(f)),
                ScalarValue::Utf8(Some(s.clone())),
                ScalarValue::Decimal128(Some(d), 38, 4),
            ] {
                prop_assert_eq!(round_trip(&value), Some(value));
            }
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = compact_scalar::decode(&bytes);
        }
    }
}
