//! A request's `streamsProperties` and `sessionVariables` as the engine's session.

use std::collections::HashMap;

use eddy_engine::Session;
use serde_json::Value;

/// A request's properties and variables as the engine's session.
pub(crate) fn session(
    properties: &HashMap<String, Value>,
    variables: &HashMap<String, Value>,
) -> Session {
    Session::with(
        properties.iter().map(|(k, v)| (k.clone(), scalar_text(v))),
        variables
            .iter()
            .map(|(k, v)| (k.to_uppercase(), scalar_text(v)))
            .collect(),
    )
}

/// A JSON scalar as the text a property or variable holds.
fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
