//! Fault injection for tests: a transport wrapper that misbehaves on the way out.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::Rng;

use crate::session::{SessionChannel, SessionSender};
use crate::{DeliveryKind, NodeId, SessionConfig, SessionId, Transport, TransportError};

/// One kind of misbehaviour, applied to this node's outgoing messages.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Drop each message with this probability (0.0..=1.0).
    Drop(f64),
    /// Drop every message to this node.
    DropTo(NodeId),
    /// Deliver each message after this delay.
    Delay(Duration),
    /// Deliver each message twice.
    Duplicate,
    /// Hold each message back and send it after the next one (swaps pairs).
    Reorder,
    /// Flip one byte of each payload (at a random position).
    Corrupt,
    /// Send a different (corrupted) version of each broadcast to the recipients listed.
    /// One random byte is flipped, so the copy may or may not still decode.
    EquivocateBroadcastTo(Vec<NodeId>),
    /// Send the recipients listed a copy of each broadcast with one byte appended: a
    /// version a strict decoder always rejects (deterministic, unlike
    /// [`Fault::EquivocateBroadcastTo`]).
    GarbleBroadcastTo(Vec<NodeId>),
    /// Flip the lowest bit of the last byte of every direct message to this node (a
    /// deterministic "wrong value" for a private share, still well-formed).
    CorruptDirectTo(NodeId),
}

/// The faults a [`FaultyTransport`] applies, in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultPlan {
    /// Faults applied to every outgoing message.
    pub faults: Vec<Fault>,
}

impl FaultPlan {
    /// A plan with one fault.
    pub fn single(fault: Fault) -> Self {
        Self {
            faults: vec![fault],
        }
    }
}

/// Wraps a transport and applies a [`FaultPlan`] to everything this node sends.
#[derive(Clone)]
pub struct FaultyTransport<T> {
    inner: T,
    plan: FaultPlan,
}

impl<T: Transport> FaultyTransport<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, plan: FaultPlan) -> Self {
        Self { inner, plan }
    }
}

impl<T: Transport> Transport for FaultyTransport<T> {
    fn local_node(&self) -> NodeId {
        self.inner.local_node()
    }

    fn connection_state(&self, peer: &NodeId) -> crate::ConnectionState {
        self.inner.connection_state(peer)
    }

    fn open_session(
        &self,
        session: SessionId,
        config: SessionConfig,
    ) -> Result<SessionChannel, TransportError> {
        let plan = self.plan.clone();
        Ok(self
            .inner
            .open_session(session, config)?
            .wrap_sender(move |inner| {
                Arc::new(FaultySender {
                    inner,
                    plan,
                    held: Mutex::new(None),
                })
            }))
    }
}

type Held = (SessionId, NodeId, DeliveryKind, Vec<u8>);

struct FaultySender {
    inner: Arc<dyn SessionSender>,
    plan: FaultPlan,
    held: Mutex<Option<Held>>,
}

fn corrupt(payload: &mut [u8]) {
    if !payload.is_empty() {
        let i = rand::thread_rng().gen_range(0..payload.len());
        payload[i] ^= 0x5a;
    }
}

impl SessionSender for FaultySender {
    fn send(
        &self,
        session: SessionId,
        to: NodeId,
        kind: DeliveryKind,
        mut payload: Vec<u8>,
    ) -> Result<(), TransportError> {
        let mut copies = 1;
        let mut delay = None;
        for fault in &self.plan.faults {
            match fault {
                Fault::Drop(p) if rand::thread_rng().gen_bool(p.clamp(0.0, 1.0)) => return Ok(()),
                Fault::DropTo(node) if *node == to => return Ok(()),
                Fault::Delay(d) => delay = Some(*d),
                Fault::Duplicate => copies = 2,
                Fault::Corrupt => corrupt(&mut payload),
                Fault::CorruptDirectTo(node) if *node == to && kind == DeliveryKind::Direct => {
                    if let Some(last) = payload.last_mut() {
                        *last ^= 0x01;
                    }
                }
                Fault::EquivocateBroadcastTo(nodes)
                    if kind == DeliveryKind::Broadcast && nodes.contains(&to) =>
                {
                    corrupt(&mut payload)
                }
                // Empty frames (protocol heartbeats) carry nothing to garble.
                Fault::GarbleBroadcastTo(nodes)
                    if kind == DeliveryKind::Broadcast
                        && nodes.contains(&to)
                        && !payload.is_empty() =>
                {
                    payload.push(0x5a)
                }
                Fault::Reorder => {
                    let mut held = self.held.lock();
                    match held.take() {
                        None => {
                            *held = Some((session, to, kind, payload));
                            return Ok(());
                        }
                        Some(previous) => {
                            drop(held);
                            self.inner.send(session, to, kind, payload.clone())?;
                            let (s, t, k, p) = previous;
                            return self.inner.send(s, t, k, p);
                        }
                    }
                }
                _ => {}
            }
        }
        match delay {
            Some(d) => {
                let inner = self.inner.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    for _ in 0..copies {
                        let _ = inner.send(session, to, kind, payload.clone());
                    }
                });
                Ok(())
            }
            None => {
                for _ in 0..copies {
                    self.inner.send(session, to, kind, payload.clone())?;
                }
                Ok(())
            }
        }
    }
}

/// What a [`TamperRule`] does with one outgoing frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tamper {
    /// Send it unchanged.
    Pass,
    /// Send nothing.
    Drop,
    /// Send these frames instead (to the same recipient, as the same kind).
    Replace(Vec<Vec<u8>>),
}

/// `(session, recipient, kind, payload)` → what to send instead.
pub type TamperRule = Arc<dyn Fn(SessionId, NodeId, DeliveryKind, &[u8]) -> Tamper + Send + Sync>;

/// A Byzantine party for tests: the node runs the honest code, but every frame it sends
/// passes through a rule that may replace it, per recipient and per message, with
/// well-formed payloads of the test's choosing (an equivocating broadcast, a consistent
/// but wrong share, a confirmation to some receivers only), or drop it.
#[derive(Clone)]
pub struct TamperingTransport<T> {
    inner: T,
    rule: TamperRule,
}

impl<T: Transport> TamperingTransport<T> {
    /// Wraps `inner`; `rule` sees every outgoing frame.
    pub fn new(inner: T, rule: TamperRule) -> Self {
        Self { inner, rule }
    }
}

impl<T: Transport> Transport for TamperingTransport<T> {
    fn local_node(&self) -> NodeId {
        self.inner.local_node()
    }

    fn connection_state(&self, peer: &NodeId) -> crate::ConnectionState {
        self.inner.connection_state(peer)
    }

    fn open_session(
        &self,
        session: SessionId,
        config: SessionConfig,
    ) -> Result<SessionChannel, TransportError> {
        let rule = self.rule.clone();
        Ok(self
            .inner
            .open_session(session, config)?
            .wrap_sender(move |inner| Arc::new(TamperingSender { inner, rule })))
    }
}

struct TamperingSender {
    inner: Arc<dyn SessionSender>,
    rule: TamperRule,
}

impl SessionSender for TamperingSender {
    fn send(
        &self,
        session: SessionId,
        to: NodeId,
        kind: DeliveryKind,
        payload: Vec<u8>,
    ) -> Result<(), TransportError> {
        match (self.rule)(session, to, kind, &payload) {
            Tamper::Pass => self.inner.send(session, to, kind, payload),
            Tamper::Drop => Ok(()),
            Tamper::Replace(frames) => {
                for frame in frames {
                    self.inner.send(session, to, kind, frame)?;
                }
                Ok(())
            }
        }
    }
}
