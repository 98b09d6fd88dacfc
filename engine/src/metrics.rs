//! The metrics the engine's tasks record as they run; the server registers them for `/metrics`.
//! Counters the engine already keeps for `DESCRIBE` (records in, failed) are read at scrape
//! time instead of being counted twice.

use prometheus::core::Collector;
use prometheus::{HistogramOpts, HistogramVec};

/// Metrics recorded by running queries.
#[derive(Debug, Clone)]
pub struct EngineMetrics {
    /// End-to-end latency per persistent query: commit time minus record timestamp.
    pub e2e_latency: HistogramVec,
}

impl Default for EngineMetrics {
    fn default() -> Self {
        let opts = HistogramOpts::new(
            "eddy_query_e2e_latency_seconds",
            "Wall-clock time at which a persistent query committed a record's results, minus the record's timestamp",
        )
        .buckets(vec![
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            300.0, 3600.0,
        ]);
        EngineMetrics {
            // The name and buckets are constants, so this cannot fail.
            e2e_latency: HistogramVec::new(opts, &["query"])
                .unwrap_or_else(|e| unreachable!("constant histogram options: {e}")),
        }
    }
}

impl EngineMetrics {
    /// Every collector, for the server's registry.
    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![Box::new(self.e2e_latency.clone())]
    }

    /// Forgets a query's series once it has stopped.
    pub(crate) fn forget_query(&self, query_id: &str) {
        let _ = self.e2e_latency.remove_label_values(&[query_id]);
    }
}
