//! The AVRO format end to end: records a client wrote with its own schema are read by a
//! stream that infers its columns, a persistent query writes them back as AVRO with the schema
//! it registered, and records that are not AVRO go to the processing log.

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value as Avro;
use apache_avro::writer::datum::GenericDatumWriter;
use eddy_registry::{SchemaRequest, SchemaType, VersionSpec};
use eddy_storage::Record;

mod common;

/// A client's schema: lower-case names, an `int` the stream reads as is, a field the stream
/// does not declare, and a nullable string.
const CLIENT_SCHEMA: &str = r#"{"type":"record","name":"Order","namespace":"shop","fields":[
    {"name":"id","type":"long"},
    {"name":"qty","type":"int"},
    {"name":"note","type":["null","string"],"default":null},
    {"name":"price","type":"double"}
]}"#;

/// Confluent's framing: a zero byte, the schema id, the Avro body.
fn framed(id: u32, schema: &Schema, value: Avro) -> Vec<u8> {
    let mut bytes = vec![0];
    bytes.extend_from_slice(&id.to_be_bytes());
    let writer = GenericDatumWriter::builder(schema).build().unwrap();
    bytes.extend(writer.write_value_to_vec(value).unwrap());
    bytes
}

/// An Avro body (after the framing) read with `schema`.
fn read(schema: &Schema, body: &[u8]) -> Avro {
    let reader = GenericDatumReader::builder(schema).build().unwrap();
    reader.read_value(&mut &body[..]).unwrap()
}

fn order(id: i64, qty: i32, note: Option<&str>, price: f64) -> Avro {
    Avro::Record(vec![
        ("id".into(), Avro::Long(id)),
        ("qty".into(), Avro::Int(qty)),
        (
            "note".into(),
            match note {
                Some(n) => Avro::Union(1, Box::new(Avro::String(n.into()))),
                None => Avro::Union(0, Box::new(Avro::Null)),
            },
        ),
        ("price".into(), Avro::Double(price)),
    ])
}

fn value_record(bytes: Vec<u8>, timestamp: i64) -> Record {
    Record {
        key: None,
        value: Some(bytes.into()),
        timestamp,
        headers: Vec::new(),
    }
}

/// A field of a decoded record, without its union wrapper.
fn field<'a>(record: &'a Avro, name: &str) -> &'a Avro {
    let Avro::Record(fields) = record else {
        panic!("not a record: {record:?}")
    };
    let value = &fields.iter().find(|(n, _)| n == name).unwrap().1;
    match value {
        Avro::Union(_, inner) => inner,
        other => other,
    }
}

#[tokio::test]
async fn a_client_schema_is_inferred_transformed_and_written_back() {
    let dir = tempfile::tempdir().unwrap();
    let engine = common::open_engine(dir.path()).await;
    let registry = engine.schema_registry().clone();
    let request = SchemaRequest {
        schema: CLIENT_SCHEMA.to_string(),
        schema_type: SchemaType::Avro,
        references: Vec::new(),
    };
    let id = registry.register("orders-value", &request).await.unwrap();
    engine
        .store()
        .create_topic("orders", eddy_storage::TopicConfig::with_partitions(1))
        .unwrap();
    common::run(
        &engine,
        "CREATE STREAM ORDERS WITH (KAFKA_TOPIC='orders', VALUE_FORMAT='AVRO');",
    )
    .await;
    let catalog = engine.catalog().await;
    let orders = catalog.source("ORDERS").unwrap();
    let columns: Vec<String> = orders
        .columns
        .iter()
        .map(|c| format!("{} {}", c.name, eddy_engine::schema::type_display(&c.ty)))
        .collect();
    assert_eq!(
        columns,
        ["ID BIGINT", "QTY INTEGER", "NOTE STRING", "PRICE DOUBLE"]
    );
    assert!(orders.sql.contains("(ID BIGINT, QTY INT"), "{}", orders.sql);

    let mut session = eddy_engine::Session::default();
    session
        .properties
        .insert("auto.offset.reset".into(), "earliest".into());
    engine
        .execute(
            &mut session,
            "CREATE STREAM BIG WITH (KAFKA_TOPIC='big', VALUE_FORMAT='AVRO') AS \
             SELECT ID, QTY * 2 AS DOUBLED, NOTE, PRICE FROM ORDERS WHERE PRICE > 1;",
        )
        .await
        .unwrap();
    let schema = Schema::parse_str(CLIENT_SCHEMA).unwrap();
    // Another client's schema with an array, to forge a block count in.
    let listed = SchemaRequest {
        schema: r#"{"type":"record","name":"Listed","fields":[
            {"name":"id","type":"long"},{"name":"items","type":{"type":"array","items":"long"}}]}"#
            .to_string(),
        schema_type: SchemaType::Avro,
        references: Vec::new(),
    };
    let listed_id = registry.register("listed-value", &listed).await.unwrap();
    let mut forged = vec![0];
    forged.extend_from_slice(&listed_id.to_be_bytes());
    // id 1, then an array block claiming 2^40 items, and no items.
    forged.push(0x02);
    forged.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x40]);
    let mut trailing = framed(id, &schema, order(7, 1, None, 5.0));
    trailing.extend_from_slice(&[0xde, 0xad]);
    common::feed(
        &engine,
        "orders",
        vec![
            value_record(framed(id, &schema, order(1, 3, Some("gift"), 9.5)), 10),
            value_record(framed(id, &schema, order(2, 1, None, 0.5)), 11),
            // Not Confluent's framing: the processing log gets it, the query goes on.
            value_record(b"{\"id\": 3}".to_vec(), 12),
            // A truncated body.
            value_record(
                framed(id, &schema, order(4, 1, None, 2.0))[..7].to_vec(),
                13,
            ),
            value_record(framed(id, &schema, order(5, 7, None, 3.0)), 14),
            // A schema id the registry never gave out.
            value_record(framed(9999, &schema, order(6, 1, None, 5.0)), 15),
            // A whole record with bytes after it.
            value_record(trailing, 16),
            value_record(forged, 17),
            value_record(framed(id, &schema, order(8, 2, None, 4.0)), 18),
        ],
    )
    .await;

    // Each bad record is in the processing log with its reason; the query kept running.
    let log: Vec<(String, i64)> = engine
        .store()
        .read_records("default_ksql_processing_log", 0, 0, usize::MAX)
        .unwrap()
        .records
        .iter()
        .map(|r| {
            let entry: serde_json::Value =
                serde_json::from_slice(r.record.value.as_deref().unwrap()).unwrap();
            let message = entry["MESSAGE"]["DESERIALIZATIONERROR"]["ERRORMESSAGE"]
                .as_str()
                .unwrap()
                .to_string();
            let offset = message
                .rsplit("offset ")
                .next()
                .and_then(|o| o.trim_end_matches(')').parse().ok())
                .unwrap();
            (message, offset)
        })
        .collect();
    let offsets: Vec<i64> = log.iter().map(|(_, o)| *o).collect();
    assert_eq!(offsets, [2, 3, 5, 6, 7], "{log:?}");
    assert!(log[0].0.contains("Unknown magic byte!"), "{}", log[0].0);
    assert!(log[1].0.contains("malformed"), "{}", log[1].0);
    assert!(
        log[2].0.contains("Schema not found for id 9999"),
        "{}",
        log[2].0
    );
    assert!(log[3].0.contains("malformed"), "{}", log[3].0);
    // The forged count is refused from the bytes there are, without reserving for it.
    assert!(log[4].0.contains("malformed"), "{}", log[4].0);

    let sink = registry
        .version("big-value", VersionSpec::Latest, false)
        .await
        .unwrap();
    let sink_schema = Schema::parse_str(&sink.schema.schema).unwrap();
    assert!(sink.schema.schema.contains("KsqlDataSourceSchema"));
    let mut rows = Vec::new();
    for r in engine
        .store()
        .read_records("big", 0, 0, usize::MAX)
        .unwrap()
        .records
    {
        let bytes = r.record.value.unwrap();
        assert_eq!(bytes[0], 0);
        assert_eq!(u32::from_be_bytes(bytes[1..5].try_into().unwrap()), sink.id);
        let value = read(&sink_schema, &bytes[5..]);
        rows.push((
            field(&value, "ID").clone(),
            field(&value, "DOUBLED").clone(),
            field(&value, "NOTE").clone(),
        ));
    }
    assert_eq!(
        rows,
        vec![
            (Avro::Long(1), Avro::Int(6), Avro::String("gift".into())),
            (Avro::Long(5), Avro::Int(14), Avro::Null),
            (Avro::Long(8), Avro::Int(4), Avro::Null),
        ]
    );
}

#[tokio::test]
async fn declared_columns_register_a_schema_and_inserts_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let engine = common::open_engine(dir.path()).await;
    common::run(
        &engine,
        "CREATE STREAM S (K STRING KEY, V BIGINT, D DECIMAL(4,2), T TIMESTAMP, \
         A ARRAY<STRING>, M MAP<STRING, INT>, ST STRUCT<X INT, Y STRING>) \
         WITH (KAFKA_TOPIC='s', VALUE_FORMAT='AVRO', PARTITIONS=1); \
         INSERT INTO S (K, V, D, T, A, M, ST) VALUES ('k', 42, 12.34, 1000, ARRAY['a', 'b'], \
         MAP('x' := 1), STRUCT(X := 7, Y := 'y'));",
    )
    .await;
    let registered = engine
        .schema_registry()
        .version("s-value", VersionSpec::Latest, false)
        .await
        .unwrap();
    let schema = Schema::parse_str(&registered.schema.schema).unwrap();
    let records = engine
        .store()
        .read_records("s", 0, 0, usize::MAX)
        .unwrap()
        .records;
    let bytes = records[0].record.value.clone().unwrap();
    let value = read(&schema, &bytes[5..]);
    assert_eq!(field(&value, "V"), &Avro::Long(42));
    assert_eq!(field(&value, "T"), &Avro::TimestampMillis(1000));
    // A pull query reads the row back through the AVRO decoder.
    let rows = common::pull(&engine, "SELECT * FROM S;").await;
    let text = serde_json::to_string(&rows).unwrap();
    for expected in ["42", "12.34", "\"a\"", "\"y\""] {
        assert!(text.contains(expected), "{expected} in {text}");
    }
}

/// A shipping system's schema: camel-case names, a nullable field, a nested record, and a
/// field Eddy's queries never write, which takes its default.
const SHIPMENT_SCHEMA: &str = r#"{"type":"record","name":"Shipment","namespace":"com.acme","fields":[
    {"name":"orderId","type":"long"},
    {"name":"note","type":["null","string"],"default":null},
    {"name":"dims","type":{"type":"record","name":"Dims","fields":[
        {"name":"w","type":"int"},{"name":"h","type":["null","int"],"default":null}]}},
    {"name":"carrier","type":"string","default":"post"}
]}"#;

async fn register(engine: &eddy_engine::Engine, subject: &str, schema: &str) -> u32 {
    let request = SchemaRequest {
        schema: schema.to_string(),
        schema_type: SchemaType::Avro,
        references: Vec::new(),
    };
    engine
        .schema_registry()
        .register(subject, &request)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_query_writes_with_the_registered_schema_its_id_names() {
    let dir = tempfile::tempdir().unwrap();
    let engine = common::open_engine(dir.path()).await;
    let orders_id = register(&engine, "orders-value", CLIENT_SCHEMA).await;
    let shipment_id = register(&engine, "shipments-value", SHIPMENT_SCHEMA).await;
    engine
        .store()
        .create_topic("orders", eddy_storage::TopicConfig::with_partitions(1))
        .unwrap();
    common::run(
        &engine,
        &format!(
            "CREATE STREAM ORDERS WITH (KAFKA_TOPIC='orders', VALUE_FORMAT='AVRO'); \
             CREATE STREAM SHIPMENTS WITH (KAFKA_TOPIC='shipments', VALUE_FORMAT='AVRO', PARTITIONS=1, \
             VALUE_SCHEMA_ID={shipment_id});"
        ),
    )
    .await;
    // A schema named by its id keeps its field names as written.
    let catalog = engine.catalog().await;
    let shipments: Vec<String> = catalog
        .source("SHIPMENTS")
        .unwrap()
        .columns
        .iter()
        .map(|c| format!("{} {}", c.name, eddy_engine::schema::type_display(&c.ty)))
        .collect();
    assert_eq!(
        shipments,
        [
            "orderId BIGINT",
            "note STRING",
            "dims STRUCT<`w` INTEGER, `h` INTEGER>",
            "carrier STRING"
        ]
    );

    // Columns that are not the schema's, in its order, are refused up front.
    let reordered = common::fails(
        &engine,
        &format!(
            "CREATE STREAM BAD WITH (KAFKA_TOPIC='bad', VALUE_FORMAT='AVRO', \
             VALUE_SCHEMA_ID={shipment_id}) AS SELECT NOTE AS `note`, ID AS `orderId` FROM ORDERS;"
        ),
    )
    .await;
    assert_eq!(
        reordered,
        "The following value columns are changed, missing or reordered: [`note` STRING, `orderId` BIGINT]. \
         Schema from schema registry is [`orderId` BIGINT, `note` STRING, `dims` STRUCT<`w` INTEGER, `h` INTEGER>, `carrier` STRING]"
    );

    let mut session = eddy_engine::Session::default();
    session
        .properties
        .insert("auto.offset.reset".into(), "earliest".into());
    engine
        .execute(
            &mut session,
            &format!(
                "CREATE STREAM SHIPPED WITH (KAFKA_TOPIC='shipped', VALUE_FORMAT='AVRO', \
                 VALUE_SCHEMA_ID={shipment_id}) AS SELECT ID AS `orderId`, NOTE AS `note`, \
                 STRUCT(`w` := QTY, `h` := CAST(NULL AS INT)) AS `dims` FROM ORDERS;"
            ),
        )
        .await
        .unwrap();
    let schema = Schema::parse_str(CLIENT_SCHEMA).unwrap();
    common::feed(
        &engine,
        "orders",
        vec![
            value_record(
                framed(orders_id, &schema, order(1, 3, Some("fragile"), 9.5)),
                10,
            ),
            value_record(framed(orders_id, &schema, order(2, 1, None, 0.5)), 11),
        ],
    )
    .await;
    let physical = Schema::parse_str(SHIPMENT_SCHEMA).unwrap();
    let mut written = Vec::new();
    for r in engine
        .store()
        .read_records("shipped", 0, 0, usize::MAX)
        .unwrap()
        .records
    {
        let bytes = r.record.value.unwrap();
        assert_eq!(
            u32::from_be_bytes(bytes[1..5].try_into().unwrap()),
            shipment_id
        );
        written.push(read(&physical, &bytes[5..]));
    }
    assert_eq!(written.len(), 2, "{written:?}");
    assert_eq!(field(&written[0], "orderId"), &Avro::Long(1));
    assert_eq!(field(&written[0], "note"), &Avro::String("fragile".into()));
    assert_eq!(field(&written[1], "note"), &Avro::Null);
    assert_eq!(field(&written[0], "carrier"), &Avro::String("post".into()));
    assert_eq!(field(field(&written[0], "dims"), "w"), &Avro::Int(3));
    assert_eq!(field(field(&written[0], "dims"), "h"), &Avro::Null);
    // The subject holds the schema under the id given, not a generated one.
    let latest = engine
        .schema_registry()
        .version("shipped-value", VersionSpec::Latest, false)
        .await
        .unwrap();
    assert_eq!(latest.id, shipment_id);
}

#[tokio::test]
async fn schema_ids_and_full_names_are_checked_against_the_formats() {
    let dir = tempfile::tempdir().unwrap();
    let engine = common::open_engine(dir.path()).await;
    let id = register(&engine, "t-value", SHIPMENT_SCHEMA).await;
    let cases = [
        (
            format!("CREATE STREAM A (X INT) WITH (KAFKA_TOPIC='t', VALUE_FORMAT='AVRO', VALUE_SCHEMA_ID={id});"),
            "Table elements and VALUE_SCHEMA_ID cannot both exist for create statement.",
        ),
        (
            format!("CREATE STREAM A WITH (KAFKA_TOPIC='t', VALUE_FORMAT='JSON', VALUE_SCHEMA_ID={id});"),
            "VALUE_FORMAT should support schema inference when VALUE_SCHEMA_ID is provided. Current format is JSON.",
        ),
        (
            "CREATE STREAM A (X INT) WITH (KAFKA_TOPIC='t', VALUE_FORMAT='JSON', VALUE_AVRO_SCHEMA_FULL_NAME='a.B');".into(),
            "JSON does not support the following configs: [fullSchemaName]",
        ),
        (
            "CREATE STREAM A (X INT) WITH (KAFKA_TOPIC='t', VALUE_FORMAT='AVRO', VALUE_SCHEMA_FULL_NAME='  ');".into(),
            "fullSchemaName cannot be empty. Format configuration: {fullSchemaName=}",
        ),
        (
            "CREATE STREAM A WITH (KAFKA_TOPIC='t', VALUE_FORMAT='AVRO', VALUE_SCHEMA_ID=9999);".into(),
            "Schema for message values on topic 't' does not exist in the Schema Registry.\nSubject: t-value\nSchema Id: 9999",
        ),
    ];
    for (sql, expected) in cases {
        assert_eq!(common::fails(&engine, &sql).await, expected, "{sql}");
    }
    // A full name names the record Eddy generates and registers.
    common::run(
        &engine,
        "CREATE STREAM N (X INT) WITH (KAFKA_TOPIC='named', VALUE_FORMAT='AVRO', PARTITIONS=1, \
         VALUE_AVRO_SCHEMA_FULL_NAME='com.acme.Named'); INSERT INTO N (X) VALUES (1);",
    )
    .await;
    let registered = engine
        .schema_registry()
        .version("named-value", VersionSpec::Latest, false)
        .await
        .unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&registered.schema.schema).unwrap();
    assert_eq!(
        (parsed["namespace"].as_str(), parsed["name"].as_str()),
        (Some("com.acme"), Some("Named"))
    );
    let records = engine
        .store()
        .read_records("named", 0, 0, usize::MAX)
        .unwrap()
        .records;
    let bytes = records[0].record.value.clone().unwrap();
    assert_eq!(
        u32::from_be_bytes(bytes[1..5].try_into().unwrap()),
        registered.id
    );
}

mod round_trip {
    use std::sync::Arc;

    use datafusion::arrow::array::{
        Array, ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, ListArray,
        StringArray, StructArray,
    };
    use datafusion::arrow::buffer::OffsetBuffer;
    use datafusion::arrow::datatypes::{DataType, Field, Fields};
    use eddy_engine::codec::avro::schema::registry_request;
    use eddy_engine::codec::{RowCodec, Schemas};
    use eddy_engine::format::{Format, FormatSpec};
    use eddy_engine::schema::{Column, ColumnKind};
    use eddy_registry::SchemaRegistry;
    use proptest::prelude::*;

    const COLUMNS: &str = "B BOOLEAN, I INT, L BIGINT, D DOUBLE, S STRING, A ARRAY<INT>, ST STRUCT<X BIGINT, Y STRING>";

    type Row = (
        Option<bool>,
        Option<i32>,
        Option<i64>,
        Option<f64>,
        Option<String>,
        Option<Vec<Option<i32>>>,
        Option<(Option<i64>, Option<String>)>,
    );

    fn row() -> impl Strategy<Value = Row> {
        (
            any::<Option<bool>>(),
            any::<Option<i32>>(),
            any::<Option<i64>>(),
            prop::option::of(-1e12f64..1e12),
            prop::option::of("[a-zA-Z0-9 é😀]{0,12}"),
            prop::option::of(prop::collection::vec(any::<Option<i32>>(), 0..4)),
            prop::option::of((any::<Option<i64>>(), prop::option::of("[a-z]{0,6}"))),
        )
    }

    fn columns_of(rows: &[Row]) -> Vec<ArrayRef> {
        let list_values: Vec<Option<i32>> = rows
            .iter()
            .flat_map(|r| r.5.clone().unwrap_or_default())
            .collect();
        let offsets =
            OffsetBuffer::from_lengths(rows.iter().map(|r| r.5.as_ref().map_or(0, Vec::len)));
        let list = ListArray::new(
            Arc::new(Field::new("item", DataType::Int32, true)),
            offsets,
            Arc::new(Int32Array::from(list_values)),
            Some(
                rows.iter()
                    .map(|r| r.5.is_some())
                    .collect::<Vec<_>>()
                    .into(),
            ),
        );
        let fields = Fields::from(vec![
            Field::new("X", DataType::Int64, true),
            Field::new("Y", DataType::Utf8, true),
        ]);
        let structs = StructArray::new(
            fields,
            vec![
                Arc::new(Int64Array::from(
                    rows.iter()
                        .map(|r| r.6.as_ref().and_then(|s| s.0))
                        .collect::<Vec<_>>(),
                )),
                Arc::new(StringArray::from(
                    rows.iter()
                        .map(|r| r.6.as_ref().and_then(|s| s.1.clone()))
                        .collect::<Vec<_>>(),
                )),
            ],
            Some(
                rows.iter()
                    .map(|r| r.6.is_some())
                    .collect::<Vec<_>>()
                    .into(),
            ),
        );
        vec![
            Arc::new(BooleanArray::from(
                rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            )),
            Arc::new(Int32Array::from(
                rows.iter().map(|r| r.1).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.2).collect::<Vec<_>>(),
            )),
            Arc::new(Float64Array::from(
                rows.iter().map(|r| r.3).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.4.clone()).collect::<Vec<_>>(),
            )),
            Arc::new(list),
            Arc::new(structs),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Every batch Eddy encodes as AVRO decodes back to the same values.
        #[test]
        fn avro_round_trips_every_batch(rows in prop::collection::vec(row(), 1..20)) {
            let dir = tempfile::tempdir().unwrap();
            let store =
                eddy_storage::Store::open(dir.path(), eddy_storage::StoreOptions::default()).unwrap();
            let registry = Arc::new(SchemaRegistry::open(&store).unwrap());
            let columns: Vec<Column> = eddy_sql::parse_schema(COLUMNS)
                .unwrap()
                .into_iter()
                .map(|e| Column { name: e.name.value, ty: e.ty, kind: ColumnKind::Value })
                .collect();
            let named: Vec<(&str, &eddy_sql::ast::SqlType)> =
                columns.iter().map(|c| (c.name.as_str(), &c.ty)).collect();
            let request = registry_request(&named, true, None).unwrap();
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            runtime.block_on(registry.register("t-value", &request)).unwrap();
            let refs: Vec<&Column> = columns.iter().collect();
            let codec = RowCodec::new(
                &FormatSpec::of(Format::Avro),
                &refs,
                true,
                &Schemas::new(registry),
            )
            .unwrap();
            let batch = columns_of(&rows);
            let encoded = codec.encode(&batch, rows.len()).unwrap();
            let payloads: Vec<Option<&[u8]>> = encoded.iter().map(|p| p.as_deref()).collect();
            let decoded = codec.decode(&payloads);
            prop_assert!(decoded.errors.is_empty(), "{:?}", decoded.errors);
            for (original, back) in batch.iter().zip(&decoded.columns) {
                prop_assert_eq!(original.to_data(), back.to_data());
            }
        }
    }
}

/// A writer schema that references a named type registered under another subject (as
/// Confluent's serializers register nested records with `auto.register.schemas` and
/// references) is read with the referenced type written in, for inference and for records.
#[tokio::test]
async fn a_schema_with_references_is_inferred_and_read() {
    let dir = tempfile::tempdir().unwrap();
    let engine = common::open_engine(dir.path()).await;
    let address = r#"{"type":"record","name":"Address","namespace":"shop","fields":[
        {"name":"city","type":"string"},{"name":"zip","type":"int"}]}"#;
    register(&engine, "address", address).await;
    let shipment = r#"{"type":"record","name":"Shipment","namespace":"shop","fields":[
        {"name":"id","type":"long"},
        {"name":"to","type":"shop.Address"},
        {"name":"origin","type":["null","shop.Address"],"default":null}]}"#;
    let request = SchemaRequest {
        schema: shipment.to_string(),
        schema_type: SchemaType::Avro,
        references: vec![eddy_registry::Reference {
            name: "shop.Address".into(),
            subject: "address".into(),
            version: 1,
        }],
    };
    let id = engine
        .schema_registry()
        .register("shipments-value", &request)
        .await
        .unwrap();
    let (schema, _) = Schema::parse_str_with_list(shipment, [address]).unwrap();
    let address_value = |city: &str, zip: i32| {
        Avro::Record(vec![
            ("city".into(), Avro::String(city.into())),
            ("zip".into(), Avro::Int(zip)),
        ])
    };
    let value = Avro::Record(vec![
        ("id".into(), Avro::Long(1)),
        ("to".into(), address_value("Lyon", 69000)),
        (
            "origin".into(),
            Avro::Union(1, Box::new(address_value("Paris", 75000))),
        ),
    ]);
    let address_schema = Schema::parse_str(address).unwrap();
    let writer = GenericDatumWriter::builder(&schema)
        .schemata(vec![&address_schema])
        .unwrap()
        .build()
        .unwrap();
    let mut bytes = vec![0];
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.extend(writer.write_value_to_vec(value).unwrap());
    engine
        .store()
        .create_topic("shipments", eddy_storage::TopicConfig::with_partitions(1))
        .unwrap();
    common::feed(&engine, "shipments", vec![value_record(bytes, 1)]).await;
    common::run(
        &engine,
        "CREATE STREAM shipments WITH (kafka_topic='shipments', value_format='AVRO');",
    )
    .await;
    let rows = common::pull(&engine, "SELECT id, to->city, origin->zip FROM shipments;").await;
    assert_eq!(
        serde_json::to_string(&rows).unwrap(),
        r#"[[1,"Lyon",75000]]"#
    );
}
