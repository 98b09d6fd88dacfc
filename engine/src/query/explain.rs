//! `EXPLAIN`: a query's execution plan as ksqlDB prints it, one step per line from the sink
//! down to the sources, each with its schema and logger.

use crate::query::QueryPlan;
use crate::query::aggregate::AggregatePlan;
use crate::query::join::{JoinPlan, JoinShape, JoinSide, JoinTail};
use crate::query::stateless::StatelessPlan;
use crate::schema::Column;

impl QueryPlan {
    /// The execution plan, as `EXPLAIN` prints it.
    pub fn explain(&self, query_id: &str, sink_name: &str) -> String {
        match self {
            QueryPlan::Stateless(p) => stateless(p, query_id, sink_name),
            QueryPlan::Aggregate(p) => aggregate(p, query_id, sink_name),
            QueryPlan::Join(p) => match &p.then {
                JoinTail::Project(post) => join(p, post, query_id, sink_name),
                // As ksqlDB's plan of an aggregation, whatever it reads.
                JoinTail::Aggregate(a) => aggregate(a, query_id, sink_name),
            },
        }
    }
}

/// Execution-plan steps as `EXPLAIN` prints them: each on a line, indented by its depth.
fn explain_text(steps: impl IntoIterator<Item = (usize, String)>) -> String {
    steps
        .into_iter()
        .map(|(depth, step)| format!("{} > {step}\n", "\t\t".repeat(depth)))
        .collect()
}

/// Columns as a step's schema.
fn schema(columns: &[Column]) -> String {
    crate::schema::schema_text(columns, false)
}

/// A stateless query's plan.
fn stateless(plan: &StatelessPlan, query_id: &str, sink_name: &str) -> String {
    let output = schema(&plan.columns());
    let input = schema(&plan.source.columns);
    let mut steps = vec![
        format!("[ SINK ] | Schema: {output} | Logger: {query_id}.{sink_name}"),
        format!("[ PROJECT ] | Schema: {output} | Logger: {query_id}.Project"),
    ];
    if !plan.table_functions.is_empty() {
        steps.push(format!(
            "[ FLAT_MAP ] | Schema: {input} | Logger: {query_id}.FlatMap"
        ));
    }
    if plan.repartitioned {
        steps.push(format!(
            "[ REKEY ] | Schema: {input} | Logger: {query_id}.PartitionBy"
        ));
    }
    if plan.filter.is_some() {
        steps.push(format!(
            "[ FILTER ] | Schema: {input} | Logger: {query_id}.WhereFilter"
        ));
    }
    steps.push(format!(
        "[ SOURCE ] | Schema: {input} | Logger: {query_id}.KsqlTopic.Source"
    ));
    explain_text(steps.into_iter().enumerate())
}

/// An aggregation's plan.
fn aggregate(plan: &AggregatePlan, query_id: &str, sink_name: &str) -> String {
    let mut steps = vec![
        format!("[ SINK ] | Logger: {query_id}.{sink_name}"),
        format!("[ PROJECT ] | Logger: {query_id}.Aggregate.Project"),
    ];
    if plan.having.is_some() {
        steps.push(format!(
            "[ FILTER ] | Logger: {query_id}.Aggregate.HavingFilter"
        ));
    }
    steps.push(match &plan.window {
        Some((w, _)) => {
            format!("[ AGGREGATE ] | Window: {w:?} | Logger: {query_id}.Aggregate.Aggregate")
        }
        None => format!("[ AGGREGATE ] | Logger: {query_id}.Aggregate.Aggregate"),
    });
    steps.push(format!(
        "[ GROUP_BY ] | Logger: {query_id}.Aggregate.GroupBy"
    ));
    if plan.filter.is_some() {
        steps.push(format!("[ FILTER ] | Logger: {query_id}.WhereFilter"));
    }
    steps.push(format!("[ SOURCE ] | Logger: {query_id}.KsqlTopic.Source"));
    explain_text(steps.into_iter().enumerate())
}

/// A join's plan, projected: its stages from the last down, each over its sources.
fn join(plan: &JoinPlan, post: &StatelessPlan, query_id: &str, sink_name: &str) -> String {
    let output = schema(&post.columns());
    let joined = schema(&post.source.columns);
    let mut steps = vec![
        (
            0,
            format!("[ SINK ] | Schema: {output} | Logger: {query_id}.{sink_name}"),
        ),
        (
            1,
            format!("[ PROJECT ] | Schema: {output} | Logger: {query_id}.Project"),
        ),
    ];
    let mut depth = 2;
    if post.filter.is_some() {
        steps.push((
            depth,
            format!("[ FILTER ] | Schema: {joined} | Logger: {query_id}.WhereFilter"),
        ));
        depth += 1;
    }
    // A source, under its re-keying step if it has one.
    let source_steps = |side: &JoinSide, depth: usize, steps: &mut Vec<(usize, String)>| {
        let input = schema(&side.source.columns);
        let alias = &side.alias;
        let mut depth = depth;
        if side.rekeyed {
            steps.push((
                depth,
                format!("[ REKEY ] | Schema: {input} | Logger: {query_id}.{alias}.Rekey"),
            ));
            depth += 1;
        }
        steps.push((
            depth,
            format!("[ SOURCE ] | Schema: {input} | Logger: {query_id}.KafkaTopic_{alias}.Source"),
        ));
    };
    for (k, stage) in plan.chain.stages.iter().enumerate().rev() {
        let kind = match stage.shape {
            JoinShape::StreamStream(_) => "STREAM_STREAM_JOIN",
            JoinShape::StreamTable => "STREAM_TABLE_JOIN",
            JoinShape::TableTable => "TABLE_TABLE_JOIN",
            JoinShape::ForeignKey => "FK_TABLE_TABLE_JOIN",
            JoinShape::StreamWindow { .. } => "STREAM_WINDOWED_TABLE_JOIN",
        };
        steps.push((
            depth,
            format!("[ {kind} ] | Schema: {joined} | Logger: {query_id}.Join{k}"),
        ));
        depth += 1;
        source_steps(&stage.right, depth, &mut steps);
        if k == 0 {
            source_steps(&stage.left, depth, &mut steps);
        }
    }
    explain_text(steps)
}
