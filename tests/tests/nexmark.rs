//! Nexmark's queries give DataFusion's answer over the same events: the correctness half of
//! `eddy-bench nexmark`, on a small event count.

use eddy_tests::bench::nexmark::{Events, QUERIES, run};

#[test]
fn every_nexmark_query_gives_the_batch_answer() {
    let events = Events::generate(20_000);
    for query in QUERIES {
        let result = run(query, &events).unwrap_or_else(|e| panic!("{}: {e:#}", query.name));
        assert!(result.rows > 0, "{} wrote nothing", query.name);
    }
}
