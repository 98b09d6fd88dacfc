//! The web console at `/`: its assets, compiled into the binary so the page works without
//! internet access, and the JSON API it uses beyond ksqlDB's endpoints: saved dashboards
//! (kept in the store, so they survive a restart and every user sees the same ones) and
//! topic details.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use eddy_storage::Commit;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::rest::{AppState, ErrorCode, RestError};

/// The store namespace holding dashboards by id.
const DASHBOARDS: &str = "__eddy_dashboards";
/// Limits that keep one dashboard a reasonable size to store and draw.
const MAX_PANELS: usize = 48;
const MAX_SQL_BYTES: usize = 16 * 1024;

const INDEX_HTML: &str = include_str!("../console/index.html");
const APP_JS: &str = include_str!("../console/app.js");
const CHARTS_JS: &str = include_str!("../console/charts.js");
const APP_CSS: &str = include_str!("../console/app.css");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // The assets change with the binary; a browser must not keep an old copy.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `GET /`: the console page.
pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /console/{file}`: the page's script and style.
pub async fn file(Path(name): Path<String>) -> Response {
    match name.as_str() {
        "app.js" => asset("text/javascript; charset=utf-8", APP_JS),
        "charts.js" => asset("text/javascript; charset=utf-8", CHARTS_JS),
        "app.css" => asset("text/css; charset=utf-8", APP_CSS),
        _ => not_found(format!("No console file named '{name}'")),
    }
}

/// How a panel draws its query's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChartKind {
    /// Lines over time, one per series.
    Line,
    /// One bar per category (or series), latest value.
    Bar,
    /// The latest value of one column.
    Number,
    /// The rows as a table.
    Table,
}

/// One chart: a SQL query and how to draw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Panel {
    /// The heading.
    pub title: String,
    /// A push query (`EMIT CHANGES`), drawn live, or a pull query, re-run every `refresh_secs`.
    pub sql: String,
    /// The chart type.
    pub chart: ChartKind,
    /// Seconds between runs of a pull query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_secs: Option<u32>,
    /// The x-axis column; by default `WINDOWSTART`, else `ROWTIME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// The value column; by default the first numeric column that is not the x-axis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// The column naming each series; by default the first string column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series: Option<String>,
}

/// A named set of panels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Dashboard {
    /// The id in its URL: letters, digits, `-` and `_`.
    #[serde(default)]
    pub id: String,
    /// The heading.
    pub title: String,
    /// The panels, in order.
    #[serde(default)]
    pub panels: Vec<Panel>,
    /// When it was last saved, ms since the epoch (set by the server).
    #[serde(default)]
    pub updated_ms: i64,
}

/// Why a dashboard cannot be saved, worded for the person who built it.
fn check(dashboard: &Dashboard) -> Result<(), String> {
    let id = &dashboard.id;
    if id.is_empty()
        || id.len() > 64
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "Dashboard id '{id}' must be 1 to 64 letters, digits, '-' or '_'"
        ));
    }
    if dashboard.title.trim().is_empty() {
        return Err("A dashboard needs a title".to_string());
    }
    if dashboard.panels.len() > MAX_PANELS {
        return Err(format!(
            "A dashboard holds at most {MAX_PANELS} panels, this one has {}",
            dashboard.panels.len()
        ));
    }
    for (i, panel) in dashboard.panels.iter().enumerate() {
        let which = format!("Panel {} ('{}')", i + 1, panel.title);
        if panel.sql.trim().is_empty() {
            return Err(format!("{which} has no SQL"));
        }
        if panel.sql.len() > MAX_SQL_BYTES {
            return Err(format!("{which}: its SQL is over {MAX_SQL_BYTES} bytes"));
        }
        if panel.refresh_secs == Some(0) {
            return Err(format!(
                "{which}: the refresh interval must be at least 1 second"
            ));
        }
    }
    Ok(())
}

fn not_found(message: String) -> Response {
    RestError::new(ErrorCode::NotFound, message).into_response()
}

fn bad_request(message: String) -> Response {
    RestError::new(ErrorCode::BadRequest, message).into_response()
}

fn storage_failed(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "the console's store failed");
    RestError::new(ErrorCode::ServerError, format!("The store failed: {e}")).into_response()
}

fn load(state: &AppState, id: &str) -> Result<Option<Dashboard>, Box<Response>> {
    let Some(bytes) = state
        .engine
        .store()
        .state_get(DASHBOARDS, id.as_bytes())
        .map_err(|e| Box::new(storage_failed(e)))?
    else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        Box::new(storage_failed(format!(
            "dashboard '{id}' is unreadable: {e}"
        )))
    })
}

/// `GET /api/dashboards`: every saved dashboard, by title.
pub async fn list(State(state): State<AppState>) -> Response {
    let scan = match state.engine.store().state_scan_prefix(DASHBOARDS, b"") {
        Ok(scan) => scan,
        Err(e) => return storage_failed(e),
    };
    let mut dashboards = Vec::new();
    for entry in scan {
        let (key, value) = match entry {
            Ok(entry) => entry,
            Err(e) => return storage_failed(e),
        };
        match serde_json::from_slice::<Dashboard>(&value) {
            Ok(dashboard) => dashboards.push(dashboard),
            Err(e) => {
                tracing::warn!(id = %String::from_utf8_lossy(&key), error = %e, "skipping an unreadable dashboard")
            }
        }
    }
    dashboards.sort_by_key(|d| d.title.to_lowercase());
    Json(dashboards).into_response()
}

/// `GET /api/dashboards/{id}`.
pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match load(&state, &id) {
        Ok(Some(dashboard)) => Json(dashboard).into_response(),
        Ok(None) => not_found(format!("No dashboard with id '{id}'")),
        Err(response) => *response,
    }
}

/// `PUT /api/dashboards/{id}`: creates or replaces a dashboard.
pub async fn put(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let mut dashboard: Dashboard = match serde_json::from_slice(&body) {
        Ok(dashboard) => dashboard,
        Err(e) => return bad_request(format!("Invalid dashboard JSON: {e}")),
    };
    if dashboard.id.is_empty() {
        dashboard.id = id.clone();
    } else if dashboard.id != id {
        return bad_request(format!(
            "The dashboard's id '{}' differs from the id '{id}' in the URL",
            dashboard.id
        ));
    }
    if let Err(message) = check(&dashboard) {
        return bad_request(message);
    }
    dashboard.updated_ms = eddy_storage::now_ms();
    let value = match serde_json::to_vec(&dashboard) {
        Ok(value) => value,
        Err(e) => return storage_failed(e),
    };
    let mut commit = Commit::new();
    commit.put_state(DASHBOARDS, id.into_bytes(), value);
    if let Err(e) = state.engine.store().commit(commit).await {
        return storage_failed(e);
    }
    Json(dashboard).into_response()
}

/// `DELETE /api/dashboards/{id}`.
pub async fn delete(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match load(&state, &id) {
        Ok(Some(_)) => {}
        Ok(None) => return not_found(format!("No dashboard with id '{id}'")),
        Err(response) => return *response,
    }
    let mut commit = Commit::new();
    commit.delete_state(DASHBOARDS, id.into_bytes());
    match state.engine.store().commit(commit).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => storage_failed(e),
    }
}

/// `GET /api/topics`: every topic with its partitions' offsets and sizes and its config, for
/// the catalog browser (ksqlDB's `SHOW TOPICS` has names only).
pub(crate) async fn topics(
    State(state): State<AppState>,
    caller: crate::rest::RequestCaller,
) -> Response {
    let store = state.engine.store();
    // Only the topics the caller may describe, as SHOW TOPICS lists them.
    let mut names: Vec<String> = store
        .list_topics()
        .into_iter()
        .filter(|t| caller.0.as_ref().is_none_or(|c| c.may_describe_topic(t)))
        .collect();
    names.sort();
    let topics: Vec<Value> = names
        .iter()
        .filter_map(|name| store.describe_topic(name).ok())
        .map(|t| {
            json!({
                "name": t.name,
                "partitions": t.partitions.iter().map(|p| json!({
                    "partition": p.partition,
                    "logStartOffset": p.log_start_offset,
                    "endOffset": p.end_offset,
                    "sizeBytes": p.size_bytes,
                    "segments": p.segments,
                })).collect::<Vec<_>>(),
                "config": t.config.to_kafka_configs(),
                "createdMs": t.created_ms,
            })
        })
        .collect();
    Json(topics).into_response()
}

/// `GET /api/replication`: the replicated log's nodes as this node, the leader, sees them
/// (who leads, who is in sync, how far each follower is behind) and the counts of ISR and
/// leader changes; `{"replicated": false}` on a log of its own.
pub(crate) async fn replication(State(state): State<AppState>) -> Response {
    let Some(status) = state.engine.store().replica_status() else {
        return Json(json!({ "replicated": false })).into_response();
    };
    let leadership = status.leadership();
    let voters = status.voters();
    let in_sync = status.in_sync();
    let lag = status.follower_lag();
    let counts = status.counts();
    let nodes: Vec<Value> = voters
        .iter()
        .map(|id| {
            json!({
                "id": id,
                "leader": leadership.leader == Some(*id),
                "inSync": in_sync.contains(id),
                "lagEntries": lag.get(id).copied().flatten(),
                "local": *id == status.id(),
            })
        })
        .collect();
    let role = if leadership.leader == Some(status.id()) {
        "LEADER"
    } else {
        "FOLLOWER"
    };
    Json(json!({
        "replicated": true,
        "node": status.id(),
        "role": role,
        "term": leadership.term,
        "leader": leadership.leader,
        "nodes": nodes,
        "underReplicated": in_sync.len() < voters.len(),
        "isrShrinks": counts.isr_shrinks,
        "isrExpands": counts.isr_expands,
        "leaderChanges": counts.leader_changes,
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn panel(sql: &str) -> Panel {
        Panel {
            title: "p".into(),
            sql: sql.into(),
            chart: ChartKind::Line,
            refresh_secs: None,
            x: None,
            y: None,
            series: None,
        }
    }

    #[test]
    fn a_dashboard_is_checked_before_it_is_saved() {
        let mut d = Dashboard {
            id: "ops-1".into(),
            title: "Ops".into(),
            panels: vec![panel("SELECT * FROM t EMIT CHANGES;")],
            updated_ms: 0,
        };
        assert_eq!(check(&d), Ok(()));
        d.id = "no spaces".into();
        assert!(check(&d).unwrap_err().contains("letters, digits"));
        d.id = "ok".into();
        d.panels.push(panel("  "));
        assert_eq!(check(&d).unwrap_err(), "Panel 2 ('p') has no SQL");
    }

    #[test]
    fn a_panel_round_trips_and_refuses_unknown_fields() {
        let text = r#"{"title":"Clicks","sql":"SELECT 1","chart":"bar","refreshSecs":5}"#;
        let p: Panel = serde_json::from_str(text).unwrap();
        assert_eq!((p.chart, p.refresh_secs), (ChartKind::Bar, Some(5)));
        assert_eq!(serde_json::to_string(&p).unwrap(), text);
        assert!(serde_json::from_str::<Panel>(r#"{"title":"a","sql":"b","chart":"pie"}"#).is_err());
        assert!(
            serde_json::from_str::<Panel>(r#"{"title":"a","sql":"b","chart":"line","z":1}"#)
                .is_err()
        );
    }
}
