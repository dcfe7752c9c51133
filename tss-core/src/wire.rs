//! Runs `round-based` protocols over a [`transport::SessionChannel`].
//!
//! Party indices are positions in the session's participant list; a message's sender
//! index comes from the transport's authenticated sender, never from the payload.

use std::pin::Pin;

use bincode::Options;
use futures::{Sink, Stream};
use round_based::{Incoming, MessageDestination, MessageType, Outgoing};
use serde::{de::DeserializeOwned, Serialize};
use transport::{
    DeliveryKind, Destination, NodeId, SessionChannel, TransportError, MAX_MESSAGE_SIZE,
};

use crate::error::{ProtocolKind, TssError};

/// What can go wrong between the transport and a protocol.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The transport failed (timeout, closed, …).
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A message did not decode.
    #[error("malformed message from {from}: {reason}")]
    Malformed {
        /// The authenticated sender.
        from: NodeId,
        /// Decoder's complaint.
        reason: String,
    },
    /// A protocol addressed a party index outside the session.
    #[error("no party with index {0}")]
    NoSuchParty(u16),
    /// A message could not be encoded.
    #[error("cannot encode message: {0}")]
    Encode(String),
}

fn codec() -> impl Options {
    bincode::DefaultOptions::new()
        .with_limit(MAX_MESSAGE_SIZE as u64)
        .reject_trailing_bytes()
}

/// Encodes a protocol message for the wire.
pub fn encode_message<M: Serialize>(msg: &M) -> Result<Vec<u8>, WireError> {
    codec()
        .serialize(msg)
        .map_err(|e| WireError::Encode(e.to_string()))
}

/// Decodes a protocol message from the wire (bounded; rejects trailing bytes).
pub fn decode_message<M: DeserializeOwned>(from: NodeId, bytes: &[u8]) -> Result<M, WireError> {
    codec()
        .deserialize(bytes)
        .map_err(|e| WireError::Malformed {
            from,
            reason: e.to_string(),
        })
}

/// Incoming half handed to `round_based::MpcParty`.
pub type IncomingStream<M> = Pin<Box<dyn Stream<Item = Result<Incoming<M>, WireError>> + Send>>;
/// Outgoing half handed to `round_based::MpcParty`.
pub type OutgoingSink<M> = Pin<Box<dyn Sink<Outgoing<M>, Error = WireError> + Send>>;

/// Turns a session channel into a `round_based` delivery.
pub fn delivery<M>(channel: SessionChannel) -> (IncomingStream<M>, OutgoingSink<M>)
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    let participants = channel.participants().to_vec();
    let (inbox, outbox) = channel.split();
    let incoming_parties = participants.clone();
    let incoming = futures::stream::unfold(
        (inbox, incoming_parties, 0u64),
        |(mut inbox, parties, next_id)| async move {
            let item = match inbox.recv().await {
                Ok(msg) => match parties.iter().position(|p| *p == msg.from) {
                    // The hub only delivers participants' messages; guard anyway.
                    None => Err(WireError::Malformed {
                        from: msg.from,
                        reason: "sender is not a participant".into(),
                    }),
                    Some(sender) => decode_message::<M>(msg.from, &msg.payload).map(|m| Incoming {
                        id: next_id,
                        sender: sender as u16,
                        msg_type: match msg.kind {
                            DeliveryKind::Broadcast => MessageType::Broadcast,
                            DeliveryKind::Direct => MessageType::P2P,
                        },
                        msg: m,
                    }),
                },
                Err(e) => Err(WireError::Transport(e)),
            };
            Some((item, (inbox, parties, next_id + 1)))
        },
    );
    let outgoing = futures::sink::unfold(
        (outbox, participants),
        |(outbox, parties), out: Outgoing<M>| async move {
            let bytes = encode_message(&out.msg)?;
            let to = match out.recipient {
                MessageDestination::AllParties => Destination::Broadcast,
                MessageDestination::OneParty(i) => Destination::Direct(
                    *parties
                        .get(usize::from(i))
                        .ok_or(WireError::NoSuchParty(i))?,
                ),
            };
            outbox.send(to, bytes)?;
            Ok::<_, WireError>((outbox, parties))
        },
    );
    (Box::pin(incoming), Box::pin(outgoing))
}

/// Maps a failed protocol's error to a [`TssError`], blaming parties where the cause is
/// known: a timeout names the silent parties, a malformed message its sender.
pub fn classify_error<E>(protocol: ProtocolKind, err: E) -> TssError
where
    E: std::error::Error + 'static,
{
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(e) = source {
        if let Some(wire) = e.downcast_ref::<WireError>() {
            return match wire {
                WireError::Transport(TransportError::Timeout { silent, .. }) => TssError::Timeout {
                    protocol,
                    silent: silent.clone(),
                },
                WireError::Malformed { from, reason } => TssError::MalformedMessage {
                    protocol,
                    from: *from,
                    reason: reason.clone(),
                },
                WireError::Transport(t) => TssError::Transport(t.clone()),
                other => TssError::ProtocolAborted {
                    protocol,
                    reason: other.to_string(),
                },
            };
        }
        source = e.source();
    }
    TssError::ProtocolAborted {
        protocol,
        reason: error_chain(&err),
    }
}

fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
