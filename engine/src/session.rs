//! Per-client state: property overrides set with `SET` and variables set with `DEFINE`.

use std::collections::HashMap;

/// What a client has set for its own statements.
#[derive(Debug, Clone, Default)]
pub struct Session {
    /// `SET 'name' = 'value'` overrides, such as `auto.offset.reset`.
    pub properties: HashMap<String, String>,
    /// `DEFINE name = 'value'` variables, substituted as `${name}`.
    pub variables: HashMap<String, String>,
}
