//! Evaluating a query's expressions over a batch so that one bad row fails alone, as ksqlDB
//! evaluates row by row: a row an expression fails on (a division by zero, a function that
//! throws, a panic inside a library) gets a null there and a reason for the processing log,
//! and the other rows of the batch go on.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch};
use datafusion::physical_expr::PhysicalExpr;
use eddy_sql::functions::{FunctionError, collect_function_errors};

use crate::error::{EngineError, Result};
use crate::query::rows::Rows;
use crate::query::source::{RecordError, RecordErrorKind};

/// Evaluates an expression over a batch, turning a panic inside a function (a library's, on
/// input it did not expect) into an error for those rows instead of the end of the query.
fn evaluate_guarded(
    expr: &Arc<dyn PhysicalExpr>,
    batch: &RecordBatch,
) -> datafusion::error::Result<ArrayRef> {
    let rows = batch.num_rows();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        expr.evaluate(batch).and_then(|v| v.into_array(rows))
    }))
    .unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown cause".into());
        Err(datafusion::error::DataFusionError::Execution(format!(
            "the function failed on this input ({why})"
        )))
    })
}

/// `expr` over `batch`; when the batch as a whole fails, row by row, each failed row null with
/// `"{what}: {error}"` in `failed` (the first reason a row gets is kept).
pub(crate) fn evaluate_rows(
    expr: &Arc<dyn PhysicalExpr>,
    batch: &RecordBatch,
    what: &str,
    failed: &mut [Option<String>],
) -> Result<ArrayRef> {
    let rows = batch.num_rows();
    let result_type = || {
        expr.data_type(&batch.schema())
            .map_err(|e| EngineError::internal_from("cannot type an expression", e))
    };
    match evaluate_guarded(expr, batch) {
        Ok(array) => Ok(array),
        Err(_) if rows > 1 => {
            let mut pieces: Vec<ArrayRef> = Vec::with_capacity(rows);
            let ty = result_type()?;
            for (i, failure) in failed.iter_mut().enumerate().take(rows) {
                match evaluate_guarded(expr, &batch.slice(i, 1)) {
                    Ok(a) => pieces.push(a),
                    Err(e) => {
                        failure.get_or_insert_with(|| format!("{what}: {e}"));
                        pieces.push(datafusion::arrow::array::new_null_array(&ty, 1));
                    }
                }
            }
            let refs: Vec<&dyn Array> = pieces.iter().map(|a| a.as_ref()).collect();
            datafusion::arrow::compute::concat(&refs)
                .map_err(|e| EngineError::internal_from("cannot join evaluated rows", e))
        }
        Err(e) => {
            if let Some(f) = failed.first_mut() {
                f.get_or_insert_with(|| format!("{what}: {e}"));
            }
            Ok(datafusion::arrow::array::new_null_array(
                &result_type()?,
                rows,
            ))
        }
    }
}

/// Notes in `failed` the rows Eddy's functions reported failing on while `rows` rows were
/// evaluated.
pub(crate) fn note_function_errors(errors: Vec<FunctionError>, failed: &mut [Option<String>]) {
    let rows = failed.len();
    for error in errors {
        let reason = format!(
            "Error computing expression with {}: {}",
            error.function, error.message
        );
        if error.rows == rows
            && let Some(row) = failed.get_mut(error.row)
        {
            row.get_or_insert(reason);
        } else if let Some(first) = failed.first_mut() {
            // Called on a subset of the rows (inside a CASE): the row is not known exactly.
            first.get_or_insert(format!("{reason} (in a batch starting here)"));
        }
    }
}

/// `expr` over the rows of `rows` as a step of a query evaluates it: a row it (or a function
/// in it) fails on is null there, and is reported with `what` as a record error of `kind` of
/// its input (`Dropped` where the caller drops such a row). Returns the values and which rows
/// failed.
pub(crate) fn evaluate_step(
    expr: &Arc<dyn PhysicalExpr>,
    rows: &mut Rows<'_>,
    (what, kind): (&str, RecordErrorKind),
) -> Result<(ArrayRef, Vec<bool>)> {
    let n = rows.batch.num_rows();
    let mut failed: Vec<Option<String>> = vec![None; n];
    let (array, function_errors) =
        collect_function_errors(|| evaluate_rows(expr, &rows.batch, what, &mut failed));
    let array = array?;
    note_function_errors(function_errors, &mut failed);
    let mut failures = vec![false; n];
    for (i, reason) in failed.into_iter().enumerate() {
        if let Some(reason) = reason {
            failures[i] = true;
            let offset = rows.record(i).offset;
            rows.errors.push(RecordError {
                kind,
                partition: rows.partition,
                offset,
                reason,
            });
        }
    }
    Ok((array, failures))
}
