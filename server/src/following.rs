//! What a node of the replicated log serves on its HTTP port while it follows: `/healthcheck`,
//! `/metrics` (the replicated log's series) and `/api/replication`, and to every other request
//! a 503 naming the leader and its REST API, so a client or a proxy goes there. Every answer
//! closes its connection, so no client stays on a follower that since became the leader.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use eddy_storage::ReplicaStatus;
use serde_json::{Value, json};

use crate::rest::{ErrorCode, RestError};

/// The follower's routes.
pub fn router(status: ReplicaStatus) -> Router {
    Router::new()
        .route("/healthcheck", get(healthcheck))
        .route("/metrics", get(metrics))
        .route("/api/replication", get(replication))
        .fallback(elsewhere)
        .with_state(status)
        .layer(axum::middleware::map_response(close_connection))
}

/// Who leads, and where its REST API is, if this node heard.
fn leader(status: &ReplicaStatus) -> (Option<u64>, Option<String>) {
    let leader = status.leadership().leader;
    let url = leader.and_then(|id| {
        crate::addresses::directory(status)
            .remove(&id)
            .and_then(|a| a.http)
    });
    (leader, url)
}

/// A follower is healthy: it holds the log and takes over when the leader goes. The details
/// say it follows, and whom.
async fn healthcheck(State(status): State<ReplicaStatus>) -> Json<Value> {
    let (leader, url) = leader(&status);
    Json(json!({
        "isHealthy": true,
        "details": {
            "replication": {
                "isHealthy": true,
                "role": "FOLLOWER",
                "node": status.id(),
                "leader": leader,
                "leaderUrl": url,
            },
        },
        "serverState": "FOLLOWING",
    }))
}

async fn metrics(State(status): State<ReplicaStatus>) -> Response {
    crate::metrics::exposition(crate::metrics::following(&status))
}

/// The group as a follower sees it: who leads, in which term, and itself.
async fn replication(State(status): State<ReplicaStatus>) -> Json<Value> {
    let leadership = status.leadership();
    let counts = status.counts();
    Json(json!({
        "replicated": true,
        "term": leadership.term,
        "leader": leadership.leader,
        "node": status.id(),
        "role": "FOLLOWER",
        "leaderChanges": counts.leader_changes,
    }))
}

/// Every other request: 503, naming the leader and where to reach it.
async fn elsewhere(State(status): State<ReplicaStatus>) -> Response {
    let (leader, url) = leader(&status);
    let message = match (leader, url) {
        (Some(id), Some(url)) => format!(
            "This node ({}) follows the replicated log; node {id} leads it and serves clients at {url}.",
            status.id()
        ),
        (Some(id), None) => format!(
            "This node ({}) follows the replicated log; node {id} leads it and serves clients.",
            status.id()
        ),
        (None, _) => format!(
            "This node ({}) follows the replicated log, which has no leader now; try again shortly.",
            status.id()
        ),
    };
    let mut response = RestError::new(ErrorCode::Unavailable, message).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

async fn close_connection(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
