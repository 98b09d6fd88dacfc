//! Reading a connector's configuration: keys compared without case (ksqlDB upper-cases the
//! unquoted ones), values trimmed, an empty value the same as none; and the checks every
//! connector's keys share, each error naming its key.

use std::collections::BTreeMap;

use crate::error::{ConnectError, Result};

/// The most records a connector holds in memory at once, whatever its batch size says.
pub const MAX_BATCH_RECORDS: usize = 100_000;

/// A connector's properties, ready to read.
pub(crate) struct Properties<'a>(BTreeMap<String, &'a str>);

impl<'a> Properties<'a> {
    /// The properties as the statement gave them.
    pub(crate) fn new(properties: &'a BTreeMap<String, String>) -> Self {
        Properties(
            properties
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.trim()))
                .filter(|(_, v)| !v.is_empty())
                .collect(),
        )
    }

    /// `key`'s value, if set.
    pub(crate) fn get(&self, key: &str) -> Option<&'a str> {
        self.0.get(key).copied()
    }

    /// `key`'s value, which must be set.
    pub(crate) fn required(&self, key: &str) -> Result<&'a str> {
        self.get(key)
            .ok_or_else(|| ConnectError::Config(format!("the connector needs '{key}'")))
    }

    /// `key`'s value, lower case, one of `allowed` (`default` when unset).
    pub(crate) fn choice(&self, key: &str, default: &str, allowed: &[&str]) -> Result<String> {
        let value = self.get(key).unwrap_or(default).to_ascii_lowercase();
        if allowed.contains(&value.as_str()) {
            Ok(value)
        } else {
            Err(ConnectError::Config(format!(
                "'{key}' is '{value}'; expected one of {}",
                allowed.join(", ")
            )))
        }
    }

    /// `key` as `true` or `false` (`default` when unset).
    pub(crate) fn flag(&self, key: &str, default: bool) -> Result<bool> {
        let default = if default { "true" } else { "false" };
        Ok(self.choice(key, default, &["true", "false"])? == "true")
    }

    /// `key` as a comma-separated list, its items trimmed, empty ones left out.
    pub(crate) fn list(&self, key: &str) -> Vec<&'a str> {
        self.get(key)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .collect()
    }

    /// A batch size: `default` when unset, else a number from 1 to [`MAX_BATCH_RECORDS`], so
    /// memory stays bounded.
    pub(crate) fn batch_size(&self, key: &str, default: usize) -> Result<usize> {
        let Some(value) = self.get(key) else {
            return Ok(default);
        };
        value
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_BATCH_RECORDS).contains(n))
            .ok_or_else(|| {
                ConnectError::Config(format!(
                    "'{key}' is '{value}'; expected a number from 1 to {MAX_BATCH_RECORDS}"
                ))
            })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A connector's properties from pairs.
    pub(crate) fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn keys_ignore_case_and_blank_values_are_unset() {
        let given = props(&[("TOPICS", " a , ,b "), ("Flag", "TRUE"), ("empty", "  ")]);
        let p = Properties::new(&given);
        assert_eq!(p.list("topics"), vec!["a", "b"]);
        assert!(p.flag("flag", false).unwrap());
        assert_eq!(p.get("empty"), None);
        assert!(
            p.required("empty")
                .unwrap_err()
                .to_string()
                .contains("'empty'")
        );
        assert!(
            p.flag("topics", true)
                .unwrap_err()
                .to_string()
                .contains("'topics' is")
        );
        assert_eq!(p.batch_size("size", 7).unwrap(), 7);
    }
}
