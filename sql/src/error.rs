//! Parse errors, with the line and column where parsing stopped.

use thiserror::Error;

use crate::span::Position;

/// A statement that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("line {line}:{column}: {message}", line = position.line, column = position.column)]
pub struct ParseError {
    /// What was wrong, saying what was found and what was expected.
    pub message: String,
    /// Where parsing stopped.
    pub position: Position,
}

impl ParseError {
    /// An error at `position`.
    pub fn new(message: impl Into<String>, position: Position) -> Self {
        ParseError {
            message: message.into(),
            position,
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
