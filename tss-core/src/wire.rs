//! Runs `round-based` protocols over a [`transport::SessionChannel`].
//!
//! Party indices are positions in the session's participant list; a message's sender
//! index comes from the transport's authenticated sender, never from the payload.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Sink, Stream, StreamExt};
use round_based::{Incoming, MessageDestination, MessageType, Outgoing};
use serde::{de::DeserializeOwned, Serialize};
use tokio_util::sync::CancellationToken;
use transport::{
    DeliveryKind, Destination, InboundMessage, NodeId, SessionChannel, SessionOutbox,
    TransportError, MAX_MESSAGE_SIZE,
};

use crate::compute::ComputeGate;
use crate::error::{ProtocolKind, TssError};

mod blame;

/// What can go wrong between the transport and a protocol.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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

/// Encodes a protocol message for the wire ([postcard]: compact and not self-describing;
/// both ends know the message type). Fails if the encoding exceeds [`MAX_MESSAGE_SIZE`].
pub fn encode_message<M: Serialize>(msg: &M) -> Result<Vec<u8>, WireError> {
    let bytes = postcard::to_stdvec(msg).map_err(|e| WireError::Encode(e.to_string()))?;
    if bytes.len() > MAX_MESSAGE_SIZE {
        return Err(WireError::Encode(format!(
            "encoded message of {} bytes exceeds the limit of {MAX_MESSAGE_SIZE} bytes",
            bytes.len()
        )));
    }
    Ok(bytes)
}

/// Decodes a protocol message from the wire, strictly: the input must be at most
/// [`MAX_MESSAGE_SIZE`] bytes and hold exactly one `M`, nothing after it.
///
/// The size check bounds the work and memory of decoding: postcard checks every length
/// prefix against the bytes that remain before reading what it announces, and serde's
/// collections cap what they reserve ahead of their elements.
pub fn decode_message<M: DeserializeOwned>(from: NodeId, bytes: &[u8]) -> Result<M, WireError> {
    let malformed = |reason: String| WireError::Malformed { from, reason };
    if bytes.len() > MAX_MESSAGE_SIZE {
        return Err(malformed(format!(
            "message of {} bytes exceeds the limit of {MAX_MESSAGE_SIZE} bytes",
            bytes.len()
        )));
    }
    let (msg, rest) =
        postcard::take_from_bytes::<M>(bytes).map_err(|e| malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(malformed(format!(
            "{} trailing bytes after the message",
            rest.len()
        )));
    }
    Ok(msg)
}

/// Both halves handed to `round_based::MpcParty::connected`.
pub type Delivery<M> = (IncomingStream<M>, OutgoingSink<M>);

/// Incoming half handed to `round_based::MpcParty`.
pub type IncomingStream<M> = Pin<Box<dyn Stream<Item = Result<Incoming<M>, WireError>> + Send>>;
/// Outgoing half handed to `round_based::MpcParty`.
pub type OutgoingSink<M> = Pin<Box<dyn Sink<Outgoing<M>, Error = WireError> + Send>>;

/// Turns a session channel into a `round_based` delivery.
///
/// Heartbeats (empty frames, see [`delivery_with_heartbeats`]) are skipped: they count as
/// signs of life for the session's idle timeout and never reach the protocol.
pub fn delivery<M>(channel: SessionChannel) -> (IncomingStream<M>, OutgoingSink<M>)
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    let participants = channel.participants().to_vec();
    let (inbox, outbox) = channel.split();
    let source = futures::stream::unfold(inbox, |mut inbox| async move {
        loop {
            match inbox.recv().await {
                Ok(msg) if msg.payload.is_empty() => continue,
                item => return Some((item, inbox)),
            }
        }
    });
    (
        incoming(Box::pin(source), participants.clone()),
        outgoing(outbox, participants),
    )
}

/// Like [`delivery`], and this party tells the others it is alive while it computes: a
/// task broadcasts a heartbeat (an empty frame) on the session every `every` during
/// which the protocol was polled (it computed, or handled a message). A party that only
/// waits sends none, so when every party waits for one that crashed or was cut off, the
/// session falls silent and its idle timeout fires as before; a party whose rounds take
/// longer than the idle timeout (aux-info of a large committee on a loaded machine)
/// keeps the others' sessions alive. Others' heartbeats are read by a task of their own
/// and never wake the protocol, so heartbeats cannot keep each other going.
///
/// Run the protocol's future through [`Liveness::track`]; dropping the [`Liveness`]
/// stops both tasks. Needs a tokio runtime.
pub fn delivery_with_heartbeats<M>(
    channel: SessionChannel,
    every: Duration,
) -> (Delivery<M>, Liveness)
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    let participants = channel.participants().to_vec();
    let (mut inbox, outbox) = channel.split();
    // Bounded: while the protocol does not read, messages wait in the session's inbox,
    // under its per-sender limits.
    let (tx, rx) = tokio::sync::mpsc::channel(FORWARDED_MESSAGES);
    let reader = tokio::spawn(async move {
        loop {
            let item = inbox.recv().await;
            if matches!(&item, Ok(msg) if msg.payload.is_empty()) {
                continue; // a heartbeat: it restarted the idle timeout, nothing more
            }
            let last = item.is_err();
            if tx.send(item).await.is_err() || last {
                break;
            }
        }
    });
    let progress = Arc::new(Progress::default());
    let beats = {
        let (outbox, progress) = (outbox.clone(), progress.clone());
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let computed = progress.polled.swap(false, Ordering::SeqCst)
                    || progress.polling.load(Ordering::SeqCst);
                if computed && outbox.send(Destination::Broadcast, Vec::new()).is_err() {
                    break;
                }
            }
        })
    };
    let source = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (
        (
            incoming(Box::pin(source), participants.clone()),
            outgoing(outbox, participants),
        ),
        Liveness {
            progress,
            tasks: [reader, beats],
        },
    )
}

/// How many messages the reader task of [`delivery_with_heartbeats`] holds for the
/// protocol before it stops reading the session.
const FORWARDED_MESSAGES: usize = 64;

/// Whether a protocol was polled: set by [`Tracked`], read by the heartbeat task.
#[derive(Default)]
struct Progress {
    /// A poll is under way now.
    polling: AtomicBool,
    /// A poll happened since the heartbeat task last looked.
    polled: AtomicBool,
}

/// The heartbeat and reader tasks of one [`delivery_with_heartbeats`] session; dropping
/// it stops them.
pub struct Liveness {
    progress: Arc<Progress>,
    tasks: [tokio::task::JoinHandle<()>; 2],
}

impl Liveness {
    /// `fut` (the protocol run on this session), reporting its polls to the heartbeat
    /// task.
    pub fn track<F: Future>(&self, fut: F) -> Tracked<F> {
        Tracked {
            fut: Box::pin(fut),
            progress: self.progress.clone(),
            gate: None,
            cancel: None,
        }
    }
}

impl std::fmt::Debug for Liveness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Liveness").finish_non_exhaustive()
    }
}

impl Drop for Liveness {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A protocol future whose polls the heartbeat task sees (see [`Liveness::track`]).
pub struct Tracked<F: Future> {
    fut: Pin<Box<F>>,
    progress: Arc<Progress>,
    /// Each poll first waits for a permit of this gate (counted as polling).
    gate: Option<&'static ComputeGate>,
    /// The run's token: a poll waiting at the gate gives up once it is cancelled.
    cancel: Option<CancellationToken>,
}

impl<F: Future> Tracked<F> {
    /// Each poll waits its turn at the process's [`ComputeGate`] (it blocks the polling
    /// thread: only for a future driven on a thread of its own).
    ///
    /// With `cancel` (the run's token), a poll whose run is cancelled while it waits, or
    /// by the time its turn comes, does not compute: it leaves the gate and returns
    /// `Pending` without polling the protocol. Whoever drives this future must therefore
    /// also watch `cancel` and stop on it (as `off_executor` in [`crate::ecdsa`] does:
    /// its `select!` registered on the token before this poll, so it is woken).
    pub(crate) fn gated(self, cancel: Option<CancellationToken>) -> Self {
        self.gated_by(ComputeGate::global(), cancel)
    }

    /// [`Tracked::gated`] at `gate`.
    fn gated_by(mut self, gate: &'static ComputeGate, cancel: Option<CancellationToken>) -> Self {
        self.gate = Some(gate);
        self.cancel = cancel;
        self
    }
}

impl<F: Future> Future for Tracked<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        this.progress.polling.store(true, Ordering::SeqCst);
        this.progress.polled.store(true, Ordering::SeqCst);
        let permit = match this.gate {
            Some(gate) => match gate.acquire_unless_cancelled(this.cancel.as_ref()) {
                Some(permit) => Some(permit),
                None => {
                    // Cancelled while waiting: no turn for a run that is over.
                    this.progress.polling.store(false, Ordering::SeqCst);
                    return Poll::Pending;
                }
            },
            None => None,
        };
        let out = this.fut.as_mut().poll(cx);
        drop(permit);
        this.progress.polling.store(false, Ordering::SeqCst);
        out
    }
}

/// The protocol's incoming messages from `source` (the session's, heartbeats removed):
/// each sender's index is its position in `participants`, from the transport's
/// authenticated sender.
fn incoming<M>(
    source: Pin<Box<dyn Stream<Item = Result<InboundMessage, TransportError>> + Send>>,
    participants: Vec<NodeId>,
) -> IncomingStream<M>
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    let incoming = futures::stream::unfold(
        (source, participants, 0u64),
        |(mut source, parties, next_id)| async move {
            let item = match source.next().await? {
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
            Some((item, (source, parties, next_id + 1)))
        },
    );
    Box::pin(incoming)
}

/// The protocol's outgoing messages, encoded and sent on `outbox`.
fn outgoing<M>(outbox: SessionOutbox, participants: Vec<NodeId>) -> OutgoingSink<M>
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
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
    Box::pin(outgoing)
}

/// Maps a failed protocol's error to a [`TssError`], blaming parties where the cause is
/// known: a timeout names the silent parties, a malformed message its sender, and a
/// cggmp21 abort the parties it blames ([`TssError::ProtocolAborted`]'s `culprits`).
///
/// `parties` is the protocol's party list, the session's participants in order: a
/// cggmp21 party index is a position in it (the committee for keygen and aux-info, the
/// signer list for presigning and signing). cggmp21 0.6.3 keeps its abort types private,
/// so the blamed indices are read from the error's `Debug` text by a strict reader that
/// knows only that version's shapes (an unknown shape, or an index outside `parties`,
/// blames nobody); see the `wire::blame` module source.
pub fn classify_error<E>(protocol: ProtocolKind, parties: &[NodeId], err: E) -> TssError
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
                    culprits: Vec::new(),
                    reason: other.to_string(),
                },
            };
        }
        source = e.source();
    }
    TssError::ProtocolAborted {
        protocol,
        culprits: blamed_parties(parties, &err),
        reason: error_chain(&err),
    }
}

/// The parties (from `parties`, by cggmp21 party index) that the abort `err` blames;
/// empty if it blames nobody, has an unknown shape or names an index outside `parties`.
fn blamed_parties(parties: &[NodeId], err: &dyn std::fmt::Debug) -> Vec<NodeId> {
    let culprits = blame::blamed_indices(&format!("{err:?}"))
        .into_iter()
        .map(|i| parties.get(usize::from(i)).copied())
        .collect::<Option<Vec<_>>>();
    let mut culprits = culprits.unwrap_or_default();
    culprits.sort();
    culprits.dedup();
    culprits
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

#[cfg(test)]
mod blame_tests {
    use super::*;

    /// An error whose `Debug` text is given (cggmp21's abort types are private).
    struct Shaped(&'static str);

    impl std::fmt::Debug for Shaped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::fmt::Display for Shaped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("aborted")
        }
    }

    impl std::error::Error for Shaped {}

    fn culprits(parties: &[NodeId], debug: &'static str) -> Vec<NodeId> {
        match classify_error(ProtocolKind::Presign, parties, Shaped(debug)) {
            TssError::ProtocolAborted {
                culprits, reason, ..
            } => {
                assert_eq!(reason, "aborted");
                culprits
            }
            other => panic!("a protocol abort, got {other:?}"),
        }
    }

    #[test]
    fn blamed_indices_are_positions_in_the_party_list() {
        let parties: Vec<NodeId> = (1..=3).map(|b| NodeId::from_bytes([b; 32])).collect();
        let psi = "SigningError(Aborted(InvalidPsiPrimePrime([(2, 1, 5), (0, 1, 4)])))";
        assert_eq!(culprits(&parties, psi), vec![parties[0], parties[2]]);
        // An index outside the list: nobody, rather than a guess.
        let far = "SigningError(Aborted(InvalidPsiPrimePrime([(0, 1, 4), (3, 1, 5)])))";
        assert_eq!(culprits(&parties, far), Vec::<NodeId>::new());
        assert_eq!(
            culprits(&parties, "SigningError(Aborted(MismatchedDelta))"),
            Vec::<NodeId>::new()
        );
    }
}

#[cfg(test)]
mod tests {
    use cggmp21::generic_ec::{Point, Scalar};
    use cggmp21::signing::msg::{Msg, MsgReliabilityCheck, MsgRound4};
    use sha2::{Digest, Sha256};

    use super::*;
    use crate::ecdsa::Curve;
    use crate::reshare::ReshareMsg;

    type SigningMsg = Msg<Curve, Sha256>;
    type PartialSig = cggmp21::PartialSignature<Curve>;

    const FROM: NodeId = NodeId::from_bytes([7; 32]);

    /// A dealer's signed commitments digest (the signature is not checked here).
    fn view(b: u8) -> crate::reshare::SignedCommitments {
        crate::reshare::SignedCommitments {
            digest: [b; 32],
            signature: crate::identity::IdentitySignature::from_bytes(vec![0x34; 64]),
        }
    }

    /// Every `ReshareMsg` variant.
    fn reshare_msgs() -> Vec<ReshareMsg> {
        let g = Point::<Curve>::generator().to_point();
        vec![
            ReshareMsg::Commitments {
                context: [1; 32],
                commitments: vec![g, g * Scalar::<Curve>::from(2u64), Point::zero()],
                signature: crate::identity::IdentitySignature::from_bytes(vec![0x56; 64]),
            },
            ReshareMsg::Share {
                share: Scalar::from(123_456_789u64),
                signature: crate::identity::IdentitySignature::from_bytes(vec![0xef; 64]),
            },
            ReshareMsg::Echo {
                views: vec![view(0xab), view(0xcd)],
            },
            ReshareMsg::Complaint {
                views: Some(vec![view(0xab)]),
                dealer: NodeId::from_bytes([3; 32]),
                evidence: crate::reshare::ComplaintEvidence::InvalidShare {
                    share: Scalar::from(987_654_321u64),
                    signature: crate::identity::IdentitySignature::from_bytes(vec![0x12; 64]),
                },
            },
            ReshareMsg::Complaint {
                views: None,
                dealer: NodeId::from_bytes([3; 32]),
                evidence: crate::reshare::ComplaintEvidence::NoValidShare,
            },
            ReshareMsg::Complaint {
                views: None,
                dealer: NodeId::from_bytes([3; 32]),
                evidence: crate::reshare::ComplaintEvidence::Equivocation {
                    first: view(0x01),
                    second: view(0x02),
                },
            },
            ReshareMsg::Confirm {
                signature: crate::identity::IdentitySignature::from_bytes(vec![0xcd; 64]),
            },
            ReshareMsg::Alive,
        ]
    }

    /// cggmp21 messages that need no protocol run to build: the last signing round, the
    /// reliability check and the online-signing partial signature. (Every other kind
    /// travels in the protocol tests: tests/wire.rs checks each one of a real run.)
    fn signing_msgs() -> Vec<SigningMsg> {
        vec![
            Msg::Round4(MsgRound4 {
                sigma: Scalar::from(42u64),
            }),
            Msg::ReliabilityCheck(MsgReliabilityCheck(Sha256::digest(b"round 1 msgs"))),
        ]
    }

    fn partial_sig() -> PartialSig {
        PartialSig {
            r: Scalar::from(5u64),
            sigma: Scalar::from(9u64),
        }
    }

    /// Encodes, decodes, and checks that the decoded value re-encodes to the same bytes.
    fn round_trip<M: Serialize + DeserializeOwned>(msg: &M) -> (Vec<u8>, M) {
        let bytes = encode_message(msg).unwrap();
        let back: M = decode_message(FROM, &bytes).unwrap();
        assert_eq!(encode_message(&back).unwrap(), bytes, "canonical encoding");
        (bytes, back)
    }

    #[test]
    fn reshare_messages_round_trip() {
        for msg in reshare_msgs() {
            let (_, back) = round_trip(&msg);
            assert_eq!(back, msg);
        }
    }

    #[test]
    fn cggmp21_signing_messages_round_trip() {
        for msg in signing_msgs() {
            round_trip(&msg);
        }
        let (_, back) = round_trip(&partial_sig());
        assert_eq!(back.r, partial_sig().r);
        assert_eq!(back.sigma, partial_sig().sigma);
    }

    #[test]
    fn encoding_is_compact_and_stable() {
        // Variant index as a varint, then fixed-size arrays as raw bytes: the layout the
        // fuzz seeds (fuzz/make_seeds.py) are written in.
        // A `Vec` is its length as a varint, then the items.
        let signed_view = [&[0xab; 32][..], &[64], &[0x34; 64]].concat();
        let echo = encode_message(&ReshareMsg::Echo {
            views: vec![view(0xab)],
        })
        .unwrap();
        assert_eq!(echo, [&[2u8, 1][..], &signed_view].concat());
        // An `Option` is a 0/1 byte then the value; an enum variant its index.
        let complaint = encode_message(&ReshareMsg::Complaint {
            views: Some(vec![view(0xab)]),
            dealer: NodeId::from_bytes([1; 32]),
            evidence: crate::reshare::ComplaintEvidence::InvalidCommitments,
        })
        .unwrap();
        assert_eq!(
            complaint,
            [&[3u8, 1, 1][..], &signed_view, &[1; 32], &[1]].concat()
        );
    }

    #[test]
    fn decoding_rejects_trailing_bytes() {
        fn check<M: Serialize + DeserializeOwned>(msg: &M) {
            let mut bytes = encode_message(msg).unwrap();
            bytes.push(0);
            match decode_message::<M>(FROM, &bytes) {
                Err(WireError::Malformed { from, reason }) => {
                    assert_eq!(from, FROM);
                    assert!(reason.contains("trailing"), "{reason}");
                }
                Err(e) => panic!("unexpected error {e}"),
                Ok(_) => panic!("trailing byte accepted"),
            }
        }
        reshare_msgs().iter().for_each(check);
        signing_msgs().iter().for_each(check);
        check(&partial_sig());
    }

    #[test]
    fn decoding_rejects_truncated_and_garbage_input() {
        for msg in reshare_msgs() {
            let bytes = encode_message(&msg).unwrap();
            for len in 0..bytes.len() {
                assert!(
                    decode_message::<ReshareMsg>(FROM, &bytes[..len]).is_err(),
                    "a {len}-byte prefix of {msg:?} decoded"
                );
            }
        }
        // An unknown variant, and a length prefix announcing far more than there is.
        assert!(decode_message::<ReshareMsg>(FROM, &[9]).is_err());
        assert!(decode_message::<ReshareMsg>(FROM, &[0, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
        assert!(decode_message::<Vec<u8>>(FROM, &[0xff, 0xff, 0xff, 0xff, 0x0f, 1]).is_err());
    }

    #[test]
    fn size_limit_holds_both_ways() {
        let huge = vec![0u8; MAX_MESSAGE_SIZE];
        assert!(matches!(encode_message(&huge), Err(WireError::Encode(_))));
        let mut bytes = encode_message(&vec![0u8; MAX_MESSAGE_SIZE - 8]).unwrap();
        assert!(decode_message::<Vec<u8>>(FROM, &bytes).is_ok());
        bytes.resize(MAX_MESSAGE_SIZE + 1, 0);
        match decode_message::<Vec<u8>>(FROM, &bytes) {
            Err(WireError::Malformed { reason, .. }) => {
                assert!(reason.contains("limit"), "{reason}")
            }
            other => panic!("oversized input: {other:?}"),
        }
    }

    #[test]
    fn a_poll_cancelled_while_waiting_at_the_gate_does_not_run_the_protocol() {
        let gate: &'static ComputeGate = Box::leak(Box::new(ComputeGate::new(1)));
        let held = gate.acquire();
        let token = CancellationToken::new();
        let worked = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (token, worked) = (token.clone(), worked.clone());
            std::thread::spawn(move || {
                let work = futures::future::poll_fn(move |_| {
                    worked.store(true, Ordering::SeqCst);
                    Poll::Ready(())
                });
                let mut tracked = Tracked {
                    fut: Box::pin(work),
                    progress: Arc::default(),
                    gate: None,
                    cancel: None,
                }
                .gated_by(gate, Some(token));
                let waker = futures::task::noop_waker();
                Pin::new(&mut tracked)
                    .poll(&mut Context::from_waker(&waker))
                    .is_ready()
            })
        };
        while gate.waiting() == 0 {
            std::thread::yield_now();
        }
        token.cancel();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !waiter.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        // Without the cancel check the waiter is still queued: it gets this permit now.
        drop(held);
        let ready = waiter.join().unwrap();
        assert!(
            !worked.load(Ordering::SeqCst),
            "the cancelled run's protocol was not polled"
        );
        assert!(!ready, "the poll returned without an output");
        assert_eq!(gate.waiting(), 0, "it left the queue");
    }
}
