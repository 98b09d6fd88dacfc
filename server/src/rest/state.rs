//! What every handler can reach: the engine and the metrics it records into.

use std::sync::Arc;

use axum::extract::FromRef;
use eddy_engine::Engine;

use crate::metrics::{MetricsError, ServerMetrics};
use crate::service::Service;

/// What every handler can reach: the engine and the metrics it records into.
#[derive(Clone)]
pub struct AppState {
    /// The engine.
    pub engine: Arc<Engine>,
    /// The server's metrics.
    pub metrics: Arc<ServerMetrics>,
    /// This node's part in its service: its heartbeat, the other nodes, forwarding.
    pub service: Arc<Service>,
}

impl FromRef<AppState> for Arc<Service> {
    fn from_ref(state: &AppState) -> Self {
        state.service.clone()
    }
}

impl FromRef<AppState> for Arc<Engine> {
    fn from_ref(state: &AppState) -> Self {
        state.engine.clone()
    }
}

impl FromRef<AppState> for Arc<ServerMetrics> {
    fn from_ref(state: &AppState) -> Self {
        state.metrics.clone()
    }
}

impl AppState {
    /// The state of a server over `engine`, with its metrics registered.
    pub fn new(engine: Arc<Engine>) -> Result<Self, MetricsError> {
        let metrics = Arc::new(ServerMetrics::new(&engine)?);
        let service = Arc::new(Service::new(engine.clone()));
        Ok(AppState {
            engine,
            metrics,
            service,
        })
    }
}
