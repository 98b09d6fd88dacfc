//! The function catalogue, driven by the case files in `tests/functions/`: each line is
//! `EXPR => RESULT`, and the expression, parsed and planned as a query's would be, must
//! evaluate to that result. A result of `NULL, error: TEXT` is a row the function failed on
//! (null, with an error for the processing log that contains TEXT); `refused: TEXT` is an
//! expression that does not plan, with a message that contains TEXT. `--` lines are comments.
//!
//! Results are written as SQL reads them: `'text'` (quotes doubled), numbers (doubles as Rust
//! prints them: `2.0`, `NaN`), `true`, `NULL`, `[a, b]`, `{k: v}`, `STRUCT(A := 1)`,
//! `X'0a1b'`, `DATE '…'`, `TIME '…'` and `TIMESTAMP '…'`.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Float32Array, Float64Array, RecordBatch,
    RecordBatchOptions,
};
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::common::DFSchema;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::prelude::SessionContext;
use eddy_sql::analysis::{Scope, to_datafusion};
use eddy_sql::functions::collect_function_errors;

/// Expressions here read no columns.
struct NoColumns(DFSchema);

impl Scope for NoColumns {
    fn column(&self, _: Option<&str>, name: &str) -> Result<datafusion::prelude::Expr, String> {
        Err(format!("Column '{name}' cannot be resolved."))
    }

    fn schema(&self) -> Option<&DFSchema> {
        Some(&self.0)
    }
}

/// What an expression came to: its value, and the errors functions reported on the way.
enum Outcome {
    Value(String, Vec<String>),
    Refused(String),
}

fn evaluate(ctx: &SessionContext, text: &str) -> Outcome {
    // A call on constants is evaluated once while planning, so errors are collected there too.
    let (outcome, errors) = collect_function_errors(|| evaluate_row(ctx, text));
    match outcome {
        Ok(value) => Outcome::Value(value, errors.into_iter().map(|e| e.message).collect()),
        Err(message) => Outcome::Refused(message),
    }
}

/// The expression planned as a query's would be (coerced, simplified, then planned) and
/// evaluated over one row, rendered; or why it did not plan.
fn evaluate_row(ctx: &SessionContext, text: &str) -> Result<String, String> {
    let expr = eddy_sql::parse_expression(text).map_err(|e| e.to_string())?;
    let scope = NoColumns(DFSchema::empty());
    let logical = to_datafusion(&expr, &scope).map_err(|e| e.message)?;
    let config = Arc::clone(ctx.state_ref().read().config_options());
    let simplifier = ExprSimplifier::new(
        SimplifyContext::builder()
            .with_schema(Arc::new(scope.0.clone()))
            .with_config_options(config)
            .build(),
    );
    let physical = simplifier
        .coerce(logical, &scope.0)
        .and_then(|e| simplifier.simplify(e))
        .and_then(|e| ctx.create_physical_expr(e, &scope.0))
        .map_err(|e| e.to_string())?;
    let batch = RecordBatch::try_new_with_options(
        Arc::new(Schema::empty()),
        vec![],
        &RecordBatchOptions::new().with_row_count(Some(1)),
    )
    .map_err(|e| e.to_string())?;
    let array = physical
        .evaluate(&batch)
        .and_then(|v| v.into_array(1))
        .map_err(|e| e.to_string())?;
    Ok(render(&array, 0))
}

/// Row `i` of `array`, written as the case files write values.
fn render(array: &ArrayRef, i: usize) -> String {
    if array.is_null(i) {
        return "NULL".into();
    }
    let plain = || array_value_to_string(array, i).unwrap_or_else(|e| format!("<{e}>"));
    match array.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            format!("'{}'", plain().replace('\'', "''"))
        }
        DataType::Boolean => array.as_boolean().value(i).to_string(),
        DataType::Float64 => {
            format!(
                "{:?}",
                array
                    .as_any()
                    .downcast_ref::<Float64Array>()
                    .unwrap()
                    .value(i)
            )
        }
        DataType::Float32 => {
            format!(
                "{:?}",
                array
                    .as_any()
                    .downcast_ref::<Float32Array>()
                    .unwrap()
                    .value(i)
            )
        }
        DataType::Binary => {
            let bytes = array
                .as_any()
                .downcast_ref::<BinaryArray>()
                .unwrap()
                .value(i);
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            format!("X'{hex}'")
        }
        DataType::Date32 => format!("DATE '{}'", plain()),
        DataType::Time32(_) | DataType::Time64(_) => format!("TIME '{}'", plain()),
        DataType::Timestamp(..) => format!("TIMESTAMP '{}'", plain()),
        DataType::List(_) => {
            let items = array.as_list::<i32>().value(i);
            let items: Vec<String> = (0..items.len()).map(|j| render(&items, j)).collect();
            format!("[{}]", items.join(", "))
        }
        DataType::Map(..) => {
            let entries = array.as_map().value(i);
            let (keys, values) = (entries.column(0), entries.column(1));
            let pairs: Vec<String> = (0..entries.len())
                .map(|j| format!("{}: {}", render(keys, j), render(values, j)))
                .collect();
            format!("{{{}}}", pairs.join(", "))
        }
        DataType::Struct(fields) => {
            let row = array.as_struct();
            let parts: Vec<String> = fields
                .iter()
                .zip(row.columns())
                .map(|(f, c)| format!("{} := {}", f.name(), render(c, i)))
                .collect();
            format!("STRUCT({})", parts.join(", "))
        }
        _ => plain(),
    }
}

/// Whether an outcome is what the case expects.
fn matches(outcome: &Outcome, expected: &str) -> bool {
    match outcome {
        Outcome::Refused(message) => expected
            .strip_prefix("refused: ")
            .is_some_and(|want| message.contains(want)),
        Outcome::Value(value, errors) => match expected.split_once(", error: ") {
            Some((want, error)) => value == want && errors.iter().any(|e| e.contains(error)),
            None => value == expected && errors.is_empty(),
        },
    }
}

fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Refused(message) => format!("refused: {message}"),
        Outcome::Value(value, errors) if errors.is_empty() => value.clone(),
        Outcome::Value(value, errors) => format!("{value}, error: {}", errors.join(" | ")),
    }
}

#[test]
fn every_function_case_evaluates_to_its_result() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/functions");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cases"))
        .collect();
    files.sort();
    assert!(files.len() >= 8, "the case files are missing");
    let ctx = SessionContext::new();
    let mut count = 0;
    let mut failures = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with("--") {
                continue;
            }
            // Lambdas use `=>` too: the result is after the last one.
            let Some((expr, expected)) = line.rsplit_once(" => ") else {
                panic!("{}:{}: no ` => ` in {line}", file.display(), n + 1);
            };
            count += 1;
            let outcome = evaluate(&ctx, expr);
            if !matches(&outcome, expected) {
                failures.push(format!(
                    "{}:{}: {expr}\n  expected {expected}\n  got      {}",
                    file.file_name().unwrap().to_string_lossy(),
                    n + 1,
                    describe(&outcome)
                ));
            }
        }
    }
    assert!(count > 100, "only {count} cases");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_boolean_renders_as_sql_writes_it() {
    let array: ArrayRef = Arc::new(BooleanArray::from(vec![Some(true), None]));
    assert_eq!(render(&array, 0), "true");
    assert_eq!(render(&array, 1), "NULL");
}
