//! A recursive-descent parser for the KSQL dialect over sqlparser's tokens.

mod expr;
mod statement;

use datafusion::sql::sqlparser::tokenizer::Token;

use crate::ast::{Duration, Ident, Statement, TimeUnit};
use crate::error::ParseError;
use crate::lexer::{Tok, byte_offset, tokenize};
use crate::span::{Position, Span};

/// Whether `word` is reserved: it must be quoted to be read as a name.
pub(crate) fn is_reserved(word: &str) -> bool {
    RESERVED.iter().any(|r| word.eq_ignore_ascii_case(r))
}

/// Words that end an expression or a source reference, so they are never read as an alias or a
/// bare column name.
const RESERVED: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP",
    "BY",
    "HAVING",
    "WINDOW",
    "PARTITION",
    "EMIT",
    "LIMIT",
    "JOIN",
    "INNER",
    "LEFT",
    "RIGHT",
    "FULL",
    "OUTER",
    "ON",
    "WITHIN",
    "AS",
    "AND",
    "OR",
    "NOT",
    "IS",
    "NULL",
    "TRUE",
    "FALSE",
    "IN",
    "BETWEEN",
    "LIKE",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "CAST",
    "ESCAPE",
    "AT",
    "DISTINCT",
];

/// Nesting depth past which expressions and types are refused rather than risk the stack.
const MAX_DEPTH: usize = 64;

/// How deep an expression tree may be, operator chains included.
const MAX_HEIGHT: usize = 1_000;

/// A statement together with the exact text it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedStatement {
    /// The statement.
    pub statement: Statement,
    /// Its source text, without the terminating `;`.
    pub text: String,
}

/// Which statements beyond the server's are accepted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParseOptions {
    /// `RUN SCRIPT`, which only a shell can run.
    pub run_script: bool,
    /// The test-only `ASSERT VALUES`, `ASSERT NULL VALUES`, `ASSERT STREAM` and `ASSERT TABLE`.
    pub test_statements: bool,
}

impl ParseOptions {
    /// Everything: what a test runner accepts.
    pub fn all() -> Self {
        ParseOptions {
            run_script: true,
            test_statements: true,
        }
    }
}

/// Parses every statement in `sql` as the server accepts them. Statements are separated by `;`;
/// the last may omit it. Comments are skipped.
pub fn parse_statements(sql: &str) -> Result<Vec<ParsedStatement>, ParseError> {
    parse_statements_with(sql, ParseOptions::default())
}

/// Parses every statement in `sql`, accepting the extra statements `options` allows.
pub fn parse_statements_with(
    sql: &str,
    options: ParseOptions,
) -> Result<Vec<ParsedStatement>, ParseError> {
    let mut parser = Parser::new(sql)?;
    parser.options = options;
    let mut out = Vec::new();
    loop {
        while parser.eat(&Token::SemiColon) {}
        if parser.at_eof() {
            break;
        }
        let start = parser.peek_span().start;
        let statement = parser.parse_statement()?;
        let end = parser.prev_span().end;
        if !parser.eat(&Token::SemiColon) && !parser.at_eof() {
            return Err(parser.expected("';' or the end of input"));
        }
        let text = sql[byte_offset(sql, start)..byte_offset(sql, end)].to_string();
        out.push(ParsedStatement { statement, text });
    }
    Ok(out)
}

/// Parses exactly one statement (a trailing `;` is allowed).
pub fn parse_statement(sql: &str) -> Result<Statement, ParseError> {
    let mut statements = parse_statements(sql)?;
    match statements.len() {
        1 => Ok(statements.remove(0).statement),
        0 => Err(ParseError::new(
            "Syntax Error\nthe input holds no statement",
            Position::new(1, 1),
        )),
        _ => Err(ParseError::new(
            "Syntax Error\nexpected one statement but found several",
            statements[1].statement.span.start,
        )),
    }
}

/// Parses a column list without its parentheses, as ksqlDB writes schemas:
/// `ID STRING KEY, S STRUCT<F1 INT>`.
pub fn parse_schema(sql: &str) -> Result<Vec<crate::ast::TableElement>, ParseError> {
    let wrapped = format!("({sql})");
    let mut parser = Parser::new(&wrapped)?;
    let elements = parser.parse_table_elements()?;
    if !parser.at_eof() {
        return Err(parser.expected("the end of the schema"));
    }
    Ok(elements)
}

/// Parses one expression, such as a `WHERE` condition on its own.
pub fn parse_expression(sql: &str) -> Result<crate::ast::Expr, ParseError> {
    let mut parser = Parser::new(sql)?;
    let expr = parser.parse_expr()?;
    if !parser.at_eof() {
        return Err(parser.expected("the end of the expression"));
    }
    Ok(expr)
}

/// The parser's cursor over the tokens.
pub(crate) struct Parser {
    tokens: Vec<Tok>,
    pos: usize,
    depth: usize,
    options: ParseOptions,
}

pub(crate) fn describe(token: &Token) -> String {
    match token {
        Token::EOF => "the end of input".to_string(),
        Token::SingleQuotedString(s) => format!("'{s}'"),
        other => format!("'{other}'"),
    }
}

impl Parser {
    fn new(sql: &str) -> Result<Self, ParseError> {
        Ok(Parser {
            tokens: tokenize(sql)?,
            pos: 0,
            depth: 0,
            options: ParseOptions::default(),
        })
    }

    fn peek(&self) -> &Token {
        self.peek_nth(0)
    }

    fn peek_nth(&self, n: usize) -> &Token {
        let last = self.tokens.len() - 1;
        &self.tokens[(self.pos + n).min(last)].token
    }

    fn peek_span(&self) -> Span {
        self.tokens[self.pos.min(self.tokens.len() - 1)].span
    }

    fn prev_span(&self) -> Span {
        self.tokens[self.pos.saturating_sub(1)].span
    }

    fn advance(&mut self) -> Tok {
        let tok = self.tokens[self.pos.min(self.tokens.len() - 1)].clone();
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
        tok
    }

    fn at_eof(&self) -> bool {
        matches!(self.peek(), Token::EOF)
    }

    /// A span from `start` to the end of the previous token.
    fn span_from(&self, start: Position) -> Span {
        Span::new(start, self.prev_span().end)
    }

    fn expected(&self, what: &str) -> ParseError {
        ParseError::new(
            format!(
                "Syntax Error\nexpected {what}, found {}",
                describe(self.peek())
            ),
            self.peek_span().start,
        )
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ParseError::new(
                "Syntax Error\nthe statement nests too deeply",
                self.peek_span().start,
            ));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    fn is_keyword(token: &Token, keyword: &str) -> bool {
        matches!(token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(keyword))
    }

    fn at_keyword(&self, keyword: &str) -> bool {
        Self::is_keyword(self.peek(), keyword)
    }

    /// At `CONNECTOR name`, as `DESCRIBE`, `PAUSE` and `RESUME` take it.
    fn at_connector_name(&self) -> bool {
        self.at_keyword("CONNECTOR") && matches!(self.peek_nth(1), Token::Word(_))
    }

    fn at_keywords(&self, keywords: &[&str]) -> bool {
        keywords
            .iter()
            .enumerate()
            .all(|(i, k)| Self::is_keyword(self.peek_nth(i), k))
    }

    fn eat_keyword(&mut self, keyword: &str) -> bool {
        if self.at_keyword(keyword) {
            self.advance();
            true
        } else {
            false
        }
    }

    fn eat_keywords(&mut self, keywords: &[&str]) -> bool {
        if self.at_keywords(keywords) {
            for _ in keywords {
                self.advance();
            }
            true
        } else {
            false
        }
    }

    fn expect_keyword(&mut self, keyword: &str) -> Result<(), ParseError> {
        if self.eat_keyword(keyword) {
            Ok(())
        } else {
            Err(self.expected(keyword))
        }
    }

    fn expect_keywords(&mut self, keywords: &[&str]) -> Result<(), ParseError> {
        for k in keywords {
            self.expect_keyword(k)?;
        }
        Ok(())
    }

    fn eat(&mut self, token: &Token) -> bool {
        if self.peek() == token {
            self.advance();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, token: &Token, what: &str) -> Result<(), ParseError> {
        if self.eat(token) {
            Ok(())
        } else {
            Err(self.expected(what))
        }
    }

    /// `>` in type parameters, splitting a `>>` token in two.
    fn expect_closing_angle(&mut self) -> Result<(), ParseError> {
        match self.peek() {
            Token::Gt => {
                self.advance();
                Ok(())
            }
            Token::ShiftRight => {
                let span = self.peek_span();
                let second = Position::new(span.start.line, span.start.column + 1);
                self.tokens[self.pos] = Tok {
                    token: Token::Gt,
                    span: Span::new(second, span.end),
                };
                Ok(())
            }
            _ => Err(self.expected("'>'")),
        }
    }

    /// Any identifier, keywords included, as in column and source declarations.
    fn parse_any_ident(&mut self) -> Result<Ident, ParseError> {
        match self.peek().clone() {
            Token::Word(w) => {
                let span = self.advance().span;
                Ok(match w.quote_style {
                    Some(_) => Ident {
                        value: w.value,
                        quoted: true,
                        span,
                    },
                    None => Ident {
                        value: w.value.to_uppercase(),
                        quoted: false,
                        span,
                    },
                })
            }
            _ => Err(self.expected("an identifier")),
        }
    }

    /// Whether the next token can start an identifier in an expression or alias position.
    /// `ORDER` stays a name (ksqlDB does not reserve it) except where `ORDER BY` begins.
    fn at_plain_ident(&self) -> bool {
        match self.peek() {
            Token::Word(w) => {
                w.quote_style.is_some()
                    || !(RESERVED.iter().any(|r| w.value.eq_ignore_ascii_case(r))
                        || self.at_keywords(&["ORDER", "BY"]))
            }
            _ => false,
        }
    }

    /// An identifier that is not a reserved word (unless quoted).
    fn parse_ident(&mut self) -> Result<Ident, ParseError> {
        if self.at_plain_ident() {
            self.parse_any_ident()
        } else {
            Err(self.expected("an identifier"))
        }
    }

    fn parse_string(&mut self) -> Result<String, ParseError> {
        match self.peek().clone() {
            Token::SingleQuotedString(s) => {
                self.advance();
                Ok(s)
            }
            _ => Err(self.expected("a quoted string")),
        }
    }

    fn parse_unsigned(&mut self) -> Result<u64, ParseError> {
        match self.peek().clone() {
            Token::Number(n, _) => {
                let value = n.parse::<u64>().map_err(|_| {
                    ParseError::new(
                        format!("Syntax Error\nexpected a whole number, found '{n}'"),
                        self.peek_span().start,
                    )
                })?;
                self.advance();
                Ok(value)
            }
            _ => Err(self.expected("a whole number")),
        }
    }

    fn parse_time_unit(&mut self) -> Result<TimeUnit, ParseError> {
        let unit = match self.peek() {
            Token::Word(w) if w.quote_style.is_none() => {
                match w.value.to_ascii_uppercase().as_str() {
                    "MILLISECOND" | "MILLISECONDS" => Some(TimeUnit::Milliseconds),
                    "SECOND" | "SECONDS" => Some(TimeUnit::Seconds),
                    "MINUTE" | "MINUTES" => Some(TimeUnit::Minutes),
                    "HOUR" | "HOURS" => Some(TimeUnit::Hours),
                    "DAY" | "DAYS" => Some(TimeUnit::Days),
                    _ => None,
                }
            }
            _ => None,
        };
        match unit {
            Some(unit) => {
                self.advance();
                Ok(unit)
            }
            None => {
                Err(self.expected("a time unit (MILLISECONDS, SECONDS, MINUTES, HOURS or DAYS)"))
            }
        }
    }

    fn parse_duration(&mut self) -> Result<Duration, ParseError> {
        let value = self.parse_unsigned()?;
        let unit = self.parse_time_unit()?;
        Ok(Duration { value, unit })
    }

    /// Comma-separated items up to `close`, which is consumed; the list may be empty.
    fn parse_list_until<T>(
        &mut self,
        close: &Token,
        item: impl FnMut(&mut Self) -> Result<T, ParseError>,
    ) -> Result<Vec<T>, ParseError> {
        if self.eat(close) {
            return Ok(Vec::new());
        }
        let items = self.parse_comma_separated(item)?;
        self.expect(close, &format!("',' or '{close}'"))?;
        Ok(items)
    }

    fn parse_comma_separated<T>(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Result<T, ParseError>,
    ) -> Result<Vec<T>, ParseError> {
        let mut out = vec![item(self)?];
        while self.eat(&Token::Comma) {
            out.push(item(self)?);
        }
        Ok(out)
    }
}
