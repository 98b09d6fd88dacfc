//! `PRINT 'topic' [FROM BEGINNING] [INTERVAL n] [LIMIT n]`: a topic's records as text, in
//! whatever formats its keys and values turn out to be in (see [`formats`]), as ksqlDB prints
//! them: `rowtime: 2020/05/26 12:00:00.000 Z, key: ..., value: ..., partition: 0`.

mod formats;
mod text;

use std::sync::Arc;
use std::time::Duration;

use eddy_registry::SchemaRegistry;
use eddy_sql::ast::Print;
use eddy_storage::{Record, Store};
use tokio::sync::mpsc;

use crate::error::{EngineError, Result};
use formats::Detector;

/// A line of `PRINT`'s output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrintLine {
    /// `Key format: ...` or `Value format: ...`, when what the records may be in changes
    /// (ksqlDB's `/query` answer has them, `/query-stream`'s does not).
    Formats(String),
    /// One record.
    Record(String),
}

/// A running `PRINT`: its lines until its `LIMIT`; dropping it stops it.
#[derive(Debug)]
pub struct PrintTopic {
    /// The topic printed.
    pub topic: String,
    /// The lines, ending when the limit is reached.
    pub lines: mpsc::Receiver<PrintLine>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PrintTopic {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The most bytes read from a partition at once.
const READ_BYTES: usize = 1 << 20;

/// How long one wait for new records lasts before the client is checked on again.
const WAIT: Duration = Duration::from_millis(500);

/// Starts printing `statement`'s topic; `default_from_beginning` is the session's
/// `auto.offset.reset` being `earliest` (ksqlDB's `PRINT` starts at the end otherwise).
pub fn start(
    store: &Store,
    registry: Arc<SchemaRegistry>,
    statement: &Print,
    default_from_beginning: bool,
) -> Result<PrintTopic> {
    let topic = statement.topic.clone();
    if !store.topic_exists(&topic) {
        let similar: Vec<String> = store
            .list_topics()
            .into_iter()
            .filter(|t| t.eq_ignore_ascii_case(&topic))
            .map(|t| format!("\n\tprint '{t}';"))
            .collect();
        let suggestion = if similar.is_empty() {
            String::new()
        } else {
            format!("\nDid you mean:{}", similar.concat())
        };
        return Err(EngineError::statement(format!(
            "Could not find topic '{topic}', or the KSQL user does not have permissions to list \
             the topic. Topic names are case-sensitive.{suggestion}"
        )));
    }
    let interval = statement.interval.unwrap_or(1);
    if interval < 1 {
        return Err(EngineError::statement(format!(
            "INTERVAL must be greater than one, but was: {interval}"
        )));
    }
    let partitions = store.partition_count(&topic)?;
    let from_beginning = statement.from_beginning || default_from_beginning;
    let offsets = (0..partitions)
        .map(|p| {
            if from_beginning {
                store.log_start_offset(&topic, p)
            } else {
                store.last_stable_offset(&topic, p)
            }
        })
        .collect::<std::result::Result<Vec<i64>, _>>()?;
    let (tx, rx) = mpsc::channel(256);
    let printer = Printer {
        store: store.clone(),
        topic: topic.clone(),
        offsets,
        keys: Detector::new(Some(registry.clone()), true),
        values: Detector::new(Some(registry), false),
        shown: (Vec::new(), Vec::new()),
        interval,
        limit: statement.limit,
        polled: 0,
        written: 0,
    };
    let task = tokio::spawn(printer.run(tx));
    Ok(PrintTopic {
        topic,
        lines: rx,
        task,
    })
}

struct Printer {
    store: Store,
    topic: String,
    /// The next offset to read in each partition.
    offsets: Vec<i64>,
    keys: Detector,
    values: Detector,
    /// The key and value formats last announced.
    shown: (Vec<String>, Vec<String>),
    interval: u64,
    limit: Option<u64>,
    polled: u64,
    written: u64,
}

impl Printer {
    async fn run(mut self, tx: mpsc::Sender<PrintLine>) {
        while self.limit.is_none_or(|l| self.written < l) {
            let mut read_any = false;
            for partition in 0..self.offsets.len() {
                let records = match self.read(partition).await {
                    Ok(records) => records,
                    Err(e) => {
                        tracing::warn!(topic = %self.topic, error = %e, "PRINT stopped");
                        return;
                    }
                };
                if records.is_empty() {
                    continue;
                }
                read_any = true;
                for line in self.lines(partition, &records) {
                    if tx.send(line).await.is_err() {
                        return;
                    }
                }
                if self.limit.is_some_and(|l| self.written >= l) {
                    return;
                }
            }
            if !read_any {
                tokio::select! {
                    () = tx.closed() => return,
                    () = self.wait() => {}
                }
            }
        }
    }

    /// The next records of `partition`, read off the async threads.
    async fn read(&mut self, partition: usize) -> Result<Vec<Record>> {
        let store = self.store.clone();
        let topic = self.topic.clone();
        let offset = self.offsets[partition];
        let p = partition as u32;
        let fetched =
            tokio::task::spawn_blocking(move || store.read_records(&topic, p, offset, READ_BYTES))
                .await
                .map_err(|e| EngineError::internal_from("the topic read stopped", e))??;
        self.offsets[partition] = fetched.next_offset.max(offset);
        Ok(fetched.records.into_iter().map(|r| r.record).collect())
    }

    /// Until any partition has a record past its next offset, or a while.
    async fn wait(&self) {
        let waits = self
            .offsets
            .iter()
            .enumerate()
            .map(|(p, offset)| {
                Box::pin(
                    self.store
                        .wait_for_data(&self.topic, p as u32, *offset, WAIT),
                )
            })
            .collect::<Vec<_>>();
        if waits.is_empty() {
            tokio::time::sleep(WAIT).await;
        } else {
            let _ = futures::future::select_all(waits).await;
        }
    }

    /// One partition's records as lines: formats first when they changed, then every
    /// `interval`-th record up to the limit. As ksqlDB does, when a record rules out the format
    /// the batch was printed in, the batch is printed again in the one left.
    fn lines(&mut self, partition: usize, records: &[Record]) -> Vec<PrintLine> {
        let active = (self.keys.active(), self.values.active());
        let mut formatted = self.format(partition, records);
        if (self.keys.active(), self.values.active()) != active {
            formatted = self.format(partition, records);
        }
        let mut lines = self.announce();
        for line in formatted {
            let print = self.polled.is_multiple_of(self.interval);
            self.polled += 1;
            if print {
                self.written += 1;
                lines.push(PrintLine::Record(line));
            }
            if self.limit.is_some_and(|l| self.written >= l) {
                break;
            }
        }
        lines
    }

    fn format(&mut self, partition: usize, records: &[Record]) -> Vec<String> {
        records
            .iter()
            .map(|r| {
                format!(
                    "rowtime: {}, key: {}, value: {}, partition: {partition}",
                    rowtime(r.timestamp),
                    self.keys.format(r.key.as_deref()),
                    self.values.format(r.value.as_deref()),
                )
            })
            .collect()
    }

    /// `Key format:` and `Value format:` lines for what changed since last shown.
    fn announce(&mut self) -> Vec<PrintLine> {
        let mut lines = Vec::new();
        for (prefix, now, shown) in [
            ("Key format: ", self.keys.possible(), &mut self.shown.0),
            ("Value format: ", self.values.possible(), &mut self.shown.1),
        ] {
            if now == *shown {
                continue;
            }
            let text = if now.is_empty() {
                " does not match any supported format. It may be a STRING with encoding other \
                 than UTF8, or some other format."
                    .to_string()
            } else {
                now.join(" or ")
            };
            *shown = now;
            lines.push(PrintLine::Formats(format!("{prefix}{text}")));
        }
        lines
    }
}

/// A record's timestamp as ksqlDB prints it: `2020/05/26 12:00:00.000 Z`, or `N/A`.
fn rowtime(timestamp: i64) -> String {
    if timestamp < 0 {
        return "N/A".to_string();
    }
    chrono::DateTime::from_timestamp_millis(timestamp).map_or_else(
        || "N/A".to_string(),
        |t| t.format("%Y/%m/%d %H:%M:%S%.3f Z").to_string(),
    )
}
