//! Authenticated, session-multiplexed message transport for MPC protocols.
//!
//! A [`Transport`] connects one node to a fixed set of peers. MPC protocols run in
//! *sessions*, each named by a [`SessionId`] that all participants agree on (it is the
//! hash of the protocol's execution id). A node opens a session with
//! [`Transport::open_session`] and gets a [`SessionChannel`]: a private inbox of
//! [`InboundMessage`]s and a way to send direct or broadcast messages to the
//! session's participants.
//!
//! The rules every implementation keeps:
//! - the `from` of an inbound message is the **authenticated** sender, set by the
//!   transport (in-memory: the sending endpoint; libp2p: the noise-authenticated peer),
//!   never read from the payload;
//! - messages from nodes that are not participants of the session are dropped;
//! - messages for a finished (closed) session are rejected; messages for a session not
//!   yet opened are held until it is opened, within a quota per sending peer;
//! - no single peer can exhaust a node's memory or crowd out other peers: every limit is
//!   per peer, set by [`HubLimits`] (in [`Libp2pConfig::hub_limits`] for libp2p) and
//!   counted in [`HubStats`] when hit ([`SessionHub::stats`], [`Libp2pStats::sessions`]):
//!
//!   | limit | default | when hit |
//!   |---|---|---|
//!   | [`HubLimits::early_bytes_per_peer`] | 16 MiB | the peer's further early messages are dropped |
//!   | [`HubLimits::early_messages_per_peer`] | 1024 | as above |
//!   | [`HubLimits::early_sessions_per_peer`] | 64 | its messages for further unopened sessions are dropped |
//!   | [`HubLimits::early_ttl`] | 60 s | early messages older than this are purged |
//!   | [`HubLimits::inbox_bytes_per_sender`] | 32 MiB | per open session: the sender's messages over it are dropped (its share frees as the session receives), and [`SessionInbox::overflowed`] and the session's timeout name it |
//!   | [`HubLimits::inbox_messages_per_sender`] | 4096 | as above |
//!
//!   "Early messages" are those for sessions this node has not opened yet (followers
//!   open a session only after validating its proposal); once a session is announced
//!   with [`SessionHub::expect_session`], its early messages are held only from its
//!   participants. A sender's inbox share is what it delivered to an open session that
//!   the session has not received yet;
//! - payloads larger than [`MAX_MESSAGE_SIZE`] are refused;
//! - a session that hears nothing for its idle timeout fails with
//!   [`TransportError::Timeout`] naming the parties it is still waiting for.
//!
//! Implementations: [`InMemoryNetwork`] (in-process, for tests) and, with the `libp2p`
//! feature (on by default), [`Libp2pTransport`] (TCP + noise + yamux; see [`p2p`]).
//! With the `test-util` feature (tests only, not default), `FaultyTransport` wraps either to
//! inject faults, and `proxy::TcpProxy` delays, throttles, stalls and cuts real TCP
//! connections (for the libp2p transport on 127.0.0.1).
//!
//! ```
//! use transport::{InMemoryNetwork, NodeId, SessionId, SessionConfig, Destination, Transport};
//! # tokio_test_block_on(async {
//! let network = InMemoryNetwork::new();
//! let (alice, bob) = (NodeId::from_bytes([1; 32]), NodeId::from_bytes([2; 32]));
//! let a = network.endpoint(alice);
//! let b = network.endpoint(bob);
//! let session = SessionId::from_bytes([7; 32]);
//! let config = SessionConfig::new(vec![alice, bob]);
//! let mut on_a = a.open_session(session, config.clone()).unwrap();
//! let mut on_b = b.open_session(session, config).unwrap();
//! on_a.send(Destination::Direct(bob), b"hello".to_vec()).unwrap();
//! let msg = on_b.recv().await.unwrap();
//! assert_eq!(msg.from, alice); // set by the transport, not by the payload
//! assert_eq!(msg.payload, b"hello");
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "test-util")]
mod faults;
mod frame;
mod memory;
#[cfg(feature = "libp2p")]
pub mod p2p;
#[cfg(feature = "test-util")]
pub mod proxy;
mod session;
mod stream;

#[cfg(feature = "test-util")]
pub use faults::{Fault, FaultPlan, FaultyTransport, Tamper, TamperRule, TamperingTransport};
pub use frame::{decode_frame, encode_frame, Frame, FRAME_HEADER_LEN, FRAME_VERSION};
pub use memory::{InMemoryNetwork, InMemoryTransport};
#[cfg(feature = "libp2p")]
pub use p2p::{Libp2pConfig, Libp2pIdentity, Libp2pStats, Libp2pTransport};
pub use session::{
    HubLimits, HubStats, SessionChannel, SessionHub, SessionInbox, SessionOutbox, SessionSender,
    DEFAULT_EARLY_BYTES_PER_PEER, DEFAULT_EARLY_MESSAGES_PER_PEER, DEFAULT_EARLY_SESSIONS_PER_PEER,
    DEFAULT_EARLY_TTL, DEFAULT_INBOX_BYTES_PER_SENDER, DEFAULT_INBOX_MESSAGES_PER_SENDER,
    FINISHED_SESSIONS_REMEMBERED,
};
pub use stream::{length_prefixed, read_length_prefixed, StreamReadError};

use std::fmt;
use std::time::Duration;

/// Largest payload a transport accepts, in bytes (4 MiB: CGGMP21 aux-info proofs are the
/// largest messages, a few hundred KiB for committees of tens of parties).
pub const MAX_MESSAGE_SIZE: usize = 4 * 1024 * 1024;

/// Default idle timeout of a session: how long it may hear nothing before failing.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Identity of a node: its ed25519 public key (32 bytes).
///
/// Serde: a 64-digit lowercase hex string (no `0x`) in human-readable formats such as
/// JSON and TOML, 32 raw bytes in binary formats such as postcard. Human-readable input
/// may carry a `0x` prefix, and may also be the array of 32 numbers that versions before
/// the hex form wrote (files persisted by them still load).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId([u8; 32]);

impl NodeId {
    /// Wraps 32 bytes (an ed25519 public key) as a node id.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    /// Parses 64 hex characters.
    pub fn from_hex(s: &str) -> Result<Self, TransportError> {
        let bytes = hex::decode(s).map_err(|_| TransportError::InvalidNodeId(s.to_owned()))?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| TransportError::InvalidNodeId(s.to_owned()))?;
        Ok(Self(arr))
    }
    /// Full hex encoding.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", &self.to_hex()[..12])
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex()[..12])
    }
}

impl serde::Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&self.to_hex())
        } else {
            serde::Serialize::serialize(&self.0, serializer)
        }
    }
}

impl<'de> serde::Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            deserializer.deserialize_any(NodeIdVisitor)
        } else {
            <[u8; 32] as serde::Deserialize>::deserialize(deserializer).map(Self)
        }
    }
}

/// Reads a human-readable node id: a hex string, or the legacy array of 32 numbers.
struct NodeIdVisitor;

impl<'de> serde::de::Visitor<'de> for NodeIdVisitor {
    type Value = NodeId;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a node id: 64 hex digits, optionally 0x-prefixed")
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<NodeId, E> {
        NodeId::from_hex(s.strip_prefix("0x").unwrap_or(s)).map_err(E::custom)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<NodeId, A::Error> {
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = seq
                .next_element()?
                .ok_or_else(|| serde::de::Error::invalid_length(i, &"32 bytes"))?;
        }
        if seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
            return Err(serde::de::Error::invalid_length(33, &"32 bytes"));
        }
        Ok(NodeId(bytes))
    }
}

/// Name of a protocol session (32 bytes, a hash of the protocol execution id).
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct SessionId([u8; 32]);

impl SessionId {
    /// Wraps 32 bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({})", &hex::encode(self.0)[..12])
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0)[..12])
    }
}

/// Where an outgoing message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// To every other participant of the session.
    Broadcast,
    /// To one participant.
    Direct(NodeId),
}

/// How an inbound message was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum DeliveryKind {
    /// Sent to all participants (the sender claims so: protocols echo-check broadcasts).
    Broadcast,
    /// Sent to this node only.
    Direct,
}

/// A message received in a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundMessage {
    /// Authenticated sender, set by the transport.
    pub from: NodeId,
    /// Broadcast or direct.
    pub kind: DeliveryKind,
    /// Opaque protocol bytes.
    pub payload: Vec<u8>,
}

/// Options of one session: [`SessionConfig::new`], then the `with_` setters (or set the
/// public fields).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionConfig {
    /// Every participant, the local node included. Order is meaningful to protocols
    /// (it fixes party indices) and must be the same at every participant.
    pub participants: Vec<NodeId>,
    /// How long the session may hear nothing before failing with
    /// [`TransportError::Timeout`]. Default [`DEFAULT_IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
}

impl SessionConfig {
    /// A session among `participants` with the default idle timeout.
    pub fn new(participants: Vec<NodeId>) -> Self {
        Self {
            participants,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
    /// Sets the idle timeout.
    pub fn with_idle_timeout(mut self, idle_timeout: Duration) -> Self {
        self.idle_timeout = idle_timeout;
        self
    }
}

/// Whether this node can reach a peer now ([`Transport::connection_state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnectionState {
    /// At least one live connection to the peer (libp2p: established and answering
    /// keepalive pings); the in-memory transport's peers are always connected.
    Connected,
    /// No live connection: never connected yet, closed, or its keepalive went
    /// unanswered. Messages to the peer wait (within the transport's limits) and are
    /// delivered once it is back.
    Down,
    /// The transport does not know the peer, or cannot tell.
    Unknown,
}

/// A change of a peer's [`ConnectionState`] (libp2p:
/// [`Libp2pTransport::connection_events`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionEvent {
    /// The peer.
    pub peer: NodeId,
    /// Its state from now on.
    pub state: ConnectionState,
}

/// A node's connection to its peers, carrying many concurrent sessions.
pub trait Transport: Send + Sync + 'static {
    /// This node's identity.
    fn local_node(&self) -> NodeId;

    /// Whether `peer` is reachable now. A session layer can use it to tell a party that
    /// is down from one that is slow. Default: [`ConnectionState::Unknown`].
    fn connection_state(&self, peer: &NodeId) -> ConnectionState {
        let _ = peer;
        ConnectionState::Unknown
    }

    /// Opens a session. Fails if the session is already open or was finished on this
    /// node, or if the local node is not among the participants.
    fn open_session(
        &self,
        session: SessionId,
        config: SessionConfig,
    ) -> Result<SessionChannel, TransportError>;
}

/// Everything that can go wrong in a transport.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportError {
    /// No message arrived for the idle timeout; `silent` are the participants this node
    /// has heard least from (those it is still waiting for).
    #[error("session {session} timed out waiting for {silent:?}")]
    Timeout {
        /// The session that timed out.
        session: SessionId,
        /// Participants that fell silent.
        silent: Vec<NodeId>,
    },
    /// The session was already opened on this node, or has finished.
    #[error("session {0} was already opened or has finished")]
    SessionReused(SessionId),
    /// The local node is not a participant of the session it tried to open.
    #[error("local node is not among the participants of session {0}")]
    NotAParticipant(SessionId),
    /// The participant list is malformed (duplicates, fewer than two nodes).
    #[error("invalid participant list: {0}")]
    InvalidParticipants(String),
    /// A message was addressed to a node outside the session.
    #[error("{to} is not a participant of session {session}")]
    UnknownRecipient {
        /// The session.
        session: SessionId,
        /// The bad recipient.
        to: NodeId,
    },
    /// A payload exceeded [`MAX_MESSAGE_SIZE`].
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    MessageTooLarge {
        /// Size of the refused payload.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The transport shut down or the session was closed.
    #[error("transport closed")]
    Closed,
    /// A frame could not be decoded.
    #[error("malformed frame: {0}")]
    MalformedFrame(String),
    /// A node id string is not 64 hex characters.
    #[error("invalid node id {0:?}")]
    InvalidNodeId(String),
    /// An inbound message was refused (the reason says why); nothing was delivered.
    #[error("message from {from} for session {session} rejected: {reason}")]
    Rejected {
        /// The session the message named.
        session: SessionId,
        /// Its authenticated sender.
        from: NodeId,
        /// Why it was refused.
        reason: RejectReason,
    },
    /// Network-level failure (libp2p).
    #[error("network error: {0}")]
    Network(String),
}

/// Why an inbound message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RejectReason {
    /// The session already finished on this node.
    #[error("session finished")]
    SessionFinished,
    /// The sender is not a participant of the session.
    #[error("sender is not a participant")]
    SenderNotParticipant,
    /// The sender's quota for messages held for sessions this node has not opened yet is
    /// full (see [`HubLimits`]).
    #[error("sender's backlog for unopened sessions is full")]
    BacklogFull,
    /// The sender's share of an open session's inbox is full (see [`HubLimits`]).
    #[error("sender overflowed the session's inbox")]
    InboxFull,
    /// The payload exceeds [`MAX_MESSAGE_SIZE`].
    #[error("payload too large")]
    TooLarge,
}

#[cfg(test)]
mod tests {
    use super::NodeId;

    const HEX: &str = "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20";

    fn id() -> NodeId {
        let mut b = [0u8; 32];
        for (i, x) in b.iter_mut().enumerate() {
            *x = i as u8 + 1;
        }
        NodeId::from_bytes(b)
    }

    #[test]
    fn node_id_is_a_hex_string_in_json() {
        let json = serde_json::to_string(&id()).unwrap();
        assert_eq!(json, format!("\"{HEX}\""));
        assert_eq!(serde_json::from_str::<NodeId>(&json).unwrap(), id());
        assert_eq!(
            serde_json::from_str::<NodeId>(&format!("\"0x{HEX}\"")).unwrap(),
            id()
        );
        let list = serde_json::to_value(vec![id(), id()]).unwrap();
        assert_eq!(list, serde_json::json!([HEX, HEX]));
    }

    #[test]
    fn node_id_reads_the_legacy_json_array() {
        let legacy = serde_json::to_string(id().as_bytes()).unwrap();
        assert!(legacy.starts_with("[1,2,3,"), "{legacy}");
        assert_eq!(serde_json::from_str::<NodeId>(&legacy).unwrap(), id());
    }

    #[test]
    fn node_id_json_rejects_malformed_ids() {
        for bad in [
            "\"zz\"".to_owned(),
            format!("\"{}\"", &HEX[..62]),
            format!("\"{HEX}00\""),
            "[1,2,3]".to_owned(),
            serde_json::to_string(&vec![7u8; 33]).unwrap(),
            "[256,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]".to_owned(),
            "42".to_owned(),
        ] {
            assert!(
                serde_json::from_str::<NodeId>(&bad).is_err(),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn node_id_is_32_raw_bytes_in_postcard() {
        let bytes = postcard::to_stdvec(&id()).unwrap();
        assert_eq!(bytes, id().as_bytes());
        assert_eq!(postcard::from_bytes::<NodeId>(&bytes).unwrap(), id());
        assert!(postcard::from_bytes::<NodeId>(&bytes[..31]).is_err());
    }
}
