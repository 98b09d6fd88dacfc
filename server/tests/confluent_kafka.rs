//! confluent-kafka (Python over librdkafka) against the `eddy` binary: consumer-group
//! rebalancing on join and leave, and committed offsets that a new member resumes from.
//! `.ci/run` installs confluent-kafka; elsewhere the test says it is missing and passes.

use std::process::Command;

mod common;

fn confluent_kafka_installed() -> bool {
    Command::new("python3")
        .args(["-c", "import confluent_kafka"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn a_group_of_two_splits_four_partitions_rebalances_and_resumes() {
    if !confluent_kafka_installed() {
        assert!(
            std::env::var_os("CI").is_none(),
            "confluent-kafka is missing; .ci/run installs it"
        );
        eprintln!(
            "skipping: the Python package confluent-kafka is not installed (pip install confluent-kafka)"
        );
        return;
    }
    let server = common::start();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/confluent_group.py"
    );
    let out = Command::new("python3")
        .args([script, &server.kafka])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout,
        "split [0, 1] [2, 3]\nboth read True True 40\ntook over [0, 1, 2, 3]\nresumed True True\n"
    );
}
