//! A real Kafka client against the `eddy` binary: kcat (librdkafka) produces, lists metadata,
//! looks up offsets and consumes. `.ci/deps` installs kcat when it is missing.

mod common;

use common::kcat;

#[test]
fn kcat_produces_lists_and_consumes() {
    let server = common::start();
    let b = server.kafka.as_str();
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

    // A second batch appends after the first; an idempotent producer (InitProducerId, sequence
    // checks) appends too.
    kcat(&["-b", b, "-t", "events", "-P"], Some("more\n"));
    kcat(
        &[
            "-b",
            b,
            "-t",
            "events",
            "-P",
            "-X",
            "enable.idempotence=true",
        ],
        Some("x\ny\n"),
    );
    let all = kcat(&["-b", b, "-t", "events", "-C", "-e", "-f", "%o=%s "], None);
    assert_eq!(all, "0=hello 1=world 2=again 3=more 4=x 5=y ");
}

#[test]
fn kcat_consumer_groups_commit_and_resume() {
    let server = common::start();
    let b = server.kafka.as_str();
    kcat(&["-b", b, "-t", "grouped", "-P"], Some("a\nb\nc\n"));
    let group = [
        "-b",
        b,
        "-G",
        "readers",
        "-X",
        "auto.offset.reset=earliest",
        "grouped",
        "-e",
        "-f",
        "%s@%o\n",
    ];

    // Join the group, get the partition, consume, commit on the way out.
    let first = kcat(&group, None);
    assert_eq!(first, "a@0\nb@1\nc@2\n");

    // The next member of the group resumes from the committed offset.
    kcat(&["-b", b, "-t", "grouped", "-P"], Some("d\n"));
    let second = kcat(&group, None);
    assert_eq!(second, "d@3\n");

    // Another group starts from the beginning.
    let other = kcat(
        &[
            "-b",
            b,
            "-G",
            "others",
            "-X",
            "auto.offset.reset=earliest",
            "grouped",
            "-e",
            "-f",
            "%s ",
        ],
        None,
    );
    assert_eq!(other, "a b c d ");
}

#[test]
fn kcat_records_go_through_a_persistent_query_and_back_to_kcat() {
    let server = common::start();
    let b = server.kafka.as_str();
    let (status, body) = common::ksql(
        &server,
        "CREATE STREAM clicks (user STRING KEY, page STRING, ms INT)
           WITH (kafka_topic='clicks', value_format='JSON', partitions=1);
         CREATE STREAM slow_clicks WITH (kafka_topic='slow_clicks') AS
           SELECT user, UCASE(page) AS page FROM clicks WHERE ms > 100;",
    );
    assert_eq!(status, 200, "{body}");
    // Keyed records from kcat (-K: key and value split at the first ':').
    kcat(
        &["-b", b, "-t", "clicks", "-P", "-K", "|"],
        Some(
            "ann|{\"page\":\"home\",\"ms\":50}\nbob|{\"page\":\"cart\",\"ms\":250}\ncy|{\"page\":\"pay\",\"ms\":120}\n",
        ),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let out = kcat(
            &["-b", b, "-t", "slow_clicks", "-C", "-e", "-f", "%k=%s\n"],
            None,
        );
        if out == "bob={\"PAGE\":\"CART\"}\ncy={\"PAGE\":\"PAY\"}\n" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the query's output never arrived: {out:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
