//! The web console in a real browser: headless Chromium driven over WebDriver (chromedriver)
//! against a real `eddy`. `.ci/deps` installs Debian's `chromium` and `chromium-driver` when
//! they are missing.

mod common;
// Shared with the tests crate, whose benches use more of it than these tests do.
#[allow(dead_code)]
#[path = "../../tests/src/postgres.rs"]
mod postgres;

use std::path::Path;
use std::time::{Duration, Instant};

use common::webdriver::{ChromeDriver, Session};
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";

async fn browser(driver: &ChromeDriver, profile: &Path) -> Session {
    Session::open(
        driver,
        json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                // Without the background-networking flags Chromium keeps calling out to a
                // network this machine does not have.
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--window-size=1400,900", format!("--user-data-dir={}", profile.display()),
                ],
            },
        }),
    )
    .await
}

/// Evaluates `script` until `done` holds for its value, for up to 20 seconds.
async fn wait_for(
    client: &Session,
    what: &str,
    script: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let value = client.execute(script).await;
        if done(&value) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last {value}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn type_into(client: &Session, id: &str, text: &str) {
    let field = client.find(&format!("#{id}")).await;
    client.type_into(&field, text).await;
}

async fn click(client: &Session, id: &str) {
    let button = client.find(&format!("#{id}")).await;
    client.click(&button).await;
}

/// The line chart's points as `(series, x, y)`, in the DOM's order.
const POINTS: &str = "return [...document.querySelectorAll('svg.line-chart circle.point')].map(c => [c.dataset.series, Number(c.dataset.x), Number(c.dataset.y)]);";

fn insert_views(server: &common::Server, rows: &[(&str, &str, i64)]) {
    let sql: String = rows
        .iter()
        .map(|(user, page, ts)| {
            format!(
                "INSERT INTO pageviews (user, page, ROWTIME) VALUES ('{user}', '{page}', {ts});"
            )
        })
        .collect();
    let (status, body) = common::ksql(server, &sql);
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_draws_a_live_windowed_aggregate_and_survives_a_reload() {
    let chromedriver = common::tools::chromedriver();
    let server = common::start();
    let driver = ChromeDriver::start(&chromedriver);
    let profile = tempfile::tempdir().unwrap();
    let client = browser(&driver, profile.path()).await;
    let base = format!("http://{}/", server.http);

    // 1. The SQL editor creates a stream and a windowed aggregate table.
    client.goto(&format!("{base}#query")).await;
    type_into(
        &client,
        "sql",
        "SET 'auto.offset.reset' = 'earliest';
CREATE STREAM pageviews (user STRING KEY, page STRING)
  WITH (kafka_topic='pageviews', value_format='JSON', partitions=1);
CREATE TABLE views_per_page AS
  SELECT page, COUNT(*) AS views FROM pageviews
  WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY page EMIT CHANGES;",
    )
    .await;
    click(&client, "run").await;
    wait_for(
        &client,
        "the statements to run",
        "return document.getElementById('query-status').textContent;",
        |v| v == "Done.",
    )
    .await;
    let error_hidden = client
        .execute("return document.getElementById('query-error').hidden;")
        .await;
    assert_eq!(error_hidden, json!(true));

    // A bad statement's error shows under the editor.
    type_into(&client, "sql", "SELECT * FROM no_such_stream;").await;
    click(&client, "run").await;
    let error = wait_for(
        &client,
        "the error",
        "const e = document.getElementById('query-error'); return e.hidden ? null : e.textContent;",
        |v| v.is_string(),
    )
    .await;
    assert!(
        error.as_str().unwrap().contains("NO_SUCH_STREAM"),
        "{error}"
    );

    // 2. A dashboard with a live line chart over the table.
    client.goto(&format!("{base}#dashboards")).await;
    click(&client, "dashboard-new").await;
    type_into(&client, "dashboard-title-input", "Page views").await;
    click(&client, "dashboard-create").await;
    wait_for(
        &client,
        "the new dashboard",
        "return document.getElementById('dashboard-title').textContent;",
        |v| v == "Page views",
    )
    .await;
    click(&client, "panel-add").await;
    type_into(&client, "panel-title", "Views per page").await;
    type_into(
        &client,
        "panel-sql",
        "SELECT * FROM views_per_page EMIT CHANGES;",
    )
    .await;
    click(&client, "panel-save").await;
    wait_for(
        &client,
        "the panel",
        "return document.querySelectorAll('article.panel').length;",
        |v| v == 1,
    )
    .await;

    // 3. Rows arrive and 4. the chart's points change in the DOM.
    let minute = 60_000;
    let t0 = 1_700_000_000_000 / minute * minute;
    insert_views(
        &server,
        &[
            ("u1", "home", t0),
            ("u2", "home", t0 + 1_000),
            ("u3", "news", t0 + 2_000),
        ],
    );
    let first = wait_for(&client, "the first points", POINTS, |v| {
        v.as_array().is_some_and(|a| a.len() == 2)
    })
    .await;
    let mut first: Vec<Value> = first.as_array().unwrap().clone();
    first.sort_by_key(|p| p[0].as_str().unwrap().to_string());
    assert_eq!(first, vec![json!(["home", t0, 2]), json!(["news", t0, 1])]);
    insert_views(
        &server,
        &[("u4", "home", t0 + minute), ("u5", "news", t0 + 3_000)],
    );
    let second = wait_for(&client, "the chart to change", POINTS, |v| {
        v.as_array()
            .is_some_and(|a| a.len() == 3 && a.iter().any(|p| p == &json!(["news", t0, 2])))
    })
    .await;
    assert!(
        second
            .as_array()
            .unwrap()
            .contains(&json!(["home", t0 + minute, 1])),
        "{second}"
    );

    // 5. After a reload the dashboard is still there, and draws the same points.
    client.refresh().await;
    wait_for(
        &client,
        "the dashboard after a reload",
        "return document.getElementById('dashboard-title').textContent;",
        |v| v == "Page views",
    )
    .await;
    wait_for(&client, "the points after a reload", POINTS, |v| {
        v.as_array().is_some_and(|a| a.len() == 3)
    })
    .await;
    let (status, saved) = common::request(&server.http, "GET", "/api/dashboards", None);
    assert_eq!(status, 200);
    assert_eq!(
        saved[0]["panels"][0]["sql"],
        "SELECT * FROM views_per_page EMIT CHANGES;"
    );

    // 6. A screenshot, under this test's output folder.
    let png = client.screenshot().await;
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("dashboard.png"), &png).unwrap();
    assert!(png.starts_with(b"\x89PNG"));

    // The catalog lists the query with its lag, and its details.
    client.goto(&format!("{base}#catalog")).await;
    let listed = wait_for(
        &client,
        "the catalog",
        "return document.getElementById('catalog-list').textContent;",
        |v| {
            v.as_str()
                .is_some_and(|t| t.contains("CTAS_VIEWS_PER_PAGE_1"))
        },
    )
    .await;
    assert!(listed.as_str().unwrap().contains("PAGEVIEWS"), "{listed}");
    let query = client
        .find("#catalog-list button[data-name='CTAS_VIEWS_PER_PAGE_1']")
        .await;
    client.click(&query).await;
    let detail = wait_for(
        &client,
        "the query's details",
        "return document.getElementById('catalog-detail').textContent;",
        |v| v.as_str().is_some_and(|t| t.contains("Consumer lag")),
    )
    .await;
    assert!(
        detail.as_str().unwrap().contains("total-messages: 5"),
        "{detail}"
    );
    // The nodes running it, and on which partitions: this one alone, on the embedded log.
    let host = server.http.clone();
    let nodes = wait_for(
        &client,
        "the query's nodes",
        "return Array.from(document.querySelectorAll('#catalog-detail tr')).map(r => r.textContent).join('|');",
        |v| v.as_str().is_some_and(|t| t.contains(&host)),
    )
    .await;
    assert!(
        nodes
            .as_str()
            .unwrap()
            .contains(&format!("{host}CTAS_VIEWS_PER_PAGE_1activepageviews0")),
        "{nodes}"
    );
    let node = client
        .find(&format!("#catalog-list button[data-name='{host}']"))
        .await;
    client.click(&node).await;
    wait_for(
        &client,
        "the node's details",
        "return document.getElementById('catalog-detail').textContent;",
        |v| {
            v.as_str()
                .is_some_and(|t| t.contains("ACTIVE") && t.contains("CTAS_VIEWS_PER_PAGE_1"))
        },
    )
    .await;
    std::fs::write(out.join("catalog.png"), client.screenshot().await).unwrap();
    client.quit().await;
}

/// The catalog lists a connector with its state; its details show its lag and topics, and its
/// Pause and Resume buttons work, against a real PostgreSQL sink.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_shows_a_connector_and_pauses_and_resumes_it() {
    let (pg, _db) = postgres::Postgres::with_schema(
        "CREATE TABLE report (status text PRIMARY KEY, n bigint NOT NULL);",
    )
    .await
    .unwrap();
    let chromedriver = common::tools::chromedriver();
    let server = common::start();
    let (status, body) = common::ksql(
        &server,
        &format!(
            "CREATE STREAM counts (status STRING KEY, n BIGINT)
               WITH (kafka_topic = 'counts', partitions = 1, key_format = 'JSON', value_format = 'JSON');
             CREATE SINK CONNECTOR report_sink WITH (
               'connector.class' = 'io.confluent.connect.jdbc.JdbcSinkConnector',
               'connection.url' = 'jdbc:postgresql://127.0.0.1:{}/postgres',
               'connection.user' = 'postgres', 'connection.password' = '{}',
               'topics' = 'counts', 'table.name.format' = 'report',
               'insert.mode' = 'upsert', 'pk.mode' = 'record_key', 'pk.fields' = 'status');",
            pg.port(),
            postgres::PASSWORD
        ),
    );
    assert_eq!(status, 200, "{body}");
    let driver = ChromeDriver::start(&chromedriver);
    let profile = tempfile::tempdir().unwrap();
    let client = browser(&driver, profile.path()).await;
    let base = format!("http://{}/", server.http);
    client.goto(&format!("{base}#catalog")).await;
    let listed = wait_for(
        &client,
        "the connector in the catalog",
        "return document.getElementById('catalog-list').textContent;",
        |v| v.as_str().is_some_and(|t| t.contains("REPORT_SINK")),
    )
    .await;
    assert!(
        listed.as_str().unwrap().contains("Connectors (1)"),
        "{listed}"
    );
    let connector = client
        .find("#catalog-list button[data-name='REPORT_SINK']")
        .await;
    client.click(&connector).await;
    const DETAIL: &str = "return document.getElementById('catalog-detail').textContent;";
    let detail = wait_for(&client, "the connector's details", DETAIL, |v| {
        v.as_str().is_some_and(|t| t.contains("Lag (records)"))
    })
    .await;
    let text = detail.as_str().unwrap();
    assert!(
        text.contains("RUNNING") && text.contains("JdbcSinkConnector") && text.contains("counts"),
        "{text}"
    );
    let pause = client
        .find("#catalog-detail .toolbar button:first-child")
        .await;
    client.click(&pause).await;
    wait_for(&client, "the connector paused", DETAIL, |v| {
        v.as_str()
            .is_some_and(|t| t.contains("PAUSED") && t.contains("Resume"))
    })
    .await;
    let (_, shown) = common::ksql(&server, "SHOW CONNECTORS;");
    assert_eq!(
        shown[0]["connectors"][0]["state"],
        json!("PAUSED (0/1 tasks RUNNING)")
    );
    let resume = client
        .find("#catalog-detail .toolbar button:first-child")
        .await;
    client.click(&resume).await;
    wait_for(&client, "the connector resumed", DETAIL, |v| {
        v.as_str()
            .is_some_and(|t| t.contains("RUNNING") && t.contains("Pause"))
    })
    .await;
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("connector.png"), client.screenshot().await).unwrap();
    client.quit().await;
}
