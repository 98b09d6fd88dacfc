//! `qtt`: runs ksqlDB query-validation-test files against Eddy.
//!
//! `cargo run -p eddy-tests --bin qtt -- [files or folders]` (default: the shared
//! query-validation-tests folder). One line per case, a count per file, and a last line
//! `N passed, N failed, N skipped`. With `--floor N` it exits non-zero when fewer than N pass.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Parser;
use eddy_tests::conformance::{Suite, conformance_dir, load_paths};
use eddy_tests::qtt::{Outcome, run_case};

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
    let mut per_file: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for case in &cases {
        let counts = per_file.entry(case.file.clone()).or_default();
        match run_case(case).await {
            Outcome::Passed => {
                passed += 1;
                counts.0 += 1;
                if !cli.quiet {
                    println!("PASS {} / {}", case.file, case.name);
                }
            }
            Outcome::Skipped => {
                skipped += 1;
                counts.2 += 1;
                if !cli.quiet {
                    println!(
                        "SKIP {} / {}: needs the schema registry, Avro or Protobuf",
                        case.file, case.name
                    );
                }
            }
            Outcome::Failed(reason) => {
                failed += 1;
                counts.1 += 1;
                println!("FAIL {} / {}: {reason}", case.file, case.name);
            }
        }
    }
    println!();
    for (file, (p, f, s)) in &per_file {
        println!("{file}: {p} passed, {f} failed, {s} skipped");
    }
    println!();
    println!("{passed} passed, {failed} failed, {skipped} skipped");
    if let Some(floor) = cli.floor
        && passed < floor
    {
        anyhow::bail!("{passed} cases passed, below the floor of {floor}");
    }
    Ok(())
}
