//! Aggregations: `GROUP BY` over a stream, optionally in tumbling or hopping windows, into a
//! table. Aggregates are DataFusion `Accumulator`s; each group's accumulator state is kept in the
//! state store and written in the same commit as the output and the input offsets.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, Int64Array, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::{Accumulator, AggregateUDF};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use eddy_sql::Span;
use eddy_sql::ast::{
    Expr, ExprKind, Ident, Literal, Query, SelectItem, SourceKind, SqlType, WindowKind,
};
use eddy_storage::{LogRecord, Store};

use crate::catalog::{Catalog, DataSource};
use crate::error::{EngineError, Result};
use crate::query::plan::{
    GeneratedNames, OutputColumn, ProjectionInput, check_reserved_in_select, compile_in,
    named_source, qualified_text, select_item_name, source_scope,
};
use crate::query::runner::{Projectable, SinkEncoder, StepOutput, emit};
use crate::query::source::{
    ROWTIME, RecordError, RecordErrorKind, SourceDecoder, WINDOWEND, WINDOWSTART,
};
use crate::query::stream_time::{GroupPartitioner, PartitionTimes};
use crate::query::window::{DEFAULT_GRACE_MS, TimeWindows, window_closed};
use crate::schema::{Column, ColumnKind};

const GROUP_COLUMN: &str = "__EDDY_GROUP_";
const AGGREGATE_COLUMN: &str = "__EDDY_AGGREGATE_";

/// One aggregate call: `SUM(x)`.
#[derive(Debug, Clone)]
pub struct AggregateCall {
    /// ksqlDB's name, for messages.
    pub name: String,
    /// The DataFusion function.
    pub function: Arc<AggregateUDF>,
    /// Its arguments over the input rows.
    pub args: Vec<Arc<dyn PhysicalExpr>>,
    /// The argument fields.
    pub arg_fields: Vec<FieldRef>,
    /// `DISTINCT`-like functions (`COUNT_DISTINCT`, `COLLECT_SET`).
    pub distinct: bool,
    /// Functions that skip nulls (`LATEST_BY_OFFSET`).
    pub ignore_nulls: bool,
    /// The type DataFusion returns.
    pub return_field: FieldRef,
    /// The type ksqlDB returns (`SUM(INT)` is an INT), when it differs.
    pub result_type: DataType,
}

impl AggregateCall {
    /// An accumulator; for a table source one that can also retract values.
    fn make_accumulator(&self, input: &Schema, retracting: bool) -> Result<Box<dyn Accumulator>> {
        let args = datafusion::logical_expr::function::AccumulatorArgs {
            return_field: self.return_field.clone(),
            schema: input,
            ignore_nulls: self.ignore_nulls,
            order_bys: &[],
            is_reversed: false,
            name: &self.name,
            is_distinct: self.distinct,
            exprs: &self.args,
            expr_fields: &self.arg_fields,
        };
        let made = if retracting {
            self.function.create_sliding_accumulator(args)
        } else {
            self.function.accumulator(args)
        };
        made.map_err(|e| {
            EngineError::statement(format!("cannot aggregate with {}: {e}", self.name))
        })
    }
}

/// A planned aggregation.
#[derive(Debug, Clone)]
pub struct AggregatePlan {
    /// The source read (for a join, its rows described as a source).
    pub source: DataSource,
    /// The joins whose rows are aggregated, if any.
    pub join: Option<Box<crate::query::join::JoinChain>>,
    /// Decodes its records.
    pub decoder: SourceDecoder,
    /// `WHERE`, over input rows.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    /// The `GROUP BY` expressions, over input rows.
    pub group_by: Vec<Arc<dyn PhysicalExpr>>,
    /// The aggregate calls.
    pub aggregates: Vec<AggregateCall>,
    /// The window, if any, and its grace period.
    pub window: Option<(TimeWindows, i64)>,
    /// Session windows: the inactivity gap and the grace period.
    pub session: Option<(i64, i64)>,
    /// `RETENTION`: how far behind the newest window a window stays for pull queries.
    pub retention: Option<u64>,
    /// `HAVING`, over aggregated rows.
    pub having: Option<Arc<dyn PhysicalExpr>>,
    /// `EMIT FINAL`: one row per window once it closes, instead of every update.
    pub emit_final: bool,
    /// Rows of group values, aggregate results, window bounds and `ROWTIME`.
    pub aggregate_schema: SchemaRef,
    /// Key columns of the result, over aggregated rows.
    pub keys: Vec<OutputColumn>,
    /// Value columns of the result, over aggregated rows.
    pub values: Vec<OutputColumn>,
    /// Column names in the order the projection lists them, for queries that return rows.
    pub column_order: Vec<String>,
}

impl AggregatePlan {
    /// The result's columns: keys, then values.
    pub fn columns(&self) -> Vec<Column> {
        self.keys
            .iter()
            .chain(&self.values)
            .map(|c| c.column.clone())
            .collect()
    }

    /// The execution plan, as `EXPLAIN` prints it.
    pub fn explain(&self, query_id: &str, sink_name: &str) -> String {
        let mut steps = vec![
            format!("[ SINK ] | Logger: {query_id}.{sink_name}"),
            format!("[ PROJECT ] | Logger: {query_id}.Aggregate.Project"),
        ];
        if self.having.is_some() {
            steps.push(format!(
                "[ FILTER ] | Logger: {query_id}.Aggregate.HavingFilter"
            ));
        }
        steps.push(match &self.window {
            Some((w, _)) => {
                format!("[ AGGREGATE ] | Window: {w:?} | Logger: {query_id}.Aggregate.Aggregate")
            }
            None => format!("[ AGGREGATE ] | Logger: {query_id}.Aggregate.Aggregate"),
        });
        steps.push(format!(
            "[ GROUP_BY ] | Logger: {query_id}.Aggregate.GroupBy"
        ));
        if self.filter.is_some() {
            steps.push(format!("[ FILTER ] | Logger: {query_id}.WhereFilter"));
        }
        steps.push(format!("[ SOURCE ] | Logger: {query_id}.KsqlTopic.Source"));
        steps
            .iter()
            .enumerate()
            .map(|(depth, step)| format!("{} > {step}\n", "\t\t".repeat(depth)))
            .collect()
    }
}

/// The aggregate functions a query can call, as `SHOW FUNCTIONS` lists them.
pub const AGGREGATE_FUNCTIONS: &[&str] = &[
    "ATTR",
    "AVG",
    "COLLECT_LIST",
    "COLLECT_SET",
    "CORRELATION",
    "COUNT",
    "COUNT_DISTINCT",
    "EARLIEST_BY_OFFSET",
    "HISTOGRAM",
    "LATEST_BY_OFFSET",
    "MAX",
    "MIN",
    "STDDEV_POP",
    "STDDEV_SAMP",
    "STDDEV_SAMPLE",
    "SUM",
    "TOPK",
    "TOPKDISTINCT",
    "VARIANCE",
    "VAR_SAMP",
];

/// ksqlDB's aggregate functions that map onto DataFusion's: the DataFusion function, whether it
/// is distinct, and whether it skips nulls.
fn aggregate_function(name: &str) -> Option<(Arc<AggregateUDF>, bool, bool)> {
    use datafusion::functions_aggregate as f;
    Some(match name {
        "COUNT" => (f::count::count_udaf(), false, false),
        "COUNT_DISTINCT" => (f::count::count_udaf(), true, false),
        "SUM" => (f::sum::sum_udaf(), false, false),
        "MIN" => (f::min_max::min_udaf(), false, false),
        "MAX" => (f::min_max::max_udaf(), false, false),
        "AVG" => (f::average::avg_udaf(), false, false),
        "COLLECT_LIST" => (f::array_agg::array_agg_udaf(), false, false),
        "COLLECT_SET" => (f::array_agg::array_agg_udaf(), true, false),
        "STDDEV_SAMP" | "STDDEV_SAMPLE" => (f::stddev::stddev_udaf(), false, false),
        "STDDEV_POP" => (f::stddev::stddev_pop_udaf(), false, false),
        "CORRELATION" => (f::correlation::corr_udaf(), false, false),
        "VAR_SAMP" | "VARIANCE" => (f::variance::var_samp_udaf(), false, false),
        other => (
            eddy_sql::functions::aggregates::aggregate(other)?,
            false,
            false,
        ),
    })
}

/// Whether `name` is an aggregate function.
pub fn is_aggregate(name: &str) -> bool {
    aggregate_function(&name.to_ascii_uppercase()).is_some()
}

/// A source column as the user would write it: quoted only when its name needs it, so it
/// matches the same column written in `GROUP BY`.
fn named_column(name: &str, span: Span) -> Expr {
    let plain = name
        .chars()
        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    Expr {
        kind: ExprKind::Column {
            source: None,
            name: Ident {
                value: name.to_string(),
                quoted: !plain,
                span,
            },
        },
        span,
    }
}

fn column(name: &str, span: Span) -> Expr {
    Expr {
        kind: ExprKind::Column {
            source: None,
            name: Ident::quoted(name),
        },
        span,
    }
}

fn sql_type(ty: &DataType, what: &str) -> Result<SqlType> {
    eddy_sql::types::from_arrow(ty)
        .map_err(|e| EngineError::statement(format!("{what} has a type ksqlDB cannot store: {e}")))
}

/// Plans `query` as an aggregation into a table called `sink_name`.
/// A transient (push) query may select window bounds and pseudo-columns without aliases, leave
/// the grouping expressions out of its projection, and have no value columns.
pub fn plan_aggregate(
    ctx: &SessionContext,
    catalog: &Catalog,
    query: &Query,
    sink_name: &str,
    transient: bool,
) -> Result<AggregatePlan> {
    if !query.from.joins.is_empty() {
        return crate::query::join::plan_join_aggregate(ctx, catalog, query, sink_name);
    }
    let from = &query.from.source;
    let source = named_source(catalog, from)?;
    if source.window.is_some() {
        return Err(EngineError::Unsupported(
            "GROUP BY over a windowed stream".into(),
        ));
    }
    if source.value_format.format == crate::format::Format::Kafka {
        return Err(EngineError::statement(format!(
            "Source(s) {} are using the 'KAFKA' value format. This format does not yet support GROUP BY.",
            source.name
        )));
    }
    plan_aggregate_over(
        ctx,
        catalog,
        query,
        ProjectionInput::of_source(source, from)?,
        sink_name,
        transient,
    )
}

/// Plans the aggregation of `query` over `input`: a source's rows, or a join's.
pub(crate) fn plan_aggregate_over(
    ctx: &SessionContext,
    catalog: &Catalog,
    query: &Query,
    input: ProjectionInput<'_>,
    sink_name: &str,
    transient: bool,
) -> Result<AggregatePlan> {
    let ProjectionInput {
        source,
        decoder,
        schema,
        alias,
    } = input;
    let df_schema = DFSchema::try_from(schema.as_ref().clone())
        .map_err(|e| EngineError::statement(e.to_string()))?;
    let scope = source_scope(catalog, source, alias, &schema, &df_schema);
    // Window bounds exist only once rows are aggregated into windows, as ksqlDB says.
    let window_bound = |expr: &Expr| -> Option<String> {
        let mut found = None;
        expr.any(&mut |e| match &e.kind {
            ExprKind::Column { name, .. }
                if matches!(name.value.as_str(), "WINDOWSTART" | "WINDOWEND") =>
            {
                found = Some(name.value.clone());
                true
            }
            _ => false,
        });
        found
    };
    if source.window.is_none() {
        if let Some(name) = query.filter.as_ref().and_then(window_bound) {
            return Err(EngineError::statement(format!(
                "Error in WHERE expression: Unknown column {name}."
            )));
        }
        if let Some(name) = query.having.as_ref().and_then(window_bound) {
            return Err(EngineError::statement(format!(
                "Window bounds column {name} can only be used in the SELECT clause of windowed aggregations"
            )));
        }
    }
    let filter = match &query.filter {
        Some(expr) => Some(compile_in(ctx, &scope, expr, "WHERE")?),
        None => None,
    };

    // Window bounds and pseudo-columns must be aliased to be selected into a sink.
    if !transient {
        check_reserved_in_select(&query.select)?;
    }
    let table_function = |e: &Expr| {
        e.any(&mut |x| {
            matches!(&x.kind, ExprKind::Function { name, .. } if name.value.eq_ignore_ascii_case("EXPLODE"))
        })
    };
    if query
        .select
        .iter()
        .any(|i| matches!(i, SelectItem::Expr { expr, .. } if table_function(expr)))
    {
        return Err(EngineError::statement(
            "Table functions cannot be used with aggregations.",
        ));
    }

    // GROUP BY expressions, which may not aggregate or repeat.
    let qualified = |by: &Expr| qualified_text(by, alias, &source.name);
    for (j, by) in query.group_by.iter().enumerate() {
        let text = qualified(by);
        if query.group_by[..j]
            .iter()
            .any(|earlier| qualified(earlier) == text)
        {
            return Err(EngineError::statement(format!(
                "Duplicate GROUP BY expression: {text}"
            )));
        }
    }
    let mut group_by = Vec::with_capacity(query.group_by.len());
    let mut group_fields = Vec::with_capacity(query.group_by.len());
    for (j, by) in query.group_by.iter().enumerate() {
        if let Some(name) = find_aggregate(by) {
            return Err(EngineError::statement(format!(
                "GROUP BY does not support aggregate functions: {name} is an aggregate function."
            )));
        }
        let compiled = compile_in(ctx, &scope, by, "GROUP BY")?;
        let ty = compiled
            .data_type(&schema)
            .map_err(|e| EngineError::statement(e.to_string()))?;
        group_fields.push(Field::new(format!("{GROUP_COLUMN}{j}"), ty, true));
        group_by.push(compiled);
    }

    // The projection: names as in a stateless query, then aggregates and grouping expressions
    // replaced by columns of the aggregated rows.
    let mut named: Vec<(Option<String>, Expr)> = Vec::with_capacity(query.select.len());
    for item in &query.select {
        match item {
            SelectItem::Expr { expr, alias } => {
                named.push((select_item_name(expr, alias.as_ref())?, expr.clone()));
            }
            // `*` (or `source.*`) is every column of the source, each of which must then be
            // grouped, as in ksqlDB.
            SelectItem::Wildcard(span) => {
                for c in source
                    .columns
                    .iter()
                    .filter(|c| !matches!(c.kind, ColumnKind::Headers | ColumnKind::Header(_)))
                {
                    named.push((Some(c.name.clone()), named_column(&c.name, *span)));
                }
            }
            SelectItem::QualifiedWildcard(name)
                if alias.eq_ignore_ascii_case(&name.value)
                    || source.name.eq_ignore_ascii_case(&name.value) =>
            {
                for c in source
                    .columns
                    .iter()
                    .filter(|c| !matches!(c.kind, ColumnKind::Headers | ColumnKind::Header(_)))
                {
                    named.push((Some(c.name.clone()), named_column(&c.name, name.span)));
                }
            }
            _ => {
                return Err(EngineError::Unsupported(
                    "this `*` in an aggregation's projection".into(),
                ));
            }
        }
    }
    let mut generated = GeneratedNames::new(source, &named);
    let items: Vec<(String, Expr)> = named
        .into_iter()
        .map(|(name, expr)| (name.unwrap_or_else(|| generated.next()), expr))
        .collect();
    let mut calls: Vec<(String, Vec<Expr>, bool, Span)> = Vec::new();
    let mut nested: Option<String> = None;
    let mut rewrite = |expr: &Expr| -> Expr {
        expr.rewrite(&mut |e| {
            if let Some(j) = query
                .group_by
                .iter()
                .position(|by| by.to_string() == e.to_string())
            {
                return Some(column(&format!("{GROUP_COLUMN}{j}"), e.span));
            }
            match &e.kind {
                ExprKind::Function { name, args, star } if is_aggregate(&name.value) => {
                    if let Some(inner) = args.iter().find_map(find_aggregate) {
                        nested.get_or_insert(format!(
                            "Aggregate functions can not be nested: {}({inner}())",
                            name.value.to_ascii_uppercase()
                        ));
                    }
                    let i = calls.len();
                    calls.push((name.value.to_ascii_uppercase(), args.clone(), *star, e.span));
                    Some(column(&format!("{AGGREGATE_COLUMN}{i}"), e.span))
                }
                _ => None,
            }
        })
    };
    let rewritten: Vec<(String, Expr, Expr)> = items
        .iter()
        .map(|(name, expr)| (name.clone(), expr.clone(), rewrite(expr)))
        .collect();
    let having = query.having.as_ref().map(&mut rewrite);
    if let Some(message) = nested {
        return Err(EngineError::statement(message));
    }
    if calls.is_empty() {
        // An unknown function is the better thing to report than a missing aggregate.
        for (_, expr) in &items {
            compile_in(ctx, &scope, expr, "SELECT")?;
        }
        return Err(EngineError::statement(
            "GROUP BY requires aggregate functions in either the SELECT or HAVING clause.",
        ));
    }

    let mut aggregates = Vec::with_capacity(calls.len());
    let mut aggregate_fields = Vec::with_capacity(calls.len());
    for (i, (name, args, star, _)) in calls.iter().enumerate() {
        let Some((function, distinct, ignore_nulls)) = (match (name.as_str(), args.len()) {
            // With the value alone, DataFusion's own first/last value (nulls skipped) will do.
            ("LATEST_BY_OFFSET", 1) => Some((
                datafusion::functions_aggregate::first_last::last_value_udaf(),
                false,
                true,
            )),
            ("EARLIEST_BY_OFFSET", 1) => Some((
                datafusion::functions_aggregate::first_last::first_value_udaf(),
                false,
                true,
            )),
            // DataFusion's array_agg cannot take a value back out; a table's updates must.
            ("COLLECT_LIST" | "COLLECT_SET", _) if source.kind == SourceKind::Table => {
                eddy_sql::functions::aggregates::aggregate(&format!("{name}_RETRACTING"))
                    .map(|f| (f, false, false))
            }
            _ => aggregate_function(name),
        }) else {
            continue;
        };
        // Counts and flags after the value are constants, as ksqlDB requires.
        if matches!(
            name.as_str(),
            "LATEST_BY_OFFSET" | "EARLIEST_BY_OFFSET" | "TOPK" | "TOPKDISTINCT"
        ) {
            let constants = if name.starts_with("TOPK") {
                args.len().saturating_sub(1)..args.len()
            } else {
                1.min(args.len())..args.len()
            };
            for (n, arg) in args.iter().enumerate().skip(constants.start) {
                if !matches!(arg.kind, ExprKind::Literal(_)) {
                    return Err(EngineError::statement(format!(
                        "Parameter {} passed to function {name} must be a literal constant, but was expression: '{arg}'",
                        n + 1
                    )));
                }
            }
        }
        // COUNT(*) and COUNT() count rows.
        let args: Vec<Expr> = if args.is_empty() || *star {
            vec![Expr {
                kind: ExprKind::Literal(Literal::Integer(1)),
                span: Span::default(),
            }]
        } else {
            args.clone()
        };
        let mut compiled = args
            .iter()
            .map(|a| compile_in(ctx, &scope, a, "SELECT"))
            .collect::<Result<Vec<_>>>()?;
        // DataFusion sums and averages 64-bit values; ksqlDB's planner widens the same way.
        if matches!(
            name.as_str(),
            "SUM"
                | "AVG"
                | "STDDEV_SAMP"
                | "STDDEV_SAMPLE"
                | "STDDEV_POP"
                | "VAR_SAMP"
                | "VARIANCE"
        ) && let Some(first) = compiled.first().cloned()
        {
            let ty = first
                .data_type(&schema)
                .map_err(|e| EngineError::statement(e.to_string()))?;
            let widened = match ty {
                DataType::Int8 | DataType::Int16 | DataType::Int32 if name == "SUM" => {
                    Some(DataType::Int64)
                }
                DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64
                    if name != "SUM" =>
                {
                    Some(DataType::Float64)
                }
                DataType::Float32 => Some(DataType::Float64),
                _ => None,
            };
            if let Some(to) = widened {
                compiled[0] = Arc::new(datafusion::physical_expr::expressions::CastExpr::new(
                    first, to, None,
                ));
            }
        }
        let arg_fields = compiled
            .iter()
            .enumerate()
            .map(|(k, c)| {
                c.data_type(&schema)
                    .map(|t| Arc::new(Field::new(format!("arg{k}"), t, true)))
                    .map_err(|e| EngineError::statement(e.to_string()))
            })
            .collect::<Result<Vec<FieldRef>>>()?;
        let return_field = function.return_field(&arg_fields).map_err(|e| {
            EngineError::statement(format!(
                "Function '{}' does not accept parameters ({}): {e}",
                name.to_ascii_lowercase(),
                arg_fields
                    .iter()
                    .map(|f| crate::schema::type_display(
                        &sql_type(f.data_type(), name).unwrap_or(SqlType::String)
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        // ksqlDB keeps the input type for SUM of integers and decimals.
        let original = args
            .first()
            .map(|a| compile_in(ctx, &scope, a, "SELECT"))
            .transpose()?
            .map(|c| c.data_type(&schema))
            .transpose()
            .map_err(|e| EngineError::statement(e.to_string()))?;
        let result_type = match (name.as_str(), original.as_ref()) {
            ("SUM", Some(t @ (DataType::Int32 | DataType::Int64 | DataType::Decimal128(..)))) => {
                t.clone()
            }
            _ => return_field.data_type().clone(),
        };
        aggregate_fields.push(Field::new(
            format!("{AGGREGATE_COLUMN}{i}"),
            result_type.clone(),
            true,
        ));
        aggregates.push(AggregateCall {
            name: name.clone(),
            function,
            args: compiled,
            arg_fields,
            distinct,
            ignore_nulls,
            return_field,
            result_type,
        });
    }

    // Aggregating a table undoes a row's old value when it changes, which not every function
    // can do.
    if source.kind == SourceKind::Table {
        let mut cannot: Vec<String> = Vec::new();
        for call in &aggregates {
            // ksqlDB refuses these on tables, even where an accumulator could retract.
            let refused = matches!(
                call.name.as_str(),
                "MIN" | "MAX" | "LATEST_BY_OFFSET" | "EARLIEST_BY_OFFSET"
            );
            let retracts = !refused
                && call
                    .make_accumulator(&schema, true)
                    .map(|a| a.supports_retract_batch())
                    .unwrap_or(false);
            if !retracts && !cannot.contains(&call.name) {
                cannot.push(call.name.clone());
            }
        }
        if !cannot.is_empty() {
            let (noun, names) = match cannot.split_last() {
                Some((last, [])) => ("function", last.clone()),
                Some((last, rest)) => ("functions", format!("{} and {last}", rest.join(", "))),
                None => ("function", String::new()),
            };
            return Err(EngineError::statement(format!(
                "The aggregation {noun} {names} cannot be applied to a table source, only to a stream source."
            )));
        }
        if query.window.is_some() {
            return Err(EngineError::Unsupported(
                "Windowed aggregation of a table".into(),
            ));
        }
    }
    let emit_final = query.emit == Some(eddy_sql::ast::Emit::Final);
    let session = match &query.window {
        Some(w) => match w.kind {
            WindowKind::Session { gap } => Some((
                gap.to_millis() as i64,
                // As for other windows, a final result waits only for the grace given.
                w.grace
                    .map_or(if emit_final { 0 } else { DEFAULT_GRACE_MS }, |g| {
                        g.to_millis() as i64
                    }),
            )),
            _ => None,
        },
        None => None,
    };
    if emit_final && query.window.is_none() {
        return Err(EngineError::statement(
            "EMIT FINAL is only supported for windowed aggregations.",
        ));
    }
    let window = match &query.window {
        None => None,
        Some(w) if matches!(w.kind, WindowKind::Session { .. }) => None,
        Some(w) => {
            // A final result waits for the grace period, so without one it comes at the
            // window's end, as in ksqlDB.
            let default_grace = if emit_final { 0 } else { DEFAULT_GRACE_MS };
            let grace = w.grace.map_or(default_grace, |g| g.to_millis() as i64);
            let windows = match w.kind {
                WindowKind::Tumbling { size } => TimeWindows::Tumbling {
                    size: size.to_millis() as i64,
                },
                WindowKind::Hopping { size, advance } => TimeWindows::Hopping {
                    size: size.to_millis() as i64,
                    advance: advance.to_millis() as i64,
                },
                WindowKind::Session { .. } => {
                    return Err(EngineError::statement("session windows are planned apart"));
                }
            };
            if windows.size() <= 0 {
                return Err(EngineError::statement("Window size must be positive"));
            }
            Some((windows, grace))
        }
    };

    let retention = match &query.window {
        Some(w) => check_retention(w, window.as_ref(), session)?,
        None => None,
    };

    let mut fields = group_fields;
    fields.extend(aggregate_fields);
    if window.is_some() || session.is_some() {
        fields.push(Field::new(WINDOWSTART, DataType::Int64, true));
        fields.push(Field::new(WINDOWEND, DataType::Int64, true));
    }
    fields.push(Field::new(ROWTIME, DataType::Int64, true));
    let aggregate_schema: SchemaRef = Arc::new(Schema::new(fields));
    let aggregate_df_schema = DFSchema::try_from(aggregate_schema.as_ref().clone())
        .map_err(|e| EngineError::statement(e.to_string()))?;
    let aggregated = source_scope(
        catalog,
        source,
        alias,
        &aggregate_schema,
        &aggregate_df_schema,
    );

    // Items must be grouping expressions or built from aggregates and them.
    let not_grouped: Vec<String> = rewritten
        .iter()
        .filter(|(_, _, e)| {
            e.any(&mut |x| matches!(&x.kind, ExprKind::Column { name, .. } if aggregate_schema.field_with_name(&name.value).is_err()))
        })
        // ksqlDB prints a top-level operation in parentheses.
        .map(|(_, original, _)| match original.kind {
            ExprKind::Binary { .. } => format!("({original})"),
            _ => original.to_string(),
        })
        .collect();
    if !not_grouped.is_empty() {
        return Err(EngineError::statement(format!(
            "Non-aggregate SELECT expression(s) not part of GROUP BY: {}\nEither add the column(s) to the GROUP BY or remove them from the SELECT.",
            not_grouped.join(", ")
        )));
    }

    // A table needs a key: aggregating everything into one row is for push queries.
    if query.group_by.is_empty() && !transient {
        let mut calls: Vec<String> = Vec::new();
        let mut note = |e: &Expr| {
            e.any(&mut |x| {
                if let ExprKind::Function { name, args, star } = &x.kind
                    && is_aggregate(&name.value)
                {
                    // As ksqlDB prints it: COUNT(*) counts rows by their ROWTIME.
                    let args = if *star || args.is_empty() {
                        "ROWTIME".to_string()
                    } else {
                        args.iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    calls.push(format!("{}({args})", name.value));
                }
                false
            });
        };
        for item in &query.select {
            if let SelectItem::Expr { expr, .. } = item {
                note(expr);
            }
        }
        return Err(EngineError::statement(format!(
            "CREATE TABLE AS SELECT statement does not support aggregate function [{}] without a GROUP BY clause.",
            calls.join(", ")
        )));
    }

    // Likewise HAVING: a source column there must be grouped (or inside an aggregate).
    if let Some(having) = &having {
        let mut loose: Vec<String> = Vec::new();
        having.any(&mut |x| {
            if let ExprKind::Column { name, .. } = &x.kind
                && aggregate_schema.field_with_name(&name.value).is_err()
                && source.columns.iter().any(|c| c.name == name.value)
                && !loose.contains(&name.value)
            {
                loose.push(name.value.clone());
            }
            false
        });
        if !loose.is_empty() {
            return Err(EngineError::statement(format!(
                "Non-aggregate HAVING expression not part of GROUP BY: {}",
                loose.join(", ")
            )));
        }
    }

    let compile = |expr: &Expr, clause: &str| compile_in(ctx, &aggregated, expr, clause);
    let output = |name: &str, expr: &Expr, kind: ColumnKind| -> Result<OutputColumn> {
        let compiled = compile(expr, "SELECT")?;
        let ty = compiled
            .data_type(&aggregate_schema)
            .map_err(|e| EngineError::statement(e.to_string()))?;
        Ok(OutputColumn {
            column: Column {
                name: name.to_string(),
                ty: sql_type(&ty, name)?,
                kind,
            },
            expr: compiled,
        })
    };
    let mut keys = Vec::new();
    let mut remaining: Vec<&(String, Expr, Expr)> = rewritten.iter().collect();
    let mut missing: Vec<String> = Vec::new();
    for (j, by) in query.group_by.iter().enumerate() {
        let wanted = format!("{GROUP_COLUMN}{j}");
        let is_group =
            |e: &Expr| matches!(&e.kind, ExprKind::Column { name, .. } if name.value == wanted);
        let position = remaining.iter().position(|(_, _, e)| is_group(e));
        match position {
            Some(i) => {
                let (name, _, expr) = remaining.remove(i);
                // As in ksqlDB, a grouping expression is the key once; selecting it again
                // would make a value column of a key.
                if !transient
                    && let Some((again, _, _)) = remaining.iter().find(|(_, _, e)| is_group(e))
                {
                    return Err(EngineError::statement(format!(
                        "The projection contains a key column more than once: `{name}` and `{again}`."
                    )));
                }
                keys.push(output(name, expr, ColumnKind::Key)?);
            }
            // A push query's rows need not show their group; it keys them all the same.
            None if transient => {
                let hidden = format!("{GROUP_COLUMN}{j}");
                keys.push(output(&hidden, &column(&wanted, by.span), ColumnKind::Key)?);
            }
            None => missing.push(by.to_string()),
        }
    }
    match missing.as_slice() {
        [] => {}
        [by] => {
            return Err(EngineError::statement(format!(
                "The query used to build `{sink_name}` must include the grouping expression {by} in its projection (eg, SELECT {by}...)."
            )));
        }
        [rest @ .., last] => {
            return Err(EngineError::statement(format!(
                "The query used to build `{sink_name}` must include the grouping expressions {} and {last} in its projection (eg, SELECT {}...).",
                rest.join(", "),
                missing.join(", ")
            )));
        }
    }
    if remaining.is_empty() && !transient {
        return Err(EngineError::statement(
            "The projection contains no value columns.",
        ));
    }
    let values = remaining
        .iter()
        .map(|(name, _, expr)| output(name, expr, ColumnKind::Value))
        .collect::<Result<Vec<_>>>()?;
    let mut seen: Vec<&str> = Vec::new();
    for c in keys.iter().chain(&values).map(|o| &o.column) {
        if seen.contains(&c.name.as_str()) {
            return Err(EngineError::statement(format!(
                "Duplicate value columns found in schema: `{}` {}",
                c.name,
                crate::schema::type_display(&c.ty)
            )));
        }
        seen.push(&c.name);
    }
    let having = match &having {
        Some(expr) => Some(compile(expr, "HAVING")?),
        None => None,
    };
    Ok(AggregatePlan {
        source: source.clone(),
        join: None,
        decoder,
        filter,
        group_by,
        aggregates,
        window,
        session,
        retention,
        having,
        emit_final,
        aggregate_schema,
        keys,
        values,
        column_order: items.iter().map(|(name, _)| name.clone()).collect(),
    })
}

/// Whether a query's projection or `HAVING` calls an aggregate function.
pub fn aggregates_anything(query: &Query) -> bool {
    query
        .select
        .iter()
        .filter_map(|item| match item {
            SelectItem::Expr { expr, .. } => Some(expr),
            _ => None,
        })
        .chain(query.having.iter())
        .any(|e| find_aggregate(e).is_some())
}

/// A window's `RETENTION`, which must cover its size (or a session's gap) plus its grace
/// period, as Kafka Streams requires of a window store.
fn check_retention(
    w: &eddy_sql::ast::WindowExpr,
    window: Option<&(TimeWindows, i64)>,
    session: Option<(i64, i64)>,
) -> Result<Option<u64>> {
    let Some(retention) = w.retention else {
        return Ok(None);
    };
    let retention = retention.to_millis();
    let (what, span, grace) = match (window, session) {
        (Some((windows, grace)), _) => ("its window size", windows.size(), *grace),
        (None, Some((gap, grace))) => ("the session inactivity gap", gap, grace),
        (None, None) => return Ok(Some(retention)),
    };
    let needed = span.saturating_add(grace);
    if i128::from(retention) < i128::from(needed) {
        let name = if session.is_some() { "gap" } else { "size" };
        return Err(crate::query::plan::located_error(
            w.span.start,
            format!(
                "The retention period of the window must be no smaller than {what} plus the grace period. Got {name}=[{span}], grace=[{grace}], retention=[{retention}]. The grace period is 24 hours unless GRACE PERIOD gives it."
            ),
        ));
    }
    Ok(Some(retention))
}

/// The name of the first aggregate function an expression calls.
fn find_aggregate(expr: &Expr) -> Option<String> {
    let mut found = None;
    expr.any(&mut |e| match &e.kind {
        ExprKind::Function { name, .. } if is_aggregate(&name.value) => {
            found.get_or_insert_with(|| name.value.to_ascii_uppercase());
            true
        }
        _ => false,
    });
    found
}

/// One group's aggregates, and whether its last result passed `HAVING` (so a later one that
/// fails deletes it).
struct Group {
    accumulators: Vec<Box<dyn Accumulator>>,
    emitted: bool,
    /// The latest timestamp among the rows aggregated, which is the result's timestamp (as
    /// Kafka Streams stamps an aggregate with the maximum of its records' timestamps).
    latest: Option<i64>,
}

/// The running state of an aggregation: groups by their state key, and stream time.
pub struct AggregateState {
    namespace: String,
    groups: HashMap<Vec<u8>, Group>,
    /// A table source's current value per key, once read.
    rows: HashMap<Vec<u8>, Option<Vec<u8>>>,
    /// Session windows: each group's sessions as (start, end), once read.
    sessions: HashMap<Vec<u8>, Vec<(i64, i64)>>,
    /// Stream time of each partition (see [`crate::query::stream_time`]), once read.
    stream_times: Option<PartitionTimes>,
    /// Which partition's stream time governs each group.
    partitioner: GroupPartitioner,
    /// Whether windows are sessions, whose keys end in a start and an end (else a start).
    sessions_windowed: bool,
    converter: RowConverter,
    /// Per partition, the windows still open (tumbling and hopping) or not yet emitted
    /// (`EMIT FINAL`), by start (a session's by its end), once read.
    open_windows_index: Option<Vec<WindowIndex>>,
    /// `EMIT FINAL`: the latest window start written in each partition, once read.
    latest_start: Option<PartitionTimes>,
    /// Whether updates wait in the record cache for [`AggregateState::flush`] instead of
    /// going out one per input row.
    coalesce: bool,
    /// The groups changed since the last flush, in the order they first changed.
    pending: Vec<PendingUpdate>,
    /// Each pending group's index in `pending`.
    pending_at: HashMap<Vec<u8>, usize>,
    /// Estimated bytes the pending updates hold, as the record cache counts them.
    pending_bytes: usize,
}

/// A group changed since the last flush of the record cache: its window, and the partition and
/// offset of the last input record that changed it.
struct PendingUpdate {
    key: Vec<u8>,
    window: (i64, i64),
    partition: u32,
    offset: i64,
}

/// A group's key in the state: its grouping values (and a window's bounds).
type GroupKey = Vec<u8>;

/// Window keys by the bound they close at.
type WindowIndex = std::collections::BTreeMap<i64, std::collections::BTreeSet<Vec<u8>>>;

const STREAM_TIME_KEY: &[u8] = b"t";
const LATEST_START_KEY: &[u8] = b"m";

/// State-store changes of one step: a key and its new value, or `None` to delete it.
pub type StateWrites = Vec<(Vec<u8>, Option<Vec<u8>>)>;

impl AggregateState {
    /// The state of the query `query_id`, writing `sink`, over a source of `partitions`
    /// partitions; groups load from the store as rows need them. With `coalesce`, updates to
    /// a group wait for [`AggregateState::flush`] (the record cache), except under session
    /// windows and `EMIT FINAL`, which emit as they go.
    pub fn new(
        query_id: &str,
        plan: &AggregatePlan,
        (sink, partitions): (&DataSource, u32),
        coalesce: bool,
    ) -> Result<Self> {
        let fields = plan
            .aggregate_schema
            .fields()
            .iter()
            .take(plan.group_by.len())
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        Ok(AggregateState {
            namespace: format!("__eddy_query_{query_id}"),
            groups: HashMap::new(),
            rows: HashMap::new(),
            sessions: HashMap::new(),
            stream_times: None,
            sessions_windowed: plan.session.is_some(),
            partitioner: GroupPartitioner::new(
                sink,
                partitions,
                &plan.keys,
                &plan.aggregate_schema,
                plan.group_by.len(),
            )?,
            open_windows_index: None,
            latest_start: None,
            coalesce: coalesce && plan.session.is_none() && !plan.emit_final,
            pending: Vec::new(),
            pending_at: HashMap::new(),
            pending_bytes: 0,
            converter: RowConverter::new(fields)
                .map_err(|e| EngineError::statement(e.to_string()))?,
        })
    }

    fn group<'a>(
        &'a mut self,
        store: &Store,
        key: &[u8],
        plan: &AggregatePlan,
        input: &Schema,
    ) -> Result<&'a mut Group> {
        if !self.groups.contains_key(key) {
            let mut group = Group {
                accumulators: plan
                    .aggregates
                    .iter()
                    .map(|a| a.make_accumulator(input, plan.source.kind == SourceKind::Table))
                    .collect::<Result<_>>()?,
                emitted: false,
                latest: None,
            };
            if let Some(bytes) = store.state_get(&self.namespace, &state_key(key))? {
                restore(&mut group, &bytes)?;
            }
            self.groups.insert(key.to_vec(), group);
        }
        self.groups
            .get_mut(key)
            .ok_or_else(|| EngineError::statement("aggregate group vanished"))
    }
}

/// A record dropped for coming after its windows closed: counted among the query's failed
/// records and written to the processing log, so late data is never lost silently.
fn late(partition: u32, offset: i64, timestamp: i64) -> RecordError {
    RecordError {
        kind: RecordErrorKind::Late,
        partition,
        offset,
        reason: format!(
            "The record (timestamp {timestamp}) arrived after stream time passed the end plus grace period of every window it falls in; it is dropped"
        ),
    }
}

/// A session window: its start and end (both inclusive), in milliseconds.
type Session = (i64, i64);

/// A session's group key: the grouping values, then its start and end.
fn session_key(group_key: &[u8], start: i64, end: i64) -> Vec<u8> {
    let mut key = group_key.to_vec();
    key.extend_from_slice(&start.to_be_bytes());
    key.extend_from_slice(&end.to_be_bytes());
    key
}

/// Where a group's list of sessions is stored.
fn session_index_key(group_key: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(group_key.len() + 1);
    key.push(b's');
    key.extend_from_slice(group_key);
    key
}

fn state_key(group_key: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(group_key.len() + 1);
    key.push(b'g');
    key.extend_from_slice(group_key);
    key
}

/// A group's state: a flags byte (whether it was emitted; whether its latest timestamp
/// follows; whether the values are in the compact encoding), the latest timestamp, the number
/// of state values of each accumulator, then the values: each as a type tag and its bytes when
/// every one is a plain number, boolean or string, else all as one Arrow IPC batch.
fn serialize(group: &mut Group) -> Result<Vec<u8>> {
    let fail = |e: &dyn std::fmt::Display| {
        EngineError::statement(format!("cannot save aggregate state: {e}"))
    };
    let mut counts = Vec::new();
    let mut values = Vec::new();
    for acc in &mut group.accumulators {
        let state = acc.state().map_err(|e| fail(&e))?;
        counts.push(state.len() as u16);
        values.extend(state);
    }
    let compact = values.iter().all(compact_scalar::encodable);
    let mut out = Vec::with_capacity(16 + 12 * values.len());
    out.push(
        u8::from(group.emitted)
            | (u8::from(group.latest.is_some()) << 1)
            | (u8::from(compact) << 2),
    );
    if let Some(latest) = group.latest {
        out.extend_from_slice(&latest.to_be_bytes());
    }
    out.extend_from_slice(&(counts.len() as u16).to_be_bytes());
    for c in &counts {
        out.extend_from_slice(&c.to_be_bytes());
    }
    if compact {
        for value in &values {
            compact_scalar::encode(value, &mut out);
        }
        return Ok(out);
    }
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for value in values {
        let array = value.to_array().map_err(|e| fail(&e))?;
        fields.push(Field::new(
            format!("s{}", fields.len()),
            array.data_type().clone(),
            true,
        ));
        columns.push(array);
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(1)),
    )
    .map_err(|e| fail(&e))?;
    let mut writer = StreamWriter::try_new(&mut out, &schema).map_err(|e| fail(&e))?;
    writer.write(&batch).map_err(|e| fail(&e))?;
    writer.finish().map_err(|e| fail(&e))?;
    drop(writer);
    Ok(out)
}

/// A compact encoding of the scalar state values most accumulators keep (counts, sums,
/// minimums, strings), a few bytes each where an Arrow IPC batch takes about a kilobyte.
mod compact_scalar {
    use datafusion::common::ScalarValue;

    const NULL: u8 = 0x80;

    /// Whether `value` has a compact encoding.
    pub(super) fn encodable(value: &ScalarValue) -> bool {
        tag(value).is_some()
    }

    fn tag(value: &ScalarValue) -> Option<u8> {
        Some(match value {
            ScalarValue::Boolean(_) => 1,
            ScalarValue::Int8(_) => 2,
            ScalarValue::Int16(_) => 3,
            ScalarValue::Int32(_) => 4,
            ScalarValue::Int64(_) => 5,
            ScalarValue::UInt8(_) => 6,
            ScalarValue::UInt16(_) => 7,
            ScalarValue::UInt32(_) => 8,
            ScalarValue::UInt64(_) => 9,
            ScalarValue::Float32(_) => 10,
            ScalarValue::Float64(_) => 11,
            ScalarValue::Utf8(_) => 12,
            ScalarValue::Decimal128(_, _, _) => 13,
            _ => return None,
        })
    }

    /// Appends `value`: its tag (with the null bit), then its bytes.
    pub(super) fn encode(value: &ScalarValue, out: &mut Vec<u8>) {
        let Some(tag) = tag(value) else { return };
        if let ScalarValue::Decimal128(_, precision, scale) = value {
            out.push(tag | if value.is_null() { NULL } else { 0 });
            out.push(*precision);
            out.push(*scale as u8);
        } else {
            out.push(tag | if value.is_null() { NULL } else { 0 });
        }
        match value {
            ScalarValue::Boolean(Some(v)) => out.push(u8::from(*v)),
            ScalarValue::Int8(Some(v)) => out.extend_from_slice(&v.to_le_bytes()),
            ScalarValue::Int16(Some(v)) => out.extend_from_slice(&v.to_le_bytes()),
            ScalarValue::Int32(Some(v)) => out.extend_from_slice(&v.to_le_bytes()),
            ScalarValue::Int64(Some(v)) => out.extend_from_slice(&v.to_le_bytes()),
            ScalarValue::UInt8(Some(v)) => out.push(*v),
            ScalarValue::UInt16(Some(v)) => out.extend_from_slice(&v.to_le_bytes()),
            ScalarValue::UInt32(Some(v)) => out.extend_from_slice(&v.to_le_bytes()),
            ScalarValue::UInt64(Some(v)) => out.extend_from_slice(&v.to_le_bytes()),
            ScalarValue::Float32(Some(v)) => out.extend_from_slice(&v.to_le_bytes()),
            ScalarValue::Float64(Some(v)) => out.extend_from_slice(&v.to_le_bytes()),
            ScalarValue::Decimal128(Some(v), _, _) => out.extend_from_slice(&v.to_le_bytes()),
            ScalarValue::Utf8(Some(v)) => {
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                out.extend_from_slice(v.as_bytes());
            }
            _ => {}
        }
    }

    /// Reads one value at the start of `bytes`; returns it and the bytes it took, or `None`
    /// when they are not a value.
    pub(super) fn decode(bytes: &[u8]) -> Option<(ScalarValue, usize)> {
        let first = *bytes.first()?;
        let null = first & NULL != 0;
        let mut at = 1;
        let mut take = |n: usize| -> Option<&[u8]> {
            let slice = bytes.get(at..at + n)?;
            at += n;
            Some(slice)
        };
        macro_rules! fixed {
            ($variant:ident, $ty:ty) => {{
                if null {
                    ScalarValue::$variant(None)
                } else {
                    let raw = take(std::mem::size_of::<$ty>())?;
                    ScalarValue::$variant(Some(<$ty>::from_le_bytes(raw.try_into().ok()?)))
                }
            }};
        }
        let value = match first & !NULL {
            1 => ScalarValue::Boolean(if null { None } else { Some(take(1)?[0] != 0) }),
            2 => fixed!(Int8, i8),
            3 => fixed!(Int16, i16),
            4 => fixed!(Int32, i32),
            5 => fixed!(Int64, i64),
            6 => fixed!(UInt8, u8),
            7 => fixed!(UInt16, u16),
            8 => fixed!(UInt32, u32),
            9 => fixed!(UInt64, u64),
            10 => fixed!(Float32, f32),
            11 => fixed!(Float64, f64),
            12 => ScalarValue::Utf8(if null {
                None
            } else {
                let len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
                Some(String::from_utf8(take(len)?.to_vec()).ok()?)
            }),
            13 => {
                let precision = take(1)?[0];
                let scale = take(1)?[0] as i8;
                let value = if null {
                    None
                } else {
                    Some(i128::from_le_bytes(take(16)?.try_into().ok()?))
                };
                ScalarValue::Decimal128(value, precision, scale)
            }
            _ => return None,
        };
        Some((value, at))
    }
}

fn restore(group: &mut Group, bytes: &[u8]) -> Result<()> {
    let fail = |e: &dyn std::fmt::Display| {
        EngineError::statement(format!("cannot read aggregate state: {e}"))
    };
    let read_u16 = |at: usize| -> Result<u16> {
        bytes
            .get(at..at + 2)
            .and_then(|b| b.try_into().ok())
            .map(u16::from_be_bytes)
            .ok_or_else(|| fail(&"truncated"))
    };
    let flags = bytes.first().copied().unwrap_or(0);
    group.emitted = flags & 1 == 1;
    let mut at = 1;
    if flags & 2 == 2 {
        let latest = bytes
            .get(1..9)
            .and_then(|b| b.try_into().ok())
            .map(i64::from_be_bytes)
            .ok_or_else(|| fail(&"truncated"))?;
        group.latest = Some(latest);
        at = 9;
    }
    let n = read_u16(at)? as usize;
    let counts = (0..n)
        .map(|i| read_u16(at + 2 + 2 * i))
        .collect::<Result<Vec<_>>>()?;
    let mut rest = bytes
        .get(at + 2 + 2 * n..)
        .ok_or_else(|| fail(&"truncated"))?;
    if flags & 4 == 4 {
        for (acc, count) in group.accumulators.iter_mut().zip(counts) {
            let mut columns = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let (value, used) =
                    compact_scalar::decode(rest).ok_or_else(|| fail(&"a value is malformed"))?;
                rest = &rest[used..];
                columns.push(value.to_array().map_err(|e| fail(&e))?);
            }
            acc.merge_batch(&columns).map_err(|e| fail(&e))?;
        }
        return Ok(());
    }
    let ipc = rest;
    let mut reader = StreamReader::try_new(ipc, None).map_err(|e| fail(&e))?;
    let batch = reader
        .next()
        .ok_or_else(|| fail(&"no batch"))?
        .map_err(|e| fail(&e))?;
    let mut at = 0;
    for (acc, count) in group.accumulators.iter_mut().zip(counts) {
        let columns = &batch.columns()[at..at + count as usize];
        acc.merge_batch(columns).map_err(|e| fail(&e))?;
        at += count as usize;
    }
    Ok(())
}

/// Rows to aggregate: added ones, and (for a table source) retracted old values.
pub(crate) struct Changes {
    /// The rows, with the columns of the aggregated source.
    pub batch: RecordBatch,
    /// For each row, the index of the record it came from.
    pub rows_from: Vec<usize>,
    /// For each row, whether it takes an old value back out.
    pub retract: Vec<bool>,
    /// For each row, whether it has a value to aggregate.
    pub has_value: Vec<bool>,
    /// Records that could not be read.
    pub errors: Vec<RecordError>,
}

fn stored_row_key(record_key: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(record_key.len() + 1);
    key.push(b'r');
    key.extend_from_slice(record_key);
    key
}

/// A table source's changes: for each record, its key's previous row (retracted) and then its
/// new row (added). The previous rows live in the state store, kept as they were read.
fn table_changes(
    store: &Store,
    plan: &AggregatePlan,
    state: &mut AggregateState,
    partition: u32,
    records: &[LogRecord],
    writes: &mut StateWrites,
) -> Result<Changes> {
    use eddy_storage::Record;
    let mut olds: Vec<Option<LogRecord>> = Vec::with_capacity(records.len());
    for record in records {
        let key = record.record.key.as_deref().unwrap_or_default().to_vec();
        if !state.rows.contains_key(&key) {
            let stored = store.state_get(&state.namespace, &stored_row_key(&key))?;
            state.rows.insert(key.clone(), stored);
        }
        let previous = state.rows.get(&key).cloned().flatten();
        // A retraction happens at the time of the record that replaces the row.
        olds.push(previous.map(|value| LogRecord {
            offset: record.offset,
            record: Record {
                key: record.record.key.clone(),
                value: Some(value.into()),
                timestamp: record.record.timestamp,
                headers: Vec::new(),
            },
        }));
        let now = record.record.value.as_ref().map(|v| v.to_vec());
        writes.push((stored_row_key(&key), now.clone()));
        state.rows.insert(key, now);
    }
    let new = plan.decoder.decode(partition, records)?;
    let old_records: Vec<LogRecord> = olds.iter().flatten().cloned().collect();
    let old = plan.decoder.decode(partition, &old_records)?;
    // Map each record to its row in the decoded batches (records that failed are missing).
    let index =
        |batch_offsets: &[i64], offset: i64| batch_offsets.iter().position(|o| *o == offset);
    let offsets = |b: &RecordBatch| -> Vec<i64> {
        b.column_by_name(crate::query::source::ROWOFFSET)
            .and_then(|c| c.as_any().downcast_ref::<Int64Array>().cloned())
            .map(|a| a.iter().map(|o| o.unwrap_or(-1)).collect())
            .unwrap_or_default()
    };
    let old_offsets = offsets(&old.batch);
    let new_bad: std::collections::HashSet<i64> = new.errors.iter().map(|e| e.offset).collect();
    let mut picks: Vec<(usize, usize)> = Vec::new();
    let (mut rows_from, mut retract, mut has_value) = (Vec::new(), Vec::new(), Vec::new());
    let mut next_new = 0usize;
    for (i, record) in records.iter().enumerate() {
        if olds[i].is_some()
            && let Some(row) = index(&old_offsets, record.offset)
        {
            picks.push((0, row));
            rows_from.push(i);
            retract.push(true);
            has_value.push(true);
        }
        if new_bad.contains(&record.offset) {
            continue;
        }
        let row = next_new;
        next_new += 1;
        if record.record.value.is_some() {
            picks.push((1, row));
            rows_from.push(i);
            retract.push(false);
            has_value.push(true);
        }
    }
    let columns = (0..plan.decoder.schema().fields().len())
        .map(|c| {
            let sources = [old.batch.column(c).as_ref(), new.batch.column(c).as_ref()];
            datafusion::arrow::compute::interleave(&sources, &picks)
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| EngineError::statement(e.to_string()))?;
    let batch = RecordBatch::try_new_with_options(
        plan.decoder.schema().clone(),
        columns,
        &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(picks.len())),
    )
    .map_err(|e| EngineError::statement(e.to_string()))?;
    Ok(Changes {
        batch,
        rows_from,
        retract,
        has_value,
        errors: new.errors,
    })
}

/// An accumulator's current result, as ksqlDB reports it: `SUM` starts at zero, so it is
/// never null.
fn current_result(acc: &mut Box<dyn Accumulator>, call: &AggregateCall) -> Result<ScalarValue> {
    let value = acc
        .evaluate()
        .map_err(|e| EngineError::statement(format!("aggregation failed: {e}")))?;
    Ok(if value.is_null() && call.name == "SUM" {
        ScalarValue::new_zero(&value.data_type()).unwrap_or(value)
    } else {
        value
    })
}

/// Aggregates records of one partition, emitting the updated result of each group a record
/// touches, and the state changes to commit with it.
pub fn process_aggregate(
    store: &Store,
    plan: &AggregatePlan,
    state: &mut AggregateState,
    (sink_columns, encoder): (&[Column], &SinkEncoder),
    partition: u32,
    records: &[LogRecord],
) -> Result<(StepOutput, StateWrites)> {
    let mut writes: StateWrites = Vec::new();
    let changes = if plan.source.kind == SourceKind::Table {
        table_changes(store, plan, state, partition, records, &mut writes)?
    } else {
        let decoded = plan.decoder.decode(partition, records)?;
        let bad: std::collections::HashSet<i64> = decoded.errors.iter().map(|e| e.offset).collect();
        let n = decoded.batch.num_rows();
        Changes {
            batch: decoded.batch,
            rows_from: (0..records.len())
                .filter(|i| !bad.contains(&records[*i].offset))
                .collect(),
            retract: vec![false; n],
            has_value: decoded.has_value,
            errors: decoded.errors,
        }
    };
    aggregate_changes(
        store,
        plan,
        state,
        (sink_columns, encoder),
        (partition, records),
        changes,
        writes,
    )
}

/// Aggregates rows already read (a source's decoded records, or a join's rows), emitting the
/// updated result of each group a row touches.
pub(crate) fn aggregate_changes(
    store: &Store,
    plan: &AggregatePlan,
    state: &mut AggregateState,
    (sink_columns, encoder): (&[Column], &SinkEncoder),
    (partition, records): (u32, &[LogRecord]),
    changes: Changes,
    mut writes: StateWrites,
) -> Result<(StepOutput, StateWrites)> {
    let Changes {
        mut batch,
        mut rows_from,
        retract,
        has_value,
        mut errors,
    } = changes;
    // A stream record without a value has nothing to aggregate.
    let mut keep: Vec<bool> = has_value;
    if let Some(filter) = &plan.filter {
        let mask = filter
            .evaluate(&batch)
            .and_then(|v| v.into_array(batch.num_rows()))
            .map_err(|e| EngineError::statement(format!("Error evaluating WHERE: {e}")))?;
        if let Some(mask) = mask.as_any().downcast_ref::<BooleanArray>() {
            for (i, k) in keep.iter_mut().enumerate() {
                *k = *k && mask.is_valid(i) && mask.value(i);
            }
        }
    }
    let mask = BooleanArray::from(keep.clone());
    batch =
        filter_record_batch(&batch, &mask).map_err(|e| EngineError::statement(e.to_string()))?;
    rows_from = rows_from
        .iter()
        .zip(&keep)
        .filter_map(|(r, k)| k.then_some(*r))
        .collect();
    let retract: Vec<bool> = retract
        .into_iter()
        .zip(&keep)
        .filter_map(|(r, k)| k.then_some(r))
        .collect();
    let rows = batch.num_rows();
    let evaluate = |e: &Arc<dyn PhysicalExpr>| -> Result<ArrayRef> {
        e.evaluate(&batch)
            .and_then(|v| v.into_array(rows))
            .map_err(|e| EngineError::statement(e.to_string()))
    };
    let group_arrays = plan
        .group_by
        .iter()
        .map(&evaluate)
        .collect::<Result<Vec<_>>>()?;
    let arg_arrays = plan
        .aggregates
        .iter()
        .map(|a| a.args.iter().map(&evaluate).collect::<Result<Vec<_>>>())
        .collect::<Result<Vec<_>>>()?;
    let group_rows = state
        .converter
        .convert_columns(&group_arrays)
        .map_err(|e| EngineError::statement(e.to_string()))?;
    let rowtimes = batch
        .column_by_name(ROWTIME)
        .and_then(|c| c.as_any().downcast_ref::<Int64Array>().cloned())
        .ok_or_else(|| EngineError::statement("ROWTIME is missing"))?;
    let input_schema = batch.schema();
    // Only windows close, so only they need each group's partition.
    let group_partitions = if plan.window.is_some() || plan.session.is_some() {
        state.partitioner.assign(&group_arrays, rows, &|i| {
            group_rows.row(i).as_ref().to_vec()
        })
    } else {
        vec![0; rows]
    };
    state.stream_times(store)?;

    // One aggregated row per (input row, window) that updates a group.
    let mut out_rows: Vec<usize> = Vec::new();
    let mut out_windows: Vec<(i64, i64)> = Vec::new();
    let mut results: Vec<Vec<ScalarValue>> = vec![Vec::new(); plan.aggregates.len()];
    let mut out_keys: Vec<Vec<u8>> = Vec::new();
    let mut out_times: Vec<i64> = Vec::new();
    let mut out_tombstone: Vec<bool> = Vec::new();
    // EMIT FINAL: the windows that closed, emitted instead of the updates.
    let mut finals = FinalRows {
        results: vec![Vec::new(); plan.aggregates.len()],
        ..FinalRows::default()
    };
    // Groups and session lists to write back, each once per step.
    let mut dirty: std::collections::BTreeSet<Vec<u8>> = std::collections::BTreeSet::new();
    let mut deleted: Vec<Vec<u8>> = Vec::new();
    let mut dirty_sessions: std::collections::BTreeSet<Vec<u8>> = std::collections::BTreeSet::new();
    for i in 0..rows {
        if group_arrays.iter().any(|a| a.is_null(i)) {
            errors.push(RecordError {
                kind: RecordErrorKind::Expression,
                partition,
                offset: records[rows_from[i]].offset,
                reason: "GROUP BY column(s) are null; the record is dropped".into(),
            });
            continue;
        }
        let timestamp = rowtimes.value(i);
        let clock = group_partitions[i];
        let stream_time = state.stream_times(store)?.advance(clock, timestamp);
        if let Some((gap, grace)) = plan.session {
            let group_key = group_rows.row(i).as_ref().to_vec();
            // A session closes once stream time passes its end plus the gap and the grace;
            // closed sessions neither merge nor are kept.
            let close_time = stream_time.saturating_sub(grace).saturating_sub(gap);
            let (open, closed): (Vec<Session>, Vec<Session>) = state
                .sessions_of(store, &group_key)?
                .into_iter()
                .partition(|(_, end)| *end >= close_time);
            for (old_start, old_end) in closed {
                let old_key = session_key(&group_key, old_start, old_end);
                // Still filed in the index: EMIT FINAL emits it from there, and expiry finds
                // it already gone.
                state.groups.remove(&old_key);
                dirty.remove(&old_key);
                deleted.push(old_key);
            }
            state.sessions.insert(group_key.clone(), open.clone());
            dirty_sessions.insert(group_key.clone());
            let (merging, keeping): (Vec<Session>, Vec<Session>) = open
                .iter()
                .partition(|(start, end)| *end >= timestamp - gap && *start <= timestamp + gap);
            let start = merging.iter().map(|s| s.0).fold(timestamp, i64::min);
            let end = merging.iter().map(|s| s.1).fold(timestamp, i64::max);
            if end < close_time {
                errors.push(late(partition, records[rows_from[i]].offset, timestamp));
                continue;
            }
            // The merged session takes over the states of the sessions it swallows.
            let mut merged = state.fresh_group(plan, &input_schema)?;
            for (old_start, old_end) in &merging {
                let old_key = session_key(&group_key, *old_start, *old_end);
                let mut old = state.take_group(store, &old_key, plan, &input_schema)?;
                for (acc, old_acc) in merged.accumulators.iter_mut().zip(&mut old.accumulators) {
                    let values = old_acc
                        .state()
                        .map_err(|e| EngineError::statement(format!("aggregation failed: {e}")))?;
                    let arrays = values
                        .iter()
                        .map(ScalarValue::to_array)
                        .collect::<std::result::Result<Vec<_>, _>>()
                        .map_err(|e| EngineError::statement(e.to_string()))?;
                    acc.merge_batch(&arrays)
                        .map_err(|e| EngineError::statement(format!("aggregation failed: {e}")))?;
                }
                dirty.remove(&old_key);
                deleted.push(old_key.clone());
                state.forget_pending(store, clock, *old_end, &old_key)?;
                if plan.emit_final {
                    // Never emitted, so there is no row to delete: it just stops waiting.
                    continue;
                }
                // The old session's row is deleted, at its end.
                for (k, call) in plan.aggregates.iter().enumerate() {
                    results[k].push(
                        ScalarValue::try_from(call.return_field.data_type())
                            .map_err(|e| EngineError::statement(e.to_string()))?,
                    );
                }
                out_rows.push(i);
                out_windows.push((*old_start, *old_end));
                out_keys.push(old_key);
                out_times.push(*old_end);
                out_tombstone.push(true);
            }
            let key = session_key(&group_key, start, end);
            for (k, acc) in merged.accumulators.iter_mut().enumerate() {
                let args: Vec<ArrayRef> = arg_arrays[k].iter().map(|a| a.slice(i, 1)).collect();
                acc.update_batch(&args)
                    .map_err(|e| EngineError::statement(format!("aggregation failed: {e}")))?;
                if !plan.emit_final {
                    results[k].push(current_result(acc, &plan.aggregates[k])?);
                }
            }
            merged.latest = Some(merged.latest.map_or(end, |t| t.max(end)));
            deleted.retain(|k| *k != key);
            state.groups.insert(key.clone(), merged);
            let mut now = keeping;
            now.push((start, end));
            state.sessions.insert(group_key.clone(), now);
            dirty_sessions.insert(group_key);
            // Sessions are filed by end, to be emitted (EMIT FINAL) or expired once closed.
            state
                .open_windows(store, clock)?
                .entry(end)
                .or_default()
                .insert(key.clone());
            if plan.emit_final {
                dirty.insert(key.clone());
                let (closed, emptied) =
                    state.close_final_sessions(store, plan, &input_schema, (clock, stream_time))?;
                dirty_sessions.extend(emptied);
                finals.add(i, closed, (&mut dirty, &mut deleted));
                continue;
            }
            out_rows.push(i);
            out_windows.push((start, end));
            dirty.insert(key.clone());
            out_keys.push(key);
            out_times.push(end);
            out_tombstone.push(false);
            continue;
        }
        let windows: Vec<Option<(i64, i64)>> = match &plan.window {
            None => vec![None],
            Some((w, grace)) => w
                .windows_for(timestamp)
                .into_iter()
                .filter(|(_, end)| !window_closed(*end, *grace, stream_time))
                .map(Some)
                .collect(),
        };
        if windows.is_empty() {
            errors.push(late(partition, records[rows_from[i]].offset, timestamp));
            continue;
        }
        for window in windows {
            let coalesce = state.coalesce;
            let mut key = group_rows.row(i).as_ref().to_vec();
            if let Some((start, _)) = window {
                key.extend_from_slice(&start.to_be_bytes());
            }
            let group = state.group(store, &key, plan, &input_schema)?;
            for (k, acc) in group.accumulators.iter_mut().enumerate() {
                let args: Vec<ArrayRef> = arg_arrays[k].iter().map(|a| a.slice(i, 1)).collect();
                if retract[i] {
                    acc.retract_batch(&args)
                } else {
                    acc.update_batch(&args)
                }
                .map_err(|e| EngineError::statement(format!("aggregation failed: {e}")))?;
                // EMIT FINAL writes a window's result once, when it closes, and the record
                // cache when it flushes; not per update.
                if !plan.emit_final && !coalesce {
                    results[k].push(current_result(acc, &plan.aggregates[k])?);
                }
            }
            let latest = group.latest.map_or(timestamp, |t| t.max(timestamp));
            group.latest = Some(latest);
            // Windows are filed by start, so they can leave the state once closed.
            if !plan.emit_final
                && let Some((start, _)) = window
            {
                let open = state.open_windows(store, clock)?.entry(start).or_default();
                if !open.contains(&key) {
                    open.insert(key.clone());
                }
            }
            if coalesce {
                let offset = records[rows_from[i]].offset;
                state.mark_pending(key, window.unwrap_or((0, 0)), partition, offset);
                continue;
            }
            if plan.emit_final
                && let Some((start, _)) = window
            {
                state
                    .open_windows(store, clock)?
                    .entry(start)
                    .or_default()
                    .insert(key.clone());
                if let Some(latest) = state.latest_start.as_mut() {
                    latest.advance(clock, start);
                }
            }
            out_rows.push(i);
            out_windows.push(window.unwrap_or((0, 0)));
            dirty.insert(key.clone());
            out_keys.push(key);
            out_times.push(latest);
            out_tombstone.push(false);
        }
        if plan.emit_final {
            let (closed, expired) =
                state.close_final_windows(store, plan, &input_schema, (clock, stream_time))?;
            for key in expired {
                dirty.remove(&key);
                deleted.push(key);
            }
            finals.add(i, closed, (&mut dirty, &mut deleted));
        }
    }

    let final_group_columns = if plan.emit_final {
        out_rows = std::mem::take(&mut finals.rows);
        out_windows = std::mem::take(&mut finals.windows);
        out_times = std::mem::take(&mut finals.times);
        out_tombstone = vec![false; out_rows.len()];
        results = std::mem::take(&mut finals.results);
        out_keys = std::mem::take(&mut finals.keys);
        // A final row's key is its window's: the group, then the start (and a session's end).
        Some(state.group_values(&out_keys, if plan.session.is_some() { 16 } else { 8 })?)
    } else {
        None
    };

    // One input record changes a group once: a table row's retraction and its new value in the
    // same group come out as the new result only, as ksqlDB emits one change per record.
    let superseded: Vec<bool> = (0..out_rows.len())
        .map(|r| {
            r + 1 < out_rows.len()
                && out_keys[r + 1] == out_keys[r]
                && rows_from[out_rows[r + 1]] == rows_from[out_rows[r]]
                && !out_tombstone[r]
        })
        .collect();
    if superseded.iter().any(|s| *s) {
        use crate::query::runner::retain_marked;
        let kept = |i: usize| !superseded[i];
        retain_marked(&mut out_rows, kept);
        retain_marked(&mut out_windows, kept);
        retain_marked(&mut out_keys, kept);
        retain_marked(&mut out_times, kept);
        retain_marked(&mut out_tombstone, kept);
        for r in results.iter_mut() {
            retain_marked(r, kept);
        }
    }

    let group_columns = match final_group_columns {
        // A final row's group is its window's, not that of the record that closed it.
        Some(columns) => columns,
        None => {
            let indices = datafusion::arrow::array::UInt32Array::from_iter_values(
                out_rows.iter().map(|&i| i as u32),
            );
            group_arrays
                .iter()
                .map(|a| datafusion::arrow::compute::take(a.as_ref(), &indices, None))
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| EngineError::statement(e.to_string()))?
        }
    };
    let step = emit_aggregated(
        plan,
        &mut state.groups,
        (sink_columns, encoder),
        (partition, records),
        AggregatedRows {
            group_columns,
            results,
            windows: out_windows,
            times: out_times,
            tombstone: out_tombstone,
            keys: out_keys,
            from: out_rows.iter().map(|&i| rows_from[i]).collect(),
        },
        errors,
    )?;
    // Closed windows leave memory and the store (their rows stay in the sink); with the
    // record cache, at its flush, once their last updates are out.
    if !state.coalesce {
        for key in state.expire_windows(store, plan)? {
            dirty.remove(&key);
            deleted.push(key);
        }
        let (expired, changed) = state.expire_sessions(store, plan)?;
        for key in expired {
            dirty.remove(&key);
            deleted.push(key);
        }
        dirty_sessions.extend(changed);
    }

    for key in dirty {
        if let Some(group) = state.groups.get_mut(&key) {
            writes.push((state_key(&key), Some(serialize(group)?)));
        }
    }
    for key in deleted {
        writes.push((state_key(&key), None));
    }
    for group_key in dirty_sessions {
        let sessions = state.sessions.get(&group_key).cloned().unwrap_or_default();
        if sessions.is_empty() {
            // A group with no session left leaves memory and the store.
            state.sessions.remove(&group_key);
            writes.push((session_index_key(&group_key), None));
            continue;
        }
        let bytes: Vec<u8> = sessions
            .iter()
            .flat_map(|(s, e)| s.to_be_bytes().into_iter().chain(e.to_be_bytes()))
            .collect();
        writes.push((session_index_key(&group_key), Some(bytes)));
    }
    if let Some(times) = &state.stream_times {
        writes.push((STREAM_TIME_KEY.to_vec(), Some(times.encode())));
    }
    if let Some(starts) = &state.latest_start
        && starts.iter().next().is_some()
    {
        writes.push((LATEST_START_KEY.to_vec(), Some(starts.encode())));
    }
    Ok((step, writes))
}

/// Aggregated rows on their way out: one per group update, with the group's values, the
/// aggregates' results, the window, the result's timestamp, and the input record it came from.
struct AggregatedRows {
    group_columns: Vec<ArrayRef>,
    results: Vec<Vec<ScalarValue>>,
    windows: Vec<(i64, i64)>,
    times: Vec<i64>,
    tombstone: Vec<bool>,
    keys: Vec<Vec<u8>>,
    /// For each row, the index of its input record.
    from: Vec<usize>,
}

/// Applies `HAVING` to aggregated rows (a group that stops passing is deleted) and encodes
/// them as sink records.
fn emit_aggregated(
    plan: &AggregatePlan,
    groups: &mut HashMap<Vec<u8>, Group>,
    (sink_columns, encoder): (&[Column], &SinkEncoder),
    (partition, records): (u32, &[LogRecord]),
    rows: AggregatedRows,
    errors: Vec<RecordError>,
) -> Result<StepOutput> {
    let AggregatedRows {
        group_columns,
        results,
        windows: out_windows,
        times: out_times,
        tombstone: out_tombstone,
        keys: out_keys,
        from,
    } = rows;
    let mut columns = group_columns;
    // The aggregated rows: group values, results, window bounds, ROWTIME.
    for (call, values) in plan.aggregates.iter().zip(results) {
        let array = if values.is_empty() {
            datafusion::arrow::array::new_null_array(call.return_field.data_type(), 0)
        } else {
            ScalarValue::iter_to_array(values).map_err(|e| EngineError::statement(e.to_string()))?
        };
        let array = if array.data_type() == &call.result_type {
            array
        } else {
            datafusion::arrow::compute::cast(&array, &call.result_type)
                .map_err(|e| EngineError::statement(e.to_string()))?
        };
        columns.push(array);
    }
    if plan.window.is_some() || plan.session.is_some() {
        columns.push(Arc::new(Int64Array::from_iter_values(
            out_windows.iter().map(|w| w.0),
        )));
        columns.push(Arc::new(Int64Array::from_iter_values(
            out_windows.iter().map(|w| w.1),
        )));
    }
    columns.push(Arc::new(Int64Array::from_iter_values(
        out_times.iter().copied(),
    )));
    let aggregated = RecordBatch::try_new_with_options(
        plan.aggregate_schema.clone(),
        columns,
        &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(out_keys.len())),
    )
    .map_err(|e| EngineError::statement(format!("cannot assemble aggregated rows: {e}")))?;

    // HAVING: a group that passes is emitted; one that stops passing is deleted.
    let n = aggregated.num_rows();
    let mut emit_row = vec![true; n];
    let mut tombstone = out_tombstone.clone();
    if let Some(having) = &plan.having {
        let mask = having
            .evaluate(&aggregated)
            .and_then(|v| v.into_array(n))
            .map_err(|e| EngineError::statement(format!("Error evaluating HAVING: {e}")))?;
        let mask = mask
            .as_any()
            .downcast_ref::<BooleanArray>()
            .cloned()
            .unwrap_or_else(|| BooleanArray::from(vec![false; n]));
        for r in 0..n {
            if out_tombstone[r] {
                continue;
            }
            let passes = mask.is_valid(r) && mask.value(r);
            if plan.emit_final {
                // A final row is the window's only one: it is emitted or not, nothing to undo.
                emit_row[r] = passes;
                continue;
            }
            let group = groups
                .get_mut(&out_keys[r])
                .ok_or_else(|| EngineError::statement("aggregate group vanished"))?;
            if passes {
                group.emitted = true;
            } else if group.emitted {
                group.emitted = false;
                tombstone[r] = true;
            } else {
                emit_row[r] = false;
            }
        }
    }
    let selected = BooleanArray::from(emit_row.clone());
    let aggregated = filter_record_batch(&aggregated, &selected)
        .map_err(|e| EngineError::statement(e.to_string()))?;
    let pick = |v: Vec<usize>| -> Vec<usize> {
        v.into_iter()
            .zip(&emit_row)
            .filter_map(|(x, e)| e.then_some(x))
            .collect()
    };
    let emitted_rows: Vec<usize> = pick(from);
    let tombstone: Vec<bool> = tombstone
        .into_iter()
        .zip(&emit_row)
        .filter_map(|(t, e)| e.then_some(t))
        .collect();
    let count = aggregated.num_rows();
    emit(
        (&plan.keys, &plan.values),
        (sink_columns, encoder),
        partition,
        records,
        Projectable {
            batch: aggregated,
            rows_from: emitted_rows,
            has_value: vec![true; count],
            tombstone,
        },
        errors,
    )
}

/// `EMIT FINAL` rows gathered during a step: each closed window's group key, bounds, result
/// timestamp and aggregate values, and the input row that closed it.
#[derive(Default)]
struct FinalRows {
    rows: Vec<usize>,
    keys: Vec<Vec<u8>>,
    windows: Vec<(i64, i64)>,
    times: Vec<i64>,
    results: Vec<Vec<ScalarValue>>,
}

/// A window `EMIT FINAL` closed: its group key, bounds, result timestamp and values.
type ClosedWindow = (Vec<u8>, (i64, i64), i64, Vec<ScalarValue>);

impl FinalRows {
    /// Adds the windows input row `row` closed; they leave the state.
    fn add(
        &mut self,
        row: usize,
        closed: Vec<ClosedWindow>,
        (dirty, deleted): (&mut std::collections::BTreeSet<Vec<u8>>, &mut Vec<Vec<u8>>),
    ) {
        for (key, window, latest, values) in closed {
            for (k, v) in values.into_iter().enumerate() {
                self.results[k].push(v);
            }
            self.rows.push(row);
            self.windows.push(window);
            self.times.push(latest);
            dirty.remove(&key);
            deleted.push(key.clone());
            self.keys.push(key);
        }
    }
}

impl AggregateState {
    /// The times per partition stored under `key`.
    fn stored_times(&self, store: &Store, key: &[u8]) -> Result<PartitionTimes> {
        let stored = store.state_get(&self.namespace, key)?;
        Ok(PartitionTimes::decode(
            stored.as_deref(),
            self.partitioner.partitions(),
        ))
    }

    /// Stream time per partition, read from the store the first time.
    fn stream_times(&mut self, store: &Store) -> Result<&mut PartitionTimes> {
        if self.stream_times.is_none() {
            self.stream_times = Some(self.stored_times(store, STREAM_TIME_KEY)?);
        }
        self.stream_times
            .as_mut()
            .ok_or_else(|| EngineError::statement("the stream times vanished"))
    }

    /// The windows of partition `clock` still open or not yet emitted, by the bound they
    /// close at (see `open_windows_index`); every partition's are read from the store the
    /// first time.
    fn open_windows(&mut self, store: &Store, clock: u32) -> Result<&mut WindowIndex> {
        if self.open_windows_index.is_none() {
            let mut filed: Vec<(i64, Vec<u8>)> = Vec::new();
            for entry in store.state_scan_prefix(&self.namespace, b"g")? {
                let (key, _) = entry?;
                let group_key = key[1..].to_vec();
                if let Some(bound) = group_key
                    .len()
                    .checked_sub(8)
                    .and_then(|at| group_key[at..].try_into().ok())
                    .map(i64::from_be_bytes)
                {
                    filed.push((bound, group_key));
                }
            }
            // A window's key is its group's, then its start (and a session's end).
            let suffix = if self.sessions_windowed { 16 } else { 8 };
            let (bounds, keys): (Vec<i64>, Vec<GroupKey>) = filed.into_iter().unzip();
            let clocks = if keys.is_empty() || self.partitioner.partitions() <= 1 {
                vec![0; keys.len()]
            } else {
                let groups = self.group_values(&keys, suffix)?;
                self.partitioner.assign(&groups, keys.len(), &|i| {
                    keys[i][..keys[i].len().saturating_sub(suffix)].to_vec()
                })
            };
            let mut index = vec![WindowIndex::new(); self.partitioner.partitions() as usize];
            for ((bound, key), clock) in bounds.into_iter().zip(keys).zip(clocks) {
                if let Some(windows) = index.get_mut(clock as usize) {
                    windows.entry(bound).or_default().insert(key);
                }
            }
            self.open_windows_index = Some(index);
            self.latest_start = Some(self.stored_times(store, LATEST_START_KEY)?);
        }
        self.open_windows_index
            .as_mut()
            .and_then(|index| index.get_mut(clock as usize))
            .ok_or_else(|| EngineError::statement("the open windows' index vanished"))
    }

    /// Takes out of partition `clock`'s index every window filed at or before `bound`, by
    /// bound.
    fn take_windows_through(
        &mut self,
        store: &Store,
        clock: u32,
        bound: i64,
    ) -> Result<WindowIndex> {
        let open = self.open_windows(store, clock)?;
        let later = match bound.checked_add(1) {
            Some(after) => open.split_off(&after),
            None => Default::default(),
        };
        Ok(std::mem::replace(open, later))
    }

    /// A group's result as `EMIT FINAL` writes it: its latest timestamp (`fallback` if it has
    /// none) and each aggregate's value. The group leaves memory.
    fn final_result(
        &mut self,
        store: &Store,
        key: &[u8],
        (plan, input): (&AggregatePlan, &Schema),
        fallback: i64,
    ) -> Result<(i64, Vec<ScalarValue>)> {
        let group = self.group(store, key, plan, input)?;
        let latest = group.latest.unwrap_or(fallback);
        let values = group
            .accumulators
            .iter_mut()
            .zip(&plan.aggregates)
            .map(|(acc, call)| current_result(acc, call))
            .collect::<Result<Vec<_>>>()?;
        self.groups.remove(key);
        Ok((latest, values))
    }

    /// The windows of partition `clock` that `EMIT FINAL` emits now that its stream time is
    /// `stream_time`: those whose end plus grace it has reached. As in Kafka Streams, a
    /// window older than the store's retention (size plus grace) behind the latest window
    /// written is gone instead, so a jump in stream time past several windows emits only the
    /// recent ones. Emitted and expired windows leave the state.
    fn close_final_windows(
        &mut self,
        store: &Store,
        plan: &AggregatePlan,
        input: &Schema,
        (clock, stream_time): (u32, i64),
    ) -> Result<(Vec<ClosedWindow>, Vec<Vec<u8>>)> {
        let Some((windows, grace)) = &plan.window else {
            return Ok((Vec::new(), Vec::new()));
        };
        let size = windows.size();
        let last_closable = stream_time.saturating_sub(*grace).saturating_sub(size);
        let ready = self.take_windows_through(store, clock, last_closable)?;
        let oldest_kept = self
            .latest_start
            .as_ref()
            .map_or(i64::MIN, |s| s.get(clock))
            .saturating_sub(size + grace);
        let mut out = Vec::new();
        let mut expired = Vec::new();
        for (start, keys) in ready {
            for key in keys {
                if start >= oldest_kept {
                    let (latest, values) =
                        self.final_result(store, &key, (plan, input), stream_time)?;
                    out.push((key, (start, start + size), latest, values));
                } else {
                    self.groups.remove(&key);
                    expired.push(key);
                }
            }
        }
        Ok((out, expired))
    }

    /// `EMIT FINAL` over sessions: the sessions of partition `clock` whose end plus grace its
    /// stream time has reached, as Kafka Streams' suppression closes a session window, each
    /// with its result; they leave the state and their groups' session lists (whose group
    /// keys come back too).
    fn close_final_sessions(
        &mut self,
        store: &Store,
        plan: &AggregatePlan,
        input: &Schema,
        (clock, stream_time): (u32, i64),
    ) -> Result<(Vec<ClosedWindow>, Vec<Vec<u8>>)> {
        let Some((_, grace)) = plan.session else {
            return Ok((Vec::new(), Vec::new()));
        };
        let ready = self.take_windows_through(store, clock, stream_time.saturating_sub(grace))?;
        let mut out = Vec::new();
        let mut emptied = Vec::new();
        for (end, keys) in ready {
            for key in keys {
                let Some((group_key, start)) = self.leave_session_list(store, &key, end)? else {
                    continue;
                };
                let (latest, values) = self.final_result(store, &key, (plan, input), end)?;
                out.push((key, (start, end), latest, values));
                emptied.push(group_key);
            }
        }
        Ok((out, emptied))
    }

    /// Takes the session stored under `key`, which ends at `end`, out of its group's session
    /// list; returns the group key and the session's start (`None` for a malformed key).
    fn leave_session_list(
        &mut self,
        store: &Store,
        key: &[u8],
        end: i64,
    ) -> Result<Option<(GroupKey, i64)>> {
        let Some(at) = key.len().checked_sub(16) else {
            return Ok(None);
        };
        let start = key[at..at + 8]
            .try_into()
            .map(i64::from_be_bytes)
            .map_err(|_| EngineError::statement("a session key is malformed"))?;
        let group_key = key[..at].to_vec();
        let mut sessions = self.sessions_of(store, &group_key)?;
        sessions.retain(|s| *s != (start, end));
        self.sessions.insert(group_key.clone(), sessions);
        Ok(Some((group_key, start)))
    }

    /// Takes out of the index, in every partition, the windows filed at or before the
    /// partition's stream time less `lag`, by bound.
    fn take_closed(&mut self, store: &Store, lag: i64) -> Result<Vec<(i64, GroupKey)>> {
        let clocks: Vec<(u32, i64)> = self.stream_times(store)?.iter().collect();
        let mut closed = Vec::new();
        for (clock, stream_time) in clocks {
            for (bound, keys) in
                self.take_windows_through(store, clock, stream_time.saturating_sub(lag))?
            {
                closed.extend(keys.into_iter().map(|key| (bound, key)));
            }
        }
        Ok(closed)
    }

    /// Tumbling and hopping windows (without `EMIT FINAL`) that their partition's stream
    /// time has closed: their end plus grace is behind it, so no record can change them
    /// again. They leave memory; the caller deletes them from the store.
    fn expire_windows(&mut self, store: &Store, plan: &AggregatePlan) -> Result<Vec<Vec<u8>>> {
        let Some((windows, grace)) = &plan.window else {
            return Ok(Vec::new());
        };
        if plan.emit_final {
            return Ok(Vec::new());
        }
        let expired: Vec<GroupKey> = self
            .take_closed(store, grace.saturating_add(windows.size()))?
            .into_iter()
            .map(|(_, key)| key)
            .collect();
        for key in &expired {
            self.groups.remove(key);
        }
        Ok(expired)
    }

    /// Sessions (without `EMIT FINAL`) that their partition's stream time has closed: their
    /// end plus the gap and the grace is behind it, so no record can join them again. They
    /// leave memory and their groups' session lists; the caller deletes them from the store
    /// and writes back the lists of the groups returned.
    fn expire_sessions(
        &mut self,
        store: &Store,
        plan: &AggregatePlan,
    ) -> Result<(Vec<GroupKey>, Vec<GroupKey>)> {
        let Some((gap, grace)) = plan.session else {
            return Ok((Vec::new(), Vec::new()));
        };
        if plan.emit_final {
            return Ok((Vec::new(), Vec::new()));
        }
        let mut expired = Vec::new();
        let mut changed = Vec::new();
        // Closed once end + gap + grace is behind stream time: filed at or before it less
        // gap + grace + 1.
        let lag = gap.saturating_add(grace).saturating_add(1);
        for (end, key) in self.take_closed(store, lag)? {
            if let Some((group_key, _)) = self.leave_session_list(store, &key, end)? {
                self.groups.remove(&key);
                changed.push(group_key);
                expired.push(key);
            }
        }
        Ok((expired, changed))
    }

    /// `EMIT FINAL`: stops waiting on a window of partition `clock` (by the bound its pending
    /// entry is filed under) that was merged away.
    fn forget_pending(&mut self, store: &Store, clock: u32, bound: i64, key: &[u8]) -> Result<()> {
        let pending = self.open_windows(store, clock)?;
        if let Some(keys) = pending.get_mut(&bound) {
            keys.remove(key);
            if keys.is_empty() {
                pending.remove(&bound);
            }
        }
        Ok(())
    }

    /// The group-by values of group keys: each its grouping row, then `suffix` bytes of window
    /// bounds (8 for a window's start, 16 for a session's start and end, or none).
    fn group_values(&self, keys: &[Vec<u8>], suffix: usize) -> Result<Vec<ArrayRef>> {
        let parser = self.converter.parser();
        let rows: Vec<_> = keys
            .iter()
            .map(|k| parser.parse(&k[..k.len().saturating_sub(suffix)]))
            .collect();
        self.converter
            .convert_rows(rows)
            .map_err(|e| EngineError::statement(e.to_string()))
    }

    /// A group with no rows yet.
    fn fresh_group(&self, plan: &AggregatePlan, input: &Schema) -> Result<Group> {
        Ok(Group {
            accumulators: plan
                .aggregates
                .iter()
                .map(|a| a.make_accumulator(input, plan.source.kind == SourceKind::Table))
                .collect::<Result<_>>()?,
            emitted: false,
            latest: None,
        })
    }

    /// Removes a group, loading it first if it is only in the store.
    fn take_group(
        &mut self,
        store: &Store,
        key: &[u8],
        plan: &AggregatePlan,
        input: &Schema,
    ) -> Result<Group> {
        self.group(store, key, plan, input)?;
        self.groups
            .remove(key)
            .ok_or_else(|| EngineError::statement("aggregate group vanished"))
    }

    /// A group key's sessions, loading them from the store the first time.
    fn sessions_of(&mut self, store: &Store, group_key: &[u8]) -> Result<Vec<(i64, i64)>> {
        if let Some(sessions) = self.sessions.get(group_key) {
            return Ok(sessions.clone());
        }
        let stored = store
            .state_get(&self.namespace, &session_index_key(group_key))?
            .unwrap_or_default();
        let sessions: Vec<(i64, i64)> = stored
            .chunks_exact(16)
            .filter_map(|c| {
                Some((
                    i64::from_be_bytes(c[..8].try_into().ok()?),
                    i64::from_be_bytes(c[8..].try_into().ok()?),
                ))
            })
            .collect();
        self.sessions.insert(group_key.to_vec(), sessions.clone());
        Ok(sessions)
    }

    /// Notes that a group changed, for the next flush of the record cache.
    fn mark_pending(&mut self, key: Vec<u8>, window: (i64, i64), partition: u32, offset: i64) {
        if let Some(&at) = self.pending_at.get(&key) {
            let update = &mut self.pending[at];
            (update.window, update.partition, update.offset) = (window, partition, offset);
            return;
        }
        // As Kafka Streams' cache counts an entry: its key and value bytes, plus overhead.
        self.pending_bytes += 2 * key.len() + 64;
        self.pending_at.insert(key.clone(), self.pending.len());
        self.pending.push(PendingUpdate {
            key,
            window,
            partition,
            offset,
        });
    }

    /// Whether updates wait in the record cache for [`AggregateState::flush`].
    pub(crate) fn coalesces(&self) -> bool {
        self.coalesce
    }

    /// Estimated bytes the record cache holds.
    pub(crate) fn cached_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Empties the record cache: the current result of each group changed since the last
    /// flush, once, and its state to commit with it.
    pub(crate) fn flush(
        &mut self,
        store: &Store,
        plan: &AggregatePlan,
        (sink_columns, encoder): (&[Column], &SinkEncoder),
    ) -> Result<(StepOutput, StateWrites)> {
        let pending = std::mem::take(&mut self.pending);
        self.pending_at.clear();
        self.pending_bytes = 0;
        let mut step = StepOutput {
            records: Vec::new(),
            errors: Vec::new(),
        };
        let mut writes: StateWrites = Vec::with_capacity(pending.len());
        let mut partitions: Vec<u32> = pending.iter().map(|u| u.partition).collect();
        partitions.sort_unstable();
        partitions.dedup();
        for partition in partitions {
            let updates: Vec<&PendingUpdate> = pending
                .iter()
                .filter(|u| u.partition == partition)
                .collect();
            let mut results: Vec<Vec<ScalarValue>> =
                vec![Vec::with_capacity(updates.len()); plan.aggregates.len()];
            let mut times = Vec::with_capacity(updates.len());
            let mut records = Vec::with_capacity(updates.len());
            for update in &updates {
                let group = self
                    .groups
                    .get_mut(&update.key)
                    .ok_or_else(|| EngineError::statement("aggregate group vanished"))?;
                for (k, (acc, call)) in group
                    .accumulators
                    .iter_mut()
                    .zip(&plan.aggregates)
                    .enumerate()
                {
                    results[k].push(current_result(acc, call)?);
                }
                let latest = group.latest.unwrap_or_default();
                times.push(latest);
                // The result stands for the last record that changed the group.
                records.push(LogRecord {
                    offset: update.offset,
                    record: eddy_storage::Record {
                        key: None,
                        value: None,
                        timestamp: latest,
                        headers: Vec::new(),
                    },
                });
            }
            let keys: Vec<Vec<u8>> = updates.iter().map(|u| u.key.clone()).collect();
            let rows = AggregatedRows {
                group_columns: self
                    .group_values(&keys, if plan.window.is_some() { 8 } else { 0 })?,
                results,
                windows: updates.iter().map(|u| u.window).collect(),
                times,
                tombstone: vec![false; updates.len()],
                keys,
                from: (0..updates.len()).collect(),
            };
            let out = emit_aggregated(
                plan,
                &mut self.groups,
                (sink_columns, encoder),
                (partition, &records),
                rows,
                Vec::new(),
            )?;
            step.records.extend(out.records);
            step.errors.extend(out.errors);
            // After HAVING, which notes in each group whether its row stands.
            for update in updates {
                if let Some(group) = self.groups.get_mut(&update.key) {
                    writes.push((state_key(&update.key), Some(serialize(group)?)));
                }
            }
        }
        for key in self.expire_windows(store, plan)? {
            writes.push((state_key(&key), None));
        }
        Ok((step, writes))
    }

    /// The state-store namespace of this aggregation.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    fn round_trip(value: &ScalarValue) -> Option<ScalarValue> {
        let mut bytes = Vec::new();
        compact_scalar::encode(value, &mut bytes);
        let (decoded, used) = compact_scalar::decode(&bytes)?;
        assert_eq!(used, bytes.len(), "{value:?} left bytes behind");
        Some(decoded)
    }

    #[test]
    fn compact_state_values_round_trip_nulls_and_extremes() {
        let values = [
            ScalarValue::Boolean(Some(true)),
            ScalarValue::Boolean(None),
            ScalarValue::Int8(Some(i8::MIN)),
            ScalarValue::Int16(Some(-2)),
            ScalarValue::Int32(None),
            ScalarValue::Int64(Some(i64::MAX)),
            ScalarValue::UInt8(Some(255)),
            ScalarValue::UInt16(Some(7)),
            ScalarValue::UInt32(Some(u32::MAX)),
            ScalarValue::UInt64(None),
            ScalarValue::Float32(Some(-0.5)),
            ScalarValue::Float64(Some(f64::MIN_POSITIVE)),
            ScalarValue::Float64(None),
            ScalarValue::Utf8(Some(String::new())),
            ScalarValue::Utf8(Some("naïve".into())),
            ScalarValue::Utf8(None),
            ScalarValue::Decimal128(Some(-12_345), 10, 2),
            ScalarValue::Decimal128(None, 38, 0),
        ];
        for value in values {
            assert_eq!(round_trip(&value).as_ref(), Some(&value));
        }
        // Lists and other nested values take the Arrow IPC path instead.
        assert!(!compact_scalar::encodable(&ScalarValue::new_null_list(
            DataType::Int64,
            true,
            1
        )));
        // Truncated or unknown bytes are an error, not a panic.
        assert!(compact_scalar::decode(&[5, 1, 2]).is_none());
        assert!(compact_scalar::decode(&[12, 9, 0, 0, 0, b'a']).is_none());
        assert!(compact_scalar::decode(&[0x7f]).is_none());
        assert!(compact_scalar::decode(&[]).is_none());
    }

    proptest! {
        #[test]
        fn compact_state_values_round_trip(
            i in any::<i64>(),
            f in any::<f64>().prop_filter("NaN is not equal to itself", |f| !f.is_nan()),
            s in ".*",
            d in any::<i128>(),
        ) {
            for value in [
                ScalarValue::Int64(Some(i)),
                ScalarValue::Float64(Some(f)),
                ScalarValue::Utf8(Some(s.clone())),
                ScalarValue::Decimal128(Some(d), 38, 4),
            ] {
                prop_assert_eq!(round_trip(&value), Some(value));
            }
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = compact_scalar::decode(&bytes);
        }
    }

    #[test]
    fn every_listed_aggregate_resolves() {
        for name in AGGREGATE_FUNCTIONS {
            assert!(is_aggregate(name), "{name} is listed but does not resolve");
        }
        assert!(!is_aggregate("UCASE"));
    }
}
