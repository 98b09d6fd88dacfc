//! The PROTOBUF format end to end: records a client wrote with its own `.proto` schema are read
//! by a stream that infers its columns, a persistent query writes them back as PROTOBUF with
//! the schema it registered, and records that are not Protobuf go to the processing log.

use eddy_registry::{Parsed, SchemaRequest, SchemaType, VersionSpec};
use eddy_storage::Record;
use prost::Message as _;
use prost_reflect::{DynamicMessage, MapKey, MessageDescriptor, Value};

mod common;

/// A client's schema: lower-case names, an enum, a nested message, a list, a map, a timestamp
/// and a wrapped (nullable) scalar.
const CLIENT_SCHEMA: &str = r#"syntax = "proto3";
package shop;
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";

message Order {
  enum Channel { WEB = 0; STORE = 1; }
  message Address { string city = 1; int32 zip = 2; }
  int64 id = 1;
  Channel channel = 2;
  Address ship_to = 3;
  repeated string tags = 4;
  map<string, int64> counts = 5;
  google.protobuf.Timestamp at = 6;
  google.protobuf.DoubleValue discount = 7;
  float weight = 8;
}
"#;

fn order_descriptor(engine: &eddy_engine::Engine, id: u32) -> MessageDescriptor {
    let Ok(Some(Parsed::Protobuf(schema))) = engine.schema_registry().parsed_by_id(id) else {
        panic!("schema {id} is not Protobuf");
    };
    schema.messages()[0].clone()
}

/// Confluent's framing for the first message: zero, the id, index 0, the message.
fn framed(id: u32, message: &DynamicMessage) -> Vec<u8> {
    let mut bytes = vec![0];
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.push(0);
    bytes.extend(message.encode_to_vec());
    bytes
}

fn order(
    descriptor: &MessageDescriptor,
    id: i64,
    city: Option<&str>,
    discount: Option<f64>,
) -> DynamicMessage {
    let mut m = DynamicMessage::new(descriptor.clone());
    m.set_field_by_name("id", Value::I64(id));
    m.set_field_by_name("channel", Value::EnumNumber(1));
    if let Some(city) = city {
        let address = descriptor.get_field_by_name("ship_to").unwrap();
        let prost_reflect::Kind::Message(address) = address.kind() else {
            unreachable!()
        };
        let mut a = DynamicMessage::new(address);
        a.set_field_by_name("city", Value::String(city.into()));
        m.set_field_by_name("ship_to", Value::Message(a));
    }
    m.set_field_by_name(
        "tags",
        Value::List(vec![Value::String("a".into()), Value::String("b".into())]),
    );
    m.set_field_by_name(
        "counts",
        Value::Map([(MapKey::String("x".into()), Value::I64(2))].into()),
    );
    let at = descriptor.get_field_by_name("at").unwrap();
    let prost_reflect::Kind::Message(timestamp) = at.kind() else {
        unreachable!()
    };
    let mut t = DynamicMessage::new(timestamp);
    t.set_field_by_name("seconds", Value::I64(1_700_000_000));
    t.set_field_by_name("nanos", Value::I32(5_000_000));
    m.set_field_by_name("at", Value::Message(t));
    if let Some(d) = discount {
        let field = descriptor.get_field_by_name("discount").unwrap();
        let prost_reflect::Kind::Message(wrapper) = field.kind() else {
            unreachable!()
        };
        let mut w = DynamicMessage::new(wrapper);
        w.set_field_by_name("value", Value::F64(d));
        m.set_field_by_name("discount", Value::Message(w));
    }
    m.set_field_by_name("weight", Value::F32(1.5));
    m
}

fn value_record(bytes: Vec<u8>, timestamp: i64) -> Record {
    Record {
        key: None,
        value: Some(bytes.into()),
        timestamp,
        headers: Vec::new(),
    }
}

#[tokio::test]
async fn a_client_schema_is_inferred_transformed_and_written_back() {
    let dir = tempfile::tempdir().unwrap();
    let engine = common::open_engine(dir.path()).await;
    let request = SchemaRequest {
        schema: CLIENT_SCHEMA.to_string(),
        schema_type: SchemaType::Protobuf,
        references: Vec::new(),
    };
    let id = engine
        .schema_registry()
        .register("orders-value", &request)
        .await
        .unwrap();
    engine
        .store()
        .create_topic("orders", eddy_storage::TopicConfig::with_partitions(1))
        .unwrap();
    common::run(
        &engine,
        "CREATE STREAM ORDERS WITH (KAFKA_TOPIC='orders', VALUE_FORMAT='PROTOBUF');",
    )
    .await;
    let catalog = engine.catalog().await;
    let columns: Vec<String> = catalog
        .source("ORDERS")
        .unwrap()
        .columns
        .iter()
        .map(|c| format!("{} {}", c.name, eddy_engine::schema::type_display(&c.ty)))
        .collect();
    assert_eq!(
        columns,
        [
            "ID BIGINT",
            "CHANNEL STRING",
            "SHIP_TO STRUCT<`CITY` STRING, `ZIP` INTEGER>",
            "TAGS ARRAY<STRING>",
            "COUNTS MAP<STRING, BIGINT>",
            "AT TIMESTAMP",
            "DISCOUNT DOUBLE",
            "WEIGHT DOUBLE"
        ]
    );
    // The statement kept for replay names the inferred columns so that they parse again.
    let kept = &catalog.source("ORDERS").unwrap().sql;
    eddy_sql::parse_statements(kept).unwrap_or_else(|e| panic!("{kept}: {e}"));

    let mut session = eddy_engine::Session::default();
    session
        .properties
        .insert("auto.offset.reset".into(), "earliest".into());
    engine
        .execute(
            &mut session,
            "CREATE STREAM OUT WITH (KAFKA_TOPIC='out') AS SELECT ID, CHANNEL, SHIP_TO->CITY AS CITY, \
             TAGS, COUNTS['x'] AS X, `AT`, DISCOUNT, WEIGHT FROM ORDERS;",
        )
        .await
        .unwrap();
    let descriptor = order_descriptor(&engine, id);
    let mut forged = vec![0];
    forged.extend_from_slice(&id.to_be_bytes());
    // A message-index count of 2^40, then nothing.
    forged.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x40]);
    let mut truncated = framed(id, &order(&descriptor, 3, Some("Oslo"), None));
    truncated.truncate(truncated.len() - 3);
    common::feed(
        &engine,
        "orders",
        vec![
            value_record(
                framed(id, &order(&descriptor, 1, Some("Lyon"), Some(0.25))),
                10,
            ),
            value_record(b"{\"id\": 2}".to_vec(), 11),
            value_record(truncated, 12),
            value_record(forged, 13),
            value_record(framed(id, &order(&descriptor, 5, None, None)), 14),
        ],
    )
    .await;

    // Each bad record is in the processing log with its reason; the query kept running.
    let log: Vec<String> = engine
        .store()
        .read_records("default_ksql_processing_log", 0, 0, usize::MAX)
        .unwrap()
        .records
        .iter()
        .map(|r| {
            let entry: serde_json::Value =
                serde_json::from_slice(r.record.value.as_deref().unwrap()).unwrap();
            entry["MESSAGE"]["DESERIALIZATIONERROR"]["ERRORMESSAGE"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(log.len(), 3, "{log:?}");
    assert!(log[0].contains("Unknown magic byte!"), "{}", log[0]);
    assert!(log[1].contains("malformed"), "{}", log[1]);
    assert!(log[2].contains("message indexes"), "{}", log[2]);

    let sink = engine
        .schema_registry()
        .version("out-value", VersionSpec::Latest, false)
        .await
        .unwrap();
    assert!(
        sink.schema.schema.contains("message ConnectDefault1 {"),
        "{}",
        sink.schema.schema
    );
    let out = order_descriptor(&engine, sink.id);
    let mut rows = Vec::new();
    for r in engine
        .store()
        .read_records("out", 0, 0, usize::MAX)
        .unwrap()
        .records
    {
        let bytes = r.record.value.unwrap();
        assert_eq!(
            &bytes[..6],
            [&[0][..], &sink.id.to_be_bytes(), &[0]].concat()
        );
        let message = DynamicMessage::decode(out.clone(), &bytes[6..]).unwrap();
        let text = |name: &str| format!("{:?}", message.get_field_by_name(name).unwrap().as_ref());
        rows.push([
            text("ID"),
            text("CHANNEL"),
            text("CITY"),
            text("X"),
            format!("{}", message.has_field_by_name("DISCOUNT")),
        ]);
    }
    assert_eq!(
        rows,
        [
            [
                "I64(1)",
                "String(\"STORE\")",
                "String(\"Lyon\")",
                "I64(2)",
                "true"
            ],
            // No address: its city is null, so not written; no discount either.
            [
                "I64(5)",
                "String(\"STORE\")",
                "String(\"\")",
                "I64(2)",
                "false"
            ],
        ]
    );
}

#[tokio::test]
async fn protobuf_checks_its_options_and_types() {
    let dir = tempfile::tempdir().unwrap();
    let engine = common::open_engine(dir.path()).await;
    let cases = [
        (
            "CREATE STREAM A (K STRING KEY, X INT) WITH (KAFKA_TOPIC='a', PARTITIONS=1, VALUE_FORMAT='PROTOBUF', WRAP_SINGLE_VALUE=false);",
            "Format 'PROTOBUF' does not support 'WRAP_SINGLE_VALUE' set to 'false'.",
        ),
        (
            "CREATE STREAM A (M MAP<INT, DOUBLE>) WITH (KAFKA_TOPIC='a', PARTITIONS=1, VALUE_FORMAT='PROTOBUF');",
            "PROTOBUF format only supports MAP types with STRING keys",
        ),
        (
            "CREATE STREAM A (X INT) WITH (KAFKA_TOPIC='a', PARTITIONS=1, VALUE_FORMAT='JSON', VALUE_PROTOBUF_NULLABLE_REPRESENTATION='OPTIONAL');",
            "JSON does not support the following configs: [nullableRepresentation]",
        ),
    ];
    for (sql, expected) in cases {
        assert_eq!(common::fails(&engine, sql).await, expected, "{sql}");
    }
    // Declared columns register ksqlDB's schema; OPTIONAL keeps nulls apart from defaults.
    common::run(
        &engine,
        "CREATE STREAM P (K STRING KEY, I INT, S STRING, D DECIMAL(4, 2)) WITH (KAFKA_TOPIC='p', \
         PARTITIONS=1, VALUE_FORMAT='PROTOBUF', VALUE_PROTOBUF_NULLABLE_REPRESENTATION='OPTIONAL'); \
         INSERT INTO P (K, I, S, D) VALUES ('k', NULL, 'x', 12.34);",
    )
    .await;
    let registered = engine
        .schema_registry()
        .version("p-value", VersionSpec::Latest, false)
        .await
        .unwrap();
    assert!(
        registered.schema.schema.contains("optional int32 I = 1;"),
        "{}",
        registered.schema.schema
    );
    let rows = common::pull(&engine, "SELECT * FROM P;").await;
    assert_eq!(
        serde_json::to_string(&rows).unwrap(),
        r#"[["k",null,"x",12.34]]"#
    );
}

#[tokio::test]
async fn protobuf_nosr_writes_bare_messages_of_the_columns_schema() {
    let dir = tempfile::tempdir().unwrap();
    let engine = common::open_engine(dir.path()).await;
    common::run(
        &engine,
        "CREATE STREAM N (K STRING KEY, I INT, S STRUCT<A BIGINT>) WITH (KAFKA_TOPIC='n', \
         PARTITIONS=1, FORMAT='PROTOBUF_NOSR'); \
         INSERT INTO N (K, I, S) VALUES ('k', 7, STRUCT(A := 9));",
    )
    .await;
    // Nothing is registered: the schema is the one ksqlDB generates for the columns.
    assert!(engine.schema_registry().subjects(false).await.is_empty());
    let text = eddy_engine::codec::protobuf::schema::generate(
        &[
            ("I", &eddy_sql::ast::SqlType::Int),
            (
                "S",
                &eddy_sql::parse_schema("S STRUCT<A BIGINT>").unwrap()[0].ty,
            ),
        ],
        None,
        None,
    )
    .unwrap();
    let schema = eddy_registry::protobuf::compile(&text, &[]).unwrap();
    let records = engine
        .store()
        .read_records("n", 0, 0, usize::MAX)
        .unwrap()
        .records;
    let value = records[0].record.value.clone().unwrap();
    let message = DynamicMessage::decode(schema.messages()[0].clone(), &value[..]).unwrap();
    assert_eq!(
        message.get_field_by_name("I").unwrap().as_ref(),
        &Value::I32(7)
    );
    // The key is a bare message too.
    assert_eq!(
        records[0].record.key.as_deref().unwrap(),
        [0x0a, 0x01, b'k']
    );
    // And the stream reads it back.
    let rows = common::pull(&engine, "SELECT * FROM N;").await;
    assert_eq!(
        serde_json::to_string(&rows).unwrap(),
        r#"[["k",7,{"A":9}]]"#
    );
}

mod hostile {
    use std::sync::Arc;

    use eddy_engine::codec::{RowCodec, Schemas};
    use eddy_engine::format::{Format, FormatSpec};
    use eddy_engine::schema::{Column, ColumnKind};
    use eddy_registry::{SchemaRegistry, SchemaRequest, SchemaType};
    use proptest::prelude::*;

    /// A codec of an `Order`-shaped message's columns, over a registry holding its schema
    /// under id 1.
    fn codec() -> (tempfile::TempDir, RowCodec) {
        let dir = tempfile::tempdir().unwrap();
        let store =
            eddy_storage::Store::open(dir.path(), eddy_storage::StoreOptions::default()).unwrap();
        let registry = Arc::new(SchemaRegistry::open(&store).unwrap());
        let request = SchemaRequest {
            schema: super::CLIENT_SCHEMA.to_string(),
            schema_type: SchemaType::Protobuf,
            references: Vec::new(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(
            runtime
                .block_on(registry.register("o-value", &request))
                .unwrap(),
            1
        );
        let columns: Vec<Column> = eddy_sql::parse_schema(
            "ID BIGINT, CHANNEL STRING, SHIP_TO STRUCT<CITY STRING, ZIP INT>, TAGS ARRAY<STRING>",
        )
        .unwrap()
        .into_iter()
        .map(|e| Column {
            name: e.name.value,
            ty: e.ty,
            kind: ColumnKind::Value,
        })
        .collect();
        let refs: Vec<&Column> = columns.iter().collect();
        let codec = RowCodec::new(
            &FormatSpec::of(Format::Protobuf),
            &refs,
            true,
            &Schemas::new(registry),
        )
        .unwrap();
        (dir, codec)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any bytes after a valid frame header decode to a row or to an error for that row,
        /// never a panic, and the batch keeps its length.
        #[test]
        fn hostile_payloads_decode_or_are_refused(
            bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 1..16),
        ) {
            let (_dir, codec) = codec();
            let payloads: Vec<Vec<u8>> = bodies
                .iter()
                .map(|b| [&[0u8, 0, 0, 0, 1][..], b].concat())
                .collect();
            let refs: Vec<Option<&[u8]>> = payloads.iter().map(|p| Some(p.as_slice())).collect();
            let decoded = codec.decode(&refs);
            prop_assert_eq!(decoded.columns[0].len(), payloads.len());
        }
    }
}

/// Arrow batches through the PROTOBUF codec and back, in each of the ways a generated schema
/// lets a field be null.
mod round_trip {
    use std::sync::Arc;

    use datafusion::arrow::array::{
        Array, ArrayRef, BooleanArray, Decimal128Array, Float64Array, Int32Array, Int64Array,
        ListArray, StringArray, StructArray, TimestampMillisecondArray,
    };
    use datafusion::arrow::buffer::OffsetBuffer;
    use datafusion::arrow::datatypes::{DataType, Field, Fields};
    use eddy_engine::codec::protobuf::schema::registry_request;
    use eddy_engine::codec::{RowCodec, Schemas};
    use eddy_engine::format::{Format, FormatSpec, ProtobufNullable};
    use eddy_engine::schema::{Column, ColumnKind};
    use eddy_registry::SchemaRegistry;
    use proptest::prelude::*;

    const COLUMNS: &str = "B BOOLEAN, I INT, L BIGINT, D DOUBLE, S STRING, A ARRAY<INT>, \
        ST STRUCT<X BIGINT, Y STRING>, TS TIMESTAMP";

    /// A DECIMAL column, which sends batches through the general decoder instead of the direct
    /// one.
    const DECIMAL: &str = ", DEC DECIMAL(10, 2)";

    /// One row; Protobuf's repeated fields have no null, so the array is always present.
    #[derive(Debug, Clone)]
    struct Row {
        b: Option<bool>,
        i: Option<i32>,
        l: Option<i64>,
        d: Option<f64>,
        s: Option<String>,
        a: Vec<i32>,
        st: Option<(Option<i64>, Option<String>)>,
        ts: Option<i64>,
        dec: Option<i128>,
    }

    impl Row {
        /// The row as it reads back when scalars cannot be null: proto3 reads an unset
        /// scalar as its type's default. Messages (the struct, timestamp and decimal) keep
        /// their presence.
        fn defaulted(&self) -> Row {
            Row {
                b: Some(self.b.unwrap_or(false)),
                i: Some(self.i.unwrap_or(0)),
                l: Some(self.l.unwrap_or(0)),
                d: Some(self.d.unwrap_or(0.0)),
                s: Some(self.s.clone().unwrap_or_default()),
                a: self.a.clone(),
                st: self
                    .st
                    .as_ref()
                    .map(|(x, y)| (Some(x.unwrap_or(0)), Some(y.clone().unwrap_or_default()))),
                ts: self.ts,
                dec: self.dec,
            }
        }
    }

    fn row() -> impl Strategy<Value = Row> {
        (
            (
                any::<Option<bool>>(),
                any::<Option<i32>>(),
                any::<Option<i64>>(),
                prop::option::of(-1e12f64..1e12),
                prop::option::of("[a-zA-Z0-9 é😀]{0,12}"),
            ),
            (
                prop::collection::vec(any::<i32>(), 0..4),
                prop::option::of((any::<Option<i64>>(), prop::option::of("[a-z]{0,6}"))),
                prop::option::of(-1_000_000_000_000i64..4_000_000_000_000),
                prop::option::of(-9_999_999_999i128..9_999_999_999),
            ),
        )
            .prop_map(|((b, i, l, d, s), (a, st, ts, dec))| Row {
                b,
                i,
                l,
                d,
                s,
                a,
                st,
                ts,
                dec,
            })
    }

    fn columns_of(rows: &[Row]) -> Vec<ArrayRef> {
        fn column<T, A: From<Vec<T>> + Array + 'static>(
            rows: &[Row],
            f: impl Fn(&Row) -> T,
        ) -> ArrayRef {
            Arc::new(A::from(rows.iter().map(f).collect::<Vec<_>>()))
        }
        let list = ListArray::new(
            Arc::new(Field::new("item", DataType::Int32, true)),
            OffsetBuffer::from_lengths(rows.iter().map(|r| r.a.len())),
            Arc::new(Int32Array::from(
                rows.iter().flat_map(|r| r.a.clone()).collect::<Vec<_>>(),
            )),
            None,
        );
        let structs = StructArray::new(
            Fields::from(vec![
                Field::new("X", DataType::Int64, true),
                Field::new("Y", DataType::Utf8, true),
            ]),
            vec![
                column::<_, Int64Array>(rows, |r| r.st.as_ref().and_then(|s| s.0)),
                column::<_, StringArray>(rows, |r| r.st.as_ref().and_then(|s| s.1.clone())),
            ],
            Some(
                rows.iter()
                    .map(|r| r.st.is_some())
                    .collect::<Vec<_>>()
                    .into(),
            ),
        );
        let decimals = Decimal128Array::from(rows.iter().map(|r| r.dec).collect::<Vec<_>>())
            .with_precision_and_scale(10, 2)
            .unwrap();
        vec![
            column::<_, BooleanArray>(rows, |r| r.b),
            column::<_, Int32Array>(rows, |r| r.i),
            column::<_, Int64Array>(rows, |r| r.l),
            column::<_, Float64Array>(rows, |r| r.d),
            column::<_, StringArray>(rows, |r| r.s.clone()),
            Arc::new(list),
            Arc::new(structs),
            column::<_, TimestampMillisecondArray>(rows, |r| r.ts),
            Arc::new(decimals),
        ]
    }

    fn representation() -> impl Strategy<Value = Option<ProtobufNullable>> {
        prop_oneof![
            Just(None),
            Just(Some(ProtobufNullable::Optional)),
            Just(Some(ProtobufNullable::Wrapper)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Every batch Eddy encodes as PROTOBUF decodes back to the same values, nulls
        /// included where the schema can hold them and as proto3's defaults where it cannot,
        /// by both decoders.
        #[test]
        fn protobuf_round_trips_every_batch(
            nullable in representation(),
            rows in prop::collection::vec(row(), 1..20),
            decimal in any::<bool>(),
        ) {
            let width = if decimal { 9 } else { 8 };
            let declared = format!("{COLUMNS}{}", if decimal { DECIMAL } else { "" });
            let dir = tempfile::tempdir().unwrap();
            let store =
                eddy_storage::Store::open(dir.path(), eddy_storage::StoreOptions::default()).unwrap();
            let registry = Arc::new(SchemaRegistry::open(&store).unwrap());
            let columns: Vec<Column> = eddy_sql::parse_schema(&declared)
                .unwrap()
                .into_iter()
                .map(|e| Column { name: e.name.value, ty: e.ty, kind: ColumnKind::Value })
                .collect();
            let named: Vec<(&str, &eddy_sql::ast::SqlType)> =
                columns.iter().map(|c| (c.name.as_str(), &c.ty)).collect();
            let request = registry_request(&named, None, nullable).unwrap();
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            runtime.block_on(registry.register("t-value", &request)).unwrap();
            let refs: Vec<&Column> = columns.iter().collect();
            let mut spec = FormatSpec::of(Format::Protobuf);
            spec.protobuf_nullable = nullable;
            let codec = RowCodec::new(&spec, &refs, true, &Schemas::new(registry)).unwrap();
            let mut batch = columns_of(&rows);
            batch.truncate(width);
            let encoded = codec.encode(&batch, rows.len()).unwrap();
            let payloads: Vec<Option<&[u8]>> = encoded.iter().map(|p| p.as_deref()).collect();
            let decoded = codec.decode(&payloads);
            prop_assert!(decoded.errors.is_empty(), "{:?}", decoded.errors);
            let expected: Vec<Row> = match nullable {
                None => rows.iter().map(Row::defaulted).collect(),
                Some(_) => rows.clone(),
            };
            prop_assert_eq!(decoded.columns.len(), width);
            for (i, (want, back)) in columns_of(&expected).iter().zip(&decoded.columns).enumerate() {
                prop_assert_eq!(want.to_data(), back.to_data(), "column {}", i);
            }
        }
    }
}
