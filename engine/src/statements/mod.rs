//! Executing one statement: [`Engine::run_statement`] sends each kind of statement to the
//! handler of its family, one family per file:
//!
//! - [`ddl`]: `CREATE` / `DROP` of streams, tables and types, `ALTER`;
//! - [`insert`]: `INSERT INTO ... VALUES`;
//! - [`queries`]: `CREATE ... AS SELECT`, `INSERT INTO ... SELECT`, `TERMINATE`, `PAUSE`,
//!   `RESUME`;
//! - [`show`]: `SHOW` / `LIST`, `DESCRIBE`, `EXPLAIN`;
//! - [`session`]: `SET`, `UNSET`, `DEFINE`, `UNDEFINE`;
//! - [`connectors`]: `CREATE SOURCE|SINK CONNECTOR`, `DROP CONNECTOR`, `SHOW CONNECTORS`,
//!   `DESCRIBE CONNECTOR`;
//! - [`schemas`]: what the registry formats add to the others (inferred columns, registered
//!   schemas).

mod connectors;
mod ddl;
mod insert;
mod queries;
pub(crate) mod schemas;
mod session;
mod show;

use eddy_sql::ast::{ListKind, Statement, StatementKind};

use crate::engine::{Engine, EngineState, Mode};
use crate::error::{EngineError, Result};
use crate::result::StatementResult;
use crate::session::Session;

impl Engine {
    /// Runs one parsed statement, live or replayed from the command log.
    pub(crate) async fn run_statement(
        &self,
        state: &mut EngineState,
        session: &mut Session,
        statement: &Statement,
        text: &str,
        mode: Mode,
    ) -> Result<StatementResult> {
        match &statement.kind {
            StatementKind::CreateSource(create) => {
                self.create_source(state, session, create, text, mode).await
            }
            StatementKind::DropSource {
                kind,
                if_exists,
                name,
                delete_topic,
            } => {
                self.drop_source(
                    state,
                    session,
                    (*kind, &name.value),
                    (*if_exists, *delete_topic),
                    text,
                    mode,
                )
                .await
            }
            StatementKind::CreateType {
                if_not_exists,
                name,
                ty,
            } => {
                self.create_type(state, session, (name, ty, *if_not_exists), text, mode)
                    .await
            }
            StatementKind::DropType { if_exists, name } => {
                self.drop_type(state, session, (name, *if_exists), text, mode)
                    .await
            }
            StatementKind::AlterSource {
                kind,
                name,
                columns,
            } => {
                self.alter_source(state, session, (*kind, name, columns), text, mode)
                    .await
            }
            StatementKind::InsertValues {
                target,
                columns,
                values,
            } => {
                self.insert_values(state, (target, columns, values), text, mode)
                    .await
            }
            StatementKind::List {
                what: ListKind::Queries,
                extended,
            } => Ok(self.list_queries(state, text, *extended)),
            StatementKind::List {
                what: ListKind::Connectors,
                ..
            } => Ok(self.list_connectors(state, text)),
            StatementKind::List { what, .. } => self.list(state, session, *what, text),
            StatementKind::CreateConnector {
                source,
                if_not_exists,
                name,
                properties,
            } => {
                let what = (*source, *if_not_exists, name.value.as_str(), properties);
                self.create_connector(state, session, what, text, mode)
                    .await
            }
            StatementKind::DropConnector { if_exists, name } => {
                self.drop_connector(state, session, (&name.value, *if_exists), text, mode)
                    .await
            }
            StatementKind::DescribeConnector(name) => {
                self.describe_connector(state, &name.value, text)
            }
            StatementKind::PauseConnector(name) => {
                self.pause_or_resume_connector(state, session, (&name.value, true), text, mode)
                    .await
            }
            StatementKind::ResumeConnector(name) => {
                self.pause_or_resume_connector(state, session, (&name.value, false), text, mode)
                    .await
            }
            StatementKind::Describe { name, extended } => {
                self.describe(state, name, *extended, text)
            }
            StatementKind::DescribeFunction(name) => show::describe_function(name, text),
            StatementKind::ExplainQuery(id) => self.explain_query(state, id, text),
            StatementKind::Explain(inner) => self.explain_statement(state, session, inner, text),
            StatementKind::SetProperty { name, value } => {
                session::set_property(session, name, value, text)
            }
            StatementKind::UnsetProperty(name) => Ok(session::unset_property(session, name, text)),
            StatementKind::DefineVariable { name, value } => {
                Ok(session::define_variable(session, name, value, text))
            }
            StatementKind::UndefineVariable(name) => {
                Ok(session::undefine_variable(session, name, text))
            }
            StatementKind::CreateAsSelect(create) => {
                self.create_as_select(state, session, create, text, mode)
                    .await
            }
            StatementKind::InsertInto {
                target,
                properties,
                query,
            } => {
                self.insert_into_select(state, session, (target, properties), query, text, mode)
                    .await
            }
            StatementKind::Terminate(target) => {
                self.terminate(state, session, target, text, mode).await
            }
            StatementKind::Pause(target) => {
                self.pause_or_resume(state, session, (target, true), text, mode)
                    .await
            }
            StatementKind::Resume(target) => {
                self.pause_or_resume(state, session, (target, false), text, mode)
                    .await
            }
            other => Err(EngineError::Unsupported(describe_kind(other).to_string())),
        }
    }
}

/// What ksqlDB calls a statement Eddy does not run yet.
fn describe_kind(kind: &StatementKind) -> &'static str {
    match kind {
        StatementKind::CreateAsSelect(_) => "CREATE ... AS SELECT",
        StatementKind::InsertInto { .. } => "INSERT INTO ... SELECT",
        StatementKind::InsertValues { .. } => "INSERT INTO ... VALUES",
        StatementKind::Query(_) => "SELECT",
        StatementKind::DescribeAll { .. } => "DESCRIBE STREAMS/TABLES",
        StatementKind::Explain(_) | StatementKind::ExplainQuery(_) => "EXPLAIN",
        StatementKind::Terminate(_) => "TERMINATE",
        StatementKind::Print(_) => "PRINT",
        StatementKind::AlterSource { .. } => "ALTER",
        StatementKind::AlterSystem { .. } => "ALTER SYSTEM",
        StatementKind::AssertTopic { .. } | StatementKind::AssertSchema { .. } => "ASSERT",
        _ => "This statement",
    }
}

/// A statement's outcome as ksqlDB words it: a message, and for statements that change the
/// catalog the command id `/status` reports it under.
fn command_status(text: &str, command_id: Option<String>, message: String) -> StatementResult {
    StatementResult::CommandStatus {
        statement: text.to_string(),
        command_id,
        message,
    }
}
