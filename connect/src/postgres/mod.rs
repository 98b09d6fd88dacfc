//! PostgreSQL.
pub mod change;
pub mod config;
pub mod source;

pub use config::PostgresSourceConfig;
pub use source::{PartialTransaction, Position, PostgresSource};
