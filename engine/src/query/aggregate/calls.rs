//! Resolving an aggregation's calls: each `SUM(x)` of the projection or `HAVING` becomes a
//! DataFusion aggregate function with compiled arguments, typed as ksqlDB types it.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, FieldRef, SchemaRef};
use datafusion::prelude::SessionContext;
use eddy_sql::Span;
use eddy_sql::ast::{Expr, ExprKind, Literal, SqlType};
use eddy_sql::functions::aggregates::aggregate_call;

use super::AggregateCall;
use crate::error::{EngineError, Result};
use crate::query::scope::{SourceScope, compile_in};

/// Prefix of the aggregated rows' columns that hold the calls' results.
pub(super) const AGGREGATE_COLUMN: &str = "__EDDY_AGGREGATE_";

/// A call as the query writes it: the function's upper-case name, its arguments, whether it
/// is `COUNT(*)`, and where it is.
pub(super) type WrittenCall = (String, Vec<Expr>, bool, Span);

/// The type ksqlDB stores a value of `ty` as, or an error naming `what`.
pub(super) fn sql_type(ty: &DataType, what: &str) -> Result<SqlType> {
    eddy_sql::types::from_arrow(ty)
        .map_err(|e| EngineError::statement(format!("{what} has a type ksqlDB cannot store: {e}")))
}

/// Each call compiled over rows of `schema`, with the field of the aggregated rows that holds
/// its result. `over_table` when the rows are a table's changes.
pub(super) fn plan_calls(
    ctx: &SessionContext,
    (scope, schema): (&SourceScope<'_>, &SchemaRef),
    calls: &[WrittenCall],
    over_table: bool,
) -> Result<(Vec<AggregateCall>, Vec<Field>)> {
    let mut aggregates = Vec::with_capacity(calls.len());
    let mut fields = Vec::with_capacity(calls.len());
    for (i, (name, args, star, _)) in calls.iter().enumerate() {
        let Some(function) = aggregate_call(name, args.len(), over_table) else {
            continue;
        };
        check_constants(name, args)?;
        // COUNT(*) and COUNT() count rows.
        let args: Vec<Expr> = if args.is_empty() || *star {
            vec![Expr {
                kind: ExprKind::Literal(Literal::Integer(1)),
                span: Span::default(),
            }]
        } else {
            args.clone()
        };
        // SUM_LIST(x) sums each row's array, then those sums, as ksqlDB's ListSumUdaf adds
        // every non-null element: SUM over KSQL_LIST_SUM(x), keeping the element type.
        let (name, args) = if name == "SUM_LIST" {
            let summed = Expr {
                kind: ExprKind::Function {
                    name: eddy_sql::ast::Ident::new("KSQL_LIST_SUM"),
                    args,
                    star: false,
                },
                span: Span::default(),
            };
            ("SUM".to_string(), vec![summed])
        } else {
            (name.clone(), args)
        };
        let name = &name;
        let mut compiled = args
            .iter()
            .map(|a| compile_in(ctx, scope, a, "SELECT"))
            .collect::<Result<Vec<_>>>()?;
        widen_first_argument(name, &mut compiled, schema)?;
        let arg_fields = compiled
            .iter()
            .enumerate()
            .map(|(k, c)| {
                c.data_type(schema)
                    .map(|t| Arc::new(Field::new(format!("arg{k}"), t, true)))
                    .map_err(|e| EngineError::statement(e.to_string()))
            })
            .collect::<Result<Vec<FieldRef>>>()?;
        let return_field = function.udf.return_field(&arg_fields).map_err(|_| {
            EngineError::statement(eddy_sql::functions::with_alternatives(&format!(
                "Function '{}' does not accept parameters ({}).",
                name.to_ascii_lowercase(),
                arg_fields
                    .iter()
                    .map(|f| crate::schema::type_display(
                        &sql_type(f.data_type(), name).unwrap_or(SqlType::String)
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        })?;
        // ksqlDB keeps the input type for SUM of integers and decimals.
        let original = args
            .first()
            .map(|a| compile_in(ctx, scope, a, "SELECT"))
            .transpose()?
            .map(|c| c.data_type(schema))
            .transpose()
            .map_err(|e| EngineError::statement(e.to_string()))?;
        let result_type = match (name.as_str(), original.as_ref()) {
            ("SUM", Some(t @ (DataType::Int32 | DataType::Int64 | DataType::Decimal128(..)))) => {
                t.clone()
            }
            _ => return_field.data_type().clone(),
        };
        fields.push(Field::new(
            format!("{AGGREGATE_COLUMN}{i}"),
            result_type.clone(),
            true,
        ));
        aggregates.push(AggregateCall {
            name: name.clone(),
            function: function.udf,
            args: compiled,
            arg_fields,
            distinct: function.distinct,
            ignore_nulls: function.ignore_nulls,
            return_field,
            result_type,
            limit: None,
        });
    }
    Ok((aggregates, fields))
}

/// Counts and flags after the value are constants, as ksqlDB requires.
fn check_constants(name: &str, args: &[Expr]) -> Result<()> {
    if !matches!(
        name,
        "LATEST_BY_OFFSET" | "EARLIEST_BY_OFFSET" | "TOPK" | "TOPKDISTINCT"
    ) {
        return Ok(());
    }
    let first_constant = if name.starts_with("TOPK") {
        args.len().saturating_sub(1)
    } else {
        1.min(args.len())
    };
    for (n, arg) in args.iter().enumerate().skip(first_constant) {
        if !matches!(arg.kind, ExprKind::Literal(_)) {
            return Err(EngineError::statement(format!(
                "Parameter {} passed to function {name} must be a literal constant, but was expression: '{arg}'",
                n + 1
            )));
        }
    }
    Ok(())
}

/// DataFusion sums and averages 64-bit values; ksqlDB's planner widens the same way.
fn widen_first_argument(
    name: &str,
    compiled: &mut [Arc<dyn datafusion::physical_expr::PhysicalExpr>],
    schema: &SchemaRef,
) -> Result<()> {
    let widens = matches!(
        name,
        "SUM" | "AVG" | "STDDEV_SAMP" | "STDDEV_SAMPLE" | "STDDEV_POP" | "VAR_SAMP" | "VARIANCE"
    );
    let Some(first) = compiled.first().cloned().filter(|_| widens) else {
        return Ok(());
    };
    let ty = first
        .data_type(schema)
        .map_err(|e| EngineError::statement(e.to_string()))?;
    let widened = match ty {
        DataType::Int8 | DataType::Int16 | DataType::Int32 if name == "SUM" => {
            Some(DataType::Int64)
        }
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 if name != "SUM" => {
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
    Ok(())
}

/// Aggregating a table undoes a row's old value when it changes, which not every function
/// can do; ksqlDB refuses some even where an accumulator could. Windowed aggregation of a
/// table is not supported either.
pub(super) fn check_table_aggregation(
    aggregates: &[AggregateCall],
    schema: &SchemaRef,
    windowed: bool,
) -> Result<()> {
    let mut cannot: Vec<String> = Vec::new();
    for call in aggregates {
        let refused = matches!(
            call.name.as_str(),
            "MIN" | "MAX" | "LATEST_BY_OFFSET" | "EARLIEST_BY_OFFSET"
        );
        let retracts = !refused
            && call
                .make_accumulator(schema, true)
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
    if windowed {
        return Err(EngineError::Unsupported(
            "Windowed aggregation of a table".into(),
        ));
    }
    Ok(())
}
