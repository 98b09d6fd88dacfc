//! What the registry formats add to statements, as ksqlDB's schema injectors do: a `CREATE`
//! without columns takes them from the subject's latest schema, and the schemas Eddy writes
//! with are registered before anything is written with them.

use eddy_registry::{SchemaType, VersionSpec};
use eddy_sql::ast::{
    ColumnConstraint, CreateSource, Ident, Literal, SourceKind, Statement, StatementKind,
    TableElement,
};

use crate::catalog::{Catalog, DataSource};
use crate::codec::avro::schema::{self, UNWRAPPED_KEY, UNWRAPPED_VALUE};
use crate::engine::Engine;
use crate::error::{EngineError, Result};
use crate::format::Format;
use crate::schema::Column;
use crate::session::Session;

/// The registry subject of a topic's keys or values.
pub fn subject(topic: &str, key: bool) -> String {
    format!("{topic}-{}", if key { "key" } else { "value" })
}

impl Engine {
    /// `create` with the columns it leaves to the registry filled in from the latest schemas
    /// of its topic's subjects, and the statement text that declares them; `None` when it
    /// declares all it needs.
    pub(super) async fn infer_columns(
        &self,
        create: &CreateSource,
        session: &Session,
    ) -> Result<Option<(CreateSource, String)>> {
        let (key_format, value_format) = Catalog::declared_formats(create, &session.properties)?;
        let elements = create.elements.clone().unwrap_or_default();
        let has_keys = elements.iter().any(|e| {
            matches!(
                e.constraint,
                Some(ColumnConstraint::Key | ColumnConstraint::PrimaryKey)
            )
        });
        let has_values = elements.iter().any(|e| e.constraint.is_none());
        let infer_keys = key_format.format == Format::Avro && !has_keys;
        let infer_values = value_format.format == Format::Avro && !has_values;
        if !infer_keys && !infer_values {
            return Ok(None);
        }
        let Some(Literal::String(topic)) = create.properties.get("KAFKA_TOPIC") else {
            // Building the source reports the missing topic.
            return Ok(None);
        };
        let mut inferred: Vec<TableElement> = Vec::new();
        if infer_keys {
            let constraint = match create.kind {
                SourceKind::Stream => ColumnConstraint::Key,
                SourceKind::Table => ColumnConstraint::PrimaryKey,
            };
            for (name, ty) in self.latest_columns(topic, true, false).await? {
                inferred.push(element(&name, ty, Some(constraint.clone())));
            }
        }
        // Declared keys and headers keep their place before the values.
        inferred.extend(elements.iter().filter(|e| e.constraint.is_some()).cloned());
        if infer_values {
            let wrapped = !matches!(
                create.properties.get("WRAP_SINGLE_VALUE"),
                Some(Literal::Boolean(false))
            );
            for (name, ty) in self.latest_columns(topic, false, wrapped).await? {
                inferred.push(element(&name, ty, None));
            }
        }
        inferred.extend(elements.iter().filter(|e| e.constraint.is_none()).cloned());
        let mut filled = create.clone();
        filled.elements = Some(inferred);
        let text = Statement {
            kind: StatementKind::CreateSource(filled.clone()),
            span: Default::default(),
        }
        .to_string()
            + ";";
        Ok(Some((filled, text)))
    }

    /// The columns the latest schema of a topic's key or value subject gives.
    async fn latest_columns(
        &self,
        topic: &str,
        key: bool,
        wrapped: bool,
    ) -> Result<Vec<(String, eddy_sql::ast::SqlType)>> {
        let subject = subject(topic, key);
        let latest = self
            .registry
            .version(&subject, VersionSpec::Latest, false)
            .await
            .map_err(|_| {
                EngineError::statement(format!(
                    "Schema for message {} on topic '{topic}' does not exist in the Schema Registry.\nSubject: {subject}",
                    if key { "keys" } else { "values" }
                ))
            })?;
        if latest.schema.schema_type != SchemaType::Avro {
            return Err(EngineError::statement(format!(
                "The latest schema of subject {subject} is {}, not AVRO",
                latest.schema.schema_type
            )));
        }
        let parsed = apache_avro::Schema::parse_str(&latest.schema.schema).map_err(|e| {
            EngineError::statement(format!(
                "The latest schema of subject {subject} cannot be read: {e}"
            ))
        })?;
        let single = if key { UNWRAPPED_KEY } else { UNWRAPPED_VALUE };
        schema::infer(&parsed, key || wrapped, single).map_err(|e| {
            EngineError::statement(format!(
                "Cannot infer the columns of {topic} from subject {subject}: {e}"
            ))
        })
    }

    /// Registers the schemas `source`'s registry formats write with under its topic's
    /// subjects: always (`CREATE ... AS SELECT`, inserts), or only where the subject has
    /// no schema yet (`CREATE` with columns), as ksqlDB does.
    pub(crate) async fn register_schemas(&self, source: &DataSource, always: bool) -> Result<()> {
        let keys: Vec<&Column> = source.key_columns().collect();
        let values: Vec<&Column> = source.value_columns().collect();
        let sides = [
            (true, source.key_format.format, keys, false),
            (
                false,
                source.value_format.format,
                values,
                source.wrap_single_value.unwrap_or(true),
            ),
        ];
        for (key, format, columns, wrapped) in sides {
            if format != Format::Avro || columns.is_empty() {
                continue;
            }
            let subject = subject(&source.topic, key);
            if !always
                && self
                    .registry
                    .versions(&subject, false)
                    .await
                    .is_ok_and(|v| !v.is_empty())
            {
                continue;
            }
            let named: Vec<(&str, &eddy_sql::ast::SqlType)> =
                columns.iter().map(|c| (c.name.as_str(), &c.ty)).collect();
            let request = schema::registry_request(&named, wrapped)?;
            self.registry
                .register(&subject, &request)
                .await
                .map_err(|e| {
                    EngineError::statement(format!("Could not register schema for topic: {e}"))
                })?;
        }
        Ok(())
    }
}

fn element(
    name: &str,
    ty: eddy_sql::ast::SqlType,
    constraint: Option<ColumnConstraint>,
) -> TableElement {
    TableElement {
        name: Ident::exact(name),
        ty,
        constraint,
        span: Default::default(),
    }
}
