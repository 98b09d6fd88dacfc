//! `CREATE SOURCE|SINK CONNECTOR`, `DROP CONNECTOR`, `SHOW CONNECTORS` and `DESCRIBE
//! CONNECTOR`: connectors Eddy runs itself (see [`crate::connectors`]).

use std::collections::BTreeMap;

use eddy_sql::ast::{Literal, Properties};

use crate::connectors::{Connector, ConnectorKind, plan};
use crate::engine::{Engine, EngineState, Mode};
use crate::error::{EngineError, Result};
use crate::result::StatementResult;
use crate::session::Session;

/// A connector's configuration as text, keys as written.
fn config_of(properties: &Properties) -> BTreeMap<String, String> {
    properties
        .0
        .iter()
        .map(|p| {
            let value = match &p.value {
                Literal::Null => String::new(),
                Literal::Boolean(b) => b.to_string(),
                Literal::Integer(i) => i.to_string(),
                Literal::Decimal(t)
                | Literal::Double(t)
                | Literal::String(t)
                | Literal::Bytes(t) => t.clone(),
            };
            (p.name.clone(), value)
        })
        .collect()
}

impl Engine {
    /// `CREATE SOURCE|SINK CONNECTOR [IF NOT EXISTS] name WITH (...)`.
    pub(super) async fn create_connector(
        &self,
        state: &mut EngineState,
        session: &Session,
        (source, if_not_exists, name, properties): (bool, bool, &str, &Properties),
        text: &str,
        mode: Mode,
    ) -> Result<StatementResult> {
        if state.connectors.contains_key(name) {
            if if_not_exists {
                return Ok(StatementResult::Warning {
                    statement: text.to_string(),
                    message: format!("Connector {name} already exists"),
                });
            }
            return Err(EngineError::statement(format!(
                "Connector {name} already exists"
            )));
        }
        let kind = if source {
            ConnectorKind::Source
        } else {
            ConnectorKind::Sink
        };
        let config = config_of(properties);
        let planned = plan(kind, &config)?;
        self.log_command(state, session, text, mode).await?;
        let mut connector = Connector::new(name, kind, config.clone(), &planned);
        // Replayed connectors start once the whole log is replayed, so one paused later in
        // it never runs meanwhile.
        if mode == Mode::Live {
            connector.start(&self.store);
        }
        state.connectors.insert(name.to_string(), connector);
        Ok(StatementResult::ConnectorInfo {
            statement: text.to_string(),
            name: name.to_string(),
            kind,
            config: crate::connectors::shown_config(&config),
        })
    }

    /// `DROP CONNECTOR [IF EXISTS] name`: stops it; what it wrote stays, and so does its
    /// replication slot (as Debezium leaves it), so a connector made again resumes there.
    pub(super) async fn drop_connector(
        &self,
        state: &mut EngineState,
        session: &Session,
        (name, if_exists): (&str, bool),
        text: &str,
        mode: Mode,
    ) -> Result<StatementResult> {
        if !state.connectors.contains_key(name) {
            if if_exists {
                return Ok(StatementResult::Warning {
                    statement: text.to_string(),
                    message: format!("Connector {name} does not exist."),
                });
            }
            return Err(EngineError::statement(format!(
                "Connector {name} does not exist."
            )));
        }
        self.log_command(state, session, text, mode).await?;
        if let Some(connector) = state.connectors.remove(name) {
            connector.stop().await;
        }
        Ok(StatementResult::DropConnector {
            statement: text.to_string(),
            name: name.to_string(),
        })
    }

    /// `PAUSE CONNECTOR name` and `RESUME CONNECTOR name`: stops its task, keeping where it
    /// is, or starts it again from there. Logged, so a paused connector stays paused after a
    /// restart.
    pub(super) async fn pause_or_resume_connector(
        &self,
        state: &mut EngineState,
        session: &Session,
        (name, pause): (&str, bool),
        text: &str,
        mode: Mode,
    ) -> Result<StatementResult> {
        if !state.connectors.contains_key(name) {
            return Err(EngineError::statement(format!(
                "Connector {name} does not exist."
            )));
        }
        self.log_command(state, session, text, mode).await?;
        let (verb, message) = if pause {
            ("pause", "Connector paused.")
        } else {
            ("resume", "Connector resumed.")
        };
        if let Some(connector) = state.connectors.get_mut(name) {
            if pause {
                connector.pause().await;
            } else {
                connector.resume(&self.store, mode == Mode::Live);
            }
            tracing::info!(connector = %name, "connector {verb}d");
        }
        Ok(StatementResult::CommandStatus {
            statement: text.to_string(),
            command_id: Some(format!("connector/{name}/{verb}")),
            message: message.to_string(),
        })
    }

    /// Starts the connectors the replayed command log made, except those it paused.
    pub(crate) fn start_connectors(&self, state: &mut EngineState) {
        for connector in state.connectors.values_mut() {
            connector.start(&self.store);
        }
    }

    /// `SHOW CONNECTORS`.
    pub(super) fn list_connectors(&self, state: &EngineState, text: &str) -> StatementResult {
        StatementResult::Connectors {
            statement: text.to_string(),
            connectors: state
                .connectors
                .values()
                .map(|c| c.summary(&self.store))
                .collect(),
        }
    }

    /// `DESCRIBE CONNECTOR name`.
    pub(super) fn describe_connector(
        &self,
        state: &EngineState,
        name: &str,
        text: &str,
    ) -> Result<StatementResult> {
        let connector = state
            .connectors
            .get(name)
            .ok_or_else(|| EngineError::statement(format!("Could not find connector {name}.")))?;
        Ok(StatementResult::ConnectorDescription {
            statement: text.to_string(),
            connector: connector.summary(&self.store),
        })
    }
}
