//! The Eddy server: ksqlDB's REST API over the engine and Kafka's wire protocol over the log.
//! The `eddy` binary runs it; tests and the conformance runner start it in process.

pub mod addresses;
pub mod auth;
pub mod browser;
pub mod connections;
pub mod console;
pub mod following;
pub mod http;
pub mod kafka;
mod ksql;
pub mod leadership;
pub mod listeners;
pub mod metrics;
pub mod registry;
pub mod request_memory;
mod rest;
pub mod service;
mod streaming;
