//! Topic names and topic configuration, validated with Kafka's rules and defaults.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Result, StorageError};

/// Kafka's longest topic name.
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// Checks a topic name with Kafka's rules: 1 to 249 characters from `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<()> {
    let refuse = |reason: &str| {
        Err(StorageError::InvalidTopicName {
            name: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if name.is_empty() {
        return refuse("the name is empty");
    }
    if name == "." || name == ".." {
        return refuse("'.' and '..' are not allowed");
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return refuse("the name is longer than 249 characters");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return refuse(&format!(
            "character {c:?} is not allowed; use ASCII letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// What happens to old records of a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CleanupPolicy {
    /// Old segments are deleted by `retention.ms` and `retention.bytes`.
    Delete,
    /// Only the last value per key is guaranteed to stay.
    Compact,
    /// Both: compacted, and old segments are deleted too.
    CompactDelete,
}

impl CleanupPolicy {
    /// Whether segments expire by time or size.
    pub fn deletes(self) -> bool {
        matches!(self, CleanupPolicy::Delete | CleanupPolicy::CompactDelete)
    }

    /// Whether the log is compacted by key.
    pub fn compacts(self) -> bool {
        matches!(self, CleanupPolicy::Compact | CleanupPolicy::CompactDelete)
    }

    /// Kafka's spelling of the policy.
    pub fn as_kafka_str(self) -> &'static str {
        match self {
            CleanupPolicy::Delete => "delete",
            CleanupPolicy::Compact => "compact",
            CleanupPolicy::CompactDelete => "compact,delete",
        }
    }

    fn parse(value: &str) -> Option<Self> {
        let mut compact = false;
        let mut delete = false;
        for part in value.split(',') {
            match part.trim().to_ascii_lowercase().as_str() {
                "compact" => compact = true,
                "delete" => delete = true,
                _ => return None,
            }
        }
        match (compact, delete) {
            (true, true) => Some(CleanupPolicy::CompactDelete),
            (true, false) => Some(CleanupPolicy::Compact),
            (false, true) => Some(CleanupPolicy::Delete),
            (false, false) => None,
        }
    }
}

/// Kafka topic-level configs that Eddy stores and reports but does not act on yet.
const PASSTHROUGH_CONFIGS: &[&str] = &[
    "compression.type",
    "file.delete.delay.ms",
    "flush.messages",
    "flush.ms",
    "follower.replication.throttled.replicas",
    "index.interval.bytes",
    "leader.replication.throttled.replicas",
    "max.compaction.lag.ms",
    "message.downconversion.enable",
    "message.format.version",
    "message.timestamp.after.max.ms",
    "message.timestamp.before.max.ms",
    "message.timestamp.difference.max.ms",
    "message.timestamp.type",
    "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms",
    "preallocate",
    "segment.index.bytes",
    "segment.jitter.ms",
    "unclean.leader.election.enable",
];

/// The configuration of one topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    /// Number of partitions, at least 1.
    pub partitions: u32,
    /// Requested replication factor, or 0 for the log's default: the embedded log keeps one
    /// copy (and records the number asked for), a cluster's brokers apply their
    /// `default.replication.factor`.
    pub replication_factor: u16,
    /// `cleanup.policy`.
    pub cleanup_policy: CleanupPolicy,
    /// `retention.ms`: how long a closed segment is kept, judged by its newest record; -1 keeps forever.
    pub retention_ms: i64,
    /// `retention.bytes`: the most bytes a partition keeps; -1 means no limit.
    pub retention_bytes: i64,
    /// `max.message.bytes`: the largest record batch accepted.
    pub max_message_bytes: u32,
    /// `delete.retention.ms`: how long tombstones survive compaction.
    pub delete_retention_ms: i64,
    /// `segment.bytes`: a partition's active segment is closed past this size.
    pub segment_bytes: u64,
    /// `segment.ms`: a partition's active segment is closed after this age.
    pub segment_ms: i64,
    /// Other Kafka topic configs, kept and reported as given.
    pub other: BTreeMap<String, String>,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            partitions: 1,
            replication_factor: 0,
            cleanup_policy: CleanupPolicy::Delete,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            max_message_bytes: 1_048_588,
            delete_retention_ms: 24 * 3600 * 1000,
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            other: BTreeMap::new(),
        }
    }
}

impl TopicConfig {
    /// A default config with the given partition count.
    pub fn with_partitions(partitions: u32) -> Self {
        TopicConfig {
            partitions,
            ..TopicConfig::default()
        }
    }

    /// Applies Kafka-style `name=value` configs on top of `self`, refusing unknown names and bad values.
    pub fn apply<'a>(
        mut self,
        topic: &str,
        configs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self> {
        for (name, value) in configs {
            let bad = |reason: String| StorageError::InvalidConfig {
                topic: topic.to_string(),
                reason,
            };
            let int = |min: i64| -> Result<i64> {
                let parsed: i64 = value
                    .trim()
                    .parse()
                    .map_err(|_| bad(format!("{name}={value:?} is not an integer")))?;
                if parsed < min {
                    return Err(bad(format!("{name}={parsed} is below the minimum {min}")));
                }
                Ok(parsed)
            };
            match name {
                "cleanup.policy" => {
                    self.cleanup_policy = CleanupPolicy::parse(value).ok_or_else(|| {
                        bad(format!(
                            "cleanup.policy={value:?}; expected delete, compact or compact,delete"
                        ))
                    })?
                }
                "retention.ms" => self.retention_ms = int(-1)?,
                "retention.bytes" => self.retention_bytes = int(-1)?,
                "max.message.bytes" => {
                    self.max_message_bytes = u32::try_from(int(0)?)
                        .map_err(|_| bad(format!("max.message.bytes={value} is too large")))?
                }
                "delete.retention.ms" => self.delete_retention_ms = int(0)?,
                "segment.bytes" => self.segment_bytes = int(14)? as u64,
                "segment.ms" => self.segment_ms = int(1)?,
                // Kept with the passthrough configs (as given); a replicated log enforces it.
                "min.insync.replicas" => {
                    let min = int(1)?;
                    self.other.insert(name.to_string(), min.to_string());
                }
                other if PASSTHROUGH_CONFIGS.contains(&other) => {
                    self.other.insert(other.to_string(), value.to_string());
                }
                other => return Err(bad(format!("unknown topic config {other:?}"))),
            }
        }
        self.validate(topic)?;
        Ok(self)
    }

    /// `min.insync.replicas`: how many replicas must be in sync for an `acks=all` write,
    /// if the topic sets it.
    pub fn min_insync_replicas(&self) -> Option<usize> {
        self.other
            .get("min.insync.replicas")
            .and_then(|v| v.trim().parse().ok())
    }

    /// Checks the values that are not checked while parsing.
    pub fn validate(&self, topic: &str) -> Result<()> {
        if self.partitions == 0 {
            return Err(StorageError::InvalidConfig {
                topic: topic.to_string(),
                reason: "the partition count must be at least 1".to_string(),
            });
        }
        Ok(())
    }

    /// The configs as Kafka names and values, as `DescribeConfigs` would report them.
    pub fn to_kafka_configs(&self) -> BTreeMap<String, String> {
        let mut out = self.other.clone();
        out.insert(
            "cleanup.policy".into(),
            self.cleanup_policy.as_kafka_str().into(),
        );
        out.insert("retention.ms".into(), self.retention_ms.to_string());
        out.insert("retention.bytes".into(), self.retention_bytes.to_string());
        out.insert(
            "max.message.bytes".into(),
            self.max_message_bytes.to_string(),
        );
        out.insert(
            "delete.retention.ms".into(),
            self.delete_retention_ms.to_string(),
        );
        out.insert("segment.bytes".into(), self.segment_bytes.to_string());
        out.insert("segment.ms".into(), self.segment_ms.to_string());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_topic_name_rules() {
        assert!(validate_topic_name("orders").is_ok());
        assert!(validate_topic_name("a.b_c-D9").is_ok());
        assert!(validate_topic_name(&"x".repeat(249)).is_ok());
        for bad in ["", ".", "..", "has space", "sl/ash", "ü", &"x".repeat(250)] {
            let err = validate_topic_name(bad).unwrap_err();
            assert!(
                matches!(err, StorageError::InvalidTopicName { .. }),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn configs_parse_with_kafka_names() {
        let cfg = TopicConfig::with_partitions(3)
            .apply(
                "t",
                [
                    ("cleanup.policy", "compact,delete"),
                    ("retention.ms", "-1"),
                    ("retention.bytes", "1000"),
                    ("max.message.bytes", "2048"),
                    ("delete.retention.ms", "5"),
                    ("min.insync.replicas", "2"),
                ],
            )
            .unwrap();
        assert_eq!(cfg.cleanup_policy, CleanupPolicy::CompactDelete);
        assert_eq!(cfg.retention_ms, -1);
        assert_eq!(cfg.retention_bytes, 1000);
        assert_eq!(cfg.max_message_bytes, 2048);
        assert_eq!(cfg.delete_retention_ms, 5);
        let described = cfg.to_kafka_configs();
        assert_eq!(described["min.insync.replicas"], "2");
        assert_eq!(cfg.min_insync_replicas(), Some(2));
        assert_eq!(described["cleanup.policy"], "compact,delete");
        assert_eq!(TopicConfig::default().min_insync_replicas(), None);
        for bad in ["0", "-1", "two", ""] {
            let err = TopicConfig::default()
                .apply("t", [("min.insync.replicas", bad)])
                .unwrap_err();
            assert!(err.to_string().contains("min.insync.replicas"), "{err}");
        }
    }

    #[test]
    fn bad_configs_are_refused_with_the_reason() {
        let err = TopicConfig::default()
            .apply("t", [("cleanup.policy", "shred")])
            .unwrap_err();
        assert!(err.to_string().contains("cleanup.policy"), "{err}");
        let err = TopicConfig::default()
            .apply("t", [("retention.ms", "soon")])
            .unwrap_err();
        assert!(err.to_string().contains("not an integer"), "{err}");
        let err = TopicConfig::default()
            .apply("t", [("retention.ms", "-5")])
            .unwrap_err();
        assert!(err.to_string().contains("minimum"), "{err}");
        let err = TopicConfig::default()
            .apply("t", [("no.such.config", "1")])
            .unwrap_err();
        assert!(err.to_string().contains("unknown topic config"), "{err}");
        let err = TopicConfig::with_partitions(0).validate("t").unwrap_err();
        assert!(err.to_string().contains("partition count"), "{err}");
    }
}
