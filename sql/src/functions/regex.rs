//! Regular-expression functions with Java's semantics: `REGEXP_REPLACE` replaces every match
//! and takes `$1` replacements, `REGEXP_SPLIT_TO_ARRAY` keeps empty pieces, `REGEXP_EXTRACT`
//! and `REGEXP_EXTRACT_ALL` give the first or every match (or a group of it); a pattern is
//! compiled once per run of rows that share it.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, ListBuilder, StringBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::TypeSignature;

use super::udf::{
    MAX_BUILT_LEN, STRING, STRING_LIST, Scalar, check_built_len, function, is_text, long_at, longs,
    refused, string_at, strings,
};

/// A regular-expression argument, compiled once per distinct pattern rather than per row.
#[derive(Default)]
struct RegexCache(Option<(String, regex::Regex)>);

impl RegexCache {
    fn get(&mut self, pattern: &str) -> Result<&regex::Regex, String> {
        if self.0.as_ref().is_none_or(|(seen, _)| seen != pattern) {
            let re = regex::Regex::new(pattern)
                .map_err(|e| format!("Invalid regular expression: {e}"))?;
            self.0 = Some((pattern.to_string(), re));
        }
        match &self.0 {
            Some((_, re)) => Ok(re),
            None => Err("no regular expression".to_string()),
        }
    }
}

/// `REGEXP_REPLACE(text, regex, replacement)`: every match replaced, as Java's `replaceAll`,
/// whose replacement refers to groups as `$1` or `${name}` and escapes with a backslash.
fn regexp_replace(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let (text, pattern, replacement) = (strings(&args[0])?, strings(&args[1])?, strings(&args[2])?);
    let mut out = StringBuilder::new();
    let mut regexes = RegexCache::default();
    for i in 0..rows {
        let (Some(t), Some(p), Some(r)) = (
            string_at(&text, i),
            string_at(&pattern, i),
            string_at(&replacement, i),
        ) else {
            out.append_null();
            continue;
        };
        let re = regexes.get(p)?;
        out.append_value(replace_all_bounded(re, t, &java_replacement(r)?)?);
    }
    Ok(Arc::new(out.finish()))
}

/// `Regex::replace_all`, refusing (before it is built) a result that grows past both the text
/// and [`MAX_BUILT_LEN`](super::udf::MAX_BUILT_LEN): a pattern that matches the empty string
/// puts the replacement between every character.
fn replace_all_bounded(re: &regex::Regex, text: &str, replacement: &str) -> Result<String, String> {
    let limit = text.len().max(MAX_BUILT_LEN);
    let mut out = String::new();
    let mut last = 0;
    for captures in re.captures_iter(text) {
        let Some(matched) = captures.get(0) else {
            continue;
        };
        out.push_str(&text[last..matched.start()]);
        captures.expand(replacement, &mut out);
        last = matched.end();
        if out.len() > limit {
            check_built_len("REGEXP_REPLACE", out.len() as u128, "bytes")?;
        }
    }
    out.push_str(&text[last..]);
    if out.len() > limit {
        check_built_len("REGEXP_REPLACE", out.len() as u128, "bytes")?;
    }
    Ok(out)
}

/// Rewrites a Java replacement string (`$1`, `${name}`, `\$`) in the `regex` crate's syntax.
fn java_replacement(java: &str) -> Result<String, String> {
    let mut out = String::with_capacity(java.len());
    let mut chars = java.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('$') => out.push_str("$$"),
                Some(escaped) => out.push(escaped),
                None => return Err("character to be escaped is missing".to_string()),
            },
            '$' => match chars.peek() {
                Some('{') => {
                    chars.next();
                    let name: String = chars.by_ref().take_while(|c| *c != '}').collect();
                    out.push_str(&format!("${{{name}}}"));
                }
                Some(d) if d.is_ascii_digit() => {
                    let mut group = String::new();
                    while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                        group.push(*d);
                        chars.next();
                    }
                    out.push_str(&format!("${{{group}}}"));
                }
                _ => return Err("Illegal group reference in the replacement".to_string()),
            },
            other => out.push(other),
        }
    }
    Ok(out)
}

/// `REGEXP_SPLIT_TO_ARRAY(text, regex)`: the text split around every match of the regular
/// expression, keeping empty pieces, as Java's `Pattern.split(text, -1)`.
fn regexp_split_to_array(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let (text, pattern) = (strings(&args[0])?, strings(&args[1])?);
    let mut out = ListBuilder::new(StringBuilder::new());
    let mut regexes = RegexCache::default();
    for i in 0..rows {
        let (Some(t), Some(p)) = (string_at(&text, i), string_at(&pattern, i)) else {
            out.append_null();
            continue;
        };
        let re = regexes.get(p)?;
        let mut start = 0;
        for m in re.find_iter(t) {
            // Java never splits off an empty first piece at a zero-width match at the start.
            if m.start() == 0 && m.end() == 0 {
                continue;
            }
            out.values().append_value(&t[start..m.start()]);
            start = m.end();
        }
        out.values().append_value(&t[start..]);
        out.append(true);
    }
    Ok(Arc::new(out.finish()))
}

/// The pattern, input and group number of row `i` of a `REGEXP_EXTRACT` call (group 0, the
/// whole match, when not given); `None` when any is null.
fn extract_args<'a>(
    args: &'a [datafusion::arrow::array::StringArray; 2],
    group: Option<&datafusion::arrow::array::Int64Array>,
    i: usize,
) -> Option<(&'a str, &'a str, i64)> {
    let group = match group {
        Some(groups) => long_at(groups, i)?,
        None => 0,
    };
    Some((string_at(&args[0], i)?, string_at(&args[1], i)?, group))
}

/// `REGEXP_EXTRACT(regex, text [, group])` and `REGEXP_EXTRACT_ALL`: the first match (or every
/// match) of the pattern in the text, or the given group of it; null when the pattern has no
/// such group, and (for one match) when nothing matches.
fn regexp_extract_either(args: &[ArrayRef], rows: usize, all: bool) -> Result<ArrayRef, String> {
    let texts = [strings(&args[0])?, strings(&args[1])?];
    let groups = args.get(2).map(longs).transpose()?;
    let mut regexes = RegexCache::default();
    let mut one = StringBuilder::new();
    let mut every = ListBuilder::new(StringBuilder::new());
    for i in 0..rows {
        let found = match extract_args(&texts, groups.as_ref(), i) {
            Some((pattern, text, group)) => {
                let re = regexes.get(pattern)?;
                match usize::try_from(group) {
                    Ok(group) if group < re.captures_len() => Some((re, text, group)),
                    Ok(_) => None,
                    Err(_) => return Err(format!("No group {group}")),
                }
            }
            None => None,
        };
        match (found, all) {
            (None, false) => one.append_null(),
            (None, true) => every.append_null(),
            (Some((re, text, group)), false) => one.append_option(
                re.captures(text)
                    .and_then(|c| c.get(group))
                    .map(|m| m.as_str()),
            ),
            (Some((re, text, group)), true) => {
                for captures in re.captures_iter(text) {
                    every
                        .values()
                        .append_option(captures.get(group).map(|m| m.as_str()));
                }
                every.append(true);
            }
        }
    }
    Ok(if all {
        Arc::new(every.finish())
    } else {
        Arc::new(one.finish())
    })
}

/// REGEXP_EXTRACT's and REGEXP_EXTRACT_ALL's arguments: a pattern, a text and maybe a group.
fn extract_types(name: &str, args: &[DataType]) -> Result<(), String> {
    let valid = matches!(args.len(), 2 | 3)
        && is_text(&args[0])
        && is_text(&args[1])
        && args
            .get(2)
            .is_none_or(|t| t.is_integer() || *t == DataType::Null);
    if valid {
        Ok(())
    } else {
        Err(refused(name, args))
    }
}

/// The functions of this file, as the catalogue registers them.
pub(super) fn functions() -> Vec<Scalar> {
    vec![
        function(
            "REGEXP_REPLACE",
            TypeSignature::Exact(vec![DataType::Utf8, DataType::Utf8, DataType::Utf8]),
            STRING,
            regexp_replace,
        ),
        function(
            "REGEXP_SPLIT_TO_ARRAY",
            TypeSignature::Exact(vec![DataType::Utf8, DataType::Utf8]),
            STRING_LIST,
            regexp_split_to_array,
        ),
        function(
            "REGEXP_EXTRACT",
            TypeSignature::OneOf(vec![TypeSignature::Any(2), TypeSignature::Any(3)]),
            |args| extract_types("REGEXP_EXTRACT", args).map(|()| DataType::Utf8),
            |args, rows| regexp_extract_either(args, rows, false),
        ),
        function(
            "REGEXP_EXTRACT_ALL",
            TypeSignature::OneOf(vec![TypeSignature::Any(2), TypeSignature::Any(3)]),
            |args| {
                extract_types("REGEXP_EXTRACT_ALL", args)?;
                STRING_LIST(args)
            },
            |args, rows| regexp_extract_either(args, rows, true),
        ),
    ]
}
