//! ksqlDB's own test files, read as a specification.
//!
//! The files are JSON with Jackson's leniencies (comments and trailing commas), and a case may
//! list several `format`s, each of which replaces `{FORMAT}` in its statements.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::Value;

/// Which folder a case comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    /// `query-validation-tests`: statements, inputs and expected output records.
    QueryValidation,
    /// `rest-query-validation-tests`: statements and expected REST responses.
    RestQueryValidation,
}

impl Suite {
    /// The suite's folder under the conformance directory.
    pub fn folder(self) -> &'static str {
        match self {
            Suite::QueryValidation => "query-validation-tests",
            Suite::RestQueryValidation => "rest-query-validation-tests",
        }
    }
}

/// One test case, with `{FORMAT}` already substituted.
#[derive(Debug, Clone)]
pub struct ConformanceCase {
    /// The suite.
    pub suite: Suite,
    /// The file name, such as `joins.json`.
    pub file: String,
    /// The case name, with the format appended when the case has several.
    pub name: String,
    /// The statements, in order.
    pub statements: Vec<String>,
    /// The whole case as written.
    pub raw: Value,
    /// The expected error message, if the case expects one.
    pub expected_error: Option<String>,
    /// Whether the expected error is ksqlDB's parse failure.
    pub expects_parse_failure: bool,
    /// Properties the case sets, with `{CONFIG}` substituted.
    pub properties: Vec<(String, String)>,
}

/// The folder holding ksqlDB's test files: `EDDY_CONFORMANCE_DIR`, else `../shared/conformance/ksqldb`
/// next to the repository.
pub fn conformance_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("EDDY_CONFORMANCE_DIR") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/ksqldb")
}

/// Removes `//` and `/* */` comments outside strings, and commas before `]` or `}`.
pub fn strip_json_leniencies(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut in_string = false;
    let mut pending_comma: Option<usize> = None;
    while i < bytes.len() {
        let c = bytes[i];
        if in_string {
            let ch_len = utf8_len(c);
            out.push_str(&text[i..i + ch_len]);
            if c == b'\\' && i + 1 < bytes.len() {
                let next_len = utf8_len(bytes[i + 1]);
                out.push_str(&text[i + 1..i + 1 + next_len]);
                i += 1 + next_len;
                continue;
            }
            if c == b'"' {
                in_string = false;
            }
            i += ch_len;
            continue;
        }
        if c == b'/' && bytes.get(i + 1) == Some(&b'/') {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if c == b'/' && bytes.get(i + 1) == Some(&b'*') {
            i += 2;
            while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                i += 1;
            }
            i += 2;
            continue;
        }
        if c == b',' {
            pending_comma = Some(out.len());
        } else if (c == b']' || c == b'}')
            && let Some(at) = pending_comma
            && out[at + 1..].trim().is_empty()
        {
            out.remove(at);
        }
        if !c.is_ascii_whitespace() && c != b',' {
            pending_comma = None;
        }
        if c == b'"' {
            in_string = true;
        }
        let ch_len = utf8_len(c);
        out.push_str(&text[i..i + ch_len]);
        i += ch_len;
    }
    out
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

fn is_parse_failure(error_type: &str, message: &str) -> bool {
    error_type.contains("ParseFailedException")
        || message.contains("Syntax Error")
        || message.contains("Syntax error")
}

/// Loads every case of one suite.
pub fn load_suite(suite: Suite) -> anyhow::Result<Vec<ConformanceCase>> {
    load_paths(suite, &[conformance_dir().join(suite.folder())])
}

/// Loads the cases of the given files, and of the `.json` files in the given folders.
pub fn load_paths(suite: Suite, paths: &[PathBuf]) -> anyhow::Result<Vec<ConformanceCase>> {
    let mut files: Vec<PathBuf> = Vec::new();
    for path in paths {
        if path.is_dir() {
            files.extend(
                std::fs::read_dir(path)
                    .with_context(|| format!("cannot read {}", path.display()))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|e| e == "json")),
            );
        } else {
            files.push(path.clone());
        }
    }
    files.sort();
    let mut cases = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let json: Value = serde_json::from_str(&strip_json_leniencies(&text))
            .with_context(|| format!("cannot parse {}", path.display()))?;
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        for case in json
            .get("tests")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            cases.extend(expand_case(suite, &file, case));
        }
    }
    Ok(cases)
}

fn expand_case(suite: Suite, file: &str, case: &Value) -> Vec<ConformanceCase> {
    let name = case
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let statements: Vec<String> = case
        .get("statements")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect();
    let error = case
        .get("expectedException")
        .or_else(|| case.get("expectedError"));
    let error_type = error
        .and_then(|e| e.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let expects_parse_failure =
        error.is_some() && is_parse_failure(error_type, message.as_deref().unwrap_or(""));
    let formats: Vec<String> = case
        .get("format")
        .and_then(Value::as_array)
        .map(|f| {
            f.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let configs: Vec<String> = case
        .get("config")
        .and_then(Value::as_array)
        .map(|c| {
            c.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let properties: Vec<(String, String)> = case
        .get("properties")
        .and_then(Value::as_object)
        .map(|props| {
            props
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let make = |name: String, statements: Vec<String>, config: Option<&str>| ConformanceCase {
        suite,
        file: file.to_string(),
        name,
        statements,
        raw: case.clone(),
        expected_error: error.map(|_| message.clone().unwrap_or_default()),
        expects_parse_failure,
        properties: properties
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    config.map_or_else(|| v.clone(), |c| v.replace("{CONFIG}", c)),
                )
            })
            .collect(),
    };
    let by_format: Vec<(String, Vec<String>)> = if formats.is_empty() {
        vec![(name.clone(), statements.clone())]
    } else {
        formats
            .iter()
            .map(|format| {
                (
                    format!("{name} - {format}"),
                    statements
                        .iter()
                        .map(|s| s.replace("{FORMAT}", format))
                        .collect(),
                )
            })
            .collect()
    };
    let mut out = Vec::new();
    for (name, statements) in by_format {
        if configs.is_empty() {
            out.push(make(name, statements, None));
        } else {
            for config in &configs {
                out.push(make(
                    format!("{name} - config {config}"),
                    statements.clone(),
                    Some(config),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_json_is_cleaned() {
        let text =
            "{\n \"a\": [1, 2,], // note\n \"b\": \"x // not a comment, \\\"q\\\"\", /* c */ }";
        let v: Value = serde_json::from_str(&strip_json_leniencies(text)).unwrap();
        assert_eq!(v["a"], serde_json::json!([1, 2]));
        assert_eq!(v["b"], "x // not a comment, \"q\"");
    }

    #[test]
    fn formats_expand_into_cases() {
        let case = serde_json::json!({
            "name": "n",
            "format": ["JSON", "JSON_SR"],
            "statements": ["CREATE STREAM S (A INT) WITH (kafka_topic='t', value_format='{FORMAT}');"]
        });
        let cases = expand_case(Suite::QueryValidation, "f.json", &case);
        assert_eq!(cases.len(), 2);
        let with_config = serde_json::json!({
            "name": "c",
            "config": ["true", "false"],
            "properties": {"a": "{CONFIG}", "b": "x"},
            "statements": []
        });
        let expanded = expand_case(Suite::QueryValidation, "f.json", &with_config);
        assert_eq!(expanded.len(), 2);
        assert!(
            expanded[1]
                .properties
                .contains(&("a".to_string(), "false".to_string()))
        );
        assert!(
            expanded[1]
                .properties
                .contains(&("b".to_string(), "x".to_string()))
        );
        assert!(cases[0].statements[0].contains("'JSON'"));
        assert!(cases[1].statements[0].contains("'JSON_SR'"));
    }
}

/// The command line of a conformance runner.
#[derive(Debug, clap::Args)]
pub struct RunnerArgs {
    /// Test files or folders of them; default: the suite's folder in ../shared/conformance/ksqldb.
    pub paths: Vec<PathBuf>,
    /// Fail (exit 1) when fewer cases than this pass.
    #[arg(long)]
    pub floor: Option<usize>,
    /// Print only failed cases and the counts.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Runs the cases `args` names (default: the whole suite) with `run`, skipping disabled cases and
/// those that need the schema registry. Prints a line per case (only failures when quiet), the
/// counts per file, and a last line `N passed, N failed, N skipped`; fails when fewer than the
/// floor pass.
pub async fn run_suite(
    suite: Suite,
    args: RunnerArgs,
    run: impl AsyncFn(&ConformanceCase) -> Result<(), String>,
) -> anyhow::Result<()> {
    let paths = if args.paths.is_empty() {
        vec![conformance_dir().join(suite.folder())]
    } else {
        args.paths
    };
    let cases = load_paths(suite, &paths)?;
    let quiet = args.quiet;
    let mut per_file: std::collections::BTreeMap<String, (usize, usize, usize)> =
        std::collections::BTreeMap::new();
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for case in &cases {
        let counts = per_file.entry(case.file.clone()).or_default();
        let disabled = case.raw.get("enabled").and_then(Value::as_bool) == Some(false);
        if disabled {
            skipped += 1;
            counts.2 += 1;
            if !quiet {
                println!("SKIP {} / {}: disabled", case.file, case.name);
            }
            continue;
        }
        match run(case).await {
            Ok(()) => {
                passed += 1;
                counts.0 += 1;
                if !quiet {
                    println!("PASS {} / {}", case.file, case.name);
                }
            }
            Err(reason) => {
                failed += 1;
                counts.1 += 1;
                println!("FAIL {} / {}: {reason}", case.file, case.name);
            }
        }
    }
    println!();
    for (file, (p, f, s)) in &per_file {
        println!("{file}: {p} passed, {f} failed, {s} skipped");
    }
    println!();
    println!("{passed} passed, {failed} failed, {skipped} skipped");
    if let Some(floor) = args.floor
        && passed < floor
    {
        anyhow::bail!("{passed} cases passed, below the floor of {floor}");
    }
    Ok(())
}
