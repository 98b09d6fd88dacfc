//! `qtt`: runs ksqlDB query-validation-test files against Eddy.
//!
//! `cargo run -p eddy-tests --bin qtt -- [files or folders]` (default: the shared
//! query-validation-tests folder). One line per case, a count per file, and a last line
//! `N passed, N failed, N skipped`. With `--floor N` it exits non-zero when fewer than N pass.

use std::path::PathBuf;

use clap::Parser;
use eddy_tests::conformance::{Suite, conformance_dir, load_paths, run_and_report};
use eddy_tests::qtt::run_case;

/// Runs ksqlDB query-validation-test files against Eddy's engine.
#[derive(Debug, Parser)]
#[command(name = "qtt", version)]
struct Cli {
    /// Test files or folders of them; default: ../shared/conformance/ksqldb/query-validation-tests.
    paths: Vec<PathBuf>,
    /// Fail (exit 1) when fewer cases than this pass.
    #[arg(long)]
    floor: Option<usize>,
    /// Print only failed cases and the counts.
    #[arg(long, short)]
    quiet: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let paths = if cli.paths.is_empty() {
        vec![conformance_dir().join("query-validation-tests")]
    } else {
        cli.paths.clone()
    };
    let cases = load_paths(Suite::QueryValidation, &paths)?;
    run_and_report(&cases, cli.quiet, cli.floor, run_case).await
}
