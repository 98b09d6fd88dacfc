//! What each part of a split query reads, runs and writes: a router, or a task of one of the
//! stages a query with several kinds of task has (see [`TaskStage`]).

use eddy_storage::Store;

use super::{SplitPart, TaskStage};
use crate::catalog::DataSource;
use crate::codec::Schemas;
use crate::error::Result;
use crate::query::QueryPlan;
use crate::query::state;

/// What a run of `part` reads and writes: its plan (a task's reads the repartition topics),
/// its state namespace, and the topic its output goes to (a router's, the repartition topic).
pub(super) fn part_layout<'a>(
    plan: &'a QueryPlan,
    part: &'a SplitPart,
    query_id: &str,
    sink: &'a DataSource,
) -> Result<(std::borrow::Cow<'a, QueryPlan>, String, &'a str)> {
    use std::borrow::Cow;
    Ok(match part {
        SplitPart::Task {
            routes,
            namespace,
            stage,
            ..
        } => {
            let plan = match stage {
                TaskStage::Aggregate { topic } => {
                    Cow::Owned(plan.regrouped(topic).ok_or_else(|| {
                        crate::error::EngineError::internal(
                            "a split join's aggregation task without an aggregation",
                        )
                    })?)
                }
                _ if routes.is_empty() => Cow::Borrowed(plan),
                _ => Cow::Owned(plan.rerouted(routes)),
            };
            let output = match stage {
                TaskStage::Regroup { topic } => topic.as_str(),
                TaskStage::ForeignRight { responses } => responses.as_str(),
                _ => sink.topic.as_str(),
            };
            (plan, namespace.clone(), output)
        }
        SplitPart::Route { topic } => (Cow::Borrowed(plan), String::new(), topic.as_str()),
        SplitPart::Whole => (
            Cow::Borrowed(plan),
            state::namespace(query_id),
            sink.topic.as_str(),
        ),
    })
}

/// The operator of a task of a split query with more than one kind of task (see
/// [`TaskStage`]): `plan` (of the query `whole`, rerouted for the task) as `stage` runs it.
pub(super) fn stage_operator<'p>(
    store: &Store,
    (whole, plan, stage): (&'p QueryPlan, &'p QueryPlan, &TaskStage),
    namespace: &str,
    (sink, coalesce, schemas): (&DataSource, bool, &Schemas),
) -> Result<Box<dyn crate::query::operator::Operator + 'p>> {
    use crate::query::aggregate::{Aggregation, TableRouter};
    use crate::query::join::{
        ForeignLeft, ForeignRight, Join, JoinTail, RegroupRouter, RegroupedAggregation,
    };
    let unexpected = || crate::error::EngineError::internal("a split task of an unknown shape");
    let whole_join = match whole {
        QueryPlan::Join(join) => Some(join),
        _ => None,
    };
    let joined = match whole_join {
        Some(join) => Some(join.joined_schema().ok_or_else(unexpected)?),
        None => None,
    };
    match (stage, plan, joined) {
        (TaskStage::Regroup { topic }, QueryPlan::Join(join), Some(rows)) => {
            let JoinTail::Aggregate(aggregation) = &join.then else {
                return Err(unexpected());
            };
            let partitions = store.partition_count(topic)?;
            let router = RegroupRouter::new(aggregation, rows, (sink, partitions, schemas))?;
            Ok(Box::new(Join::new(
                store,
                namespace,
                &join.chain,
                Box::new(router),
            )?))
        }
        (TaskStage::Regroup { topic }, QueryPlan::Aggregate(aggregation), None) => {
            let partitions = store.partition_count(topic)?;
            let router = TableRouter::new(aggregation, namespace, (sink, partitions, schemas))?;
            Ok(Box::new(router))
        }
        (TaskStage::ForeignLeft { subscriptions }, QueryPlan::Join(join), Some(_)) => {
            let (JoinTail::Project(post), [stage]) = (&join.then, join.chain.stages.as_slice())
            else {
                return Err(unexpected());
            };
            // The right table as the query names it: the task reads the responses in its place.
            let right = whole_join
                .and_then(|j| j.chain.sources.get(1))
                .ok_or_else(unexpected)?;
            let then = Box::new(crate::query::stateless::Projection::new(
                post,
                (sink, schemas),
            )?);
            Ok(Box::new(ForeignLeft::new(
                store,
                (stage, namespace),
                (right, subscriptions, schemas),
                then,
            )?))
        }
        (TaskStage::ForeignRight { responses }, QueryPlan::Join(join), Some(_)) => {
            let [stage] = join.chain.stages.as_slice() else {
                return Err(unexpected());
            };
            Ok(Box::new(ForeignRight::new(
                store,
                (stage, namespace),
                responses,
            )?))
        }
        (TaskStage::Aggregate { .. }, QueryPlan::Aggregate(aggregation), rows) => {
            let then = Aggregation::new(store, namespace, aggregation, (sink, schemas), coalesce)?;
            Ok(match rows {
                Some(rows) => Box::new(RegroupedAggregation::new(rows, then)?),
                None => Box::new(then.with_marked_changes()),
            })
        }
        _ => Err(unexpected()),
    }
}
