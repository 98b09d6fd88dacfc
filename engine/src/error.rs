//! Errors from executing statements.

use eddy_sql::ParseError;
use eddy_storage::StorageError;
use thiserror::Error;

/// Why a statement could not be executed. Messages follow ksqlDB's wording, since users search
/// for them.
#[derive(Debug, Error)]
pub enum EngineError {
    /// The text did not parse.
    #[error("{0}")]
    Parse(#[from] ParseError),
    /// The statement is valid SQL but breaks a rule; the message says which.
    #[error("{0}")]
    Statement(String),
    /// The statement is understood but Eddy cannot run it yet.
    #[error("{0} is not supported yet")]
    Unsupported(String),
    /// The log refused an operation.
    #[error("{0}")]
    Storage(#[from] StorageError),
    /// Stored engine state that cannot be read back.
    #[error("the command log is damaged at entry {seq}: {reason}")]
    CorruptCommandLog {
        /// The entry.
        seq: u64,
        /// What failed.
        reason: String,
    },
}

impl EngineError {
    /// A rule violation with ksqlDB's message.
    pub fn statement(message: impl Into<String>) -> Self {
        EngineError::Statement(message.into())
    }
}

/// Result type of the engine.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
