//! Printing the AST back to SQL that parses to an equal AST.

use std::fmt::{self, Display, Formatter, Write};

use crate::ast::*;

fn quote_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl Display for Ident {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        if self.quoted {
            write!(f, "`{}`", self.value.replace('`', "``"))
        } else {
            f.write_str(&self.value)
        }
    }
}

fn comma_separated<T: Display>(f: &mut Formatter<'_>, items: &[T]) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{item}")?;
    }
    Ok(())
}

impl Display for SqlType {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            SqlType::Boolean => f.write_str("BOOLEAN"),
            SqlType::Int => f.write_str("INT"),
            SqlType::Bigint => f.write_str("BIGINT"),
            SqlType::Double => f.write_str("DOUBLE"),
            SqlType::Decimal { precision, scale } => write!(f, "DECIMAL({precision}, {scale})"),
            SqlType::String => f.write_str("STRING"),
            SqlType::Bytes => f.write_str("BYTES"),
            SqlType::Date => f.write_str("DATE"),
            SqlType::Time => f.write_str("TIME"),
            SqlType::Timestamp => f.write_str("TIMESTAMP"),
            SqlType::Array(element) => write!(f, "ARRAY<{element}>"),
            SqlType::Map(key, value) => write!(f, "MAP<{key}, {value}>"),
            SqlType::Struct(fields) => {
                f.write_str("STRUCT<")?;
                for (i, field) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{} {}", field.name, field.ty)?;
                }
                f.write_str(">")
            }
            SqlType::Named(name) => write!(f, "{name}"),
        }
    }
}

impl Display for Literal {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Null => f.write_str("NULL"),
            Literal::Boolean(true) => f.write_str("true"),
            Literal::Boolean(false) => f.write_str("false"),
            Literal::Integer(n) => write!(f, "{n}"),
            Literal::Decimal(text) | Literal::Double(text) => f.write_str(text),
            Literal::String(s) => f.write_str(&quote_string(s)),
            Literal::Bytes(hex) => write!(f, "X'{hex}'"),
        }
    }
}

/// How tightly an expression binds when printed inside another.
fn precedence(expr: &Expr) -> u8 {
    match &expr.kind {
        ExprKind::Binary { op, .. } => op.precedence(),
        ExprKind::Unary {
            op: UnaryOp::Not, ..
        } => 3,
        ExprKind::Between { .. }
        | ExprKind::InList { .. }
        | ExprKind::Like { .. }
        | ExprKind::IsNull { .. }
        | ExprKind::IsDistinctFrom { .. } => 4,
        ExprKind::Unary { .. } => 8,
        ExprKind::Lambda { .. } => 0,
        // A negative number literal prints with its sign, so it binds like a unary minus.
        ExprKind::Literal(Literal::Integer(n)) if *n < 0 => 8,
        ExprKind::Literal(Literal::Decimal(text) | Literal::Double(text))
            if text.starts_with('-') =>
        {
            8
        }
        _ => 9,
    }
}

/// An expression as ksqlDB's formatter prints it in messages: every binary operation in
/// parentheses (`(RANDOM() + 1.5)`, `((A + B) > 1)`), the rest as SQL.
pub fn ksql_text(expr: &Expr) -> String {
    match &expr.kind {
        ExprKind::Binary { left, op, right } => {
            format!("({} {} {})", ksql_text(left), op.symbol(), ksql_text(right))
        }
        ExprKind::Unary {
            op: UnaryOp::Not,
            expr,
        } => format!("(NOT {})", ksql_text(expr)),
        ExprKind::Function { name, args, star } if !*star => {
            let args: Vec<String> = args.iter().map(ksql_text).collect();
            format!("{name}({})", args.join(", "))
        }
        _ => expr.to_string(),
    }
}

/// Prints `expr`, in parentheses when it binds looser than `min`.
struct Operand<'a>(&'a Expr, u8);

impl Display for Operand<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        if precedence(self.0) < self.1 {
            write!(f, "({})", self.0)
        } else {
            write!(f, "{}", self.0)
        }
    }
}

impl Display for Expr {
    #[recursive::recursive]
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ExprKind::Literal(literal) => write!(f, "{literal}"),
            ExprKind::Column { source, name } => match source {
                Some(source) => write!(f, "{source}.{name}"),
                None => write!(f, "{name}"),
            },
            ExprKind::Dereference { base, field } => write!(f, "{}->{field}", Operand(base, 9)),
            ExprKind::Subscript { base, index } => write!(f, "{}[{index}]", Operand(base, 9)),
            ExprKind::Unary { op, expr } => match op {
                UnaryOp::Not => write!(f, "NOT {}", Operand(expr, 3)),
                // Parenthesize any signed operand so `- -x` never prints as a `--` comment.
                UnaryOp::Minus | UnaryOp::Plus => {
                    let sign = if *op == UnaryOp::Minus { "-" } else { "+" };
                    if precedence(expr) <= 8 {
                        write!(f, "{sign}({expr})")
                    } else {
                        write!(f, "{sign}{expr}")
                    }
                }
            },
            ExprKind::Binary { left, op, right } => {
                let p = op.precedence();
                // Comparisons do not chain; arithmetic is left-associative.
                let (left_min, right_min) = if p == 4 { (5, 5) } else { (p, p + 1) };
                write!(
                    f,
                    "{} {} {}",
                    Operand(left, left_min),
                    op.symbol(),
                    Operand(right, right_min)
                )
            }
            ExprKind::Between {
                expr,
                negated,
                low,
                high,
            } => write!(
                f,
                "{} {}BETWEEN {} AND {}",
                Operand(expr, 5),
                if *negated { "NOT " } else { "" },
                Operand(low, 5),
                Operand(high, 5)
            ),
            ExprKind::InList {
                expr,
                negated,
                list,
            } => {
                write!(
                    f,
                    "{} {}IN (",
                    Operand(expr, 5),
                    if *negated { "NOT " } else { "" }
                )?;
                comma_separated(f, list)?;
                f.write_str(")")
            }
            ExprKind::Like {
                expr,
                negated,
                pattern,
                escape,
            } => {
                write!(
                    f,
                    "{} {}LIKE {}",
                    Operand(expr, 5),
                    if *negated { "NOT " } else { "" },
                    Operand(pattern, 5)
                )?;
                if let Some(escape) = escape {
                    write!(f, " ESCAPE {}", quote_string(escape))?;
                }
                Ok(())
            }
            ExprKind::IsNull { expr, negated } => write!(
                f,
                "{} IS {}NULL",
                Operand(expr, 5),
                if *negated { "NOT " } else { "" }
            ),
            ExprKind::IsDistinctFrom {
                left,
                negated,
                right,
            } => write!(
                f,
                "{} IS {}DISTINCT FROM {}",
                Operand(left, 5),
                if *negated { "NOT " } else { "" },
                Operand(right, 5)
            ),
            ExprKind::Case {
                operand,
                branches,
                otherwise,
            } => {
                f.write_str("CASE")?;
                if let Some(operand) = operand {
                    write!(f, " {operand}")?;
                }
                for (when, then) in branches {
                    write!(f, " WHEN {when} THEN {then}")?;
                }
                if let Some(otherwise) = otherwise {
                    write!(f, " ELSE {otherwise}")?;
                }
                f.write_str(" END")
            }
            ExprKind::Cast { expr, ty } => write!(f, "CAST({expr} AS {ty})"),
            ExprKind::Array(items) => {
                f.write_str("ARRAY[")?;
                comma_separated(f, items)?;
                f.write_str("]")
            }
            ExprKind::Map(entries) => {
                f.write_str("MAP(")?;
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}:={v}")?;
                }
                f.write_str(")")
            }
            ExprKind::Struct(fields) => {
                f.write_str("STRUCT(")?;
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}:={v}")?;
                }
                f.write_str(")")
            }
            ExprKind::Function { name, args, star } => {
                write!(f, "{name}(")?;
                if *star {
                    f.write_str("*")?;
                } else {
                    comma_separated(f, args)?;
                }
                f.write_str(")")
            }
            ExprKind::Lambda { params, body } => {
                if params.len() == 1 {
                    write!(f, "{} => {body}", params[0])
                } else {
                    f.write_str("(")?;
                    comma_separated(f, params)?;
                    write!(f, ") => {body}")
                }
            }
            ExprKind::AtTimeZone { expr, zone } => {
                write!(
                    f,
                    "{} AT TIME ZONE {}",
                    Operand(expr, 9),
                    quote_string(zone)
                )
            }
        }
    }
}

impl Display for Duration {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let unit = match self.unit {
            TimeUnit::Milliseconds => "MILLISECONDS",
            TimeUnit::Seconds => "SECONDS",
            TimeUnit::Minutes => "MINUTES",
            TimeUnit::Hours => "HOURS",
            TimeUnit::Days => "DAYS",
        };
        write!(f, "{} {unit}", self.value)
    }
}

impl Display for SourceKind {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceKind::Stream => "STREAM",
            SourceKind::Table => "TABLE",
        })
    }
}

impl Display for Property {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        if self.quoted {
            write!(f, "{}={}", quote_string(&self.name), self.value)
        } else {
            write!(f, "{}={}", self.name, self.value)
        }
    }
}

impl Display for Properties {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str("(")?;
        comma_separated(f, &self.0)?;
        f.write_str(")")
    }
}

impl Display for TableElement {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.ty)?;
        match &self.constraint {
            None => Ok(()),
            Some(ColumnConstraint::Key) => f.write_str(" KEY"),
            Some(ColumnConstraint::PrimaryKey) => f.write_str(" PRIMARY KEY"),
            Some(ColumnConstraint::Headers) => f.write_str(" HEADERS"),
            Some(ColumnConstraint::Header(key)) => write!(f, " HEADER({})", quote_string(key)),
        }
    }
}

impl Display for SelectItem {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            SelectItem::Expr { expr, alias } => {
                write!(f, "{expr}")?;
                if let Some(alias) = alias {
                    write!(f, " AS {alias}")?;
                }
                Ok(())
            }
            SelectItem::Wildcard(_) => f.write_str("*"),
            SelectItem::QualifiedWildcard(source) => write!(f, "{source}.*"),
            SelectItem::StructWildcard(expr) => write!(f, "{}->*", Operand(expr, 9)),
        }
    }
}

impl Display for AliasedSource {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name)?;
        if let Some(alias) = &self.alias {
            write!(f, " {alias}")?;
        }
        Ok(())
    }
}

impl Display for Join {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            JoinKind::Inner => "INNER JOIN",
            JoinKind::Left => "LEFT OUTER JOIN",
            JoinKind::Right => "RIGHT OUTER JOIN",
            JoinKind::Full => "FULL OUTER JOIN",
        };
        write!(f, "{kind} {}", self.source)?;
        if let Some(within) = &self.within {
            match within.after {
                Some(after) => write!(f, " WITHIN ({}, {after})", within.before)?,
                None => write!(f, " WITHIN {}", within.before)?,
            }
            if let Some(grace) = within.grace {
                write!(f, " GRACE PERIOD {grace}")?;
            }
        }
        write!(f, " ON {}", self.on)
    }
}

impl Display for WindowExpr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self.kind {
            WindowKind::Tumbling { size } => write!(f, "TUMBLING (SIZE {size}")?,
            WindowKind::Hopping { size, advance } => {
                write!(f, "HOPPING (SIZE {size}, ADVANCE BY {advance}")?
            }
            WindowKind::Session { gap } => write!(f, "SESSION ({gap}")?,
        }
        if let Some(retention) = self.retention {
            write!(f, ", RETENTION {retention}")?;
        }
        if let Some(grace) = self.grace {
            write!(f, ", GRACE PERIOD {grace}")?;
        }
        f.write_str(")")
    }
}

impl Display for OrderByItem {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.expr)?;
        if self.descending {
            f.write_str(" DESC")?;
        }
        match self.nulls_first {
            Some(true) => f.write_str(" NULLS FIRST"),
            Some(false) => f.write_str(" NULLS LAST"),
            None => Ok(()),
        }
    }
}

impl Display for Query {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str("SELECT ")?;
        comma_separated(f, &self.select)?;
        write!(f, " FROM {}", self.from.source)?;
        for join in &self.from.joins {
            write!(f, " {join}")?;
        }
        if let Some(window) = &self.window {
            write!(f, " WINDOW {window}")?;
        }
        if let Some(filter) = &self.filter {
            write!(f, " WHERE {filter}")?;
        }
        if !self.group_by.is_empty() {
            f.write_str(" GROUP BY ")?;
            comma_separated(f, &self.group_by)?;
        }
        if !self.partition_by.is_empty() {
            f.write_str(" PARTITION BY ")?;
            comma_separated(f, &self.partition_by)?;
        }
        if let Some(having) = &self.having {
            write!(f, " HAVING {having}")?;
        }
        if !self.order_by.is_empty() {
            f.write_str(" ORDER BY ")?;
            comma_separated(f, &self.order_by)?;
        }
        match self.emit {
            Some(Emit::Changes) => f.write_str(" EMIT CHANGES")?,
            Some(Emit::Final) => f.write_str(" EMIT FINAL")?,
            None => {}
        }
        if let Some(limit) = self.limit {
            write!(f, " LIMIT {limit}")?;
        }
        Ok(())
    }
}

fn target(t: &QueryTarget) -> String {
    match t {
        QueryTarget::All => "ALL".to_string(),
        QueryTarget::Query(id) => id.to_string(),
    }
}

fn if_not_exists(flag: bool) -> &'static str {
    if flag { " IF NOT EXISTS" } else { "" }
}

fn if_exists(flag: bool) -> &'static str {
    if flag { " IF EXISTS" } else { "" }
}

fn with_properties(properties: &Properties) -> String {
    if properties.is_empty() {
        String::new()
    } else {
        format!(" WITH {properties}")
    }
}

fn columns(columns: &Option<Vec<Ident>>) -> String {
    match columns {
        None => String::new(),
        Some(cols) => {
            let mut out = String::from(" (");
            for (i, c) in cols.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                let _ = write!(out, "{c}");
            }
            out.push(')');
            out
        }
    }
}

fn values(values: &[Expr]) -> String {
    let mut out = String::from("(");
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{v}");
    }
    out.push(')');
    out
}

fn elements(elements: &Option<Vec<TableElement>>) -> String {
    match elements {
        None => String::new(),
        Some(elements) => {
            let mut out = String::from(" (");
            for (i, e) in elements.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                let _ = write!(out, "{e}");
            }
            out.push(')');
            out
        }
    }
}

impl Display for Statement {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match &self.kind {
            StatementKind::CreateSource(c) => write!(
                f,
                "CREATE {}{}{}{} {}{}{}",
                if c.or_replace { "OR REPLACE " } else { "" },
                if c.read_only { "SOURCE " } else { "" },
                c.kind,
                if_not_exists(c.if_not_exists),
                c.name,
                elements(&c.elements),
                with_properties(&c.properties)
            ),
            StatementKind::CreateAsSelect(c) => write!(
                f,
                "CREATE {}{}{} {}{} AS {}",
                if c.or_replace { "OR REPLACE " } else { "" },
                c.kind,
                if_not_exists(c.if_not_exists),
                c.name,
                with_properties(&c.properties),
                c.query
            ),
            StatementKind::InsertInto {
                target,
                properties,
                query,
            } => write!(
                f,
                "INSERT INTO {target}{} {query}",
                with_properties(properties)
            ),
            StatementKind::InsertValues {
                target,
                columns: cols,
                values: vals,
            } => write!(
                f,
                "INSERT INTO {target}{} VALUES {}",
                columns(cols),
                values(vals)
            ),
            StatementKind::DropSource {
                kind,
                if_exists: flag,
                name,
                delete_topic,
            } => write!(
                f,
                "DROP {kind}{} {name}{}",
                if_exists(*flag),
                if *delete_topic { " DELETE TOPIC" } else { "" }
            ),
            StatementKind::Query(query) => write!(f, "{query}"),
            StatementKind::List { what, extended } => {
                let what = match what {
                    ListKind::Streams => "STREAMS",
                    ListKind::Tables => "TABLES",
                    ListKind::Topics => "TOPICS",
                    ListKind::AllTopics => "ALL TOPICS",
                    ListKind::Queries => "QUERIES",
                    ListKind::Properties => "PROPERTIES",
                    ListKind::Functions => "FUNCTIONS",
                    ListKind::Types => "TYPES",
                    ListKind::Variables => "VARIABLES",
                    ListKind::Connectors => "CONNECTORS",
                };
                write!(f, "SHOW {what}{}", if *extended { " EXTENDED" } else { "" })
            }
            StatementKind::Describe { name, extended } => write!(
                f,
                "DESCRIBE {}{name}",
                if *extended { "EXTENDED " } else { "" }
            ),
            StatementKind::DescribeAll { kind, extended } => write!(
                f,
                "DESCRIBE {}{}",
                match kind {
                    SourceKind::Stream => "STREAMS",
                    SourceKind::Table => "TABLES",
                },
                if *extended { " EXTENDED" } else { "" }
            ),
            StatementKind::DescribeFunction(name) => write!(f, "DESCRIBE FUNCTION {name}"),
            StatementKind::DescribeConnector(name) => write!(f, "DESCRIBE CONNECTOR {name}"),
            StatementKind::PauseConnector(name) => write!(f, "PAUSE CONNECTOR {name}"),
            StatementKind::ResumeConnector(name) => write!(f, "RESUME CONNECTOR {name}"),
            StatementKind::Explain(statement) => write!(f, "EXPLAIN {statement}"),
            StatementKind::ExplainQuery(id) => write!(f, "EXPLAIN {id}"),
            StatementKind::Terminate(t) => write!(f, "TERMINATE {}", target(t)),
            StatementKind::Pause(t) => write!(f, "PAUSE {}", target(t)),
            StatementKind::Resume(t) => write!(f, "RESUME {}", target(t)),
            StatementKind::Print(p) => {
                if p.quoted {
                    write!(f, "PRINT {}", quote_string(&p.topic))?;
                } else {
                    write!(f, "PRINT {}", p.topic)?;
                }
                if p.from_beginning {
                    f.write_str(" FROM BEGINNING")?;
                }
                if let Some(n) = p.interval {
                    write!(f, " INTERVAL {n}")?;
                }
                if let Some(n) = p.limit {
                    write!(f, " LIMIT {n}")?;
                }
                Ok(())
            }
            StatementKind::SetProperty { name, value } => {
                write!(f, "SET {}={}", quote_string(name), quote_string(value))
            }
            StatementKind::UnsetProperty(name) => write!(f, "UNSET {}", quote_string(name)),
            StatementKind::AlterSystem { name, value } => {
                write!(
                    f,
                    "ALTER SYSTEM {}={}",
                    quote_string(name),
                    quote_string(value)
                )
            }
            StatementKind::DefineVariable { name, value } => {
                write!(f, "DEFINE {name}={}", quote_string(value))
            }
            StatementKind::UndefineVariable(name) => write!(f, "UNDEFINE {name}"),
            StatementKind::CreateType {
                if_not_exists: flag,
                name,
                ty,
            } => write!(f, "CREATE TYPE{} {name} AS {ty}", if_not_exists(*flag)),
            StatementKind::DropType {
                if_exists: flag,
                name,
            } => write!(f, "DROP TYPE{} {name}", if_exists(*flag)),
            StatementKind::AlterSource {
                kind,
                name,
                columns: cols,
            } => {
                write!(f, "ALTER {kind} {name} ")?;
                for (i, (c, ty)) in cols.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "ADD COLUMN {c} {ty}")?;
                }
                Ok(())
            }
            StatementKind::CreateConnector {
                source,
                if_not_exists: flag,
                name,
                properties,
            } => write!(
                f,
                "CREATE {} CONNECTOR{} {name} WITH {properties}",
                if *source { "SOURCE" } else { "SINK" },
                if_not_exists(*flag)
            ),
            StatementKind::DropConnector {
                if_exists: flag,
                name,
            } => write!(f, "DROP CONNECTOR{} {name}", if_exists(*flag)),
            StatementKind::AssertTopic {
                exists,
                name,
                properties,
                timeout,
            } => {
                write!(
                    f,
                    "ASSERT {}TOPIC {name}{}",
                    if *exists { "" } else { "NOT EXISTS " },
                    with_properties(properties)
                )?;
                if let Some(t) = timeout {
                    write!(f, " TIMEOUT {t}")?;
                }
                Ok(())
            }
            StatementKind::AssertSchema {
                exists,
                subject,
                id,
                timeout,
            } => {
                write!(
                    f,
                    "ASSERT {}SCHEMA",
                    if *exists { "" } else { "NOT EXISTS " }
                )?;
                if let Some(s) = subject {
                    write!(f, " SUBJECT {s}")?;
                }
                if let Some(id) = id {
                    write!(f, " ID {id}")?;
                }
                if let Some(t) = timeout {
                    write!(f, " TIMEOUT {t}")?;
                }
                Ok(())
            }
            StatementKind::AssertValues {
                source,
                columns: cols,
                values: vals,
            } => write!(
                f,
                "ASSERT VALUES {source}{} VALUES {}",
                columns(cols),
                values(vals)
            ),
            StatementKind::AssertTombstone {
                source,
                columns: cols,
                keys,
            } => write!(
                f,
                "ASSERT NULL VALUES {source}{} KEY {}",
                columns(cols),
                values(keys)
            ),
            StatementKind::AssertSource {
                kind,
                name,
                elements: els,
                properties,
            } => write!(
                f,
                "ASSERT {kind} {name}{}{}",
                elements(els),
                with_properties(properties)
            ),
            StatementKind::RunScript(path) => write!(f, "RUN SCRIPT {}", quote_string(path)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ksql_text;
    use crate::ast::{SelectItem, StatementKind};

    #[test]
    fn messages_print_every_binary_operation_in_parentheses_as_ksqldb_does() {
        let statement =
            crate::parse_statement("SELECT a + b * 2 > 1 AND NOT c, RANDOM() + 1.5, x FROM s;")
                .unwrap();
        let StatementKind::Query(query) = statement.kind else {
            panic!("not a query");
        };
        let texts: Vec<String> = query
            .select
            .iter()
            .map(|item| match item {
                SelectItem::Expr { expr, .. } => ksql_text(expr),
                _ => String::new(),
            })
            .collect();
        assert_eq!(
            texts,
            ["(((A + (B * 2)) > 1) AND (NOT C))", "(RANDOM() + 1.5)", "X"]
        );
    }
}
