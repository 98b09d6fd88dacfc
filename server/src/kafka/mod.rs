//! Kafka's wire protocol on Eddy's log: producing, consuming by assignment or in consumer groups
//! (ApiVersions, Metadata, Produce, Fetch, ListOffsets, FindCoordinator, JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch).
//!
//! Frames are decoded and encoded with the `kafka-protocol` crate. Each connection handles its
//! requests one after another, so responses go out in request order. A connection that sends
//! no request for `connections.max.idle.ms` is closed, as Kafka closes it.

mod acls;
mod admin;
mod authorize;
mod fetch;
pub mod following;
mod groups;
mod produce;
mod producers;
mod replicas;
mod sasl;
mod transactions;
mod users;

pub use fetch::DEFAULT_FETCH_MAX_BYTES;
pub use groups::GroupLimits;
pub use transactions::{TransactionCoordinator, TransactionLimits, TransactionSummary};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use eddy_security::acl::Operation;
use eddy_security::{Access, Principal, SecurityProtocol};
use eddy_storage::{StorageError, Store, TopicConfig};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, DescribeUserScramCredentialsRequest, SaslAuthenticateRequest,
    SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, FetchRequest, ListOffsetsRequest,
    ListOffsetsResponse, MetadataRequest, MetadataResponse, ProduceRequest, RequestHeader,
    ResponseHeader, TopicName,
};
use kafka_protocol::messages::{CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest};
use kafka_protocol::messages::{
    CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest, DescribeGroupsRequest,
    FindCoordinatorRequest, FindCoordinatorResponse, HeartbeatRequest, InitProducerIdResponse,
    JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest, OffsetCommitRequest,
    OffsetFetchRequest, ProducerId, SyncGroupRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::connections::ConnectionLimit;
use tracing::{debug, info, warn};

mod code;

/// The node id Eddy gives itself.
const NODE_ID: i32 = 0;
/// The largest frame accepted from a client.
const MAX_FRAME: usize = 100 << 20;

/// The versions served, within what the crate and Kafka 4's baseline allow. Metadata stays below
/// v9 so clients do not expect OffsetForLeaderEpoch, and Fetch below v13 (topic ids).
const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 8),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::FindCoordinator, 0, 3),
    (ApiKey::JoinGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 3),
    (ApiKey::Heartbeat, 0, 3),
    (ApiKey::LeaveGroup, 0, 3),
    (ApiKey::OffsetCommit, 2, 7),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 3),
    (ApiKey::TxnOffsetCommit, 0, 3),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 1),
    (ApiKey::CreateTopics, 2, 5),
    (ApiKey::DeleteTopics, 1, 5),
    (ApiKey::ListGroups, 0, 3),
    (ApiKey::DescribeGroups, 0, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
];

/// How the Kafka listener behaves.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// The host and port clients are told to connect to.
    pub advertised: (String, u16),
    /// Whether Metadata requests create unknown topics.
    pub auto_create_topics: bool,
    /// Partitions of auto-created topics.
    pub default_partitions: u32,
    /// Counts records sent by Fetch, per topic, when the server exports metrics.
    pub fetched_records: Option<prometheus::IntCounterVec>,
    /// What clients may ask of the listener.
    pub limits: KafkaLimits,
    /// How many connections the listener holds open at once.
    pub connections: ConnectionLimit,
    /// TLS and authentication on the listener.
    pub security: ListenerSecurity,
}

/// A Kafka listener's security: its protocol, the TLS it runs and the users SASL checks.
#[derive(Clone, Default)]
pub struct ListenerSecurity {
    /// The security protocol, as Kafka names it.
    pub protocol: SecurityProtocol,
    /// The TLS acceptor, for `SSL` and `SASL_SSL`.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// The users and super users; `None` when the server keeps none (benchmarks, tests).
    pub access: Option<Access>,
    /// The SASL mechanisms offered (Kafka's `sasl.enabled.mechanisms`).
    pub sasl_mechanisms: Vec<String>,
}

impl std::fmt::Debug for ListenerSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerSecurity")
            .field("protocol", &self.protocol)
            .field("sasl_mechanisms", &self.sasl_mechanisms)
            .finish_non_exhaustive()
    }
}

impl KafkaConfig {
    /// A listener telling clients to connect to `advertised`, auto-creating one-partition topics,
    /// with Kafka's default limits.
    pub fn new(advertised: SocketAddr) -> Self {
        KafkaConfig {
            advertised: (advertised.ip().to_string(), advertised.port()),
            auto_create_topics: true,
            default_partitions: 1,
            fetched_records: None,
            limits: KafkaLimits::default(),
            connections: ConnectionLimit::new("kafka", 10_000),
            security: ListenerSecurity::default(),
        }
    }
}

/// Bounds on what Kafka clients may ask, each named after the broker setting it mirrors.
#[derive(Debug, Clone)]
pub struct KafkaLimits {
    /// The most bytes one Fetch answer carries (`fetch.max.bytes`).
    pub fetch_max_bytes: usize,
    /// How long a connection may go without a request before it is closed
    /// (`connections.max.idle.ms`).
    pub connections_max_idle: Duration,
    /// The bounds on consumer groups' members and commits.
    pub groups: GroupLimits,
    /// The bounds on transactions.
    pub transactions: TransactionLimits,
}

impl Default for KafkaLimits {
    fn default() -> Self {
        KafkaLimits {
            fetch_max_bytes: DEFAULT_FETCH_MAX_BYTES,
            connections_max_idle: Duration::from_secs(10 * 60),
            groups: GroupLimits::default(),
            transactions: TransactionLimits::default(),
        }
    }
}

/// What every Kafka listener of one server shares: the store, the group and transaction
/// coordinators and the producer ids.
#[derive(Clone)]
pub struct Broker {
    store: Store,
    coordinator: Arc<groups::GroupCoordinator>,
    producers: Arc<producers::ProducerRegistry>,
    transactions: Arc<TransactionCoordinator>,
}

impl Broker {
    /// The broker over `store`, with `limits` on consumer groups and transactions. Call it
    /// inside a Tokio runtime: the coordinators start their timers.
    pub fn new(store: Store, limits: &KafkaLimits) -> Self {
        let producers = Arc::new(producers::ProducerRegistry::new());
        Broker {
            coordinator: groups::GroupCoordinator::start(store.clone(), limits.groups),
            transactions: TransactionCoordinator::start(
                store.clone(),
                producers.clone(),
                limits.transactions.clone(),
            ),
            store,
            producers,
        }
    }

    /// The transaction coordinator, for `SHOW TRANSACTIONS` and `/metrics`.
    pub fn transactions(&self) -> &Arc<TransactionCoordinator> {
        &self.transactions
    }

    /// Accepts Kafka clients on `listener` until the task is dropped; its connections close
    /// with it, so that on a replicated log no client stays on a node that no longer leads
    /// (its closed store would answer it, and its Metadata name itself, for ever).
    pub async fn serve(self, listener: TcpListener, config: KafkaConfig) {
        let (_serving, stopped) = tokio::sync::watch::channel(());
        loop {
            let (socket, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, most likely: wait for some to close.
                    warn!(error = %e, "kafka listener accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Some(admitted) = config.connections.admit() else {
                drop(socket);
                continue;
            };
            let broker = self.clone();
            let config = config.clone();
            let mut stopped = stopped.clone();
            tokio::spawn(async move {
                tokio::select! {
                    served = broker.accept(socket, peer, config) => if let Err(e) = served {
                        debug!(%peer, error = %e, "kafka connection closed");
                    },
                    _ = stopped.changed() => {}
                }
                drop(admitted);
            });
        }
    }

    async fn accept(
        self,
        socket: TcpStream,
        peer: SocketAddr,
        config: KafkaConfig,
    ) -> anyhow::Result<()> {
        socket.set_nodelay(true)?;
        let host = peer.ip().to_string();
        match &config.security.tls {
            Some(acceptor) => {
                let stream = eddy_security::tls::accept(acceptor, socket).await?;
                let principal = certified_principal(config.security.protocol, &stream);
                self.connection(stream, (&host, principal), config).await
            }
            None => {
                self.connection(socket, (&host, Principal::Anonymous), config)
                    .await
            }
        }
    }

    async fn connection<S>(
        self,
        mut socket: S,
        (host, mut principal): (&str, Principal),
        config: KafkaConfig,
    ) -> anyhow::Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let idle = config.limits.connections_max_idle;
        let mut sasl = match (
            &config.security.access,
            config.security.protocol.uses_sasl(),
        ) {
            (Some(access), true) => Some(sasl::SaslSession::new(
                access.clone(),
                config.security.sasl_mechanisms.clone(),
            )),
            (None, true) => anyhow::bail!("a SASL listener without a user store"),
            (_, false) => None,
        };
        loop {
            let limit = if sasl.is_some() {
                sasl::MAX_UNAUTHENTICATED_FRAME
            } else {
                MAX_FRAME
            };
            // The whole request must arrive within the idle time, so a client trickling a
            // frame byte by byte cannot hold the connection either.
            let Ok(frame) = tokio::time::timeout(idle, read_frame(&mut socket, limit)).await else {
                debug!(
                    idle_ms = idle.as_millis(),
                    "closing an idle kafka connection"
                );
                return Ok(());
            };
            let Some(mut frame) = frame? else {
                return Ok(());
            };
            frame = match sasl::exchange(&mut socket, &mut sasl, &mut principal, frame).await? {
                sasl::Next::Serve(frame) => frame,
                sasl::Next::Read => continue,
                sasl::Next::Close => return Ok(()),
            };
            let caller = authorize::Caller {
                principal: &principal,
                host,
                access: config.security.access.as_ref(),
            };
            if let Some(response) = self.handle_frame(frame, &config, caller).await? {
                write_frame(&mut socket, &response).await?;
            }
        }
    }
}

impl Broker {
    async fn handle_frame(
        &self,
        frame: Bytes,
        config: &KafkaConfig,
        caller: authorize::Caller<'_>,
    ) -> anyhow::Result<Option<BytesMut>> {
        handle_frame(frame, self, config, caller).await
    }
}

/// Accepts Kafka clients on one plaintext listener until the task is dropped (benchmarks and
/// tests; the server runs a [`Broker`] for all its listeners).
pub async fn serve(listener: TcpListener, store: Store, config: KafkaConfig) {
    Broker::new(store, &config.limits)
        .serve(listener, config)
        .await
}

/// The principal a TLS connection starts as: on an SSL listener, the one its client
/// certificate names, as Kafka's DEFAULT mapping does (SASL_SSL takes SASL's); otherwise
/// anonymous, until SASL says otherwise.
fn certified_principal<S>(
    protocol: SecurityProtocol,
    stream: &tokio_rustls::server::TlsStream<S>,
) -> Principal {
    let certified = (protocol == SecurityProtocol::Ssl)
        .then(|| stream.get_ref().1.peer_certificates())
        .flatten()
        .and_then(|chain| chain.first())
        .and_then(|cert| eddy_security::tls::subject_principal(cert));
    certified.map_or(Principal::Anonymous, Principal::User)
}

async fn write_frame<S: AsyncWrite + Unpin>(socket: &mut S, body: &[u8]) -> std::io::Result<()> {
    let mut out = BytesMut::with_capacity(body.len() + 4);
    out.put_i32(body.len() as i32);
    out.extend_from_slice(body);
    socket.write_all(&out).await?;
    socket.flush().await
}

/// Reads one length-prefixed request; `None` when the client closed the connection between
/// requests.
async fn read_frame<S: AsyncRead + Unpin>(
    socket: &mut S,
    limit: usize,
) -> anyhow::Result<Option<Bytes>> {
    let mut length = [0u8; 4];
    if socket.read_exact(&mut length).await.is_err() {
        return Ok(None);
    }
    let length = i32::from_be_bytes(length);
    if length < 0 || length as usize > limit {
        anyhow::bail!("refusing a frame of {length} bytes");
    }
    let mut frame = vec![0u8; length as usize];
    socket.read_exact(&mut frame).await?;
    Ok(Some(Bytes::from(frame)))
}

/// A request's API, version and header, read off `frame` (which is left at the body); an
/// unsupported ApiVersions gets its answer (KIP-511) as the `Err`, other unsupported requests
/// are an error that closes the connection.
fn request_header(
    frame: &mut Bytes,
) -> anyhow::Result<Result<(ApiKey, i16, RequestHeader), BytesMut>> {
    if frame.len() < 8 {
        anyhow::bail!(
            "a request of {} bytes is shorter than its header",
            frame.len()
        );
    }
    let api_key = frame.clone().get_i16();
    let api_version = frame.clone().slice(2..).get_i16();
    let Ok(key) = ApiKey::try_from(api_key) else {
        anyhow::bail!("unknown API key {api_key}");
    };
    let supported = SUPPORTED
        .iter()
        .find(|(k, _, _)| *k == key)
        .filter(|(_, min, max)| (*min..=*max).contains(&api_version));
    let header = RequestHeader::decode(frame, key.request_header_version(api_version))?;
    if supported.is_none() {
        if key == ApiKey::ApiVersions {
            // KIP-511: answer in v0 with the error and the table, so the client can retry.
            let response = api_versions(code::UNSUPPORTED_VERSION);
            let id = header.correlation_id;
            return Ok(Err(encode_response(id, ApiKey::ApiVersions, 0, &response)?));
        }
        anyhow::bail!("{key:?} v{api_version} is not supported");
    }
    Ok(Ok((key, api_version, header)))
}

/// Handles one request frame; `None` means no response is due (Produce with `acks=0`).
async fn handle_frame(
    mut frame: Bytes,
    broker: &Broker,
    config: &KafkaConfig,
    caller: authorize::Caller<'_>,
) -> anyhow::Result<Option<BytesMut>> {
    let (store, coordinator, txns) = (&broker.store, &broker.coordinator, &*broker.transactions);
    let (key, api_version, header) = match request_header(&mut frame)? {
        Ok(parsed) => parsed,
        Err(refusal) => return Ok(Some(refusal)),
    };
    let correlation_id = header.correlation_id;
    let version = api_version;
    macro_rules! decode {
        ($request:ty) => {
            <$request>::decode(&mut frame, version)?
        };
    }
    macro_rules! reply {
        ($response:expr) => {
            encode_response(correlation_id, key, version, &$response).map(Some)
        };
    }
    match key {
        ApiKey::ApiVersions => {
            decode!(ApiVersionsRequest);
            reply!(api_versions(code::NONE))
        }
        ApiKey::Metadata => reply!(metadata(
            store,
            config,
            &decode!(MetadataRequest),
            version,
            caller
        )),
        ApiKey::Produce => {
            let request = decode!(ProduceRequest);
            let acks = request.acks;
            let response = authorize::produce((store, txns), request, version, caller).await;
            if acks == 0 {
                return Ok(None);
            }
            reply!(response)
        }
        ApiKey::Fetch => {
            reply!(authorize::fetch(store, decode!(FetchRequest), (version, config), caller).await)
        }
        ApiKey::ListOffsets => {
            reply!(authorize::list_offsets(
                store,
                decode!(ListOffsetsRequest),
                caller
            ))
        }
        ApiKey::FindCoordinator => reply!(find_coordinator(
            (store, config),
            &decode!(FindCoordinatorRequest),
            caller
        )),
        ApiKey::JoinGroup => {
            let client_id = header.client_id.as_deref().unwrap_or_default();
            let request = decode!(JoinGroupRequest);
            reply!(authorize::join_group(coordinator, request, (version, client_id), caller).await)
        }
        ApiKey::SyncGroup => {
            reply!(
                authorize::sync_group(coordinator, decode!(SyncGroupRequest), version, caller)
                    .await
            )
        }
        ApiKey::Heartbeat => reply!(authorize::heartbeat(
            coordinator,
            &decode!(HeartbeatRequest),
            caller
        )),
        ApiKey::LeaveGroup => {
            reply!(authorize::leave_group(
                coordinator,
                &decode!(LeaveGroupRequest),
                version,
                caller
            ))
        }
        ApiKey::OffsetCommit => reply!(
            authorize::offset_commit(coordinator, decode!(OffsetCommitRequest), caller).await
        ),
        ApiKey::OffsetFetch => reply!(authorize::offset_fetch(
            (coordinator, txns),
            &decode!(OffsetFetchRequest),
            version,
            caller
        )),
        ApiKey::ListGroups => {
            decode!(ListGroupsRequest);
            reply!(authorize::list_groups(coordinator, caller))
        }
        ApiKey::DescribeGroups => reply!(authorize::describe_groups(
            coordinator,
            decode!(DescribeGroupsRequest),
            caller
        )),
        ApiKey::DescribeConfigs => reply!(authorize::describe_configs(
            store,
            decode!(DescribeConfigsRequest),
            caller
        )),
        ApiKey::CreateTopics => reply!(authorize::create_topics(
            store,
            decode!(CreateTopicsRequest),
            version,
            caller
        )),
        ApiKey::DeleteTopics => reply!(authorize::delete_topics(
            store,
            decode!(DeleteTopicsRequest),
            version,
            caller
        )),
        // The idempotent and transactional producers' APIs, and what operators ask of them.
        ApiKey::InitProducerId
        | ApiKey::AddPartitionsToTxn
        | ApiKey::AddOffsetsToTxn
        | ApiKey::TxnOffsetCommit
        | ApiKey::EndTxn
        | ApiKey::DescribeTransactions
        | ApiKey::ListTransactions
        | ApiKey::DescribeProducers => {
            let request = (key, version, correlation_id);
            transactions::serve(request, &mut frame, broker, caller).await
        }
        ApiKey::CreateAcls => reply!(acls::create(caller, &decode!(CreateAclsRequest)).await),
        ApiKey::DescribeAcls => reply!(acls::describe(caller, &decode!(DescribeAclsRequest))),
        ApiKey::DeleteAcls => reply!(acls::delete(caller, &decode!(DeleteAclsRequest)).await),
        // Only a SASL listener's session, before authentication, takes these.
        ApiKey::SaslHandshake => {
            decode!(SaslHandshakeRequest);
            reply!(SaslHandshakeResponse::default().with_error_code(code::ILLEGAL_SASL_STATE))
        }
        ApiKey::SaslAuthenticate => {
            decode!(SaslAuthenticateRequest);
            reply!(sasl::outside_a_session())
        }
        ApiKey::AlterUserScramCredentials => {
            reply!(users::alter(caller, &decode!(AlterUserScramCredentialsRequest)).await)
        }
        ApiKey::DescribeUserScramCredentials => {
            reply!(users::describe(
                caller,
                &decode!(DescribeUserScramCredentialsRequest)
            ))
        }
        other => anyhow::bail!("{other:?} is not served"),
    }
}

/// FindCoordinator: Eddy coordinates every group (Describe on it, or on the transactional id).
fn find_coordinator(
    (store, config): (&Store, &KafkaConfig),
    request: &FindCoordinatorRequest,
    caller: authorize::Caller<'_>,
) -> FindCoordinatorResponse {
    let placement = replicas::placement(store);
    match caller.coordinator_refusal(request.key_type, &request.key) {
        None => FindCoordinatorResponse::default()
            .with_node_id(placement.broker)
            .with_host(StrBytes::from_string(config.advertised.0.clone()))
            .with_port(i32::from(config.advertised.1)),
        Some(error) => FindCoordinatorResponse::default()
            .with_error_code(error)
            .with_node_id(BrokerId(-1))
            .with_port(-1),
    }
}

/// InitProducerId without a transactional id: an idempotent producer's new id.
fn init_producer_id(
    producers: &producers::ProducerRegistry,
    caller: authorize::Caller<'_>,
) -> InitProducerIdResponse {
    if !caller.may_write_idempotently() {
        InitProducerIdResponse::default().with_error_code(code::CLUSTER_AUTHORIZATION_FAILED)
    } else {
        InitProducerIdResponse::default()
            .with_producer_id(ProducerId(producers.allocate()))
            .with_producer_epoch(0)
    }
}

fn encode_response<T: Encodable + HeaderVersion>(
    correlation_id: i32,
    key: ApiKey,
    version: i16,
    body: &T,
) -> anyhow::Result<BytesMut> {
    let mut out = BytesMut::new();
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    header.encode(&mut out, key.response_header_version(version))?;
    body.encode(&mut out, version)?;
    Ok(out)
}

fn api_versions(error_code: i16) -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(
            SUPPORTED
                .iter()
                .map(|(key, min, max)| {
                    ApiVersion::default()
                        .with_api_key(*key as i16)
                        .with_min_version(*min)
                        .with_max_version(*max)
                })
                .collect(),
        )
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn metadata(
    store: &Store,
    config: &KafkaConfig,
    request: &MetadataRequest,
    version: i16,
    caller: authorize::Caller<'_>,
) -> MetadataResponse {
    // v0 and a null topic list both mean every topic, except that v0 sends an empty list for it.
    let wanted: Vec<String> = match &request.topics {
        Some(topics) if !(version == 0 && topics.is_empty()) => topics
            .iter()
            .filter_map(|t| t.name.as_ref().map(|n| n.to_string()))
            .collect(),
        // Listing every topic leaves out those the caller may not describe, as Kafka does.
        _ => store
            .list_topics()
            .into_iter()
            .filter(|t| caller.sees_topic(t))
            .collect(),
    };
    let auto_create =
        config.auto_create_topics && (version < 4 || request.allow_auto_topic_creation);
    let placement = replicas::placement(store);
    let topics = wanted
        .into_iter()
        .map(|name| {
            if !caller.may_topic(Operation::Describe, &name) {
                return MetadataResponseTopic::default()
                    .with_name(Some(topic_name(&name)))
                    .with_error_code(code::TOPIC_AUTHORIZATION_FAILED);
            }
            if !store.topic_exists(&name)
                && auto_create
                && !eddy_storage::is_internal_topic(&name)
                && caller.may_create_topic(&name)
            {
                match store.create_topic(
                    &name,
                    TopicConfig::with_partitions(config.default_partitions),
                ) {
                    Ok(_) => info!(topic = %name, "auto-created topic for a Kafka client"),
                    Err(StorageError::TopicExists(_)) => {}
                    Err(e) => {
                        warn!(topic = %name, error = %e, "cannot auto-create topic");
                        return MetadataResponseTopic::default()
                            .with_name(Some(topic_name(&name)))
                            .with_error_code(code::INVALID_TOPIC_EXCEPTION);
                    }
                }
            }
            match store.partition_count(&name) {
                Ok(partitions) => MetadataResponseTopic::default()
                    .with_name(Some(topic_name(&name)))
                    .with_is_internal(version >= 1 && eddy_storage::is_internal_topic(&name))
                    .with_partitions(
                        (0..partitions as i32)
                            .map(|p| {
                                MetadataResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_leader_id(placement.broker)
                                    .with_leader_epoch(if version >= 7 {
                                        placement.leader_epoch
                                    } else {
                                        -1
                                    })
                                    .with_replica_nodes(placement.replicas.clone())
                                    .with_isr_nodes(placement.in_sync.clone())
                            })
                            .collect(),
                    ),
                Err(_) => MetadataResponseTopic::default()
                    .with_name(Some(topic_name(&name)))
                    .with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION),
            }
        })
        .collect();
    MetadataResponse::default()
        .with_brokers(replicas::brokers(store, config))
        .with_cluster_id((version >= 2).then(|| StrBytes::from_static_str("eddy")))
        .with_controller_id(if version >= 1 {
            placement.broker
        } else {
            BrokerId(-1)
        })
        .with_topics(topics)
}

fn storage_error_code(error: &StorageError) -> i16 {
    match error {
        StorageError::UnknownTopic(_) | StorageError::UnknownPartition { .. } => {
            code::UNKNOWN_TOPIC_OR_PARTITION
        }
        StorageError::RecordTooLarge { .. } => code::MESSAGE_TOO_LARGE,
        StorageError::InvalidRecord { .. } => code::INVALID_RECORD,
        StorageError::TooManyPartitions { .. } => code::INVALID_PARTITIONS,
        StorageError::CorruptBatch { .. } => code::CORRUPT_MESSAGE,
        StorageError::OffsetOutOfRange { .. } => code::OFFSET_OUT_OF_RANGE,
        StorageError::OutOfOrderSequence { .. } => code::OUT_OF_ORDER_SEQUENCE_NUMBER,
        StorageError::InvalidProducerEpoch { .. } => code::INVALID_PRODUCER_EPOCH,
        // Retriable for clients, as Kafka answers a failed log directory: the disk may have
        // space again by the next try.
        StorageError::DiskFull { .. } | StorageError::RocksDb(_) | StorageError::Io(_) => {
            code::KAFKA_STORAGE_ERROR
        }
        // Leadership moved, or the store is closing because it did (or the node is stopping,
        // as a Kafka broker's controlled shutdown moves its leaders away): the client asks
        // Metadata where the leader is now, and retries there.
        StorageError::NotLeader { .. } | StorageError::Closed => code::NOT_LEADER_OR_FOLLOWER,
        // The group could not commit the write in time; whether it lands later is unknown,
        // as after a Kafka request that timed out.
        StorageError::Replication { .. } => code::REQUEST_TIMED_OUT,
        _ => code::UNKNOWN_SERVER_ERROR,
    }
}

fn list_offsets(store: &Store, request: &ListOffsetsRequest) -> ListOffsetsResponse {
    let topics = request
        .topics
        .iter()
        .map(|topic| {
            let name = topic.name.to_string();
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let response = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_timestamp(-1);
                    let Ok(index) = u32::try_from(p.partition_index) else {
                        return response
                            .with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION)
                            .with_offset(-1);
                    };
                    let found = match p.timestamp {
                        -2 => store.log_start_offset(&name, index).map(|o| (o, -1)),
                        // The latest offset a read_committed consumer may read to.
                        -1 if request.isolation_level == 1 => {
                            store.last_stable_offset(&name, index).map(|o| (o, -1))
                        }
                        -1 => store.end_offset(&name, index).map(|o| (o, -1)),
                        ts => store
                            .offset_for_timestamp(&name, index, ts)
                            .map(|found| found.unwrap_or((-1, -1))),
                    };
                    match found {
                        Ok((offset, timestamp)) => {
                            response.with_offset(offset).with_timestamp(timestamp)
                        }
                        Err(e) => response
                            .with_error_code(storage_error_code(&e))
                            .with_offset(-1),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A request header in the form `key` at `version` expects, with a null client id, then
    /// `body`: well-formed up to the body, so the body's decoder is what gets exercised.
    fn frame(key: ApiKey, version: i16, body: &[u8]) -> Bytes {
        let mut out = BytesMut::new();
        out.extend_from_slice(&(key as i16).to_be_bytes());
        out.extend_from_slice(&version.to_be_bytes());
        out.extend_from_slice(&7i32.to_be_bytes());
        out.extend_from_slice(&(-1i16).to_be_bytes());
        if key.request_header_version(version) >= 2 {
            out.extend_from_slice(&[0]);
        }
        out.extend_from_slice(body);
        out.freeze()
    }

    /// A caller without users or ACLs.
    fn anonymous() -> authorize::Caller<'static> {
        authorize::Caller {
            principal: &Principal::Anonymous,
            host: "127.0.0.1",
            access: None,
        }
    }

    /// What `handle_frame` needs: a broker over a store in `dir`, and a listener's config.
    fn broker(dir: &std::path::Path) -> (Broker, KafkaConfig) {
        let store = Store::open(dir, eddy_storage::StoreOptions::default()).unwrap();
        let config = KafkaConfig {
            auto_create_topics: false,
            ..KafkaConfig::new("127.0.0.1:9092".parse().unwrap())
        };
        (Broker::new(store, &config.limits), config)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Random request bodies, for every API at every version served, get an answer or an
        /// error, never a panic. CreateTopics and Fetch are left out: a random body can ask
        /// for a huge topic or a long poll, which is valid, not malformed.
        #[test]
        fn random_request_bodies_never_panic(
            which in 0..SUPPORTED.len(),
            version_pick in 0i16..20,
            body in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let (key, min, max) = SUPPORTED[which];
            prop_assume!(!matches!(key, ApiKey::CreateTopics | ApiKey::Fetch));
            let version = min + version_pick % (max - min + 1);
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let dir = tempfile::tempdir().unwrap();
            runtime.block_on(async {
                let (broker, config) = broker(dir.path());
                let request = frame(key, version, &body);
                let _ = tokio::time::timeout(
                    Duration::from_millis(500),
                    handle_frame(request, &broker, &config, anonymous()),
                )
                .await;
            });
        }

        /// Frames with any key and version bytes at all are refused or answered, never a panic.
        #[test]
        fn random_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 8..128)) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let dir = tempfile::tempdir().unwrap();
            runtime.block_on(async {
                let (broker, config) = broker(dir.path());
                let key = i16::from_be_bytes([bytes[0], bytes[1]]);
                prop_assume!(!matches!(ApiKey::try_from(key), Ok(ApiKey::CreateTopics | ApiKey::Fetch)));
                let _ = tokio::time::timeout(
                    Duration::from_millis(500),
                    handle_frame(Bytes::from(bytes), &broker, &config, anonymous()),
                )
                .await;
                Ok(())
            })?;
        }
    }
}
