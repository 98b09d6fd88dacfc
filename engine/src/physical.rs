//! Compiling DataFusion logical expressions to physical ones the way DataFusion's planner does:
//! coerce types, then simplify, then plan. Some functions (`coalesce`, which `IFNULL` and
//! `COALESCE` are) exist only in their simplified form at execution.

use std::sync::Arc;

use datafusion::common::{DFSchema, Result};
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;

/// The physical form of `expr` over rows of `schema`.
pub(crate) fn physical_expr(
    ctx: &SessionContext,
    expr: Expr,
    schema: &DFSchema,
) -> Result<Arc<dyn PhysicalExpr>> {
    // `state()` would clone the whole session (every function registry) per expression.
    let config = Arc::clone(ctx.state_ref().read().config_options());
    let simplifier = ExprSimplifier::new(
        SimplifyContext::builder()
            .with_schema(Arc::new(schema.clone()))
            .with_config_options(config)
            .build(),
    );
    let coerced = simplifier.coerce(expr, schema)?;
    let simplified = simplifier.simplify(coerced)?;
    ctx.create_physical_expr(simplified, schema)
}
