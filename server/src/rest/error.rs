//! ksqlDB's error responses: a JSON object with `@type`, `error_code` and `message` (and, for a
//! statement, its text and the entities it completed), under the HTTP status the code implies.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use eddy_engine::EngineError;
use serde_json::{Value, json};

/// ksqlDB's error codes, by what they mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorCode {
    /// The request itself is malformed: not JSON, a field missing, not UTF-8.
    BadRequest,
    /// A statement breaks one of ksqlDB's rules; the message says which.
    BadStatement,
    /// A query sent to `/ksql`, which runs statements: queries go to `/query`.
    QueryEndpoint,
    /// A web page from another origin, or a request naming a host this server is not.
    Forbidden,
    /// The caller's ACLs do not allow what the statement does to a topic or the cluster
    /// (ksqlDB's `ERROR_CODE_FORBIDDEN_KAFKA_ACCESS`).
    ForbiddenKafkaAccess,
    /// No such endpoint, command or dashboard.
    NotFound,
    /// The body is larger than the server accepts.
    TooLarge,
    /// The body's content type is one a web page could send from anywhere (`text/plain`).
    UnsupportedMediaType,
    /// The server failed; the cause is in its log.
    ServerError,
    /// The server cannot take the request now (too many connections); try again later.
    Unavailable,
}

impl ErrorCode {
    /// The code as ksqlDB writes it.
    pub(crate) fn code(self) -> u32 {
        match self {
            ErrorCode::BadRequest => 40000,
            ErrorCode::BadStatement => 40001,
            ErrorCode::QueryEndpoint => 40002,
            ErrorCode::Forbidden => 40300,
            ErrorCode::ForbiddenKafkaAccess => 40301,
            ErrorCode::NotFound => 40400,
            ErrorCode::TooLarge => 41300,
            ErrorCode::UnsupportedMediaType => 41500,
            ErrorCode::ServerError => 50000,
            ErrorCode::Unavailable => 50300,
        }
    }

    /// The HTTP status that goes with it.
    pub(crate) fn status(self) -> StatusCode {
        match self {
            ErrorCode::BadRequest | ErrorCode::BadStatement | ErrorCode::QueryEndpoint => {
                StatusCode::BAD_REQUEST
            }
            ErrorCode::Forbidden | ErrorCode::ForbiddenKafkaAccess => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// An error answer in ksqlDB's shape.
#[derive(Debug, Clone)]
pub(crate) struct RestError {
    /// `statement_error` for a statement's failure, else `generic_error`.
    kind: &'static str,
    code: ErrorCode,
    message: String,
    /// Fields added to the object (`statementText`, `entities`, a row's `seq`).
    extra: Value,
}

impl RestError {
    /// A `generic_error`.
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        RestError {
            kind: "generic_error",
            code,
            message: message.into(),
            extra: Value::Null,
        }
    }

    /// A `statement_error`, with `extra` fields such as the statement's text.
    pub(crate) fn statement(code: ErrorCode, message: impl Into<String>, extra: Value) -> Self {
        RestError {
            kind: "statement_error",
            code,
            message: message.into(),
            extra,
        }
    }

    /// A statement the engine failed: the statement's own fault is 40001 with the engine's
    /// message; Eddy's (a fault inside it, or its store's) is 50000, and its cause is logged.
    pub(crate) fn from_engine(error: &EngineError, extra: Value) -> Self {
        if matches!(error, EngineError::Storage(e) if e.is_retriable()) {
            return RestError::statement(ErrorCode::Unavailable, error.to_string(), extra);
        }
        if matches!(error, EngineError::Forbidden(_)) {
            return RestError::statement(ErrorCode::ForbiddenKafkaAccess, error.to_string(), extra);
        }
        let code = if error.is_server_fault() {
            let causes = std::iter::successors(std::error::Error::source(error), |e| e.source())
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(": ");
            tracing::error!(error = %error, cause = %causes, "a request failed inside the server");
            ErrorCode::ServerError
        } else {
            ErrorCode::BadStatement
        };
        RestError::statement(code, error.to_string(), extra)
    }

    /// ksqlDB's answer to a body over the limit.
    pub(crate) fn too_large() -> Self {
        RestError::new(
            ErrorCode::TooLarge,
            "The request body is larger than this server accepts (see --max-request-bytes).",
        )
    }

    /// `extra` fields added to the object.
    pub(crate) fn with(mut self, extra: Value) -> Self {
        self.extra = extra;
        self
    }

    /// The error object, as a streamed answer embeds it.
    pub(crate) fn body(&self) -> Value {
        let mut body =
            json!({"@type": self.kind, "error_code": self.code.code(), "message": self.message});
        if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), &self.extra) {
            body.extend(extra.clone());
        }
        body
    }

    /// Its message.
    pub(crate) fn message(&self) -> &str {
        &self.message
    }
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        (self.code.status(), Json(self.body())).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_engine_fault_is_the_servers_and_a_rule_the_statements() {
        let rule = RestError::from_engine(&EngineError::statement("no such source"), Value::Null);
        assert_eq!(rule.body()["error_code"], 40001);
        assert_eq!(rule.body()["@type"], "statement_error");
        assert_eq!(rule.code.status(), StatusCode::BAD_REQUEST);

        let fault = RestError::from_engine(
            &EngineError::internal_from("cannot save aggregate state", std::io::Error::other("x")),
            json!({"statementText": "CREATE ..."}),
        );
        assert_eq!(fault.body()["error_code"], 50000);
        assert_eq!(fault.body()["statementText"], "CREATE ...");
        assert_eq!(fault.code.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
