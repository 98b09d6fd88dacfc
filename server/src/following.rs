//! What a node of the replicated log serves on its HTTP port while it follows: `/healthcheck`,
//! `/metrics` (the replicated log's series) and `/api/replication` itself, and every other
//! request forwarded to the leader's REST API, its answer streamed back, and a WebSocket
//! (`/ws/query`) joined to one the leader accepts; when the leader cannot be reached, a 503
//! naming it. Every answer closes its connection once done, so no client stays on a follower
//! that since became the leader.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use eddy_storage::ReplicaStatus;
use serde_json::{Value, json};
use tracing::debug;

use crate::rest::{ErrorCode, RestError};

/// How a follower reaches the leader's REST API.
#[derive(Clone)]
pub struct Forwarding {
    /// The client requests are forwarded with.
    pub client: reqwest::Client,
    /// The client WebSocket upgrades are passed on with: HTTP/1.1 alone, where an upgrade is
    /// a plain request (over HTTP/2 it would be another one).
    pub upgrades: reqwest::Client,
    /// The largest request body forwarded (the REST API's own limit).
    pub max_request_bytes: usize,
}

#[derive(Clone)]
struct Following {
    status: ReplicaStatus,
    forwarding: Option<Forwarding>,
}

/// The follower's routes; requests for the rest of the REST API go to the leader through
/// `forwarding`, or are refused with a 503 naming it without.
pub fn router(status: ReplicaStatus, forwarding: Option<Forwarding>) -> Router {
    Router::new()
        .route("/healthcheck", get(healthcheck))
        .route("/metrics", get(metrics))
        .route("/api/replication", get(replication))
        .fallback(elsewhere)
        .with_state(Following { status, forwarding })
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
async fn healthcheck(State(Following { status, .. }): State<Following>) -> Json<Value> {
    let (leader, url) = leader(&status);
    // A node whose Raft stopped for good follows nothing any more (the server is stopping).
    let fault = status.fault();
    Json(json!({
        "isHealthy": fault.is_none(),
        "details": {
            "replication": {
                "isHealthy": fault.is_none(),
                "fault": fault,
                "role": "FOLLOWER",
                "node": status.id(),
                "leader": leader,
                "leaderUrl": url,
            },
        },
        "serverState": "FOLLOWING",
    }))
}

async fn metrics(State(Following { status, .. }): State<Following>) -> Response {
    crate::metrics::exposition(crate::metrics::following(&status))
}

/// The group as a follower sees it: who leads, in which term, and itself.
async fn replication(State(Following { status, .. }): State<Following>) -> Json<Value> {
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

/// Headers that belong to one connection, not to the request or answer passed on.
fn hop_by_hop(name: &HeaderName) -> bool {
    [
        header::CONNECTION,
        header::HOST,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::CONTENT_LENGTH,
        header::PROXY_AUTHORIZATION,
    ]
    .contains(name)
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    headers
        .iter()
        .filter(|(name, _)| !hop_by_hop(name))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

/// Sends `request` to the leader's REST API at `base` and streams its answer back.
async fn forward(
    forwarding: &Forwarding,
    base: &str,
    request: Request,
) -> Result<Response, String> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let Ok(body) = axum::body::to_bytes(body, forwarding.max_request_bytes).await else {
        // Over the limit (or cut off): refused here as the leader would refuse it.
        return Ok(RestError::too_large().into_response());
    };
    let answer = forwarding
        .client
        .request(
            parts.method,
            format!("{}{path}", base.trim_end_matches('/')),
        )
        .headers(end_to_end(&parts.headers))
        .body(body)
        .send()
        .await
        .map_err(|e| format!("the leader did not answer: {e}"))?;
    passed_on(answer)
}

/// The leader's `answer`, streamed back to the client.
fn passed_on(answer: reqwest::Response) -> Result<Response, String> {
    let mut response = Response::builder().status(answer.status());
    if let Some(headers) = response.headers_mut() {
        *headers = end_to_end(answer.headers());
    }
    // Streamed, so a push query's rows reach the client as the leader sends them.
    let chunks = futures::stream::unfold(Some(answer), |answer| async move {
        let mut answer = answer?;
        match answer.chunk().await {
            Ok(Some(chunk)) => Some((Ok(chunk), Some(answer))),
            Ok(None) => None,
            Err(e) => Some((Err(e), None)),
        }
    });
    response
        .body(Body::from_stream(chunks))
        .map_err(|e| format!("the leader's answer could not be passed on: {e}"))
}

/// Asks the leader at `base` for the upgrade `request` asks for (a WebSocket) and, once the
/// leader switched protocols, tells the client so and joins the two connections byte for byte
/// until either side closes. The leader answers the handshake itself (its accept key is the
/// client's key's), so the client speaks to it through this node. An upgrade the leader
/// refuses is passed back as its answer.
async fn tunnel(
    forwarding: &Forwarding,
    base: &str,
    mut request: Request,
) -> Result<Response, String> {
    let client_side = hyper::upgrade::on(&mut request);
    let (parts, _) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let upgrade_headers = |headers: &mut HeaderMap, from: &HeaderMap| {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(protocol) = from.get(header::UPGRADE) {
            headers.insert(header::UPGRADE, protocol.clone());
        }
    };
    let mut headers = end_to_end(&parts.headers);
    upgrade_headers(&mut headers, &parts.headers);
    let answer = forwarding
        .upgrades
        .request(
            parts.method,
            format!("{}{path}", base.trim_end_matches('/')),
        )
        .headers(headers)
        .send()
        .await
        .map_err(|e| format!("the leader did not answer: {e}"))?;
    if answer.status() != StatusCode::SWITCHING_PROTOCOLS {
        return passed_on(answer);
    }
    let mut response = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    if let Some(headers) = response.headers_mut() {
        *headers = end_to_end(answer.headers());
        upgrade_headers(headers, answer.headers());
    }
    let mut leader_side = answer
        .upgrade()
        .await
        .map_err(|e| format!("the leader's connection could not be taken over: {e}"))?;
    tokio::spawn(async move {
        // Resolves once the 101 below reached the client.
        let joined = match client_side.await {
            Ok(client) => {
                let mut client = hyper_util::rt::TokioIo::new(client);
                tokio::io::copy_bidirectional(&mut client, &mut leader_side)
                    .await
                    .map(|_| ())
            }
            Err(e) => Err(std::io::Error::other(e)),
        };
        if let Err(error) = joined {
            debug!(%error, "a WebSocket passed on to the leader ended");
        }
    });
    response
        .body(Body::empty())
        .map_err(|e| format!("the leader's answer could not be passed on: {e}"))
}

/// Every other request: forwarded to the leader, or 503 naming it and where to reach it.
async fn elsewhere(State(following): State<Following>, request: Request) -> Response {
    let status = following.status;
    let (leader, url) = leader(&status);
    let upgrade = request.headers().contains_key(header::UPGRADE);
    let mut reason = None;
    if let (Some(url), Some(forwarding)) = (&url, &following.forwarding) {
        let passed = if upgrade {
            tunnel(forwarding, url, request).await
        } else {
            forward(forwarding, url, request).await
        };
        match passed {
            Ok(response) => return response,
            Err(error) => {
                debug!(%error, leader = url, "a request could not be forwarded to the leader");
                reason = Some(error);
            }
        }
    }
    let message = match (leader, url) {
        (Some(id), Some(url)) => format!(
            "This node ({}) follows the replicated log; node {id} leads it and serves clients at {url}.{}",
            status.id(),
            reason.map_or(String::new(), |r| format!(
                " Forwarding the request there failed: {r}."
            ))
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
    // A connection switched to the leader's WebSocket closes when the WebSocket does.
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        return response;
    }
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
