//! The PostgreSQL change-data-capture source: a logical replication slot on `pgoutput` and a
//! publication; an initial snapshot of the included tables read in the slot's exported
//! snapshot, then every committed transaction's inserts, updates and deletes in commit order.
//!
//! Each transaction's records and the connector's position (the transaction's end in the WAL)
//! go into Eddy's log in one commit, and only then is the position acknowledged to PostgreSQL.
//! After a crash PostgreSQL resends from what it was last told; a transaction that ends at or
//! before the stored position is already in the log and is skipped, so nothing is lost or
//! written twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use eddy_storage::{Commit, Record, StateOp, Store};
use pg_walstream::{LogicalReplicationMessage, LogicalReplicationParser, TupleData};
use pgwire_replication::{Lsn, ReplicationClient, ReplicationConfig, ReplicationEvent};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_postgres::{Client, SimpleQueryMessage};
use tracing::{debug, info, warn};

use super::change::{Cell, Column, Op, Source, TableShape, ValueStyle, change_records};
use super::quote_ident;
use super::source_config::{PostgresSourceConfig, PublicationMode, SnapshotMode};
use crate::error::{ConnectError, Result};

/// Rows the snapshot reads, and writes to the log, at a time.
const SNAPSHOT_BATCH_ROWS: usize = 1_000;

/// Microseconds between PostgreSQL's epoch (2000-01-01) and Unix's.
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Where the connector is, as kept in the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The end of the last transaction written to the log (or the slot's consistent point once
    /// the snapshot is written).
    pub lsn: u64,
    /// Whether the initial snapshot is complete (or was not wanted).
    pub snapshot_done: bool,
    /// A transaction too large to hold whole, part of which is in the log.
    #[serde(default)]
    pub partial: Option<PartialTransaction>,
}

/// How much of a large transaction is in the log: it is written in chunks of
/// `max.batch.size` records, and after a restart its first `changes` are not written again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialTransaction {
    /// The transaction's commit position (pgoutput's `Begin` carries it).
    pub final_lsn: u64,
    /// How many of its changes are written.
    pub changes: u64,
}

/// A running PostgreSQL source.
pub struct PostgresSource {
    name: String,
    config: PostgresSourceConfig,
    store: Store,
    progress: Arc<SourceProgress>,
}

/// How far behind the server's WAL a running source is, as it last heard.
#[derive(Debug, Default)]
pub struct SourceProgress {
    server_end: AtomicU64,
    written: AtomicU64,
}

impl SourceProgress {
    /// The WAL bytes between the server's end and what the source has written (or found
    /// nothing to write in), once the server has said where its end is.
    pub fn lag_bytes(&self) -> Option<u64> {
        let end = self.server_end.load(Ordering::Relaxed);
        (end != 0).then(|| end.saturating_sub(self.written.load(Ordering::Relaxed)))
    }

    fn server_at(&self, lsn: u64) {
        self.server_end.fetch_max(lsn, Ordering::Relaxed);
    }

    fn written_to(&self, lsn: u64) {
        self.written.fetch_max(lsn, Ordering::Relaxed);
    }
}

impl PostgresSource {
    /// The source `name` with `config`, writing into `store`.
    pub fn new(name: impl Into<String>, config: PostgresSourceConfig, store: Store) -> Self {
        PostgresSource {
            name: name.into(),
            config,
            store,
            progress: Arc::default(),
        }
    }

    /// Its progress, shared with whoever reports it.
    pub fn progress(&self) -> Arc<SourceProgress> {
        self.progress.clone()
    }

    /// Where the store keeps this connector's position.
    pub fn namespace(&self) -> String {
        format!("__eddy_connector_{}", self.name)
    }

    /// The position stored for this connector (the default before it first wrote).
    pub fn position(&self) -> Result<Position> {
        let stored = self.store.state_get(&self.namespace(), b"position")?;
        match stored {
            None => Ok(Position::default()),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| ConnectError::Decode(format!("the connector's stored position: {e}"))),
        }
    }

    fn position_op(&self, position: &Position) -> Result<StateOp> {
        let value = serde_json::to_vec(position)
            .map_err(|e| ConnectError::Decode(format!("the connector's position: {e}")))?;
        Ok(StateOp::Put {
            namespace: self.namespace(),
            key: b"position".to_vec(),
            value,
        })
    }

    /// Runs until `stop` turns true or a failure: the snapshot if one is due, then changes.
    pub async fn run(&self, mut stop: watch::Receiver<bool>) -> Result<()> {
        let client = self.connect().await?;
        self.ensure_publication(&client).await?;
        let mut position = self.position()?;
        let slot_exists = !client
            .query(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
                &[&self.config.slot],
            )
            .await?
            .is_empty();
        let mut replication = ReplicationClient::connect_gated(self.replication_config(&position))
            .await
            .map_err(|e| ConnectError::Replication(e.to_string()))?;
        if !slot_exists || !position.snapshot_done {
            if slot_exists {
                // A snapshot cut short: its exported snapshot is gone, so it starts over
                // from a new slot.
                warn!(connector = %self.name, "the snapshot did not finish; taking it again");
                client
                    .execute("SELECT pg_drop_replication_slot($1)", &[&self.config.slot])
                    .await?;
            }
            position = self.create_slot_and_snapshot(&mut replication).await?;
        }
        replication
            .start()
            .await
            .map_err(|e| ConnectError::Replication(e.to_string()))?;
        info!(connector = %self.name, lsn = position.lsn, "streaming changes");
        self.progress.written_to(position.lsn);
        self.stream(&mut replication, position, &mut stop).await?;
        replication
            .shutdown()
            .await
            .map_err(|e| ConnectError::Replication(e.to_string()))
    }

    async fn connect(&self) -> Result<Client> {
        self.config.database.connect(&self.name).await
    }

    fn replication_config(&self, position: &Position) -> ReplicationConfig {
        let mut config = ReplicationConfig::new(
            self.config.database.host.clone(),
            self.config.database.user.clone(),
            self.config.database.password.clone(),
            self.config.database.dbname.clone(),
            self.config.slot.clone(),
            self.config.publication.clone(),
        );
        config.port = self.config.database.port;
        config.tls = self.config.database.tls.replication();
        // pgwire-replication refuses verify-full to an IP address unless the name to check
        // is given; the address is that name, checked against the certificate's IP names as
        // libpq does.
        if config.tls.mode.verifies_hostname() {
            config.tls.sni_hostname = Some(self.config.database.host.clone());
        }
        // From the slot's confirmed position, which is never past what the log holds.
        config.start_lsn = Lsn(0);
        config.ack_lsn = Some(Lsn(position.lsn));
        config.status_interval = std::time::Duration::from_secs(1);
        config
    }

    /// Creates the publication when it is missing and `publication.autocreate.mode` allows.
    async fn ensure_publication(&self, client: &Client) -> Result<()> {
        let exists = !client
            .query(
                "SELECT 1 FROM pg_publication WHERE pubname = $1",
                &[&self.config.publication],
            )
            .await?
            .is_empty();
        if exists {
            return Ok(());
        }
        let publication = quote_ident(&self.config.publication);
        let sql = match self.config.publication_mode {
            PublicationMode::Disabled => {
                return Err(ConnectError::Config(format!(
                    "publication '{}' does not exist and 'publication.autocreate.mode' is disabled",
                    self.config.publication
                )));
            }
            PublicationMode::AllTables => {
                format!("CREATE PUBLICATION {publication} FOR ALL TABLES")
            }
            PublicationMode::Filtered => {
                let tables = self.included_tables(client, false).await?;
                if tables.is_empty() {
                    return Err(ConnectError::Config(
                        "'table.include.list' matches no table".into(),
                    ));
                }
                let list: Vec<String> = tables
                    .iter()
                    .map(|(s, t)| format!("{}.{}", quote_ident(s), quote_ident(t)))
                    .collect();
                format!(
                    "CREATE PUBLICATION {publication} FOR TABLE {}",
                    list.join(", ")
                )
            }
        };
        client.batch_execute(&sql).await?;
        Ok(())
    }

    /// The included tables: of the publication, or (before it exists) of the database.
    async fn included_tables(
        &self,
        client: &Client,
        in_publication: bool,
    ) -> Result<Vec<(String, String)>> {
        let rows = if in_publication {
            client
                .query(
                    "SELECT schemaname::text, tablename::text FROM pg_publication_tables \
                     WHERE pubname = $1 ORDER BY 1, 2",
                    &[&self.config.publication],
                )
                .await?
        } else {
            client
                .query(
                    "SELECT table_schema::text, table_name::text FROM information_schema.tables \
                     WHERE table_type = 'BASE TABLE' \
                       AND table_schema NOT IN ('pg_catalog', 'information_schema') \
                     ORDER BY 1, 2",
                    &[],
                )
                .await?
        };
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
            .filter(|(s, t)| self.config.includes(s, t))
            .collect())
    }

    /// Creates the slot, exporting its snapshot, and writes the included tables' rows as of
    /// that snapshot (when `snapshot.mode` asks for them); returns the position after them.
    async fn create_slot_and_snapshot(
        &self,
        replication: &mut ReplicationClient,
    ) -> Result<Position> {
        let rows = replication
            .simple_query(&format!(
                "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput (SNAPSHOT 'export')",
                quote_ident(&self.config.slot)
            ))
            .await
            .map_err(|e| ConnectError::Replication(e.to_string()))?;
        let field = |i: usize| {
            rows.first()
                .and_then(|r| r.get(i).cloned().flatten())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .ok_or_else(|| {
                    ConnectError::Replication("CREATE_REPLICATION_SLOT answered nothing".into())
                })
        };
        let consistent_point = Lsn::parse(&field(1)?)
            .map_err(|e| ConnectError::Replication(e.to_string()))?
            .0;
        let snapshot_name = field(2)?;
        info!(connector = %self.name, slot = %self.config.slot, "created the replication slot");
        let done = Position {
            lsn: consistent_point,
            snapshot_done: true,
            partial: None,
        };
        if self.config.snapshot == SnapshotMode::Initial {
            self.snapshot(&snapshot_name).await?;
        }
        let mut commit = Commit::new();
        commit.state.push(self.position_op(&done)?);
        self.store.commit(commit).await?;
        Ok(done)
    }

    /// Reads every included table in the exported snapshot `snapshot_name`.
    async fn snapshot(&self, snapshot_name: &str) -> Result<()> {
        let client = self.connect().await?;
        client
            .batch_execute(&format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; \
                 SET TRANSACTION SNAPSHOT {}",
                quote_literal(snapshot_name)
            ))
            .await?;
        for (schema, table) in self.included_tables(&client, true).await? {
            let shape = table_shape(&client, &schema, &table).await?;
            let topic = self.config.topic_for(&schema, &table);
            client
                .batch_execute(&format!(
                    "DECLARE eddy_snapshot NO SCROLL CURSOR FOR SELECT * FROM {}.{}",
                    quote_ident(&schema),
                    quote_ident(&table)
                ))
                .await?;
            let mut read = 0usize;
            loop {
                let messages = client
                    .simple_query(&format!("FETCH {SNAPSHOT_BATCH_ROWS} FROM eddy_snapshot"))
                    .await?;
                let mut records = Vec::new();
                let now = chrono::Utc::now().timestamp_millis();
                let source = Source {
                    name: &self.config.topic_prefix,
                    db: &self.config.database.dbname,
                    ts_ms: now,
                    snapshot: "true",
                    tx_id: None,
                    lsn: None,
                };
                for message in &messages {
                    if let SimpleQueryMessage::Row(row) = message {
                        let cells: Vec<Cell> = (0..shape.columns.len())
                            .map(|i| match row.get(i) {
                                Some(text) => Cell::Text(text.to_string()),
                                None => Cell::Null,
                            })
                            .collect();
                        match &self.config.outbox {
                            Some(router) => {
                                let routed = router.route(&shape, (Op::Read, Some(&cells)), now)?;
                                records.extend(routed);
                            }
                            None => records.extend(
                                change_records(
                                    &shape,
                                    (Op::Read, None, Some(&cells)),
                                    &source,
                                    (self.style(), false),
                                )
                                .into_iter()
                                .map(|r| (topic.clone(), r)),
                            ),
                        }
                    }
                }
                if records.is_empty() {
                    break;
                }
                read += records.len();
                self.write(records, None).await?;
            }
            client.batch_execute("CLOSE eddy_snapshot").await?;
            info!(connector = %self.name, table = %format!("{schema}.{table}"), rows = read, "snapshot read");
        }
        client.batch_execute("COMMIT").await?;
        Ok(())
    }

    fn style(&self) -> ValueStyle {
        ValueStyle {
            decimals: self.config.decimals,
        }
    }

    /// Streams committed transactions into the log until `stop`.
    async fn stream(
        &self,
        replication: &mut ReplicationClient,
        mut position: Position,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<()> {
        let mut parser = LogicalReplicationParser::with_protocol_version(1);
        let mut relations: HashMap<u32, TableShape> = HashMap::new();
        let mut transaction: Option<Transaction> = None;
        loop {
            let event = tokio::select! {
                _ = stop.changed() => return Ok(()),
                event = replication.recv() => event,
            };
            let Some(event) = event.map_err(|e| ConnectError::Replication(e.to_string()))? else {
                return Ok(());
            };
            match event {
                ReplicationEvent::Begin {
                    final_lsn,
                    xid,
                    commit_time_micros,
                } => {
                    // A transaction that committed before the stored position is in the log
                    // (PostgreSQL resends from what it was last told); one cut short between
                    // its chunks is in the log up to where it was cut.
                    let skip = match &position.partial {
                        _ if final_lsn.0 < position.lsn => u64::MAX,
                        Some(partial) if partial.final_lsn == final_lsn.0 => partial.changes,
                        _ => 0,
                    };
                    transaction = Some(Transaction {
                        final_lsn: final_lsn.0,
                        xid,
                        ts_ms: (commit_time_micros + POSTGRES_EPOCH_MICROS) / 1_000,
                        records: Vec::new(),
                        changes: 0,
                        skip,
                    });
                }
                ReplicationEvent::XLogData { data, wal_end, .. } => {
                    self.progress.server_at(wal_end.0);
                    let message = parser
                        .parse_wal_message(&data)
                        .map_err(|e| ConnectError::Decode(e.to_string()))?
                        .message;
                    self.apply(message, &mut relations, transaction.as_mut())?;
                    if let Some(open) = transaction.as_mut()
                        && open.records.len() >= self.config.max_batch_size
                    {
                        // Too large to hold whole: this much is written, and noted as written.
                        position.partial = Some(PartialTransaction {
                            final_lsn: open.final_lsn,
                            changes: open.changes,
                        });
                        let records = std::mem::take(&mut open.records);
                        self.write(records, Some(&position)).await?;
                    }
                }
                ReplicationEvent::Commit { end_lsn, .. } => {
                    let Some(done) = transaction.take() else {
                        continue;
                    };
                    if done.skip == u64::MAX || end_lsn.0 <= position.lsn {
                        self.progress.written_to(end_lsn.0);
                        debug!(connector = %self.name, lsn = end_lsn.0, "already written; skipped");
                        continue;
                    }
                    position.lsn = end_lsn.0;
                    position.partial = None;
                    self.write(done.records, Some(&position)).await?;
                    self.progress.written_to(end_lsn.0);
                    replication.update_applied_lsn(end_lsn);
                }
                ReplicationEvent::KeepAlive { wal_end, .. } => {
                    self.progress.server_at(wal_end.0);
                    // Between transactions everything before the server's end is written.
                    if transaction.is_none() && wal_end.0 > position.lsn {
                        replication.update_applied_lsn(wal_end);
                        self.progress.written_to(wal_end.0);
                    }
                }
                ReplicationEvent::Message { .. } | ReplicationEvent::StoppedAt { .. } => {}
            }
        }
    }

    /// One pgoutput message: a table's shape, or a change into the open transaction.
    fn apply(
        &self,
        message: LogicalReplicationMessage,
        relations: &mut HashMap<u32, TableShape>,
        transaction: Option<&mut Transaction>,
    ) -> Result<()> {
        let (relation_id, op, before, after) = match message {
            LogicalReplicationMessage::Relation {
                relation_id,
                namespace,
                relation_name,
                columns,
                ..
            } => {
                let shape = TableShape {
                    schema: namespace.to_string(),
                    table: relation_name.to_string(),
                    columns: columns
                        .iter()
                        .map(|c| Column {
                            name: c.name.to_string(),
                            type_oid: c.type_id,
                            key: c.is_key(),
                        })
                        .collect(),
                };
                relations.insert(relation_id, shape);
                return Ok(());
            }
            LogicalReplicationMessage::Insert { relation_id, tuple } => {
                (relation_id, Op::Create, None, Some(tuple))
            }
            LogicalReplicationMessage::Update {
                relation_id,
                old_tuple,
                new_tuple,
                ..
            } => (relation_id, Op::Update, old_tuple, Some(new_tuple)),
            LogicalReplicationMessage::Delete {
                relation_id,
                old_tuple,
                ..
            } => (relation_id, Op::Delete, Some(old_tuple), None),
            _ => return Ok(()),
        };
        let Some(transaction) = transaction else {
            return Err(ConnectError::Decode(
                "a change outside a transaction".into(),
            ));
        };
        transaction.changes += 1;
        if transaction.changes <= transaction.skip {
            return Ok(());
        }
        let shape = relations.get(&relation_id).ok_or_else(|| {
            ConnectError::Decode(format!(
                "a change to relation {relation_id} before its shape"
            ))
        })?;
        if !self.config.includes(&shape.schema, &shape.table) {
            return Ok(());
        }
        let before = before.map(|t| cells(&t));
        let after = after.map(|t| cells(&t));
        if let Some(router) = &self.config.outbox {
            let routed = router.route(shape, (op, after.as_deref()), transaction.ts_ms)?;
            transaction.records.extend(routed);
            return Ok(());
        }
        let source = Source {
            name: &self.config.topic_prefix,
            db: &self.config.database.dbname,
            ts_ms: transaction.ts_ms,
            snapshot: "false",
            tx_id: Some(transaction.xid),
            lsn: Some(transaction.final_lsn),
        };
        let topic = self.config.topic_for(&shape.schema, &shape.table);
        for record in change_records(
            shape,
            (op, before.as_deref(), after.as_deref()),
            &source,
            (self.style(), self.config.tombstones_on_delete),
        ) {
            transaction.records.push((topic.clone(), record));
        }
        Ok(())
    }

    /// Writes a transaction's records (or a chunk of them) and the position after them, in
    /// one commit.
    async fn write(
        &self,
        records: Vec<(String, Record)>,
        position: Option<&Position>,
    ) -> Result<()> {
        let mut commit = Commit::new();
        let mut by_topic: Vec<(String, Vec<Record>)> = Vec::new();
        for (topic, record) in records {
            match by_topic.last_mut() {
                Some((last, records)) if *last == topic => records.push(record),
                _ => by_topic.push((topic, vec![record])),
            }
        }
        for (topic, records) in by_topic {
            self.store.ensure_topic(&topic)?;
            commit.append(topic, None, records);
        }
        if let Some(position) = position {
            commit.state.push(self.position_op(position)?);
        }
        self.store.commit(commit).await?;
        Ok(())
    }
}

/// A transaction being received: its records wait for its commit, or for a chunk's worth.
struct Transaction {
    final_lsn: u64,
    xid: u32,
    ts_ms: i64,
    records: Vec<(String, Record)>,
    /// Changes received so far.
    changes: u64,
    /// Changes already in the log, not written again (all of them: `u64::MAX`).
    skip: u64,
}

/// A pgoutput tuple's values.
fn cells(tuple: &TupleData) -> Vec<Cell> {
    tuple
        .columns
        .iter()
        .map(|c| {
            if c.is_null() {
                Cell::Null
            } else if c.is_unchanged() {
                Cell::Unchanged
            } else {
                Cell::Text(String::from_utf8_lossy(c.as_bytes()).into_owned())
            }
        })
        .collect()
}

/// A table's columns and which form its primary key.
async fn table_shape(client: &Client, schema: &str, table: &str) -> Result<TableShape> {
    let rows = client
        .query(
            "SELECT a.attname::text, a.atttypid::int8, \
                    coalesce(a.attnum = ANY(i.indkey), false) \
             FROM pg_attribute a \
             JOIN pg_class c ON c.oid = a.attrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary \
             WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[&schema, &table],
        )
        .await?;
    Ok(TableShape {
        schema: schema.to_string(),
        table: table.to_string(),
        columns: rows
            .iter()
            .map(|r| Column {
                name: r.get(0),
                type_oid: u32::try_from(r.get::<_, i64>(1)).unwrap_or(0),
                key: r.get(2),
            })
            .collect(),
    })
}

/// `text` as a quoted SQL string.
fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}
