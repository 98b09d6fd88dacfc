//! Errors from executing statements and running queries.
//!
//! Three families, told apart by who can fix them: the statement's author (`Parse`,
//! `Statement`, `Unsupported`), the data a query met at run time (`Execution`), and Eddy itself
//! or its store (`Internal`, `Storage`, `CorruptCommandLog`). The server answers the first
//! family with 400 and ksqlDB's code 40001, and the others with 500 and 50000, logging the cause.

use eddy_sql::ParseError;
use eddy_storage::StorageError;
use thiserror::Error;

/// The cause of an execution or internal fault, as a library reported it.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a statement could not be executed or a query stopped. Statement messages follow
/// ksqlDB's wording, since users search for them.
#[derive(Debug, Error)]
pub enum EngineError {
    /// The text did not parse.
    #[error("{0}")]
    Parse(#[from] ParseError),
    /// The statement is valid SQL but breaks a rule; the message says which.
    #[error("{0}")]
    Statement(String),
    /// The caller may not do what the statement needs (Kafka's ACLs on its topics or the
    /// cluster); the message says which operation on which resources, as ksqlDB's does.
    #[error("{0}")]
    Forbidden(String),
    /// The statement is understood but Eddy cannot run it yet.
    #[error("{0} is not supported yet")]
    Unsupported(String),
    /// Evaluating a query over its data failed as a whole (an expression or an Arrow kernel
    /// refused a batch), rather than for one record, which the processing log takes.
    #[error("{context}: {cause}")]
    Execution {
        /// What was being evaluated, as ksqlDB words it ("Error evaluating WHERE").
        context: String,
        /// What failed.
        #[source]
        cause: Cause,
    },
    /// A fault inside Eddy: a broken invariant, or state it wrote and cannot read back.
    #[error("{context}{}", cause.as_ref().map(|c| format!(": {c}")).unwrap_or_default())]
    Internal {
        /// What Eddy was doing.
        context: String,
        /// The library error behind it, if any.
        #[source]
        cause: Option<Cause>,
    },
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

    /// A broken invariant inside Eddy, with nothing behind it.
    pub fn internal(context: impl Into<String>) -> Self {
        EngineError::Internal {
            context: context.into(),
            cause: None,
        }
    }

    /// A fault inside Eddy that a library reported while Eddy was doing `context`.
    pub fn internal_from(
        context: impl Into<String>,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        EngineError::Internal {
            context: context.into(),
            cause: Some(Box::new(cause)),
        }
    }

    /// Evaluating `context` over a query's data failed with `cause`.
    pub fn execution(
        context: impl Into<String>,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        EngineError::Execution {
            context: context.into(),
            cause: Box::new(cause),
        }
    }

    /// Whether the fault is Eddy's or its store's rather than the statement's: the server
    /// answers these with 500 and logs them.
    pub fn is_server_fault(&self) -> bool {
        match self {
            EngineError::Storage(e) => e.is_fault(),
            EngineError::Execution { .. }
            | EngineError::Internal { .. }
            | EngineError::CorruptCommandLog { .. } => true,
            EngineError::Statement(_)
            | EngineError::Parse(_)
            | EngineError::Unsupported(_)
            | EngineError::Forbidden(_) => false,
        }
    }
}

/// Result type of the engine.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_say_what_was_done_and_why_and_keep_their_cause() {
        let io = std::io::Error::other("disk on fire");
        let internal = EngineError::internal_from("cannot save aggregate state", io);
        assert_eq!(
            internal.to_string(),
            "cannot save aggregate state: disk on fire"
        );
        assert!(std::error::Error::source(&internal).is_some());
        assert!(internal.is_server_fault());

        let bare = EngineError::internal("a join stage without its state");
        assert_eq!(bare.to_string(), "a join stage without its state");
        assert!(std::error::Error::source(&bare).is_none());

        let execution =
            EngineError::execution("Error evaluating WHERE", std::io::Error::other("boom"));
        assert_eq!(execution.to_string(), "Error evaluating WHERE: boom");
        assert!(execution.is_server_fault());

        assert!(!EngineError::statement("Duplicate GROUP BY expression").is_server_fault());
        assert!(!EngineError::Unsupported("PARTITION BY".into()).is_server_fault());
    }
}
