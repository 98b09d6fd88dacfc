//! `docs/functions.md` lists every function of ksqlDB's reference with its kind: each one it
//! says Eddy has must be in the catalogue (as `SHOW FUNCTIONS` lists it) with that kind.

use eddy_sql::functions::{FunctionKind, all_functions, describe_function, described_functions};

/// (name, kind) of each function the page lists as present.
fn documented() -> Vec<(String, String)> {
    let page = include_str!("../../docs/functions.md");
    page.lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            (cells.get(3) == Some(&"yes")).then(|| (name.to_string(), cells[2].to_string()))
        })
        .collect()
}

#[test]
fn every_documented_function_is_in_the_catalogue_with_its_kind() {
    let documented = documented();
    assert!(
        documented.len() > 140,
        "the page lists {}",
        documented.len()
    );
    let catalogue = all_functions();
    let mut missing = Vec::new();
    for (name, kind) in &documented {
        let found = catalogue.iter().find(|f| f.name == *name);
        let kind_name = |k: FunctionKind| k.name().to_ascii_lowercase();
        match found {
            Some(f) if kind_name(f.kind) == *kind => {}
            Some(f) => missing.push(format!("{name}: a {} here", kind_name(f.kind))),
            None => missing.push(format!("{name}: missing")),
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

/// `DESCRIBE FUNCTION` describes every function `SHOW FUNCTIONS` lists, with its kind and at
/// least one variation, and nothing the catalogue lacks.
#[test]
fn every_function_in_the_catalogue_is_described() {
    let catalogue = all_functions();
    let mut wrong = Vec::new();
    for function in &catalogue {
        match describe_function(&function.name) {
            None => wrong.push(format!("{}: not described", function.name)),
            Some(d) if d.kind != function.kind => {
                wrong.push(format!("{}: described as {:?}", function.name, d.kind))
            }
            Some(d) if d.variations.is_empty() || d.overview.is_empty() => {
                wrong.push(format!("{}: no variations or overview", function.name))
            }
            Some(_) => {}
        }
    }
    for name in described_functions() {
        // Every name `signatures.txt` describes is Eddy's own or ksqlDB's: in the catalogue.
        if !catalogue.iter().any(|f| f.name == name) {
            wrong.push(format!("{name}: described but not in the catalogue"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
