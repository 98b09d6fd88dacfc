//! Starting the `eddy` binary for end-to-end tests.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running `eddy server` on free ports with a temporary data directory; killed on drop.
pub struct Server {
    child: Child,
    /// `host:port` of the HTTP listener.
    pub http: String,
    /// `host:port` of the Kafka listener.
    pub kafka: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the server and returns once both listeners are up.
pub fn start() -> Server {
    start_with(&[])
}

/// Starts the server with extra command-line flags.
pub fn start_with(extra: &[&str]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["server", "--data-dir"])
        .arg(dir.path().join("data"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--kafka-listen",
            "127.0.0.1:0",
            "--log-level",
            "info",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(at) = line.find("address=") {
                let address = line[at + 8..]
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_string();
                let _ = tx.send((line.contains("HTTP"), address));
            }
        }
    });
    let (mut http, mut kafka) = (None, None);
    while http.is_none() || kafka.is_none() {
        let (is_http, address) = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("eddy did not start listening");
        if is_http {
            http = Some(address);
        } else {
            kafka = Some(address);
        }
    }
    Server {
        child,
        http: http.unwrap_or_default(),
        kafka: kafka.unwrap_or_default(),
        _dir: dir,
    }
}
