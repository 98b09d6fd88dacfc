//! From the AST to DataFusion expressions: the analysis layer that planning builds on.
//!
//! Columns are resolved through a [`Scope`] the caller provides (the engine knows the sources);
//! literals get ksqlDB's types (`1` is INT, `1.50` is DECIMAL(3, 2), `1.5E0` is DOUBLE).

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::expr::{Between, Case, Cast, InList, Like};
use datafusion::logical_expr::{BinaryExpr, Expr, ExprSchemable, Operator, lit};
use thiserror::Error;

use crate::ast::{self, BinaryOp, ExprKind, Literal, SqlType, UnaryOp};
use crate::span::Position;

/// An expression that cannot be turned into a DataFusion expression.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct AnalysisError {
    /// What is wrong, in ksqlDB's words where it has them.
    pub message: String,
    /// Where the offending expression starts.
    pub position: Position,
}

impl AnalysisError {
    fn at(message: impl Into<String>, expr: &ast::Expr) -> Self {
        AnalysisError {
            message: message.into(),
            position: expr.span.start,
        }
    }
}

/// Resolves names while translating expressions.
pub trait Scope {
    /// The expression for column `name`, qualified by `source` when given.
    fn column(&self, source: Option<&str>, name: &str) -> Result<Expr, String>;

    /// A type registered with `CREATE TYPE`.
    fn named_type(&self, _name: &str) -> Option<SqlType> {
        None
    }

    /// The schema columns resolve against, when known; with it, comparisons are type-checked
    /// with ksqlDB's rules.
    fn schema(&self) -> Option<&DFSchema> {
        None
    }
}

/// Checks `LEAST`/`GREATEST` arguments as ksqlDB resolves its overloads (one per type, all
/// arguments of that type): numbers of different kinds only meet at DOUBLE, a text literal
/// next to a DATE, TIME or TIMESTAMP is read as one, and anything else is refused with
/// ksqlDB's message. Returns the arguments, with those text literals cast.
fn least_or_greatest_args(
    expr: &ast::Expr,
    name: &str,
    args: Vec<Expr>,
    scope: &dyn Scope,
) -> Result<Vec<Expr>, AnalysisError> {
    let name = name.to_ascii_lowercase();
    let Some(schema) = scope.schema() else {
        return Ok(args);
    };
    let types = args
        .iter()
        .map(|a| a.get_type(schema))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| AnalysisError::at(e.to_string(), expr))?;
    let shown = |types: &[DataType]| {
        types
            .iter()
            .map(|t| match t {
                DataType::Null => "null".to_string(),
                t => crate::types::from_arrow(t)
                    .map(|t| crate::types::type_display(&t))
                    .unwrap_or_else(|_| t.to_string()),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let refused = || {
        AnalysisError::at(
            format!(
                "Function '{name}' does not accept parameters ({}).",
                shown(&types)
            ),
            expr,
        )
    };
    let ambiguous = || {
        AnalysisError::at(
            format!(
                "Function '{name}' cannot be resolved due to ambiguous method parameters ({}).",
                shown(&types)
            ),
            expr,
        )
    };
    if args.is_empty() {
        return Err(refused());
    }
    let known: Vec<&DataType> = types.iter().filter(|t| **t != DataType::Null).collect();
    let Some(first) = known.first() else {
        return Err(ambiguous());
    };
    let temporal = known.iter().find(|t| {
        matches!(
            t,
            DataType::Date32 | DataType::Time32(_) | DataType::Timestamp(..)
        )
    });
    if let Some(temporal) = temporal {
        let temporal = (*temporal).clone();
        if known
            .iter()
            .any(|t| **t != temporal && **t != DataType::Utf8)
        {
            return Err(refused());
        }
        return Ok(args
            .into_iter()
            .zip(&types)
            .map(|(a, t)| match t {
                DataType::Utf8 => Expr::Cast(Cast::new(Box::new(a), temporal.clone())),
                _ => a,
            })
            .collect());
    }
    let numeric = |t: &DataType| t.is_numeric();
    if known.iter().all(|t| numeric(t)) {
        let same = known.iter().all(|t| t == first);
        let decimals = known.iter().all(|t| matches!(t, DataType::Decimal128(..)));
        let double = known.iter().any(|t| **t == DataType::Float64);
        if !(same || decimals || double) {
            return Err(ambiguous());
        }
        return Ok(args);
    }
    if known.iter().any(|t| numeric(t)) || known.iter().any(|t| *t != *first) {
        return Err(refused());
    }
    Ok(args)
}

fn is_null_literal(expr: &ast::Expr) -> bool {
    matches!(expr.kind, ExprKind::Literal(Literal::Null))
}

/// The elements of an `ARRAY[...]` (or a `MAP`'s keys, or its values), with literals read as
/// the type of the first element that is neither a literal text nor `NULL`, as ksqlDB types a
/// constructor: `ARRAY[1, '2']` is an array of INT, `ARRAY[1, 'x']` fails as `'x'` is no INT.
fn constructor_items(
    items: Vec<&ast::Expr>,
    scope: &dyn Scope,
) -> Result<Vec<Expr>, AnalysisError> {
    let translated = items
        .iter()
        .map(|e| to_datafusion(e, scope))
        .collect::<Result<Vec<_>, _>>()?;
    let Some(schema) = scope.schema() else {
        return Ok(translated);
    };
    let typed = items.iter().zip(&translated).find(|(e, _)| {
        !matches!(
            e.kind,
            ExprKind::Literal(Literal::Null) | ExprKind::Literal(Literal::String(_))
        )
    });
    let Some(mut target) = typed.and_then(|(_, t)| t.get_type(schema).ok()) else {
        return Ok(translated);
    };
    // A numeric list is as wide as every number in it, a number in text by its own digits
    // (`ARRAY[10, '2e1', b]` with b a BIGINT is an ARRAY<DECIMAL(19, 0)>).
    if target.is_numeric() {
        let types: Option<Vec<DataType>> = items
            .iter()
            .zip(&translated)
            .map(|(item, done)| match &item.kind {
                ExprKind::Literal(Literal::String(text)) => {
                    Some(crate::coercion::numeric_literal_type(text).unwrap_or(target.clone()))
                }
                _ => done.get_type(schema).ok(),
            })
            .collect();
        if let Some(widest) = types.and_then(|t| crate::coercion::widest_numeric(&t)) {
            target = widest;
        }
    }
    let translate = |e: &ast::Expr| to_datafusion(e, scope).map_err(|e| e.message);
    items
        .iter()
        .zip(translated)
        .map(|(item, done)| {
            let ExprKind::Literal(literal) = &item.kind else {
                // Every element has the list's type, so the constructor needs no coercion.
                return if target.is_numeric() {
                    done.cast_to(&target, schema)
                        .map_err(|e| AnalysisError::at(e.to_string(), item))
                } else {
                    Ok(done)
                };
            };
            if matches!(literal, Literal::Null) {
                return Ok(done);
            }
            match crate::coercion::coerce_literal(item, &target, schema, &translate) {
                Some(coerced) => coerced
                    .and_then(|c| c.cast_to(&target, schema).map_err(|e| e.to_string()))
                    .map_err(|message| AnalysisError::at(message, item)),
                None => Ok(done),
            }
        })
        .collect()
}

/// The scope of a lambda's body: its parameters, then the scope around it (whose columns the
/// body may capture).
struct LambdaScope<'a> {
    outer: &'a dyn Scope,
    params: Vec<(String, datafusion::arrow::datatypes::FieldRef)>,
}

impl Scope for LambdaScope<'_> {
    fn column(&self, source: Option<&str>, name: &str) -> Result<Expr, String> {
        if source.is_none()
            && let Some((param, field)) = self.params.iter().find(|(p, _)| p == name)
        {
            return Ok(Expr::LambdaVariable(
                datafusion::logical_expr::expr::LambdaVariable::new(
                    param.clone(),
                    Some(field.clone()),
                ),
            ));
        }
        self.outer.column(source, name)
    }

    fn named_type(&self, name: &str) -> Option<SqlType> {
        self.outer.named_type(name)
    }

    fn schema(&self) -> Option<&DFSchema> {
        self.outer.schema()
    }
}

/// A call of `TRANSFORM`, `FILTER` or `REDUCE` with lambdas: the value arguments are planned
/// first, since they give the lambdas' parameter types, then each lambda's body in a scope
/// where its parameters are variables.
fn lambda_call(
    expr: &ast::Expr,
    name: &ast::Ident,
    args: &[ast::Expr],
    scope: &dyn Scope,
) -> Result<Expr, AnalysisError> {
    use datafusion::logical_expr::{LambdaParametersProgress, ValueOrLambda};
    let upper = name.value.to_ascii_uppercase();
    let Some(function) = crate::functions::lambdas::higher_order_function(&upper) else {
        return Err(AnalysisError::at(
            format!("Function '{upper}' does not take lambdas"),
            expr,
        ));
    };
    let Some(schema) = scope.schema() else {
        return Err(AnalysisError::at(
            format!("Function '{upper}' needs the columns of a source"),
            expr,
        ));
    };
    let planning_error = |e: datafusion::error::DataFusionError| {
        let message = e.to_string();
        let message = message
            .strip_prefix("Error during planning: ")
            .unwrap_or(&message)
            .to_string();
        AnalysisError::at(message, expr)
    };
    let mut values = Vec::with_capacity(args.len());
    let mut fields = Vec::with_capacity(args.len());
    for arg in args {
        if let ExprKind::Lambda { .. } = arg.kind {
            values.push(None);
            fields.push(ValueOrLambda::Lambda(None));
        } else {
            let value = to_datafusion(arg, scope)?;
            let field = value.to_field(schema).map_err(planning_error)?.1;
            values.push(Some(value));
            fields.push(ValueOrLambda::Value(field));
        }
    }
    let params = match function
        .lambda_parameters(0, &fields)
        .map_err(planning_error)?
    {
        LambdaParametersProgress::Complete(params) => params,
        LambdaParametersProgress::Partial(_) => {
            return Err(AnalysisError::at(
                format!("Function '{upper}': the lambdas' parameter types are unknown"),
                expr,
            ));
        }
    };
    let mut lambda_params = params.into_iter();
    let mut planned = Vec::with_capacity(args.len());
    for (arg, value) in args.iter().zip(values) {
        match (value, &arg.kind) {
            (Some(value), _) => planned.push(value),
            (None, ExprKind::Lambda { params, body }) => {
                let Some(types) = lambda_params.next() else {
                    return Err(AnalysisError::at(
                        format!("Function '{upper}' takes fewer lambdas"),
                        arg,
                    ));
                };
                if params.len() != types.len() {
                    return Err(AnalysisError::at(
                        format!(
                            "The lambda of {upper} takes {} parameter(s) here, not {}",
                            types.len(),
                            params.len()
                        ),
                        arg,
                    ));
                }
                let inner = LambdaScope {
                    outer: scope,
                    params: params.iter().map(|p| p.value.clone()).zip(types).collect(),
                };
                let body = to_datafusion(body, &inner)?;
                planned.push(Expr::Lambda(datafusion::logical_expr::expr::Lambda::new(
                    params.iter().map(|p| p.value.clone()).collect(),
                    body,
                )));
            }
            (None, _) => {
                return Err(AnalysisError::at("a lambda was expected here", arg));
            }
        }
    }
    Ok(Expr::HigherOrderFunction(
        datafusion::logical_expr::expr::HigherOrderFunction::new(function, planned),
    ))
}

/// A scope with no columns, for `INSERT ... VALUES` and other constant expressions.
pub struct ConstantScope;

impl Scope for ConstantScope {
    fn column(&self, source: Option<&str>, name: &str) -> Result<Expr, String> {
        Err(match source {
            Some(source) => format!("'{source}' is not a valid stream/table name or alias."),
            None => format!("Column name `{name}` does not exist."),
        })
    }
}

/// The DataFusion value of a literal, typed as ksqlDB types it.
pub fn literal_value(literal: &Literal) -> Result<ScalarValue, String> {
    Ok(match literal {
        Literal::Null => ScalarValue::Null,
        Literal::Boolean(b) => ScalarValue::Boolean(Some(*b)),
        Literal::Integer(n) => match i32::try_from(*n) {
            Ok(v) => ScalarValue::Int32(Some(v)),
            Err(_) => ScalarValue::Int64(Some(*n)),
        },
        Literal::Decimal(text) => decimal_value(text)?,
        Literal::Double(text) => ScalarValue::Float64(Some(
            text.parse()
                .map_err(|_| format!("Invalid DOUBLE literal: {text}"))?,
        )),
        Literal::String(s) => ScalarValue::Utf8(Some(s.clone())),
        Literal::Bytes(hex) => ScalarValue::Binary(Some(decode_hex(hex)?)),
    })
}

/// `1.50` as DECIMAL(3, 2): precision is every digit, scale the digits after the point.
fn decimal_value(text: &str) -> Result<ScalarValue, String> {
    let negative = text.starts_with('-');
    let digits = text.trim_start_matches(['-', '+']);
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let whole = whole.trim_start_matches('0');
    let all: String = format!("{whole}{fraction}");
    let scale = fraction.len();
    let precision = all.trim_start_matches('0').len().max(scale).max(1);
    if precision > 38 {
        return Err(format!("DECIMAL literal {text} has more than 38 digits"));
    }
    let mut value: i128 = if all.is_empty() {
        0
    } else {
        all.parse()
            .map_err(|_| format!("Invalid DECIMAL literal: {text}"))?
    };
    if negative {
        value = -value;
    }
    Ok(ScalarValue::Decimal128(
        Some(value),
        precision as u8,
        scale as i8,
    ))
}

fn decode_hex(hex: &str) -> Result<Vec<u8>, String> {
    if !hex.len().is_multiple_of(2) {
        return Err(format!("X'{hex}' has an odd number of hex digits"));
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&hex[i..i + 2], 16)
                .map_err(|_| format!("X'{hex}' is not hexadecimal"))
        })
        .collect()
}

fn operator(op: BinaryOp) -> Operator {
    match op {
        BinaryOp::Or => Operator::Or,
        BinaryOp::And => Operator::And,
        BinaryOp::Eq => Operator::Eq,
        BinaryOp::NotEq => Operator::NotEq,
        BinaryOp::Lt => Operator::Lt,
        BinaryOp::LtEq => Operator::LtEq,
        BinaryOp::Gt => Operator::Gt,
        BinaryOp::GtEq => Operator::GtEq,
        BinaryOp::Concat => Operator::StringConcat,
        BinaryOp::Plus => Operator::Plus,
        BinaryOp::Minus => Operator::Minus,
        BinaryOp::Multiply => Operator::Multiply,
        BinaryOp::Divide => Operator::Divide,
        BinaryOp::Modulo => Operator::Modulo,
    }
}

/// The Arrow type of a SQL type, resolving named types through the scope.
pub fn arrow_type(ty: &SqlType, scope: &dyn Scope) -> Result<DataType, String> {
    let resolved =
        crate::types::resolve(ty, &|name| scope.named_type(name)).map_err(|e| e.to_string())?;
    crate::types::to_arrow(&resolved).map_err(|e| e.to_string())
}

/// A binary expression as ksqlDB's messages write it: a NULL literal in lower case.
/// Whether ksqlDB does arithmetic `op` on these types: numbers with numbers, `+` on two
/// strings, and the time arithmetic DataFusion knows (a date or time and an interval).
fn arithmetic_types(op: BinaryOp, left: &DataType, right: &DataType) -> bool {
    let number = |t: &DataType| t.is_numeric() || *t == DataType::Null;
    let text =
        |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    let opaque = |t: &DataType| {
        matches!(
            t,
            DataType::Boolean
                | DataType::Binary
                | DataType::List(_)
                | DataType::Map(..)
                | DataType::Struct(_)
        )
    };
    (number(left) && number(right))
        || (op == BinaryOp::Plus && text(left) && text(right))
        || !(opaque(left) || opaque(right) || text(left) != text(right))
}

fn written_with_null(left: &ast::Expr, op: BinaryOp, right: &ast::Expr) -> String {
    let side = |e: &ast::Expr| match e.kind {
        ExprKind::Literal(Literal::Null) => "null".to_string(),
        _ => e.to_string(),
    };
    format!("{} {} {}", side(left), op.symbol(), side(right))
}

/// A string compared with `ROWTIME`, `WINDOWSTART` or `WINDOWEND` is a timestamp, as in ksqlDB:
/// `ROWTIME > '2018-01-01T00:00:00'`. Returns the milliseconds for `other` when that applies.
fn magic_timestamp(column: &ast::Expr, other: &ast::Expr) -> Result<Option<i64>, AnalysisError> {
    let ExprKind::Column { name, .. } = &column.kind else {
        return Ok(None);
    };
    if !matches!(name.value.as_str(), "ROWTIME" | "WINDOWSTART" | "WINDOWEND") {
        return Ok(None);
    }
    let ExprKind::Literal(Literal::String(text)) = &other.kind else {
        return Ok(None);
    };
    crate::functions::time::parse_partial_iso(text)
        .map(Some)
        .map_err(|m| AnalysisError::at(m, other))
}

/// Translates an expression.
#[recursive::recursive]
pub fn to_datafusion(expr: &ast::Expr, scope: &dyn Scope) -> Result<Expr, AnalysisError> {
    let sub = |e: &ast::Expr| to_datafusion(e, scope).map(Box::new);
    Ok(match &expr.kind {
        ExprKind::Literal(literal) => {
            lit(literal_value(literal).map_err(|m| AnalysisError::at(m, expr))?)
        }
        ExprKind::Column { source, name } => scope
            .column(source.as_ref().map(|s| s.value.as_str()), &name.value)
            .map_err(|m| AnalysisError::at(m, expr))?,
        ExprKind::Unary { op, expr: inner } => match op {
            UnaryOp::Plus => to_datafusion(inner, scope)?,
            UnaryOp::Minus => Expr::Negative(sub(inner)?),
            UnaryOp::Not => Expr::Not(sub(inner)?),
        },
        ExprKind::Binary { left, op, right } => binary(expr, (left, *op, right), scope)?,
        ExprKind::IsNull {
            expr: inner,
            negated,
        } => {
            if *negated {
                Expr::IsNotNull(sub(inner)?)
            } else {
                Expr::IsNull(sub(inner)?)
            }
        }
        ExprKind::IsDistinctFrom {
            left,
            negated,
            right,
        } => Expr::BinaryExpr(BinaryExpr::new(
            sub(left)?,
            if *negated {
                Operator::IsNotDistinctFrom
            } else {
                Operator::IsDistinctFrom
            },
            sub(right)?,
        )),
        ExprKind::Between {
            expr: inner,
            negated,
            low,
            high,
        } => {
            let bound = |b: &ast::Expr| -> Result<Box<Expr>, AnalysisError> {
                match magic_timestamp(inner, b)? {
                    Some(ms) => Ok(Box::new(lit(ms))),
                    None => sub(b),
                }
            };
            let value = sub(inner)?;
            let (low_bound, high_bound) = (bound(low)?, bound(high)?);
            // ksqlDB types BETWEEN as its two comparisons, and says so when a bound cannot be
            // compared with the value.
            if let Some(schema) = scope.schema() {
                for (op, (b, bound)) in [
                    (BinaryOp::GtEq, (low, &low_bound)),
                    (BinaryOp::LtEq, (high, &high_bound)),
                ] {
                    crate::coercion::check_comparison(op, (inner, &value), (b, bound), schema)
                        .map_err(|m| AnalysisError::at(m, expr))?;
                }
            }
            Expr::Between(Between::new(value, *negated, low_bound, high_bound))
        }
        ExprKind::InList {
            expr: inner,
            negated,
            list,
        } => in_list((inner, *negated, list), scope)?,
        ExprKind::Like {
            expr: inner,
            negated,
            pattern,
            escape,
        } => like(expr, (inner, *negated, pattern, escape.as_deref()), scope)?,
        ExprKind::Case {
            operand,
            branches,
            otherwise,
        } if branches
            .iter()
            .map(|(_, then)| then)
            .chain(otherwise.as_deref())
            .all(|result| matches!(result.kind, ExprKind::Literal(Literal::Null))) =>
        {
            // Nothing gives the result a type, as ksqlDB's type checker says.
            return Err(AnalysisError::at(
                "Invalid Case expression. All case branches have NULL type",
                expr,
            ));
        }
        ExprKind::Case {
            operand,
            branches,
            otherwise,
        } => Expr::Case(Case::new(
            operand.as_deref().map(sub).transpose()?,
            branches
                .iter()
                .map(|(w, t)| Ok((sub(w)?, sub(t)?)))
                .collect::<Result<_, AnalysisError>>()?,
            otherwise.as_deref().map(sub).transpose()?,
        )),
        ExprKind::Cast { expr: inner, ty } => cast(expr, inner, ty, scope)?,
        ExprKind::Array(items) => array(expr, items, scope)?,
        ExprKind::Map(entries) => map(expr, entries, scope)?,
        ExprKind::Struct(fields) => structure(expr, fields, scope)?,
        ExprKind::Dereference { base, field } => datafusion::functions::core::expr_fn::get_field(
            to_datafusion(base, scope)?,
            field.value.clone(),
        ),
        ExprKind::Subscript { base, index } => subscript(base, index, scope)?,
        ExprKind::Function { name, args, .. }
            if args
                .iter()
                .any(|a| matches!(a.kind, ExprKind::Lambda { .. })) =>
        {
            lambda_call(expr, name, args, scope)?
        }
        ExprKind::Function { name, args, .. } => function_call(expr, name, args, scope)?,
        ExprKind::Lambda { .. } => {
            return Err(AnalysisError::at(
                "Lambdas are only allowed as arguments of functions that take them",
                expr,
            ));
        }
        ExprKind::AtTimeZone { .. } => {
            return Err(AnalysisError::at("AT TIME ZONE is not supported yet", expr));
        }
    })
}

/// A binary operation: arithmetic on an untyped NULL is refused as ksqlDB refuses it,
/// comparisons are type-checked (and a text timestamp compared with a timestamp is read as
/// one), and `+` of two strings joins them.
fn binary(
    expr: &ast::Expr,
    (left, op, right): (&ast::Expr, BinaryOp, &ast::Expr),
    scope: &dyn Scope,
) -> Result<Expr, AnalysisError> {
    let sub = |e: &ast::Expr| to_datafusion(e, scope).map(Box::new);
    let (mut l, mut r) = (sub(left)?, sub(right)?);
    let is_null = |e: &ast::Expr| matches!(e.kind, ExprKind::Literal(Literal::Null));
    if op.is_arithmetic() && (is_null(left) || is_null(right)) {
        // ksqlDB cannot type arithmetic on an untyped NULL, and says so.
        let type_of = |e: &ast::Expr, d: &Expr| -> String {
            if is_null(e) {
                return "null".to_string();
            }
            scope
                .schema()
                .and_then(|schema| d.get_type(schema).ok())
                .and_then(|t| crate::types::from_arrow(&t).ok())
                .map(|t| crate::types::type_display(&t))
                .unwrap_or_else(|| "unknown".to_string())
        };
        return Err(AnalysisError::at(
            format!(
                "Error processing expression: ({}). Arithmetic on types {} and {} are not supported.",
                written_with_null(left, op, right),
                type_of(left, &l),
                type_of(right, &r)
            ),
            expr,
        ));
    }
    if op.is_arithmetic()
        && let Some(schema) = scope.schema()
        && let (Ok(lt), Ok(rt)) = (l.get_type(schema), r.get_type(schema))
        && !arithmetic_types(op, &lt, &rt)
    {
        let base = |t: &DataType| {
            crate::types::from_arrow(t)
                .map(|t| crate::types::type_base_name(&t).to_string())
                .unwrap_or_else(|_| t.to_string())
        };
        return Err(AnalysisError::at(
            format!(
                "Error processing expression: ({}). Unsupported arithmetic types. {} {}",
                written_with_null(left, op, right),
                base(&lt),
                base(&rt)
            ),
            expr,
        ));
    }
    if op.is_comparison() {
        if let Some(ms) = magic_timestamp(left, right)? {
            r = Box::new(lit(ms));
        }
        if let Some(ms) = magic_timestamp(right, left)? {
            l = Box::new(lit(ms));
        }
    }
    if let Some(schema) = scope.schema()
        && op.is_comparison()
    {
        let statement = written_with_null(left, op, right);
        crate::coercion::check_comparison(op, (left, &l), (right, &r), schema)
            .map_err(|m| AnalysisError::at(format!("{m}\nStatement: ({statement})"), expr))?;
    }
    // `+` joins strings in ksqlDB.
    let mut operator = operator(op);
    if op == BinaryOp::Plus
        && let Some(schema) = scope.schema()
        && matches!(l.get_type(schema), Ok(DataType::Utf8))
        && matches!(r.get_type(schema), Ok(DataType::Utf8))
    {
        operator = Operator::StringConcat;
    }
    let result = Expr::BinaryExpr(BinaryExpr::new(l, operator, r));
    if op.is_comparison() {
        // ksqlDB's comparisons are false, not null, when either side is null: `NOT (a > b)`
        // holds for a null `a`, and a compared column in a projection is `false`.
        return Ok(datafusion::functions::core::expr_fn::coalesce(vec![
            result,
            lit(false),
        ]));
    }
    Ok(result)
}

/// `x [NOT] IN (...)`: each element coerced to the tested value's type as ksqlDB does; an
/// element that can never be equal is left out.
fn in_list(
    (inner, negated, list): (&ast::Expr, bool, &[ast::Expr]),
    scope: &dyn Scope,
) -> Result<Expr, AnalysisError> {
    let sub = |e: &ast::Expr| to_datafusion(e, scope).map(Box::new);
    let tested = sub(inner)?;
    let target = scope
        .schema()
        .and_then(|schema| tested.get_type(schema).ok().map(|t| (schema, t)));
    // The list's common type, as ksqlDB's errors name it: the tested value and the numbers in
    // the list widened together (a DECIMAL(4, 2) beside an INT is a DECIMAL(12, 2)). Only an
    // error needs it.
    let common = |schema: &DFSchema, t: &DataType| {
        if !t.is_numeric() {
            return t.clone();
        }
        let mut types = vec![t.clone()];
        for element in list {
            if matches!(element.kind, ExprKind::Literal(Literal::String(_))) {
                continue;
            }
            if let Ok(item) = to_datafusion(element, scope)
                && let Ok(ty) = item.get_type(schema)
                && ty.is_numeric()
            {
                types.push(ty);
            }
        }
        crate::coercion::widest_numeric(&types).unwrap_or_else(|| t.clone())
    };
    let mut items = Vec::with_capacity(list.len());
    for element in list {
        let Some((schema, target)) = &target else {
            items.push(to_datafusion(element, scope)?);
            continue;
        };
        let translate = |e: &ast::Expr| to_datafusion(e, scope).map_err(|err| err.message);
        if crate::coercion::never_equal(element, target) {
            continue;
        }
        let item = match crate::coercion::coerce_literal(element, target, schema, &translate) {
            Some(coerced) => coerced.map_err(|m| AnalysisError::at(m, element))?,
            None => to_datafusion(element, scope)?,
        };
        if crate::coercion::check_in_element(target, element, &item, schema).is_err() {
            let refused =
                crate::coercion::check_in_element(&common(schema, target), element, &item, schema);
            refused.map_err(|m| AnalysisError::at(m, element))?;
        }
        items.push(item);
    }
    Ok(if items.is_empty() {
        // Nothing in the list can equal the value.
        lit(ScalarValue::Boolean(Some(negated)))
    } else {
        Expr::InList(InList::new(tested, items, negated))
    })
}

/// `x [NOT] LIKE pattern [ESCAPE 'c']`.
fn like(
    expr: &ast::Expr,
    (inner, negated, pattern, escape): (&ast::Expr, bool, &ast::Expr, Option<&str>),
    scope: &dyn Scope,
) -> Result<Expr, AnalysisError> {
    let sub = |e: &ast::Expr| to_datafusion(e, scope).map(Box::new);
    let escape_char = match escape.map(|e| e.chars().collect::<Vec<_>>()) {
        None => None,
        Some(chars) if chars.len() == 1 => Some(chars[0]),
        Some(_) => {
            return Err(AnalysisError::at(
                "The ESCAPE clause takes exactly one character",
                expr,
            ));
        }
    };
    let (value, pattern_expr) = (sub(inner)?, sub(pattern)?);
    // LIKE matches text against a text pattern; anything else is refused here, in SQL's types,
    // rather than by DataFusion in Arrow's.
    if let Some(schema) = scope.schema() {
        let text = |e: &Expr| {
            matches!(
                e.get_type(schema),
                Ok(DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null)
            )
        };
        if !text(&value) || !text(&pattern_expr) {
            let shown = |a: &ast::Expr, e: &Expr| {
                let ty = e
                    .get_type(schema)
                    .map(|t| crate::coercion::type_name(&t))
                    .unwrap_or_else(|_| "unknown".into());
                format!("{a} ({ty})")
            };
            return Err(AnalysisError::at(
                format!(
                    "Cannot use LIKE on {} with pattern {}: LIKE matches a STRING against a STRING pattern.",
                    shown(inner, &value),
                    shown(pattern, &pattern_expr)
                ),
                expr,
            ));
        }
    }
    Ok(Expr::Like(Like::new(
        negated,
        value,
        pattern_expr,
        escape_char,
        false,
    )))
}

/// `CAST(x AS type)`, refused where ksqlDB cannot cast.
fn cast(
    expr: &ast::Expr,
    inner: &ast::Expr,
    ty: &ast::SqlType,
    scope: &dyn Scope,
) -> Result<Expr, AnalysisError> {
    let sub = |e: &ast::Expr| to_datafusion(e, scope).map(Box::new);
    let data_type = arrow_type(ty, scope).map_err(|m| AnalysisError::at(m, expr))?;
    let value = sub(inner)?;
    if let Some(schema) = scope.schema()
        && let Ok(from) = value.get_type(schema)
        && !crate::coercion::castable(&from, &data_type)
    {
        return Err(AnalysisError::at(
            format!(
                "Cast of {} to {} is not supported",
                crate::coercion::type_name(&from),
                crate::coercion::type_name(&data_type)
            ),
            expr,
        ));
    }
    if let Some(schema) = scope.schema()
        && let Ok(from) = value.get_type(schema)
        && crate::functions::cast::needs_ksql_cast(&from, &data_type)
        && let Some(udf) = crate::functions::scalar_function("KSQL_CAST")
        && let Ok(target) = ScalarValue::try_from(&data_type)
    {
        return Ok(Expr::ScalarFunction(
            datafusion::logical_expr::expr::ScalarFunction::new_udf(udf, vec![*value, lit(target)]),
        ));
    }
    Ok(Expr::Cast(Cast::new(value, data_type)))
}

/// `ARRAY[...]`, its elements typed as ksqlDB types them.
fn array(expr: &ast::Expr, items: &[ast::Expr], scope: &dyn Scope) -> Result<Expr, AnalysisError> {
    const ISSUE: &str = "(see https://github.com/confluentinc/ksql/issues/4239)";
    // Where the value goes to a column (`INSERT ... VALUES`, no source schema), the
    // column's type types an empty or all-NULL constructor; in a query nothing does.
    let untyped = scope.schema().is_some();
    if untyped && items.is_empty() {
        return Err(AnalysisError::at(
            format!(
                "Array constructor cannot be empty. Please supply at least one element {ISSUE}."
            ),
            expr,
        ));
    }
    if untyped && items.iter().all(is_null_literal) {
        return Err(AnalysisError::at(
            format!(
                "Cannot construct an array with all NULL elements {ISSUE}. As a workaround, you may cast a NULL value to the desired type."
            ),
            expr,
        ));
    }
    Ok(datafusion::functions_nested::expr_fn::make_array(
        constructor_items(items.iter().collect(), scope)?,
    ))
}

/// `MAP(k := v, ...)`, its keys and values typed as ksqlDB types them.
#[recursive::recursive]
fn map(
    expr: &ast::Expr,
    entries: &[(ast::Expr, ast::Expr)],
    scope: &dyn Scope,
) -> Result<Expr, AnalysisError> {
    let untyped = scope.schema().is_some();
    if untyped && entries.is_empty() {
        return Err(AnalysisError::at(
            "Map constructor cannot be empty. Please supply at least one key value pair (see https://github.com/confluentinc/ksql/issues/4239).",
            expr,
        ));
    }
    if untyped && entries.iter().all(|(k, _)| is_null_literal(k)) {
        return Err(AnalysisError::at(
            "Cannot construct a map with all NULL keys",
            expr,
        ));
    }
    if untyped && entries.iter().all(|(_, v)| is_null_literal(v)) {
        return Err(AnalysisError::at(
            "Cannot construct a map with all NULL values",
            expr,
        ));
    }
    let keys = constructor_items(entries.iter().map(|(k, _)| k).collect(), scope)?;
    let values = constructor_items(entries.iter().map(|(_, v)| v).collect(), scope)?;
    Ok(datafusion::functions_nested::map::map(keys, values))
}

/// `STRUCT(name := value, ...)`, its field names unique.
fn structure(
    expr: &ast::Expr,
    fields: &[(ast::Ident, ast::Expr)],
    scope: &dyn Scope,
) -> Result<Expr, AnalysisError> {
    if fields.is_empty() {
        // `STRUCT()`: a struct of no fields, which a cast to a struct type fills with nulls.
        let empty = datafusion::arrow::array::StructArray::new_empty_fields(1, None);
        return Ok(lit(datafusion::common::ScalarValue::Struct(
            std::sync::Arc::new(empty),
        )));
    }
    let mut args = Vec::with_capacity(fields.len() * 2);
    for (i, (name, _)) in fields.iter().enumerate() {
        if fields[..i]
            .iter()
            .any(|(other, _)| other.value == name.value)
        {
            return Err(AnalysisError::at(
                format!("Duplicate field names found in STRUCT: '{}'", name.value),
                expr,
            ));
        }
    }
    for (name, value) in fields {
        args.push(lit(name.value.clone()));
        args.push(to_datafusion(value, scope)?);
    }
    Ok(datafusion::functions::core::named_struct().call(args))
}

/// `base[index]`: an array element (from 1), or a map's value for a key (null when missing).
fn subscript(
    base: &ast::Expr,
    index: &ast::Expr,
    scope: &dyn Scope,
) -> Result<Expr, AnalysisError> {
    let base_expr = to_datafusion(base, scope)?;
    let index_expr = to_datafusion(index, scope)?;
    let is_map = scope
        .schema()
        .is_some_and(|schema| matches!(base_expr.get_type(schema), Ok(DataType::Map(..))));
    Ok(if is_map {
        // A missing key is null, as in ksqlDB.
        datafusion::functions_nested::expr_fn::array_element(
            datafusion::functions_nested::expr_fn::map_extract(base_expr, index_expr),
            lit(1i64),
        )
    } else {
        datafusion::functions_nested::expr_fn::array_element(base_expr, index_expr)
    })
}

/// A call of a scalar function by ksqlDB's name; a time unit word as its first argument is
/// read as the unit, not as a column.
fn function_call(
    expr: &ast::Expr,
    name: &ast::Ident,
    args: &[ast::Expr],
    scope: &dyn Scope,
) -> Result<Expr, AnalysisError> {
    let Some(udf) = crate::functions::scalar_function(&name.value) else {
        return Err(AnalysisError::at(
            format!(
                "Can't find any functions with the name '{}'",
                name.value.to_ascii_uppercase()
            ),
            expr,
        ));
    };
    let takes_unit = crate::functions::takes_time_unit(&name.value);
    let args = args
        .iter()
        .enumerate()
        .map(|(i, a)| {
            // `TIMESTAMPADD(MILLISECONDS, n, t)`: the unit is a word, not a column.
            if i == 0
                && takes_unit
                && let ExprKind::Column { source: None, name } = &a.kind
                && !name.quoted
                && let Some(unit) = crate::functions::time_unit(&name.value)
            {
                return Ok(Expr::Literal(
                    ScalarValue::Utf8(Some(unit.to_string())),
                    None,
                ));
            }
            to_datafusion(a, scope)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let args = if matches!(
        name.value.to_ascii_uppercase().as_str(),
        "LEAST" | "GREATEST"
    ) {
        least_or_greatest_args(expr, &name.value, args, scope)?
    } else {
        args
    };
    Ok(Expr::ScalarFunction(
        datafusion::logical_expr::expr::ScalarFunction::new_udf(udf, args),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decimal(text: &str) -> ScalarValue {
        decimal_value(text).unwrap()
    }

    #[test]
    fn decimal_literals_take_their_precision_and_scale_from_the_text() {
        assert_eq!(decimal("1.50"), ScalarValue::Decimal128(Some(150), 3, 2));
        assert_eq!(decimal("-0.05"), ScalarValue::Decimal128(Some(-5), 2, 2));
        assert_eq!(decimal("0.00"), ScalarValue::Decimal128(Some(0), 2, 2));
        assert_eq!(decimal("12."), ScalarValue::Decimal128(Some(12), 2, 0));
    }

    #[test]
    fn literals_get_ksqldb_types() {
        assert_eq!(
            literal_value(&Literal::Integer(7)).unwrap(),
            ScalarValue::Int32(Some(7))
        );
        assert_eq!(
            literal_value(&Literal::Integer(1 << 40)).unwrap(),
            ScalarValue::Int64(Some(1 << 40))
        );
        assert_eq!(
            literal_value(&Literal::Bytes("0aff".into())).unwrap(),
            ScalarValue::Binary(Some(vec![10, 255]))
        );
        assert!(literal_value(&Literal::Bytes("0g".into())).is_err());
    }

    #[test]
    fn column_references_go_through_the_scope() {
        let expr = crate::parse_expression("foo.bar + 1").unwrap();
        let err = to_datafusion(&expr, &ConstantScope).unwrap_err();
        assert_eq!(
            err.message,
            "'FOO' is not a valid stream/table name or alias."
        );
        assert_eq!(err.position.column, 1);
    }
}
