//! What `DESCRIBE FUNCTION` shows: each function's overview and its variations (argument names
//! and types, return type), read from `signatures.txt`.

use std::collections::HashMap;
use std::sync::LazyLock;

use super::FunctionKind;

/// One function as `DESCRIBE FUNCTION` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionDescription {
    /// Its name, upper-case.
    pub name: String,
    /// Scalar, aggregate or table.
    pub kind: FunctionKind,
    /// What it does, in a sentence.
    pub overview: String,
    /// Who wrote it: Eddy, or Apache DataFusion for the functions Eddy takes from it.
    pub author: &'static str,
    /// Each set of arguments it takes.
    pub variations: Vec<Variation>,
}

/// One set of arguments a function takes, and what it returns for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variation {
    /// The arguments, in order.
    pub arguments: Vec<Argument>,
    /// The SQL type returned; a letter (`T`) stands for any type.
    pub returns: String,
}

/// One argument of a variation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Argument {
    /// Its name.
    pub name: String,
    /// Its SQL type (of each value, when variadic).
    pub sql_type: String,
    /// Whether it takes any number of values.
    pub variadic: bool,
}

static SIGNATURES: &str = include_str!("signatures.txt");

static DESCRIPTIONS: LazyLock<HashMap<String, FunctionDescription>> = LazyLock::new(|| {
    parse(SIGNATURES)
        .into_iter()
        .map(|d| (d.name.clone(), d))
        .collect()
});

/// The description of the function called `name` (case-insensitively), if there is one: ksqlDB's
/// functions and Eddy's own from `signatures.txt`, DataFusion's from its documentation.
pub fn describe_function(name: &str) -> Option<FunctionDescription> {
    let name = name.to_ascii_uppercase();
    if let Some(described) = DESCRIPTIONS.get(&name) {
        return Some(described.clone());
    }
    if super::INTERNAL_FUNCTIONS.contains(&name.as_str()) {
        return None;
    }
    let udf = super::scalar_function(&name)?;
    let documentation = udf.documentation();
    let overview = documentation.map_or(String::new(), |d| {
        d.description
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    });
    let arguments = documentation
        .and_then(|d| d.arguments.as_ref())
        .map(|arguments| {
            arguments
                .iter()
                .map(|(argument, _)| Argument {
                    name: argument.clone(),
                    sql_type: "ANY".to_string(),
                    variadic: false,
                })
                .collect()
        })
        .unwrap_or_default();
    Some(FunctionDescription {
        name,
        kind: FunctionKind::Scalar,
        overview,
        author: "Apache DataFusion",
        variations: vec![Variation {
            arguments,
            returns: "ANY".to_string(),
        }],
    })
}

/// ksqlDB's list of the ways a function may be called, for an error refusing a call: each
/// variation as `name(TYPE argument, TYPE... rest)`, then how to learn more.
pub fn valid_alternatives(name: &str) -> Option<String> {
    let described = DESCRIPTIONS.get(&name.to_ascii_uppercase())?;
    let lower = described.name.to_ascii_lowercase();
    let mut out = String::from("Valid alternatives are:");
    for variation in &described.variations {
        let arguments: Vec<String> = variation
            .arguments
            .iter()
            .map(|a| {
                let dots = if a.variadic { "..." } else { "" };
                format!("{}{dots} {}", a.sql_type, a.name)
            })
            .collect();
        out.push_str(&format!("\n{lower}({})", arguments.join(", ")));
    }
    out.push_str(
        "\nFor detailed information on a function run: DESCRIBE FUNCTION <Function-Name>;",
    );
    Some(out)
}

/// A message refusing a call (`Function 'f' does not accept parameters (...).`) followed by
/// the function's valid alternatives, as ksqlDB words it; any other message as it is.
pub fn with_alternatives(message: &str) -> String {
    let Some(rest) = message.strip_prefix("Function '") else {
        return message.to_string();
    };
    let Some((name, tail)) = rest.split_once('\'') else {
        return message.to_string();
    };
    if !tail.starts_with(" does not accept parameters") || message.contains("Valid alternatives") {
        return message.to_string();
    }
    match valid_alternatives(name) {
        Some(alternatives) => format!("{message}\n{alternatives}"),
        None => message.to_string(),
    }
}

/// Every function `signatures.txt` describes.
pub fn described_functions() -> Vec<String> {
    let mut names: Vec<String> = DESCRIPTIONS.keys().cloned().collect();
    names.sort();
    names
}

fn parse(text: &str) -> Vec<FunctionDescription> {
    let mut out: Vec<FunctionDescription> = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if let Some(variation) = line.strip_prefix("  ") {
            if let (Some(last), Some(variation)) = (out.last_mut(), parse_variation(variation)) {
                last.variations.push(variation);
            }
            continue;
        }
        let mut parts = line.splitn(3, " | ");
        let (Some(name), Some(kind), Some(overview)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let kind = match kind {
            "AGGREGATE" => FunctionKind::Aggregate,
            "TABLE" => FunctionKind::Table,
            _ => FunctionKind::Scalar,
        };
        out.push(FunctionDescription {
            name: name.to_string(),
            kind,
            overview: overview.to_string(),
            author: "Eddy",
            variations: Vec::new(),
        });
    }
    out
}

/// `(name TYPE, rest TYPE...) -> TYPE`.
fn parse_variation(text: &str) -> Option<Variation> {
    let (arguments, returns) = text.trim().rsplit_once(" -> ")?;
    let arguments = arguments.strip_prefix('(')?.strip_suffix(')')?;
    let arguments = split_top_level(arguments)
        .into_iter()
        .filter(|a| !a.trim().is_empty())
        .map(|argument| {
            let (name, sql_type) = argument.trim().split_once(' ')?;
            let (sql_type, variadic) = match sql_type.strip_suffix("...") {
                Some(element) => (element, true),
                None => (sql_type, false),
            };
            Some(Argument {
                name: name.to_string(),
                sql_type: sql_type.to_string(),
                variadic,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Variation {
        arguments,
        returns: returns.trim().to_string(),
    })
}

/// Splits at commas outside `<...>`, so `MAP<K, V>` stays whole.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '<' => depth += 1,
            '>' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variations_keep_generic_types_whole_and_mark_variadic_arguments() {
        let concat = describe_function("concat_ws").unwrap();
        assert_eq!(concat.kind, FunctionKind::Scalar);
        assert_eq!(concat.variations[0].arguments[0].sql_type, "VARCHAR");
        assert!(concat.variations[0].arguments[0].variadic);
        let union = describe_function("MAP_UNION").unwrap();
        assert_eq!(
            union.variations[0].arguments[1],
            Argument {
                name: "map2".into(),
                sql_type: "MAP<VARCHAR, T>".into(),
                variadic: false
            }
        );
        assert_eq!(describe_function("PI").unwrap().variations[0].arguments, []);
        assert_eq!(
            describe_function("TOPK").unwrap().kind,
            FunctionKind::Aggregate
        );
        assert!(describe_function("NO_SUCH_FUNCTION").is_none());
        assert!(describe_function("KSQL_CAST").is_none());
        assert_eq!(
            with_alternatives(
                "Function 'explode' does not accept parameters (MAP<STRING, INTEGER>)."
            ),
            "Function 'explode' does not accept parameters (MAP<STRING, INTEGER>).\nValid alternatives are:\nexplode(ARRAY<DECIMAL> input)\nexplode(ARRAY<T> list)\nFor detailed information on a function run: DESCRIBE FUNCTION <Function-Name>;"
        );
        assert_eq!(
            with_alternatives("Function 'concat_ws' does not accept parameters (INTEGER)."),
            "Function 'concat_ws' does not accept parameters (INTEGER).\nValid alternatives are:\nconcat_ws(VARCHAR... inputs)\nconcat_ws(BYTES... inputs)\nFor detailed information on a function run: DESCRIBE FUNCTION <Function-Name>;"
        );
        assert_eq!(with_alternatives("Something else."), "Something else.");
        let reverse = describe_function("reverse").unwrap();
        assert_eq!(reverse.author, "Apache DataFusion");
        assert!(reverse.overview.contains("Reverses"), "{reverse:?}");
        assert_eq!(reverse.variations[0].arguments[0].name, "str");
    }
}
