//! In-process transport: every endpoint shares one router. For tests and benchmarks.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::session::{HubLimits, SessionChannel, SessionHub, SessionSender};
use crate::{
    DeliveryKind, InboundMessage, NodeId, SessionConfig, SessionId, Transport, TransportError,
};

/// A set of in-process endpoints that can reach each other.
///
/// Authentication is by construction: a message's sender is the endpoint it was sent
/// from, whatever its payload says.
#[derive(Clone, Default)]
pub struct InMemoryNetwork {
    hubs: Arc<Mutex<HashMap<NodeId, SessionHub>>>,
    down: Arc<Mutex<std::collections::HashSet<NodeId>>>,
}

impl InMemoryNetwork {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates (or re-creates, dropping all its sessions) the endpoint of `node`.
    pub fn endpoint(&self, node: NodeId) -> InMemoryTransport {
        self.endpoint_with_limits(node, HubLimits::default())
    }

    /// Like [`InMemoryNetwork::endpoint`], with the given memory limits for its session
    /// table.
    pub fn endpoint_with_limits(&self, node: NodeId, limits: HubLimits) -> InMemoryTransport {
        let hub = SessionHub::with_limits(node, limits);
        self.hubs.lock().insert(node, hub.clone());
        self.down.lock().remove(&node);
        InMemoryTransport {
            hub,
            network: self.clone(),
        }
    }

    /// Takes `node` off the network, as if its process died: messages to it are refused,
    /// and its peers see it [`crate::ConnectionState::Down`] until
    /// [`InMemoryNetwork::endpoint`] creates it again.
    pub fn disconnect(&self, node: &NodeId) {
        self.hubs.lock().remove(node);
        self.down.lock().insert(*node);
    }

    fn hub_of(&self, node: &NodeId) -> Option<SessionHub> {
        self.hubs.lock().get(node).cloned()
    }
}

/// One node's endpoint on an [`InMemoryNetwork`].
#[derive(Clone)]
pub struct InMemoryTransport {
    hub: SessionHub,
    network: InMemoryNetwork,
}

struct InMemorySender {
    from: NodeId,
    network: InMemoryNetwork,
}

impl SessionSender for InMemorySender {
    fn send(
        &self,
        session: SessionId,
        to: NodeId,
        kind: DeliveryKind,
        payload: Vec<u8>,
    ) -> Result<(), TransportError> {
        let hub = self
            .network
            .hub_of(&to)
            .ok_or_else(|| TransportError::Network(format!("no endpoint for {to}")))?;
        let msg = InboundMessage {
            from: self.from,
            kind,
            payload,
        };
        if let Err(e) = hub.deliver(session, msg) {
            // The receiver refused it; like a real network, the sender is not told.
            tracing::warn!(%session, %to, error = %e, "in-memory delivery refused");
        }
        Ok(())
    }
}

impl Transport for InMemoryTransport {
    fn local_node(&self) -> NodeId {
        self.hub.local_node()
    }

    fn connection_state(&self, peer: &NodeId) -> crate::ConnectionState {
        if self.network.hub_of(peer).is_some() {
            crate::ConnectionState::Connected
        } else if self.network.down.lock().contains(peer) {
            crate::ConnectionState::Down
        } else {
            crate::ConnectionState::Unknown
        }
    }

    fn open_session(
        &self,
        session: SessionId,
        config: SessionConfig,
    ) -> Result<SessionChannel, TransportError> {
        let sender = Arc::new(InMemorySender {
            from: self.hub.local_node(),
            network: self.network.clone(),
        });
        self.hub.open(session, config, sender)
    }
}

impl InMemoryTransport {
    /// The session table of this endpoint (to inject messages in tests).
    pub fn hub(&self) -> &SessionHub {
        &self.hub
    }
}
