//! Parse errors, with the line and column where parsing stopped.

use std::fmt;

use crate::span::Position;

/// A statement that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// What was wrong, saying what was found and what was expected.
    pub message: String,
    /// Where parsing stopped.
    pub position: Position,
    /// Whether `message` already names the position, as some of ksqlDB's messages do.
    located: bool,
}

impl ParseError {
    /// An error at `position`; it displays as `line L:C: message`.
    pub fn new(message: impl Into<String>, position: Position) -> Self {
        ParseError {
            message: message.into(),
            position,
            located: false,
        }
    }

    /// An error whose message starts with ksqlDB's `Line: L, Col: C: ` form.
    pub fn located(message: impl fmt::Display, position: Position) -> Self {
        ParseError {
            message: format!(
                "Line: {}, Col: {}: {message}",
                position.line, position.column
            ),
            position,
            located: true,
        }
    }

    /// The line of the error, from 1.
    pub fn line(&self) -> u64 {
        self.position.line
    }

    /// The column of the error, from 1.
    pub fn column(&self) -> u64 {
        self.position.column
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.located {
            f.write_str(&self.message)
        } else {
            write!(
                f,
                "line {}:{}: {}",
                self.position.line, self.position.column, self.message
            )
        }
    }
}

impl std::error::Error for ParseError {}
