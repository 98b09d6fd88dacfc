//! What executing a statement returns, for the REST API and the shell to render.

use std::collections::BTreeMap;

use eddy_sql::ast::SqlType;

use crate::catalog::DataSource;
pub use crate::query::{QueryDescription, QuerySummary};

/// A source as `SHOW STREAMS` / `SHOW TABLES` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSummary {
    /// The name.
    pub name: String,
    /// `STREAM` or `TABLE`.
    pub kind: &'static str,
    /// The topic.
    pub topic: String,
    /// The key format's name.
    pub key_format: String,
    /// The value format's name.
    pub value_format: String,
    /// Whether the source is windowed.
    pub windowed: bool,
}

impl SourceSummary {
    /// The summary of a source.
    pub fn of(source: &DataSource) -> Self {
        SourceSummary {
            name: source.name.clone(),
            kind: source.kind_name(),
            topic: source.topic.clone(),
            key_format: source.key_format.format.name().to_string(),
            value_format: source.value_format.format.name().to_string(),
            windowed: source.window.is_some(),
        }
    }
}

/// A topic as `SHOW TOPICS` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSummary {
    /// The name.
    pub name: String,
    /// The replica count of each partition.
    pub replicas: Vec<u16>,
}

/// The outcome of one statement.
#[derive(Debug, Clone, PartialEq)]
pub enum StatementResult {
    /// A statement took effect; the message says what happened.
    CommandStatus {
        /// The statement.
        statement: String,
        /// ksqlDB's command id, such as ``stream/`S`/create``, for statements that change the
        /// catalog; none for session changes and inserts, which ksqlDB's REST API does not list.
        command_id: Option<String>,
        /// What happened, as ksqlDB words it.
        message: String,
    },
    /// A statement that changed nothing, with a warning (such as `IF NOT EXISTS` on an existing source).
    Warning {
        /// The statement.
        statement: String,
        /// The warning.
        message: String,
    },
    /// `SHOW STREAMS` / `SHOW TABLES`.
    Sources {
        /// The statement.
        statement: String,
        /// Streams or tables.
        kind: &'static str,
        /// The sources.
        sources: Vec<SourceSummary>,
    },
    /// `SHOW TOPICS`.
    Topics {
        /// The statement.
        statement: String,
        /// The topics.
        topics: Vec<TopicSummary>,
    },
    /// `DESCRIBE`.
    SourceDescription {
        /// The statement.
        statement: String,
        /// The source.
        source: Box<DataSource>,
        /// Whether `EXTENDED` was asked for.
        extended: bool,
        /// Partitions of its topic, when known.
        partitions: Option<u32>,
        /// Queries reading it.
        read_queries: Vec<QuerySummary>,
        /// Queries writing it.
        write_queries: Vec<QuerySummary>,
    },
    /// `CREATE SOURCE|SINK CONNECTOR`: the connector made.
    ConnectorInfo {
        /// The statement.
        statement: String,
        /// The connector's name.
        name: String,
        /// Source or sink.
        kind: crate::connectors::ConnectorKind,
        /// Its configuration, passwords masked.
        config: BTreeMap<String, String>,
    },
    /// `DROP CONNECTOR`.
    DropConnector {
        /// The statement.
        statement: String,
        /// The connector dropped.
        name: String,
    },
    /// `SHOW CONNECTORS`.
    Connectors {
        /// The statement.
        statement: String,
        /// Every connector.
        connectors: Vec<crate::connectors::ConnectorSummary>,
    },
    /// `DESCRIBE CONNECTOR`.
    ConnectorDescription {
        /// The statement.
        statement: String,
        /// The connector.
        connector: crate::connectors::ConnectorSummary,
    },
    /// `SHOW TYPES`.
    Types {
        /// The statement.
        statement: String,
        /// Named types.
        types: Vec<(String, SqlType)>,
    },
    /// `SHOW PROPERTIES`.
    Properties {
        /// The statement.
        statement: String,
        /// Effective properties.
        properties: Vec<(String, String)>,
    },
    /// `SHOW FUNCTIONS`.
    Functions {
        /// The statement.
        statement: String,
        /// Every function by name, with its kind: `SCALAR`, `AGGREGATE` or `TABLE`.
        functions: Vec<(String, &'static str)>,
    },
    /// `DESCRIBE FUNCTION`.
    FunctionDescription {
        /// The statement.
        statement: String,
        /// The function: its overview and variations.
        function: eddy_sql::functions::FunctionDescription,
    },
    /// `SHOW VARIABLES`.
    Variables {
        /// The statement.
        statement: String,
        /// Defined variables.
        variables: Vec<(String, String)>,
    },
    /// `EXPLAIN`.
    QueryDescription {
        /// The statement.
        statement: String,
        /// The query.
        query: Box<QueryDescription>,
    },
    /// `SHOW QUERIES`.
    Queries {
        /// The statement.
        statement: String,
        /// Whether `EXTENDED` was asked for: runtime statistics and offsets per query.
        extended: bool,
        /// The running persistent queries.
        queries: Vec<QuerySummary>,
    },
}
