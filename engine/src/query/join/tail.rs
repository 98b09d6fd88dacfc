//! Planning what follows a join: the query's projection or aggregation rewritten over the last
//! stage's joined rows, with ksqlDB's rules for a join's key.

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::prelude::SessionContext;
use eddy_sql::Span;
use eddy_sql::ast::{Expr, Ident, Query, SelectItem, SourceKind, SqlType};

use super::JoinShape;
use super::scope::{
    Sides, bare_column, column_expr, contains_map, joined_rows_source, select_item,
};
use crate::catalog::{Catalog, DataSource};
use crate::error::{EngineError, Result};
use crate::query::aggregate::{AggregatePlan, plan_aggregate_over};
use crate::query::scope::{ProjectionInput, located_error};
use crate::query::stateless::{StatelessPlan, plan_projection};
use crate::schema::{Column, ColumnKind, PSEUDO_COLUMNS, type_display};

/// `query` over joined rows: its projection is `select` and its clauses are rewritten by
/// `sides`; `ORDER BY` applies to a pull query's result, after the pipeline, so it is left out.
fn rewritten_query(
    query: &Query,
    sides: &Sides<'_>,
    select: Vec<SelectItem>,
    aggregating: bool,
) -> Result<Query> {
    let rewrite_all = |exprs: &[Expr], clause: &str| -> Result<Vec<Expr>> {
        exprs.iter().map(|e| sides.rewrite(e, clause)).collect()
    };
    Ok(Query {
        select,
        order_by: Vec::new(),
        from: query.from.clone(),
        window: query.window,
        filter: query
            .filter
            .as_ref()
            .map(|f| sides.rewrite(f, "WHERE"))
            .transpose()?,
        group_by: if aggregating {
            rewrite_all(&query.group_by, "GROUP BY")?
        } else {
            Vec::new()
        },
        partition_by: if aggregating {
            Vec::new()
        } else {
            rewrite_all(&query.partition_by, "PARTITION BY")?
        },
        having: if aggregating {
            query
                .having
                .as_ref()
                .map(|h| sides.rewrite(h, "HAVING"))
                .transpose()?
        } else {
            None
        },
        emit: query.emit,
        limit: query.limit,
        span: query.span,
    })
}

/// Rewrites an aggregation over the last stage's joined rows and plans it.
pub(super) fn plan_last_aggregate(
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
    let rewritten = rewritten_query(query, sides, select, true)?;
    plan_aggregate_over(
        ctx,
        catalog,
        &rewritten,
        ProjectionInput::joined(&joined_source, joined_schema)?,
        sink_name,
        // Push queries over joins keep the rules of persistent ones.
        false,
    )
}

/// What the last stage's projection needs to know of it.
pub(super) struct LastStage<'a> {
    /// What the stage joins.
    pub(super) shape: JoinShape,
    /// Columns that may be the result's key: (joined name, as written in messages).
    pub(super) candidates: &'a [(String, String)],
    /// The join key's type.
    pub(super) key_sql_type: &'a SqlType,
    /// The stage's joined rows.
    pub(super) joined_schema: &'a SchemaRef,
    /// Whether the rows are a stream's or a table's.
    pub(super) result_kind: SourceKind,
    /// The query's first source, which names the joined rows.
    pub(super) first_source: &'a DataSource,
}

/// Rewrites the query over the joined rows of the last stage, checks its key as ksqlDB does,
/// and plans its projection. Returns the key columns and the plan.
pub(super) fn plan_last_stage(
    ctx: &SessionContext,
    catalog: &Catalog,
    query: &Query,
    sides: &Sides<'_>,
    stage: LastStage<'_>,
    (sink_name, sink_kind): (&str, SourceKind),
    transient: bool,
) -> Result<(Vec<String>, StatelessPlan)> {
    let repartitioned = !query.partition_by.is_empty();
    let select = projection(query, sides, repartitioned)?;
    // Which joined columns are the key. After PARTITION BY the key is the partitioning
    // expression, not the join's.
    let key_names: Vec<String> = if repartitioned {
        Vec::new()
    } else if let Some(key) = &sides.synthetic {
        vec![key.clone()]
    } else if stage.shape == JoinShape::ForeignKey {
        stage.candidates.iter().map(|(n, _)| n.clone()).collect()
    } else {
        stage
            .candidates
            .iter()
            .map(|(n, _)| n.clone())
            .find(|n| !projects(&select, n).is_empty())
            .into_iter()
            .collect()
    };
    if !transient && !repartitioned {
        check_key_projected(&select, sides, &stage, &key_names, sink_name)?;
    }
    let columns = joined_columns(sides, &stage, &key_names)?;
    let joined_source = joined_rows_source(
        format!("{}_JOINED", stage.first_source.name),
        stage.result_kind,
        stage.first_source.topic.clone(),
        columns,
    );
    let rewritten = rewritten_query(query, sides, select, false)?;
    let post = plan_projection(
        ctx,
        catalog,
        &rewritten,
        ProjectionInput::joined(&joined_source, stage.joined_schema)?,
        (sink_name, sink_kind),
        (true, transient),
    )?;
    Ok((key_names, post))
}

/// The projection over joined rows, with each `*` expanded into the columns it lists.
fn projection(query: &Query, sides: &Sides<'_>, repartitioned: bool) -> Result<Vec<SelectItem>> {
    let mut select: Vec<SelectItem> = Vec::new();
    // `*` lists a source's keys (then a windowed source's bounds) then its other columns;
    // before a PARTITION BY, ksqlDB lists
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
            // A windowed source's window bounds come after its keys, as ksqlDB lists them.
            let bounds: &[&str] = if source.window.is_some() {
                crate::schema::WINDOW_COLUMNS
            } else {
                &[]
            };
            source
                .key_columns()
                .map(|c| c.name.clone())
                .chain(bounds.iter().map(|b| b.to_string()))
                .chain(
                    source
                        .columns
                        .iter()
                        .filter(|c| c.kind != ColumnKind::Key)
                        .map(|c| c.name.clone()),
                )
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
    Ok(select)
}

/// The names under which `select` projects the joined column `name` as it is.
fn projects(select: &[SelectItem], name: &str) -> Vec<String> {
    select
        .iter()
        .filter(|i| matches!(i, SelectItem::Expr { expr, .. } if bare_column(expr) == Some(name)))
        .filter_map(|item| match item {
            SelectItem::Expr { alias: Some(a), .. } => Some(a.value.clone()),
            SelectItem::Expr { expr, .. } => bare_column(expr).map(str::to_string),
            _ => None,
        })
        .collect()
}

/// A sink's rows must carry their key: the join expression (or the synthetic key, or every
/// key of a foreign-key join's left table), once.
fn check_key_projected(
    select: &[SelectItem],
    sides: &Sides<'_>,
    stage: &LastStage<'_>,
    key_names: &[String],
    sink_name: &str,
) -> Result<()> {
    let candidates = stage.candidates;
    if let Some(key) = &sides.synthetic
        && projects(select, key).is_empty()
    {
        return Err(EngineError::statement(format!(
            "Key missing from projection (ie, SELECT). See https://cnfl.io/2LV7ouS.\nThe query used to build `{sink_name}` must include the join expression {key} in its projection (eg, SELECT {key}...).\n{key} was added as a synthetic key column because the join criteria did not match any source column. This expression must be included in the projection and may be aliased."
        )));
    }
    if stage.shape == JoinShape::ForeignKey {
        let missing: Vec<String> = candidates
            .iter()
            .filter(|(n, _)| projects(select, n).is_empty())
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
        // As ksqlDB lists alternatives: `A, B or C`.
        let list = match written.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => written.join(""),
        };
        let noun = if written.len() > 1 {
            "expressions"
        } else {
            "expression"
        };
        return Err(EngineError::statement(format!(
            "The query used to build `{sink_name}` must include the join {noun} {list} in its projection (eg, SELECT {}...).",
            written.first().copied().unwrap_or_default()
        )));
    }
    for key in key_names {
        let mut names = projects(select, key);
        if names.len() > 1 {
            names.sort();
            return Err(EngineError::statement(format!(
                "The projection contains a key column (`{key}`) more than once, aliased as: {}.",
                names.join(" and ")
            )));
        }
    }
    Ok(())
}

/// The joined rows' columns as the projection reads them: the chosen keys (first, in the
/// order chosen), then every source's columns under their joined names.
fn joined_columns(
    sides: &Sides<'_>,
    stage: &LastStage<'_>,
    key_names: &[String],
) -> Result<Vec<Column>> {
    let mut columns: Vec<Column> = Vec::new();
    if let Some(key) = &sides.synthetic
        && key_names.contains(key)
    {
        columns.push(Column {
            name: key.clone(),
            ty: stage.key_sql_type.clone(),
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
                ty: if key && stage.shape != JoinShape::ForeignKey {
                    stage.key_sql_type.clone()
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
    for key in key_names {
        if !columns.iter().any(|c| &c.name == key) {
            columns.push(Column {
                name: key.clone(),
                ty: stage.key_sql_type.clone(),
                kind: ColumnKind::Key,
            });
        }
    }
    // Keys first, in the order chosen.
    columns.sort_by_key(|c| c.kind != ColumnKind::Key);
    Ok(columns)
}
