//! Nexmark's queries give DataFusion's answer over the same events: the correctness half of
//! `eddy-bench nexmark`, on a small event count.

use eddy_tests::bench::nexmark::{Events, Format, QUERIES, run};

fn every_query_gives_the_batch_answer(format: Format) {
    let few = Events::generate(20_000);
    let mut more = None;
    for query in QUERIES {
        // q7's ten-second windows need more events to close one.
        let events = if query.min_events <= 20_000 {
            &few
        } else {
            more.get_or_insert_with(|| Events::generate(query.min_events))
        };
        let result = run(query, events, format)
            .unwrap_or_else(|e| panic!("{} over {format:?}: {e:#}", query.name));
        assert!(result.rows > 0, "{} wrote nothing", query.name);
    }
}

#[test]
fn every_nexmark_query_gives_the_batch_answer_over_json() {
    every_query_gives_the_batch_answer(Format::Json);
}

#[test]
fn every_nexmark_query_gives_the_batch_answer_over_avro() {
    every_query_gives_the_batch_answer(Format::Avro);
}

/// `eddy-bench nexmark --load`: the events reach Eddy's Kafka listener as a producer sends
/// them: each kind in its topic, persons and auctions keyed by id, every record at its event's
/// time; loading again appends to the topics it created the first time.
#[tokio::test]
async fn load_produces_the_events_through_the_kafka_listener() {
    use eddy_storage::{Store, StoreOptions};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(eddy_server::kafka::serve(
        listener,
        store.clone(),
        eddy_server::kafka::KafkaConfig::new(address),
    ));
    // 40,000 events hold 2,400 auctions, over a MiB of them: more than one batch may carry
    // under a topic's default `max.message.bytes`.
    let events = Events::generate(40_000);
    let bootstrap = address.to_string();
    let produced = eddy_tests::bench::nexmark_load::load(&events, &bootstrap)
        .await
        .unwrap();
    assert_eq!(produced, 40_000);
    for (_, topic, lines) in events.kinds() {
        assert_eq!(store.partition_count(topic).unwrap(), 1);
        let fetched = store.read_records(topic, 0, 0, usize::MAX).unwrap();
        assert_eq!(fetched.records.len(), lines.len(), "{topic}");
        for (record, line) in fetched.records.iter().zip(lines) {
            let event: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(record.record.value.as_deref(), Some(line.as_bytes()));
            assert_eq!(Some(record.record.timestamp), event["date_time"].as_i64());
            let key = record.record.key.as_deref();
            match topic {
                "nexmark-bid" => assert_eq!(key, None),
                _ => {
                    let id = event["id"].as_i64().unwrap().to_be_bytes();
                    assert_eq!(key, Some(&id[..]));
                }
            }
        }
    }
    eddy_tests::bench::nexmark_load::load(&events, &bootstrap)
        .await
        .unwrap();
    assert_eq!(
        store.end_offset("nexmark-bid", 0).unwrap() as usize,
        2 * events.kinds()[2].2.len()
    );
    server.abort();
}
