//! A request's `streamsProperties` and `sessionVariables` as the engine's session.

use std::collections::HashMap;

use eddy_engine::Session;
use serde_json::Value;

/// A request's properties and variables, and who sent it, as the engine's session.
pub(crate) fn session(
    properties: &HashMap<String, Value>,
    variables: &HashMap<String, Value>,
    caller: &RequestCaller,
) -> Session {
    let mut session = Session::with(
        properties.iter().map(|(k, v)| (k.clone(), scalar_text(v))),
        variables
            .iter()
            .map(|(k, v)| (k.to_uppercase(), scalar_text(v)))
            .collect(),
    );
    session.caller = caller.0.clone();
    session
}

/// The caller the authentication layer attached to a request, when ACLs are enforced.
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestCaller(pub Option<eddy_engine::authorize::Caller>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for RequestCaller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(RequestCaller(
            parts
                .extensions
                .get::<eddy_engine::authorize::Caller>()
                .cloned(),
        ))
    }
}

/// A JSON scalar as the text a property or variable holds.
fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
