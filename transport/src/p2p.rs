//! libp2p transport: TCP + noise + yamux, one stream protocol ([`PROTOCOL_NAME`])
//! carrying length-prefixed [frames](crate::encode_frame) between a known set of peers.
//!
//! - **Identity.** Every node has an ed25519 key ([`Libp2pIdentity`]). Its [`NodeId`] is
//!   the 32-byte public key; its libp2p [`PeerId`] is derived from the same key, so the
//!   two map one-to-one ([`peer_id_of`]).
//! - **Authentication.** The sender of every inbound message is the peer the noise
//!   handshake authenticated, looked up in the known peer set. Frames carry no sender
//!   field. Connections from peers outside the known set are denied (allow-list), and any
//!   stream from an unknown peer that slips through is dropped with a warning.
//! - **Wire.** Each node keeps one long-lived yamux stream per known peer for what it
//!   sends there, opened on first use and re-opened after a failure. On it, every frame
//!   is a 4-byte big-endian length followed by the frame. A message therefore costs one
//!   yamux data frame: no stream set-up, protocol negotiation or acknowledgement per
//!   message (the earlier request-response design paid all three, about 0.3 ms per
//!   message on loopback). Messages from one node to another arrive in the order sent.
//!   A node that takes a new stream first writes one byte back ([`STREAM_ACCEPTED`]);
//!   the sender writes nothing before it has read that byte, so a stream libp2p dropped
//!   on arrival (its accept queue holds one stream) or the peer refused is re-opened
//!   instead of silently swallowing the frames written on it.
//! - **Sessions.** Frames name their session; a [`SessionHub`] routes them (holding
//!   frames for sessions not opened yet within each peer's quota, rejecting frames for
//!   finished sessions and from non-participants, bounding each sender's share of an
//!   open session's inbox: [`Libp2pConfig::hub_limits`]).
//! - **Limits.** A reader refuses a length prefix over `max_message_size +
//!   FRAME_HEADER_LEN` before allocating for it, and closes that stream (the peer may
//!   open another). Frames that do not decode are logged, counted and skipped; the
//!   stream and the node go on. A peer may hold at most
//!   [`Libp2pConfig::max_inbound_streams_per_peer`] streams open to a node at once.
//! - **Reconnects.** Known peers are dialled at start and re-dialled with exponential
//!   backoff whenever no connection to them is open, so a restarted peer (same identity,
//!   same address) is reconnected. Messages to a peer that is not connected wait in a
//!   bounded queue ([`Libp2pConfig::max_queued_per_peer`]) and are sent once it is.
//! - **Delivery that survives a reconnect.** Every frame a node sends to a peer carries
//!   a sequence number (per peer, from 0, within the sender's *incarnation*: a random
//!   64-bit number drawn at [`Libp2pTransport::start`]). The receiver acknowledges
//!   cumulatively on the same stream (the next sequence number it expects), and the
//!   sender keeps every frame until it is acknowledged, at most
//!   [`Libp2pConfig::max_unacked_per_peer`] frames and
//!   [`Libp2pConfig::max_unacked_bytes_per_peer`] bytes per peer (while that is full,
//!   new messages wait in the peer's queue, then are dropped as in a full queue). When a
//!   stream fails, or the connection under it dies, the next stream starts with a
//!   handshake in which the receiver says which sequence number it expects, and the
//!   sender retransmits every unacknowledged frame from there
//!   ([`Libp2pStats::frames_retransmitted`]). The receiver delivers each sequence number
//!   at most once ([`Libp2pStats::duplicates_dropped`]) and reads only the newest stream
//!   of each peer (an older one is closed as soon as a newer one has shaken hands). A
//!   restarted sender has a new incarnation and starts again from 0; a restarted
//!   receiver expects 0 and accepts the sender's first retransmitted frame whatever its
//!   number (the frames before it were acknowledged by the receiver's previous run;
//!   counted in [`Libp2pStats::sequence_gaps`]). Memory per peer stays bounded: the
//!   receiver keeps three numbers per sender, the sender at most the unacked limits.
//! - **Keepalive.** libp2p ping runs on every connection every
//!   [`Libp2pConfig::keepalive_interval`] (default 1 s); a connection on which no ping
//!   was answered for that interval plus [`Libp2pConfig::keepalive_timeout`] (default
//!   5 s) is closed, so a silently dead connection (a cut cable, a frozen peer, a
//!   middlebox dropping packets) is noticed within about 6 s by default and re-dialled;
//!   frames in flight on it are retransmitted on the next one. A peer that does not
//!   speak ping is not watched.
//! - **Connection state.** [`Libp2pTransport::connection_state`] (also
//!   [`Transport::connection_state`]) says whether a peer is connected now, and
//!   [`Libp2pTransport::connection_events`] reports every change, so a session layer can
//!   tell "party is down" from "party is slow".
//!
//! Wire of one stream (all integers big-endian):
//!
//! ```text
//! receiver -> sender: STREAM_ACCEPTED (1 byte)
//! sender -> receiver: incarnation (8 bytes)
//! receiver -> sender: next expected sequence number (8 bytes)
//! sender -> receiver: { length (4 bytes) | sequence number (8 bytes) | frame }*   (length = 8 + frame length)
//! receiver -> sender: { next expected sequence number (8 bytes) }*                (cumulative acks)
//! ```

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::identity;
use libp2p::swarm::{dial_opts::DialOpts, NetworkBehaviour, SwarmEvent};
use libp2p::{allow_block_list, noise, tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{broadcast, mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;

/// The libp2p crate this transport is built on (to build raw clients in tests and tools
/// with exactly the same version).
pub use ::libp2p;
/// The stream behaviour this transport uses (for raw clients in tests and tools).
pub use ::libp2p_stream;

use crate::frame::{decode_frame, encode_frame, FRAME_HEADER_LEN};
use crate::session::{HubLimits, HubStats, SessionChannel, SessionHub, SessionSender};
use crate::stream::{read_length_prefixed, StreamReadError};
use crate::{
    ConnectionEvent, ConnectionState, DeliveryKind, InboundMessage, NodeId, SessionConfig,
    SessionId, Transport, TransportError, MAX_MESSAGE_SIZE,
};

/// The stream protocol carrying MPC frames.
pub const PROTOCOL_NAME: &str = "/tss-seq/mpc/4";

/// The byte a node writes back on a stream it accepts, before reading frames from it.
/// A sender writes nothing on a new stream until it has read this byte, so a stream the
/// peer never took (libp2p drops inbound streams while the accept queue is full, and a
/// node refuses streams over [`Libp2pConfig::max_inbound_streams_per_peer`]) costs a
/// re-open, not the frames written on it.
pub const STREAM_ACCEPTED: u8 = 0xa5;

/// How long [`Libp2pTransport::start`] waits for the listener to come up.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the swarm task checks for peers due for a re-dial.
const REDIAL_TICK: Duration = Duration::from_millis(50);
/// Connection events kept for a slow [`Libp2pTransport::connection_events`] listener
/// (it then skips the oldest: the current state is always [`Libp2pTransport::connection_state`]).
const CONNECTION_EVENTS_BUFFERED: usize = 256;
/// How long an inbound stream may take to send its handshake before it is closed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A writer hands at most this many bytes of queued frames to its stream at once.
const MAX_BATCH: usize = 256 * 1024;
/// First wait of a writer between failed attempts to open its stream (doubles, up to the
/// configured maximum re-dial backoff; a new connection to the peer cuts it short).
const OPEN_RETRY: Duration = Duration::from_millis(10);

/// Bytes of a sequence number on the wire.
pub const SEQ_LEN: usize = 8;

/// Default of [`Libp2pConfig::max_unacked_per_peer`].
pub const DEFAULT_MAX_UNACKED_PER_PEER: usize = 4096;
/// Default of [`Libp2pConfig::max_unacked_bytes_per_peer`] (64 MiB).
pub const DEFAULT_MAX_UNACKED_BYTES_PER_PEER: usize = 64 * 1024 * 1024;
/// Default of [`Libp2pConfig::keepalive_interval`].
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// Default of [`Libp2pConfig::keepalive_timeout`].
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The unit written on a stream for one frame: its 4-byte big-endian length (of what
/// follows it), the 8-byte big-endian sequence number `seq`, then the frame. Fails with
/// [`TransportError::MessageTooLarge`] for a frame of 4 GiB or more.
pub fn stream_unit(seq: u64, frame: &[u8]) -> Result<Vec<u8>, TransportError> {
    let len =
        u32::try_from(frame.len() + SEQ_LEN).map_err(|_| TransportError::MessageTooLarge {
            size: frame.len(),
            limit: u32::MAX as usize - SEQ_LEN,
        })?;
    let mut out = Vec::with_capacity(4 + SEQ_LEN + frame.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(frame);
    Ok(out)
}

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

    /// An ed25519 signature (64 bytes) of `message` by this identity: verifiable by anyone
    /// against [`Libp2pIdentity::node_id`], which is the public key.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        // Signing with an ed25519 key cannot fail (only RSA/ECDSA keys of other kinds may).
        self.keypair.sign(message).unwrap_or_default()
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
#[non_exhaustive]
pub struct Libp2pConfig {
    /// This node's ed25519 identity.
    pub identity: Libp2pIdentity,
    /// Where to listen, e.g. `/ip4/127.0.0.1/tcp/0` (port 0: any free port; see
    /// [`Libp2pTransport::listen_addrs`]).
    pub listen_addr: Multiaddr,
    /// The known peers and their addresses. Only these may connect and send; an entry for
    /// the local node itself is ignored. Default: empty.
    pub peers: Vec<(NodeId, Multiaddr)>,
    /// How long handing one batch of frames to a peer's stream (or opening that stream)
    /// may take before the stream is given up as stuck. Default 30 s.
    pub write_timeout: Duration,
    /// Largest payload sent or accepted, in bytes. Default (and upper bound in effect,
    /// since sessions refuse larger payloads) [`MAX_MESSAGE_SIZE`].
    pub max_message_size: usize,
    /// First delay before re-dialling a peer that is unreachable or disconnected.
    /// Default 100 ms; doubles after each failed dial.
    pub redial_initial_backoff: Duration,
    /// Longest delay between re-dials. Default 5 s.
    pub redial_max_backoff: Duration,
    /// Messages held for one peer while they cannot be written (peer not connected, or
    /// slow); more are dropped (and counted in [`Libp2pStats::dropped_queue_full`]).
    /// Default 4096.
    pub max_queued_per_peer: usize,
    /// Inbound streams one peer may hold open to this node at once; further streams are
    /// closed at once (and counted in [`Libp2pStats::inbound_streams_refused`]). An
    /// honest peer uses one. Default 8.
    pub max_inbound_streams_per_peer: usize,
    /// How long a connection with no traffic is kept open. Default 1 hour (a closed
    /// connection to a known peer is re-dialled anyway).
    pub idle_connection_timeout: Duration,
    /// Memory limits of the session table, per peer: early messages (for sessions not
    /// opened yet: 16 MiB, 1024 messages and 64 sessions per peer, held 60 s) and open
    /// sessions' inboxes (32 MiB and 4096 messages per sender per session). Default
    /// [`HubLimits::default`]; hits are counted in [`Libp2pStats::sessions`].
    pub hub_limits: HubLimits,
    /// Frames sent to one peer and kept until it acknowledges them (to retransmit them
    /// after a reconnect). While this many are unacknowledged, new messages to the peer
    /// wait in its queue ([`Libp2pConfig::max_queued_per_peer`]). Default
    /// [`DEFAULT_MAX_UNACKED_PER_PEER`] (4096).
    pub max_unacked_per_peer: usize,
    /// Bytes of unacknowledged frames kept per peer, as above (a single frame larger
    /// than this is still sent when nothing else is unacknowledged). Default
    /// [`DEFAULT_MAX_UNACKED_BYTES_PER_PEER`] (64 MiB).
    pub max_unacked_bytes_per_peer: usize,
    /// How often every connection is pinged (libp2p ping). Default
    /// [`DEFAULT_KEEPALIVE_INTERVAL`] (1 s).
    pub keepalive_interval: Duration,
    /// A connection on which no ping was answered for `keepalive_interval +
    /// keepalive_timeout` is closed (its peer is reported down if it has no other; it is
    /// re-dialled and unacknowledged frames are retransmitted). Default
    /// [`DEFAULT_KEEPALIVE_TIMEOUT`] (5 s): long enough for a node whose runtime is busy
    /// with proofs for a few seconds.
    pub keepalive_timeout: Duration,
}

impl Libp2pConfig {
    /// A configuration with no peers and default limits.
    pub fn new(identity: Libp2pIdentity, listen_addr: Multiaddr) -> Self {
        Self {
            identity,
            listen_addr,
            peers: Vec::new(),
            write_timeout: Duration::from_secs(30),
            max_message_size: MAX_MESSAGE_SIZE,
            redial_initial_backoff: Duration::from_millis(100),
            redial_max_backoff: Duration::from_secs(5),
            max_queued_per_peer: 4096,
            max_inbound_streams_per_peer: 8,
            idle_connection_timeout: Duration::from_secs(3600),
            hub_limits: HubLimits::default(),
            max_unacked_per_peer: DEFAULT_MAX_UNACKED_PER_PEER,
            max_unacked_bytes_per_peer: DEFAULT_MAX_UNACKED_BYTES_PER_PEER,
            keepalive_interval: DEFAULT_KEEPALIVE_INTERVAL,
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
        }
    }

    /// Adds a known peer.
    pub fn with_peer(mut self, node: NodeId, addr: Multiaddr) -> Self {
        self.peers.push((node, addr));
        self
    }
}

#[derive(NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
struct Behaviour {
    allow: allow_block_list::Behaviour<allow_block_list::AllowedPeers>,
    stream: libp2p_stream::Behaviour,
    ping: libp2p::ping::Behaviour,
}

// ---------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------

/// Counters of a [`Libp2pTransport`] (since start). Each counter moves just after the
/// event it counts, so a message can reach its session a moment before
/// `frames_delivered` (or, on the sender, `frames_sent`) includes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Libp2pStats {
    /// Frames handed to a stream for the first time (sending them again after a cut is
    /// counted in `frames_retransmitted`).
    pub frames_sent: u64,
    /// Bytes handed to streams: length prefixes, sequence numbers and frames, the
    /// retransmitted ones included (not counted: handshakes, acknowledgements, and
    /// noise, yamux and TCP overhead).
    pub bytes_sent: u64,
    /// Frames read from streams (before any check).
    pub frames_received: u64,
    /// Frames accepted by the session table.
    pub frames_delivered: u64,
    /// Connections and streams refused because the peer is not in the known set.
    pub unknown_peer_refused: u64,
    /// Frames that did not decode ([`TransportError::MalformedFrame`] and oversized
    /// payloads inside a frame).
    pub malformed_frames: u64,
    /// Length prefixes over the limit (the stream is closed before reading the frame).
    pub oversized_frames: u64,
    /// Frames refused by the session table (finished session, not a participant, the
    /// sender's early-message quota or inbox share full: see `sessions`).
    pub rejected_by_session: u64,
    /// Inbound streams that broke off inside a frame (cut short, I/O error).
    pub inbound_failures: u64,
    /// Inbound streams refused because the peer already had the maximum open.
    pub inbound_streams_refused: u64,
    /// Outbound streams that failed (write error, write timeout, connection closed)
    /// while frames on them were unacknowledged; those frames are retransmitted on the
    /// next stream ([`Libp2pStats::frames_retransmitted`]), not lost.
    pub outbound_failures: u64,
    /// Frames sent again on a new stream because the previous one failed before the
    /// peer acknowledged them.
    pub frames_retransmitted: u64,
    /// Inbound frames whose sequence number was already delivered (a retransmission of
    /// a frame that had arrived): dropped, not delivered twice.
    pub duplicates_dropped: u64,
    /// Inbound frames that skipped sequence numbers (only after this node restarted
    /// while a peer still held frames for it that its previous run had acknowledged).
    pub sequence_gaps: u64,
    /// Pings not answered in time; each closed its connection.
    pub keepalive_failures: u64,
    /// Outbound streams the peer did not accept (reset or closed before
    /// [`STREAM_ACCEPTED`] came back); the writer opened another and lost nothing.
    pub streams_not_accepted: u64,
    /// Messages dropped because a peer's queue was full.
    pub dropped_queue_full: u64,
    /// The session table's counters: early messages held and dropped over a peer's
    /// quota, inbox overflows ([`Libp2pConfig::hub_limits`]). Frames these drop are also
    /// in `rejected_by_session`.
    pub sessions: HubStats,
}

#[derive(Default)]
struct Counters {
    frames_sent: AtomicU64,
    bytes_sent: AtomicU64,
    frames_received: AtomicU64,
    frames_delivered: AtomicU64,
    unknown_peer_refused: AtomicU64,
    malformed_frames: AtomicU64,
    oversized_frames: AtomicU64,
    rejected_by_session: AtomicU64,
    inbound_failures: AtomicU64,
    inbound_streams_refused: AtomicU64,
    outbound_failures: AtomicU64,
    frames_retransmitted: AtomicU64,
    duplicates_dropped: AtomicU64,
    sequence_gaps: AtomicU64,
    keepalive_failures: AtomicU64,
    streams_not_accepted: AtomicU64,
    dropped_queue_full: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    fn snapshot(&self, sessions: HubStats) -> Libp2pStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Libp2pStats {
            frames_sent: get(&self.frames_sent),
            bytes_sent: get(&self.bytes_sent),
            frames_received: get(&self.frames_received),
            frames_delivered: get(&self.frames_delivered),
            unknown_peer_refused: get(&self.unknown_peer_refused),
            malformed_frames: get(&self.malformed_frames),
            oversized_frames: get(&self.oversized_frames),
            rejected_by_session: get(&self.rejected_by_session),
            inbound_failures: get(&self.inbound_failures),
            inbound_streams_refused: get(&self.inbound_streams_refused),
            outbound_failures: get(&self.outbound_failures),
            frames_retransmitted: get(&self.frames_retransmitted),
            duplicates_dropped: get(&self.duplicates_dropped),
            sequence_gaps: get(&self.sequence_gaps),
            keepalive_failures: get(&self.keepalive_failures),
            streams_not_accepted: get(&self.streams_not_accepted),
            dropped_queue_full: get(&self.dropped_queue_full),
            sessions,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Transport handle
// ---------------------------------------------------------------------------------------

enum Command {
    AddPeer {
        peer: PeerId,
        node: NodeId,
        addr: Multiaddr,
    },
    Shutdown(oneshot::Sender<()>),
}

/// State shared by the handle, the swarm task, the writers and the readers.
struct Shared {
    local: NodeId,
    hub: SessionHub,
    listen_addrs: Mutex<Vec<Multiaddr>>,
    connected: Mutex<HashSet<NodeId>>,
    /// Woken whenever a connection to some peer is established (writers waiting to
    /// (re)open their stream retry then).
    connection_up: Notify,
    counters: Counters,
    /// Known peers, both ways.
    peer_of: RwLock<HashMap<NodeId, PeerId>>,
    node_of: RwLock<HashMap<PeerId, NodeId>>,
    /// Queue of each known peer's writer task.
    writers: RwLock<HashMap<NodeId, mpsc::Sender<Vec<u8>>>>,
    /// Open inbound streams per peer (each reader holds a clone of the peer's token).
    inbound_tokens: Mutex<HashMap<PeerId, Arc<()>>>,
    /// Every change of a peer's connection state.
    events: broadcast::Sender<ConnectionEvent>,
    /// Per sender: which of its sequence numbers this node delivered.
    inbound_seq: Mutex<HashMap<NodeId, InboundSeq>>,
    /// This run's incarnation (random): sent in every stream handshake.
    incarnation: u64,
    max_unacked: usize,
    max_unacked_bytes: usize,
    /// Flipped to true on shutdown: every writer and reader stops.
    closed: watch::Sender<bool>,
    control: libp2p_stream::Control,
    runtime: tokio::runtime::Handle,
    max_message_size: usize,
    max_frame_len: usize,
    max_queued_per_peer: usize,
    max_inbound_streams_per_peer: usize,
    write_timeout: Duration,
    max_backoff: Duration,
}

impl Shared {
    /// Registers `node` as known and starts its writer (once).
    fn add_known(self: &Arc<Self>, node: NodeId, peer: PeerId) {
        self.peer_of.write().insert(node, peer);
        self.node_of.write().insert(peer, node);
        let mut writers = self.writers.write();
        if writers.contains_key(&node) {
            return;
        }
        let (tx, rx) = mpsc::channel(self.max_queued_per_peer.max(1));
        writers.insert(node, tx);
        let writer = Writer {
            shared: self.clone(),
            node,
            peer,
            queue: rx,
            closed: self.closed.subscribe(),
            next_seq: 0,
            sent_upto: 0,
            unacked: VecDeque::new(),
            unacked_bytes: 0,
        };
        self.runtime.spawn(writer.run());
    }

    fn stop(&self) {
        let _ = self.closed.send(true);
        self.writers.write().clear();
    }
}

struct Inner {
    shared: Arc<Shared>,
    local_peer: PeerId,
    commands: mpsc::UnboundedSender<Command>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.stop();
        let (tx, _rx) = oneshot::channel();
        let _ = self.commands.send(Command::Shutdown(tx));
        for task in self.tasks.lock().drain(..) {
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
            .field("node", &self.inner.shared.local)
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
        let mut known = Vec::new();
        let mut peers = HashMap::new();
        for (node, addr) in &config.peers {
            if *node == local_node {
                continue;
            }
            let peer = peer_id_of(node)?;
            known.push((*node, peer));
            peers.insert(
                peer,
                PeerState {
                    node: *node,
                    addr: addr.clone(),
                    connections: 0,
                    live: HashMap::new(),
                    dialing: false,
                    next_dial: Some(Instant::now()),
                    backoff: config.redial_initial_backoff,
                },
            );
        }

        let mut allow = allow_block_list::Behaviour::<allow_block_list::AllowedPeers>::default();
        for peer in peers.keys() {
            allow.allow_peer(*peer);
        }
        let stream = libp2p_stream::Behaviour::new();
        let mut control = stream.new_control();
        let incoming = control
            .accept(StreamProtocol::new(PROTOCOL_NAME))
            .map_err(|e| TransportError::Network(format!("stream protocol setup: {e}")))?;
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
                .with_behaviour(|_| Behaviour {
                    allow,
                    stream,
                    ping: libp2p::ping::Behaviour::new(
                        libp2p::ping::Config::new()
                            .with_interval(config.keepalive_interval)
                            .with_timeout(config.keepalive_timeout),
                    ),
                })
                .map_err(|e| TransportError::Network(format!("behaviour setup: {e}")))?
                .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
                .build();
        swarm.listen_on(config.listen_addr.clone()).map_err(|e| {
            TransportError::Network(format!("listen on {}: {e}", config.listen_addr))
        })?;

        let hub = SessionHub::with_limits(local_node, config.hub_limits);
        let (closed, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            local: local_node,
            hub,
            listen_addrs: Mutex::default(),
            connected: Mutex::default(),
            connection_up: Notify::new(),
            events: broadcast::channel(CONNECTION_EVENTS_BUFFERED).0,
            inbound_seq: Mutex::default(),
            incarnation: rand::random(),
            max_unacked: config.max_unacked_per_peer.max(1),
            max_unacked_bytes: config.max_unacked_bytes_per_peer,
            counters: Counters::default(),
            peer_of: RwLock::default(),
            node_of: RwLock::default(),
            writers: RwLock::default(),
            inbound_tokens: Mutex::default(),
            closed,
            control,
            runtime: tokio::runtime::Handle::current(),
            max_message_size: config.max_message_size,
            max_frame_len: config.max_message_size.saturating_add(FRAME_HEADER_LEN),
            max_queued_per_peer: config.max_queued_per_peer,
            max_inbound_streams_per_peer: config.max_inbound_streams_per_peer.max(1),
            write_timeout: config.write_timeout,
            max_backoff: config.redial_max_backoff,
        });
        for (node, peer) in known {
            shared.add_known(node, peer);
        }

        let (commands, command_rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let driver = Driver {
            swarm,
            peers,
            shared: shared.clone(),
            initial_backoff: config.redial_initial_backoff,
            max_backoff: config.redial_max_backoff,
            keepalive_deadline: config.keepalive_interval + config.keepalive_timeout,
            ready: Some(ready_tx),
        };
        let driver_task = tokio::spawn(driver.run(command_rx));
        let accept_task = tokio::spawn(accept_streams(shared.clone(), incoming));
        let inner = Arc::new(Inner {
            shared,
            local_peer,
            commands,
            tasks: Mutex::new(vec![driver_task, accept_task]),
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
        tracing::info!(node = %local_node, peer_id = %local_peer, addrs = ?inner.shared.listen_addrs.lock(), "libp2p transport listening");
        Ok(Self { inner })
    }

    /// The addresses this node listens on (with the actual port when `tcp/0` was asked).
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.inner.shared.listen_addrs.lock().clone()
    }

    /// The known peers with at least one open connection.
    pub fn connected_peers(&self) -> Vec<NodeId> {
        let mut peers: Vec<NodeId> = self.inner.shared.connected.lock().iter().copied().collect();
        peers.sort();
        peers
    }

    /// Whether `peer` has a live connection now ([`ConnectionState::Unknown`] for a node
    /// that is not a known peer). A connection whose keepalive ping goes unanswered for
    /// [`Libp2pConfig::keepalive_timeout`] counts as down at once.
    pub fn connection_state(&self, peer: &NodeId) -> ConnectionState {
        let shared = &self.inner.shared;
        if shared.connected.lock().contains(peer) {
            ConnectionState::Connected
        } else if shared.peer_of.read().contains_key(peer) {
            ConnectionState::Down
        } else {
            ConnectionState::Unknown
        }
    }

    /// Every change of a known peer's connection state from now on (a receiver that
    /// falls more than 256 events behind skips the oldest).
    pub fn connection_events(&self) -> broadcast::Receiver<ConnectionEvent> {
        self.inner.shared.events.subscribe()
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
        if *self.inner.shared.closed.borrow() {
            return Err(TransportError::Closed);
        }
        self.inner.shared.add_known(node, peer);
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
        self.inner
            .shared
            .counters
            .snapshot(self.inner.shared.hub.stats())
    }

    /// The session table of this node.
    pub fn hub(&self) -> &SessionHub {
        &self.inner.shared.hub
    }

    /// Stops the swarm (closing the listener and all connections) and waits for it to end.
    /// Sessions opened on this transport fail to send ([`TransportError::Closed`]) after.
    pub async fn shutdown(&self) {
        self.inner.shared.stop();
        let tasks: Vec<JoinHandle<()>> = self.inner.tasks.lock().drain(..).collect();
        let mut tasks = tasks.into_iter();
        let Some(mut driver) = tasks.next() else {
            return;
        };
        for other in tasks {
            other.abort();
        }
        let (tx, rx) = oneshot::channel();
        if self.inner.commands.send(Command::Shutdown(tx)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
        }
        if tokio::time::timeout(Duration::from_secs(5), &mut driver)
            .await
            .is_err()
        {
            driver.abort();
        }
    }
}

struct Libp2pSender {
    shared: Arc<Shared>,
}

impl SessionSender for Libp2pSender {
    fn send(
        &self,
        session: SessionId,
        to: NodeId,
        kind: DeliveryKind,
        payload: Vec<u8>,
    ) -> Result<(), TransportError> {
        let shared = &self.shared;
        if payload.len() > shared.max_message_size {
            return Err(TransportError::MessageTooLarge {
                size: payload.len(),
                limit: shared.max_message_size,
            });
        }
        if *shared.closed.borrow() {
            return Err(TransportError::Closed);
        }
        let writer = shared.writers.read().get(&to).cloned().ok_or_else(|| {
            TransportError::Network(format!("{to} is not a known peer of this node"))
        })?;
        let frame = encode_frame(session, kind, &payload);
        match writer.try_send(frame) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                // Like a lossy network: the session notices through its idle timeout.
                bump(&shared.counters.dropped_queue_full);
                tracing::warn!(peer = %to, "queue for peer is full; message dropped");
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(TransportError::Closed),
        }
    }
}

impl Transport for Libp2pTransport {
    fn local_node(&self) -> NodeId {
        self.inner.shared.local
    }

    fn connection_state(&self, peer: &NodeId) -> ConnectionState {
        Libp2pTransport::connection_state(self, peer)
    }

    fn open_session(
        &self,
        session: SessionId,
        config: SessionConfig,
    ) -> Result<SessionChannel, TransportError> {
        let sender = Arc::new(Libp2pSender {
            shared: self.inner.shared.clone(),
        });
        self.inner.shared.hub.open(session, config, sender)
    }
}

// ---------------------------------------------------------------------------------------
// Outbound: one writer task and one stream per known peer
// ---------------------------------------------------------------------------------------

struct Writer {
    shared: Arc<Shared>,
    node: NodeId,
    peer: PeerId,
    /// Frames (without sequence number) waiting to be sent.
    queue: mpsc::Receiver<Vec<u8>>,
    closed: watch::Receiver<bool>,
    /// Sequence number of the next new frame.
    next_seq: u64,
    /// Frames numbered below this were written to some stream at least once.
    sent_upto: u64,
    /// Sent, not yet acknowledged: (sequence number, stream unit).
    unacked: VecDeque<(u64, Vec<u8>)>,
    unacked_bytes: usize,
}

/// Why a writer stopped waiting.
enum Wake<T> {
    Closed,
    Ready(T),
}

/// A stream to the peer after the handshake: its write half, and what its ack reader
/// saw (the peer's next expected sequence number, `None` once the stream ended).
///
/// Both halves are polled by the writer task only: a yamux stream keeps one waker for
/// the channel to its connection, so a read half polled by another task can steal the
/// wake-up of a blocked write (seen as a write stuck until its timeout).
struct Link {
    write: futures::io::WriteHalf<libp2p::Stream>,
    read: futures::io::ReadHalf<libp2p::Stream>,
    /// A partly read acknowledgement.
    ack: [u8; SEQ_LEN],
    ack_filled: usize,
}

impl Link {
    /// Reads the next acknowledgement; `None` once the stream ended. Cancel-safe: a
    /// partly read acknowledgement is kept for the next call.
    async fn next_ack(&mut self) -> Option<u64> {
        loop {
            match self.read.read(&mut self.ack[self.ack_filled..]).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => {
                    self.ack_filled += n;
                    if self.ack_filled == SEQ_LEN {
                        self.ack_filled = 0;
                        return Some(u64::from_be_bytes(self.ack));
                    }
                }
            }
        }
    }
}

impl Writer {
    async fn until_closed_or<F: std::future::Future>(
        closed: &mut watch::Receiver<bool>,
        fut: F,
    ) -> Wake<F::Output> {
        if *closed.borrow() {
            return Wake::Closed;
        }
        tokio::select! {
            biased;
            _ = closed.changed() => Wake::Closed,
            out = fut => Wake::Ready(out),
        }
    }

    /// Forgets every frame the peer acknowledged (`next` is its next expected number).
    fn prune(&mut self, next: u64) {
        while let Some((seq, unit)) = self.unacked.front() {
            if *seq >= next {
                break;
            }
            self.unacked_bytes -= unit.len();
            self.unacked.pop_front();
        }
    }

    fn has_room(&self) -> bool {
        self.unacked.is_empty()
            || (self.unacked.len() < self.shared.max_unacked
                && self.unacked_bytes < self.shared.max_unacked_bytes)
    }

    /// Opens a stream (retrying until the peer takes one), shakes hands, and
    /// retransmits what the peer has not acknowledged. `None`: shutting down.
    async fn connect(&mut self, control: &mut libp2p_stream::Control) -> Option<Link> {
        let protocol = StreamProtocol::new(PROTOCOL_NAME);
        let shared = self.shared.clone();
        let mut retry = OPEN_RETRY;
        loop {
            let open = tokio::time::timeout(
                shared.write_timeout,
                open_accepted_stream(control, self.peer, protocol.clone(), shared.incarnation),
            );
            let failure = match Self::until_closed_or(&mut self.closed, open).await {
                Wake::Closed => return None,
                Wake::Ready(Ok(Ok((stream, next)))) => match self.start_link(stream, next).await {
                    Wake::Closed => return None,
                    Wake::Ready(Ok(link)) => return Some(link),
                    Wake::Ready(Err(e)) => {
                        bump(&shared.counters.outbound_failures);
                        format!("retransmission failed: {e}")
                    }
                },
                Wake::Ready(Err(_)) => "timed out".to_string(),
                Wake::Ready(Ok(Err(OpenFailure::Open(e)))) => e.to_string(),
                Wake::Ready(Ok(Err(OpenFailure::NotAccepted(e)))) => {
                    bump(&shared.counters.streams_not_accepted);
                    format!("not accepted: {e}")
                }
            };
            tracing::debug!(peer = %self.node, reason = %failure, "no stream to peer; retrying");
            let wait = async {
                tokio::select! {
                    _ = shared.connection_up.notified() => {}
                    _ = tokio::time::sleep(retry) => {}
                }
            };
            if let Wake::Closed = Self::until_closed_or(&mut self.closed, wait).await {
                return None;
            }
            retry = (retry * 2).min(shared.max_backoff);
        }
    }

    /// After the handshake (`next`: the peer's next expected number): starts the ack
    /// reader and retransmits every frame from `next` on.
    async fn start_link(&mut self, stream: libp2p::Stream, next: u64) -> Wake<io::Result<Link>> {
        self.prune(next);
        tracing::debug!(peer = %self.node, next, unacked = self.unacked.len(), "stream to peer open");
        let (read, write) = stream.split();
        let mut link = Link {
            write,
            read,
            ack: [0; SEQ_LEN],
            ack_filled: 0,
        };
        if self.unacked.is_empty() {
            return Wake::Ready(Ok(link));
        }
        let sent_upto = self.sent_upto;
        let again = self
            .unacked
            .iter()
            .filter(|(seq, _)| *seq < sent_upto)
            .count() as u64;
        let first_time = self.unacked.len() as u64 - again;
        let units: Vec<Vec<u8>> = self.unacked.iter().map(|(_, u)| u.clone()).collect();
        let mut batch = Vec::new();
        for unit in &units {
            batch.extend_from_slice(unit);
            if batch.len() >= MAX_BATCH {
                match self.write(&mut link, &batch).await {
                    Wake::Ready(Ok(())) => batch.clear(),
                    other => return other.map_ok(|()| link),
                }
            }
        }
        if !batch.is_empty() {
            match self.write(&mut link, &batch).await {
                Wake::Ready(Ok(())) => {}
                other => return other.map_ok(|()| link),
            }
        }
        self.sent_upto = self.next_seq;
        let counters = &self.shared.counters;
        counters
            .frames_retransmitted
            .fetch_add(again, Ordering::Relaxed);
        counters
            .frames_sent
            .fetch_add(first_time, Ordering::Relaxed);
        if again > 0 {
            tracing::debug!(peer = %self.node, frames = again, "retransmitted unacknowledged frames");
        }
        Wake::Ready(Ok(link))
    }

    async fn write(&mut self, link: &mut Link, bytes: &[u8]) -> Wake<io::Result<()>> {
        self.shared
            .counters
            .bytes_sent
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let write = tokio::time::timeout(self.shared.write_timeout, async {
            link.write.write_all(bytes).await?;
            link.write.flush().await
        });
        match Self::until_closed_or(&mut self.closed, write).await {
            Wake::Closed => Wake::Closed,
            Wake::Ready(Ok(r)) => Wake::Ready(r),
            Wake::Ready(Err(_)) => Wake::Ready(Err(io::ErrorKind::TimedOut.into())),
        }
    }

    async fn run(mut self) {
        let shared = self.shared.clone();
        let mut control = shared.control.clone();
        let mut link: Option<Link> = None;
        let mut batch: Vec<u8> = Vec::new();
        loop {
            let Some(current) = link.as_mut() else {
                if self.unacked.is_empty() {
                    // Nothing to retransmit: open a stream only once there is a message.
                    match Self::until_closed_or(&mut self.closed, self.queue.recv()).await {
                        Wake::Ready(Some(frame)) => {
                            self.push(frame);
                        }
                        Wake::Ready(None) | Wake::Closed => return,
                    }
                }
                match self.connect(&mut control).await {
                    Some(l) => link = Some(l),
                    None => return,
                }
                // Frames pushed before the stream existed were sent by the retransmission.
                continue;
            };
            let room = self.has_room();
            let event = {
                let queue = &mut self.queue;
                let next = async {
                    tokio::select! {
                        ack = current.next_ack() => Event::Ack(ack),
                        frame = queue.recv(), if room => Event::Frame(frame),
                    }
                };
                Self::until_closed_or(&mut self.closed, next).await
            };
            match event {
                Wake::Closed => return,
                Wake::Ready(Event::Ack(Some(next))) => self.prune(next),
                Wake::Ready(Event::Ack(None)) => {
                    // The stream ended (the peer closed it, or the connection died).
                    if !self.unacked.is_empty() {
                        bump(&shared.counters.outbound_failures);
                    }
                    tracing::debug!(peer = %self.node, unacked = self.unacked.len(), "stream to peer ended; re-opening");
                    link = None;
                }
                Wake::Ready(Event::Frame(None)) => return,
                Wake::Ready(Event::Frame(Some(frame))) => {
                    // Everything already queued goes out in the same write.
                    batch.clear();
                    let first = self.push(frame);
                    batch.extend_from_slice(first);
                    let mut frames = 1u64;
                    while batch.len() < MAX_BATCH && self.has_room() {
                        match self.queue.try_recv() {
                            Ok(frame) => {
                                batch.extend_from_slice(self.push(frame));
                                frames += 1;
                            }
                            Err(_) => break,
                        }
                    }
                    let Some(current) = link.as_mut() else {
                        continue;
                    };
                    // Handed to the stream from here on: sent again only as a retransmission.
                    self.sent_upto = self.next_seq;
                    shared
                        .counters
                        .frames_sent
                        .fetch_add(frames, Ordering::Relaxed);
                    match self.write(current, &batch).await {
                        Wake::Closed => return,
                        Wake::Ready(Ok(())) => {}
                        Wake::Ready(Err(error)) => {
                            bump(&shared.counters.outbound_failures);
                            tracing::debug!(peer = %self.node, %error, frames, "stream to peer failed; frames will be retransmitted");
                            link = None;
                        }
                    }
                }
            }
        }
    }

    /// Numbers `frame`, keeps it until acknowledged, and returns its stream unit.
    fn push(&mut self, frame: Vec<u8>) -> &[u8] {
        let seq = self.next_seq;
        self.next_seq += 1;
        let unit = stream_unit(seq, &frame).expect("frames are at most max_message_size");
        self.unacked_bytes += unit.len();
        self.unacked.push_back((seq, unit));
        &self.unacked.back().expect("just pushed").1
    }
}

/// What woke a writer with a live stream.
enum Event {
    /// The ack reader saw a new acknowledgement (`None`: the stream ended).
    Ack(Option<u64>),
    /// A new message to send (`None`: the transport is gone).
    Frame(Option<Vec<u8>>),
}

impl<T> Wake<io::Result<T>> {
    fn map_ok<U>(self, f: impl FnOnce(T) -> U) -> Wake<io::Result<U>> {
        match self {
            Wake::Closed => Wake::Closed,
            Wake::Ready(r) => Wake::Ready(r.map(f)),
        }
    }
}

/// Why a writer has no stream yet.
enum OpenFailure {
    /// libp2p could not open one (no connection, negotiation failed).
    Open(libp2p_stream::OpenStreamError),
    /// The peer reset or closed it instead of writing [`STREAM_ACCEPTED`] and its
    /// handshake reply.
    NotAccepted(io::Error),
}

/// Opens a stream to `peer`, waits until the peer confirms it reads from it, sends this
/// node's incarnation and returns the stream with the peer's next expected sequence
/// number.
async fn open_accepted_stream(
    control: &mut libp2p_stream::Control,
    peer: PeerId,
    protocol: StreamProtocol,
    incarnation: u64,
) -> Result<(libp2p::Stream, u64), OpenFailure> {
    let mut stream = control
        .open_stream(peer, protocol)
        .await
        .map_err(OpenFailure::Open)?;
    let mut byte = [0u8; 1];
    match stream.read(&mut byte).await {
        Ok(1) if byte[0] == STREAM_ACCEPTED => {}
        Ok(0) => {
            return Err(OpenFailure::NotAccepted(
                io::ErrorKind::UnexpectedEof.into(),
            ))
        }
        Ok(_) => {
            return Err(OpenFailure::NotAccepted(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected accept byte {:#04x}", byte[0]),
            )))
        }
        Err(e) => return Err(OpenFailure::NotAccepted(e)),
    }
    let handshake = async {
        stream.write_all(&incarnation.to_be_bytes()).await?;
        stream.flush().await?;
        let mut next = [0u8; SEQ_LEN];
        stream.read_exact(&mut next).await?;
        Ok(u64::from_be_bytes(next))
    };
    match handshake.await {
        Ok(next) => Ok((stream, next)),
        Err(e) => Err(OpenFailure::NotAccepted(e)),
    }
}

// ---------------------------------------------------------------------------------------
// Inbound: one reader task per stream a peer opens
// ---------------------------------------------------------------------------------------

async fn accept_streams(shared: Arc<Shared>, mut incoming: libp2p_stream::IncomingStreams) {
    while let Some((peer, stream)) = incoming.next().await {
        let node = shared.node_of.read().get(&peer).copied();
        let Some(from) = node else {
            // The allow-list should have refused the connection already.
            bump(&shared.counters.unknown_peer_refused);
            tracing::warn!(%peer, "stream from a peer outside the known set dropped");
            continue;
        };
        let token = {
            let mut tokens = shared.inbound_tokens.lock();
            let token = tokens.entry(peer).or_default();
            // One reference is the map's own.
            if Arc::strong_count(token) > shared.max_inbound_streams_per_peer {
                None
            } else {
                Some(token.clone())
            }
        };
        let Some(token) = token else {
            bump(&shared.counters.inbound_streams_refused);
            tracing::warn!(%from, "too many streams from peer; new one closed");
            continue;
        };
        let reader = read_frames(
            shared.clone(),
            from,
            stream,
            shared.closed.subscribe(),
            token,
        );
        tokio::spawn(reader);
    }
}

/// What a node delivered of one sender's frames.
struct InboundSeq {
    /// The sender's incarnation these numbers belong to.
    incarnation: u64,
    /// The next sequence number to deliver.
    next: u64,
    /// Bumped by every new stream from the sender; older readers stop.
    generation: watch::Sender<u64>,
}

async fn read_frames(
    shared: Arc<Shared>,
    from: NodeId,
    mut stream: libp2p::Stream,
    mut closed: watch::Receiver<bool>,
    _token: Arc<()>,
) {
    let counters = &shared.counters;
    // Tell the sender this stream is being read; it writes nothing before this byte.
    // Then read its incarnation.
    let hello = async {
        stream.write_all(&[STREAM_ACCEPTED]).await?;
        stream.flush().await?;
        let mut incarnation = [0u8; SEQ_LEN];
        stream.read_exact(&mut incarnation).await?;
        Ok::<u64, io::Error>(u64::from_be_bytes(incarnation))
    };
    let hello = tokio::select! {
        biased;
        _ = closed.changed() => return,
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, hello) => r,
    };
    let incarnation = match hello {
        Ok(Ok(incarnation)) => incarnation,
        Ok(Err(error)) => {
            tracing::debug!(%from, %error, "could not accept an inbound stream");
            return;
        }
        Err(_) => {
            tracing::debug!(%from, "inbound stream sent no handshake in time; closed");
            return;
        }
    };
    // This stream supersedes every older one from the same peer.
    let (generation, next, mut superseded) = {
        let mut table = shared.inbound_seq.lock();
        let state = table.entry(from).or_insert_with(|| InboundSeq {
            incarnation,
            next: 0,
            generation: watch::channel(0).0,
        });
        if state.incarnation != incarnation {
            state.incarnation = incarnation;
            state.next = 0;
        }
        let generation = *state.generation.borrow() + 1;
        state.generation.send_replace(generation);
        (generation, state.next, state.generation.subscribe())
    };
    tracing::debug!(%from, generation, next, "inbound stream open");
    let reply = async {
        stream.write_all(&next.to_be_bytes()).await?;
        stream.flush().await
    };
    if let Err(error) = reply.await {
        tracing::debug!(%from, %error, "inbound handshake failed");
        return;
    }
    // Reads and acknowledgements in this one task (see `Link`). An acknowledgement goes
    // out whenever no further frame is already buffered, so a burst costs one.
    let (read, mut write) = stream.split();
    let mut stream = futures::io::BufReader::with_capacity(64 * 1024, read);
    let mut acked = next;
    let mut to_ack = next;
    loop {
        if to_ack != acked && stream.buffer().is_empty() {
            let sent = async {
                write.write_all(&to_ack.to_be_bytes()).await?;
                write.flush().await
            };
            let sent = tokio::select! {
                biased;
                _ = closed.changed() => return,
                _ = superseded.changed() => return,
                r = tokio::time::timeout(shared.write_timeout, sent) => r,
            };
            match sent {
                Ok(Ok(())) => acked = to_ack,
                _ => {
                    tracing::debug!(%from, "could not acknowledge; stream closed");
                    return;
                }
            }
        }
        // The same reader the `stream_reader` fuzz target drives.
        let read = tokio::select! {
            biased;
            _ = closed.changed() => return,
            _ = superseded.changed() => return,
            r = read_length_prefixed(&mut stream, shared.max_frame_len + SEQ_LEN) => r,
        };
        let bytes = match read {
            Ok(Some(bytes)) if bytes.len() >= SEQ_LEN => bytes,
            Ok(None) => return,
            Ok(Some(bytes)) => {
                bump(&counters.oversized_frames);
                tracing::warn!(%from, len = bytes.len(), "inbound frame shorter than its sequence number; stream closed");
                return;
            }
            Err(StreamReadError::Oversized { len, limit }) => {
                bump(&counters.oversized_frames);
                tracing::warn!(%from, len, limit, "inbound frame length out of bounds; stream closed");
                return;
            }
            Err(error) => {
                bump(&counters.inbound_failures);
                tracing::debug!(%from, %error, "inbound stream broke off");
                return;
            }
        };
        let len = bytes.len();
        bump(&counters.frames_received);
        let mut seq = [0u8; SEQ_LEN];
        seq.copy_from_slice(&bytes[..SEQ_LEN]);
        let seq = u64::from_be_bytes(seq);
        let mut table = shared.inbound_seq.lock();
        let Some(state) = table.get_mut(&from) else {
            return;
        };
        if *state.generation.borrow() != generation {
            // A newer stream took over; it gets everything from its handshake on.
            return;
        }
        if seq < state.next {
            bump(&counters.duplicates_dropped);
            to_ack = state.next;
            continue;
        }
        if seq > state.next {
            bump(&counters.sequence_gaps);
            tracing::debug!(%from, expected = state.next, got = seq, "sequence gap (this node restarted?)");
        }
        state.next = seq + 1;
        to_ack = state.next;
        // Delivered under the lock: a frame is delivered once, in sequence order.
        match decode_frame(&bytes[SEQ_LEN..], shared.max_message_size) {
            Err(error) => {
                bump(&counters.malformed_frames);
                tracing::warn!(%from, %error, len, "undecodable frame dropped");
            }
            Ok(frame) => {
                // An empty frame is a protocol heartbeat: one that reaches a party after
                // it finished the session is expected, not worth a warning.
                let heartbeat = frame.payload.is_empty();
                let msg = InboundMessage {
                    from,
                    kind: frame.kind,
                    payload: frame.payload,
                };
                match shared.hub.deliver(frame.session, msg) {
                    Ok(()) => bump(&counters.frames_delivered),
                    Err(error) if heartbeat => {
                        bump(&counters.rejected_by_session);
                        tracing::debug!(%from, %error, "heartbeat refused by the session table");
                    }
                    Err(error) => {
                        bump(&counters.rejected_by_session);
                        tracing::warn!(%from, %error, "frame refused by the session table");
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Swarm task: listening, dialling, connection bookkeeping
// ---------------------------------------------------------------------------------------

struct PeerState {
    node: NodeId,
    addr: Multiaddr,
    connections: usize,
    /// Open connections whose keepalive has not failed, with when a ping on each was
    /// last answered (`None`: the peer does not support ping; not watched).
    live: HashMap<libp2p::swarm::ConnectionId, Option<Instant>>,
    dialing: bool,
    /// When to dial next (None: connected or a dial is in progress).
    next_dial: Option<Instant>,
    backoff: Duration,
}

struct Driver {
    swarm: Swarm<Behaviour>,
    peers: HashMap<PeerId, PeerState>,
    shared: Arc<Shared>,
    initial_backoff: Duration,
    max_backoff: Duration,
    /// A connection with no ping answered for this long is closed.
    keepalive_deadline: Duration,
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
                    Some(Command::AddPeer { peer, node, addr }) => self.add_peer(peer, node, addr),
                    Some(Command::Shutdown(ack)) => {
                        shutdown_ack = Some(ack);
                        break;
                    }
                    None => break,
                },
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                _ = tick.tick() => {
                    self.check_keepalive();
                    self.redial_due();
                }
            }
        }
        let node = self.shared.local;
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
            connections: 0,
            live: HashMap::new(),
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
        let changed = {
            let mut set = self.shared.connected.lock();
            if connected {
                set.insert(node)
            } else {
                set.remove(&node)
            }
        };
        if changed {
            let state = if connected {
                ConnectionState::Connected
            } else {
                ConnectionState::Down
            };
            tracing::debug!(peer = %node, ?state, "connection state changed");
            let _ = self
                .shared
                .events
                .send(ConnectionEvent { peer: node, state });
        }
    }

    fn on_ping(&mut self, event: libp2p::ping::Event) {
        let Some(state) = self.peers.get_mut(&event.peer) else {
            return;
        };
        let failure = match event.result {
            Ok(_) => {
                if let Some(last) = state.live.get_mut(&event.connection) {
                    *last = Some(Instant::now());
                }
                return;
            }
            Err(libp2p::ping::Failure::Unsupported) => {
                // A peer without ping (a tool, an old version) is not dead; it just
                // cannot be watched this way.
                tracing::debug!(peer = %state.node, "peer does not support ping; no keepalive on this connection");
                if let Some(last) = state.live.get_mut(&event.connection) {
                    *last = None;
                }
                return;
            }
            Err(failure) => failure.to_string(),
        };
        self.keepalive_failed(event.peer, event.connection, &failure);
    }

    /// Closes a connection whose keepalive failed and reports the peer down if it has
    /// no other live connection.
    fn keepalive_failed(
        &mut self,
        peer: PeerId,
        connection: libp2p::swarm::ConnectionId,
        why: &str,
    ) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        if state.live.remove(&connection).is_none() {
            return;
        }
        bump(&self.shared.counters.keepalive_failures);
        tracing::info!(peer = %state.node, why, "keepalive failed; closing the connection");
        let down = state.live.is_empty();
        let node = state.node;
        self.swarm.close_connection(connection);
        if down {
            self.set_connected(node, false);
        }
    }

    /// Closes every connection with no answered ping for `keepalive_interval +
    /// keepalive_timeout` (libp2p's ping reports a failure only after two of them, and
    /// re-negotiating its stream on a dead connection waits for the 10 s upgrade timeout).
    fn check_keepalive(&mut self) {
        let now = Instant::now();
        let limit = self.keepalive_deadline;
        let stale: Vec<(PeerId, libp2p::swarm::ConnectionId)> = self
            .peers
            .iter()
            .flat_map(|(peer, state)| {
                state.live.iter().filter_map(move |(conn, last)| {
                    last.filter(|t| now.duration_since(*t) > limit)
                        .map(|_| (*peer, *conn))
                })
            })
            .collect();
        for (peer, connection) in stale {
            self.keepalive_failed(peer, connection, "no ping answered in time");
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                self.shared.listen_addrs.lock().push(address);
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
            SwarmEvent::Behaviour(BehaviourEvent::Ping(event)) => self.on_ping(event),
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
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
                state.live.insert(connection_id, Some(Instant::now()));
                state.dialing = false;
                state.next_dial = None;
                state.backoff = self.initial_backoff;
                let node = state.node;
                tracing::debug!(peer = %node, "connected");
                self.set_connected(node, true);
                self.shared.connection_up.notify_waiters();
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                cause,
                ..
            } => {
                let Some(state) = self.peers.get_mut(&peer_id) else {
                    return;
                };
                state.connections = num_established as usize;
                state.live.remove(&connection_id);
                if state.live.is_empty() {
                    let node = state.node;
                    self.set_connected(node, false);
                }
                let Some(state) = self.peers.get_mut(&peer_id) else {
                    return;
                };
                if num_established == 0 {
                    tracing::debug!(peer = %state.node, ?cause, "disconnected; will re-dial");
                    if !state.dialing {
                        state.next_dial = Some(Instant::now() + state.backoff);
                    }
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
            _ => {}
        }
    }
}
