//! `rqtt`: runs ksqlDB rest-query-validation-test files against a real Eddy server.
//!
//! `cargo run -p eddy-tests --bin rqtt -- [files or folders]` (default: the shared
//! rest-query-validation-tests folder). Each case gets its own server on a free port over a
//! fresh store. One line per case, a count per file, and a last line
//! `N passed, N failed, N skipped`. With `--floor N` it exits non-zero when fewer than N pass.

use std::path::PathBuf;

use clap::Parser;
use eddy_tests::conformance::{Suite, conformance_dir, load_paths, run_and_report};
use eddy_tests::rqtt::run_case;

/// Runs ksqlDB rest-query-validation-test files against Eddy's REST API.
#[derive(Debug, Parser)]
#[command(name = "rqtt", version)]
struct Cli {
    /// Test files or folders of them; default: ../shared/conformance/ksqldb/rest-query-validation-tests.
    paths: Vec<PathBuf>,
    /// Fail (exit 1) when fewer cases than this pass.
    #[arg(long)]
    floor: Option<usize>,
    /// Print only failed cases and the counts.
    #[arg(long, short)]
    quiet: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let paths = if cli.paths.is_empty() {
        vec![conformance_dir().join("rest-query-validation-tests")]
    } else {
        cli.paths.clone()
    };
    let cases = load_paths(Suite::RestQueryValidation, &paths)?;
    run_and_report(&cases, cli.quiet, cli.floor, run_case).await
}
