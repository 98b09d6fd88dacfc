//! What every client of the cluster shares: its configuration and where librdkafka's logs go.

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use tracing::{debug, error, info, warn};

use super::ClusterOptions;

/// Sends librdkafka's logs and errors to `tracing`, under the target `librdkafka`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Logs;

impl ClientContext for Logs {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => error!(target: "librdkafka", facility, "{message}"),
            RDKafkaLogLevel::Warning => warn!(target: "librdkafka", facility, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                info!(target: "librdkafka", facility, "{message}")
            }
            RDKafkaLogLevel::Debug => debug!(target: "librdkafka", facility, "{message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Broker connections come and go; librdkafka reconnects by itself, so these are
        // warnings, and the operation that fails because of one reports its own error.
        warn!(target: "librdkafka", %error, "{reason}");
    }
}

impl ConsumerContext for Logs {}

/// Implements librdkafka's `ClientContext` for a context of our own by sending its logs and
/// errors where [`Logs`] sends them.
macro_rules! logs_through_tracing {
    ($context:ty) => {
        impl rdkafka::client::ClientContext for $context {
            fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
                rdkafka::client::ClientContext::log(
                    &$crate::cluster::client::Logs,
                    level,
                    facility,
                    message,
                );
            }

            fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
                rdkafka::client::ClientContext::error(
                    &$crate::cluster::client::Logs,
                    error,
                    reason,
                );
            }
        }
    };
}
pub(crate) use logs_through_tracing;

impl rdkafka::producer::ProducerContext for Logs {
    type DeliveryOpaque = ();

    // Producers built on this context send what a later record replaces (a node's status),
    // so a failed delivery needs no answer beyond librdkafka's own log.
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: ()) {}
}

/// The configuration of one client: the user's properties, then the settings its `role`
/// cannot work without (a reader's isolation level, a producer's idempotence), which win.
pub(crate) fn config(options: &ClusterOptions, role: &str, own: &[(&str, &str)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &options.bootstrap_servers);
    config.set("client.id", format!("{}-{role}", options.client_id));
    config.set(
        "socket.timeout.ms",
        options.timeout.as_millis().max(10).to_string(),
    );
    for (key, value) in &options.properties {
        config.set(key, value);
    }
    for (key, value) in own {
        config.set(*key, *value);
    }
    config.set_log_level(RDKafkaLogLevel::Warning);
    config
}
