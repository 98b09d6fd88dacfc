//! What Kafka clients are told of a replicated log's nodes: this node's broker id, each
//! partition's leader, leader epoch, replicas and in-sync replicas, and when `acks=all` cannot
//! be honoured. On one node (or a Kafka cluster's log), the single broker 0 holds everything.

use kafka_protocol::messages::metadata_response::MetadataResponseBroker;
use kafka_protocol::messages::produce_response::TopicProduceResponse;
use kafka_protocol::messages::{BrokerId, ProduceRequest};
use kafka_protocol::protocol::StrBytes;

use super::{KafkaConfig, NODE_ID, code};
use eddy_storage::Store;

/// How a partition is placed, as Metadata reports it.
pub(super) struct Placement {
    /// This node's broker id, which leads every partition while it serves clients.
    pub broker: BrokerId,
    /// The leader epoch: the replicated log's term, or 0 on one node.
    pub leader_epoch: i32,
    /// Every node holding the partitions.
    pub replicas: Vec<BrokerId>,
    /// The nodes in sync with the leader.
    pub in_sync: Vec<BrokerId>,
}

fn broker(id: u64) -> BrokerId {
    BrokerId(i32::try_from(id).unwrap_or(i32::MAX))
}

/// Where the partitions are, as this node serves them.
pub(super) fn placement(store: &Store) -> Placement {
    let Some(status) = store.replica_status() else {
        return Placement {
            broker: BrokerId(NODE_ID),
            leader_epoch: 0,
            replicas: vec![BrokerId(NODE_ID)],
            in_sync: vec![BrokerId(NODE_ID)],
        };
    };
    Placement {
        broker: broker(status.id()),
        leader_epoch: i32::try_from(status.leadership().term).unwrap_or(i32::MAX),
        replicas: status.voters().into_iter().map(broker).collect(),
        in_sync: status.in_sync().into_iter().map(broker).collect(),
    }
}

/// The brokers Metadata lists: this node as its listener advertises itself, then every other
/// node of a replicated log whose listener of the same protocol it heard of, so a client knows
/// every node and finds the next leader when this one goes.
pub(super) fn brokers(store: &Store, config: &KafkaConfig) -> Vec<MetadataResponseBroker> {
    let me = |id: BrokerId| {
        MetadataResponseBroker::default()
            .with_node_id(id)
            .with_host(StrBytes::from_string(config.advertised.0.clone()))
            .with_port(i32::from(config.advertised.1))
    };
    let Some(status) = store.replica_status() else {
        return vec![me(BrokerId(NODE_ID))];
    };
    let protocol = config.security.protocol.name();
    let mut brokers = vec![me(broker(status.id()))];
    let voters = status.voters();
    for (id, addresses) in crate::addresses::directory(status) {
        if id == status.id() || !voters.contains(&id) {
            continue;
        }
        if let Some(listener) = addresses.kafka_listener(protocol) {
            brokers.push(
                MetadataResponseBroker::default()
                    .with_node_id(broker(id))
                    .with_host(StrBytes::from_string(listener.host.clone()))
                    .with_port(i32::from(listener.port)),
            );
        }
    }
    brokers
}

/// Takes out of an `acks=all` produce on a replicated log the topics that fewer nodes are in
/// sync for than a write needs (a majority, which Raft commits on, or the topic's
/// `min.insync.replicas` if higher), and answers them with `NOT_ENOUGH_REPLICAS`, as Kafka
/// refuses a partition whose ISR is smaller than `min.insync.replicas`.
pub(super) fn refuse_acks_all(
    store: &Store,
    request: &mut ProduceRequest,
) -> Vec<TopicProduceResponse> {
    let Some(status) = store.replica_status() else {
        return Vec::new();
    };
    if request.acks != -1 {
        return Vec::new();
    }
    let majority = status.voters().len() / 2 + 1;
    let in_sync = status.in_sync().len();
    let (refused, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut request.topic_data)
        .into_iter()
        .partition(|topic| {
            let required = store
                .topic_config(topic.name.as_str())
                .ok()
                .and_then(|config| config.min_insync_replicas())
                .map_or(majority, |min| min.max(majority));
            in_sync < required
        });
    request.topic_data = kept;
    refused
        .iter()
        .map(|topic| super::produce::refused(topic, code::NOT_ENOUGH_REPLICAS))
        .collect()
}
