//! Consumer-group offsets: commit and fetch per group, topic and partition.

use rocksdb::{Direction, IteratorMode};

use crate::commit::{Commit, OffsetAndMetadata};
use crate::error::{Result, StorageError};
use crate::keys::{self, CF_OFFSETS};
use crate::store::Store;

/// One committed offset of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOffset {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The committed position.
    pub offset: OffsetAndMetadata,
}

impl Store {
    /// Commits a group's offsets atomically and durably (per the sync policy).
    pub async fn commit_offsets(&self, group: &str, offsets: Vec<GroupOffset>) -> Result<()> {
        let mut commit = Commit::new();
        for o in offsets {
            commit.commit_offset(group, o.topic, o.partition, o.offset);
        }
        self.commit(commit).await.map(|_| ())
    }

    /// The offset a group committed for a partition, if any.
    pub fn fetch_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<OffsetAndMetadata>> {
        let key = keys::group_offset_key(group, topic, partition);
        match self.inner.db.get_cf(self.cf(CF_OFFSETS)?, &key)? {
            None => Ok(None),
            Some(value) => decode(&key, &value).map(Some),
        }
    }

    /// Every offset a group committed, ordered by topic and partition.
    pub fn fetch_group_offsets(&self, group: &str) -> Result<Vec<GroupOffset>> {
        let prefix = keys::group_prefix(group);
        let mut out = Vec::new();
        let iter = self.inner.db.iterator_cf(
            self.cf(CF_OFFSETS)?,
            IteratorMode::From(&prefix, Direction::Forward),
        );
        for item in iter {
            let (key, value) = item?;
            if !key.starts_with(&prefix) {
                break;
            }
            let Some((_, topic, partition)) = keys::parse_group_offset_key(&key) else {
                return Err(bad_key(&key));
            };
            out.push(GroupOffset {
                topic,
                partition,
                offset: decode(&key, &value)?,
            });
        }
        Ok(out)
    }

    /// Every group that has committed offsets, sorted.
    pub fn list_groups(&self) -> Result<Vec<String>> {
        let mut groups: Vec<String> = Vec::new();
        for item in self
            .inner
            .db
            .iterator_cf(self.cf(CF_OFFSETS)?, IteratorMode::Start)
        {
            let (key, _) = item?;
            let Some((group, _, _)) = keys::parse_group_offset_key(&key) else {
                return Err(bad_key(&key));
            };
            if groups.last() != Some(&group) {
                groups.push(group);
            }
        }
        Ok(groups)
    }

    /// Deletes the offsets every group committed on `topic`, as deleting the topic does.
    pub(crate) fn delete_group_offsets_of(&self, topic: &str) -> Result<()> {
        let doomed = self.group_offset_keys_for_topic(topic)?;
        if doomed.is_empty() {
            return Ok(());
        }
        self.run_custom(Box::new(move |db, wb| {
            let offsets = db.cf_handle(CF_OFFSETS).ok_or(StorageError::Closed)?;
            for key in doomed {
                wb.delete_cf(offsets, key);
            }
            Ok(Box::new(|| {}) as crate::writer::AfterWrite)
        }))
    }

    pub(crate) fn group_offset_keys_for_topic(&self, topic: &str) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        for item in self
            .inner
            .db
            .iterator_cf(self.cf(CF_OFFSETS)?, IteratorMode::Start)
        {
            let (key, _) = item?;
            if let Some((_, t, _)) = keys::parse_group_offset_key(&key)
                && t == topic
            {
                out.push(key.to_vec());
            }
        }
        Ok(out)
    }
}

fn decode(key: &[u8], value: &[u8]) -> Result<OffsetAndMetadata> {
    OffsetAndMetadata::decode(value).ok_or_else(|| StorageError::CorruptMetadata {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: "committed offset is malformed".to_string(),
    })
}

fn bad_key(key: &[u8]) -> StorageError {
    StorageError::CorruptMetadata {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: "group offset key is malformed".to_string(),
    }
}
