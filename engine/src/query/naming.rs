//! How ksqlDB names the columns a projection makes: an alias, else a column's or struct
//! field's own name, else a generated `KSQL_COL_n`; and which names are reserved.

use eddy_sql::ast::{Expr, ExprKind, Ident, SelectItem};

use crate::catalog::DataSource;
use crate::error::{EngineError, Result};
use crate::schema::{PSEUDO_COLUMNS, WINDOW_COLUMNS};

/// The prefix of key columns a query's rows carry without showing them.
pub(crate) const HIDDEN_KEY_PREFIX: &str = "__EDDY_KEY_";

/// The column a bare column reference names.
pub(crate) fn column_name(expr: &Expr) -> Option<&str> {
    match &expr.kind {
        ExprKind::Column { name, .. } => Some(&name.value),
        _ => None,
    }
}

/// The name ksqlDB gives an unaliased item: a column's name, a struct field's name, or none
/// (a generated `KSQL_COL_n`).
pub(crate) fn implicit_name(expr: &Expr) -> Option<String> {
    match &expr.kind {
        ExprKind::Column { name, .. } => Some(name.value.clone()),
        ExprKind::Dereference { field, .. } => Some(field.value.clone()),
        _ => None,
    }
}

/// Whether `name` is a pseudo-column or a window bound, which a projection may not name.
pub(crate) fn is_reserved(name: &str) -> bool {
    PSEUDO_COLUMNS.contains(&name) || WINDOW_COLUMNS.contains(&name)
}

/// The name of a projected expression: its alias (which may not be reserved), else the name
/// ksqlDB derives, else none (to be generated).
pub(crate) fn select_item_name(expr: &Expr, alias: Option<&Ident>) -> Result<Option<String>> {
    match alias {
        Some(alias) if is_reserved(&alias.value) => Err(EngineError::statement(format!(
            "`{}` is a reserved column name. You cannot use it as an alias for a column.",
            alias.value
        ))),
        Some(alias) => Ok(Some(alias.value.clone())),
        None => Ok(implicit_name(expr)),
    }
}

/// Refuses a pseudo-column or window bound selected without an alias, as ksqlDB does.
pub(crate) fn check_reserved_in_select(select: &[SelectItem]) -> Result<()> {
    for item in select {
        if let SelectItem::Expr { expr, alias: None } = item
            && let Some(name) = column_name(expr)
            && is_reserved(name)
        {
            return Err(EngineError::statement(format!(
                "Reserved column name in select: `{name}`. Please remove or alias the column."
            )));
        }
    }
    Ok(())
}

/// ksqlDB's generated column names, `KSQL_COL_n`, skipping every name the projection or the
/// source already uses.
pub(crate) struct GeneratedNames {
    taken: Vec<String>,
    next: usize,
}

impl GeneratedNames {
    /// Names for a projection over `source` whose items are named as given (or not yet).
    pub(crate) fn new(source: &DataSource, items: &[(Option<String>, Expr)]) -> Self {
        GeneratedNames {
            taken: items
                .iter()
                .filter_map(|(n, _)| n.clone())
                .chain(source.columns.iter().map(|c| c.name.clone()))
                .collect(),
            next: 0,
        }
    }

    /// The next unused name.
    pub(crate) fn next(&mut self) -> String {
        loop {
            let name = format!("KSQL_COL_{}", self.next);
            self.next += 1;
            if !self.taken.contains(&name) {
                return name;
            }
        }
    }
}
