//! A real Kafka client against the `eddy` binary: kcat (librdkafka) produces, lists metadata,
//! looks up offsets and consumes. `.ci/run` installs kcat.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const EDDY: &str = env!("CARGO_BIN_EXE_eddy");

struct Server {
    child: Child,
    bootstrap: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts eddy on a free port and returns once it listens for Kafka clients.
fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(EDDY)
        .args(["server", "--data-dir"])
        .arg(dir.path().join("data"))
        .args([
            "--kafka-listen",
            "127.0.0.1:0",
            "--listen",
            "127.0.0.1:0",
            "--log-level",
            "info",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("Kafka clients")
                && let Some(at) = line.find("address=")
            {
                let address = line[at + 8..]
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_string();
                let _ = tx.send(address);
            }
        }
    });
    let bootstrap = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("eddy did not start listening");
    Server {
        child,
        bootstrap,
        _dir: dir,
    }
}

fn kcat(args: &[&str], input: Option<&str>) -> String {
    let mut child = Command::new("kcat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat is needed for this test; .ci/run installs it (apt-get install kcat)");
    {
        let mut stdin = child.stdin.take().unwrap();
        if let Some(input) = input {
            stdin.write_all(input.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kcat {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn kcat_produces_lists_and_consumes() {
    let server = start();
    let b = server.bootstrap.as_str();
    kcat(
        &["-b", b, "-t", "events", "-P", "-K:"],
        Some("k1:hello\nk2:world\nk1:again\n"),
    );

    let metadata = kcat(&["-b", b, "-L"], None);
    assert!(
        metadata.contains("topic \"events\" with 1 partitions"),
        "{metadata}"
    );

    let consumed = kcat(
        &["-b", b, "-t", "events", "-C", "-e", "-f", "%k=%s@%o\n"],
        None,
    );
    assert_eq!(consumed, "k1=hello@0\nk2=world@1\nk1=again@2\n");

    // From an offset, and the end offset by ListOffsets.
    let tail = kcat(
        &["-b", b, "-t", "events", "-C", "-o", "1", "-e", "-f", "%s\n"],
        None,
    );
    assert_eq!(tail, "world\nagain\n");
    let end = kcat(
        &[
            "-b", b, "-t", "events", "-C", "-o", "-1", "-e", "-f", "%s\n",
        ],
        None,
    );
    assert_eq!(end, "again\n", "offset -1 starts one before the end");

    // A second batch appends after the first.
    kcat(&["-b", b, "-t", "events", "-P"], Some("more\n"));
    let all = kcat(&["-b", b, "-t", "events", "-C", "-e", "-f", "%o "], None);
    assert_eq!(all, "0 1 2 3 ");
}
