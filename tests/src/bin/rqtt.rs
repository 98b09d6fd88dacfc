//! `rqtt`: runs ksqlDB rest-query-validation-test files against a real Eddy server.
//!
//! `cargo run -p eddy-tests --bin rqtt -- [files or folders]` (default: the shared
//! rest-query-validation-tests folder). Each case gets its own server on a free port over a
//! fresh store. One line per case, a count per file, and a last line
//! `N passed, N failed, N skipped`. With `--floor N` it exits non-zero when fewer than N pass.

use clap::Parser;
use eddy_tests::conformance::{RunnerArgs, Suite, run_suite};
use eddy_tests::rqtt::run_case;

/// Runs ksqlDB rest-query-validation-test files against Eddy's REST API.
#[derive(Debug, Parser)]
#[command(name = "rqtt", version)]
struct Cli {
    #[command(flatten)]
    runner: RunnerArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    run_suite(Suite::RestQueryValidation, Cli::parse().runner, run_case).await
}
