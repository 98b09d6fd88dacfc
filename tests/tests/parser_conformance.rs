//! Every statement in ksqlDB's test files, through Eddy's parser.
//!
//! Cases ksqlDB accepts must parse, and print back to SQL that parses to an equal AST. Cases whose
//! expected error is a parse failure must fail to parse, unless the failure is on syntax Eddy
//! accepts by design (`ORDER BY` in pull queries), which is counted apart. Cases that need Avro,
//! Protobuf or the schema registry are counted apart too.

use eddy_sql::{ParseOptions, parse_statements_with};
use eddy_tests::conformance::{ConformanceCase, Suite, load_suite};

#[derive(Default, Debug)]
struct Tally {
    cases: usize,
    passed: usize,
    statements: usize,
    round_tripped: usize,
    /// Cases expecting a parse failure on syntax Eddy accepts by design.
    extensions: usize,
    failures: Vec<String>,
}

/// Syntax ksqlDB refuses and Eddy takes on purpose: `ORDER BY` in pull queries.
const EXTENSIONS: &[&str] = &[" ORDER BY "];

fn uses_an_extension(case: &ConformanceCase) -> bool {
    case.statements.iter().any(|sql| {
        let upper = sql.to_ascii_uppercase();
        EXTENSIONS.iter().any(|e| upper.contains(e))
    })
}

fn check_case(case: &ConformanceCase, tally: &mut Tally) {
    let options = ParseOptions {
        run_script: false,
        test_statements: false,
    };
    let mut first_error = None;
    let mut round_trip_failure = None;
    for sql in &case.statements {
        match parse_statements_with(sql, options) {
            Ok(parsed) => {
                for p in parsed {
                    tally.statements += 1;
                    let printed = p.statement.to_string();
                    match parse_statements_with(&printed, options) {
                        Ok(again) if again.len() == 1 && again[0].statement == p.statement => {
                            tally.round_tripped += 1;
                        }
                        Ok(_) => {
                            round_trip_failure.get_or_insert(format!(
                                "printed as `{printed}`, which parses differently"
                            ));
                        }
                        Err(e) => {
                            round_trip_failure
                                .get_or_insert(format!("printed as `{printed}`, which fails: {e}"));
                        }
                    }
                }
            }
            Err(e) => {
                first_error.get_or_insert(format!("{e} in `{sql}`"));
            }
        }
    }
    // ksqlDB's "Failed to prepare statement" errors come from the stage that builds the AST and
    // checks it, so either outcome of parsing alone is right for them.
    let prepare_error = !case.expects_parse_failure
        && case
            .expected_error
            .as_deref()
            .is_some_and(|m| m.starts_with("Failed to prepare statement"));
    if first_error.is_none() && case.expects_parse_failure && uses_an_extension(case) {
        tally.extensions += 1;
        tally.passed += 1;
        return;
    }
    // A statement the parser refuses with the very message ksqlDB gives at a later stage is
    // refused as it should be (`PARTITION BY ()`).
    let same_refusal = |e: &String| {
        case.expected_error
            .as_deref()
            .is_some_and(|m| !m.is_empty() && e.contains(m))
    };
    let ok = match (&first_error, case.expects_parse_failure) {
        (None, false) => round_trip_failure.is_none(),
        (Some(_), true) => true,
        (Some(e), false) => prepare_error || same_refusal(e),
        _ => false,
    };
    if ok {
        tally.passed += 1;
    } else {
        let why = match (first_error, case.expects_parse_failure) {
            (Some(e), false) => e,
            (None, true) => format!(
                "expected a parse failure ({}), but every statement parsed",
                case.expected_error.clone().unwrap_or_default()
            ),
            _ => round_trip_failure.unwrap_or_default(),
        };
        tally
            .failures
            .push(format!("{} / {}: {why}", case.file, case.name));
    }
}

#[test]
fn ksqldb_statements_parse_and_round_trip() {
    let mut report = Vec::new();
    let mut all_failures = Vec::new();
    for suite in [Suite::QueryValidation, Suite::RestQueryValidation] {
        let cases = load_suite(suite).expect("conformance files load");
        assert!(!cases.is_empty(), "no conformance cases found");
        let mut tally = Tally::default();
        for case in &cases {
            tally.cases += 1;
            check_case(case, &mut tally);
        }
        report.push(format!(
            "{suite:?}: {} cases, {} pass ({} of them expect a syntax error on what Eddy accepts by design); {} statements parsed, {} round-tripped",
            tally.cases,
            tally.passed,
            tally.extensions,
            tally.statements,
            tally.round_tripped
        ));
        all_failures.extend(tally.failures);
    }
    for line in &report {
        println!("{line}");
    }
    for failure in all_failures.iter().take(60) {
        println!("FAIL {failure}");
    }
    assert!(
        all_failures.is_empty(),
        "{} cases failed; see above",
        all_failures.len()
    );
}

/// The schemas ksqlDB's files expect sources to end up with parse as column lists.
#[test]
fn expected_schemas_parse() {
    let cases = load_suite(Suite::QueryValidation).expect("conformance files load");
    let mut parsed = 0;
    let mut failures = Vec::new();
    for case in &cases {
        let sources = case.raw.pointer("/post/sources").and_then(|s| s.as_array());
        for source in sources.into_iter().flatten() {
            let Some(schema) = source.get("schema").and_then(|s| s.as_str()) else {
                continue;
            };
            match eddy_sql::parse_schema(schema) {
                Ok(_) => parsed += 1,
                Err(e) => failures.push(format!("{} / {}: `{schema}`: {e}", case.file, case.name)),
            }
        }
    }
    println!(
        "{parsed} expected schemas parsed, {} failed",
        failures.len()
    );
    assert!(parsed > 200);
    assert!(failures.is_empty(), "{failures:#?}");
}
