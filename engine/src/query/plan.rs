//! Planning a stateless query: one source, an optional `WHERE`, a projection and an optional
//! `PARTITION BY`, checked with ksqlDB's rules and compiled to DataFusion physical expressions
//! over the batches a [`SourceDecoder`] produces.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use eddy_sql::analysis::{Scope, to_datafusion};
use eddy_sql::ast::{Expr, ExprKind, Ident, Literal, Query, SelectItem, SourceKind, SqlType};
use eddy_sql::{Position, Span};

use crate::catalog::{Catalog, DataSource};
use crate::error::{EngineError, Result};
use crate::query::source::{SourceDecoder, WINDOWEND, WINDOWSTART};
use crate::schema::{Column, ColumnKind, PSEUDO_COLUMNS, WINDOW_COLUMNS};

/// A column the query writes, and how it is computed.
#[derive(Debug, Clone)]
pub struct OutputColumn {
    /// The column, as the sink declares it.
    pub column: Column,
    /// Its value for each input row.
    pub expr: Arc<dyn PhysicalExpr>,
}

/// A planned stateless query.
#[derive(Debug, Clone)]
pub struct StatelessPlan {
    /// The source read.
    pub source: DataSource,
    /// Decodes the source's records.
    pub decoder: SourceDecoder,
    /// `WHERE`.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    /// The arrays of the table functions (`EXPLODE`), one output row per element.
    pub table_functions: Vec<Arc<dyn PhysicalExpr>>,
    /// The input schema plus one column per table function, which the projection reads.
    pub exploded_schema: SchemaRef,
    /// Key columns of the result, in order.
    pub keys: Vec<OutputColumn>,
    /// Value columns of the result, in order.
    pub values: Vec<OutputColumn>,
    /// Whether the key changed (`PARTITION BY`), so records move between partitions.
    pub repartitioned: bool,
    /// Column names in the order the projection lists them, for queries that return rows.
    pub column_order: Vec<String>,
    /// Whether stream records without their value object are skipped: push and pull queries
    /// skip them, as ksqlDB's do, while persistent queries pass their nulls on.
    pub skips_missing_values: bool,
}

impl StatelessPlan {
    /// The result's columns: keys, then values.
    pub fn columns(&self) -> Vec<Column> {
        self.keys
            .iter()
            .chain(&self.values)
            .map(|c| c.column.clone())
            .collect()
    }

    /// The execution plan as ksqlDB's `EXPLAIN` prints it: one step per line, the sink first,
    /// each with its schema and logger.
    pub fn explain(&self, query_id: &str, sink_name: &str) -> String {
        let schema = |columns: &[Column]| crate::schema::schema_text(columns, false);
        let output = schema(&self.columns());
        let input = schema(&self.source.columns);
        let mut steps = vec![
            format!("[ SINK ] | Schema: {output} | Logger: {query_id}.{sink_name}"),
            format!("[ PROJECT ] | Schema: {output} | Logger: {query_id}.Project"),
        ];
        if !self.table_functions.is_empty() {
            steps.push(format!(
                "[ FLAT_MAP ] | Schema: {input} | Logger: {query_id}.FlatMap"
            ));
        }
        if self.repartitioned {
            steps.push(format!(
                "[ REKEY ] | Schema: {input} | Logger: {query_id}.PartitionBy"
            ));
        }
        if self.filter.is_some() {
            steps.push(format!(
                "[ FILTER ] | Schema: {input} | Logger: {query_id}.WhereFilter"
            ));
        }
        steps.push(format!(
            "[ SOURCE ] | Schema: {input} | Logger: {query_id}.KsqlTopic.Source"
        ));
        explain_text(steps.into_iter().enumerate())
    }
}

/// `expr` as ksqlDB prints it in messages: every column of the source qualified by `alias`
/// (those written with the source's name too).
pub(crate) fn qualified_text(expr: &Expr, alias: &str, source_name: &str) -> String {
    expr.rewrite(&mut |x| match &x.kind {
        ExprKind::Column { source, name }
            if !alias.is_empty() && source.as_ref().is_none_or(|q| q.value == source_name) =>
        {
            Some(Expr {
                kind: ExprKind::Column {
                    source: Some(Ident::new(alias)),
                    name: name.clone(),
                },
                span: x.span,
            })
        }
        _ => None,
    })
    .to_string()
}

/// Execution-plan steps as `EXPLAIN` prints them: each on a line, indented by its depth.
pub(crate) fn explain_text(steps: impl IntoIterator<Item = (usize, String)>) -> String {
    steps
        .into_iter()
        .map(|(depth, step)| format!("{} > {step}\n", "\t\t".repeat(depth)))
        .collect()
}

/// An error at a place in the statement, written as ksqlDB writes them.
pub(crate) fn located_error(position: Position, message: impl std::fmt::Display) -> EngineError {
    EngineError::statement(format!(
        "Line: {}, Col: {}: {message}",
        position.line, position.column
    ))
}

/// Resolves column names against one source, under its name or alias.
pub(crate) struct SourceScope<'a> {
    catalog: &'a Catalog,
    source: &'a DataSource,
    alias: &'a str,
    schema: &'a SchemaRef,
    df_schema: &'a DFSchema,
}

impl Scope for SourceScope<'_> {
    fn column(
        &self,
        qualifier: Option<&str>,
        name: &str,
    ) -> Result<datafusion::prelude::Expr, String> {
        if let Some(q) = qualifier
            && q != self.alias
            && q != self.source.name
        {
            return Err(format!("'{q}' is not a valid stream/table name or alias."));
        }
        if self.schema.field_with_name(name).is_err() {
            return Err(match qualifier {
                Some(q) => format!("Column '{q}.{name}' cannot be resolved."),
                None => format!("Column '{name}' cannot be resolved."),
            });
        }
        Ok(datafusion::prelude::Expr::Column(
            datafusion::common::Column::new_unqualified(name),
        ))
    }

    fn named_type(&self, name: &str) -> Option<SqlType> {
        self.catalog.named_type(name).cloned()
    }

    fn schema(&self) -> Option<&DFSchema> {
        Some(self.df_schema)
    }
}

/// One projected item before keys and values are told apart.
struct Projected {
    name: String,
    expr: Expr,
}

/// Whether an expression is a bare reference to column `name`.
fn column_name(expr: &Expr) -> Option<&str> {
    match &expr.kind {
        ExprKind::Column { name, .. } => Some(&name.value),
        _ => None,
    }
}

/// The same expression, written the same way, ignoring where it was written.
fn same_expr(a: &Expr, b: &Expr) -> bool {
    a.to_string() == b.to_string()
}

/// Plans a query without `GROUP BY`: a join, or a stateless query over one source.
pub fn plan_select(
    ctx: &SessionContext,
    catalog: &Catalog,
    query: &Query,
    sink_name: &str,
    sink_kind: SourceKind,
    new_planner: bool,
) -> Result<crate::query::QueryPlan> {
    if query.from.joins.is_empty() {
        plan_stateless(
            ctx,
            catalog,
            query,
            sink_name,
            sink_kind,
            new_planner,
            false,
        )
        .map(crate::query::QueryPlan::Stateless)
    } else {
        crate::query::join::plan_join(ctx, catalog, query, sink_name, sink_kind, false)
            .map(|p| crate::query::QueryPlan::Join(Box::new(p)))
    }
}

/// Plans `query` as a stateless query writing a `sink_kind` called `sink_name`.
pub fn plan_stateless(
    ctx: &SessionContext,
    catalog: &Catalog,
    query: &Query,
    sink_name: &str,
    sink_kind: SourceKind,
    new_planner: bool,
    transient: bool,
) -> Result<StatelessPlan> {
    if !query.from.joins.is_empty() {
        // Joins are planned by `join::plan_join`, which calls back into the projection.
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
        ProjectionInput::of_source(source, from)?,
        (sink_name, sink_kind),
        new_planner,
        transient,
    )
}

/// What a projection reads: a source's decoded rows, or a join's joined rows.
pub(crate) struct ProjectionInput<'a> {
    /// The source, or a join's result described as one.
    pub source: &'a DataSource,
    /// Decodes its records (a join's is never called on).
    pub decoder: SourceDecoder,
    /// The schema of the rows the projection reads.
    pub schema: SchemaRef,
    /// The name qualifiers may use.
    pub alias: &'a str,
}

impl<'a> ProjectionInput<'a> {
    /// A source's decoded rows, qualified by the alias `from` gives it, else by its name.
    pub(crate) fn of_source(
        source: &'a DataSource,
        from: &'a eddy_sql::ast::AliasedSource,
    ) -> Result<Self> {
        let decoder = SourceDecoder::new(source)?;
        Ok(ProjectionInput {
            source,
            schema: decoder.schema().clone(),
            decoder,
            alias: from
                .alias
                .as_ref()
                .map_or(from.name.value.as_str(), |a| a.value.as_str()),
        })
    }
}

/// The source a `FROM` names, or ksqlDB's error at its position.
pub(crate) fn named_source<'c>(
    catalog: &'c Catalog,
    from: &eddy_sql::ast::AliasedSource,
) -> Result<&'c DataSource> {
    catalog.source(&from.name.value).ok_or_else(|| {
        located_error(
            from.span.start,
            format!("{} does not exist.", from.name.value),
        )
    })
}

/// Plans the `WHERE`, `PARTITION BY` and projection of `query` over `input`.
pub(crate) fn plan_projection(
    ctx: &SessionContext,
    catalog: &Catalog,
    query: &Query,
    input: ProjectionInput<'_>,
    (sink_name, sink_kind): (&str, SourceKind),
    new_planner: bool,
    transient: bool,
) -> Result<StatelessPlan> {
    let ProjectionInput {
        source,
        decoder,
        schema,
        alias,
    } = input;
    let df_schema = DFSchema::try_from(schema.as_ref().clone())
        .map_err(|e| EngineError::statement(e.to_string()))?;
    let scope = SourceScope {
        catalog,
        source,
        alias,
        schema: &schema,
        df_schema: &df_schema,
    };
    let compile = |expr: &Expr, clause: &str| compile_in(ctx, &scope, expr, clause);
    for by in &query.partition_by {
        compile(by, "PARTITION BY")?;
    }

    let filter = match &query.filter {
        Some(expr) => {
            let compiled = compile(expr, "WHERE")?;
            let ty = compiled
                .data_type(&schema)
                .map_err(|e| EngineError::statement(e.to_string()))?;
            if ty != DataType::Boolean && ty != DataType::Null {
                return Err(EngineError::statement(format!(
                    "Type error in WHERE expression: Should evaluate to boolean but is {expr} ({}) instead.",
                    type_name(&ty)
                )));
            }
            Some(compiled)
        }
        None => None,
    };

    // Expand the projection and name every item as ksqlDB does.
    let mut items: Vec<(Option<String>, Expr)> = Vec::new();
    let column_expr = |name: &str| Expr {
        kind: ExprKind::Column {
            source: None,
            name: eddy_sql::ast::Ident::quoted(name),
        },
        span: Span::default(),
    };
    // `*` is every column: keys first, except that after PARTITION BY the old key columns
    // follow the values, as ksqlDB orders a repartitioned row.
    let repartitioned = !query.partition_by.is_empty();
    // A query's rows show a windowed source's window bounds after its key, as ksqlDB's do.
    let window_bounds: &[&str] = if transient && source.window.is_some() {
        &[WINDOWSTART, WINDOWEND]
    } else {
        &[]
    };
    let user_columns = || -> Vec<String> {
        let (keys, rest): (Vec<&Column>, Vec<&Column>) = source
            .columns
            .iter()
            .partition(|c| c.kind == ColumnKind::Key);
        let keys = keys
            .into_iter()
            .map(|c| c.name.clone())
            .chain(window_bounds.iter().map(|b| b.to_string()));
        let rest = rest.into_iter().map(|c| c.name.clone());
        if repartitioned {
            rest.chain(keys).collect()
        } else {
            keys.chain(rest).collect()
        }
    };
    for item in &query.select {
        match item {
            SelectItem::Wildcard(_) => {
                for name in user_columns() {
                    items.push((Some(name.clone()), column_expr(&name)));
                }
            }
            SelectItem::QualifiedWildcard(q) => {
                if q.value != alias && q.value != source.name {
                    return Err(located_error(
                        q.span.start,
                        format!("'{}' is not a valid stream/table name or alias.", q.value),
                    ));
                }
                for name in user_columns() {
                    items.push((Some(name.clone()), column_expr(&name)));
                }
            }
            SelectItem::StructWildcard(base) => {
                let compiled = compile(base, "SELECT")?;
                let ty = compiled
                    .data_type(&schema)
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

    // Table functions: each EXPLODE becomes a column of the exploded batch the projection reads.
    let mut table_function_args = Vec::new();
    for p in &mut projected {
        p.expr = extract_table_functions(&p.expr, &mut table_function_args);
    }
    if !table_function_args.is_empty() && source.kind == SourceKind::Table {
        return Err(EngineError::statement(
            "Table source is not supported with table functions",
        ));
    }
    let mut table_functions = Vec::with_capacity(table_function_args.len());
    let mut exploded_fields: Vec<Field> =
        schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    for (i, arg) in table_function_args.iter().enumerate() {
        let compiled = compile(arg, "SELECT")?;
        let ty = compiled
            .data_type(&schema)
            .map_err(|e| EngineError::statement(e.to_string()))?;
        let DataType::List(element) = &ty else {
            return Err(EngineError::statement(format!(
                "Function 'explode' does not accept parameters ({}).\nValid alternatives are:\nexplode(ARRAY<T>)",
                type_name(&ty)
            )));
        };
        exploded_fields.push(Field::new(
            format!("{TABLE_FUNCTION_COLUMN}{i}"),
            element.data_type().clone(),
            true,
        ));
        table_functions.push(compiled);
    }
    let exploded_schema: SchemaRef = Arc::new(Schema::new(exploded_fields));
    let exploded_df_schema = DFSchema::try_from(exploded_schema.as_ref().clone())
        .map_err(|e| EngineError::statement(e.to_string()))?;
    let projection_scope = SourceScope {
        catalog,
        source,
        alias,
        schema: &exploded_schema,
        df_schema: &exploded_df_schema,
    };

    // Decide which projected items are the key.
    let mut key_items: Vec<Projected> = Vec::new();
    if repartitioned {
        let by_null = query.partition_by.len() == 1
            && matches!(query.partition_by[0].kind, ExprKind::Literal(Literal::Null));
        if !by_null
            && query
                .partition_by
                .iter()
                .any(|by| matches!(by.kind, ExprKind::Literal(Literal::Null)))
        {
            return Err(EngineError::statement(
                "Cannot PARTITION BY multiple columns including NULL",
            ));
        }
        let star = query.select.iter().any(|i| {
            matches!(
                i,
                SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(_)
            )
        });
        if !by_null && !transient && !new_planner && !star {
            // Every partitioning expression must be selected (`*` selects them), once.
            let qualify = |e: &Expr| qualified_text(e, alias, &source.name);
            let all: Vec<String> = query.partition_by.iter().map(qualify).collect();
            if query
                .partition_by
                .iter()
                .any(|by| !projected.iter().any(|p| same_expr(&p.expr, by)))
            {
                let missing = all;
                let (noun, list) = if missing.len() > 1 {
                    ("expressions", missing.join(" and "))
                } else {
                    ("expression", missing.join(""))
                };
                return Err(EngineError::statement(format!(
                    "The query used to build `{sink_name}` must include the partitioning {noun} {list} in its projection (eg, SELECT {}...).",
                    missing.join(", ")
                )));
            }
            for by in &query.partition_by {
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
        }
        if !by_null {
            for by in &query.partition_by {
                if let Some(i) = projected.iter().position(|p| same_expr(&p.expr, by)) {
                    key_items.push(projected.remove(i));
                } else {
                    let name = implicit_name(by).unwrap_or_else(|| generated.next());
                    if let Some(i) = projected.iter().position(|p| p.name == name) {
                        projected.remove(i);
                    }
                    key_items.push(Projected {
                        name,
                        expr: by.clone(),
                    });
                }
            }
        }
    } else {
        let source_keys: Vec<&str> = source
            .key_columns()
            .map(|c| c.name.as_str())
            .chain(window_bounds.iter().copied())
            .collect();
        let mut missing: Vec<&str> = Vec::new();
        for key in &source_keys {
            match projected
                .iter()
                .position(|p| column_name(&p.expr) == Some(key))
            {
                Some(i) => {
                    let item = projected.remove(i);
                    if !new_planner
                        && let Some(again) =
                            projected.iter().find(|p| column_name(&p.expr) == Some(key))
                    {
                        return Err(EngineError::statement(format!(
                            "The projection contains a key column (`{key}`) more than once, aliased as: {} and {}.",
                            item.name, again.name
                        )));
                    }
                    key_items.push(item);
                }
                None => missing.push(*key),
            }
        }
        // A query's rows are still keyed by the source's key (and window) when the projection
        // leaves it out, so a pull query over a table answers a row per key; the key is not
        // shown.
        if transient {
            for key in missing.drain(..) {
                key_items.push(Projected {
                    name: format!("{HIDDEN_KEY_PREFIX}{key}"),
                    expr: column_expr(key),
                });
            }
        }
        // The new planner lets a stream drop its key; the default one, and tables, do not.
        if !missing.is_empty() && (sink_kind == SourceKind::Table || !new_planner) {
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
        let order = |p: &Projected| {
            query.select.iter().position(
                |s| matches!(s, SelectItem::Expr { expr, .. } if same_expr(expr, &p.expr)),
            )
        };
        if new_planner {
            key_items.sort_by_key(order);
        }
    }
    // A sink needs a value; rows returned to a client do not.
    if projected.is_empty() && !transient {
        return Err(EngineError::statement(
            "The projection contains no value columns.",
        ));
    }
    let output = |p: &Projected, kind: ColumnKind| -> Result<OutputColumn> {
        let expr = compile_in(ctx, &projection_scope, &p.expr, "SELECT")?;
        let ty = expr
            .data_type(&exploded_schema)
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
    for p in key_items.iter().chain(&projected) {
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
    Ok(StatelessPlan {
        source: source.clone(),
        decoder,
        filter,
        table_functions,
        exploded_schema,
        keys,
        values,
        repartitioned,
        column_order,
        skips_missing_values: transient && source.value_is_object(),
    })
}

/// Compiles an expression against a scope. `clause` is where it is written (SELECT, WHERE or
/// PARTITION BY), which ksqlDB's messages name.
pub(crate) fn compile_in(
    ctx: &SessionContext,
    scope: &SourceScope<'_>,
    expr: &Expr,
    clause: &str,
) -> Result<Arc<dyn PhysicalExpr>> {
    let predicate = if clause == "WHERE" {
        "Invalid Predicate: "
    } else {
        ""
    };
    let logical = to_datafusion(expr, scope).map_err(|e| {
        if clause == "SELECT" && e.message.starts_with("Cast of") {
            located_error(e.position, format!("Invalid Select: {}", e.message))
        } else if e
            .message
            .ends_with("is not a valid stream/table name or alias.")
        {
            located_error(
                e.position,
                format!("Failed to prepare statement: {}", e.message),
            )
        } else if let Some(rest) = e.message.strip_prefix("Column '") {
            let mut message = format!("{clause} column '{rest}");
            if clause == "PARTITION BY"
                && let Some(name) = rest.split('\'').next()
            {
                message.push_str(&format!(
                    " '{name}' must be a column in the source schema since PARTITION BY is applied on the input."
                ));
            }
            located_error(e.position, message)
        } else if e.message.starts_with("Cannot compare")
            || e.message.starts_with("Comparison with NULL")
        {
            EngineError::statement(format!("Error in {clause} expression: {}", e.message))
        } else {
            located_error(e.position, format!("{predicate}{}", e.message))
        }
    })?;
    crate::physical::physical_expr(ctx, logical, scope.df_schema)
        .map_err(|e| EngineError::statement(format!("{predicate}{}", datafusion_message(&e))))
}

/// A scope over one source's decoded rows.
pub(crate) fn source_scope<'a>(
    catalog: &'a Catalog,
    source: &'a DataSource,
    alias: &'a str,
    schema: &'a SchemaRef,
    df_schema: &'a DFSchema,
) -> SourceScope<'a> {
    SourceScope {
        catalog,
        source,
        alias,
        schema,
        df_schema,
    }
}

/// Prefix of the columns that hold table-function results while projecting.
const TABLE_FUNCTION_COLUMN: &str = "__EDDY_TABLE_FUNCTION_";

/// Replaces `EXPLODE(x)` at the top of an item (or under a dereference or subscript) with a
/// column that will hold one element per output row, collecting its argument.
fn extract_table_functions(expr: &Expr, found: &mut Vec<Expr>) -> Expr {
    match &expr.kind {
        ExprKind::Function { name, args, .. }
            if name.value.eq_ignore_ascii_case("EXPLODE") && args.len() == 1 =>
        {
            let column = format!("{TABLE_FUNCTION_COLUMN}{}", found.len());
            found.push(args[0].clone());
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

/// The name ksqlDB gives an unaliased item: a column's name, a struct field's name, or none
/// (a generated `KSQL_COL_n`).
fn implicit_name(expr: &Expr) -> Option<String> {
    match &expr.kind {
        ExprKind::Column { name, .. } => Some(name.value.clone()),
        ExprKind::Dereference { field, .. } => Some(field.value.clone()),
        _ => None,
    }
}

fn is_reserved(name: &str) -> bool {
    PSEUDO_COLUMNS.contains(&name) || WINDOW_COLUMNS.contains(&name)
}

/// The name of a projected expression: its alias (which may not be reserved), else the name
/// ksqlDB derives, else none (to be generated).
pub(crate) fn select_item_name(expr: &Expr, alias: Option<&Ident>) -> Result<Option<String>> {
    match alias {
        Some(alias) if is_reserved(&alias.value) => Err(EngineError::statement(format!(
            "`{}` is a reserved column name. You cannot use it as an alias for a column.",
            alias.value
        ))),
        Some(alias) => Ok(Some(alias.value.clone())),
        None => Ok(implicit_name(expr)),
    }
}

/// The prefix of key columns a query's rows carry without showing them.
const HIDDEN_KEY_PREFIX: &str = "__EDDY_KEY_";

/// Refuses a pseudo-column or window bound selected without an alias, as ksqlDB does.
pub(crate) fn check_reserved_in_select(select: &[SelectItem]) -> Result<()> {
    for item in select {
        if let SelectItem::Expr { expr, alias: None } = item
            && let Some(name) = column_name(expr)
            && is_reserved(name)
        {
            return Err(EngineError::statement(format!(
                "Reserved column name in select: `{name}`. Please remove or alias the column."
            )));
        }
    }
    Ok(())
}

/// ksqlDB's generated column names, `KSQL_COL_n`, skipping every name the projection or the
/// source already uses.
pub(crate) struct GeneratedNames {
    taken: Vec<String>,
    next: usize,
}

impl GeneratedNames {
    /// Names for a projection over `source` whose items are named as given (or not yet).
    pub(crate) fn new(source: &DataSource, items: &[(Option<String>, Expr)]) -> Self {
        GeneratedNames {
            taken: items
                .iter()
                .filter_map(|(n, _)| n.clone())
                .chain(source.columns.iter().map(|c| c.name.clone()))
                .collect(),
            next: 0,
        }
    }

    /// The next unused name.
    pub(crate) fn next(&mut self) -> String {
        loop {
            let name = format!("KSQL_COL_{}", self.next);
            self.next += 1;
            if !self.taken.contains(&name) {
                return name;
            }
        }
    }
}

/// A DataFusion type as ksqlDB names it, for messages.
fn type_name(ty: &DataType) -> String {
    eddy_sql::types::from_arrow(ty)
        .map(|t| crate::schema::type_display(&t))
        .unwrap_or_else(|_| ty.to_string())
}

/// DataFusion's message without its error-kind prefix.
fn datafusion_message(e: &datafusion::error::DataFusionError) -> String {
    let text = e.to_string();
    for prefix in [
        "Error during planning: ",
        "Optimizer rule",
        "Execution error: ",
    ] {
        if let Some(rest) = text.strip_prefix(prefix) {
            return rest.to_string();
        }
    }
    text
}
