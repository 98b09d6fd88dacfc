//! Builders and readers for the primitive types the text and binary formats carry.

use std::sync::Arc;

use base64::Engine as _;
use datafusion::arrow::array::{
    Array, ArrayRef, BinaryArray, BinaryBuilder, BooleanArray, BooleanBuilder, Date32Array,
    Date32Builder, Decimal128Array, Decimal128Builder, Float64Array, Float64Builder, Int32Array,
    Int32Builder, Int64Array, Int64Builder, StringArray, StringBuilder, Time32MillisecondArray,
    Time32MillisecondBuilder, TimestampMillisecondArray, TimestampMillisecondBuilder,
};
use datafusion::arrow::compute::kernels::cast_utils::parse_decimal;
use datafusion::arrow::datatypes::{DataType, Decimal128Type, TimeUnit};

/// A builder for one primitive column.
pub(crate) enum PrimitiveBuilder {
    Boolean(BooleanBuilder),
    Int(Int32Builder),
    Bigint(Int64Builder),
    Double(Float64Builder),
    Decimal(Decimal128Builder, u8, i8),
    String(StringBuilder),
    Bytes(BinaryBuilder),
    Date(Date32Builder),
    Time(Time32MillisecondBuilder),
    Timestamp(TimestampMillisecondBuilder),
}

impl PrimitiveBuilder {
    /// A builder for `data_type`, or `None` when it is not a primitive.
    pub fn new(data_type: &DataType, capacity: usize) -> Option<Self> {
        Some(match data_type {
            DataType::Boolean => Self::Boolean(BooleanBuilder::with_capacity(capacity)),
            DataType::Int32 => Self::Int(Int32Builder::with_capacity(capacity)),
            DataType::Int64 => Self::Bigint(Int64Builder::with_capacity(capacity)),
            DataType::Float64 => Self::Double(Float64Builder::with_capacity(capacity)),
            DataType::Decimal128(p, s) => {
                Self::Decimal(Decimal128Builder::with_capacity(capacity), *p, *s)
            }
            DataType::Utf8 => Self::String(StringBuilder::with_capacity(capacity, capacity * 16)),
            DataType::Binary => Self::Bytes(BinaryBuilder::with_capacity(capacity, capacity * 16)),
            DataType::Date32 => Self::Date(Date32Builder::with_capacity(capacity)),
            DataType::Time32(TimeUnit::Millisecond) => {
                Self::Time(Time32MillisecondBuilder::with_capacity(capacity))
            }
            DataType::Timestamp(TimeUnit::Millisecond, None) => {
                Self::Timestamp(TimestampMillisecondBuilder::with_capacity(capacity))
            }
            _ => return None,
        })
    }

    /// Number of slots appended so far.
    pub fn len(&self) -> usize {
        use datafusion::arrow::array::ArrayBuilder;
        match self {
            Self::Boolean(b) => b.len(),
            Self::Int(b) => b.len(),
            Self::Bigint(b) => b.len(),
            Self::Double(b) => b.len(),
            Self::Decimal(b, ..) => b.len(),
            Self::String(b) => b.len(),
            Self::Bytes(b) => b.len(),
            Self::Date(b) => b.len(),
            Self::Time(b) => b.len(),
            Self::Timestamp(b) => b.len(),
        }
    }

    pub fn append_null(&mut self) {
        match self {
            Self::Boolean(b) => b.append_null(),
            Self::Int(b) => b.append_null(),
            Self::Bigint(b) => b.append_null(),
            Self::Double(b) => b.append_null(),
            Self::Decimal(b, ..) => b.append_null(),
            Self::String(b) => b.append_null(),
            Self::Bytes(b) => b.append_null(),
            Self::Date(b) => b.append_null(),
            Self::Time(b) => b.append_null(),
            Self::Timestamp(b) => b.append_null(),
        }
    }

    /// Appends a value written as text, as DELIMITED carries it. Errors leave nothing appended.
    pub fn append_text(&mut self, text: &str) -> Result<(), String> {
        let bad = |what: &str| format!("'{text}' is not a valid {what}");
        match self {
            Self::Boolean(b) => match text.trim().to_ascii_lowercase().as_str() {
                "true" => b.append_value(true),
                "false" => b.append_value(false),
                _ => return Err(bad("BOOLEAN")),
            },
            Self::Int(b) => b.append_value(text.trim().parse().map_err(|_| bad("INTEGER"))?),
            Self::Bigint(b) => b.append_value(text.trim().parse().map_err(|_| bad("BIGINT"))?),
            Self::Double(b) => b.append_value(text.trim().parse().map_err(|_| bad("DOUBLE"))?),
            Self::Decimal(b, p, s) => {
                let v = parse_decimal::<Decimal128Type>(text.trim(), *p, *s)
                    .map_err(|_| bad(&format!("DECIMAL({p}, {s})")))?;
                b.append_value(v)
            }
            Self::String(b) => b.append_value(text),
            Self::Bytes(b) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(text.trim())
                    .map_err(|_| bad("base64 BYTES value"))?;
                b.append_value(bytes)
            }
            Self::Date(b) => b.append_value(
                text.trim()
                    .parse()
                    .map_err(|_| bad("DATE (days since the epoch)"))?,
            ),
            Self::Time(b) => b.append_value(
                text.trim()
                    .parse()
                    .map_err(|_| bad("TIME (milliseconds of the day)"))?,
            ),
            Self::Timestamp(b) => b.append_value(
                text.trim()
                    .parse()
                    .map_err(|_| bad("TIMESTAMP (milliseconds since the epoch)"))?,
            ),
        }
        Ok(())
    }

    pub fn finish(&mut self) -> ArrayRef {
        match self {
            Self::Boolean(b) => Arc::new(b.finish()),
            Self::Int(b) => Arc::new(b.finish()),
            Self::Bigint(b) => Arc::new(b.finish()),
            Self::Double(b) => Arc::new(b.finish()),
            Self::Decimal(b, p, s) => Arc::new(
                b.finish()
                    .with_precision_and_scale(*p, *s)
                    .unwrap_or_else(|_| Decimal128Array::from(Vec::<i128>::new())),
            ),
            Self::String(b) => Arc::new(b.finish()),
            Self::Bytes(b) => Arc::new(b.finish()),
            Self::Date(b) => Arc::new(b.finish()),
            Self::Time(b) => Arc::new(b.finish()),
            Self::Timestamp(b) => Arc::new(b.finish()),
        }
    }
}

/// The text form of row `i` of a primitive array, as DELIMITED writes it; `None` for null.
pub(crate) fn to_text(array: &dyn Array, i: usize) -> Option<String> {
    if array.is_null(i) {
        return None;
    }
    let any = array.as_any();
    Some(match array.data_type() {
        DataType::Boolean => any.downcast_ref::<BooleanArray>()?.value(i).to_string(),
        DataType::Int32 => any.downcast_ref::<Int32Array>()?.value(i).to_string(),
        DataType::Int64 => any.downcast_ref::<Int64Array>()?.value(i).to_string(),
        // As Java writes a double (`1.0`, `1.0E7`, `4.9E-324`), which ksqlDB prints.
        DataType::Float64 => {
            eddy_sql::functions::java_double(any.downcast_ref::<Float64Array>()?.value(i))
        }
        DataType::Decimal128(..) => any.downcast_ref::<Decimal128Array>()?.value_as_string(i),
        DataType::Utf8 => any.downcast_ref::<StringArray>()?.value(i).to_string(),
        DataType::Binary => base64::engine::general_purpose::STANDARD
            .encode(any.downcast_ref::<BinaryArray>()?.value(i)),
        DataType::Date32 => any.downcast_ref::<Date32Array>()?.value(i).to_string(),
        DataType::Time32(TimeUnit::Millisecond) => any
            .downcast_ref::<Time32MillisecondArray>()?
            .value(i)
            .to_string(),
        DataType::Timestamp(TimeUnit::Millisecond, None) => any
            .downcast_ref::<TimestampMillisecondArray>()?
            .value(i)
            .to_string(),
        _ => return None,
    })
}
