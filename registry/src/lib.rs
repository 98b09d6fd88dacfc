//! Eddy's schema registry: Confluent's model of subjects, versions, ids and compatibility
//! levels, kept in an internal compacted topic of Eddy's own log so that it survives restarts.
//! The server serves it over Confluent's REST API; the engine will read schemas from it for the
//! AVRO, PROTOBUF and JSON_SR formats.

pub mod compatibility;
pub mod error;
mod json_compatibility;
mod json_schema;
pub mod mode;
pub mod protobuf;
mod protobuf_compatibility;
mod registry;
pub mod schema;
mod state;

pub use compatibility::Level;
pub use error::{RegistryError, Result};
pub use mode::Mode;
pub use registry::{
    Placement, SCHEMAS_TOPIC, SchemaRegistry, SchemaRequest, SubjectVersion, VersionSpec,
};
pub use schema::{Parsed, Reference, SchemaText, SchemaType};
