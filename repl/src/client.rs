//! The shell's HTTP client for ksqlDB's REST API: statements to `/ksql`, queries streamed from
//! `/query-stream`, and `/close-query` to stop them.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

/// Why a request to the server did not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answered at the server's address.
    #[error("Could not reach the server at {url}: {reason}")]
    Unreachable {
        /// The server's base URL.
        url: String,
        /// What the connection attempt ran into.
        reason: String,
    },
    /// The server refused the request with an error body.
    #[error("{message}")]
    Server {
        /// The HTTP status.
        status: u16,
        /// ksqlDB's error code (HTTP status × 100 plus a sub-code), when the body had one.
        code: Option<u64>,
        /// What the server said was wrong.
        message: String,
        /// The statement the error is about, when the server named one.
        statement: Option<String>,
        /// The entities of the statements that ran before the failing one.
        entities: Vec<Value>,
    },
    /// The server answered with something that is not ksqlDB's API.
    #[error("The server at {url} gave an answer this shell does not understand: {reason}")]
    Protocol {
        /// The server's base URL.
        url: String,
        /// What was wrong with the answer.
        reason: String,
    },
    /// The URL given for the server is not an HTTP URL.
    #[error("'{0}' is not a server URL; use the form http://host:port or https://host:port")]
    BadUrl(String),
}

/// What the client sends with each request besides the statement: `SET` properties and
/// `DEFINE` variables of the session.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// Properties set with `SET`, sent as `streamsProperties`.
    pub properties: BTreeMap<String, String>,
    /// Variables set with `DEFINE`, sent as `sessionVariables`.
    pub variables: BTreeMap<String, String>,
}

/// How the shell proves who it is and whom it trusts: HTTP Basic credentials, and CA
/// certificates for an `https://` server beside the system's.
#[derive(Clone, Default)]
pub struct Credentials {
    /// The user name, with `password`, for HTTP Basic.
    pub user: Option<String>,
    /// The password.
    pub password: Option<String>,
    /// A PEM file of CA certificates to trust besides the system's.
    pub ca_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

/// A client of one server.
#[derive(Debug, Clone)]
pub struct Client {
    url: String,
    http: reqwest::Client,
    credentials: Credentials,
}

/// The server's answer to `GET /info`.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// The server's version.
    pub version: String,
    /// `RUNNING` when it serves.
    pub status: String,
}

impl Client {
    /// A client of the server at `url` (`http://host:port`; `host:port` is taken as HTTP).
    pub fn new(url: &str) -> Result<Client, ClientError> {
        Client::with_credentials(url, Credentials::default())
    }

    /// A client of the server at `url` (`http://` or `https://`), sending `credentials`.
    pub fn with_credentials(url: &str, credentials: Credentials) -> Result<Client, ClientError> {
        let url = url.trim().trim_end_matches('/');
        let url = if url.contains("://") {
            url.to_string()
        } else {
            format!("http://{url}")
        };
        let parsed = reqwest::Url::parse(&url).map_err(|_| ClientError::BadUrl(url.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(ClientError::BadUrl(url));
        }
        let failed = |reason: String| ClientError::Protocol {
            url: url.clone(),
            reason,
        };
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(user) = &credentials.user {
            use base64::Engine as _;
            let token = base64::engine::general_purpose::STANDARD.encode(format!(
                "{user}:{}",
                credentials.password.as_deref().unwrap_or_default()
            ));
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Basic {token}"))
                .map_err(|e| failed(e.to_string()))?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .no_proxy()
            .default_headers(headers)
            .use_preconfigured_tls(tls_config(credentials.ca_file.as_deref()).map_err(failed)?)
            .build()
            .map_err(|e| failed(e.to_string()))?;
        Ok(Client {
            url,
            http,
            credentials,
        })
    }

    /// A client of another server with the same credentials (the shell's `SERVER` command).
    pub fn for_server(&self, url: &str) -> Result<Client, ClientError> {
        Client::with_credentials(url, self.credentials.clone())
    }

    /// The server's base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `GET /info`.
    pub async fn info(&self) -> Result<ServerInfo, ClientError> {
        let response = self
            .http
            .get(format!("{}/info", self.url))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let body = self.json_body(response).await?;
        let info = &body["KsqlServerInfo"];
        Ok(ServerInfo {
            version: info["version"].as_str().unwrap_or("unknown").to_string(),
            status: info["serverStatus"]
                .as_str()
                .unwrap_or("UNKNOWN")
                .to_string(),
        })
    }

    /// `POST /ksql`: runs statements and returns their entities.
    pub async fn ksql(
        &self,
        sql: &str,
        context: &RequestContext,
    ) -> Result<Vec<Value>, ClientError> {
        let body = json!({
            "ksql": sql,
            "streamsProperties": context.properties,
            "sessionVariables": context.variables,
        });
        let response = self.post("/ksql", &body, None).await?;
        match self.json_body(response).await? {
            Value::Array(entities) => Ok(entities),
            other => Err(self.protocol(format!("expected an array of entities, got {other}"))),
        }
    }

    /// `POST /query-stream`: starts a query and returns its rows as they come.
    pub async fn query(
        &self,
        sql: &str,
        context: &RequestContext,
    ) -> Result<QueryStream, ClientError> {
        let body = json!({
            "sql": sql,
            "properties": context.properties,
            "sessionVariables": context.variables,
        });
        let response = self
            .post(
                "/query-stream",
                &body,
                Some("application/vnd.ksqlapi.delimited.v1"),
            )
            .await?;
        if !response.status().is_success() {
            return Err(self.error_from(response).await);
        }
        let mut stream = QueryStream {
            response,
            buffered: Vec::new(),
            query_id: None,
            columns: Vec::new(),
            url: self.url.clone(),
        };
        let metadata = match stream.next_line().await? {
            Some(line) => line,
            None => return Err(self.protocol("the query answer ended before its metadata")),
        };
        stream.query_id = metadata["queryId"].as_str().map(str::to_string);
        let names = metadata["columnNames"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let types = metadata["columnTypes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        stream.columns = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                (
                    name.as_str().unwrap_or_default().to_string(),
                    types
                        .get(i)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect();
        Ok(stream)
    }

    /// `POST /query` with a `PRINT`: the topic's lines (its formats, then its records) as
    /// they come; dropping the stream stops the print.
    pub async fn print(
        &self,
        sql: &str,
        context: &RequestContext,
    ) -> Result<QueryStream, ClientError> {
        let body = json!({
            "ksql": sql,
            "streamsProperties": context.properties,
            "sessionVariables": context.variables,
        });
        let response = self.post("/query", &body, None).await?;
        if !response.status().is_success() {
            return Err(self.error_from(response).await);
        }
        Ok(QueryStream {
            response,
            buffered: Vec::new(),
            query_id: None,
            columns: Vec::new(),
            url: self.url.clone(),
        })
    }

    /// `POST /close-query`: stops a push query.
    pub async fn close_query(&self, query_id: &str) -> Result<(), ClientError> {
        let response = self
            .post("/close-query", &json!({"queryId": query_id}), None)
            .await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(self.error_from(response).await)
        }
    }

    async fn post(
        &self,
        path: &str,
        body: &Value,
        accept: Option<&str>,
    ) -> Result<reqwest::Response, ClientError> {
        let mut request = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/vnd.ksql.v1+json")
            .body(body.to_string());
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        request.send().await.map_err(|e| self.unreachable(e))
    }

    async fn json_body(&self, response: reqwest::Response) -> Result<Value, ClientError> {
        if !response.status().is_success() {
            return Err(self.error_from(response).await);
        }
        let bytes = response.bytes().await.map_err(|e| self.unreachable(e))?;
        serde_json::from_slice(&bytes).map_err(|e| self.protocol(e.to_string()))
    }

    async fn error_from(&self, response: reqwest::Response) -> ClientError {
        let status = response.status().as_u16();
        if status == 401 {
            let message = if self.credentials.user.is_some() {
                "Unauthorized: the server refused this user and password"
            } else {
                "Unauthorized: the server asks for a user and password (-u USER, -p PASSWORD)"
            };
            return ClientError::Server {
                status,
                code: Some(40100),
                message: message.to_string(),
                statement: None,
                entities: Vec::new(),
            };
        }
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(e) => return self.unreachable(e),
        };
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(body) if body.get("message").is_some() => ClientError::Server {
                status,
                code: body["error_code"].as_u64(),
                message: body["message"].as_str().unwrap_or_default().to_string(),
                statement: body["statementText"].as_str().map(str::to_string),
                entities: body["entities"].as_array().cloned().unwrap_or_default(),
            },
            _ => ClientError::Server {
                status,
                code: None,
                message: format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes).trim()),
                statement: None,
                entities: Vec::new(),
            },
        }
    }

    fn unreachable(&self, error: reqwest::Error) -> ClientError {
        ClientError::Unreachable {
            url: self.url.clone(),
            reason: root_cause(&error),
        }
    }

    fn protocol(&self, reason: impl Into<String>) -> ClientError {
        ClientError::Protocol {
            url: self.url.clone(),
            reason: reason.into(),
        }
    }
}

/// The innermost error's text, which names the actual failure ("Connection refused") rather
/// than reqwest's wrapper ("error sending request").
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// An item of a query's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryItem {
    /// A row, its values in column order.
    Row(Vec<Value>),
    /// The server stopped the query with an error.
    Error(String),
}

/// A running query's answer, read a row at a time.
#[derive(Debug)]
pub struct QueryStream {
    response: reqwest::Response,
    buffered: Vec<u8>,
    /// The id to close it with; only push queries have one.
    pub query_id: Option<String>,
    /// Column names and types.
    pub columns: Vec<(String, String)>,
    url: String,
}

impl QueryStream {
    /// The next row, or `None` once the server ends the answer.
    pub async fn next(&mut self) -> Result<Option<QueryItem>, ClientError> {
        let Some(line) = self.next_line().await? else {
            return Ok(None);
        };
        Ok(Some(match line {
            Value::Array(values) => QueryItem::Row(values),
            other => QueryItem::Error(
                other["message"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| other.to_string()),
            ),
        }))
    }

    async fn next_line(&mut self) -> Result<Option<Value>, ClientError> {
        let Some(line) = self.next_text_line().await? else {
            return Ok(None);
        };
        serde_json::from_str(&line)
            .map(Some)
            .map_err(|e| ClientError::Protocol {
                url: self.url.clone(),
                reason: format!("a query answer line is not JSON: {e}"),
            })
    }

    /// The next line of a `PRINT`'s answer (blank lines skipped), or `None` at its end.
    pub async fn next_text_line(&mut self) -> Result<Option<String>, ClientError> {
        loop {
            if let Some(end) = self.buffered.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buffered.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let text = String::from_utf8_lossy(&line);
                return Ok(Some(text.trim_end_matches(['\r', '\n']).to_string()));
            }
            match self.response.chunk().await {
                Ok(Some(chunk)) => self.buffered.extend_from_slice(&chunk),
                Ok(None) => {
                    if self.buffered.iter().all(u8::is_ascii_whitespace) {
                        return Ok(None);
                    }
                    self.buffered.push(b'\n');
                }
                Err(e) => {
                    return Err(ClientError::Unreachable {
                        url: self.url.clone(),
                        reason: root_cause(&e),
                    });
                }
            }
        }
    }
}

/// TLS for `https://` servers: rustls on `ring`, trusting the system's roots and `ca_file`'s.
pub fn tls_config(ca_file: Option<&std::path::Path>) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let extra: Vec<CertificateDer<'static>> = match ca_file {
        Some(path) => CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<_, _>>())
            .map_err(|e| format!("cannot read CA certificates from {}: {e}", path.display()))?,
        None => Vec::new(),
    };
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
            .map_err(|e| e.to_string())?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
