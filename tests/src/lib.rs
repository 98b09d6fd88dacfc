//! Eddy's cross-crate test support and the `eddy-bench` harness.
//!
//! The end-to-end tests live in `tests/`; the benchmark scenarios live in [`bench`] and run from
//! `cargo run --release -p eddy-tests --bin eddy-bench -- <scenario>`. [`conformance`] reads
//! ksqlDB's own test files and [`qtt`] runs them against the engine.

pub mod bench;
pub mod conformance;
pub mod log;
pub mod postgres;
pub mod qtt;
pub mod qtt_avro;
pub mod qtt_protobuf;
pub mod qtt_records;
pub mod rqtt;
