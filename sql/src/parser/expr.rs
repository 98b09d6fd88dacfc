//! Expressions and types.

use datafusion::sql::sqlparser::tokenizer::Token;

use super::{MAX_HEIGHT, Parser};
use crate::ast::{BinaryOp, Expr, ExprKind, Ident, Literal, SqlType, StructField, UnaryOp};
use crate::error::ParseError;
use crate::span::{Position, Span};

impl Parser {
    /// A full boolean expression.
    pub(crate) fn parse_expr(&mut self) -> Result<Expr, ParseError> {
        self.enter()?;
        let result = self.parse_or();
        self.leave();
        result
    }

    fn binary(left: Expr, op: BinaryOp, right: Expr) -> Expr {
        let span = left.span.union(right.span);
        Expr::new(
            ExprKind::Binary {
                left: Box::new(left),
                op,
                right: Box::new(right),
            },
            span,
        )
    }

    /// Builds `left op right` onto an operator chain.
    fn chain(
        &self,
        height: &mut Option<usize>,
        left: Expr,
        op: BinaryOp,
        right: Expr,
    ) -> Result<Expr, ParseError> {
        Self::grow(height, &left, Some(&right), right.span.start)?;
        Ok(Self::binary(left, op, right))
    }

    /// Notes that `base` (a chain `height` deep so far, when known) gains a parent, with
    /// `other` beside it, refusing the tree once it is deeper than [`MAX_HEIGHT`]: later
    /// stages walk expressions recursively, so a flat `1+1+...` of a million terms, or
    /// `a[0][0]...`, must not reach them.
    fn grow(
        height: &mut Option<usize>,
        base: &Expr,
        other: Option<&Expr>,
        at: Position,
    ) -> Result<(), ParseError> {
        let base_height = height.unwrap_or_else(|| base.height());
        let grown = base_height.max(other.map_or(0, Expr::height)) + 1;
        if grown > MAX_HEIGHT {
            return Err(ParseError::new(
                format!(
                    "Syntax Error\nthe expression is too deep: more than {MAX_HEIGHT} levels deep, counting chained operators (a + b + c is 3 deep) and nesting. Split it, or use IN (...) for a long list of alternatives"
                ),
                at,
            ));
        }
        *height = Some(grown);
        Ok(())
    }

    fn parse_or(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.parse_and()?;
        let mut height = None;
        while self.eat_keyword("OR") {
            let right = self.parse_and()?;
            left = self.chain(&mut height, left, BinaryOp::Or, right)?;
        }
        Ok(left)
    }

    fn parse_and(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.parse_not()?;
        let mut height = None;
        while self.eat_keyword("AND") {
            let right = self.parse_not()?;
            left = self.chain(&mut height, left, BinaryOp::And, right)?;
        }
        Ok(left)
    }

    fn parse_not(&mut self) -> Result<Expr, ParseError> {
        if self.at_keyword("NOT") {
            let start = self.advance().span.start;
            self.enter()?;
            let inner = self.parse_not();
            self.leave();
            let inner = inner?;
            let span = Span::new(start, inner.span.end);
            return Ok(Expr::new(
                ExprKind::Unary {
                    op: UnaryOp::Not,
                    expr: Box::new(inner),
                },
                span,
            ));
        }
        self.parse_predicate()
    }

    fn parse_predicate(&mut self) -> Result<Expr, ParseError> {
        let left = self.parse_value(0)?;
        let start = left.span.start;
        let comparison = match self.peek() {
            Token::Eq | Token::DoubleEq => Some(BinaryOp::Eq),
            Token::Neq => Some(BinaryOp::NotEq),
            Token::Lt => Some(BinaryOp::Lt),
            Token::LtEq => Some(BinaryOp::LtEq),
            Token::Gt => Some(BinaryOp::Gt),
            Token::GtEq => Some(BinaryOp::GtEq),
            _ => None,
        };
        if let Some(op) = comparison {
            self.advance();
            let right = self.parse_value(0)?;
            return Ok(Self::binary(left, op, right));
        }
        if self.at_keyword("IS") {
            self.advance();
            let negated = self.eat_keyword("NOT");
            if self.eat_keyword("NULL") {
                return Ok(Expr::new(
                    ExprKind::IsNull {
                        expr: Box::new(left),
                        negated,
                    },
                    self.span_from(start),
                ));
            }
            if self.eat_keywords(&["DISTINCT", "FROM"]) {
                let right = self.parse_value(0)?;
                return Ok(Expr::new(
                    ExprKind::IsDistinctFrom {
                        left: Box::new(left),
                        negated,
                        right: Box::new(right),
                    },
                    self.span_from(start),
                ));
            }
            return Err(self.expected("NULL or DISTINCT FROM"));
        }
        let negated = self.at_keyword("NOT")
            && ["BETWEEN", "IN", "LIKE"]
                .iter()
                .any(|k| Self::is_keyword(self.peek_nth(1), k));
        if negated {
            self.advance();
        }
        if self.eat_keyword("BETWEEN") {
            let low = self.parse_value(0)?;
            self.expect_keyword("AND")?;
            let high = self.parse_value(0)?;
            return Ok(Expr::new(
                ExprKind::Between {
                    expr: Box::new(left),
                    negated,
                    low: Box::new(low),
                    high: Box::new(high),
                },
                self.span_from(start),
            ));
        }
        if self.eat_keyword("IN") {
            self.expect(&Token::LParen, "'('")?;
            let list = self.parse_comma_separated(|p| p.parse_expr())?;
            self.expect(&Token::RParen, "')'")?;
            return Ok(Expr::new(
                ExprKind::InList {
                    expr: Box::new(left),
                    negated,
                    list,
                },
                self.span_from(start),
            ));
        }
        if self.eat_keyword("LIKE") {
            let pattern = self.parse_value(0)?;
            let escape = if self.eat_keyword("ESCAPE") {
                Some(self.parse_string()?)
            } else {
                None
            };
            return Ok(Expr::new(
                ExprKind::Like {
                    expr: Box::new(left),
                    negated,
                    pattern: Box::new(pattern),
                    escape,
                },
                self.span_from(start),
            ));
        }
        Ok(left)
    }

    /// Arithmetic and concatenation, by precedence climbing.
    pub(crate) fn parse_value(&mut self, min_precedence: u8) -> Result<Expr, ParseError> {
        self.enter()?;
        let result = self.parse_value_inner(min_precedence);
        self.leave();
        result
    }

    fn parse_value_inner(&mut self, min_precedence: u8) -> Result<Expr, ParseError> {
        let mut left = self.parse_unary()?;
        let mut height = None;
        loop {
            let op = match self.peek() {
                Token::StringConcat => BinaryOp::Concat,
                Token::Plus => BinaryOp::Plus,
                Token::Minus => BinaryOp::Minus,
                Token::Mul => BinaryOp::Multiply,
                Token::Div => BinaryOp::Divide,
                Token::Mod => BinaryOp::Modulo,
                _ => break,
            };
            let precedence = op.precedence();
            if precedence < min_precedence {
                break;
            }
            self.advance();
            let right = self.parse_value(precedence + 1)?;
            left = self.chain(&mut height, left, op, right)?;
        }
        Ok(left)
    }

    fn parse_unary(&mut self) -> Result<Expr, ParseError> {
        // A minus before a number is part of the literal, as in ksqlDB, so the full BIGINT range
        // parses and overflow is reported with the sign.
        if self.peek() == &Token::Minus
            && let Token::Number(text, _) = self.peek_nth(1).clone()
        {
            let start = self.advance().span.start;
            let mut expr = self.parse_number_at(&format!("-{text}"), start)?;
            expr.span = Span::new(start, expr.span.end);
            return Ok(expr);
        }
        let op = match self.peek() {
            Token::Minus => UnaryOp::Minus,
            Token::Plus => UnaryOp::Plus,
            _ => return self.parse_postfix(),
        };
        let start = self.advance().span.start;
        self.enter()?;
        let inner = self.parse_unary();
        self.leave();
        let inner = inner?;
        let span = Span::new(start, inner.span.end);
        Ok(Expr::new(
            ExprKind::Unary {
                op,
                expr: Box::new(inner),
            },
            span,
        ))
    }

    fn parse_postfix(&mut self) -> Result<Expr, ParseError> {
        let mut expr = self.parse_primary()?;
        let start = expr.span.start;
        let mut height = None;
        loop {
            let at = self.peek_span().start;
            if self.eat(&Token::LBracket) {
                let index = self.parse_value(0)?;
                self.expect(&Token::RBracket, "']'")?;
                Self::grow(&mut height, &expr, Some(&index), at)?;
                expr = Expr::new(
                    ExprKind::Subscript {
                        base: Box::new(expr),
                        index: Box::new(index),
                    },
                    self.span_from(start),
                );
            } else if self.peek() == &Token::Arrow && self.peek_nth(1) != &Token::Mul {
                self.advance();
                let field = self.parse_any_ident()?;
                Self::grow(&mut height, &expr, None, at)?;
                expr = Expr::new(
                    ExprKind::Dereference {
                        base: Box::new(expr),
                        field,
                    },
                    self.span_from(start),
                );
            } else if self.at_keywords(&["AT", "TIME", "ZONE"]) {
                self.eat_keywords(&["AT", "TIME", "ZONE"]);
                let zone = self.parse_string()?;
                Self::grow(&mut height, &expr, None, at)?;
                expr = Expr::new(
                    ExprKind::AtTimeZone {
                        expr: Box::new(expr),
                        zone,
                    },
                    self.span_from(start),
                );
            } else {
                return Ok(expr);
            }
        }
    }

    fn literal(&mut self, literal: Literal) -> Expr {
        let span = self.advance().span;
        Expr::new(ExprKind::Literal(literal), span)
    }

    fn parse_number(&mut self, text: &str) -> Result<Expr, ParseError> {
        let start = self.peek_span().start;
        self.parse_number_at(text, start)
    }

    /// A number literal whose text starts at `start` (before any sign).
    fn parse_number_at(
        &mut self,
        text: &str,
        start: crate::span::Position,
    ) -> Result<Expr, ParseError> {
        let literal = if text.contains(['e', 'E']) {
            match text.parse::<f64>() {
                Ok(v) if v.is_finite() => Literal::Double(text.to_string()),
                _ => {
                    return Err(ParseError::new(
                        format!("Number overflows DOUBLE: {text}"),
                        start,
                    ));
                }
            }
        } else if text.contains('.') {
            Literal::Decimal(text.to_string())
        } else {
            match text.parse::<i64>() {
                Ok(v) => Literal::Integer(v),
                Err(_) => {
                    return Err(ParseError::new(
                        format!("Invalid numeric literal: {text}"),
                        start,
                    ));
                }
            }
        };
        Ok(self.literal(literal))
    }

    fn parse_primary(&mut self) -> Result<Expr, ParseError> {
        let start = self.peek_span().start;
        match self.peek().clone() {
            Token::Number(text, _) => return self.parse_number(&text),
            Token::SingleQuotedString(s) => return Ok(self.literal(Literal::String(s))),
            Token::HexStringLiteral(hex) => return Ok(self.literal(Literal::Bytes(hex))),
            Token::LParen => {
                self.advance();
                let inner = self.parse_expr()?;
                self.expect(&Token::RParen, "')'")?;
                return Ok(Expr::new(inner.kind, self.span_from(start)));
            }
            Token::Word(w) if w.quote_style.is_none() => {
                let upper = w.value.to_ascii_uppercase();
                match upper.as_str() {
                    "NULL" => return Ok(self.literal(Literal::Null)),
                    "TRUE" => return Ok(self.literal(Literal::Boolean(true))),
                    "FALSE" => return Ok(self.literal(Literal::Boolean(false))),
                    "CASE" => return self.parse_case(),
                    "CAST" if self.peek_nth(1) == &Token::LParen => return self.parse_cast(),
                    "ARRAY" if self.peek_nth(1) == &Token::LBracket => return self.parse_array(),
                    "MAP" if self.peek_nth(1) == &Token::LParen => return self.parse_map(),
                    "STRUCT" if self.peek_nth(1) == &Token::LParen => return self.parse_struct(),
                    _ => {}
                }
            }
            _ => {}
        }
        if !self.at_plain_ident() {
            return Err(self.expected("an expression"));
        }
        let name = self.parse_any_ident()?;
        if self.peek() == &Token::LParen {
            return self.parse_function(name);
        }
        if self.peek() == &Token::Period && matches!(self.peek_nth(1), Token::Word(_)) {
            self.advance();
            let column = self.parse_any_ident()?;
            return Ok(Expr::new(
                ExprKind::Column {
                    source: Some(name),
                    name: column,
                },
                self.span_from(start),
            ));
        }
        let span = name.span;
        Ok(Expr::new(ExprKind::Column { source: None, name }, span))
    }

    fn parse_case(&mut self) -> Result<Expr, ParseError> {
        let start = self.advance().span.start;
        let operand = if self.at_keyword("WHEN") {
            None
        } else {
            Some(Box::new(self.parse_expr()?))
        };
        let mut branches = Vec::new();
        while self.eat_keyword("WHEN") {
            let condition = self.parse_expr()?;
            self.expect_keyword("THEN")?;
            let result = self.parse_expr()?;
            branches.push((condition, result));
        }
        if branches.is_empty() {
            return Err(self.expected("WHEN"));
        }
        let otherwise = if self.eat_keyword("ELSE") {
            Some(Box::new(self.parse_expr()?))
        } else {
            None
        };
        self.expect_keyword("END")?;
        Ok(Expr::new(
            ExprKind::Case {
                operand,
                branches,
                otherwise,
            },
            self.span_from(start),
        ))
    }

    fn parse_cast(&mut self) -> Result<Expr, ParseError> {
        let start = self.advance().span.start;
        self.expect(&Token::LParen, "'('")?;
        let expr = self.parse_expr()?;
        self.expect_keyword("AS")?;
        let ty = self.parse_type()?;
        self.expect(&Token::RParen, "')'")?;
        Ok(Expr::new(
            ExprKind::Cast {
                expr: Box::new(expr),
                ty,
            },
            self.span_from(start),
        ))
    }

    fn parse_array(&mut self) -> Result<Expr, ParseError> {
        let start = self.advance().span.start;
        self.expect(&Token::LBracket, "'['")?;
        let items = self.parse_list_until(&Token::RBracket, |p| p.parse_expr())?;
        Ok(Expr::new(ExprKind::Array(items), self.span_from(start)))
    }

    fn parse_map(&mut self) -> Result<Expr, ParseError> {
        let start = self.advance().span.start;
        self.expect(&Token::LParen, "'('")?;
        let entries = self.parse_list_until(&Token::RParen, |p| {
            let key = p.parse_expr()?;
            p.expect(&Token::Assignment, "':='")?;
            Ok((key, p.parse_expr()?))
        })?;
        Ok(Expr::new(ExprKind::Map(entries), self.span_from(start)))
    }

    fn parse_struct(&mut self) -> Result<Expr, ParseError> {
        let start = self.advance().span.start;
        self.expect(&Token::LParen, "'('")?;
        let fields = self.parse_list_until(&Token::RParen, |p| {
            let name = p.parse_any_ident()?;
            p.expect(&Token::Assignment, "':='")?;
            Ok((name, p.parse_expr()?))
        })?;
        Ok(Expr::new(ExprKind::Struct(fields), self.span_from(start)))
    }

    fn parse_function(&mut self, name: Ident) -> Result<Expr, ParseError> {
        let start = name.span.start;
        self.expect(&Token::LParen, "'('")?;
        if self.peek() == &Token::Mul && self.peek_nth(1) == &Token::RParen {
            self.advance();
            self.advance();
            return Ok(Expr::new(
                ExprKind::Function {
                    name,
                    args: Vec::new(),
                    star: true,
                },
                self.span_from(start),
            ));
        }
        let args = self.parse_list_until(&Token::RParen, |p| p.parse_function_arg())?;
        Ok(Expr::new(
            ExprKind::Function {
                name,
                args,
                star: false,
            },
            self.span_from(start),
        ))
    }

    /// A function argument: an expression or a lambda.
    fn parse_function_arg(&mut self) -> Result<Expr, ParseError> {
        let start = self.peek_span().start;
        let params = if matches!(self.peek(), Token::Word(_)) && self.peek_nth(1) == &Token::RArrow
        {
            Some(vec![self.parse_any_ident()?])
        } else if self.peek() == &Token::LParen && self.lambda_params_ahead() {
            self.advance();
            let params = self.parse_comma_separated(|p| p.parse_any_ident())?;
            self.expect(&Token::RParen, "')'")?;
            Some(params)
        } else {
            None
        };
        match params {
            Some(params) => {
                self.expect(&Token::RArrow, "'=>'")?;
                let body = self.parse_expr()?;
                Ok(Expr::new(
                    ExprKind::Lambda {
                        params,
                        body: Box::new(body),
                    },
                    self.span_from(start),
                ))
            }
            None => self.parse_expr(),
        }
    }

    /// Whether `( ident, ... ) =>` follows.
    fn lambda_params_ahead(&self) -> bool {
        let mut i = 1;
        loop {
            if !matches!(self.peek_nth(i), Token::Word(_)) {
                return false;
            }
            i += 1;
            match self.peek_nth(i) {
                Token::Comma => i += 1,
                Token::RParen => return self.peek_nth(i + 1) == &Token::RArrow,
                _ => return false,
            }
        }
    }

    /// A type: primitives, `DECIMAL(p, s)`, `ARRAY<T>`, `MAP<K, V>`, `STRUCT<...>`, or a named type.
    pub(crate) fn parse_type(&mut self) -> Result<SqlType, ParseError> {
        self.enter()?;
        let result = self.parse_type_inner();
        self.leave();
        result
    }

    fn parse_type_inner(&mut self) -> Result<SqlType, ParseError> {
        let word = match self.peek() {
            Token::Word(w) => w.clone(),
            _ => return Err(self.expected("a type")),
        };
        if word.quote_style.is_some() {
            return Ok(SqlType::Named(self.parse_any_ident()?));
        }
        let simple = match word.value.to_ascii_uppercase().as_str() {
            "BOOLEAN" => Some(SqlType::Boolean),
            "INT" | "INTEGER" => Some(SqlType::Int),
            "BIGINT" => Some(SqlType::Bigint),
            "DOUBLE" => Some(SqlType::Double),
            "STRING" | "VARCHAR" => Some(SqlType::String),
            "BYTES" => Some(SqlType::Bytes),
            "DATE" => Some(SqlType::Date),
            "TIME" => Some(SqlType::Time),
            "TIMESTAMP" => Some(SqlType::Timestamp),
            _ => None,
        };
        if let Some(ty) = simple {
            self.advance();
            self.skip_type_parameters();
            return Ok(ty);
        }
        match word.value.to_ascii_uppercase().as_str() {
            "DECIMAL" => {
                self.advance();
                self.expect(&Token::LParen, "'(' after DECIMAL")?;
                let precision = self.parse_type_number()?;
                self.expect(&Token::Comma, "','")?;
                let scale = self.parse_type_number()?;
                self.expect(&Token::RParen, "')'")?;
                Ok(SqlType::Decimal { precision, scale })
            }
            "ARRAY" if self.peek_nth(1) == &Token::Lt => {
                self.advance();
                self.advance();
                let element = self.parse_type()?;
                self.expect_closing_angle()?;
                Ok(SqlType::Array(Box::new(element)))
            }
            "MAP" if self.peek_nth(1) == &Token::Lt => {
                self.advance();
                self.advance();
                let key = self.parse_type()?;
                self.expect(&Token::Comma, "','")?;
                let value = self.parse_type()?;
                self.expect_closing_angle()?;
                Ok(SqlType::Map(Box::new(key), Box::new(value)))
            }
            "STRUCT" if self.peek_nth(1) == &Token::Lt => {
                self.advance();
                self.advance();
                let mut fields = Vec::new();
                if !matches!(self.peek(), Token::Gt | Token::ShiftRight) {
                    fields = self.parse_comma_separated(|p| {
                        let name = p.parse_any_ident()?;
                        let ty = p.parse_type()?;
                        Ok(StructField { name, ty })
                    })?;
                }
                self.expect_closing_angle()?;
                Ok(SqlType::Struct(fields))
            }
            _ => {
                let name = self.parse_ident().map_err(|_| self.expected("a type"))?;
                self.skip_type_parameters();
                Ok(SqlType::Named(name))
            }
        }
    }

    /// ksqlDB's grammar lets a base type take parameters (`VARCHAR(32)`, `INT(11)`, as other
    /// databases write them) and ignores them; so does Eddy.
    fn skip_type_parameters(&mut self) {
        let parameter = |t: &Token| match t {
            Token::Number(..) => true,
            Token::Word(w) => w.quote_style.is_none() && w.value.eq_ignore_ascii_case("STRING"),
            _ => false,
        };
        if self.peek() != &Token::LParen || !parameter(self.peek_nth(1)) {
            return;
        }
        let mut at = 1;
        loop {
            if !parameter(self.peek_nth(at)) {
                return;
            }
            match self.peek_nth(at + 1) {
                Token::Comma => at += 2,
                Token::RParen => break,
                _ => return,
            }
        }
        for _ in 0..at + 2 {
            self.advance();
        }
    }

    fn parse_type_number(&mut self) -> Result<u32, ParseError> {
        let span = self.peek_span();
        let n = self.parse_unsigned()?;
        u32::try_from(n)
            .map_err(|_| ParseError::new("Syntax Error\nthe number is too large", span.start))
    }
}
