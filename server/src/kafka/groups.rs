//! Consumer groups with Kafka's classic protocol (JoinGroup, SyncGroup, Heartbeat, LeaveGroup),
//! and group offsets (OffsetCommit, OffsetFetch) kept in the store.
//!
//! Eddy is the coordinator of every group. A rebalance completes when every known member has
//! rejoined, or when the longest rebalance timeout passes, dropping the members that did not.

use super::code::{
    COORDINATOR_NOT_AVAILABLE, ILLEGAL_GENERATION, INCONSISTENT_GROUP_PROTOCOL, INVALID_GROUP_ID,
    INVALID_SESSION_TIMEOUT, MEMBER_ID_REQUIRED, NONE, OFFSET_METADATA_TOO_LARGE,
    REBALANCE_IN_PROGRESS, UNKNOWN_MEMBER_ID, UNKNOWN_TOPIC_OR_PARTITION,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use eddy_storage::{GroupOffset, OffsetAndMetadata, StorageError, Store};
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::{
    DescribeGroupsRequest, DescribeGroupsResponse, GroupId, ListGroupsResponse,
};
use kafka_protocol::messages::{
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest,
    OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use parking_lot::Mutex;
use tokio::sync::oneshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

struct Member {
    client_id: String,
    group_instance_id: Option<StrBytes>,
    protocols: Vec<(String, Bytes)>,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    last_seen: Instant,
    assignment: Bytes,
}

struct Group {
    state: GroupState,
    generation: i32,
    protocol_type: String,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    join_waiters: Vec<(String, oneshot::Sender<JoinGroupResponse>)>,
    sync_waiters: Vec<(String, oneshot::Sender<SyncGroupResponse>)>,
    /// Bumped each time a rebalance starts, so a stale timer does nothing.
    rebalance_round: u64,
}

impl Group {
    fn new(protocol_type: String) -> Self {
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol_type,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            join_waiters: Vec::new(),
            sync_waiters: Vec::new(),
            rebalance_round: 0,
        }
    }
}

impl GroupState {
    fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// The bounds a coordinator holds clients to, with Kafka's broker defaults.
#[derive(Debug, Clone, Copy)]
pub struct GroupLimits {
    /// The shortest session timeout a member may ask for (`group.min.session.timeout.ms`).
    pub min_session_timeout: Duration,
    /// The longest session timeout a member may ask for (`group.max.session.timeout.ms`), so a
    /// vanished member's partitions are handed on within it.
    pub max_session_timeout: Duration,
    /// The longest metadata string an offset commit may carry (`offset.metadata.max.bytes`).
    pub max_offset_metadata_bytes: usize,
}

impl Default for GroupLimits {
    fn default() -> Self {
        GroupLimits {
            min_session_timeout: Duration::from_secs(6),
            max_session_timeout: Duration::from_secs(30 * 60),
            max_offset_metadata_bytes: 4096,
        }
    }
}

/// The coordinator of every consumer group.
pub struct GroupCoordinator {
    groups: Mutex<BTreeMap<String, Group>>,
    next_member: AtomicU64,
    store: Store,
    limits: GroupLimits,
}

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

impl GroupCoordinator {
    /// A coordinator that keeps offsets in `store`, and expires silent members in the background.
    pub fn start(store: Store, limits: GroupLimits) -> Arc<Self> {
        let coordinator = Arc::new(GroupCoordinator {
            groups: Mutex::new(BTreeMap::new()),
            next_member: AtomicU64::new(1),
            store,
            limits,
        });
        let weak = Arc::downgrade(&coordinator);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(500));
            loop {
                ticker.tick().await;
                let Some(coordinator) = weak.upgrade() else {
                    break;
                };
                coordinator.expire_members();
            }
        });
        coordinator
    }

    fn expire_members(self: &Arc<Self>) {
        let now = Instant::now();
        let mut groups = self.groups.lock();
        let names: Vec<String> = groups.keys().cloned().collect();
        for name in names {
            let Some(group) = groups.get_mut(&name) else {
                continue;
            };
            // A member waiting in JoinGroup is not silent: its request is the coordinator's to
            // answer, as Kafka's coordinator holds its session open while it awaits the join.
            let expired: Vec<String> = group
                .members
                .iter()
                .filter(|(id, m)| {
                    now.duration_since(m.last_seen) > m.session_timeout
                        && !group.join_waiters.iter().any(|(w, _)| w == *id)
                })
                .map(|(id, _)| id.clone())
                .collect();
            if expired.is_empty() {
                continue;
            }
            for id in &expired {
                group.members.remove(id);
            }
            tracing::info!(group = %name, ?expired, "consumer group members timed out");
            if group.state != GroupState::PreparingRebalance {
                self.start_rebalance(&name, group);
            }
            // The members left may all be waiting to join already (a dead member was what the
            // rebalance waited for): it completes now, not at its timeout.
            if group.state == GroupState::PreparingRebalance
                && group
                    .members
                    .keys()
                    .all(|id| group.join_waiters.iter().any(|(w, _)| w == id))
            {
                complete_rebalance(group);
            }
        }
        // A group nobody is in holds nothing its committed offsets (kept in the store) do not,
        // so it is forgotten rather than kept for every group id a client ever sent.
        groups.retain(|_, g| {
            !(g.members.is_empty() && g.join_waiters.is_empty() && g.sync_waiters.is_empty())
        });
    }

    /// Moves a group into a rebalance, to complete when all members rejoin or the timeout passes.
    fn start_rebalance(self: &Arc<Self>, name: &str, group: &mut Group) {
        if group.members.is_empty() {
            group.state = GroupState::Empty;
            group.leader = None;
            group.protocol = None;
            return;
        }
        group.state = GroupState::PreparingRebalance;
        group.rebalance_round += 1;
        // Members waiting in SyncGroup learn that they must rejoin.
        for (_, waiter) in group.sync_waiters.drain(..) {
            let _ =
                waiter.send(SyncGroupResponse::default().with_error_code(REBALANCE_IN_PROGRESS));
        }
        let timeout = group
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default();
        let round = group.rebalance_round;
        let weak = Arc::downgrade(self);
        let name = name.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            if let Some(coordinator) = weak.upgrade() {
                let mut groups = coordinator.groups.lock();
                if let Some(group) = groups.get_mut(&name)
                    && group.rebalance_round == round
                    && group.state == GroupState::PreparingRebalance
                {
                    // Members that did not rejoin in time leave the group.
                    let joined: Vec<String> = group
                        .join_waiters
                        .iter()
                        .map(|(id, _)| id.clone())
                        .collect();
                    group.members.retain(|id, _| joined.contains(id));
                    complete_rebalance(group);
                }
            }
        });
    }

    /// JoinGroup: waits until the rebalance completes.
    pub async fn join(
        self: &Arc<Self>,
        request: JoinGroupRequest,
        version: i16,
        client_id: &str,
    ) -> JoinGroupResponse {
        let group_id = request.group_id.to_string();
        let mut member_id = request.member_id.to_string();
        let refused = |code| {
            JoinGroupResponse::default()
                .with_error_code(code)
                .with_generation_id(-1)
                .with_member_id(request.member_id.clone())
                .with_protocol_name(if version >= 7 { None } else { Some(s("")) })
        };
        if group_id.is_empty() || eddy_storage::is_internal_group(&group_id) {
            return refused(INVALID_GROUP_ID);
        }
        let session_timeout = Duration::from_millis(request.session_timeout_ms.max(0) as u64);
        if session_timeout < self.limits.min_session_timeout
            || session_timeout > self.limits.max_session_timeout
        {
            return refused(INVALID_SESSION_TIMEOUT);
        }
        if member_id.is_empty() {
            member_id = format!(
                "eddy-member-{}",
                self.next_member.fetch_add(1, Ordering::Relaxed)
            );
            if version >= 4 {
                return JoinGroupResponse::default()
                    .with_error_code(MEMBER_ID_REQUIRED)
                    .with_member_id(s(&member_id))
                    .with_generation_id(-1)
                    .with_protocol_name(if version >= 7 { None } else { Some(s("")) });
            }
        }
        let rx = {
            let mut groups = self.groups.lock();
            let group = groups
                .entry(group_id.clone())
                .or_insert_with(|| Group::new(request.protocol_type.to_string()));
            let protocols: Vec<(String, Bytes)> = request
                .protocols
                .iter()
                .map(|p| (p.name.to_string(), p.metadata.clone()))
                .collect();
            let shares_protocol = group.members.is_empty()
                || group.protocol_type == request.protocol_type.as_str()
                    && protocols.iter().any(|(name, _)| {
                        group
                            .members
                            .values()
                            .all(|m| m.protocols.iter().any(|(n, _)| n == name))
                    });
            if !shares_protocol {
                return JoinGroupResponse::default()
                    .with_error_code(INCONSISTENT_GROUP_PROTOCOL)
                    .with_generation_id(-1)
                    .with_member_id(s(&member_id))
                    .with_protocol_name(if version >= 7 { None } else { Some(s("")) });
            }
            if group.members.is_empty() {
                group.protocol_type = request.protocol_type.to_string();
            }
            let rebalance_timeout = if version >= 1 {
                request.rebalance_timeout_ms
            } else {
                request.session_timeout_ms
            };
            group.members.insert(
                member_id.clone(),
                Member {
                    client_id: client_id.to_string(),
                    group_instance_id: request.group_instance_id.clone(),
                    protocols,
                    session_timeout,
                    // Kafka bounds the rebalance timeout only by the request's; a week-long one
                    // would hold a rebalance open that long, so it is capped like the session.
                    rebalance_timeout: Duration::from_millis(rebalance_timeout.max(1) as u64)
                        .min(self.limits.max_session_timeout),
                    last_seen: Instant::now(),
                    assignment: Bytes::new(),
                },
            );
            let (tx, rx) = oneshot::channel();
            group.join_waiters.retain(|(id, _)| id != &member_id);
            group.join_waiters.push((member_id.clone(), tx));
            // A new member, or a known one rejoining a settled group, starts a rebalance.
            if group.state != GroupState::PreparingRebalance {
                self.start_rebalance(&group_id, group);
            }
            if group
                .members
                .keys()
                .all(|id| group.join_waiters.iter().any(|(w, _)| w == id))
            {
                complete_rebalance(group);
            }
            rx
        };
        let mut response = rx.await.unwrap_or_else(|_| {
            JoinGroupResponse::default()
                .with_error_code(REBALANCE_IN_PROGRESS)
                .with_generation_id(-1)
        });
        if version < 7 && response.protocol_name.is_none() {
            response.protocol_name = Some(s(""));
        }
        if version < 7 {
            response.protocol_type = None;
        }
        if version < 5 {
            for member in &mut response.members {
                member.group_instance_id = None;
            }
        }
        response
    }

    /// SyncGroup: the leader hands out assignments; followers wait for theirs.
    pub async fn sync(&self, request: SyncGroupRequest, version: i16) -> SyncGroupResponse {
        let group_id = request.group_id.to_string();
        let member_id = request.member_id.to_string();
        if eddy_storage::is_internal_group(&group_id) {
            return SyncGroupResponse::default().with_error_code(INVALID_GROUP_ID);
        }
        let rx = {
            let mut groups = self.groups.lock();
            let Some(group) = groups.get_mut(&group_id) else {
                return SyncGroupResponse::default().with_error_code(UNKNOWN_MEMBER_ID);
            };
            if !group.members.contains_key(&member_id) {
                return SyncGroupResponse::default().with_error_code(UNKNOWN_MEMBER_ID);
            }
            if request.generation_id != group.generation {
                return SyncGroupResponse::default().with_error_code(ILLEGAL_GENERATION);
            }
            if group.state == GroupState::PreparingRebalance {
                return SyncGroupResponse::default().with_error_code(REBALANCE_IN_PROGRESS);
            }
            if let Some(m) = group.members.get_mut(&member_id) {
                m.last_seen = Instant::now();
            }
            if group.leader.as_deref() == Some(member_id.as_str())
                && group.state == GroupState::CompletingRebalance
            {
                for assignment in &request.assignments {
                    if let Some(m) = group.members.get_mut(assignment.member_id.as_str()) {
                        m.assignment = assignment.assignment.clone();
                    }
                }
                group.state = GroupState::Stable;
                for (id, waiter) in group.sync_waiters.drain(..) {
                    let assignment = group
                        .members
                        .get(&id)
                        .map(|m| m.assignment.clone())
                        .unwrap_or_default();
                    let _ = waiter.send(sync_response(
                        group.protocol.as_deref(),
                        &group.protocol_type,
                        assignment,
                        version,
                    ));
                }
            }
            if group.state == GroupState::Stable {
                let assignment = group
                    .members
                    .get(&member_id)
                    .map(|m| m.assignment.clone())
                    .unwrap_or_default();
                return sync_response(
                    group.protocol.as_deref(),
                    &group.protocol_type,
                    assignment,
                    version,
                );
            }
            let (tx, rx) = oneshot::channel();
            group.sync_waiters.push((member_id, tx));
            rx
        };
        rx.await
            .unwrap_or_else(|_| SyncGroupResponse::default().with_error_code(REBALANCE_IN_PROGRESS))
    }

    /// Whether a transactional offset commit's consumer group metadata (KIP-447) is current:
    /// `None` when its member belongs to the group at its generation (or it names neither, as
    /// producers before KIP-447 send it), else Kafka's error, which fences a zombie that
    /// missed a rebalance.
    pub fn check_transactional_member(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
    ) -> Option<i16> {
        let groups = self.groups.lock();
        let group = groups.get(group);
        if !member_id.is_empty() && !group.is_some_and(|g| g.members.contains_key(member_id)) {
            return Some(UNKNOWN_MEMBER_ID);
        }
        if generation >= 0 && group.is_none_or(|g| g.generation != generation) {
            return Some(ILLEGAL_GENERATION);
        }
        None
    }

    /// Heartbeat: keeps a member alive and tells it when to rejoin.
    pub fn heartbeat(&self, request: &HeartbeatRequest) -> HeartbeatResponse {
        if eddy_storage::is_internal_group(&request.group_id) {
            return HeartbeatResponse::default().with_error_code(INVALID_GROUP_ID);
        }
        let mut groups = self.groups.lock();
        let code = match groups.get_mut(request.group_id.as_str()) {
            None => UNKNOWN_MEMBER_ID,
            Some(group) => match group.members.get_mut(request.member_id.as_str()) {
                None => UNKNOWN_MEMBER_ID,
                Some(member) => {
                    member.last_seen = Instant::now();
                    if group.state == GroupState::PreparingRebalance {
                        REBALANCE_IN_PROGRESS
                    } else if request.generation_id != group.generation {
                        ILLEGAL_GENERATION
                    } else {
                        NONE
                    }
                }
            },
        };
        HeartbeatResponse::default().with_error_code(code)
    }

    /// LeaveGroup: removes members and rebalances the rest.
    pub fn leave(
        self: &Arc<Self>,
        request: &LeaveGroupRequest,
        version: i16,
    ) -> LeaveGroupResponse {
        let leaving: Vec<String> = if version >= 3 {
            request
                .members
                .iter()
                .map(|m| m.member_id.to_string())
                .collect()
        } else {
            vec![request.member_id.to_string()]
        };
        let mut groups = self.groups.lock();
        let mut results = Vec::new();
        let mut code = NONE;
        if let Some(group) = groups.get_mut(request.group_id.as_str()) {
            for id in &leaving {
                let found = group.members.remove(id).is_some();
                group.join_waiters.retain(|(w, _)| w != id);
                results.push(
                    MemberResponse::default()
                        .with_member_id(s(id))
                        .with_error_code(if found { NONE } else { UNKNOWN_MEMBER_ID }),
                );
                if !found && version < 3 {
                    code = UNKNOWN_MEMBER_ID;
                }
            }
            self.start_rebalance(request.group_id.as_str(), group);
        } else if version < 3 {
            code = UNKNOWN_MEMBER_ID;
        }
        let response = LeaveGroupResponse::default().with_error_code(code);
        if version >= 3 {
            response.with_members(results)
        } else {
            response
        }
    }

    /// ListGroups: every group with members, and every group that committed offsets.
    pub fn list(&self) -> ListGroupsResponse {
        let groups = self.groups.lock();
        let mut listed: BTreeMap<String, String> = groups
            .iter()
            .map(|(name, g)| (name.clone(), g.protocol_type.clone()))
            .collect();
        for name in self.store.list_groups().unwrap_or_default() {
            listed.entry(name).or_insert_with(|| "consumer".to_string());
        }
        ListGroupsResponse::default().with_groups(
            listed
                .into_iter()
                .map(|(name, protocol_type)| {
                    ListedGroup::default()
                        .with_group_id(GroupId(s(&name)))
                        .with_protocol_type(s(&protocol_type))
                })
                .collect(),
        )
    }

    /// DescribeGroups: state, protocol and members (with their assignments) of each group.
    pub fn describe(&self, request: &DescribeGroupsRequest) -> DescribeGroupsResponse {
        let groups = self.groups.lock();
        let described = request
            .groups
            .iter()
            .map(|id| {
                let described = DescribedGroup::default().with_group_id(id.clone());
                match groups.get(id.as_str()) {
                    None => described.with_group_state(s("Dead")),
                    Some(group) => described
                        .with_group_state(s(group.state.name()))
                        .with_protocol_type(s(&group.protocol_type))
                        .with_protocol_data(s(group.protocol.as_deref().unwrap_or("")))
                        .with_members(
                            group
                                .members
                                .iter()
                                .map(|(member_id, m)| {
                                    let metadata = m
                                        .protocols
                                        .iter()
                                        .find(|(n, _)| {
                                            Some(n.as_str()) == group.protocol.as_deref()
                                        })
                                        .map(|(_, md)| md.clone())
                                        .unwrap_or_default();
                                    DescribedGroupMember::default()
                                        .with_member_id(s(member_id))
                                        .with_client_id(s(&m.client_id))
                                        .with_client_host(s("/127.0.0.1"))
                                        .with_member_metadata(metadata)
                                        .with_member_assignment(m.assignment.clone())
                                })
                                .collect(),
                        ),
                }
            })
            .collect();
        DescribeGroupsResponse::default().with_groups(described)
    }

    /// OffsetCommit: stores positions, which OffsetFetch returns.
    pub async fn commit(&self, request: &OffsetCommitRequest) -> OffsetCommitResponse {
        let group = request.group_id.to_string();
        let now = eddy_storage::now_ms();
        // A query's own group moves only with the query's output, in one commit; an offset
        // written from outside would make it skip or repeat input.
        let group_code = if group.is_empty() || eddy_storage::is_internal_group(&group) {
            Some(INVALID_GROUP_ID)
        } else {
            None
        };
        let mut topics = Vec::new();
        for topic in &request.topics {
            let name = topic.name.to_string();
            let mut partitions = Vec::new();
            for p in &topic.partitions {
                let offset = GroupOffset {
                    topic: name.clone(),
                    partition: p.partition_index.max(0) as u32,
                    offset: OffsetAndMetadata {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p
                            .committed_metadata
                            .as_ref()
                            .map(|m| m.to_string())
                            .unwrap_or_default(),
                        commit_timestamp: now,
                    },
                };
                let metadata_bytes = p.committed_metadata.as_ref().map_or(0, |m| m.len());
                let code = if let Some(code) = group_code {
                    code
                } else if metadata_bytes > self.limits.max_offset_metadata_bytes {
                    OFFSET_METADATA_TOO_LARGE
                } else if p.partition_index < 0 {
                    UNKNOWN_TOPIC_OR_PARTITION
                } else {
                    match self.store.commit_offsets(&group, vec![offset]).await {
                        Ok(()) => NONE,
                        Err(
                            StorageError::UnknownTopic(_) | StorageError::UnknownPartition { .. },
                        ) => UNKNOWN_TOPIC_OR_PARTITION,
                        // As Kafka answers when it cannot write the offsets topic: clients retry.
                        Err(e) => {
                            tracing::warn!(group = %group, error = %e, "cannot store committed offsets");
                            COORDINATOR_NOT_AVAILABLE
                        }
                    }
                };
                partitions.push(
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code),
                );
            }
            topics.push(
                OffsetCommitResponseTopic::default()
                    .with_name(topic.name.clone())
                    .with_partitions(partitions),
            );
        }
        OffsetCommitResponse::default().with_topics(topics)
    }

    /// OffsetFetch: committed positions, -1 where none was committed.
    pub fn fetch(&self, request: &OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
        let group = request.group_id.to_string();
        let wanted: Vec<(String, Vec<i32>)> = match &request.topics {
            Some(topics) => topics
                .iter()
                .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
                .collect(),
            None => {
                let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
                for o in self.store.fetch_group_offsets(&group).unwrap_or_default() {
                    by_topic
                        .entry(o.topic)
                        .or_default()
                        .push(o.partition as i32);
                }
                by_topic.into_iter().collect()
            }
        };
        let topics = wanted
            .into_iter()
            .map(|(name, partitions)| {
                let partitions = partitions
                    .into_iter()
                    .map(|p| {
                        let committed = u32::try_from(p).ok().and_then(|index| {
                            self.store.fetch_offset(&group, &name, index).ok().flatten()
                        });
                        let response =
                            OffsetFetchResponsePartition::default().with_partition_index(p);
                        match committed {
                            Some(o) => response
                                .with_committed_offset(o.offset)
                                .with_committed_leader_epoch(if version >= 5 {
                                    o.leader_epoch
                                } else {
                                    -1
                                })
                                .with_metadata(Some(s(&o.metadata))),
                            None => response
                                .with_committed_offset(-1)
                                .with_metadata(Some(s(""))),
                        }
                    })
                    .collect();
                OffsetFetchResponseTopic::default()
                    .with_name(TopicName(s(&name)))
                    .with_partitions(partitions)
            })
            .collect();
        OffsetFetchResponse::default().with_topics(topics)
    }
}

fn sync_response(
    protocol: Option<&str>,
    protocol_type: &str,
    assignment: Bytes,
    version: i16,
) -> SyncGroupResponse {
    let response = SyncGroupResponse::default().with_assignment(assignment);
    if version >= 5 {
        response
            .with_protocol_type(Some(s(protocol_type)))
            .with_protocol_name(protocol.map(s))
    } else {
        response
    }
}

/// Ends a rebalance: a new generation, a protocol every member supports, a leader, and a
/// JoinGroup answer for every waiting member (the leader also gets everyone's metadata).
fn complete_rebalance(group: &mut Group) {
    if group.members.is_empty() {
        group.state = GroupState::Empty;
        group.join_waiters.clear();
        return;
    }
    group.generation += 1;
    // Each member's session starts afresh with the join's answer.
    let now = Instant::now();
    for member in group.members.values_mut() {
        member.last_seen = now;
    }
    let first = group.members.values().next();
    let protocol = first
        .and_then(|m| {
            m.protocols
                .iter()
                .map(|(name, _)| name.clone())
                .find(|name| {
                    group
                        .members
                        .values()
                        .all(|o| o.protocols.iter().any(|(n, _)| n == name))
                })
        })
        .unwrap_or_default();
    let leader = match &group.leader {
        Some(leader) if group.members.contains_key(leader) => leader.clone(),
        _ => group.members.keys().next().cloned().unwrap_or_default(),
    };
    group.protocol = Some(protocol.clone());
    group.leader = Some(leader.clone());
    group.state = GroupState::CompletingRebalance;
    let members: Vec<JoinGroupResponseMember> = group
        .members
        .iter()
        .map(|(id, m)| {
            let metadata = m
                .protocols
                .iter()
                .find(|(n, _)| *n == protocol)
                .map(|(_, md)| md.clone())
                .unwrap_or_default();
            JoinGroupResponseMember::default()
                .with_member_id(s(id))
                .with_group_instance_id(m.group_instance_id.clone())
                .with_metadata(metadata)
        })
        .collect();
    for (id, waiter) in group.join_waiters.drain(..) {
        let response = JoinGroupResponse::default()
            .with_generation_id(group.generation)
            .with_protocol_type(Some(s(&group.protocol_type)))
            .with_protocol_name(Some(s(&protocol)))
            .with_leader(s(&leader))
            .with_member_id(s(&id))
            .with_members(if id == leader {
                members.clone()
            } else {
                Vec::new()
            });
        let _ = waiter.send(response);
    }
}
