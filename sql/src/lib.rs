//! The KSQL dialect: tokens, a typed AST with source spans, and printing back to SQL.
//! Filled by the parser work; the crate exists now so the dependency graph is in place.
