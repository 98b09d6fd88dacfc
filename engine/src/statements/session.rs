//! The statements that change only the session: `SET` and `UNSET` of properties, `DEFINE` and
//! `UNDEFINE` of variables. Nothing is logged; the next request starts afresh.

use eddy_sql::ast::Ident;

use super::command_status;
use crate::result::StatementResult;
use crate::session::Session;

/// `SET 'name' = 'value'`, refused when the value is not one the property takes.
pub(super) fn set_property(
    session: &mut Session,
    name: &str,
    value: &str,
    text: &str,
) -> crate::error::Result<StatementResult> {
    crate::session::check_property(name, value).map_err(crate::error::EngineError::statement)?;
    session
        .properties
        .insert(crate::session::canonical_property(name), value.to_string());
    Ok(command_status(
        text,
        None,
        format!("Successfully changed local property '{name}' to '{value}'."),
    ))
}

/// `UNSET 'name'`.
pub(super) fn unset_property(session: &mut Session, name: &str, text: &str) -> StatementResult {
    session
        .properties
        .remove(&crate::session::canonical_property(name));
    command_status(
        text,
        None,
        format!("Successfully unset local property '{name}'."),
    )
}

/// `DEFINE name = 'value'`.
pub(super) fn define_variable(
    session: &mut Session,
    name: &Ident,
    value: &str,
    text: &str,
) -> StatementResult {
    session
        .variables
        .insert(name.value.clone(), value.to_string());
    command_status(
        text,
        None,
        format!("Defined variable {} as '{value}'", name.value),
    )
}

/// `UNDEFINE name`: a warning when it was never defined.
pub(super) fn undefine_variable(
    session: &mut Session,
    name: &Ident,
    text: &str,
) -> StatementResult {
    if session.variables.remove(&name.value).is_none() {
        return StatementResult::Warning {
            statement: text.to_string(),
            message: format!(
                "Cannot undefine variable '{}' which was never defined",
                name.value
            ),
        };
    }
    command_status(text, None, format!("Undefined variable {}", name.value))
}
