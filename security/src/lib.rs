//! Eddy's security: one user store (SCRAM credentials, never passwords) behind Kafka's SASL
//! (SCRAM-SHA-256, SCRAM-SHA-512, PLAIN) and HTTP Basic, and TLS for every listener.

pub mod acl;
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

/// A listener's security protocol, as Kafka names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SecurityProtocol {
    /// Neither TLS nor authentication.
    #[default]
    Plaintext,
    /// TLS, without SASL.
    Ssl,
    /// SASL without TLS.
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    /// Kafka's name for it.
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    /// Whether connections run TLS.
    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Whether clients authenticate with SASL.
    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

impl std::fmt::Display for SecurityProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for SecurityProtocol {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        [
            SecurityProtocol::Plaintext,
            SecurityProtocol::Ssl,
            SecurityProtocol::SaslPlaintext,
            SecurityProtocol::SaslSsl,
        ]
        .into_iter()
        .find(|p| p.name().eq_ignore_ascii_case(text))
        .ok_or_else(|| {
            format!(
                "{text:?} is not a security protocol: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
            )
        })
    }
}

/// Who may do what: the users, the ACLs, and the super users, who may do anything.
#[derive(Debug, Clone)]
pub struct Access {
    /// The user store.
    pub users: UserStore,
    /// The ACLs.
    pub acls: std::sync::Arc<acl::Acls>,
    super_users: std::sync::Arc<std::collections::HashSet<String>>,
    policy: Policy,
}

/// Whether ACLs are enforced, and what a resource without any ACL allows.
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    /// Check ACLs (Kafka's `authorizer.class.name` set); off, everyone may do everything.
    pub enforce: bool,
    /// Allow everyone on a resource no ACL names (Kafka's `allow.everyone.if.no.acl.found`).
    pub allow_if_no_acl: bool,
}

impl Access {
    /// Access over `users` and `acls`, with `super_users` named without `User:`.
    pub fn new(
        users: UserStore,
        acls: acl::Acls,
        super_users: impl IntoIterator<Item = String>,
        policy: Policy,
    ) -> Self {
        Access {
            users,
            acls: std::sync::Arc::new(acls),
            super_users: std::sync::Arc::new(super_users.into_iter().collect()),
            policy,
        }
    }

    /// Whether `principal` is a super user.
    pub fn is_super_user(&self, principal: &Principal) -> bool {
        matches!(principal, Principal::User(name) if self.super_users.contains(name))
    }

    /// Whether ACLs are enforced.
    pub fn enforces(&self) -> bool {
        self.policy.enforce
    }

    /// Whether `principal`, connected from `host`, may do `operation` on the resource.
    pub fn authorize(
        &self,
        (principal, host): (&Principal, &str),
        operation: acl::Operation,
        resource: (acl::ResourceType, &str),
    ) -> bool {
        !self.policy.enforce
            || self.is_super_user(principal)
            || self.acls.allows(
                (principal, host),
                operation,
                resource,
                self.policy.allow_if_no_acl,
            )
    }
}

/// SASL mechanisms Eddy offers, as Kafka names them.
pub const SASL_MECHANISMS: [&str; 3] = ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"];
