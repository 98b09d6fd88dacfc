//! Kafka's user-credential APIs over Eddy's user store: AlterUserScramCredentials (KIP-554: the
//! client sends a salted password, never the password) and DescribeUserScramCredentials.

use std::collections::HashMap;

use eddy_security::{Access, Credential, Mechanism, SecurityError};
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::authorize::Caller;
use super::code;
use eddy_security::acl::Operation;

fn text(s: impl Into<String>) -> Option<StrBytes> {
    Some(StrBytes::from_string(s.into()))
}

/// What changing one user's credential amounts to, before it is applied.
enum Change {
    Delete(Mechanism),
    Upsert(Mechanism, Credential),
}

/// Applies the request's deletions and upsertions, each user's independently, as Kafka does;
/// `authorized` is false when the principal may not alter the cluster.
pub(super) async fn alter(
    caller: Caller<'_>,
    request: &AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    let (access, authorized) = (caller.access, caller.may_cluster(Operation::Alter));
    let mut changes: HashMap<String, Result<Vec<Change>, (i16, String)>> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    let names = request
        .deletions
        .iter()
        .map(|d| (d.name.to_string(), d.mechanism, None))
        .chain(request.upsertions.iter().map(|u| {
            (
                u.name.to_string(),
                u.mechanism,
                Some((u.iterations, &u.salt, &u.salted_password)),
            )
        }));
    for (name, kind, upsert) in names {
        let entry = changes.entry(name.clone()).or_insert(Ok(Vec::new()));
        let Ok(list) = entry else { continue };
        let Some(mechanism) = Mechanism::from_kafka_type(kind) else {
            *entry = Err((
                code::UNSUPPORTED_SASL_MECHANISM,
                format!("Unknown SCRAM mechanism {kind}"),
            ));
            continue;
        };
        if !seen.insert((name.clone(), mechanism)) {
            *entry = Err((
                code::DUPLICATE_RESOURCE,
                "A user credential cannot be altered twice in the same request".into(),
            ));
            continue;
        }
        if name.is_empty() {
            *entry = Err((
                code::UNACCEPTABLE_CREDENTIAL,
                "Username must not be empty".into(),
            ));
            continue;
        }
        match upsert {
            None => list.push(Change::Delete(mechanism)),
            Some((iterations, salt, salted)) => {
                match Credential::from_salted_password(
                    mechanism,
                    salted,
                    salt.to_vec(),
                    u32::try_from(iterations).unwrap_or(0),
                ) {
                    Ok(c) => list.push(Change::Upsert(mechanism, c)),
                    Err(e) => *entry = Err((code::UNACCEPTABLE_CREDENTIAL, e.to_string())),
                }
            }
        }
    }
    let mut results = Vec::new();
    let mut names: Vec<_> = changes.into_iter().collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    for (user, planned) in names {
        let outcome = match (access, authorized, planned) {
            (_, false, _) => Err((
                code::CLUSTER_AUTHORIZATION_FAILED,
                "Cluster authorization failed".into(),
            )),
            (None, _, _) => Err((
                code::UNSUPPORTED_SASL_MECHANISM,
                "this listener has no user store".into(),
            )),
            (_, _, Err(e)) => Err(e),
            (Some(access), true, Ok(list)) => apply(access, &user, list).await,
        };
        let (error_code, error_message) = match outcome {
            Ok(()) => (code::NONE, None),
            Err((code, message)) => (code, text(message)),
        };
        results.push(
            AlterUserScramCredentialsResult::default()
                .with_user(StrBytes::from_string(user))
                .with_error_code(error_code)
                .with_error_message(error_message),
        );
    }
    AlterUserScramCredentialsResponse::default().with_results(results)
}

async fn apply(access: &Access, user: &str, changes: Vec<Change>) -> Result<(), (i16, String)> {
    for change in changes {
        let (mechanism, credential) = match change {
            Change::Delete(m) => (m, None),
            Change::Upsert(m, c) => (m, Some(c)),
        };
        access
            .users
            .alter(user, mechanism, credential)
            .await
            .map_err(|e| match e {
                SecurityError::NoSuchCredential { .. } => (code::RESOURCE_NOT_FOUND, e.to_string()),
                SecurityError::InvalidCredential(m) => (code::UNACCEPTABLE_CREDENTIAL, m),
                other => (code::UNKNOWN_SERVER_ERROR, other.to_string()),
            })?;
    }
    Ok(())
}

/// The named users' mechanisms and iterations (all users' when `users` is null); an unknown
/// user gets `RESOURCE_NOT_FOUND`.
pub(super) fn describe(
    caller: Caller<'_>,
    request: &DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    let (access, authorized) = (caller.access, caller.may_cluster(Operation::Describe));
    if !authorized {
        return DescribeUserScramCredentialsResponse::default()
            .with_error_code(code::CLUSTER_AUTHORIZATION_FAILED)
            .with_error_message(text("Cluster authorization failed"));
    }
    let listed = access.map(|a| a.users.list()).unwrap_or_default();
    let wanted: Vec<String> = match &request.users {
        Some(users) => users.iter().map(|u| u.name.to_string()).collect(),
        None => listed.iter().map(|(name, _)| name.clone()).collect(),
    };
    let mut seen = std::collections::HashSet::new();
    let results = wanted
        .into_iter()
        .map(|user| {
            let result = DescribeUserScramCredentialsResult::default()
                .with_user(StrBytes::from_string(user.clone()));
            if !seen.insert(user.clone()) {
                return result
                    .with_error_code(code::DUPLICATE_RESOURCE)
                    .with_error_message(text(format!("Cannot describe SCRAM credentials for the same user twice in a single request: {user}")));
            }
            match listed.iter().find(|(name, _)| *name == user) {
                Some((_, mechanisms)) => result.with_credential_infos(
                    mechanisms
                        .iter()
                        .map(|(m, iterations)| {
                            CredentialInfo::default()
                                .with_mechanism(m.kafka_type())
                                .with_iterations(i32::try_from(*iterations).unwrap_or(i32::MAX))
                        })
                        .collect(),
                ),
                None => result
                    .with_error_code(code::RESOURCE_NOT_FOUND)
                    .with_error_message(text(format!(
                        "Attempt to describe a user credential that does not exist: {user}"
                    ))),
            }
        })
        .collect();
    DescribeUserScramCredentialsResponse::default().with_results(results)
}
