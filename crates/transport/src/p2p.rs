//! libp2p transport: TCP + noise + yamux, one request-response protocol
//! ([`PROTOCOL_NAME`]) carrying [frames](crate::encode_frame) between a known set of peers.
//!
//! - **Identity.** Every node has an ed25519 key ([`Libp2pIdentity`]). Its [`NodeId`] is
//!   the 32-byte public key; its libp2p [`PeerId`] is derived from the same key, so the
//!   two map one-to-one ([`peer_id_of`]).
//! - **Authentication.** The sender of every inbound message is the peer the noise
//!   handshake authenticated, looked up in the known peer set. Frames carry no sender
//!   field. Connections from peers outside the known set are denied (allow-list), and any
//!   frame from an unknown peer that slips through is dropped with a warning.
//! - **Sessions.** Frames name their session; a [`SessionHub`] routes them (holding
//!   frames for sessions not opened yet, rejecting frames for finished sessions and from
//!   non-participants).
//! - **Limits.** The codec reads a 4-byte big-endian length and refuses a frame longer
//!   than `max_message_size + FRAME_HEADER_LEN` before allocating for it. Undecodable
//!   frames are logged and dropped ([`TransportError::MalformedFrame`]); the node goes on.
//! - **Reconnects.** Known peers are dialled at start and re-dialled with exponential
//!   backoff whenever no connection to them is open, so a restarted peer (same identity,
//!   same address) is reconnected. Messages to a peer that is not connected are queued
//!   (bounded, [`Libp2pConfig::max_queued_per_peer`]) and sent once it is.
//! - **Ordering.** Each message travels on its own yamux stream: messages between two
//!   peers may arrive out of order (protocols must tolerate reordering, as they must with
//!   [`crate::Fault::Reorder`]).
//! - **Delivery.** Best effort: a message is not retried once handed to a connection (a
//!   retry could duplicate it); it is retried only if the dial to send it failed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::identity;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::{dial_opts::DialOpts, NetworkBehaviour, SwarmEvent};
use libp2p::{allow_block_list, noise, tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// The libp2p crate this transport is built on (to build raw clients in tests and tools
/// with exactly the same version).
pub use ::libp2p;

use crate::frame::{decode_frame, encode_frame, FRAME_HEADER_LEN};
use crate::session::{SessionChannel, SessionHub, SessionSender};
use crate::{
    DeliveryKind, InboundMessage, NodeId, SessionConfig, SessionId, Transport, TransportError,
    MAX_MESSAGE_SIZE,
};

/// The request-response protocol carrying MPC frames.
pub const PROTOCOL_NAME: &str = "/tss-seq/mpc/1";

/// How long [`Libp2pTransport::start`] waits for the listener to come up.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the swarm task checks for peers due for a re-dial.
const REDIAL_TICK: Duration = Duration::from_millis(50);

// ---------------------------------------------------------------------------------------
// Identity
// ---------------------------------------------------------------------------------------

/// A node's ed25519 identity. Its `Debug` shows only the public [`NodeId`], never the
/// secret.
#[derive(Clone)]
pub struct Libp2pIdentity {
    keypair: identity::Keypair,
    node: NodeId,
}

impl Libp2pIdentity {
    /// The identity whose ed25519 secret key is `seed` (32 bytes). The copy of the seed
    /// taken by this function is zeroed; the caller owns (and should zeroize) its own.
    pub fn from_seed(mut seed: [u8; 32]) -> Result<Self, TransportError> {
        let keypair = identity::Keypair::ed25519_from_bytes(&mut seed)
            .map_err(|e| TransportError::Network(format!("invalid ed25519 seed: {e}")))?;
        Ok(Self::from_keypair_unchecked(keypair))
    }

    /// A fresh random identity.
    pub fn generate() -> Self {
        Self::from_keypair_unchecked(identity::Keypair::generate_ed25519())
    }

    fn from_keypair_unchecked(keypair: identity::Keypair) -> Self {
        let public = keypair
            .public()
            .try_into_ed25519()
            .expect("constructed from an ed25519 key");
        Self {
            node: NodeId::from_bytes(public.to_bytes()),
            keypair,
        }
    }

    /// The node id: the ed25519 public key.
    pub fn node_id(&self) -> NodeId {
        self.node
    }

    /// The libp2p peer id derived from the same public key.
    pub fn peer_id(&self) -> PeerId {
        self.keypair.public().to_peer_id()
    }
}

impl fmt::Debug for Libp2pIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Libp2pIdentity")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// The libp2p peer id of a node (its [`NodeId`] read as an ed25519 public key). Fails with
/// [`TransportError::InvalidNodeId`] if the bytes are not a valid ed25519 public key.
pub fn peer_id_of(node: &NodeId) -> Result<PeerId, TransportError> {
    let public = identity::ed25519::PublicKey::try_from_bytes(node.as_bytes())
        .map_err(|_| TransportError::InvalidNodeId(node.to_hex()))?;
    Ok(identity::PublicKey::from(public).to_peer_id())
}

// ---------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------

/// Configuration of a [`Libp2pTransport`]. [`Libp2pConfig::new`] fills in the defaults
/// documented on each field.
#[derive(Debug, Clone)]
pub struct Libp2pConfig {
    /// This node's ed25519 identity.
    pub identity: Libp2pIdentity,
    /// Where to listen, e.g. `/ip4/127.0.0.1/tcp/0` (port 0: any free port; see
    /// [`Libp2pTransport::listen_addrs`]).
    pub listen_addr: Multiaddr,
    /// The known peers and their addresses. Only these may connect and send; an entry for
    /// the local node itself is ignored. Default: empty.
    pub peers: Vec<(NodeId, Multiaddr)>,
    /// How long a sent message may wait for the receiver's acknowledgement. Default 30 s.
    pub request_timeout: Duration,
    /// Largest payload sent or accepted, in bytes. Default (and upper bound in effect,
    /// since sessions refuse larger payloads) [`MAX_MESSAGE_SIZE`].
    pub max_message_size: usize,
    /// First delay before re-dialling a peer that is unreachable or disconnected.
    /// Default 100 ms; doubles after each failed dial.
    pub redial_initial_backoff: Duration,
    /// Longest delay between re-dials. Default 5 s.
    pub redial_max_backoff: Duration,
    /// Messages held for one peer while it is not connected; more are dropped (and
    /// counted in [`Libp2pStats::dropped_queue_full`]). Default 4096.
    pub max_queued_per_peer: usize,
    /// Concurrent streams (messages in flight) per connection. Default 1024.
    pub max_concurrent_streams: usize,
    /// How long a connection with no traffic is kept open. Default 1 hour (a closed
    /// connection to a known peer is re-dialled anyway).
    pub idle_connection_timeout: Duration,
}

impl Libp2pConfig {
    /// A configuration with no peers and default limits.
    pub fn new(identity: Libp2pIdentity, listen_addr: Multiaddr) -> Self {
        Self {
            identity,
            listen_addr,
            peers: Vec::new(),
            request_timeout: Duration::from_secs(30),
            max_message_size: MAX_MESSAGE_SIZE,
            redial_initial_backoff: Duration::from_millis(100),
            redial_max_backoff: Duration::from_secs(5),
            max_queued_per_peer: 4096,
            max_concurrent_streams: 1024,
            idle_connection_timeout: Duration::from_secs(3600),
        }
    }

    /// Adds a known peer.
    pub fn with_peer(mut self, node: NodeId, addr: Multiaddr) -> Self {
        self.peers.push((node, addr));
        self
    }
}

// ---------------------------------------------------------------------------------------
// Codec
// ---------------------------------------------------------------------------------------

/// Acknowledgement of one frame (the response of the request-response protocol). It says
/// only whether the frame was routed; senders are not told why not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// The frame was decoded and handed to the session table.
    Accepted,
    /// The frame was refused (malformed, unknown or finished session, not a participant).
    Rejected,
}

/// The length-prefixed codec of [`PROTOCOL_NAME`]: a request is a 4-byte big-endian length
/// then that many bytes of frame; a response is one [`Ack`] byte.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max_frame_len: usize,
    /// Shared by all clones (libp2p clones the codec per connection).
    oversized: Arc<AtomicU64>,
}

impl FrameCodec {
    /// A codec that refuses (reading or writing) frames longer than `max_frame_len` bytes.
    pub fn new(max_frame_len: usize) -> Self {
        Self {
            max_frame_len,
            oversized: Arc::default(),
        }
    }

    /// How many inbound frames this codec (and its clones) refused for their length.
    pub fn oversized_frames(&self) -> u64 {
        self.oversized.load(Ordering::Relaxed)
    }

    /// The limit on frame length.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }
}

/// The I/O error a [`FrameCodec`] returns for a frame over its limit.
#[derive(Debug, thiserror::Error)]
#[error("frame of {len} bytes exceeds the limit of {limit} bytes")]
pub struct FrameTooLarge {
    /// Announced length of the frame.
    pub len: usize,
    /// The limit.
    pub limit: usize,
}

fn too_large(len: usize, limit: usize) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, FrameTooLarge { len, limit })
}

#[async_trait::async_trait]
impl request_response::Codec for FrameCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Ack;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut len = [0u8; 4];
        io.read_exact(&mut len).await?;
        let len = u32::from_be_bytes(len) as usize;
        // Refuse before allocating: the length is the peer's claim.
        if len > self.max_frame_len {
            bump(&self.oversized);
            tracing::warn!(
                len,
                limit = self.max_frame_len,
                "oversized inbound frame refused"
            );
            return Err(too_large(len, self.max_frame_len));
        }
        let mut frame = vec![0u8; len];
        io.read_exact(&mut frame).await?;
        Ok(frame)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Ack>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut byte = [0u8; 1];
        io.read_exact(&mut byte).await?;
        match byte[0] {
            0 => Ok(Ack::Accepted),
            1 => Ok(Ack::Rejected),
            other => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unknown ack byte {other}"),
            )),
        }
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        frame: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        if frame.len() > self.max_frame_len || frame.len() > u32::MAX as usize {
            return Err(too_large(frame.len(), self.max_frame_len));
        }
        io.write_all(&(frame.len() as u32).to_be_bytes()).await?;
        io.write_all(&frame).await?;
        io.flush().await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        ack: Ack,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let byte = match ack {
            Ack::Accepted => 0u8,
            Ack::Rejected => 1u8,
        };
        io.write_all(&[byte]).await?;
        io.flush().await
    }
}

/// A request-response behaviour speaking [`PROTOCOL_NAME`] with `codec` (for raw clients in
/// tests and tools; the transport builds its own).
pub fn frame_behaviour(
    codec: FrameCodec,
    request_timeout: Duration,
    max_concurrent_streams: usize,
) -> request_response::Behaviour<FrameCodec> {
    request_response::Behaviour::with_codec(
        codec,
        [(StreamProtocol::new(PROTOCOL_NAME), ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(request_timeout)
            .with_max_concurrent_streams(max_concurrent_streams),
    )
}

#[derive(NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
struct Behaviour {
    allow: allow_block_list::Behaviour<allow_block_list::AllowedPeers>,
    rr: request_response::Behaviour<FrameCodec>,
}

// ---------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------

/// Counters of a [`Libp2pTransport`] (since start).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Libp2pStats {
    /// Frames handed to a connection.
    pub frames_sent: u64,
    /// Frames read from connections (before any check).
    pub frames_received: u64,
    /// Frames accepted by the session table.
    pub frames_delivered: u64,
    /// Connections and frames refused because the peer is not in the known set.
    pub unknown_peer_refused: u64,
    /// Frames that did not decode ([`TransportError::MalformedFrame`] and oversized
    /// payloads inside a frame).
    pub malformed_frames: u64,
    /// Frames whose announced length exceeded the limit (refused before reading them).
    pub oversized_frames: u64,
    /// Frames refused by the session table (finished session, not a participant, backlog
    /// full).
    pub rejected_by_session: u64,
    /// Inbound requests that failed after being read (timeout, connection closed...).
    /// Frames that could not be read at all (oversized, cut short) are not counted here.
    pub inbound_failures: u64,
    /// Outbound messages that failed after being handed to a connection.
    pub outbound_failures: u64,
    /// Messages dropped because a disconnected peer's queue was full.
    pub dropped_queue_full: u64,
}

#[derive(Default)]
struct Counters {
    frames_sent: AtomicU64,
    frames_received: AtomicU64,
    frames_delivered: AtomicU64,
    unknown_peer_refused: AtomicU64,
    malformed_frames: AtomicU64,
    /// Shared with the [`FrameCodec`], which refuses oversized frames.
    oversized_frames: Arc<AtomicU64>,
    rejected_by_session: AtomicU64,
    inbound_failures: AtomicU64,
    outbound_failures: AtomicU64,
    dropped_queue_full: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    fn snapshot(&self) -> Libp2pStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Libp2pStats {
            frames_sent: get(&self.frames_sent),
            frames_received: get(&self.frames_received),
            frames_delivered: get(&self.frames_delivered),
            unknown_peer_refused: get(&self.unknown_peer_refused),
            malformed_frames: get(&self.malformed_frames),
            oversized_frames: get(&self.oversized_frames),
            rejected_by_session: get(&self.rejected_by_session),
            inbound_failures: get(&self.inbound_failures),
            outbound_failures: get(&self.outbound_failures),
            dropped_queue_full: get(&self.dropped_queue_full),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Transport handle
// ---------------------------------------------------------------------------------------

enum Command {
    Send {
        to: PeerId,
        frame: Vec<u8>,
    },
    AddPeer {
        peer: PeerId,
        node: NodeId,
        addr: Multiaddr,
    },
    Shutdown(oneshot::Sender<()>),
}

#[derive(Default)]
struct Shared {
    listen_addrs: Mutex<Vec<Multiaddr>>,
    connected: Mutex<HashSet<NodeId>>,
    counters: Counters,
}

struct Inner {
    hub: SessionHub,
    local_peer: PeerId,
    commands: mpsc::UnboundedSender<Command>,
    known: Arc<RwLock<HashMap<NodeId, PeerId>>>,
    max_message_size: usize,
    shared: Arc<Shared>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let (tx, _rx) = oneshot::channel();
        let _ = self.commands.send(Command::Shutdown(tx));
        if let Some(task) = self.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            task.abort();
        }
    }
}

/// A node on a libp2p network of known peers. Cheap to clone (all clones share one swarm);
/// the swarm stops on [`Libp2pTransport::shutdown`] or when the last clone is dropped.
#[derive(Clone)]
pub struct Libp2pTransport {
    inner: Arc<Inner>,
}

impl fmt::Debug for Libp2pTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Libp2pTransport")
            .field("node", &self.inner.hub.local_node())
            .field("peer_id", &self.inner.local_peer)
            .finish_non_exhaustive()
    }
}

impl Libp2pTransport {
    /// Starts the swarm on the current tokio runtime, listens on
    /// [`Libp2pConfig::listen_addr`], dials the known peers, and returns once listening.
    pub async fn start(config: Libp2pConfig) -> Result<Self, TransportError> {
        if config.max_message_size == 0 {
            return Err(TransportError::Network(
                "max_message_size must be positive".into(),
            ));
        }
        let local_node = config.identity.node_id();
        let local_peer = config.identity.peer_id();
        let mut known = HashMap::new();
        let mut peers = HashMap::new();
        for (node, addr) in &config.peers {
            if *node == local_node {
                continue;
            }
            let peer = peer_id_of(node)?;
            known.insert(*node, peer);
            peers.insert(
                peer,
                PeerState {
                    node: *node,
                    addr: addr.clone(),
                    queue: VecDeque::new(),
                    connections: 0,
                    dialing: false,
                    next_dial: Some(Instant::now()),
                    backoff: config.redial_initial_backoff,
                },
            );
        }

        let max_frame_len = config.max_message_size.saturating_add(FRAME_HEADER_LEN);
        let mut allow = allow_block_list::Behaviour::<allow_block_list::AllowedPeers>::default();
        for peer in peers.keys() {
            allow.allow_peer(*peer);
        }
        let codec = FrameCodec::new(max_frame_len);
        let shared = Arc::new(Shared {
            counters: Counters {
                oversized_frames: codec.oversized.clone(),
                ..Counters::default()
            },
            ..Shared::default()
        });
        let rr = frame_behaviour(codec, config.request_timeout, config.max_concurrent_streams);
        let idle = config.idle_connection_timeout;
        let mut swarm =
            libp2p::SwarmBuilder::with_existing_identity(config.identity.keypair.clone())
                .with_tokio()
                .with_tcp(
                    tcp::Config::default().nodelay(true),
                    noise::Config::new,
                    yamux::Config::default,
                )
                .map_err(|e| TransportError::Network(format!("tcp/noise setup: {e}")))?
                .with_behaviour(|_| Behaviour { allow, rr })
                .map_err(|e| TransportError::Network(format!("behaviour setup: {e}")))?
                .with_swarm_config(|c| {
                    // One protocol per stream, known to both sides: the dialer may send the
                    // frame together with the protocol proposal instead of waiting a round
                    // trip for the confirmation (multistream-select "V1 lazy").
                    c.with_idle_connection_timeout(idle)
                        .with_substream_upgrade_protocol_override(
                            libp2p::core::upgrade::Version::V1Lazy,
                        )
                })
                .build();
        swarm.listen_on(config.listen_addr.clone()).map_err(|e| {
            TransportError::Network(format!("listen on {}: {e}", config.listen_addr))
        })?;

        let hub = SessionHub::new(local_node);
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let driver = Driver {
            swarm,
            peers,
            in_flight: HashMap::new(),
            hub: hub.clone(),
            shared: shared.clone(),
            max_message_size: config.max_message_size,
            max_queued_per_peer: config.max_queued_per_peer,
            initial_backoff: config.redial_initial_backoff,
            max_backoff: config.redial_max_backoff,
            ready: Some(ready_tx),
        };
        let task = tokio::spawn(driver.run(command_rx));
        let inner = Arc::new(Inner {
            hub,
            local_peer,
            commands,
            known: Arc::new(RwLock::new(known)),
            max_message_size: config.max_message_size,
            shared,
            task: Mutex::new(Some(task)),
        });
        match tokio::time::timeout(LISTEN_TIMEOUT, ready_rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => return Err(TransportError::Network(e)),
            Ok(Err(_)) => return Err(TransportError::Closed),
            Err(_) => {
                return Err(TransportError::Network(format!(
                    "not listening on {} after {LISTEN_TIMEOUT:?}",
                    config.listen_addr
                )))
            }
        }
        tracing::info!(node = %local_node, peer_id = %local_peer, addrs = ?inner.shared.listen_addrs.lock().unwrap_or_else(|e| e.into_inner()), "libp2p transport listening");
        Ok(Self { inner })
    }

    /// The addresses this node listens on (with the actual port when `tcp/0` was asked).
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.inner
            .shared
            .listen_addrs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The known peers with at least one open connection.
    pub fn connected_peers(&self) -> Vec<NodeId> {
        let mut peers: Vec<NodeId> = self
            .inner
            .shared
            .connected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect();
        peers.sort();
        peers
    }

    /// Waits until every node of `nodes` (other than this one) is connected. Fails with
    /// [`TransportError::Timeout`] (session id all zeros) naming those still unconnected.
    pub async fn wait_for_peers(
        &self,
        nodes: &[NodeId],
        timeout: Duration,
    ) -> Result<(), TransportError> {
        let deadline = Instant::now() + timeout;
        loop {
            let connected = self.connected_peers();
            let missing: Vec<NodeId> = nodes
                .iter()
                .filter(|n| **n != self.local_node() && !connected.contains(n))
                .copied()
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(TransportError::Timeout {
                    session: SessionId::from_bytes([0; 32]),
                    silent: missing,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Adds (or updates the address of) a known peer at run time, and dials it. Like the
    /// peers of [`Libp2pConfig::peers`], it may then connect and send.
    pub fn add_peer(&self, node: NodeId, addr: Multiaddr) -> Result<(), TransportError> {
        if node == self.local_node() {
            return Ok(());
        }
        let peer = peer_id_of(&node)?;
        self.inner
            .known
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node, peer);
        self.inner
            .commands
            .send(Command::AddPeer { peer, node, addr })
            .map_err(|_| TransportError::Closed)
    }

    /// This node's libp2p peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.inner.local_peer
    }

    /// Counters since start.
    pub fn stats(&self) -> Libp2pStats {
        self.inner.shared.counters.snapshot()
    }

    /// The session table of this node.
    pub fn hub(&self) -> &SessionHub {
        &self.inner.hub
    }

    /// Stops the swarm (closing the listener and all connections) and waits for it to end.
    /// Sessions opened on this transport fail to send ([`TransportError::Closed`]) after.
    pub async fn shutdown(&self) {
        let task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let Some(mut task) = task else { return };
        let (tx, rx) = oneshot::channel();
        if self.inner.commands.send(Command::Shutdown(tx)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
        }
        if tokio::time::timeout(Duration::from_secs(5), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

struct Libp2pSender {
    commands: mpsc::UnboundedSender<Command>,
    known: Arc<RwLock<HashMap<NodeId, PeerId>>>,
    max_message_size: usize,
}

impl SessionSender for Libp2pSender {
    fn send(
        &self,
        session: SessionId,
        to: NodeId,
        kind: DeliveryKind,
        payload: Vec<u8>,
    ) -> Result<(), TransportError> {
        if payload.len() > self.max_message_size {
            return Err(TransportError::MessageTooLarge {
                size: payload.len(),
                limit: self.max_message_size,
            });
        }
        let peer = *self
            .known
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&to)
            .ok_or_else(|| {
                TransportError::Network(format!("{to} is not a known peer of this node"))
            })?;
        let frame = encode_frame(session, kind, &payload);
        self.commands
            .send(Command::Send { to: peer, frame })
            .map_err(|_| TransportError::Closed)
    }
}

impl Transport for Libp2pTransport {
    fn local_node(&self) -> NodeId {
        self.inner.hub.local_node()
    }

    fn open_session(
        &self,
        session: SessionId,
        config: SessionConfig,
    ) -> Result<SessionChannel, TransportError> {
        let sender = Arc::new(Libp2pSender {
            commands: self.inner.commands.clone(),
            known: self.inner.known.clone(),
            max_message_size: self.inner.max_message_size,
        });
        self.inner.hub.open(session, config, sender)
    }
}

// ---------------------------------------------------------------------------------------
// Swarm task
// ---------------------------------------------------------------------------------------

struct PeerState {
    node: NodeId,
    addr: Multiaddr,
    queue: VecDeque<Vec<u8>>,
    connections: usize,
    dialing: bool,
    /// When to dial next (None: connected or a dial is in progress).
    next_dial: Option<Instant>,
    backoff: Duration,
}

struct Driver {
    swarm: Swarm<Behaviour>,
    peers: HashMap<PeerId, PeerState>,
    in_flight: HashMap<OutboundRequestId, (PeerId, Vec<u8>)>,
    hub: SessionHub,
    shared: Arc<Shared>,
    max_message_size: usize,
    max_queued_per_peer: usize,
    initial_backoff: Duration,
    max_backoff: Duration,
    ready: Option<oneshot::Sender<Result<(), String>>>,
}

impl Driver {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut tick = tokio::time::interval(REDIAL_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut shutdown_ack = None;
        loop {
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(Command::Send { to, frame }) => self.enqueue(to, frame),
                    Some(Command::AddPeer { peer, node, addr }) => self.add_peer(peer, node, addr),
                    Some(Command::Shutdown(ack)) => {
                        shutdown_ack = Some(ack);
                        break;
                    }
                    None => break,
                },
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                _ = tick.tick() => self.redial_due(),
            }
        }
        let node = self.hub.local_node();
        // Dropping the swarm closes the listener and every connection.
        drop(self);
        tracing::info!(%node, "libp2p transport stopped");
        if let Some(ack) = shutdown_ack {
            let _ = ack.send(());
        }
    }

    fn add_peer(&mut self, peer: PeerId, node: NodeId, addr: Multiaddr) {
        self.swarm.behaviour_mut().allow.allow_peer(peer);
        let state = self.peers.entry(peer).or_insert_with(|| PeerState {
            node,
            addr: addr.clone(),
            queue: VecDeque::new(),
            connections: 0,
            dialing: false,
            next_dial: None,
            backoff: self.initial_backoff,
        });
        state.addr = addr;
        state.backoff = self.initial_backoff;
        if state.connections == 0 && !state.dialing {
            state.next_dial = Some(Instant::now());
        }
    }

    fn enqueue(&mut self, to: PeerId, frame: Vec<u8>) {
        let Some(state) = self.peers.get_mut(&to) else {
            return;
        };
        if state.connections > 0 {
            self.send_now(to, frame);
            return;
        }
        if state.queue.len() >= self.max_queued_per_peer {
            bump(&self.shared.counters.dropped_queue_full);
            tracing::warn!(peer = %state.node, "queue for disconnected peer is full; message dropped");
            return;
        }
        state.queue.push_back(frame);
        if !state.dialing {
            // Do not wait for the backoff to send a fresh message.
            state.next_dial = Some(Instant::now());
        }
    }

    fn send_now(&mut self, to: PeerId, frame: Vec<u8>) {
        let addr = self.peers.get(&to).map(|p| p.addr.clone());
        let id = self.swarm.behaviour_mut().rr.send_request_with_addresses(
            &to,
            frame.clone(),
            addr.into_iter().collect(),
        );
        self.in_flight.insert(id, (to, frame));
        bump(&self.shared.counters.frames_sent);
    }

    fn redial_due(&mut self) {
        let now = Instant::now();
        let due: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                p.connections == 0 && !p.dialing && p.next_dial.is_some_and(|t| t <= now)
            })
            .map(|(id, _)| *id)
            .collect();
        for peer in due {
            let Some(state) = self.peers.get_mut(&peer) else {
                continue;
            };
            let opts = DialOpts::peer_id(peer)
                .addresses(vec![state.addr.clone()])
                .build();
            state.next_dial = None;
            match self.swarm.dial(opts) {
                Ok(()) => state.dialing = true,
                Err(e) => {
                    tracing::debug!(peer = %state.node, error = %e, "dial not started");
                    state.next_dial = Some(now + state.backoff);
                    state.backoff = (state.backoff * 2).min(self.max_backoff);
                }
            }
        }
    }

    fn set_connected(&self, node: NodeId, connected: bool) {
        let mut set = self
            .shared
            .connected
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if connected {
            set.insert(node);
        } else {
            set.remove(&node);
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                self.shared
                    .listen_addrs
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(address);
                if let Some(ready) = self.ready.take() {
                    let _ = ready.send(Ok(()));
                }
            }
            SwarmEvent::ListenerClosed { reason, .. } => {
                tracing::warn!(?reason, "listener closed");
                if let Some(ready) = self.ready.take() {
                    let _ = ready.send(Err(format!("listener closed: {reason:?}")));
                }
            }
            SwarmEvent::ListenerError { error, .. } => {
                tracing::warn!(%error, "listener error");
                if let Some(ready) = self.ready.take() {
                    let _ = ready.send(Err(format!("listener error: {error}")));
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                ..
            } => {
                let Some(state) = self.peers.get_mut(&peer_id) else {
                    // The allow-list should have denied it; never keep such a connection.
                    bump(&self.shared.counters.unknown_peer_refused);
                    tracing::warn!(%peer_id, "connection from a peer outside the known set; closing");
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return;
                };
                state.connections = num_established.get() as usize;
                state.dialing = false;
                state.next_dial = None;
                state.backoff = self.initial_backoff;
                let node = state.node;
                let queued: Vec<Vec<u8>> = state.queue.drain(..).collect();
                tracing::debug!(peer = %node, queued = queued.len(), "connected");
                self.set_connected(node, true);
                for frame in queued {
                    self.send_now(peer_id, frame);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                cause,
                ..
            } => {
                let Some(state) = self.peers.get_mut(&peer_id) else {
                    return;
                };
                state.connections = num_established as usize;
                if num_established == 0 {
                    tracing::debug!(peer = %state.node, ?cause, "disconnected; will re-dial");
                    if !state.dialing {
                        state.next_dial = Some(Instant::now() + state.backoff);
                    }
                    let node = state.node;
                    self.set_connected(node, false);
                }
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer_id),
                error,
                ..
            } => {
                if let Some(state) = self.peers.get_mut(&peer_id) {
                    tracing::debug!(peer = %state.node, %error, "dial failed");
                    state.dialing = false;
                    if state.connections == 0 {
                        state.next_dial = Some(Instant::now() + state.backoff);
                        state.backoff = (state.backoff * 2).min(self.max_backoff);
                    }
                }
            }
            SwarmEvent::IncomingConnectionError { error, .. } => {
                if matches!(error, libp2p::swarm::ListenError::Denied { .. }) {
                    bump(&self.shared.counters.unknown_peer_refused);
                    tracing::warn!(%error, "refused a connection from a peer outside the known set");
                } else {
                    tracing::debug!(%error, "incoming connection failed");
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Rr(event)) => self.on_rr_event(event),
            _ => {}
        }
    }

    fn on_rr_event(&mut self, event: request_response::Event<Vec<u8>, Ack>) {
        use request_response::{Event, Message, OutboundFailure};
        match event {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => self.on_frame(peer, request, channel),
            Event::Message {
                peer,
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                self.in_flight.remove(&request_id);
                if response == Ack::Rejected {
                    tracing::debug!(%peer, "peer rejected a frame");
                }
            }
            Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                let frame = self.in_flight.remove(&request_id);
                let node = self.peers.get(&peer).map(|p| p.node);
                match (error, frame) {
                    (OutboundFailure::DialFailure, Some((_, frame))) => {
                        // Never reached the peer: safe to send again once connected.
                        if let Some(state) = self.peers.get_mut(&peer) {
                            if state.queue.len() < self.max_queued_per_peer {
                                state.queue.push_front(frame);
                            } else {
                                bump(&self.shared.counters.dropped_queue_full);
                            }
                        }
                    }
                    (error, _) => {
                        bump(&self.shared.counters.outbound_failures);
                        tracing::warn!(?node, %peer, %error, "message to peer failed");
                    }
                }
            }
            Event::InboundFailure { peer, error, .. } => {
                bump(&self.shared.counters.inbound_failures);
                tracing::warn!(%peer, %error, "inbound frame failed");
            }
            Event::ResponseSent { .. } => {}
        }
    }

    fn on_frame(&mut self, peer: PeerId, bytes: Vec<u8>, channel: ResponseChannel<Ack>) {
        bump(&self.shared.counters.frames_received);
        let Some(from) = self.peers.get(&peer).map(|p| p.node) else {
            bump(&self.shared.counters.unknown_peer_refused);
            tracing::warn!(%peer, "frame from a peer outside the known set dropped");
            let _ = self.swarm.disconnect_peer_id(peer);
            return;
        };
        let ack = match decode_frame(&bytes, self.max_message_size) {
            Err(error) => {
                bump(&self.shared.counters.malformed_frames);
                tracing::warn!(%from, %error, len = bytes.len(), "undecodable frame dropped");
                Ack::Rejected
            }
            Ok(frame) => {
                let msg = InboundMessage {
                    from,
                    kind: frame.kind,
                    payload: frame.payload,
                };
                match self.hub.deliver(frame.session, msg) {
                    Ok(()) => {
                        bump(&self.shared.counters.frames_delivered);
                        Ack::Accepted
                    }
                    Err(error) => {
                        bump(&self.shared.counters.rejected_by_session);
                        tracing::warn!(%from, %error, "frame refused by the session table");
                        Ack::Rejected
                    }
                }
            }
        };
        let _ = self.swarm.behaviour_mut().rr.send_response(channel, ack);
    }
}
