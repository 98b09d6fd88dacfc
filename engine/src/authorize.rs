//! Statements under Kafka's ACLs, so SQL cannot do what a Kafka client could not: a query needs
//! Read on its sources' topics, `INSERT` and a persistent query's sink Write (and Create for a
//! topic it makes), `CREATE` over an existing topic Read and over a new one Create, `DROP`
//! Delete, `DESCRIBE` and `PRINT` Describe and Read, and `TERMINATE`, `PAUSE`, `RESUME`,
//! connectors and `ALTER SYSTEM` Alter on the cluster. A refusal names the operation and the
//! topics, as ksqlDB's authorization errors do.

use eddy_security::acl::{CLUSTER_NAME, Operation, ResourceType};
use eddy_security::{Access, Principal};
use eddy_sql::ast::{Literal, Query, StatementKind};
use eddy_storage::Store;

use crate::catalog::Catalog;
use crate::error::{EngineError, Result};

/// Who runs a request's statements, from where, against which ACLs.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The users and ACLs.
    pub access: Access,
    /// The authenticated principal.
    pub principal: Principal,
    /// The client's address.
    pub host: String,
}

impl Caller {
    /// Whether the caller may do `operation` on the resource.
    pub fn may(&self, operation: Operation, resource_type: ResourceType, name: &str) -> bool {
        let allowed = self.access.authorize(
            (&self.principal, &self.host),
            operation,
            (resource_type, name),
        );
        if !allowed {
            tracing::info!(
                principal = %self.principal,
                operation = %operation,
                resource = %format!("{resource_type}:{name}"),
                "statement denied"
            );
        }
        allowed
    }

    /// Whether the caller may see `topic` in listings (Describe on it).
    pub fn may_describe_topic(&self, topic: &str) -> bool {
        self.access.authorize(
            (&self.principal, &self.host),
            Operation::Describe,
            (ResourceType::Topic, topic),
        )
    }
}

/// What a statement needs: operations on topics, and on the cluster.
#[derive(Default)]
struct Needs {
    topics: Vec<(Operation, String)>,
    cluster: Vec<Operation>,
}

impl Needs {
    fn topic(&mut self, operation: Operation, topic: &str) {
        self.topics.push((operation, topic.to_string()));
    }

    fn query_sources(&mut self, catalog: &Catalog, query: &Query) {
        let names = std::iter::once(&query.from.source)
            .chain(query.from.joins.iter().map(|j| &j.source))
            .map(|s| s.name.value.as_str());
        for name in names {
            // An unknown source fails later with the engine's own message.
            if let Some(source) = catalog.source(name) {
                self.topic(Operation::Read, &source.topic);
            }
        }
    }
}

/// Refuses `statement` unless `caller` may do all it needs.
pub(crate) fn check(
    caller: &Caller,
    catalog: &Catalog,
    store: &Store,
    statement: &StatementKind,
) -> Result<()> {
    let mut needs = Needs::default();
    let topic_of = |name: &str| catalog.source(name).map(|s| s.topic.clone());
    let sink_topic =
        |properties: &eddy_sql::ast::Properties, name: &str| match properties.get("KAFKA_TOPIC") {
            Some(Literal::String(topic)) => topic.clone(),
            _ => name.to_string(),
        };
    match statement {
        StatementKind::Query(query) => needs.query_sources(catalog, query),
        StatementKind::CreateAsSelect(create) => {
            needs.query_sources(catalog, &create.query);
            let topic = sink_topic(&create.properties, &create.name.value);
            if !store.topic_exists(&topic) {
                needs.topic(Operation::Create, &topic);
            }
            needs.topic(Operation::Write, &topic);
        }
        StatementKind::CreateSource(create) => {
            let topic = sink_topic(&create.properties, &create.name.value);
            let operation = if store.topic_exists(&topic) {
                Operation::Read
            } else {
                Operation::Create
            };
            needs.topic(operation, &topic);
        }
        StatementKind::InsertInto { target, query, .. } => {
            needs.query_sources(catalog, query);
            if let Some(topic) = topic_of(&target.value) {
                needs.topic(Operation::Write, &topic);
            }
        }
        StatementKind::InsertValues { target, .. } => {
            if let Some(topic) = topic_of(&target.value) {
                needs.topic(Operation::Write, &topic);
            }
        }
        StatementKind::DropSource { name, .. } => {
            if let Some(topic) = topic_of(&name.value) {
                needs.topic(Operation::Delete, &topic);
            }
        }
        StatementKind::AlterSource { name, .. } => {
            if let Some(topic) = topic_of(&name.value) {
                needs.topic(Operation::Alter, &topic);
            }
        }
        StatementKind::Describe { name, .. } => {
            if let Some(topic) = topic_of(&name.value) {
                needs.topic(Operation::Describe, &topic);
            }
        }
        StatementKind::Print(print) => needs.topic(Operation::Read, &print.topic),
        StatementKind::Explain(inner) => return check(caller, catalog, store, &inner.kind),
        StatementKind::Terminate(_)
        | StatementKind::Pause(_)
        | StatementKind::Resume(_)
        | StatementKind::CreateConnector { .. }
        | StatementKind::DropConnector { .. }
        | StatementKind::PauseConnector(_)
        | StatementKind::ResumeConnector(_) => needs.cluster.push(Operation::Alter),
        StatementKind::AlterSystem { .. } => needs.cluster.push(Operation::AlterConfigs),
        _ => {}
    }
    refuse(caller, needs)
}

/// Refuses `insert`s into `topic` (`/inserts-stream`) unless the caller may write it.
pub(crate) fn check_write(caller: &Caller, topic: &str) -> Result<()> {
    let mut needs = Needs::default();
    needs.topic(Operation::Write, topic);
    refuse(caller, needs)
}

fn refuse(caller: &Caller, needs: Needs) -> Result<()> {
    for operation in needs.cluster {
        if !caller.may(operation, ResourceType::Cluster, CLUSTER_NAME) {
            return Err(EngineError::Forbidden(format!(
                "Authorization denied to {} on the cluster",
                title(operation)
            )));
        }
    }
    let mut denied: Vec<(Operation, Vec<String>)> = Vec::new();
    for (operation, topic) in needs.topics {
        if caller.may(operation, ResourceType::Topic, &topic) {
            continue;
        }
        match denied.iter_mut().find(|(op, _)| *op == operation) {
            Some((_, topics)) if !topics.contains(&topic) => topics.push(topic),
            Some(_) => {}
            None => denied.push((operation, vec![topic])),
        }
    }
    match denied.first() {
        None => Ok(()),
        Some((operation, topics)) => Err(EngineError::Forbidden(format!(
            "Authorization denied to {} on topic(s): [{}]",
            title(*operation),
            topics.join(", ")
        ))),
    }
}

/// `READ` as ksqlDB's messages write it: `Read`.
fn title(operation: Operation) -> String {
    operation
        .name()
        .split('_')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_string() + &chars.as_str().to_ascii_lowercase()
            })
        })
        .collect::<Vec<_>>()
        .join("")
}
