//! What a follower of the replicated log answers on a Kafka listener, as a Kafka broker that
//! leads no partition does: ApiVersions; Metadata, from the topics its store applied, naming
//! every node as a broker and the leader as every partition's leader; FindCoordinator, naming
//! the leader; and `NOT_LEADER_OR_FOLLOWER` to Produce, Fetch and ListOffsets, so a client
//! refreshes its metadata and goes to the leader. Any other request closes the connection.
//!
//! On a SASL listener a client authenticates first, against the users this node applied (read
//! again as the leader changes them); where ACLs are enforced, Metadata leaves out the topics
//! the client may not describe and FindCoordinator refuses what it may not describe, as the
//! leader does. Produce, Fetch and ListOffsets name the leader, which checks them.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use eddy_security::acl::Operation;
use eddy_security::{Access, Principal, SecurityProtocol};
use eddy_storage::ReplicaStatus;
use kafka_protocol::messages::fetch_response::{
    FetchableTopicResponse, LeaderIdAndEpoch, PartitionData,
};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, BrokerId, FetchRequest, FetchResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest,
    MetadataResponse, ProduceRequest,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use super::authorize::Caller;
use super::sasl::{self, SaslSession};
use super::{MAX_FRAME, api_versions, code, encode_response, read_frame, request_header};
use super::{certified_principal, topic_name, write_frame};
use crate::addresses::{self, KafkaAddress};

/// One follower listener: its protocol, how clients reach it, and its TLS.
#[derive(Clone)]
pub struct FollowerListener {
    /// The listener's security protocol.
    pub security: SecurityProtocol,
    /// The users and ACLs as this node applied them, kept current by the caller: SASL
    /// authenticates against them, and ACLs are checked with them where enforced. Needed on a
    /// SASL listener.
    pub access: Option<Access>,
    /// The SASL mechanisms offered on a SASL listener.
    pub sasl_mechanisms: Vec<String>,
    /// How clients reach this node on the listener.
    pub advertised: (String, u16),
    /// The TLS acceptor of an SSL listener.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// How long a connection may stay without a request.
    pub idle: Duration,
    /// The connections served at once; more are closed at once, as the leader's listener does.
    pub connections: crate::connections::ConnectionLimit,
}

/// Answers Kafka clients on `listener` as a follower of `status`'s group, until dropped; its
/// connections close with it, so no client stays on a node that since became the leader
/// (and would answer it as the leader on a new connection).
pub async fn serve(listener: TcpListener, status: ReplicaStatus, config: FollowerListener) {
    let (_serving, stopped) = tokio::sync::watch::channel(());
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "kafka listener accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(admitted) = config.connections.admit() else {
            drop(socket);
            continue;
        };
        let (status, config) = (status.clone(), config.clone());
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let _admitted = admitted;
            tokio::select! {
                served = accept(socket, peer, &status, &config) => if let Err(e) = served {
                    debug!(%peer, error = %e, "a follower's kafka connection closed");
                },
                _ = stopped.changed() => {}
            }
        });
    }
}

async fn accept(
    socket: TcpStream,
    peer: SocketAddr,
    status: &ReplicaStatus,
    config: &FollowerListener,
) -> anyhow::Result<()> {
    socket.set_nodelay(true)?;
    let host = peer.ip().to_string();
    match &config.tls {
        Some(acceptor) => {
            let stream = eddy_security::tls::accept(acceptor, socket).await?;
            let principal = certified_principal(config.security, &stream);
            connection(stream, (&host, principal), status, config).await
        }
        None => connection(socket, (&host, Principal::Anonymous), status, config).await,
    }
}

async fn connection<S>(
    mut socket: S,
    (host, mut principal): (&str, Principal),
    status: &ReplicaStatus,
    config: &FollowerListener,
) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut sasl = match (&config.access, config.security.uses_sasl()) {
        (Some(access), true) => Some(SaslSession::new(
            access.clone(),
            config.sasl_mechanisms.clone(),
        )),
        (None, true) => anyhow::bail!("a SASL listener without the users"),
        (_, false) => None,
    };
    loop {
        let limit = if sasl.is_some() {
            sasl::MAX_UNAUTHENTICATED_FRAME
        } else {
            MAX_FRAME
        };
        let Ok(frame) = tokio::time::timeout(config.idle, read_frame(&mut socket, limit)).await
        else {
            return Ok(());
        };
        let Some(frame) = frame? else {
            return Ok(());
        };
        let frame = match sasl::exchange(&mut socket, &mut sasl, &mut principal, frame).await? {
            sasl::Next::Serve(frame) => frame,
            sasl::Next::Read => continue,
            sasl::Next::Close => return Ok(()),
        };
        let caller = Caller {
            principal: &principal,
            host,
            access: config.access.as_ref(),
        };
        if let Some(response) = answer(frame, status, config, caller)? {
            write_frame(&mut socket, &response).await?;
        }
    }
}

/// Where the leader (or node `id`) serves this listener's protocol, if this node heard.
fn listener_of(status: &ReplicaStatus, id: u64, protocol: &str) -> Option<KafkaAddress> {
    addresses::directory(status)
        .remove(&id)?
        .kafka_listener(protocol)
        .cloned()
}

fn broker(id: u64) -> BrokerId {
    BrokerId(i32::try_from(id).unwrap_or(i32::MAX))
}

/// Answers one request; `None` for a Produce with `acks=0`. An error closes the connection.
fn answer(
    mut frame: Bytes,
    status: &ReplicaStatus,
    config: &FollowerListener,
    caller: Caller<'_>,
) -> anyhow::Result<Option<BytesMut>> {
    let (key, version, header) = match request_header(&mut frame)? {
        Ok(parsed) => parsed,
        Err(refusal) => return Ok(Some(refusal)),
    };
    let id = header.correlation_id;
    let leadership = status.leadership();
    let epoch = i32::try_from(leadership.term).unwrap_or(i32::MAX);
    let leader = leadership.leader.map_or(BrokerId(-1), broker);
    let response = match key {
        ApiKey::ApiVersions => {
            ApiVersionsRequest::decode(&mut frame, version)?;
            encode_response(id, key, version, &api_versions(code::NONE))?
        }
        ApiKey::Metadata => {
            let request = MetadataRequest::decode(&mut frame, version)?;
            let response = metadata(status, config, &request, version, caller);
            encode_response(id, key, version, &response)?
        }
        ApiKey::FindCoordinator => {
            let request = FindCoordinatorRequest::decode(&mut frame, version)?;
            let found = leadership
                .leader
                .and_then(|l| Some((l, listener_of(status, l, config.security.name())?)));
            let refusal = caller.coordinator_refusal(request.key_type, &request.key);
            let response = match (refusal, found) {
                (None, Some((l, at))) => FindCoordinatorResponse::default()
                    .with_node_id(broker(l))
                    .with_host(StrBytes::from_string(at.host))
                    .with_port(i32::from(at.port)),
                (refusal, _) => FindCoordinatorResponse::default()
                    .with_error_code(refusal.unwrap_or(code::COORDINATOR_NOT_AVAILABLE))
                    .with_node_id(BrokerId(-1))
                    .with_port(-1),
            };
            encode_response(id, key, version, &response)?
        }
        ApiKey::Produce => {
            let request = ProduceRequest::decode(&mut frame, version)?;
            if request.acks == 0 {
                return Ok(None);
            }
            let response = super::produce::refuse_all(&request, code::NOT_LEADER_OR_FOLLOWER);
            encode_response(id, key, version, &response)?
        }
        ApiKey::Fetch => {
            let request = FetchRequest::decode(&mut frame, version)?;
            let responses = request
                .topics
                .iter()
                .map(|t| {
                    FetchableTopicResponse::default()
                        .with_topic(t.topic.clone())
                        .with_topic_id(t.topic_id)
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    PartitionData::default()
                                        .with_partition_index(p.partition)
                                        .with_error_code(code::NOT_LEADER_OR_FOLLOWER)
                                        .with_high_watermark(-1)
                                        .with_last_stable_offset(-1)
                                        .with_log_start_offset(-1)
                                        .with_current_leader(
                                            LeaderIdAndEpoch::default()
                                                .with_leader_id(leader)
                                                .with_leader_epoch(epoch),
                                        )
                                })
                                .collect(),
                        )
                })
                .collect();
            let response = FetchResponse::default().with_responses(responses);
            encode_response(id, key, version, &response)?
        }
        ApiKey::ListOffsets => {
            let request = ListOffsetsRequest::decode(&mut frame, version)?;
            let topics = request
                .topics
                .iter()
                .map(|t| {
                    ListOffsetsTopicResponse::default()
                        .with_name(t.name.clone())
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    ListOffsetsPartitionResponse::default()
                                        .with_partition_index(p.partition_index)
                                        .with_error_code(code::NOT_LEADER_OR_FOLLOWER)
                                        .with_timestamp(-1)
                                        .with_offset(-1)
                                })
                                .collect(),
                        )
                })
                .collect();
            let response = ListOffsetsResponse::default().with_topics(topics);
            encode_response(id, key, version, &response)?
        }
        other => anyhow::bail!("{other:?} goes to the leader; this node follows"),
    };
    Ok(Some(response))
}

/// Metadata as a follower knows it: the topics its store applied (those the caller may
/// describe), every node it heard of as a broker (itself first), the leader leading every
/// partition, and the ISR the leader last told it.
fn metadata(
    status: &ReplicaStatus,
    config: &FollowerListener,
    request: &MetadataRequest,
    version: i16,
    caller: Caller<'_>,
) -> MetadataResponse {
    let leadership = status.leadership();
    let leader = leadership.leader.map_or(BrokerId(-1), broker);
    let epoch = i32::try_from(leadership.term).unwrap_or(i32::MAX);
    let replicas: Vec<BrokerId> = status.voters().into_iter().map(broker).collect();
    let in_sync: Vec<BrokerId> = status.in_sync().into_iter().map(broker).collect();
    let stored = status.topics().unwrap_or_else(|e| {
        warn!(error = %e, "cannot read this follower's topics");
        Vec::new()
    });
    let wanted: Vec<String> = match &request.topics {
        Some(topics) if !(version == 0 && topics.is_empty()) => topics
            .iter()
            .filter_map(|t| t.name.as_ref().map(|n| n.to_string()))
            .collect(),
        _ => stored
            .iter()
            .map(|(name, _)| name.clone())
            .filter(|name| caller.sees_topic(name))
            .collect(),
    };
    let topics = wanted
        .into_iter()
        .map(|name| {
            if !caller.may_topic(Operation::Describe, &name) {
                return MetadataResponseTopic::default()
                    .with_name(Some(topic_name(&name)))
                    .with_error_code(code::TOPIC_AUTHORIZATION_FAILED);
            }
            let partitions = stored.iter().find(|(n, _)| *n == name).map(|(_, p)| *p);
            let topic = MetadataResponseTopic::default().with_name(Some(topic_name(&name)));
            let Some(partitions) = partitions else {
                return topic.with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION);
            };
            topic
                .with_is_internal(version >= 1 && eddy_storage::is_internal_topic(&name))
                .with_partitions(
                    (0..i32::try_from(partitions).unwrap_or(i32::MAX))
                        .map(|p| {
                            MetadataResponsePartition::default()
                                .with_partition_index(p)
                                .with_error_code(if leader.0 < 0 {
                                    code::LEADER_NOT_AVAILABLE
                                } else {
                                    code::NONE
                                })
                                .with_leader_id(leader)
                                .with_leader_epoch(if version >= 7 { epoch } else { -1 })
                                .with_replica_nodes(replicas.clone())
                                .with_isr_nodes(in_sync.clone())
                        })
                        .collect(),
                )
        })
        .collect();
    let mut brokers = vec![
        MetadataResponseBroker::default()
            .with_node_id(broker(status.id()))
            .with_host(StrBytes::from_string(config.advertised.0.clone()))
            .with_port(i32::from(config.advertised.1)),
    ];
    for (id, node) in addresses::directory(status) {
        if id == status.id() {
            continue;
        }
        if let Some(at) = node.kafka_listener(config.security.name()) {
            brokers.push(
                MetadataResponseBroker::default()
                    .with_node_id(broker(id))
                    .with_host(StrBytes::from_string(at.host.clone()))
                    .with_port(i32::from(at.port)),
            );
        }
    }
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id((version >= 2).then(|| StrBytes::from_static_str("eddy")))
        .with_controller_id(if version >= 1 { leader } else { BrokerId(-1) })
        .with_topics(topics)
}

/// Binds `bind` as soon as it is free (this node's leader listener may still be closing) and
/// answers as a follower there until dropped.
pub async fn follow(bind: SocketAddr, status: ReplicaStatus, config: FollowerListener) {
    let listener = crate::listeners::bind_when_free(bind, "Kafka clients as a follower").await;
    serve(listener, status, config).await;
}
