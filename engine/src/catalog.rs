//! Streams, tables and types: what `CREATE` declares and `DESCRIBE` shows.

use std::collections::{BTreeMap, HashMap};

use eddy_sql::ast::{ColumnConstraint, CreateSource, Literal, Properties, SourceKind, SqlType};
use eddy_sql::types::resolve;

use crate::error::{EngineError, Result};
use crate::format::{Format, FormatSpec, ProtobufNullable, check_columns, parse_delimiter};
use crate::schema::{
    Column, ColumnKind, PSEUDO_COLUMNS, WINDOW_COLUMNS, headers_type, type_display,
};

/// Session property naming the default key format.
pub const DEFAULT_KEY_FORMAT: &str = "ksql.persistence.default.format.key";
/// Session property naming the default value format.
pub const DEFAULT_VALUE_FORMAT: &str = "ksql.persistence.default.format.value";

/// How a windowed source's keys are windowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowType {
    /// Fixed, non-overlapping windows.
    Tumbling,
    /// Fixed, overlapping windows.
    Hopping,
    /// Activity sessions.
    Session,
}

impl WindowType {
    /// As written in `WINDOW_TYPE`: `TUMBLING`, `HOPPING` or `SESSION`.
    pub fn name(self) -> &'static str {
        match self {
            WindowType::Tumbling => "TUMBLING",
            WindowType::Hopping => "HOPPING",
            WindowType::Session => "SESSION",
        }
    }
}

/// The window of a source declared over a windowed topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowInfo {
    /// The window type.
    pub window_type: WindowType,
    /// The size, for time windows.
    pub size_ms: Option<u64>,
    /// `RETENTION`, for a table a windowed aggregation writes: how far behind its newest
    /// window a window stays for pull queries.
    pub retention_ms: Option<u64>,
}

/// A stream or table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSource {
    /// The name.
    pub name: String,
    /// Stream or table.
    pub kind: SourceKind,
    /// The topic holding its records.
    pub topic: String,
    /// How keys are serialized.
    pub key_format: FormatSpec,
    /// How values are serialized.
    pub value_format: FormatSpec,
    /// `WRAP_SINGLE_VALUE`, when set.
    pub wrap_single_value: Option<bool>,
    /// Key, value and header columns, in declaration order.
    pub columns: Vec<Column>,
    /// The column `ROWTIME` comes from, if not the record timestamp.
    pub timestamp_column: Option<String>,
    /// The pattern of a string `TIMESTAMP` column.
    pub timestamp_format: Option<String>,
    /// Set for sources over windowed keys.
    pub window: Option<WindowInfo>,
    /// `CREATE SOURCE ...`: no inserts, no `DELETE TOPIC`.
    pub read_only: bool,
    /// Created by `CREATE ... AS SELECT`, whose query defines its columns.
    pub created_by_query: bool,
    /// The statement that declared it.
    pub sql: String,
}

impl DataSource {
    /// Key columns in order.
    pub fn key_columns(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().filter(|c| c.kind == ColumnKind::Key)
    }

    /// Value columns in order.
    pub fn value_columns(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().filter(|c| c.kind == ColumnKind::Value)
    }

    /// Whether a value is a JSON object of the value columns, so that a record without one
    /// holds no row (a bare single value may be null).
    pub fn value_is_object(&self) -> bool {
        self.value_format.format == crate::format::Format::Json
            && self.wrap_single_value != Some(false)
            && self.value_columns().next().is_some()
    }

    /// Whether a query writes it with `EMIT FINAL`: each window's rows once, when it closes.
    pub fn emits_final(&self) -> bool {
        self.created_by_query
            && eddy_sql::parse_statement(&self.sql).is_ok_and(|s| {
                matches!(&s.kind, eddy_sql::ast::StatementKind::CreateAsSelect(c)
                    if c.query.emit == Some(eddy_sql::ast::Emit::Final))
            })
    }

    /// `STREAM` or `TABLE`.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            SourceKind::Stream => "STREAM",
            SourceKind::Table => "TABLE",
        }
    }
}

/// The catalog: sources and named types.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    sources: BTreeMap<String, DataSource>,
    types: BTreeMap<String, SqlType>,
}

impl Catalog {
    /// A source by exact name.
    pub fn source(&self, name: &str) -> Option<&DataSource> {
        self.sources.get(name)
    }

    /// All sources, by name.
    pub fn sources(&self) -> impl Iterator<Item = &DataSource> {
        self.sources.values()
    }

    /// A source whose name differs only in case, for "did you mean" hints.
    pub fn similar_source(&self, name: &str) -> Option<&DataSource> {
        self.sources
            .values()
            .find(|s| s.name != name && s.name.eq_ignore_ascii_case(name))
    }

    /// Adds or replaces a source.
    pub fn put_source(&mut self, source: DataSource) {
        self.sources.insert(source.name.clone(), source);
    }

    /// Removes a source.
    pub fn remove_source(&mut self, name: &str) -> Option<DataSource> {
        self.sources.remove(name)
    }

    /// A named type.
    pub fn named_type(&self, name: &str) -> Option<&SqlType> {
        self.types.get(name)
    }

    /// All named types.
    pub fn types(&self) -> &BTreeMap<String, SqlType> {
        &self.types
    }

    /// Registers a named type.
    pub fn put_type(&mut self, name: String, ty: SqlType) {
        self.types.insert(name, ty);
    }

    /// Removes a named type.
    pub fn remove_type(&mut self, name: &str) -> Option<SqlType> {
        self.types.remove(name)
    }

    /// Builds the source a `CREATE STREAM|TABLE` declares, checking it with ksqlDB's rules.
    pub fn build_source(
        &self,
        create: &CreateSource,
        sql: &str,
        session: &HashMap<String, String>,
    ) -> Result<DataSource> {
        self.build_source_with(create, sql, session, DeclaredBy::User)
    }

    /// The key and value formats a `CREATE` declares (or the session's defaults give it).
    pub fn declared_formats(
        create: &CreateSource,
        session: &HashMap<String, String>,
    ) -> Result<(FormatSpec, FormatSpec)> {
        let formats = Formats::declared(&create.properties, session)?;
        Ok((formats.key, formats.value))
    }

    /// [`Catalog::build_source`] for a query's sink, whose key may be named after a
    /// pseudo-column it was partitioned by (`PARTITION BY ROWTIME`).
    pub fn build_query_sink(
        &self,
        create: &CreateSource,
        sql: &str,
        session: &HashMap<String, String>,
    ) -> Result<DataSource> {
        self.build_source_with(create, sql, session, DeclaredBy::PersistentQuery)
    }

    /// [`Catalog::build_source`] for the rows of a push or pull query, which may carry any
    /// pseudo-column or window bound as a column (`SELECT ROWTIME, WINDOWSTART ...`).
    pub fn build_transient_sink(&self, create: &CreateSource) -> Result<DataSource> {
        self.build_source_with(create, "", &HashMap::new(), DeclaredBy::TransientQuery)
    }

    fn build_source_with(
        &self,
        create: &CreateSource,
        sql: &str,
        session: &HashMap<String, String>,
        declared_by: DeclaredBy,
    ) -> Result<DataSource> {
        let by_query = declared_by != DeclaredBy::User;
        let props = &create.properties;
        let topic = string_property(props, "KAFKA_TOPIC")?.ok_or_else(|| {
            EngineError::statement(
                "Missing required property \"KAFKA_TOPIC\" which has no default value.",
            )
        })?;
        let mut formats = Formats::declared(props, session)?;
        let columns = self.columns(create, declared_by)?;
        let keys: Vec<&Column> = columns
            .iter()
            .filter(|c| c.kind == ColumnKind::Key)
            .collect();
        let values: Vec<&Column> = columns
            .iter()
            .filter(|c| c.kind == ColumnKind::Value)
            .collect();
        // A query's windowed table may be keyed by its window alone: a windowed aggregate
        // without GROUP BY.
        let window = window(props, !keys.is_empty() || by_query)?;
        if create.kind == SourceKind::Table && keys.is_empty() && window.is_none() {
            return Err(EngineError::statement(
                "Tables require a PRIMARY KEY. Please define the PRIMARY KEY.",
            ));
        }
        if by_query && keys.is_empty() && formats.key_given && create.kind == SourceKind::Stream {
            return Err(EngineError::statement(
                "Key format specified for stream without key columns.",
            ));
        }
        if keys.is_empty() && !formats.key_explicit {
            // A keyless source has nothing to serialize in its key.
            formats.key.format = Format::None;
        }
        if formats.key.format == Format::Avro && formats.key.full_name.is_none() {
            formats.key.full_name = Some(crate::codec::avro::schema::key_schema_name(
                &create.name.value,
            ));
        }
        check_columns(formats.key.format, &keys, true)?;
        check_columns(formats.value.format, &values, false)?;
        let wrap_single_value =
            wrap_single_value(props, session, formats.value.format, values.len())?;
        let timestamp_column = timestamp_column(props, &columns)?;
        // Eddy's own topics may be read through a stream, never written.
        let read_only = create.read_only || eddy_storage::is_internal_topic(&topic);
        Ok(DataSource {
            name: create.name.value.clone(),
            kind: create.kind,
            topic,
            key_format: formats.key,
            value_format: formats.value,
            wrap_single_value,
            columns,
            timestamp_column,
            timestamp_format: string_property(props, "TIMESTAMP_FORMAT")?,
            window,
            read_only,
            created_by_query: by_query,
            sql: sql.to_string(),
        })
    }

    /// The declared columns, with ksqlDB's rules on reserved and repeated names and on the
    /// types of header columns.
    fn columns(&self, create: &CreateSource, declared_by: DeclaredBy) -> Result<Vec<Column>> {
        let elements = match &create.elements {
            Some(elements) if !elements.is_empty() => elements,
            _ => return Err(EngineError::statement("No columns supplied.")),
        };
        let mut columns = Vec::with_capacity(elements.len());
        for element in elements {
            let name = element.name.value.clone();
            // Unquoted names are upper-cased already, so this also catches `rowpartition`.
            let key = matches!(
                element.constraint,
                Some(ColumnConstraint::Key | ColumnConstraint::PrimaryKey)
            );
            let reserved_allowed = match declared_by {
                DeclaredBy::User => false,
                DeclaredBy::PersistentQuery => key,
                DeclaredBy::TransientQuery => true,
            };
            if let Some(reserved) = PSEUDO_COLUMNS
                .iter()
                .chain(WINDOW_COLUMNS)
                .find(|r| **r == name)
                && !reserved_allowed
            {
                return Err(EngineError::statement(format!(
                    "'{reserved}' is a reserved column name. You cannot use it as a name for a column."
                )));
            }
            if columns.iter().any(|c: &Column| c.name == name) {
                return Err(EngineError::statement(format!(
                    "Duplicate column names: `{name}`"
                )));
            }
            let ty = resolve(&element.ty, &|n| self.types.get(n).cloned())
                .map_err(|e| EngineError::statement(e.to_string()))?;
            let kind = column_kind(element.constraint.as_ref(), &ty)?;
            columns.push(Column { name, ty, kind });
        }
        Ok(columns)
    }
}

/// A string property, or ksqlDB's error for a value of another kind.
fn string_property(props: &Properties, name: &str) -> Result<Option<String>> {
    match props.get(name) {
        None => Ok(None),
        Some(Literal::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(EngineError::statement(format!(
            "Invalid value for {name}: expected a string but got {other}"
        ))),
    }
}

/// A source's key and value formats as its `WITH` clause (or the session's defaults) gives
/// them.
struct Formats {
    key: FormatSpec,
    value: FormatSpec,
    /// Whether `KEY_FORMAT` names a format other than `NONE`.
    key_given: bool,
    /// Whether `KEY_FORMAT` or `FORMAT` was given at all.
    key_explicit: bool,
}

impl Formats {
    /// The formats `FORMAT`, `KEY_FORMAT`, `VALUE_FORMAT` and the delimiters declare; formats
    /// Eddy cannot read are refused before anything else, since for them ksqlDB would infer
    /// the columns from a schema registry.
    fn declared(props: &Properties, session: &HashMap<String, String>) -> Result<Self> {
        let format = string_property(props, "FORMAT")?;
        let key_format_name = string_property(props, "KEY_FORMAT")?;
        let value_format_name = string_property(props, "VALUE_FORMAT")?;
        if format.is_some() && key_format_name.is_some() {
            return Err(EngineError::statement(
                "Cannot supply both 'KEY_FORMAT' and 'FORMAT' properties, as 'FORMAT' sets both key and value formats. Either use just 'FORMAT', or use 'KEY_FORMAT' and 'VALUE_FORMAT'.",
            ));
        }
        if format.is_some() && value_format_name.is_some() {
            return Err(EngineError::statement(
                "Cannot supply both 'VALUE_FORMAT' and 'FORMAT' properties, as 'FORMAT' sets both key and value formats. Either use just 'FORMAT', or use 'KEY_FORMAT' and 'VALUE_FORMAT'.",
            ));
        }
        let value_format = match value_format_name
            .or(format.clone())
            .or_else(|| session.get(DEFAULT_VALUE_FORMAT).cloned())
        {
            Some(name) => Format::parse(&name)?,
            None => {
                return Err(EngineError::statement(
                    "Statement is missing the 'VALUE_FORMAT' property from the WITH clause. Either provide one or set a default via the 'ksql.persistence.default.format.value' config.",
                ));
            }
        };
        let key_given = key_format_name
            .as_deref()
            .is_some_and(|f| !f.eq_ignore_ascii_case("NONE"));
        let explicit_key_format = key_format_name.or(format);
        let key_format = match explicit_key_format
            .clone()
            .or_else(|| session.get(DEFAULT_KEY_FORMAT).cloned())
        {
            Some(name) => Format::parse(&name)?,
            None => Format::Kafka,
        };
        let mut key = FormatSpec::of(key_format);
        let mut value = FormatSpec::of(value_format);
        for (property, spec) in [("KEY_DELIMITER", &mut key), ("VALUE_DELIMITER", &mut value)] {
            if let Some(text) = string_property(props, property)? {
                let delimiter = parse_delimiter(property, &text)?;
                if spec.format != Format::Delimited {
                    return Err(EngineError::statement(format!(
                        "{} does not support the following configs: [delimiter]",
                        spec.format.name()
                    )));
                }
                spec.delimiter = Some(delimiter);
            }
        }
        schema_options(props, &mut key, &mut value)?;
        value_format.ensure_supported()?;
        key_format.ensure_supported()?;
        Ok(Formats {
            key,
            value,
            key_given,
            key_explicit: explicit_key_format.is_some(),
        })
    }
}

/// `KEY_SCHEMA_ID` / `VALUE_SCHEMA_ID` and the full schema names, checked against the formats
/// as ksqlDB checks them.
fn schema_options(props: &Properties, key: &mut FormatSpec, value: &mut FormatSpec) -> Result<()> {
    for (side, spec) in [("KEY", &mut *key), ("VALUE", &mut *value)] {
        let id_property = format!("{side}_SCHEMA_ID");
        if let Some(literal) = props.get(&id_property) {
            if !spec.format.uses_registry() {
                return Err(EngineError::statement(format!(
                    "{side}_FORMAT should support schema inference when {id_property} is provided. Current format is {}.",
                    spec.format.name()
                )));
            }
            let id = match literal {
                Literal::Integer(n) => u32::try_from(*n).ok(),
                Literal::String(s) => s.trim().parse::<u32>().ok(),
                _ => None,
            };
            spec.schema_id = Some(id.filter(|id| i32::try_from(*id).is_ok()).ok_or_else(|| {
                EngineError::statement(format!(
                    "Invalid value for {id_property}: expected a schema id but got {literal}"
                ))
            })?);
        }
        let mut names = vec![format!("{side}_SCHEMA_FULL_NAME")];
        if side == "VALUE" {
            names.push("VALUE_AVRO_SCHEMA_FULL_NAME".into());
        }
        for name in names {
            let Some(full_name) = string_property(props, &name)? else {
                continue;
            };
            if !matches!(spec.format, Format::Avro | Format::Protobuf) {
                return Err(EngineError::statement(format!(
                    "{} does not support the following configs: [fullSchemaName]",
                    spec.format.name()
                )));
            }
            let full_name = full_name.trim();
            if full_name.is_empty() {
                return Err(EngineError::statement(
                    "fullSchemaName cannot be empty. Format configuration: {fullSchemaName=}",
                ));
            }
            spec.full_name = Some(full_name.to_string());
        }
        let nullable_property = format!("{side}_PROTOBUF_NULLABLE_REPRESENTATION");
        if let Some(text) = string_property(props, &nullable_property)? {
            if !matches!(spec.format, Format::Protobuf | Format::ProtobufNoSr) {
                return Err(EngineError::statement(format!(
                    "{} does not support the following configs: [nullableRepresentation]",
                    spec.format.name()
                )));
            }
            spec.protobuf_nullable = Some(match text.to_ascii_uppercase().as_str() {
                "OPTIONAL" => ProtobufNullable::Optional,
                "WRAPPER" => ProtobufNullable::Wrapper,
                _ => {
                    return Err(EngineError::statement(format!(
                        "Invalid value for {nullable_property}: {text}. Valid values are OPTIONAL and WRAPPER"
                    )));
                }
            });
        }
    }
    Ok(())
}

/// What a column is by its constraint: a key, a value, or the record's headers (all of them
/// as an array, or one by name as bytes).
fn column_kind(constraint: Option<&ColumnConstraint>, ty: &SqlType) -> Result<ColumnKind> {
    Ok(match constraint {
        None => ColumnKind::Value,
        Some(ColumnConstraint::Key | ColumnConstraint::PrimaryKey) => ColumnKind::Key,
        Some(ColumnConstraint::Headers) => {
            let expected = headers_type();
            // Compare as written, so `key` and `KEY` field names agree.
            if type_display(ty) != type_display(&expected) {
                return Err(EngineError::statement(format!(
                    "Invalid type for HEADERS column: expected {}, got {}",
                    type_display(&expected),
                    type_display(ty)
                )));
            }
            ColumnKind::Headers
        }
        Some(ColumnConstraint::Header(key)) => {
            if *ty != SqlType::Bytes {
                return Err(EngineError::statement(format!(
                    "Invalid type for HEADER('{key}') column: expected BYTES, got {}",
                    type_display(ty)
                )));
            }
            ColumnKind::Header(key.clone())
        }
    })
}

/// The window of a source declared over a windowed topic (`WINDOW_TYPE`, `WINDOW_SIZE`).
fn window(props: &Properties, has_keys: bool) -> Result<Option<WindowInfo>> {
    let Some(t) = string_property(props, "WINDOW_TYPE")? else {
        return Ok(None);
    };
    let window_type = match t.to_ascii_uppercase().as_str() {
        "TUMBLING" => WindowType::Tumbling,
        "HOPPING" => WindowType::Hopping,
        "SESSION" => WindowType::Session,
        other => {
            return Err(EngineError::statement(format!(
                "Invalid value for WINDOW_TYPE: {other}. Valid values are SESSION, HOPPING, TUMBLING"
            )));
        }
    };
    let size_ms = match string_property(props, "WINDOW_SIZE")? {
        Some(size) => Some(parse_window_size(&size)?),
        None if window_type == WindowType::Session => None,
        None => {
            return Err(EngineError::statement(format!(
                "{} windows require 'WINDOW_SIZE' to be provided in the WITH clause. For example: 'WINDOW_SIZE'='10 SECONDS'",
                t.to_ascii_uppercase()
            )));
        }
    };
    if !has_keys {
        return Err(EngineError::statement(
            "Windowed sources require a key column.",
        ));
    }
    Ok(Some(WindowInfo {
        window_type,
        size_ms,
        retention_ms: None,
    }))
}

/// `WRAP_SINGLE_VALUE`, checked against the value format and columns; without it,
/// `ksql.persistence.wrap.single.values` decides, for a single value column in a format that
/// can wrap it.
fn wrap_single_value(
    props: &Properties,
    session: &HashMap<String, String>,
    value_format: Format,
    value_columns: usize,
) -> Result<Option<bool>> {
    let declared = match props.get("WRAP_SINGLE_VALUE") {
        None => None,
        Some(Literal::Boolean(b)) => Some(*b),
        Some(Literal::String(s))
            if s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("false") =>
        {
            Some(s.eq_ignore_ascii_case("true"))
        }
        Some(other) => {
            return Err(EngineError::statement(format!(
                "Invalid value for WRAP_SINGLE_VALUE: expected true or false but got {other}"
            )));
        }
    };
    let unwrappable = matches!(value_format, Format::Kafka | Format::Delimited);
    if let Some(wrap) = declared {
        if !wrap && matches!(value_format, Format::Protobuf | Format::ProtobufNoSr) {
            return Err(EngineError::statement(format!(
                "Format '{}' does not support 'WRAP_SINGLE_VALUE' set to 'false'.",
                value_format.name()
            )));
        }
        if wrap && unwrappable {
            return Err(EngineError::statement(format!(
                "Format '{}' does not support 'WRAP_SINGLE_VALUE' set to 'true'.",
                value_format.name()
            )));
        }
        if value_columns != 1 {
            return Err(EngineError::statement(
                "'WRAP_SINGLE_VALUE' is only valid for single-field value schemas",
            ));
        }
    }
    Ok(declared.or_else(|| {
        let configured = session.get("ksql.persistence.wrap.single.values")?;
        (value_columns == 1 && !unwrappable).then(|| configured.eq_ignore_ascii_case("true"))
    }))
}

/// The `TIMESTAMP` column, which must exist and hold a time.
fn timestamp_column(props: &Properties, columns: &[Column]) -> Result<Option<String>> {
    let Some(ts) = string_property(props, "TIMESTAMP")?.map(|t| t.to_uppercase()) else {
        return Ok(None);
    };
    let column = columns
        .iter()
        .find(|c| c.name.eq_ignore_ascii_case(&ts))
        .ok_or_else(|| {
            EngineError::statement(format!(
                "The TIMESTAMP column set in the WITH clause does not exist in the schema: '{ts}'"
            ))
        })?;
    if !matches!(
        column.ty,
        SqlType::Bigint | SqlType::Timestamp | SqlType::String
    ) {
        return Err(EngineError::statement(format!(
            "Timestamp column, `{}`, should be LONG(INT64), TIMESTAMP, or a String with a timestamp_format specified.",
            column.name
        )));
    }
    Ok(Some(ts))
}

/// Parses a `WINDOW_SIZE` such as `'10 SECONDS'` into milliseconds.
pub fn parse_window_size(text: &str) -> Result<u64> {
    let invalid = || {
        EngineError::statement(format!(
            "Invalid value for WINDOW_SIZE: '{text}'. The window size should be a number followed by a time unit, such as '10 SECONDS'"
        ))
    };
    let mut parts = text.split_whitespace();
    let (Some(n), Some(unit), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(invalid());
    };
    let n: u64 = n.parse().map_err(|_| invalid())?;
    let unit_ms = match unit.to_ascii_uppercase().trim_end_matches('S') {
        "MILLISECOND" => 1,
        "SECOND" => 1_000,
        "MINUTE" => 60_000,
        "HOUR" => 3_600_000,
        "DAY" => 86_400_000,
        _ => return Err(invalid()),
    };
    Ok(n.saturating_mul(unit_ms))
}

/// Who declares a source being built, which decides the names its columns may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeclaredBy {
    /// A `CREATE STREAM|TABLE` statement.
    User,
    /// A persistent query's sink: its key may be named after a pseudo-column.
    PersistentQuery,
    /// A push or pull query's rows: any column may be a pseudo-column or window bound.
    TransientQuery,
}

/// A source declared by `sql` (one `CREATE STREAM|TABLE`) in an empty catalog, for tests.
#[cfg(test)]
pub(crate) fn declared(sql: &str) -> DataSource {
    let parsed = eddy_sql::parse_statements(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let eddy_sql::ast::StatementKind::CreateSource(create) = &parsed[0].statement.kind else {
        panic!("not a CREATE: {sql}");
    };
    Catalog::default()
        .build_source(create, sql, &HashMap::new())
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}
