//! Which planner a query goes to: joins to [`crate::query::join`], which plans what follows
//! them with the projection or aggregation planners; everything else straight to those.

use datafusion::prelude::SessionContext;
use eddy_sql::ast::{Query, SourceKind};

use crate::catalog::Catalog;
use crate::error::Result;
use crate::query::QueryPlan;
use crate::query::aggregate::plan_aggregate;
use crate::query::join::{plan_join, plan_join_aggregate};
use crate::query::stateless::plan_stateless;

/// Plans a query without `GROUP BY` into a `sink_kind` called `sink_name`: a join, or a
/// stateless query over one source. `new_planner` applies the rules of ksqlDB's
/// `ksql.new.query.planner.enabled`.
pub fn plan_select(
    ctx: &SessionContext,
    catalog: &Catalog,
    query: &Query,
    sink: (&str, SourceKind),
    new_planner: bool,
) -> Result<QueryPlan> {
    plan_projected(ctx, catalog, query, sink, (new_planner, false))
}

/// Plans a push or pull query without `GROUP BY`: a join, or a stateless query over one
/// source, whose rows go to a client.
pub fn plan_transient_select(
    ctx: &SessionContext,
    catalog: &Catalog,
    query: &Query,
    sink_name: &str,
) -> Result<QueryPlan> {
    plan_projected(
        ctx,
        catalog,
        query,
        (sink_name, SourceKind::Stream),
        (true, true),
    )
}

/// A join followed by a projection, or a stateless query over one source.
fn plan_projected(
    ctx: &SessionContext,
    catalog: &Catalog,
    query: &Query,
    sink: (&str, SourceKind),
    (new_planner, transient): (bool, bool),
) -> Result<QueryPlan> {
    if query.from.joins.is_empty() {
        plan_stateless(ctx, catalog, query, sink, new_planner, transient).map(QueryPlan::Stateless)
    } else {
        plan_join(ctx, catalog, query, sink, transient).map(|p| QueryPlan::Join(Box::new(p)))
    }
}

/// Plans an aggregation into a table called `sink_name`: of a join's rows, or of one source.
/// A `transient` (push) query may leave its groups out of its projection.
pub fn plan_aggregation(
    ctx: &SessionContext,
    catalog: &Catalog,
    query: &Query,
    sink_name: &str,
    transient: bool,
) -> Result<QueryPlan> {
    if query.from.joins.is_empty() {
        plan_aggregate(ctx, catalog, query, sink_name, transient).map(QueryPlan::Aggregate)
    } else {
        plan_join_aggregate(ctx, catalog, query, sink_name).map(|p| QueryPlan::Join(Box::new(p)))
    }
}
