//! Starting the `eddy` binary for end-to-end tests.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

pub mod disk;
pub mod tools;
pub mod webdriver;
pub mod wire;

/// A running `eddy server` on free ports with a temporary data directory; killed on drop.
pub struct Server {
    child: Child,
    /// `host:port` of the HTTP listener.
    pub http: String,
    /// `host:port` of the Kafka listener.
    pub kafka: String,
    /// `host:port` of the schema registry listener.
    pub registry: String,
    /// Every Kafka listener, as (`PLAINTEXT`, `SASL_SSL`, ..., `host:port`).
    pub kafka_listeners: Vec<(String, String)>,
    /// The last lines the server logged, for a failing test to show.
    log: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
    _dir: Option<tempfile::TempDir>,
}

/// How many of the server's last log lines a test keeps.
const LOG_LINES: usize = 300;

impl Server {
    /// The address of the Kafka listener with `protocol` (`SASL_SSL`, ...).
    pub fn kafka_listener(&self, protocol: &str) -> String {
        self.kafka_listeners
            .iter()
            .find(|(p, _)| p == protocol)
            .map(|(_, a)| a.clone())
            .unwrap_or_else(|| panic!("no {protocol} listener in {:?}", self.kafka_listeners))
    }

    /// The server's resident memory now, in bytes, from `/proc`.
    pub fn resident_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    /// The server's last log lines (warnings and above, and its info lines), oldest first.
    pub fn log_tail(&self) -> String {
        let lines = self.log.lock().unwrap_or_else(|e| e.into_inner());
        lines.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
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
    let mut server = start_in(&dir.path().join("data"), extra);
    server._dir = Some(dir);
    server
}

/// Starts the server on a data directory the caller keeps, so a test can restart it.
pub fn start_in(data_dir: &std::path::Path, extra: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["server", "--data-dir"])
        .arg(data_dir)
        // Each default gives way to the same flag in `extra`.
        .args(
            [
                ("--listen", "127.0.0.1:0"),
                ("--kafka-listen", "127.0.0.1:0"),
                ("--schema-registry-listen", "127.0.0.1:0"),
                ("--log-level", "info"),
            ]
            .into_iter()
            .filter(|(flag, _)| !extra.contains(flag))
            .flat_map(|(flag, value)| [flag, value]),
        )
        .args(extra)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let log = std::sync::Arc::new(std::sync::Mutex::new(std::collections::VecDeque::new()));
    let kept = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            {
                let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
                if kept.len() == LOG_LINES {
                    kept.pop_front();
                }
                kept.push_back(line.clone());
            }
            if let Some(at) = line.find("address=") {
                let address = line[at + 8..]
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_string();
                let listener = if line.contains("HTTP") {
                    "http".to_string()
                } else if line.contains("schema registry") {
                    "registry".to_string()
                } else {
                    let protocol = line
                        .split("protocol=")
                        .nth(1)
                        .and_then(|p| p.split_whitespace().next())
                        .unwrap_or("PLAINTEXT");
                    format!("kafka:{protocol}")
                };
                let _ = tx.send((listener, address));
            }
        }
    });
    let (mut http, mut kafka, mut registry) = (None, None, None);
    let mut kafka_listeners = Vec::new();
    // A test may turn the registry off (`--schema-registry-listen off`).
    let registry_off = extra
        .windows(2)
        .any(|w| w == ["--schema-registry-listen", "off"]);
    // On a Kafka cluster the server has no Kafka listener of its own.
    let on_cluster = extra.contains(&"--bootstrap-servers");
    while http.is_none()
        || (kafka.is_none() && !on_cluster)
        || (registry.is_none() && !registry_off)
    {
        let (listener, address) = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("eddy did not start listening");
        match listener.as_str() {
            "http" => http = Some(address),
            "registry" => registry = Some(address),
            other => {
                let protocol = other.trim_start_matches("kafka:").to_string();
                kafka.get_or_insert_with(|| address.clone());
                kafka_listeners.push((protocol, address));
            }
        }
    }
    Server {
        child,
        http: http.unwrap_or_default(),
        kafka: kafka.unwrap_or_default(),
        registry: registry.unwrap_or_default(),
        kafka_listeners,
        log,
        _dir: None,
    }
}

/// Runs kcat with `args`, feeding it `input`; its output, or a failure naming its error.
pub fn kcat(args: &[&str], input: Option<&str>) -> String {
    let (ok, out, err) = kcat_run(args, input);
    assert!(ok, "kcat {args:?} failed: {err}");
    out
}

/// Runs kcat with `args`, feeding it `input`: whether it succeeded, its output and its errors.
pub fn kcat_run(args: &[&str], input: Option<&str>) -> (bool, String, String) {
    let mut child = Command::new(tools::kcat())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat runs");
    {
        let mut stdin = child.stdin.take().unwrap();
        if let Some(input) = input {
            stdin.write_all(input.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Sends one raw HTTP/1.1 request; returns the status and the body, chunked transfer decoded.
pub fn exchange(address: &str, raw: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.write_all(raw.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, rest) = response.split_once("\r\n\r\n").unwrap();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return (status, rest.to_string());
    }
    let mut out = String::new();
    let mut rest = rest;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
    (status, out)
}

/// One HTTP/1.1 request; returns the status and the body parsed as JSON.
pub fn request(address: &str, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let body = body.unwrap_or("");
    let (status, text) = exchange(
        address,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// `POST /ksql` with `sql`; the status and the body as JSON.
pub fn ksql(server: &Server, sql: &str) -> (u16, Value) {
    request(
        &server.http,
        "POST",
        "/ksql",
        Some(&json!({"ksql": sql}).to_string()),
    )
}
