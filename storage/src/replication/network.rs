//! Raft's messages between replicas, over TCP (or mutual TLS): each request and each answer is
//! one frame: its length (4 bytes, big-endian), the length of its message (the same), the
//! message in MessagePack (`rmp-serde`), then the bytes of the batches the message carries,
//! which it names by their lengths (`payloads.rs`). A
//! replica keeps one connection to each peer and sends its requests one at a time, as openraft
//! sends them. With TLS, a node accepts only peers whose certificate the CA signed, and checks
//! the certificate of each node it connects to against the host in its address, so a node
//! outside the group can neither vote nor send a snapshot.
//!
//! Every frame also carries its sender's id and where it serves clients (its entry in the
//! [`Directory`]), and a leader's frames its in-sync replicas and every node's entry, so the
//! leader learns its followers' addresses from their answers and each follower learns every
//! node's addresses and the ISR from the leader's heartbeats, with no messages of their own.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tracing::{debug, warn};

use super::log_store::{decode, encode_into, recycle};
use super::payloads;
use super::types::{NodeId, TypeConfig};

/// The largest frame read: a few of the biggest group commits (32 MiB each) in one append.
pub(super) const MAX_FRAME_BYTES: u32 = 320 << 20;
/// Connections served at once; peers need one or two each, the rest are refused.
const MAX_CONNECTIONS: usize = 128;
/// How long a connection may go without a whole request before it is closed: peers send one
/// at least every heartbeat (300 ms), so only a stuck or hostile one waits this long.
const IDLE: Duration = Duration::from_secs(10);

/// The most bytes of a node's client addresses kept in the directory; a longer entry is ignored.
const MAX_ADVERTISED_BYTES: usize = 4096;

/// The most nodes an ISR heard from a peer may name; a longer one is ignored.
const MAX_TOLD_ISR: usize = 64;

/// How long a peer has to finish the TLS handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// Mutual TLS between the nodes: how this node accepts its peers (requiring a certificate its
/// CA signed) and how it connects to them (presenting its own, and checking theirs).
#[derive(Clone)]
pub struct ReplicationTls {
    /// Accepts peers' connections.
    pub acceptor: TlsAcceptor,
    /// Connects to peers.
    pub connector: TlsConnector,
}

impl std::fmt::Debug for ReplicationTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplicationTls")
    }
}

/// A connection to or from a peer, plain or over TLS.
trait Link: AsyncRead + AsyncWrite + Unpin + Send + Sync {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Link for T {}

type Stream = Box<dyn Link>;

/// Connects to `address` (`host:port`), over TLS when `tls` is given, checking the peer's
/// certificate against the host.
async fn connect(address: &str, tls: Option<&TlsConnector>) -> std::io::Result<Stream> {
    let stream = TcpStream::connect(address).await?;
    let _ = stream.set_nodelay(true);
    let Some(connector) = tls else {
        return Ok(Box::new(stream));
    };
    let host = address
        .rsplit_once(':')
        .map_or(address, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let name = ServerName::try_from(host.to_string()).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{host} cannot name a TLS peer: {e}"),
        )
    })?;
    Ok(Box::new(connector.connect(name, stream).await?))
}

/// Where each node serves its clients, as it last said: an entry the server writes and reads
/// (the storage layer does not look inside), by node id.
pub(super) type Directory = std::sync::Arc<parking_lot::Mutex<BTreeMap<NodeId, String>>>;

/// A message, with who sent it, where the sender serves clients, and, from a leader, its ISR
/// and every node's addresses it heard (followers do not talk to each other).
#[derive(Serialize, Deserialize)]
struct Envelope<M> {
    from: NodeId,
    advertised: String,
    isr: Vec<NodeId>,
    directory: BTreeMap<NodeId, String>,
    message: M,
}

/// The in-sync replicas this node tells (while it leads) and last heard (from a leader).
#[derive(Debug, Default)]
pub(super) struct Isr {
    /// This node's ISR while it leads; empty otherwise.
    pub(super) told: Vec<NodeId>,
    /// The last ISR a leader sent, and which node sent it.
    pub(super) heard: Option<(NodeId, Vec<NodeId>)>,
}

/// This node's side of the directory: its id, the entries it keeps, and the ISR it tells or
/// heard.
#[derive(Clone)]
pub(super) struct Addresses {
    pub(super) id: NodeId,
    pub(super) directory: Directory,
    pub(super) isr: std::sync::Arc<parking_lot::Mutex<Isr>>,
}

impl Addresses {
    fn wrap<M>(&self, message: M) -> Envelope<M> {
        let advertised = self
            .directory
            .lock()
            .get(&self.id)
            .cloned()
            .unwrap_or_default();
        let isr = self.isr.lock().told.clone();
        let directory = if isr.is_empty() {
            BTreeMap::new()
        } else {
            self.directory.lock().clone()
        };
        Envelope {
            from: self.id,
            advertised,
            isr,
            directory,
            message,
        }
    }

    /// Notes what `envelope`'s sender said of itself, and takes its message.
    fn unwrap<M>(&self, envelope: Envelope<M>) -> M {
        let Envelope {
            from,
            advertised,
            isr,
            directory,
            message,
        } = envelope;
        if from == self.id {
            return message;
        }
        let fits = |entry: &String| !entry.is_empty() && entry.len() <= MAX_ADVERTISED_BYTES;
        let mut known = self.directory.lock();
        if fits(&advertised) {
            known.insert(from, advertised);
        }
        if !isr.is_empty() && isr.len() <= MAX_TOLD_ISR && directory.len() <= MAX_TOLD_ISR {
            // A leader heard every node itself; a node's own word on itself stays its own.
            for (id, entry) in directory {
                if id != self.id && id != from && fits(&entry) {
                    known.insert(id, entry);
                }
            }
            self.isr.lock().heard = Some((from, isr));
        }
        message
    }
}

#[derive(Serialize, Deserialize)]
enum Request {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
}

impl Request {
    /// About how many bytes the request's message takes, encoded: its snapshot chunk's, or a
    /// few for each entry (whose batches follow the message).
    fn size(&self) -> usize {
        SMALL_FRAME_BYTES
            + match self {
                Request::Append(rpc) => rpc.entries.len() * ENTRY_BYTES,
                Request::Vote(_) => 0,
                Request::Snapshot(rpc) => rpc.data.len(),
            }
    }
}

/// What an entry takes in a message, about, its batch apart.
const ENTRY_BYTES: usize = 64;

/// What a frame without entries or snapshot data takes, about.
const SMALL_FRAME_BYTES: usize = 1024;

/// The most bytes reserved for a frame before its bytes arrive: one big group commit's worth,
/// so most frames are read without growing their buffer (smaller ones share it), and a length
/// alone (a hostile one, say) reserves no more.
const FRAME_RESERVED: usize = 4 << 20;

#[derive(Serialize, Deserialize)]
enum Response {
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
}

/// A frame read: its message, and the bytes of the batches the message names.
struct Frame {
    message: Bytes,
    batches: Bytes,
}

impl Frame {
    /// Decodes the frame's message, its batches slices of the frame (not copies).
    fn decode<T: serde::de::DeserializeOwned>(&self) -> std::io::Result<T> {
        payloads::decode_apart(self.batches.clone(), || decode::<T>(&self.message))
            .map_err(|e| invalid(format!("not a replication message: {e}")))
    }
}

fn invalid(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

/// Reads one frame, into `buffer`'s memory; `None` when the peer closed the connection
/// between frames. The buffer grows with what arrives, so a length alone reserves little, and
/// its memory is used again once no frame read into it is held any more.
async fn read_frame<S: AsyncRead + Unpin + ?Sized>(
    stream: &mut S,
    buffer: &mut BytesMut,
) -> std::io::Result<Option<Frame>> {
    let len = match stream.read_u32().await {
        Ok(len) => len,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    };
    if !(4..=MAX_FRAME_BYTES).contains(&len) {
        return Err(invalid(format!(
            "a frame of {len} bytes is outside the bounds of 4 to {MAX_FRAME_BYTES}"
        )));
    }
    let len = len as usize;
    buffer.clear();
    let mut rest = (&mut *stream).take(len as u64);
    while buffer.len() < len {
        if buffer.capacity() == buffer.len() {
            // Room for what arrived so far again, at least a big group commit's worth.
            let more = buffer.len().max(FRAME_RESERVED).min(len - buffer.len());
            buffer.reserve(more);
        }
        if rest.read_buf(buffer).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    let frame = buffer.split().freeze();
    let message_len = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
    if message_len > len - 4 {
        return Err(invalid(format!(
            "a frame of {len} bytes says its message takes {message_len}"
        )));
    }
    Ok(Some(Frame {
        message: frame.slice(4..4 + message_len),
        batches: frame.slice(4 + message_len..),
    }))
}

/// Encodes `message` into `frame` (making room for about `size` bytes of it to begin with),
/// the two lengths first: what is to be written, but for the batches it returns, which follow.
fn framed<M: Serialize>(
    frame: &mut Vec<u8>,
    message: &M,
    size: usize,
) -> std::io::Result<Vec<Bytes>> {
    recycle(frame);
    frame.reserve(8 + size);
    frame.extend_from_slice(&[0; 8]);
    let (encoded, batches) = payloads::encode_apart(|| encode_into(frame, message));
    encoded.map_err(std::io::Error::other)?;
    let message_len = frame.len() - 8;
    let len = 4 + message_len + batches.iter().map(Bytes::len).sum::<usize>();
    let too_big = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("a frame of {len} bytes is over the limit of {MAX_FRAME_BYTES}"),
        )
    };
    let len = u32::try_from(len)
        .ok()
        .filter(|len| *len <= MAX_FRAME_BYTES)
        .ok_or_else(too_big)?;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    frame[4..8].copy_from_slice(&(message_len as u32).to_be_bytes());
    Ok(batches)
}

/// Writes a frame [`framed`] encoded: its start, then its batches, each from its own memory.
async fn write_frame<S: AsyncWrite + Unpin + ?Sized>(
    stream: &mut S,
    frame: &[u8],
    batches: &[Bytes],
) -> std::io::Result<()> {
    stream.write_all(frame).await?;
    for batch in batches {
        stream.write_all(batch).await?;
    }
    stream.flush().await
}

/// Serves the peers' requests to `raft` until `stop` turns true.
pub(super) async fn serve(
    (listener, tls): (TcpListener, Option<TlsAcceptor>),
    raft: Raft<TypeConfig>,
    addresses: Addresses,
    mut stop: watch::Receiver<bool>,
) {
    let slots = std::sync::Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "accepting a replica's connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            warn!(%peer, "too many connections to the replication listener; refusing one");
            continue;
        };
        let (raft, addresses, mut stop) = (raft.clone(), addresses.clone(), stop.clone());
        let tls = tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _ = stream.set_nodelay(true);
            let mut stream: Stream = match tls {
                None => Box::new(stream),
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => Box::new(stream),
                        Ok(Err(e)) => {
                            warn!(%peer, error = %e, "a connection to the replication listener failed its TLS handshake");
                            return;
                        }
                        Err(_) => {
                            warn!(%peer, "a connection to the replication listener did not finish its TLS handshake");
                            return;
                        }
                    }
                }
            };
            tokio::select! {
                served = answer(&mut stream, &raft, &addresses) => if let Err(e) = served {
                    debug!(%peer, error = %e, "a replica's connection ended");
                },
                _ = stop.changed() => {}
            }
        });
    }
}

/// Answers one connection's requests in turn.
async fn answer(
    stream: &mut Stream,
    raft: &Raft<TypeConfig>,
    addresses: &Addresses,
) -> std::io::Result<()> {
    let (mut buffer, mut answer) = (BytesMut::new(), Vec::new());
    loop {
        let frame = match tokio::time::timeout(IDLE, read_frame(stream, &mut buffer)).await {
            Ok(frame) => frame?,
            Err(_) => return Err(std::io::ErrorKind::TimedOut.into()),
        };
        let Some(frame) = frame else {
            return Ok(());
        };
        let request: Envelope<Request> = frame.decode()?;
        drop(frame);
        let response = match addresses.unwrap(request) {
            Request::Append(rpc) => Response::Append(raft.append_entries(rpc).await),
            Request::Vote(rpc) => Response::Vote(raft.vote(rpc).await),
            Request::Snapshot(rpc) => Response::Snapshot(raft.install_snapshot(rpc).await),
        };
        let batches = framed(&mut answer, &addresses.wrap(response), SMALL_FRAME_BYTES)?;
        write_frame(stream, &answer, &batches).await?;
    }
}

/// When each peer last answered this node, in ms on the ISR's clock (`isr::clock_ms`).
pub(super) type Answered = std::sync::Arc<parking_lot::Mutex<BTreeMap<NodeId, u64>>>;

/// Makes a [`Peer`] for each node Raft talks to.
pub struct Network {
    /// Shared by every peer, for the leader's count of in-sync followers.
    pub(super) answered: Answered,
    pub(super) addresses: Addresses,
    /// This node's snapshots, so a replaced one is not sent.
    pub(super) snapshots: std::sync::Arc<super::snapshot::Snapshots>,
    /// How to connect to peers over TLS, when the group uses it.
    pub(super) tls: Option<TlsConnector>,
    /// Where this node reaches each peer (its `--peers`), which may differ from the address
    /// the membership holds (another node's view, through a snapshot or the log).
    pub(super) peers: BTreeMap<NodeId, String>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer {
            target,
            address: self
                .peers
                .get(&target)
                .cloned()
                .unwrap_or_else(|| node.addr.clone()),
            stream: None,
            buffers: Default::default(),
            answered: self.answered.clone(),
            addresses: self.addresses.clone(),
            snapshots: self.snapshots.clone(),
            tls: self.tls.clone(),
        }
    }
}

/// The connection to one peer, made when first needed and again after it fails.
pub struct Peer {
    target: NodeId,
    address: String,
    stream: Option<Stream>,
    /// The frame sent and the one received, kept from call to call.
    buffers: (Vec<u8>, BytesMut),
    answered: Answered,
    addresses: Addresses,
    snapshots: std::sync::Arc<super::snapshot::Snapshots>,
    tls: Option<TlsConnector>,
}

/// Why a call did not get an answer.
enum CallError {
    /// No connection could be made.
    Unreachable(std::io::Error),
    /// The connection failed, or the answer was not one.
    Network(std::io::Error),
}

impl Peer {
    async fn call(&mut self, request: Request, ttl: Duration) -> Result<Response, CallError> {
        let size = request.size();
        let (sent, received) = &mut self.buffers;
        let batches =
            framed(sent, &self.addresses.wrap(request), size).map_err(CallError::Network)?;
        // The connection is held outside `self` while in use: a call that fails, times out, or
        // is dropped midway (openraft drops an RPC past its time) may leave half a frame on it,
        // so it goes back only after a whole answer.
        let fresh = self.stream.is_none();
        let mut stream = match self.stream.take() {
            Some(stream) => stream,
            None => {
                let connect = connect(&self.address, self.tls.as_ref());
                tokio::time::timeout(ttl, connect)
                    .await
                    .map_err(|_| CallError::Unreachable(std::io::ErrorKind::TimedOut.into()))?
                    .map_err(CallError::Unreachable)?
            }
        };
        let exchange = async {
            write_frame(&mut stream, sent, &batches).await?;
            read_frame(&mut stream, received)
                .await?
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))
        };
        let answered = match tokio::time::timeout(ttl, exchange).await {
            Ok(answered) => answered,
            Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
        };
        // A connection made for this call that fails before answering is a peer this node
        // cannot reach (another program on its port, or a network that drops): openraft
        // retries a network error at once, hundreds of times a second, but backs off from an
        // unreachable peer.
        let frame = answered.map_err(|e| {
            if fresh {
                CallError::Unreachable(e)
            } else {
                CallError::Network(e)
            }
        })?;
        drop(batches);
        let response: Envelope<Response> = frame.decode().map_err(CallError::Network)?;
        if response.from != self.target {
            return Err(CallError::Network(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "node {} answered at {}, where node {} was expected",
                    response.from, self.address, self.target
                ),
            )));
        }
        let response = self.addresses.unwrap(response);
        self.stream = Some(stream);
        self.answered
            .lock()
            .insert(self.target, super::isr::clock_ms());
        Ok(response)
    }

    /// Sends `request` and takes the answer `pick` finds in the response.
    async fn exchange<T, E>(
        &mut self,
        request: Request,
        option: &RPCOption,
        pick: impl FnOnce(Response) -> Option<Result<T, RaftError<NodeId, E>>>,
    ) -> Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        E: std::error::Error,
    {
        match self.call(request, option.hard_ttl()).await {
            Ok(response) => match pick(response) {
                Some(Ok(answer)) => Ok(answer),
                Some(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
                None => Err(RPCError::Network(NetworkError::new(&std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "the peer answered another request",
                )))),
            },
            Err(CallError::Unreachable(e)) => Err(RPCError::Unreachable(Unreachable::new(&e))),
            Err(CallError::Network(e)) => Err(RPCError::Network(NetworkError::new(&e))),
        }
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.exchange(Request::Append(rpc), &option, |r| match r {
            Response::Append(answer) => Some(answer),
            _ => None,
        })
        .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        // openraft retries a snapshot it could not send (the follower was down) with the same
        // one: by the time the follower is back, a newer one may have replaced it, and the
        // follower would install the old one only to be behind the purged log again. Failing
        // the send makes openraft start over with the current snapshot.
        if rpc.offset == 0 && self.snapshots.is_replaced(&rpc.meta) {
            return Err(RPCError::Network(NetworkError::new(
                &std::io::Error::other(format!(
                    "snapshot {} was replaced by a newer one before it was sent",
                    rpc.meta.snapshot_id
                )),
            )));
        }
        self.exchange(Request::Snapshot(rpc), &option, |r| match r {
            Response::Snapshot(answer) => Some(answer),
            _ => None,
        })
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.exchange(Request::Vote(rpc), &option, |r| match r {
            Response::Vote(answer) => Some(answer),
            _ => None,
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::types::{Batch, Entry, LogId};

    fn append(batches: &[&'static [u8]]) -> Request {
        let entries = batches
            .iter()
            .enumerate()
            .map(|(n, bytes)| Entry {
                log_id: LogId::new(openraft::CommittedLeaderId::new(2, 1), n as u64 + 1),
                payload: openraft::EntryPayload::Normal(Batch {
                    term: 2,
                    bytes: Bytes::from_static(bytes),
                }),
            })
            .collect();
        Request::Append(AppendEntriesRequest {
            vote: openraft::Vote::new_committed(2, 1),
            prev_log_id: None,
            entries,
            leader_commit: None,
        })
    }

    /// The bytes `request` goes over the wire as.
    async fn wire(request: &Request) -> Vec<u8> {
        let mut frame = Vec::new();
        let batches = framed(&mut frame, request, request.size()).expect("framed");
        let mut wire = Vec::new();
        write_frame(&mut wire, &frame, &batches)
            .await
            .expect("written");
        wire
    }

    #[tokio::test]
    async fn an_append_crosses_with_its_batches_as_slices_of_the_frame_read() {
        let wire = wire(&append(&[b"one group commit", b"", b"another"])).await;
        let mut buffer = BytesMut::new();
        let mut reading = &wire[..];
        let frame = read_frame(&mut reading, &mut buffer)
            .await
            .expect("read")
            .expect("a frame");
        assert_eq!(&frame.batches[..], b"one group commitanother");
        let Request::Append(rpc) = frame.decode::<Request>().expect("decoded") else {
            panic!("not an append");
        };
        let batches: Vec<Bytes> = rpc
            .entries
            .iter()
            .map(|entry| match &entry.payload {
                openraft::EntryPayload::Normal(batch) => batch.bytes.clone(),
                _ => panic!("not a batch"),
            })
            .collect();
        assert_eq!(batches, [&b"one group commit"[..], b"", b"another"]);
        assert_eq!(batches[0].as_ptr(), frame.batches.as_ptr());
        // The connection ends between frames: no frame, and no error.
        assert!(
            read_frame(&mut reading, &mut buffer)
                .await
                .expect("read")
                .is_none()
        );
    }

    #[tokio::test]
    async fn frames_that_do_not_add_up_are_refused() {
        let whole = wire(&append(&[b"0123456789"])).await;
        let mut message_too_long = whole.clone();
        message_too_long[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        let mut batch_cut = whole.clone();
        batch_cut.truncate(whole.len() - 3);
        let cut_len = (batch_cut.len() - 4) as u32;
        batch_cut[..4].copy_from_slice(&cut_len.to_be_bytes());
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "shorter than its own lengths",
                [&3u32.to_be_bytes()[..], b"abc"].concat(),
                "outside the bounds",
            ),
            (
                "over the limit",
                (MAX_FRAME_BYTES + 1).to_be_bytes().to_vec(),
                "outside the bounds",
            ),
            (
                "a message longer than its frame",
                message_too_long,
                "says its message takes",
            ),
            (
                "a batch past the frame's end",
                batch_cut,
                "runs past the end",
            ),
            (
                "cut short",
                whole[..whole.len() - 1].to_vec(),
                "unexpected end of file",
            ),
        ];
        for (case, bytes, error) in cases {
            let mut buffer = BytesMut::new();
            let read = async {
                read_frame(&mut &bytes[..], &mut buffer)
                    .await?
                    .ok_or_else(|| std::io::Error::other("no frame"))?
                    .decode::<Request>()
            };
            match read.await {
                Ok(_) => panic!("{case}: accepted"),
                Err(e) => assert!(e.to_string().contains(error), "{case}: {e}"),
            }
        }
    }
}
