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

/// Default of [`HubLimits::early_ttl`]: how long a message for a session this node has
/// not opened yet is held (60 s).
pub const DEFAULT_EARLY_TTL: Duration = Duration::from_secs(60);
/// Default of [`HubLimits::early_bytes_per_peer`] (16 MiB: four messages of the largest
/// size, [`MAX_MESSAGE_SIZE`]).
pub const DEFAULT_EARLY_BYTES_PER_PEER: usize = 16 * 1024 * 1024;
/// Default of [`HubLimits::early_messages_per_peer`] (1024).
pub const DEFAULT_EARLY_MESSAGES_PER_PEER: usize = 1024;
/// Default of [`HubLimits::early_sessions_per_peer`] (64).
pub const DEFAULT_EARLY_SESSIONS_PER_PEER: usize = 64;
/// Default of [`HubLimits::inbox_bytes_per_sender`] (32 MiB).
pub const DEFAULT_INBOX_BYTES_PER_SENDER: usize = 32 * 1024 * 1024;
/// Default of [`HubLimits::inbox_messages_per_sender`] (4096).
pub const DEFAULT_INBOX_MESSAGES_PER_SENDER: usize = 4096;
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

/// Memory limits of a [`SessionHub`], so that no single peer can exhaust this node's
/// memory or crowd out other peers. [`HubLimits::default`] gives the documented defaults.
///
/// Every limit is per peer (or per sender within one session): what one peer sends
/// counts against its own quota only, so a flooding peer loses its own messages and no
/// one else's. Memory held for unopened sessions is thus at most
/// `peers x early_bytes_per_peer`, and for an open session at most
/// `participants x inbox_bytes_per_sender`. Each time a limit is hit the matching
/// counter of [`HubStats`] moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubLimits {
    /// Payload bytes held for one peer across all sessions this node has not opened yet
    /// ("early messages": followers open a session only after validating its proposal).
    /// A message that would go over is dropped ([`RejectReason::BacklogFull`], counted in
    /// [`HubStats::early_dropped_bytes`]). Default [`DEFAULT_EARLY_BYTES_PER_PEER`]
    /// (16 MiB).
    pub early_bytes_per_peer: usize,
    /// Early messages held for one peer across all unopened sessions; more are dropped
    /// ([`HubStats::early_dropped_messages`]). Default
    /// [`DEFAULT_EARLY_MESSAGES_PER_PEER`] (1024).
    pub early_messages_per_peer: usize,
    /// Unopened sessions one peer may have early messages held for at once; a message
    /// for a further session is dropped ([`HubStats::early_dropped_sessions`]). Default
    /// [`DEFAULT_EARLY_SESSIONS_PER_PEER`] (64).
    pub early_sessions_per_peer: usize,
    /// How long an early message is held; older ones are purged (checked at most once a
    /// second, counted in [`HubStats::early_expired`]). Default [`DEFAULT_EARLY_TTL`]
    /// (60 s).
    pub early_ttl: Duration,
    /// Payload bytes of one sender waiting in the inbox of one open session (delivered to
    /// the session but not yet taken by [`SessionChannel::recv`]). A message that would
    /// go over is dropped ([`RejectReason::InboxFull`], counted in
    /// [`HubStats::inbox_dropped_bytes`]); the share frees up as the session receives.
    /// The sender is recorded: [`SessionInbox::overflowed`] names it, and so does the
    /// session's [`TransportError::Timeout`], first (a protocol missing a message stalls;
    /// the sender that caused the gap is to blame). Other senders and other sessions are
    /// not affected, and the connection is not blocked. Default
    /// [`DEFAULT_INBOX_BYTES_PER_SENDER`] (32 MiB).
    pub inbox_bytes_per_sender: usize,
    /// Messages of one sender waiting in the inbox of one open session; on overflow as
    /// for [`HubLimits::inbox_bytes_per_sender`] ([`HubStats::inbox_dropped_messages`]).
    /// Default [`DEFAULT_INBOX_MESSAGES_PER_SENDER`] (4096).
    pub inbox_messages_per_sender: usize,
}

impl Default for HubLimits {
    fn default() -> Self {
        Self {
            early_bytes_per_peer: DEFAULT_EARLY_BYTES_PER_PEER,
            early_messages_per_peer: DEFAULT_EARLY_MESSAGES_PER_PEER,
            early_sessions_per_peer: DEFAULT_EARLY_SESSIONS_PER_PEER,
            early_ttl: DEFAULT_EARLY_TTL,
            inbox_bytes_per_sender: DEFAULT_INBOX_BYTES_PER_SENDER,
            inbox_messages_per_sender: DEFAULT_INBOX_MESSAGES_PER_SENDER,
        }
    }
}

/// Counters of a [`SessionHub`] (since it was created): how often each of its
/// [`HubLimits`] was hit, and what is held for unopened sessions now. For metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HubStats {
    /// Early messages held now (all peers).
    pub early_held_messages: u64,
    /// Payload bytes of early messages held now (all peers).
    pub early_held_bytes: u64,
    /// Early messages dropped: the sender's [`HubLimits::early_bytes_per_peer`] was full.
    pub early_dropped_bytes: u64,
    /// Early messages dropped: the sender's [`HubLimits::early_messages_per_peer`] was
    /// full.
    pub early_dropped_messages: u64,
    /// Early messages dropped: the sender already had messages held for
    /// [`HubLimits::early_sessions_per_peer`] other unopened sessions.
    pub early_dropped_sessions: u64,
    /// Early messages purged after [`HubLimits::early_ttl`].
    pub early_expired: u64,
    /// Early messages dropped because their sender is not among the participants of a
    /// session announced with [`SessionHub::expect_session`].
    pub early_dropped_not_expected: u64,
    /// Messages for an open session dropped: the sender's
    /// [`HubLimits::inbox_bytes_per_sender`] in that session was full.
    pub inbox_dropped_bytes: u64,
    /// Messages for an open session dropped: the sender's
    /// [`HubLimits::inbox_messages_per_sender`] in that session was full.
    pub inbox_dropped_messages: u64,
}

/// What one session's inbox holds per sender (shared by the hub, which adds, and the
/// [`SessionInbox`], which takes away).
#[derive(Default)]
struct InboxUsage {
    /// Bytes and messages waiting, per sender.
    waiting: HashMap<NodeId, (usize, usize)>,
    /// Senders that overflowed their share at least once, in order.
    overflowed: Vec<NodeId>,
}

struct OpenSession {
    participants: HashSet<NodeId>,
    inbox: mpsc::UnboundedSender<InboundMessage>,
    usage: Arc<Mutex<InboxUsage>>,
}

/// One early message and when it arrived.
struct Held {
    at: Instant,
    msg: InboundMessage,
}

/// What one peer has held for unopened sessions.
#[derive(Default)]
struct PeerEarly {
    bytes: usize,
    messages: usize,
    /// Messages held per session.
    sessions: HashMap<SessionId, usize>,
}

#[derive(Default)]
struct HubState {
    open: HashMap<SessionId, OpenSession>,
    pending: HashMap<SessionId, Vec<Held>>,
    early: HashMap<NodeId, PeerEarly>,
    /// Sessions announced with [`SessionHub::expect_session`] (not open yet): when, and
    /// their participants.
    expected: HashMap<SessionId, (Instant, HashSet<NodeId>)>,
    last_purge: Option<Instant>,
    finished: HashSet<SessionId>,
    /// `finished` in the order the sessions finished (oldest first).
    finished_order: VecDeque<SessionId>,
    stats: HubStats,
}

impl HubState {
    /// Takes `msg` (held for `session`) off its sender's quota.
    fn unaccount(&mut self, session: SessionId, from: NodeId, size: usize) {
        self.stats.early_held_messages -= 1;
        self.stats.early_held_bytes -= size as u64;
        if let Some(peer) = self.early.get_mut(&from) {
            peer.bytes -= size;
            peer.messages -= 1;
            if let Some(n) = peer.sessions.get_mut(&session) {
                *n -= 1;
                if *n == 0 {
                    peer.sessions.remove(&session);
                }
            }
            if peer.messages == 0 {
                self.early.remove(&from);
            }
        }
    }

    /// Removes and returns what is held for `session`.
    fn release(&mut self, session: SessionId) -> Vec<InboundMessage> {
        let held = self.pending.remove(&session).unwrap_or_default();
        held.into_iter()
            .map(|h| {
                self.unaccount(session, h.msg.from, h.msg.payload.len());
                h.msg
            })
            .collect()
    }

    /// Purges early messages older than the time limit (at most once a second).
    fn purge_expired(&mut self, ttl: Duration) {
        let now = Instant::now();
        let every = ttl.min(Duration::from_secs(1));
        if self
            .last_purge
            .is_some_and(|t| now.duration_since(t) < every)
        {
            return;
        }
        self.last_purge = Some(now);
        let mut expired = Vec::new();
        self.pending.retain(|session, held| {
            held.retain(|h| {
                let keep = now.duration_since(h.at) <= ttl;
                if !keep {
                    expired.push((*session, h.msg.from, h.msg.payload.len()));
                }
                keep
            });
            !held.is_empty()
        });
        for (session, from, size) in expired {
            self.unaccount(session, from, size);
            self.stats.early_expired += 1;
        }
        self.expected
            .retain(|_, (since, _)| now.duration_since(*since) <= ttl);
    }

    /// Holds `msg` for `session` (not open) within its sender's quota.
    fn hold(
        &mut self,
        session: SessionId,
        msg: InboundMessage,
        limits: &HubLimits,
    ) -> Result<(), RejectReason> {
        if let Some((_, participants)) = self.expected.get(&session) {
            if !participants.contains(&msg.from) {
                self.stats.early_dropped_not_expected += 1;
                return Err(RejectReason::SenderNotParticipant);
            }
        }
        let size = msg.payload.len();
        let peer = self.early.entry(msg.from).or_default();
        let new_session = !peer.sessions.contains_key(&session);
        let over = if peer.bytes + size > limits.early_bytes_per_peer {
            Some(&mut self.stats.early_dropped_bytes)
        } else if peer.messages + 1 > limits.early_messages_per_peer {
            Some(&mut self.stats.early_dropped_messages)
        } else if new_session && peer.sessions.len() >= limits.early_sessions_per_peer {
            Some(&mut self.stats.early_dropped_sessions)
        } else {
            None
        };
        if let Some(counter) = over {
            *counter += 1;
            if peer.messages == 0 {
                self.early.remove(&msg.from);
            }
            return Err(RejectReason::BacklogFull);
        }
        peer.bytes += size;
        peer.messages += 1;
        *peer.sessions.entry(session).or_default() += 1;
        self.stats.early_held_messages += 1;
        self.stats.early_held_bytes += size as u64;
        self.pending.entry(session).or_default().push(Held {
            at: Instant::now(),
            msg,
        });
        Ok(())
    }
}

/// Puts `msg` into an open session's inbox, within its sender's share
/// ([`HubLimits::inbox_bytes_per_sender`], [`HubLimits::inbox_messages_per_sender`]).
fn push_to_inbox(
    open: &OpenSession,
    msg: InboundMessage,
    limits: &HubLimits,
    stats: &mut HubStats,
) -> Result<(), RejectReason> {
    let mut usage = open.usage.lock();
    let size = msg.payload.len();
    let (bytes, messages) = usage.waiting.get(&msg.from).copied().unwrap_or_default();
    let over = if bytes + size > limits.inbox_bytes_per_sender {
        Some(&mut stats.inbox_dropped_bytes)
    } else if messages + 1 > limits.inbox_messages_per_sender {
        Some(&mut stats.inbox_dropped_messages)
    } else {
        None
    };
    if let Some(counter) = over {
        *counter += 1;
        if !usage.overflowed.contains(&msg.from) {
            usage.overflowed.push(msg.from);
        }
        return Err(RejectReason::InboxFull);
    }
    let from = msg.from;
    // The receiver may have been dropped a moment ago; that is not the sender's fault.
    if open.inbox.send(msg).is_ok() {
        usage.waiting.insert(from, (bytes + size, messages + 1));
    }
    Ok(())
}

/// A node's table of sessions: routes inbound messages to open sessions, holds messages
/// for sessions not opened yet, refuses messages for finished ones.
///
/// Transport implementations own one hub per node and call [`SessionHub::deliver`] for
/// every authenticated inbound message. What the hub holds is bounded per peer by its
/// [`HubLimits`]; [`SessionHub::stats`] counts each time a limit is hit.
#[derive(Clone)]
pub struct SessionHub {
    local: NodeId,
    limits: HubLimits,
    state: Arc<Mutex<HubState>>,
}

impl SessionHub {
    /// An empty hub for node `local`, with the default [`HubLimits`].
    pub fn new(local: NodeId) -> Self {
        Self::with_limits(local, HubLimits::default())
    }

    /// An empty hub for node `local` with the given limits.
    pub fn with_limits(local: NodeId, limits: HubLimits) -> Self {
        Self {
            local,
            limits,
            state: Arc::default(),
        }
    }

    /// The node this hub belongs to.
    pub fn local_node(&self) -> NodeId {
        self.local
    }

    /// The limits this hub enforces.
    pub fn limits(&self) -> HubLimits {
        self.limits
    }

    /// Counters since creation (limits hit, early messages held now).
    pub fn stats(&self) -> HubStats {
        self.lock().stats
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock()
    }

    /// Opens `session`, handing over any messages held for it (those from participants;
    /// the others are dropped).
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
        let usage = Arc::new(Mutex::new(InboxUsage::default()));
        let open = OpenSession {
            participants,
            inbox: tx,
            usage: usage.clone(),
        };
        let mut guard = self.lock();
        let state = &mut *guard;
        if state.open.contains_key(&session) || state.finished.contains(&session) {
            return Err(TransportError::SessionReused(session));
        }
        state.purge_expired(self.limits.early_ttl);
        state.expected.remove(&session);
        for msg in state.release(session) {
            if open.participants.contains(&msg.from) {
                let _ = push_to_inbox(&open, msg, &self.limits, &mut state.stats);
            }
        }
        state.open.insert(session, open);
        drop(guard);
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
                usage,
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
    ///
    /// A message for an open session goes to its inbox (refused with
    /// [`RejectReason::InboxFull`] over the sender's share); one for a session not opened
    /// yet is held within the sender's quota (refused with [`RejectReason::BacklogFull`]
    /// over it). See [`HubLimits`].
    pub fn deliver(&self, session: SessionId, msg: InboundMessage) -> Result<(), TransportError> {
        let from = msg.from;
        let reject = |reason| {
            Err(TransportError::Rejected {
                session,
                from,
                reason,
            })
        };
        if msg.payload.len() > MAX_MESSAGE_SIZE {
            return reject(RejectReason::TooLarge);
        }
        let mut guard = self.lock();
        let state = &mut *guard;
        if state.finished.contains(&session) {
            return reject(RejectReason::SessionFinished);
        }
        if let Some(open) = state.open.get(&session) {
            if !open.participants.contains(&from) {
                return reject(RejectReason::SenderNotParticipant);
            }
            return push_to_inbox(open, msg, &self.limits, &mut state.stats).or_else(reject);
        }
        state.purge_expired(self.limits.early_ttl);
        state.hold(session, msg, &self.limits).or_else(reject)
    }

    fn finish(&self, session: SessionId) {
        let mut state = self.lock();
        state.open.remove(&session);
        state.expected.remove(&session);
        state.release(session);
        if state.finished.insert(session) {
            state.finished_order.push_back(session);
            while state.finished_order.len() > FINISHED_SESSIONS_REMEMBERED {
                if let Some(oldest) = state.finished_order.pop_front() {
                    state.finished.remove(&oldest);
                }
            }
        }
    }

    /// Announces that `session` is expected among `participants` (e.g. once its proposal
    /// arrived, before it is validated and opened): from then on, early messages for it
    /// are held only from those participants; what was held from others is dropped, as
    /// is what they send later (counted in [`HubStats::early_dropped_not_expected`]).
    /// The announcement lapses after [`HubLimits::early_ttl`] or when the session is
    /// opened or finished. Does nothing for a session that is open or finished.
    /// Optional: messages for sessions not announced are held as before.
    pub fn expect_session(&self, session: SessionId, participants: &[NodeId]) {
        let mut guard = self.lock();
        let state = &mut *guard;
        if state.open.contains_key(&session) || state.finished.contains(&session) {
            return;
        }
        state.purge_expired(self.limits.early_ttl);
        let participants: HashSet<NodeId> = participants.iter().copied().collect();
        let mut dropped = Vec::new();
        if let Some(held) = state.pending.get_mut(&session) {
            held.retain(|h| {
                let keep = participants.contains(&h.msg.from);
                if !keep {
                    dropped.push((h.msg.from, h.msg.payload.len()));
                }
                keep
            });
            if held.is_empty() {
                state.pending.remove(&session);
            }
        }
        for (from, size) in dropped {
            state.unaccount(session, from, size);
            state.stats.early_dropped_not_expected += 1;
        }
        state
            .expected
            .insert(session, (Instant::now(), participants));
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
    usage: Arc<Mutex<InboxUsage>>,
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

    /// Replaces the sending half (used by wrappers such as the fault-injecting
    /// `FaultyTransport` of the `test-util` feature).
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
    /// timeout, naming the participants that overflowed the inbox (see
    /// [`SessionInbox::overflowed`]) and those heard from least (the ones still awaited).
    pub async fn recv(&mut self) -> Result<InboundMessage, TransportError> {
        self.inbox.recv().await
    }

    /// See [`SessionInbox::overflowed`].
    pub fn overflowed(&self) -> Vec<NodeId> {
        self.inbox.overflowed()
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
    /// timeout, naming the participants that overflowed the inbox (see
    /// [`SessionInbox::overflowed`]) and those heard from least (the ones still awaited).
    pub async fn recv(&mut self) -> Result<InboundMessage, TransportError> {
        match tokio::time::timeout(self.idle_timeout, self.inbox.recv()).await {
            Ok(Some(msg)) => {
                if let Some((bytes, messages)) = self.usage.lock().waiting.get_mut(&msg.from) {
                    *bytes = bytes.saturating_sub(msg.payload.len());
                    *messages = messages.saturating_sub(1);
                }
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

    /// Participants some of whose messages in this session were dropped because they
    /// overflowed their share of its inbox ([`HubLimits::inbox_bytes_per_sender`],
    /// [`HubLimits::inbox_messages_per_sender`]), in the order they first did.
    pub fn overflowed(&self) -> Vec<NodeId> {
        self.usage.lock().overflowed.clone()
    }

    /// Senders that overflowed first, then those heard from least.
    fn least_heard(&self) -> Vec<NodeId> {
        let mut silent = self.overflowed();
        let others: Vec<NodeId> = self
            .participants
            .iter()
            .filter(|n| **n != self.local && !silent.contains(n))
            .copied()
            .collect();
        let count = |n: &NodeId| self.heard.get(n).copied().unwrap_or(0);
        let min = others.iter().map(count).min().unwrap_or(0);
        silent.extend(others.into_iter().filter(|n| count(n) == min));
        silent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nowhere;

    impl SessionSender for Nowhere {
        fn send(
            &self,
            _: SessionId,
            _: NodeId,
            _: DeliveryKind,
            _: Vec<u8>,
        ) -> Result<(), TransportError> {
            Ok(())
        }
    }

    fn node(n: u8) -> NodeId {
        NodeId::from_bytes([n; 32])
    }

    fn session(n: u8) -> SessionId {
        SessionId::from_bytes([n; 32])
    }

    const LOCAL: u8 = 1;
    const HONEST: u8 = 2;
    const GREEDY: u8 = 3;

    fn msg(from: u8, len: usize) -> InboundMessage {
        InboundMessage {
            from: node(from),
            kind: DeliveryKind::Direct,
            payload: vec![from; len],
        }
    }

    /// Generous limits except where a test lowers one.
    fn limits() -> HubLimits {
        HubLimits {
            early_bytes_per_peer: 1000,
            early_messages_per_peer: 100,
            early_sessions_per_peer: 10,
            early_ttl: Duration::from_secs(60),
            inbox_bytes_per_sender: 1000,
            inbox_messages_per_sender: 100,
        }
    }

    fn refused(result: Result<(), TransportError>) -> RejectReason {
        match result {
            Err(TransportError::Rejected { reason, .. }) => reason,
            other => panic!("not refused: {other:?}"),
        }
    }

    fn open(hub: &SessionHub, s: SessionId, others: &[u8]) -> SessionChannel {
        let mut participants = vec![node(LOCAL)];
        participants.extend(others.iter().map(|n| node(*n)));
        let config = SessionConfig::new(participants).with_idle_timeout(Duration::from_millis(50));
        hub.open(s, config, Arc::new(Nowhere)).unwrap()
    }

    async fn recv_all(channel: &mut SessionChannel) -> Vec<InboundMessage> {
        let mut got = Vec::new();
        while let Ok(m) = channel.recv().await {
            got.push(m);
        }
        got
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let d = HubLimits::default();
        assert_eq!(d.early_bytes_per_peer, 16 * 1024 * 1024);
        assert_eq!(d.early_messages_per_peer, 1024);
        assert_eq!(d.early_sessions_per_peer, 64);
        assert_eq!(d.early_ttl, Duration::from_secs(60));
        assert_eq!(d.inbox_bytes_per_sender, 32 * 1024 * 1024);
        assert_eq!(d.inbox_messages_per_sender, 4096);
    }

    #[tokio::test]
    async fn a_peer_over_its_early_byte_quota_loses_only_its_own_messages() {
        let hub = SessionHub::with_limits(node(LOCAL), limits());
        hub.deliver(session(9), msg(GREEDY, 600)).unwrap();
        assert_eq!(
            refused(hub.deliver(session(9), msg(GREEDY, 600))),
            RejectReason::BacklogFull
        );
        // 1000 bytes held in all, but the honest peer has a quota of its own.
        hub.deliver(session(7), msg(HONEST, 900)).unwrap();
        let stats = hub.stats();
        assert_eq!(stats.early_dropped_bytes, 1);
        assert_eq!(
            (stats.early_held_messages, stats.early_held_bytes),
            (2, 1500)
        );
        let mut channel = open(&hub, session(7), &[HONEST]);
        assert_eq!(recv_all(&mut channel).await, vec![msg(HONEST, 900)]);
        assert_eq!(hub.stats().early_held_bytes, 600);
    }

    #[test]
    fn a_peer_over_its_early_message_quota_loses_only_its_own_messages() {
        let hub = SessionHub::with_limits(
            node(LOCAL),
            HubLimits {
                early_messages_per_peer: 3,
                ..limits()
            },
        );
        for _ in 0..3 {
            hub.deliver(session(9), msg(GREEDY, 1)).unwrap();
        }
        assert_eq!(
            refused(hub.deliver(session(8), msg(GREEDY, 1))),
            RejectReason::BacklogFull
        );
        for _ in 0..3 {
            hub.deliver(session(9), msg(HONEST, 1)).unwrap();
        }
        let stats = hub.stats();
        assert_eq!(stats.early_dropped_messages, 1);
        assert_eq!(stats.early_dropped_bytes, 0);
        assert_eq!(stats.early_held_messages, 6);
    }

    #[test]
    fn a_peer_may_hold_early_messages_for_a_bounded_number_of_sessions() {
        let hub = SessionHub::with_limits(
            node(LOCAL),
            HubLimits {
                early_sessions_per_peer: 2,
                ..limits()
            },
        );
        hub.deliver(session(10), msg(GREEDY, 1)).unwrap();
        hub.deliver(session(11), msg(GREEDY, 1)).unwrap();
        assert_eq!(
            refused(hub.deliver(session(12), msg(GREEDY, 1))),
            RejectReason::BacklogFull
        );
        // More for a session it already has messages held for is fine, and so is the
        // third session for another peer.
        hub.deliver(session(11), msg(GREEDY, 1)).unwrap();
        hub.deliver(session(12), msg(HONEST, 1)).unwrap();
        assert_eq!(hub.stats().early_dropped_sessions, 1);
        // Opening (or finishing) a session frees its slot.
        drop(open(&hub, session(10), &[GREEDY]));
        hub.deliver(session(12), msg(GREEDY, 1)).unwrap();
        assert_eq!(hub.stats().early_held_messages, 4);
    }

    #[test]
    fn early_messages_expire_and_free_the_quota() {
        let hub = SessionHub::with_limits(
            node(LOCAL),
            HubLimits {
                early_messages_per_peer: 1,
                early_ttl: Duration::from_millis(1),
                ..limits()
            },
        );
        hub.deliver(session(9), msg(GREEDY, 5)).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        // The purge runs before the new message is weighed against the quota.
        hub.deliver(session(9), msg(GREEDY, 5)).unwrap();
        let stats = hub.stats();
        assert_eq!(stats.early_expired, 1);
        assert_eq!((stats.early_held_messages, stats.early_held_bytes), (1, 5));
    }

    #[tokio::test]
    async fn a_sender_over_its_inbox_message_share_loses_messages_in_that_session_only() {
        let hub = SessionHub::with_limits(
            node(LOCAL),
            HubLimits {
                inbox_messages_per_sender: 3,
                ..limits()
            },
        );
        let mut channel = open(&hub, session(5), &[HONEST, GREEDY]);
        let mut other = open(&hub, session(6), &[GREEDY]);
        for _ in 0..3 {
            hub.deliver(session(5), msg(GREEDY, 1)).unwrap();
            hub.deliver(session(5), msg(HONEST, 1)).unwrap();
        }
        assert_eq!(
            refused(hub.deliver(session(5), msg(GREEDY, 1))),
            RejectReason::InboxFull
        );
        // The honest sender's share is its own.
        assert_eq!(
            refused(hub.deliver(session(5), msg(HONEST, 1))),
            RejectReason::InboxFull
        );
        assert_eq!(channel.overflowed(), vec![node(GREEDY), node(HONEST)]);
        let stats = hub.stats();
        assert_eq!(stats.inbox_dropped_messages, 2);
        // The greedy sender's other session is unaffected.
        hub.deliver(session(6), msg(GREEDY, 1)).unwrap();
        assert_eq!(other.recv().await.unwrap(), msg(GREEDY, 1));
        // What was delivered before the overflow is still received; then the share is
        // free again, and the sender stays recorded.
        assert_eq!(recv_all(&mut channel).await.len(), 6);
        hub.deliver(session(5), msg(GREEDY, 1)).unwrap();
        assert_eq!(channel.recv().await.unwrap(), msg(GREEDY, 1));
        assert_eq!(channel.overflowed(), vec![node(GREEDY), node(HONEST)]);
    }

    #[tokio::test]
    async fn receiving_frees_the_inbox_share_and_an_overflowing_sender_is_named_on_timeout() {
        let hub = SessionHub::with_limits(
            node(LOCAL),
            HubLimits {
                inbox_bytes_per_sender: 100,
                ..limits()
            },
        );
        let mut channel = open(&hub, session(5), &[HONEST, GREEDY]);
        // The honest sender stays within its share as long as the session keeps up.
        for _ in 0..5 {
            hub.deliver(session(5), msg(HONEST, 60)).unwrap();
            assert_eq!(channel.recv().await.unwrap(), msg(HONEST, 60));
        }
        hub.deliver(session(5), msg(GREEDY, 60)).unwrap();
        assert_eq!(
            refused(hub.deliver(session(5), msg(GREEDY, 60))),
            RejectReason::InboxFull
        );
        assert_eq!(hub.stats().inbox_dropped_bytes, 1);
        assert_eq!(channel.recv().await.unwrap(), msg(GREEDY, 60));
        // Heard from once, five times less than the honest sender, but named first.
        match channel.recv().await {
            Err(TransportError::Timeout { silent, .. }) => {
                assert_eq!(silent, vec![node(GREEDY), node(HONEST)])
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_expected_session_holds_early_messages_only_from_its_participants() {
        let hub = SessionHub::with_limits(node(LOCAL), limits());
        hub.deliver(session(5), msg(GREEDY, 10)).unwrap();
        hub.deliver(session(5), msg(HONEST, 10)).unwrap();
        hub.expect_session(session(5), &[node(LOCAL), node(HONEST)]);
        assert_eq!(
            refused(hub.deliver(session(5), msg(GREEDY, 10))),
            RejectReason::SenderNotParticipant
        );
        hub.deliver(session(5), msg(HONEST, 11)).unwrap();
        // Sessions not announced are held as before.
        hub.deliver(session(6), msg(GREEDY, 10)).unwrap();
        let stats = hub.stats();
        assert_eq!(stats.early_dropped_not_expected, 2);
        assert_eq!((stats.early_held_messages, stats.early_held_bytes), (3, 31));
        let mut channel = open(&hub, session(5), &[HONEST]);
        assert_eq!(
            recv_all(&mut channel).await,
            vec![msg(HONEST, 10), msg(HONEST, 11)]
        );
        assert_eq!(hub.stats().early_held_messages, 1);
    }

    #[tokio::test]
    async fn early_messages_handed_over_count_toward_the_inbox_share() {
        let hub = SessionHub::with_limits(
            node(LOCAL),
            HubLimits {
                inbox_messages_per_sender: 2,
                ..limits()
            },
        );
        hub.deliver(session(5), msg(HONEST, 1)).unwrap();
        hub.deliver(session(5), msg(HONEST, 1)).unwrap();
        hub.deliver(session(5), msg(GREEDY, 1)).unwrap();
        // GREEDY is not a participant: its early message is dropped at open.
        let mut channel = open(&hub, session(5), &[HONEST]);
        assert_eq!(hub.stats().early_held_messages, 0);
        assert_eq!(
            refused(hub.deliver(session(5), msg(HONEST, 1))),
            RejectReason::InboxFull
        );
        assert_eq!(recv_all(&mut channel).await.len(), 2);
    }
}
