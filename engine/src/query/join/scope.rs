//! Names across a join while planning it: which source a column reference means, what the
//! joined rows call it, and the join's rows described as a source for what follows.

use datafusion::arrow::datatypes::SchemaRef;
use eddy_sql::ast::{Expr, ExprKind, Ident, SelectItem, SourceKind, SqlType};
use eddy_sql::{Position, Span};

use crate::catalog::DataSource;
use crate::error::{EngineError, Result};
use crate::format::{Format, FormatSpec};
use crate::query::scope::located_error;
use crate::query::source::ROWTIME;
use crate::schema::{Column, ColumnKind, PSEUDO_COLUMNS};

/// A column reference resolved against the join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Resolved {
    /// A column of one joined source: the member and the column's name there.
    Member(usize, String),
    /// A column of the joined rows themselves (`ROWTIME`, the synthetic key).
    Joined(String),
}

/// A source taking part in a join, and where its columns are.
pub(super) struct Member<'a> {
    pub(super) alias: String,
    pub(super) source: &'a DataSource,
    /// 0 when its rows arrive on a stage's left side, 1 on its right.
    pub(super) side: usize,
    /// On the left of a later stage its columns are already named `ALIAS_COLUMN`.
    pub(super) composite: bool,
}

/// Both sides of one join stage while planning.
pub(super) struct Sides<'a> {
    pub(super) members: Vec<Member<'a>>,
    /// What arrives on each side: a source, or the rows of the previous stage.
    pub(super) side_sources: [&'a DataSource; 2],
    pub(super) schemas: [SchemaRef; 2],
    /// The synthetic key's name, when the stage has one.
    pub(super) synthetic: Option<String>,
}

impl Sides<'_> {
    pub(super) fn member_named(&self, qualifier: &str) -> Option<usize> {
        self.members
            .iter()
            .position(|m| m.alias == qualifier || m.source.name == qualifier)
    }

    /// A member's column as its side's rows name it.
    pub(super) fn field(&self, member: usize, name: &str) -> String {
        let m = &self.members[member];
        if m.composite {
            format!("{}_{name}", m.alias)
        } else {
            name.to_string()
        }
    }

    pub(super) fn has(&self, member: usize, name: &str) -> bool {
        self.schemas[self.members[member].side]
            .field_with_name(&self.field(member, name))
            .is_ok()
    }

    /// A member's column as joined rows name it.
    pub(super) fn joined_name(&self, member: usize, name: &str) -> String {
        format!("{}_{name}", self.members[member].alias)
    }

    /// Whether a user column of this name is in several sources, so its plain name is
    /// ambiguous.
    pub(super) fn ambiguous(&self, name: &str) -> bool {
        self.members
            .iter()
            .filter(|m| m.source.columns.iter().any(|c| c.name == name))
            .count()
            > 1
            || PSEUDO_COLUMNS.contains(&name)
    }

    pub(super) fn resolve(
        &self,
        qualifier: Option<&Ident>,
        name: &Ident,
        clause: &str,
        at: Position,
    ) -> Result<Resolved> {
        let n = &name.value;
        match qualifier {
            Some(q) => {
                let Some(member) = self.member_named(&q.value) else {
                    return Err(located_error(
                        at,
                        format!(
                            "Failed to prepare statement: '{}' is not a valid stream/table name or alias.",
                            q.value
                        ),
                    ));
                };
                if self.has(member, n) {
                    Ok(Resolved::Member(member, n.clone()))
                } else {
                    Err(located_error(
                        at,
                        format!("{clause} column '{}.{n}' cannot be resolved.", q.value),
                    ))
                }
            }
            None => {
                if n == ROWTIME || self.synthetic.as_deref() == Some(n.as_str()) {
                    return Ok(Resolved::Joined(n.clone()));
                }
                let found: Vec<usize> = (0..self.members.len())
                    .filter(|&m| self.has(m, n))
                    .collect();
                match found.as_slice() {
                    [member] => Ok(Resolved::Member(*member, n.clone())),
                    [] => Err(located_error(
                        at,
                        format!("{clause} column '{n}' cannot be resolved."),
                    )),
                    many => Err(EngineError::statement(format!(
                        "Exception while preparing statement: Line: {}, Col: {}: Column '{n}' is ambiguous. Could be {}.",
                        at.line,
                        at.column,
                        many.iter()
                            .map(|&m| format!("{}.{n}", self.members[m].alias))
                            .collect::<Vec<_>>()
                            .join(" or ")
                    ))),
                }
            }
        }
    }

    /// `expr` with every column reference resolved and renamed by `name`.
    pub(super) fn rename(
        &self,
        expr: &Expr,
        clause: &str,
        name: &dyn Fn(&Resolved) -> String,
    ) -> Result<Expr> {
        let mut error = None;
        let rewritten = expr.rewrite(&mut |e| {
            let ExprKind::Column { source, name: n } = &e.kind else {
                return None;
            };
            if error.is_some() {
                return Some(e.clone());
            }
            match self.resolve(source.as_ref(), n, clause, e.span.start) {
                Ok(resolved) => Some(column_expr(&name(&resolved), e.span)),
                Err(err) => {
                    error = Some(err);
                    Some(e.clone())
                }
            }
        });
        match error {
            Some(e) => Err(e),
            None => Ok(rewritten),
        }
    }

    /// `expr` over joined rows.
    pub(super) fn rewrite(&self, expr: &Expr, clause: &str) -> Result<Expr> {
        self.rename(expr, clause, &|r| match r {
            Resolved::Member(m, n) => self.joined_name(*m, n),
            Resolved::Joined(n) => n.clone(),
        })
    }

    /// `expr` over the rows of its side.
    pub(super) fn rewrite_for_side(&self, expr: &Expr) -> Result<Expr> {
        self.rename(expr, "JOIN ON", &|r| match r {
            Resolved::Member(m, n) => self.field(*m, n),
            Resolved::Joined(n) => n.clone(),
        })
    }

    /// The members (sources) whose columns `expr` reads, each once, in order of first use.
    pub(super) fn referenced_members(&self, expr: &Expr, clause: &str) -> Result<Vec<usize>> {
        let mut members = Vec::new();
        let mut error = None;
        expr.any(&mut |e| {
            if let ExprKind::Column { source, name } = &e.kind
                && error.is_none()
            {
                match self.resolve(source.as_ref(), name, clause, e.span.start) {
                    Ok(Resolved::Member(m, _)) => {
                        if !members.contains(&m) {
                            members.push(m);
                        }
                    }
                    Ok(Resolved::Joined(_)) => {}
                    Err(err) => error = Some(err),
                }
            }
            false
        });
        match error {
            Some(e) => Err(e),
            None => Ok(members),
        }
    }

    /// `expr` with every column qualified by its source, as ksqlDB prints join conditions.
    pub(super) fn qualified(&self, expr: &Expr) -> Expr {
        expr.rewrite(&mut |e| {
            let ExprKind::Column { source, name } = &e.kind else {
                return None;
            };
            match self.resolve(source.as_ref(), name, "JOIN ON", e.span.start) {
                Ok(Resolved::Member(m, _)) => Some(Expr {
                    kind: ExprKind::Column {
                        source: Some(Ident::new(&self.members[m].alias)),
                        name: name.clone(),
                    },
                    span: e.span,
                }),
                _ => None,
            }
        })
    }

    /// The user columns of a member (keys first), as `*` lists them.
    pub(super) fn user_columns(&self, member: usize) -> Vec<&Column> {
        let source = self.members[member].source;
        source
            .key_columns()
            .chain(source.columns.iter().filter(|c| c.kind != ColumnKind::Key))
            .collect()
    }

    /// Whether `expr` is exactly the single key column of what arrives on `side`.
    pub(super) fn is_key_of(&self, side: usize, expr: &Expr) -> bool {
        let keys: Vec<&Column> = self.side_sources[side].key_columns().collect();
        let ExprKind::Column { source, name } = &expr.kind else {
            return false;
        };
        match (
            self.resolve(source.as_ref(), name, "JOIN ON", expr.span.start),
            keys.as_slice(),
        ) {
            (Ok(Resolved::Member(m, n)), [key]) => {
                self.members[m].side == side && self.field(m, &n) == key.name
            }
            _ => false,
        }
    }
}

/// A join's rows described as a source (JSON, unwindowed, read-only), so that what follows the
/// join plans over them as over any source.
pub(super) fn joined_rows_source(
    name: String,
    kind: SourceKind,
    topic: String,
    columns: Vec<Column>,
) -> DataSource {
    DataSource {
        name,
        kind,
        topic,
        key_format: FormatSpec::of(Format::Json),
        value_format: FormatSpec::of(Format::Json),
        wrap_single_value: None,
        columns,
        timestamp_column: None,
        timestamp_format: None,
        window: None,
        read_only: true,
        created_by_query: false,
        sql: String::new(),
    }
}

/// A projected expression over joined rows, named as ksqlDB names it: its alias; else, for a
/// column, its plain name, or `ALIAS_NAME` when several sources have a column of that name;
/// else none (generated later).
pub(super) fn select_item(
    sides: &Sides<'_>,
    expr: &Expr,
    alias: Option<&Ident>,
) -> Result<SelectItem> {
    let rewritten = sides.rewrite(expr, "SELECT")?;
    let alias = match (alias, &expr.kind) {
        (Some(a), _) => Some(a.clone()),
        (None, ExprKind::Column { source, name }) => {
            match sides.resolve(source.as_ref(), name, "SELECT", expr.span.start)? {
                Resolved::Member(m, n) if sides.ambiguous(&n) => {
                    Some(Ident::exact(&sides.joined_name(m, &n)))
                }
                Resolved::Member(_, n) => Some(Ident::exact(&n)),
                Resolved::Joined(_) => None,
            }
        }
        (None, _) => None,
    };
    Ok(SelectItem::Expr {
        expr: rewritten,
        alias,
    })
}

pub(super) fn column_expr(name: &str, span: Span) -> Expr {
    Expr {
        kind: ExprKind::Column {
            source: None,
            name: Ident::exact(name),
        },
        span,
    }
}

/// The column an expression is, if it is a bare column reference.
pub(super) fn bare_column(expr: &Expr) -> Option<&str> {
    match &expr.kind {
        ExprKind::Column { name, .. } => Some(&name.value),
        _ => None,
    }
}

pub(super) fn contains_map(ty: &SqlType) -> bool {
    match ty {
        SqlType::Map(..) => true,
        SqlType::Array(inner) => contains_map(inner),
        SqlType::Struct(fields) => fields.iter().any(|f| contains_map(&f.ty)),
        _ => false,
    }
}
