//! Golden query plans: each `plans/NAME.sql` runs in a fresh engine, and what `EXPLAIN` says of
//! every persistent query it starts, with the sink it writes, must match `plans/NAME.plan`
//! exactly. A plan that changes shows up here first; a new query shape is a new `.sql` file.
//!
//! `EDDY_BLESS=1 cargo test -p eddy-engine --test plans` rewrites the `.plan` files from what
//! the engine says now; review the diff before committing it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use eddy_engine::catalog::DataSource;
use eddy_engine::{Engine, Session, StatementResult};

mod common;
use common::open_store;

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/plans");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "sql"))
        .collect();
    cases.sort();
    cases
}

async fn one(engine: &Engine, sql: &str) -> StatementResult {
    let mut results = engine
        .execute(&mut Session::default(), sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}\n{e}"));
    results
        .pop()
        .unwrap_or_else(|| panic!("{sql} returned nothing"))
}

/// Columns as the golden files list them: name, type and kind.
fn columns_text(columns: &[eddy_engine::schema::Column]) -> String {
    columns
        .iter()
        .map(|c| {
            let ty = eddy_engine::schema::type_display(&c.ty);
            format!("{} {ty} {:?}", c.name, c.kind)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe_sink(out: &mut String, source: &DataSource) {
    let _ = writeln!(out, "sink {} ({}):", source.name, source.kind_name());
    let _ = writeln!(out, "  topic: {}", source.topic);
    let _ = writeln!(
        out,
        "  formats: key {:?}, value {:?}, wrapped {:?}",
        source.key_format, source.value_format, source.wrap_single_value
    );
    let _ = writeln!(out, "  timestamp: {:?}", source.timestamp_column);
    let _ = writeln!(out, "  window: {:?}", source.window);
    let _ = writeln!(out, "  columns: {}", columns_text(&source.columns));
}

/// Everything the case's queries say of themselves, as the golden file holds it.
async fn explain_case(sql: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    engine
        .execute(&mut Session::default(), sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}\n{e}"));
    let StatementResult::Queries { queries, .. } = one(&engine, "SHOW QUERIES;").await else {
        panic!("SHOW QUERIES answered something else");
    };
    let mut ids: Vec<String> = queries.into_iter().map(|q| q.id).collect();
    ids.sort();
    let mut out = String::new();
    for id in ids {
        let StatementResult::QueryDescription { query, .. } =
            one(&engine, &format!("EXPLAIN {id};")).await
        else {
            panic!("EXPLAIN {id} answered something else");
        };
        let _ = writeln!(out, "query {}", query.id);
        let _ = writeln!(out, "  sources: {}", query.sources.join(", "));
        let _ = writeln!(
            out,
            "  sinks: {} -> {}",
            query.sinks.join(", "),
            query.sink_topics.join(", ")
        );
        let _ = writeln!(out, "  fields: {}", columns_text(&query.fields));
        let _ = writeln!(out, "plan:");
        out.push_str(&query.execution_plan);
        for sink in &query.sinks {
            let StatementResult::SourceDescription { source, .. } =
                one(&engine, &format!("DESCRIBE {sink};")).await
            else {
                panic!("DESCRIBE {sink} answered something else");
            };
            describe_sink(&mut out, &source);
        }
        out.push('\n');
    }
    engine.shutdown().await;
    out
}

#[tokio::test]
async fn every_query_shape_plans_as_its_golden_file_says() {
    let bless = std::env::var_os("EDDY_BLESS").is_some();
    let mut differ = Vec::new();
    let cases = cases();
    assert!(!cases.is_empty(), "no plan cases found");
    for case in cases {
        let sql = std::fs::read_to_string(&case).unwrap();
        let actual = explain_case(&sql).await;
        assert!(!actual.is_empty(), "{} starts no query", case.display());
        let golden = case.with_extension("plan");
        if bless {
            std::fs::write(&golden, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&golden).unwrap_or_default();
        if expected != actual {
            differ.push(format!(
                "{}:\n--- expected\n{expected}\n--- actual\n{actual}",
                golden.display()
            ));
        }
    }
    assert!(
        differ.is_empty(),
        "plans differ from their golden files (EDDY_BLESS=1 rewrites them):\n{}",
        differ.join("\n")
    );
}
