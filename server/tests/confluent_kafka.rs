//! confluent-kafka (Python over librdkafka) against the `eddy` binary: consumer-group
//! rebalancing on join and leave, and committed offsets that a new member resumes from.
//! `.ci/deps` installs confluent-kafka when it is missing.

use std::process::Command;

mod common;

/// Runs `tests/clients/<script>` against a fresh server; what it printed.
fn run_client(script: &str) -> String {
    let python = common::tools::python();
    let server = common::start();
    let script = format!("{}/tests/clients/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(python)
        .args([&script, &server.kafka])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn a_group_of_two_splits_four_partitions_rebalances_and_resumes() {
    let stdout = run_client("confluent_group.py");
    assert_eq!(
        stdout,
        "split [0, 1] [2, 3]\nboth read True True 40\ntook over [0, 1, 2, 3]\nresumed True True\n"
    );
}

#[test]
fn a_member_that_joins_after_one_died_gets_its_partitions_once_the_dead_ones_session_ends() {
    let stdout = run_client("confluent_dead_member.py");
    assert_eq!(stdout, "assigned [0, 1] within the session timeout\n");
}
