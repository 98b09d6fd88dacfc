//! The typed syntax tree of the KSQL dialect. Every node carries its source [`Span`].

mod expr;
mod rewrite;
mod types;

pub use expr::{BinaryOp, Expr, ExprKind, Literal, UnaryOp};
pub use types::{SqlType, StructField};

use crate::span::Span;

/// An identifier. Unquoted identifiers are upper-cased when parsed, as in ksqlDB; back-quoted
/// ones keep their case and may hold any characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ident {
    /// The name, upper-cased unless quoted.
    pub value: String,
    /// Whether it was back-quoted (or double-quoted).
    pub quoted: bool,
    /// Where it was written.
    pub span: Span,
}

impl Ident {
    /// An unquoted identifier; the value is upper-cased.
    pub fn new(value: &str) -> Self {
        Ident {
            value: value.to_uppercase(),
            quoted: false,
            span: Span::default(),
        }
    }

    /// An identifier of exactly `value`, quoted only where it must be to be read back as
    /// written (lower case, other characters, a reserved word), as ksqlDB prints names.
    pub fn exact(value: &str) -> Self {
        let plain = value
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_uppercase() || c == '_')
            && value
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            && !crate::parser::is_reserved(value);
        Ident {
            value: value.to_string(),
            quoted: !plain,
            span: Span::default(),
        }
    }

    /// A quoted identifier that keeps its case.
    pub fn quoted(value: &str) -> Self {
        Ident {
            value: value.to_string(),
            quoted: true,
            span: Span::default(),
        }
    }
}

/// A parsed statement with its source span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// What the statement is.
    pub kind: StatementKind,
    /// Its source range.
    pub span: Span,
}

/// Stream or table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// An append-only stream.
    Stream,
    /// A changelog table.
    Table,
}

/// Every statement the dialect has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatementKind {
    /// `CREATE [OR REPLACE] [SOURCE] STREAM|TABLE [IF NOT EXISTS] name [(elements)] [WITH (...)]`.
    CreateSource(CreateSource),
    /// `CREATE [OR REPLACE] STREAM|TABLE [IF NOT EXISTS] name [WITH (...)] AS SELECT ...`.
    CreateAsSelect(CreateAsSelect),
    /// `INSERT INTO target [WITH (...)] SELECT ...`.
    InsertInto {
        /// The sink.
        target: Ident,
        /// `WITH` properties such as `QUERY_ID`.
        properties: Properties,
        /// The query.
        query: Box<Query>,
    },
    /// `INSERT INTO target [(columns)] VALUES (...)`.
    InsertValues {
        /// The sink.
        target: Ident,
        /// The named columns, if listed.
        columns: Option<Vec<Ident>>,
        /// The values.
        values: Vec<Expr>,
    },
    /// `DROP STREAM|TABLE [IF EXISTS] name [DELETE TOPIC]`.
    DropSource {
        /// Stream or table.
        kind: SourceKind,
        /// `IF EXISTS`.
        if_exists: bool,
        /// The source.
        name: Ident,
        /// `DELETE TOPIC`.
        delete_topic: bool,
    },
    /// A `SELECT`, push (`EMIT`) or pull.
    Query(Box<Query>),
    /// `SHOW|LIST ...`.
    List {
        /// What is listed.
        what: ListKind,
        /// `EXTENDED`.
        extended: bool,
    },
    /// `DESCRIBE [EXTENDED] name` (also `DESCRIBE name EXTENDED`).
    Describe {
        /// The source.
        name: Ident,
        /// `EXTENDED`.
        extended: bool,
    },
    /// `DESCRIBE STREAMS|TABLES [EXTENDED]`.
    DescribeAll {
        /// Streams or tables.
        kind: SourceKind,
        /// `EXTENDED`.
        extended: bool,
    },
    /// `DESCRIBE FUNCTION name`.
    DescribeFunction(Ident),
    /// `DESCRIBE CONNECTOR name`.
    DescribeConnector(Ident),
    /// `PAUSE CONNECTOR name` (Eddy's).
    PauseConnector(Ident),
    /// `RESUME CONNECTOR name` (Eddy's).
    ResumeConnector(Ident),
    /// `EXPLAIN statement`.
    Explain(Box<Statement>),
    /// `EXPLAIN query_id`.
    ExplainQuery(Ident),
    /// `TERMINATE id|ALL`.
    Terminate(QueryTarget),
    /// `PAUSE id|ALL`.
    Pause(QueryTarget),
    /// `RESUME id|ALL`.
    Resume(QueryTarget),
    /// `PRINT 'topic' [FROM BEGINNING] [INTERVAL n] [LIMIT n]`.
    Print(Print),
    /// `SET 'name' = 'value'`.
    SetProperty {
        /// The property.
        name: String,
        /// Its value.
        value: String,
    },
    /// `UNSET 'name'`.
    UnsetProperty(String),
    /// `ALTER SYSTEM 'name' = 'value'`.
    AlterSystem {
        /// The property.
        name: String,
        /// Its value.
        value: String,
    },
    /// `DEFINE name = 'value'`.
    DefineVariable {
        /// The variable.
        name: Ident,
        /// Its value.
        value: String,
    },
    /// `UNDEFINE name`.
    UndefineVariable(Ident),
    /// `CREATE TYPE [IF NOT EXISTS] name AS type`.
    CreateType {
        /// `IF NOT EXISTS`.
        if_not_exists: bool,
        /// The type name.
        name: Ident,
        /// What it stands for.
        ty: SqlType,
    },
    /// `DROP TYPE [IF EXISTS] name`.
    DropType {
        /// `IF EXISTS`.
        if_exists: bool,
        /// The type name.
        name: Ident,
    },
    /// `ALTER STREAM|TABLE name ADD [COLUMN] c type, ...`.
    AlterSource {
        /// Stream or table.
        kind: SourceKind,
        /// The source.
        name: Ident,
        /// The columns added.
        columns: Vec<(Ident, SqlType)>,
    },
    /// `CREATE SOURCE|SINK CONNECTOR [IF NOT EXISTS] name WITH (...)`.
    CreateConnector {
        /// Source (true) or sink (false).
        source: bool,
        /// `IF NOT EXISTS`.
        if_not_exists: bool,
        /// The connector name.
        name: Ident,
        /// Its configuration.
        properties: Properties,
    },
    /// `DROP CONNECTOR [IF EXISTS] name`.
    DropConnector {
        /// `IF EXISTS`.
        if_exists: bool,
        /// The connector name.
        name: Ident,
    },
    /// `ASSERT [NOT EXISTS] TOPIC name [WITH (...)] [TIMEOUT n unit]`.
    AssertTopic {
        /// False for `NOT EXISTS`.
        exists: bool,
        /// The topic.
        name: Ident,
        /// Expected partitions and replicas.
        properties: Properties,
        /// How long to wait.
        timeout: Option<Duration>,
    },
    /// `ASSERT [NOT EXISTS] SCHEMA [SUBJECT s] [ID n] [TIMEOUT n unit]`.
    AssertSchema {
        /// False for `NOT EXISTS`.
        exists: bool,
        /// The subject.
        subject: Option<Ident>,
        /// The schema id.
        id: Option<i64>,
        /// How long to wait.
        timeout: Option<Duration>,
    },
    /// Test only: `ASSERT VALUES source [(columns)] VALUES (...)`.
    AssertValues {
        /// The source.
        source: Ident,
        /// The named columns, if listed.
        columns: Option<Vec<Ident>>,
        /// The expected values.
        values: Vec<Expr>,
    },
    /// Test only: `ASSERT NULL VALUES source [(columns)] KEY (...)`.
    AssertTombstone {
        /// The source.
        source: Ident,
        /// The named key columns, if listed.
        columns: Option<Vec<Ident>>,
        /// The key values.
        keys: Vec<Expr>,
    },
    /// Test only: `ASSERT STREAM|TABLE name [(elements)] [WITH (...)]`.
    AssertSource {
        /// Stream or table.
        kind: SourceKind,
        /// The source.
        name: Ident,
        /// The expected columns.
        elements: Option<Vec<TableElement>>,
        /// The expected properties.
        properties: Properties,
    },
    /// `RUN SCRIPT 'path'`.
    RunScript(String),
}

/// A `CREATE STREAM|TABLE` that declares a source over a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateSource {
    /// Stream or table.
    pub kind: SourceKind,
    /// `OR REPLACE`.
    pub or_replace: bool,
    /// `SOURCE`: read-only, and for tables materialized.
    pub read_only: bool,
    /// `IF NOT EXISTS`.
    pub if_not_exists: bool,
    /// The source name.
    pub name: Ident,
    /// The columns; none when the schema is inferred.
    pub elements: Option<Vec<TableElement>>,
    /// `WITH` properties.
    pub properties: Properties,
}

/// A `CREATE STREAM|TABLE ... AS SELECT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateAsSelect {
    /// Stream or table.
    pub kind: SourceKind,
    /// `OR REPLACE`.
    pub or_replace: bool,
    /// `IF NOT EXISTS`.
    pub if_not_exists: bool,
    /// The sink name.
    pub name: Ident,
    /// `WITH` properties.
    pub properties: Properties,
    /// The query.
    pub query: Box<Query>,
}

/// A column declaration: `name type [KEY | PRIMARY KEY | HEADERS | HEADER('k')]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableElement {
    /// The column name.
    pub name: Ident,
    /// Its type.
    pub ty: SqlType,
    /// Where the column lives, when not in the value.
    pub constraint: Option<ColumnConstraint>,
    /// Where it was written.
    pub span: Span,
}

/// Where a declared column comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnConstraint {
    /// `KEY`: a stream key column.
    Key,
    /// `PRIMARY KEY`: a table key column.
    PrimaryKey,
    /// `HEADERS`: all headers.
    Headers,
    /// `HEADER('k')`: the last header with key `k`.
    Header(String),
}

/// `WITH (...)` properties, in the order written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Properties(pub Vec<Property>);

impl Properties {
    /// The value of a property, matched case-insensitively.
    pub fn get(&self, name: &str) -> Option<&Literal> {
        self.0
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
            .map(|p| &p.value)
    }

    /// Whether no properties were given.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One `name = value` property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    /// The name, upper-cased unless it was a quoted string.
    pub name: String,
    /// Whether the name was written as a string.
    pub quoted: bool,
    /// The value.
    pub value: Literal,
    /// Where it was written.
    pub span: Span,
}

/// Names the `KAFKA_TOPIC`-style properties ksqlDB defines, so callers need no string literals.
pub mod property_names {
    /// `KAFKA_TOPIC`.
    pub const KAFKA_TOPIC: &str = "KAFKA_TOPIC";
    /// `KEY_FORMAT`.
    pub const KEY_FORMAT: &str = "KEY_FORMAT";
    /// `VALUE_FORMAT`.
    pub const VALUE_FORMAT: &str = "VALUE_FORMAT";
    /// `FORMAT`.
    pub const FORMAT: &str = "FORMAT";
    /// `PARTITIONS`.
    pub const PARTITIONS: &str = "PARTITIONS";
    /// `REPLICAS`.
    pub const REPLICAS: &str = "REPLICAS";
    /// `TIMESTAMP`.
    pub const TIMESTAMP: &str = "TIMESTAMP";
    /// `TIMESTAMP_FORMAT`.
    pub const TIMESTAMP_FORMAT: &str = "TIMESTAMP_FORMAT";
    /// `WRAP_SINGLE_VALUE`.
    pub const WRAP_SINGLE_VALUE: &str = "WRAP_SINGLE_VALUE";
    /// `KEY_DELIMITER`.
    pub const KEY_DELIMITER: &str = "KEY_DELIMITER";
    /// `VALUE_DELIMITER`.
    pub const VALUE_DELIMITER: &str = "VALUE_DELIMITER";
    /// `RETENTION_MS`.
    pub const RETENTION_MS: &str = "RETENTION_MS";
    /// `WINDOW_TYPE`.
    pub const WINDOW_TYPE: &str = "WINDOW_TYPE";
    /// `WINDOW_SIZE`.
    pub const WINDOW_SIZE: &str = "WINDOW_SIZE";
    /// `QUERY_ID`.
    pub const QUERY_ID: &str = "QUERY_ID";
    /// `DEAD_LETTER_TOPIC`, Eddy's: where a persistent query's failed records go.
    pub const DEAD_LETTER_TOPIC: &str = "DEAD_LETTER_TOPIC";
}

/// What `SHOW` / `LIST` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// `STREAMS`.
    Streams,
    /// `TABLES`.
    Tables,
    /// `TOPICS`.
    Topics,
    /// `ALL TOPICS`, internal ones included.
    AllTopics,
    /// `QUERIES`.
    Queries,
    /// `PROPERTIES`.
    Properties,
    /// `FUNCTIONS`.
    Functions,
    /// `TYPES`.
    Types,
    /// `VARIABLES`.
    Variables,
    /// `CONNECTORS`.
    Connectors,
}

/// The target of `TERMINATE`, `PAUSE` and `RESUME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryTarget {
    /// One query by id.
    Query(Ident),
    /// `ALL`.
    All,
}

/// `PRINT`'s options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Print {
    /// The topic, exactly as named (a quoted string keeps its case).
    pub topic: String,
    /// Whether the topic was a quoted string.
    pub quoted: bool,
    /// `FROM BEGINNING`.
    pub from_beginning: bool,
    /// `INTERVAL n`: print every n-th record.
    pub interval: Option<u64>,
    /// `LIMIT n`.
    pub limit: Option<u64>,
}

/// Units of durations in windows, joins and timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUnit {
    /// `MILLISECOND(S)`.
    Milliseconds,
    /// `SECOND(S)`.
    Seconds,
    /// `MINUTE(S)`.
    Minutes,
    /// `HOUR(S)`.
    Hours,
    /// `DAY(S)`.
    Days,
}

impl TimeUnit {
    /// Milliseconds in one unit.
    pub fn millis(self) -> u64 {
        match self {
            TimeUnit::Milliseconds => 1,
            TimeUnit::Seconds => 1_000,
            TimeUnit::Minutes => 60_000,
            TimeUnit::Hours => 3_600_000,
            TimeUnit::Days => 86_400_000,
        }
    }
}

/// A duration as written: `10 SECONDS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duration {
    /// How many units.
    pub value: u64,
    /// The unit.
    pub unit: TimeUnit,
}

impl Duration {
    /// The duration in milliseconds, saturating.
    pub fn to_millis(self) -> u64 {
        self.value.saturating_mul(self.unit.millis())
    }

    /// The duration in milliseconds as a signed timestamp offset, saturating at `i64::MAX`
    /// so that window arithmetic on it cannot wrap.
    pub fn millis(self) -> i64 {
        i64::try_from(self.to_millis()).unwrap_or(i64::MAX)
    }
}

/// A `SELECT` query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The projection.
    pub select: Vec<SelectItem>,
    /// `FROM`, with any joins.
    pub from: Relation,
    /// `WINDOW`.
    pub window: Option<WindowExpr>,
    /// `WHERE`.
    pub filter: Option<Expr>,
    /// `GROUP BY`.
    pub group_by: Vec<Expr>,
    /// `PARTITION BY`.
    pub partition_by: Vec<Expr>,
    /// `HAVING`.
    pub having: Option<Expr>,
    /// `EMIT CHANGES|FINAL`; none for a pull query.
    pub emit: Option<Emit>,
    /// `ORDER BY`, which only pull queries take (beyond ksqlDB, which has none).
    pub order_by: Vec<OrderByItem>,
    /// `LIMIT n`. Negative values parse; pull queries refuse them when run.
    pub limit: Option<i64>,
    /// Where it was written.
    pub span: Span,
}

/// One item of `ORDER BY`: `expr [ASC|DESC] [NULLS FIRST|LAST]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderByItem {
    /// What to order by: a column of the result, its position (from 1), or a selected
    /// expression.
    pub expr: Expr,
    /// `DESC`.
    pub descending: bool,
    /// `NULLS FIRST` (`Some(true)`) or `NULLS LAST`; when not given, nulls sort as if larger
    /// than any value (last ascending, first descending).
    pub nulls_first: Option<bool>,
    /// Where it was written.
    pub span: Span,
}

/// One item of the projection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectItem {
    /// `expr [[AS] alias]`.
    Expr {
        /// The expression.
        expr: Expr,
        /// The alias.
        alias: Option<Ident>,
    },
    /// `*`.
    Wildcard(Span),
    /// `source.*`.
    QualifiedWildcard(Ident),
    /// `struct_expr->*`: every field of a struct.
    StructWildcard(Expr),
}

/// `EMIT CHANGES` or `EMIT FINAL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emit {
    /// Every change.
    Changes,
    /// One result per window once it closes.
    Final,
}

/// `FROM` a source and the joins that follow it, evaluated left to right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// The left-most source.
    pub source: AliasedSource,
    /// The joins, in order.
    pub joins: Vec<Join>,
}

/// A source with an optional alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasedSource {
    /// The source name.
    pub name: Ident,
    /// `[AS] alias`.
    pub alias: Option<Ident>,
    /// Where it was written.
    pub span: Span,
}

/// The join kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    /// `[INNER] JOIN`.
    Inner,
    /// `LEFT [OUTER] JOIN`.
    Left,
    /// `RIGHT [OUTER] JOIN`.
    Right,
    /// `FULL [OUTER] JOIN`.
    Full,
}

/// One `JOIN source [WITHIN ...] ON condition`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Join {
    /// The join kind.
    pub kind: JoinKind,
    /// The joined source.
    pub source: AliasedSource,
    /// `WITHIN` for stream-stream joins.
    pub within: Option<JoinWindow>,
    /// The `ON` condition.
    pub on: Expr,
    /// Where it was written.
    pub span: Span,
}

/// `WITHIN n unit` or `WITHIN (before, after)`, with an optional `GRACE PERIOD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinWindow {
    /// How far back the other side may be.
    pub before: Duration,
    /// How far ahead; `None` when one size was given for both.
    pub after: Option<Duration>,
    /// `GRACE PERIOD`.
    pub grace: Option<Duration>,
}

/// `WINDOW TUMBLING|HOPPING|SESSION (...)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowExpr {
    /// The window shape.
    pub kind: WindowKind,
    /// `RETENTION`.
    pub retention: Option<Duration>,
    /// `GRACE PERIOD`.
    pub grace: Option<Duration>,
    /// Where the window's shape (`TUMBLING`, `HOPPING` or `SESSION`) begins, to its `)`.
    pub span: Span,
}

/// Window shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// `TUMBLING (SIZE s)`.
    Tumbling {
        /// Window size.
        size: Duration,
    },
    /// `HOPPING (SIZE s, ADVANCE BY a)`.
    Hopping {
        /// Window size.
        size: Duration,
        /// Advance between windows.
        advance: Duration,
    },
    /// `SESSION (gap)`.
    Session {
        /// Inactivity gap that closes a session.
        gap: Duration,
    },
}
