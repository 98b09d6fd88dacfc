//! A service's nodes through the REST API: the status each node publishes about itself (its
//! heartbeat, carried by the cluster's directory topic), `/clusterStatus` built from them, the
//! hosts `SHOW QUERIES` and `EXPLAIN` count, and the statements a standby forwards to the
//! active node, which alone runs them.
//!
//! On the embedded log a server is a service of one: `/clusterStatus` shows it alone and
//! nothing is forwarded.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use eddy_engine::Engine;
use eddy_engine::query::QuerySummary;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::{debug, warn};

use crate::rest::{ErrorCode, RestError};

/// How often a node on a cluster publishes its status.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// How often the status's queries and their positions are read again: reading positions on a
/// cluster asks its brokers for each partition's end.
const QUERIES_EVERY: Duration = Duration::from_secs(3);
/// How long a forwarded statement may take on the active node.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a standby waits to apply a statement it forwarded, so the caller's next request
/// to it sees what the statement did.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(10);

/// The header a forwarded request carries (the forwarding node's URL): a node never forwards
/// such a request again, so two nodes that each think the other active cannot loop.
pub(crate) const FORWARDED_BY: &str = "x-eddy-forwarded-by";
/// The header of the active node's answer: how far its command log went, which the forwarding
/// standby waits to apply.
pub(crate) const COMMAND_SEQ: &str = "x-eddy-command-seq";

/// A node's role, as its status and `/clusterStatus` name it.
const ACTIVE: &str = "ACTIVE";
const STANDBY: &str = "STANDBY";

/// What a node publishes about itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// Where its REST API is reached (`--advertised-listener`).
    pub url: String,
    /// `ACTIVE` or `STANDBY`.
    pub role: String,
    /// Its persistent queries by id.
    pub queries: BTreeMap<String, QueryOnNode>,
    /// When its queries' positions were read, ms since the epoch.
    pub queries_read_ms: i64,
    /// Where its schema registry is reached (`--schema-registry-advertised-listener`), empty
    /// when it serves none: standbys forward registry writes to the active node's.
    #[serde(default)]
    pub registry_url: String,
}

/// One persistent query on one node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryOnNode {
    /// `RUNNING`, `STANDBY`, `PAUSED` or `ERROR` on that node.
    pub state: String,
    /// Each input partition with the query's position on it there: all of them for a query
    /// that runs whole on the active node, the node's own for one whose partitions the
    /// service's nodes split.
    pub partitions: Vec<PartitionPosition>,
    /// Whether the service's nodes split the query's partitions: each runs its own.
    #[serde(default)]
    pub split: bool,
    /// A split query's task partitions the node keeps warm without running them.
    #[serde(default)]
    pub standby: Vec<(String, u32)>,
}

/// A query's position on one input partition.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartitionPosition {
    /// The input topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The next offset the query reads (or the state it restored goes up to, on a standby).
    pub current: i64,
    /// The partition's end.
    pub end: i64,
}

/// The answer to a request a standby forwarded.
pub(crate) struct Relayed {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    /// How far the active node's command log went, when it said.
    pub seq: Option<u64>,
    pub body: bytes::Bytes,
}

impl IntoResponse for Relayed {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body).into_response();
        if let Some(content_type) = self.content_type {
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, content_type);
        }
        response
    }
}

/// A node as `/clusterStatus` and the query listings see it.
#[derive(Debug, Clone)]
pub(crate) struct KnownNode {
    /// `host:port` of its REST API, as ksqlDB keys hosts.
    pub host: String,
    pub alive: bool,
    pub local: bool,
    pub published_ms: i64,
    pub status: NodeStatus,
}

/// This node's part in its service.
pub struct Service {
    engine: Arc<Engine>,
    url: OnceLock<String>,
    registry_url: OnceLock<String>,
    http: OnceLock<reqwest::Client>,
    /// The status last read from the engine: when, at which command sequence number.
    latest: Mutex<Option<(tokio::time::Instant, u64, NodeStatus)>>,
}

impl Service {
    /// The service part of a server over `engine`; it is reachable once advertised.
    pub fn new(engine: Arc<Engine>) -> Self {
        Service {
            engine,
            url: OnceLock::new(),
            registry_url: OnceLock::new(),
            http: OnceLock::new(),
            latest: Mutex::new(None),
        }
    }

    /// Sets where other nodes reach this one (`http[s]://host:port`), and the client that
    /// reaches them, trusting the system's roots and `ca_file`'s certificates.
    pub fn advertise(&self, url: &str, ca_file: Option<&std::path::Path>) -> Result<(), String> {
        let tls = eddy_repl::client::tls_config(ca_file)?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(FORWARD_TIMEOUT)
            .build()
            .map_err(|e| format!("cannot build the client that forwards statements: {e}"))?;
        let _ = self.url.set(url.trim_end_matches('/').to_string());
        let _ = self.http.set(client);
        Ok(())
    }

    /// The service's id (ksqlDB's `ksql.service.id`): the embedded log's is ksqlDB's default.
    pub(crate) fn service_id(&self) -> &str {
        self.engine
            .store()
            .service_member()
            .map_or(eddy_storage::DEFAULT_SERVICE_ID, |(_, service)| service)
    }

    fn url(&self) -> &str {
        self.url.get().map_or("", String::as_str)
    }

    /// Sets where other nodes reach this node's schema registry.
    pub fn advertise_registry(&self, url: &str) {
        let _ = self.registry_url.set(url.trim_end_matches('/').to_string());
    }

    /// Publishes this node's status every second while the server runs, when its log is on a
    /// cluster; `None` for the embedded log.
    pub fn heartbeat(self: &Arc<Self>) -> Option<impl std::future::Future<Output = ()> + use<>> {
        self.engine.store().service_member()?;
        let service = Arc::downgrade(self);
        Some(async move {
            let mut every = tokio::time::interval(HEARTBEAT_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(service) = service.upgrade() else {
                    return;
                };
                let status = service.local_status().await;
                match serde_json::to_vec(&status) {
                    Ok(bytes) => service.engine.store().publish_node_status(bytes),
                    Err(error) => warn!(%error, "cannot encode this node's status"),
                }
            }
        })
    }

    /// This node's status: its role now, and its queries as last read (again once they are
    /// [`QUERIES_EVERY`] old).
    async fn local_status(&self) -> NodeStatus {
        let role = if self.engine.store().is_standby() {
            STANDBY
        } else {
            ACTIVE
        };
        // A statement applied since (a query started or dropped) makes the queries stale too.
        let seq = self.engine.command_seq().await;
        let fresh = self
            .latest
            .lock()
            .as_ref()
            .filter(|(at, read_at, _)| at.elapsed() < QUERIES_EVERY && *read_at == seq)
            .map(|(_, _, status)| status.clone());
        let mut status = match fresh {
            Some(status) => status,
            None => {
                let summaries = self.engine.persistent_query_summaries().await;
                let status = NodeStatus {
                    url: self.url().to_string(),
                    role: role.into(),
                    queries: summaries.iter().map(query_on_node).collect(),
                    queries_read_ms: eddy_storage::now_ms(),
                    registry_url: String::new(),
                };
                *self.latest.lock() = Some((tokio::time::Instant::now(), seq, status.clone()));
                status
            }
        };
        status.role = role.into();
        status.registry_url = self.registry_url.get().cloned().unwrap_or_default();
        status
    }

    /// Every node of the service this node knows of, itself first: on a cluster from the
    /// statuses they published, on the embedded log this node alone.
    pub(crate) async fn nodes(&self) -> Vec<KnownNode> {
        let local = self.local_status().await;
        let mut nodes = vec![KnownNode {
            host: host_of(&local.url),
            alive: true,
            local: true,
            published_ms: eddy_storage::now_ms(),
            status: local,
        }];
        for node in self.engine.store().service_nodes().unwrap_or_default() {
            if node.local {
                continue;
            }
            match serde_json::from_slice::<NodeStatus>(&node.status) {
                Ok(status) => nodes.push(KnownNode {
                    host: host_of(&status.url),
                    alive: node.alive,
                    local: false,
                    published_ms: node.published_ms,
                    status,
                }),
                Err(error) => debug!(node = %node.id, %error, "a node's status cannot be read"),
            }
        }
        nodes
    }

    /// `GET /clusterStatus`, in ksqlDB's shape: each host's liveness, the input partitions it
    /// runs (active) or keeps state for (standby) per query, and its positions' lag.
    pub(crate) async fn cluster_status(&self) -> Value {
        let service_id = self.service_id().to_string();
        let hosts: serde_json::Map<String, Value> = self
            .nodes()
            .await
            .into_iter()
            .map(|node| {
                let status = host_status(&node, &service_id);
                (node.host, status)
            })
            .collect();
        json!({"clusterStatus": hosts})
    }

    /// Puts every node's state of each query into the listings that show hosts: `statusCount`
    /// of `SHOW QUERIES` and `ksqlHostQueryStatus` of `EXPLAIN`. A node no longer heard of
    /// counts as `UNRESPONSIVE`, as ksqlDB counts a host that did not answer.
    pub(crate) async fn annotate(&self, entities: &mut [Value]) {
        let wanted = entities.iter().any(|e| {
            matches!(
                e.get("@type").and_then(Value::as_str),
                Some("queries" | "queryDescription" | "query_descriptions")
            )
        });
        if !wanted {
            return;
        }
        let nodes = self.nodes().await;
        let state_on = |node: &KnownNode, id: &str| -> Option<String> {
            let query = node.status.queries.get(id)?;
            Some(if node.alive {
                query.state.clone()
            } else {
                "UNRESPONSIVE".into()
            })
        };
        for entity in entities.iter_mut() {
            match entity.get("@type").and_then(Value::as_str) {
                Some("queries") => {
                    let Some(queries) = entity.get_mut("queries").and_then(Value::as_array_mut)
                    else {
                        continue;
                    };
                    for query in queries {
                        let Some(id) = query.get("id").and_then(Value::as_str) else {
                            continue;
                        };
                        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
                        for state in nodes.iter().filter_map(|n| state_on(n, id)) {
                            *counts.entry(state).or_default() += 1;
                        }
                        if !counts.is_empty() {
                            query["statusCount"] = json!(counts);
                        }
                    }
                }
                Some("queryDescription") => {
                    if let Some(description) = entity.get_mut("queryDescription") {
                        hosts_of(description, &nodes, &state_on);
                    }
                }
                Some("query_descriptions") => {
                    let descriptions = entity
                        .get_mut("queryDescriptions")
                        .and_then(Value::as_array_mut);
                    for description in descriptions.into_iter().flatten() {
                        hosts_of(description, &nodes, &state_on);
                    }
                }
                _ => {}
            }
        }
    }

    /// Where a request this node cannot run goes: `None` when this node runs it itself (it is
    /// active, on the embedded log, or the request was forwarded to it already), else the
    /// active node's URL, or the error saying none is known.
    pub(crate) async fn forward_target(
        &self,
        headers: &HeaderMap,
    ) -> Option<Result<String, RestError>> {
        let target = self.active(headers, |status| &status.url).await?;
        Some(target.map_err(|service| {
            RestError::new(
                ErrorCode::Unavailable,
                format!(
                    "this node stands by in service {service:?} and no active node is known to take the statement: one takes over within a few seconds of the last one's loss; try again"
                ),
            )
        }))
    }

    /// Where a schema registry write this node cannot make goes: as [`Service::forward_target`],
    /// to the active node's registry; the error is the service's id when none is known.
    pub(crate) async fn registry_target(
        &self,
        headers: &HeaderMap,
    ) -> Option<Result<String, String>> {
        self.active(headers, |status| &status.registry_url).await
    }

    /// The active node's address as `url` reads it from its status, when this node stands
    /// by and the request was not forwarded to it; the service's id when none is known.
    async fn active(
        &self,
        headers: &HeaderMap,
        url: impl Fn(&NodeStatus) -> &String,
    ) -> Option<Result<String, String>> {
        let store = self.engine.store();
        let (_, service) = store.service_member()?;
        if !store.is_standby() || headers.contains_key(FORWARDED_BY) {
            return None;
        }
        let service = service.to_string();
        let active =
            self.nodes().await.into_iter().find(|n| {
                !n.local && n.alive && n.status.role == ACTIVE && !url(&n.status).is_empty()
            });
        Some(active.map(|node| url(&node.status).clone()).ok_or(service))
    }

    /// Sends a request on to `to` with the caller's credentials and this node's mark; the
    /// answer's status, content type, command sequence header and body, or why it failed.
    pub(crate) async fn relay(
        &self,
        method: reqwest::Method,
        to: &str,
        headers: &HeaderMap,
        body: impl Into<reqwest::Body>,
    ) -> Result<Relayed, String> {
        let Some(http) = self.http.get() else {
            return Err("this node has no advertised listener to forward from".into());
        };
        let mut request = http
            .request(method, to)
            .header(FORWARDED_BY, self.url())
            .body(body);
        for name in [header::AUTHORIZATION, header::ACCEPT, header::CONTENT_TYPE] {
            if let Some(value) = headers.get(&name) {
                request = request.header(name, value);
            }
        }
        let answer = request.send().await.map_err(|e| e.to_string())?;
        let status = StatusCode::from_u16(answer.status().as_u16())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
        let seq = answer
            .headers()
            .get(COMMAND_SEQ)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let body = answer
            .bytes()
            .await
            .map_err(|e| format!("the answer did not finish: {e}"))?;
        Ok(Relayed {
            status,
            content_type,
            seq,
            body,
        })
    }

    /// Sends `body` to the active node's `path` with the caller's credentials, and answers
    /// with what it answered, once this node applied the statements it ran.
    pub(crate) async fn forward(
        &self,
        active: &str,
        path: &str,
        headers: &HeaderMap,
        body: Vec<u8>,
    ) -> Response {
        let mut headers = headers.clone();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let to = format!("{active}{path}");
        let answer = match self.relay(reqwest::Method::POST, &to, &headers, body).await {
            Ok(answer) => answer,
            Err(error) => {
                return RestError::new(
                    ErrorCode::Unavailable,
                    format!(
                        "this node is a standby and could not reach the active node at {active} to run the statement: {error}"
                    ),
                )
                .into_response();
            }
        };
        if let Some(seq) = answer.seq
            && !self.engine.await_command_seq(seq, CATCH_UP_TIMEOUT).await
        {
            warn!(
                seq,
                "a statement forwarded to the active node is not applied here yet"
            );
        }
        // The schemas the statements registered, for this node's next inserts.
        if let Err(error) = self.engine.schema_registry().catch_up().await {
            warn!(%error, "the schemas a forwarded statement registered are not read here yet");
        }
        answer.into_response()
    }

    /// The header the active node answers a statement with: how far its command log went.
    pub(crate) async fn command_seq_header(&self) -> Option<(&'static str, HeaderValue)> {
        self.engine.store().service_member()?;
        Some((
            COMMAND_SEQ,
            HeaderValue::from(self.engine.command_seq().await),
        ))
    }
}

/// Sets a query description's `ksqlHostQueryStatus`: its state on each node.
fn hosts_of(
    description: &mut Value,
    nodes: &[KnownNode],
    state_on: &impl Fn(&KnownNode, &str) -> Option<String>,
) {
    let Some(id) = description
        .get("id")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return;
    };
    let hosts: serde_json::Map<String, Value> = nodes
        .iter()
        .filter_map(|n| Some((n.host.clone(), json!(state_on(n, &id)?))))
        .collect();
    description["ksqlHostQueryStatus"] = Value::Object(hosts);
}

/// A query as a node's status carries it.
fn query_on_node(summary: &QuerySummary) -> (String, QueryOnNode) {
    let partitions = summary
        .offsets
        .iter()
        .flat_map(|group| &group.topics)
        .flat_map(|topic| {
            topic
                .partitions
                .iter()
                .filter(|p| summary.runs(&topic.topic, p.partition))
                .map(|p| PartitionPosition {
                    topic: topic.topic.clone(),
                    partition: p.partition,
                    current: p.consumer.max(p.log_start),
                    end: p.log_end,
                })
        })
        .collect();
    (
        summary.id.clone(),
        QueryOnNode {
            state: summary.state.clone(),
            partitions,
            split: summary.assigned.is_some(),
            standby: summary.standby.clone(),
        },
    )
}

/// `host:port` of a URL, as ksqlDB names hosts.
fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split('/').next().unwrap_or(rest).to_string()
}

/// One host's entry in `/clusterStatus`.
fn host_status(node: &KnownNode, service_id: &str) -> Value {
    let mut per_query = serde_json::Map::new();
    let mut lags = serde_json::Map::new();
    for (id, query) in &node.status.queries {
        // A split query's partitions are each node's own to run; a whole one's are the
        // active node's, kept warm on the standbys.
        let active = query.split || node.status.role == ACTIVE;
        let partitions: Vec<Value> = query
            .partitions
            .iter()
            .map(|p| json!({"topic": p.topic, "partition": p.partition}))
            .collect();
        let store = format!("_confluent-ksql-{service_id}_query_{id}");
        let (active_partitions, standby_partitions) = if active {
            let standby = query.standby.iter();
            let standby = standby.map(|(topic, p)| json!({"topic": topic, "partition": p}));
            (partitions, standby.collect())
        } else {
            (Vec::new(), partitions)
        };
        let (active_stores, standby_stores) = if active {
            let warm = (!query.standby.is_empty()).then(|| store.clone());
            (vec![store.clone()], warm.into_iter().collect())
        } else {
            (Vec::new(), vec![store.clone()])
        };
        per_query.insert(
            id.clone(),
            json!({
                "activeStores": active_stores,
                "activePartitions": active_partitions,
                "standByStores": standby_stores,
                "standByPartitions": standby_partitions,
            }),
        );
        let mut by_topic: BTreeMap<&str, serde_json::Map<String, Value>> = BTreeMap::new();
        for p in &query.partitions {
            by_topic.entry(&p.topic).or_default().insert(
                p.partition.to_string(),
                json!({
                    "currentOffsetPosition": p.current,
                    "endOffsetPosition": p.end,
                    "offsetLag": (p.end - p.current).max(0),
                }),
            );
        }
        for (topic, by_partition) in by_topic {
            lags.insert(
                format!("{store}#{topic}"),
                json!({"lagByPartition": by_partition, "size": by_partition.len()}),
            );
        }
    }
    json!({
        "hostAlive": node.alive,
        "lastStatusUpdateMs": node.published_ms,
        "activeStandbyPerQuery": per_query,
        "hostStoreLags": {
            "stateStoreLags": lags,
            "updateTimeMs": node.status.queries_read_ms,
        },
        "role": node.status.role,
        "local": node.local,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_named_by_host_and_port() {
        assert_eq!(host_of("http://10.0.0.1:8088"), "10.0.0.1:8088");
        assert_eq!(
            host_of("https://ksql.example.com:443/"),
            "ksql.example.com:443"
        );
        assert_eq!(host_of("node-2:8088"), "node-2:8088");
    }

    #[test]
    fn a_host_lists_its_partitions_as_active_or_standby_with_their_lag() {
        let status = NodeStatus {
            url: "http://a:1".into(),
            role: STANDBY.into(),
            queries: BTreeMap::from([(
                "CTAS_T_1".to_string(),
                QueryOnNode {
                    state: "STANDBY".into(),
                    partitions: vec![
                        PartitionPosition {
                            topic: "s".into(),
                            partition: 0,
                            current: 3,
                            end: 10,
                        },
                        PartitionPosition {
                            topic: "s".into(),
                            partition: 1,
                            current: 12,
                            end: 10,
                        },
                    ],
                    split: false,
                    standby: Vec::new(),
                },
            )]),
            queries_read_ms: 7,
            registry_url: String::new(),
        };
        let node = KnownNode {
            host: "a:1".into(),
            alive: false,
            local: false,
            published_ms: 5,
            status,
        };
        let entry = host_status(&node, "svc");
        assert_eq!(entry["hostAlive"], json!(false));
        assert_eq!(entry["lastStatusUpdateMs"], json!(5));
        let query = &entry["activeStandbyPerQuery"]["CTAS_T_1"];
        assert_eq!(query["activePartitions"], json!([]));
        assert_eq!(
            query["standByPartitions"],
            json!([{"topic": "s", "partition": 0}, {"topic": "s", "partition": 1}])
        );
        let lags =
            &entry["hostStoreLags"]["stateStoreLags"]["_confluent-ksql-svc_query_CTAS_T_1#s"];
        assert_eq!(lags["lagByPartition"]["0"]["offsetLag"], json!(7));
        // A position past the end (the end read before the commit that passed it) is no lag.
        assert_eq!(lags["lagByPartition"]["1"]["offsetLag"], json!(0));
        assert_eq!(entry["hostStoreLags"]["updateTimeMs"], json!(7));
    }
}
