//! What the REST handlers share, below them all: the state they reach, ksqlDB's error shape
//! and codes, the session a request carries, and ksqlDB's entities for statement results.

mod entity;
mod error;
mod session;
mod state;

pub(crate) use entity::{entity, field_schema};
pub(crate) use error::{ErrorCode, RestError};
pub(crate) use session::{RequestCaller, session};
pub use state::AppState;
