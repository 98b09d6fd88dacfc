//! Planning a query's joins: the chain of stages, each joining the rows so far with one more
//! source, checked with ksqlDB's rules on join kinds, conditions, keys and windows.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use eddy_sql::ast::{BinaryOp, Expr, ExprKind, JoinKind, Query, SourceKind, SqlType};

use super::rows::Handoff;
use super::scope::{Member, Resolved, Sides, joined_rows_source};
use super::tail::{LastStage, plan_last_aggregate, plan_last_stage};
use super::{
    JoinChain, JoinPlan, JoinShape, JoinSide, JoinStage, JoinTail, JoinType, JoinWindowMs,
    WindowRows,
};
use crate::catalog::{Catalog, DataSource};
use crate::error::{EngineError, Result};
use crate::format::Format;
use crate::query::scope::{compile_in, df_schema, located_error, named_source, source_scope};
use crate::query::source::{ROWTIME, SourceDecoder, WINDOWEND, WINDOWSTART};
use crate::schema::{Column, ColumnKind, PSEUDO_COLUMNS, type_display};

/// ksqlDB's grace period for a `WITHIN` without one: 24 hours.
const DEFAULT_GRACE_MS: i64 = 24 * 60 * 60 * 1000;

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
        // Beyond ksqlDB: a windowed table may look up a table on a foreign key (an expression
        // of its columns, its window bounds included); `stage_shape` checks that it does.
        (Some(_), None) if left.kind == SourceKind::Table && right.kind == SourceKind::Table => {}
        // Beyond ksqlDB: a stream may join a windowed table's final rows for the window its
        // records fall in; `stream_window_shape` checks the table.
        (None, Some(_)) if left.kind == SourceKind::Stream && right.kind == SourceKind::Table => {}
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
    let single_member = |e: &Expr| -> Result<usize> {
        match sides.referenced_members(e, "JOIN ON")?.as_slice() {
            [member] => Ok(*member),
            _ => Err(EngineError::statement(format!(
                "Invalid comparison expression '{e}' in join '{written}'. Each side of the join comparision must contain references from exactly one source."
            ))),
        }
    };
    let (member_a, member_b) = (single_member(a)?, single_member(b)?);
    let alias = |m: usize| &sides.members[m].alias;
    if member_a == member_b {
        return Err(EngineError::statement(format!(
            "Each side of the join must reference exactly one source and not the same source. Left side references {} and right references {}",
            alias(member_a),
            alias(member_b)
        )));
    }
    // The source this JOIN brings in is the last member; its criteria must name it.
    let joined = sides.members.len() - 1;
    if member_a != joined && member_b != joined {
        return Err(EngineError::statement(format!(
            "A join criteria is expected to reference the source ({}) in the FROM clause, instead the right source references {} and the left source references {}",
            alias(joined),
            alias(member_b),
            alias(member_a)
        )));
    }
    let (side_a, side_b) = (sides.members[member_a].side, sides.members[member_b].side);
    if side_a == side_b {
        return Err(EngineError::internal(
            "a join condition's sources are on one side",
        ));
    }
    let got = format!("Got {} = {}.", sides.qualified(a), sides.qualified(b));
    let (left, right) = if side_a == 0 { (a, b) } else { (b, a) };
    Ok(Condition { left, right, got })
}

/// The shape of a stage, refusing the conditions ksqlDB refuses.
fn stage_shape(
    sides: &Sides<'_>,
    join: &eddy_sql::ast::Join,
    (join_type, left_is_key): (JoinType, bool),
    cond: &Condition<'_>,
) -> Result<JoinShape> {
    let [left, right] = sides.side_sources;
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
            let before = within.before.millis();
            JoinShape::StreamStream(JoinWindowMs {
                before,
                after: within.after.map_or(before, |d| d.millis()),
                grace: within.grace.map_or(DEFAULT_GRACE_MS, |d| d.millis()),
                wait_for_close: within.grace.is_some(),
            })
        }
        (SourceKind::Stream, SourceKind::Table) if right.window.is_some() => {
            stream_window_shape(right, right_is_key)?
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
            if left_is_key && left.window.is_some() != right.window.is_some() {
                let window = left.window.as_ref().map_or("", |w| w.window_type.name());
                return Err(EngineError::statement(format!(
                    "Can not join windowed source to non-windowed source.\n`{}` is {window} windowed\n`{}` is not windowed",
                    left.name, right.name
                )));
            } else if left_is_key {
                JoinShape::TableTable
            } else if right.window.is_some() {
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

/// A stream joined with a windowed table: the table's windows must be tumbling, and its rows
/// final (written with `EMIT FINAL`), so that a record's window has its rows once and for all.
/// Joined on its key (`on_key`), or without key columns, the table has at most one row per
/// join key and window.
fn stream_window_shape(table: &DataSource, on_key: bool) -> Result<JoinShape> {
    use crate::catalog::WindowType;
    let Some(window) = &table.window else {
        return Err(EngineError::internal("a windowed table without its window"));
    };
    let size = match (window.window_type, window.size_ms) {
        (WindowType::Tumbling, Some(size)) if size > 0 => size as i64,
        _ => {
            return Err(EngineError::Unsupported(format!(
                "joining a stream with a {} windowed table; a stream joins TUMBLING windowed tables",
                window.window_type.name()
            )));
        }
    };
    if !table.emits_final() {
        return Err(EngineError::statement(format!(
            "A stream can only join a windowed table whose rows are final: `{}` is not written by a query with EMIT FINAL.",
            table.name
        )));
    }
    let rows = if table.key_columns().next().is_none() {
        WindowRows::OnePerWindow
    } else if on_key {
        WindowRows::OnePerKey
    } else {
        WindowRows::Many
    };
    Ok(JoinShape::StreamWindow { size, rows })
}

/// What follows the joins of a query, to plan over the last stage's rows.
#[derive(Clone, Copy)]
enum Then<'a> {
    /// A projection into a sink called `sink_name` of kind `sink_kind`; `transient` for a
    /// push or pull query.
    Project {
        sink_name: &'a str,
        sink_kind: SourceKind,
        transient: bool,
    },
    /// An aggregation into a table called `sink_name`.
    Aggregate { sink_name: &'a str },
}

/// Plans a query whose `FROM` joins two or more sources and projects their rows: a chain of
/// stages, each joining the rows so far with one more source, evaluated left to right as
/// ksqlDB does.
pub fn plan_join(
    ctx: &SessionContext,
    catalog: &Catalog,
    query: &Query,
    (sink_name, sink_kind): (&str, SourceKind),
    transient: bool,
) -> Result<JoinPlan> {
    let then = Then::Project {
        sink_name,
        sink_kind,
        transient,
    };
    ChainPlanning::new(ctx, catalog, query)?.plan(then)
}

/// Plans an aggregation of the rows of a query's joins (`... FROM a JOIN b ... GROUP BY`).
pub fn plan_join_aggregate(
    ctx: &SessionContext,
    catalog: &Catalog,
    query: &Query,
    sink_name: &str,
) -> Result<JoinPlan> {
    let plan = ChainPlanning::new(ctx, catalog, query)?.plan(Then::Aggregate { sink_name })?;
    if plan.chain.yields_table() {
        return Err(EngineError::Unsupported(
            "GROUP BY over the result of a table-table join in the same query".into(),
        ));
    }
    Ok(plan)
}

/// The sources of a query's joins by the names the query gives them, while its stages are
/// planned.
struct ChainPlanning<'q> {
    ctx: &'q SessionContext,
    catalog: &'q Catalog,
    query: &'q Query,
    /// Each source, with its alias, in the order the query names them.
    sources: Vec<(String, &'q DataSource)>,
}

/// One stage's sides and join expressions, planned.
struct StageKeys<'q> {
    sides: Sides<'q>,
    decoders: [SourceDecoder; 2],
    keys: [Arc<dyn PhysicalExpr>; 2],
    key_type: DataType,
    shape: JoinShape,
    rekeyed: [bool; 2],
    /// Columns that may be the result's key: (joined name, as written in messages).
    candidates: Vec<(String, String)>,
    /// The expressions equal to the stage's key, for the stages after it.
    equivalence: KeyEquivalence,
}

/// The expressions a join's key equals (ksqlDB's join equivalence set), and which of them are
/// columns that may name the key: joining `A.ID = B.ID` and then `A.ID = C.ID` makes any of
/// `A.ID`, `B.ID` and `C.ID` the result's key. A full outer join's key equals none of them.
#[derive(Debug, Clone, Default)]
struct KeyEquivalence {
    /// The equal expressions, qualified as written (`A.ID`, `B.ID + 1`).
    set: Vec<String>,
    /// The columns among them, in order (earlier stages first, then left before right):
    /// (joined name, as written in messages).
    viable: Vec<(String, String)>,
}

impl KeyEquivalence {
    /// The equivalence after a stage joining `keys` (left, right), whose columns are `columns`,
    /// onto rows whose equivalence is `self`.
    fn then(
        &self,
        join_type: JoinType,
        keys: [String; 2],
        columns: Vec<(String, String)>,
    ) -> KeyEquivalence {
        if join_type == JoinType::Outer {
            return KeyEquivalence::default();
        }
        let mut set: Vec<String> = keys.to_vec();
        let continues = self.set.iter().any(|e| keys.contains(e));
        if continues {
            set.extend(self.set.iter().filter(|e| !keys.contains(e)).cloned());
        }
        let mut viable: Vec<(String, String)> = Vec::new();
        let earlier = if continues {
            self.viable.clone()
        } else {
            Vec::new()
        };
        for candidate in earlier.into_iter().chain(columns) {
            if set.contains(&candidate.1) && !viable.iter().any(|v| v.0 == candidate.0) {
                viable.push(candidate);
            }
        }
        KeyEquivalence { set, viable }
    }
}

impl<'q> ChainPlanning<'q> {
    /// The query's sources, refusing self joins and two sources over one topic.
    fn new(ctx: &'q SessionContext, catalog: &'q Catalog, query: &'q Query) -> Result<Self> {
        let alias_of = |a: &eddy_sql::ast::AliasedSource| {
            a.alias
                .as_ref()
                .map_or(a.name.value.clone(), |x| x.value.clone())
        };
        let first = named_source(catalog, &query.from.source)?;
        let mut sources: Vec<(String, &DataSource)> = vec![(alias_of(&query.from.source), first)];
        for join in &query.from.joins {
            let right = named_source(catalog, &join.source)?;
            if let Some((_, same)) = sources.iter().find(|(_, s)| s.name == right.name) {
                return Err(EngineError::statement(if sources.len() > 1 {
                    format!(
                        "N-way joins do not support multiple occurrences of the same source. Source: '{}'.",
                        right.name
                    )
                } else {
                    format!(
                        "Can not join '{0}' to '{0}': self joins are not yet supported.",
                        same.name
                    )
                }));
            }
            if sources.iter().any(|(_, s)| s.topic == right.topic) {
                return Err(EngineError::Unsupported(
                    "joining two sources over the same topic".into(),
                ));
            }
            sources.push((alias_of(&join.source), right));
        }
        if query.from.joins.len() > 1 && sources.iter().any(|(_, s)| s.window.is_some()) {
            return Err(EngineError::Unsupported(
                "joins of more than two windowed sources".into(),
            ));
        }
        Ok(ChainPlanning {
            ctx,
            catalog,
            query,
            sources,
        })
    }

    /// The first source named.
    fn first(&self) -> &'q DataSource {
        self.sources[0].1
    }

    /// Plans every stage, each left side being the first source and then the rows of the
    /// stage before, and what follows the last.
    fn plan(&self, then: Then<'_>) -> Result<JoinPlan> {
        let joins = &self.query.from.joins;
        let mut composite: Option<DataSource> = None;
        let mut stages: Vec<JoinStage> = Vec::new();
        let mut tail = None;
        let mut equivalence = KeyEquivalence::default();
        for (k, join) in joins.iter().enumerate() {
            let left: &DataSource = composite.as_ref().unwrap_or(self.first());
            let stage = self.stage_keys(k, left, join, &equivalence)?;
            equivalence = stage.equivalence.clone();
            let joined_schema = self.joined_schema(k, left, &stage.sides, &stage.key_type);
            let result_kind = if left.kind == SourceKind::Stream {
                SourceKind::Stream
            } else {
                SourceKind::Table
            };
            let key_sql_type = eddy_sql::types::from_arrow(&stage.key_type).map_err(|e| {
                EngineError::statement(format!("The join key has a type ksqlDB cannot store: {e}"))
            })?;
            let mut next_rows = None;
            let (key_column, handoff) = if k + 1 == joins.len() {
                let (key_column, planned) =
                    self.last_stage(then, &stage, (&joined_schema, &key_sql_type), result_kind)?;
                tail = Some(planned);
                (key_column, None)
            } else {
                let (key_column, rows, handoff) =
                    self.inner_stage(k, &stage, &joined_schema, result_kind)?;
                next_rows = Some(rows);
                (key_column, Some(handoff))
            };
            let key_names = if stage.shape == JoinShape::ForeignKey {
                Vec::new()
            } else {
                let viable = stage.candidates.iter().map(|(name, _)| name.clone());
                viable.chain(stage.sides.synthetic.clone()).collect()
            };
            let StageKeys {
                sides,
                decoders: [left_decoder, right_decoder],
                keys: [left_key, right_key],
                key_type,
                shape,
                rekeyed,
                ..
            } = stage;
            stages.push(JoinStage {
                left: JoinSide {
                    source: left.clone(),
                    alias: sides.members[0].alias.clone(),
                    decoder: left_decoder,
                    key: left_key,
                    rekeyed: rekeyed[0],
                },
                right: JoinSide {
                    source: self.sources[k + 1].1.clone(),
                    alias: self.sources[k + 1].0.clone(),
                    decoder: right_decoder,
                    key: right_key,
                    rekeyed: rekeyed[1],
                },
                join_type: join_type_of(join.kind),
                shape,
                key_type,
                window: left.window,
                joined_schema,
                key_column,
                key_names,
                handoff,
            });
            if next_rows.is_some() {
                composite = next_rows;
            }
        }
        let then = tail.ok_or_else(|| EngineError::internal("a join without a source to join"))?;
        Ok(JoinPlan {
            chain: JoinChain {
                sources: self.sources.iter().map(|(_, s)| (*s).clone()).collect(),
                stages,
            },
            then,
        })
    }

    /// Stage `k`'s sides (`left` and the next source), its condition and shape, each side's
    /// join expression, and the columns that may key its result.
    fn stage_keys<'s>(
        &'s self,
        k: usize,
        left: &'s DataSource,
        join: &eddy_sql::ast::Join,
        before: &KeyEquivalence,
    ) -> Result<StageKeys<'s>> {
        let right = self.sources[k + 1].1;
        let join_type = join_type_of(join.kind);
        check_pair(left, right, join_type)?;
        let schemas = crate::codec::Schemas::of(self.ctx);
        let decoders = [
            SourceDecoder::new(left, &schemas)?,
            SourceDecoder::new(right, &schemas)?,
        ];
        let mut members: Vec<Member<'s>> = self.sources[..=k]
            .iter()
            .map(|(alias, source)| Member {
                alias: alias.clone(),
                source,
                side: 0,
                composite: k > 0,
            })
            .collect();
        members.push(Member {
            alias: self.sources[k + 1].0.clone(),
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
        // The rows of earlier stages are keyed by their join key, which every expression of its
        // equivalence set equals (ksqlDB's rule): joining on any of them joins on that key, so
        // the stage reads it, even where the expression's own source did not match.
        let equivalent_key =
            !sides.is_key_of(0, cond.left) && before.set.contains(&written_key(&sides, cond.left));
        let left_is_key = equivalent_key || sides.is_key_of(0, cond.left);
        let (left_key, left_type) = match left.key_columns().next() {
            Some(key) if equivalent_key => composite_key(&sides.schemas[0], &key.name)?,
            _ => self.compile_side(&sides, 0, cond.left)?,
        };
        let (right_key, right_type) = self.compile_side(&sides, 1, cond.right)?;
        let shape = stage_shape(&sides, join, (join_type, left_is_key), &cond)?;
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
            shape != JoinShape::ForeignKey && !left_is_key,
            !sides.is_key_of(1, cond.right),
        ];
        // A windowed table's final rows never change, so a stream may join them on any of
        // their columns.
        let final_rows = matches!(shape, JoinShape::StreamWindow { .. });
        for (side, source) in [left, right].iter().enumerate() {
            if rekeyed[side] && source.window.is_some() && !(final_rows && side == 1) {
                return Err(EngineError::statement(
                    "Implicit repartitioning of windowed sources is not supported. See https://github.com/confluentinc/ksql/issues/4385.",
                ));
            }
        }
        let equivalence = before.then(
            join_type,
            [
                written_key(&sides, cond.left),
                written_key(&sides, cond.right),
            ],
            column_keys(&sides, &cond),
        );
        let candidates = if shape == JoinShape::ForeignKey {
            foreign_key_candidates(&sides, left)
        } else {
            equivalence.viable.clone()
        };
        if shape != JoinShape::ForeignKey && candidates.is_empty() {
            sides.synthetic = Some(self.synthetic_key_name());
        }
        Ok(StageKeys {
            sides,
            decoders,
            keys: [left_key, right_key],
            key_type: left_type,
            shape,
            rekeyed,
            candidates,
            equivalence,
        })
    }

    /// A side's join expression over its own rows, and its type.
    fn compile_side(
        &self,
        sides: &Sides<'_>,
        side: usize,
        expr: &Expr,
    ) -> Result<(Arc<dyn PhysicalExpr>, DataType)> {
        let schema = &sides.schemas[side];
        let df = df_schema(schema)?;
        let scope = source_scope(self.catalog, sides.side_sources[side], "", schema, &df);
        let expr = sides.rewrite_for_side(expr)?;
        let compiled = compile_in(self.ctx, &scope, &expr, "JOIN ON")?;
        let ty = compiled
            .data_type(schema)
            .map_err(|e| EngineError::statement(e.to_string()))?;
        Ok((compiled, ty))
    }

    /// `ROWKEY`, the key of a join whose condition names no column, numbered past any column
    /// of that name.
    fn synthetic_key_name(&self) -> String {
        let taken: HashSet<&str> = self
            .sources
            .iter()
            .flat_map(|(_, s)| s.columns.iter().map(|c| c.name.as_str()))
            .collect();
        let mut name = "ROWKEY".to_string();
        let mut n = 0;
        while taken.contains(name.as_str()) {
            n += 1;
            name = format!("ROWKEY_{n}");
        }
        name
    }

    /// Stage `k`'s joined rows: the left side's columns (renamed, unless a previous stage
    /// did), the right's renamed, then `ROWTIME`, the window, and the synthetic key.
    fn joined_schema(
        &self,
        k: usize,
        left: &DataSource,
        sides: &Sides<'_>,
        key_type: &DataType,
    ) -> SchemaRef {
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
                    let alias = &self.sources[if side == 0 { 0 } else { k + 1 }].0;
                    format!("{alias}_{}", f.name())
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
            fields.push(Field::new(key, key_type.clone(), true));
        }
        Arc::new(Schema::new(fields))
    }

    /// What follows the last stage, planned over its rows, and the column of those rows that
    /// holds the join key.
    fn last_stage(
        &self,
        then: Then<'_>,
        stage: &StageKeys<'_>,
        (joined_schema, key_sql_type): (&SchemaRef, &SqlType),
        result_kind: SourceKind,
    ) -> Result<(Option<usize>, JoinTail)> {
        let sides = &stage.sides;
        let synthetic_column = || {
            sides
                .synthetic
                .as_ref()
                .and_then(|k| joined_schema.index_of(k).ok())
        };
        let (sink_name, sink_kind, transient) = match then {
            Then::Aggregate { sink_name } => {
                let planned = plan_last_aggregate(
                    self.ctx,
                    self.catalog,
                    self.query,
                    sides,
                    (joined_schema, self.first()),
                    sink_name,
                )?;
                return Ok((synthetic_column(), JoinTail::Aggregate(planned)));
            }
            Then::Project {
                sink_name,
                sink_kind,
                transient,
            } => (sink_name, sink_kind, transient),
        };
        let (key_names, planned) = plan_last_stage(
            self.ctx,
            self.catalog,
            self.query,
            sides,
            LastStage {
                shape: stage.shape,
                candidates: &stage.candidates,
                key_sql_type,
                joined_schema,
                result_kind,
                first_source: self.first(),
            },
            (sink_name, sink_kind),
            transient,
        )?;
        let key_column = if stage.shape == JoinShape::ForeignKey {
            None
        } else if !self.query.partition_by.is_empty() {
            synthetic_column()
        } else {
            key_names
                .first()
                .or(sides.synthetic.as_ref())
                .and_then(|k| joined_schema.index_of(k).ok())
        };
        Ok((key_column, JoinTail::Project(planned)))
    }

    /// A stage within the chain: the column of its rows that holds the join key, its rows
    /// described as the source the next stage reads, and how they are handed over.
    fn inner_stage(
        &self,
        k: usize,
        stage: &StageKeys<'_>,
        joined_schema: &SchemaRef,
        result_kind: SourceKind,
    ) -> Result<(Option<usize>, DataSource, Handoff)> {
        // Within the chain, the key is the first candidate.
        let key_names: Vec<String> = match &stage.sides.synthetic {
            Some(key) => vec![key.clone()],
            None if stage.shape == JoinShape::ForeignKey => {
                stage.candidates.iter().map(|(n, _)| n.clone()).collect()
            }
            None => stage
                .candidates
                .first()
                .map(|(n, _)| n.clone())
                .into_iter()
                .collect(),
        };
        let key_column = if stage.shape == JoinShape::ForeignKey {
            None
        } else {
            key_names
                .first()
                .and_then(|k| joined_schema.index_of(k).ok())
        };
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
            format!("{}_JOINED_{}", self.first().name, k + 1),
            result_kind,
            String::new(),
            columns,
        );
        let handoff = Handoff::new(&rows, joined_schema)?;
        Ok((key_column, rows, handoff))
    }
}

/// The key column of an earlier stage's rows, as a join expression over them, and its type.
fn composite_key(schema: &SchemaRef, name: &str) -> Result<(Arc<dyn PhysicalExpr>, DataType)> {
    let index = schema
        .index_of(name)
        .map_err(|e| EngineError::internal_from("a joined key column is missing", e))?;
    let column = datafusion::physical_expr::expressions::Column::new(name, index);
    Ok((Arc::new(column), schema.field(index).data_type().clone()))
}

/// A foreign-key join's result is keyed by the left table's keys, as (joined name, as written
/// in messages).
fn foreign_key_candidates(sides: &Sides<'_>, left: &DataSource) -> Vec<(String, String)> {
    let mut candidates: Vec<(String, String)> = Vec::new();
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
    candidates
}

/// The column a join expression is, if it is one: (joined name, `ALIAS.NAME`).
fn key_column(sides: &Sides<'_>, expr: &Expr) -> Option<(String, String)> {
    let ExprKind::Column { source, name } = &expr.kind else {
        return None;
    };
    match sides.resolve(source.as_ref(), name, "JOIN ON", expr.span.start) {
        Ok(Resolved::Member(m, n)) => Some((
            sides.joined_name(m, &n),
            format!("{}.{n}", sides.members[m].alias),
        )),
        _ => None,
    }
}

/// A join expression as the equivalence compares it: a column as `ALIAS.NAME`, anything else
/// qualified as written.
fn written_key(sides: &Sides<'_>, expr: &Expr) -> String {
    key_column(sides, expr).map_or_else(|| sides.qualified(expr).to_string(), |(_, w)| w)
}

/// The stage's join expressions that are columns, left first.
fn column_keys(sides: &Sides<'_>, cond: &Condition<'_>) -> Vec<(String, String)> {
    [cond.left, cond.right]
        .into_iter()
        .filter_map(|e| key_column(sides, e))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(alias: &str) -> (String, String) {
        (format!("{alias}_ID"), format!("{alias}.ID"))
    }

    /// ksqlDB's JoinTree: `A.ID = B.ID` then `A.ID = C.ID` makes all three the key; a criterion
    /// on a column outside the set starts a new one; a full outer join's key equals nothing.
    #[test]
    fn the_key_equals_every_expression_of_the_chain_it_continues() {
        let first = KeyEquivalence::default().then(
            JoinType::Inner,
            ["A.ID".into(), "(B.ID + 1)".into()],
            vec![column("A")],
        );
        assert_eq!(first.viable, [column("A")]);
        let second = first.then(
            JoinType::Left,
            ["A.ID".into(), "C.ID".into()],
            vec![column("A"), column("C")],
        );
        assert_eq!(second.viable, [column("A"), column("C")]);
        assert!(second.set.contains(&"(B.ID + 1)".to_string()));

        let apart = second.then(
            JoinType::Inner,
            ["B.X".into(), "D.ID".into()],
            vec![("B_X".into(), "B.X".into()), column("D")],
        );
        assert_eq!(apart.viable, [("B_X".into(), "B.X".into()), column("D")]);

        let outer = second.then(
            JoinType::Outer,
            ["A.ID".into(), "D.ID".into()],
            vec![column("A"), column("D")],
        );
        assert!(outer.set.is_empty() && outer.viable.is_empty());
        let after_outer = outer.then(
            JoinType::Inner,
            ["A.ID".into(), "E.ID".into()],
            vec![column("A"), column("E")],
        );
        assert_eq!(after_outer.viable, [column("A"), column("E")]);
    }
}
