//! The function catalogue: every function a query can call by ksqlDB's name, with its kind
//! (scalar, aggregate, table) and its volatility.
//!
//! DataFusion's own functions are used where their semantics match ksqlDB's, under ksqlDB's
//! names (`UCASE` is DataFusion's `upper`). Functions whose semantics differ, or that DataFusion
//! lacks, are implemented here as UDFs and take precedence, one file per category, each file
//! registering its own functions next to their code: `json`, `string`, `regex`,
//! `datetime` (with the Java patterns and zones of `time`), `math`, `encoding`,
//! `collections`, `url`, `mask`, `to_json`, `cast` (ksqlDB's `CAST` rules where they
//! are not Arrow's), `lambdas` and `aggregates`. `udf` is how a scalar function is written.

pub mod aggregates;
pub(crate) mod cast;
mod collections;
mod datetime;
mod describe;
mod encoding;
mod json;
pub mod lambdas;
mod mask;
mod math;
mod regex;
mod string;
pub mod time;
mod to_json;
mod udf;
mod url;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use datafusion::logical_expr::ScalarUDF;

pub use cast::java_double;
pub use describe::{
    Argument, FunctionDescription, Variation, describe_function, described_functions,
    valid_alternatives, with_alternatives,
};

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
];

/// Every scalar function Eddy implements itself, by category.
fn own_functions() -> impl Iterator<Item = udf::Scalar> {
    [
        json::functions(),
        string::functions(),
        regex::functions(),
        datetime::functions(),
        math::functions(),
        encoding::functions(),
        collections::functions(),
        url::functions(),
        mask::functions(),
        to_json::functions(),
        cast::functions(),
    ]
    .into_iter()
    .flatten()
}

/// The scalar functions by upper-case name: DataFusion's, under their names and ksqlDB's, then
/// Eddy's own over them.
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
        for function in own_functions() {
            by_name.insert(function.name().to_string(), function.udf());
        }
        by_name
    })
}

/// Whether ksqlDB's function `name` takes a time unit word first (`DATEADD(DAYS, 1, d)`).
pub fn takes_time_unit(name: &str) -> bool {
    datetime::TIME_UNIT_FUNCTIONS
        .iter()
        .any(|f| f.eq_ignore_ascii_case(name))
}

/// A time unit word as ksqlDB writes it (singular or plural), by its plural upper-case name.
pub fn time_unit(word: &str) -> Option<&'static str> {
    datetime::time_unit_ms(word).map(|(name, _)| name)
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

/// What kind of function a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FunctionKind {
    /// One value per row.
    Scalar,
    /// One value per group of rows.
    Aggregate,
    /// Any number of rows per row (`EXPLODE`).
    Table,
}

impl FunctionKind {
    /// As `SHOW FUNCTIONS` names it.
    pub fn name(self) -> &'static str {
        match self {
            FunctionKind::Scalar => "SCALAR",
            FunctionKind::Aggregate => "AGGREGATE",
            FunctionKind::Table => "TABLE",
        }
    }
}

/// One function of the catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionInfo {
    /// Its ksqlDB name, upper-case.
    pub name: String,
    /// Scalar, aggregate or table.
    pub kind: FunctionKind,
    /// Whether it may give different results for the same arguments.
    pub volatile: bool,
}

/// The table functions: each turns one row into as many as its array has elements.
/// `CUBE_EXPLODE` is also a scalar of the catalogue, giving the list its rows come from.
pub const TABLE_FUNCTIONS: &[&str] = &["EXPLODE", "CUBE_EXPLODE"];

/// Functions the planner calls, not listed by `SHOW FUNCTIONS`.
pub(crate) const INTERNAL_FUNCTIONS: &[&str] = &["KSQL_CAST", "KSQL_LIST_SUM"];

/// Whether `name` is a table function.
pub fn is_table_function(name: &str) -> bool {
    TABLE_FUNCTIONS.iter().any(|f| f.eq_ignore_ascii_case(name))
}

/// Every function a query can call by name, sorted by name; a name of several kinds is listed
/// once, as the first of aggregate, scalar and table (a table function that is also a scalar
/// internally is listed as a table function).
pub fn all_functions() -> Vec<FunctionInfo> {
    let volatile: Vec<&str> = own_functions()
        .filter(|f| f.volatility() != datafusion::logical_expr::Volatility::Immutable)
        .map(|f| f.name())
        .collect();
    let scalars = catalogue()
        .iter()
        .filter(|(name, _)| {
            !is_table_function(name) && !INTERNAL_FUNCTIONS.contains(&name.as_str())
        })
        .map(|(name, udf)| FunctionInfo {
            name: name.clone(),
            kind: FunctionKind::Scalar,
            volatile: volatile.contains(&name.as_str())
                || udf.signature().volatility != datafusion::logical_expr::Volatility::Immutable,
        });
    let aggregates = aggregates::AGGREGATE_FUNCTIONS
        .iter()
        .map(|name| FunctionInfo {
            name: name.to_string(),
            kind: FunctionKind::Aggregate,
            volatile: false,
        });
    let lambdas = lambdas::LAMBDA_FUNCTIONS.iter().map(|name| FunctionInfo {
        name: name.to_string(),
        kind: FunctionKind::Scalar,
        volatile: false,
    });
    let table = TABLE_FUNCTIONS.iter().map(|name| FunctionInfo {
        name: name.to_string(),
        kind: FunctionKind::Table,
        volatile: false,
    });
    let mut functions: Vec<FunctionInfo> = scalars
        .chain(lambdas)
        .chain(aggregates)
        .chain(table)
        .collect();
    functions.sort_by(|a, b| (&a.name, a.kind.name()).cmp(&(&b.name, b.kind.name())));
    functions.dedup_by(|a, b| a.name == b.name);
    functions
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
