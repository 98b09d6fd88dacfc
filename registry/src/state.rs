//! What the registry knows, rebuilt from its log: schemas by id, subjects' versions, and
//! compatibility levels. Every change is an [`Entry`]: computed from a request, written to the
//! log, then applied, so the state after a restart is the state before it.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::compatibility::Level;
use crate::mode::Mode;
use crate::schema::SchemaText;

/// One change, as the log holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Entry {
    /// A subject's version is (or is still) this schema; `deleted` when soft-deleted.
    Version {
        /// The subject.
        subject: String,
        /// The version, from 1.
        version: i32,
        /// The schema's id.
        id: u32,
        /// The schema.
        schema: SchemaText,
        /// Whether the version is soft-deleted.
        deleted: bool,
    },
    /// A version deleted for good.
    VersionGone {
        /// The subject.
        subject: String,
        /// The version.
        version: i32,
    },
    /// A compatibility level set (`Some`) or removed (`None`), for a subject or globally.
    Config {
        /// The subject, or `None` for the global level.
        subject: Option<String>,
        /// The level, or `None` when removed.
        level: Option<String>,
    },
    /// A mode set (`Some`) or removed (`None`), for a subject or globally.
    Mode {
        /// The subject, or `None` for the global mode.
        subject: Option<String>,
        /// The mode, or `None` when removed.
        mode: Option<String>,
    },
}

/// A subject's version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionEntry {
    /// The schema's id.
    pub id: u32,
    /// Whether it is soft-deleted.
    pub deleted: bool,
}

/// The registry's knowledge.
#[derive(Debug, Default)]
pub struct State {
    /// Every schema by id.
    pub schemas: BTreeMap<u32, SchemaText>,
    /// Each schema's id by its text.
    pub ids: HashMap<SchemaText, u32>,
    /// Each subject's versions.
    pub subjects: BTreeMap<String, BTreeMap<i32, VersionEntry>>,
    /// The global compatibility level.
    pub global: Level,
    /// Subjects' own levels.
    pub levels: HashMap<String, Level>,
    /// The global mode.
    pub global_mode: Mode,
    /// Subjects' own modes.
    pub modes: HashMap<String, Mode>,
}

impl State {
    /// Applies one change.
    pub fn apply(&mut self, entry: &Entry) {
        match entry {
            Entry::Version {
                subject,
                version,
                id,
                schema,
                deleted,
            } => {
                self.schemas.entry(*id).or_insert_with(|| schema.clone());
                self.ids.entry(schema.clone()).or_insert(*id);
                self.subjects.entry(subject.clone()).or_default().insert(
                    *version,
                    VersionEntry {
                        id: *id,
                        deleted: *deleted,
                    },
                );
            }
            Entry::VersionGone { subject, version } => {
                if let Some(versions) = self.subjects.get_mut(subject) {
                    versions.remove(version);
                    if versions.is_empty() {
                        self.subjects.remove(subject);
                    }
                }
            }
            Entry::Config { subject, level } => {
                let level = level.as_deref().and_then(|l| l.parse::<Level>().ok());
                match (subject, level) {
                    (None, Some(level)) => self.global = level,
                    (None, None) => self.global = Level::default(),
                    (Some(s), Some(level)) => {
                        self.levels.insert(s.clone(), level);
                    }
                    (Some(s), None) => {
                        self.levels.remove(s);
                    }
                }
            }
            Entry::Mode { subject, mode } => {
                let mode = mode.as_deref().and_then(|m| m.parse::<Mode>().ok());
                match (subject, mode) {
                    (None, mode) => self.global_mode = mode.unwrap_or_default(),
                    (Some(s), Some(mode)) => {
                        self.modes.insert(s.clone(), mode);
                    }
                    (Some(s), None) => {
                        self.modes.remove(s);
                    }
                }
            }
        }
    }

    /// The id a new schema gets: one past the highest.
    pub fn next_id(&self) -> u32 {
        self.schemas.keys().next_back().map_or(1, |id| id + 1)
    }

    /// The level a subject's new versions are checked at.
    pub fn level(&self, subject: &str) -> Level {
        self.levels.get(subject).copied().unwrap_or(self.global)
    }

    /// The mode a subject's registrations are under.
    pub fn mode(&self, subject: &str) -> Mode {
        self.modes.get(subject).copied().unwrap_or(self.global_mode)
    }

    /// A subject's versions, live ones only unless `deleted`.
    pub fn versions(&self, subject: &str, deleted: bool) -> Vec<(i32, VersionEntry)> {
        self.subjects
            .get(subject)
            .map(|versions| {
                versions
                    .iter()
                    .filter(|(_, v)| deleted || !v.deleted)
                    .map(|(n, v)| (*n, *v))
                    .collect()
            })
            .unwrap_or_default()
    }
}
