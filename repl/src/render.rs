//! How the shell shows the server's answers: each ksqlDB entity (`SHOW`, `DESCRIBE`,
//! `EXPLAIN`, statuses) as a readable layout, and query rows as tables or JSON.

use serde_json::Value;

use crate::table::{key_values, render};

/// How results are printed (`OUTPUT TABULAR|JSON`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// Boxed tables and aligned layouts.
    #[default]
    Tabular,
    /// The server's JSON, pretty-printed.
    Json,
}

impl OutputFormat {
    /// The format named `name` (case-insensitive).
    pub fn parse(name: &str) -> Option<OutputFormat> {
        match name.to_ascii_uppercase().as_str() {
            "TABULAR" => Some(OutputFormat::Tabular),
            "JSON" => Some(OutputFormat::Json),
            _ => None,
        }
    }

    /// The format's name, as `output` shows it.
    pub fn name(self) -> &'static str {
        match self {
            OutputFormat::Tabular => "TABULAR",
            OutputFormat::Json => "JSON",
        }
    }
}

/// A value as a table cell: strings bare, null as `null`, anything else as JSON.
pub fn cell(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A `describe_function` entity as the ksql CLI prints it: the function, then each variation
/// with its arguments and return type.
fn function_description(entity: &Value) -> String {
    let name = text(&entity["name"]);
    let mut out = String::new();
    let mut line = |label: &str, value: &str| out.push_str(&format!("{label:<12}: {value}\n"));
    line("Name", &name);
    for (label, key) in [("Author", "author"), ("Version", "version")] {
        let value = text(&entity[key]);
        if !value.trim().is_empty() {
            line(label, &value);
        }
    }
    line("Overview", &text(&entity["description"]));
    line("Type", &text(&entity["type"]));
    line("Jar", &text(&entity["path"]));
    line("Variations", "");
    for variation in entity["functions"].as_array().into_iter().flatten() {
        let arguments: Vec<String> = variation["arguments"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                let variadic = if a["isVariadic"] == true { "[]" } else { "" };
                format!("{} {}{variadic}", text(&a["name"]), text(&a["type"]))
                    .trim()
                    .to_string()
            })
            .collect();
        out.push_str(&format!(
            "\n\t{:<12}: {name}({})\n",
            "Variation",
            arguments.join(", ")
        ));
        out.push_str(&format!(
            "\t{:<12}: {}\n",
            "Returns",
            text(&variation["returnType"])
        ));
        let description = text(&variation["description"]);
        if !description.trim().is_empty() {
            out.push_str(&format!("\t{:<12}: {description}\n", "Description"));
        }
    }
    out
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        other => cell(other),
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The entities `/ksql` answered, in `format`, within `width` columns.
pub fn entities(entities: &[Value], format: OutputFormat, width: usize) -> String {
    match format {
        OutputFormat::Json => {
            let mut text = serde_json::to_string_pretty(entities).unwrap_or_default();
            text.push('\n');
            text
        }
        OutputFormat::Tabular => entities
            .iter()
            .map(|e| entity(e, width))
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

/// `DESCRIBE CONNECTOR` as the ksql CLI lays it out: the connector, its tasks, its topics.
fn connector_description(entity: &Value, width: usize) -> String {
    let status = &entity["status"];
    let mut fields = vec![
        ("Name", text(&status["name"])),
        ("Class", text(&entity["connectorClass"])),
        ("Type", text(&status["type"])),
        ("State", text(&status["connector"]["state"])),
        ("WorkerId", text(&status["connector"]["worker_id"])),
    ];
    if !entity["lag"].is_null() {
        fields.push(("Lag (records)", text(&entity["lag"])));
    }
    if !entity["walLagBytes"].is_null() {
        fields.push(("Lag (WAL bytes)", text(&entity["walLagBytes"])));
    }
    let mut out = key_values(&fields);
    let tasks: Vec<Vec<String>> = status["tasks"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|t| vec![text(&t["id"]), text(&t["state"]), text(&t["trace"])])
        .collect();
    out.push('\n');
    out.push_str(&render(
        &strings(&["Task ID", "State", "Error Trace"]),
        &tasks,
        width,
    ));
    let topics: Vec<Vec<String>> = entity["topics"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|t| vec![text(t)])
        .collect();
    out.push('\n');
    out.push_str(&render(&strings(&["Related Topics"]), &topics, width));
    out
}

/// One entity as the ksql CLI lays it out.
pub fn entity(entity: &Value, width: usize) -> String {
    let list = |key: &str| entity[key].as_array().cloned().unwrap_or_default();
    match entity["@type"].as_str().unwrap_or_default() {
        "currentStatus" => render(
            &strings(&["Message"]),
            &[vec![text(&entity["commandStatus"]["message"])]],
            width,
        ),
        "warning_entity" => format!("WARNING: {}\n", text(&entity["message"])),
        "streams" | "tables" => {
            let kind = if entity["@type"] == "streams" {
                "Stream Name"
            } else {
                "Table Name"
            };
            let rows: Vec<Vec<String>> = list(entity["@type"].as_str().unwrap_or_default())
                .iter()
                .map(|s| {
                    vec![
                        text(&s["name"]),
                        text(&s["topic"]),
                        text(&s["keyFormat"]),
                        text(&s["valueFormat"]),
                        text(&s["isWindowed"]),
                    ]
                })
                .collect();
            render(
                &strings(&[
                    kind,
                    "Kafka Topic",
                    "Key Format",
                    "Value Format",
                    "Windowed",
                ]),
                &rows,
                width,
            )
        }
        "queries" => {
            let rows: Vec<Vec<String>> = list("queries")
                .iter()
                .map(|q| {
                    vec![
                        text(&q["id"]),
                        text(&q["queryType"]),
                        text(&q["state"]),
                        joined(&q["sinks"]),
                        joined(&q["sinkKafkaTopics"]),
                        text(&q["queryString"]),
                    ]
                })
                .collect();
            let mut out = render(
                &strings(&[
                    "Query ID",
                    "Query Type",
                    "Status",
                    "Sink Name",
                    "Sink Kafka Topic",
                    "Query String",
                ]),
                &rows,
                width,
            );
            out.push_str("For detailed information on a Query run: EXPLAIN <Query ID>;\n");
            out
        }
        "kafka_topics" => {
            let rows: Vec<Vec<String>> = list("topics")
                .iter()
                .map(|t| {
                    let replicas = t["replicaInfo"].as_array().cloned().unwrap_or_default();
                    vec![
                        text(&t["name"]),
                        replicas.len().to_string(),
                        replicas.iter().map(cell).collect::<Vec<_>>().join(" "),
                    ]
                })
                .collect();
            render(
                &strings(&["Kafka Topic", "Partitions", "Partition Replicas"]),
                &rows,
                width,
            )
        }
        "properties" => {
            let rows: Vec<Vec<String>> = list("properties")
                .iter()
                .map(|p| vec![text(&p["name"]), text(&p["scope"]), text(&p["value"])])
                .collect();
            render(&strings(&["Property", "Scope", "Value"]), &rows, width)
        }
        "variables" => {
            let rows: Vec<Vec<String>> = list("variables")
                .iter()
                .map(|v| vec![text(&v["name"]), text(&v["value"])])
                .collect();
            render(&strings(&["Variable Name", "Value"]), &rows, width)
        }
        "type_list" => {
            let rows: Vec<Vec<String>> = entity["types"]
                .as_object()
                .map(|types| {
                    types
                        .iter()
                        .map(|(name, schema)| vec![name.clone(), schema_text(schema)])
                        .collect()
                })
                .unwrap_or_default();
            render(&strings(&["Type Name", "Schema"]), &rows, width)
        }
        "function_names" => {
            let rows: Vec<Vec<String>> = list("functions")
                .iter()
                .map(|f| vec![text(&f["name"]), text(&f["type"])])
                .collect();
            render(&strings(&["Function Name", "Type"]), &rows, width)
        }
        "connector_info" => format!("Created connector {}\n", text(&entity["info"]["name"])),
        "drop_connector" => format!("Dropped connector \"{}\"\n", text(&entity["connectorName"])),
        "connector_list" => {
            let rows: Vec<Vec<String>> = list("connectors")
                .iter()
                .map(|c| {
                    vec![
                        text(&c["name"]),
                        text(&c["type"]),
                        text(&c["className"]),
                        text(&c["state"]),
                    ]
                })
                .collect();
            render(
                &strings(&["Connector Name", "Type", "Class", "Status"]),
                &rows,
                width,
            )
        }
        "connector_description" => connector_description(entity, width),
        "describe_function" => function_description(entity),
        "query_descriptions" => list("queryDescriptions")
            .iter()
            .map(|q| {
                key_values(&[
                    ("ID", text(&q["id"])),
                    ("Query Type", text(&q["queryType"])),
                    ("Status", text(&q["state"])),
                    ("SQL", text(&q["statementText"])),
                    ("Sources", joined(&q["sources"])),
                    ("Sinks", joined(&q["sinks"])),
                    ("Consumer lag", text(&q["consumerLag"])),
                    ("Statistics", text(&q["statistics"])),
                    ("Errors", text(&q["errorStats"])),
                ])
            })
            .collect::<Vec<_>>()
            .join("\n"),
        "sourceDescription" => source_description(&entity["sourceDescription"], width),
        "queryDescription" => query_description(&entity["queryDescription"], width),
        _ => {
            let mut out = serde_json::to_string_pretty(entity).unwrap_or_default();
            out.push('\n');
            out
        }
    }
}

fn joined(value: &Value) -> String {
    value
        .as_array()
        .map(|items| items.iter().map(cell).collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}

/// A field schema from `DESCRIBE` as SQL type text: `ARRAY<INTEGER>`, `STRUCT<A STRING>`.
pub fn schema_text(schema: &Value) -> String {
    let base = text(&schema["type"]);
    match base.as_str() {
        "ARRAY" => format!("ARRAY<{}>", schema_text(&schema["memberSchema"])),
        "MAP" => format!("MAP<STRING, {}>", schema_text(&schema["memberSchema"])),
        "STRUCT" => {
            let fields: Vec<String> = schema["fields"]
                .as_array()
                .map(|fields| {
                    fields
                        .iter()
                        .map(|f| format!("{} {}", text(&f["name"]), schema_text(&f["schema"])))
                        .collect()
                })
                .unwrap_or_default();
            format!("STRUCT<{}>", fields.join(", "))
        }
        _ => base,
    }
}

fn field_rows(fields: &Value, table: bool) -> Vec<Vec<String>> {
    fields
        .as_array()
        .map(|fields| {
            fields
                .iter()
                .map(|f| {
                    let mut ty = schema_text(&f["schema"]);
                    match f["type"].as_str() {
                        Some("KEY") if table => ty.push_str(" (primary key)"),
                        Some("KEY") => ty.push_str(" (key)"),
                        Some("HEADER") => ty.push_str(" (header)"),
                        _ => {}
                    }
                    vec![text(&f["name"]), ty]
                })
                .collect()
        })
        .unwrap_or_default()
}

fn source_description(source: &Value, width: usize) -> String {
    let kind = text(&source["type"]);
    let mut pairs = vec![("Name", text(&source["name"])), ("Type", kind.clone())];
    if let Some(timestamp) = source["timestamp"].as_str().filter(|t| !t.is_empty()) {
        pairs.push(("Timestamp field", timestamp.to_string()));
    }
    pairs.push(("Key format", text(&source["keyFormat"])));
    pairs.push(("Value format", text(&source["valueFormat"])));
    if let Some(window) = source["windowType"].as_str() {
        pairs.push(("Window type", window.to_string()));
    }
    pairs.push((
        "Kafka topic",
        format!(
            "{} (partitions: {}, replication: {})",
            text(&source["topic"]),
            text(&source["partitions"]),
            text(&source["replication"])
        ),
    ));
    pairs.push(("Statement", text(&source["statement"])));
    let mut out = key_values(&pairs);
    out.push('\n');
    out.push_str(&render(
        &strings(&["Field", "Type"]),
        &field_rows(&source["fields"], kind == "TABLE"),
        width,
    ));
    if source["extended"].as_bool() == Some(true) {
        for (title, key) in [
            ("Queries that read from this", "readQueries"),
            ("Queries that write from this", "writeQueries"),
        ] {
            let heading = format!("{title} {kind}");
            out.push_str(&format!("\n{heading}\n{}\n", "-".repeat(heading.len())));
            for q in source[key].as_array().cloned().unwrap_or_default() {
                out.push_str(&format!(
                    "{} ({}) : {}\n",
                    text(&q["id"]),
                    text(&q["state"]),
                    text(&q["queryString"])
                ));
            }
        }
        out.push_str(&format!(
            "\nRuntime statistics\n------------------\n{}\n{}\n",
            text(&source["statistics"]),
            text(&source["errorStats"])
        ));
    } else {
        out.push_str(
            "For runtime statistics and query details run: DESCRIBE <Stream,Table> EXTENDED;\n",
        );
    }
    out
}

fn query_description(query: &Value, width: usize) -> String {
    let mut out = key_values(&[
        ("ID", text(&query["id"])),
        ("Query Type", text(&query["queryType"])),
        ("SQL", text(&query["statementText"])),
    ]);
    out.push('\n');
    out.push_str(&render(
        &strings(&["Field", "Type"]),
        &field_rows(&query["fields"], false),
        width,
    ));
    out.push_str(&format!(
        "\nSources that this query reads from: \n-----------------------------------\n{}\n",
        joined(&query["sources"])
    ));
    out.push_str(&format!(
        "\nSinks that this query writes to: \n-----------------------------------\n{}\n",
        joined(&query["sinks"])
    ));
    let plan = text(&query["executionPlan"]);
    if !plan.is_empty() {
        out.push_str(&format!(
            "\nExecution plan      \n--------------      \n{plan}\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn statuses_print_their_message() {
        let status =
            json!({"@type": "currentStatus", "commandStatus": {"message": "Stream created"}});
        assert!(entity(&status, 80).contains("| Stream created |"));
    }

    #[test]
    fn a_function_description_prints_each_variation_as_the_ksql_cli_does() {
        let described = json!({"@type": "describe_function", "name": "CONCAT_WS",
            "author": "Eddy", "version": "", "description": "Joins its arguments.",
            "type": "SCALAR", "path": "internal", "functions": [
                {"arguments": [{"name": "inputs", "type": "VARCHAR", "isVariadic": true}],
                 "returnType": "VARCHAR", "description": ""}]});
        let text = entity(&described, 80);
        assert!(text.starts_with("Name        : CONCAT_WS\n"), "{text}");
        assert!(text.contains("Author      : Eddy\n"), "{text}");
        assert!(!text.contains("Version"), "{text}");
        assert!(
            text.contains("\tVariation   : CONCAT_WS(inputs VARCHAR[])\n\tReturns     : VARCHAR\n"),
            "{text}"
        );
    }

    #[test]
    fn stream_lists_have_ksql_columns() {
        let streams = json!({"@type": "streams", "streams": [
            {"name": "CLICKS", "topic": "clicks", "keyFormat": "KAFKA", "valueFormat": "JSON", "isWindowed": false}
        ]});
        let text = entity(&streams, 120);
        assert!(
            text.contains("| Stream Name | Kafka Topic | Key Format | Value Format | Windowed |")
        );
        assert!(
            text.contains("| CLICKS      | clicks      | KAFKA      | JSON         | false    |")
        );
    }

    #[test]
    fn descriptions_mark_keys_and_nest_types() {
        let description = json!({"@type": "sourceDescription", "sourceDescription": {
            "name": "T", "type": "TABLE", "keyFormat": "KAFKA", "valueFormat": "JSON",
            "topic": "t", "partitions": 1, "replication": 1, "statement": "CREATE TABLE T ...",
            "extended": false, "timestamp": "",
            "fields": [
                {"name": "ID", "type": "KEY", "schema": {"type": "INTEGER"}},
                {"name": "TAGS", "schema": {"type": "ARRAY", "memberSchema": {"type": "STRING"}}}
            ]
        }});
        let text = entity(&description, 100);
        assert!(text.starts_with("Name         : T\n"), "{text}");
        assert!(text.contains("| ID    | INTEGER (primary key) |"), "{text}");
        assert!(text.contains("| TAGS  | ARRAY<STRING>         |"), "{text}");
    }

    #[test]
    fn unknown_entities_print_as_json() {
        let text = entity(&json!({"@type": "something_new", "x": 1}), 80);
        assert!(text.contains("\"x\": 1"));
    }

    #[test]
    fn cells_show_strings_bare_and_the_rest_as_json() {
        assert_eq!(cell(&json!("a")), "a");
        assert_eq!(cell(&json!(null)), "null");
        assert_eq!(cell(&json!({"A": [1, 2]})), "{\"A\":[1,2]}");
    }
}
