//! SASL PLAIN (RFC 4616): `[authzid] NUL authcid NUL passwd`, checked against the user's SCRAM
//! credential, as Kafka's PLAIN server checks its JAAS users.

use crate::SecurityError;
use crate::users::UserStore;

/// The longest PLAIN message accepted (RFC 4616 allows 255 bytes per field).
const MAX_MESSAGE_BYTES: usize = 1024;

/// The user a PLAIN `message` names, whether or not its password is right (for logging).
pub fn claimed_user(message: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(message.get(..MAX_MESSAGE_BYTES.min(message.len()))?).ok()?;
    let user = text.split('\0').nth(1)?;
    (!user.is_empty()).then(|| user.to_string())
}

/// The user a PLAIN `message` authenticates, or why not.
pub fn authenticate(users: &UserStore, message: &[u8]) -> Result<String, SecurityError> {
    if message.len() > MAX_MESSAGE_BYTES {
        return Err(SecurityError::Malformed(
            "a PLAIN message is at most 1024 bytes".into(),
        ));
    }
    let text = std::str::from_utf8(message)
        .map_err(|_| SecurityError::Malformed("a PLAIN message is UTF-8".into()))?;
    let mut parts = text.split('\0');
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SecurityError::Malformed(
            "a PLAIN message is authzid NUL user NUL password".into(),
        ));
    };
    if user.is_empty() || password.is_empty() {
        return Err(SecurityError::Malformed(
            "a PLAIN message names a user and a password".into(),
        ));
    }
    // As Kafka: an authorization id, if given, must be the user itself.
    if !authzid.is_empty() && authzid != user {
        return Err(SecurityError::Malformed(
            "the PLAIN authorization id must be the user".into(),
        ));
    }
    if users.verify_password(user, password) {
        Ok(user.to_string())
    } else {
        Err(SecurityError::AuthenticationFailed { mechanism: "PLAIN" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Any bytes are a PLAIN message that authenticates nobody, or an error; never a panic.
        #[test]
        fn random_messages_never_panic(
            message in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2000),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let store = eddy_storage::Store::open(dir.path(), eddy_storage::StoreOptions::default()).unwrap();
            let users = UserStore::open(&store).unwrap();
            proptest::prop_assert!(authenticate(&users, &message).is_err());
            let _ = claimed_user(&message);
        }
    }
}
