//! Where a node of the replicated log serves its clients: its REST API and each Kafka listener.
//! Every node tells the others on the replication transport (the replica's directory), so the
//! leader's Metadata names every node as a broker and a follower can say where the leader is.

use std::collections::BTreeMap;

use eddy_storage::{NodeId, ReplicaStatus};
use serde::{Deserialize, Serialize};

/// One node's client addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddresses {
    /// The REST API's URL, as clients reach it.
    pub http: Option<String>,
    /// Each Kafka listener, as clients reach it.
    pub kafka: Vec<KafkaAddress>,
}

/// A Kafka listener's advertised address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaAddress {
    /// Its security protocol, as Kafka names it (`PLAINTEXT`, `SASL_SSL`, …).
    pub protocol: String,
    /// The host clients connect to.
    pub host: String,
    /// The port clients connect to.
    pub port: u16,
}

impl NodeAddresses {
    /// Tells the other nodes where this node serves clients.
    pub fn advertise(&self, status: &ReplicaStatus) {
        match serde_json::to_string(self) {
            Ok(text) => status.advertise(text),
            Err(e) => tracing::warn!(error = %e, "cannot encode this node's addresses"),
        }
    }

    /// The Kafka listener of `protocol`, if the node has one.
    pub fn kafka_listener(&self, protocol: &str) -> Option<&KafkaAddress> {
        self.kafka.iter().find(|k| k.protocol == protocol)
    }
}

/// Every node's addresses as `status` last heard them; an entry that is not one is left out.
pub fn directory(status: &ReplicaStatus) -> BTreeMap<NodeId, NodeAddresses> {
    status
        .directory()
        .into_iter()
        .filter_map(|(id, text)| Some((id, serde_json::from_str(&text).ok()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_and_find_a_listener_by_protocol() {
        let node = NodeAddresses {
            http: Some("http://10.0.0.2:8088".into()),
            kafka: vec![
                KafkaAddress {
                    protocol: "PLAINTEXT".into(),
                    host: "10.0.0.2".into(),
                    port: 9092,
                },
                KafkaAddress {
                    protocol: "SASL_SSL".into(),
                    host: "kafka-2.example".into(),
                    port: 9093,
                },
            ],
        };
        let text = serde_json::to_string(&node).expect("encodes");
        let back: NodeAddresses = serde_json::from_str(&text).expect("decodes");
        assert_eq!(back, node);
        assert_eq!(back.kafka_listener("SASL_SSL").map(|k| k.port), Some(9093));
        assert_eq!(back.kafka_listener("SSL"), None);
    }
}
