//! The REPL against a real server: typed at a pseudo-terminal (multi-line statements, a push
//! query stopped with Ctrl-C), and run non-interactively with `-e` / `-f`.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{Server, ksql};

mod common;

fn repl(server: &Server, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["repl", "--url", &format!("http://{}", server.http)])
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The ids of the queries `SHOW QUERIES` lists, with their types.
fn queries(server: &Server) -> Vec<(String, String)> {
    let (status, body) = ksql(server, "SHOW QUERIES;");
    assert_eq!(status, 200, "{body}");
    body[0]["queries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            (
                q["id"].as_str().unwrap_or_default().to_string(),
                q["queryType"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn execute_prints_results_and_exits_zero() {
    let server = common::start();
    let out = repl(
        &server,
        &[
            "-e",
            "CREATE STREAM s (id INT KEY, name STRING) WITH (kafka_topic='s', value_format='JSON', partitions=1);
             INSERT INTO s (id, name) VALUES (1, 'alice');
             INSERT INTO s (id, name) VALUES (2, 'bob');
             SELECT * FROM s WHERE id = 2;
             PRINT s FROM BEGINNING LIMIT 2;
             SHOW STREAMS",
        ],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("| Stream created |"), "{stdout}");
    assert!(stdout.contains("| ID | NAME |"), "{stdout}");
    assert!(stdout.contains("| 2  | bob  |"), "{stdout}");
    assert!(!stdout.contains("| alice"), "{stdout}");
    assert!(stdout.contains("1 row."), "{stdout}");
    // PRINT: the formats it told, then each record.
    assert!(
        stdout.contains("Key format: KAFKA_INT or KAFKA_STRING"),
        "{stdout}"
    );
    assert!(
        stdout.contains(r#"value: {"NAME":"alice"}, partition: 0"#),
        "{stdout}"
    );
    assert!(
        stdout.contains("| S  "),
        "SHOW STREAMS without ';' ran: {stdout}"
    );
}

#[test]
fn a_failing_statement_stops_the_script_with_a_marked_error() {
    let server = common::start();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.sql");
    std::fs::write(
        &script,
        "-- a comment; with a semicolon\n\
         CREATE STREAM s (id INT KEY) WITH (kafka_topic='s', value_format='JSON', partitions=1);\n\
         SELECT * FROM s\n  WHERE id = 1 FORM x;\n\
         CREATE STREAM never (id INT KEY) WITH (kafka_topic='never', value_format='JSON', partitions=1);\n",
    )
    .unwrap();
    let out = repl(&server, &["-f", script.to_str().unwrap()]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("Stream created"), "{stdout}");
    assert!(stderr.contains("line 2:16"), "{stderr}");
    // The line with the error, and a caret under the column.
    assert!(
        stderr.contains("  WHERE id = 1 FORM x;\n               ^\n"),
        "{stderr}"
    );
    let (_, streams) = ksql(&server, "SHOW STREAMS;");
    assert!(!streams.to_string().contains("NEVER"), "{streams}");
}

#[test]
fn defines_substitute_and_an_unreachable_server_is_a_clear_failure() {
    let server = common::start();
    ksql(
        &server,
        "CREATE STREAM s (id INT KEY) WITH (kafka_topic='s', value_format='JSON', partitions=1);",
    );
    let out = repl(
        &server,
        &[
            "--define",
            "src=s",
            "-e",
            "DESCRIBE ${src}; SHOW VARIABLES;",
        ],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("Name         : S"), "{stdout}");
    assert!(stdout.contains("| SRC           | s     |"), "{stdout}");

    let out = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["repl", "--url", "http://127.0.0.1:1", "-e", "SHOW STREAMS;"])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("Could not reach the server at http://127.0.0.1:1"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[cfg(unix)]
#[test]
fn a_typed_session_streams_a_push_query_until_ctrl_c() {
    let server = common::start();
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history");
    let mut command = Command::new(env!("CARGO_BIN_EXE_eddy"));
    command
        .args(["repl", "--url", &format!("http://{}", server.http)])
        .arg("--history-file")
        .arg(&history)
        .env("TERM", "xterm");
    let mut session = rexpect::session::spawn_command(command, Some(30_000)).unwrap();
    session.exp_string("Having trouble?").unwrap();
    session.exp_string("eddy> ").unwrap();

    // One statement over three lines: Enter before the `;` continues it.
    session.send_line("CREATE STREAM clicks (").unwrap();
    session
        .send_line("  id INT KEY, page STRING -- where they went")
        .unwrap();
    session
        .send_line(") WITH (kafka_topic='clicks', value_format='JSON', partitions=1);")
        .unwrap();
    session.exp_string("Stream created").unwrap();
    session.exp_string("eddy> ").unwrap();

    session
        .send_line("INSERT INTO clicks (id, page) VALUES (1, 'home');")
        .unwrap();
    session.exp_string("eddy> ").unwrap();
    session
        .send_line("SET 'auto.offset.reset' = 'earliest';")
        .unwrap();
    session.exp_string("Successfully changed").unwrap();
    session.exp_string("eddy> ").unwrap();

    session
        .send_line("SELECT page FROM clicks EMIT CHANGES;")
        .unwrap();
    session.exp_string("Press CTRL-C to interrupt").unwrap();
    session.exp_string("| home").unwrap();
    wait_for("the push query to be listed", || {
        queries(&server).iter().any(|(_, kind)| kind == "PUSH")
    });
    // A row inserted meanwhile arrives while the query runs.
    let (status, body) = ksql(
        &server,
        "INSERT INTO clicks (id, page) VALUES (2, 'pricing');",
    );
    assert_eq!(status, 200, "{body}");
    session.exp_string("| pricing").unwrap();

    session.send_control('c').unwrap();
    session.exp_string("Query terminated").unwrap();
    session.exp_string("eddy> ").unwrap();
    wait_for("the push query to be gone", || {
        queries(&server).iter().all(|(_, kind)| kind != "PUSH")
    });

    // The shell still works after the interrupt, and lists no push query either.
    session.send_line("SHOW QUERIES;").unwrap();
    let listed = session.exp_string("EXPLAIN <Query ID>").unwrap();
    assert!(!listed.contains("transient"), "{listed}");
    session.exp_string("eddy> ").unwrap();

    // An error is shown and the prompt comes back.
    session.send_line("DESCRIBE nothing_here;").unwrap();
    session.exp_string("NOTHING_HERE").unwrap();
    session.exp_string("eddy> ").unwrap();

    session.send_line("exit").unwrap();
    session.exp_eof().unwrap();
    let kept = std::fs::read_to_string(&history).unwrap();
    assert!(
        kept.contains("SELECT page FROM clicks EMIT CHANGES;"),
        "{kept}"
    );
}

#[cfg(unix)]
#[test]
fn eddy_on_a_terminal_serves_and_opens_the_shell() {
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_eddy"));
        command
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen", "127.0.0.1:0", "--kafka-listen", "127.0.0.1:0"])
            .args(["--schema-registry-listen", "127.0.0.1:0"])
            .env("HOME", dir.path())
            .env("TERM", "xterm");
        let mut session = rexpect::session::spawn_command(command, Some(30_000)).unwrap();
        session.exp_string("Eddy is serving HTTP on").unwrap();
        session.exp_string("eddy> ").unwrap();
        session
    };
    let mut session = start();
    session
        .send_line("CREATE STREAM kept (id INT KEY) WITH (kafka_topic='kept', value_format='JSON', partitions=1);")
        .unwrap();
    session.exp_string("Stream created").unwrap();
    session.exp_string("eddy> ").unwrap();
    session.send_control('d').unwrap();
    session.exp_eof().unwrap();
    let log = std::fs::read_to_string(dir.path().join("data").join("eddy.log")).unwrap();
    assert!(log.contains("stopped cleanly"), "{log}");

    // The server went down with the shell, and its data is there on the next start.
    let mut session = start();
    session.send_line("SHOW STREAMS;").unwrap();
    session.exp_string("| KEPT").unwrap();
    session.send_line("exit").unwrap();
    session.exp_eof().unwrap();
    assert!(dir.path().join(".eddy_history").exists());
}
