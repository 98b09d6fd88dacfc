//! Joins: stream–stream within a window, stream–table, and table–table on the primary key or
//! on a foreign key, with ksqlDB's rules, names and errors.
//!
//! Planning turns the join into a projection over *joined rows*: every column of both sides
//! renamed `ALIAS_COLUMN`, the result's `ROWTIME`, and the result key. The query's `SELECT`,
//! `WHERE` and `PARTITION BY` are rewritten onto those names and planned by the same code as a
//! single-source query.
//!
//! Processing keeps each side's records (as stored in the log) in the query's state: a table's
//! latest row per key, a stream's records within the join window, and, for outer stream–stream
//! joins with a grace period, the records still waiting for a partner. Matches are decoded
//! back with the sides' decoders and laid side by side. A side whose join expression is not its
//! key is re-keyed in process (the `REKEY` step of the plan); state is keyed by the join key,
//! not by partition, so no repartition topic is needed on one node.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, Int32Array, Int64Array, RecordBatch, RecordBatchOptions, UInt32Array,
    new_null_array,
};
use datafusion::arrow::compute::{interleave, take};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::DFSchema;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use eddy_sql::ast::{
    BinaryOp, Expr, ExprKind, Ident, JoinKind, Query, SelectItem, SourceKind, SqlType,
};
use eddy_sql::{Position, Span};
use eddy_storage::{LogRecord, Record, RecordHeader, Store};

use crate::catalog::{Catalog, DataSource};
use crate::codec::RowCodec;
use crate::error::{EngineError, Result};
use crate::format::{Format, FormatSpec};
use crate::query::aggregate::{AggregatePlan, StateWrites};
use crate::query::plan::{
    ProjectionInput, StatelessPlan, located_error, plan_projection, source_scope,
};
use crate::query::runner::{Projectable, SinkEncoder, StepOutput, project};
use crate::query::source::{ROWPARTITION, ROWTIME, SourceDecoder, WINDOWEND, WINDOWSTART};
use crate::schema::{Column, ColumnKind, PSEUDO_COLUMNS, type_display};

/// Inner, left, right or full outer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinType {
    /// Rows with a partner on both sides.
    Inner,
    /// Every left row.
    Left,
    /// Every right row.
    Right,
    /// Every row of either side.
    Outer,
}

impl JoinType {
    /// Whether rows of `side` (0 left, 1 right) are kept without a partner.
    fn preserves(self, side: usize) -> bool {
        matches!(
            (self, side),
            (JoinType::Outer, _) | (JoinType::Left, 0) | (JoinType::Right, 1)
        )
    }

    /// As ksqlDB writes it in messages.
    fn text(self) -> &'static str {
        match self {
            JoinType::Inner => "[INNER] JOIN",
            JoinType::Left => "LEFT [OUTER] JOIN",
            JoinType::Right => "RIGHT [OUTER] JOIN",
            JoinType::Outer => "[FULL] OUTER JOIN",
        }
    }
}

/// A stream–stream join's window, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinWindowMs {
    /// How far a right record may precede a left one.
    pub before: i64,
    /// How far a right record may follow a left one.
    pub after: i64,
    /// How long after the window closes late records still join.
    pub grace: i64,
    /// With an explicit `GRACE PERIOD`, outer results wait for the window to close (so none is
    /// spurious); without one, they are emitted at once, as ksqlDB did before grace periods.
    pub wait_for_close: bool,
}

impl JoinWindowMs {
    /// How long a side keeps its records.
    fn retention(&self) -> i64 {
        self.before + self.after + self.grace
    }
}

/// What is joined to what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinShape {
    /// Two streams, within a window.
    StreamStream(JoinWindowMs),
    /// A stream looking up a table by the table's key.
    StreamTable,
    /// Two tables on their keys.
    TableTable,
    /// A left-table expression against the right table's key.
    ForeignKey,
}

/// One input of a join.
#[derive(Debug, Clone)]
pub struct JoinSide {
    /// The source read.
    pub source: DataSource,
    /// Its name in the query.
    pub alias: String,
    /// Decodes its records.
    pub decoder: SourceDecoder,
    /// The side's join expression over its decoded rows.
    pub key: Arc<dyn PhysicalExpr>,
    /// Whether that expression is not the side's key, so its rows are re-keyed.
    pub rekeyed: bool,
}

/// One stage of a join: the rows so far (or the first source) joined with one more source.
#[derive(Debug, Clone)]
pub struct JoinStage {
    /// The left input: the first source, or the previous stage's rows.
    pub left: JoinSide,
    /// The right input: the next source.
    pub right: JoinSide,
    /// Inner, left, right or outer.
    pub join_type: JoinType,
    /// Streams or tables, and the window.
    pub shape: JoinShape,
    /// The type of the join key.
    pub key_type: DataType,
    /// Both sources' window, when they are windowed: the window is part of the join key.
    pub window: Option<crate::catalog::WindowInfo>,
    /// Joined rows: both sides' columns renamed, `ROWTIME`, and a synthetic key if any.
    pub joined_schema: SchemaRef,
    /// The column of joined rows that holds the join key (none for foreign-key joins, whose
    /// key is the left table's).
    pub key_column: Option<usize>,
    /// How the rows become the next stage's input; none for the last stage.
    pub handoff: Option<Handoff>,
}

impl JoinStage {
    /// The sides in order.
    fn sides(&self) -> [&JoinSide; 2] {
        [&self.left, &self.right]
    }
}

/// The joins of a query: its sources, and a chain of stages evaluated left to right.
#[derive(Debug, Clone)]
pub struct JoinChain {
    /// The sources in the order the query names them.
    pub sources: Vec<DataSource>,
    /// Stage `k` joins source `k + 1` to what came before.
    pub stages: Vec<JoinStage>,
}

impl JoinChain {
    /// The stage that source `index` feeds, and on which side.
    fn entry(index: usize) -> (usize, usize) {
        if index <= 1 {
            (0, index)
        } else {
            (index - 1, 1)
        }
    }

    /// The state of each stage, read back from the store.
    pub fn load_states(&self, store: &Store, query_id: &str) -> Result<Vec<JoinState>> {
        self.stages
            .iter()
            .enumerate()
            .map(|(k, stage)| JoinState::load(store, query_id, stage, k as u8))
            .collect()
    }

    /// Whether the last stage's rows form a table (a changelog), not a stream.
    pub fn yields_table(&self) -> bool {
        self.stages
            .last()
            .is_some_and(|s| matches!(s.shape, JoinShape::TableTable | JoinShape::ForeignKey))
    }
}

/// A planned join query: the joins, then a projection.
#[derive(Debug, Clone)]
pub struct JoinPlan {
    /// The sources and the stages joining them.
    pub chain: JoinChain,
    /// Filter and projection over the last stage's rows.
    pub post: StatelessPlan,
}

impl JoinPlan {
    /// The window of the result's keys, for windowed sources.
    pub fn window(&self) -> Option<crate::catalog::WindowInfo> {
        self.chain.stages.first().and_then(|s| s.window)
    }

    /// The execution plan as `EXPLAIN` prints it.
    pub fn explain(&self, query_id: &str, sink_name: &str) -> String {
        let schema = |columns: &[Column]| crate::schema::schema_text(columns, false);
        let output = schema(&self.post.columns());
        let joined = schema(&self.post.source.columns);
        let mut steps = vec![
            (
                0,
                format!("[ SINK ] | Schema: {output} | Logger: {query_id}.{sink_name}"),
            ),
            (
                1,
                format!("[ PROJECT ] | Schema: {output} | Logger: {query_id}.Project"),
            ),
        ];
        let mut depth = 2;
        if self.post.filter.is_some() {
            steps.push((
                depth,
                format!("[ FILTER ] | Schema: {joined} | Logger: {query_id}.WhereFilter"),
            ));
            depth += 1;
        }
        // A source, under its re-keying step if it has one.
        let source_steps = |side: &JoinSide, depth: usize, steps: &mut Vec<(usize, String)>| {
            let input = schema(&side.source.columns);
            let alias = &side.alias;
            let mut depth = depth;
            if side.rekeyed {
                steps.push((
                    depth,
                    format!("[ REKEY ] | Schema: {input} | Logger: {query_id}.{alias}.Rekey"),
                ));
                depth += 1;
            }
            steps.push((
                depth,
                format!(
                    "[ SOURCE ] | Schema: {input} | Logger: {query_id}.KafkaTopic_{alias}.Source"
                ),
            ));
        };
        for (k, stage) in self.chain.stages.iter().enumerate().rev() {
            let kind = match stage.shape {
                JoinShape::StreamStream(_) => "STREAM_STREAM_JOIN",
                JoinShape::StreamTable => "STREAM_TABLE_JOIN",
                JoinShape::TableTable => "TABLE_TABLE_JOIN",
                JoinShape::ForeignKey => "FK_TABLE_TABLE_JOIN",
            };
            steps.push((
                depth,
                format!("[ {kind} ] | Schema: {joined} | Logger: {query_id}.Join{k}"),
            ));
            depth += 1;
            source_steps(&stage.right, depth, &mut steps);
            if k == 0 {
                source_steps(&stage.left, depth, &mut steps);
            }
        }
        crate::query::plan::explain_text(steps)
    }
}

/// Turns a stage's joined rows into records for the next stage, as a repartition topic would
/// carry them between nodes: the key columns and the rest, as JSON.
#[derive(Debug, Clone)]
pub struct Handoff {
    key_codec: RowCodec,
    value_codec: RowCodec,
    key_fields: Vec<usize>,
    value_fields: Vec<usize>,
}

impl Handoff {
    fn new(rows: &DataSource, joined: &SchemaRef) -> Result<Self> {
        let keys: Vec<&Column> = rows.key_columns().collect();
        let values: Vec<&Column> = rows.value_columns().collect();
        let index = |c: &&Column| {
            joined
                .index_of(&c.name)
                .map_err(|e| EngineError::statement(e.to_string()))
        };
        Ok(Handoff {
            key_codec: RowCodec::new(rows.key_format, &keys, false)?,
            value_codec: RowCodec::new(rows.value_format, &values, true)?,
            key_fields: keys.iter().map(index).collect::<Result<_>>()?,
            value_fields: values.iter().map(index).collect::<Result<_>>()?,
        })
    }

    /// The next stage's input records: one per result, a deleted result without a value.
    fn records(
        &self,
        joined: &RecordBatch,
        outputs: &[Output],
        inputs: &[LogRecord],
        state: &mut JoinState,
    ) -> Result<Vec<LogRecord>> {
        let n = joined.num_rows();
        let pick = |fields: &[usize]| -> Vec<ArrayRef> {
            fields.iter().map(|&i| joined.column(i).clone()).collect()
        };
        let keys = self.key_codec.encode(&pick(&self.key_fields), n)?;
        let values = self.value_codec.encode(&pick(&self.value_fields), n)?;
        Ok(outputs
            .iter()
            .zip(keys.into_iter().zip(values))
            .map(|(o, (key, value))| LogRecord {
                offset: state.next_sequence() as i64,
                record: Record {
                    key: key.map(Into::into),
                    value: if o.tombstone {
                        None
                    } else {
                        value.map(Into::into)
                    },
                    timestamp: o.timestamp,
                    headers: inputs[o.from].record.headers.clone(),
                },
            })
            .collect())
    }
}

/// A column reference resolved against the join.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Resolved {
    /// A column of one joined source: the member and the column's name there.
    Member(usize, String),
    /// A column of the joined rows themselves (`ROWTIME`, the synthetic key).
    Joined(String),
}

/// A source taking part in a join, and where its columns are.
struct Member<'a> {
    alias: String,
    source: &'a DataSource,
    /// 0 when its rows arrive on a stage's left side, 1 on its right.
    side: usize,
    /// On the left of a later stage its columns are already named `ALIAS_COLUMN`.
    composite: bool,
}

/// Both sides of one join stage while planning.
struct Sides<'a> {
    members: Vec<Member<'a>>,
    /// What arrives on each side: a source, or the rows of the previous stage.
    side_sources: [&'a DataSource; 2],
    schemas: [SchemaRef; 2],
    /// The synthetic key's name, when the stage has one.
    synthetic: Option<String>,
}

impl Sides<'_> {
    fn member_named(&self, qualifier: &str) -> Option<usize> {
        self.members
            .iter()
            .position(|m| m.alias == qualifier || m.source.name == qualifier)
    }

    /// A member's column as its side's rows name it.
    fn field(&self, member: usize, name: &str) -> String {
        let m = &self.members[member];
        if m.composite {
            format!("{}_{name}", m.alias)
        } else {
            name.to_string()
        }
    }

    fn has(&self, member: usize, name: &str) -> bool {
        self.schemas[self.members[member].side]
            .field_with_name(&self.field(member, name))
            .is_ok()
    }

    /// A member's column as joined rows name it.
    fn joined_name(&self, member: usize, name: &str) -> String {
        format!("{}_{name}", self.members[member].alias)
    }

    /// Whether a user column of this name is in several sources, so its plain name is
    /// ambiguous.
    fn ambiguous(&self, name: &str) -> bool {
        self.members
            .iter()
            .filter(|m| m.source.columns.iter().any(|c| c.name == name))
            .count()
            > 1
            || PSEUDO_COLUMNS.contains(&name)
    }

    fn resolve(
        &self,
        qualifier: Option<&Ident>,
        name: &Ident,
        clause: &str,
        at: Position,
    ) -> Result<Resolved> {
        let n = &name.value;
        match qualifier {
            Some(q) => {
                let Some(member) = self.member_named(&q.value) else {
                    return Err(located_error(
                        at,
                        format!(
                            "Failed to prepare statement: '{}' is not a valid stream/table name or alias.",
                            q.value
                        ),
                    ));
                };
                if self.has(member, n) {
                    Ok(Resolved::Member(member, n.clone()))
                } else {
                    Err(located_error(
                        at,
                        format!("{clause} column '{}.{n}' cannot be resolved.", q.value),
                    ))
                }
            }
            None => {
                if n == ROWTIME || self.synthetic.as_deref() == Some(n.as_str()) {
                    return Ok(Resolved::Joined(n.clone()));
                }
                let found: Vec<usize> = (0..self.members.len())
                    .filter(|&m| self.has(m, n))
                    .collect();
                match found.as_slice() {
                    [member] => Ok(Resolved::Member(*member, n.clone())),
                    [] => Err(located_error(
                        at,
                        format!("{clause} column '{n}' cannot be resolved."),
                    )),
                    many => Err(EngineError::statement(format!(
                        "Exception while preparing statement: Line: {}, Col: {}: Column '{n}' is ambiguous. Could be {}.",
                        at.line,
                        at.column,
                        many.iter()
                            .map(|&m| format!("{}.{n}", self.members[m].alias))
                            .collect::<Vec<_>>()
                            .join(" or ")
                    ))),
                }
            }
        }
    }

    /// `expr` with every column reference resolved and renamed by `name`.
    fn rename(
        &self,
        expr: &Expr,
        clause: &str,
        name: &dyn Fn(&Resolved) -> String,
    ) -> Result<Expr> {
        let mut error = None;
        let rewritten = expr.rewrite(&mut |e| {
            let ExprKind::Column { source, name: n } = &e.kind else {
                return None;
            };
            if error.is_some() {
                return Some(e.clone());
            }
            match self.resolve(source.as_ref(), n, clause, e.span.start) {
                Ok(resolved) => Some(column_expr(&name(&resolved), e.span)),
                Err(err) => {
                    error = Some(err);
                    Some(e.clone())
                }
            }
        });
        match error {
            Some(e) => Err(e),
            None => Ok(rewritten),
        }
    }

    /// `expr` over joined rows.
    fn rewrite(&self, expr: &Expr, clause: &str) -> Result<Expr> {
        self.rename(expr, clause, &|r| match r {
            Resolved::Member(m, n) => self.joined_name(*m, n),
            Resolved::Joined(n) => n.clone(),
        })
    }

    /// `expr` over the rows of its side.
    fn rewrite_for_side(&self, expr: &Expr) -> Result<Expr> {
        self.rename(expr, "JOIN ON", &|r| match r {
            Resolved::Member(m, n) => self.field(*m, n),
            Resolved::Joined(n) => n.clone(),
        })
    }

    /// The sides an expression refers to.
    fn referenced(&self, expr: &Expr, clause: &str) -> Result<Vec<usize>> {
        let mut sides = Vec::new();
        let mut error = None;
        expr.any(&mut |e| {
            if let ExprKind::Column { source, name } = &e.kind
                && error.is_none()
            {
                match self.resolve(source.as_ref(), name, clause, e.span.start) {
                    Ok(Resolved::Member(m, _)) => {
                        let side = self.members[m].side;
                        if !sides.contains(&side) {
                            sides.push(side);
                        }
                    }
                    Ok(Resolved::Joined(_)) => {}
                    Err(err) => error = Some(err),
                }
            }
            false
        });
        match error {
            Some(e) => Err(e),
            None => Ok(sides),
        }
    }

    /// `expr` with every column qualified by its source, as ksqlDB prints join conditions.
    fn qualified(&self, expr: &Expr) -> Expr {
        expr.rewrite(&mut |e| {
            let ExprKind::Column { source, name } = &e.kind else {
                return None;
            };
            match self.resolve(source.as_ref(), name, "JOIN ON", e.span.start) {
                Ok(Resolved::Member(m, _)) => Some(Expr {
                    kind: ExprKind::Column {
                        source: Some(Ident::new(&self.members[m].alias)),
                        name: name.clone(),
                    },
                    span: e.span,
                }),
                _ => None,
            }
        })
    }

    /// The user columns of a member (keys first), as `*` lists them.
    fn user_columns(&self, member: usize) -> Vec<&Column> {
        let source = self.members[member].source;
        source
            .key_columns()
            .chain(source.columns.iter().filter(|c| c.kind != ColumnKind::Key))
            .collect()
    }

    /// Whether `expr` is exactly the single key column of what arrives on `side`.
    fn is_key_of(&self, side: usize, expr: &Expr) -> bool {
        let keys: Vec<&Column> = self.side_sources[side].key_columns().collect();
        let ExprKind::Column { source, name } = &expr.kind else {
            return false;
        };
        match (
            self.resolve(source.as_ref(), name, "JOIN ON", expr.span.start),
            keys.as_slice(),
        ) {
            (Ok(Resolved::Member(m, n)), [key]) => {
                self.members[m].side == side && self.field(m, &n) == key.name
            }
            _ => false,
        }
    }
}

/// A join's rows described as a source (JSON, unwindowed, read-only), so that what follows the
/// join plans over them as over any source.
fn joined_rows_source(
    name: String,
    kind: SourceKind,
    topic: String,
    columns: Vec<Column>,
) -> DataSource {
    DataSource {
        name,
        kind,
        topic,
        key_format: FormatSpec::of(Format::Json),
        value_format: FormatSpec::of(Format::Json),
        wrap_single_value: None,
        columns,
        timestamp_column: None,
        timestamp_format: None,
        window: None,
        read_only: true,
        created_by_query: false,
        sql: String::new(),
    }
}

/// A projected expression over joined rows, named as ksqlDB names it: its alias; else, for a
/// column, its plain name, or `ALIAS_NAME` when several sources have a column of that name;
/// else none (generated later).
fn select_item(sides: &Sides<'_>, expr: &Expr, alias: Option<&Ident>) -> Result<SelectItem> {
    let rewritten = sides.rewrite(expr, "SELECT")?;
    let alias = match (alias, &expr.kind) {
        (Some(a), _) => Some(a.clone()),
        (None, ExprKind::Column { source, name }) => {
            match sides.resolve(source.as_ref(), name, "SELECT", expr.span.start)? {
                Resolved::Member(m, n) if sides.ambiguous(&n) => {
                    Some(Ident::quoted(&sides.joined_name(m, &n)))
                }
                Resolved::Member(_, n) => Some(Ident::quoted(&n)),
                Resolved::Joined(_) => None,
            }
        }
        (None, _) => None,
    };
    Ok(SelectItem::Expr {
        expr: rewritten,
        alias,
    })
}

fn column_expr(name: &str, span: Span) -> Expr {
    Expr {
        kind: ExprKind::Column {
            source: None,
            name: Ident::quoted(name),
        },
        span,
    }
}

/// The column an expression is, if it is a bare column reference.
fn bare_column(expr: &Expr) -> Option<&str> {
    match &expr.kind {
        ExprKind::Column { name, .. } => Some(&name.value),
        _ => None,
    }
}

fn contains_map(ty: &SqlType) -> bool {
    match ty {
        SqlType::Map(..) => true,
        SqlType::Array(inner) => contains_map(inner),
        SqlType::Struct(fields) => fields.iter().any(|f| contains_map(&f.ty)),
        _ => false,
    }
}

fn join_type_of(kind: JoinKind) -> JoinType {
    match kind {
        JoinKind::Inner => JoinType::Inner,
        JoinKind::Left => JoinType::Left,
        JoinKind::Right => JoinType::Right,
        JoinKind::Full => JoinType::Outer,
    }
}

/// Refuses pairs of sources ksqlDB cannot join: table-stream, the outer stream–table joins,
/// the `KAFKA` value format, and windowed with other windows.
fn check_pair(left: &DataSource, right: &DataSource, join_type: JoinType) -> Result<()> {
    let got = format!("Got {} {} {}.", left.name, join_type.text(), right.name);
    match (left.kind, right.kind) {
        (SourceKind::Table, SourceKind::Stream) => {
            return Err(EngineError::statement(format!(
                "Invalid join order: table-stream joins are not supported; only stream-table joins. {got}"
            )));
        }
        (SourceKind::Stream, SourceKind::Table)
            if matches!(join_type, JoinType::Outer | JoinType::Right) =>
        {
            let kind = if join_type == JoinType::Outer {
                "full-outer"
            } else {
                "right-outer"
            };
            return Err(EngineError::statement(format!(
                "Invalid join type: {kind} join not supported for stream-table join. {got}"
            )));
        }
        _ => {}
    }
    let kafka: Vec<&str> = [left, right]
        .iter()
        .filter(|s| s.value_format.format == Format::Kafka)
        .map(|s| s.name.as_str())
        .collect();
    if !kafka.is_empty() {
        return Err(EngineError::statement(format!(
            "Source(s) {} are using the 'KAFKA' value format. This format does not yet support JOIN.",
            kafka.join(", ")
        )));
    }
    match (&left.window, &right.window) {
        (Some(l), None) | (None, Some(l)) => {
            let (windowed, other) = if left.window.is_some() {
                (left, right)
            } else {
                (right, left)
            };
            return Err(EngineError::statement(format!(
                "Can not join windowed source to non-windowed source.\n`{}` is {} windowed\n`{}` is not windowed",
                windowed.name,
                l.window_type.name(),
                other.name
            )));
        }
        (Some(l), Some(r)) => {
            use crate::catalog::WindowType;
            if (l.window_type == WindowType::Session) != (r.window_type == WindowType::Session) {
                return Err(EngineError::statement(format!(
                    "Incompatible windowed sources.\nLeft source: {}\nRight source: {}\nSession windowed sources can only be joined to other session windowed sources, and may still not result in expected behaviour as session bounds must be an exact match for the join to work\nHopping and tumbling windowed sources can only be joined to other hopping and tumbling windowed sources",
                    l.window_type.name(),
                    r.window_type.name()
                )));
            }
            if l != r {
                return Err(EngineError::statement(
                    "Implicit repartitioning of windowed sources is not supported. See https://github.com/confluentinc/ksql/issues/4385.",
                ));
            }
        }
        (None, None) => {}
    }
    Ok(())
}

/// The `ON` condition of a stage: each side's expression, checked as ksqlDB checks it.
struct Condition<'e> {
    left: &'e Expr,
    right: &'e Expr,
    /// `Got A.X = B.Y.` as written, for messages.
    got: String,
}

fn condition<'e>(sides: &Sides<'_>, on: &'e Expr) -> Result<Condition<'e>> {
    let (a, b) = match &on.kind {
        ExprKind::Binary {
            left: a,
            op: BinaryOp::Eq,
            right: b,
        } => (a.as_ref(), b.as_ref()),
        ExprKind::Binary {
            left: a,
            op: BinaryOp::And,
            right: b,
        } => {
            return Err(EngineError::statement(format!(
                "Invalid join condition: joins on multiple conditions are not yet supported. Got (({}) AND ({})).",
                sides.qualified(a),
                sides.qualified(b)
            )));
        }
        _ => {
            return Err(EngineError::statement(format!(
                "Unsupported join expression: {on}. Joins must be on an equality of one expression from each source."
            )));
        }
    };
    // Unknown qualifiers are reported before anything else about the condition.
    let mut unknown = None;
    on.any(&mut |e| {
        if let ExprKind::Column {
            source: Some(q), ..
        } = &e.kind
            && unknown.is_none()
            && sides.member_named(&q.value).is_none()
        {
            unknown = Some((q.value.clone(), e.span.start));
        }
        false
    });
    if let Some((q, at)) = unknown {
        return Err(located_error(
            at,
            format!(
                "Failed to prepare statement: '{q}' is not a valid stream/table name or alias."
            ),
        ));
    }
    let written = format!("({})", sides.qualified(on));
    let single_side = |e: &Expr| -> Result<usize> {
        match sides.referenced(e, "JOIN ON")?.as_slice() {
            [side] => Ok(*side),
            _ => Err(EngineError::statement(format!(
                "Invalid comparison expression '{e}' in join '{written}'. Each side of the join comparision must contain references from exactly one source."
            ))),
        }
    };
    let (side_a, side_b) = (single_side(a)?, single_side(b)?);
    if side_a == side_b {
        return Err(EngineError::statement(format!(
            "Invalid comparison expression '{b}' in join '{written}'. Each side of the join comparision must contain references from exactly one source."
        )));
    }
    let got = format!("Got {} = {}.", sides.qualified(a), sides.qualified(b));
    let (left, right) = if side_a == 0 { (a, b) } else { (b, a) };
    Ok(Condition { left, right, got })
}

/// The shape of a stage, refusing the conditions ksqlDB refuses.
fn stage_shape(
    sides: &Sides<'_>,
    join: &eddy_sql::ast::Join,
    join_type: JoinType,
    cond: &Condition<'_>,
) -> Result<JoinShape> {
    let [left, right] = sides.side_sources;
    let left_is_key = sides.is_key_of(0, cond.left);
    let right_is_key = sides.is_key_of(1, cond.right);
    let got = &cond.got;
    let shape = match (left.kind, right.kind) {
        (SourceKind::Stream, SourceKind::Stream) => {
            let within = join.within.unwrap_or(eddy_sql::ast::JoinWindow {
                before: eddy_sql::ast::Duration {
                    value: 0,
                    unit: eddy_sql::ast::TimeUnit::Milliseconds,
                },
                after: None,
                grace: None,
            });
            let before = within.before.to_millis() as i64;
            JoinShape::StreamStream(JoinWindowMs {
                before,
                after: within.after.map_or(before, |d| d.to_millis() as i64),
                grace: within
                    .grace
                    .map_or(DEFAULT_GRACE_MS, |d| d.to_millis() as i64),
                wait_for_close: within.grace.is_some(),
            })
        }
        (SourceKind::Stream, SourceKind::Table) => {
            if !right_is_key {
                return Err(EngineError::statement(format!(
                    "Invalid join condition: stream-table joins require to join on the table's primary key. {got}"
                )));
            }
            JoinShape::StreamTable
        }
        _ => {
            if !right_is_key {
                return Err(EngineError::statement(format!(
                    "Invalid join condition: table-table joins require to join on the primary key of the right input table. {got}"
                )));
            }
            if left_is_key {
                JoinShape::TableTable
            } else if left.window.is_some() || right.window.is_some() {
                return Err(EngineError::statement(
                    "Foreign-key table-table joins are not supported on windowed tables.",
                ));
            } else {
                match join_type {
                    JoinType::Right => {
                        return Err(EngineError::statement(
                            "RIGHT OUTER JOIN on a foreign key is not supported",
                        ));
                    }
                    JoinType::Outer => {
                        return Err(EngineError::statement(
                            "FULL OUTER JOIN on a foreign key is not supported",
                        ));
                    }
                    _ => JoinShape::ForeignKey,
                }
            }
        }
    };
    let both_streams = left.kind == SourceKind::Stream && right.kind == SourceKind::Stream;
    match (both_streams, &join.within) {
        (true, None) => Err(EngineError::statement(
            "Stream-Stream joins must have a WITHIN clause specified. None was provided. To learn about how to specify a WITHIN clause with a stream-stream join, please visit: https://docs.confluent.io/current/ksql/docs/syntax-reference.html#create-stream-as-select",
        )),
        (false, Some(_)) => {
            let kind = if left.kind == SourceKind::Stream {
                "Stream-Table"
            } else {
                "Table-Table"
            };
            Err(EngineError::statement(format!(
                "A window definition was provided for a {kind} join. These joins are not windowed. Please drop the window definition (i.e. the WITHIN clause) and try to execute your join again."
            )))
        }
        _ => Ok(shape),
    }
}

/// What follows the joins of a query.
enum Tail<'a> {
    /// A projection into a sink called `.0` of kind `.1`; `.2` for a transient query.
    Project(&'a str, SourceKind, bool),
    /// An aggregation into a table called `.0`.
    Aggregate(&'a str),
}

/// The plan of what follows the joins.
enum Planned {
    Project(Box<StatelessPlan>),
    Aggregate(Box<AggregatePlan>),
}

/// Plans a query whose `FROM` joins two or more sources: a chain of stages, each joining the
/// rows so far with one more source, evaluated left to right as ksqlDB does.
pub fn plan_join(
    ctx: &SessionContext,
    catalog: &Catalog,
    query: &Query,
    sink_name: &str,
    sink_kind: SourceKind,
    transient: bool,
) -> Result<JoinPlan> {
    match plan_chain(
        ctx,
        catalog,
        query,
        Tail::Project(sink_name, sink_kind, transient),
    )? {
        (chain, Planned::Project(post)) => Ok(JoinPlan { chain, post: *post }),
        (_, Planned::Aggregate(_)) => Err(EngineError::statement(
            "a join planned as a projection came back as an aggregation",
        )),
    }
}

/// Plans an aggregation of the rows of a query's joins (`... FROM a JOIN b ... GROUP BY`).
pub fn plan_join_aggregate(
    ctx: &SessionContext,
    catalog: &Catalog,
    query: &Query,
    sink_name: &str,
) -> Result<AggregatePlan> {
    match plan_chain(ctx, catalog, query, Tail::Aggregate(sink_name))? {
        (chain, Planned::Aggregate(mut plan)) => {
            if chain.yields_table() {
                return Err(EngineError::Unsupported(
                    "GROUP BY over the result of a table-table join in the same query".into(),
                ));
            }
            plan.join = Some(Box::new(chain));
            Ok(*plan)
        }
        (_, Planned::Project(_)) => Err(EngineError::statement(
            "a join planned as an aggregation came back as a projection",
        )),
    }
}

fn plan_chain(
    ctx: &SessionContext,
    catalog: &Catalog,
    query: &Query,
    tail: Tail<'_>,
) -> Result<(JoinChain, Planned)> {
    let lookup = |aliased| crate::query::plan::named_source(catalog, aliased);
    let alias_of = |a: &eddy_sql::ast::AliasedSource| {
        a.alias
            .as_ref()
            .map_or(a.name.value.clone(), |x| x.value.clone())
    };
    let first = lookup(&query.from.source)?;
    let mut sources: Vec<(String, &DataSource)> = vec![(alias_of(&query.from.source), first)];
    for join in &query.from.joins {
        let right = lookup(&join.source)?;
        if let Some((_, same)) = sources.iter().find(|(_, s)| s.name == right.name) {
            return Err(EngineError::statement(format!(
                "Can not join '{0}' to '{0}': self joins are not yet supported.",
                same.name
            )));
        }
        if sources.iter().any(|(_, s)| s.topic == right.topic) {
            return Err(EngineError::Unsupported(
                "joining two sources over the same topic".into(),
            ));
        }
        sources.push((alias_of(&join.source), right));
    }
    let chained = query.from.joins.len() > 1;
    if chained && sources.iter().any(|(_, s)| s.window.is_some()) {
        return Err(EngineError::Unsupported(
            "joins of more than two windowed sources".into(),
        ));
    }

    // Each stage's left side: the first source, then the rows of the previous stage.
    let mut composite: Option<DataSource> = None;
    let mut stages: Vec<JoinStage> = Vec::new();
    let mut post = None;
    for (k, join) in query.from.joins.iter().enumerate() {
        let last = k + 1 == query.from.joins.len();
        let right = sources[k + 1].1;
        let left: &DataSource = composite.as_ref().unwrap_or(first);
        let join_type = join_type_of(join.kind);
        check_pair(left, right, join_type)?;
        let decoders = [SourceDecoder::new(left)?, SourceDecoder::new(right)?];
        let mut members: Vec<Member<'_>> = sources[..=k]
            .iter()
            .map(|(alias, source)| Member {
                alias: alias.clone(),
                source,
                side: 0,
                composite: k > 0,
            })
            .collect();
        members.push(Member {
            alias: sources[k + 1].0.clone(),
            source: right,
            side: 1,
            composite: false,
        });
        let mut sides = Sides {
            members,
            side_sources: [left, right],
            schemas: [decoders[0].schema().clone(), decoders[1].schema().clone()],
            synthetic: None,
        };
        let cond = condition(&sides, &join.on)?;

        // Each side's join expression over its own rows.
        let compile_side =
            |side: usize, expr: &Expr| -> Result<(Arc<dyn PhysicalExpr>, DataType)> {
                let df_schema = DFSchema::try_from(sides.schemas[side].as_ref().clone())
                    .map_err(|e| EngineError::statement(e.to_string()))?;
                let scope = source_scope(
                    catalog,
                    sides.side_sources[side],
                    "",
                    &sides.schemas[side],
                    &df_schema,
                );
                let expr = sides.rewrite_for_side(expr)?;
                let compiled = crate::query::plan::compile_in(ctx, &scope, &expr, "JOIN ON")?;
                let ty = compiled
                    .data_type(&sides.schemas[side])
                    .map_err(|e| EngineError::statement(e.to_string()))?;
                Ok((compiled, ty))
            };
        let (left_key, left_type) = compile_side(0, cond.left)?;
        let (right_key, right_type) = compile_side(1, cond.right)?;
        let shape = stage_shape(&sides, join, join_type, &cond)?;
        if left_type != right_type {
            let sql_type = |ty: &DataType| {
                eddy_sql::types::from_arrow(ty)
                    .map(|t| type_display(&t))
                    .unwrap_or_else(|_| ty.to_string())
            };
            return Err(EngineError::statement(format!(
                "Invalid join condition: types don't match. Got {}{{{}}} = {}{{{}}}.",
                sides.qualified(cond.left),
                sql_type(&left_type),
                sides.qualified(cond.right),
                sql_type(&right_type)
            )));
        }
        let rekeyed = [
            shape != JoinShape::ForeignKey && !sides.is_key_of(0, cond.left),
            !sides.is_key_of(1, cond.right),
        ];
        for (side, source) in [left, right].iter().enumerate() {
            if rekeyed[side] && source.window.is_some() {
                return Err(EngineError::statement(
                    "Implicit repartitioning of windowed sources is not supported. See https://github.com/confluentinc/ksql/issues/4385.",
                ));
            }
        }

        // The result key: the left table's key for a foreign-key join; else a join expression
        // that is a column (left first; the projection picks among them); else a synthetic
        // `ROWKEY`. Candidates are (joined name, as written in messages).
        let mut candidates: Vec<(String, String)> = Vec::new();
        if shape == JoinShape::ForeignKey {
            for key in left.key_columns() {
                // A later stage's left keys are already joined names.
                let member = (0..sides.members.len()).find(|&m| {
                    sides.members[m].side == 0
                        && sides.members[m]
                            .source
                            .key_columns()
                            .any(|c| sides.field(m, &c.name) == key.name)
                });
                let (joined, written) = match member {
                    Some(m) => {
                        let plain = sides.members[m]
                            .source
                            .key_columns()
                            .find(|c| sides.field(m, &c.name) == key.name)
                            .map_or(key.name.clone(), |c| c.name.clone());
                        (sides.joined_name(m, &plain), plain)
                    }
                    None => (key.name.clone(), key.name.clone()),
                };
                candidates.push((joined, written));
            }
        } else if join_type != JoinType::Outer {
            for (side, expr) in [(0, cond.left), (1, cond.right)] {
                if let ExprKind::Column { source, name } = &expr.kind
                    && let Ok(Resolved::Member(m, n)) =
                        sides.resolve(source.as_ref(), name, "JOIN ON", expr.span.start)
                    && sides.members[m].side == side
                {
                    candidates.push((
                        sides.joined_name(m, &n),
                        format!("{}.{n}", sides.members[m].alias),
                    ));
                }
            }
        }
        let synthetic = shape != JoinShape::ForeignKey && candidates.is_empty();
        if synthetic {
            let taken: HashSet<&str> = sources
                .iter()
                .flat_map(|(_, s)| s.columns.iter().map(|c| c.name.as_str()))
                .collect();
            let mut name = "ROWKEY".to_string();
            let mut n = 0;
            while taken.contains(name.as_str()) {
                n += 1;
                name = format!("ROWKEY_{n}");
            }
            sides.synthetic = Some(name);
        }

        // Joined rows: the left side's columns (renamed, unless a previous stage did), the
        // right's renamed, then ROWTIME, the window, and the synthetic key.
        let mut fields: Vec<Field> = Vec::new();
        for side in 0..2 {
            for f in sides.schemas[side].fields() {
                let name = if side == 0 && k > 0 {
                    // The previous stage's rows carry their own pseudo-columns; keep them apart.
                    if PSEUDO_COLUMNS.contains(&f.name().as_str()) {
                        format!("__EDDY_STAGE{k}_{}", f.name())
                    } else {
                        f.name().clone()
                    }
                } else {
                    format!(
                        "{}_{}",
                        sources[if side == 0 { 0 } else { k + 1 }].0,
                        f.name()
                    )
                };
                fields.push(Field::new(name, f.data_type().clone(), true));
            }
        }
        fields.push(Field::new(ROWTIME, DataType::Int64, true));
        if left.window.is_some() {
            fields.push(Field::new(WINDOWSTART, DataType::Int64, true));
            fields.push(Field::new(WINDOWEND, DataType::Int64, true));
        }
        if let Some(key) = &sides.synthetic {
            fields.push(Field::new(key, left_type.clone(), true));
        }
        let joined_schema: SchemaRef = Arc::new(Schema::new(fields));
        let key_sql_type = eddy_sql::types::from_arrow(&left_type).map_err(|e| {
            EngineError::statement(format!("The join key has a type ksqlDB cannot store: {e}"))
        })?;
        let result_kind = if left.kind == SourceKind::Stream {
            SourceKind::Stream
        } else {
            SourceKind::Table
        };

        let mut next_rows = None;
        let (key_column, handoff) = if let (true, Tail::Aggregate(sink_name)) = (last, &tail) {
            post = Some(Planned::Aggregate(Box::new(plan_last_aggregate(
                ctx,
                catalog,
                query,
                &sides,
                (&joined_schema, first),
                sink_name,
            )?)));
            let key_column = sides
                .synthetic
                .as_ref()
                .and_then(|k| joined_schema.index_of(k).ok());
            (key_column, None)
        } else if let (true, Tail::Project(sink_name, sink_kind, transient)) = (last, &tail) {
            let (key_names, planned) = plan_last_stage(
                ctx,
                catalog,
                query,
                &sides,
                LastStage {
                    shape,
                    candidates: &candidates,
                    key_sql_type: &key_sql_type,
                    joined_schema: &joined_schema,
                    result_kind,
                    first_source: first,
                },
                (sink_name, *sink_kind),
                *transient,
            )?;
            post = Some(Planned::Project(Box::new(planned)));
            let key_column = if shape == JoinShape::ForeignKey {
                None
            } else if !query.partition_by.is_empty() {
                sides
                    .synthetic
                    .as_ref()
                    .and_then(|k| joined_schema.index_of(k).ok())
            } else {
                key_names
                    .first()
                    .or(sides.synthetic.as_ref())
                    .and_then(|k| joined_schema.index_of(k).ok())
            };
            (key_column, None)
        } else {
            // Within the chain, the key is the first candidate.
            let key_names: Vec<String> = match &sides.synthetic {
                Some(key) => vec![key.clone()],
                None if shape == JoinShape::ForeignKey => {
                    candidates.iter().map(|(n, _)| n.clone()).collect()
                }
                None => candidates
                    .first()
                    .map(|(n, _)| n.clone())
                    .into_iter()
                    .collect(),
            };
            let key_column = if shape == JoinShape::ForeignKey {
                None
            } else {
                key_names
                    .first()
                    .and_then(|k| joined_schema.index_of(k).ok())
            };
            // The next stage reads these rows as a source of its own.
            let mut columns = Vec::new();
            for f in joined_schema.fields() {
                if [ROWTIME, WINDOWSTART, WINDOWEND].contains(&f.name().as_str()) {
                    continue;
                }
                let ty = eddy_sql::types::from_arrow(f.data_type())
                    .map_err(|e| EngineError::statement(e.to_string()))?;
                columns.push(Column {
                    name: f.name().clone(),
                    ty,
                    kind: if key_names.contains(f.name()) {
                        ColumnKind::Key
                    } else {
                        ColumnKind::Value
                    },
                });
            }
            columns.sort_by_key(|c| c.kind != ColumnKind::Key);
            let rows = joined_rows_source(
                format!("{}_JOINED_{}", first.name, k + 1),
                result_kind,
                String::new(),
                columns,
            );
            let handoff = Handoff::new(&rows, &joined_schema)?;
            next_rows = Some(rows);
            (key_column, Some(handoff))
        };
        let [left_decoder, right_decoder] = decoders;
        stages.push(JoinStage {
            left: JoinSide {
                source: left.clone(),
                alias: sides.members[0].alias.clone(),
                decoder: left_decoder,
                key: left_key,
                rekeyed: rekeyed[0],
            },
            right: JoinSide {
                source: right.clone(),
                alias: sources[k + 1].0.clone(),
                decoder: right_decoder,
                key: right_key,
                rekeyed: rekeyed[1],
            },
            join_type,
            shape,
            key_type: left_type,
            window: left.window,
            joined_schema,
            key_column,
            handoff,
        });
        if next_rows.is_some() {
            composite = next_rows;
        }
    }
    let post = post.ok_or_else(|| EngineError::statement("a join without a source to join"))?;
    Ok((
        JoinChain {
            sources: sources.iter().map(|(_, s)| (*s).clone()).collect(),
            stages,
        },
        post,
    ))
}

/// Rewrites an aggregation over the last stage's joined rows and plans it.
fn plan_last_aggregate(
    ctx: &SessionContext,
    catalog: &Catalog,
    query: &Query,
    sides: &Sides<'_>,
    (joined_schema, first_source): (&SchemaRef, &DataSource),
    sink_name: &str,
) -> Result<AggregatePlan> {
    let mut select = Vec::with_capacity(query.select.len());
    for item in &query.select {
        let SelectItem::Expr { expr, alias } = item else {
            return Err(EngineError::Unsupported(
                "`*` in an aggregation's projection".into(),
            ));
        };
        select.push(select_item(sides, expr, alias.as_ref())?);
    }
    let mut columns: Vec<Column> = Vec::new();
    for m in 0..sides.members.len() {
        for c in sides.user_columns(m) {
            columns.push(Column {
                name: sides.joined_name(m, &c.name),
                ty: c.ty.clone(),
                kind: ColumnKind::Value,
            });
        }
    }
    let joined_source = joined_rows_source(
        format!("{}_JOINED", first_source.name),
        SourceKind::Stream,
        first_source.topic.clone(),
        columns,
    );
    let rewrite_all = |exprs: &[Expr], clause: &str| -> Result<Vec<Expr>> {
        exprs.iter().map(|e| sides.rewrite(e, clause)).collect()
    };
    let rewritten = Query {
        select,
        // ORDER BY applies to a pull query's result, after the pipeline.
        order_by: Vec::new(),
        from: query.from.clone(),
        window: query.window,
        filter: query
            .filter
            .as_ref()
            .map(|f| sides.rewrite(f, "WHERE"))
            .transpose()?,
        group_by: rewrite_all(&query.group_by, "GROUP BY")?,
        partition_by: Vec::new(),
        having: query
            .having
            .as_ref()
            .map(|h| sides.rewrite(h, "HAVING"))
            .transpose()?,
        emit: query.emit,
        limit: query.limit,
        span: query.span,
    };
    crate::query::aggregate::plan_aggregate_over(
        ctx,
        catalog,
        &rewritten,
        ProjectionInput {
            source: &joined_source,
            decoder: SourceDecoder::new(&joined_source)?,
            schema: joined_schema.clone(),
            alias: "",
        },
        sink_name,
        // Push queries over joins keep the rules of persistent ones.
        false,
    )
}

/// What the last stage's projection needs to know of it.
struct LastStage<'a> {
    shape: JoinShape,
    candidates: &'a [(String, String)],
    key_sql_type: &'a SqlType,
    joined_schema: &'a SchemaRef,
    result_kind: SourceKind,
    first_source: &'a DataSource,
}

/// Rewrites the query over the joined rows of the last stage, checks its key as ksqlDB does,
/// and plans its projection. Returns the key columns and the plan.
#[allow(clippy::too_many_arguments)]
fn plan_last_stage(
    ctx: &SessionContext,
    catalog: &Catalog,
    query: &Query,
    sides: &Sides<'_>,
    stage: LastStage<'_>,
    (sink_name, sink_kind): (&str, SourceKind),
    transient: bool,
) -> Result<(Vec<String>, StatelessPlan)> {
    let LastStage {
        shape,
        candidates,
        key_sql_type,
        joined_schema,
        result_kind,
        first_source,
    } = stage;
    let mut select: Vec<SelectItem> = Vec::new();
    let repartitioned = !query.partition_by.is_empty();
    // `*` lists a source's keys then its other columns; before a PARTITION BY, ksqlDB lists
    // the joined row as it re-keys it: values, pseudo-columns, then keys.
    let star = |member: usize, out: &mut Vec<SelectItem>| {
        let source = sides.members[member].source;
        let names: Vec<String> = if repartitioned {
            source
                .columns
                .iter()
                .filter(|c| c.kind != ColumnKind::Key)
                .map(|c| c.name.clone())
                .chain(PSEUDO_COLUMNS.iter().map(|c| c.to_string()))
                .chain(source.key_columns().map(|c| c.name.clone()))
                .collect()
        } else {
            sides
                .user_columns(member)
                .iter()
                .map(|c| c.name.clone())
                .collect()
        };
        for n in names {
            let name = sides.joined_name(member, &n);
            out.push(SelectItem::Expr {
                expr: column_expr(&name, Span::default()),
                alias: Some(Ident::quoted(&name)),
            });
        }
    };
    for item in &query.select {
        match item {
            SelectItem::Wildcard(_) => {
                if let Some(key) = &sides.synthetic {
                    select.push(SelectItem::Expr {
                        expr: column_expr(key, Span::default()),
                        alias: Some(Ident::quoted(key)),
                    });
                }
                for m in 0..sides.members.len() {
                    star(m, &mut select);
                }
            }
            SelectItem::QualifiedWildcard(q) => {
                let Some(member) = sides.member_named(&q.value) else {
                    return Err(located_error(
                        q.span.start,
                        format!(
                            "Failed to prepare statement: '{}' is not a valid stream/table name or alias.",
                            q.value
                        ),
                    ));
                };
                star(member, &mut select);
            }
            SelectItem::StructWildcard(base) => {
                select.push(SelectItem::StructWildcard(sides.rewrite(base, "SELECT")?));
            }
            SelectItem::Expr { expr, alias } => {
                if let Some(a) = alias
                    && (PSEUDO_COLUMNS.contains(&a.value.as_str())
                        || crate::schema::WINDOW_COLUMNS.contains(&a.value.as_str()))
                {
                    return Err(EngineError::statement(format!(
                        "Reserved column name in select: `{}`. Please remove or alias the column.",
                        a.value
                    )));
                }
                select.push(select_item(sides, expr, alias.as_ref())?);
            }
        }
    }
    let item_name = |item: &SelectItem| match item {
        SelectItem::Expr { alias: Some(a), .. } => Some(a.value.clone()),
        SelectItem::Expr { expr, .. } => bare_column(expr).map(str::to_string),
        _ => None,
    };
    let projects = |name: &str| -> Vec<String> {
        select
            .iter()
            .filter(
                |i| matches!(i, SelectItem::Expr { expr, .. } if bare_column(expr) == Some(name)),
            )
            .filter_map(item_name)
            .collect()
    };

    // Which joined columns are the key. After PARTITION BY the key is the partitioning
    // expression, not the join's.
    let key_names: Vec<String> = if repartitioned {
        Vec::new()
    } else if let Some(key) = &sides.synthetic {
        vec![key.clone()]
    } else if shape == JoinShape::ForeignKey {
        candidates.iter().map(|(n, _)| n.clone()).collect()
    } else {
        candidates
            .iter()
            .map(|(n, _)| n.clone())
            .find(|n| !projects(n).is_empty())
            .into_iter()
            .collect()
    };
    if !transient && !repartitioned {
        if let Some(key) = &sides.synthetic
            && projects(key).is_empty()
        {
            return Err(EngineError::statement(format!(
                "Key missing from projection (ie, SELECT). See https://cnfl.io/2LV7ouS.\nThe query used to build `{sink_name}` must include the join expression {key} in its projection (eg, SELECT {key}...).\n{key} was added as a synthetic key column because the join criteria did not match any source column. This expression must be included in the projection and may be aliased."
            )));
        }
        if shape == JoinShape::ForeignKey {
            let missing: Vec<String> = candidates
                .iter()
                .filter(|(n, _)| projects(n).is_empty())
                .map(|(_, written)| format!("`{written}`"))
                .collect();
            let left_name = &sides.members[0].alias;
            match missing.as_slice() {
                [] => {}
                [one] => {
                    return Err(EngineError::statement(format!(
                        "Primary key column missing in projection. For foreign-key table-table joins, the projection must include all primary key columns from the left input table (`{left_name}`). Missing column: {one}."
                    )));
                }
                many => {
                    return Err(EngineError::statement(format!(
                        "Primary key columns missing in projection. For foreign-key table-table joins, the projection must include all primary key columns from the left input table (`{left_name}`). Missing columns: {}.",
                        many.join(", ")
                    )));
                }
            }
        } else if key_names.is_empty() && sides.synthetic.is_none() {
            let written: Vec<&str> = candidates.iter().map(|(_, w)| w.as_str()).collect();
            let (noun, list) = if written.len() > 1 {
                ("expressions", written.join(" or "))
            } else {
                ("expression", written.join(""))
            };
            return Err(EngineError::statement(format!(
                "The query used to build `{sink_name}` must include the join {noun} {list} in its projection (eg, SELECT {}...).",
                written.first().copied().unwrap_or_default()
            )));
        }
        for key in &key_names {
            let mut names = projects(key);
            if names.len() > 1 {
                names.sort();
                return Err(EngineError::statement(format!(
                    "The projection contains a key column (`{key}`) more than once, aliased as: {}.",
                    names.join(" and ")
                )));
            }
        }
    }

    // The joined rows described as a source, for the projection.
    let mut columns: Vec<Column> = Vec::new();
    if let Some(key) = &sides.synthetic
        && key_names.contains(key)
    {
        columns.push(Column {
            name: key.clone(),
            ty: key_sql_type.clone(),
            kind: ColumnKind::Key,
        });
    }
    for m in 0..sides.members.len() {
        for c in sides.user_columns(m) {
            let name = sides.joined_name(m, &c.name);
            let key = key_names.contains(&name);
            if key && contains_map(&c.ty) {
                return Err(EngineError::statement(format!(
                    "Map keys, including types that contain maps, are not supported as they may lead to unexpected behavior due to inconsistent serialization. Key column name: `{name}`. Column type: {}. See https://github.com/confluentinc/ksql/issues/6621 for more.",
                    type_display(&c.ty)
                )));
            }
            columns.push(Column {
                name,
                ty: if key && shape != JoinShape::ForeignKey {
                    key_sql_type.clone()
                } else {
                    c.ty.clone()
                },
                kind: if key {
                    ColumnKind::Key
                } else {
                    ColumnKind::Value
                },
            });
        }
    }
    // A pseudo-column joined on (`ROWPARTITION`) is a key like any other.
    for key in &key_names {
        if !columns.iter().any(|c| &c.name == key) {
            columns.push(Column {
                name: key.clone(),
                ty: key_sql_type.clone(),
                kind: ColumnKind::Key,
            });
        }
    }
    // Keys first, in the order chosen.
    columns.sort_by_key(|c| c.kind != ColumnKind::Key);
    let joined_source = joined_rows_source(
        format!("{}_JOINED", first_source.name),
        result_kind,
        first_source.topic.clone(),
        columns,
    );
    let rewritten = Query {
        select,
        // ORDER BY applies to a pull query's result, after the pipeline.
        order_by: Vec::new(),
        from: query.from.clone(),
        window: query.window,
        filter: query
            .filter
            .as_ref()
            .map(|f| sides.rewrite(f, "WHERE"))
            .transpose()?,
        group_by: Vec::new(),
        partition_by: query
            .partition_by
            .iter()
            .map(|e| sides.rewrite(e, "PARTITION BY"))
            .collect::<Result<_>>()?,
        having: None,
        emit: query.emit,
        limit: query.limit,
        span: query.span,
    };
    let post = plan_projection(
        ctx,
        catalog,
        &rewritten,
        ProjectionInput {
            source: &joined_source,
            decoder: SourceDecoder::new(&joined_source)?,
            schema: joined_schema.clone(),
            alias: "",
        },
        (sink_name, sink_kind),
        true,
        transient,
    )?;
    Ok((key_names, post))
}

/// ksqlDB's grace period for a `WITHIN` without one: 24 hours.
const DEFAULT_GRACE_MS: i64 = 24 * 60 * 60 * 1000;

/// A record kept in join state: enough to decode it again.
#[derive(Debug, Clone)]
struct Stored {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    timestamp: i64,
    partition: u32,
    offset: i64,
    headers: Vec<RecordHeader>,
}

/// Appends an optional byte string: a presence flag, its length, its bytes.
fn put_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    out.push(u8::from(bytes.is_some()));
    with_len(out, bytes.unwrap_or_default());
}

/// Reads what [`put_bytes`] wrote, advancing `at`.
fn take_bytes<'b>(bytes: &'b [u8], at: &mut usize) -> Option<Option<&'b [u8]>> {
    let present = *bytes.get(*at)? != 0;
    let len = u32::from_be_bytes(bytes.get(*at + 1..*at + 5)?.try_into().ok()?) as usize;
    let value = bytes.get(*at + 5..*at + 5 + len)?;
    *at += 5 + len;
    Some(present.then_some(value))
}

impl Stored {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            40 + self.key.as_ref().map_or(0, Vec::len) + self.value.as_ref().map_or(0, Vec::len),
        );
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.partition.to_be_bytes());
        out.extend_from_slice(&self.offset.to_be_bytes());
        put_bytes(&mut out, self.key.as_deref());
        put_bytes(&mut out, self.value.as_deref());
        out.extend_from_slice(&(self.headers.len() as u32).to_be_bytes());
        for header in &self.headers {
            put_bytes(&mut out, Some(header.key.as_bytes()));
            put_bytes(&mut out, header.value.as_deref());
        }
        out
    }

    fn decode(bytes: &[u8]) -> Option<Stored> {
        let timestamp = i64::from_be_bytes(bytes.get(0..8)?.try_into().ok()?);
        let partition = u32::from_be_bytes(bytes.get(8..12)?.try_into().ok()?);
        let offset = i64::from_be_bytes(bytes.get(12..20)?.try_into().ok()?);
        let mut at = 20;
        let key = take_bytes(bytes, &mut at)?.map(<[u8]>::to_vec);
        let value = take_bytes(bytes, &mut at)?.map(<[u8]>::to_vec);
        let count = u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?);
        at += 4;
        let mut headers = Vec::new();
        for _ in 0..count {
            let name = take_bytes(bytes, &mut at)??;
            let value = take_bytes(bytes, &mut at)?;
            headers.push(RecordHeader {
                key: String::from_utf8_lossy(name).into_owned(),
                value: value.map(bytes::Bytes::copy_from_slice),
            });
        }
        Some(Stored {
            key,
            value,
            timestamp,
            partition,
            offset,
            headers,
        })
    }

    fn log_record(&self) -> LogRecord {
        LogRecord {
            offset: self.offset,
            record: Record {
                key: self.key.clone().map(Into::into),
                value: self.value.clone().map(Into::into),
                timestamp: self.timestamp,
                headers: self.headers.clone(),
            },
        }
    }
}

/// A timestamp as bytes that sort as the numbers do.
fn time_bytes(ts: i64) -> [u8; 8] {
    ((ts as u64) ^ (1 << 63)).to_be_bytes()
}

fn time_from_bytes(bytes: &[u8]) -> Option<i64> {
    Some((u64::from_be_bytes(bytes.get(0..8)?.try_into().ok()?) ^ (1 << 63)) as i64)
}

fn with_len(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// State keys: a table's row per key, a stream's windowed records and their expiry index,
/// records waiting for a partner, a foreign-key index, and the clocks.
mod keys {
    pub const ROW: u8 = b'r';
    pub const WINDOW: u8 = b'w';
    pub const EXPIRY: u8 = b'e';
    pub const WAITING: u8 = b'x';
    pub const FOREIGN: u8 = b'f';
    pub const PRESENT: u8 = b'p';
    pub const STREAM_TIME: &[u8] = b"mt";
    pub const OBSERVED: [&[u8]; 2] = [b"mo0", b"mo1"];
    pub const SEQUENCE: &[u8] = b"ms";
}

/// One joined result before it is decoded: the sides' records, the time and the key.
struct Output {
    left: Option<Stored>,
    right: Option<Stored>,
    timestamp: i64,
    /// The join key, in the key converter's row format.
    key: Vec<u8>,
    tombstone: bool,
    /// The input record that produced it.
    from: usize,
    /// The row of the input batch that the triggering side's record is, when it is there.
    current: Option<usize>,
}

/// A join query's state: mirrored in memory, written through to the store with each commit.
pub struct JoinState {
    namespace: String,
    /// Which stage's state this is: the first byte of its keys in the store.
    stage: u8,
    entries: BTreeMap<Vec<u8>, Vec<u8>>,
    writes: StateWrites,
    converter: RowConverter,
    stream_time: i64,
    observed: [i64; 2],
    sequence: u64,
}

impl JoinState {
    /// The state of query `query_id`, read back from the store.
    pub fn load(store: &Store, query_id: &str, plan: &JoinStage, stage: u8) -> Result<Self> {
        let namespace = format!("__eddy_query_{query_id}");
        let mut entries = BTreeMap::new();
        for entry in store.state_scan_prefix(&namespace, &[stage])? {
            let (k, v) = entry?;
            entries.insert(k[1..].to_vec(), v);
        }
        let number = |key: &[u8]| {
            entries
                .get(key)
                .and_then(|v: &Vec<u8>| v.as_slice().try_into().ok())
                .map(i64::from_be_bytes)
        };
        let stream_time = number(keys::STREAM_TIME).unwrap_or(i64::MIN);
        let observed = [
            number(keys::OBSERVED[0]).unwrap_or(i64::MIN),
            number(keys::OBSERVED[1]).unwrap_or(i64::MIN),
        ];
        let sequence = number(keys::SEQUENCE).unwrap_or(0) as u64;
        let mut fields = vec![SortField::new(plan.key_type.clone())];
        if plan.window.is_some() {
            fields.push(SortField::new(DataType::Int64));
            fields.push(SortField::new(DataType::Int64));
        }
        let converter = RowConverter::new(fields)
            .map_err(|e| EngineError::statement(format!("cannot key a join: {e}")))?;
        Ok(JoinState {
            namespace,
            stage,
            entries,
            writes: Vec::new(),
            converter,
            stream_time,
            observed,
            sequence,
        })
    }

    /// Where its state lives in the store.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn stored_key(&self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(key.len() + 1);
        k.push(self.stage);
        k.extend_from_slice(key);
        k
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes
            .push((self.stored_key(&key), Some(value.clone())));
        self.entries.insert(key, value);
    }

    fn delete(&mut self, key: &[u8]) {
        if self.entries.remove(key).is_some() {
            let stored = self.stored_key(key);
            self.writes.push((stored, None));
        }
    }

    fn put_number(&mut self, key: &[u8], n: i64) {
        self.put(key.to_vec(), n.to_be_bytes().to_vec());
    }

    fn next_sequence(&mut self) -> u64 {
        self.sequence += 1;
        self.put_number(keys::SEQUENCE, self.sequence as i64);
        self.sequence
    }

    fn row_key(side: usize, key: &[u8]) -> Vec<u8> {
        let mut k = vec![keys::ROW, side as u8];
        k.extend_from_slice(key);
        k
    }

    fn table_row(&self, side: usize, key: &[u8]) -> Option<Stored> {
        self.entries
            .get(&Self::row_key(side, key))
            .and_then(|v| Stored::decode(v))
    }

    /// Keys whose entries start with `prefix`.
    fn keys_with_prefix(&self, prefix: &[u8]) -> Vec<Vec<u8>> {
        self.entries
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The join keys (with the window bounds of windowed sources) in the converter's
    /// format; `None` for a null key.
    fn join_keys(&self, columns: &[ArrayRef]) -> Result<Vec<Option<Vec<u8>>>> {
        let rows = self
            .converter
            .convert_columns(columns)
            .map_err(|e| EngineError::statement(format!("cannot key a join: {e}")))?;
        let keys = &columns[0];
        Ok((0..keys.len())
            .map(|i| keys.is_valid(i).then(|| rows.row(i).as_ref().to_vec()))
            .collect())
    }
}

/// What a chain of joins made of some records: the last stage's joined rows, a record standing
/// for each (the one that produced it, stamped with the result's time), which rows delete their
/// key, the records that failed, and the state changes.
pub struct JoinedRows {
    /// The rows, or none when nothing joined.
    pub batch: Option<RecordBatch>,
    /// For each row, the input record that produced it, with the row's timestamp.
    pub results: Vec<LogRecord>,
    /// For each row, whether it deletes its key.
    pub tombstone: Vec<bool>,
    /// Records that could not be read.
    pub errors: Vec<crate::query::source::RecordError>,
    /// State changes of every stage.
    pub writes: StateWrites,
}

/// Runs records of one of the chain's sources through every stage after it.
pub fn join_rows(
    chain: &JoinChain,
    states: &mut [JoinState],
    source: usize,
    partition: u32,
    records: &[LogRecord],
) -> Result<JoinedRows> {
    let (mut stage, mut side) = JoinChain::entry(source);
    let mut partition = partition;
    let mut handed: Option<Vec<LogRecord>> = None;
    let mut errors = Vec::new();
    let mut writes: StateWrites = Vec::new();
    loop {
        let input: &[LogRecord] = handed.as_deref().unwrap_or(records);
        let (Some(current), Some(state)) = (chain.stages.get(stage), states.get_mut(stage)) else {
            return Err(EngineError::statement("a join stage without its state"));
        };
        let (outputs, batch, stage_errors) = join_step(current, state, side, partition, input)?;
        errors.extend(stage_errors);
        if outputs.is_empty() {
            writes.append(&mut state.writes);
            return Ok(JoinedRows {
                batch: None,
                results: Vec::new(),
                tombstone: Vec::new(),
                errors,
                writes,
            });
        }
        let joined = joined_rows(current, state, &outputs, (side, &batch))?;
        if let Some(handoff) = &current.handoff {
            let next = handoff.records(&joined, &outputs, input, state)?;
            writes.append(&mut state.writes);
            handed = Some(next);
            stage += 1;
            side = 0;
            partition = 0;
            continue;
        }
        let results: Vec<LogRecord> = outputs
            .iter()
            .map(|o| {
                let input = &input[o.from];
                LogRecord {
                    offset: input.offset,
                    record: Record {
                        key: None,
                        value: None,
                        timestamp: o.timestamp,
                        headers: input.record.headers.clone(),
                    },
                }
            })
            .collect();
        writes.append(&mut state.writes);
        return Ok(JoinedRows {
            batch: Some(joined),
            results,
            tombstone: outputs.iter().map(|o| o.tombstone).collect(),
            errors,
            writes,
        });
    }
}

/// Processes records of one of a join's sources, through every stage after it, into the sink.
pub fn process_join(
    plan: &JoinPlan,
    states: &mut [JoinState],
    (sink_columns, encoder): (&[Column], &SinkEncoder),
    source: usize,
    partition: u32,
    records: &[LogRecord],
) -> Result<(StepOutput, StateWrites)> {
    let JoinedRows {
        batch,
        results,
        tombstone,
        errors,
        mut writes,
    } = join_rows(&plan.chain, states, source, partition, records)?;
    let Some(batch) = batch else {
        return Ok((
            StepOutput {
                records: Vec::new(),
                errors,
            },
            writes,
        ));
    };
    let rows = results.len();
    let mut step = project(
        &plan.post,
        (sink_columns, encoder),
        partition,
        &results,
        Projectable {
            batch,
            rows_from: (0..rows).collect(),
            has_value: tombstone.iter().map(|t| !t).collect(),
            tombstone,
        },
        errors,
    )?;
    let last = plan.chain.stages.len().saturating_sub(1);
    if let (Some(stage), Some(state)) = (plan.chain.stages.last(), states.get_mut(last))
        && stage.shape == JoinShape::TableTable
    {
        // A table result deletes only keys it holds: a row that was never in it (filtered
        // out, or never joined) needs no tombstone. (Foreign-key joins, as in ksqlDB, always
        // propagate a deletion.)
        step.records.retain(|record| {
            let mut present = vec![keys::PRESENT];
            present.extend_from_slice(record.key.as_deref().unwrap_or_default());
            if record.value.is_some() {
                if !state.entries.contains_key(&present) {
                    state.put(present, Vec::new());
                }
                true
            } else if state.entries.contains_key(&present) {
                state.delete(&present);
                true
            } else {
                false
            }
        });
        writes.append(&mut state.writes);
    }
    Ok((step, writes))
}

/// Joins records arriving on one side of a stage: the results, the decoded input rows they
/// may take their side from, and the records that could not be decoded.
fn join_step(
    plan: &JoinStage,
    state: &mut JoinState,
    side: usize,
    partition: u32,
    records: &[LogRecord],
) -> Result<(
    Vec<Output>,
    RecordBatch,
    Vec<crate::query::source::RecordError>,
)> {
    let input = plan.sides()[side];
    let decoded = input.decoder.decode(partition, records)?;
    let errors = decoded.errors;
    let bad: HashSet<i64> = errors.iter().map(|e| e.offset).collect();
    let rows_from: Vec<usize> = (0..records.len())
        .filter(|i| !bad.contains(&records[*i].offset))
        .collect();
    let batch = decoded.batch;
    let key_values = input
        .key
        .evaluate(&batch)
        .and_then(|v| v.into_array(batch.num_rows()))
        .map_err(|e| EngineError::statement(format!("Error computing the join key: {e}")))?;
    let mut key_columns = vec![key_values];
    if plan.window.is_some() {
        for bound in [WINDOWSTART, WINDOWEND] {
            let column = batch.column_by_name(bound).cloned().ok_or_else(|| {
                EngineError::statement(format!("a windowed source without {bound}"))
            })?;
            key_columns.push(column);
        }
    }
    let join_keys = state.join_keys(&key_columns)?;
    let mut outputs = Vec::new();
    for (row, &from) in rows_from.iter().enumerate() {
        let record = &records[from];
        let stored = Stored {
            key: record.record.key.as_ref().map(|k| k.to_vec()),
            value: record.record.value.as_ref().map(|v| v.to_vec()),
            timestamp: batch_rowtime(&batch, row).unwrap_or(record.record.timestamp),
            partition,
            offset: record.offset,
            headers: record.record.headers.clone(),
        };
        let has_value = decoded.has_value[row];
        let key = join_keys[row].clone();
        let (offset, before) = (stored.offset, outputs.len());
        let input_row = (key, stored, has_value, from);
        match plan.shape {
            JoinShape::StreamStream(window) => {
                stream_stream(plan.join_type, window, state, side, input_row, &mut outputs)
            }
            JoinShape::StreamTable => {
                stream_table(plan.join_type, state, side, input_row, &mut outputs)
            }
            JoinShape::TableTable => {
                table_table(plan.join_type, state, side, input_row, &mut outputs)
            }
            JoinShape::ForeignKey => {
                foreign_key(plan.join_type, state, side, input_row, &mut outputs)
            }
        }
        // Results holding this very record take it from the decoded batch.
        for o in &mut outputs[before..] {
            let slot = if side == 0 { &o.left } else { &o.right };
            if slot
                .as_ref()
                .is_some_and(|s| s.offset == offset && s.partition == partition)
            {
                o.current = Some(row);
            }
        }
    }
    Ok((outputs, batch, errors))
}

fn batch_rowtime(batch: &RecordBatch, row: usize) -> Option<i64> {
    batch
        .column_by_name(ROWTIME)
        .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
        .filter(|c| c.is_valid(row))
        .map(|c| c.value(row))
}

/// One input row: its join key, the record, whether it has a value, and its index.
type InputRow = (Option<Vec<u8>>, Stored, bool, usize);

fn pair<T>(side: usize, this: Option<T>, other: Option<T>) -> (Option<T>, Option<T>) {
    if side == 0 {
        (this, other)
    } else {
        (other, this)
    }
}

fn stream_stream(
    join_type: JoinType,
    window: JoinWindowMs,
    state: &mut JoinState,
    side: usize,
    (key, record, has_value, from): InputRow,
    out: &mut Vec<Output>,
) {
    // Records without a key or a value cannot join.
    let Some(key) = key else { return };
    if !has_value {
        return;
    }
    let ts = record.timestamp;
    let other = 1 - side;
    let retention = window.retention();
    // This side's window store: keep the record unless it is already expired, and forget
    // what has.
    state.observed[side] = state.observed[side].max(ts);
    state.put_number(keys::OBSERVED[side], state.observed[side]);
    let expired_before = state.observed[side].saturating_sub(retention);
    let sequence = state.next_sequence();
    if ts > expired_before {
        let mut window_key = vec![keys::WINDOW, side as u8];
        with_len(&mut window_key, &key);
        window_key.extend_from_slice(&time_bytes(ts));
        window_key.extend_from_slice(&sequence.to_be_bytes());
        let mut expiry_key = vec![keys::EXPIRY, side as u8];
        expiry_key.extend_from_slice(&time_bytes(ts));
        expiry_key.extend_from_slice(&sequence.to_be_bytes());
        state.put(window_key.clone(), record.encode());
        state.put(expiry_key, window_key);
    }
    expire(state, side, expired_before);

    let (from_ts, to_ts) = if side == 0 {
        (ts - window.before, ts + window.after)
    } else {
        (ts - window.after, ts + window.before)
    };
    let (from_ts, to_ts) = (from_ts.max(0), to_ts.max(0));
    state.stream_time = state.stream_time.max(ts);
    state.put_number(keys::STREAM_TIME, state.stream_time);
    if window.wait_for_close && ts == state.stream_time {
        emit_closed(state, window, out, from);
    }
    let from_ts = from_ts.max(state.observed[other].saturating_sub(retention) + 1);
    let mut prefix = vec![keys::WINDOW, other as u8];
    with_len(&mut prefix, &key);
    let mut matched = false;
    if from_ts <= to_ts {
        let mut lower = prefix.clone();
        lower.extend_from_slice(&time_bytes(from_ts));
        let mut upper = prefix.clone();
        upper.extend_from_slice(&time_bytes(to_ts));
        upper.extend_from_slice(&u64::MAX.to_be_bytes());
        let partners: Vec<Stored> = state
            .entries
            .range(lower..=upper)
            .filter_map(|(_, v)| Stored::decode(v))
            .collect();
        for partner in partners {
            matched = true;
            if window.wait_for_close {
                let mut waiting = vec![keys::WAITING];
                waiting.extend_from_slice(&time_bytes(partner.timestamp));
                waiting.push(other as u8);
                with_len(&mut waiting, &key);
                for k in state.keys_with_prefix(&waiting) {
                    state.delete(&k);
                }
            }
            let timestamp = ts.max(partner.timestamp);
            let (left, right) = pair(side, Some(record.clone()), Some(partner));
            out.push(Output {
                left,
                right,
                timestamp,
                key: key.clone(),
                tombstone: false,
                from,
                current: None,
            });
        }
    }
    if !matched && join_type.preserves(side) {
        if !window.wait_for_close || to_ts < state.stream_time {
            let (left, right) = pair(side, Some(record), None);
            out.push(Output {
                left,
                right,
                timestamp: ts,
                key,
                tombstone: false,
                from,
                current: None,
            });
        } else {
            let mut waiting = vec![keys::WAITING];
            waiting.extend_from_slice(&time_bytes(ts));
            waiting.push(side as u8);
            with_len(&mut waiting, &key);
            waiting.extend_from_slice(&sequence.to_be_bytes());
            state.put(waiting, record.encode());
        }
    }
}

/// Forgets a side's windowed records at or before `expired_before`.
fn expire(state: &mut JoinState, side: usize, expired_before: i64) {
    let prefix = [keys::EXPIRY, side as u8];
    let mut done = Vec::new();
    for (k, v) in state.entries.range(prefix.to_vec()..) {
        if !k.starts_with(&prefix) {
            break;
        }
        match time_from_bytes(&k[2..]) {
            Some(t) if t <= expired_before => done.push((k.clone(), v.clone())),
            _ => break,
        }
    }
    for (expiry, window_key) in done {
        state.delete(&expiry);
        state.delete(&window_key);
    }
}

/// Emits the records still waiting for a partner whose window has closed.
fn emit_closed(state: &mut JoinState, window: JoinWindowMs, out: &mut Vec<Output>, from: usize) {
    let mut closed = Vec::new();
    for (k, v) in state.entries.range(vec![keys::WAITING]..) {
        if k.first() != Some(&keys::WAITING) {
            break;
        }
        let Some(ts) = time_from_bytes(&k[1..]) else {
            continue;
        };
        let side = usize::from(k.get(9).copied().unwrap_or(0) != 0);
        let look = if side == 0 {
            window.after
        } else {
            window.before
        };
        if ts + look + window.grace >= state.stream_time {
            continue;
        }
        let key_len = k
            .get(10..14)
            .and_then(|b| b.try_into().ok())
            .map_or(0, |b| u32::from_be_bytes(b) as usize);
        let key = k
            .get(14..14 + key_len)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        if let Some(record) = Stored::decode(v) {
            closed.push((k.clone(), side, key, record));
        }
    }
    for (k, side, key, record) in closed {
        state.delete(&k);
        let timestamp = record.timestamp;
        let (left, right) = pair(side, Some(record), None);
        out.push(Output {
            left,
            right,
            timestamp,
            key,
            tombstone: false,
            from,
            current: None,
        });
    }
}

fn stream_table(
    join_type: JoinType,
    state: &mut JoinState,
    side: usize,
    (key, record, has_value, from): InputRow,
    out: &mut Vec<Output>,
) {
    if side == 1 {
        // The table: remember its latest row per key.
        let Some(key) = key else { return };
        let row_key = JoinState::row_key(1, &key);
        if has_value {
            state.put(row_key, record.encode());
        } else {
            state.delete(&row_key);
        }
        return;
    }
    if !has_value {
        return;
    }
    let partner = key.as_ref().and_then(|k| state.table_row(1, k));
    if partner.is_some() || join_type == JoinType::Left {
        let timestamp = record.timestamp;
        out.push(Output {
            left: Some(record),
            right: partner,
            timestamp,
            key: key.unwrap_or_default(),
            tombstone: false,
            from,
            current: None,
        });
    }
}

/// Whether a pair of rows makes a result row of the join.
fn result_exists(join_type: JoinType, left: bool, right: bool) -> bool {
    match join_type {
        JoinType::Inner => left && right,
        JoinType::Left => left,
        JoinType::Right => right,
        JoinType::Outer => left || right,
    }
}

fn table_table(
    join_type: JoinType,
    state: &mut JoinState,
    side: usize,
    (key, record, has_value, from): InputRow,
    out: &mut Vec<Output>,
) {
    let Some(key) = key else { return };
    let row_key = JoinState::row_key(side, &key);
    let old = state.table_row(side, &key);
    let new = has_value.then(|| record.clone());
    match &new {
        Some(r) => state.put(row_key, r.encode()),
        None => state.delete(&row_key),
    }
    let other = state.table_row(1 - side, &key);
    let (old_l, old_r) = pair(side, old.as_ref().map(|_| ()), other.as_ref().map(|_| ()));
    let had = result_exists(join_type, old_l.is_some(), old_r.is_some());
    let (left, right) = pair(side, new, other);
    let timestamp = [&left, &right]
        .iter()
        .filter_map(|s| s.as_ref().map(|s| s.timestamp))
        .max()
        .unwrap_or(record.timestamp)
        .max(record.timestamp);
    if result_exists(join_type, left.is_some(), right.is_some()) {
        out.push(Output {
            left,
            right,
            timestamp,
            key,
            tombstone: false,
            from,
            current: None,
        });
    } else if had {
        out.push(Output {
            left: None,
            right: None,
            timestamp,
            key,
            tombstone: true,
            from,
            current: None,
        });
    }
}

/// A foreign-key join's left row: the foreign key it points at, then the record.
fn encode_left_row(foreign: Option<&[u8]>, record: &Stored) -> Vec<u8> {
    let mut out = vec![u8::from(foreign.is_some())];
    with_len(&mut out, foreign.unwrap_or_default());
    out.extend_from_slice(&record.encode());
    out
}

fn decode_left_row(bytes: &[u8]) -> Option<(Option<Vec<u8>>, Stored)> {
    let present = *bytes.first()? != 0;
    let len = u32::from_be_bytes(bytes.get(1..5)?.try_into().ok()?) as usize;
    let foreign = bytes.get(5..5 + len)?.to_vec();
    let record = Stored::decode(bytes.get(5 + len..)?)?;
    Some((present.then_some(foreign), record))
}

fn foreign_index_key(foreign: &[u8], left_key: &[u8]) -> Vec<u8> {
    let mut k = vec![keys::FOREIGN];
    with_len(&mut k, foreign);
    k.extend_from_slice(left_key);
    k
}

fn foreign_key(
    join_type: JoinType,
    state: &mut JoinState,
    side: usize,
    (key, record, has_value, from): InputRow,
    out: &mut Vec<Output>,
) {
    if side == 1 {
        // A right row changed: every left row pointing at it changes with it.
        let Some(key) = key else { return };
        let row_key = JoinState::row_key(1, &key);
        let new = has_value.then(|| record.clone());
        let old = state.table_row(1, &key);
        match &new {
            Some(r) => state.put(row_key, r.encode()),
            None => state.delete(&row_key),
        }
        if new.is_none() && old.is_none() {
            return;
        }
        let mut prefix = vec![keys::FOREIGN];
        with_len(&mut prefix, &key);
        for index in state.keys_with_prefix(&prefix) {
            let left_key = &index[prefix.len()..];
            let Some((_, left)) = state
                .entries
                .get(&JoinState::row_key(0, left_key))
                .and_then(|v| decode_left_row(v))
            else {
                continue;
            };
            let timestamp = record.timestamp.max(left.timestamp);
            let tombstone = new.is_none() && join_type == JoinType::Inner;
            out.push(Output {
                left: Some(if tombstone { key_only(&left) } else { left }),
                right: if tombstone { None } else { new.clone() },
                timestamp,
                key: key.clone(),
                tombstone,
                from,
                current: None,
            });
        }
        return;
    }
    // A left row changed: its own key is the record key.
    let Some(left_key) = record.key.clone() else {
        return;
    };
    let row_key = JoinState::row_key(0, &left_key);
    let old = state.entries.get(&row_key).and_then(|v| decode_left_row(v));
    if let Some((Some(old_foreign), _)) = &old {
        state.delete(&foreign_index_key(old_foreign, &left_key));
    }
    if !has_value {
        state.delete(&row_key);
        if old.is_some() {
            out.push(Output {
                left: Some(key_only(&record)),
                right: None,
                timestamp: record.timestamp,
                key: Vec::new(),
                tombstone: true,
                from,
                current: None,
            });
        }
        return;
    }
    state.put(row_key, encode_left_row(key.as_deref(), &record));
    if let Some(foreign) = &key {
        state.put(foreign_index_key(foreign, &left_key), Vec::new());
    }
    let partner = key.as_ref().and_then(|k| state.table_row(1, k));
    let timestamp = record
        .timestamp
        .max(partner.as_ref().map_or(i64::MIN, |p| p.timestamp));
    match (partner, join_type) {
        (Some(partner), _) => out.push(Output {
            left: Some(record),
            right: Some(partner),
            timestamp,
            key: key.unwrap_or_default(),
            tombstone: false,
            from,
            current: None,
        }),
        (None, JoinType::Left) => out.push(Output {
            left: Some(record),
            right: None,
            timestamp,
            key: key.unwrap_or_default(),
            tombstone: false,
            from,
            current: None,
        }),
        (None, _) => {
            // An inner result that no longer joins is deleted.
            let had = old
                .and_then(|(f, _)| f)
                .is_some_and(|f| state.table_row(1, &f).is_some());
            if had {
                out.push(Output {
                    left: Some(key_only(&record)),
                    right: None,
                    timestamp,
                    key: Vec::new(),
                    tombstone: true,
                    from,
                    current: None,
                });
            }
        }
    }
}

/// A record with its key only: a deleted row that still names its key.
fn key_only(record: &Stored) -> Stored {
    Stored {
        value: None,
        ..record.clone()
    }
}

/// Decodes the results' records with the sides' decoders and lays them side by side.
fn joined_rows(
    plan: &JoinStage,
    state: &JoinState,
    outputs: &[Output],
    (trigger, current): (usize, &RecordBatch),
) -> Result<RecordBatch> {
    let n = outputs.len();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(plan.joined_schema.fields().len());
    for (side, input) in plan.sides().into_iter().enumerate() {
        fn slot_of(o: &Output, side: usize) -> Option<&Stored> {
            if side == 0 {
                o.left.as_ref()
            } else {
                o.right.as_ref()
            }
        }
        // The input's own rows are already decoded; only records from state are decoded here.
        let in_batch = |o: &Output| if side == trigger { o.current } else { None };
        let records: Vec<LogRecord> = outputs
            .iter()
            .filter(|o| in_batch(o).is_none())
            .filter_map(|o| slot_of(o, side))
            .map(Stored::log_record)
            .collect();
        let decoded = input.decoder.decode(0, &records)?;
        // Rows that fail to decode now (they decoded once) are left null.
        let bad: HashSet<i64> = decoded.errors.iter().map(|e| e.offset).collect();
        let mut row_of = Vec::with_capacity(records.len());
        let mut next = 0usize;
        for r in &records {
            if bad.contains(&r.offset) {
                row_of.push(None);
            } else {
                row_of.push(Some(next));
                next += 1;
            }
        }
        // Each row from the input batch (0), the decoded records (1), or a null row (2).
        let mut picks: Vec<(usize, usize)> = Vec::with_capacity(n);
        let mut partitions: Vec<Option<i32>> = Vec::with_capacity(n);
        let mut k = 0;
        for o in outputs {
            match (in_batch(o), slot_of(o, side)) {
                (Some(row), s) => {
                    picks.push((0, row));
                    partitions.push(s.map(|s| s.partition as i32));
                }
                (None, Some(s)) => {
                    match row_of[k] {
                        Some(r) => {
                            picks.push((1, r));
                            partitions.push(Some(s.partition as i32));
                        }
                        None => {
                            picks.push((2, 0));
                            partitions.push(None);
                        }
                    }
                    k += 1;
                }
                (None, None) => {
                    picks.push((2, 0));
                    partitions.push(None);
                }
            }
        }
        for (i, field) in input.decoder.schema().fields().iter().enumerate() {
            if field.name() == ROWPARTITION {
                columns.push(Arc::new(Int32Array::from(partitions.clone())));
                continue;
            }
            let null = new_null_array(field.data_type(), 1);
            let from_input = if side == trigger && i < current.num_columns() {
                current.column(i).clone()
            } else {
                null.clone()
            };
            let from_state = if decoded.batch.num_rows() > 0 {
                decoded.batch.column(i).clone()
            } else {
                null.clone()
            };
            let sources: [&dyn Array; 3] =
                [from_input.as_ref(), from_state.as_ref(), null.as_ref()];
            columns.push(
                interleave(&sources, &picks).map_err(|e| EngineError::statement(e.to_string()))?,
            );
        }
    }
    columns.push(Arc::new(Int64Array::from_iter_values(
        outputs.iter().map(|o| o.timestamp),
    )));
    let key_arrays = if plan.key_column.is_some() || plan.window.is_some() {
        let rows: Vec<Option<Vec<u8>>> = outputs
            .iter()
            .map(|o| (!o.key.is_empty()).then(|| o.key.clone()))
            .collect();
        keys_arrays(state, plan, &rows)?
    } else {
        Vec::new()
    };
    if plan.window.is_some() {
        columns.extend(key_arrays.iter().skip(1).take(2).cloned());
    }
    let key_array = if plan.key_column.is_some() {
        key_arrays.first().cloned()
    } else {
        None
    };
    if plan.joined_schema.fields().len() > columns.len()
        && let Some(keys) = &key_array
    {
        columns.push(keys.clone());
    }
    if let (Some(index), Some(keys)) = (plan.key_column, key_array)
        && index < columns.len()
    {
        columns[index] = keys;
    }
    RecordBatch::try_new_with_options(
        plan.joined_schema.clone(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(n)),
    )
    .map_err(|e| EngineError::statement(format!("cannot join rows: {e}")))
}

/// The join keys (and window bounds) as arrays, back from the converter's format.
fn keys_arrays(
    state: &JoinState,
    plan: &JoinStage,
    keys: &[Option<Vec<u8>>],
) -> Result<Vec<ArrayRef>> {
    let present: Vec<&Vec<u8>> = keys.iter().flatten().collect();
    if present.is_empty() {
        let mut arrays = vec![new_null_array(&plan.key_type, keys.len())];
        if plan.window.is_some() {
            arrays.push(new_null_array(&DataType::Int64, keys.len()));
            arrays.push(new_null_array(&DataType::Int64, keys.len()));
        }
        return Ok(arrays);
    }
    let parser = state.converter.parser();
    let rows: Vec<_> = present.iter().map(|k| parser.parse(k)).collect();
    let converted = state
        .converter
        .convert_rows(rows)
        .map_err(|e| EngineError::statement(format!("cannot read a join key: {e}")))?;
    let mut next = 0u32;
    let indices: UInt32Array = keys
        .iter()
        .map(|k| {
            k.as_ref().map(|_| {
                next += 1;
                next - 1
            })
        })
        .collect();
    converted
        .iter()
        .map(|values| {
            take(values.as_ref(), &indices, None).map_err(|e| EngineError::statement(e.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> JoinState {
        JoinState {
            namespace: "test".into(),
            stage: 0,
            entries: BTreeMap::new(),
            writes: Vec::new(),
            converter: RowConverter::new(vec![SortField::new(DataType::Utf8)]).unwrap(),
            stream_time: i64::MIN,
            observed: [i64::MIN; 2],
            sequence: 0,
        }
    }

    fn record(offset: i64, timestamp: i64) -> Stored {
        Stored {
            key: Some(b"k".to_vec()),
            value: Some(b"v".to_vec()),
            timestamp,
            partition: 0,
            offset,
            headers: Vec::new(),
        }
    }

    /// (left offset, right offset, timestamp) of each result.
    fn summary(out: &[Output]) -> Vec<(Option<i64>, Option<i64>, i64)> {
        out.iter()
            .map(|o| {
                (
                    o.left.as_ref().map(|s| s.offset),
                    o.right.as_ref().map(|s| s.offset),
                    o.timestamp,
                )
            })
            .collect()
    }

    #[test]
    fn a_left_join_with_grace_emits_the_unmatched_row_once_its_window_closes() {
        let window = JoinWindowMs {
            before: 10,
            after: 10,
            grace: 5,
            wait_for_close: true,
        };
        let mut st = state();
        let mut out = Vec::new();
        let key = Some(b"k".to_vec());
        stream_stream(
            JoinType::Left,
            window,
            &mut st,
            0,
            (key.clone(), record(1, 100), true, 0),
            &mut out,
        );
        // Still within the window plus grace: nothing yet.
        stream_stream(
            JoinType::Left,
            window,
            &mut st,
            0,
            (Some(b"x".to_vec()), record(2, 114), true, 1),
            &mut out,
        );
        assert!(out.is_empty());
        // Time passes 100 + 10 + 5: the first row comes out alone, at its own time.
        stream_stream(
            JoinType::Left,
            window,
            &mut st,
            0,
            (Some(b"y".to_vec()), record(3, 116), true, 2),
            &mut out,
        );
        assert_eq!(summary(&out), [(Some(1), None, 100)]);
    }

    #[test]
    fn a_stream_stream_match_takes_the_later_time_and_cancels_the_outer_row() {
        let window = JoinWindowMs {
            before: 10,
            after: 10,
            grace: 0,
            wait_for_close: true,
        };
        let mut st = state();
        let mut out = Vec::new();
        let key = Some(b"k".to_vec());
        stream_stream(
            JoinType::Outer,
            window,
            &mut st,
            0,
            (key.clone(), record(1, 100), true, 0),
            &mut out,
        );
        stream_stream(
            JoinType::Outer,
            window,
            &mut st,
            1,
            (key.clone(), record(7, 105), true, 1),
            &mut out,
        );
        assert_eq!(summary(&out), [(Some(1), Some(7), 105)]);
        // Long after: neither side is emitted again as unmatched.
        stream_stream(
            JoinType::Outer,
            window,
            &mut st,
            0,
            (Some(b"z".to_vec()), record(2, 500), true, 2),
            &mut out,
        );
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn a_table_join_deletes_a_result_only_when_one_existed() {
        let mut st = state();
        let mut out = Vec::new();
        let key = Some(b"k".to_vec());
        table_table(
            JoinType::Inner,
            &mut st,
            0,
            (key.clone(), record(1, 1), true, 0),
            &mut out,
        );
        assert!(out.is_empty(), "no right row yet");
        table_table(
            JoinType::Inner,
            &mut st,
            1,
            (key.clone(), record(2, 2), true, 1),
            &mut out,
        );
        table_table(
            JoinType::Inner,
            &mut st,
            0,
            (key.clone(), record(3, 3), false, 2),
            &mut out,
        );
        assert_eq!(out.len(), 2);
        assert!(!out[0].tombstone && out[1].tombstone);
        // Deleting the right row now changes nothing: there is no result left.
        table_table(
            JoinType::Inner,
            &mut st,
            1,
            (key, record(4, 4), false, 3),
            &mut out,
        );
        assert_eq!(out.len(), 2);
    }
}
