//! Compiling a query's expressions against what it reads: the scope that resolves column names
//! against one source (or a join's rows described as one), DataFusion physical expressions, and
//! errors at the place in the statement they refer to, as ksqlDB words them.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use eddy_sql::Position;
use eddy_sql::analysis::{Scope, to_datafusion};
use eddy_sql::ast::{Expr, ExprKind, Ident, SqlType};

use crate::catalog::{Catalog, DataSource};
use crate::error::{EngineError, Result};
use crate::query::source::SourceDecoder;

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
    /// A join's rows, described as `rows`, with the schema they are laid out in.
    pub(crate) fn joined(rows: &'a DataSource, schema: &SchemaRef) -> Result<Self> {
        Ok(ProjectionInput {
            source: rows,
            // A join's rows are JSON, which needs no registry.
            decoder: SourceDecoder::new(rows, &crate::codec::Schemas::default())?,
            schema: schema.clone(),
            alias: "",
        })
    }

    /// A source's decoded rows, qualified by the alias `from` gives it, else by its name.
    pub(crate) fn of_source(
        source: &'a DataSource,
        from: &'a eddy_sql::ast::AliasedSource,
        schemas: &crate::codec::Schemas,
    ) -> Result<Self> {
        let decoder = SourceDecoder::new(source, schemas)?;
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
            || e.message.contains("Unsupported arithmetic types")
        {
            EngineError::statement(format!("Error in {clause} expression: {}", e.message))
        } else {
            let message = eddy_sql::functions::with_alternatives(&e.message);
            located_error(e.position, format!("{predicate}{message}"))
        }
    })?;
    crate::physical::physical_expr(ctx, logical, scope.df_schema).map_err(|e| {
        let message = eddy_sql::functions::with_alternatives(&datafusion_message(&e));
        EngineError::statement(format!("{predicate}{message}"))
    })
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

/// A DataFusion type as ksqlDB names it, for messages.
pub(crate) fn type_name(ty: &DataType) -> String {
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

/// DataFusion's view of a schema, for compiling expressions over its rows.
pub(crate) fn df_schema(schema: &SchemaRef) -> Result<DFSchema> {
    DFSchema::try_from(schema.as_ref().clone()).map_err(|e| EngineError::statement(e.to_string()))
}
