//! `INSERT INTO ... VALUES`: one row, encoded in the target's formats and appended to its
//! topic. A replayed insert is not appended again.

use eddy_sql::ast::{Expr, Ident};

use super::command_status;
use crate::engine::{Engine, EngineState, Mode};
use crate::error::{EngineError, Result};
use crate::result::StatementResult;

impl Engine {
    /// `INSERT INTO target [(columns)] VALUES (values)`.
    pub(super) async fn insert_values(
        &self,
        state: &mut EngineState,
        (target, columns, values): (&Ident, &Option<Vec<Ident>>, &[Expr]),
        text: &str,
        mode: Mode,
    ) -> Result<StatementResult> {
        let Some(source) = state.catalog.source(&target.value) else {
            let hint = match state.catalog.similar_source(&target.value) {
                Some(similar) if target.quoted => format!(
                    "\nDid you mean {}? Hint: try removing double quotes from the source name.",
                    similar.name
                ),
                Some(similar) => format!(
                    "\nDid you mean \"{}\"? Hint: wrap the source name in double quotes to make it case-sensitive.",
                    similar.name
                ),
                None => String::new(),
            };
            return Err(EngineError::statement(format!(
                "Cannot insert values into an unknown stream/table: `{}`{hint}",
                target.value
            )));
        };
        if source.read_only {
            return Err(EngineError::statement(format!(
                "Cannot insert values into read-only {}: {}",
                source.kind_name().to_ascii_lowercase(),
                source.name
            )));
        }
        source.key_format.format.ensure_supported()?;
        source.value_format.format.ensure_supported()?;
        if mode == Mode::Live {
            // The record is written with the schema its columns generate.
            self.register_schemas(source, true).await?;
        }
        let record =
            crate::insert::build_record(&self.datafusion, &state.catalog, source, columns, values)?;
        let topic = source.topic.clone();
        if mode == Mode::Live {
            self.store.produce(&topic, vec![record]).await?;
        }
        Ok(command_status(
            text,
            None,
            format!("Inserted 1 row into {}", target.value),
        ))
    }
}
