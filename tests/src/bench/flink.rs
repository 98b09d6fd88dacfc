//! Apache Flink beside Eddy on Nexmark: the same queries (their Flink SQL in
//! `tests/nexmark/flink/`) over the same events, read from JSON-lines files by PyFlink's local
//! mini-cluster at parallelism 1. `tests/nexmark/flink/install` installs Flink on first use,
//! outside the clone; when it cannot, the harness runs Eddy alone and says why.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::bench::nexmark::Events;

/// The folder of the Flink side: install script, runner, DDL and queries.
fn flink_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("nexmark/flink")
}

/// Flink, installed, with the run's events written where its sources read them.
pub struct Flink {
    python: PathBuf,
    events: tempfile::TempDir,
}

/// One query's run on Flink, as `run.py` measures it.
#[derive(Debug, Clone, Copy)]
pub struct FlinkRun {
    /// Wall seconds from the query's submission until it finished its bounded input.
    pub seconds: f64,
    /// CPU seconds of Flink's JVM over the same time (job submission included).
    pub cpu_seconds: f64,
    /// The JVM's peak resident set size, in bytes.
    pub peak_rss: u64,
}

impl Flink {
    /// Installs Flink if needed and writes `events` for it; `Err` says why Flink cannot run.
    pub fn prepare(events: &Events) -> anyhow::Result<Flink> {
        let install = Command::new("bash")
            .arg(flink_dir().join("install"))
            .stderr(std::process::Stdio::inherit())
            .output()
            .context("running tests/nexmark/flink/install")?;
        anyhow::ensure!(
            install.status.success(),
            "tests/nexmark/flink/install failed ({})",
            install.status
        );
        let python = PathBuf::from(String::from_utf8_lossy(&install.stdout).trim());
        let dir = tempfile::tempdir()?;
        for (table, _, lines) in events.kinds() {
            let mut text = lines.join("\n");
            text.push('\n');
            std::fs::write(dir.path().join(format!("{table}.json")), text)?;
        }
        Ok(Flink {
            python,
            events: dir,
        })
    }

    /// Whether Flink has a version of query `name`.
    pub fn has(name: &str) -> bool {
        flink_dir().join(format!("{name}.sql")).is_file()
    }

    /// Runs query `name` (`q0`, ...) to the end of the events.
    pub fn run(&self, name: &str) -> anyhow::Result<FlinkRun> {
        let dir = flink_dir();
        let out = Command::new(&self.python)
            .arg(dir.join("run.py"))
            .arg("--dir")
            .arg(self.events.path())
            .arg("--query")
            .arg(dir.join(format!("{name}.sql")))
            .output()
            .with_context(|| format!("running Flink's {name}"))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let cause = err
                .lines()
                .rfind(|l| l.contains("Exception:"))
                .unwrap_or_else(|| err.lines().last().unwrap_or_default());
            anyhow::bail!("Flink's {name} failed ({}): {cause}", out.status);
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().last().unwrap_or_default();
        let parsed: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("Flink's {name} printed {line:?}"))?;
        let number = |field: &str| {
            parsed[field]
                .as_f64()
                .with_context(|| format!("Flink's {name} printed no {field}: {line}"))
        };
        Ok(FlinkRun {
            seconds: number("seconds")?,
            cpu_seconds: number("cpu_seconds")?,
            peak_rss: number("peak_rss")? as u64,
        })
    }
}
