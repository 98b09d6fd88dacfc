//! What a web page may ask of Eddy. A browser sends requests for any page the user visits, so
//! without these checks any site could read and change Eddy's data through the user's browser:
//!
//! - **Origin**: a request carrying `Origin` (every cross-origin `fetch`, form post and
//!   WebSocket from a browser does) is served only from Eddy's own origin or one listed in
//!   `--http-allowed-origins`, which also get CORS headers so their pages can read answers.
//! - **Host**: on a loopback listener, the `Host` must be a loopback name or an IP address, so a
//!   site whose name is re-pointed at 127.0.0.1 (DNS rebinding) is not served as if it were
//!   Eddy; `--http-allowed-hosts` names others, or `*` for any.
//! - **Content type**: a body sent as `text/plain` or `multipart/form-data` is refused on
//!   endpoints that change state. An HTML form can post those types without `Origin` in older
//!   browsers, and `text/plain` can carry JSON. Form-encoded bodies stay accepted, as `curl -d`
//!   sends them: a form percent-encodes the quotes and braces JSON needs.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::rest::{ErrorCode, RestError};

/// Which hosts and origins a listener serves browsers from.
#[derive(Debug, Clone, Default)]
pub struct BrowserPolicy {
    /// Origins served besides the listener's own, lowercased; `*` serves any.
    allowed_origins: Vec<String>,
    /// Host names served besides loopback names and IP addresses, lowercased; `None` serves any.
    allowed_hosts: Option<Vec<String>>,
}

impl BrowserPolicy {
    /// The policy of a listener on `listen`: Host names are checked when it listens on loopback
    /// only, or when `allowed_hosts` names any (`*` turns the check off).
    pub fn new(listen: SocketAddr, allowed_hosts: &[String], allowed_origins: &[String]) -> Self {
        let lower = |items: &[String]| -> Vec<String> {
            items
                .iter()
                .map(|i| i.trim().trim_end_matches('/').to_ascii_lowercase())
                .filter(|i| !i.is_empty())
                .collect()
        };
        let hosts = lower(allowed_hosts);
        let any_host = hosts.iter().any(|h| h == "*");
        let unchecked = hosts.is_empty() && !listen.ip().is_loopback();
        let allowed_hosts = (!any_host && !unchecked).then_some(hosts);
        BrowserPolicy {
            allowed_origins: lower(allowed_origins),
            allowed_hosts,
        }
    }

    /// The origins listed for CORS, unless every origin is served.
    pub fn cors_origins(&self) -> Option<&[String]> {
        (!self.allowed_origins.is_empty() && !self.allowed_origins.iter().any(|o| o == "*"))
            .then_some(self.allowed_origins.as_slice())
    }

    /// Whether every origin is served (`--http-allowed-origins '*'`).
    pub fn any_origin(&self) -> bool {
        self.allowed_origins.iter().any(|o| o == "*")
    }

    /// Why a request with these headers and method is refused, if it is.
    fn refusal(
        &self,
        method: &Method,
        host: Option<&str>,
        headers: &HeaderMap,
    ) -> Option<RestError> {
        if let Some(allowed) = &self.allowed_hosts {
            let name = host.map(host_name).unwrap_or_default();
            if !host_is_local(&name) && !allowed.contains(&name) {
                return Some(RestError::new(
                    ErrorCode::Forbidden,
                    format!(
                        "Host '{name}' is not a name this server answers to: it listens on a loopback address, where only loopback names and IP addresses are served (start it with --http-allowed-hosts {name} to serve that name too)."
                    ),
                ));
            }
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("").to_ascii_lowercase();
            let same_origin =
                host.is_some_and(|h| origin_authority(&origin) == Some(&*h.to_ascii_lowercase()));
            if !same_origin && !self.any_origin() && !self.allowed_origins.contains(&origin) {
                return Some(RestError::new(
                    ErrorCode::Forbidden,
                    format!(
                        "Requests from the web origin '{origin}' are not served: only this server's own pages and the origins in --http-allowed-origins may use it from a browser."
                    ),
                ));
            }
        }
        let changes_state = matches!(*method, Method::POST | Method::PUT | Method::DELETE);
        if changes_state && let Some(kind) = headers.get(header::CONTENT_TYPE) {
            let essence = kind
                .to_str()
                .unwrap_or("")
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if essence == "text/plain" || essence == "multipart/form-data" {
                return Some(RestError::new(
                    ErrorCode::UnsupportedMediaType,
                    format!(
                        "A request body sent as {essence} is not accepted: send it as application/json or application/vnd.ksql.v1+json."
                    ),
                ));
            }
        }
        None
    }
}

/// The name in a `Host` value, without its port or an IPv6 address's brackets, lowercased.
fn host_name(host: &str) -> String {
    let host = host.trim().to_ascii_lowercase();
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default().to_string();
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name.to_string(),
        _ => host,
    }
}

/// Whether a host name is one no DNS answer can re-point: an IP address or a loopback name.
fn host_is_local(name: &str) -> bool {
    name.parse::<IpAddr>().is_ok() || name == "localhost" || name.ends_with(".localhost")
}

/// The `host[:port]` of an origin such as `http://localhost:8088`.
fn origin_authority(origin: &str) -> Option<&str> {
    origin.split_once("://").map(|(_, authority)| authority)
}

/// Refuses what the policy does not allow, in ksqlDB's error shape.
pub async fn guard(
    State(policy): State<Arc<BrowserPolicy>>,
    request: Request,
    next: Next,
) -> Response {
    // HTTP/2 carries the host in the URI's authority instead of a Host header.
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| request.uri().authority().map(|a| a.as_str().to_string()));
    match policy.refusal(request.method(), host.as_deref(), request.headers()) {
        Some(refused) => {
            tracing::warn!(
                method = %request.method(),
                path = request.uri().path(),
                reason = refused.message(),
                "refused a request a web page could have sent"
            );
            refused.into_response()
        }
        None => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn loopback() -> BrowserPolicy {
        BrowserPolicy::new("127.0.0.1:8088".parse().unwrap(), &[], &[])
    }

    #[test]
    fn a_rebound_name_is_refused_on_a_loopback_listener() {
        let policy = loopback();
        let none = HeaderMap::new();
        for ok in [
            "127.0.0.1:8088",
            "localhost:8088",
            "[::1]:8088",
            "app.localhost",
            "10.0.0.1",
        ] {
            assert!(
                policy.refusal(&Method::GET, Some(ok), &none).is_none(),
                "{ok}"
            );
        }
        let refused = policy
            .refusal(&Method::GET, Some("evil.example:8088"), &none)
            .unwrap();
        assert!(
            refused.message().contains("evil.example"),
            "{}",
            refused.message()
        );
        let listed = BrowserPolicy::new(
            "127.0.0.1:8088".parse().unwrap(),
            &["Eddy.Internal".into()],
            &[],
        );
        assert!(
            listed
                .refusal(&Method::GET, Some("eddy.internal:8088"), &none)
                .is_none()
        );
        let open = BrowserPolicy::new("0.0.0.0:8088".parse().unwrap(), &[], &[]);
        assert!(
            open.refusal(&Method::GET, Some("eddy.internal:8088"), &none)
                .is_none()
        );
    }

    #[test]
    fn only_the_servers_own_origin_and_listed_ones_are_served() {
        let policy = loopback();
        let host = Some("localhost:8088");
        let own = headers(&[(header::ORIGIN, "http://localhost:8088")]);
        assert!(policy.refusal(&Method::POST, host, &own).is_none());
        let foreign = headers(&[(header::ORIGIN, "https://evil.example")]);
        assert!(policy.refusal(&Method::GET, host, &foreign).is_some());
        let opaque = headers(&[(header::ORIGIN, "null")]);
        assert!(policy.refusal(&Method::GET, host, &opaque).is_some());
        let listed = BrowserPolicy::new(
            "127.0.0.1:8088".parse().unwrap(),
            &[],
            &["https://dash.example/".into()],
        );
        let from_listed = headers(&[(header::ORIGIN, "https://dash.example")]);
        assert!(listed.refusal(&Method::POST, host, &from_listed).is_none());
        assert_eq!(listed.cors_origins().unwrap(), ["https://dash.example"]);
    }

    #[test]
    fn bodies_a_form_could_send_are_refused_where_state_changes() {
        let policy = loopback();
        let host = Some("localhost:8088");
        let plain = headers(&[(header::CONTENT_TYPE, "text/plain;charset=UTF-8")]);
        let refused = policy.refusal(&Method::POST, host, &plain).unwrap();
        assert_eq!(refused.body()["error_code"], 41500);
        let multipart = headers(&[(header::CONTENT_TYPE, "multipart/form-data; boundary=x")]);
        assert!(policy.refusal(&Method::PUT, host, &multipart).is_some());
        let form = headers(&[(header::CONTENT_TYPE, "application/x-www-form-urlencoded")]);
        assert!(policy.refusal(&Method::POST, host, &form).is_none());
        assert!(policy.refusal(&Method::GET, host, &plain).is_none());
    }
}
