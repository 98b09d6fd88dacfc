//! Source positions carried by every AST node.

use std::fmt;

/// A position in the source text: 1-based line and column.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Line, from 1.
    pub line: u64,
    /// Column, from 1.
    pub column: u64,
}

impl Position {
    /// A position at `line`, `column`.
    pub fn new(line: u64, column: u64) -> Self {
        Position { line, column }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// The source range a node was parsed from: start inclusive, end exclusive.
///
/// Spans never take part in AST equality, so a statement printed and parsed again compares
/// equal to the original even though its text moved. Compare `start`/`end` directly to test
/// positions.
#[derive(Debug, Clone, Copy, Default)]
pub struct Span {
    /// Where the node starts.
    pub start: Position,
    /// Just past where the node ends.
    pub end: Position,
}

impl Span {
    /// A span from `start` to `end`.
    pub fn new(start: Position, end: Position) -> Self {
        Span { start, end }
    }

    /// The smallest span covering both.
    pub fn union(self, other: Span) -> Span {
        let start = if other.start < self.start && other.start.line > 0 {
            other.start
        } else {
            self.start
        };
        let end = if other.end > self.end {
            other.end
        } else {
            self.end
        };
        Span { start, end }
    }
}

impl PartialEq for Span {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Span {}
