//! Executes KSQL statements over Eddy's log: catalog, record formats, operators and queries.
//! Filled by the engine work; the crate exists now so the dependency graph is in place.
