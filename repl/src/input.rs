//! Typed text into statements: where each ends (`;` outside quotes and comments), whether the
//! text so far is unfinished, and the tokens the shell needs to classify a statement.

/// A piece of a statement, with comments and whitespace dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// An unquoted word: a keyword, an identifier or a number.
    Word(String),
    /// A `'single-quoted'` string, unescaped.
    Text(String),
    /// A `` `back-quoted` `` or `"double-quoted"` identifier, unescaped.
    Quoted(String),
    /// Any other character.
    Symbol(char),
}

impl Token {
    /// Whether this is the unquoted word `keyword`, ignoring case.
    pub fn is(&self, keyword: &str) -> bool {
        matches!(self, Token::Word(w) if w.eq_ignore_ascii_case(keyword))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Code,
    Quote(char),
    LineComment,
    BlockComment,
}

/// Text split at the statement terminators.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Split {
    /// The finished statements, each with its `;` and without comments.
    pub statements: Vec<String>,
    /// What follows the last `;`, without comments; empty when nothing does.
    pub rest: String,
    /// Whether the text ends inside a quote or a block comment.
    pub open: bool,
}

/// Splits `text` into statements at each `;` that is not quoted or commented out.
pub fn split(text: &str) -> Split {
    let mut split = Split::default();
    let mut current = String::new();
    let mut state = State::Code;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match state {
            State::Code => match c {
                '\'' | '"' | '`' => {
                    state = State::Quote(c);
                    current.push(c);
                }
                '-' if chars.peek() == Some(&'-') => {
                    chars.next();
                    state = State::LineComment;
                }
                '/' if chars.peek() == Some(&'*') => {
                    chars.next();
                    state = State::BlockComment;
                    current.push(' ');
                }
                ';' => {
                    current.push(';');
                    let statement = current.trim();
                    if statement != ";" {
                        split.statements.push(statement.to_string());
                    }
                    current.clear();
                }
                _ => current.push(c),
            },
            State::Quote(quote) => {
                current.push(c);
                if c == quote {
                    state = State::Code;
                }
            }
            State::LineComment => {
                if c == '\n' {
                    state = State::Code;
                    current.push('\n');
                }
            }
            State::BlockComment => {
                if c == '*' && chars.peek() == Some(&'/') {
                    chars.next();
                    state = State::Code;
                }
            }
        }
    }
    split.open = matches!(state, State::Quote(_) | State::BlockComment);
    split.rest = current.trim().to_string();
    split
}

/// The tokens of one statement (comments are already gone after [`split`]).
pub fn tokens(statement: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = statement.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '\'' | '"' | '`' => {
                let mut text = String::new();
                loop {
                    match chars.next() {
                        // A doubled quote stands for one quote character.
                        Some(q) if q == c && chars.peek() == Some(&c) => {
                            chars.next();
                            text.push(c);
                        }
                        Some(q) if q == c => break,
                        Some(other) => text.push(other),
                        None => break,
                    }
                }
                tokens.push(if c == '\'' {
                    Token::Text(text)
                } else {
                    Token::Quoted(text)
                });
            }
            c if c.is_alphanumeric() || c == '_' || c == '$' => {
                let mut word = String::from(c);
                while let Some(&next) = chars.peek() {
                    if next.is_alphanumeric() || next == '_' || next == '.' || next == '$' {
                        word.push(next);
                        chars.next();
                    } else {
                        break;
                    }
                }
                tokens.push(Token::Word(word));
            }
            other => tokens.push(Token::Symbol(other)),
        }
    }
    tokens
}

/// Where an error message places the problem, as 1-based line and column: ksqlDB writes
/// `line L:C` for syntax errors and `Line: L, Col: C` for errors found while planning.
pub fn error_position(message: &str) -> Option<(usize, usize)> {
    let number = |text: &str| -> Option<usize> {
        let digits: String = text
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    };
    if let Some(at) = message.find("Line: ") {
        let rest = &message[at + 6..];
        let line = number(rest)?;
        let col = rest.find("Col: ")?;
        return Some((line, number(&rest[col + 5..])?));
    }
    let at = message.find("line ")?;
    let (line, rest) = message[at + 5..].split_once(':')?;
    Some((line.trim().parse().ok()?, number(rest)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_terminators_outside_quotes_and_comments() {
        let text = "SELECT 'a;b' FROM s; -- done; really\nSHOW `x;y`; /* ; */ DESCRIBE t";
        let split = split(text);
        assert_eq!(
            split.statements,
            vec!["SELECT 'a;b' FROM s;", "SHOW `x;y`;"]
        );
        assert_eq!(split.rest, "DESCRIBE t");
        assert!(!split.open);
    }

    #[test]
    fn an_open_quote_or_comment_is_unfinished() {
        assert!(split("SELECT 'it''s; ").open);
        assert!(split("SELECT 1 /* ; ").open);
        assert!(!split("SELECT 'it''s';").open);
        assert_eq!(split("SELECT 'it''s';").statements, vec!["SELECT 'it''s';"]);
    }

    #[test]
    fn empty_statements_are_dropped() {
        let split = split(";; \n ; SHOW STREAMS;;");
        assert_eq!(split.statements, vec!["SHOW STREAMS;"]);
        assert_eq!(split.rest, "");
    }

    #[test]
    fn multi_line_statements_keep_their_lines() {
        let split = split("CREATE STREAM s (\n  id INT KEY -- the key\n) WITH (kafka_topic='s');");
        assert_eq!(
            split.statements,
            vec!["CREATE STREAM s (\n  id INT KEY \n) WITH (kafka_topic='s');"]
        );
    }

    #[test]
    fn tokens_unquote_text_and_identifiers() {
        assert_eq!(
            tokens("SET 'auto.offset.reset' = 'it''s';"),
            vec![
                Token::Word("SET".into()),
                Token::Text("auto.offset.reset".into()),
                Token::Symbol('='),
                Token::Text("it's".into()),
                Token::Symbol(';'),
            ]
        );
        assert_eq!(
            tokens("define `my var`=1"),
            vec![
                Token::Word("define".into()),
                Token::Quoted("my var".into()),
                Token::Symbol('='),
                Token::Word("1".into()),
            ]
        );
    }

    proptest::proptest! {
        #[test]
        fn any_text_splits_into_terminated_statements(text in "[a-z ;'`\"\n*/-]{0,60}") {
            let split = split(&text);
            for statement in &split.statements {
                proptest::prop_assert!(statement.ends_with(';'));
                let _ = tokens(statement);
            }
            let _ = tokens(&split.rest);
        }

        #[test]
        fn plain_text_splits_at_every_semicolon(parts in proptest::collection::vec("[a-z ]{0,8}", 1..6)) {
            let text = parts.join(";");
            let expected = parts[..parts.len() - 1].iter().filter(|p| !p.trim().is_empty()).count();
            proptest::prop_assert_eq!(split(&text).statements.len(), expected);
        }
    }

    #[test]
    fn error_positions_are_read_from_messages() {
        assert_eq!(
            error_position("line 2:14: Syntax error at or near 'FORM'"),
            Some((2, 14))
        );
        assert_eq!(
            error_position("Line: 1, Col: 15: NOPE does not exist."),
            Some((1, 15))
        );
        assert_eq!(error_position("Stream X does not exist"), None);
        assert_eq!(error_position("a line without numbers: here"), None);
    }
}
