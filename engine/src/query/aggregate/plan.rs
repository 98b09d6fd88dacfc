//! Planning an aggregation: the `GROUP BY` expressions, the aggregate calls, the window, and
//! the projection and `HAVING` over aggregated rows, checked with ksqlDB's rules and messages.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use eddy_sql::Span;
use eddy_sql::ast::{Expr, ExprKind, Ident, Query, SelectItem, SourceKind, WindowKind};
use eddy_sql::functions::aggregates::is_aggregate;

use super::AggregatePlan;
use super::calls::{AGGREGATE_COLUMN, WrittenCall, check_table_aggregation, plan_calls, sql_type};
use super::windows::{DEFAULT_GRACE_MS, SessionWindows, TimeWindows};
use crate::catalog::{Catalog, DataSource};
use crate::error::{EngineError, Result};
use crate::query::naming::{GeneratedNames, check_reserved_in_select, select_item_name};
use crate::query::scope::{
    ProjectionInput, SourceScope, compile_in, df_schema, located_error, named_source,
    qualified_text, source_scope,
};
use crate::query::sink::OutputColumn;
use crate::query::source::{ROWTIME, WINDOWEND, WINDOWSTART};
use crate::schema::{Column, ColumnKind};

/// A compiled expression.
type Compiled = Arc<dyn PhysicalExpr>;

/// An aggregation's windows: time windows and their grace period, or session windows, and the
/// `RETENTION`.
type Windowing = (
    Option<(TimeWindows, i64)>,
    Option<SessionWindows>,
    Option<u64>,
);

/// Prefix of the aggregated rows' columns that hold the grouping values.
const GROUP_COLUMN: &str = "__EDDY_GROUP_";

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

/// An error about an expression over aggregated rows, with each aggregate's column named by
/// the call it stands for (`SUM(VALUE)`, not Eddy's internal column), as ksqlDB reports it.
fn written_calls_in_error(error: EngineError, calls: &[WrittenCall]) -> EngineError {
    let EngineError::Statement(message) = &error else {
        return error;
    };
    let mut message = message.clone();
    // Highest first, so `_1` does not rename the start of `_10`.
    for (i, (name, args, star, _)) in calls.iter().enumerate().rev() {
        let written = if *star {
            format!("{name}(*)")
        } else {
            let args: Vec<String> = args.iter().map(ToString::to_string).collect();
            format!("{name}({})", args.join(", "))
        };
        let column = format!("{AGGREGATE_COLUMN}{i}");
        message = message
            .replace(&format!("`{column}`"), &written)
            .replace(&column, &written);
    }
    EngineError::statement(message)
}

/// A column of the aggregated rows, by its exact name.
fn column(name: &str, span: Span) -> Expr {
    Expr {
        kind: ExprKind::Column {
            source: None,
            name: Ident::exact(name),
        },
        span,
    }
}

/// Plans `query` over one source as an aggregation into a table called `sink_name`.
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
        // Joins are planned by `join::plan_join_aggregate`, which aggregates with this module.
        return Err(EngineError::Unsupported("JOIN here".into()));
    }
    let from = &query.from.source;
    let source = named_source(catalog, from)?;
    // Beyond ksqlDB: a windowed stream (the changelog of a windowed aggregation, read back as
    // a stream) aggregates again, its WINDOWSTART and WINDOWEND usable as columns. A windowed
    // table would need its rows' retractions by window.
    if source.window.is_some() && source.kind == SourceKind::Table {
        return Err(EngineError::Unsupported(
            "GROUP BY over a windowed table".into(),
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
        ProjectionInput::of_source(source, from, &crate::codec::Schemas::of(ctx))?,
        sink_name,
        transient,
    )
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

/// What the phases of planning an aggregation share.
struct Planning<'q> {
    ctx: &'q SessionContext,
    catalog: &'q Catalog,
    query: &'q Query,
    source: &'q DataSource,
    alias: &'q str,
    sink_name: &'q str,
    /// A push query, whose rules are looser.
    transient: bool,
    /// A windowed table without `GROUP BY`: one group per window, keyed by the window alone.
    keyless: bool,
}

/// The projection with aggregates and grouping expressions replaced by columns of the
/// aggregated rows: each item's name, as written, and rewritten; `HAVING` rewritten; and the
/// calls found.
struct Rewritten {
    items: Vec<(String, Expr, Expr)>,
    having: Option<Expr>,
    calls: Vec<WrittenCall>,
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
    // Beyond ksqlDB: a windowed aggregation without GROUP BY aggregates each window's records
    // into one row, keyed by the window alone. It is planned as one constant group that is
    // not part of the key.
    let keyless = query.group_by.is_empty() && query.window.is_some() && !transient;
    let whole;
    let query = if keyless {
        let mut q = query.clone();
        q.group_by = vec![Expr {
            kind: ExprKind::Literal(eddy_sql::ast::Literal::Integer(1)),
            span: query.span,
        }];
        whole = q;
        &whole
    } else {
        query
    };
    let planning = Planning {
        ctx,
        catalog,
        query,
        source,
        alias,
        sink_name,
        transient,
        keyless,
    };
    let input_df = df_schema(&schema)?;
    let scope = source_scope(catalog, source, alias, &schema, &input_df);
    planning.check_window_bounds()?;
    let filter = match &query.filter {
        Some(expr) => Some(compile_in(ctx, &scope, expr, "WHERE")?),
        None => None,
    };
    planning.check_projection()?;
    let (group_by, group_fields) = planning.group_by(&scope, &schema)?;
    let rewritten = planning.rewrite(&scope)?;
    let (aggregates, aggregate_fields) = plan_calls(
        ctx,
        (&scope, &schema),
        &rewritten.calls,
        source.kind == SourceKind::Table,
    )?;
    if source.kind == SourceKind::Table {
        check_table_aggregation(&aggregates, &schema, query.window.is_some())?;
    }
    let (window, session, retention) = planning.window()?;
    let mut fields = group_fields;
    fields.extend(aggregate_fields);
    if window.is_some() || session.is_some() {
        fields.push(Field::new(WINDOWSTART, DataType::Int64, true));
        fields.push(Field::new(WINDOWEND, DataType::Int64, true));
    }
    fields.push(Field::new(ROWTIME, DataType::Int64, true));
    let aggregate_schema: SchemaRef = Arc::new(Schema::new(fields));
    planning.check_grouped(&rewritten, &aggregate_schema)?;
    let (keys, values, having) = planning.outputs(&rewritten, &aggregate_schema)?;
    Ok(AggregatePlan {
        source: source.clone(),
        decoder,
        filter,
        group_by,
        aggregates,
        window,
        session,
        retention,
        having,
        emit_final: query.emit == Some(eddy_sql::ast::Emit::Final),
        aggregate_schema,
        keys,
        values,
        column_order: rewritten
            .items
            .iter()
            .map(|(name, _, _)| name.clone())
            .collect(),
    })
}

impl Planning<'_> {
    /// Window bounds exist only once rows are aggregated into windows, as ksqlDB says.
    fn check_window_bounds(&self) -> Result<()> {
        if self.source.window.is_some() {
            return Ok(());
        }
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
        if let Some(name) = self.query.filter.as_ref().and_then(window_bound) {
            return Err(EngineError::statement(format!(
                "Error in WHERE expression: Unknown column {name}."
            )));
        }
        if let Some(name) = self.query.having.as_ref().and_then(window_bound) {
            return Err(EngineError::statement(format!(
                "Window bounds column {name} can only be used in the SELECT clause of windowed aggregations"
            )));
        }
        Ok(())
    }

    /// Window bounds and pseudo-columns must be aliased to be selected into a sink, and table
    /// functions cannot be aggregated.
    fn check_projection(&self) -> Result<()> {
        if !self.transient {
            check_reserved_in_select(&self.query.select)?;
        }
        let table_function = |e: &Expr| {
            e.any(&mut |x| {
                matches!(&x.kind, ExprKind::Function { name, .. } if eddy_sql::functions::is_table_function(&name.value))
            })
        };
        if self
            .query
            .select
            .iter()
            .any(|i| matches!(i, SelectItem::Expr { expr, .. } if table_function(expr)))
        {
            return Err(EngineError::statement(
                "Table functions cannot be used with aggregations.",
            ));
        }
        Ok(())
    }

    /// The `GROUP BY` expressions, which may not aggregate or repeat, compiled over the input
    /// rows, with the fields of the aggregated rows that hold their values.
    fn group_by(
        &self,
        scope: &SourceScope<'_>,
        schema: &SchemaRef,
    ) -> Result<(Vec<Compiled>, Vec<Field>)> {
        let group_by = &self.query.group_by;
        let qualified = |by: &Expr| qualified_text(by, self.alias, &self.source.name);
        for (j, by) in group_by.iter().enumerate() {
            let text = qualified(by);
            if group_by[..j]
                .iter()
                .any(|earlier| qualified(earlier) == text)
            {
                return Err(EngineError::statement(format!(
                    "Duplicate GROUP BY expression: {text}"
                )));
            }
        }
        let mut compiled_all = Vec::with_capacity(group_by.len());
        let mut fields = Vec::with_capacity(group_by.len());
        for (j, by) in group_by.iter().enumerate() {
            if let Some(name) = find_aggregate(by) {
                return Err(EngineError::statement(format!(
                    "GROUP BY does not support aggregate functions: {name} is an aggregate function."
                )));
            }
            let compiled = compile_in(self.ctx, scope, by, "GROUP BY")?;
            let ty = compiled
                .data_type(schema)
                .map_err(|e| EngineError::statement(e.to_string()))?;
            fields.push(Field::new(format!("{GROUP_COLUMN}{j}"), ty, true));
            compiled_all.push(compiled);
        }
        Ok((compiled_all, fields))
    }

    /// The projection's items named as in a stateless query; `*` (or `source.*`) is every
    /// column of the source, each of which must then be grouped, as in ksqlDB.
    fn items(&self) -> Result<Vec<(String, Expr)>> {
        let mut named: Vec<(Option<String>, Expr)> = Vec::with_capacity(self.query.select.len());
        let source = self.source;
        let every_column = |named: &mut Vec<(Option<String>, Expr)>, span: Span| {
            for c in source
                .columns
                .iter()
                .filter(|c| !matches!(c.kind, ColumnKind::Headers | ColumnKind::Header(_)))
            {
                named.push((Some(c.name.clone()), named_column(&c.name, span)));
            }
        };
        for item in &self.query.select {
            match item {
                SelectItem::Expr { expr, alias } => {
                    named.push((select_item_name(expr, alias.as_ref())?, expr.clone()));
                }
                SelectItem::Wildcard(span) => every_column(&mut named, *span),
                SelectItem::QualifiedWildcard(name)
                    if self.alias.eq_ignore_ascii_case(&name.value)
                        || source.name.eq_ignore_ascii_case(&name.value) =>
                {
                    every_column(&mut named, name.span)
                }
                _ => {
                    return Err(EngineError::Unsupported(
                        "this `*` in an aggregation's projection".into(),
                    ));
                }
            }
        }
        let mut generated = GeneratedNames::new(source, &named);
        Ok(named
            .into_iter()
            .map(|(name, expr)| (name.unwrap_or_else(|| generated.next()), expr))
            .collect())
    }

    /// The projection and `HAVING` with each aggregate call and grouping expression replaced
    /// by the column of the aggregated rows that holds it. Nested aggregates are refused, and
    /// so is a projection without one.
    fn rewrite(&self, scope: &SourceScope<'_>) -> Result<Rewritten> {
        let items = self.items()?;
        let group_by = &self.query.group_by;
        let mut calls: Vec<WrittenCall> = Vec::new();
        let mut nested: Option<String> = None;
        let mut rewrite = |expr: &Expr| -> Expr {
            expr.rewrite(&mut |e| {
                if let Some(j) = group_by
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
        let having = self.query.having.as_ref().map(&mut rewrite);
        if let Some(message) = nested {
            return Err(EngineError::statement(message));
        }
        if calls.is_empty() {
            // An unknown function is the better thing to report than a missing aggregate.
            for (_, expr) in &items {
                compile_in(self.ctx, scope, expr, "SELECT")?;
            }
            return Err(EngineError::statement(
                "GROUP BY requires aggregate functions in either the SELECT or HAVING clause.",
            ));
        }
        Ok(Rewritten {
            items: rewritten,
            having,
            calls,
        })
    }

    /// The time windows or session windows and their grace periods, and the `RETENTION`.
    /// `EMIT FINAL` needs a window, and waits only for the grace given (none by default).
    fn window(&self) -> Result<Windowing> {
        let emit_final = self.query.emit == Some(eddy_sql::ast::Emit::Final);
        let Some(w) = &self.query.window else {
            if emit_final {
                return Err(EngineError::statement(
                    "EMIT FINAL is only supported for windowed aggregations.",
                ));
            }
            return Ok((None, None, None));
        };
        // A final result waits for the grace period, so without one it comes at the
        // window's end, as in ksqlDB.
        let default_grace = if emit_final { 0 } else { DEFAULT_GRACE_MS };
        let grace = w.grace.map_or(default_grace, |g| g.millis());
        let (window, session) = match w.kind {
            WindowKind::Session { gap } => (
                None,
                Some(SessionWindows {
                    gap: gap.millis(),
                    grace,
                }),
            ),
            WindowKind::Tumbling { size } => (
                Some(TimeWindows::Tumbling {
                    size: size.millis(),
                }),
                None,
            ),
            WindowKind::Hopping { size, advance } => (
                Some(TimeWindows::Hopping {
                    size: size.millis(),
                    advance: advance.millis(),
                }),
                None,
            ),
        };
        if window.is_some_and(|w| w.size() <= 0) {
            return Err(EngineError::statement("Window size must be positive"));
        }
        if let Some(windows) = &window {
            windows
                .check()
                .map_err(|message| located_error(w.span.start, message))?;
        }
        if session.is_some_and(|s| s.gap <= 0) {
            return Err(EngineError::statement(
                "Session windows need an inactivity gap greater than zero",
            ));
        }
        let window = window.map(|w| (w, grace));
        let retention = check_retention(w, window.as_ref(), session)?;
        Ok((window, session, retention))
    }

    /// Items must be grouping expressions or built from aggregates and them; a sink's table
    /// needs a key; `HAVING` may use a source column only inside an aggregate.
    fn check_grouped(&self, rewritten: &Rewritten, aggregate_schema: &SchemaRef) -> Result<()> {
        let not_grouped: Vec<String> = rewritten
            .items
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
        // A table needs a key: aggregating everything into one row is for push queries and
        // windowed tables (keyed by their windows, `keyless`).
        if self.query.group_by.is_empty() && !self.transient {
            return Err(self.ungrouped_table());
        }
        let Some(having) = &rewritten.having else {
            return Ok(());
        };
        let mut loose: Vec<String> = Vec::new();
        having.any(&mut |x| {
            if let ExprKind::Column { name, .. } = &x.kind
                && aggregate_schema.field_with_name(&name.value).is_err()
                && self.source.columns.iter().any(|c| c.name == name.value)
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
        Ok(())
    }

    /// ksqlDB's refusal of a table aggregated without `GROUP BY`, naming its calls.
    fn ungrouped_table(&self) -> EngineError {
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
        for item in &self.query.select {
            if let SelectItem::Expr { expr, .. } = item {
                note(expr);
            }
        }
        EngineError::statement(format!(
            "CREATE TABLE AS SELECT statement does not support aggregate function [{}] without a GROUP BY clause.",
            calls.join(", ")
        ))
    }

    /// The key columns (the grouping expressions, once each, all of them for a sink) and value
    /// columns over the aggregated rows, and `HAVING` compiled over them.
    fn outputs(
        &self,
        rewritten: &Rewritten,
        aggregate_schema: &SchemaRef,
    ) -> Result<(Vec<OutputColumn>, Vec<OutputColumn>, Option<Compiled>)> {
        let aggregate_df = df_schema(aggregate_schema)?;
        let aggregated = source_scope(
            self.catalog,
            self.source,
            self.alias,
            aggregate_schema,
            &aggregate_df,
        );
        let output = |name: &str, expr: &Expr, kind: ColumnKind| -> Result<OutputColumn> {
            let compiled = compile_in(self.ctx, &aggregated, expr, "SELECT")?;
            let ty = compiled
                .data_type(aggregate_schema)
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
        let mut remaining: Vec<&(String, Expr, Expr)> = rewritten.items.iter().collect();
        let mut missing: Vec<String> = Vec::new();
        let grouped = if self.keyless {
            &[][..]
        } else {
            &self.query.group_by[..]
        };
        for (j, by) in grouped.iter().enumerate() {
            let wanted = format!("{GROUP_COLUMN}{j}");
            let is_group =
                |e: &Expr| matches!(&e.kind, ExprKind::Column { name, .. } if name.value == wanted);
            match remaining.iter().position(|(_, _, e)| is_group(e)) {
                Some(i) => {
                    let (name, _, expr) = remaining.remove(i);
                    // As in ksqlDB, a grouping expression is the key once; selecting it again
                    // would make a value column of a key.
                    if !self.transient
                        && let Some((again, _, _)) = remaining.iter().find(|(_, _, e)| is_group(e))
                    {
                        return Err(EngineError::statement(format!(
                            "The projection contains a key column more than once: `{name}` and `{again}`."
                        )));
                    }
                    keys.push(output(name, expr, ColumnKind::Key)?);
                }
                // A push query's rows need not show their group; it keys them all the same.
                None if self.transient => {
                    keys.push(output(&wanted, &column(&wanted, by.span), ColumnKind::Key)?);
                }
                None => missing.push(by.to_string()),
            }
        }
        self.check_groups_selected(&missing)?;
        if remaining.is_empty() && !self.transient {
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
        let having = match &rewritten.having {
            Some(expr) => Some(
                compile_in(self.ctx, &aggregated, expr, "HAVING")
                    .map_err(|e| written_calls_in_error(e, &rewritten.calls))?,
            ),
            None => None,
        };
        Ok((keys, values, having))
    }

    /// A sink's rows must carry every grouping expression.
    fn check_groups_selected(&self, missing: &[String]) -> Result<()> {
        let sink_name = self.sink_name;
        match missing {
            [] => Ok(()),
            [by] => Err(EngineError::statement(format!(
                "The query used to build `{sink_name}` must include the grouping expression {by} in its projection (eg, SELECT {by}...)."
            ))),
            [rest @ .., last] => Err(EngineError::statement(format!(
                "The query used to build `{sink_name}` must include the grouping expressions {} and {last} in its projection (eg, SELECT {}...).",
                rest.join(", "),
                missing.join(", ")
            ))),
        }
    }
}

/// A window's `RETENTION`, which must cover its size (or a session's gap) plus its grace
/// period, as Kafka Streams requires of a window store.
fn check_retention(
    w: &eddy_sql::ast::WindowExpr,
    window: Option<&(TimeWindows, i64)>,
    session: Option<SessionWindows>,
) -> Result<Option<u64>> {
    let Some(retention) = w.retention else {
        return Ok(None);
    };
    let retention = retention.to_millis();
    let (what, span, grace) = match (window, session) {
        (Some((windows, grace)), _) => ("its window size", windows.size(), *grace),
        (None, Some(s)) => ("the session inactivity gap", s.gap, s.grace),
        (None, None) => return Ok(Some(retention)),
    };
    let needed = span.saturating_add(grace);
    if i128::from(retention) < i128::from(needed) {
        let name = if session.is_some() { "gap" } else { "size" };
        return Err(located_error(
            w.span.start,
            format!(
                "The retention period of the window must be no smaller than {what} plus the grace period. Got {name}=[{span}], grace=[{grace}], retention=[{retention}]. The grace period is 24 hours unless GRACE PERIOD gives it."
            ),
        ));
    }
    Ok(Some(retention))
}
