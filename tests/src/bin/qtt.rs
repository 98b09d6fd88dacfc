//! `qtt`: runs ksqlDB query-validation-test files against Eddy.
//!
//! `cargo run -p eddy-tests --bin qtt -- [files or folders]` (default: the shared
//! query-validation-tests folder). One line per case, a count per file, and a last line
//! `N passed, N failed, N skipped`. With `--floor N` it exits non-zero when fewer than N pass.

use clap::Parser;
use eddy_tests::conformance::{RunnerArgs, Suite, run_suite};
use eddy_tests::qtt::run_case;

/// Runs ksqlDB query-validation-test files against Eddy's engine.
#[derive(Debug, Parser)]
#[command(name = "qtt", version)]
struct Cli {
    #[command(flatten)]
    runner: RunnerArgs,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    run_suite(Suite::QueryValidation, Cli::parse().runner, run_case).await
}
