//! Eddy's own cases, in ksqlDB's formats (`tests/cases/query-validation-tests` and
//! `tests/cases/rest-query-validation-tests`, one file per feature area), written from ksqlDB's
//! documentation and source for rules the shared suite does not cover. Unlike the shared suite,
//! every one of them must pass.

use std::path::Path;

use eddy_tests::conformance::{Suite, load_paths};

#[tokio::test(flavor = "current_thread")]
async fn every_own_query_validation_case_passes() {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("cases/query-validation-tests");
    let cases = load_paths(Suite::QueryValidation, &[folder]).unwrap();
    assert!(cases.len() >= 10, "only {} cases were found", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        if let Err(why) = eddy_tests::qtt::run_case(case).await {
            failures.push(format!("{} / {}: {why}", case.file, case.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_own_rest_query_validation_case_passes() {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("cases/rest-query-validation-tests");
    let cases = load_paths(Suite::RestQueryValidation, &[folder]).unwrap();
    assert!(cases.len() >= 7, "only {} cases were found", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        if let Err(why) = eddy_tests::rqtt::run_case(case).await {
            failures.push(format!("{} / {}: {why}", case.file, case.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
