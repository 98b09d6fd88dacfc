//! The PostgreSQL sink: writes topics' JSON records into PostgreSQL tables (its configuration,
//! the JDBC sink connector's keys, is [`super::sink_config`]).
//!
//! Each batch of a partition's records is one database transaction; the consumer group's
//! offsets (`connect-<name>`, as Kafka Connect names its groups) are committed in Eddy's store
//! only after that transaction commits. After a failure the records since the last committed
//! offset are written again, so with `insert.mode=upsert` the table ends the same; with
//! `insert` a crash between the two commits can repeat a batch's rows.
//!
//! A batch goes in as one statement: the records' JSON objects, as an array, through
//! `jsonb_populate_recordset` over the table's row type, so PostgreSQL converts each value to
//! its column's type. Fields match columns by name, exactly or else ignoring case (ksqlDB's
//! columns are upper case, PostgreSQL's usually lower).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use eddy_storage::{Commit, LogRecord, OffsetAndMetadata, Store};
use serde_json::{Map, Value};
use tokio::sync::watch;
use tokio_postgres::Client;
use tracing::warn;

use super::quote_ident;
use super::sink_config::{InsertMode, PkMode, PostgresSinkConfig};
use crate::error::{ConnectError, Result};

/// A running PostgreSQL sink.
pub struct PostgresSink {
    name: String,
    config: PostgresSinkConfig,
    store: Store,
}

/// A record as a row: its key's identity (for upserts and deletes), and its columns' values
/// (none for a tombstone).
type KeyedRow = (Option<String>, Option<Map<String, Value>>);

/// A table the sink writes: its name quoted, and its columns.
struct Table {
    name: String,
    columns: Vec<String>,
}

impl PostgresSink {
    /// The sink `name` with `config`, reading from `store`.
    pub fn new(name: impl Into<String>, config: PostgresSinkConfig, store: Store) -> Self {
        PostgresSink {
            name: name.into(),
            config,
            store,
        }
    }

    /// The consumer group whose offsets say how far the sink has written.
    pub fn group(&self) -> String {
        Self::group_of(&self.name)
    }

    /// The consumer group of the sink connector named `name`, as Kafka Connect names it.
    pub fn group_of(name: &str) -> String {
        format!("connect-{name}")
    }

    /// Runs until `stop` turns true or a failure.
    pub async fn run(&self, mut stop: watch::Receiver<bool>) -> Result<()> {
        let mut client = self.connect().await?;
        let mut tables: BTreeMap<String, Table> = BTreeMap::new();
        loop {
            let mut wrote = false;
            for topic in &self.config.topics {
                if !self.store.topic_exists(topic) {
                    continue;
                }
                for partition in 0..self.store.partition_count(topic)? {
                    if *stop.borrow() {
                        return Ok(());
                    }
                    wrote |= self
                        .write_partition(&mut client, &mut tables, topic, partition)
                        .await?;
                }
            }
            if !wrote {
                tokio::select! {
                    _ = stop.changed() => return Ok(()),
                    waited = self.wait_for_records() => waited?,
                }
            }
        }
    }

    /// Where the sink goes on reading a partition: its committed offset, or the log's start.
    fn next_offset(&self, topic: &str, partition: u32) -> Result<i64> {
        Ok(self
            .store
            .fetch_offset(&self.group(), topic, partition)?
            .map_or(0, |o| o.offset)
            .max(self.store.log_start_offset(topic, partition)?))
    }

    /// Waits, without polling, until a partition of the sink's topics has a record it has not
    /// written, or a second passes (so a topic made meanwhile is noticed).
    async fn wait_for_records(&self) -> Result<()> {
        const LONGEST: Duration = Duration::from_secs(1);
        let mut waits = Vec::new();
        for topic in &self.config.topics {
            if !self.store.topic_exists(topic) {
                continue;
            }
            for partition in 0..self.store.partition_count(topic)? {
                let next = self.next_offset(topic, partition)?;
                let store = self.store.clone();
                let topic = topic.clone();
                waits.push(Box::pin(async move {
                    store.wait_for_data(&topic, partition, next, LONGEST).await
                }));
            }
        }
        if waits.is_empty() {
            tokio::time::sleep(LONGEST).await;
            return Ok(());
        }
        futures::future::select_all(waits).await.0?;
        Ok(())
    }

    async fn connect(&self) -> Result<Client> {
        self.config.database.connect(&self.name).await
    }

    /// Writes the next batch of one partition; returns whether there was one.
    async fn write_partition(
        &self,
        client: &mut Client,
        tables: &mut BTreeMap<String, Table>,
        topic: &str,
        partition: u32,
    ) -> Result<bool> {
        let group = self.group();
        let from = self.next_offset(topic, partition)?;
        let mut records: Vec<LogRecord> = Vec::new();
        let mut next = from;
        while records.len() < self.config.batch_size {
            let fetched = self.store.read_records(topic, partition, next, 1 << 20)?;
            if fetched.records.is_empty() {
                break;
            }
            next = fetched.next_offset;
            records.extend(fetched.records);
        }
        records.truncate(self.config.batch_size);
        let Some(last) = records.last() else {
            return Ok(false);
        };
        let next = last.offset + 1;
        if !tables.contains_key(topic) {
            let table = self.table(client, topic).await?;
            tables.insert(topic.to_string(), table);
        }
        let table = &tables[topic];
        let handling = &self.config.errors;
        let mut rows: Vec<(usize, KeyedRow)> = Vec::new();
        let mut dead: Vec<(usize, &str, &str, String)> = Vec::new();
        for (i, record) in records.iter().enumerate() {
            match self.row(table, topic, record) {
                Ok(row) => rows.push((i, row)),
                Err(e) if handling.tolerate => {
                    dead.push((i, "VALUE_CONVERTER", "DataException", e.to_string()));
                }
                Err(e) => return Err(e),
            }
        }
        let batch: Vec<KeyedRow> = rows.iter().map(|(_, row)| row.clone()).collect();
        match self.write_retrying(client, table, batch).await {
            Ok(()) => {}
            // A record the database refuses: each is written alone, to find which.
            Err(e) if handling.tolerate && is_data_error(&e) => {
                for (i, row) in rows {
                    match self.write_retrying(client, table, vec![row]).await {
                        Ok(()) => {}
                        Err(e) if is_data_error(&e) => {
                            let error = crate::error::describe_postgres(&e);
                            dead.push((i, "TASK_PUT", "SQLException", error));
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            Err(e) => return Err(e.into()),
        }
        let mut commit = Commit::new();
        if let Some(dead_letters) = &handling.topic
            && !dead.is_empty()
        {
            dead.sort_by_key(|(i, ..)| *i);
            let letters = dead
                .iter()
                .map(|(i, stage, class, error)| {
                    handling.dead_letter(
                        &records[*i],
                        &crate::dead_letter::Failure {
                            by: &self.name,
                            stage,
                            topic,
                            partition,
                            error_class: class,
                            error,
                        },
                    )
                })
                .collect();
            self.store.ensure_topic(dead_letters)?;
            commit.append(dead_letters.clone(), None, letters);
        }
        for (i, _, _, error) in &dead {
            warn!(connector = %self.name, topic, partition, offset = records[*i].offset,
                "a record could not be written and was skipped: {error}");
        }
        commit.commit_offset(
            group,
            topic,
            partition,
            OffsetAndMetadata {
                offset: next,
                leader_epoch: -1,
                metadata: String::new(),
                commit_timestamp: chrono::Utc::now().timestamp_millis(),
            },
        );
        self.store.commit(commit).await?;
        Ok(true)
    }

    /// The table a topic goes to, which must exist.
    async fn table(&self, client: &Client, topic: &str) -> Result<Table> {
        let (schema, table) = self.config.table_for(topic);
        let schema = schema.unwrap_or_else(|| "public".into());
        let rows = client
            .query(
                "SELECT column_name::text FROM information_schema.columns \
                 WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
                &[&schema, &table],
            )
            .await?;
        if rows.is_empty() {
            return Err(ConnectError::Config(format!(
                "the table {schema}.{table} that topic '{topic}' goes to does not exist"
            )));
        }
        Ok(Table {
            name: format!("{}.{}", quote_ident(&schema), quote_ident(&table)),
            columns: rows.iter().map(|r| r.get(0)).collect(),
        })
    }

    /// One database transaction: the batch's rows (for upserts the latest per key) and
    /// deletes.
    async fn write_batch(
        &self,
        client: &mut Client,
        table: &Table,
        batch: Vec<KeyedRow>,
    ) -> std::result::Result<(), tokio_postgres::Error> {
        let mut rows: Vec<KeyedRow> = Vec::new();
        let mut latest: BTreeMap<String, usize> = BTreeMap::new();
        for (key, row) in batch {
            if self.config.insert_mode == InsertMode::Upsert || self.config.delete_enabled {
                let Some(key) = key.clone() else { continue };
                if let Some(&at) = latest.get(&key) {
                    rows[at].1 = None;
                    rows[at].0 = None;
                }
                latest.insert(key, rows.len());
            }
            rows.push((key, row));
        }
        let (mut upserts, mut deletes) = (Vec::new(), Vec::new());
        for (key, row) in rows {
            match (key, row) {
                (_, Some(row)) => upserts.push(Value::Object(row)),
                (Some(key), None) => deletes.push(key),
                (None, None) => {}
            }
        }
        let transaction = client.transaction().await?;
        if !deletes.is_empty() {
            let keys = self.key_columns(table);
            let list = keys.join(", ");
            let rows: Vec<Value> = deletes
                .iter()
                .map(|k| serde_json::from_str(k).unwrap_or(Value::Null))
                .collect();
            transaction
                .execute(
                    &format!(
                        "DELETE FROM {t} WHERE ({list}) IN \
                         (SELECT {list} FROM jsonb_populate_recordset(NULL::{t}, $1::text::jsonb))",
                        t = table.name
                    ),
                    &[&Value::Array(rows).to_string()],
                )
                .await?;
        }
        if !upserts.is_empty() {
            let present: Vec<&String> = table
                .columns
                .iter()
                .filter(|c| upserts.iter().any(|r| r.get(c.as_str()).is_some()))
                .collect();
            let list = present
                .iter()
                .map(|c| quote_ident(c))
                .collect::<Vec<_>>()
                .join(", ");
            let mut sql = format!(
                "INSERT INTO {t} ({list}) SELECT {list} \
                 FROM jsonb_populate_recordset(NULL::{t}, $1::text::jsonb)",
                t = table.name
            );
            if self.config.insert_mode == InsertMode::Upsert {
                let keys = self.key_columns(table);
                let updates: Vec<String> = present
                    .iter()
                    .map(|c| quote_ident(c))
                    .filter(|c| !keys.contains(c))
                    .map(|c| format!("{c} = EXCLUDED.{c}"))
                    .collect();
                sql.push_str(&format!(" ON CONFLICT ({}) DO ", keys.join(", ")));
                sql.push_str(&match updates.is_empty() {
                    true => "NOTHING".to_string(),
                    false => format!("UPDATE SET {}", updates.join(", ")),
                });
            }
            transaction
                .execute(&sql, &[&Value::Array(upserts).to_string()])
                .await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    /// [`PostgresSink::write_batch`], tried again while the failure is not the data's (the
    /// database unreachable, say) for up to `errors.retry.timeout`, reconnecting as needed.
    async fn write_retrying(
        &self,
        client: &mut Client,
        table: &Table,
        batch: Vec<KeyedRow>,
    ) -> std::result::Result<(), tokio_postgres::Error> {
        let handling = &self.config.errors;
        let started = Instant::now();
        let mut wait = Duration::from_millis(100).min(handling.retry_delay_max);
        loop {
            let error = match self.write_batch(client, table, batch.clone()).await {
                Ok(()) => return Ok(()),
                Err(e) if is_data_error(&e) => return Err(e),
                Err(e) => e,
            };
            let in_time = handling
                .retry_timeout
                .is_none_or(|timeout| started.elapsed() + wait <= timeout);
            if !in_time {
                return Err(error);
            }
            let why = crate::error::describe_postgres(&error);
            warn!(connector = %self.name, "writing failed, trying again in {wait:?}: {why}");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(handling.retry_delay_max);
            if client.is_closed()
                && let Ok(fresh) = self.connect().await
            {
                *client = fresh;
            }
        }
    }

    /// The key columns, quoted: `pk.fields`, or for a record key that is an object its
    /// fields are matched when the row is built, so `pk.fields` names them.
    fn key_columns(&self, table: &Table) -> Vec<String> {
        self.config
            .pk_fields
            .iter()
            .map(|f| quote_ident(&column_for(table, f).unwrap_or_else(|| f.clone())))
            .collect()
    }

    /// A record as (its key's identity, its row); no row for a tombstone.
    fn row(&self, table: &Table, topic: &str, record: &LogRecord) -> Result<KeyedRow> {
        let at = || format!("{topic} at offset {}", record.offset);
        let parse = |bytes: &[u8], what: &str| -> Result<Value> {
            serde_json::from_slice(bytes)
                .map_err(|e| ConnectError::Decode(format!("the {what} of {}: {e}", at())))
        };
        let mut key_fields = Map::new();
        if self.config.pk_mode == PkMode::RecordKey {
            let key = record.record.key.as_deref().ok_or_else(|| {
                ConnectError::Decode(format!("{} has no key, and 'pk.mode' is record_key", at()))
            })?;
            match parse(key, "key")? {
                Value::Object(fields) => key_fields = fields,
                primitive => {
                    let field = self.config.pk_fields.first().ok_or_else(|| {
                        ConnectError::Config(
                            "a key that is not an object needs 'pk.fields' to name its column"
                                .into(),
                        )
                    })?;
                    key_fields.insert(field.clone(), primitive);
                }
            }
        }
        let mut row = Map::new();
        for (field, value) in key_fields {
            if let Some(column) = column_for(table, &field) {
                row.insert(column, value);
            }
        }
        let key_identity = match self.config.pk_mode {
            PkMode::None => None,
            PkMode::RecordKey => Some(Value::Object(row.clone()).to_string()),
            PkMode::RecordValue => None,
        };
        let Some(value) = record.record.value.as_deref() else {
            return Ok((key_identity, None));
        };
        let Value::Object(fields) = parse(value, "value")? else {
            return Err(ConnectError::Decode(format!(
                "the value of {} is not a JSON object",
                at()
            )));
        };
        for (field, value) in fields {
            if let Some(column) = column_for(table, &field) {
                row.entry(column).or_insert(value);
            }
        }
        let key_identity = match self.config.pk_mode {
            PkMode::RecordValue => {
                let mut key = Map::new();
                for field in &self.config.pk_fields {
                    let column = column_for(table, field).unwrap_or_else(|| field.clone());
                    key.insert(
                        column.clone(),
                        row.get(&column).cloned().unwrap_or(Value::Null),
                    );
                }
                Some(Value::Object(key).to_string())
            }
            _ => key_identity,
        };
        Ok((key_identity, Some(row)))
    }
}

/// Whether the database refused the data itself (SQLSTATE class 22, a data exception such as
/// a value its column's type cannot take, or 23, an integrity constraint), rather than failing.
fn is_data_error(error: &tokio_postgres::Error) -> bool {
    error
        .code()
        .is_some_and(|code| matches!(code.code().get(..2), Some("22" | "23")))
}

/// The table's column a field goes to: the same name, else the same name ignoring case.
fn column_for(table: &Table, field: &str) -> Option<String> {
    table
        .columns
        .iter()
        .find(|c| *c == field)
        .or_else(|| table.columns.iter().find(|c| c.eq_ignore_ascii_case(field)))
        .cloned()
}
