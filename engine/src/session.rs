//! Per-client state: property overrides set with `SET` and variables set with `DEFINE`.

use std::collections::HashMap;

/// What a client has set for its own statements.
#[derive(Debug, Clone, Default)]
pub struct Session {
    /// `SET 'name' = 'value'` overrides, such as `auto.offset.reset`.
    pub properties: HashMap<String, String>,
    /// `DEFINE name = 'value'` variables, substituted as `${name}`.
    pub variables: HashMap<String, String>,
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

impl Session {
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::canonical_property;

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
