//! A live party fed a mutated transcript: node 1 of the recorded 2-of-2 run is re-run for
//! real (the same execution ids, primes, key share and deterministic randomness as when
//! the transcript was recorded, so it sends exactly the recorded messages), and node 2's
//! recorded messages, edited by the fuzzer, are delivered to it as coming from node 2
//! (authenticated by the transport, as a malicious peer's would be). Without edits the
//! run completes (checked); with edits it must end in a result or a `TssError`, never a
//! panic.

use std::sync::Arc;
use std::time::Duration;

use arbitrary::Arbitrary;
use transport::{DeliveryKind, InMemoryNetwork, InboundMessage, NodeId};
use tss_core::fuzzing::{set_deterministic_rng, RecordedMessage};
use tss_core::{Committee, ExecutionId, KeyId, KeyShare, PaillierPrimes, TssNode};

use crate::edit::{edited, FieldEdit};
use crate::transcript::{transcript, Stage};

const PRIMES_JSON: &str = include_str!("../../tss-core/test-data/insecure-test-primes.json");

/// Idle timeout of every session: all messages are delivered before the run starts, so
/// only a message the edits removed is waited for.
pub const IDLE: Duration = Duration::from_millis(20);

/// One change to the peer's recorded messages. Message indices are taken modulo the
/// number of messages (in send order), stages modulo the stages run.
#[derive(Arbitrary, Debug, Clone)]
pub enum PeerEdit {
    /// Structure-aware edits of one message ([`crate::edit`]).
    Fields {
        /// Which message.
        msg: u8,
        /// The edits, applied in order.
        edits: Vec<FieldEdit>,
    },
    /// Do not send it.
    Drop(u8),
    /// Send it twice.
    Duplicate(u8),
    /// Send two messages in each other's place.
    Swap(u8, u8),
    /// Broadcast instead of direct, or the other way.
    ToggleKind(u8),
    /// Move it into another stage's session (a replay across sessions).
    MoveTo {
        /// Which message.
        msg: u8,
        /// Which stage.
        stage: u8,
    },
    /// Arbitrary bytes as an extra message of a stage.
    Inject {
        /// Which stage.
        stage: u8,
        /// Broadcast or direct.
        broadcast: bool,
        /// The payload.
        payload: Vec<u8>,
    },
}

/// A fuzz input of a live-party target.
#[derive(Arbitrary, Debug, Clone)]
pub struct PartyInput {
    /// Which of the target's runs to do (targets interpret it).
    pub pick: u8,
    /// Edits, applied in order (at most [`MAX_EDITS`]).
    pub edits: Vec<PeerEdit>,
}

/// More edits than this are ignored (keeps each run short).
pub const MAX_EDITS: usize = 8;

struct Planned {
    stage: Stage,
    broadcast: bool,
    payload: Vec<u8>,
}

/// Node 2's recorded messages of `stages` to node 1, with `edits` applied.
fn plan(stages: &[Stage], edits: &[PeerEdit]) -> Vec<Planned> {
    let t = transcript();
    let (me, peer) = (t.members[0], t.members[1]);
    let recorded: Vec<&RecordedMessage> = t
        .messages
        .iter()
        .filter(|m| m.from == peer && m.to == me)
        .filter(|m| Stage::of(m).is_some_and(|s| stages.contains(&s)))
        .collect();
    let mut out: Vec<Planned> = recorded
        .iter()
        .map(|m| Planned {
            stage: Stage::of(m).unwrap(),
            broadcast: m.broadcast,
            payload: m.payload.clone(),
        })
        .collect();
    for edit in edits.iter().take(MAX_EDITS) {
        let n = out.len();
        let pick = |i: &u8| usize::from(*i) % n.max(1);
        match edit {
            PeerEdit::Fields { msg, edits } if n > 0 => {
                let m = &mut out[pick(msg)];
                let ty = m.stage.msg_type();
                let others: Vec<Vec<u8>> = recorded
                    .iter()
                    .filter(|r| Stage::of(r).map(Stage::msg_type) == Some(ty))
                    .map(|r| r.payload.clone())
                    .collect();
                m.payload = edited(ty, &m.payload, &edits[..edits.len().min(4)], &others);
            }
            PeerEdit::Drop(i) if n > 0 => {
                out.remove(pick(i));
            }
            PeerEdit::Duplicate(i) if n > 0 => {
                let m = &out[pick(i)];
                let copy = Planned {
                    stage: m.stage,
                    broadcast: m.broadcast,
                    payload: m.payload.clone(),
                };
                out.insert(pick(i), copy);
            }
            PeerEdit::Swap(a, b) if n > 0 => {
                let (a, b) = (pick(a), pick(b));
                let pa = std::mem::take(&mut out[a].payload);
                out[a].payload = std::mem::replace(&mut out[b].payload, pa);
            }
            PeerEdit::ToggleKind(i) if n > 0 => {
                let m = &mut out[pick(i)];
                m.broadcast = !m.broadcast;
            }
            PeerEdit::MoveTo { msg, stage } if n > 0 => {
                out[pick(msg)].stage = stages[usize::from(*stage) % stages.len()];
            }
            PeerEdit::Inject {
                stage,
                broadcast,
                payload,
            } => out.push(Planned {
                stage: stages[usize::from(*stage) % stages.len()],
                broadcast: *broadcast,
                payload: payload.clone(),
            }),
            _ => {}
        }
    }
    out
}

/// Node 1 on a fresh in-memory network, with node 2's (edited) messages of `stages`
/// already delivered into its sessions.
pub fn party(stages: &[Stage], edits: &[PeerEdit]) -> TssNode {
    let t = transcript();
    set_deterministic_rng(Some(t.rng_seed));
    let network = InMemoryNetwork::new();
    network.endpoint(t.members[1]); // so node 1's own sends have somewhere to go
    let me = network.endpoint(t.members[0]);
    for m in plan(stages, edits) {
        let msg = InboundMessage {
            from: t.members[1],
            kind: if m.broadcast {
                DeliveryKind::Broadcast
            } else {
                DeliveryKind::Direct
            },
            payload: m.payload,
        };
        // Held until node 1 opens the session; a refusal (a hub limit) is the transport
        // doing its job.
        let _ = me.hub().deliver(m.stage.eid().session_id(), msg);
    }
    TssNode::new(Arc::new(me)).with_idle_timeout(IDLE)
}

/// Node 1's Paillier primes in the transcript.
pub fn primes() -> PaillierPrimes {
    let t = transcript();
    PaillierPrimes::list_from_json(PRIMES_JSON)
        .expect("test primes")
        .swap_remove(t.primes_index[0])
}

/// Node 1's key share of the transcript.
pub fn key_share() -> KeyShare {
    KeyShare::from_secret_bytes(&transcript().key_shares[0]).expect("transcript key share")
}

/// The committee, key id and execution ids of the transcript.
pub fn committee() -> (Committee, KeyId) {
    let t = transcript();
    (
        Committee::new(t.members.clone(), 2).unwrap(),
        KeyId::new(&t.key_id).unwrap(),
    )
}

/// The transcript's key address, for checking results.
pub fn address() -> [u8; 20] {
    transcript().address
}

/// The members, node 1 first.
pub fn members() -> Vec<NodeId> {
    transcript().members.clone()
}

/// Execution id of a run of the transcript.
pub fn eid(bytes: [u8; 32]) -> ExecutionId {
    ExecutionId::from_bytes(bytes)
}

/// How a run ended, for `FUZZ_DEBUG` output.
pub fn describe<T: std::fmt::Debug, E: std::fmt::Display>(result: &Result<T, E>) -> String {
    match result {
        Ok(v) => format!("completed: {v:?}"),
        Err(e) => format!("failed: {e}"),
    }
}
