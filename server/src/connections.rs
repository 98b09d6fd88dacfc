//! How many connections a listener holds open. Each one costs a file descriptor, which the
//! store needs too: a listener over its limit closes new connections at once instead of letting
//! clients take the descriptors RocksDB writes with.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The limit of one listener, and the metrics that show it.
#[derive(Clone)]
pub struct ConnectionLimit {
    listener: &'static str,
    max: usize,
    open: Arc<Semaphore>,
    gauge: Option<prometheus::IntGauge>,
    refused: Option<prometheus::IntCounter>,
}

impl std::fmt::Debug for ConnectionLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionLimit")
            .field("listener", &self.listener)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

/// One admitted connection; dropping it frees its place.
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
    gauge: Option<prometheus::IntGauge>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(gauge) = &self.gauge {
            gauge.dec();
        }
    }
}

impl ConnectionLimit {
    /// At most `max` connections at once on the listener named `listener` (`http`, `kafka`).
    pub fn new(listener: &'static str, max: usize) -> Self {
        ConnectionLimit {
            listener,
            max: max.max(1),
            open: Arc::new(Semaphore::new(max.max(1))),
            gauge: None,
            refused: None,
        }
    }

    /// Counts open connections in `gauge` and refused ones in `refused`.
    pub fn with_metrics(
        mut self,
        gauge: prometheus::IntGauge,
        refused: prometheus::IntCounter,
    ) -> Self {
        self.gauge = Some(gauge);
        self.refused = Some(refused);
        self
    }

    /// A place for a new connection, or `None` when the listener is full (the refusal is
    /// logged and counted).
    pub fn admit(&self) -> Option<Admitted> {
        match self.open.clone().try_acquire_owned() {
            Ok(permit) => {
                if let Some(gauge) = &self.gauge {
                    gauge.inc();
                }
                Some(Admitted {
                    _permit: permit,
                    gauge: self.gauge.clone(),
                })
            }
            Err(_) => {
                if let Some(refused) = &self.refused {
                    refused.inc();
                }
                tracing::warn!(
                    listener = self.listener,
                    max = self.max,
                    "refused a connection: the listener has as many open as --max-connections allows"
                );
                None
            }
        }
    }
}

/// The connection limit each listener gets unless told otherwise: a quarter of the file
/// descriptors left after 1,024 for the store, between 64 and 10,000.
pub fn default_max_connections(file_descriptors: u64) -> usize {
    (file_descriptors.saturating_sub(1024) / 4).clamp(64, 10_000) as usize
}

/// Raises this process's soft limit on open files to its hard limit, as servers that hold many
/// sockets do, and returns the limit now in force (`None` is unlimited).
#[cfg(unix)]
pub fn raise_file_descriptor_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let raised = Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    let current = if limit.current != limit.maximum && setrlimit(Resource::Nofile, raised).is_ok() {
        limit.maximum
    } else {
        limit.current
    };
    current.unwrap_or(u64::MAX)
}

/// Elsewhere than Unix, assumes 1,024 open files.
#[cfg(not(unix))]
pub fn raise_file_descriptor_limit() -> u64 {
    1024
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_listener_admits_again_once_a_connection_closes() {
        let limit = ConnectionLimit::new("test", 2);
        let first = limit.admit().unwrap();
        let _second = limit.admit().unwrap();
        assert!(limit.admit().is_none());
        drop(first);
        assert!(limit.admit().is_some());
    }

    #[test]
    fn the_default_leaves_most_descriptors_to_the_store() {
        assert_eq!(default_max_connections(1024), 64);
        assert_eq!(default_max_connections(20_000), 4744);
        assert_eq!(default_max_connections(1 << 20), 10_000);
    }
}
