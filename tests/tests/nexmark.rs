//! Nexmark's queries give DataFusion's answer over the same events: the correctness half of
//! `eddy-bench nexmark`, on a small event count.

use eddy_tests::bench::nexmark::{Events, Format, QUERIES, run};

fn every_query_gives_the_batch_answer(format: Format) {
    let events = Events::generate(20_000);
    for query in QUERIES {
        let result = run(query, &events, format)
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
