//! Protobuf messages read straight from their wire bytes into Arrow builders, for the common
//! case: columns of BOOLEAN, INT, BIGINT, DOUBLE, STRING (strings and enums), TIMESTAMP, STRUCT
//! and ARRAY of them, read from fields of the matching Protobuf types.
//!
//! The reader follows the same rules as [`super::convert`] (which builds each message with
//! `prost-reflect` and goes through ksqlDB's JSON rules): a field goes to the column of its
//! name (exactly, else ignoring case), the last occurrence of a singular field wins, repeated
//! occurrences of a message merge, an unset field with presence is null and any other reads as
//! its type's default. Where a column or field is outside that set, or a record is malformed,
//! it declines and the caller decodes the batch the general way, so both give the same rows
//! and the same errors.

use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, ListArray,
    NullBufferBuilder, StringBuilder, StructArray, TimestampMillisecondBuilder, new_null_array,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, FieldRef, Fields, TimeUnit};
use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};
use prost_reflect::{EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor};

/// The columns of `fields` from each message body of `message` (a `None` body is a row of
/// nulls), or `None` when the batch must be decoded the general way.
pub fn decode(
    fields: &Fields,
    message: &MessageDescriptor,
    bodies: &[Option<&[u8]>],
) -> Option<Vec<ArrayRef>> {
    let mut reader = MessageReader::new(message, fields, bodies.len())?;
    for body in bodies {
        match body {
            Some(body) => reader
                .read(body, std::slice::from_ref(&(0..body.len())))
                .ok()?,
            None => reader.append_null(),
        }
    }
    Some(
        reader
            .slots
            .iter_mut()
            .zip(fields.iter())
            .map(|(slot, field)| slot.column.finish(field.data_type()))
            .collect(),
    )
}

/// A malformed record; the general decoder says what is wrong with it.
struct Malformed;

impl From<prost::DecodeError> for Malformed {
    fn from(_: prost::DecodeError) -> Self {
        Malformed
    }
}

type Read<T = ()> = std::result::Result<T, Malformed>;

/// How a scalar field's wire value becomes its column's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scalar {
    Bool,
    Int32,
    SInt32,
    SFixed32,
    UInt32,
    Int64,
    SInt64,
    SFixed64,
    Double,
    Float,
    String,
}

impl Scalar {
    pub(super) fn of(kind: &Kind) -> Option<Scalar> {
        Some(match kind {
            Kind::Bool => Scalar::Bool,
            Kind::Int32 => Scalar::Int32,
            Kind::Sint32 => Scalar::SInt32,
            Kind::Sfixed32 => Scalar::SFixed32,
            Kind::Uint32 => Scalar::UInt32,
            Kind::Int64 => Scalar::Int64,
            Kind::Sint64 => Scalar::SInt64,
            Kind::Sfixed64 => Scalar::SFixed64,
            Kind::Double => Scalar::Double,
            Kind::Float => Scalar::Float,
            Kind::String => Scalar::String,
            _ => return None,
        })
    }

    fn wire_type(self) -> WireType {
        match self {
            Scalar::SFixed32 | Scalar::Float => WireType::ThirtyTwoBit,
            Scalar::SFixed64 | Scalar::Double => WireType::SixtyFourBit,
            Scalar::String => WireType::LengthDelimited,
            _ => WireType::Varint,
        }
    }
}

/// What a field holds, as its column reads it.
#[derive(Debug, Clone)]
enum Source {
    Scalar(Scalar),
    /// An enum, read as its value's name.
    Enum(EnumDescriptor),
    /// `google.protobuf.Timestamp`, read as milliseconds.
    Timestamp,
    /// A message read as a STRUCT.
    Message,
}

impl Source {
    fn wire_type(&self) -> WireType {
        match self {
            Source::Scalar(scalar) => scalar.wire_type(),
            Source::Enum(_) => WireType::Varint,
            Source::Timestamp | Source::Message => WireType::LengthDelimited,
        }
    }
}

/// The last value a singular field was given in the message being read.
#[derive(Debug, Clone)]
enum Raw {
    Unset,
    Number(u64),
    Bytes(Range<usize>),
    /// Every occurrence of a message field, merged when read.
    Messages(Vec<Range<usize>>),
}

/// A column being built.
enum Column {
    Bool(BooleanBuilder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float64(Float64Builder),
    Utf8(StringBuilder),
    Timestamp(TimestampMillisecondBuilder),
    Struct(Box<MessageReader>),
    List {
        item: FieldRef,
        offsets: Vec<i32>,
        nulls: NullBufferBuilder,
        element: Box<Column>,
    },
    /// A column no field of the message names: always null.
    Missing(usize),
}

/// Appends `value`, or null when it is NaN or infinite, as the general decoder reads it (its
/// JSON values hold neither).
fn append_finite(builder: &mut Float64Builder, value: f64) {
    if value.is_finite() {
        builder.append_value(value);
    } else {
        builder.append_null();
    }
}

impl Column {
    /// The column of `ty` that values of `source` fill, if the reader handles the pair.
    fn new(ty: &DataType, source: &Source, capacity: usize) -> Option<Column> {
        use Scalar as S;
        Some(match (ty, source) {
            (DataType::Boolean, Source::Scalar(S::Bool)) => {
                Column::Bool(BooleanBuilder::with_capacity(capacity))
            }
            (DataType::Int32, Source::Scalar(S::Int32 | S::SInt32 | S::SFixed32)) => {
                Column::Int32(Int32Builder::with_capacity(capacity))
            }
            (
                DataType::Int64,
                Source::Scalar(
                    S::Int32
                    | S::SInt32
                    | S::SFixed32
                    | S::UInt32
                    | S::Int64
                    | S::SInt64
                    | S::SFixed64,
                ),
            ) => Column::Int64(Int64Builder::with_capacity(capacity)),
            (DataType::Float64, Source::Scalar(S::Double | S::Float)) => {
                Column::Float64(Float64Builder::with_capacity(capacity))
            }
            (DataType::Utf8, Source::Scalar(S::String) | Source::Enum(_)) => {
                Column::Utf8(StringBuilder::with_capacity(capacity, capacity * 16))
            }
            (DataType::Timestamp(TimeUnit::Millisecond, None), Source::Timestamp) => {
                Column::Timestamp(TimestampMillisecondBuilder::with_capacity(capacity))
            }
            _ => return None,
        })
    }

    fn len(&self) -> usize {
        match self {
            Column::Bool(b) => b.len(),
            Column::Int32(b) => b.len(),
            Column::Int64(b) => b.len(),
            Column::Float64(b) => b.len(),
            Column::Utf8(b) => b.len(),
            Column::Timestamp(b) => b.len(),
            Column::Struct(reader) => reader.nulls.len(),
            Column::List { offsets, .. } => offsets.len() - 1,
            Column::Missing(len) => *len,
        }
    }

    fn append_null(&mut self) {
        match self {
            Column::Bool(b) => b.append_null(),
            Column::Int32(b) => b.append_null(),
            Column::Int64(b) => b.append_null(),
            Column::Float64(b) => b.append_null(),
            Column::Utf8(b) => b.append_null(),
            Column::Timestamp(b) => b.append_null(),
            Column::Struct(reader) => reader.append_null(),
            Column::List { offsets, nulls, .. } => {
                offsets.push(offsets.last().copied().unwrap_or(0));
                nulls.append_null();
            }
            Column::Missing(len) => *len += 1,
        }
    }

    /// Appends the default an unset field without presence reads as.
    fn append_default(&mut self, source: &Source) {
        match self {
            Column::Bool(b) => b.append_value(false),
            Column::Int32(b) => b.append_value(0),
            Column::Int64(b) => b.append_value(0),
            Column::Float64(b) => b.append_value(0.0),
            Column::Utf8(b) => match source {
                Source::Enum(e) => b.append_value(e.default_value().name()),
                _ => b.append_value(""),
            },
            Column::List { offsets, nulls, .. } => {
                offsets.push(offsets.last().copied().unwrap_or(0));
                nulls.append_non_null();
            }
            Column::Timestamp(_) | Column::Struct(_) | Column::Missing(_) => self.append_null(),
        }
    }

    /// Appends a number read off the wire as `source`.
    fn append_number(&mut self, source: &Source, raw: u64) -> Read {
        use Scalar as S;
        // Truncations below are the wire format's: a 32-bit field is the low bits of its varint.
        let int32 = |scalar: Scalar| match scalar {
            S::SInt32 => {
                let n = raw as u32;
                ((n >> 1) as i32) ^ -((n & 1) as i32)
            }
            _ => raw as i32,
        };
        match (self, source) {
            (Column::Bool(b), _) => b.append_value(raw != 0),
            (Column::Int32(b), Source::Scalar(s)) => b.append_value(int32(*s)),
            (Column::Int64(b), Source::Scalar(s)) => b.append_value(match s {
                S::Int32 | S::SInt32 | S::SFixed32 => i64::from(int32(*s)),
                S::UInt32 => i64::from(raw as u32),
                S::SInt64 => ((raw >> 1) as i64) ^ -((raw & 1) as i64),
                _ => raw as i64,
            }),
            (Column::Float64(b), Source::Scalar(S::Float)) => {
                append_finite(b, f64::from(f32::from_bits(raw as u32)))
            }
            (Column::Float64(b), _) => append_finite(b, f64::from_bits(raw)),
            (Column::Utf8(b), Source::Enum(e)) => b.append_value(enum_name(e, raw as i32)),
            _ => return Err(Malformed),
        }
        Ok(())
    }

    /// Appends a length-delimited value (`payload[range]`, or every occurrence of a message).
    fn append_bytes(&mut self, payload: &[u8], parts: &[Range<usize>]) -> Read {
        match self {
            Column::Utf8(b) => {
                let range = parts.last().ok_or(Malformed)?;
                let bytes = payload.get(range.clone()).ok_or(Malformed)?;
                b.append_value(std::str::from_utf8(bytes).map_err(|_| Malformed)?);
            }
            Column::Struct(reader) => reader.read(payload, parts)?,
            Column::Timestamp(b) => b.append_value(timestamp_millis(payload, parts)?),
            _ => return Err(Malformed),
        }
        Ok(())
    }

    fn finish(&mut self, ty: &DataType) -> ArrayRef {
        match self {
            Column::Bool(b) => Arc::new(b.finish()),
            Column::Int32(b) => Arc::new(b.finish()),
            Column::Int64(b) => Arc::new(b.finish()),
            Column::Float64(b) => Arc::new(b.finish()),
            Column::Utf8(b) => Arc::new(b.finish()),
            Column::Timestamp(b) => Arc::new(b.finish()),
            Column::Struct(reader) => {
                let columns = reader
                    .slots
                    .iter_mut()
                    .zip(reader.fields.iter())
                    .map(|(slot, field)| slot.column.finish(field.data_type()))
                    .collect();
                Arc::new(StructArray::new(
                    reader.fields.clone(),
                    columns,
                    reader.nulls.finish(),
                ))
            }
            Column::List {
                item,
                offsets,
                nulls,
                element,
            } => {
                let offsets = std::mem::replace(offsets, vec![0]);
                Arc::new(ListArray::new(
                    item.clone(),
                    OffsetBuffer::new(offsets.into()),
                    element.finish(item.data_type()),
                    nulls.finish(),
                ))
            }
            Column::Missing(len) => new_null_array(ty, std::mem::take(len)),
        }
    }
}

/// An enum value's name, or its number when the schema does not name it.
fn enum_name(e: &EnumDescriptor, number: i32) -> String {
    e.get_value(number)
        .map_or_else(|| number.to_string(), |v| v.name().to_string())
}

/// A `google.protobuf.Timestamp` (every occurrence merged) as milliseconds, computed as the
/// general decoder computes it.
fn timestamp_millis(payload: &[u8], parts: &[Range<usize>]) -> Read<i64> {
    let (mut seconds, mut nanos) = (0i64, 0i64);
    for part in parts {
        let mut buf = payload.get(part.clone()).ok_or(Malformed)?;
        while !buf.is_empty() {
            let (tag, wire_type) = decode_key(&mut buf)?;
            match (tag, wire_type) {
                (1, WireType::Varint) => seconds = decode_varint(&mut buf)? as i64,
                (2, WireType::Varint) => nanos = i64::from(decode_varint(&mut buf)? as i32),
                (1 | 2, _) => return Err(Malformed),
                _ => skip_field(wire_type, tag, &mut buf, DecodeContext::default())?,
            }
        }
    }
    Ok(seconds
        .saturating_mul(1000)
        .saturating_add(nanos / 1_000_000))
}

/// One column of a message: the field that fills it, if any, and how.
struct Slot {
    /// The field's number, or `None` for a column no field names.
    number: Option<u32>,
    source: Source,
    /// Whether the field is repeated (its column is a LIST of `source` values).
    repeated: bool,
    /// Whether an unset field reads as null rather than as its default.
    presence: bool,
    column: Column,
}

impl Slot {
    fn new(field: Option<&FieldDescriptor>, ty: &DataType, capacity: usize) -> Option<Slot> {
        let Some(field) = field else {
            return Some(Slot {
                number: None,
                source: Source::Message,
                repeated: false,
                presence: true,
                column: Column::Missing(0),
            });
        };
        if field.is_map() || field.is_group() {
            return None;
        }
        let source = match field.kind() {
            Kind::Enum(e) => Source::Enum(e),
            Kind::Message(m) if m.full_name() == "google.protobuf.Timestamp" => Source::Timestamp,
            Kind::Message(m) if is_well_known(&m) => return None,
            Kind::Message(_) => Source::Message,
            other => Source::Scalar(Scalar::of(&other)?),
        };
        let column = match (field.is_list(), ty) {
            (true, DataType::List(item)) => Column::List {
                item: item.clone(),
                offsets: Vec::from([0]),
                nulls: NullBufferBuilder::new(capacity),
                element: Box::new(Self::column(field, &source, item.data_type(), capacity)?),
            },
            (true, _) => return None,
            (false, ty) => Self::column(field, &source, ty, capacity)?,
        };
        Some(Slot {
            number: Some(field.number()),
            presence: field.supports_presence(),
            repeated: field.is_list(),
            source,
            column,
        })
    }

    fn column(
        field: &FieldDescriptor,
        source: &Source,
        ty: &DataType,
        capacity: usize,
    ) -> Option<Column> {
        match (source, ty, field.kind()) {
            (Source::Message, DataType::Struct(fields), Kind::Message(message)) => Some(
                Column::Struct(Box::new(MessageReader::new(&message, fields, capacity)?)),
            ),
            _ => Column::new(ty, source, capacity),
        }
    }
}

/// Messages the general decoder reads as a value of their own (dates, decimals, wrappers).
fn is_well_known(message: &MessageDescriptor) -> bool {
    let name = message.full_name();
    matches!(
        name,
        "google.protobuf.Timestamp" | "google.type.Date" | "google.type.TimeOfDay"
    ) || name == "confluent.type.Decimal"
        || (name.starts_with("google.protobuf.") && name.ends_with("Value"))
}

/// Reads messages of one type into the columns of a set of fields.
struct MessageReader {
    fields: Fields,
    slots: Vec<Slot>,
    /// The slot of each field number the columns read (`usize::MAX` for none).
    by_number: Vec<usize>,
    /// Each slot's value in the message being read.
    pending: Vec<Raw>,
    /// Which rows are present, when the reader builds a STRUCT column.
    nulls: NullBufferBuilder,
}

/// The highest field number the reader indexes directly; messages with higher ones are read
/// the general way.
const MAX_DIRECT_NUMBER: u32 = 4096;

impl MessageReader {
    fn new(message: &MessageDescriptor, fields: &Fields, capacity: usize) -> Option<Self> {
        // Each field goes to the column of its name as the JSON rules find it. Two fields in
        // one column would make the result depend on their order, and a field no column reads
        // would still be checked by the general decoder (a string's UTF-8, a message's
        // bytes), so both are left to it.
        let mut field_of: Vec<Option<FieldDescriptor>> = vec![None; fields.len()];
        for field in message.fields() {
            let name = field.name();
            let column = fields.iter().position(|f| f.name() == name).or_else(|| {
                fields
                    .iter()
                    .position(|f| f.name().eq_ignore_ascii_case(name))
            })?;
            if field_of[column].is_some() {
                return None;
            }
            field_of[column] = Some(field);
        }
        let slots = fields
            .iter()
            .zip(&field_of)
            .map(|(f, field)| Slot::new(field.as_ref(), f.data_type(), capacity))
            .collect::<Option<Vec<Slot>>>()?;
        let highest = slots.iter().filter_map(|s| s.number).max().unwrap_or(0);
        if highest > MAX_DIRECT_NUMBER {
            return None;
        }
        let mut by_number = vec![usize::MAX; highest as usize + 1];
        for (i, slot) in slots.iter().enumerate() {
            if let Some(number) = slot.number {
                by_number[number as usize] = i;
            }
        }
        Some(MessageReader {
            fields: fields.clone(),
            pending: vec![Raw::Unset; slots.len()],
            slots,
            by_number,
            nulls: NullBufferBuilder::new(capacity),
        })
    }

    fn append_null(&mut self) {
        for slot in &mut self.slots {
            slot.column.append_null();
        }
        self.nulls.append_null();
    }

    /// Reads one message, given as the parts of `payload` its occurrences span, into a row.
    fn read(&mut self, payload: &[u8], parts: &[Range<usize>]) -> Read {
        self.pending.fill(Raw::Unset);
        for part in parts {
            self.scan(payload, part.clone())?;
        }
        for (slot, raw) in self.slots.iter_mut().zip(&mut self.pending) {
            match std::mem::replace(raw, Raw::Unset) {
                _ if slot.repeated => {
                    if let Column::List {
                        offsets,
                        nulls,
                        element,
                        ..
                    } = &mut slot.column
                    {
                        offsets.push(i32::try_from(element.len()).map_err(|_| Malformed)?);
                        nulls.append_non_null();
                    }
                }
                Raw::Unset if slot.presence => slot.column.append_null(),
                Raw::Unset => slot.column.append_default(&slot.source),
                Raw::Number(n) => slot.column.append_number(&slot.source, n)?,
                Raw::Bytes(range) => slot.column.append_bytes(payload, &[range])?,
                Raw::Messages(parts) => slot.column.append_bytes(payload, &parts)?,
            }
        }
        self.nulls.append_non_null();
        Ok(())
    }

    /// Notes (or, for repeated fields, appends) the fields of one part of a message.
    fn scan(&mut self, payload: &[u8], part: Range<usize>) -> Read {
        let end = part.end;
        let mut buf = payload.get(part).ok_or(Malformed)?;
        while !buf.is_empty() {
            let (number, wire_type) = decode_key(&mut buf)?;
            let slot = match self.by_number.get(number as usize) {
                Some(&slot) if slot != usize::MAX => slot,
                _ => {
                    skip_field(wire_type, number, &mut buf, DecodeContext::default())?;
                    continue;
                }
            };
            let Slot {
                source,
                repeated,
                column,
                ..
            } = &mut self.slots[slot];
            if *repeated {
                let Column::List { element, .. } = column else {
                    return Err(Malformed);
                };
                append_element(element, source, wire_type, &mut buf, payload, end)?;
                continue;
            }
            if wire_type != source.wire_type() {
                return Err(Malformed);
            }
            let raw = &mut self.pending[slot];
            match wire_type {
                WireType::LengthDelimited => {
                    let range = length_delimited(&mut buf, end)?;
                    match (raw, source) {
                        (Raw::Messages(parts), Source::Message | Source::Timestamp) => {
                            parts.push(range)
                        }
                        (raw, Source::Message | Source::Timestamp) => {
                            *raw = Raw::Messages(vec![range])
                        }
                        (raw, _) => {
                            // An earlier occurrence is replaced, but must still be a string.
                            if let Raw::Bytes(earlier) = raw {
                                let bytes = payload.get(earlier.clone()).ok_or(Malformed)?;
                                std::str::from_utf8(bytes).map_err(|_| Malformed)?;
                            }
                            *raw = Raw::Bytes(range)
                        }
                    }
                }
                other => *raw = Raw::Number(number_value(other, &mut buf)?),
            }
        }
        Ok(())
    }
}

/// A length-delimited field's bytes, as a range of the payload (`buf` ends at `end`).
fn length_delimited(buf: &mut &[u8], end: usize) -> Read<Range<usize>> {
    let len = usize::try_from(decode_varint(buf)?).map_err(|_| Malformed)?;
    if len > buf.len() {
        return Err(Malformed);
    }
    let start = end - buf.len();
    *buf = &buf[len..];
    Ok(start..start + len)
}

/// A varint or fixed-width value off the wire.
fn number_value(wire_type: WireType, buf: &mut &[u8]) -> Read<u64> {
    fn fixed<const N: usize>(buf: &mut &[u8]) -> Read<[u8; N]> {
        let (bytes, rest) = buf.split_first_chunk::<N>().ok_or(Malformed)?;
        *buf = rest;
        Ok(*bytes)
    }
    Ok(match wire_type {
        WireType::Varint => decode_varint(buf)?,
        WireType::ThirtyTwoBit => u64::from(u32::from_le_bytes(fixed(buf)?)),
        WireType::SixtyFourBit => u64::from_le_bytes(fixed(buf)?),
        _ => return Err(Malformed),
    })
}

/// Appends one occurrence of a repeated field to its list's elements: one value, or a packed
/// run of scalars.
fn append_element(
    element: &mut Column,
    source: &Source,
    wire_type: WireType,
    buf: &mut &[u8],
    payload: &[u8],
    end: usize,
) -> Read {
    let expected = source.wire_type();
    if wire_type == expected {
        return match wire_type {
            WireType::LengthDelimited => {
                let range = length_delimited(buf, end)?;
                element.append_bytes(payload, &[range])
            }
            other => element.append_number(source, number_value(other, buf)?),
        };
    }
    // Packed: scalars of a numeric type, back to back in one length-delimited field.
    if wire_type != WireType::LengthDelimited || expected == WireType::LengthDelimited {
        return Err(Malformed);
    }
    let range = length_delimited(buf, end)?;
    let mut packed = payload.get(range).ok_or(Malformed)?;
    while !packed.is_empty() {
        element.append_number(source, number_value(expected, &mut packed)?)?;
    }
    Ok(())
}
