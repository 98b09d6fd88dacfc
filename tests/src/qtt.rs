//! Runs ksqlDB query-validation-test cases against Eddy's engine, with ksqlDB's rules: statements
//! in order, and a case that expects an exception passes only when a statement fails with a
//! message containing the expected text.
//!
//! Inputs are appended one at a time, each followed by a wait until every query has processed
//! it, so outputs come in a deterministic order; they are then compared exactly and in order.

use std::collections::BTreeMap;

use eddy_engine::format::Format;
use eddy_engine::schema::{ColumnKind, type_display};
use eddy_engine::{Engine, Session};
use eddy_sql::ast::{ColumnConstraint, Literal, SourceKind, StatementKind};
use eddy_sql::{ParseOptions, parse_statements_with};
use eddy_storage::{Store, StoreOptions, SyncPolicy, TopicConfig};
use serde_json::Value;

use crate::conformance::ConformanceCase;
use crate::qtt_records::Writer;
use crate::qtt_records::{
    expected_through_schema, input_record, output_json, output_window, same_json, same_json_within,
    source_for_topic,
};

/// Topics a case needs before its statements run: listed ones, those of its records, and those
/// its `CREATE` statements declare over, each with its partition count (1 unless given).
pub fn topics_of(case: &ConformanceCase) -> BTreeMap<String, u32> {
    let mut topics = BTreeMap::new();
    let mut unsized_topics = Vec::new();
    for topic in case
        .raw
        .get("topics")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(name) = topic.get("name").and_then(Value::as_str) {
            match topic.get("partitions").and_then(Value::as_u64) {
                Some(partitions) => {
                    topics.insert(name.to_string(), (partitions as u32).max(1));
                }
                // A topic listed without partitions takes a CREATE statement's, if any.
                None => unsized_topics.push(name.to_string()),
            }
        }
    }
    for sql in &case.statements {
        let Ok(parsed) = parse_statements_with(sql, ParseOptions::all()) else {
            continue;
        };
        for p in parsed {
            if let StatementKind::CreateSource(create) = &p.statement.kind
                && let Some(Literal::String(topic)) = create.properties.get("KAFKA_TOPIC")
            {
                let partitions = match create.properties.get("PARTITIONS") {
                    Some(Literal::Integer(n)) if *n > 0 => *n as u32,
                    _ => 1,
                };
                topics.entry(topic.clone()).or_insert(partitions);
            }
        }
    }
    for name in unsized_topics {
        topics.entry(name).or_insert(1);
    }
    for key in ["inputs", "outputs"] {
        for record in case
            .raw
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(name) = record.get("topic").and_then(Value::as_str) {
                topics.entry(name.to_string()).or_insert(1);
            }
        }
    }
    topics
}

/// Whether the case has input or output records.
pub fn has_records(case: &ConformanceCase) -> bool {
    ["inputs", "outputs"].iter().any(|k| {
        case.raw
            .get(*k)
            .and_then(Value::as_array)
            .is_some_and(|records| !records.is_empty())
    })
}

/// Checks the `post.sources` expectations: each source exists with its kind and schema.
async fn check_post_sources(engine: &Engine, case: &ConformanceCase) -> Result<(), String> {
    let catalog = engine.catalog().await;
    let sources = case.raw.pointer("/post/sources").and_then(Value::as_array);
    for expected in sources.into_iter().flatten() {
        let Some(name) = expected.get("name").and_then(Value::as_str) else {
            continue;
        };
        let Some(source) = catalog.source(name) else {
            return Err(format!("source {name} was not created"));
        };
        if let Some(kind) = expected.get("type").and_then(Value::as_str) {
            let ours = match source.kind {
                SourceKind::Stream => "stream",
                SourceKind::Table => "table",
            };
            if !kind.eq_ignore_ascii_case(ours) {
                return Err(format!("{name} is a {ours}, expected a {kind}"));
            }
        }
        if let Some(schema) = expected.get("schema").and_then(Value::as_str) {
            let elements = eddy_sql::parse_schema(schema)
                .map_err(|e| format!("expected schema of {name}: {e}"))?;
            let render = |key: bool, name: &str, ty: String| {
                format!("{name} {ty}{}", if key { " KEY" } else { "" })
            };
            let mut want: Vec<(bool, String)> = elements
                .iter()
                .map(|e| {
                    let key = matches!(
                        e.constraint,
                        Some(ColumnConstraint::Key | ColumnConstraint::PrimaryKey)
                    );
                    (!key, render(key, &e.name.value, type_display(&e.ty)))
                })
                .collect();
            let mut have: Vec<(bool, String)> = source
                .columns
                .iter()
                .map(|c| {
                    let key = c.kind == ColumnKind::Key;
                    (!key, render(key, &c.name, type_display(&c.ty)))
                })
                .collect();
            want.sort_by_key(|(value, _)| *value);
            have.sort_by_key(|(value, _)| *value);
            if want != have {
                let show = |cols: &[(bool, String)]| {
                    cols.iter()
                        .map(|(_, c)| c.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                return Err(format!(
                    "{name} has schema [{}], expected [{}]",
                    show(&have),
                    show(&want)
                ));
            }
        }
    }
    Ok(())
}

/// Runs one case on a fresh store in a temporary directory.
pub async fn run_case(case: &ConformanceCase) -> Result<(), String> {
    let (dir, engine) = open_case_engine(case).await?;
    let outcome = run_statements_and_records(&engine, case).await;
    close_case_engine(&engine).await?;
    drop(engine);
    drop(dir);
    outcome
}

/// An engine on a fresh store in a temporary directory (returned, to be dropped after the
/// engine is closed), with the topics the case needs already created and their declared
/// schemas registered.
pub async fn open_case_engine(
    case: &ConformanceCase,
) -> Result<(tempfile::TempDir, Engine), String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let store = Store::open(
        dir.path(),
        StoreOptions {
            sync: SyncPolicy::Os,
            ..StoreOptions::default()
        },
    )
    .map_err(|e| format!("cannot open a store: {e}"))?;
    for (topic, partitions) in topics_of(case) {
        if eddy_storage::validate_topic_name(&topic).is_ok() {
            store
                .create_topic(&topic, TopicConfig::with_partitions(partitions))
                .map_err(|e| format!("cannot create topic {topic}: {e}"))?;
        }
    }
    let engine = Engine::open(store)
        .await
        .map_err(|e| format!("cannot open the engine: {e}"))?;
    register_topic_schemas(&engine, case).await?;
    Ok((dir, engine))
}

/// Stops the engine's queries and closes its store, so no task keeps running and no deleted
/// file keeps its disk space once the directory goes.
pub async fn close_case_engine(engine: &Engine) -> Result<(), String> {
    engine.shutdown().await;
    let closing = engine.store().clone();
    match tokio::task::spawn_blocking(move || closing.close()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("closing the store failed: {e}")),
        Err(e) => Err(format!("closing the store failed: {e}")),
    }
}

async fn run_statements_and_records(engine: &Engine, case: &ConformanceCase) -> Result<(), String> {
    let mut session = Session::default();
    session
        .properties
        .insert("cache.max.bytes.buffering".into(), "0".into());
    session.properties.extend(case.properties.iter().cloned());

    // As ksqlDB's runner does, the statements run as one script, so positions in errors count
    // lines from the first statement.
    if let Err(err) = engine
        .execute(&mut session, &case.statements.join("\n"))
        .await
    {
        let message = err.to_string();
        return match &case.expected_error {
            Some(expected) if message.contains(expected.as_str()) => Ok(()),
            Some(expected) => Err(format!(
                "failed with another message: `{message}`; expected `{expected}`"
            )),
            None => Err(format!("`{}` failed: {message}", err.statement)),
        };
    }
    if let Some(expected) = &case.expected_error {
        return Err(format!("did not fail; expected `{expected}`"));
    }
    if has_records(case) {
        run_records(engine, case).await?;
    }
    check_post_sources(engine, case).await
}

/// Registers the AVRO schemas the case's `topics` declare (`keySchema`, `valueSchema`) under
/// their subjects, as ksqlDB's runner does before the statements run.
///
/// ksqlDB's runner registers with Confluent's `MockSchemaRegistryClient`, which checks no
/// compatibility, so the cases' expectations were made without it: the registry's level is
/// set to `NONE` to run them the same way (Eddy's levels are tested with real clients).
async fn register_topic_schemas(engine: &Engine, case: &ConformanceCase) -> Result<(), String> {
    engine
        .schema_registry()
        .set_level(None, eddy_registry::Level::None)
        .await
        .map_err(|e| format!("cannot set the registry's level: {e}"))?;
    let topics = case.raw.get("topics").and_then(Value::as_array);
    for topic in topics.into_iter().flatten() {
        let Some(name) = topic.get("name").and_then(Value::as_str) else {
            continue;
        };
        for (side, schema_key, format_key) in [
            ("key", "keySchema", "keyFormat"),
            ("value", "valueSchema", "valueFormat"),
        ] {
            let Some(schema) = topic.get(schema_key) else {
                continue;
            };
            let format = topic.get(format_key).and_then(Value::as_str);
            // A Protobuf schema is its .proto text; an Avro one is JSON.
            let (schema_type, text) = match (format, schema) {
                (Some(f), Value::String(text)) if f.eq_ignore_ascii_case("PROTOBUF") => {
                    (eddy_registry::SchemaType::Protobuf, text.clone())
                }
                (Some(f), _)
                    if f.eq_ignore_ascii_case("JSON") || f.eq_ignore_ascii_case("JSON_SR") =>
                {
                    (eddy_registry::SchemaType::Json, schema.to_string())
                }
                (Some(f), _) if !f.eq_ignore_ascii_case("AVRO") => continue,
                _ => (eddy_registry::SchemaType::Avro, schema.to_string()),
            };
            // Referenced schemas are registered under their own names first, as ksqlDB's
            // runner registers them.
            let mut references = Vec::new();
            let referenced = topic
                .get(format!("{side}SchemaReferences"))
                .and_then(Value::as_array);
            for reference in referenced.into_iter().flatten() {
                let (Some(ref_name), Some(ref_text)) = (
                    reference.get("name").and_then(Value::as_str),
                    reference.get("schema").and_then(Value::as_str),
                ) else {
                    continue;
                };
                let request = eddy_registry::SchemaRequest {
                    schema: ref_text.to_string(),
                    schema_type,
                    references: Vec::new(),
                };
                engine
                    .schema_registry()
                    .register(ref_name, &request)
                    .await
                    .map_err(|e| format!("cannot register the reference {ref_name}: {e}"))?;
                references.push(eddy_registry::Reference {
                    name: ref_name.to_string(),
                    subject: ref_name.to_string(),
                    version: 1,
                });
            }
            let request = eddy_registry::SchemaRequest {
                schema: text,
                schema_type,
                references,
            };
            // A schema the case gives an id is imported at that id, as a migration would.
            let id = topic
                .get(format!("{side}SchemaId"))
                .and_then(Value::as_u64)
                .and_then(|id| u32::try_from(id).ok());
            let subject = format!("{name}-{side}");
            let registry = engine.schema_registry();
            let failed = |e: eddy_registry::RegistryError| {
                format!("cannot register the {side} schema of {name}: {e}")
            };
            if id.is_some() {
                registry
                    .set_mode(Some(&subject), eddy_registry::Mode::Import, false)
                    .await
                    .map_err(failed)?;
            }
            let at = eddy_registry::Placement { id, version: None };
            registry
                .register_at(&subject, &request, at)
                .await
                .map_err(failed)?;
            if id.is_some() {
                registry.delete_mode(Some(&subject)).await.map_err(failed)?;
            }
        }
    }
    Ok(())
}

/// How long one input may take to flow through every query.
const PROCESSING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Feeds the inputs one at a time, then compares every output topic with the expected records.
async fn run_records(engine: &Engine, case: &ConformanceCase) -> Result<(), String> {
    append_inputs(engine, case, true).await?;
    check_outputs(engine, case).await
}

fn records(case: &ConformanceCase, key: &str) -> Vec<Value> {
    case.raw
        .get(key)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Appends the case's inputs in file order; with `each`, waits after each one until every
/// query has processed it, else once after the last.
pub async fn append_inputs(
    engine: &Engine,
    case: &ConformanceCase,
    each: bool,
) -> Result<(), String> {
    let catalog = engine.catalog().await;
    let store = engine.store();
    let inputs = records(case, "inputs");
    // The schemas each topic's AVRO keys and values are written with, looked up once.
    let mut writers: BTreeMap<String, [Option<Writer>; 2]> = BTreeMap::new();
    for (i, input) in inputs.iter().enumerate() {
        let topic = input
            .get("topic")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("input {i} has no topic"))?;
        let source = source_for_topic(&catalog, topic);
        if !writers.contains_key(topic) {
            writers.insert(topic.to_string(), avro_writers(engine, topic, source).await);
        }
        let [key_writer, value_writer] = &writers[topic];
        let record = input_record(input, source, [key_writer.as_ref(), value_writer.as_ref()])
            .map_err(|e| format!("input {i}: {e}"))?;
        let result = match input.get("partition").and_then(Value::as_u64) {
            Some(p) => store
                .append(topic, p as u32, vec![record])
                .await
                .map(|_| ()),
            None => store.produce(topic, vec![record]).await.map(|_| ()),
        };
        result.map_err(|e| format!("cannot append input {i} to {topic}: {e}"))?;
        if (each || i + 1 == inputs.len()) && !engine.wait_until_processed(PROCESSING_TIMEOUT).await
        {
            return Err(format!(
                "input {i} was not processed within {PROCESSING_TIMEOUT:?}"
            ));
        }
    }
    Ok(())
}

/// The latest schemas of `topic`'s key and value subjects, where `source` reads them as AVRO.
async fn avro_writers(
    engine: &Engine,
    topic: &str,
    source: Option<&eddy_engine::catalog::DataSource>,
) -> [Option<Writer>; 2] {
    let mut writers = [None, None];
    let Some(source) = source else {
        return writers;
    };
    let sides = [(&source.key_format, "key"), (&source.value_format, "value")];
    for (writer, (spec, side)) in writers.iter_mut().zip(sides) {
        let format = spec.format;
        let subject = format!("{topic}-{side}");
        let registry = engine.schema_registry();
        *writer = match format {
            Format::Avro => crate::qtt_avro::Writer::latest(registry, &subject)
                .await
                .map(Writer::Avro),
            Format::Protobuf => {
                crate::qtt_protobuf::Writer::latest(registry, &subject, spec.full_name.as_deref())
                    .await
                    .map(Writer::Protobuf)
            }
            Format::JsonSr => registry
                .version(&subject, eddy_registry::VersionSpec::Latest, false)
                .await
                .ok()
                .map(|v| Writer::JsonSr(v.id)),
            Format::ProtobufNoSr => {
                let columns: Vec<&eddy_engine::schema::Column> = if side == "key" {
                    source.key_columns().collect()
                } else {
                    source.value_columns().collect()
                };
                crate::qtt_protobuf::Writer::without_registry(&columns, spec).map(Writer::Protobuf)
            }
            _ => None,
        };
    }
    writers
}

/// Compares every topic the case expects output records on with what is in it, exactly and in
/// order.
pub async fn check_outputs(engine: &Engine, case: &ConformanceCase) -> Result<(), String> {
    let catalog = engine.catalog().await;
    let store = engine.store();
    let expected = records(case, "outputs");
    let mut topics: Vec<&str> = Vec::new();
    for output in &expected {
        if let Some(t) = output.get("topic").and_then(Value::as_str)
            && !topics.contains(&t)
        {
            topics.push(t);
        }
    }
    let places = case
        .properties
        .iter()
        .any(|(k, v)| k == "use.exact.numeric.comparison" && v.eq_ignore_ascii_case("false"))
        .then_some(6);
    for topic in topics {
        let sink = source_for_topic(&catalog, topic);
        let mut actual = Vec::new();
        if store.topic_exists(topic) {
            let partitions = store.partition_count(topic).map_err(|e| e.to_string())?;
            for p in 0..partitions {
                let mut offset = store
                    .log_start_offset(topic, p)
                    .map_err(|e| e.to_string())?;
                loop {
                    let fetched = store
                        .read_records(topic, p, offset, 1 << 20)
                        .map_err(|e| e.to_string())?;
                    if fetched.next_offset <= offset {
                        break;
                    }
                    offset = fetched.next_offset;
                    actual.extend(fetched.records.into_iter().map(|r| r.record));
                }
            }
        }
        let wanted: Vec<&Value> = expected
            .iter()
            .filter(|o| o.get("topic").and_then(Value::as_str) == Some(topic))
            .collect();
        for (i, want) in wanted.iter().enumerate() {
            let Some(record) = actual.get(i) else {
                return Err(format!(
                    "{topic}: expected {} records, got {}; missing {}",
                    wanted.len(),
                    actual.len(),
                    compact(want)
                ));
            };
            let (key, value) = output_json(record, sink, engine.schema_registry());
            let null = Value::Null;
            let want_key = want.get("key").unwrap_or(&null);
            let want_value = &expected_through_schema(want.get("value").unwrap_or(&null), sink);
            let mut problems = Vec::new();
            if !same_json(want_key, &key) {
                problems.push(format!("key {key}, expected {want_key}"));
            }
            if !same_json_within(want_value, &value, places) {
                problems.push(format!("value {value}, expected {want_value}"));
            }
            if let Some(want_window) = want.get("window") {
                let window = output_window(record, sink);
                let same = window.as_ref().is_some_and(|w| {
                    ["start", "end"]
                        .iter()
                        .all(|k| same_json(&want_window[*k], &w[*k]))
                        && want_window
                            .get("type")
                            .and_then(Value::as_str)
                            .is_none_or(|t| {
                                w["type"]
                                    .as_str()
                                    .is_some_and(|u| u.eq_ignore_ascii_case(t))
                            })
                });
                if !same {
                    problems.push(format!(
                        "window {}, expected {want_window}",
                        window.unwrap_or(Value::Null)
                    ));
                }
            }
            if let Some(ts) = want.get("timestamp").and_then(Value::as_i64)
                && ts != record.timestamp
            {
                problems.push(format!("timestamp {}, expected {ts}", record.timestamp));
            }
            if !problems.is_empty() {
                return Err(format!("{topic} record {i}: {}", problems.join("; ")));
            }
        }
        if actual.len() > wanted.len() {
            let (key, value) = output_json(&actual[wanted.len()], sink, engine.schema_registry());
            return Err(format!(
                "{topic}: expected {} records, got {}; the first extra has key {key}, value {value}",
                wanted.len(),
                actual.len()
            ));
        }
    }
    Ok(())
}

fn compact(value: &Value) -> String {
    let text = value.to_string();
    if text.len() > 200 {
        format!("{}...", &text[..text.floor_char_boundary(200)])
    } else {
        text
    }
}
