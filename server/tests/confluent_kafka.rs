//! confluent-kafka (Python over librdkafka) against the `eddy` binary: consumer-group
//! rebalancing on join and leave, and committed offsets that a new member resumes from.
//! `.ci/deps` installs confluent-kafka when it is missing.

use std::process::Command;

mod common;

#[test]
fn a_group_of_two_splits_four_partitions_rebalances_and_resumes() {
    let python = common::tools::python();
    let server = common::start();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/confluent_group.py"
    );
    let out = Command::new(python)
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
