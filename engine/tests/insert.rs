//! `INSERT INTO ... VALUES` end to end: what lands in the topic, and ksqlDB's errors.

use eddy_engine::Session;

mod common;

/// Runs the statements and returns (key, value, timestamp) of every record in the topic.
async fn inserted(statements: &str, topic: &str) -> Vec<(Option<Vec<u8>>, Option<String>, i64)> {
    let dir = tempfile::tempdir().unwrap();
    let engine = common::open_engine(dir.path()).await;
    let mut session = Session::default();
    engine
        .execute(&mut session, statements)
        .await
        .unwrap_or_else(|e| panic!("{statements}\n{e}"));
    common::records(engine.store(), topic)
}

const STREAM: &str = "CREATE STREAM TEST (K STRING KEY, ID INT) WITH (kafka_topic='t', partitions=1, value_format='JSON');";

#[tokio::test]
async fn rows_land_in_the_topic_with_key_value_and_rowtime() {
    for insert in [
        "INSERT INTO TEST (ROWTIME, K, ID) VALUES (1234, 'key', 10);",
        "INSERT INTO TEST (ID, ROWTIME, K) VALUES (10, 1234, 'key');",
    ] {
        let got = inserted(&format!("{STREAM}{insert}"), "t").await;
        assert_eq!(
            got,
            vec![(
                Some(b"key".to_vec()),
                Some(r#"{"ID":10}"#.to_string()),
                1234
            )],
            "{insert}"
        );
    }
    let got = inserted(
        &format!("{STREAM} INSERT INTO TEST VALUES ('key', 10);"),
        "t",
    )
    .await;
    assert_eq!(got[0].0.as_deref(), Some(b"key".as_slice()));
    assert!(
        got[0].2 > 1_600_000_000_000,
        "without ROWTIME the record gets the current time"
    );

    let got = inserted(
        &format!("{STREAM} INSERT INTO TEST (K) VALUES ('10'); INSERT INTO TEST (ID) VALUES (10);"),
        "t",
    )
    .await;
    assert_eq!(
        got[0].1.as_deref(),
        Some(r#"{"ID":null}"#),
        "missing columns are null"
    );
    assert_eq!(got[1].0, None, "a missing key is a null key");
}

#[tokio::test]
async fn values_are_coerced_to_column_types() {
    let got = inserted(
        "CREATE STREAM S (K INT KEY, I INT, BI BIGINT, D DOUBLE, A ARRAY<INT>, M MAP<VARCHAR, BIGINT>, \
           V STRUCT<foo BIGINT, bar ARRAY<BIGINT>, baz DOUBLE>, DEC DECIMAL(12, 2)) \
           WITH (kafka_topic='s', partitions=1, value_format='JSON');
         INSERT INTO S (K, I, BI, D, A, M, V, DEC) VALUES (7, -1, 2, 3, ARRAY[1, 1 + 1, CAST(NULL AS INT)], \
           MAP('a' := 0, 'b' := 1), STRUCT(FOO := 2, BAR := ARRAY[2]), 0.05);",
        "s",
    )
    .await;
    assert_eq!(
        got[0].0.as_deref(),
        Some(7i32.to_be_bytes().as_slice()),
        "KAFKA INT keys are 4 bytes big-endian"
    );
    assert_eq!(
        got[0].1.as_deref(),
        Some(
            r#"{"I":-1,"BI":2,"D":3.0,"A":[1,2,null],"M":{"a":0,"b":1},"V":{"FOO":2,"BAR":[2],"BAZ":null},"DEC":0.05}"#
        )
    );
}

#[tokio::test]
async fn delimited_and_kafka_values_and_quoted_names() {
    let got = inserted(
        "CREATE STREAM `test` (`@key` STRING KEY, `id!` INT, name STRING) WITH (kafka_topic='q', partitions=1, format='DELIMITED');
         INSERT INTO `test` (ROWTIME, `@key`, `id!`, name) VALUES (1234, 'key', 10, 'a,b');",
        "q",
    )
    .await;
    assert_eq!(
        got,
        vec![(Some(b"key".to_vec()), Some("10,\"a,b\"".to_string()), 1234)]
    );
    let got = inserted(
        "CREATE STREAM K (V BIGINT) WITH (kafka_topic='k', partitions=1, value_format='KAFKA');
         INSERT INTO K (V) VALUES (5);",
        "k",
    )
    .await;
    assert_eq!(
        got[0].1.as_deref().map(str::as_bytes),
        Some(5i64.to_be_bytes().as_slice()),
        "KAFKA BIGINT values are 8 bytes big-endian"
    );
}

#[tokio::test]
async fn refused_inserts_say_why() {
    let cases: &[(&str, &str)] = &[
        (
            "INSERT INTO TEST (K, ID) VALUES ('10');",
            "Expected number columns and values to match: 2, 1",
        ),
        (
            "INSERT INTO TEST (K, ID, ROWPARTITION) VALUES ('k', 1, 5);",
            "Inserting into column `ROWPARTITION` is not allowed.",
        ),
        (
            "INSERT INTO TEST (K, ID) VALUES (FOO.bar, '10');",
            "'FOO' is not a valid stream/table name or alias.",
        ),
        (
            "INSERT INTO TEST (K, NOPE) VALUES ('k', 1);",
            "Column name `NOPE` does not exist.",
        ),
        (
            "INSERT INTO test2 (K) VALUES ('k');",
            "Cannot insert values into an unknown stream/table: `TEST2`",
        ),
        (
            "INSERT INTO TEST (K, ID) VALUES ('k', 'not a number');",
            "Failed to insert values",
        ),
    ];
    for (insert, fragment) in cases {
        let dir = tempfile::tempdir().unwrap();
        let engine = common::open_engine(dir.path()).await;
        let mut session = Session::default();
        engine.execute(&mut session, STREAM).await.unwrap();
        let err = engine
            .execute(&mut session, insert)
            .await
            .expect_err(insert);
        assert!(
            err.to_string().contains(fragment),
            "{insert}\n  expected {fragment}\n  got {err}"
        );
        assert_eq!(
            engine.store().end_offset("t", 0).unwrap(),
            0,
            "nothing was written for {insert}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let engine = common::open_engine(dir.path()).await;
    let mut session = Session::default();
    engine
        .execute(
            &mut session,
            "CREATE STREAM `input` (K STRING KEY, V INT) WITH (kafka_topic='i', partitions=1, value_format='JSON');
             CREATE SOURCE STREAM RO (K STRING KEY, V INT) WITH (kafka_topic='r', partitions=1, value_format='JSON');",
        )
        .await
        .unwrap();
    let err = engine
        .execute(&mut session, "INSERT INTO input (K) VALUES ('a');")
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("Did you mean \"input\"? Hint: wrap the source name in double quotes"),
        "{err}"
    );
    let err = engine
        .execute(&mut session, "INSERT INTO RO (K) VALUES ('a');")
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Cannot insert values into read-only stream: RO"
    );
}
