//! The HTTP server: every route of ksqlDB's REST API, the console and `/metrics`, with the
//! body limit and the request metrics around them.

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

pub use crate::rest::AppState;
use crate::rest::{ErrorCode, RestError};
use crate::{console, ksql, metrics, streaming};

/// The HTTP routes, accepting bodies up to `max_request_bytes`.
pub fn router(state: AppState, max_request_bytes: usize) -> Router {
    let server_metrics = state.metrics.clone();
    Router::new()
        .route("/ksql", post(ksql::ksql))
        .route("/query", post(streaming::query))
        .route("/query-stream", post(streaming::query_stream))
        .route("/close-query", post(streaming::close_query))
        .route("/ws/query", get(streaming::ws_query))
        .route("/inserts-stream", post(streaming::inserts_stream))
        .route("/info", get(ksql::info))
        .route("/healthcheck", get(ksql::healthcheck))
        .route("/status", get(ksql::statuses))
        .route("/status/{kind}/{entity}/{action}", get(ksql::status))
        .route("/metrics", get(metrics::scrape))
        .route("/", get(console::index))
        .route("/console/{file}", get(console::file))
        .route("/api/topics", get(console::topics))
        .route("/api/dashboards", get(console::list))
        .route(
            "/api/dashboards/{id}",
            get(console::get).put(console::put).delete(console::delete),
        )
        .fallback(not_found)
        .with_state(state)
        .layer(axum::middleware::map_response(too_large_as_ksqldb_error))
        .layer(axum::extract::DefaultBodyLimit::max(max_request_bytes))
        .layer(axum::middleware::from_fn_with_state(
            server_metrics,
            metrics::track_http,
        ))
}

/// Serves `router` on `listener` until the task is dropped, with Nagle's algorithm off: a
/// streamed query answer goes out in small writes (a header, then rows), and with Nagle each
/// write after the first waited for the client's delayed ACK, about 40 ms.
pub async fn serve(listener: tokio::net::TcpListener, router: Router) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot turn Nagle's algorithm off");
        }
    });
    axum::serve(listener, router).await
}

/// A body over the limit is refused by the extractor with a plain-text 413; clients expect
/// ksqlDB's error shape.
async fn too_large_as_ksqldb_error(response: Response) -> Response {
    if response.status() != StatusCode::PAYLOAD_TOO_LARGE {
        return response;
    }
    RestError::too_large().into_response()
}

async fn not_found() -> Response {
    RestError::new(ErrorCode::NotFound, "Not found: no such endpoint").into_response()
}
