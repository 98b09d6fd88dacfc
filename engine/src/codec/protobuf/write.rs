//! Rows written straight to Protobuf wire bytes, for messages whose columns are all scalars
//! (BOOLEAN, INT, BIGINT, DOUBLE, STRING) written to scalar fields: the same bytes
//! [`super::convert::row_message`] gives (fields in number order, a null left unset, a default
//! value left out where the field has no presence), without building a message per row.

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int32Array, Int64Array, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int32Type, Int64Type};
use prost::encoding::{self, WireType};
use prost_reflect::{FieldDescriptor, MessageDescriptor};

use super::direct::Scalar;

/// Where each field's value comes from.
pub struct FlatWriter {
    /// In field-number order.
    slots: Vec<Slot>,
}

struct Slot {
    column: usize,
    number: u32,
    scalar: Scalar,
    presence: bool,
}

/// A column, typed once per batch.
enum Column<'a> {
    Bool(&'a BooleanArray),
    Int32(&'a Int32Array),
    Int64(&'a Int64Array),
    Float64(&'a Float64Array),
    Utf8(&'a StringArray),
}

impl Column<'_> {
    fn int(&self, row: usize) -> Option<i64> {
        match self {
            Column::Int32(a) => Some(i64::from(a.value(row))),
            Column::Int64(a) => Some(a.value(row)),
            _ => None,
        }
    }

    fn float(&self, row: usize) -> Option<f64> {
        match self {
            Column::Float64(a) => Some(a.value(row)),
            other => other.int(row).map(|n| n as f64),
        }
    }
}

impl FlatWriter {
    /// A writer of `columns` (named `names`) as `message`, when every column that names a
    /// field is a scalar the writer handles; `None` sends the rows the general way.
    pub fn new(
        message: &MessageDescriptor,
        names: &[String],
        columns: &[ArrayRef],
    ) -> Option<Self> {
        let mut slots: Vec<Slot> = Vec::new();
        for (column, (name, array)) in names.iter().zip(columns).enumerate() {
            let Some(field) = field_named(message, name) else {
                continue;
            };
            if field.is_list() || field.is_map() || slots.iter().any(|s| s.number == field.number())
            {
                return None;
            }
            let scalar = Scalar::of(&field.kind())?;
            let fits = match (scalar, array.data_type()) {
                (Scalar::Bool, DataType::Boolean) | (Scalar::String, DataType::Utf8) => true,
                (Scalar::Double | Scalar::Float, DataType::Float64) => true,
                (Scalar::Bool | Scalar::String, _) => false,
                (_, DataType::Int32 | DataType::Int64) => true,
                _ => false,
            };
            if !fits {
                return None;
            }
            slots.push(Slot {
                column,
                number: field.number(),
                scalar,
                presence: field.supports_presence(),
            });
        }
        slots.sort_by_key(|s| s.number);
        Some(FlatWriter { slots })
    }

    /// Appends row `row` of `columns` to `buf` as the message's bytes.
    pub fn encode(&self, columns: &[ArrayRef], row: usize, buf: &mut Vec<u8>) {
        for slot in &self.slots {
            let array = &columns[slot.column];
            if array.is_null(row) {
                continue;
            }
            let column = match array.data_type() {
                DataType::Boolean => Column::Bool(array.as_boolean()),
                DataType::Int32 => Column::Int32(array.as_primitive::<Int32Type>()),
                DataType::Int64 => Column::Int64(array.as_primitive::<Int64Type>()),
                DataType::Float64 => Column::Float64(array.as_primitive::<Float64Type>()),
                _ => Column::Utf8(array.as_string::<i32>()),
            };
            write(slot, &column, row, buf);
        }
    }
}

/// Writes one field's value, unless it is a default its field has no presence to keep.
fn write(slot: &Slot, column: &Column<'_>, row: usize, buf: &mut Vec<u8>) {
    let (tag, keep) = (slot.number, slot.presence);
    let int = column.int(row).unwrap_or(0);
    // The casts are the general writer's: an INT or BIGINT written to a 32-bit field keeps its
    // low bits.
    match slot.scalar {
        Scalar::Bool => {
            let v = matches!(column, Column::Bool(a) if a.value(row));
            if keep || v {
                encoding::bool::encode(tag, &v, buf);
            }
        }
        Scalar::Int32 | Scalar::SInt32 | Scalar::SFixed32 => {
            let v = int as i32;
            if keep || v != 0 {
                match slot.scalar {
                    Scalar::Int32 => encoding::int32::encode(tag, &v, buf),
                    Scalar::SInt32 => encoding::sint32::encode(tag, &v, buf),
                    _ => encoding::sfixed32::encode(tag, &v, buf),
                }
            }
        }
        Scalar::UInt32 => {
            let v = int as u32;
            if keep || v != 0 {
                encoding::uint32::encode(tag, &v, buf);
            }
        }
        Scalar::Int64 | Scalar::SInt64 | Scalar::SFixed64 => {
            if keep || int != 0 {
                match slot.scalar {
                    Scalar::Int64 => encoding::int64::encode(tag, &int, buf),
                    Scalar::SInt64 => encoding::sint64::encode(tag, &int, buf),
                    _ => encoding::sfixed64::encode(tag, &int, buf),
                }
            }
        }
        Scalar::Double => {
            let v = column.float(row).unwrap_or(0.0);
            if keep || v != 0.0 {
                encoding::double::encode(tag, &v, buf);
            }
        }
        Scalar::Float => {
            let v = column.float(row).unwrap_or(0.0) as f32;
            if keep || v != 0.0 {
                encoding::float::encode(tag, &v, buf);
            }
        }
        Scalar::String => {
            let v = match column {
                Column::Utf8(a) => a.value(row),
                _ => "",
            };
            if keep || !v.is_empty() {
                encoding::encode_key(tag, WireType::LengthDelimited, buf);
                encoding::encode_varint(v.len() as u64, buf);
                buf.extend_from_slice(v.as_bytes());
            }
        }
    }
}

/// The field a column of `name` sets: exactly, else ignoring case (as the general writer).
fn field_named(message: &MessageDescriptor, name: &str) -> Option<FieldDescriptor> {
    message.get_field_by_name(name).or_else(|| {
        message
            .fields()
            .find(|f| f.name().eq_ignore_ascii_case(name))
    })
}
