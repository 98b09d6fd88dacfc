//! What a connector does with a record it cannot handle, under Kafka Connect's `errors.*`
//! keys: with `errors.tolerance=all` the record goes to the dead-letter topic
//! (`errors.deadletterqueue.topic.name`) with its original key, value and headers, plus
//! headers that say where it came from and why (Kafka Connect's `__connect.errors.*` names),
//! and the connector goes on; with `none` (the default) the connector stops on it. Transient
//! failures (the database unreachable) are retried in place for up to `errors.retry.timeout`
//! with waits doubling to `errors.retry.delay.max.ms`, then the connector fails and is started
//! again later.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use eddy_storage::{LogRecord, Record, RecordHeader};

use crate::error::{ConnectError, Result};
use crate::properties::Properties;

/// A connector's error handling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorHandling {
    /// `errors.tolerance=all`: records that cannot be handled are skipped (and dead-lettered).
    pub tolerate: bool,
    /// `errors.deadletterqueue.topic.name`.
    pub topic: Option<String>,
    /// `errors.deadletterqueue.context.headers.enable` (on unless set to false).
    pub context_headers: bool,
    /// `errors.retry.timeout`: how long a transient failure is retried in place (`None`: for
    /// ever).
    pub retry_timeout: Option<Duration>,
    /// `errors.retry.delay.max.ms`: the longest wait between two tries.
    pub retry_delay_max: Duration,
}

impl ErrorHandling {
    /// Reads the `errors.*` keys (compared without case).
    pub fn from_properties(properties: &BTreeMap<String, String>) -> Result<Self> {
        let props = Properties::new(properties);
        let tolerate = props.choice("errors.tolerance", "none", &["none", "all"])? == "all";
        let context_headers = props.flag("errors.deadletterqueue.context.headers.enable", true)?;
        let topic = props
            .get("errors.deadletterqueue.topic.name")
            .map(str::to_string);
        if let Some(topic) = &topic {
            eddy_storage::validate_topic_name(topic).map_err(|e| {
                ConnectError::Config(format!("'errors.deadletterqueue.topic.name': {e}"))
            })?;
            if !tolerate {
                return Err(ConnectError::Config(
                    "a dead-letter topic needs 'errors.tolerance' all".into(),
                ));
            }
        }
        let millis = |key: &str, default: i64| -> Result<i64> {
            match props.get(key) {
                None => Ok(default),
                Some(v) => v.parse::<i64>().ok().filter(|n| *n >= -1).ok_or_else(|| {
                    ConnectError::Config(format!("'{key}' is '{v}'; expected milliseconds, or -1"))
                }),
            }
        };
        let retry_timeout = match millis("errors.retry.timeout", 0)? {
            -1 => None,
            ms => Some(Duration::from_millis(ms as u64)),
        };
        let retry_delay_max =
            Duration::from_millis(millis("errors.retry.delay.max.ms", 60_000)?.max(1) as u64);
        Ok(ErrorHandling {
            tolerate,
            topic,
            context_headers,
            retry_timeout,
            retry_delay_max,
        })
    }

    /// The dead-letter record of `record`, which failed as `failure` says.
    pub fn dead_letter(&self, record: &LogRecord, failure: &Failure<'_>) -> Record {
        dead_letter_record(record, self.context_headers.then_some(failure))
    }
}

/// Where a record that could not be handled came from, and why.
#[derive(Debug, Clone, Copy)]
pub struct Failure<'a> {
    /// The connector (or, for a query, the query id) that could not handle it.
    pub by: &'a str,
    /// Kafka Connect's stage: `KEY_CONVERTER`, `VALUE_CONVERTER`, `TRANSFORMATION`,
    /// `TASK_PUT`.
    pub stage: &'a str,
    /// The topic it was read from.
    pub topic: &'a str,
    /// Its partition.
    pub partition: u32,
    /// The kind of error, as an exception class name.
    pub error_class: &'a str,
    /// What went wrong.
    pub error: &'a str,
}

/// The dead letter of `record`: its key, value, timestamp and headers, plus Kafka Connect's
/// `__connect.errors.*` headers from `failure` when given.
pub fn dead_letter_record(record: &LogRecord, failure: Option<&Failure<'_>>) -> Record {
    let mut headers = record.record.headers.clone();
    if let Some(failure) = failure {
        let header = |key: &str, value: String| RecordHeader {
            key: format!("__connect.errors.{key}"),
            value: Some(Bytes::from(value)),
        };
        headers.extend([
            header("topic", failure.topic.to_string()),
            header("partition", failure.partition.to_string()),
            header("offset", record.offset.to_string()),
            header("connector.name", failure.by.to_string()),
            header("task.id", "0".into()),
            header("stage", failure.stage.to_string()),
            header("exception.class.name", failure.error_class.to_string()),
            header("exception.message", failure.error.to_string()),
        ]);
    }
    Record {
        key: record.record.key.clone(),
        value: record.record.value.clone(),
        timestamp: record.record.timestamp,
        headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::properties::tests::props;

    #[test]
    fn connects_keys_and_defaults() {
        let none = ErrorHandling::from_properties(&props(&[])).unwrap();
        assert!(!none.tolerate && none.topic.is_none());
        assert_eq!(none.retry_timeout, Some(Duration::ZERO));
        let all = ErrorHandling::from_properties(&props(&[
            ("errors.tolerance", "all"),
            ("errors.deadletterqueue.topic.name", "dlq"),
            ("errors.retry.timeout", "-1"),
            ("errors.retry.delay.max.ms", "500"),
        ]))
        .unwrap();
        assert!(all.tolerate && all.context_headers);
        assert_eq!(all.topic.as_deref(), Some("dlq"));
        assert_eq!(all.retry_timeout, None);
        assert_eq!(all.retry_delay_max, Duration::from_millis(500));
        for (pairs, named) in [
            (vec![("errors.tolerance", "some")], "errors.tolerance"),
            (
                vec![("errors.deadletterqueue.topic.name", "dlq")],
                "errors.tolerance",
            ),
            (
                vec![
                    ("errors.tolerance", "all"),
                    ("errors.deadletterqueue.topic.name", "a/b"),
                ],
                "errors.deadletterqueue.topic.name",
            ),
            (vec![("errors.retry.timeout", "-5")], "errors.retry.timeout"),
        ] {
            let err = ErrorHandling::from_properties(&props(&pairs))
                .unwrap_err()
                .to_string();
            assert!(err.contains(named), "{pairs:?}: {err}");
        }
    }

    #[test]
    fn a_dead_letter_keeps_the_record_and_says_where_it_came_from() {
        let handling = ErrorHandling::from_properties(&props(&[
            ("errors.tolerance", "all"),
            ("errors.deadletterqueue.topic.name", "dlq"),
        ]))
        .unwrap();
        let mut original = Record::keyed("k", "not json", 7);
        original.headers.push(RecordHeader {
            key: "trace".into(),
            value: Some(Bytes::from("abc")),
        });
        let record = LogRecord {
            offset: 41,
            record: original.clone(),
        };
        let dead = handling.dead_letter(
            &record,
            &Failure {
                by: "sink",
                stage: "VALUE_CONVERTER",
                topic: "orders",
                partition: 2,
                error_class: "DataException",
                error: "not a JSON object",
            },
        );
        assert_eq!(
            (dead.key, dead.value, dead.timestamp),
            (original.key, original.value, 7)
        );
        let header = |name: &str| {
            dead.headers
                .iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value.clone())
        };
        assert_eq!(header("trace"), Some(Bytes::from("abc")));
        assert_eq!(
            header("__connect.errors.topic"),
            Some(Bytes::from("orders"))
        );
        assert_eq!(header("__connect.errors.partition"), Some(Bytes::from("2")));
        assert_eq!(header("__connect.errors.offset"), Some(Bytes::from("41")));
        assert_eq!(
            header("__connect.errors.exception.message"),
            Some(Bytes::from("not a JSON object"))
        );
    }
}
