//! Confluent's schema registry REST API over Eddy's registry, on its own listener
//! (`--schema-registry-listen`, 127.0.0.1:8081 by default), so Confluent's serializers,
//! ksqlDB and people's scripts use it unchanged: its paths, its JSON bodies, its content type
//! and its error codes.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use eddy_registry::{
    Level, Mode, Placement, Reference, RegistryError, SchemaRegistry, SchemaRequest, SchemaType,
    SubjectVersion, VersionSpec,
};
use serde::Deserialize;
use serde_json::{Value, json};

/// The registry's content type.
const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

type Shared = State<Arc<SchemaRegistry>>;
type Params = Query<HashMap<String, String>>;

/// The registry's routes: bodies of at most `bodies.max_request_bytes`, held in memory within
/// `memory`, the budget the REST API's listener shares.
pub fn router(
    registry: Arc<SchemaRegistry>,
    service: Arc<crate::service::Service>,
    bodies: crate::http::BodyLimits,
    memory: crate::request_memory::RequestMemory,
) -> Router {
    let max_body = bodies.max_request_bytes;
    let forwarding = Forwarding {
        service,
        registry: registry.clone(),
        max_body,
    };
    Router::new()
        .route("/", get(|| async { reply(json!({})) }))
        .route("/schemas/types", get(types))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/ids/{id}/versions", get(usages))
        .route("/subjects", get(subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route("/subjects/{subject}/versions", get(versions).post(register))
        .route(
            "/subjects/{subject}/versions/{version}",
            get(version).delete(delete_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(raw_version),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(compatibility),
        )
        .route("/config", get(global_level).put(set_global_level))
        .route(
            "/config/{subject}",
            get(subject_level)
                .put(set_subject_level)
                .delete(delete_subject_level),
        )
        .route("/mode", get(global_mode).put(set_global_mode))
        .route(
            "/mode/{subject}",
            get(subject_mode)
                .put(set_subject_mode)
                .delete(delete_subject_mode),
        )
        .fallback(|| async {
            error(&RegistryError {
                code: 404,
                message: "HTTP 404 Not Found".into(),
            })
        })
        .with_state(registry)
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(forwarding),
            forward_changes,
        ))
        .layer(axum::middleware::map_response(move |r| {
            too_large(r, max_body)
        }))
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(
            memory,
            crate::request_memory::reserve,
        ))
        .layer(axum::middleware::map_response(unavailable))
}

/// What a standby needs to send the registry's changes on to the active node.
struct Forwarding {
    service: Arc<crate::service::Service>,
    registry: Arc<SchemaRegistry>,
    max_body: usize,
}

/// Whether a request changes the registry: registering, deleting, and setting levels or
/// modes. Looking a schema up (`POST /subjects/{subject}`) and testing compatibility only read.
fn changes(method: &axum::http::Method, path: &str) -> bool {
    use axum::http::Method;
    if *method == Method::PUT || *method == Method::DELETE {
        return true;
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    *method == Method::POST && matches!(segments.as_slice(), ["subjects", _, "versions"])
}

/// On a standby of a service, a change goes to the active node's registry, the one writer of
/// the registry's log, as Confluent's registries forward writes to their leader; the answer
/// is the active node's, given once this node applied the change, so the caller's next read
/// here sees it.
async fn forward_changes(
    State(forwarding): State<Arc<Forwarding>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if !changes(request.method(), request.uri().path()) {
        return next.run(request).await;
    }
    let Some(target) = forwarding.service.registry_target(request.headers()).await else {
        return next.run(request).await;
    };
    let active = match target {
        Ok(active) => active,
        Err(service) => {
            return error(&RegistryError {
                code: 50004,
                message: format!(
                    "Unknown leader: this node stands by in service {service:?} and no active node is known to take the change; one takes over within a few seconds of the last one's loss; try again"
                ),
            });
        }
    };
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, forwarding.max_body).await else {
        // In the registry's shape once `too_large` has seen it.
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let to = format!("{active}{path}");
    let relayed = forwarding
        .service
        .relay(parts.method, &to, &parts.headers, body)
        .await;
    match relayed {
        Ok(answer) => {
            if answer.status.is_success()
                && let Err(e) = forwarding.registry.catch_up().await
            {
                tracing::warn!(error = %e, "a change forwarded to the active node's registry is not applied here yet");
            }
            answer.into_response()
        }
        Err(why) => error(&RegistryError {
            code: 50003,
            message: format!("Error while forwarding the request to the leader at {active}: {why}"),
        }),
    }
}

fn reply(body: Value) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body.to_string()).into_response()
}

/// A schema's text alone, as the `/schema` paths answer it.
fn raw(result: Result<String, RegistryError>) -> Response {
    match result {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => error(&e),
    }
}

fn error(e: &RegistryError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        json!({"error_code": e.code, "message": e.message}).to_string(),
    )
        .into_response()
}

fn answer(result: Result<Value, RegistryError>) -> Response {
    match result {
        Ok(body) => reply(body),
        Err(e) => error(&e),
    }
}

/// A body over the limit gets the registry's error shape, not axum's plain text.
async fn too_large(response: Response, max_body: usize) -> Response {
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return error(&RegistryError {
            code: 413,
            message: format!("Request body larger than {max_body} bytes"),
        });
    }
    response
}

/// A request refused because request bodies fill their memory budget gets the registry's
/// error shape (the budget's own answer is in ksqlDB's).
async fn unavailable(response: Response) -> Response {
    if response.status() == StatusCode::SERVICE_UNAVAILABLE {
        return error(&RegistryError {
            code: 50301,
            message: "The server is reading as many request bodies as it holds in memory at once; try again later.".into(),
        });
    }
    response
}

fn flag(params: &HashMap<String, String>, name: &str) -> bool {
    params
        .get(name)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn parse_id(id: &str) -> Result<u32, RegistryError> {
    id.parse::<u32>()
        .map_err(|_| RegistryError::schema_not_found(id))
}

/// A registered schema as Confluent answers it: `schemaType` only when not Avro, and
/// `references` only when there are some.
fn schema_fields(body: &mut serde_json::Map<String, Value>, schema: &eddy_registry::SchemaText) {
    body.insert("schema".into(), Value::String(schema.schema.clone()));
    if schema.schema_type != SchemaType::Avro {
        body.insert(
            "schemaType".into(),
            Value::String(schema.schema_type.to_string()),
        );
    }
    if !schema.references.is_empty() {
        body.insert("references".into(), json!(schema.references));
    }
}

fn subject_version(found: &SubjectVersion) -> Value {
    let mut body = serde_json::Map::new();
    body.insert("subject".into(), json!(found.subject));
    body.insert("version".into(), json!(found.version));
    body.insert("id".into(), json!(found.id));
    schema_fields(&mut body, &found.schema);
    Value::Object(body)
}

#[derive(Deserialize)]
struct Registration {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Reference>,
    /// The id an import keeps; -1 or absent for none.
    id: Option<i64>,
    /// The version an import keeps; -1, 0 or absent for none.
    version: Option<i64>,
}

/// A request body as a schema: `{"schema": ..., "schemaType": ..., "references": [...]}`,
/// with the `id` and `version` an import names.
fn schema_request(body: &Bytes) -> Result<(SchemaRequest, Placement), RegistryError> {
    let registration: Registration = serde_json::from_slice(body)
        .map_err(|e| RegistryError::unprocessable(format!("cannot read the body: {e}")))?;
    let id = match registration.id {
        None | Some(-1) => None,
        Some(id) => Some(
            u32::try_from(id)
                .ok()
                .filter(|id| i32::try_from(*id).is_ok())
                .ok_or_else(|| RegistryError::unprocessable(format!("invalid id {id}")))?,
        ),
    };
    let version = match registration.version {
        None | Some(-1 | 0) => None,
        Some(v) => Some(
            i32::try_from(v)
                .ok()
                .filter(|v| *v >= 1)
                .ok_or_else(|| RegistryError::invalid_version(&v.to_string()))?,
        ),
    };
    Ok((
        SchemaRequest {
            schema: registration.schema,
            schema_type: SchemaType::parse(registration.schema_type.as_deref())?,
            references: registration.references,
        },
        Placement { id, version },
    ))
}

async fn types() -> Response {
    reply(json!(eddy_registry::schema::SchemaType::SUPPORTED))
}

async fn schema_by_id(State(registry): Shared, Path(id): Path<String>) -> Response {
    answer(
        async {
            let schema = registry.schema(parse_id(&id)?).await?;
            let mut body = serde_json::Map::new();
            schema_fields(&mut body, &schema);
            Ok(Value::Object(body))
        }
        .await,
    )
}

async fn raw_schema_by_id(State(registry): Shared, Path(id): Path<String>) -> Response {
    raw(async { Ok(registry.schema(parse_id(&id)?).await?.schema) }.await)
}

async fn usages(State(registry): Shared, Path(id): Path<String>) -> Response {
    answer(
        async {
            let usages = registry.usages(parse_id(&id)?).await?;
            Ok(json!(
                usages
                    .iter()
                    .map(|(subject, version)| json!({"subject": subject, "version": version}))
                    .collect::<Vec<_>>()
            ))
        }
        .await,
    )
}

async fn subjects(State(registry): Shared, Query(params): Params) -> Response {
    reply(json!(registry.subjects(flag(&params, "deleted")).await))
}

async fn versions(
    State(registry): Shared,
    Path(subject): Path<String>,
    Query(params): Params,
) -> Response {
    answer(
        registry
            .versions(&subject, flag(&params, "deleted"))
            .await
            .map(|v| json!(v)),
    )
}

async fn register(State(registry): Shared, Path(subject): Path<String>, body: Bytes) -> Response {
    answer(
        async {
            let (request, at) = schema_request(&body)?;
            let id = registry.register_at(&subject, &request, at).await?;
            Ok(json!({"id": id}))
        }
        .await,
    )
}

async fn lookup(
    State(registry): Shared,
    Path(subject): Path<String>,
    Query(params): Params,
    body: Bytes,
) -> Response {
    answer(
        async {
            let (request, _) = schema_request(&body)?;
            let found = registry
                .lookup(&subject, &request, flag(&params, "deleted"))
                .await?;
            Ok(subject_version(&found))
        }
        .await,
    )
}

async fn version(
    State(registry): Shared,
    Path((subject, version)): Path<(String, String)>,
    Query(params): Params,
) -> Response {
    answer(
        async {
            let spec = VersionSpec::parse(&version)?;
            let found = registry
                .version(&subject, spec, flag(&params, "deleted"))
                .await?;
            Ok(subject_version(&found))
        }
        .await,
    )
}

async fn raw_version(
    State(registry): Shared,
    Path((subject, version)): Path<(String, String)>,
) -> Response {
    raw(async {
        let spec = VersionSpec::parse(&version)?;
        Ok(registry.version(&subject, spec, false).await?.schema.schema)
    }
    .await)
}

async fn delete_subject(
    State(registry): Shared,
    Path(subject): Path<String>,
    Query(params): Params,
) -> Response {
    answer(
        registry
            .delete_subject(&subject, flag(&params, "permanent"))
            .await
            .map(|v| json!(v)),
    )
}

async fn delete_version(
    State(registry): Shared,
    Path((subject, version)): Path<(String, String)>,
    Query(params): Params,
) -> Response {
    answer(
        async {
            let spec = VersionSpec::parse(&version)?;
            let deleted = registry
                .delete_version(&subject, spec, flag(&params, "permanent"))
                .await?;
            Ok(json!(deleted))
        }
        .await,
    )
}

async fn compatibility(
    State(registry): Shared,
    Path((subject, version)): Path<(String, String)>,
    Query(params): Params,
    body: Bytes,
) -> Response {
    answer(
        async {
            let spec = VersionSpec::parse(&version)?;
            let (request, _) = schema_request(&body)?;
            let broken = registry.compatibility(&subject, spec, &request).await?;
            let mut out = json!({"is_compatible": broken.is_empty()});
            if flag(&params, "verbose") {
                out["messages"] = json!(broken);
            }
            Ok(out)
        }
        .await,
    )
}

#[derive(Deserialize)]
struct LevelBody {
    compatibility: String,
}

fn level_body(body: &Bytes) -> Result<Level, RegistryError> {
    let parsed: LevelBody = serde_json::from_slice(body)
        .map_err(|e| RegistryError::unprocessable(format!("cannot read the body: {e}")))?;
    parsed.compatibility.parse()
}

async fn global_level(State(registry): Shared) -> Response {
    answer(
        registry
            .level(None, true)
            .await
            .map(|l| json!({"compatibilityLevel": l.to_string()})),
    )
}

async fn set_global_level(State(registry): Shared, body: Bytes) -> Response {
    answer(
        async {
            let level = registry.set_level(None, level_body(&body)?).await?;
            Ok(json!({"compatibility": level.to_string()}))
        }
        .await,
    )
}

async fn subject_level(
    State(registry): Shared,
    Path(subject): Path<String>,
    Query(params): Params,
) -> Response {
    answer(
        registry
            .level(Some(&subject), flag(&params, "defaultToGlobal"))
            .await
            .map(|l| json!({"compatibilityLevel": l.to_string()})),
    )
}

async fn set_subject_level(
    State(registry): Shared,
    Path(subject): Path<String>,
    body: Bytes,
) -> Response {
    answer(
        async {
            let level = registry
                .set_level(Some(&subject), level_body(&body)?)
                .await?;
            Ok(json!({"compatibility": level.to_string()}))
        }
        .await,
    )
}

async fn delete_subject_level(State(registry): Shared, Path(subject): Path<String>) -> Response {
    answer(
        registry
            .delete_level(Some(&subject))
            .await
            .map(|l| json!({"compatibilityLevel": l.to_string()})),
    )
}

#[derive(Deserialize)]
struct ModeBody {
    mode: String,
}

fn mode_body(body: &Bytes) -> Result<Mode, RegistryError> {
    let parsed: ModeBody = serde_json::from_slice(body)
        .map_err(|e| RegistryError::unprocessable(format!("cannot read the body: {e}")))?;
    parsed.mode.parse()
}

fn mode_reply(mode: Result<Mode, RegistryError>) -> Response {
    answer(mode.map(|m| json!({"mode": m.to_string()})))
}

async fn global_mode(State(registry): Shared) -> Response {
    mode_reply(registry.mode(None, true).await)
}

async fn set_global_mode(State(registry): Shared, Query(params): Params, body: Bytes) -> Response {
    let force = flag(&params, "force");
    mode_reply(async { registry.set_mode(None, mode_body(&body)?, force).await }.await)
}

async fn subject_mode(
    State(registry): Shared,
    Path(subject): Path<String>,
    Query(params): Params,
) -> Response {
    mode_reply(
        registry
            .mode(Some(&subject), flag(&params, "defaultToGlobal"))
            .await,
    )
}

async fn set_subject_mode(
    State(registry): Shared,
    Path(subject): Path<String>,
    Query(params): Params,
    body: Bytes,
) -> Response {
    let force = flag(&params, "force");
    mode_reply(
        async {
            registry
                .set_mode(Some(&subject), mode_body(&body)?, force)
                .await
        }
        .await,
    )
}

async fn delete_subject_mode(State(registry): Shared, Path(subject): Path<String>) -> Response {
    mode_reply(registry.delete_mode(Some(&subject)).await)
}
