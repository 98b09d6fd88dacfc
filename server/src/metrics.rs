//! `GET /metrics`: Prometheus' text format over one registry per server. HTTP, pull-query and
//! Kafka-fetch metrics are recorded as requests happen; per-query, per-topic and consumer-lag
//! series are read from the engine and the store at scrape time, so they cannot drift from
//! what `DESCRIBE … EXTENDED` shows.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use eddy_engine::Engine;
use eddy_engine::query::stats::GroupOffsets;
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::kafka::TransactionCoordinator;

mod replication;

pub use replication::following;

/// Latency buckets for HTTP requests and pull queries, in seconds.
const REQUEST_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Every metric the server exports.
pub struct ServerMetrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    /// Time from a pull query's request to the end of its answer.
    pub pull_latency: Histogram,
    /// Records sent to Kafka clients by Fetch, per topic.
    pub kafka_fetched_records: IntCounterVec,
    /// Connections open now, per listener (`http`, `kafka`).
    pub connections: IntGaugeVec,
    /// Connections closed at once because their listener was full, per listener.
    pub connections_refused: IntCounterVec,
    push_queries: IntGauge,
    query_records_in: IntCounterVec,
    query_records_out: IntCounterVec,
    query_records_failed: IntCounterVec,
    query_rate: GaugeVec,
    query_lag: IntGaugeVec,
    group_lag: IntGaugeVec,
    group_committed: IntGaugeVec,
    topic_records_in: IntCounterVec,
    topic_end_offset: IntGaugeVec,
    topic_size: IntGaugeVec,
    topic_partitions: IntGaugeVec,
    connector_state: IntGaugeVec,
    service_nodes: IntGaugeVec,
    node_role: IntGaugeVec,
    store_free: IntGauge,
    store_reserve: IntGauge,
    store_writable: IntGauge,
    transactions: TransactionMetrics,
    replication: Option<replication::ReplicationMetrics>,
}

/// The transaction coordinator's series: what is open now, and how transactions ended.
struct TransactionMetrics {
    coordinator: std::sync::OnceLock<Arc<TransactionCoordinator>>,
    open: IntGauge,
    oldest_open: IntGauge,
    committed: IntCounter,
    aborted: IntCounter,
    timed_out: IntCounter,
}

impl TransactionMetrics {
    fn new(registry: &Registry) -> Result<Self, MetricsError> {
        let open = IntGauge::new(
            "eddy_transactions_open",
            "Kafka transactions open now (begun and neither committed nor aborted)",
        )?;
        let oldest_open = IntGauge::new(
            "eddy_transaction_oldest_open_seconds",
            "How long the oldest open Kafka transaction has been open; 0 when none is",
        )?;
        let committed = IntCounter::new(
            "eddy_transactions_committed_total",
            "Kafka transactions committed",
        )?;
        let aborted = IntCounter::new(
            "eddy_transactions_aborted_total",
            "Kafka transactions aborted, by their producer or by the coordinator",
        )?;
        let timed_out = IntCounter::new(
            "eddy_transactions_timed_out_total",
            "Kafka transactions the coordinator aborted because they ran past their timeout",
        )?;
        for gauge in [&open, &oldest_open] {
            registry.register(Box::new(gauge.clone()))?;
        }
        for counter in [&committed, &aborted, &timed_out] {
            registry.register(Box::new(counter.clone()))?;
        }
        Ok(TransactionMetrics {
            coordinator: std::sync::OnceLock::new(),
            open,
            oldest_open,
            committed,
            aborted,
            timed_out,
        })
    }

    fn refresh(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let Some(coordinator) = self.coordinator.get() else {
            return;
        };
        let now = eddy_storage::now_ms();
        let open: Vec<i64> = coordinator
            .summaries()
            .iter()
            .filter(|s| s.start_ms >= 0)
            .map(|s| s.start_ms)
            .collect();
        self.open.set(open.len() as i64);
        let oldest = open
            .iter()
            .min()
            .map_or(0, |start| (now - start).max(0) / 1000);
        self.oldest_open.set(oldest);
        let counts = coordinator.counts();
        for (counter, value) in [
            (&self.committed, counts.committed.load(Relaxed)),
            (&self.aborted, counts.aborted.load(Relaxed)),
            (&self.timed_out, counts.timed_out.load(Relaxed)),
        ] {
            counter.inc_by(value.saturating_sub(counter.get()));
        }
    }
}

impl std::fmt::Debug for ServerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerMetrics").finish_non_exhaustive()
    }
}

/// Why the metrics could not be set up: a name or label set clashed.
#[derive(Debug, thiserror::Error)]
#[error("cannot register the server's metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

fn counter(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, MetricsError> {
    let metric = IntCounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

fn gauge(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntGaugeVec, MetricsError> {
    let metric = IntGaugeVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

impl ServerMetrics {
    /// Registers every metric, and the engine's own.
    pub fn new(engine: &Engine) -> Result<Self, MetricsError> {
        let registry = Registry::new();
        for collector in engine.metrics().collectors() {
            registry.register(collector)?;
        }
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "eddy_http_request_duration_seconds",
                "Time to answer an HTTP request, until the response headers (a streamed body goes on after)",
            )
            .buckets(REQUEST_BUCKETS.to_vec()),
            &["method", "route"],
        )?;
        registry.register(Box::new(http_duration.clone()))?;
        let pull_latency = Histogram::with_opts(
            HistogramOpts::new(
                "eddy_pull_query_duration_seconds",
                "Time from a pull query's request to the last row of its answer; the count is the number of pull queries",
            )
            .buckets(REQUEST_BUCKETS.to_vec()),
        )?;
        registry.register(Box::new(pull_latency.clone()))?;
        let push_queries =
            IntGauge::new("eddy_push_queries", "Push queries clients are reading now")?;
        registry.register(Box::new(push_queries.clone()))?;
        let query_rate = GaugeVec::new(
            Opts::new(
                "eddy_query_messages_per_second",
                "Input records a persistent query processed per second over the last minute",
            ),
            &["query"],
        )?;
        registry.register(Box::new(query_rate.clone()))?;
        let store_free = IntGauge::new(
            "eddy_store_free_bytes",
            "Bytes free on the store's filesystem",
        )?;
        let store_reserve = IntGauge::new(
            "eddy_store_reserve_bytes",
            "Bytes the store keeps free; below it, writes are refused",
        )?;
        let store_writable = IntGauge::new(
            "eddy_store_writable",
            "1 when the store accepts writes; 0 while its disk is nearly full or its last write failed",
        )?;
        for gauge in [&store_free, &store_reserve, &store_writable] {
            registry.register(Box::new(gauge.clone()))?;
        }
        let r = &registry;
        Ok(ServerMetrics {
            transactions: TransactionMetrics::new(r)?,
            replication: engine
                .store()
                .replica_status()
                .map(|status| replication::ReplicationMetrics::new(r, status))
                .transpose()?,
            store_free,
            store_reserve,
            store_writable,
            http_requests: counter(
                r,
                "eddy_http_requests_total",
                "HTTP requests answered",
                &["method", "route", "status"],
            )?,
            http_duration,
            pull_latency,
            kafka_fetched_records: counter(
                r,
                "eddy_topic_records_fetched_total",
                "Records sent to Kafka clients by Fetch",
                &["topic"],
            )?,
            connections: gauge(
                r,
                "eddy_connections",
                "Client connections open now, per listener",
                &["listener"],
            )?,
            connections_refused: counter(
                r,
                "eddy_connections_refused_total",
                "Connections closed at once because the listener had --max-connections open",
                &["listener"],
            )?,
            push_queries,
            query_records_in: counter(
                r,
                "eddy_query_records_in_total",
                "Input records a persistent query processed",
                &["query"],
            )?,
            query_records_out: counter(
                r,
                "eddy_query_records_out_total",
                "Records a persistent query wrote to its sink",
                &["query"],
            )?,
            query_records_failed: counter(
                r,
                "eddy_query_records_failed_total",
                "Input records a persistent query could not process (see the processing log)",
                &["query"],
            )?,
            query_rate,
            query_lag: gauge(
                r,
                "eddy_query_lag_records",
                "Records appended to a persistent query's input partition and not yet processed",
                &["query", "topic", "partition"],
            )?,
            group_lag: gauge(
                r,
                "eddy_consumergroup_lag_records",
                "Log end offset minus the group's committed offset, per partition",
                &["group", "topic", "partition"],
            )?,
            group_committed: gauge(
                r,
                "eddy_consumergroup_committed_offset",
                "The offset a consumer group committed, per partition",
                &["group", "topic", "partition"],
            )?,
            topic_records_in: counter(
                r,
                "eddy_topic_records_in_total",
                "Records appended to a topic (its partitions' end offsets summed)",
                &["topic"],
            )?,
            topic_end_offset: gauge(
                r,
                "eddy_topic_end_offset",
                "The offset the next record appended to a partition gets",
                &["topic", "partition"],
            )?,
            topic_size: gauge(
                r,
                "eddy_topic_size_bytes",
                "Bytes a topic's segments hold in the store",
                &["topic"],
            )?,
            topic_partitions: gauge(
                r,
                "eddy_topic_partitions",
                "Partitions of a topic",
                &["topic"],
            )?,
            connector_state: gauge(
                r,
                "eddy_connector_state",
                "1 for a connector's state now (RUNNING, PAUSED, FAILED or UNASSIGNED), one series per state it is in",
                &["connector", "type", "state"],
            )?,
            service_nodes: gauge(
                r,
                "eddy_service_nodes",
                "On a Kafka cluster, the nodes of this node's service it hears of, alive or unresponsive (no status for 5 s)",
                &["state"],
            )?,
            node_role: gauge(
                r,
                "eddy_node_role",
                "On a Kafka cluster, 1 for this node's role in its service now (ACTIVE or STANDBY)",
                &["role"],
            )?,
            registry,
        })
    }

    /// Exports the transaction coordinator's series from now on.
    pub fn watch_transactions(&self, coordinator: Arc<TransactionCoordinator>) {
        let _ = self.transactions.coordinator.set(coordinator);
    }

    /// A limit of `max` connections on the listener named `listener`, shown in `/metrics`.
    pub fn connection_limit(
        &self,
        listener: &'static str,
        max: usize,
    ) -> crate::connections::ConnectionLimit {
        crate::connections::ConnectionLimit::new(listener, max).with_metrics(
            self.connections.with_label_values(&[listener]),
            self.connections_refused.with_label_values(&[listener]),
        )
    }

    /// Reads the per-query, per-topic and per-group series from the engine and the store.
    async fn refresh(&self, engine: &Engine) {
        self.push_queries.set(engine.push_query_count() as i64);
        self.transactions.refresh();
        let disk = engine.store().disk_health();
        self.store_free
            .set(i64::try_from(disk.free_bytes).unwrap_or(i64::MAX));
        self.store_reserve
            .set(i64::try_from(disk.reserve_bytes).unwrap_or(i64::MAX));
        self.store_writable.set(i64::from(disk.writable()));
        if let Some(replication) = &self.replication {
            replication.refresh(Some(engine.store()));
        }
        for vec in [
            &self.query_records_in,
            &self.query_records_out,
            &self.query_records_failed,
            &self.topic_records_in,
        ] {
            vec.reset();
        }
        for vec in [
            &self.query_lag,
            &self.group_lag,
            &self.group_committed,
            &self.topic_end_offset,
            &self.topic_size,
            &self.topic_partitions,
            &self.connector_state,
            &self.service_nodes,
            &self.node_role,
        ] {
            vec.reset();
        }

        for connector in engine.connector_summaries().await {
            self.connector_state
                .with_label_values(&[
                    connector.name.as_str(),
                    connector.kind.name(),
                    connector.state.name(),
                ])
                .set(1);
        }
        self.query_rate.reset();
        let queries = engine.persistent_query_summaries().await;
        for q in &queries {
            let id = [q.id.as_str()];
            self.query_records_in
                .with_label_values(&id)
                .inc_by(q.processed);
            self.query_records_out
                .with_label_values(&id)
                .inc_by(q.emitted);
            self.query_records_failed
                .with_label_values(&id)
                .inc_by(q.failed);
            self.query_rate
                .with_label_values(&id)
                .set(q.messages_per_sec);
            if let Some(offsets) = &q.offsets {
                for t in &offsets.topics {
                    for p in t
                        .partitions
                        .iter()
                        .filter(|p| q.runs(&t.topic, p.partition))
                    {
                        self.query_lag
                            .with_label_values(&[q.id.as_str(), &t.topic, &p.partition.to_string()])
                            .set(p.lag());
                    }
                }
            }
        }
        let store = engine.store();
        for topic in store.list_topics() {
            let Ok(description) = store.describe_topic(&topic) else {
                continue;
            };
            let t = [topic.as_str()];
            self.topic_partitions
                .with_label_values(&t)
                .set(description.partitions.len() as i64);
            let mut appended = 0;
            let mut bytes = 0;
            for p in &description.partitions {
                appended += p.end_offset.max(0) as u64;
                bytes += p.size_bytes;
                self.topic_end_offset
                    .with_label_values(&[topic.as_str(), &p.partition.to_string()])
                    .set(p.end_offset);
            }
            self.topic_records_in.with_label_values(&t).inc_by(appended);
            self.topic_size.with_label_values(&t).set(bytes as i64);
        }
        // Every group, Kafka clients' and queries' alike, by the topics it committed on.
        let groups = match store.list_groups() {
            Ok(groups) => groups,
            Err(e) => {
                tracing::warn!(error = %e, "listing consumer groups for /metrics failed");
                Vec::new()
            }
        };
        for group in groups {
            let Ok(offsets) = GroupOffsets::of_group(store, &group) else {
                continue;
            };
            for t in &offsets.topics {
                for p in &t.partitions {
                    let labels = [group.as_str(), &t.topic, &p.partition.to_string()];
                    self.group_lag.with_label_values(&labels).set(p.lag());
                    self.group_committed
                        .with_label_values(&labels)
                        .set(p.consumer);
                }
            }
        }
    }

    /// The service's series: this node's role and the nodes it hears of, on a cluster.
    async fn refresh_service(&self, engine: &Engine, service: &crate::service::Service) {
        if engine.store().service_member().is_none() {
            return;
        }
        let nodes = service.nodes().await;
        let alive = nodes.iter().filter(|n| n.alive).count();
        self.service_nodes
            .with_label_values(&["alive"])
            .set(alive as i64);
        self.service_nodes
            .with_label_values(&["unresponsive"])
            .set((nodes.len() - alive) as i64);
        let role = if engine.store().is_standby() {
            "STANDBY"
        } else {
            "ACTIVE"
        };
        self.node_role.with_label_values(&[role]).set(1);
    }

    /// The text exposition of every metric.
    async fn render(
        &self,
        engine: &Engine,
        service: &crate::service::Service,
    ) -> Result<String, prometheus::Error> {
        self.refresh(engine).await;
        self.refresh_service(engine, service).await;
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

/// `GET /metrics`.
pub async fn scrape(
    State(metrics): State<Arc<ServerMetrics>>,
    State(engine): State<Arc<Engine>>,
    State(service): State<Arc<crate::service::Service>>,
) -> Response {
    exposition(metrics.render(&engine, &service).await)
}

/// The answer to a scrape: the rendered series, or 500 saying why they could not be encoded.
pub fn exposition(rendered: Result<String, impl std::fmt::Display>) -> Response {
    match rendered {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
            text,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {e}"),
        )
            .into_response(),
    }
}

/// A request method as a label: HTTP's standard methods by name, any other as `other`, since
/// a client may send any token as a method and each would otherwise be a series for good.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    let known = [
        (Method::GET, "GET"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::DELETE, "DELETE"),
        (Method::HEAD, "HEAD"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::PATCH, "PATCH"),
        (Method::CONNECT, "CONNECT"),
        (Method::TRACE, "TRACE"),
    ];
    known
        .into_iter()
        .find(|(m, _)| m == method)
        .map_or("other", |(_, name)| name)
}

/// Counts and times every request by its route pattern (not its path, which would make a
/// series per entity name).
pub async fn track_http(
    State(metrics): State<Arc<ServerMetrics>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let response = next.run(request).await;
    metrics
        .http_requests
        .with_label_values(&[method, &route, response.status().as_str()])
        .inc();
    metrics
        .http_duration
        .with_label_values(&[method, &route])
        .observe(started.elapsed().as_secs_f64());
    response
}
