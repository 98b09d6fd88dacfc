//! PostgreSQL.
pub mod change;
pub mod config;
pub mod outbox;
pub mod source;

pub use config::PostgresSourceConfig;
pub use source::{PartialTransaction, Position, PostgresSource};
