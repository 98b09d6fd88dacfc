//! What can go wrong in a connector.

/// A connector's failure.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The connector's configuration is wrong: a key missing or a value that does not parse.
    #[error("{0}")]
    Config(String),
    /// The database refused a statement or the connection failed.
    #[error("PostgreSQL: {0}")]
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
