//! The KAFKA and DELIMITED codecs: whole batches to Arrow columns and back, and bad rows.

use datafusion::arrow::array::{Array, Decimal128Array, Int32Array, Int64Array, StringArray};
use eddy_engine::codec::{RowCodec, Schemas};
use eddy_engine::format::{Format, FormatSpec};
use eddy_engine::schema::{Column, ColumnKind};

fn columns(schema: &str) -> Vec<Column> {
    eddy_sql::parse_schema(schema)
        .unwrap()
        .into_iter()
        .map(|e| Column {
            name: e.name.value,
            ty: e.ty,
            kind: ColumnKind::Value,
        })
        .collect()
}

fn codec(format: FormatSpec, schema: &str) -> RowCodec {
    let cols = columns(schema);
    let refs: Vec<&Column> = cols.iter().collect();
    RowCodec::new(&format, &refs, false, &Schemas::default()).unwrap()
}

#[test]
fn kafka_integers_are_big_endian_and_bad_sizes_are_row_errors() {
    let c = codec(FormatSpec::of(Format::Kafka), "V INT");
    let one = 1i32.to_be_bytes();
    let minus = (-7i32).to_be_bytes();
    let payloads: Vec<Option<&[u8]>> = vec![Some(&one), None, Some(b"abc"), Some(&minus)];
    let decoded = c.decode(&payloads);
    let ints = decoded.columns[0]
        .as_any()
        .downcast_ref::<Int32Array>()
        .unwrap();
    assert_eq!(ints.len(), 4);
    assert_eq!(
        (
            ints.value(0),
            ints.is_null(1),
            ints.is_null(2),
            ints.value(3)
        ),
        (1, true, true, -7)
    );
    assert_eq!(decoded.errors.len(), 1);
    assert_eq!(decoded.errors[0].0, 2);
    assert!(
        decoded.errors[0].1.contains("is not 4"),
        "{}",
        decoded.errors[0].1
    );

    let encoded = c.encode(&decoded.columns, 4).unwrap();
    assert_eq!(encoded[0].as_deref(), Some(one.as_slice()));
    assert_eq!(encoded[1], None);
    assert_eq!(encoded[3].as_deref(), Some(minus.as_slice()));
}

#[test]
fn kafka_round_trips_every_type_it_carries() {
    for (schema, payload) in [
        ("V BIGINT", 1_234_567_890_123i64.to_be_bytes().to_vec()),
        ("V DOUBLE", 1.5f64.to_be_bytes().to_vec()),
        ("V STRING", "héllo".as_bytes().to_vec()),
        ("V BYTES", vec![0u8, 255, 7]),
    ] {
        let c = codec(FormatSpec::of(Format::Kafka), schema);
        let decoded = c.decode(&[Some(payload.as_slice())]);
        assert!(decoded.errors.is_empty(), "{schema}: {:?}", decoded.errors);
        assert_eq!(
            c.encode(&decoded.columns, 1).unwrap()[0].as_deref(),
            Some(payload.as_slice()),
            "{schema}"
        );
    }
    let c = codec(FormatSpec::of(Format::Kafka), "V BIGINT");
    assert!(c.decode(&[Some(b"1234")]).errors[0].1.contains("is not 8"));
}

#[test]
fn delimited_decodes_typed_fields_nulls_and_quotes() {
    let c = codec(
        FormatSpec::of(Format::Delimited),
        "ID INT, NAME STRING, PRICE DECIMAL(4, 2), N BIGINT",
    );
    let payloads: Vec<Option<&[u8]>> = vec![
        Some(b"1,apple,1.50,10"),
        Some(b"2,\"pear, green\",,20"),
        Some(b"3,fig,2.5"),
        Some(b"x,fig,2.5,1"),
        None,
    ];
    let decoded = c.decode(&payloads);
    let ids = decoded.columns[0]
        .as_any()
        .downcast_ref::<Int32Array>()
        .unwrap();
    let names = decoded.columns[1]
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    let prices = decoded.columns[2]
        .as_any()
        .downcast_ref::<Decimal128Array>()
        .unwrap();
    let ns = decoded.columns[3]
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap();
    assert_eq!(
        (
            ids.value(0),
            names.value(0),
            prices.value_as_string(0),
            ns.value(0)
        ),
        (1, "apple", "1.50".to_string(), 10)
    );
    assert_eq!(names.value(1), "pear, green");
    assert!(prices.is_null(1), "an empty field is null");
    let errors: Vec<usize> = decoded.errors.iter().map(|(row, _)| *row).collect();
    assert_eq!(errors, vec![2, 3]);
    assert!(
        decoded.errors[0]
            .1
            .contains("Unexpected field count, csvFields:3 schemaFields:4")
    );
    assert!(
        decoded.errors[1].1.contains("'x' is not a valid INTEGER"),
        "{}",
        decoded.errors[1].1
    );
    for row in [2, 3, 4] {
        assert!(
            ids.is_null(row) && names.is_null(row),
            "row {row} is null in every column"
        );
    }

    let encoded = c.encode(&decoded.columns, 2).unwrap();
    assert_eq!(encoded[0].as_deref(), Some(b"1,apple,1.50,10".as_slice()));
    assert_eq!(
        encoded[1].as_deref(),
        Some(b"2,\"pear, green\",,20".as_slice())
    );
}

#[test]
fn delimited_honours_its_delimiter_and_bytes_are_base64() {
    let c = codec(
        FormatSpec {
            delimiter: Some('|'),
            ..FormatSpec::of(Format::Delimited)
        },
        "A STRING, B BYTES",
    );
    let decoded = c.decode(&[Some(b"x,y|AAEC")]);
    assert!(decoded.errors.is_empty(), "{:?}", decoded.errors);
    let encoded = c.encode(&decoded.columns, 1).unwrap();
    assert_eq!(encoded[0].as_deref(), Some(b"x,y|AAEC".as_slice()));
    let bad = c.decode(&[Some(b"x|not base64!")]);
    assert!(bad.errors[0].1.contains("base64"), "{:?}", bad.errors);
}

fn json(schema: &str, wrapped: bool) -> RowCodec {
    let cols = columns(schema);
    let refs: Vec<&Column> = cols.iter().collect();
    RowCodec::new(
        &FormatSpec::of(Format::Json),
        &refs,
        wrapped,
        &Schemas::default(),
    )
    .unwrap()
}

fn round_trip(codec: &RowCodec, payloads: &[&str]) -> (Vec<Option<String>>, Vec<(usize, String)>) {
    let input: Vec<Option<&[u8]>> = payloads.iter().map(|p| Some(p.as_bytes())).collect();
    let decoded = codec.decode(&input);
    let encoded = codec.encode(&decoded.columns, payloads.len()).unwrap();
    (
        encoded
            .into_iter()
            .map(|e| e.map(|b| String::from_utf8(b).unwrap()))
            .collect(),
        decoded.errors,
    )
}

#[test]
fn json_objects_match_fields_case_insensitively_and_coerce_like_ksqldb() {
    let c = json(
        "ID INT, NAME STRING, PRICE DECIMAL(4, 2), OK BOOLEAN, `lower` STRING",
        true,
    );
    let (out, errors) = round_trip(
        &c,
        &[
            r#"{"id": 1, "Name": "apple", "PRICE": 1.5, "ok": true, "lower": "x", "extra": [1, {"a": 2}]}"#,
            r#"{"ID": "2", "NAME": 42, "PRICE": "0.25", "OK": "TRUE", "LOWER": "y"}"#,
            r#"{"NAME": {"nested": [1, 2]}}"#,
        ],
    );
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        out[0].as_deref(),
        Some(r#"{"ID":1,"NAME":"apple","PRICE":1.50,"OK":true,"lower":"x"}"#)
    );
    assert_eq!(
        out[1].as_deref(),
        Some(r#"{"ID":2,"NAME":"42","PRICE":0.25,"OK":true,"lower":"y"}"#)
    );
    assert_eq!(
        out[2].as_deref(),
        Some(r#"{"ID":null,"NAME":"{\"nested\":[1,2]}","PRICE":null,"OK":null,"lower":null}"#)
    );
}

#[test]
fn json_nested_types_decode_and_encode() {
    let c = json(
        "A ARRAY<STRUCT<X INT, Y ARRAY<STRING>>>, M MAP<STRING, BIGINT>, S STRUCT<F DOUBLE, B BYTES>",
        true,
    );
    let (out, errors) = round_trip(
        &c,
        &[
            r#"{"a": [{"x": 1, "y": ["p", null]}, null, {"X": 3}], "m": {"k1": 10, "k2": null}, "s": {"f": 2.5, "b": "AAEC"}}"#,
            r#"{"a": [], "m": {}, "s": null}"#,
        ],
    );
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        out[0].as_deref(),
        Some(
            r#"{"A":[{"X":1,"Y":["p",null]},null,{"X":3,"Y":null}],"M":{"k1":10,"k2":null},"S":{"F":2.5,"B":"AAEC"}}"#
        )
    );
    assert_eq!(out[1].as_deref(), Some(r#"{"A":[],"M":{},"S":null}"#));
}

#[test]
fn bad_json_rows_are_reported_and_leave_other_rows_whole() {
    let c = json("ID INT, L ARRAY<INT>", true);
    let (out, errors) = round_trip(
        &c,
        &[
            r#"{"ID": 1, "L": [1, 2]}"#,
            r#"{"ID": 2, "L": [1, "x", 3]}"#,
            r#"{"ID": {"no": 1}}"#,
            r#"{"ID": 4, "L": [4"#,
            r#"not json"#,
            r#"{"ID": 6, "L": [6]}"#,
        ],
    );
    let bad: Vec<usize> = errors.iter().map(|(row, _)| *row).collect();
    assert_eq!(bad, vec![1, 2, 3, 4]);
    assert!(
        errors[1].1.contains("requiredType: INTEGER"),
        "{}",
        errors[1].1
    );
    assert_eq!(out[0].as_deref(), Some(r#"{"ID":1,"L":[1,2]}"#));
    for (row, encoded) in out.iter().enumerate().take(5).skip(1) {
        assert_eq!(
            encoded.as_deref(),
            Some(r#"{"ID":null,"L":null}"#),
            "row {row}"
        );
    }
    assert_eq!(
        out[5].as_deref(),
        Some(r#"{"ID":6,"L":[6]}"#),
        "rows after bad ones are intact"
    );
}

#[test]
fn unwrapped_json_is_the_bare_value() {
    let c = json("V INT", false);
    let (out, errors) = round_trip(&c, &["10", "\"11\"", "null"]);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        out,
        vec![Some("10".to_string()), Some("11".to_string()), None]
    );
    let wrapped = json("V INT", true);
    let (out, _) = round_trip(&wrapped, &[r#"{"v": 5}"#]);
    assert_eq!(out[0].as_deref(), Some(r#"{"V":5}"#));
}

#[test]
fn json_fast_and_exact_paths_write_the_same_bytes() {
    // Flat objects of simple types take the fast path; adding a nested column takes the exact
    // one. Both must write ksqlDB's JSON.
    let flat = json(
        "ID BIGINT, NAME STRING, AMOUNT DOUBLE, OK BOOLEAN, P DECIMAL(6, 3), Q DECIMAL(4, 0)",
        true,
    );
    let nested = json(
        "ID BIGINT, NAME STRING, AMOUNT DOUBLE, OK BOOLEAN, P DECIMAL(6, 3), Q DECIMAL(4, 0), TAGS ARRAY<STRING>",
        true,
    );
    let rows = [
        r#"{"id": 1, "name": "a \"quoted\"\nline", "amount": 2.0, "ok": true, "p": 1.5, "q": 12, "tags": ["x"]}"#,
        r#"{"id": -7, "name": null, "amount": 0.1, "ok": false, "p": -0.005, "q": -9999, "tags": null}"#,
        r#"{"id": 0, "name": "", "amount": -3.5, "ok": true, "p": 0, "q": null, "tags": []}"#,
    ];
    let (fast, _) = round_trip(&flat, &rows);
    let (exact, _) = round_trip(&nested, &rows);
    for (f, e) in fast.iter().zip(&exact) {
        let f = f.as_deref().unwrap();
        let e = e.as_deref().unwrap();
        assert_eq!(
            format!("{},", &f[..f.len() - 1]),
            e[..e.rfind(",\"TAGS\"").unwrap() + 1]
        );
    }
    assert_eq!(
        fast[0].as_deref(),
        Some(r#"{"ID":1,"NAME":"a \"quoted\"\nline","AMOUNT":2.0,"OK":true,"P":1.500,"Q":12}"#)
    );
    assert_eq!(
        fast[1].as_deref(),
        Some(r#"{"ID":-7,"NAME":null,"AMOUNT":0.1,"OK":false,"P":-0.005,"Q":-9999}"#)
    );
    assert_eq!(
        fast[2].as_deref(),
        Some(r#"{"ID":0,"NAME":"","AMOUNT":-3.5,"OK":true,"P":0.000,"Q":null}"#)
    );
}

/// JSON read into a STRING column comes back as compact text in the order it was written, as
/// ksqlDB's Jackson node writes it; serde_json's map would sort the keys.
#[test]
fn json_read_into_a_string_column_keeps_its_key_order() {
    let c = json("DOC STRING", true);
    let decoded = c.decode(&[Some(
        br#"{"DOC": {"ITEMID": 6, "CATEGORY": {"NAME": "Food", "ID": 2}, "TAGS": [3, "b", null]}}"#
            .as_slice(),
    )]);
    assert!(decoded.errors.is_empty(), "{:?}", decoded.errors);
    let text =
        datafusion::arrow::util::display::array_value_to_string(&decoded.columns[0], 0).unwrap();
    assert_eq!(
        text,
        r#"{"ITEMID":6,"CATEGORY":{"NAME":"Food","ID":2},"TAGS":[3,"b",null]}"#
    );
}
