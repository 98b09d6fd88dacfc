//! The `eddy` binary end to end: help, start on a fresh data directory, clean shutdown on SIGINT.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const EDDY: &str = env!("CARGO_BIN_EXE_eddy");

#[test]
fn help_documents_every_flag_and_subcommand() {
    let out = Command::new(EDDY).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "server",
        "repl",
        "--data-dir",
        "--sync",
        "--log-level",
        "./eddy-data",
    ] {
        assert!(
            help.contains(needle),
            "--help does not mention {needle}:\n{help}"
        );
    }
}

#[test]
fn a_bad_flag_value_is_a_clear_error() {
    let out = Command::new(EDDY)
        .args(["server", "--sync", "sometimes"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("unknown sync policy"), "{err}");
}

fn wait_for_line(rx: &mpsc::Receiver<String>, needle: &str, seen: &mut Vec<String>) -> bool {
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) {
        let hit = line.contains(needle);
        seen.push(line);
        if hit {
            return true;
        }
    }
    false
}

#[test]
fn server_opens_the_store_and_stops_cleanly_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("eddy-data");
    let mut child = Command::new(EDDY)
        .args(["server", "--data-dir"])
        .arg(&data)
        .args([
            "--sync",
            "always",
            "--kafka-listen",
            "127.0.0.1:0",
            "--listen",
            "127.0.0.1:0",
            "--schema-registry-listen",
            "127.0.0.1:0",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    assert!(
        wait_for_line(&rx, "eddy is running", &mut seen),
        "no start line in {seen:#?}"
    );
    assert!(seen.iter().any(|l| l.contains("opened store")), "{seen:#?}");
    assert!(data.join("CURRENT").exists(), "the store was not created");

    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert!(
        wait_for_line(&rx, "stopped cleanly", &mut seen),
        "no clean stop in {seen:#?}"
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}
