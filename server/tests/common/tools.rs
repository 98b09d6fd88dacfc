//! The programs the end-to-end tests drive (kcat, the Python Kafka clients, Chromium): when one
//! is missing, the project's own installer (`.ci/deps`) runs once, so `cargo test --workspace`
//! works on a fresh machine. A tool that still cannot be had fails the test that needs it, with
//! the installer's output, rather than letting it pass untried.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The Python virtual environment `.ci/deps` fills.
fn venv() -> PathBuf {
    std::env::var_os("EDDY_VENV").map_or_else(|| PathBuf::from("/var/tmp/eddy-venv"), PathBuf::from)
}

fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

fn python_has_clients(python: &Path) -> bool {
    Command::new(python)
        .args([
            "-c",
            "import kafka, confluent_kafka, confluent_kafka.schema_registry.avro, confluent_kafka.schema_registry.protobuf, confluent_kafka.schema_registry.json_schema",
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn all_present() -> bool {
    on_path("kcat").is_some()
        && on_path("curl").is_some()
        && on_path("chromedriver").is_some()
        && Path::new("/usr/bin/chromium").is_file()
        && faketime_library().is_some()
        && python_has_clients(&venv().join("bin/python3"))
}

/// Runs `.ci/deps` once per test process when anything is missing, one process at a time;
/// what it printed, when it failed.
fn install() -> &'static Result<(), String> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        if all_present() {
            return Ok(());
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../.ci/deps");
        eprintln!("a tool the tests drive is missing: running {script}");
        let out = Command::new("flock")
            .args(["/var/tmp/eddy-deps.lock", "bash", script])
            .output()
            .map_err(|e| format!("cannot run {script}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{script} failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    })
}

/// The path of `program` once installed, or a failed test saying why it is not.
fn require(program: &str, found: impl Fn() -> Option<PathBuf>) -> PathBuf {
    if let Some(path) = found() {
        return path;
    }
    if let Err(why) = install() {
        panic!("{program} is needed for this test and could not be installed: {why}");
    }
    found().unwrap_or_else(|| panic!("{program} is still missing after .ci/deps ran"))
}

/// kcat, installing it when missing.
pub fn kcat() -> PathBuf {
    require("kcat", || on_path("kcat"))
}

/// curl, installing it when missing.
pub fn curl() -> PathBuf {
    require("curl", || on_path("curl"))
}

/// A python3 with kafka-python and confluent-kafka: the one on PATH if it has them, else the
/// virtual environment's, installed when missing.
pub fn python() -> PathBuf {
    require("python3 with kafka-python and confluent-kafka", || {
        on_path("python3")
            .filter(|p| python_has_clients(p))
            .or_else(|| Some(venv().join("bin/python3")).filter(|p| python_has_clients(p)))
    })
}

fn faketime_library() -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib")
        .ok()?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path().join("faketime/libfaketime.so.1"))
        .find(|path| path.is_file())
}

/// libfaketime (to preload into a process whose wall clock a test steps), installed when
/// missing.
pub fn libfaketime() -> PathBuf {
    require("libfaketime", faketime_library)
}

/// chromedriver, with Debian's Chromium beside it, installed when missing.
pub fn chromedriver() -> PathBuf {
    require("chromium and chromedriver", || {
        on_path("chromedriver").filter(|_| Path::new("/usr/bin/chromium").is_file())
    })
}
