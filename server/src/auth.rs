//! HTTP Basic authentication against Eddy's user store, for the REST API, the console,
//! `/metrics` and the schema registry, as ksqlDB's `authentication.method=BASIC` and Confluent's
//! registry do it. An authenticated request carries its [`Principal`] in its extensions.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use eddy_security::{Access, Principal};
use tracing::warn;

/// Whose error shape a listener's 401 takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorStyle {
    /// ksqlDB's `{"@type": "generic_error", "error_code": 40100, ...}`.
    Ksql,
    /// Confluent's registry's `{"error_code": 401, ...}`.
    Registry,
}

/// How one HTTP listener authenticates.
#[derive(Debug, Clone)]
pub struct HttpAuth {
    /// The users to check Basic credentials against; `None` lets every request in as
    /// `User:ANONYMOUS`.
    pub access: Option<Access>,
    /// The ACLs statements are checked against, when enforced; each request then carries an
    /// [`eddy_engine::authorize::Caller`].
    pub authorizer: Option<Access>,
    /// The 401 body's shape.
    pub style: ErrorStyle,
}

/// Paths served without credentials, as ksqlDB skips `/healthcheck` (load balancers probe it).
const OPEN_PATHS: [&str; 1] = ["/healthcheck"];

/// The middleware: passes requests with valid Basic credentials (or any, when authentication
/// is off) on with their principal, and answers the rest 401.
pub async fn basic(
    State(auth): State<Arc<HttpAuth>>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(access) = &auth.access else {
        request.extensions_mut().insert(Principal::Anonymous);
        return next.run(request).await;
    };
    if OPEN_PATHS.contains(&request.uri().path()) {
        request.extensions_mut().insert(Principal::Anonymous);
        return next.run(request).await;
    }
    let Some((user, password)) = credentials(&request) else {
        return unauthorized(auth.style);
    };
    let users = access.users.clone();
    let checked_user = user.clone();
    // PBKDF2 takes milliseconds: off the async threads.
    let verified =
        tokio::task::spawn_blocking(move || users.verify_password(&checked_user, &password))
            .await
            .unwrap_or(false);
    if !verified {
        warn!(
            principal = %Principal::User(user),
            path = request.uri().path(),
            "HTTP authentication failed"
        );
        return unauthorized(auth.style);
    }
    admit(&auth, &mut request, Principal::User(user));
    next.run(request).await
}

/// Lets `request` in as `principal`, with the caller statements are checked as.
fn admit(auth: &HttpAuth, request: &mut Request, principal: Principal) {
    if let Some(access) = &auth.authorizer {
        let host = request
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map_or_else(|| "*".to_string(), |c| c.0.ip().to_string());
        request
            .extensions_mut()
            .insert(eddy_engine::authorize::Caller {
                access: access.clone(),
                principal: principal.clone(),
                host,
            });
    }
    request.extensions_mut().insert(principal);
}

/// The user and password of a `Basic` Authorization header.
fn credentials(request: &Request) -> Option<(String, String)> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    (!user.is_empty()).then(|| (user.to_string(), password.to_string()))
}

fn unauthorized(style: ErrorStyle) -> Response {
    let body = match style {
        ErrorStyle::Ksql => serde_json::json!({
            "@type": "generic_error",
            "error_code": 40100,
            "message": "Unauthorized",
        }),
        ErrorStyle::Registry => serde_json::json!({
            "error_code": 401,
            "message": "Unauthorized",
        }),
    };
    let mut response = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"eddy\""),
    );
    response
}
