//! Planning a stateless query: one source (or a join's rows), an optional `WHERE`, a projection
//! and an optional `PARTITION BY`, checked with ksqlDB's rules and compiled to DataFusion
//! physical expressions over the batches a [`SourceDecoder`] produces.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use eddy_sql::Span;
use eddy_sql::ast::{Expr, ExprKind, Literal, Query, SelectItem, SourceKind};

use crate::catalog::{Catalog, DataSource};
use crate::error::{EngineError, Result};
use crate::query::naming::{
    GeneratedNames, HIDDEN_KEY_PREFIX, check_reserved_in_select, column_name, implicit_name,
    select_item_name,
};
use crate::query::scope::{
    ProjectionInput, SourceScope, compile_in, df_schema, located_error, named_source,
    qualified_text, source_scope, type_name,
};
use crate::query::sink::OutputColumn;
use crate::query::source::{WINDOWEND, WINDOWSTART};
use crate::query::stateless::StatelessPlan;
use crate::schema::{Column, ColumnKind};

/// Prefix of the columns that hold table-function results while projecting.
const TABLE_FUNCTION_COLUMN: &str = "__EDDY_TABLE_FUNCTION_";

/// One projected item before keys and values are told apart.
struct Projected {
    name: String,
    expr: Expr,
}

/// The same expression, written the same way, ignoring where it was written.
fn same_expr(a: &Expr, b: &Expr) -> bool {
    a.to_string() == b.to_string()
}

/// A column reference by its exact name.
fn column_expr(name: &str) -> Expr {
    Expr {
        kind: ExprKind::Column {
            source: None,
            name: eddy_sql::ast::Ident::quoted(name),
        },
        span: Span::default(),
    }
}

/// Plans `query` as a stateless query writing a `sink_kind` called `sink_name`.
pub fn plan_stateless(
    ctx: &SessionContext,
    catalog: &Catalog,
    query: &Query,
    (sink_name, sink_kind): (&str, SourceKind),
    new_planner: bool,
    transient: bool,
) -> Result<StatelessPlan> {
    if !query.from.joins.is_empty() {
        // Joins are planned by `join::plan_join`, which plans its projection with this module.
        return Err(EngineError::Unsupported("JOIN here".into()));
    }
    if query.window.is_some() && query.group_by.is_empty() {
        return Err(EngineError::statement(
            "WINDOW clause requires a GROUP BY clause.",
        ));
    }
    if !query.group_by.is_empty() || query.having.is_some() {
        return Err(EngineError::Unsupported("GROUP BY".into()));
    }
    let from = &query.from.source;
    let source = named_source(catalog, from)?;
    if source.window.is_some() && source.kind == SourceKind::Table && !transient {
        return Err(EngineError::statement(
            "KSQL does not support persistent queries on windowed tables.",
        ));
    }
    plan_projection(
        ctx,
        catalog,
        query,
        ProjectionInput::of_source(source, from, &crate::codec::Schemas::of(ctx))?,
        (sink_name, sink_kind),
        (new_planner, transient),
    )
}

/// What the phases of planning a projection share: the query, what it reads and writes, and
/// which of ksqlDB's rules apply.
struct Planning<'q> {
    ctx: &'q SessionContext,
    catalog: &'q Catalog,
    query: &'q Query,
    source: &'q DataSource,
    alias: &'q str,
    sink: (&'q str, SourceKind),
    /// The planner of `ksql.new.query.planner.enabled`, which lets a stream drop its key.
    new_planner: bool,
    /// A push or pull query, whose rows go to a client rather than into a sink.
    transient: bool,
    /// `PARTITION BY` re-keys the rows.
    repartitioned: bool,
}

/// Plans the `WHERE`, `PARTITION BY` and projection of `query` over `input`. `modes` are the
/// new planner's rules and whether the query is transient.
pub(crate) fn plan_projection(
    ctx: &SessionContext,
    catalog: &Catalog,
    query: &Query,
    input: ProjectionInput<'_>,
    sink: (&str, SourceKind),
    (new_planner, transient): (bool, bool),
) -> Result<StatelessPlan> {
    let ProjectionInput {
        source,
        decoder,
        schema,
        alias,
    } = input;
    let planning = Planning {
        ctx,
        catalog,
        query,
        source,
        alias,
        sink,
        new_planner,
        transient,
        repartitioned: !query.partition_by.is_empty(),
    };
    let df_schema = df_schema(&schema)?;
    let scope = source_scope(catalog, source, alias, &schema, &df_schema);
    for by in &query.partition_by {
        compile_in(ctx, &scope, by, "PARTITION BY")?;
    }
    let filter = planning.filter(&scope, &schema)?;
    let items = planning.items(&scope, &schema)?;
    if !transient {
        check_reserved_in_select(&query.select)?;
    }
    let mut generated = GeneratedNames::new(source, &items);
    let mut projected: Vec<Projected> = items
        .into_iter()
        .map(|(name, expr)| Projected {
            name: name.unwrap_or_else(|| generated.next()),
            expr,
        })
        .collect();
    let column_order: Vec<String> = projected.iter().map(|p| p.name.clone()).collect();
    let (table_functions, exploded_schema) =
        planning.table_functions(&scope, &schema, &mut projected)?;
    let key_items = if planning.repartitioned {
        planning.partition_keys(&mut projected, &mut generated)?
    } else {
        planning.source_keys(&mut projected)?
    };
    // A sink needs a value; rows returned to a client do not.
    if projected.is_empty() && !transient {
        return Err(EngineError::statement(
            "The projection contains no value columns.",
        ));
    }
    let (keys, values) = planning.outputs(&exploded_schema, &key_items, &projected)?;
    Ok(StatelessPlan {
        source: source.clone(),
        decoder,
        filter,
        table_functions,
        exploded_schema,
        keys,
        values,
        repartitioned: planning.repartitioned,
        column_order,
        skips_missing_values: transient && source.value_is_object(),
    })
}

impl Planning<'_> {
    /// `WHERE`, which must be a condition.
    fn filter(
        &self,
        scope: &SourceScope<'_>,
        schema: &SchemaRef,
    ) -> Result<Option<Arc<dyn PhysicalExpr>>> {
        let Some(expr) = &self.query.filter else {
            return Ok(None);
        };
        let compiled = compile_in(self.ctx, scope, expr, "WHERE")?;
        let ty = compiled
            .data_type(schema)
            .map_err(|e| EngineError::statement(e.to_string()))?;
        if ty != DataType::Boolean && ty != DataType::Null {
            return Err(EngineError::statement(format!(
                "Type error in WHERE expression: Should evaluate to boolean but is {} ({}) instead.",
                eddy_sql::display::ksql_text(expr),
                type_name(&ty)
            )));
        }
        Ok(Some(compiled))
    }

    /// The source's columns as `*` lists them: keys first, except that after PARTITION BY
    /// the old key columns follow the values, as ksqlDB orders a repartitioned row. A query's
    /// rows show a windowed source's window bounds after its key.
    fn user_columns(&self) -> Vec<String> {
        let (keys, rest): (Vec<&Column>, Vec<&Column>) = self
            .source
            .columns
            .iter()
            .partition(|c| c.kind == ColumnKind::Key);
        let keys = keys
            .into_iter()
            .map(|c| c.name.clone())
            .chain(self.window_bounds().iter().map(|b| b.to_string()));
        let rest = rest.into_iter().map(|c| c.name.clone());
        if self.repartitioned {
            rest.chain(keys).collect()
        } else {
            keys.chain(rest).collect()
        }
    }

    /// The window bounds a transient query's rows show after a windowed source's key.
    fn window_bounds(&self) -> &'static [&'static str] {
        if self.transient && self.source.window.is_some() {
            &[WINDOWSTART, WINDOWEND]
        } else {
            &[]
        }
    }

    /// The projection with every `*` expanded, each item named as ksqlDB names it (or not yet).
    fn items(
        &self,
        scope: &SourceScope<'_>,
        schema: &SchemaRef,
    ) -> Result<Vec<(Option<String>, Expr)>> {
        let mut items: Vec<(Option<String>, Expr)> = Vec::new();
        for item in &self.query.select {
            match item {
                SelectItem::Wildcard(_) => {
                    for name in self.user_columns() {
                        items.push((Some(name.clone()), column_expr(&name)));
                    }
                }
                SelectItem::QualifiedWildcard(q) => {
                    if q.value != self.alias && q.value != self.source.name {
                        return Err(located_error(
                            q.span.start,
                            format!("'{}' is not a valid stream/table name or alias.", q.value),
                        ));
                    }
                    for name in self.user_columns() {
                        items.push((Some(name.clone()), column_expr(&name)));
                    }
                }
                SelectItem::StructWildcard(base) => {
                    let compiled = compile_in(self.ctx, scope, base, "SELECT")?;
                    let ty = compiled
                        .data_type(schema)
                        .map_err(|e| EngineError::statement(e.to_string()))?;
                    let DataType::Struct(fields) = ty else {
                        return Err(EngineError::statement(format!(
                            "Expected STRUCT type for {base}->*, but got {}",
                            type_name(&ty)
                        )));
                    };
                    for field in fields.iter() {
                        items.push((
                            Some(field.name().clone()),
                            Expr {
                                kind: ExprKind::Dereference {
                                    base: Box::new(base.clone()),
                                    field: eddy_sql::ast::Ident::quoted(field.name()),
                                },
                                span: base.span,
                            },
                        ));
                    }
                }
                SelectItem::Expr { expr, alias } => {
                    items.push((select_item_name(expr, alias.as_ref())?, expr.clone()));
                }
            }
        }
        Ok(items)
    }

    /// Table functions: each `EXPLODE` becomes a column of the exploded batch the projection
    /// reads. Returns their arrays and the schema of the exploded rows.
    fn table_functions(
        &self,
        scope: &SourceScope<'_>,
        schema: &SchemaRef,
        projected: &mut [Projected],
    ) -> Result<(Vec<Arc<dyn PhysicalExpr>>, SchemaRef)> {
        let mut args = Vec::new();
        for p in projected.iter_mut() {
            p.expr = extract_table_functions(&p.expr, &mut args);
        }
        if !args.is_empty() && self.source.kind == SourceKind::Table {
            return Err(EngineError::statement(
                "Table source is not supported with table functions",
            ));
        }
        let mut table_functions = Vec::with_capacity(args.len());
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        for (i, arg) in args.iter().enumerate() {
            let compiled = compile_in(self.ctx, scope, arg, "SELECT")?;
            let ty = compiled
                .data_type(schema)
                .map_err(|e| EngineError::statement(e.to_string()))?;
            let DataType::List(element) = &ty else {
                return Err(EngineError::statement(
                    eddy_sql::functions::with_alternatives(&format!(
                        "Function 'explode' does not accept parameters ({}).",
                        type_name(&ty)
                    )),
                ));
            };
            fields.push(Field::new(
                format!("{TABLE_FUNCTION_COLUMN}{i}"),
                element.data_type().clone(),
                true,
            ));
            table_functions.push(compiled);
        }
        Ok((table_functions, Arc::new(Schema::new(fields))))
    }

    /// After `PARTITION BY`, the key is the partitioning expressions: projected items that
    /// are one (taken out of `projected`), else new columns.
    fn partition_keys(
        &self,
        projected: &mut Vec<Projected>,
        generated: &mut GeneratedNames,
    ) -> Result<Vec<Projected>> {
        let partition_by = &self.query.partition_by;
        let is_null = |by: &Expr| matches!(by.kind, ExprKind::Literal(Literal::Null));
        let by_null = partition_by.len() == 1 && is_null(&partition_by[0]);
        if !by_null && partition_by.iter().any(is_null) {
            return Err(EngineError::statement(
                "Cannot PARTITION BY multiple columns including NULL",
            ));
        }
        if by_null {
            return Ok(Vec::new());
        }
        let star = self.query.select.iter().any(|i| {
            matches!(
                i,
                SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(_)
            )
        });
        if !self.transient && !self.new_planner && !star {
            self.check_partitioning_selected(projected)?;
        }
        let mut keys = Vec::with_capacity(partition_by.len());
        for by in partition_by {
            if let Some(i) = projected.iter().position(|p| same_expr(&p.expr, by)) {
                keys.push(projected.remove(i));
            } else {
                let name = implicit_name(by).unwrap_or_else(|| generated.next());
                if let Some(i) = projected.iter().position(|p| p.name == name) {
                    projected.remove(i);
                }
                keys.push(Projected {
                    name,
                    expr: by.clone(),
                });
            }
        }
        Ok(keys)
    }

    /// Every partitioning expression must be selected (`*` selects them), once.
    fn check_partitioning_selected(&self, projected: &[Projected]) -> Result<()> {
        let partition_by = &self.query.partition_by;
        let qualify = |e: &Expr| qualified_text(e, self.alias, &self.source.name);
        if partition_by
            .iter()
            .any(|by| !projected.iter().any(|p| same_expr(&p.expr, by)))
        {
            let missing: Vec<String> = partition_by.iter().map(qualify).collect();
            let (noun, list) = if missing.len() > 1 {
                ("expressions", missing.join(" and "))
            } else {
                ("expression", missing.join(""))
            };
            return Err(EngineError::statement(format!(
                "The query used to build `{}` must include the partitioning {noun} {list} in its projection (eg, SELECT {}...).",
                self.sink.0,
                missing.join(", ")
            )));
        }
        for by in partition_by {
            let mut names: Vec<&str> = projected
                .iter()
                .filter(|p| same_expr(&p.expr, by))
                .map(|p| p.name.as_str())
                .collect();
            if names.len() > 1 {
                names.sort();
                return Err(EngineError::statement(format!(
                    "The projection contains a key column (`{}`) more than once, aliased as: {}.",
                    implicit_name(by).unwrap_or_else(|| by.to_string()),
                    names.join(" and ")
                )));
            }
        }
        Ok(())
    }

    /// Without `PARTITION BY`, the key is the source's key (and a windowed source's window
    /// for a transient query): the items that select it, taken out of `projected`.
    fn source_keys(&self, projected: &mut Vec<Projected>) -> Result<Vec<Projected>> {
        let source_keys: Vec<&str> = self
            .source
            .key_columns()
            .map(|c| c.name.as_str())
            .chain(self.window_bounds().iter().copied())
            .collect();
        let mut keys: Vec<Projected> = Vec::new();
        let mut missing: Vec<&str> = Vec::new();
        for key in &source_keys {
            let Some(i) = projected
                .iter()
                .position(|p| column_name(&p.expr) == Some(key))
            else {
                missing.push(*key);
                continue;
            };
            let item = projected.remove(i);
            if !self.new_planner
                && let Some(again) = projected.iter().find(|p| column_name(&p.expr) == Some(key))
            {
                return Err(EngineError::statement(format!(
                    "The projection contains a key column (`{key}`) more than once, aliased as: {} and {}.",
                    item.name, again.name
                )));
            }
            keys.push(item);
        }
        // A query's rows are still keyed by the source's key (and window) when the projection
        // leaves it out, so a pull query over a table answers a row per key; the key is not
        // shown.
        if self.transient {
            for key in missing.drain(..) {
                keys.push(Projected {
                    name: format!("{HIDDEN_KEY_PREFIX}{key}"),
                    expr: column_expr(key),
                });
            }
        }
        // The new planner lets a stream drop its key; the default one, and tables, do not.
        let (sink_name, sink_kind) = self.sink;
        if !missing.is_empty() && (sink_kind == SourceKind::Table || !self.new_planner) {
            // ksqlDB names every key column, not only those missing.
            let all: Vec<&str> = self.source.key_columns().map(|c| c.name.as_str()).collect();
            if !all.is_empty() {
                missing = all;
            }
            let (noun, names) = match missing.split_last() {
                Some((last, [])) => ("key column", last.to_string()),
                Some((last, rest)) => ("key columns", format!("{} and {last}", rest.join(", "))),
                None => ("key column", String::new()),
            };
            return Err(EngineError::statement(format!(
                "The query used to build `{sink_name}` must include the {noun} {names} in its projection (eg, SELECT {}...).",
                missing.join(", ")
            )));
        }
        // Keys keep the order the projection gives them.
        if self.new_planner {
            let order = |p: &Projected| {
                self.query.select.iter().position(
                    |s| matches!(s, SelectItem::Expr { expr, .. } if same_expr(expr, &p.expr)),
                )
            };
            keys.sort_by_key(order);
        }
        Ok(keys)
    }

    /// The key and value columns, compiled over the exploded rows, with ksqlDB's checks on
    /// their names and types.
    fn outputs(
        &self,
        exploded_schema: &SchemaRef,
        key_items: &[Projected],
        projected: &[Projected],
    ) -> Result<(Vec<OutputColumn>, Vec<OutputColumn>)> {
        let exploded_df_schema = df_schema(exploded_schema)?;
        let scope = source_scope(
            self.catalog,
            self.source,
            self.alias,
            exploded_schema,
            &exploded_df_schema,
        );
        let output = |p: &Projected, kind: ColumnKind| -> Result<OutputColumn> {
            let expr = compile_in(self.ctx, &scope, &p.expr, "SELECT")?;
            let ty = expr
                .data_type(exploded_schema)
                .map_err(|e| EngineError::statement(e.to_string()))?;
            if ty == DataType::Null {
                return Err(EngineError::statement(format!(
                    "Can't infer a type of null. Please explicitly cast it to a required type, e.g. CAST(null AS VARCHAR). Column: {}",
                    p.name
                )));
            }
            let sql_type = eddy_sql::types::from_arrow(&ty).map_err(|e| {
                EngineError::statement(format!(
                    "Column {} has a type ksqlDB cannot store: {e}",
                    p.name
                ))
            })?;
            Ok(OutputColumn {
                column: Column {
                    name: p.name.clone(),
                    ty: sql_type,
                    kind,
                },
                expr,
            })
        };
        let mut seen: Vec<&str> = Vec::new();
        for p in key_items.iter().chain(projected) {
            if seen.contains(&p.name.as_str()) {
                let ty = output(p, ColumnKind::Value)
                    .map(|o| format!(" {}", crate::schema::type_display(&o.column.ty)))
                    .unwrap_or_default();
                return Err(EngineError::statement(format!(
                    "Duplicate value columns found in schema: `{}`{ty}",
                    p.name
                )));
            }
            seen.push(&p.name);
        }
        let keys = key_items
            .iter()
            .map(|p| output(p, ColumnKind::Key))
            .collect::<Result<Vec<_>>>()?;
        let values = projected
            .iter()
            .map(|p| output(p, ColumnKind::Value))
            .collect::<Result<Vec<_>>>()?;
        Ok((keys, values))
    }
}

/// Replaces a table function at the top of an item (or under a dereference or subscript) with
/// a column that will hold one element per output row, collecting the array it explodes:
/// `EXPLODE(x)`'s argument, or the list of combinations `CUBE_EXPLODE(x)` gives as a scalar.
#[recursive::recursive]
fn extract_table_functions(expr: &Expr, found: &mut Vec<Expr>) -> Expr {
    match &expr.kind {
        ExprKind::Function { name, args, .. }
            if eddy_sql::functions::is_table_function(&name.value) && args.len() == 1 =>
        {
            let column = format!("{TABLE_FUNCTION_COLUMN}{}", found.len());
            if name.value.eq_ignore_ascii_case("EXPLODE") {
                found.push(args[0].clone());
            } else {
                found.push(expr.clone());
            }
            Expr {
                kind: ExprKind::Column {
                    source: None,
                    name: eddy_sql::ast::Ident::quoted(&column),
                },
                span: expr.span,
            }
        }
        ExprKind::Dereference { base, field } => Expr {
            kind: ExprKind::Dereference {
                base: Box::new(extract_table_functions(base, found)),
                field: field.clone(),
            },
            span: expr.span,
        },
        ExprKind::Subscript { base, index } => Expr {
            kind: ExprKind::Subscript {
                base: Box::new(extract_table_functions(base, found)),
                index: index.clone(),
            },
            span: expr.span,
        },
        _ => expr.clone(),
    }
}
