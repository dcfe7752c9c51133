//! Session bookkeeping shared by every transport implementation.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};
use tokio::sync::mpsc;

use crate::{
    DeliveryKind, Destination, InboundMessage, NodeId, RejectReason, SessionConfig, SessionId,
    TransportError, MAX_MESSAGE_SIZE,
};

/// How long messages for a session this node has not opened yet are held.
const PENDING_TTL: Duration = Duration::from_secs(60);
/// At most this many unopened sessions are held at once.
const MAX_PENDING_SESSIONS: usize = 1024;
/// At most this many bytes are held for unopened sessions in total.
const MAX_PENDING_BYTES: usize = 64 * 1024 * 1024;
/// The ids of this many most recently finished sessions are remembered (to refuse late
/// messages and re-opening). Older ones are forgotten, so that a node that signs for
/// years does not grow without bound: at one session a second this covers more than a
/// day. A late message for a forgotten session is held like one for an unopened session
/// and purged after 60 seconds.
pub const FINISHED_SESSIONS_REMEMBERED: usize = 100_000;

/// The sending half a transport implementation plugs into a [`SessionChannel`].
pub trait SessionSender: Send + Sync + 'static {
    /// Sends `payload` in `session` to `to`. `kind` tells the receiver whether this copy is
    /// part of a broadcast.
    fn send(
        &self,
        session: SessionId,
        to: NodeId,
        kind: DeliveryKind,
        payload: Vec<u8>,
    ) -> Result<(), TransportError>;
}

struct OpenSession {
    participants: HashSet<NodeId>,
    inbox: mpsc::UnboundedSender<InboundMessage>,
}

struct PendingSession {
    since: Instant,
    messages: Vec<InboundMessage>,
}

#[derive(Default)]
struct HubState {
    open: HashMap<SessionId, OpenSession>,
    pending: HashMap<SessionId, PendingSession>,
    pending_bytes: usize,
    finished: HashSet<SessionId>,
    /// `finished` in the order the sessions finished (oldest first).
    finished_order: VecDeque<SessionId>,
}

impl HubState {
    fn purge_expired_pending(&mut self) {
        let now = Instant::now();
        let expired: Vec<SessionId> = self
            .pending
            .iter()
            .filter(|(_, p)| now.duration_since(p.since) > PENDING_TTL)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(p) = self.pending.remove(&id) {
                self.pending_bytes -= p.messages.iter().map(|m| m.payload.len()).sum::<usize>();
            }
        }
    }
}

/// A node's table of sessions: routes inbound messages to open sessions, holds messages
/// for sessions not opened yet, refuses messages for finished ones.
///
/// Transport implementations own one hub per node and call [`SessionHub::deliver`] for
/// every authenticated inbound message.
#[derive(Clone)]
pub struct SessionHub {
    local: NodeId,
    state: Arc<Mutex<HubState>>,
}

impl SessionHub {
    /// An empty hub for node `local`.
    pub fn new(local: NodeId) -> Self {
        Self {
            local,
            state: Arc::default(),
        }
    }

    /// The node this hub belongs to.
    pub fn local_node(&self) -> NodeId {
        self.local
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock()
    }

    /// Opens `session`, handing over any messages held for it.
    pub fn open(
        &self,
        session: SessionId,
        config: SessionConfig,
        sender: Arc<dyn SessionSender>,
    ) -> Result<SessionChannel, TransportError> {
        let participants: HashSet<NodeId> = config.participants.iter().copied().collect();
        if participants.len() != config.participants.len() {
            return Err(TransportError::InvalidParticipants(
                "duplicate participant".into(),
            ));
        }
        if participants.len() < 2 {
            return Err(TransportError::InvalidParticipants(
                "a session needs at least two participants".into(),
            ));
        }
        if !participants.contains(&self.local) {
            return Err(TransportError::NotAParticipant(session));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let mut state = self.lock();
        if state.open.contains_key(&session) || state.finished.contains(&session) {
            return Err(TransportError::SessionReused(session));
        }
        state.purge_expired_pending();
        if let Some(held) = state.pending.remove(&session) {
            state.pending_bytes -= held.messages.iter().map(|m| m.payload.len()).sum::<usize>();
            for msg in held.messages {
                if participants.contains(&msg.from) {
                    let _ = tx.send(msg);
                }
            }
        }
        state.open.insert(
            session,
            OpenSession {
                participants,
                inbox: tx,
            },
        );
        drop(state);
        let guard = Arc::new(FinishGuard {
            session,
            hub: self.clone(),
        });
        Ok(SessionChannel {
            inbox: SessionInbox {
                session,
                local: self.local,
                participants: config.participants.clone(),
                idle_timeout: config.idle_timeout,
                inbox: rx,
                heard: HashMap::new(),
                _guard: guard.clone(),
            },
            outbox: SessionOutbox {
                session,
                local: self.local,
                participants: config.participants,
                sender,
                _guard: guard,
            },
        })
    }

    /// Routes one authenticated inbound message. `msg.from` must be the sender as
    /// authenticated by the transport.
    pub fn deliver(&self, session: SessionId, msg: InboundMessage) -> Result<(), TransportError> {
        let reject = |reason| {
            Err(TransportError::Rejected {
                session,
                from: msg.from,
                reason,
            })
        };
        if msg.payload.len() > MAX_MESSAGE_SIZE {
            return reject(RejectReason::TooLarge);
        }
        let mut state = self.lock();
        if state.finished.contains(&session) {
            return reject(RejectReason::SessionFinished);
        }
        if let Some(open) = state.open.get(&session) {
            if !open.participants.contains(&msg.from) {
                return reject(RejectReason::SenderNotParticipant);
            }
            // The receiver may have been dropped a moment ago; that is not the sender's fault.
            let _ = open.inbox.send(msg);
            return Ok(());
        }
        state.purge_expired_pending();
        let size = msg.payload.len();
        let full = state.pending_bytes + size > MAX_PENDING_BYTES
            || (!state.pending.contains_key(&session)
                && state.pending.len() >= MAX_PENDING_SESSIONS);
        if full {
            return reject(RejectReason::BacklogFull);
        }
        state.pending_bytes += size;
        state
            .pending
            .entry(session)
            .or_insert_with(|| PendingSession {
                since: Instant::now(),
                messages: Vec::new(),
            })
            .messages
            .push(msg);
        Ok(())
    }

    fn finish(&self, session: SessionId) {
        let mut state = self.lock();
        state.open.remove(&session);
        if let Some(p) = state.pending.remove(&session) {
            state.pending_bytes -= p.messages.iter().map(|m| m.payload.len()).sum::<usize>();
        }
        if state.finished.insert(session) {
            state.finished_order.push_back(session);
            while state.finished_order.len() > FINISHED_SESSIONS_REMEMBERED {
                if let Some(oldest) = state.finished_order.pop_front() {
                    state.finished.remove(&oldest);
                }
            }
        }
    }

    /// Number of sessions currently open.
    pub fn open_sessions(&self) -> usize {
        self.lock().open.len()
    }

    /// Number of finished sessions remembered (at most [`FINISHED_SESSIONS_REMEMBERED`]).
    pub fn finished_sessions(&self) -> usize {
        self.lock().finished.len()
    }
}

/// Finishes the session at the hub when the last half of a channel is dropped.
struct FinishGuard {
    session: SessionId,
    hub: SessionHub,
}

impl Drop for FinishGuard {
    fn drop(&mut self) {
        self.hub.finish(self.session);
    }
}

/// One open session at one node: receive what participants sent, send to them.
///
/// Dropping the channel (both halves, if [split](SessionChannel::split)) finishes the
/// session: later messages for it are rejected.
#[derive(Debug)]
pub struct SessionChannel {
    inbox: SessionInbox,
    outbox: SessionOutbox,
}

/// The receiving half of a [`SessionChannel`].
pub struct SessionInbox {
    session: SessionId,
    local: NodeId,
    participants: Vec<NodeId>,
    idle_timeout: Duration,
    inbox: mpsc::UnboundedReceiver<InboundMessage>,
    heard: HashMap<NodeId, u64>,
    _guard: Arc<FinishGuard>,
}

/// The sending half of a [`SessionChannel`].
#[derive(Clone)]
pub struct SessionOutbox {
    session: SessionId,
    local: NodeId,
    participants: Vec<NodeId>,
    sender: Arc<dyn SessionSender>,
    _guard: Arc<FinishGuard>,
}

impl std::fmt::Debug for SessionInbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionInbox")
            .field("session", &self.session)
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for SessionOutbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionOutbox")
            .field("session", &self.session)
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl SessionChannel {
    /// The session's id.
    pub fn session_id(&self) -> SessionId {
        self.outbox.session
    }
    /// This node.
    pub fn local_node(&self) -> NodeId {
        self.outbox.local
    }
    /// All participants, in the agreed order.
    pub fn participants(&self) -> &[NodeId] {
        &self.outbox.participants
    }

    /// Replaces the sending half (used by wrappers such as [`crate::FaultyTransport`]).
    pub fn wrap_sender(
        mut self,
        wrap: impl FnOnce(Arc<dyn SessionSender>) -> Arc<dyn SessionSender>,
    ) -> Self {
        self.outbox.sender = wrap(self.outbox.sender.clone());
        self
    }

    /// Sends a payload to one participant or to all others.
    pub fn send(&self, to: Destination, payload: Vec<u8>) -> Result<(), TransportError> {
        self.outbox.send(to, payload)
    }

    /// Receives the next message, or fails with [`TransportError::Timeout`] after the idle
    /// timeout, naming the participants heard from least (the ones still awaited).
    pub async fn recv(&mut self) -> Result<InboundMessage, TransportError> {
        self.inbox.recv().await
    }

    /// Splits into a receiving and a sending half.
    pub fn split(self) -> (SessionInbox, SessionOutbox) {
        (self.inbox, self.outbox)
    }
}

impl SessionOutbox {
    /// The session's id.
    pub fn session_id(&self) -> SessionId {
        self.session
    }

    /// Sends a payload to one participant or to all others.
    pub fn send(&self, to: Destination, payload: Vec<u8>) -> Result<(), TransportError> {
        if payload.len() > MAX_MESSAGE_SIZE {
            return Err(TransportError::MessageTooLarge {
                size: payload.len(),
                limit: MAX_MESSAGE_SIZE,
            });
        }
        match to {
            Destination::Direct(node) => {
                if node == self.local || !self.participants.contains(&node) {
                    return Err(TransportError::UnknownRecipient {
                        session: self.session,
                        to: node,
                    });
                }
                self.sender
                    .send(self.session, node, DeliveryKind::Direct, payload)
            }
            Destination::Broadcast => {
                for node in self.participants.iter().filter(|n| **n != self.local) {
                    self.sender.send(
                        self.session,
                        *node,
                        DeliveryKind::Broadcast,
                        payload.clone(),
                    )?;
                }
                Ok(())
            }
        }
    }
}

impl SessionInbox {
    /// The session's id.
    pub fn session_id(&self) -> SessionId {
        self.session
    }

    /// Receives the next message, or fails with [`TransportError::Timeout`] after the idle
    /// timeout, naming the participants heard from least (the ones still awaited).
    pub async fn recv(&mut self) -> Result<InboundMessage, TransportError> {
        match tokio::time::timeout(self.idle_timeout, self.inbox.recv()).await {
            Ok(Some(msg)) => {
                *self.heard.entry(msg.from).or_default() += 1;
                Ok(msg)
            }
            Ok(None) => Err(TransportError::Closed),
            Err(_) => Err(TransportError::Timeout {
                session: self.session,
                silent: self.least_heard(),
            }),
        }
    }

    fn least_heard(&self) -> Vec<NodeId> {
        let others = self.participants.iter().filter(|n| **n != self.local);
        let count = |n: &NodeId| self.heard.get(n).copied().unwrap_or(0);
        let min = others.clone().map(count).min().unwrap_or(0);
        others.filter(|n| count(n) == min).copied().collect()
    }
}
