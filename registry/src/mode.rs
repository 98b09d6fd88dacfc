//! Confluent's modes: whether a subject (or the whole registry) takes new schemas as usual,
//! takes none, or takes schemas with the ids and versions a migration brings (`IMPORT`).

use std::fmt;
use std::str::FromStr;

use crate::error::RegistryError;

/// What a subject's registrations may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// New schemas get new ids and versions (the default).
    #[default]
    ReadWrite,
    /// No changes.
    ReadOnly,
    /// No changes, including to the mode's subject's own settings.
    ReadOnlyOverride,
    /// Registrations name their ids (and versions), as a migration from another registry
    /// keeps them; compatibility is not checked.
    Import,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::ReadWrite => "READWRITE",
            Mode::ReadOnly => "READONLY",
            Mode::ReadOnlyOverride => "READONLY_OVERRIDE",
            Mode::Import => "IMPORT",
        }
    }

    /// Whether schemas cannot be registered or deleted at all.
    pub fn read_only(self) -> bool {
        matches!(self, Mode::ReadOnly | Mode::ReadOnlyOverride)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Mode {
    type Err = RegistryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_uppercase().as_str() {
            "READWRITE" => Mode::ReadWrite,
            "READONLY" => Mode::ReadOnly,
            "READONLY_OVERRIDE" => Mode::ReadOnlyOverride,
            "IMPORT" => Mode::Import,
            _ => return Err(RegistryError::invalid_mode(s)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_read_as_confluent_writes_them() {
        for mode in [
            Mode::ReadWrite,
            Mode::ReadOnly,
            Mode::ReadOnlyOverride,
            Mode::Import,
        ] {
            assert_eq!(mode.to_string().parse::<Mode>().unwrap(), mode);
        }
        assert_eq!("import".parse::<Mode>().unwrap(), Mode::Import);
        assert_eq!("WRITEONLY".parse::<Mode>().unwrap_err().code, 42204);
    }
}
