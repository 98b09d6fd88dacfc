//! How much memory request bodies may take at once, across every connection. Each body is
//! bounded by `--max-request-bytes`, but many connections, each with many HTTP/2 streams, could
//! still make the server buffer them all at once; a request reserves its body's size (its
//! `Content-Length`, or the limit when it does not say) before it is read, and waits briefly for
//! room, then gets 503.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use crate::rest::{ErrorCode, RestError};

/// How long a request waits for room before it is refused.
const WAIT_FOR_ROOM: Duration = Duration::from_secs(5);

/// The budget shared by every request.
#[derive(Debug, Clone)]
pub struct RequestMemory {
    budget: Arc<Semaphore>,
    total: usize,
    max_request: usize,
}

impl RequestMemory {
    /// A budget of `total` bytes for bodies of at most `max_request` bytes each.
    pub fn new(total: usize, max_request: usize) -> Self {
        let total = total
            .max(max_request.saturating_mul(4))
            .min(Semaphore::MAX_PERMITS);
        RequestMemory {
            budget: Arc::new(Semaphore::new(total)),
            total,
            max_request,
        }
    }

    /// The bytes a request reserves: what it says its body holds, within the limit; nothing
    /// for a request known to have no body (a GET, an HTTP/2 request that ended with its
    /// headers).
    fn reservation(&self, request: &Request) -> usize {
        use axum::body::HttpBody;
        if request.body().size_hint().exact() == Some(0) {
            return 0;
        }
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        declared.unwrap_or(self.max_request).min(self.max_request)
    }
}

/// Holds a request's reservation until its response is ready (by then its body has been read).
/// `/inserts-stream` reads its body row by row as it streams, so it reserves nothing.
pub async fn reserve(
    State(memory): State<RequestMemory>,
    request: Request,
    next: Next,
) -> Response {
    if request.uri().path() == "/inserts-stream" {
        return next.run(request).await;
    }
    let bytes = memory.reservation(&request);
    if bytes == 0 {
        return next.run(request).await;
    }
    let permits = u32::try_from(bytes).unwrap_or(u32::MAX);
    let acquired = tokio::time::timeout(
        WAIT_FOR_ROOM,
        memory.budget.clone().acquire_many_owned(permits),
    )
    .await;
    let Ok(Ok(_held)) = acquired else {
        tracing::warn!(
            bytes,
            budget = memory.total,
            "refused a request: request bodies in memory already fill the budget"
        );
        return RestError::new(
            ErrorCode::Unavailable,
            "The server is reading as many request bodies as it holds in memory at once; try again later.",
        )
        .into_response();
    };
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(length: Option<&str>, body: &'static str) -> Request {
        let mut builder = Request::builder().uri("/ksql");
        if let Some(length) = length {
            builder = builder.header(header::CONTENT_LENGTH, length);
        }
        // A stream, so the body's size is not known from the body itself.
        let stream = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(body))]);
        let body = if body.is_empty() {
            axum::body::Body::empty()
        } else {
            axum::body::Body::from_stream(stream)
        };
        builder.body(body).unwrap()
    }

    #[test]
    fn a_body_reserves_what_it_declares_within_the_limit() {
        let memory = RequestMemory::new(100, 10);
        assert_eq!(memory.reservation(&request(Some("4"), "abcd")), 4);
        assert_eq!(memory.reservation(&request(Some("400"), "abcd")), 10);
        assert_eq!(memory.reservation(&request(None, "abcd")), 10);
        assert_eq!(memory.reservation(&request(Some("x"), "abcd")), 10);
        assert_eq!(memory.reservation(&request(None, "")), 0);
    }
}
