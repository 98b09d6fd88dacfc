//! The transactional outbox: Debezium's outbox event router (`io.debezium.transforms.outbox.
//! EventRouter`) over the changes of an outbox table. A service writes its business row and an
//! event row in one database transaction; each inserted event row becomes one record on the
//! topic its `aggregatetype` names, keyed by its `aggregateid`, whose value is its `payload`,
//! with its id (and any columns asked for) as headers.
//!
//! As with Debezium, only inserts (and rows read by the snapshot) are events: an update of an
//! outbox row is ignored with a warning, and deletes (services often delete their events in
//! the same transaction) are dropped. The key is the `aggregateid`'s text and the value the
//! payload's text as it is, so a `jsonb` payload is its JSON (Debezium's
//! `table.expand.json.payload`), not a JSON string holding it.

use std::collections::BTreeMap;

use bytes::Bytes;
use eddy_storage::{Record, RecordHeader};
use tracing::warn;

use super::change::{Cell, Op, TableShape};
use crate::error::{ConnectError, Result};
use crate::properties::Properties;

/// Where an additional column goes (`table.fields.additional.placement`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Placement {
    /// A header of this name.
    Header(String),
    /// A field of this name beside the payload in the value.
    Envelope(String),
}

/// A configured outbox event router.
#[derive(Debug, Clone)]
pub struct OutboxRouter {
    id: String,
    key: String,
    payload: String,
    timestamp: Option<String>,
    route_by: String,
    topic_replacement: String,
    additional: Vec<(String, Placement)>,
}

/// The transform class Eddy applies; any other is refused.
const EVENT_ROUTER: &str = "io.debezium.transforms.outbox.EventRouter";

impl OutboxRouter {
    /// The router a connector's `transforms` configure, if any (keys compared without case).
    pub fn from_properties(properties: &BTreeMap<String, String>) -> Result<Option<Self>> {
        let props = Properties::new(properties);
        let names = props.list("transforms");
        let Some(first) = names.first() else {
            return Ok(None);
        };
        if names.len() > 1 {
            return Err(ConnectError::Config(format!(
                "'transforms' lists {}; Eddy applies one transform, the outbox event router",
                names.join(", ")
            )));
        }
        let name = first.to_ascii_lowercase();
        let key = |k: &str| format!("transforms.{name}.{k}");
        let get = |k: &str| props.get(&key(k));
        let class = get("type").ok_or_else(|| {
            ConnectError::Config(format!("the transform '{first}' needs '{}'", key("type")))
        })?;
        if class != EVENT_ROUTER {
            return Err(ConnectError::Config(format!(
                "the transform type '{class}' is not one Eddy applies; it applies {EVENT_ROUTER}"
            )));
        }
        let additional = props
            .list(&key("table.fields.additional.placement"))
            .into_iter()
            .map(parse_placement)
            .collect::<Result<_>>()?;
        let replacement = get("route.topic.replacement").unwrap_or("outbox.event.${routedByValue}");
        Ok(Some(OutboxRouter {
            id: get("table.field.event.id").unwrap_or("id").to_string(),
            key: get("table.field.event.key")
                .unwrap_or("aggregateid")
                .to_string(),
            payload: get("table.field.event.payload")
                .unwrap_or("payload")
                .to_string(),
            timestamp: get("table.field.event.timestamp").map(str::to_string),
            route_by: get("route.by.field").unwrap_or("aggregatetype").to_string(),
            topic_replacement: replacement.to_string(),
            additional,
        }))
    }

    /// The event an outbox row's change makes: its topic and record, or none for a change
    /// that is not an event (an update, a delete).
    pub fn route(
        &self,
        shape: &TableShape,
        (op, row): (Op, Option<&[Cell]>),
        commit_ms: i64,
    ) -> Result<Option<(String, Record)>> {
        let row = match (op, row) {
            (Op::Create | Op::Read, Some(row)) => row,
            (Op::Update, _) => {
                warn!(table = %shape.table, "an outbox row was updated; only inserts are events");
                return Ok(None);
            }
            _ => return Ok(None),
        };
        let column = |name: &str| -> Result<Option<&str>> {
            let at = shape
                .columns
                .iter()
                .position(|c| c.name == name)
                .ok_or_else(|| {
                    ConnectError::Decode(format!(
                        "the outbox table {}.{} has no column '{name}'",
                        shape.schema, shape.table
                    ))
                })?;
            Ok(match row.get(at) {
                Some(Cell::Text(text)) => Some(text.as_str()),
                _ => None,
            })
        };
        let routed_by = column(&self.route_by)?.ok_or_else(|| {
            ConnectError::Decode(format!("an outbox row has no '{}'", self.route_by))
        })?;
        let topic = self
            .topic_replacement
            .replace("${routedByValue}", routed_by);
        eddy_storage::validate_topic_name(&topic).map_err(|e| {
            ConnectError::Decode(format!("an outbox row routes to no valid topic: {e}"))
        })?;
        let id = column(&self.id)?;
        let key = column(&self.key)?;
        let payload = column(&self.payload)?;
        let mut headers = vec![RecordHeader {
            key: "id".into(),
            value: id.map(|v| Bytes::copy_from_slice(v.as_bytes())),
        }];
        let mut envelope = serde_json::Map::new();
        for (name, placement) in &self.additional {
            let value = column(name)?;
            match placement {
                Placement::Header(alias) => headers.push(RecordHeader {
                    key: alias.clone(),
                    value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
                }),
                Placement::Envelope(alias) => {
                    envelope.insert(
                        alias.clone(),
                        value.map_or(serde_json::Value::Null, |v| v.into()),
                    );
                }
            }
        }
        let value = match (payload, envelope.is_empty()) {
            (payload, true) => payload.map(|p| Bytes::copy_from_slice(p.as_bytes())),
            (payload, false) => {
                let payload = payload.map_or(serde_json::Value::Null, |p| {
                    serde_json::from_str(p).unwrap_or_else(|_| p.into())
                });
                envelope.insert("payload".into(), payload);
                Some(Bytes::from(serde_json::Value::Object(envelope).to_string()))
            }
        };
        let timestamp = match &self.timestamp {
            Some(field) => column(field)?
                .and_then(parse_timestamp_ms)
                .unwrap_or(commit_ms),
            None => commit_ms,
        };
        Ok(Some((
            topic,
            Record {
                key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
                value,
                timestamp,
                headers,
            },
        )))
    }
}

/// `column:header[:alias]` or `column:envelope[:alias]`.
fn parse_placement(spec: &str) -> Result<(String, Placement)> {
    let parts: Vec<&str> = spec.split(':').map(str::trim).collect();
    let (column, place, alias) = match parts.as_slice() {
        [column, place] => (*column, *place, *column),
        [column, place, alias] => (*column, *place, *alias),
        _ => {
            return Err(ConnectError::Config(format!(
                "'table.fields.additional.placement' has '{spec}'; expected column:header[:alias] \
                 or column:envelope[:alias]"
            )));
        }
    };
    let placement = match place.to_ascii_lowercase().as_str() {
        "header" => Placement::Header(alias.to_string()),
        "envelope" => Placement::Envelope(alias.to_string()),
        other => {
            return Err(ConnectError::Config(format!(
                "'table.fields.additional.placement' places '{column}' in '{other}'; \
                 Eddy places columns in a header or the envelope"
            )));
        }
    };
    Ok((column.to_string(), placement))
}

/// A `timestamp`/`timestamptz` column's text as milliseconds since 1970 (UTC when it has no
/// zone).
fn parse_timestamp_ms(text: &str) -> Option<i64> {
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc().timestamp_millis())
        .or_else(|| {
            chrono::DateTime::parse_from_str(&format!("{text}:00"), "%Y-%m-%d %H:%M:%S%.f%:z")
                .or_else(|_| chrono::DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%:z"))
                .ok()
                .map(|t| t.timestamp_millis())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::change::Column;

    use crate::properties::tests::props;

    fn outbox() -> TableShape {
        let column = |name: &str| Column {
            name: name.into(),
            type_oid: 25,
            key: name == "id",
        };
        TableShape {
            schema: "public".into(),
            table: "outbox".into(),
            columns: ["id", "aggregatetype", "aggregateid", "type", "payload"]
                .iter()
                .map(|n| column(n))
                .collect(),
        }
    }

    fn row(values: &[&str]) -> Vec<Cell> {
        values.iter().map(|v| Cell::Text(v.to_string())).collect()
    }

    #[test]
    fn an_inserted_event_goes_to_its_aggregates_topic_keyed_by_its_aggregate() {
        let router = OutboxRouter::from_properties(&props(&[
            ("transforms", "outbox"),
            ("transforms.outbox.type", EVENT_ROUTER),
            (
                "transforms.outbox.table.fields.additional.placement",
                "type:header:eventType",
            ),
        ]))
        .unwrap()
        .unwrap();
        let event = row(&["e1", "order", "42", "OrderCreated", r#"{"total": 10}"#]);
        let (topic, record) = router
            .route(&outbox(), (Op::Create, Some(&event)), 5)
            .unwrap()
            .unwrap();
        assert_eq!(topic, "outbox.event.order");
        assert_eq!(record.key.as_deref(), Some(&b"42"[..]));
        assert_eq!(record.value.as_deref(), Some(&br#"{"total": 10}"#[..]));
        assert_eq!(record.timestamp, 5);
        let headers: Vec<(&str, &[u8])> = record
            .headers
            .iter()
            .map(|h| (h.key.as_str(), h.value.as_deref().unwrap()))
            .collect();
        assert_eq!(
            headers,
            vec![("id", &b"e1"[..]), ("eventType", &b"OrderCreated"[..])]
        );
        // Deletes and updates are not events.
        assert!(
            router
                .route(&outbox(), (Op::Delete, None), 5)
                .unwrap()
                .is_none()
        );
        assert!(
            router
                .route(&outbox(), (Op::Update, Some(&event)), 5)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_bad_configuration_or_row_is_named() {
        let err = OutboxRouter::from_properties(&props(&[
            ("transforms", "unwrap"),
            (
                "transforms.unwrap.type",
                "io.debezium.transforms.ExtractNewRecordState",
            ),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("ExtractNewRecordState"), "{err}");
        let router = OutboxRouter::from_properties(&props(&[
            ("transforms", "outbox"),
            ("transforms.outbox.type", EVENT_ROUTER),
            ("transforms.outbox.route.by.field", "missing"),
        ]))
        .unwrap()
        .unwrap();
        let event = row(&["e1", "order", "42", "OrderCreated", "{}"]);
        let err = router
            .route(&outbox(), (Op::Create, Some(&event)), 5)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no column 'missing'"), "{err}");
        let router = OutboxRouter::from_properties(&props(&[
            ("transforms", "outbox"),
            ("transforms.outbox.type", EVENT_ROUTER),
        ]))
        .unwrap()
        .unwrap();
        let bad = row(&["e1", "no/such topic", "42", "OrderCreated", "{}"]);
        assert!(
            router
                .route(&outbox(), (Op::Create, Some(&bad)), 5)
                .is_err()
        );
    }
}
