//! The function catalogue: ksqlDB's scalar functions by name, as DataFusion `ScalarUDF`s.
//!
//! DataFusion's own functions are used where their semantics match ksqlDB's, under ksqlDB's
//! names (`UCASE` is DataFusion's `upper`). Functions whose semantics differ, or that DataFusion
//! lacks, are implemented here as UDFs and take precedence.

mod ksql;
pub mod time;

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

/// The scalar function ksqlDB calls `name` (matched case-insensitively), if Eddy has it.
pub fn scalar_function(name: &str) -> Option<Arc<ScalarUDF>> {
    catalogue().get(&name.to_ascii_uppercase()).cloned()
}
