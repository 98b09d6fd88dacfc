//! The direct decoder against the general one: on every batch the direct one reads, both give
//! the same columns, and it reads no batch the general one finds an error in.

use std::sync::Arc;

use datafusion::arrow::array::Array;
use datafusion::arrow::datatypes::{Field, Schema};
use eddy_registry::{SchemaRegistry, SchemaRequest, SchemaType};
use proptest::prelude::*;
use prost::Message as _;
use prost_reflect::{DynamicMessage, MessageDescriptor, Value};

use super::ProtobufCodec;
use crate::format::{Format, FormatSpec};

/// A schema with a field of every kind the direct decoder reads.
const SCHEMA: &str = r#"syntax = "proto3";

import "google/protobuf/timestamp.proto";

enum Color {
  RED = 0;
  GREEN = 1;
  BLUE = 2;
}

message Record {
  bool b = 1;
  int32 i = 2;
  sint32 si = 3;
  sfixed32 sf = 4;
  uint32 u = 5;
  int64 l = 6;
  sint64 sl = 7;
  sfixed64 sfl = 8;
  double d = 9;
  float f = 10;
  string s = 11;
  Color c = 12;
  Inner inner = 13;
  repeated int64 ls = 14;
  repeated string ss = 15;
  repeated Inner inners = 16;
  google.protobuf.Timestamp ts = 17;
  optional int32 oi = 18;
  repeated sint32 unpacked = 19 [packed = false];

  message Inner {
    int64 x = 1;
    string y = 2;
    repeated int32 z = 3;
  }
}
"#;

/// The columns, as ksqlDB infers them from [`SCHEMA`], plus one no field names.
const COLUMNS: &str = "B BOOLEAN, I INT, SI INT, SF INT, U BIGINT, L BIGINT, SL BIGINT, \
    SFL BIGINT, D DOUBLE, F DOUBLE, S STRING, C STRING, \
    INNER STRUCT<X BIGINT, Y STRING, Z ARRAY<INT>>, LS ARRAY<BIGINT>, SS ARRAY<STRING>, \
    INNERS ARRAY<STRUCT<X BIGINT, Y STRING, Z ARRAY<INT>>>, TS TIMESTAMP, OI INT, \
    UNPACKED ARRAY<INT>, ABSENT STRING";

struct Fixture {
    _dir: tempfile::TempDir,
    codec: ProtobufCodec,
    record: MessageDescriptor,
    id: u32,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store =
        eddy_storage::Store::open(dir.path(), eddy_storage::StoreOptions::default()).unwrap();
    let registry = Arc::new(SchemaRegistry::open(&store).unwrap());
    let request = SchemaRequest {
        schema: SCHEMA.to_string(),
        schema_type: SchemaType::Protobuf,
        references: Vec::new(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let id = runtime
        .block_on(registry.register("t-value", &request))
        .unwrap();
    let record = match registry.parsed_by_id(id).unwrap() {
        Some(eddy_registry::Parsed::Protobuf(schema)) => schema.messages()[0].clone(),
        _ => panic!("schema {id} is not PROTOBUF"),
    };
    let columns: Vec<(String, eddy_sql::ast::SqlType)> = eddy_sql::parse_schema(COLUMNS)
        .unwrap()
        .into_iter()
        .map(|e| (e.name.value, e.ty))
        .collect();
    let fields: Vec<Field> = columns
        .iter()
        .map(|(name, ty)| Field::new(name, eddy_sql::types::to_arrow(ty).unwrap(), true))
        .collect();
    let codec = ProtobufCodec::new(
        Some(registry),
        &FormatSpec::of(Format::Protobuf),
        columns,
        Arc::new(Schema::new(fields)),
        false,
    )
    .unwrap();
    Fixture {
        _dir: dir,
        codec,
        record,
        id,
    }
}

/// Values of the scalar fields, by name.
fn scalars() -> impl Strategy<Value = Vec<(&'static str, Value)>> {
    (
        (
            any::<bool>(),
            any::<i32>(),
            any::<i32>(),
            any::<i32>(),
            any::<u32>(),
            any::<i64>(),
            any::<i64>(),
            any::<i64>(),
        ),
        (
            -1e300f64..1e300,
            -1e30f32..1e30,
            "[a-zA-Z0-9 é😀]{0,8}",
            -1i32..5,
            prop::option::of(any::<i32>()),
        ),
    )
        .prop_map(|((b, i, si, sf, u, l, sl, sfl), (d, f, s, c, oi))| {
            let mut values = vec![
                ("b", Value::Bool(b)),
                ("i", Value::I32(i)),
                ("si", Value::I32(si)),
                ("sf", Value::I32(sf)),
                ("u", Value::U32(u)),
                ("l", Value::I64(l)),
                ("sl", Value::I64(sl)),
                ("sfl", Value::I64(sfl)),
                ("d", Value::F64(d)),
                ("f", Value::F32(f)),
                ("s", Value::String(s)),
                ("c", Value::EnumNumber(c)),
            ];
            values.extend(oi.map(|n| ("oi", Value::I32(n))));
            values
        })
}

/// An `Inner` message's fields: x, y, z.
type Inner = (i64, String, Vec<i32>);

fn inner() -> impl Strategy<Value = Inner> {
    (
        any::<i64>(),
        "[a-z]{0,5}",
        prop::collection::vec(any::<i32>(), 0..3),
    )
}

/// One message: its scalars (any of which may be left unset), the nested messages and lists.
#[derive(Debug, Clone)]
struct Generated {
    scalars: Vec<(&'static str, Value)>,
    unset: Vec<bool>,
    inner: Option<Inner>,
    ls: Vec<i64>,
    ss: Vec<String>,
    inners: Vec<Inner>,
    ts: Option<(i64, i32)>,
    unpacked: Vec<i32>,
}

fn generated() -> impl Strategy<Value = Generated> {
    (
        scalars(),
        prop::collection::vec(any::<bool>(), 13),
        prop::option::of(inner()),
        prop::collection::vec(any::<i64>(), 0..4),
        prop::collection::vec("[a-z😀]{0,4}", 0..3),
        prop::collection::vec(inner(), 0..3),
        prop::option::of((-10_000_000_000i64..10_000_000_000, 0i32..1_000_000_000)),
        prop::collection::vec(any::<i32>(), 0..3),
    )
        .prop_map(
            |(scalars, unset, inner, ls, ss, inners, ts, unpacked)| Generated {
                scalars,
                unset,
                inner,
                ls,
                ss,
                inners,
                ts,
                unpacked,
            },
        )
}

fn inner_message(descriptor: &MessageDescriptor, (x, y, z): &Inner) -> Value {
    let mut message = DynamicMessage::new(descriptor.clone());
    message.set_field_by_name("x", Value::I64(*x));
    message.set_field_by_name("y", Value::String(y.clone()));
    message.set_field_by_name("z", Value::List(z.iter().map(|n| Value::I32(*n)).collect()));
    Value::Message(message)
}

/// The framed record of `g`.
fn encode(fixture: &Fixture, g: &Generated) -> Vec<u8> {
    let record = &fixture.record;
    let mut message = DynamicMessage::new(record.clone());
    for ((name, value), unset) in g.scalars.iter().zip(&g.unset) {
        if !unset {
            message.set_field_by_name(name, value.clone());
        }
    }
    let inner = record.get_field_by_name("inner").unwrap();
    let Some(prost_reflect::Kind::Message(inner_descriptor)) = Some(inner.kind()) else {
        unreachable!()
    };
    if let Some(i) = &g.inner {
        message.set_field(&inner, inner_message(&inner_descriptor, i));
    }
    message.set_field_by_name(
        "ls",
        Value::List(g.ls.iter().map(|n| Value::I64(*n)).collect()),
    );
    let ss = g.ss.iter().map(|s| Value::String(s.clone())).collect();
    message.set_field_by_name("ss", Value::List(ss));
    let inners = g
        .inners
        .iter()
        .map(|i| inner_message(&inner_descriptor, i))
        .collect();
    message.set_field_by_name("inners", Value::List(inners));
    if let Some((seconds, nanos)) = g.ts {
        let ts = record.get_field_by_name("ts").unwrap();
        let prost_reflect::Kind::Message(ts_descriptor) = ts.kind() else {
            unreachable!()
        };
        let mut timestamp = DynamicMessage::new(ts_descriptor);
        timestamp.set_field_by_name("seconds", Value::I64(seconds));
        timestamp.set_field_by_name("nanos", Value::I32(nanos));
        message.set_field(&ts, Value::Message(timestamp));
    }
    let unpacked = g.unpacked.iter().map(|n| Value::I32(*n)).collect();
    message.set_field_by_name("unpacked", Value::List(unpacked));
    let mut bytes = vec![0];
    bytes.extend_from_slice(&fixture.id.to_be_bytes());
    bytes.push(0);
    bytes.extend(message.encode_to_vec());
    bytes
}

/// A change to a record's bytes after its framing.
#[derive(Debug, Clone)]
enum Damage {
    None,
    Truncate(usize),
    Flip(usize, u8),
    /// Appends a field occurrence: a repeated singular field, or one of a wrong wire type.
    Append(Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        4 => Just(Damage::None),
        1 => any::<usize>().prop_map(Damage::Truncate),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Damage::Flip(at, b)),
        1 => prop::collection::vec(any::<u8>(), 1..8).prop_map(Damage::Append),
        1 => prop::sample::select(vec![
            vec![0x5a, 0x02, 0xff, 0xfe],       // s (11) = invalid UTF-8
            vec![0x5a, 0x02, 0x68, 0x69],       // s (11) = "hi", again
            vec![0x6a, 0x02, 0x08, 0x07],       // inner (13) = {x: 7}, merged
            vec![0x10, 0x05],                   // i (2) = 5, again
            vec![0x15, 0x01, 0x02, 0x03, 0x04], // i (2) as a fixed32
            vec![0x72, 0x02, 0x01, 0x02],       // ls (14) packed [1, 2]
            vec![0x98, 0x01, 0x03],             // unpacked (19) = 3
            vec![0xf8, 0x07, 0x01],             // field 127, unknown
        ])
        .prop_map(Damage::Append),
    ]
}

fn apply(bytes: &mut Vec<u8>, damage: &Damage) {
    const HEADER: usize = 6;
    let body = bytes.len() - HEADER;
    match damage {
        Damage::None => {}
        Damage::Truncate(at) if body > 0 => bytes.truncate(HEADER + at % body),
        Damage::Flip(at, b) if body > 0 => bytes[HEADER + at % body] ^= b | 1,
        Damage::Append(extra) => bytes.extend_from_slice(extra),
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// On every batch, the direct decoder gives the general decoder's columns, or declines.
    #[test]
    fn direct_decoding_agrees_with_the_general_decoder(
        records in prop::collection::vec((generated(), damage(), any::<bool>()), 1..8),
    ) {
        let fixture = fixture();
        let payloads: Vec<Option<Vec<u8>>> = records
            .iter()
            .map(|(g, d, tombstone)| {
                (!tombstone).then(|| {
                    let mut bytes = encode(&fixture, g);
                    apply(&mut bytes, d);
                    bytes
                })
            })
            .collect();
        let refs: Vec<Option<&[u8]>> = payloads.iter().map(Option::as_deref).collect();
        let general = fixture.codec.decode_general(&refs);
        let undamaged = records.iter().all(|(_, d, t)| *t || matches!(d, Damage::None));
        match fixture.codec.decode_direct(&refs) {
            Some(direct) => {
                prop_assert!(general.errors.is_empty(), "read despite {:?}", general.errors);
                prop_assert_eq!(direct.len(), general.columns.len());
                for (i, (d, g)) in direct.iter().zip(&general.columns).enumerate() {
                    prop_assert_eq!(d.to_data(), g.to_data(), "column {}", i);
                }
            }
            None => prop_assert!(
                !undamaged || refs.iter().all(Option::is_none),
                "declined an undamaged batch"
            ),
        }
    }
}

/// A schema of every scalar kind the flat writer handles, some with presence.
const FLAT_SCHEMA: &str = r#"syntax = "proto3";

message Flat {
  bool b = 1;
  int32 i = 2;
  sint32 si = 3;
  sfixed32 sf = 4;
  uint32 u = 5;
  int64 l = 6;
  sint64 sl = 7;
  sfixed64 sfl = 8;
  double d = 9;
  float f = 10;
  string s = 11;
  optional int64 ol = 13;
  optional string os = 12;
  optional double od = 14;
}
"#;

fn flat_message() -> MessageDescriptor {
    eddy_registry::protobuf::compile(FLAT_SCHEMA, &[])
        .unwrap()
        .messages()[0]
        .clone()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// The flat writer gives the general writer's bytes, row for row, nulls, defaults, casts
    /// to 32-bit fields and fields with presence included.
    #[test]
    fn flat_writing_gives_the_general_writers_bytes(
        rows in prop::collection::vec((
            prop::option::of(any::<bool>()),
            prop::option::of(prop_oneof![Just(0i64), any::<i64>()]),
            prop::option::of(prop_oneof![Just(0.0f64), Just(-0.0), any::<f64>()]),
            prop::option::of("[a-z😀]{0,4}"),
        ), 1..12),
    ) {
        use datafusion::arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray};

        let message = flat_message();
        let b: ArrayRef = Arc::new(BooleanArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>()));
        let l: ArrayRef = Arc::new(Int64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>()));
        let d: ArrayRef = Arc::new(Float64Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>()));
        let s: ArrayRef = Arc::new(StringArray::from(rows.iter().map(|r| r.3.clone()).collect::<Vec<_>>()));
        // Every field from a column of its type (or, for the numbers, either width), in an
        // order that is not the fields'.
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("S", s.clone()), ("B", b), ("I", l.clone()), ("SI", l.clone()), ("SF", l.clone()),
            ("U", l.clone()), ("L", l.clone()), ("SL", l.clone()), ("SFL", l.clone()),
            ("D", d.clone()), ("F", d.clone()), ("OL", l.clone()), ("OS", s), ("OD", l),
            ("NOT_A_FIELD", d),
        ];
        let names: Vec<String> = columns.iter().map(|(n, _)| n.to_string()).collect();
        let arrays: Vec<ArrayRef> = columns.into_iter().map(|(_, a)| a).collect();
        let flat = super::write::FlatWriter::new(&message, &names, &arrays).unwrap();
        for row in 0..rows.len() {
            let mut direct = Vec::new();
            flat.encode(&arrays, row, &mut direct);
            let general = super::convert::row_message(&message, &names, &arrays, row)
                .unwrap()
                .encode_to_vec();
            prop_assert_eq!(direct, general, "row {}", row);
        }
    }
}

#[test]
fn the_flat_writer_declines_what_it_does_not_write() {
    use datafusion::arrow::array::{ArrayRef, Int64Array, ListArray, StringArray};
    use datafusion::arrow::datatypes::Int32Type;

    let message = flat_message();
    let text: ArrayRef = Arc::new(StringArray::from(vec!["1"]));
    let number: ArrayRef = Arc::new(Int64Array::from(vec![1]));
    let list: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
        Some(vec![Some(1)]),
    ]));
    let names = |n: &str| vec![n.to_string()];
    // A STRING into a number, a number into a string, a list into a scalar, and two columns
    // into one field.
    assert!(
        super::write::FlatWriter::new(&message, &names("L"), std::slice::from_ref(&text)).is_none()
    );
    assert!(
        super::write::FlatWriter::new(&message, &names("S"), std::slice::from_ref(&number))
            .is_none()
    );
    assert!(super::write::FlatWriter::new(&message, &names("L"), &[list]).is_none());
    let two = vec!["l".to_string(), "L".to_string()];
    assert!(super::write::FlatWriter::new(&message, &two, &[number.clone(), number]).is_none());
}
