//! Connectors that run inside Eddy: PostgreSQL change data capture into the log.
pub mod dead_letter;
pub mod error;
pub mod postgres;

pub use error::{ConnectError, Result};

/// The most records a connector holds in memory at once, whatever its batch size says.
pub const MAX_BATCH_RECORDS: usize = 100_000;

/// A batch size key's value: `default` when unset, else a number from 1 to
/// [`MAX_BATCH_RECORDS`], so memory stays bounded.
pub(crate) fn batch_size(value: Option<&str>, key: &str, default: usize) -> Result<usize> {
    let Some(value) = value else {
        return Ok(default);
    };
    value
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_BATCH_RECORDS).contains(n))
        .ok_or_else(|| {
            ConnectError::Config(format!(
                "'{key}' is '{value}'; expected a number from 1 to {MAX_BATCH_RECORDS}"
            ))
        })
}

/// Makes `topic` in `store` unless it exists (or another writer made it meanwhile).
pub(crate) fn ensure_topic(store: &eddy_storage::Store, topic: &str) -> Result<()> {
    if store.topic_exists(topic) {
        return Ok(());
    }
    match store.create_topic(topic, eddy_storage::TopicConfig::default()) {
        Ok(_) => Ok(()),
        Err(_) if store.topic_exists(topic) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    /// A connector's properties from pairs.
    pub(crate) fn props(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}
