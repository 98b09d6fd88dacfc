//! Statements, queries and their clauses.

use datafusion::sql::sqlparser::tokenizer::Token;

use super::Parser;
use crate::ast::ExprKind;
use crate::ast::{
    AliasedSource, ColumnConstraint, CreateAsSelect, CreateSource, Emit, Ident, Join, JoinKind,
    JoinWindow, ListKind, Literal, OrderByItem, Print, Properties, Property, Query, QueryTarget,
    Relation, SelectItem, SourceKind, Statement, StatementKind, TableElement, WindowExpr,
    WindowKind,
};
use crate::error::ParseError;
use crate::parser::describe as describe_token;

impl Parser {
    /// One statement, without its terminating `;`.
    pub(crate) fn parse_statement(&mut self) -> Result<Statement, ParseError> {
        let start = self.peek_span().start;
        let kind = self.parse_statement_kind()?;
        Ok(Statement {
            kind,
            span: self.span_from(start),
        })
    }

    fn parse_statement_kind(&mut self) -> Result<StatementKind, ParseError> {
        let Token::Word(word) = self.peek().clone() else {
            return Err(self.expected("a statement"));
        };
        if word.quote_style.is_some() {
            return Err(self.expected("a statement"));
        }
        match word.value.to_ascii_uppercase().as_str() {
            "SELECT" => Ok(StatementKind::Query(Box::new(self.parse_query()?))),
            "CREATE" => self.parse_create(),
            "INSERT" => self.parse_insert(),
            "DROP" => self.parse_drop(),
            "SHOW" | "LIST" => self.parse_list(),
            "DESCRIBE" => self.parse_describe(),
            "EXPLAIN" => {
                self.advance();
                let starts_statement = matches!(self.peek(), Token::Word(w) if w.quote_style.is_none()
                    && ["SELECT", "CREATE", "INSERT"].iter().any(|k| w.value.eq_ignore_ascii_case(k)));
                if starts_statement {
                    Ok(StatementKind::Explain(Box::new(self.parse_statement()?)))
                } else {
                    Ok(StatementKind::ExplainQuery(self.parse_any_ident()?))
                }
            }
            "TERMINATE" => {
                self.advance();
                Ok(StatementKind::Terminate(self.parse_query_target()?))
            }
            "PAUSE" => {
                self.advance();
                if self.at_connector_name() {
                    self.advance();
                    return Ok(StatementKind::PauseConnector(self.parse_any_ident()?));
                }
                Ok(StatementKind::Pause(self.parse_query_target()?))
            }
            "RESUME" => {
                self.advance();
                if self.at_connector_name() {
                    self.advance();
                    return Ok(StatementKind::ResumeConnector(self.parse_any_ident()?));
                }
                Ok(StatementKind::Resume(self.parse_query_target()?))
            }
            "PRINT" => self.parse_print(),
            "SET" => {
                self.advance();
                let (name, value) = self.parse_string_assignment()?;
                Ok(StatementKind::SetProperty { name, value })
            }
            "UNSET" => {
                self.advance();
                Ok(StatementKind::UnsetProperty(self.parse_string()?))
            }
            "DEFINE" => {
                self.advance();
                let name = self.parse_any_ident()?;
                self.expect(&Token::Eq, "'='")?;
                let value = self.parse_string()?;
                Ok(StatementKind::DefineVariable { name, value })
            }
            "UNDEFINE" => {
                self.advance();
                Ok(StatementKind::UndefineVariable(self.parse_any_ident()?))
            }
            "ALTER" => self.parse_alter(),
            "ASSERT" => self.parse_assert(),
            "RUN" if self.options.run_script => {
                self.advance();
                self.expect_keyword("SCRIPT")?;
                Ok(StatementKind::RunScript(self.parse_string()?))
            }
            "RUN" => Err(ParseError::new(
                "Syntax Error\nUnknown statement 'RUN': RUN SCRIPT runs in the shell, not on the server",
                self.peek_span().start,
            )),
            _ => Err(self.expected(
                "a statement (SELECT, CREATE, INSERT, DROP, SHOW, LIST, DESCRIBE, EXPLAIN, TERMINATE, \
                 PAUSE, RESUME, PRINT, SET, UNSET, DEFINE, UNDEFINE, ALTER, ASSERT or RUN SCRIPT)",
            )),
        }
    }

    fn parse_source_kind(&mut self) -> Result<SourceKind, ParseError> {
        if self.eat_keyword("STREAM") {
            Ok(SourceKind::Stream)
        } else if self.eat_keyword("TABLE") {
            Ok(SourceKind::Table)
        } else {
            Err(self.expected("STREAM or TABLE"))
        }
    }

    fn parse_create(&mut self) -> Result<StatementKind, ParseError> {
        self.expect_keyword("CREATE")?;
        let or_replace = self.eat_keywords(&["OR", "REPLACE"]);
        if !or_replace {
            if self.eat_keyword("TYPE") {
                let if_not_exists = self.eat_keywords(&["IF", "NOT", "EXISTS"]);
                let name = self.parse_any_ident()?;
                self.expect_keyword("AS")?;
                let ty = self.parse_type()?;
                return Ok(StatementKind::CreateType {
                    if_not_exists,
                    name,
                    ty,
                });
            }
            let connector = (self.at_keyword("SOURCE") || self.at_keyword("SINK"))
                && Self::is_keyword(self.peek_nth(1), "CONNECTOR");
            if connector {
                let source = self.eat_keyword("SOURCE");
                if !source {
                    self.expect_keyword("SINK")?;
                }
                self.expect_keyword("CONNECTOR")?;
                let if_not_exists = self.eat_keywords(&["IF", "NOT", "EXISTS"]);
                let name = self.parse_any_ident()?;
                self.expect_keyword("WITH")?;
                let properties = self.parse_properties()?;
                return Ok(StatementKind::CreateConnector {
                    source,
                    if_not_exists,
                    name,
                    properties,
                });
            }
        }
        let read_only = self.eat_keyword("SOURCE");
        let kind = self.parse_source_kind()?;
        let if_not_exists = self.eat_keywords(&["IF", "NOT", "EXISTS"]);
        let name = self.parse_any_ident()?;
        let (elements, properties) = self.parse_elements_and_properties()?;
        if self.at_keyword("AS") {
            if read_only {
                return Err(
                    self.expected("the end of the statement: CREATE SOURCE cannot be AS SELECT")
                );
            }
            if elements.is_some() {
                return Err(self
                    .expected("the end of the statement: a column list cannot go with AS SELECT"));
            }
            self.advance();
            let query = self.parse_query()?;
            return Ok(StatementKind::CreateAsSelect(CreateAsSelect {
                kind,
                or_replace,
                if_not_exists,
                name,
                properties,
                query: Box::new(query),
            }));
        }
        if let Some(elements) = &elements {
            check_key_constraints(kind, elements)?;
        }
        check_window_properties(&properties)?;
        Ok(StatementKind::CreateSource(CreateSource {
            kind,
            or_replace,
            read_only,
            if_not_exists,
            name,
            elements,
            properties,
        }))
    }

    pub(crate) fn parse_table_elements(&mut self) -> Result<Vec<TableElement>, ParseError> {
        self.expect(&Token::LParen, "'('")?;
        let elements = self.parse_comma_separated(|p| {
            let start = p.peek_span().start;
            let name = p.parse_any_ident()?;
            let ty = p.parse_type()?;
            let constraint = if p.eat_keywords(&["PRIMARY", "KEY"]) {
                Some(ColumnConstraint::PrimaryKey)
            } else if p.eat_keyword("KEY") {
                Some(ColumnConstraint::Key)
            } else if p.eat_keyword("HEADERS") {
                Some(ColumnConstraint::Headers)
            } else if p.at_keyword("HEADER") {
                p.advance();
                p.expect(&Token::LParen, "'('")?;
                let key = p.parse_string()?;
                p.expect(&Token::RParen, "')'")?;
                Some(ColumnConstraint::Header(key))
            } else {
                None
            };
            Ok(TableElement {
                name,
                ty,
                constraint,
                span: p.span_from(start),
            })
        })?;
        self.expect(&Token::RParen, "',' or ')'")?;
        Ok(elements)
    }

    /// An optional column list, then optional `WITH (...)` properties.
    fn parse_elements_and_properties(
        &mut self,
    ) -> Result<(Option<Vec<TableElement>>, Properties), ParseError> {
        let elements = if self.peek() == &Token::LParen {
            Some(self.parse_table_elements()?)
        } else {
            None
        };
        let properties = if self.eat_keyword("WITH") {
            self.parse_properties()?
        } else {
            Properties::default()
        };
        Ok((elements, properties))
    }

    /// A name written as an identifier or as a quoted string; the flag says whether it was
    /// quoted (a string keeps its case).
    fn parse_name_or_string(&mut self, what: &str) -> Result<(String, bool), ParseError> {
        match self.peek().clone() {
            Token::SingleQuotedString(s) => {
                self.advance();
                Ok((s, true))
            }
            Token::Word(_) => {
                let ident = self.parse_any_ident()?;
                Ok((ident.value, ident.quoted))
            }
            _ => Err(self.expected(what)),
        }
    }

    /// `( name = literal, ... )`.
    pub(crate) fn parse_properties(&mut self) -> Result<Properties, ParseError> {
        self.expect(&Token::LParen, "'('")?;
        let properties = self.parse_comma_separated(|p| {
            let start = p.peek_span().start;
            let (name, quoted) = p.parse_name_or_string("a property name")?;
            p.expect(&Token::Eq, "'='")?;
            let value = p.parse_property_value()?;
            Ok(Property {
                name,
                quoted,
                value,
                span: p.span_from(start),
            })
        })?;
        self.expect(&Token::RParen, "',' or ')'")?;
        Ok(Properties(properties))
    }

    fn parse_property_value(&mut self) -> Result<Literal, ParseError> {
        let expr = self.parse_value(0)?;
        match expr.kind {
            ExprKind::Literal(literal) => Ok(literal),
            _ => Err(ParseError::new(
                "Syntax Error\nexpected a literal property value (a string, number or boolean)",
                expr.span.start,
            )),
        }
    }

    fn parse_insert(&mut self) -> Result<StatementKind, ParseError> {
        self.expect_keywords(&["INSERT", "INTO"])?;
        let target = self.parse_any_ident()?;
        if self.at_keyword("WITH") || self.at_keyword("SELECT") {
            let properties = if self.eat_keyword("WITH") {
                self.parse_properties()?
            } else {
                Properties::default()
            };
            let query = self.parse_query()?;
            return Ok(StatementKind::InsertInto {
                target,
                properties,
                query: Box::new(query),
            });
        }
        let columns = self.parse_optional_columns()?;
        self.expect_keyword("VALUES")?;
        let values = self.parse_values()?;
        Ok(StatementKind::InsertValues {
            target,
            columns,
            values,
        })
    }

    fn parse_optional_columns(&mut self) -> Result<Option<Vec<Ident>>, ParseError> {
        if !self.eat(&Token::LParen) {
            return Ok(None);
        }
        let columns = self.parse_comma_separated(|p| p.parse_any_ident())?;
        self.expect(&Token::RParen, "',' or ')'")?;
        Ok(Some(columns))
    }

    fn parse_values(&mut self) -> Result<Vec<crate::ast::Expr>, ParseError> {
        self.expect(&Token::LParen, "'('")?;
        self.parse_list_until(&Token::RParen, |p| p.parse_expr())
    }

    /// `'name' = 'value'`, as `SET` and `ALTER SYSTEM` take it.
    fn parse_string_assignment(&mut self) -> Result<(String, String), ParseError> {
        let name = self.parse_string()?;
        self.expect(&Token::Eq, "'='")?;
        Ok((name, self.parse_string()?))
    }

    fn parse_drop(&mut self) -> Result<StatementKind, ParseError> {
        self.expect_keyword("DROP")?;
        if self.eat_keyword("TYPE") {
            let if_exists = self.eat_keywords(&["IF", "EXISTS"]);
            let name = self.parse_any_ident()?;
            return Ok(StatementKind::DropType { if_exists, name });
        }
        if self.eat_keyword("CONNECTOR") {
            let if_exists = self.eat_keywords(&["IF", "EXISTS"]);
            let name = self.parse_any_ident()?;
            return Ok(StatementKind::DropConnector { if_exists, name });
        }
        let kind = self.parse_source_kind()?;
        let if_exists = self.eat_keywords(&["IF", "EXISTS"]);
        let name = self.parse_any_ident()?;
        let delete_topic = self.eat_keywords(&["DELETE", "TOPIC"]);
        Ok(StatementKind::DropSource {
            kind,
            if_exists,
            name,
            delete_topic,
        })
    }

    fn parse_list(&mut self) -> Result<StatementKind, ParseError> {
        self.advance();
        let what = if self.eat_keyword("STREAMS") {
            ListKind::Streams
        } else if self.eat_keyword("TABLES") {
            ListKind::Tables
        } else if self.eat_keyword("TOPICS") {
            ListKind::Topics
        } else if self.eat_keywords(&["ALL", "TOPICS"]) {
            ListKind::AllTopics
        } else if self.eat_keyword("QUERIES") {
            ListKind::Queries
        } else if self.eat_keyword("PROPERTIES") {
            ListKind::Properties
        } else if self.eat_keyword("FUNCTIONS") {
            ListKind::Functions
        } else if self.eat_keyword("TYPES") {
            ListKind::Types
        } else if self.eat_keyword("VARIABLES") {
            ListKind::Variables
        } else if self.eat_keyword("CONNECTORS") {
            ListKind::Connectors
        } else {
            return Err(self.expected(
                "STREAMS, TABLES, TOPICS, ALL TOPICS, QUERIES, PROPERTIES, FUNCTIONS, TYPES, VARIABLES or CONNECTORS",
            ));
        };
        let extended = self.eat_keyword("EXTENDED");
        Ok(StatementKind::List { what, extended })
    }

    fn parse_describe(&mut self) -> Result<StatementKind, ParseError> {
        self.expect_keyword("DESCRIBE")?;
        let mut extended = self.eat_keyword("EXTENDED");
        let next_ends = matches!(self.peek_nth(1), Token::EOF | Token::SemiColon)
            || Self::is_keyword(self.peek_nth(1), "EXTENDED");
        if next_ends && (self.at_keyword("STREAMS") || self.at_keyword("TABLES")) {
            let kind = if self.eat_keyword("STREAMS") {
                SourceKind::Stream
            } else {
                self.advance();
                SourceKind::Table
            };
            extended |= self.eat_keyword("EXTENDED");
            return Ok(StatementKind::DescribeAll { kind, extended });
        }
        if self.at_keyword("FUNCTION") && matches!(self.peek_nth(1), Token::Word(_)) {
            self.advance();
            return Ok(StatementKind::DescribeFunction(self.parse_any_ident()?));
        }
        if self.at_connector_name() {
            self.advance();
            return Ok(StatementKind::DescribeConnector(self.parse_any_ident()?));
        }
        let name = self.parse_any_ident()?;
        extended |= self.eat_keyword("EXTENDED");
        Ok(StatementKind::Describe { name, extended })
    }

    fn parse_query_target(&mut self) -> Result<QueryTarget, ParseError> {
        if self.at_keyword("ALL") && matches!(self.peek_nth(1), Token::EOF | Token::SemiColon) {
            self.advance();
            return Ok(QueryTarget::All);
        }
        Ok(QueryTarget::Query(self.parse_any_ident()?))
    }

    fn parse_print(&mut self) -> Result<StatementKind, ParseError> {
        self.expect_keyword("PRINT")?;
        // As in ksqlDB, a topic named without quotes keeps its case: topic names are
        // case-sensitive and are not SQL identifiers.
        let (topic, quoted) = match self.peek().clone() {
            Token::Word(word) if word.quote_style.is_none() => {
                self.advance();
                (word.value, false)
            }
            _ => self.parse_name_or_string("a topic name")?,
        };
        let from_beginning = self.eat_keywords(&["FROM", "BEGINNING"]);
        let interval = if self.eat_keyword("INTERVAL") || self.eat_keyword("SAMPLE") {
            Some(self.parse_unsigned()?)
        } else {
            None
        };
        let limit = if self.eat_keyword("LIMIT") {
            Some(self.parse_unsigned()?)
        } else {
            None
        };
        Ok(StatementKind::Print(Print {
            topic,
            quoted,
            from_beginning,
            interval,
            limit,
        }))
    }

    fn parse_alter(&mut self) -> Result<StatementKind, ParseError> {
        self.expect_keyword("ALTER")?;
        if self.eat_keyword("SYSTEM") {
            let (name, value) = self.parse_string_assignment()?;
            return Ok(StatementKind::AlterSystem { name, value });
        }
        let kind = self.parse_source_kind()?;
        let name = self.parse_any_ident()?;
        let columns = self.parse_comma_separated(|p| {
            p.expect_keyword("ADD")?;
            p.eat_keyword("COLUMN");
            let column = p.parse_any_ident()?;
            let ty = p.parse_type()?;
            Ok((column, ty))
        })?;
        Ok(StatementKind::AlterSource {
            kind,
            name,
            columns,
        })
    }

    fn parse_assert(&mut self) -> Result<StatementKind, ParseError> {
        self.expect_keyword("ASSERT")?;
        let test_only = ["VALUES", "NULL", "STREAM", "TABLE"]
            .iter()
            .any(|k| self.at_keyword(k));
        if test_only && !self.options.test_statements {
            return Err(ParseError::new(
                format!(
                    "Syntax error at or near {} at line {}:{}: ASSERT VALUES, NULL VALUES, STREAM and TABLE are only for tests",
                    describe_token(self.peek()),
                    self.peek_span().start.line,
                    self.peek_span().start.column
                ),
                self.peek_span().start,
            ));
        }
        if self.eat_keyword("VALUES") {
            let source = self.parse_any_ident()?;
            let columns = self.parse_optional_columns()?;
            self.expect_keyword("VALUES")?;
            let values = self.parse_values()?;
            return Ok(StatementKind::AssertValues {
                source,
                columns,
                values,
            });
        }
        if self.eat_keywords(&["NULL", "VALUES"]) {
            let source = self.parse_any_ident()?;
            let columns = self.parse_optional_columns()?;
            self.expect_keyword("KEY")?;
            let keys = self.parse_values()?;
            return Ok(StatementKind::AssertTombstone {
                source,
                columns,
                keys,
            });
        }
        if self.at_keyword("STREAM") || self.at_keyword("TABLE") {
            let kind = self.parse_source_kind()?;
            let name = self.parse_any_ident()?;
            let (elements, properties) = self.parse_elements_and_properties()?;
            return Ok(StatementKind::AssertSource {
                kind,
                name,
                elements,
                properties,
            });
        }
        let exists = !self.eat_keywords(&["NOT", "EXISTS"]);
        if self.eat_keyword("TOPIC") {
            let name = self.parse_any_ident()?;
            let properties = if self.eat_keyword("WITH") {
                self.parse_properties()?
            } else {
                Properties::default()
            };
            let timeout = self.parse_timeout()?;
            return Ok(StatementKind::AssertTopic {
                exists,
                name,
                properties,
                timeout,
            });
        }
        if self.eat_keyword("SCHEMA") {
            let subject = if self.eat_keyword("SUBJECT") {
                Some(self.parse_any_ident()?)
            } else {
                None
            };
            let id = if self.eat_keyword("ID") {
                Some(self.parse_unsigned()? as i64)
            } else {
                None
            };
            let timeout = self.parse_timeout()?;
            return Ok(StatementKind::AssertSchema {
                exists,
                subject,
                id,
                timeout,
            });
        }
        Err(self.expected("TOPIC, SCHEMA, VALUES, NULL VALUES, STREAM or TABLE"))
    }

    fn parse_timeout(&mut self) -> Result<Option<crate::ast::Duration>, ParseError> {
        if self.eat_keyword("TIMEOUT") {
            Ok(Some(self.parse_duration()?))
        } else {
            Ok(None)
        }
    }

    /// `SELECT ... FROM ... [WINDOW] [WHERE] [GROUP BY] [PARTITION BY] [HAVING] [ORDER BY]
    /// [EMIT] [LIMIT]`.
    pub(crate) fn parse_query(&mut self) -> Result<Query, ParseError> {
        let start = self.peek_span().start;
        self.expect_keyword("SELECT")?;
        let select = self.parse_comma_separated(|p| p.parse_select_item())?;
        self.expect_keyword("FROM")?;
        let from = self.parse_relation()?;
        let window = if self.eat_keyword("WINDOW") {
            Some(self.parse_window()?)
        } else {
            None
        };
        let filter = if self.eat_keyword("WHERE") {
            Some(self.parse_expr()?)
        } else {
            None
        };
        let group_by = if self.eat_keywords(&["GROUP", "BY"]) {
            self.parse_grouping()?
        } else {
            Vec::new()
        };
        let partition_by = if self.eat_keywords(&["PARTITION", "BY"]) {
            let at = self.peek_span();
            let expressions = self.parse_grouping()?;
            if expressions.is_empty() {
                // `PARTITION BY ()` is in ksqlDB's grammar; its analyzer refuses it.
                return Err(ParseError::new(
                    "PARTITION BY requires at least one expression",
                    at.start,
                ));
            }
            expressions
        } else {
            Vec::new()
        };
        let having = if self.eat_keyword("HAVING") {
            Some(self.parse_expr()?)
        } else {
            None
        };
        let order_by = if self.eat_keywords(&["ORDER", "BY"]) {
            self.parse_comma_separated(|p| p.parse_order_by_item())?
        } else {
            Vec::new()
        };
        let emit = if self.eat_keyword("EMIT") {
            if self.eat_keyword("CHANGES") {
                Some(Emit::Changes)
            } else if self.eat_keyword("FINAL") {
                Some(Emit::Final)
            } else {
                return Err(self.expected("CHANGES or FINAL"));
            }
        } else {
            None
        };
        let limit = if self.eat_keyword("LIMIT") {
            Some(self.parse_limit()?)
        } else {
            None
        };
        Ok(Query {
            select,
            from,
            window,
            filter,
            group_by,
            partition_by,
            having,
            emit,
            order_by,
            limit,
            span: self.span_from(start),
        })
    }

    /// `expr [ASC|DESC] [NULLS FIRST|LAST]`.
    fn parse_order_by_item(&mut self) -> Result<OrderByItem, ParseError> {
        let start = self.peek_span().start;
        let expr = self.parse_expr()?;
        let descending = if self.eat_keyword("DESC") {
            true
        } else {
            self.eat_keyword("ASC");
            false
        };
        let nulls_first = if self.eat_keyword("NULLS") {
            if self.eat_keyword("FIRST") {
                Some(true)
            } else if self.eat_keyword("LAST") {
                Some(false)
            } else {
                return Err(self.expected("FIRST or LAST after NULLS"));
            }
        } else {
            None
        };
        Ok(OrderByItem {
            expr,
            descending,
            nulls_first,
            span: self.span_from(start),
        })
    }

    fn parse_limit(&mut self) -> Result<i64, ParseError> {
        let start = self.peek_span().start;
        let negative = self.eat(&Token::Minus);
        match self.peek().clone() {
            Token::Number(text, _) => {
                let value = text.parse::<i64>().map_err(|_| {
                    ParseError::new(
                        "Failed to prepare statement: Value must be integer for command: LIMIT",
                        start,
                    )
                })?;
                self.advance();
                Ok(if negative { -value } else { value })
            }
            _ => Err(self.expected("a number after LIMIT")),
        }
    }

    /// `a, b` or `(a, b)`, as `GROUP BY` and `PARTITION BY` take them.
    fn parse_grouping(&mut self) -> Result<Vec<crate::ast::Expr>, ParseError> {
        if self.peek() == &Token::LParen {
            // `(a, b)` is a list; `(a + b) * 2` is one expression that starts with a parenthesis.
            let checkpoint = self.pos;
            self.advance();
            if self.eat(&Token::RParen) {
                return Ok(Vec::new());
            }
            if let Ok(items) = self.parse_comma_separated(|p| p.parse_value(0))
                && self.eat(&Token::RParen)
                && (items.len() > 1 || !self.continues_expression())
            {
                return Ok(items);
            }
            self.pos = checkpoint;
        }
        self.parse_comma_separated(|p| p.parse_value(0))
    }

    fn continues_expression(&self) -> bool {
        matches!(
            self.peek(),
            Token::Plus
                | Token::Minus
                | Token::Mul
                | Token::Div
                | Token::Mod
                | Token::StringConcat
                | Token::LBracket
                | Token::Arrow
        )
    }

    fn parse_select_item(&mut self) -> Result<SelectItem, ParseError> {
        if self.peek() == &Token::Mul {
            let span = self.advance().span;
            return Ok(SelectItem::Wildcard(span));
        }
        if matches!(self.peek(), Token::Word(_))
            && self.peek_nth(1) == &Token::Period
            && self.peek_nth(2) == &Token::Mul
        {
            let source = self.parse_any_ident()?;
            self.advance();
            self.advance();
            return Ok(SelectItem::QualifiedWildcard(source));
        }
        let expr = self.parse_expr()?;
        if self.peek() == &Token::Arrow && self.peek_nth(1) == &Token::Mul {
            self.advance();
            self.advance();
            return Ok(SelectItem::StructWildcard(expr));
        }
        let alias = if self.eat_keyword("AS") {
            Some(self.parse_any_ident()?)
        } else if self.at_plain_ident() {
            Some(self.parse_ident()?)
        } else {
            None
        };
        Ok(SelectItem::Expr { expr, alias })
    }

    fn parse_aliased_source(&mut self) -> Result<AliasedSource, ParseError> {
        let start = self.peek_span().start;
        let name = self.parse_any_ident()?;
        let alias = if self.eat_keyword("AS") {
            Some(self.parse_any_ident()?)
        } else if self.at_plain_ident() {
            Some(self.parse_ident()?)
        } else {
            None
        };
        Ok(AliasedSource {
            name,
            alias,
            span: self.span_from(start),
        })
    }

    fn parse_relation(&mut self) -> Result<Relation, ParseError> {
        let source = self.parse_aliased_source()?;
        let mut joins = Vec::new();
        loop {
            let start = self.peek_span().start;
            let kind = if self.eat_keyword("JOIN") || self.eat_keywords(&["INNER", "JOIN"]) {
                JoinKind::Inner
            } else if self.at_keyword("LEFT") || self.at_keyword("RIGHT") || self.at_keyword("FULL")
            {
                let kind = if self.eat_keyword("LEFT") {
                    JoinKind::Left
                } else if self.eat_keyword("RIGHT") {
                    JoinKind::Right
                } else {
                    self.advance();
                    JoinKind::Full
                };
                self.eat_keyword("OUTER");
                self.expect_keyword("JOIN")?;
                kind
            } else {
                break;
            };
            let source = self.parse_aliased_source()?;
            let within = if self.eat_keyword("WITHIN") {
                Some(self.parse_join_window()?)
            } else {
                None
            };
            self.expect_keyword("ON")?;
            let on = self.parse_expr()?;
            joins.push(Join {
                kind,
                source,
                within,
                on,
                span: self.span_from(start),
            });
        }
        Ok(Relation { source, joins })
    }

    fn parse_join_window(&mut self) -> Result<JoinWindow, ParseError> {
        let (before, after) = if self.eat(&Token::LParen) {
            let before = self.parse_duration()?;
            self.expect(&Token::Comma, "','")?;
            let after = self.parse_duration()?;
            self.expect(&Token::RParen, "')'")?;
            (before, Some(after))
        } else {
            (self.parse_duration()?, None)
        };
        let grace = if self.eat_keywords(&["GRACE", "PERIOD"]) {
            Some(self.parse_duration()?)
        } else {
            None
        };
        Ok(JoinWindow {
            before,
            after,
            grace,
        })
    }

    fn parse_window(&mut self) -> Result<WindowExpr, ParseError> {
        let start = self.peek_span().start;
        let kind_word = if self.eat_keyword("TUMBLING") {
            "TUMBLING"
        } else if self.eat_keyword("HOPPING") {
            "HOPPING"
        } else if self.eat_keyword("SESSION") {
            "SESSION"
        } else {
            return Err(self.expected("TUMBLING, HOPPING or SESSION"));
        };
        self.expect(&Token::LParen, "'('")?;
        let kind = match kind_word {
            "TUMBLING" => {
                self.expect_keyword("SIZE")?;
                WindowKind::Tumbling {
                    size: self.parse_duration()?,
                }
            }
            "HOPPING" => {
                self.expect_keyword("SIZE")?;
                let size = self.parse_duration()?;
                self.expect(&Token::Comma, "','")?;
                self.expect_keywords(&["ADVANCE", "BY"])?;
                let advance = self.parse_duration()?;
                WindowKind::Hopping { size, advance }
            }
            _ => WindowKind::Session {
                gap: self.parse_duration()?,
            },
        };
        let mut retention = None;
        let mut grace = None;
        while self.eat(&Token::Comma) {
            if retention.is_none() && self.eat_keyword("RETENTION") {
                retention = Some(self.parse_duration()?);
            } else if grace.is_none() && self.eat_keywords(&["GRACE", "PERIOD"]) {
                grace = Some(self.parse_duration()?);
            } else {
                return Err(self.expected("RETENTION or GRACE PERIOD"));
            }
        }
        self.expect(&Token::RParen, "')'")?;
        Ok(WindowExpr {
            kind,
            retention,
            grace,
            span: self.span_from(start),
        })
    }
}

/// Streams declare `KEY` columns and tables `PRIMARY KEY` columns; ksqlDB refuses the other one.
fn check_key_constraints(kind: SourceKind, elements: &[TableElement]) -> Result<(), ParseError> {
    for element in elements {
        let message = match (kind, &element.constraint) {
            (SourceKind::Table, Some(ColumnConstraint::Key)) => format!(
                "Column `{}` is a 'KEY' column: please use 'PRIMARY KEY' for tables.",
                element.name.value
            ),
            (SourceKind::Stream, Some(ColumnConstraint::PrimaryKey)) => format!(
                "Column `{}` is a 'PRIMARY KEY' column: please use 'KEY' for streams.",
                element.name.value
            ),
            _ => continue,
        };
        return Err(ParseError::located(message, element.span.start));
    }
    Ok(())
}

/// Session windows have no fixed size, so `WINDOW_SIZE` cannot go with `WINDOW_TYPE='SESSION'`.
fn check_window_properties(properties: &Properties) -> Result<(), ParseError> {
    let session = matches!(
        properties.get("WINDOW_TYPE"),
        Some(Literal::String(t)) if t.eq_ignore_ascii_case("SESSION")
    );
    if session
        && let Some(size) = properties
            .0
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case("WINDOW_SIZE"))
    {
        return Err(ParseError::new(
            "'WINDOW_SIZE' should not be set for SESSION windows.",
            size.span.start,
        ));
    }
    Ok(())
}
