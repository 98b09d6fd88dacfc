//! Producer ids for InitProducerId. The sequence checks that make a producer idempotent live
//! with the log (`eddy_storage`'s producer state), written with each batch, so they survive a
//! restart.

use std::sync::atomic::{AtomicI64, Ordering};

/// Hands out producer ids.
#[derive(Debug)]
pub struct ProducerRegistry {
    next_id: AtomicI64,
}

impl ProducerRegistry {
    /// Ids start at the wall-clock time in ms, so they do not repeat across restarts.
    pub fn new() -> Self {
        ProducerRegistry {
            next_id: AtomicI64::new(eddy_storage::now_ms().max(1)),
        }
    }

    /// A new producer id, with epoch 0.
    pub fn allocate(&self) -> i64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_not_reused() {
        let registry = ProducerRegistry::new();
        let first = registry.allocate();
        assert_ne!(registry.allocate(), first);
        assert!(ProducerRegistry::new().allocate() >= first);
    }
}
