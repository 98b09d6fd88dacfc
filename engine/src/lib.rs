//! Executes KSQL statements over Eddy's log: the catalog of streams, tables and types, record
//! formats, and (as they are built) operators and queries.
//!
//! ```no_run
//! # async fn run(store: eddy_storage::Store) -> Result<(), Box<dyn std::error::Error>> {
//! let engine = eddy_engine::Engine::open(store).await?;
//! let mut session = eddy_engine::Session::default();
//! engine
//!     .execute(&mut session, "CREATE STREAM s (id INT KEY, v STRING) WITH (kafka_topic='s', partitions=1, value_format='JSON');")
//!     .await?;
//! # Ok(()) }
//! ```

pub mod authorize;
pub mod catalog;
pub mod codec;
pub mod command_log;
pub mod connectors;
mod engine;
mod error;
pub mod format;
mod insert;
pub mod metrics;
mod physical;
pub mod print;
pub mod query;
mod result;
pub mod schema;
mod session;
mod statements;

pub use engine::{DEFAULT_MAX_PUSH_QUERIES, Engine, EngineOptions, ExecuteError};
pub use error::{EngineError, Result};
pub use query::task::DEFAULT_STATE_CACHE_ENTRIES;
pub use query::transient::DEFAULT_PULL_QUERY_MAX_BYTES;
pub use result::{QueryDescription, QuerySummary, SourceSummary, StatementResult, TopicSummary};
pub use session::Session;
