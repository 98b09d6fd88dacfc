//! What can go wrong in a connector.

/// A connector's failure.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The connector's configuration is wrong: a key missing or a value that does not parse.
    #[error("{0}")]
    Config(String),
    /// The database refused a statement or the connection failed.
    #[error("PostgreSQL: {}", describe_postgres(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// The replication stream failed.
    #[error("PostgreSQL replication: {0}")]
    Replication(String),
    /// A change could not be decoded.
    #[error("cannot decode a change: {0}")]
    Decode(String),
    /// Eddy's log refused the records.
    #[error(transparent)]
    Storage(#[from] eddy_storage::StorageError),
}

/// A connector's result.
pub type Result<T, E = ConnectError> = std::result::Result<T, E>;

/// A PostgreSQL error as the server words it (its SQLSTATE, message and detail), which
/// `tokio-postgres` shows only as "db error".
pub fn describe_postgres(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => {
            let mut text = format!("{} ({})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                text.push_str(": ");
                text.push_str(detail);
            }
            text
        }
        // A connection failure's cause (the TLS handshake's reason, the socket's error) is
        // in its source chain, not its message.
        None => {
            let mut text = error.to_string();
            let mut cause = std::error::Error::source(error);
            while let Some(inner) = cause {
                text.push_str(": ");
                text.push_str(&inner.to_string());
                cause = inner.source();
            }
            text
        }
    }
}
