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
