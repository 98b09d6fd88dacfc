//! The HTTP server: every route of ksqlDB's REST API, the console and `/metrics`, with the
//! body limit and the request metrics around them.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use crate::browser::BrowserPolicy;
use crate::connections::ConnectionLimit;
use crate::request_memory::{self, RequestMemory};
pub use crate::rest::AppState;
use crate::rest::{ErrorCode, RestError};
use crate::{browser, console, ksql, metrics, streaming};

/// How large request bodies may be, each and all together.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// The largest body accepted (`--max-request-bytes`); larger ones get 413.
    pub max_request_bytes: usize,
    /// The most bytes of bodies held in memory at once, across every connection
    /// (`--request-memory-bytes`; at least four bodies of the largest size).
    pub in_memory_bytes: usize,
}

impl BodyLimits {
    /// A budget of request bodies in memory by these limits.
    pub fn memory(&self) -> RequestMemory {
        RequestMemory::new(self.in_memory_bytes, self.max_request_bytes)
    }

    /// Bodies of at most `max_request_bytes`, 256 MiB of them in memory at once.
    pub fn new(max_request_bytes: usize) -> Self {
        BodyLimits {
            max_request_bytes,
            in_memory_bytes: DEFAULT_REQUEST_MEMORY_BYTES,
        }
    }
}

/// The default bound on request bodies held in memory at once.
pub const DEFAULT_REQUEST_MEMORY_BYTES: usize = 256 << 20;

/// The HTTP routes, with the body limits, serving browsers as `browser` allows.
pub fn router(state: AppState, bodies: BodyLimits, browser: BrowserPolicy) -> Router {
    let memory = bodies.memory();
    router_sharing(state, bodies, browser, memory)
}

/// [`router`], its request bodies counted in `memory`, a budget other listeners share.
pub fn router_sharing(
    state: AppState,
    bodies: BodyLimits,
    browser: BrowserPolicy,
    memory: RequestMemory,
) -> Router {
    let max_request_bytes = bodies.max_request_bytes;
    let server_metrics = state.metrics.clone();
    let cors = browser.cors_origins().map(|origins| {
        let origins: Vec<HeaderValue> = origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([header::CONTENT_TYPE, header::ACCEPT, header::AUTHORIZATION])
    });
    let cors = cors.or_else(|| {
        browser
            .any_origin()
            .then(|| CorsLayer::permissive().allow_credentials(false))
    });
    let routes = Router::new()
        .route("/ksql", post(ksql::ksql))
        .route("/query", post(streaming::query))
        .route("/query-stream", post(streaming::query_stream))
        .route("/close-query", post(streaming::close_query))
        .route("/ws/query", get(streaming::ws_query))
        .route("/inserts-stream", post(streaming::inserts_stream))
        .route("/info", get(ksql::info))
        .route("/clusterStatus", get(ksql::cluster_status))
        .route("/healthcheck", get(ksql::healthcheck))
        .route("/status", get(ksql::statuses))
        .route("/status/{kind}/{entity}/{action}", get(ksql::status))
        .route("/metrics", get(metrics::scrape))
        .route("/", get(console::index))
        .route("/console/{file}", get(console::file))
        .route("/api/topics", get(console::topics))
        .route("/api/replication", get(console::replication))
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
            memory,
            request_memory::reserve,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(browser),
            browser::guard,
        ));
    // CORS answers preflights before the guard sees them, and marks allowed answers.
    let routes = match cors {
        Some(cors) => routes.layer(cors),
        None => routes,
    };
    routes.layer(axum::middleware::from_fn_with_state(
        server_metrics,
        metrics::track_http,
    ))
}

/// How long an HTTP/1 client may take to send a request's headers, counted from when the
/// connection is ready for the next request, so an idle keep-alive connection closes after it.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How often an HTTP/2 connection is pinged, and how long its peer has to answer, so a vanished
/// client's connection (and its push queries) close.
const H2_KEEP_ALIVE: (Duration, Duration) = (Duration::from_secs(30), Duration::from_secs(20));
/// The streams one HTTP/2 connection may have open at once. hyper's default of 200, each with a
/// body of up to --max-request-bytes, let one connection hold 2 GB; 32 still allows a dashboard's
/// panels to stream side by side.
const H2_MAX_STREAMS: u32 = 32;

/// Serves `router` on `listener` until the task is dropped, its connections closing with it
/// (so that on a replicated log no client's keep-alive connection stays on a node that no
/// longer leads, answered by its closed store), at most `connections` at once, with
/// Nagle's algorithm off: a streamed query answer goes out in small writes (a header, then
/// rows), and with Nagle each write after the first waited for the client's delayed ACK, about
/// 40 ms.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    connections: ConnectionLimit,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> std::io::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .enable_connect_protocol()
        .keep_alive_interval(H2_KEEP_ALIVE.0)
        .keep_alive_timeout(H2_KEEP_ALIVE.1)
        .max_concurrent_streams(H2_MAX_STREAMS);
    let builder = Arc::new(builder);
    let (_serving, stopped) = tokio::sync::watch::channel(());
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, most likely: wait for some to close.
                tracing::warn!(error = %e, "HTTP listener accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(admitted) = connections.admit() else {
            // A TLS client could not read a plaintext answer.
            if tls.is_none() {
                tokio::spawn(refuse_busy(tcp));
            }
            continue;
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot turn Nagle's algorithm off");
        }
        // Each request carries its client's address, as axum's ConnectInfo (ACL hosts).
        let service = TowerToHyperService::new(tower::ServiceExt::map_request(
            router.clone(),
            move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                request
            },
        ));
        let builder = builder.clone();
        let tls = tls.clone();
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let serving = async {
                match tls {
                    Some(acceptor) => match eddy_security::tls::accept(&acceptor, tcp).await {
                        Ok(stream) => {
                            builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                .await
                        }
                        Err(e) => Err(e.into()),
                    },
                    None => {
                        builder
                            .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                            .await
                    }
                }
            };
            tokio::select! {
                served = serving => if let Err(e) = served {
                    tracing::debug!(%peer, error = %e, "HTTP connection closed");
                },
                _ = stopped.changed() => {}
            }
            drop(admitted);
        });
    }
}

/// Answers a connection the listener has no room for with 503 in ksqlDB's shape, and closes it.
async fn refuse_busy(mut tcp: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = RestError::new(
        ErrorCode::Unavailable,
        "The server has as many connections open as --max-connections allows; try again later.",
    )
    .body()
    .to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n{body}",
        body.len()
    );
    // Closing with the request unread would reset the connection, and the client could lose
    // the answer: so answer, close the sending side, and read what the client sent, briefly.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        tcp.write_all(response.as_bytes()).await?;
        tcp.shutdown().await?;
        let mut sink = [0u8; 4096];
        while tcp.read(&mut sink).await? > 0 {}
        std::io::Result::Ok(())
    })
    .await;
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
