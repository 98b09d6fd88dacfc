//! Connectors that run inside Eddy: PostgreSQL change data capture and the outbox into the
//! log, and a PostgreSQL sink out of it, with dead-letter topics.
pub mod dead_letter;
pub mod error;
pub mod postgres;
mod properties;

pub use error::{ConnectError, Result};
pub use properties::MAX_BATCH_RECORDS;
