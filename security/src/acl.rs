//! Kafka's ACL model: bindings of a resource pattern (Topic, Group, Cluster or TransactionalId;
//! LITERAL or PREFIXED) to a principal, host, operation and ALLOW or DENY; deny wins, and an
//! operation is allowed only by a binding that grants it (or one Kafka says implies it: Read,
//! Write, Delete or Alter imply Describe, AlterConfigs implies DescribeConfigs). Kept in the
//! store's state, beside the users.

use std::collections::BTreeSet;

use eddy_storage::{Commit, StateOp, Store};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::{Principal, SecurityError};

/// The state namespace ACLs live in.
const NAMESPACE: &str = "__eddy_security/acls";
/// The one cluster resource's name, as Kafka names it.
pub const CLUSTER_NAME: &str = "kafka-cluster";
/// The most bindings kept, so a client cannot grow them without bound.
const MAX_BINDINGS: usize = 100_000;

macro_rules! kafka_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $code:literal => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Kafka's number for it.
            pub fn code(self) -> i8 {
                match self { $($name::$variant => $code),+ }
            }

            /// The value Kafka numbers `code`.
            pub fn from_code(code: i8) -> Option<Self> {
                match code { $($code => Some($name::$variant),)+ _ => None }
            }

            /// Kafka's name for it (`TOPIC`, `PREFIXED`, `READ`, ...).
            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// The value Kafka calls `text` (case-insensitively).
            pub fn from_name(text: &str) -> Option<Self> {
                [$($name::$variant),+].into_iter().find(|v| v.name().eq_ignore_ascii_case(text))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

kafka_enum!(
    /// What an ACL protects.
    ResourceType {
        /// Any type (filters only).
        Any = 1 => "ANY",
        /// A topic.
        Topic = 2 => "TOPIC",
        /// A consumer group.
        Group = 3 => "GROUP",
        /// The cluster.
        Cluster = 4 => "CLUSTER",
        /// A transactional producer id.
        TransactionalId = 5 => "TRANSACTIONAL_ID",
    }
);

kafka_enum!(
    /// How an ACL's resource name matches.
    PatternType {
        /// Any pattern (filters only).
        Any = 1 => "ANY",
        /// Whatever applies to a name (filters only).
        Match = 2 => "MATCH",
        /// The name itself, or `*` for every name.
        Literal = 3 => "LITERAL",
        /// Every name starting with it.
        Prefixed = 4 => "PREFIXED",
    }
);

kafka_enum!(
    /// What an ACL allows or denies.
    Operation {
        /// Any operation (filters only).
        Any = 1 => "ANY",
        /// Every operation.
        All = 2 => "ALL",
        /// Read.
        Read = 3 => "READ",
        /// Write.
        Write = 4 => "WRITE",
        /// Create.
        Create = 5 => "CREATE",
        /// Delete.
        Delete = 6 => "DELETE",
        /// Alter.
        Alter = 7 => "ALTER",
        /// Describe.
        Describe = 8 => "DESCRIBE",
        /// Cluster actions between brokers.
        ClusterAction = 9 => "CLUSTER_ACTION",
        /// Describe configurations.
        DescribeConfigs = 10 => "DESCRIBE_CONFIGS",
        /// Alter configurations.
        AlterConfigs = 11 => "ALTER_CONFIGS",
        /// Idempotent produce.
        IdempotentWrite = 12 => "IDEMPOTENT_WRITE",
    }
);

kafka_enum!(
    /// Whether an ACL allows or denies.
    Permission {
        /// Either (filters only).
        Any = 1 => "ANY",
        /// Deny.
        Deny = 2 => "DENY",
        /// Allow.
        Allow = 3 => "ALLOW",
    }
);

/// One ACL.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AclBinding {
    /// The resource's type.
    pub resource_type: ResourceType,
    /// The resource name, or prefix.
    pub name: String,
    /// LITERAL or PREFIXED.
    pub pattern: PatternType,
    /// `User:name`, or `User:*` for everyone.
    pub principal: String,
    /// The client's host, or `*`.
    pub host: String,
    /// The operation.
    pub operation: Operation,
    /// ALLOW or DENY.
    pub permission: Permission,
}

impl AclBinding {
    /// Why this binding cannot be created, as Kafka refuses it.
    pub fn validate(&self) -> Result<(), String> {
        if matches!(self.resource_type, ResourceType::Any) {
            return Err(
                "an ACL's resource type is TOPIC, GROUP, CLUSTER or TRANSACTIONAL_ID".into(),
            );
        }
        if !matches!(self.pattern, PatternType::Literal | PatternType::Prefixed) {
            return Err("an ACL's pattern type is LITERAL or PREFIXED".into());
        }
        if matches!(self.operation, Operation::Any) || matches!(self.permission, Permission::Any) {
            return Err("an ACL names one operation and ALLOW or DENY".into());
        }
        if self.name.is_empty() {
            return Err("an ACL's resource name is not empty".into());
        }
        if self.pattern == PatternType::Prefixed && self.name == "*" {
            return Err("a PREFIXED ACL cannot use the wildcard name '*'".into());
        }
        if self.resource_type == ResourceType::Cluster && self.name != CLUSTER_NAME {
            return Err(format!(
                "the CLUSTER resource is named {CLUSTER_NAME:?}, not {:?}",
                self.name
            ));
        }
        match self.principal.split_once(':') {
            Some(("User", name)) if !name.is_empty() => {}
            _ => {
                return Err(format!(
                    "{:?} is not a principal; principals are written User:name",
                    self.principal
                ));
            }
        }
        if self.host.is_empty() {
            return Err("an ACL's host is an address or '*'".into());
        }
        Ok(())
    }

    /// Whether this binding's pattern covers `name`.
    fn covers(&self, name: &str) -> bool {
        match self.pattern {
            PatternType::Literal => self.name == name || self.name == "*",
            PatternType::Prefixed => name.starts_with(&self.name),
            _ => false,
        }
    }
}

/// A filter over bindings, as DescribeAcls and DeleteAcls send it: `None` and `ANY` match
/// everything; pattern type `MATCH` matches every binding that applies to the name.
#[derive(Debug, Clone)]
pub struct AclFilter {
    /// The resource type, or ANY.
    pub resource_type: ResourceType,
    /// The resource name, or any.
    pub name: Option<String>,
    /// The pattern type, ANY or MATCH.
    pub pattern: PatternType,
    /// The principal, or any.
    pub principal: Option<String>,
    /// The host, or any.
    pub host: Option<String>,
    /// The operation, or ANY.
    pub operation: Operation,
    /// The permission, or ANY.
    pub permission: Permission,
}

impl AclFilter {
    /// Whether `binding` passes the filter.
    pub fn matches(&self, binding: &AclBinding) -> bool {
        let resource =
            self.resource_type == ResourceType::Any || self.resource_type == binding.resource_type;
        let name = match (&self.name, self.pattern) {
            (None, PatternType::Any | PatternType::Match) => true,
            (None, pattern) => pattern == binding.pattern,
            (Some(name), PatternType::Any) => *name == binding.name,
            (Some(name), PatternType::Match) => binding.covers(name),
            (Some(name), pattern) => pattern == binding.pattern && *name == binding.name,
        };
        let principal = self
            .principal
            .as_ref()
            .is_none_or(|p| *p == binding.principal);
        let host = self.host.as_ref().is_none_or(|h| *h == binding.host);
        let operation = self.operation == Operation::Any || self.operation == binding.operation;
        let permission =
            self.permission == Permission::Any || self.permission == binding.permission;
        resource && name && principal && host && operation && permission
    }
}

/// The ACLs, over the store.
pub struct Acls {
    store: Store,
    bindings: RwLock<BTreeSet<AclBinding>>,
    writes: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Acls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acls")
            .field("bindings", &self.bindings.read().len())
            .finish()
    }
}

/// The ACLs kept in `store`.
fn read_bindings(store: &Store) -> Result<BTreeSet<AclBinding>, SecurityError> {
    let mut bindings = BTreeSet::new();
    for entry in store
        .state_scan_prefix(NAMESPACE, b"")
        .map_err(SecurityError::store)?
    {
        let (key, _) = entry.map_err(SecurityError::store)?;
        let binding: AclBinding = serde_json::from_slice(&key)
            .map_err(|e| SecurityError::Internal(format!("a stored ACL is unreadable: {e}")))?;
        bindings.insert(binding);
    }
    Ok(bindings)
}

impl Acls {
    /// Opens the ACLs kept in `store`.
    pub fn open(store: &Store) -> Result<Acls, SecurityError> {
        let bindings = read_bindings(store)?;
        if !bindings.is_empty() {
            info!(acls = bindings.len(), "ACLs loaded");
        }
        Ok(Acls {
            store: store.clone(),
            bindings: RwLock::new(bindings),
            writes: tokio::sync::Mutex::new(()),
        })
    }

    /// Reads the ACLs from the store again, for a store written elsewhere (a follower of the
    /// replicated log applies the leader's changes); true when they changed.
    pub fn reload(&self) -> Result<bool, SecurityError> {
        let bindings = read_bindings(&self.store)?;
        if *self.bindings.read() == bindings {
            return Ok(false);
        }
        *self.bindings.write() = bindings;
        Ok(true)
    }

    /// The bindings `filter` matches, in order.
    pub fn describe(&self, filter: &AclFilter) -> Vec<AclBinding> {
        self.bindings
            .read()
            .iter()
            .filter(|b| filter.matches(b))
            .cloned()
            .collect()
    }

    /// Adds `bindings` (each already valid); adding one that exists is no change.
    pub async fn add(&self, bindings: Vec<AclBinding>) -> Result<(), SecurityError> {
        let _writing = self.writes.lock().await;
        let new: Vec<AclBinding> = {
            let current = self.bindings.read();
            bindings
                .into_iter()
                .filter(|b| !current.contains(b))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        };
        if self.bindings.read().len() + new.len() > MAX_BINDINGS {
            return Err(SecurityError::InvalidCredential(format!(
                "at most {MAX_BINDINGS} ACLs are kept"
            )));
        }
        let ops = new
            .iter()
            .map(|b| {
                Ok(StateOp::Put {
                    namespace: NAMESPACE.to_string(),
                    key: serde_json::to_vec(b)
                        .map_err(|e| SecurityError::Internal(e.to_string()))?,
                    value: Vec::new(),
                })
            })
            .collect::<Result<Vec<_>, SecurityError>>()?;
        self.commit(ops).await?;
        let mut current = self.bindings.write();
        for binding in new {
            info!(acl = %describe_binding(&binding), "ACL added");
            current.insert(binding);
        }
        Ok(())
    }

    /// Removes every binding `filter` matches; those removed.
    pub async fn remove(&self, filter: &AclFilter) -> Result<Vec<AclBinding>, SecurityError> {
        let _writing = self.writes.lock().await;
        let gone = self.describe(filter);
        let ops = gone
            .iter()
            .map(|b| {
                Ok(StateOp::Delete {
                    namespace: NAMESPACE.to_string(),
                    key: serde_json::to_vec(b)
                        .map_err(|e| SecurityError::Internal(e.to_string()))?,
                })
            })
            .collect::<Result<Vec<_>, SecurityError>>()?;
        self.commit(ops).await?;
        let mut current = self.bindings.write();
        for binding in &gone {
            info!(acl = %describe_binding(binding), "ACL removed");
            current.remove(binding);
        }
        Ok(gone)
    }

    async fn commit(&self, ops: Vec<StateOp>) -> Result<(), SecurityError> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut commit = Commit::new();
        commit.state = ops;
        self.store
            .commit(commit)
            .await
            .map_err(SecurityError::store)?;
        Ok(())
    }

    /// Whether the ACLs let `principal` on `host` do `operation` on the resource: a DENY that
    /// matches refuses; otherwise an ALLOW that grants it (or implies it) allows; with no ACL on
    /// the resource at all, `allow_if_none` decides.
    pub fn allows(
        &self,
        (principal, host): (&Principal, &str),
        operation: Operation,
        (resource_type, name): (ResourceType, &str),
        allow_if_none: bool,
    ) -> bool {
        let principal = principal.to_string();
        let bindings = self.bindings.read();
        let mut on_resource = bindings
            .iter()
            .filter(|b| b.resource_type == resource_type && b.covers(name))
            .peekable();
        if on_resource.peek().is_none() {
            return allow_if_none;
        }
        let applies = |b: &AclBinding| {
            (b.principal == principal || b.principal == "User:*")
                && (b.host == "*" || b.host == host)
        };
        let mut allowed = false;
        for binding in on_resource.filter(|b| applies(b)) {
            match binding.permission {
                Permission::Deny
                    if binding.operation == operation || binding.operation == Operation::All =>
                {
                    return false;
                }
                Permission::Allow if grants(binding.operation, operation) => allowed = true,
                _ => {}
            }
        }
        allowed
    }
}

impl Acls {
    /// Whether some ALLOW binding lets `principal` do `operation` on some resource of the type
    /// (KIP-679: Write on any topic lets a producer be idempotent).
    pub fn grants_somewhere(
        &self,
        principal: &Principal,
        operation: Operation,
        resource_type: ResourceType,
    ) -> bool {
        let principal = principal.to_string();
        self.bindings.read().iter().any(|b| {
            b.resource_type == resource_type
                && b.permission == Permission::Allow
                && (b.principal == principal || b.principal == "User:*")
                && grants(b.operation, operation)
        })
    }
}

/// Whether an ALLOW of `granted` allows `wanted`, with Kafka's implications.
fn grants(granted: Operation, wanted: Operation) -> bool {
    granted == wanted
        || granted == Operation::All
        || (wanted == Operation::Describe
            && matches!(
                granted,
                Operation::Read | Operation::Write | Operation::Delete | Operation::Alter
            ))
        || (wanted == Operation::DescribeConfigs && granted == Operation::AlterConfigs)
}

/// A binding as Kafka's tools print one.
pub fn describe_binding(b: &AclBinding) -> String {
    format!(
        "(principal={}, host={}, operation={}, permissionType={}) on {}:{}:{}",
        b.principal, b.host, b.operation, b.permission, b.resource_type, b.pattern, b.name
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(
        resource: (ResourceType, &str, PatternType),
        principal: &str,
        operation: Operation,
        permission: Permission,
    ) -> AclBinding {
        AclBinding {
            resource_type: resource.0,
            name: resource.1.to_string(),
            pattern: resource.2,
            principal: principal.to_string(),
            host: "*".to_string(),
            operation,
            permission,
        }
    }

    #[tokio::test]
    async fn deny_wins_prefixes_match_and_read_implies_describe() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), eddy_storage::StoreOptions::default()).unwrap();
        let acls = Acls::open(&store).unwrap();
        use {Operation::*, PatternType::*, Permission::*, ResourceType::*};
        acls.add(vec![
            binding((Topic, "orders", Prefixed), "User:alice", Read, Allow),
            binding((Topic, "orders-secret", Literal), "User:alice", All, Deny),
            binding((Topic, "*", Literal), "User:*", Write, Allow),
            binding((Group, "g", Literal), "User:alice", Read, Allow),
        ])
        .await
        .unwrap();
        let alice = Principal::User("alice".into());
        let bob = Principal::User("bob".into());
        let can = |p: &Principal, op, resource| acls.allows((p, "10.0.0.1"), op, resource, false);
        assert!(can(&alice, Read, (Topic, "orders-eu")));
        assert!(can(&alice, Describe, (Topic, "orders-eu")));
        assert!(!can(&alice, Delete, (Topic, "orders-eu")));
        assert!(!can(&alice, Read, (Topic, "orders-secret")));
        assert!(!can(&alice, Write, (Topic, "orders-secret")));
        assert!(can(&bob, Write, (Topic, "anything")));
        assert!(!can(&bob, Read, (Topic, "orders-eu")));
        assert!(can(&alice, Read, (Group, "g")));
        assert!(!can(&alice, Read, (Group, "h")));
        // No ACL on the resource at all: the default decides.
        assert!(acls.allows((&bob, "h"), Read, (TransactionalId, "t"), true));
        assert!(!acls.allows((&bob, "h"), Read, (TransactionalId, "t"), false));
        // Filters and removal.
        let filter = AclFilter {
            resource_type: Topic,
            name: Some("orders-eu".into()),
            pattern: Match,
            principal: None,
            host: None,
            operation: Operation::Any,
            permission: Permission::Any,
        };
        assert_eq!(acls.describe(&filter).len(), 2);
        let removed = acls.remove(&filter).await.unwrap();
        assert_eq!(removed.len(), 2);
        assert!(!can(&bob, Write, (Topic, "anything")));
        drop(acls);
        let acls = Acls::open(&store).unwrap();
        assert_eq!(acls.bindings.read().len(), 2);
    }

    #[test]
    fn invalid_bindings_say_why() {
        use {Operation::*, PatternType::*, Permission::*, ResourceType::*};
        for (b, says) in [
            (
                binding((ResourceType::Any, "t", Literal), "User:a", Read, Allow),
                "resource type",
            ),
            (
                binding((Topic, "t", Match), "User:a", Read, Allow),
                "LITERAL or PREFIXED",
            ),
            (
                binding((Topic, "t", Literal), "User:a", Operation::Any, Allow),
                "one operation",
            ),
            (
                binding((Topic, "*", Prefixed), "User:a", Read, Allow),
                "wildcard",
            ),
            (
                binding((Cluster, "c", Literal), "User:a", Alter, Allow),
                "kafka-cluster",
            ),
            (
                binding((Topic, "t", Literal), "alice", Read, Allow),
                "User:name",
            ),
        ] {
            let err = b.validate().unwrap_err();
            assert!(err.contains(says), "{err}");
        }
    }
}
