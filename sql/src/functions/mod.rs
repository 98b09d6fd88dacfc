//! The function catalogue: ksqlDB's scalar functions by name, as DataFusion `ScalarUDF`s.
//!
//! DataFusion's own functions are used where their semantics match ksqlDB's, under ksqlDB's
//! names (`UCASE` is DataFusion's `upper`). Functions whose semantics differ, or that DataFusion
//! lacks, are implemented here as UDFs and take precedence.

pub mod aggregates;
mod collections;
mod ksql;
pub mod lambdas;
pub mod time;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use datafusion::logical_expr::ScalarUDF;

/// ksqlDB names that are DataFusion functions under another name.
const ALIASES: &[(&str, &str)] = &[
    ("UCASE", "upper"),
    ("LCASE", "lower"),
    ("LEN", "character_length"),
    ("IFNULL", "nvl"),
    ("CEILING", "ceil"),
    ("LN", "ln"),
    ("MAP_KEYS", "map_keys"),
    ("MAP_VALUES", "map_values"),
    // ksqlDB removes every element equal to the value, not only the first.
    ("ARRAY_REMOVE", "array_remove_all"),
];

fn catalogue() -> &'static HashMap<String, Arc<ScalarUDF>> {
    static CATALOGUE: OnceLock<HashMap<String, Arc<ScalarUDF>>> = OnceLock::new();
    CATALOGUE.get_or_init(|| {
        let mut by_name: HashMap<String, Arc<ScalarUDF>> = HashMap::new();
        let defaults = datafusion::functions::all_default_functions()
            .into_iter()
            .chain(datafusion::functions_nested::all_default_nested_functions());
        for udf in defaults {
            for name in std::iter::once(udf.name()).chain(udf.aliases().iter().map(String::as_str))
            {
                by_name.insert(name.to_ascii_uppercase(), udf.clone());
            }
        }
        for (ksql, datafusion) in ALIASES {
            if let Some(udf) = by_name.get(&datafusion.to_ascii_uppercase()).cloned() {
                by_name.insert((*ksql).to_string(), udf);
            }
        }
        for udf in ksql::functions() {
            by_name.insert(udf.name().to_string(), udf);
        }
        by_name
    })
}

/// Whether ksqlDB's function `name` takes a time unit word first (`DATEADD(DAYS, 1, d)`).
pub fn takes_time_unit(name: &str) -> bool {
    ksql::TIME_UNIT_FUNCTIONS
        .iter()
        .any(|f| f.eq_ignore_ascii_case(name))
}

/// A time unit word as ksqlDB writes it (singular or plural), by its plural upper-case name.
pub fn time_unit(word: &str) -> Option<&'static str> {
    ksql::time_unit_ms(word).map(|(name, _)| name)
}

/// The scalar function ksqlDB calls `name` (matched case-insensitively), if Eddy has it.
pub fn scalar_function(name: &str) -> Option<Arc<ScalarUDF>> {
    catalogue().get(&name.to_ascii_uppercase()).cloned()
}

/// Every scalar function's name, upper-case and sorted.
pub fn scalar_function_names() -> Vec<String> {
    let mut names: Vec<String> = catalogue().keys().cloned().collect();
    names.sort();
    names
}

/// A function that failed on one row; its result there is null.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionError {
    /// The function, by its ksqlDB name.
    pub function: &'static str,
    /// The row it failed on, among the rows of that call.
    pub row: usize,
    /// How many rows the call had (a conditional expression may call it on fewer rows than
    /// the batch holds).
    pub rows: usize,
    /// Why it failed.
    pub message: String,
}

thread_local! {
    static FUNCTION_ERRORS: RefCell<Option<Vec<FunctionError>>> = const { RefCell::new(None) };
}

/// Records a function error for the caller of [`collect_function_errors`] on this thread; with
/// none collecting, it is logged.
pub(crate) fn report_function_error(error: FunctionError) {
    let unreported = FUNCTION_ERRORS.with(|errors| match errors.borrow_mut().as_mut() {
        Some(collected) => {
            collected.push(error);
            None
        }
        None => Some(error),
    });
    if let Some(error) = unreported {
        tracing::warn!(function = error.function, error = %error.message, "function failed; its result is null");
    }
}

/// Runs `f` (which evaluates expressions on this thread) and returns the errors functions
/// reported meanwhile, so the caller can put them in its processing log.
pub fn collect_function_errors<R>(f: impl FnOnce() -> R) -> (R, Vec<FunctionError>) {
    let previous = FUNCTION_ERRORS.with(|errors| errors.borrow_mut().replace(Vec::new()));
    let result = f();
    let collected = FUNCTION_ERRORS.with(|errors| {
        let collected = errors.borrow_mut().take().unwrap_or_default();
        *errors.borrow_mut() = previous;
        collected
    });
    (result, collected)
}
