//! Transient queries: `SELECT ... EMIT CHANGES` (push), which streams rows as its input changes
//! until its limit or until closed, and `SELECT` without `EMIT` (pull), which answers from what
//! is in the source now. Both run the same operators as persistent queries, with rows sent to
//! the client instead of committed to a topic, and no state kept after they end.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use eddy_sql::Span;
use eddy_sql::ast::{Ident, Literal, Properties, Property, Query, SourceKind, TableElement};
use eddy_storage::Store;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use crate::catalog::{Catalog, DataSource};
use crate::codec::Schemas;
use crate::error::{EngineError, Result};
use crate::query::QueryPlan;
use crate::query::aggregate::aggregates_anything;
use crate::query::join::JoinTail;
use crate::query::materialized::{self, KeyScan, Materializers};
use crate::query::naming::select_item_name;
use crate::query::operator::Input;
use crate::query::panics::catching_panics;
use crate::query::planner::{plan_aggregation, plan_transient_select};
use crate::query::scope::located_error;
use crate::query::task::reader::PartitionReader;
use crate::query::topic_readers::{SharedReaders, Subscription};
use crate::schema::{Column, ColumnKind};

/// What a transient query sends its client.
#[derive(Debug, Clone, PartialEq)]
pub enum TransientEvent {
    /// A row, its columns in projection order; a tombstone deletes its key (push queries on
    /// tables).
    Row {
        /// Column values as JSON.
        columns: Vec<Value>,
        /// Whether the row deletes its key.
        tombstone: bool,
    },
    /// The query stopped with an error.
    Error(String),
    /// The query ended: "Limit Reached" or "Query Completed".
    Finished(&'static str),
}

/// A running transient query: its id, its columns and its rows. Dropping it stops the query.
#[derive(Debug)]
pub struct TransientQuery {
    /// The query id, for `/close-query`.
    pub id: String,
    /// Whether it is a push query (`EMIT CHANGES`).
    pub push: bool,
    /// Whether it is a pull query over a table, answered with the latest row per key (in
    /// ksqlDB, from the table's materialized state).
    pub materialized: bool,
    /// The result's columns in projection order.
    pub columns: Vec<Column>,
    /// Rows, then a final event.
    pub events: mpsc::Receiver<TransientEvent>,
    stop: watch::Sender<bool>,
}

impl Drop for TransientQuery {
    /// A client that goes away stops its query at once, even while no rows arrive.
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Running transient queries that can be closed by id.
#[derive(Debug)]
pub(crate) struct TransientRegistry {
    next: AtomicU64,
    running: parking_lot::Mutex<HashMap<String, Running>>,
    /// The topics' readers push queries share.
    pub(crate) readers: SharedReaders,
    /// The most bytes of rows a pull query may hold back to sort them or to keep a table's
    /// latest row per key.
    pub(crate) max_held_bytes: usize,
}

/// The default bound on the rows a pull query holds back: 256 MiB.
pub const DEFAULT_PULL_QUERY_MAX_BYTES: usize = 256 << 20;

impl Default for TransientRegistry {
    fn default() -> Self {
        TransientRegistry::with_max_held_bytes(DEFAULT_PULL_QUERY_MAX_BYTES)
    }
}

/// A push or pull query that is running: how to stop it, and what `SHOW QUERIES` says of it.
#[derive(Debug)]
struct Running {
    stop: watch::Sender<bool>,
    sql: String,
    push: bool,
}

impl TransientRegistry {
    /// A registry whose pull queries hold back at most `max_held_bytes` of rows.
    pub(crate) fn with_max_held_bytes(max_held_bytes: usize) -> Self {
        TransientRegistry {
            next: AtomicU64::new(0),
            running: parking_lot::Mutex::new(HashMap::new()),
            readers: SharedReaders::default(),
            max_held_bytes,
        }
    }

    /// Stops every query.
    pub(crate) fn close_all(&self) {
        for (_, running) in self.running.lock().drain() {
            let _ = running.stop.send(true);
        }
    }

    /// Stops a query by id; whether there was one.
    pub(crate) fn close(&self, id: &str) -> bool {
        match self.running.lock().remove(id) {
            Some(running) => {
                let _ = running.stop.send(true);
                true
            }
            None => false,
        }
    }
}

impl TransientRegistry {
    /// How many push queries are running.
    pub(crate) fn push_count(&self) -> usize {
        self.running.lock().values().filter(|r| r.push).count()
    }

    /// The running push queries, as `SHOW QUERIES` lists them (pull queries end on their own).
    pub(crate) fn summaries(&self) -> Vec<crate::query::QuerySummary> {
        let mut queries: Vec<crate::query::QuerySummary> = self
            .running
            .lock()
            .iter()
            .filter(|(_, running)| running.push)
            .map(|(id, running)| crate::query::QuerySummary {
                id: id.clone(),
                sql: running.sql.clone(),
                sink: String::new(),
                sink_topic: String::new(),
                query_type: "PUSH",
                state: "RUNNING".to_string(),
                processed: 0,
                failed: 0,
                emitted: 0,
                messages_per_sec: 0.0,
                last_message_ms: None,
                offsets: None,
                assigned: None,
                standby: Vec::new(),
            })
            .collect();
        queries.sort_by(|a, b| a.id.cmp(&b.id));
        queries
    }
}

/// Rows buffered between a query and a slow client before the query waits.
const CHANNEL_ROWS: usize = 1024;

/// What a pull query may not do, with ksqlDB's messages. (Joins and aggregates are allowed:
/// Eddy answers them where ksqlDB refuses.)
fn check_pull(query: &Query, properties: &HashMap<String, String>) -> Result<()> {
    const MORE: &str = "See https://cnfl.io/queries for more info.";
    if query.window.is_some() && query.group_by.is_empty() {
        return Err(EngineError::statement(format!(
            "Pull queries don't support WINDOW clauses. {MORE}\nAdd EMIT CHANGES if you intended to issue a push query."
        )));
    }
    if let Some(limit) = query.limit {
        if limit < 0 {
            return Err(EngineError::statement(format!(
                "Pull queries don't support negative integers in the LIMIT clause. {MORE}"
            )));
        }
        if properties
            .get("ksql.query.pull.limit.clause.enabled")
            .is_some_and(|v| v.eq_ignore_ascii_case("false"))
        {
            return Err(EngineError::statement(format!(
                "LIMIT clause in pull queries is currently disabled. You can enable them by setting ksql.query.pull.limit.clause.enabled=true. {MORE}\nAdd EMIT CHANGES if you intended to issue a push query."
            )));
        }
    }
    // A pull query over a table reads its state, where rows have no partition or offset.
    let offsets_in = |exprs: &mut dyn Iterator<Item = &eddy_sql::ast::Expr>| -> Vec<String> {
        let mut found: Vec<String> = Vec::new();
        for expr in exprs {
            expr.any(&mut |e| {
                if let eddy_sql::ast::ExprKind::Column { name, .. } = &e.kind
                    && matches!(name.value.as_str(), "ROWPARTITION" | "ROWOFFSET")
                    && !found.contains(&name.value)
                {
                    found.push(name.value.clone());
                }
                false
            });
        }
        found
    };
    let selected = offsets_in(&mut query.select.iter().filter_map(|item| match item {
        eddy_sql::ast::SelectItem::Expr { expr, .. } => Some(expr),
        _ => None,
    }));
    let filtered = offsets_in(&mut query.filter.iter());
    for (clause, columns) in [("SELECT", selected), ("WHERE", filtered)] {
        if !columns.is_empty() {
            let list: Vec<String> = columns.iter().map(|c| format!("`{c}`")).collect();
            return Err(EngineError::statement(format!(
                "Pull queries don't support the following columns in {clause} clauses: {}",
                list.join(", ")
            )));
        }
    }
    Ok(())
}

/// Plans and starts a transient query: spawned, or (a few point reads) returned with the work
/// for the caller to run before it reads the rows.
pub(crate) fn start(
    store: &Store,
    ctx: &datafusion::prelude::SessionContext,
    catalog: &Catalog,
    (registry, materializers, pull_plans): (
        &Arc<TransientRegistry>,
        &Arc<Materializers>,
        &PullPlans,
    ),
    properties: &HashMap<String, String>,
    query: &Query,
    sql: &str,
) -> Result<(TransientQuery, Option<InlineWork>)> {
    let push = query.emit.is_some();
    if !push {
        check_pull(query, properties)?;
    } else if let Some(first) = query.order_by.first() {
        return Err(located_error(first.span.start, ORDER_BY_PULL_ONLY));
    }
    if let Some(limit) = query.limit
        && limit < 0
    {
        return Err(EngineError::statement(format!(
            "LIMIT must be a positive number; got {limit}"
        )));
    }
    let number = registry.next.fetch_add(1, Ordering::Relaxed);
    let source_name = query.from.source.name.value.clone();
    let id = format!("transient_{}_{number}", source_name.to_ascii_uppercase());
    let sink_name = format!("__EDDY_{}", id.to_ascii_uppercase());
    let (mut plan, sink, columns) = if push {
        plan_transient(ctx, catalog, query, &sink_name)?
    } else {
        plan_pull(ctx, catalog, pull_plans, query, &sink_name)?
    };
    plan.apply_properties(properties);
    let order = resolve_order(query, &columns)?;
    let earliest = !push
        || properties
            .get("auto.offset.reset")
            .is_some_and(|v| v.eq_ignore_ascii_case("earliest"));
    let Reading {
        inputs,
        positions,
        ends,
    } = Reading::of(store, &plan, earliest)?;
    let source_is_table = query_source_is_table(catalog, &source_name);
    if !push
        && source_is_table
        && let Some(table) = catalog.source(&source_name)
    {
        if let Some(filter) = &query.filter {
            crate::query::lookup::check_key_values(table, filter)?;
        }
        crate::query::lookup::check_without_table_scans(table, query.filter.as_ref(), properties)?;
    }
    let materialized = !push && source_is_table;
    // A windowed table's RETENTION bounds the windows a pull query over it sees.
    let retention = match (&plan, materialized) {
        (QueryPlan::Stateless(_), true) => catalog
            .source(&source_name)
            .and_then(|table| table.window)
            .and_then(|w| Some((w.window_type, i64::try_from(w.retention_ms?).ok()?))),
        _ => None,
    };
    let table_state = if materialized {
        TableState::for_pull(store, materializers, &plan, query)?
    } else {
        None
    };
    // A push query over one source reads it through the topic's shared reader.
    let subscription = match (push, plan.sources().as_slice()) {
        (true, [source]) => Some(registry.readers.subscribe(
            store,
            &source.topic,
            positions.clone(),
        )?),
        _ => None,
    };
    let (tx, rx) = mpsc::channel(CHANNEL_ROWS);
    let (stop, stopped) = watch::channel(false);
    registry.running.lock().insert(
        id.clone(),
        Running {
            stop: stop.clone(),
            sql: sql.to_string(),
            push,
        },
    );
    let task = Transient {
        store: store.clone(),
        schemas: Schemas::of(ctx),
        id: id.clone(),
        inputs,
        plan,
        sink,
        columns: columns.clone(),
        limit: query.limit.map(|l| l as u64),
        order,
        // A pull query answers from what is there when it starts.
        ends: (!push).then_some(ends),
        table: materialized,
        retention,
        changes_of_table: push && source_is_table,
        table_state,
        subscription,
        max_held_bytes: registry.max_held_bytes,
    };
    // A few point reads answer within the channel's room: the caller runs them before it
    // reads the answer, which saves a task and its wake-ups per lookup.
    let inline = task
        .table_state
        .as_ref()
        .is_some_and(|t| matches!(&t.scan, KeyScan::Keys(keys) if keys.len() < CHANNEL_ROWS))
        && task.order.is_empty();
    let registry = registry.clone();
    let work = async move {
        let id = task.id.clone();
        let client = tx.clone();
        if let Err(panic) = catching_panics(task.run(positions, tx, stopped)).await {
            warn!(query = %id, error = %panic, "transient query failed");
            let _ = client.send(TransientEvent::Error(panic)).await;
        }
        registry.running.lock().remove(&id);
        debug!(query = %id, "transient query ended");
    };
    let query = TransientQuery {
        id,
        push,
        materialized,
        columns,
        events: rx,
        stop,
    };
    Ok(if inline {
        (query, Some(Box::pin(work)))
    } else {
        tokio::spawn(work);
        (query, None)
    })
}

/// Plans a pull query. One that only looks keys up in a table is planned without its
/// `WHERE` (the lookup does the filtering), so its plan is reused for any keys.
fn plan_pull(
    ctx: &datafusion::prelude::SessionContext,
    catalog: &Catalog,
    pull_plans: &PullPlans,
    query: &Query,
    sink_name: &str,
) -> Result<Planned> {
    let source_name = &query.from.source.name.value;
    let cacheable = query.from.joins.is_empty()
        && query.group_by.is_empty()
        && !aggregates_anything(query)
        && catalog.source(source_name).is_some_and(|t| {
            answers_from_state(t) && crate::query::lookup::only_key_pins(t, query.filter.as_ref())
        });
    if !cacheable {
        return plan_transient(ctx, catalog, query, sink_name);
    }
    let mut unfiltered = query.clone();
    unfiltered.filter = None;
    let shape = unfiltered.to_string();
    let table = catalog.source(source_name).cloned();
    if let Some(cached) = pull_plans.get(&shape, table.as_ref()) {
        return Ok(cached);
    }
    let planned = plan_transient(ctx, catalog, &unfiltered, sink_name)?;
    if let Some(table) = table {
        pull_plans.put(shape, table, planned.clone());
    }
    Ok(planned)
}

/// Where a transient query reads: every partition of every source, from the log's start (a
/// pull query, or `auto.offset.reset=earliest`) or its end, and where the log ends now.
struct Reading {
    inputs: Vec<Input>,
    positions: Vec<i64>,
    ends: Vec<i64>,
}

impl Reading {
    fn of(store: &Store, plan: &QueryPlan, earliest: bool) -> Result<Self> {
        let mut reading = Reading {
            inputs: Vec::new(),
            positions: Vec::new(),
            ends: Vec::new(),
        };
        for (side, source) in plan.sources().into_iter().enumerate() {
            for p in 0..store.partition_count(&source.topic)? {
                let end = store.last_stable_offset(&source.topic, p)?;
                reading.ends.push(end);
                reading.positions.push(if earliest {
                    store.log_start_offset(&source.topic, p)?
                } else {
                    end
                });
                reading.inputs.push(Input {
                    side,
                    topic: source.topic.clone(),
                    partition: p,
                });
            }
        }
        Ok(reading)
    }
}

impl TableState {
    /// Where a pull query over tables reads their state, when it can: a query that filters
    /// and projects one unwindowed table reads the table's state (a row per key) rather than
    /// its whole changelog; aggregates over a table and joins between tables read the
    /// tables' states too, as their latest rows give the same answer as replaying every
    /// update. Keys pinned by the `WHERE` of a query over one table are read by key; a key of
    /// the wrong type for the key format finds nothing, as no record could have it.
    fn for_pull(
        store: &Store,
        materializers: &Arc<Materializers>,
        plan: &QueryPlan,
        query: &Query,
    ) -> Result<Option<Self>> {
        let sources = plan.sources();
        let from_state = !sources.is_empty()
            && sources.iter().all(|s| answers_from_state(s))
            && match plan {
                QueryPlan::Stateless(_) | QueryPlan::Aggregate(_) => true,
                QueryPlan::Join(join) => matches!(join.then, JoinTail::Project(_)),
            };
        if !from_state {
            return Ok(None);
        }
        for source in &sources {
            materializers.ensure(store, &source.topic)?;
        }
        let scan = match (plan, sources.as_slice()) {
            (QueryPlan::Stateless(_), [table]) => {
                crate::query::lookup::lookup_keys(table, query.filter.as_ref()).and_then(|values| {
                    // A key that cannot be encoded for a lookup (a registry format's) is
                    // found by scanning; one that matches nothing is left out.
                    if table.key_format.format.uses_registry() {
                        return None;
                    }
                    Some(KeyScan::Keys(
                        values
                            .iter()
                            .filter_map(|v| crate::insert::encode_lookup_key(table, v))
                            .collect(),
                    ))
                })
            }
            _ => None,
        }
        .unwrap_or(KeyScan::All);
        Ok(Some(TableState {
            materializers: materializers.clone(),
            topics: sources
                .iter()
                .enumerate()
                .map(|(side, s)| (side, s.topic.clone()))
                .collect(),
            scan,
        }))
    }
}

/// A transient query's work, when its caller is to run it before reading its rows.
pub(crate) type InlineWork = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// A planned transient query: the plan, the hidden JSON sink its rows go through, and the
/// result's columns in projection order.
type Planned = (QueryPlan, DataSource, Vec<Column>);

/// Plans a transient query.
fn plan_transient(
    ctx: &datafusion::prelude::SessionContext,
    catalog: &Catalog,
    query: &Query,
    sink_name: &str,
) -> Result<Planned> {
    let plan = if !query.from.joins.is_empty() && query.group_by.is_empty() {
        plan_transient_select(ctx, catalog, query, sink_name)?
    } else if query.group_by.is_empty() && aggregates_anything(query) {
        // Aggregates without GROUP BY aggregate every row into one group, as in ksqlDB.
        let mut whole = query.clone();
        whole.group_by = vec![eddy_sql::ast::Expr {
            kind: eddy_sql::ast::ExprKind::Literal(Literal::Integer(1)),
            span: query.span,
        }];
        plan_aggregation(ctx, catalog, &whole, sink_name, true)?
    } else if query.group_by.is_empty() {
        plan_transient_select(ctx, catalog, query, sink_name)?
    } else {
        plan_aggregation(ctx, catalog, query, sink_name, true)?
    };
    // The rows go through a JSON "sink" the client never sees, and are read back as values.
    let sink = catalog.build_transient_sink(&json_sink(sink_name, &plan))?;
    let by_name: HashMap<String, Column> = plan
        .columns()
        .into_iter()
        .map(|c| (c.name.clone(), c))
        .collect();
    let columns: Vec<Column> = plan
        .column_order()
        .iter()
        .filter_map(|n| by_name.get(n).cloned())
        .collect();
    Ok((plan, sink, columns))
}

/// Plans of pull queries that only look keys up, by their SQL without the `WHERE` clause,
/// with the table they were planned against (a table declared again is planned again).
#[derive(Debug, Default)]
pub(crate) struct PullPlans {
    plans: parking_lot::Mutex<HashMap<String, CachedPull>>,
}

#[derive(Debug, Clone)]
struct CachedPull {
    table: DataSource,
    planned: Planned,
}

/// Plans kept at most; past that the cache starts over, as statement shapes are few in
/// practice and a scan of them would cost more than planning.
const PULL_PLANS: usize = 256;

impl PullPlans {
    fn get(&self, shape: &str, table: Option<&DataSource>) -> Option<Planned> {
        let plans = self.plans.lock();
        let cached = plans.get(shape)?;
        (Some(&cached.table) == table).then(|| cached.planned.clone())
    }

    fn put(&self, shape: String, table: DataSource, planned: Planned) {
        let mut plans = self.plans.lock();
        if plans.len() >= PULL_PLANS {
            plans.clear();
        }
        plans.insert(shape, CachedPull { table, planned });
    }
}

/// Whether a pull query over `table` reads its materialized state: a table with no window
/// and no header columns (the state keeps neither).
fn answers_from_state(table: &DataSource) -> bool {
    table.kind == SourceKind::Table
        && table.window.is_none()
        && !table
            .columns
            .iter()
            .any(|c| matches!(c.kind, ColumnKind::Headers | ColumnKind::Header(_)))
}

fn query_source_is_table(catalog: &Catalog, name: &str) -> bool {
    catalog
        .source(name)
        .is_some_and(|s| s.kind == SourceKind::Table)
}

/// A declaration of the hidden sink: the result's columns, keys and values in JSON.
fn json_sink(name: &str, plan: &QueryPlan) -> eddy_sql::ast::CreateSource {
    let property = |name: &str, value: &str| Property {
        name: name.to_string(),
        quoted: false,
        value: Literal::String(value.to_string()),
        span: Span::default(),
    };
    eddy_sql::ast::CreateSource {
        kind: SourceKind::Stream,
        or_replace: false,
        read_only: false,
        if_not_exists: false,
        name: Ident::quoted(name),
        elements: Some(
            plan.columns()
                .into_iter()
                .map(|c| TableElement {
                    name: Ident::quoted(&c.name),
                    ty: c.ty,
                    constraint: (c.kind == ColumnKind::Key)
                        .then_some(eddy_sql::ast::ColumnConstraint::Key),
                    span: Span::default(),
                })
                .collect(),
        ),
        properties: Properties(
            [
                Some(property("KAFKA_TOPIC", name)),
                plan.has_keys().then(|| property("KEY_FORMAT", "JSON")),
                Some(property("VALUE_FORMAT", "JSON")),
            ]
            .into_iter()
            .flatten()
            .collect(),
        ),
    }
}

/// The final message of a query that stopped at its `LIMIT`.
pub const LIMIT_REACHED: &str = "Limit Reached";
/// The final message of a pull query that read all there was.
pub const QUERY_COMPLETED: &str = "Query Completed";

/// The error for `ORDER BY` anywhere but in a pull query.
pub(crate) const ORDER_BY_PULL_ONLY: &str = "ORDER BY is only supported in pull queries: a push or persistent query's rows come out as they happen, in no order it could sort";

/// How a pull query's rows are ordered: each item's result column, whether descending, and
/// whether nulls come first.
type RowOrder = Vec<(usize, bool, bool)>;

/// Resolves `ORDER BY` against the result's columns: a column by name, a position from 1, or
/// an expression the query selects.
fn resolve_order(query: &Query, columns: &[Column]) -> Result<RowOrder> {
    use eddy_sql::ast::{ExprKind, SelectItem};
    let by_name = |name: &str| {
        columns
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(name))
    };
    let wildcards = query
        .select
        .iter()
        .any(|item| !matches!(item, SelectItem::Expr { .. }));
    query
        .order_by
        .iter()
        .map(|item| {
            let index = match &item.expr.kind {
                ExprKind::Literal(Literal::Integer(n)) => {
                    let n = *n;
                    if n < 1 || n as usize > columns.len() {
                        return Err(located_error(
                            item.span.start,
                            format!(
                                "ORDER BY position {n} is not in the result, whose columns are numbered 1 to {}",
                                columns.len()
                            ),
                        ));
                    }
                    Some(n as usize - 1)
                }
                ExprKind::Column { source: None, name } => by_name(&name.value),
                _ => None,
            }
            .or_else(|| {
                let text = item.expr.to_string();
                query
                    .select
                    .iter()
                    .enumerate()
                    .find_map(|(i, selected)| match selected {
                        SelectItem::Expr { expr, alias } if expr.to_string() == text => {
                            match select_item_name(expr, alias.as_ref()) {
                                Ok(Some(name)) => by_name(&name),
                                _ => (!wildcards).then_some(i),
                            }
                        }
                        _ => None,
                    })
            })
            .ok_or_else(|| {
                located_error(
                    item.span.start,
                    format!(
                        "ORDER BY `{}` is not a column of the result; order by a selected column, its alias or its position",
                        item.expr
                    ),
                )
            })?;
            // Nulls sort as larger than any value unless the item says otherwise.
            Ok((index, item.descending, item.nulls_first.unwrap_or(item.descending)))
        })
        .collect()
}

/// Compares two result values as SQL orders them: numbers by value, strings by their bytes,
/// booleans false first, and nested values element by element.
fn value_order(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x.cmp(&y),
            _ => {
                let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
                x.total_cmp(&y)
            }
        },
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ => key_order(a, b),
    }
}

/// Sorts rows by `order`, keeping the incoming order among equal rows.
fn sort_rows(rows: &mut [TransientEvent], order: &RowOrder) {
    use std::cmp::Ordering;
    let column = |event: &TransientEvent, i: usize| match event {
        TransientEvent::Row { columns, .. } => columns.get(i).cloned().unwrap_or(Value::Null),
        _ => Value::Null,
    };
    rows.sort_by(|a, b| {
        for &(i, descending, nulls_first) in order {
            let (x, y) = (column(a, i), column(b, i));
            let ordering = match (x.is_null(), y.is_null()) {
                (true, true) => Ordering::Equal,
                (true, false) if nulls_first => Ordering::Less,
                (true, false) => Ordering::Greater,
                (false, true) if nulls_first => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) if descending => value_order(&y, &x),
                (false, false) => value_order(&x, &y),
            };
            if ordering.is_ne() {
                return ordering;
            }
        }
        Ordering::Equal
    });
}

/// The order of keys in a table's store: numbers by value, strings by their bytes, and
/// multi-column keys column by column.
fn key_order(a: &Value, b: &Value) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
            x.partial_cmp(&y).unwrap_or(Ordering::Equal)
        }
        (Value::String(x), Value::String(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Value::Object(x), Value::Object(y)) => x
            .values()
            .zip(y.values())
            .map(|(x, y)| key_order(x, y))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal),
        (Value::Array(x), Value::Array(y)) => x
            .iter()
            .zip(y)
            .map(|(x, y)| key_order(x, y))
            .find(|o| o.is_ne())
            .unwrap_or_else(|| x.len().cmp(&y.len())),
        _ => a.to_string().cmp(&b.to_string()),
    }
}

struct Transient {
    store: Store,
    /// The registry the formats of its sources use.
    schemas: Schemas,
    id: String,
    /// The partitions it reads, with `positions` and `ends` in the same order.
    inputs: Vec<Input>,
    plan: QueryPlan,
    sink: DataSource,
    columns: Vec<Column>,
    limit: Option<u64>,
    /// `ORDER BY`: the rows are gathered, sorted, and only then limited and sent.
    order: RowOrder,
    ends: Option<Vec<i64>>,
    table: bool,
    /// A pull query over a windowed table with `RETENTION`: its window type and retention.
    retention: Option<(crate::catalog::WindowType, i64)>,
    /// A push query over a table: its rows are changes, and a key's tombstone is sent only
    /// while a row of that key stands (a row the filter never let through deletes nothing).
    changes_of_table: bool,
    /// For a pull query answered from a table's materialized state: where that state is.
    table_state: Option<TableState>,
    /// For a push query over one topic: its share of the topic's reader.
    subscription: Option<Subscription>,
    /// The most bytes of rows it may hold back (see [`Answer::held_bytes`]).
    max_held_bytes: usize,
}

/// About how many bytes a row takes in memory, to bound what a pull query holds back.
fn event_bytes(event: &TransientEvent) -> usize {
    fn value_bytes(value: &Value) -> usize {
        match value {
            Value::String(s) => 32 + s.len(),
            Value::Array(items) => 32 + items.iter().map(value_bytes).sum::<usize>(),
            Value::Object(fields) => {
                48 + fields
                    .iter()
                    .map(|(k, v)| 32 + k.len() + value_bytes(v))
                    .sum::<usize>()
            }
            _ => 32,
        }
    }
    match event {
        TransientEvent::Row { columns, .. } => 64 + columns.iter().map(value_bytes).sum::<usize>(),
        TransientEvent::Error(message) => 64 + message.len(),
        TransientEvent::Finished(_) => 64,
    }
}

/// A table's materialized state, for a pull query.
struct TableState {
    materializers: Arc<Materializers>,
    /// Each source's side and topic, in the order their rows go in: a join's left side first,
    /// so each row of the right side finds the left rows it joins.
    topics: Vec<(usize, String)>,
    /// What to read of each table: the keys a filter over one table pins (encoded in the
    /// table's key format), else every key.
    scan: KeyScan,
}

/// Whether a transient query goes on, or has stopped: with its final message, or (`None`)
/// because it was stopped or its client is gone.
enum Flow {
    Go,
    Stop(Option<&'static str>),
}

/// The rows a transient query keeps back until its input is read, and what it has sent.
struct Answer {
    /// A pull query over a table answers with the latest row per key, in key order as a
    /// table's store would give them.
    latest: HashMap<Vec<u8>, TransientEvent>,
    /// With ORDER BY, every row before any goes out.
    gathered: Vec<TransientEvent>,
    /// About how many bytes `latest` and `gathered` hold.
    held_bytes: usize,
    /// A push query over a table: the keys whose row stands.
    standing: std::collections::HashSet<Vec<u8>>,
    /// The newest window of a windowed table with RETENTION: its start (a session's end).
    newest_window: i64,
    /// Rows sent.
    sent: u64,
}

impl Default for Answer {
    fn default() -> Self {
        Answer {
            latest: HashMap::new(),
            gathered: Vec::new(),
            held_bytes: 0,
            standing: std::collections::HashSet::new(),
            newest_window: i64::MIN,
            sent: 0,
        }
    }
}

impl Answer {
    /// A push query over a table: whether a change goes out. A key's tombstone is sent only
    /// while a row of that key stands (a row the filter never let through deletes nothing).
    fn stands(&mut self, record: &eddy_storage::Record, event: &TransientEvent) -> bool {
        let key = record.key.as_deref().unwrap_or_default().to_vec();
        match event {
            TransientEvent::Row {
                tombstone: true, ..
            } => self.standing.remove(&key),
            _ => {
                self.standing.insert(key);
                true
            }
        }
    }

    /// Keeps a table row as its key's latest, or forgets the key on a tombstone; fails once
    /// the rows kept would pass `max_bytes`.
    fn keep_latest(
        &mut self,
        record: &eddy_storage::Record,
        event: TransientEvent,
        max_bytes: usize,
    ) -> Result<()> {
        let key = record.key.as_deref().unwrap_or_default().to_vec();
        let replaced = if matches!(
            event,
            TransientEvent::Row {
                tombstone: false,
                ..
            }
        ) {
            self.held_bytes += key.len() + event_bytes(&event);
            self.latest.insert(key, event)
        } else {
            self.latest.remove(&key)
        };
        if let Some(old) = replaced {
            self.held_bytes = self
                .held_bytes
                .saturating_sub(record.key.as_deref().map_or(0, <[u8]>::len) + event_bytes(&old));
        }
        self.check_held(max_bytes)
    }

    /// Gathers a row to be sorted for `ORDER BY`. With a `LIMIT`, only the rows that can
    /// still be among the first are kept: sorting is stable, so of rows equal under the
    /// order the earlier ones stay.
    fn gather(
        &mut self,
        event: TransientEvent,
        (order, limit): (&RowOrder, Option<u64>),
        max_bytes: usize,
    ) -> Result<()> {
        self.held_bytes += event_bytes(&event);
        self.gathered.push(event);
        // Every `limit` rows or so, so the sorting costs a logarithm per row.
        if let Some(limit) = limit.and_then(|l| usize::try_from(l).ok())
            && (self.gathered.len() >= limit.saturating_mul(2).max(64)
                || self.held_bytes > max_bytes)
        {
            sort_rows(&mut self.gathered, order);
            self.gathered.truncate(limit);
            self.held_bytes = self.gathered.iter().map(event_bytes).sum();
        }
        self.check_held(max_bytes)
    }

    fn check_held(&self, max_bytes: usize) -> Result<()> {
        if self.held_bytes > max_bytes {
            return Err(EngineError::statement(format!(
                "The pull query's answer holds more than {max_bytes} bytes of rows to sort, or to keep the latest row of each key, before it can send them (--pull-query-max-bytes). Narrow it with a WHERE clause, or add a LIMIT to an ORDER BY."
            )));
        }
        Ok(())
    }
}

/// Where a push or pull query's next records come from: the topic's shared reader for a push
/// query over one topic, else its own reader.
struct Next<'r> {
    reader: &'r mut PartitionReader,
    subscription: Option<Subscription>,
}

impl Next<'_> {
    /// The next records and the input they are from; `None` once stopped.
    async fn read(
        &mut self,
        shared_topic: &str,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Option<(Input, eddy_storage::FetchedRecords)>> {
        Ok(match self.subscription.as_mut() {
            Some(shared) => shared.next(stop).await?.map(|(partition, fetched)| {
                let input = Input {
                    side: 0,
                    topic: shared_topic.to_string(),
                    partition,
                };
                (input, fetched)
            }),
            None => match self.reader.next(stop).await? {
                Some((index, fetched)) => {
                    self.reader.advance(index, fetched.next_offset);
                    Some((self.reader.input(index).clone(), fetched))
                }
                None => None,
            },
        })
    }
}

/// Records a pull query hands the operator at a time from a table's state.
const SNAPSHOT_BATCH: usize = 4096;

impl Transient {
    async fn run(
        mut self,
        positions: Vec<i64>,
        tx: mpsc::Sender<TransientEvent>,
        mut stop: watch::Receiver<bool>,
    ) {
        let subscription = self.subscription.take();
        let outcome = self.rows(positions, subscription, &tx, &mut stop).await;
        let last = match outcome {
            Ok(Some(message)) => TransientEvent::Finished(message),
            Ok(None) => return,
            Err(e) => {
                warn!(query = %self.id, error = %e, "transient query failed");
                TransientEvent::Error(e.to_string())
            }
        };
        let _ = tx.send(last).await;
    }

    /// Sends rows until the limit, the end of a pull query's input, or a stop (`None`).
    async fn rows(
        &self,
        positions: Vec<i64>,
        subscription: Option<Subscription>,
        tx: &mpsc::Sender<TransientEvent>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Option<&'static str>> {
        let namespace = crate::query::state::namespace(&self.id);
        let mut operator =
            self.plan
                .operator(&self.store, &namespace, &self.sink, false, &self.schemas)?;
        if self.limit == Some(0) {
            return Ok(Some(LIMIT_REACHED));
        }
        let mut answer = Answer::default();
        let flow = if self.table_state.is_some() {
            self.read_state(operator.as_mut(), &mut answer, stop)
                .await?
        } else {
            let mut reader =
                PartitionReader::over(&self.store, &self.id, self.inputs.clone(), positions)
                    .tables_first(&self.plan)
                    .final_rows_by_window(&self.plan);
            let mut next = Next {
                reader: &mut reader,
                subscription,
            };
            self.read_log(operator.as_mut(), &mut next, (&mut answer, tx), stop)
                .await?
        };
        if let Flow::Stop(outcome) = flow {
            return Ok(outcome);
        }
        self.send_answer(answer, tx).await
    }

    /// A pull query over tables' states: every table's rows (or the keys looked up), each
    /// table read once its state holds everything appended before the query began.
    async fn read_state(
        &self,
        operator: &mut dyn crate::query::operator::Operator,
        answer: &mut Answer,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Flow> {
        let Some(state) = &self.table_state else {
            return Ok(Flow::Go);
        };
        let key_columns: Vec<&Column> = self.sink.key_columns().collect();
        for (side, topic) in &state.topics {
            let ends: Vec<i64> = self
                .inputs
                .iter()
                .zip(self.ends.as_deref().unwrap_or_default())
                .filter(|(input, _)| input.side == *side)
                .map(|(_, end)| *end)
                .collect();
            state
                .materializers
                .wait_for(&self.store, topic, &ends)
                .await?;
            let partitions =
                materialized::read(&self.store, topic, ends.len() as u32, &state.scan)?;
            for (partition, records) in partitions.into_iter().enumerate() {
                let input = Input {
                    side: *side,
                    topic: topic.clone(),
                    partition: partition as u32,
                };
                for chunk in records.chunks(SNAPSHOT_BATCH) {
                    if *stop.borrow() {
                        return Ok(Flow::Stop(None));
                    }
                    let step = operator.step(&self.store, &input, chunk)?;
                    for record in step.records {
                        let event = self.event(&record, &key_columns)?;
                        answer.keep_latest(&record, event, self.max_held_bytes)?;
                    }
                }
            }
        }
        Ok(Flow::Go)
    }

    /// A push query, or a pull query over a stream's log: reads its inputs (to where they
    /// ended when a pull query began) and sends each row as it comes, unless the rows are a
    /// table's latest or are to be sorted first.
    async fn read_log(
        &self,
        operator: &mut dyn crate::query::operator::Operator,
        next: &mut Next<'_>,
        (answer, tx): (&mut Answer, &mpsc::Sender<TransientEvent>),
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Flow> {
        let key_columns: Vec<&Column> = self.sink.key_columns().collect();
        let shared_topic = self
            .inputs
            .first()
            .map(|i| i.topic.clone())
            .unwrap_or_default();
        loop {
            if let Some(ends) = &self.ends
                && next
                    .reader
                    .positions()
                    .iter()
                    .zip(ends)
                    .all(|(p, e)| p >= e)
            {
                return Ok(Flow::Go);
            }
            let Some((input, fetched)) = next.read(&shared_topic, stop).await? else {
                return Ok(Flow::Stop(None));
            };
            if let Some((window_type, _)) = self.retention {
                for r in &fetched.records {
                    if let Some(bound) = r
                        .record
                        .key
                        .as_deref()
                        .and_then(|k| crate::query::source::window_bound_in_key(k, window_type))
                    {
                        answer.newest_window = answer.newest_window.max(bound);
                    }
                }
            }
            let step = operator.step(&self.store, &input, &fetched.records)?;
            for record in step.records {
                let event = self.event(&record, &key_columns)?;
                if self.table {
                    answer.keep_latest(&record, event, self.max_held_bytes)?;
                    continue;
                }
                if self.changes_of_table && !answer.stands(&record, &event) {
                    continue;
                }
                if !self.order.is_empty() {
                    answer.gather(event, (&self.order, self.limit), self.max_held_bytes)?;
                    continue;
                }
                if let Flow::Stop(outcome) = self.send(event, &mut answer.sent, tx).await {
                    return Ok(Flow::Stop(outcome));
                }
            }
        }
    }

    /// Sends what was kept back: a table's latest rows (within a windowed table's
    /// retention) in key order, and rows gathered for `ORDER BY`, sorted.
    async fn send_answer(
        &self,
        answer: Answer,
        tx: &mpsc::Sender<TransientEvent>,
    ) -> Result<Option<&'static str>> {
        let Answer {
            latest,
            mut gathered,
            newest_window,
            mut sent,
            ..
        } = answer;
        let mut latest: Vec<(Value, TransientEvent)> = latest
            .into_iter()
            .map(|(key, event)| (serde_json::from_slice(&key).unwrap_or(Value::Null), event))
            .collect();
        if let Some((window_type, retention)) = self.retention {
            // As Kafka Streams' window store drops what is older than its retention behind
            // the newest window it holds.
            let oldest_kept = newest_window.saturating_sub(retention).saturating_add(1);
            let bound = if window_type == crate::catalog::WindowType::Session {
                crate::query::source::WINDOWEND
            } else {
                crate::query::source::WINDOWSTART
            };
            latest.retain(|(key, _)| {
                key.get(bound)
                    .and_then(Value::as_i64)
                    .is_none_or(|b| b >= oldest_kept)
            });
        }
        latest.sort_by(|(a, _), (b, _)| key_order(a, b));
        gathered.extend(latest.into_iter().map(|(_, event)| event));
        // Sorted after the key order, so rows equal under ORDER BY stay in key order.
        sort_rows(&mut gathered, &self.order);
        for event in gathered {
            if let Flow::Stop(outcome) = self.send(event, &mut sent, tx).await {
                return Ok(outcome);
            }
        }
        Ok(Some(QUERY_COMPLETED))
    }

    /// Sends one row; stops once the client is gone or the limit is reached.
    async fn send(
        &self,
        event: TransientEvent,
        sent: &mut u64,
        tx: &mpsc::Sender<TransientEvent>,
    ) -> Flow {
        if tx.send(event).await.is_err() {
            return Flow::Stop(None);
        }
        *sent += 1;
        if self.limit.is_some_and(|l| *sent >= l) {
            return Flow::Stop(Some(LIMIT_REACHED));
        }
        Flow::Go
    }

    /// A sink record read back as a row of values in projection order.
    fn event(&self, record: &eddy_storage::Record, keys: &[&Column]) -> Result<TransientEvent> {
        let parse = |bytes: Option<&[u8]>| -> Result<Value> {
            match bytes {
                None => Ok(Value::Null),
                Some(b) => serde_json::from_slice(b)
                    .map_err(|e| EngineError::internal_from("cannot read a row back", e)),
            }
        };
        let key = parse(record.key.as_deref())?;
        let value = parse(record.value.as_deref())?;
        let tombstone = record.value.is_none();
        let columns = self
            .columns
            .iter()
            .map(|c| {
                if c.kind == ColumnKind::Key {
                    if keys.len() == 1 {
                        key.clone()
                    } else {
                        key.get(&c.name).cloned().unwrap_or(Value::Null)
                    }
                } else {
                    value.get(&c.name).cloned().unwrap_or(Value::Null)
                }
            })
            .collect();
        Ok(TransientEvent::Row { columns, tombstone })
    }
}
