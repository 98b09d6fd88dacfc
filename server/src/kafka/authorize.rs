//! Kafka's ACLs on each API, as Kafka maps operations to requests: Produce needs Write on the
//! topic, Fetch Read, Metadata and ListOffsets Describe (topics a client may not describe are
//! left out of an all-topics listing), group APIs Read on the group (Describe to find or
//! describe it), CreateTopics Create on the cluster or topic, DeleteTopics Delete, and so on.
//! A refused topic or group is answered with its own error code beside the rest of the answer.

use eddy_security::acl::{CLUSTER_NAME, Operation, ResourceType};
use eddy_security::{Access, Principal};

/// Who sent a request, from where, and the ACLs to check it against.
#[derive(Clone, Copy)]
pub(super) struct Caller<'a> {
    /// The authenticated principal.
    pub principal: &'a Principal,
    /// The client's address.
    pub host: &'a str,
    /// The users and ACLs; `None` when the server keeps none (benchmarks, tests).
    pub access: Option<&'a Access>,
}

impl Caller<'_> {
    /// Whether the caller may do `operation` on the resource.
    pub fn may(&self, operation: Operation, resource_type: ResourceType, name: &str) -> bool {
        let Some(access) = self.access else {
            return true;
        };
        let allowed = access.authorize(
            (self.principal, self.host),
            operation,
            (resource_type, name),
        );
        if !allowed {
            tracing::info!(
                principal = %self.principal,
                host = self.host,
                operation = %operation,
                resource = %format!("{resource_type}:{name}"),
                "denied"
            );
        }
        allowed
    }

    /// Operations on the topic.
    pub fn may_topic(&self, operation: Operation, topic: &str) -> bool {
        self.may(operation, ResourceType::Topic, topic)
    }

    /// Whether a listing shows the topic to the caller; a hidden one is not logged as a denial,
    /// as Kafka does not log what it leaves out of a listing.
    pub fn sees_topic(&self, topic: &str) -> bool {
        self.quietly(Operation::Describe, ResourceType::Topic, topic)
    }

    /// Whether a listing shows the group to the caller, unlogged as [`Caller::sees_topic`].
    pub fn sees_group(&self, group: &str) -> bool {
        self.quietly(Operation::Describe, ResourceType::Group, group)
    }

    fn quietly(&self, operation: Operation, resource_type: ResourceType, name: &str) -> bool {
        self.access.is_none_or(|a| {
            a.authorize(
                (self.principal, self.host),
                operation,
                (resource_type, name),
            )
        })
    }

    /// Operations on the group.
    pub fn may_group(&self, operation: Operation, group: &str) -> bool {
        self.may(operation, ResourceType::Group, group)
    }

    /// The error a group request gets when the caller may not Read the group.
    pub fn group_refusal(&self, group: &str) -> Option<i16> {
        (!self.may_group(Operation::Read, group)).then_some(code::GROUP_AUTHORIZATION_FAILED)
    }

    /// The error FindCoordinator gets when the caller may not Describe the group it looks for
    /// (or, for `key_type` 1, the transactional id).
    pub fn coordinator_refusal(&self, key_type: i8, key: &str) -> Option<i16> {
        let (resource, error) = if key_type == 1 {
            (
                ResourceType::TransactionalId,
                code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
            )
        } else {
            (ResourceType::Group, code::GROUP_AUTHORIZATION_FAILED)
        };
        (!self.may(Operation::Describe, resource, key)).then_some(error)
    }

    /// Operations on the cluster.
    pub fn may_cluster(&self, operation: Operation) -> bool {
        self.may(operation, ResourceType::Cluster, CLUSTER_NAME)
    }

    /// Whether the caller may create `topic`: Create on the cluster or on the topic.
    pub fn may_create_topic(&self, topic: &str) -> bool {
        self.may_cluster_quietly(Operation::Create) || self.may_topic(Operation::Create, topic)
    }

    /// An idempotent producer (KIP-679): IdempotentWrite on the cluster, or Write on some topic.
    pub fn may_write_idempotently(&self) -> bool {
        let Some(access) = self.access else {
            return true;
        };
        self.may_cluster_quietly(Operation::IdempotentWrite)
            || access
                .acls
                .grants_somewhere(self.principal, Operation::Write, ResourceType::Topic)
            || !access.enforces()
    }

    fn may_cluster_quietly(&self, operation: Operation) -> bool {
        self.quietly(operation, ResourceType::Cluster, CLUSTER_NAME)
    }
}

/// Splits `items` into those `allowed` and those not, keeping their order.
pub(super) fn split<T>(items: Vec<T>, allowed: impl Fn(&T) -> bool) -> (Vec<T>, Vec<T>) {
    items.into_iter().partition(|item| allowed(item))
}

use bytes::Bytes;
use eddy_storage::Store;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResult;
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    FetchRequest, FetchResponse, ListGroupsResponse, ListOffsetsRequest, ListOffsetsResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
    ProduceRequest, ProduceResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::transactions::TransactionCoordinator;
use super::{code, groups::GroupCoordinator};
use kafka_protocol::messages::{
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, SyncGroupRequest, SyncGroupResponse,
};

/// JoinGroup: Read on the group.
pub(super) async fn join_group(
    coordinator: &std::sync::Arc<GroupCoordinator>,
    request: JoinGroupRequest,
    (version, client_id): (i16, &str),
    caller: Caller<'_>,
) -> JoinGroupResponse {
    match caller.group_refusal(&request.group_id) {
        Some(code) => JoinGroupResponse::default().with_error_code(code),
        None => coordinator.join(request, version, client_id).await,
    }
}

/// SyncGroup: Read on the group.
pub(super) async fn sync_group(
    coordinator: &GroupCoordinator,
    request: SyncGroupRequest,
    version: i16,
    caller: Caller<'_>,
) -> SyncGroupResponse {
    match caller.group_refusal(&request.group_id) {
        Some(code) => SyncGroupResponse::default().with_error_code(code),
        None => coordinator.sync(request, version).await,
    }
}

/// Heartbeat: Read on the group.
pub(super) fn heartbeat(
    coordinator: &GroupCoordinator,
    request: &HeartbeatRequest,
    caller: Caller<'_>,
) -> HeartbeatResponse {
    match caller.group_refusal(&request.group_id) {
        Some(code) => HeartbeatResponse::default().with_error_code(code),
        None => coordinator.heartbeat(request),
    }
}

/// LeaveGroup: Read on the group.
pub(super) fn leave_group(
    coordinator: &std::sync::Arc<GroupCoordinator>,
    request: &LeaveGroupRequest,
    version: i16,
    caller: Caller<'_>,
) -> LeaveGroupResponse {
    match caller.group_refusal(&request.group_id) {
        Some(code) => LeaveGroupResponse::default().with_error_code(code),
        None => coordinator.leave(request, version),
    }
}

const TOPIC_DENIED: i16 = code::TOPIC_AUTHORIZATION_FAILED;

/// Produce: Write on each topic.
pub(super) async fn produce(
    (store, txns): (&Store, &TransactionCoordinator),
    mut request: ProduceRequest,
    version: i16,
    caller: Caller<'_>,
) -> ProduceResponse {
    let (allowed, denied) = split(std::mem::take(&mut request.topic_data), |t| {
        caller.may_topic(Operation::Write, &t.name)
    });
    request.topic_data = allowed;
    let too_few = super::replicas::refuse_acks_all(store, &mut request);
    let mut response = if request.topic_data.is_empty() {
        ProduceResponse::default()
    } else {
        super::produce::produce((store, txns), request, version).await
    };
    response.responses.extend(too_few);
    response.responses.extend(
        denied
            .iter()
            .map(|t| super::produce::refused(t, TOPIC_DENIED)),
    );
    response
}

/// Fetch: Read on each topic; a request with none readable is answered at once.
pub(super) async fn fetch(
    store: &Store,
    mut request: FetchRequest,
    (version, config): (i16, &super::KafkaConfig),
    caller: Caller<'_>,
) -> FetchResponse {
    let limit = config.limits.fetch_max_bytes;
    let counter = config.fetched_records.as_ref();
    let (allowed, denied) = split(std::mem::take(&mut request.topics), |t| {
        caller.may_topic(Operation::Read, &t.topic)
    });
    let mut response = if allowed.is_empty() {
        FetchResponse::default()
    } else {
        request.topics = allowed;
        super::fetch::fetch(store, &request, version, limit, counter).await
    };
    response.responses.extend(denied.into_iter().map(|t| {
        FetchableTopicResponse::default()
            .with_topic(t.topic)
            .with_partitions(
                t.partitions
                    .iter()
                    .map(|p| {
                        PartitionData::default()
                            .with_partition_index(p.partition)
                            .with_error_code(TOPIC_DENIED)
                            .with_high_watermark(-1)
                            .with_records(Some(Bytes::new()))
                    })
                    .collect(),
            )
    }));
    response
}

/// ListOffsets: Describe on each topic.
pub(super) fn list_offsets(
    store: &Store,
    mut request: ListOffsetsRequest,
    caller: Caller<'_>,
) -> ListOffsetsResponse {
    let (allowed, denied) = split(std::mem::take(&mut request.topics), |t| {
        caller.may_topic(Operation::Describe, &t.name)
    });
    request.topics = allowed;
    let mut response = super::list_offsets(store, &request);
    response.topics.extend(denied.into_iter().map(|t| {
        ListOffsetsTopicResponse::default()
            .with_name(t.name)
            .with_partitions(
                t.partitions
                    .iter()
                    .map(|p| {
                        ListOffsetsPartitionResponse::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(TOPIC_DENIED)
                            .with_offset(-1)
                            .with_timestamp(-1)
                    })
                    .collect(),
            )
    }));
    response
}

/// OffsetCommit: Read on the group and on each topic.
pub(super) async fn offset_commit(
    coordinator: &GroupCoordinator,
    mut request: OffsetCommitRequest,
    caller: Caller<'_>,
) -> OffsetCommitResponse {
    let group_ok = caller.may_group(Operation::Read, &request.group_id);
    let (allowed, denied) = split(std::mem::take(&mut request.topics), |t| {
        group_ok && caller.may_topic(Operation::Read, &t.name)
    });
    let mut response = if allowed.is_empty() {
        OffsetCommitResponse::default()
    } else {
        request.topics = allowed;
        coordinator.commit(&request).await
    };
    let error = if group_ok {
        TOPIC_DENIED
    } else {
        code::GROUP_AUTHORIZATION_FAILED
    };
    response.topics.extend(denied.into_iter().map(|t| {
        OffsetCommitResponseTopic::default()
            .with_name(t.name)
            .with_partitions(
                t.partitions
                    .iter()
                    .map(|p| {
                        OffsetCommitResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(error)
                    })
                    .collect(),
            )
    }));
    response
}

/// OffsetFetch: Describe on the group; topics the caller may not describe are left out.
pub(super) fn offset_fetch(
    (coordinator, txns): (&GroupCoordinator, &TransactionCoordinator),
    request: &OffsetFetchRequest,
    version: i16,
    caller: Caller<'_>,
) -> OffsetFetchResponse {
    if !caller.may_group(Operation::Describe, &request.group_id) {
        return OffsetFetchResponse::default().with_error_code(code::GROUP_AUTHORIZATION_FAILED);
    }
    let mut response = coordinator.fetch(request, version);
    response.topics.retain(|t| caller.sees_topic(&t.name));
    if request.require_stable {
        // An offset a transaction has yet to commit or abort is not answered (KIP-447): the
        // client retries until it is settled.
        for topic in &mut response.topics {
            for p in &mut topic.partitions {
                let index = p.partition_index.max(0) as u32;
                if txns.has_pending_offset(&request.group_id, &topic.name, index) {
                    p.error_code = code::UNSTABLE_OFFSET_COMMIT;
                    p.committed_offset = -1;
                }
            }
        }
    }
    response
}

/// ListGroups: every group with Describe on the cluster, else those the caller may describe.
pub(super) fn list_groups(
    coordinator: &GroupCoordinator,
    caller: Caller<'_>,
) -> ListGroupsResponse {
    let mut response = coordinator.list();
    if !caller.may_cluster_quietly(Operation::Describe) {
        response.groups.retain(|g| caller.sees_group(&g.group_id));
    }
    response
}

/// DescribeGroups: Describe on each group.
pub(super) fn describe_groups(
    coordinator: &GroupCoordinator,
    mut request: DescribeGroupsRequest,
    caller: Caller<'_>,
) -> DescribeGroupsResponse {
    let (allowed, denied) = split(std::mem::take(&mut request.groups), |g| {
        caller.may_group(Operation::Describe, g)
    });
    request.groups = allowed;
    let mut response = coordinator.describe(&request);
    response.groups.extend(denied.into_iter().map(|g| {
        DescribedGroup::default()
            .with_group_id(g)
            .with_error_code(code::GROUP_AUTHORIZATION_FAILED)
    }));
    response
}

/// DescribeConfigs: DescribeConfigs on each topic, or on the cluster for a broker.
pub(super) fn describe_configs(
    store: &Store,
    mut request: DescribeConfigsRequest,
    caller: Caller<'_>,
) -> DescribeConfigsResponse {
    const TOPIC: i8 = 2;
    let (allowed, denied) = split(std::mem::take(&mut request.resources), |r| {
        if r.resource_type == TOPIC {
            caller.may_topic(Operation::DescribeConfigs, &r.resource_name)
        } else {
            caller.may_cluster(Operation::DescribeConfigs)
        }
    });
    request.resources = allowed;
    let mut response = super::admin::describe_configs(store, &request);
    response.results.extend(denied.into_iter().map(|r| {
        let error = if r.resource_type == TOPIC {
            TOPIC_DENIED
        } else {
            code::CLUSTER_AUTHORIZATION_FAILED
        };
        DescribeConfigsResult::default()
            .with_error_code(error)
            .with_error_message(Some(StrBytes::from_static_str("Authorization failed.")))
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name)
    }));
    response
}

/// CreateTopics: Create on the cluster or on each topic.
pub(super) fn create_topics(
    store: &Store,
    mut request: CreateTopicsRequest,
    version: i16,
    caller: Caller<'_>,
) -> CreateTopicsResponse {
    let (allowed, denied) = split(std::mem::take(&mut request.topics), |t| {
        caller.may_create_topic(&t.name)
    });
    request.topics = allowed;
    let mut response = super::admin::create_topics(store, &request, version);
    response.topics.extend(denied.into_iter().map(|t| {
        CreatableTopicResult::default()
            .with_name(t.name)
            .with_error_code(TOPIC_DENIED)
            .with_error_message(Some(StrBytes::from_static_str("Authorization failed.")))
    }));
    response
}

/// DeleteTopics: Delete on each topic.
pub(super) fn delete_topics(
    store: &Store,
    mut request: DeleteTopicsRequest,
    version: i16,
    caller: Caller<'_>,
) -> DeleteTopicsResponse {
    let (allowed, denied) = split(std::mem::take(&mut request.topic_names), |t| {
        caller.may_topic(Operation::Delete, t)
    });
    request.topic_names = allowed;
    let mut response = super::admin::delete_topics(store, &request, version);
    response.responses.extend(denied.into_iter().map(|t| {
        DeletableTopicResult::default()
            .with_name(Some(t))
            .with_error_code(TOPIC_DENIED)
    }));
    response
}
