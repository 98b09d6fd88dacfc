//! What the registry formats add to statements, as ksqlDB's schema injectors do: a `CREATE`
//! without columns takes them from the subject's latest schema, and the schemas Eddy writes
//! with are registered before anything is written with them.

use eddy_registry::{Parsed, SchemaRequest, SchemaType, VersionSpec};
use eddy_sql::ast::{
    ColumnConstraint, CreateSource, Ident, Literal, SourceKind, Statement, StatementKind,
    TableElement,
};

use crate::catalog::{Catalog, DataSource};
use crate::codec::avro::schema::{self, Names, UNWRAPPED_KEY, UNWRAPPED_VALUE};
use crate::codec::{json_sr, protobuf};
use crate::engine::Engine;
use crate::error::{EngineError, Result};
use crate::format::{Format, FormatSpec};
use crate::schema::{Column, type_display};
use crate::session::Session;

/// The registry subject of a topic's keys or values.
pub fn subject(topic: &str, key: bool) -> String {
    format!("{topic}-{}", if key { "key" } else { "value" })
}

impl Engine {
    /// `create` with the columns it leaves to the registry filled in from its topic's
    /// subjects (their latest schemas, or the ones `KEY_SCHEMA_ID` / `VALUE_SCHEMA_ID` name),
    /// and the statement text that declares them; `None` when it declares all it needs.
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
        for (side, spec, declared) in [
            ("KEY", &key_format, has_keys),
            ("VALUE", &value_format, has_values),
        ] {
            if spec.schema_id.is_some() && declared {
                return Err(EngineError::statement(format!(
                    "Table elements and {side}_SCHEMA_ID cannot both exist for create statement."
                )));
            }
        }
        let infer_keys = infers(key_format.format) && !has_keys;
        let infer_values = infers(value_format.format) && !has_values;
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
            // Keys are inferred unwrapped: a record key is one STRUCT column.
            for (name, ty) in self
                .registered_columns(topic, true, &key_format, false)
                .await?
            {
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
            for (name, ty) in self
                .registered_columns(topic, false, &value_format, wrapped)
                .await?
            {
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

    /// The columns a topic's key or value schema gives: the one the format's schema id names,
    /// with its field names as written, or the subject's latest, with them upper-cased (as
    /// ksqlDB's translation policies have it).
    async fn registered_columns(
        &self,
        topic: &str,
        key: bool,
        spec: &FormatSpec,
        wrapped: bool,
    ) -> Result<Vec<(String, eddy_sql::ast::SqlType)>> {
        let subject = subject(topic, key);
        let id = spec.schema_id;
        let missing = || {
            EngineError::statement(format!(
                "Schema for message {} on topic '{topic}' does not exist in the Schema Registry.\nSubject: {subject}{}",
                if key { "keys" } else { "values" },
                id.map(|id| format!("\nSchema Id: {id}"))
                    .unwrap_or_default()
            ))
        };
        let (id, names) = match id {
            Some(id) => (id, Names::Original),
            None => (
                self.registry
                    .version(&subject, VersionSpec::Latest, false)
                    .await
                    .map_err(|_| missing())?
                    .id,
                Names::Upper,
            ),
        };
        let parsed = self
            .parsed_schema(id, spec.format, &subject, key)?
            .ok_or_else(missing)?;
        let single = if key { UNWRAPPED_KEY } else { UNWRAPPED_VALUE };
        let cannot = |e: EngineError| {
            EngineError::statement(format!(
                "Cannot infer the columns of {topic} from subject {subject}: {e}"
            ))
        };
        match parsed {
            Parsed::Avro(avro) => schema::infer(&avro, wrapped, single, names).map_err(cannot),
            Parsed::Protobuf(proto) => {
                let (message, _) = protobuf::named_message(&proto, spec.full_name.as_deref())
                    .map_err(|_| missing())?;
                protobuf::schema::infer(&message, names).map_err(cannot)
            }
            Parsed::Json(_) => {
                let text = self.registry.schema_by_id(id).ok_or_else(missing)?.schema;
                json_sr::infer(&text, wrapped, single, names).map_err(cannot)
            }
        }
    }

    /// Schema `id` parsed, once it is of `format`'s type; `None` when no schema has the id.
    fn parsed_schema(
        &self,
        id: u32,
        format: Format,
        subject: &str,
        key: bool,
    ) -> Result<Option<Parsed>> {
        let Some(text) = self.registry.schema_by_id(id) else {
            return Ok(None);
        };
        let expected = match format {
            Format::Protobuf => SchemaType::Protobuf,
            Format::JsonSr => SchemaType::Json,
            _ => SchemaType::Avro,
        };
        if text.schema_type != expected {
            return Err(EngineError::statement(format!(
                "{} schema is not in the expected format. You may want to set {}_FORMAT to '{}'.\nSubject: {subject}",
                if key { "Key" } else { "Value" },
                if key { "KEY" } else { "VALUE" },
                text.schema_type
            )));
        }
        self.registry.parsed_by_id(id).map_err(|e| {
            EngineError::statement(format!(
                "The schema {id} of subject {subject} cannot be read: {e}"
            ))
        })
    }

    /// Registers the schemas `source`'s registry formats write with under its topic's
    /// subjects: always (`CREATE ... AS SELECT`, inserts), or only where the subject has
    /// no schema yet (`CREATE` with columns), as ksqlDB does. A side with a schema id
    /// registers that schema, once its columns are known to be the schema's.
    pub(crate) async fn register_schemas(&self, source: &DataSource, always: bool) -> Result<()> {
        let keys: Vec<&Column> = source.key_columns().collect();
        let values: Vec<&Column> = source.value_columns().collect();
        let sides = [
            (true, &source.key_format, keys, false),
            (
                false,
                &source.value_format,
                values,
                source.wrap_single_value.unwrap_or(true),
            ),
        ];
        for (key, spec, columns, wrapped) in sides {
            if !infers(spec.format) || columns.is_empty() {
                continue;
            }
            let subject = subject(&source.topic, key);
            if let Some(id) = spec.schema_id {
                self.register_by_id(source, key, spec, id, &columns, wrapped)
                    .await?;
                continue;
            }
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
            let request = match spec.format {
                Format::Protobuf => protobuf::schema::registry_request(
                    &named,
                    spec.full_name.as_deref(),
                    spec.protobuf_nullable,
                )?,
                Format::JsonSr => json_sr::registry_request(&named, wrapped)?,
                _ => schema::registry_request(&named, wrapped, spec.full_name.as_deref())?,
            };
            self.registry
                .register(&subject, &request)
                .await
                .map_err(|e| {
                    EngineError::statement(format!("Could not register schema for topic: {e}"))
                })?;
        }
        Ok(())
    }

    /// Registers the schema `id` names under the subject of `source`'s key or value, once
    /// `columns` are its columns in order (a sink's query may write a subset of them, the
    /// rest by their defaults); the registration must answer the same id.
    async fn register_by_id(
        &self,
        source: &DataSource,
        key: bool,
        spec: &FormatSpec,
        id: u32,
        columns: &[&Column],
        wrapped: bool,
    ) -> Result<()> {
        let side = if key { "KEY" } else { "VALUE" };
        let topic = &source.topic;
        let subject = subject(topic, key);
        let missing = || {
            EngineError::statement(format!(
                "Schema for message {} on topic '{topic}' does not exist in the Schema Registry.\nSubject: {subject}\nSchema Id: {id}",
                if key { "keys" } else { "values" },
            ))
        };
        let registered = self.registry.schema(id).await.map_err(|_| missing())?;
        let expected = match spec.format {
            Format::Protobuf => SchemaType::Protobuf,
            Format::JsonSr => SchemaType::Json,
            _ => SchemaType::Avro,
        };
        if registered.schema_type != expected {
            return Err(EngineError::statement(format!(
                "Format and fetched schema type using {side}_SCHEMA_ID {id} are different. Format: [{}], Fetched schema type: [{}].",
                spec.format.name(),
                registered.schema_type
            )));
        }
        let single = if key { UNWRAPPED_KEY } else { UNWRAPPED_VALUE };
        let parsed = self
            .parsed_schema(id, spec.format, &subject, key)?
            .ok_or_else(missing)?;
        let physical = match parsed {
            Parsed::Avro(avro) => schema::infer(&avro, wrapped, single, Names::Original)?,
            Parsed::Protobuf(proto) => {
                let (message, _) = protobuf::named_message(&proto, spec.full_name.as_deref())?;
                protobuf::schema::infer(&message, Names::Original)?
            }
            Parsed::Json(_) => {
                json_sr::infer(&registered.schema, wrapped, single, Names::Original)?
            }
        };
        let shown =
            |name: &str, ty: &eddy_sql::ast::SqlType| format!("`{name}` {}", type_display(ty));
        let differing: Vec<String> = columns
            .iter()
            .enumerate()
            .filter(|(i, c)| {
                physical.get(*i).is_none_or(|(name, ty)| {
                    *name != c.name || type_display(ty) != type_display(&c.ty)
                })
            })
            .map(|(_, c)| shown(&c.name, &c.ty))
            .collect();
        if !differing.is_empty() {
            return Err(EngineError::statement(format!(
                "The following {} columns are changed, missing or reordered: [{}]. Schema from schema registry is [{}]",
                side.to_lowercase(),
                differing.join(", "),
                physical
                    .iter()
                    .map(|(name, ty)| shown(name, ty))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let request = SchemaRequest {
            schema: registered.schema.clone(),
            schema_type: registered.schema_type,
            references: registered.references.clone(),
        };
        let got = self
            .registry
            .register(&subject, &request)
            .await
            .map_err(|e| {
                EngineError::statement(format!("Could not register schema for topic: {e}"))
            })?;
        if got != id {
            return Err(EngineError::statement(format!(
                "Schema id registered is {got} which is different from provided {side}_SCHEMA_ID {id}.\nTopic: {topic}\nSubject: {subject}\nSchema: {}",
                registered.schema
            )));
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

/// Whether a format's columns come from (and its schemas go to) the registry.
fn infers(format: Format) -> bool {
    matches!(format, Format::Avro | Format::Protobuf | Format::JsonSr)
}
