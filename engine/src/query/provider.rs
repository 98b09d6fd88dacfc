//! A materialized table as a DataFusion [`TableProvider`]: each scan reads one consistent
//! snapshot of the table's state (the latest record per key, kept by its materializer), after
//! waiting until that state holds everything appended before the scan, and decodes it into
//! Arrow batches with the table's columns and pseudo-columns.
//!
//! Filters on the key narrow what is read: `key = v`, `key IN (...)` and `OR`s of them are
//! point reads; a range over a `KAFKA`-format `STRING` key (whose stored bytes sort as the
//! strings do) is a range scan; anything else reads every key. DataFusion applies every filter
//! again on what is read, so narrowing is only ever an optimization.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use eddy_storage::Store;

use crate::catalog::DataSource;
use crate::error::{EngineError, Result};
use crate::format::Format;
use crate::query::materialized::{self, Materializers};
use crate::query::source::SourceDecoder;
use eddy_sql::ast::{SourceKind, SqlType};

/// Records decoded into one batch at a time.
const BATCH_ROWS: usize = 4096;

pub use crate::query::materialized::KeyScan;

/// A materialized table read through DataFusion: `SELECT`s, joins and aggregates over a
/// snapshot of its state.
#[derive(Debug)]
pub struct MaterializedTable {
    store: Store,
    materializers: Arc<Materializers>,
    table: DataSource,
    decoder: SourceDecoder,
}

impl MaterializedTable {
    /// The provider of `table`, whose state `materializers` keep (started on the first scan).
    pub(crate) fn new(
        store: &Store,
        materializers: &Arc<Materializers>,
        table: &DataSource,
        schemas: &crate::codec::Schemas,
    ) -> Result<Self> {
        if table.kind != SourceKind::Table {
            return Err(EngineError::statement(format!(
                "{} is a stream; only tables have materialized state",
                table.name
            )));
        }
        Ok(MaterializedTable {
            store: store.clone(),
            materializers: materializers.clone(),
            table: table.clone(),
            decoder: SourceDecoder::new(table, schemas)?,
        })
    }

    /// How a scan with `filters` (all of which must hold) reads the state.
    pub fn key_scan(&self, filters: &[Expr]) -> KeyScan {
        let keys: Vec<&crate::schema::Column> = self.table.key_columns().collect();
        // Windowed keys carry their window; a lookup by the key alone would find nothing.
        let ([key], None) = (keys.as_slice(), &self.table.window) else {
            return KeyScan::All;
        };
        for filter in filters {
            if let Some(values) = pinned_values(filter, &key.name) {
                let encoded: Option<Vec<Vec<u8>>> = values
                    .iter()
                    .map(|v| {
                        json_value(v)
                            .and_then(|v| crate::insert::encode_lookup_key(&self.table, &v))
                    })
                    .collect();
                if let Some(mut encoded) = encoded {
                    encoded.sort();
                    encoded.dedup();
                    return KeyScan::Keys(encoded);
                }
            }
        }
        let ordered = self.table.key_format.format == Format::Kafka && key.ty == SqlType::String;
        if !ordered {
            return KeyScan::All;
        }
        let (mut from, mut to): (Option<Vec<u8>>, Option<Vec<u8>>) = (None, None);
        for filter in filters {
            for (lower, bound) in string_bounds(filter, &key.name) {
                if lower {
                    if from.as_ref().is_none_or(|f| bound > *f) {
                        from = Some(bound);
                    }
                } else if to.as_ref().is_none_or(|t| bound < *t) {
                    to = Some(bound);
                }
            }
        }
        if from.is_none() && to.is_none() {
            return KeyScan::All;
        }
        KeyScan::Range {
            from: from.unwrap_or_default(),
            to,
        }
    }

    /// Waits for the state to hold everything appended so far, then reads and decodes it.
    async fn batches(&self, scan: &KeyScan, limit: Option<usize>) -> Result<Vec<RecordBatch>> {
        let topic = &self.table.topic;
        let ends = (0..self.store.partition_count(topic)?)
            .map(|p| {
                self.store
                    .last_stable_offset(topic, p)
                    .map_err(EngineError::from)
            })
            .collect::<Result<Vec<_>>>()?;
        self.materializers.ensure(&self.store, topic)?;
        self.materializers
            .wait_for(&self.store, topic, &ends)
            .await?;
        let mut batches = Vec::new();
        let mut rows = 0;
        let records = materialized::read(&self.store, topic, ends.len() as u32, scan)?;
        for (partition, records) in records.into_iter().enumerate() {
            for chunk in records.chunks(BATCH_ROWS) {
                if limit.is_some_and(|l| rows >= l) {
                    return Ok(batches);
                }
                // Records that no longer decode (a bad value in the topic) are left out, as a
                // query over the table would drop them.
                let decoded = self.decoder.decode(partition as u32, chunk)?;
                rows += decoded.batch.num_rows();
                batches.push(decoded.batch);
            }
        }
        Ok(batches)
    }
}

#[async_trait]
impl TableProvider for MaterializedTable {
    fn schema(&self) -> SchemaRef {
        self.decoder.schema().clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        // Filters narrow what is read, and DataFusion applies them again on the rows.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let scan = self.key_scan(filters);
        // A limit stops reading early only when no filter could drop rows read.
        let limit = limit.filter(|_| filters.is_empty());
        let batches = self
            .batches(&scan, limit)
            .await
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        let exec: Arc<dyn ExecutionPlan> =
            MemorySourceConfig::try_new_exec(&[batches], self.schema(), projection.cloned())?;
        Ok(exec)
    }
}

fn column_named(expr: &Expr, name: &str) -> bool {
    matches!(expr, Expr::Column(c) if c.name.eq_ignore_ascii_case(name))
}

fn literal(expr: &Expr) -> Option<&ScalarValue> {
    match expr {
        Expr::Literal(value, _) if !value.is_null() => Some(value),
        _ => None,
    }
}

/// The key values `expr` pins the key column `key` to: `key = v`, `key IN (...)`, and `OR`s
/// of those; `None` when it does not pin the key.
#[recursive::recursive]
fn pinned_values(expr: &Expr, key: &str) -> Option<Vec<ScalarValue>> {
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
            Operator::Eq => {
                let (column, value) = if column_named(left, key) {
                    (left, right)
                } else {
                    (right, left)
                };
                (column_named(column, key))
                    .then(|| literal(value).cloned())
                    .flatten()
                    .map(|v| vec![v])
            }
            Operator::Or => {
                let mut values = pinned_values(left, key)?;
                values.extend(pinned_values(right, key)?);
                Some(values)
            }
            _ => None,
        },
        Expr::InList(list) if !list.negated && column_named(&list.expr, key) => {
            list.list.iter().map(|e| literal(e).cloned()).collect()
        }
        _ => None,
    }
}

/// The bounds `expr` puts on a string key `key`, as (is a lower bound, the bound's bytes as
/// a range scan takes them: inclusive lower, exclusive upper). `AND`s contribute each side.
#[recursive::recursive]
fn string_bounds(expr: &Expr, key: &str) -> Vec<(bool, Vec<u8>)> {
    let text = |e: &Expr| match literal(e) {
        Some(ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)))
        | Some(ScalarValue::Utf8View(Some(s))) => Some(s.as_bytes().to_vec()),
        _ => None,
    };
    // The smallest key after `bytes`.
    let after = |mut bytes: Vec<u8>| {
        bytes.push(0);
        bytes
    };
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            if *op == Operator::And {
                let mut bounds = string_bounds(left, key);
                bounds.extend(string_bounds(right, key));
                return bounds;
            }
            // Written as `key op v`, or `v op key` (the operator then reads the other way).
            let (op, value) = if column_named(left, key) {
                (*op, right)
            } else if column_named(right, key) {
                match op.swap() {
                    Some(swapped) => (swapped, left),
                    None => return Vec::new(),
                }
            } else {
                return Vec::new();
            };
            let Some(bytes) = text(value) else {
                return Vec::new();
            };
            match op {
                Operator::GtEq => vec![(true, bytes)],
                Operator::Gt => vec![(true, after(bytes))],
                Operator::Lt => vec![(false, bytes)],
                Operator::LtEq => vec![(false, after(bytes))],
                _ => Vec::new(),
            }
        }
        Expr::Between(between) if !between.negated && column_named(&between.expr, key) => {
            match (text(&between.low), text(&between.high)) {
                (Some(low), Some(high)) => vec![(true, low), (false, after(high))],
                _ => Vec::new(),
            }
        }
        _ => Vec::new(),
    }
}

/// A key value as the lookup encoder takes it.
fn json_value(value: &ScalarValue) -> Option<serde_json::Value> {
    use serde_json::Value;
    Some(match value {
        ScalarValue::Int8(Some(v)) => Value::from(*v),
        ScalarValue::Int16(Some(v)) => Value::from(*v),
        ScalarValue::Int32(Some(v)) => Value::from(*v),
        ScalarValue::Int64(Some(v)) => Value::from(*v),
        ScalarValue::UInt8(Some(v)) => Value::from(*v),
        ScalarValue::UInt16(Some(v)) => Value::from(*v),
        ScalarValue::UInt32(Some(v)) => Value::from(*v),
        ScalarValue::UInt64(Some(v)) => Value::from(*v),
        ScalarValue::Boolean(Some(v)) => Value::from(*v),
        ScalarValue::Utf8(Some(v))
        | ScalarValue::LargeUtf8(Some(v))
        | ScalarValue::Utf8View(Some(v)) => Value::from(v.as_str()),
        _ => return None,
    })
}
