//! Connectors to a PostgreSQL that takes TLS connections only (a real server started by the
//! test, with a certificate from a CA the test makes): `sslmode` decides whether the
//! connector encrypts and what it checks, for the change-data-capture source (its ordinary and
//! its replication connections) and for the sink (from its JDBC URL's parameters).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use eddy_connect::postgres::{
    PostgresSink, PostgresSinkConfig, PostgresSource, PostgresSourceConfig,
};
use eddy_storage::{Record, Store, StoreOptions};
use eddy_tests::log::wait_for_records;
use eddy_tests::postgres::{PASSWORD, Postgres};
use tokio::sync::watch;

/// A CA, and a server certificate from it naming only `db.internal` (so checking the host name
/// against 127.0.0.1 fails, and checking the chain alone passes). Returns (CA, certificate, key)
/// in PEM.
fn certificates() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["db.internal".to_string()]).unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// Runs `sql` with `psql` over TLS (the server refuses anything else).
fn psql(pg: &Postgres, sql: &str) {
    let out = Command::new(pg.tool("psql"))
        .env("PGPASSWORD", PASSWORD)
        .env("PGSSLMODE", "require")
        .args(["-h", "127.0.0.1", "-p", &pg.port().to_string()])
        .args(["-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1"])
        .args(["-c", sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn source_config(pg: &Postgres, tls: &[(&str, &str)]) -> PostgresSourceConfig {
    let mut props: BTreeMap<String, String> = [
        ("database.hostname", "127.0.0.1".to_string()),
        ("database.port", pg.port().to_string()),
        ("database.user", "postgres".into()),
        ("database.password", PASSWORD.into()),
        ("database.dbname", "postgres".into()),
        ("topic.prefix", "shop".into()),
        ("table.include.list", "public.orders".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    props.extend(tls.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    PostgresSourceConfig::from_properties(&props).unwrap()
}

/// Runs a source with `config` until it fails, or for a few seconds; its error, if any.
async fn source_failure(config: PostgresSourceConfig, store: &Store) -> Option<String> {
    let (stop, stopped) = watch::channel(false);
    let source = PostgresSource::new("tls-cdc", config, store.clone());
    let run = tokio::spawn(async move { source.run(stopped).await });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = stop.send(true);
    run.await.unwrap().err().map(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connectors_reach_a_tls_only_postgres_as_sslmode_says() {
    let pg = Postgres::start().unwrap();
    let db = pg.connect().await.unwrap();
    db.batch_execute(
        "CREATE TABLE orders (id int PRIMARY KEY, status text NOT NULL);
         INSERT INTO orders VALUES (1, 'new');
         CREATE TABLE report (id int PRIMARY KEY, status text NOT NULL);",
    )
    .await
    .unwrap();
    drop(db);
    let (ca, cert, key) = certificates();
    pg.require_tls(&cert, &key).unwrap();
    let files = tempfile::tempdir().unwrap();
    let ca_path = files.path().join("ca.pem");
    std::fs::write(&ca_path, &ca).unwrap();
    let other_ca = files.path().join("other-ca.pem");
    std::fs::write(&other_ca, certificates().0).unwrap();
    let ca_text = ca_path.to_str().unwrap();

    // Refused: no TLS; a server certificate from another CA; a name the certificate lacks.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let other_text = other_ca.to_str().unwrap();
    for (tls, expected) in [
        (vec![("database.sslmode", "disable")], "no encryption"),
        (
            vec![
                ("database.sslmode", "verify-ca"),
                ("database.sslrootcert", other_text),
            ],
            "invalid peer certificate",
        ),
        (
            vec![
                ("database.sslmode", "verify-full"),
                ("database.sslrootcert", ca_text),
            ],
            "not valid for name \"127.0.0.1\"",
        ),
    ] {
        let error = source_failure(source_config(&pg, &tls), &store)
            .await
            .unwrap_or_else(|| panic!("{tls:?} connected"));
        assert!(error.contains(expected), "{tls:?}: {error}");
    }

    // The chain checked, both connections encrypted: the snapshot, then a change.
    let config = source_config(
        &pg,
        &[
            ("database.sslmode", "verify-ca"),
            ("database.sslrootcert", ca_text),
        ],
    );
    let (stop, stopped) = watch::channel(false);
    let source = PostgresSource::new("tls-cdc", config, store.clone());
    let run = tokio::spawn(async move { source.run(stopped).await });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while store
        .last_stable_offset("shop.public.orders", 0)
        .unwrap_or(0)
        < 1
    {
        if run.is_finished() {
            panic!("the source stopped: {:?}", run.await.unwrap());
        }
        assert!(std::time::Instant::now() < deadline, "no snapshot");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    psql(&pg, "INSERT INTO orders VALUES (2, 'paid')");
    let records = wait_for_records(&store, "shop.public.orders", 2).await;
    let value: serde_json::Value =
        serde_json::from_slice(records[1].record.value.as_deref().unwrap()).unwrap();
    assert_eq!(value["after"]["status"], "paid");
    assert_eq!(value["op"], "c");
    let _ = stop.send(true);
    run.await.unwrap().unwrap();

    // The sink, from its JDBC URL's parameters.
    store.create_topic("report", Default::default()).unwrap();
    store
        .produce(
            "report",
            vec![Record::keyed(
                r#"{"id": 7}"#.to_string(),
                r#"{"id": 7, "status": "shipped"}"#.to_string(),
                1,
            )],
        )
        .await
        .unwrap();
    let sink_config = |url_tls: &str| {
        let props: BTreeMap<String, String> = [
            (
                "connection.url",
                format!(
                    "jdbc:postgresql://127.0.0.1:{}/postgres?{url_tls}",
                    pg.port()
                ),
            ),
            ("connection.user", "postgres".into()),
            ("connection.password", PASSWORD.into()),
            ("topics", "report".into()),
            ("insert.mode", "upsert".into()),
            ("pk.mode", "record_value".into()),
            ("pk.fields", "id".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        PostgresSinkConfig::from_properties(&props).unwrap()
    };
    let sink = PostgresSink::new(
        "report",
        sink_config(&format!("sslmode=verify-ca&sslrootcert={ca_text}")),
        store.clone(),
    );
    let group = sink.group();
    let (stop, stopped) = watch::channel(false);
    let run = tokio::spawn(async move { sink.run(stopped).await });
    eddy_tests::log::eventually("the sink never wrote over TLS", || {
        store
            .fetch_offset(&group, "report", 0)
            .ok()
            .flatten()
            .is_some_and(|o| o.offset == 1)
    })
    .await;
    let _ = stop.send(true);
    run.await.unwrap().unwrap();
    assert!(
        sink_is_refused(
            &store,
            sink_config(&format!("sslmode=verify-ca&sslrootcert={other_text}"))
        )
        .await
        .contains("invalid peer certificate")
    );
}

/// Runs a sink with `config`; its error once it fails.
async fn sink_is_refused(store: &Store, config: PostgresSinkConfig) -> String {
    let (_stop, stopped) = watch::channel(false);
    let sink = PostgresSink::new("refused", config, store.clone());
    tokio::time::timeout(Duration::from_secs(30), sink.run(stopped))
        .await
        .expect("the sink neither failed nor wrote")
        .unwrap_err()
        .to_string()
}
