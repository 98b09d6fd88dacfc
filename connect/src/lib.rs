//! Connectors that run inside Eddy: PostgreSQL change data capture and the outbox into the
//! log, and a PostgreSQL sink out of it, with dead-letter topics.
pub mod dead_letter;
pub mod error;
pub mod postgres;
mod properties;

pub use error::{ConnectError, Result};
pub use properties::MAX_BATCH_RECORDS;

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
