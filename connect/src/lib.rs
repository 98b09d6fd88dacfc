//! Connectors that run inside Eddy: PostgreSQL change data capture into the log.
pub mod error;
pub mod postgres;

pub use error::{ConnectError, Result};
