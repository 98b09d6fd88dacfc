//! Tokens of the KSQL dialect, from sqlparser's tokenizer with a dialect of our own.

use datafusion::sql::sqlparser::dialect::Dialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::error::ParseError;
use crate::span::{Position, Span};

/// ksqlDB's lexical rules: identifiers of letters, digits, `_` and `@`, quoted with back-quotes
/// (or double quotes); strings in single quotes with `''` as the escaped quote.
#[derive(Debug, Default, Clone, Copy)]
pub struct KsqlDialect;

impl Dialect for KsqlDialect {
    fn is_identifier_start(&self, ch: char) -> bool {
        ch.is_alphabetic() || ch == '_'
    }

    fn is_identifier_part(&self, ch: char) -> bool {
        ch.is_alphanumeric() || ch == '_' || ch == '@'
    }

    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        ch == '`' || ch == '"'
    }

    /// ksqlDB accepts identifiers that start with a digit, such as `1R`.
    fn supports_numeric_prefix(&self) -> bool {
        true
    }
}

/// A token and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Tok {
    /// The token.
    pub token: Token,
    /// Its source range.
    pub span: Span,
}

fn position(loc: datafusion::sql::sqlparser::tokenizer::Location) -> Position {
    Position::new(loc.line, loc.column)
}

/// Tokenizes `sql`, dropping whitespace and comments. The last token is always `EOF`.
pub fn tokenize(sql: &str) -> Result<Vec<Tok>, ParseError> {
    let dialect = KsqlDialect;
    let raw = Tokenizer::new(&dialect, sql)
        .with_unescape(true)
        .tokenize_with_location()
        .map_err(|e| {
            ParseError::new(
                format!("Syntax Error\n{}", strip_location(&e.message)),
                position(e.location),
            )
        })?;
    let mut out: Vec<Tok> = raw
        .into_iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .map(|t| Tok {
            token: t.token,
            span: Span::new(position(t.span.start), position(t.span.end)),
        })
        .collect();
    let end = end_position(sql);
    out.push(Tok {
        token: Token::EOF,
        span: Span::new(end, end),
    });
    Ok(out)
}

fn strip_location(message: &str) -> &str {
    message.split(" at Line:").next().unwrap_or(message)
}

/// Splits `sql` into statement texts at top-level `;`, without tokenizing, so `${name}` variables
/// can be substituted in each statement before it is parsed. Quotes and comments are respected;
/// pieces holding only whitespace and comments are dropped.
pub fn split_statements(sql: &str) -> Vec<&str> {
    let bytes = sql.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut meaningful = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            quote @ (b'\'' | b'`' | b'"') => {
                meaningful = true;
                i += 1;
                while i < bytes.len() {
                    if bytes[i] == quote {
                        if bytes.get(i + 1) == Some(&quote) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                    i += 1;
                }
                i += 1;
            }
            b';' => {
                if meaningful {
                    out.push(sql[start..i].trim());
                }
                start = i + 1;
                meaningful = false;
            }
            c if !c.is_ascii_whitespace() => meaningful = true,
            _ => {}
        }
        i += 1;
    }
    if meaningful && start < sql.len() {
        out.push(sql[start..].trim());
    }
    out
}

/// The position just past the end of `sql`.
pub fn end_position(sql: &str) -> Position {
    let mut line = 1;
    let mut column = 1;
    for ch in sql.chars() {
        if ch == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    Position::new(line, column)
}

/// The byte offset of a position in `sql` (clamped to the text).
pub fn byte_offset(sql: &str, at: Position) -> usize {
    let mut line = 1;
    let mut column = 1;
    for (offset, ch) in sql.char_indices() {
        if line == at.line && column == at.column {
            return offset;
        }
        if ch == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
        if line > at.line {
            return offset + ch.len_utf8();
        }
    }
    sql.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_positions_and_skip_comments() {
        let toks = tokenize("SELECT -- note\n  `a b`, 'it''s' /* c */ FROM x;").unwrap();
        let words: Vec<String> = toks.iter().map(|t| t.token.to_string()).collect();
        assert_eq!(
            words,
            vec!["SELECT", "`a b`", ",", "'it's'", "FROM", "x", ";", "EOF"]
        );
        assert_eq!(toks[1].span.start, Position::new(2, 3));
        assert!(matches!(&toks[3].token, Token::SingleQuotedString(s) if s == "it's"));
    }

    #[test]
    fn unterminated_strings_report_where() {
        let err = tokenize("SELECT 'abc").unwrap_err();
        assert_eq!(err.position.line, 1);
        assert!(err.message.starts_with("Syntax Error\n"), "{err}");
    }

    #[test]
    fn statements_split_at_top_level_semicolons() {
        let sql = "SET 'a'=';'; -- c;\n SELECT `x;y` FROM s /* ; */ ;\n\n;  -- only a comment";
        assert_eq!(
            split_statements(sql),
            vec!["SET 'a'=';'", "-- c;\n SELECT `x;y` FROM s /* ; */"]
        );
        assert_eq!(split_statements("SHOW TOPICS"), vec!["SHOW TOPICS"]);
        assert!(split_statements("  ;; -- nothing").is_empty());
    }

    #[test]
    fn byte_offsets_follow_lines_and_columns() {
        let sql = "ab\ncdé f";
        assert_eq!(byte_offset(sql, Position::new(1, 1)), 0);
        assert_eq!(byte_offset(sql, Position::new(2, 1)), 3);
        assert_eq!(&sql[byte_offset(sql, Position::new(2, 5))..], "f");
    }
}
