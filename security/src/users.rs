//! Eddy's one user store, behind Kafka's SASL and HTTP Basic alike: each user's SCRAM
//! credentials (never a password), kept in the store's state so they survive a restart, and
//! never in a topic a Kafka client could read.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eddy_storage::{Commit, StateOp, Store};
use parking_lot::{Mutex, RwLock};
use tracing::info;

use crate::SecurityError;
use crate::scram::{Credential, DEFAULT_ITERATIONS, Mechanism};

/// The state namespace users live in.
const NAMESPACE: &str = "__eddy_security/users";
/// The longest user name accepted.
const MAX_NAME_BYTES: usize = 256;
/// How long a password checked for HTTP Basic or SASL PLAIN is remembered, so a client sending
/// the same credentials with every request does not pay PBKDF2 each time.
const VERIFIED_FOR: Duration = Duration::from_secs(60);
/// The most remembered password checks.
const MAX_VERIFIED: usize = 10_000;

/// One user's credentials, by mechanism.
pub type UserCredentials = BTreeMap<Mechanism, Credential>;

/// The users, over the store.
#[derive(Clone)]
pub struct UserStore {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    users: RwLock<HashMap<String, UserCredentials>>,
    /// Changes go one at a time, log first.
    writes: tokio::sync::Mutex<()>,
    /// Recently verified (user, password digest) pairs; cleared when users change.
    verified: Mutex<HashMap<(String, Vec<u8>), Instant>>,
}

impl std::fmt::Debug for UserStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserStore")
            .field("users", &self.inner.users.read().len())
            .finish()
    }
}

/// The users kept in `store`.
fn read_users(store: &Store) -> Result<HashMap<String, UserCredentials>, SecurityError> {
    let mut users = HashMap::new();
    for entry in store
        .state_scan_prefix(NAMESPACE, b"")
        .map_err(SecurityError::store)?
    {
        let (key, value) = entry.map_err(SecurityError::store)?;
        let name = String::from_utf8(key)
            .map_err(|_| SecurityError::Internal("a stored user name is not UTF-8".into()))?;
        let credentials: UserCredentials = serde_json::from_slice(&value).map_err(|e| {
            SecurityError::Internal(format!("the stored user {name:?} is unreadable: {e}"))
        })?;
        users.insert(name, credentials);
    }
    Ok(users)
}

impl UserStore {
    /// Opens the users kept in `store`.
    pub fn open(store: &Store) -> Result<UserStore, SecurityError> {
        let users = read_users(store)?;
        if !users.is_empty() {
            info!(users = users.len(), "users loaded");
        }
        Ok(UserStore {
            inner: Arc::new(Inner {
                store: store.clone(),
                users: RwLock::new(users),
                writes: tokio::sync::Mutex::new(()),
                verified: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Reads the users from the store again, for a store written elsewhere (a follower of the
    /// replicated log applies the leader's changes); true when they changed.
    pub fn reload(&self) -> Result<bool, SecurityError> {
        let users = read_users(&self.inner.store)?;
        if *self.inner.users.read() == users {
            return Ok(false);
        }
        *self.inner.users.write() = users;
        // A password verified before may since have changed.
        self.inner.verified.lock().clear();
        Ok(true)
    }

    /// Whether any user exists.
    pub fn is_empty(&self) -> bool {
        self.inner.users.read().is_empty()
    }

    /// The user names, sorted, with the mechanisms each has.
    pub fn list(&self) -> Vec<(String, Vec<(Mechanism, u32)>)> {
        let users = self.inner.users.read();
        let mut out: Vec<_> = users
            .iter()
            .map(|(name, credentials)| {
                (
                    name.clone(),
                    credentials
                        .iter()
                        .map(|(m, c)| (*m, c.iterations))
                        .collect(),
                )
            })
            .collect();
        out.sort();
        out
    }

    /// `user`'s credential for `mechanism`.
    pub fn credential(&self, user: &str, mechanism: Mechanism) -> Option<Credential> {
        self.inner.users.read().get(user)?.get(&mechanism).cloned()
    }

    /// Whether `password` is `user`'s, by whichever credential the user has.
    pub fn verify_password(&self, user: &str, password: &str) -> bool {
        let key = (
            user.to_string(),
            ring::digest::digest(&ring::digest::SHA256, password.as_bytes())
                .as_ref()
                .to_vec(),
        );
        if let Some(at) = self.inner.verified.lock().get(&key)
            && at.elapsed() < VERIFIED_FOR
        {
            return true;
        }
        let Some(credentials) = self.inner.users.read().get(user).cloned() else {
            return false;
        };
        let ok = credentials
            .iter()
            .next_back()
            .is_some_and(|(mechanism, c)| c.verifies(*mechanism, password));
        if ok {
            let mut verified = self.inner.verified.lock();
            if verified.len() >= MAX_VERIFIED {
                verified.retain(|_, at| at.elapsed() < VERIFIED_FOR);
                if verified.len() >= MAX_VERIFIED {
                    verified.clear();
                }
            }
            verified.insert(key, Instant::now());
        }
        ok
    }

    /// Adds `user` with `password` under both SCRAM mechanisms, or replaces its password.
    pub async fn set_password(&self, user: &str, password: &str) -> Result<(), SecurityError> {
        if password.is_empty() {
            return Err(SecurityError::InvalidCredential(
                "a password is not empty".into(),
            ));
        }
        let mut credentials = UserCredentials::new();
        for mechanism in Mechanism::ALL {
            credentials.insert(
                mechanism,
                Credential::from_password(mechanism, password, DEFAULT_ITERATIONS)?,
            );
        }
        self.replace(user, Some(credentials)).await
    }

    /// Sets (`Some`) or deletes (`None`) `user`'s credential for `mechanism`, as Kafka's
    /// AlterUserScramCredentials does; a user left with none is removed.
    pub async fn alter(
        &self,
        user: &str,
        mechanism: Mechanism,
        credential: Option<Credential>,
    ) -> Result<(), SecurityError> {
        let _writing = self.inner.writes.lock().await;
        let mut credentials = self
            .inner
            .users
            .read()
            .get(user)
            .cloned()
            .unwrap_or_default();
        match credential {
            Some(c) => {
                credentials.insert(mechanism, c);
            }
            None => {
                if credentials.remove(&mechanism).is_none() {
                    return Err(SecurityError::NoSuchCredential {
                        user: user.to_string(),
                        mechanism: mechanism.name(),
                    });
                }
            }
        }
        let credentials = (!credentials.is_empty()).then_some(credentials);
        self.write(user, credentials).await
    }

    /// Removes `user`; false when there was no such user.
    pub async fn remove(&self, user: &str) -> Result<bool, SecurityError> {
        if !self.inner.users.read().contains_key(user) {
            return Ok(false);
        }
        self.replace(user, None).await?;
        Ok(true)
    }

    async fn replace(
        &self,
        user: &str,
        credentials: Option<UserCredentials>,
    ) -> Result<(), SecurityError> {
        let _writing = self.inner.writes.lock().await;
        self.write(user, credentials).await
    }

    /// Writes the change to the store, then applies it; the caller holds `writes`.
    async fn write(
        &self,
        user: &str,
        credentials: Option<UserCredentials>,
    ) -> Result<(), SecurityError> {
        validate_name(user)?;
        let op = match &credentials {
            Some(c) => StateOp::Put {
                namespace: NAMESPACE.to_string(),
                key: user.as_bytes().to_vec(),
                value: serde_json::to_vec(c).map_err(|e| SecurityError::Internal(e.to_string()))?,
            },
            None => StateOp::Delete {
                namespace: NAMESPACE.to_string(),
                key: user.as_bytes().to_vec(),
            },
        };
        let mut commit = Commit::new();
        commit.state.push(op);
        self.inner
            .store
            .commit(commit)
            .await
            .map_err(SecurityError::store)?;
        {
            let mut users = self.inner.users.write();
            match credentials {
                Some(c) => users.insert(user.to_string(), c),
                None => users.remove(user),
            };
        }
        // A changed or removed password must not stay accepted from memory.
        self.inner.verified.lock().clear();
        info!(%user, "user credentials changed");
        Ok(())
    }
}

/// A user name: not empty, at most 256 bytes, no control characters (they would forge log
/// lines).
pub fn validate_name(user: &str) -> Result<(), SecurityError> {
    if user.is_empty() || user.len() > MAX_NAME_BYTES || user.chars().any(char::is_control) {
        return Err(SecurityError::InvalidCredential(format!(
            "a user name is 1 to {MAX_NAME_BYTES} bytes without control characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &std::path::Path) -> (Store, UserStore) {
        let store = Store::open(dir, eddy_storage::StoreOptions::default()).unwrap();
        let users = UserStore::open(&store).unwrap();
        (store, users)
    }

    #[tokio::test]
    async fn users_survive_a_restart_and_keep_no_password() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, users) = open(dir.path());
            users.set_password("alice", "wonderland").await.unwrap();
            users.set_password("bob", "builder").await.unwrap();
            assert!(users.remove("bob").await.unwrap());
            assert!(!users.remove("bob").await.unwrap());
            let stored = store.state_get(NAMESPACE, b"alice").unwrap().unwrap();
            assert!(!String::from_utf8_lossy(&stored).contains("wonderland"));
            store.close().unwrap();
        }
        let (_store, users) = open(dir.path());
        assert_eq!(
            users.list(),
            vec![(
                "alice".to_string(),
                vec![
                    (Mechanism::Sha256, DEFAULT_ITERATIONS),
                    (Mechanism::Sha512, DEFAULT_ITERATIONS)
                ]
            )]
        );
        assert!(users.verify_password("alice", "wonderland"));
        assert!(!users.verify_password("alice", "Wonderland"));
        assert!(!users.verify_password("bob", "builder"));
    }

    #[tokio::test]
    async fn a_changed_password_is_not_accepted_from_memory() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, users) = open(dir.path());
        users.set_password("alice", "one").await.unwrap();
        assert!(users.verify_password("alice", "one"));
        users.set_password("alice", "two").await.unwrap();
        assert!(!users.verify_password("alice", "one"));
        assert!(users.verify_password("alice", "two"));
        users.alter("alice", Mechanism::Sha512, None).await.unwrap();
        assert!(users.credential("alice", Mechanism::Sha512).is_none());
        assert!(users.verify_password("alice", "two"));
        users.alter("alice", Mechanism::Sha256, None).await.unwrap();
        assert!(users.is_empty());
        assert!(users.alter("alice", Mechanism::Sha256, None).await.is_err());
        assert!(users.set_password("", "x").await.is_err());
        assert!(users.set_password("a\nb", "x").await.is_err());
        assert!(users.set_password("a", "").await.is_err());
    }
}
