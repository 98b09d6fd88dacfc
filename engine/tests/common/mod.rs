//! What the engine's end-to-end tests share: a store in a directory, and running statements.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use eddy_engine::{Engine, Session};
use eddy_storage::{Store, StoreOptions, SyncPolicy};

/// A store in `dir` that leaves syncing to the OS, as tests need no durability across crashes.
pub fn open_store(dir: &std::path::Path) -> Store {
    Store::open(
        dir,
        StoreOptions {
            sync: SyncPolicy::Os,
            ..StoreOptions::default()
        },
    )
    .unwrap()
}

/// Runs statements in a fresh session, failing the test with the statement and its error.
/// The session's record cache is off, as in ksqlDB's own tests, so every update of an
/// aggregation comes out; a test of the cache sets `cache.max.bytes.buffering` itself.
pub async fn run(engine: &Engine, sql: &str) {
    let mut session = Session::default();
    session
        .properties
        .insert("cache.max.bytes.buffering".into(), "0".into());
    engine
        .execute(&mut session, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}\n{e}"));
}
