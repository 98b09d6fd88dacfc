//! Eddy's security: one user store (SCRAM credentials, never passwords) behind Kafka's SASL
//! (SCRAM-SHA-256, SCRAM-SHA-512, PLAIN) and HTTP Basic, and TLS for every listener.

pub mod plain;
pub mod scram;
pub mod tls;
pub mod users;

pub use scram::{Credential, Mechanism, ScramServer, Step};
pub use users::UserStore;

/// Who a request comes from, as Kafka names principals (`User:alice`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    /// Nobody authenticated: a listener without authentication.
    Anonymous,
    /// An authenticated user.
    User(String),
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Principal::Anonymous => f.write_str("User:ANONYMOUS"),
            Principal::User(name) => write!(f, "User:{name}"),
        }
    }
}

/// What went wrong in security.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// The client's credentials were wrong (or its user unknown); deliberately says no more.
    #[error(
        "Authentication failed during authentication due to invalid credentials with SASL mechanism {mechanism}"
    )]
    AuthenticationFailed {
        /// The SASL mechanism.
        mechanism: &'static str,
    },
    /// A SASL message that does not follow its mechanism.
    #[error("malformed SASL message: {0}")]
    Malformed(String),
    /// A credential or user name that cannot be stored.
    #[error("{0}")]
    InvalidCredential(String),
    /// Deleting a credential the user does not have.
    #[error("user {user:?} has no {mechanism} credential")]
    NoSuchCredential {
        /// The user.
        user: String,
        /// The mechanism.
        mechanism: &'static str,
    },
    /// A certificate, key or CA file that cannot be used.
    #[error("{0}")]
    Tls(String),
    /// The store failed.
    #[error("the store failed: {0}")]
    Store(String),
    /// A fault in Eddy itself.
    #[error("internal error: {0}")]
    Internal(String),
}

impl SecurityError {
    pub(crate) fn store(e: impl std::fmt::Display) -> Self {
        SecurityError::Store(e.to_string())
    }
}
