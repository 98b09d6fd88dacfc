//! PostgreSQL.
pub mod change;
pub mod config;
pub mod outbox;
pub mod sink;
pub mod source;

pub use config::PostgresSourceConfig;
pub use sink::{PostgresSink, PostgresSinkConfig};
pub use source::{PartialTransaction, Position, PostgresSource};
