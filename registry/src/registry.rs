//! The registry: requests checked against its state, changes written to its log topic and then
//! applied, one at a time.

use bytes::Bytes;
use eddy_storage::{CleanupPolicy, Record, Store, TopicConfig};
use parking_lot::RwLock;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::compatibility::{Level, check};
use crate::error::{RegistryError, Result};
use crate::mode::Mode;
use crate::schema::{Parsed, Reference, SchemaText, SchemaType, parse};
use crate::state::{Entry, State, VersionEntry};

/// The internal compacted topic the registry keeps its schemas and levels in on the embedded
/// log, as Confluent's keeps `_schemas`; Kafka clients may read it, only Eddy writes it. On a
/// Kafka cluster the service's own topic holds them, `_confluent-ksql-<service id>_eddy-schemas`
/// (an Eddy broker keeps `__eddy_schemas` for its own registry).
pub const SCHEMAS_TOPIC: &str = "__eddy_schemas";

/// The name of the registry's topic among a service's own topics on a cluster.
const SERVICE_SCHEMAS_TOPIC: &str = "eddy-schemas";

/// How a request names a version: a number from 1, or `latest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSpec {
    /// The highest live version.
    Latest,
    /// This one.
    Number(i32),
}

impl VersionSpec {
    /// Reads `latest`, `-1` (Confluent's other name for it) or a number from 1; else 42202.
    pub fn parse(text: &str) -> Result<Self> {
        if text.eq_ignore_ascii_case("latest") || text == "-1" {
            return Ok(VersionSpec::Latest);
        }
        match text.parse::<i32>() {
            Ok(n) if n >= 1 => Ok(VersionSpec::Number(n)),
            _ => Err(RegistryError::invalid_version(text)),
        }
    }
}

/// Where an imported schema goes: the id and version it had in the registry it comes from;
/// unset, a new id (or the one the schema has) and the next version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Placement {
    /// The schema's id.
    pub id: Option<u32>,
    /// The subject's version.
    pub version: Option<i32>,
}

/// A schema a request sends: its text, type and references.
#[derive(Debug, Clone)]
pub struct SchemaRequest {
    /// The schema's text.
    pub schema: String,
    /// Its type.
    pub schema_type: SchemaType,
    /// The schemas it references.
    pub references: Vec<Reference>,
}

/// A subject's version as lookups answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectVersion {
    /// The subject.
    pub subject: String,
    /// The version.
    pub version: i32,
    /// The schema's id.
    pub id: u32,
    /// The schema.
    pub schema: SchemaText,
}

/// Confluent's schema registry, kept in Eddy's log.
///
/// The state is the log's entries applied in order, up to `applied`. One node writes the log
/// (the active node on a cluster; the others forward their writes to it, as Confluent's
/// registries forward to their leader), and every node follows it: each change first catches
/// up, so a node that just took over assigns no id its predecessor already gave.
pub struct SchemaRegistry {
    store: Store,
    /// The log's topic (one partition).
    topic: String,
    /// Held by a change from its checks until it is applied, so changes go one at a time.
    writes: Mutex<()>,
    /// Read without waiting (the formats' decoders look schemas up on their hot path);
    /// written only while holding `applied`, in the log's order.
    state: RwLock<State>,
    /// The offset of the log's next entry to apply.
    applied: Mutex<i64>,
}

/// How long catching up waits for a cluster to send entries its log is known to hold.
const CATCH_UP_AT_MOST: std::time::Duration = std::time::Duration::from_secs(30);

impl SchemaRegistry {
    /// Opens the registry over `store`: creates its topic the first time, and reads back
    /// everything it holds.
    pub fn open(store: &Store) -> Result<Self> {
        let topic = store
            .service_topic(SERVICE_SCHEMAS_TOPIC)
            .unwrap_or_else(|| SCHEMAS_TOPIC.to_string());
        if !store.topic_exists(&topic) {
            let config = TopicConfig {
                cleanup_policy: CleanupPolicy::Compact,
                ..TopicConfig::with_partitions(1)
            };
            store
                .create_topic(&topic, config)
                .map_err(RegistryError::store)?;
        }
        let start = store
            .log_start_offset(&topic, 0)
            .map_err(RegistryError::store)?;
        let mut registry = SchemaRegistry {
            store: store.clone(),
            topic,
            writes: Mutex::new(()),
            state: RwLock::new(State::default()),
            applied: Mutex::new(start),
        };
        let mut applied = start;
        let end = registry.end()?;
        let deadline = std::time::Instant::now() + CATCH_UP_AT_MOST;
        // At startup nothing else runs on this thread: waiting for a cluster's fetch here
        // is waiting for the server to be ready.
        while !registry.apply_until(&mut applied, end)? {
            registry.check_deadline(deadline, applied, end)?;
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        *registry.applied.get_mut() = applied;
        let state = registry.state.read();
        info!(
            schemas = state.schemas.len(),
            subjects = state.subjects.len(),
            next_offset = applied,
            "schema registry loaded"
        );
        drop(state);
        Ok(registry)
    }

    /// Where the log ends now, past its last committed entry.
    fn end(&self) -> Result<i64> {
        self.store
            .last_stable_offset(&self.topic, 0)
            .map_err(RegistryError::store)
    }

    /// Fails once `deadline` passed with the log's entries up to `end` not all here.
    fn check_deadline(&self, deadline: std::time::Instant, applied: i64, end: i64) -> Result<()> {
        if std::time::Instant::now() < deadline {
            return Ok(());
        }
        Err(RegistryError::store(format!(
            "the registry's topic {} holds entries up to offset {end}, and none past {applied} came within {}s",
            self.topic,
            CATCH_UP_AT_MOST.as_secs()
        )))
    }

    /// Applies the log's entries from `applied` towards `end` without waiting; whether it got
    /// there (a read that brings nothing means a cluster's fetch is still on its way).
    fn apply_until(&self, applied: &mut i64, end: i64) -> Result<bool> {
        while *applied < end {
            if !self.apply_fetched(applied)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Applies what one read of the log from `applied` brings, without waiting; whether it
    /// moved `applied` on (transaction markers move it without an entry).
    fn apply_fetched(&self, applied: &mut i64) -> Result<bool> {
        let fetched = match self.store.read_records(&self.topic, 0, *applied, 1 << 20) {
            Err(eddy_storage::StorageError::OffsetOutOfRange { log_start, .. }) => {
                *applied = log_start;
                return Ok(true);
            }
            other => other.map_err(RegistryError::store)?,
        };
        if fetched.next_offset <= *applied {
            return Ok(false);
        }
        let mut state = self.state.write();
        for record in &fetched.records {
            match decode(&record.record) {
                Some(entry) => state.apply(&entry),
                None => warn!(
                    offset = record.offset,
                    "skipping a record the registry cannot read"
                ),
            }
        }
        *applied = fetched.next_offset;
        Ok(true)
    }

    /// Applies what other nodes wrote to the log since this one last looked, up to where it
    /// ends now, waiting for a cluster to send it. Every change does this first; a node
    /// that does not write follows the log by calling it.
    pub async fn catch_up(&self) -> Result<()> {
        let mut applied = self.applied.lock().await;
        let end = self.end()?;
        let deadline = std::time::Instant::now() + CATCH_UP_AT_MOST;
        while !self.apply_until(&mut applied, end)? {
            self.check_deadline(deadline, *applied, end)?;
            let _ = self
                .store
                .wait_for_data(
                    &self.topic,
                    0,
                    *applied,
                    std::time::Duration::from_millis(100),
                )
                .await;
        }
        Ok(())
    }

    /// Applies what the log holds past `applied` without waiting, unless another caller is
    /// catching up already: how a decoder that meets an unknown schema id looks again.
    fn catch_up_now(&self) {
        if let Ok(mut applied) = self.applied.try_lock() {
            let _ = self.apply_fetched(&mut applied);
        }
    }

    /// What `look` finds in the state, looking again once the log was read past what is
    /// applied when it finds nothing: a lookup without waiting that still sees what another
    /// node registered since the last catch-up, when the log already holds it.
    fn looked_up<T>(&self, look: impl Fn(&State) -> Result<Option<T>>) -> Result<Option<T>> {
        if let Some(found) = look(&self.state.read())? {
            return Ok(Some(found));
        }
        self.catch_up_now();
        look(&self.state.read())
    }

    /// Takes the right to change the registry, once it is caught up with the log.
    async fn writing(&self) -> Result<tokio::sync::MutexGuard<'_, ()>> {
        let writing = self.writes.lock().await;
        self.catch_up().await?;
        Ok(writing)
    }

    /// Writes `entries` to the log, then applies them; the caller holds `writes`.
    async fn commit(&self, entries: Vec<Entry>) -> Result<()> {
        let now = eddy_storage::now_ms();
        let records: Vec<Record> = entries.iter().map(|e| encode(e, now)).collect();
        let written = self
            .store
            .append(&self.topic, 0, records)
            .await
            .map_err(RegistryError::store)?;
        let mut applied = self.applied.lock().await;
        if *applied == written.base_offset {
            let mut state = self.state.write();
            for entry in &entries {
                state.apply(entry);
            }
            *applied = written.last_offset + 1;
            return Ok(());
        }
        // Another writer's entries came first: they are applied before these, in the log's
        // order.
        drop(applied);
        self.catch_up().await
    }

    /// Parses a request's schema, with the schemas it references.
    fn parse(state: &State, request: &SchemaRequest) -> Result<(SchemaText, Parsed)> {
        let mut referenced = Vec::with_capacity(request.references.len());
        for reference in &request.references {
            let text = state
                .subjects
                .get(&reference.subject)
                .and_then(|versions| versions.get(&reference.version))
                .and_then(|v| state.schemas.get(&v.id))
                .ok_or_else(|| {
                    RegistryError::invalid_schema(format!(
                        "reference {} (subject {}, version {}) is not registered",
                        reference.name, reference.subject, reference.version
                    ))
                })?;
            referenced.push((reference.name.clone(), text.schema.clone()));
        }
        let (normalized, parsed) = parse(request.schema_type, &request.schema, &referenced)?;
        Ok((
            SchemaText {
                schema_type: request.schema_type,
                schema: normalized,
                references: request.references.clone(),
            },
            parsed,
        ))
    }

    /// The parsed schemas of `versions` (a subject's, oldest first).
    fn parsed(state: &State, versions: &[(i32, VersionEntry)]) -> Result<Vec<(i32, Parsed)>> {
        versions
            .iter()
            .filter_map(|(n, v)| state.schemas.get(&v.id).map(|s| (*n, s)))
            .map(|(n, text)| {
                let request = SchemaRequest {
                    schema: text.schema.clone(),
                    schema_type: text.schema_type,
                    references: text.references.clone(),
                };
                Self::parse(state, &request).map(|(_, parsed)| (n, parsed))
            })
            .collect()
    }

    /// The parsed schemas of the subject's live versions its level checks a new one against
    /// (only those are parsed: a subject with many versions at BACKWARD parses one).
    fn checked_against(state: &State, subject: &str) -> Result<Vec<(i32, Parsed)>> {
        let live = state.versions(subject, false);
        Self::parsed(state, state.level(subject).against(&live))
    }

    /// Registers `request` under `subject`: the id it has if it is already a live version of
    /// the subject (or of any subject), else a new one, once it is compatible with the
    /// subject's earlier versions at the subject's level.
    pub async fn register(&self, subject: &str, request: &SchemaRequest) -> Result<u32> {
        self.register_at(subject, request, Placement::default())
            .await
    }

    /// Registers `request` under `subject`, at the id and version `at` names when the
    /// subject is in `IMPORT` mode (compatibility is not checked then, as a migration keeps
    /// what the registry it comes from held), else as [`Self::register`] does.
    pub async fn register_at(
        &self,
        subject: &str,
        request: &SchemaRequest,
        at: Placement,
    ) -> Result<u32> {
        let _writing = self.writing().await?;
        let (id, version, entry) = {
            let state = self.state.read();
            let importing = at.id.is_some() || at.version.is_some();
            match state.mode(subject) {
                mode if mode.read_only() => return Err(read_only(subject)),
                Mode::Import if !importing => {
                    return Err(RegistryError::not_permitted(format!(
                        "Subject {subject} is not in read-write mode"
                    )));
                }
                Mode::ReadWrite if importing => {
                    return Err(RegistryError::not_permitted(format!(
                        "Subject {subject} is not in import mode"
                    )));
                }
                _ => {}
            }
            let (text, parsed) = Self::parse(&state, request)?;
            // A schema the subject already has answers its id there, as Confluent looks a
            // schema up under its subject first (imports may give one text several ids).
            if let Some(id) = state
                .versions(subject, false)
                .iter()
                .map(|(_, v)| v.id)
                .find(|id| state.schemas.get(id) == Some(&text))
                && at.id.is_none_or(|wanted| wanted == id)
            {
                return Ok(id);
            }
            let id = if importing {
                imported_id(&state, &text, at.id)?
            } else {
                let earlier = Self::checked_against(&state, subject)?;
                let broken = check(state.level(subject), &parsed, &earlier);
                if !broken.is_empty() {
                    return Err(RegistryError::incompatible(subject, &broken));
                }
                state
                    .ids
                    .get(&text)
                    .copied()
                    .unwrap_or_else(|| state.next_id())
            };
            let last = state
                .subjects
                .get(subject)
                .and_then(|v| v.keys().next_back().copied());
            let version = match at.version {
                Some(v)
                    if state
                        .subjects
                        .get(subject)
                        .is_some_and(|s| s.contains_key(&v)) =>
                {
                    return Err(RegistryError::not_permitted(format!(
                        "Subject {subject} already has a version {v} with another schema"
                    )));
                }
                Some(v) => v,
                None => last.map_or(1, |last| last + 1),
            };
            let entry = Entry::Version {
                subject: subject.to_string(),
                version,
                id,
                schema: text,
                deleted: false,
            };
            (id, version, entry)
        };
        self.commit(vec![entry]).await?;
        info!(subject, version, id, "schema registered");
        Ok(id)
    }

    /// The version of `subject` whose schema is `request` (soft-deleted ones too when asked).
    pub async fn lookup(
        &self,
        subject: &str,
        request: &SchemaRequest,
        deleted: bool,
    ) -> Result<SubjectVersion> {
        let state = self.state.read();
        let versions = state.versions(subject, deleted);
        if versions.is_empty() {
            return Err(RegistryError::subject_not_found(subject));
        }
        let (text, _) = Self::parse(&state, request)?;
        let id = state
            .ids
            .get(&text)
            .copied()
            .ok_or_else(RegistryError::schema_not_registered)?;
        versions
            .iter()
            .rev()
            .find(|(_, v)| v.id == id)
            .map(|(n, _)| SubjectVersion {
                subject: subject.to_string(),
                version: *n,
                id,
                schema: text.clone(),
            })
            .ok_or_else(RegistryError::schema_not_registered)
    }

    /// The schema with this id.
    pub async fn schema(&self, id: u32) -> Result<SchemaText> {
        self.schema_by_id(id)
            .ok_or_else(|| RegistryError::schema_not_found(id))
    }

    /// The schema with this id, without waiting: how decoders find a record's writer schema.
    pub fn schema_by_id(&self, id: u32) -> Option<SchemaText> {
        self.looked_up(|state| Ok(state.schemas.get(&id).cloned()))
            .ok()
            .flatten()
    }

    /// The schema with this id, parsed with the schemas it references, without waiting: how
    /// the Protobuf format finds a record's message types. `None` when no schema has the id.
    pub fn parsed_by_id(&self, id: u32) -> Result<Option<Parsed>> {
        self.looked_up(|state| {
            let Some(text) = state.schemas.get(&id) else {
                return Ok(None);
            };
            let request = SchemaRequest {
                schema: text.schema.clone(),
                schema_type: text.schema_type,
                references: text.references.clone(),
            };
            Self::parse(state, &request).map(|(_, parsed)| Some(parsed))
        })
    }

    /// The id `request`'s schema is registered with (under any subject), without waiting;
    /// `None` when it never was.
    pub fn registered_id(&self, request: &SchemaRequest) -> Result<Option<u32>> {
        self.looked_up(|state| {
            let (text, _) = Self::parse(state, request)?;
            Ok(state.ids.get(&text).copied())
        })
    }

    /// The subjects (and versions) a schema is registered under.
    pub async fn usages(&self, id: u32) -> Result<Vec<(String, i32)>> {
        let state = self.state.read();
        if !state.schemas.contains_key(&id) {
            return Err(RegistryError::schema_not_found(id));
        }
        Ok(state
            .subjects
            .iter()
            .flat_map(|(s, versions)| {
                versions
                    .iter()
                    .filter(|(_, v)| v.id == id && !v.deleted)
                    .map(move |(n, _)| (s.clone(), *n))
            })
            .collect())
    }

    /// Every subject with a live version (or a soft-deleted one, when asked), sorted.
    pub async fn subjects(&self, deleted: bool) -> Vec<String> {
        let state = self.state.read();
        state
            .subjects
            .keys()
            .filter(|s| !state.versions(s, deleted).is_empty())
            .cloned()
            .collect()
    }

    /// A subject's version numbers.
    pub async fn versions(&self, subject: &str, deleted: bool) -> Result<Vec<i32>> {
        let state = self.state.read();
        let versions = state.versions(subject, deleted);
        if versions.is_empty() {
            return Err(RegistryError::subject_not_found(subject));
        }
        Ok(versions.into_iter().map(|(n, _)| n).collect())
    }

    /// One version of a subject.
    pub async fn version(
        &self,
        subject: &str,
        spec: VersionSpec,
        deleted: bool,
    ) -> Result<SubjectVersion> {
        let state = self.state.read();
        let (version, entry) = find(&state, subject, spec, deleted)?;
        let schema = state
            .schemas
            .get(&entry.id)
            .cloned()
            .ok_or_else(|| RegistryError::schema_not_found(entry.id))?;
        Ok(SubjectVersion {
            subject: subject.to_string(),
            version,
            id: entry.id,
            schema,
        })
    }

    /// Deletes every version of a subject: soft (kept, hidden) or, once soft-deleted,
    /// permanent. Returns the versions deleted.
    pub async fn delete_subject(&self, subject: &str, permanent: bool) -> Result<Vec<i32>> {
        let _writing = self.writing().await?;
        let (entries, deleted) = self.subject_deletion(subject, permanent)?;
        self.commit(entries).await?;
        info!(subject, permanent, versions = ?deleted, "subject deleted");
        Ok(deleted)
    }

    /// The entries that delete a subject, and the versions they delete.
    fn subject_deletion(&self, subject: &str, permanent: bool) -> Result<(Vec<Entry>, Vec<i32>)> {
        let state = self.state.read();
        if state.mode(subject).read_only() {
            return Err(read_only(subject));
        }
        let all = state.versions(subject, true);
        if all.is_empty() {
            return Err(RegistryError::subject_not_found(subject));
        }
        let live: Vec<(i32, VersionEntry)> =
            all.iter().filter(|(_, v)| !v.deleted).copied().collect();
        let entries: Vec<Entry> = if permanent {
            if !live.is_empty() {
                return Err(RegistryError::subject_not_soft_deleted(subject));
            }
            let mut gone: Vec<Entry> = all
                .iter()
                .map(|(n, _)| Entry::VersionGone {
                    subject: subject.to_string(),
                    version: *n,
                })
                .collect();
            if state.levels.contains_key(subject) {
                gone.push(Entry::Config {
                    subject: Some(subject.to_string()),
                    level: None,
                });
            }
            gone
        } else {
            if live.is_empty() {
                return Err(RegistryError::subject_soft_deleted(subject));
            }
            live.iter()
                .map(|(n, v)| soft_deleted(&state, subject, *n, v.id))
                .collect::<Result<_>>()?
        };
        let deleted: Vec<i32> = if permanent { &all } else { &live }
            .iter()
            .map(|(n, _)| *n)
            .collect();
        Ok((entries, deleted))
    }

    /// Deletes one version: soft, or (once soft-deleted) permanent.
    pub async fn delete_version(
        &self,
        subject: &str,
        spec: VersionSpec,
        permanent: bool,
    ) -> Result<i32> {
        let _writing = self.writing().await?;
        let (version, change) = {
            let state = self.state.read();
            if state.mode(subject).read_only() {
                return Err(read_only(subject));
            }
            let (version, entry) = find(&state, subject, spec, permanent)?;
            if permanent {
                if !entry.deleted {
                    return Err(RegistryError::version_not_soft_deleted(subject, version));
                }
                let gone = Entry::VersionGone {
                    subject: subject.to_string(),
                    version,
                };
                (version, gone)
            } else {
                (version, soft_deleted(&state, subject, version, entry.id)?)
            }
        };
        self.commit(vec![change]).await?;
        Ok(version)
    }

    /// Whether `request` could be registered under `subject`: against the subject's level
    /// for `latest`, or against one version. Returns why not, empty when it could.
    pub async fn compatibility(
        &self,
        subject: &str,
        spec: VersionSpec,
        request: &SchemaRequest,
    ) -> Result<Vec<String>> {
        let state = self.state.read();
        let (_, parsed) = Self::parse(&state, request)?;
        let level = state.level(subject);
        let earlier = match spec {
            VersionSpec::Latest => Self::checked_against(&state, subject)?,
            VersionSpec::Number(_) => Self::parsed(&state, &[find(&state, subject, spec, false)?])?,
        };
        Ok(check(level, &parsed, &earlier))
    }

    /// The level a subject (or, with `None`, the registry) checks at; a subject without its
    /// own is 40408 unless `default_to_global`.
    pub async fn level(&self, subject: Option<&str>, default_to_global: bool) -> Result<Level> {
        let state = self.state.read();
        match subject {
            None => Ok(state.global),
            Some(s) => match state.levels.get(s) {
                Some(level) => Ok(*level),
                None if default_to_global => Ok(state.global),
                None => Err(RegistryError::subject_level_not_configured(s)),
            },
        }
    }

    /// Sets a subject's (or the global) level.
    pub async fn set_level(&self, subject: Option<&str>, level: Level) -> Result<Level> {
        let _writing = self.writing().await?;
        let entry = Entry::Config {
            subject: subject.map(str::to_string),
            level: Some(level.to_string()),
        };
        self.commit(vec![entry]).await?;
        Ok(level)
    }

    /// Removes a subject's own level (or resets the global one); returns the level it had.
    pub async fn delete_level(&self, subject: Option<&str>) -> Result<Level> {
        let _writing = self.writing().await?;
        let had = {
            let state = self.state.read();
            match subject {
                None => state.global,
                Some(s) => *state
                    .levels
                    .get(s)
                    .ok_or_else(|| RegistryError::subject_not_found(s))?,
            }
        };
        let entry = Entry::Config {
            subject: subject.map(str::to_string),
            level: None,
        };
        self.commit(vec![entry]).await?;
        Ok(had)
    }

    /// The mode a subject (or, with `None`, the registry) is in; a subject without its own
    /// is 40409 unless `default_to_global`.
    pub async fn mode(&self, subject: Option<&str>, default_to_global: bool) -> Result<Mode> {
        let state = self.state.read();
        match subject {
            None => Ok(state.global_mode),
            Some(s) => match state.modes.get(s) {
                Some(mode) => Ok(*mode),
                None if default_to_global => Ok(state.global_mode),
                None => Err(RegistryError::subject_mode_not_configured(s)),
            },
        }
    }

    /// Sets a subject's (or the global) mode. `IMPORT` is refused where schemas already
    /// are (the registry's, or the subject's), unless `force`, as Confluent's is: imported
    /// ids must not meet ones given out here.
    pub async fn set_mode(&self, subject: Option<&str>, mode: Mode, force: bool) -> Result<Mode> {
        let _writing = self.writing().await?;
        if mode == Mode::Import && !force {
            let state = self.state.read();
            let holds_schemas = match subject {
                None => state
                    .subjects
                    .keys()
                    .any(|s| !state.versions(s, false).is_empty()),
                Some(s) => !state.versions(s, false).is_empty(),
            };
            if holds_schemas {
                return Err(RegistryError::not_permitted(
                    "Cannot import since found existing subjects",
                ));
            }
        }
        let entry = Entry::Mode {
            subject: subject.map(str::to_string),
            mode: Some(mode.to_string()),
        };
        self.commit(vec![entry]).await?;
        Ok(mode)
    }

    /// Removes a subject's own mode (or resets the global one); returns the mode it had.
    pub async fn delete_mode(&self, subject: Option<&str>) -> Result<Mode> {
        let _writing = self.writing().await?;
        let had = {
            let state = self.state.read();
            match subject {
                None => state.global_mode,
                Some(s) => *state
                    .modes
                    .get(s)
                    .ok_or_else(|| RegistryError::subject_not_found(s))?,
            }
        };
        let entry = Entry::Mode {
            subject: subject.map(str::to_string),
            mode: None,
        };
        self.commit(vec![entry]).await?;
        Ok(had)
    }
}

/// 42205 for a change to a subject in a read-only mode.
fn read_only(subject: &str) -> RegistryError {
    RegistryError::not_permitted(format!("Subject {subject} is in read-only mode"))
}

/// The id an imported schema takes: the one asked for, unless another schema holds it; else
/// the one the schema already has, or a new one.
fn imported_id(state: &State, text: &SchemaText, wanted: Option<u32>) -> Result<u32> {
    match wanted {
        Some(id) => match state.schemas.get(&id) {
            Some(held) if held != text => Err(RegistryError::not_permitted(format!(
                "Overwrite new schema with id {id} is not permitted."
            ))),
            _ => Ok(id),
        },
        None => Ok(state
            .ids
            .get(text)
            .copied()
            .unwrap_or_else(|| state.next_id())),
    }
}

/// The version `spec` names under `subject`: live ones only, unless `deleted`.
fn find(
    state: &State,
    subject: &str,
    spec: VersionSpec,
    deleted: bool,
) -> Result<(i32, VersionEntry)> {
    let versions = state.versions(subject, deleted);
    if versions.is_empty() {
        return Err(RegistryError::subject_not_found(subject));
    }
    match spec {
        VersionSpec::Latest => versions.last().copied(),
        VersionSpec::Number(n) => versions.iter().find(|(v, _)| *v == n).copied(),
    }
    .ok_or_else(|| {
        RegistryError::version_not_found(&match spec {
            VersionSpec::Latest => "latest".to_string(),
            VersionSpec::Number(n) => n.to_string(),
        })
    })
}

/// The entry that soft-deletes a version.
fn soft_deleted(state: &State, subject: &str, version: i32, id: u32) -> Result<Entry> {
    let schema = state
        .schemas
        .get(&id)
        .cloned()
        .ok_or_else(|| RegistryError::schema_not_found(id))?;
    Ok(Entry::Version {
        subject: subject.to_string(),
        version,
        id,
        schema,
        deleted: true,
    })
}

/// An entry as a record of the log, keyed as Confluent keys `_schemas` (so compaction keeps
/// each version's and level's last state): a version's key is its subject and number, and a
/// permanently deleted version is a tombstone.
fn encode(entry: &Entry, now: i64) -> Record {
    let key = |v: Value| Bytes::from(v.to_string());
    match entry {
        Entry::Version {
            subject,
            version,
            id,
            schema,
            deleted,
        } => Record::keyed(
            key(json!({"keytype": "SCHEMA", "subject": subject, "version": version, "magic": 1})),
            Bytes::from(
                json!({
                    "subject": subject,
                    "version": version,
                    "id": id,
                    "schemaType": schema.schema_type.to_string(),
                    "schema": schema.schema,
                    "references": schema.references,
                    "deleted": deleted,
                })
                .to_string(),
            ),
            now,
        ),
        Entry::VersionGone { subject, version } => Record::tombstone(
            key(json!({"keytype": "SCHEMA", "subject": subject, "version": version, "magic": 1})),
            now,
        ),
        Entry::Config { subject, level } => {
            let k = key(json!({"keytype": "CONFIG", "subject": subject, "magic": 0}));
            match level {
                Some(level) => Record::keyed(
                    k,
                    Bytes::from(json!({"compatibilityLevel": level}).to_string()),
                    now,
                ),
                None => Record::tombstone(k, now),
            }
        }
        Entry::Mode { subject, mode } => {
            let k = key(json!({"keytype": "MODE", "subject": subject, "magic": 0}));
            match mode {
                Some(mode) => Record::keyed(k, Bytes::from(json!({"mode": mode}).to_string()), now),
                None => Record::tombstone(k, now),
            }
        }
    }
}

/// A log record back as an entry; `None` for one the registry did not write.
fn decode(record: &Record) -> Option<Entry> {
    let key: Value = serde_json::from_slice(record.key.as_deref()?).ok()?;
    let subject = key.get("subject");
    match key.get("keytype")?.as_str()? {
        "SCHEMA" => {
            let subject = subject?.as_str()?.to_string();
            let version = i32::try_from(key.get("version")?.as_i64()?).ok()?;
            let Some(value) = record.value.as_deref() else {
                return Some(Entry::VersionGone { subject, version });
            };
            let value: Value = serde_json::from_slice(value).ok()?;
            Some(Entry::Version {
                subject,
                version,
                id: u32::try_from(value.get("id")?.as_u64()?).ok()?,
                schema: SchemaText {
                    schema_type: SchemaType::parse(value.get("schemaType").and_then(Value::as_str))
                        .ok()?,
                    schema: value.get("schema")?.as_str()?.to_string(),
                    references: value
                        .get("references")
                        .cloned()
                        .map(serde_json::from_value)
                        .transpose()
                        .ok()?
                        .unwrap_or_default(),
                },
                deleted: value
                    .get("deleted")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            })
        }
        "CONFIG" => {
            let subject = subject.and_then(Value::as_str).map(str::to_string);
            let level = match record.value.as_deref() {
                None => None,
                Some(value) => {
                    let value: Value = serde_json::from_slice(value).ok()?;
                    Some(value.get("compatibilityLevel")?.as_str()?.to_string())
                }
            };
            Some(Entry::Config { subject, level })
        }
        "MODE" => {
            let subject = subject.and_then(Value::as_str).map(str::to_string);
            let mode = match record.value.as_deref() {
                None => None,
                Some(value) => {
                    let value: Value = serde_json::from_slice(value).ok()?;
                    Some(value.get("mode")?.as_str()?.to_string())
                }
            };
            Some(Entry::Mode { subject, mode })
        }
        _ => None,
    }
}
