//! The command log: every statement that changed the catalog, in order, in the state store, as
//! ksqlDB keeps its command topic. Opening the engine replays it.
//!
//! An entry that cannot be read back (its bytes damaged, or its SQL no longer parsing after an
//! upgrade tightened the grammar) is skipped and reported, not allowed to stop the server: the
//! rest of the catalog comes back, `/healthcheck` says the log is damaged, and the entry stays
//! in place for an operator to inspect. ksqlDB likewise starts in a degraded state on a corrupt
//! command topic rather than not at all.

use std::collections::HashMap;

use eddy_storage::{Commit, Store};
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

/// State-store namespace of the command log.
const COMMAND_LOG: &str = "__eddy_command_log";

/// One entry of the command log.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Command {
    pub(crate) sql: String,
    #[serde(default)]
    pub(crate) properties: HashMap<String, String>,
}

/// An entry replay had to skip, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedEntry {
    /// The entry's sequence number, when its key could be read.
    pub seq: Option<u64>,
    /// Why it could not be replayed.
    pub reason: String,
}

/// The entries that could be read, in order, by sequence number.
pub(crate) type Entries = Vec<(u64, Command)>;

/// The readable entries in order, and those that could not be read.
pub(crate) fn read(store: &Store) -> Result<(Entries, Vec<DamagedEntry>)> {
    let mut entries = Vec::new();
    let mut damaged = Vec::new();
    for entry in store.state_scan_prefix(COMMAND_LOG, b"")? {
        let (key, value) = entry?;
        let Ok(seq) = key.as_slice().try_into().map(u64::from_be_bytes) else {
            damaged.push(DamagedEntry {
                seq: None,
                reason: format!("its key is {} bytes, not 8", key.len()),
            });
            continue;
        };
        match serde_json::from_slice::<Command>(&value) {
            Ok(command) => entries.push((seq, command)),
            Err(e) => damaged.push(DamagedEntry {
                seq: Some(seq),
                reason: format!("it is not a command: {e}"),
            }),
        }
    }
    Ok((entries, damaged))
}

/// The sequence number after every entry, readable or not, so none is overwritten.
pub(crate) fn next_seq(entries: &[(u64, Command)], damaged: &[DamagedEntry]) -> u64 {
    let readable = entries.iter().map(|(seq, _)| *seq);
    let unreadable = damaged.iter().filter_map(|d| d.seq);
    readable.chain(unreadable).max().map_or(0, |seq| seq + 1)
}

/// Appends a command as entry `seq`.
pub(crate) async fn append(store: &Store, seq: u64, command: &Command) -> Result<()> {
    let value = serde_json::to_vec(command).map_err(|e| EngineError::CorruptCommandLog {
        seq,
        reason: e.to_string(),
    })?;
    let mut commit = Commit::new();
    commit.put_state(COMMAND_LOG, seq.to_be_bytes().to_vec(), value);
    store.commit(commit).await?;
    Ok(())
}
