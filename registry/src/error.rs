//! The registry's errors, each with the code Confluent's registry answers with.

/// A refused or failed registry request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RegistryError {
    /// Confluent's error code: its first three digits are the HTTP status.
    pub code: u32,
    /// What went wrong, in Confluent's words.
    pub message: String,
}

impl RegistryError {
    fn new(code: u32, message: impl Into<String>) -> Self {
        RegistryError {
            code,
            message: message.into(),
        }
    }

    /// 40401: no such subject.
    pub fn subject_not_found(subject: &str) -> Self {
        Self::new(40401, format!("Subject '{subject}' not found."))
    }

    /// 40402: no such version of a subject.
    pub fn version_not_found(version: &str) -> Self {
        Self::new(40402, format!("Version {version} not found."))
    }

    /// 40403: no such schema (by id, or under a subject).
    pub fn schema_not_found(what: impl std::fmt::Display) -> Self {
        Self::new(40403, format!("Schema {what} not found"))
    }

    /// 40403: a looked-up schema is not one of the subject's.
    pub fn schema_not_registered() -> Self {
        Self::new(40403, "Schema not found")
    }

    /// 40404: the subject was soft-deleted.
    pub fn subject_soft_deleted(subject: &str) -> Self {
        Self::new(
            40404,
            format!(
                "Subject '{subject}' was soft deleted.Set permanent=true to delete permanently"
            ),
        )
    }

    /// 40405: a permanent delete of what was not soft-deleted first.
    pub fn subject_not_soft_deleted(subject: &str) -> Self {
        Self::new(
            40405,
            format!("Subject '{subject}' was not deleted first before being permanently deleted"),
        )
    }

    /// 40407: a permanent delete of a version not soft-deleted first.
    pub fn version_not_soft_deleted(subject: &str, version: i32) -> Self {
        Self::new(
            40407,
            format!(
                "Subject '{subject}' Version {version} was not deleted first before being permanently deleted"
            ),
        )
    }

    /// 40408: the subject has no compatibility level of its own.
    pub fn subject_level_not_configured(subject: &str) -> Self {
        Self::new(
            40408,
            format!("Subject '{subject}' does not have subject-level compatibility configured"),
        )
    }

    /// 40409: the subject has no mode of its own.
    pub fn subject_mode_not_configured(subject: &str) -> Self {
        Self::new(
            40409,
            format!("Subject '{subject}' does not have subject-level mode configured"),
        )
    }

    /// 409: the schema breaks the subject's compatibility level.
    pub fn incompatible(subject: &str, details: &[String]) -> Self {
        Self::new(
            409,
            format!(
                "Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: [{}]",
                details.join(", ")
            ),
        )
    }

    /// 42201: the schema does not parse.
    pub fn invalid_schema(why: impl std::fmt::Display) -> Self {
        Self::new(42201, format!("Invalid schema {why}"))
    }

    /// 42202: a version that is not a number from 1, nor `latest`.
    pub fn invalid_version(version: &str) -> Self {
        Self::new(
            42202,
            format!(
                "The specified version '{version}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""
            ),
        )
    }

    /// 42203: a compatibility level Confluent does not have.
    pub fn invalid_compatibility_level(level: &str) -> Self {
        Self::new(
            42203,
            format!(
                "Invalid compatibility level. Valid values are none, backward, forward, full, backward_transitive, forward_transitive, and full_transitive: {level}"
            ),
        )
    }

    /// 42204: a mode Confluent does not have.
    pub fn invalid_mode(mode: &str) -> Self {
        Self::new(
            42204,
            format!(
                "Invalid mode. Valid values are READWRITE, READONLY, READONLY_OVERRIDE, and IMPORT: {mode}"
            ),
        )
    }

    /// 42205: what the subject's mode does not allow.
    pub fn not_permitted(why: impl Into<String>) -> Self {
        Self::new(42205, why)
    }

    /// 422: a request body the registry cannot read.
    pub fn unprocessable(why: impl std::fmt::Display) -> Self {
        Self::new(422, format!("Unprocessable entity: {why}"))
    }

    /// 50001: the store behind the registry failed.
    pub fn store(why: impl std::fmt::Display) -> Self {
        Self::new(50001, format!("Error in the backend data store - {why}"))
    }

    /// The HTTP status the code stands for.
    pub fn status(&self) -> u16 {
        let mut code = self.code;
        while code >= 1000 {
            code /= 10;
        }
        u16::try_from(code).unwrap_or(500)
    }
}

/// The registry's result type.
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_carry_their_http_status() {
        assert_eq!(RegistryError::subject_not_found("s").status(), 404);
        assert_eq!(RegistryError::incompatible("s", &[]).status(), 409);
        assert_eq!(RegistryError::invalid_schema("x").status(), 422);
        assert_eq!(RegistryError::store("x").status(), 500);
    }
}
