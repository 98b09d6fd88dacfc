//! Per-client state: property overrides set with `SET` and variables set with `DEFINE`.

use std::collections::HashMap;

/// What a client has set for its own statements.
#[derive(Debug, Clone, Default)]
pub struct Session {
    /// `SET 'name' = 'value'` overrides, such as `auto.offset.reset`.
    pub properties: HashMap<String, String>,
    /// `DEFINE name = 'value'` variables, substituted as `${name}`.
    pub variables: HashMap<String, String>,
    /// Who runs the statements, when the server checks ACLs.
    pub caller: Option<crate::authorize::Caller>,
}

/// The name Eddy keeps a property under, for any name ksqlDB accepts for it: a Kafka Streams
/// property may come with ksqlDB's `ksql.streams.` prefix (an existing client sends
/// `ksql.streams.auto.offset.reset`), and a consumer property with Kafka Streams' `consumer.`
/// or `main.consumer.` prefix, as ksqlDB's config resolver strips them.
pub fn canonical_property(name: &str) -> String {
    let strip = |name: &str, prefix: &str| -> Option<String> {
        name.get(..prefix.len())
            .filter(|p| p.eq_ignore_ascii_case(prefix))
            .map(|_| name[prefix.len()..].to_string())
    };
    let mut name = name.trim().to_string();
    if let Some(rest) = strip(&name, "ksql.streams.").filter(|rest| strip(rest, "ksql.").is_none())
    {
        name = rest;
    }
    for prefix in ["main.consumer.", "consumer."] {
        if let Some(rest) = strip(&name, prefix)
            && CONSUMER_PROPERTIES
                .iter()
                .any(|p| p.eq_ignore_ascii_case(&rest))
        {
            return rest;
        }
    }
    name
}

/// The consumer properties queries honour, which may come under a consumer prefix.
const CONSUMER_PROPERTIES: &[&str] = &["auto.offset.reset"];

/// How a property Eddy reads must be written, as Kafka's and ksqlDB's config definitions say.
enum PropertyRule {
    /// One of these words (as Kafka's `ValidString`; matched regardless of case).
    OneOf(&'static [&'static str]),
    /// A Java `long`, at least this.
    Long(i64),
    /// A Java `int`, at least this.
    Int(i64),
}

/// The properties Eddy reads, by the name it keeps them under, with their rules.
const PROPERTY_RULES: &[(&str, PropertyRule)] = &[
    (
        "auto.offset.reset",
        PropertyRule::OneOf(&["latest", "earliest", "none"]),
    ),
    ("cache.max.bytes.buffering", PropertyRule::Long(0)),
    ("commit.interval.ms", PropertyRule::Long(0)),
    (
        "ksql.functions.collect_list.limit",
        PropertyRule::Int(i32::MIN as i64),
    ),
    (
        "ksql.functions.collect_set.limit",
        PropertyRule::Int(i32::MIN as i64),
    ),
];

/// Checks a property's value where Eddy reads that property; the error is Kafka's
/// `ConfigException` message (`Invalid value foo for configuration auto.offset.reset: String
/// must be one of: latest, earliest, none`). Properties Eddy does not read pass unchecked.
pub fn check_property(name: &str, value: &str) -> Result<(), String> {
    let name = canonical_property(name);
    let Some((_, rule)) = PROPERTY_RULES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(&name))
    else {
        return Ok(());
    };
    let invalid = |why: String| format!("Invalid value {value} for configuration {name}: {why}");
    let trimmed = value.trim();
    match rule {
        PropertyRule::OneOf(words) => {
            if !words.iter().any(|w| w.eq_ignore_ascii_case(trimmed)) {
                return Err(invalid(format!(
                    "String must be one of: {}",
                    words.join(", ")
                )));
            }
        }
        PropertyRule::Long(least) | PropertyRule::Int(least) => {
            let (kind, parsed) = match rule {
                PropertyRule::Int(_) => ("INT", trimmed.parse::<i32>().map(i64::from).ok()),
                _ => ("LONG", trimmed.parse::<i64>().ok()),
            };
            match parsed {
                None => return Err(invalid(format!("Not a number of type {kind}"))),
                Some(n) if n < *least => {
                    return Err(invalid(format!("Value must be at least {least}")));
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

impl Session {
    /// Checks every property's value (see [`check_property`]).
    pub fn check(&self) -> Result<(), String> {
        let mut names: Vec<&String> = self.properties.keys().collect();
        names.sort();
        for name in names {
            check_property(name, &self.properties[name])?;
        }
        Ok(())
    }

    /// A session with `properties` (under any name ksqlDB accepts) and `variables`.
    pub fn with(
        properties: impl IntoIterator<Item = (String, String)>,
        variables: HashMap<String, String>,
    ) -> Self {
        Session {
            properties: properties
                .into_iter()
                .map(|(k, v)| (canonical_property(&k), v))
                .collect(),
            variables,
            caller: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{canonical_property, check_property};

    #[test]
    fn property_values_follow_kafkas_config_definitions() {
        assert_eq!(
            check_property("ksql.streams.auto.offset.reset", "Earliest"),
            Ok(())
        );
        assert_eq!(
            check_property("auto.offset.reset", "oldest"),
            Err("Invalid value oldest for configuration auto.offset.reset: String must be one of: latest, earliest, none".into())
        );
        assert_eq!(
            check_property("commit.interval.ms", "soon"),
            Err("Invalid value soon for configuration commit.interval.ms: Not a number of type LONG".into())
        );
        assert_eq!(
            check_property("cache.max.bytes.buffering", "-1"),
            Err("Invalid value -1 for configuration cache.max.bytes.buffering: Value must be at least 0".into())
        );
        assert_eq!(
            check_property("ksql.functions.collect_list.limit", "3000000000"),
            Err("Invalid value 3000000000 for configuration ksql.functions.collect_list.limit: Not a number of type INT".into())
        );
        assert_eq!(check_property("some.other.setting", "anything"), Ok(()));
    }

    #[test]
    fn properties_are_read_under_every_name_ksqldb_accepts() {
        for name in [
            "auto.offset.reset",
            "ksql.streams.auto.offset.reset",
            "ksql.streams.consumer.auto.offset.reset",
            "consumer.auto.offset.reset",
            "main.consumer.auto.offset.reset",
        ] {
            assert_eq!(canonical_property(name), "auto.offset.reset", "{name}");
        }
        assert_eq!(
            canonical_property("ksql.streams.cache.max.bytes.buffering"),
            "cache.max.bytes.buffering"
        );
        assert_eq!(
            canonical_property("ksql.streams.commit.interval.ms"),
            "commit.interval.ms"
        );
        // ksqlDB's own settings keep their names.
        assert_eq!(
            canonical_property("ksql.query.pull.table.scan.enabled"),
            "ksql.query.pull.table.scan.enabled"
        );
        assert_eq!(
            canonical_property("consumer.fetch.min.bytes"),
            "consumer.fetch.min.bytes"
        );
    }
}
