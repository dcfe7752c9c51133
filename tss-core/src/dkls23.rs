//! DKLs23 (Doerner, Kondi, Lee, shelat 2023; the `dkls23` crate, 0xCarbon): distributed
//! keygen and full signing of threshold ECDSA over this crate's transport, the second
//! protocol beside CGGMP21 ([`crate::Protocol`]).
//!
//! What this module adds on top of the crate, which leaves it to its caller:
//! - **Senders from the transport.** Every message field naming a sender or receiver
//!   (`parties.sender`, `ProofCommitment.index`, `sender_index`) must equal the
//!   authenticated sender's and this party's indices, or the sender is blamed.
//! - **Echo-checked broadcasts.** After each round with a broadcast, every party sends the
//!   others a digest of every broadcast it received; a difference aborts the run
//!   (blaming nobody: it shows only that views differ).
//! - **Commit, then reveal.** The keygen's proof of knowledge of each party's constant
//!   term is committed to (a hash) in round 2 and revealed in round 3, as the paper's
//!   protocol 9.1 asks (the crate's own session hands both over at once).
//! - **Execution ids.** The run's [`ExecutionId`] is DKLs23's session id (keygen) and
//!   signing id, so messages of another run do not verify.
//! - **Silence, not CPU time.** A party sends heartbeats while it computes a phase (off
//!   the async executor), so a run whose phases take longer than the idle timeout (many
//!   parties on few cores) is not cut; it sends none while it waits, so the parties
//!   waiting for a silent one (crashed, or gone after an abort) still time out.
//! - **Bans.** A failed oblivious-transfer check means the culprit learned something
//!   about the pairwise state: [`TssError::MustExclude`] names it, and the caller must
//!   never run this generation of the key with it again (the pool layer bans it and
//!   stores the ban with the generation: `PoolEvent::MemberBanned`).
//! - **Resharing.** The crate has no member change. A new committee gets Shamir shares of
//!   the same secret from tss-core's Feldman resharing (shared with CGGMP21), then runs
//!   the crate's complete refresh from a party holding only that share, which builds the
//!   pairwise state; the refresh's re-randomization is dropped so that the share stays
//!   the one the reshare certificate binds (its public share is checked).
//!
//! Compared with CGGMP21: no Paillier keys, no aux-info and no presignatures (the
//! message is bound from the first signing round on), signing needs exactly the
//! threshold, and an abort names a culprit only for the OT checks
//! ([`TssError::ProtocolAborted`]); a failed share consistency check blames nobody.
//! The `dkls23` crate has no audit (see README).
//!
//! Transport confidentiality matters here: the keygen's first round and its zero-share
//! seeds are secret point-to-point values, so run it over an encrypting transport (the
//! libp2p transport's noise channels).

use std::collections::BTreeMap;

use dkls23::protocols::dkg::{
    BroadcastDerivationPhase2to4, BroadcastDerivationPhase3to4, ProofCommitment,
    TransmitInitMulPhase3to4, TransmitInitZeroSharePhase2to4, TransmitInitZeroSharePhase3to4,
};
use dkls23::protocols::signing::{Broadcast3to4, SignData, TransmitPhase1to2, TransmitPhase2to3};
use dkls23::protocols::{Abort, AbortKind, Parameters, PartiesMessage, PartyIndex};
use dkls23::{DkgSession, SignSession};
use k256::ecdsa::VerifyingKey;
use k256_dkls23::elliptic_curve::ff::PrimeField;
use k256_dkls23::elliptic_curve::sec1::ToSec1Point;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sha2::{Digest, Sha256};
use transport::{Destination, NodeId, SessionInbox, SessionOutbox};
use zeroize::Zeroizing;

use crate::ecdsa::TssNode;
use crate::error::{ProtocolKind, Result, TssError};
use crate::ethereum::EthSignature;
use crate::ids::{Committee, ExecutionId, Generation, KeyId};
use crate::protocol::Protocol;
use crate::share::{KeyShare, ShareSecret};

type Curve014 = k256_dkls23::Secp256k1;
type Party = dkls23::secp256k1::Party;

/// The DKLs23 part of a [`KeyShare`]: the party's Shamir share of the secret and its
/// pairwise state with every other member (oblivious-transfer seeds, zero-share seeds),
/// plus every member's public share (for resharing and [`KeyShare::public_info`]).
pub(crate) struct Dkls23Secret {
    pub(crate) party: Party,
    pub(crate) public_key: VerifyingKey,
    /// Compressed public share of each member, in committee order.
    pub(crate) public_shares: Vec<Vec<u8>>,
}

impl Dkls23Secret {
    /// The Shamir share in CGGMP21's scalar type (the reshare's dealing is shared code).
    pub(crate) fn secret_scalar(
        &self,
    ) -> Result<Zeroizing<cggmp21::generic_ec::Scalar<crate::ecdsa::Curve>>> {
        let bytes = Zeroizing::new(self.party.poly_point.to_repr());
        cggmp21::generic_ec::Scalar::from_be_bytes(bytes.as_slice())
            .map(Zeroizing::new)
            .map_err(|_| TssError::InvalidKeyShare("the DKLs23 share is not a scalar".into()))
    }
}

#[derive(Serialize, Deserialize)]
struct StoredDkls23Share {
    version: u8,
    protocol: Protocol,
    key_id: KeyId,
    generation: Generation,
    committee: Committee,
    local: NodeId,
    party: Party,
    public_shares: Vec<Vec<u8>>,
}

/// Version 3: with every member's public share (version 2, without, was never used by
/// the pool layer).
const STORED_VERSION: u8 = 3;

/// A DKLs23 share's sealed bytes (see [`KeyShare::to_secret_bytes`]).
pub(crate) fn seal_share(share: &KeyShare, secret: &Dkls23Secret) -> Result<Zeroizing<Vec<u8>>> {
    #[derive(Serialize)]
    struct Borrowed<'a> {
        version: u8,
        protocol: Protocol,
        key_id: &'a KeyId,
        generation: Generation,
        committee: &'a Committee,
        local: NodeId,
        party: &'a Party,
        public_shares: &'a [Vec<u8>],
    }
    serde_json::to_vec(&Borrowed {
        version: STORED_VERSION,
        protocol: Protocol::Dkls23,
        key_id: &share.key_id,
        generation: share.generation,
        committee: &share.committee,
        local: share.local,
        party: &secret.party,
        public_shares: &secret.public_shares,
    })
    .map(Zeroizing::new)
    .map_err(|e| TssError::Decode {
        what: "key share",
        reason: e.to_string(),
    })
}

/// Restores a DKLs23 share from [`seal_share`] output and checks it against its
/// committee.
pub(crate) fn unseal_share(bytes: &[u8]) -> Result<KeyShare> {
    crate::protocol::expect_stored_protocol(bytes, Protocol::Dkls23)?;
    let stored: StoredDkls23Share =
        serde_json::from_slice(bytes).map_err(|e| TssError::Decode {
            what: "key share",
            reason: e.to_string(),
        })?;
    if stored.version != STORED_VERSION {
        return Err(TssError::Decode {
            what: "key share",
            reason: format!("unsupported version {}", stored.version),
        });
    }
    build_share(
        stored.key_id,
        stored.generation,
        stored.committee,
        stored.local,
        stored.party,
        stored.public_shares,
    )
}

/// A [`KeyShare`] of `party`, checked: its index, threshold and count match the
/// committee, the public key is a valid key, there is one valid public share per member
/// and this party's is its secret's.
fn build_share(
    key_id: KeyId,
    generation: Generation,
    committee: Committee,
    local: NodeId,
    party: Party,
    public_shares: Vec<Vec<u8>>,
) -> Result<KeyShare> {
    let i = committee.require_index(&local)?;
    let params = &party.parameters;
    if u16::from(party.party_index.as_u8()) != i + 1
        || u16::from(params.share_count) != committee.n()
        || u16::from(params.threshold) != committee.threshold()
        || public_shares.len() != usize::from(committee.n())
    {
        return Err(TssError::InvalidKeyShare(
            "share does not match its committee".into(),
        ));
    }
    for share in &public_shares {
        VerifyingKey::from_sec1_bytes(share)
            .map_err(|_| TssError::InvalidKeyShare("a public share is not a valid point".into()))?;
    }
    let own = (k256_dkls23::ProjectivePoint::GENERATOR * party.poly_point)
        .to_affine()
        .to_sec1_point(true);
    if own.as_bytes() != public_shares[usize::from(i)].as_slice() {
        return Err(TssError::InvalidKeyShare(
            "the secret share does not match its public share".into(),
        ));
    }
    Ok(KeyShare {
        key_id,
        generation,
        committee,
        local,
        secret: ShareSecret::Dkls23(Box::new(Dkls23Secret {
            public_key: public_key_of(&party)?,
            party,
            public_shares,
        })),
    })
}

/// The party's public key in our k256's type; the identity point (which k256 0.14
/// decodes) is refused.
fn public_key_of(party: &Party) -> Result<VerifyingKey> {
    let encoded = party.pk.to_sec1_point(false);
    VerifyingKey::from_sec1_bytes(encoded.as_bytes())
        .map_err(|_| TssError::InvalidKeyShare("the DKLs23 public key is not a valid key".into()))
}

/// DKLs23's party index of committee member `i` (0-based): `i + 1`.
fn party_index(i: u16) -> Result<PartyIndex> {
    u8::try_from(i)
        .ok()
        .and_then(|v| v.checked_add(1))
        .and_then(|v| PartyIndex::new(v).ok())
        .ok_or_else(|| TssError::InvalidParticipants("DKLs23 takes at most 255 parties".into()))
}

fn parameters(committee: &Committee) -> Result<Parameters> {
    let t = u8::try_from(committee.threshold()).ok();
    let n = u8::try_from(committee.n()).ok();
    match (t, n) {
        (Some(t), Some(n)) => {
            Parameters::new(t, n).map_err(|e| TssError::InvalidParticipants(format!("DKLs23: {e}")))
        }
        _ => Err(TssError::InvalidParticipants(
            "DKLs23 takes at most 255 parties".into(),
        )),
    }
}

fn misbehaviour(protocol: ProtocolKind, culprit: NodeId, reason: impl Into<String>) -> TssError {
    TssError::Misbehaviour {
        protocol,
        culprits: vec![culprit],
        reason: reason.into(),
        evidence: Vec::new(),
    }
}

/// An abort of the `dkls23` crate. A party to ban (an OT check failed) is
/// [`TssError::MustExclude`]; anything else blames nobody.
fn aborted(protocol: ProtocolKind, abort: Abort, members: &[NodeId]) -> TssError {
    let reason = format!("DKLs23: {}", abort.description());
    if let AbortKind::BanCounterparty(i) = abort.kind {
        if let Some(culprit) = members.get(usize::from(i.as_u8()).wrapping_sub(1)) {
            return TssError::MustExclude {
                protocol,
                culprit: *culprit,
                reason,
            };
        }
    }
    TssError::ProtocolAborted {
        protocol,
        culprits: Vec::new(),
        reason,
    }
}

/// One frame on a DKLs23 session.
#[derive(Serialize, Deserialize)]
enum Frame {
    /// Round `round`'s message of its sender to this receiver: what goes to this
    /// receiver alone, and what the sender broadcasts (the same bytes to everyone).
    Round {
        round: u8,
        direct: Vec<u8>,
        broadcast: Vec<u8>,
    },
    /// The digest of every broadcast its sender received in `round`, its own included.
    Echo { round: u8, digest: [u8; 32] },
    /// Its sender is alive (sent while it computes or waits): the session's idle timeout
    /// counts silence, not the others' CPU time.
    Alive,
}

/// Runs one CPU-heavy DKLs23 phase without starving the async executor: on a
/// multi-threaded tokio runtime the worker hands its other tasks (heartbeats, the
/// transport) over and computes once the process's compute gate lets it (at most one
/// computing thread per core); elsewhere it computes in place. `delay` is a test hook's
/// extra time (zero otherwise).
fn compute<T>(delay: std::time::Duration, phase: impl FnOnce() -> T) -> T {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    let run = || {
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        phase()
    };
    if multi_thread {
        tokio::task::block_in_place(|| {
            let _permit = crate::compute::ComputeGate::global().acquire_unless_cancelled(None);
            run()
        })
    } else {
        run()
    }
}

/// Sends [`Frame::Alive`] to the others at once and then every `every` until dropped:
/// only while this party computes, so that parties waiting for a silent one (crashed, or
/// gone after an abort) still time out.
struct Heartbeats(tokio::task::JoinHandle<()>);

impl Heartbeats {
    fn start(out: &SessionOutbox, others: Vec<NodeId>, every: std::time::Duration) -> Self {
        let out = out.clone();
        let alive = postcard::to_allocvec(&Frame::Alive).expect("a unit variant encodes");
        Self(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                for to in &others {
                    if out.send(Destination::Direct(*to), alive.clone()).is_err() {
                        return;
                    }
                }
            }
        }))
    }
}

impl Drop for Heartbeats {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The message exchange of one DKLs23 run among `members` (every round: one frame from
/// each member to each other, then an echo round when it had broadcasts).
struct Rounds {
    eid: ExecutionId,
    protocol: ProtocolKind,
    me: NodeId,
    members: Vec<NodeId>,
    inbox: SessionInbox,
    out: SessionOutbox,
    /// Frames of the next round that arrived early.
    early: Vec<(NodeId, Frame)>,
    /// How often to send heartbeats while computing.
    heartbeat_every: std::time::Duration,
    /// Test hook: extra time per computation phase.
    phase_delay: std::time::Duration,
}

/// What one round brought: each other member's direct and broadcast bytes.
struct Received {
    direct: BTreeMap<NodeId, Vec<u8>>,
    broadcast: BTreeMap<NodeId, Vec<u8>>,
}

impl Rounds {
    fn others(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members.iter().copied().filter(move |m| *m != self.me)
    }

    /// Computes one phase (see [`compute`]) with heartbeats to the others meanwhile.
    fn compute<T>(&self, phase: impl FnOnce() -> T) -> T {
        let _alive = Heartbeats::start(&self.out, self.others().collect(), self.heartbeat_every);
        compute(self.phase_delay, phase)
    }

    fn send(&self, to: NodeId, frame: &Frame) -> Result<()> {
        let bytes = postcard::to_allocvec(frame).map_err(|e| TssError::Decode {
            what: "DKLs23 frame",
            reason: e.to_string(),
        })?;
        self.out.send(Destination::Direct(to), bytes)?;
        Ok(())
    }

    /// The next frame of `round` or `round`'s echo from anyone; frames of the next
    /// round are kept for later. Anything else blames its sender.
    async fn next(&mut self, round: u8, echo: bool) -> Result<(NodeId, Frame)> {
        let wanted = |f: &Frame| match f {
            Frame::Round { round: r, .. } => !echo && *r == round,
            Frame::Echo { round: r, .. } => echo && *r == round,
            Frame::Alive => false,
        };
        if let Some(pos) = self.early.iter().position(|(_, f)| wanted(f)) {
            return Ok(self.early.swap_remove(pos));
        }
        loop {
            let msg = self.inbox.recv().await?;
            let from = msg.from;
            let frame: Frame = postcard::from_bytes(&msg.payload).map_err(|e| {
                misbehaviour(self.protocol, from, format!("undecodable frame: {e}"))
            })?;
            if wanted(&frame) {
                return Ok((from, frame));
            }
            if matches!(frame, Frame::Alive) {
                continue;
            }
            // A party may be one step ahead: its echo of this round, or the next round.
            let ahead = match &frame {
                Frame::Echo { round: r, .. } => *r == round,
                Frame::Round { round: r, .. } => *r == round + 1,
                Frame::Alive => false,
            };
            let kept_from_it = self.early.iter().filter(|(f, _)| *f == from).count();
            if !ahead || kept_from_it >= 2 {
                return Err(misbehaviour(
                    self.protocol,
                    from,
                    format!("a frame out of turn in round {round}"),
                ));
            }
            self.early.push((from, frame));
        }
    }

    /// Round 1 of keygen and of the pairwise setup: `fragments[j]` (the evaluation at
    /// member `j`'s index) to each other member, directly; returns every member's
    /// fragment for us, in committee order (our own from `fragments`).
    async fn exchange_fragments(
        &mut self,
        fragments: &[k256_dkls23::Scalar],
    ) -> Result<Vec<k256_dkls23::Scalar>> {
        let members = self.members.clone();
        let mut direct = BTreeMap::new();
        for (node, fragment) in members.iter().zip(fragments) {
            if *node != self.me {
                direct.insert(*node, encode(fragment)?);
            }
        }
        let got = self.exchange(1, direct, Vec::new()).await?;
        let mut received = Vec::with_capacity(members.len());
        for (node, fragment) in members.iter().zip(fragments) {
            if *node == self.me {
                received.push(*fragment);
            } else {
                received.push(decode(self.protocol, *node, &got.direct[node])?);
            }
        }
        Ok(received)
    }

    /// Round `round`: sends `direct[to]` and `broadcast` to every other member, collects
    /// theirs, and echo-checks the broadcasts (when there are any).
    async fn exchange(
        &mut self,
        round: u8,
        mut direct: BTreeMap<NodeId, Vec<u8>>,
        broadcast: Vec<u8>,
    ) -> Result<Received> {
        let others: Vec<NodeId> = self.others().collect();
        for to in &others {
            let frame = Frame::Round {
                round,
                direct: direct.remove(to).unwrap_or_default(),
                broadcast: broadcast.clone(),
            };
            self.send(*to, &frame)?;
        }
        let mut got = Received {
            direct: BTreeMap::new(),
            broadcast: BTreeMap::new(),
        };
        while got.direct.len() < others.len() {
            let (from, frame) = self.next(round, false).await?;
            let Frame::Round {
                direct, broadcast, ..
            } = frame
            else {
                unreachable!("next returns frames of the kind asked for")
            };
            if got.direct.insert(from, direct).is_some() {
                return Err(misbehaviour(
                    self.protocol,
                    from,
                    format!("two messages in round {round}"),
                ));
            }
            got.broadcast.insert(from, broadcast);
        }
        if !broadcast.is_empty() {
            let mut all = got.broadcast.clone();
            all.insert(self.me, broadcast);
            let digest = self.echo_digest(round, &all);
            for to in &others {
                self.send(*to, &Frame::Echo { round, digest })?;
            }
            let mut echoed = BTreeMap::new();
            while echoed.len() < others.len() {
                let (from, frame) = self.next(round, true).await?;
                let Frame::Echo { digest: theirs, .. } = frame else {
                    unreachable!("next returns frames of the kind asked for")
                };
                if echoed.insert(from, theirs).is_some() {
                    return Err(misbehaviour(
                        self.protocol,
                        from,
                        format!("two echoes in round {round}"),
                    ));
                }
            }
            if echoed.values().any(|d| *d != digest) {
                return Err(TssError::ProtocolAborted {
                    protocol: self.protocol,
                    culprits: Vec::new(),
                    reason: format!(
                        "DKLs23: the broadcasts of round {round} differ between members (echo check)"
                    ),
                });
            }
        }
        Ok(got)
    }

    fn echo_digest(&self, round: u8, all: &BTreeMap<NodeId, Vec<u8>>) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"tss-core/dkls23/echo/v1\0");
        h.update(self.eid.as_bytes());
        h.update([round]);
        for (who, bytes) in all {
            h.update(who.as_bytes());
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        }
        h.finalize().into()
    }
}

/// A round-3 message per receiver: its zero-share seeds and base OTs, together.
type SeedsAndBaseOts = (
    Option<TransmitInitZeroSharePhase3to4>,
    Option<TransmitInitMulPhase3to4<Curve014>>,
);

/// Round 3 of keygen and of the pairwise setup: each receiver's seeds and base OTs,
/// encoded together.
fn pack_seeds_and_base_ots(
    members: &[NodeId],
    zero: Vec<TransmitInitZeroSharePhase3to4>,
    mul: Vec<TransmitInitMulPhase3to4<Curve014>>,
) -> Result<BTreeMap<NodeId, Vec<u8>>> {
    let receiver = |i: PartyIndex| members[usize::from(i.as_u8()) - 1];
    let mut per_receiver: BTreeMap<NodeId, SeedsAndBaseOts> = BTreeMap::new();
    for msg in zero {
        let to = receiver(msg.parties.receiver);
        per_receiver.entry(to).or_default().0 = Some(msg);
    }
    for msg in mul {
        let to = receiver(msg.parties.receiver);
        per_receiver.entry(to).or_default().1 = Some(msg);
    }
    per_receiver
        .iter()
        .map(|(to, pair)| Ok((*to, encode(pair)?)))
        .collect()
}

/// A received round-3 message: both parts present, both naming `from`'s index and ours.
fn unpack_seeds_and_base_ots(
    kind: ProtocolKind,
    from: NodeId,
    bytes: &[u8],
    sender: PartyIndex,
    me: PartyIndex,
) -> Result<(
    TransmitInitZeroSharePhase3to4,
    TransmitInitMulPhase3to4<Curve014>,
)> {
    let (zero, mul): SeedsAndBaseOts = decode(kind, from, bytes)?;
    let (Some(zero), Some(mul)) = (zero, mul) else {
        return Err(misbehaviour(
            kind,
            from,
            "a round-3 message without its seeds or base OTs",
        ));
    };
    check_parties(kind, from, &zero.parties, sender, me)?;
    check_parties(kind, from, &mul.parties, sender, me)?;
    Ok((zero, mul))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    postcard::to_allocvec(value).map_err(|e| TssError::Decode {
        what: "DKLs23 message",
        reason: e.to_string(),
    })
}

fn decode<T: DeserializeOwned>(protocol: ProtocolKind, from: NodeId, bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes)
        .map_err(|e| misbehaviour(protocol, from, format!("undecodable DKLs23 message: {e}")))
}

/// Checks a message's self-reported sender and receiver against the transport's.
fn check_parties(
    protocol: ProtocolKind,
    from: NodeId,
    parties: &PartiesMessage,
    sender: PartyIndex,
    me: PartyIndex,
) -> Result<()> {
    if parties.sender != sender || parties.receiver != me {
        return Err(misbehaviour(
            protocol,
            from,
            format!(
                "a message claiming to be from party {} to party {} (sent by party {sender} to party {me})",
                parties.sender, parties.receiver
            ),
        ));
    }
    Ok(())
}

fn commitment_digest(eid: &ExecutionId, bytes: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"tss-core/dkls23/proof-commitment/v1\0");
    h.update(eid.as_bytes());
    h.update(bytes);
    h.finalize().into()
}

impl TssNode {
    fn dkls23_rounds(
        &self,
        eid: &ExecutionId,
        protocol: ProtocolKind,
        members: &[NodeId],
    ) -> Result<Rounds> {
        let (inbox, out) = self.open(eid, members)?.split();
        Ok(Rounds {
            eid: *eid,
            protocol,
            me: self.node_id(),
            members: members.to_vec(),
            inbox,
            out,
            early: Vec::new(),
            heartbeat_every: crate::ecdsa::protocol_heartbeat_interval(self.idle_timeout()),
            phase_delay: self.dkls23_phase_delay,
        })
    }

    /// DKLs23 distributed key generation: every member of `committee` runs this with the
    /// same `key_id`, `committee` and `eid` (three rounds, two of them echo-checked).
    pub async fn dkls23_keygen(
        &self,
        key_id: KeyId,
        committee: Committee,
        eid: ExecutionId,
    ) -> Result<KeyShare> {
        const KIND: ProtocolKind = ProtocolKind::Keygen;
        let me = self.node_id();
        let i = committee.require_index(&me)?;
        let my_index = party_index(i)?;
        let members = committee.members().to_vec();
        let index_of =
            |node: &NodeId| -> Result<PartyIndex> { party_index(committee.require_index(node)?) };
        let mut session =
            DkgSession::<Curve014>::new(parameters(&committee)?, my_index, eid.as_bytes().to_vec());
        let mut rounds = self.dkls23_rounds(&eid, KIND, &members)?;

        // Round 1: each member's polynomial evaluated at each other's index (secret, direct).
        let fragments = Zeroizing::new(rounds.compute(|| session.phase1()));
        let received = rounds.exchange_fragments(&fragments).await?;
        drop(fragments);

        // Round 2: a commitment to the proof of the constant term, the chain-code
        // commitment (broadcast), the zero-share seed commitments (direct).
        let (proof, zero_2, cc_commit) = rounds
            .compute(|| session.phase2(&received))
            .map_err(|a| aborted(KIND, a, &members))?;
        let proof_bytes = encode(&proof)?;
        let mut direct = BTreeMap::new();
        for msg in zero_2 {
            let to = members[usize::from(msg.parties.receiver.as_u8()) - 1];
            direct.insert(to, encode(&msg)?);
        }
        let my_commitment = commitment_digest(&eid, &proof_bytes);
        let got2 = rounds
            .exchange(2, direct, encode(&(my_commitment, &cc_commit))?)
            .await?;
        let mut zero_received_2 = Vec::new();
        let mut commitments = BTreeMap::new();
        let mut cc_2 = BTreeMap::new();
        cc_2.insert(my_index, cc_commit);
        for (from, bytes) in &got2.direct {
            let sender = index_of(from)?;
            let msg: TransmitInitZeroSharePhase2to4 = decode(KIND, *from, bytes)?;
            check_parties(KIND, *from, &msg.parties, sender, my_index)?;
            zero_received_2.push(msg);
            let (commitment, cc): ([u8; 32], BroadcastDerivationPhase2to4) =
                decode(KIND, *from, &got2.broadcast[from])?;
            if cc.sender_index != sender {
                return Err(misbehaviour(
                    KIND,
                    *from,
                    "a chain-code commitment naming another sender",
                ));
            }
            commitments.insert(*from, commitment);
            cc_2.insert(sender, cc);
        }

        // Round 3: the proof revealed and the chain-code part (broadcast), the zero-share
        // seeds (secret) and the base OTs (direct).
        let (zero_3, mul_3, cc_reveal) = rounds
            .compute(|| session.phase3())
            .map_err(|a| aborted(KIND, a, &members))?;
        let direct = pack_seeds_and_base_ots(&members, zero_3, mul_3)?;
        let got3 = rounds
            .exchange(3, direct, encode(&(&proof, &cc_reveal))?)
            .await?;
        let mut proofs = vec![proof];
        let mut zero_received_3 = Vec::new();
        let mut mul_received = Vec::new();
        let mut cc_3 = BTreeMap::new();
        cc_3.insert(my_index, cc_reveal);
        for (from, bytes) in &got3.direct {
            let sender = index_of(from)?;
            let (zero, mul) = unpack_seeds_and_base_ots(KIND, *from, bytes, sender, my_index)?;
            zero_received_3.push(zero);
            mul_received.push(mul);
            let broadcast = &got3.broadcast[from];
            let (their_proof, cc): (ProofCommitment<Curve014>, BroadcastDerivationPhase3to4) =
                decode(KIND, *from, broadcast)?;
            if their_proof.index != sender || cc.sender_index != sender {
                return Err(misbehaviour(
                    KIND,
                    *from,
                    "a proof or chain code naming another sender",
                ));
            }
            if commitment_digest(&eid, &encode(&their_proof)?) != commitments[from] {
                return Err(misbehaviour(
                    KIND,
                    *from,
                    "a revealed proof that does not match its round-2 commitment",
                ));
            }
            proofs.push(their_proof);
            cc_3.insert(sender, cc);
        }
        proofs.sort_by_key(|p| p.index);
        let (party, package) = rounds
            .compute(|| {
                session.phase4(
                    &proofs,
                    &zero_received_2,
                    &zero_received_3,
                    &mul_received,
                    &cc_2,
                    &cc_3,
                    dkls23::secp256k1::compute_eth_address,
                )
            })
            .map_err(|a| aborted(KIND, a, &members))?;
        let mut public_shares = Vec::with_capacity(members.len());
        for j in 0..committee.n() {
            let point = package.verifying_share(party_index(j)?).ok_or_else(|| {
                TssError::InvalidKeyShare("DKLs23 keygen gave no public share of a member".into())
            })?;
            public_shares.push(point.to_sec1_point(true).as_bytes().to_vec());
        }
        build_share(key_id, Generation(0), committee, me, party, public_shares)
    }

    /// DKLs23 full signing of `digest` with `signers` (exactly the threshold; every signer
    /// gives the same set): three rounds, the last echo-checked. The signature is checked
    /// against the key before it is returned.
    pub(crate) async fn dkls23_sign(
        &self,
        share: &KeyShare,
        signers: &[NodeId],
        digest: [u8; 32],
        eid: ExecutionId,
    ) -> Result<EthSignature> {
        const KIND: ProtocolKind = ProtocolKind::Sign;
        let secret = share.dkls23()?;
        let me = self.node_id();
        let committee = &share.committee;
        let t = usize::from(committee.threshold());
        if signers.len() != t {
            return Err(TssError::WrongSignerCount {
                expected: t,
                got: signers.len(),
            });
        }
        let mut sorted = signers.to_vec();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != signers.len() {
            return Err(TssError::InvalidParticipants(
                "signers must be distinct".into(),
            ));
        }
        if !sorted.contains(&me) {
            return Err(TssError::NotACommitteeMember(me));
        }
        let my_index = party_index(committee.require_index(&me)?)?;
        let mut indices = BTreeMap::new();
        for s in &sorted {
            indices.insert(*s, party_index(committee.require_index(s)?)?);
        }
        let data = SignData {
            sign_id: eid.as_bytes().to_vec(),
            counterparties: sorted
                .iter()
                .filter(|s| **s != me)
                .map(|s| indices[s])
                .collect(),
            message_hash: digest,
        };
        let member_list = committee.members().to_vec();
        let mut rounds = self.dkls23_rounds(&eid, KIND, &sorted)?;
        let receiver_node = |i: PartyIndex| member_list[usize::from(i.as_u8()) - 1];

        let (mut session, first) = rounds
            .compute(|| SignSession::new(&secret.party, data))
            .map_err(|a| aborted(KIND, a, &member_list))?;
        let tamper = self
            .dkls23_tamper_ot
            .load(std::sync::atomic::Ordering::SeqCst);
        let mut direct = BTreeMap::new();
        for mut msg in first {
            if tamper {
                if let Some(byte) = msg.mul_transmit.u.first_mut().and_then(|u| u.first_mut()) {
                    *byte ^= 1;
                }
            }
            direct.insert(receiver_node(msg.parties.receiver), encode(&msg)?);
        }
        let got = rounds.exchange(1, direct, Vec::new()).await?;
        let mut received1 = Vec::new();
        for (from, bytes) in &got.direct {
            let msg: TransmitPhase1to2 = decode(KIND, *from, bytes)?;
            check_parties(KIND, *from, &msg.parties, indices[from], my_index)?;
            received1.push(msg);
        }

        let second = rounds
            .compute(|| session.phase2(&received1))
            .map_err(|a| aborted(KIND, a, &member_list))?;
        let mut direct = BTreeMap::new();
        for msg in second {
            direct.insert(receiver_node(msg.parties.receiver), encode(&msg)?);
        }
        let got = rounds.exchange(2, direct, Vec::new()).await?;
        let mut received2 = Vec::new();
        for (from, bytes) in &got.direct {
            let msg: TransmitPhase2to3<Curve014> = decode(KIND, *from, bytes)?;
            check_parties(KIND, *from, &msg.parties, indices[from], my_index)?;
            received2.push(msg);
        }

        let mine = rounds
            .compute(|| session.phase3(&received2))
            .map_err(|a| aborted(KIND, a, &member_list))?;
        let got = rounds.exchange(3, BTreeMap::new(), encode(&mine)?).await?;
        let mut received3 = vec![mine];
        for (from, bytes) in &got.broadcast {
            received3.push(decode::<Broadcast3to4<Curve014>>(KIND, *from, bytes)?);
        }
        let sig = session
            .phase4(&received3, true)
            .map_err(|a| aborted(KIND, a, &member_list))?;
        EthSignature::from_rs(sig.r, sig.s, &digest, &share.public_key())
    }
    /// A reshare's last step for a new member of a DKLs23 key: its Shamir share `x` (32
    /// bytes, big-endian) from the crate's Feldman rounds, already checked against the
    /// dealers' commitments, becomes a DKLs23 share by the new committee's pairwise
    /// setup: the `dkls23` crate's complete refresh (fresh oblivious-transfer and
    /// zero-share state for every pair), run from a "hollow" party holding only the
    /// share. The refresh's re-randomization of the share (a sharing of zero) is
    /// discarded: the share stays the one the reshare statement and its certificate
    /// bind (its public share is checked). Every new member runs this with the same
    /// arguments but its own `x`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn dkls23_complete_reshare(
        &self,
        key_id: KeyId,
        generation: Generation,
        committee: Committee,
        x: &[u8],
        public_key: &[u8],
        public_shares: Vec<Vec<u8>>,
        eid: ExecutionId,
    ) -> Result<KeyShare> {
        const KIND: ProtocolKind = ProtocolKind::Reshare;
        let me = self.node_id();
        let i = committee.require_index(&me)?;
        let my_index = party_index(i)?;
        let members = committee.members().to_vec();
        let index_of =
            |node: &NodeId| -> Result<PartyIndex> { party_index(committee.require_index(node)?) };
        let bad_share = || TssError::InvalidKeyShare("the reshared DKLs23 share is invalid".into());
        let x_bytes = k256_dkls23::FieldBytes::try_from(x).map_err(|_| bad_share())?;
        let x: k256_dkls23::Scalar =
            Option::from(k256_dkls23::Scalar::from_repr(x_bytes)).ok_or_else(bad_share)?;
        let pk = *k256_dkls23::PublicKey::from_sec1_bytes(public_key)
            .map_err(|_| bad_share())?
            .as_affine();
        // Every new member starts from the same session id and chain code (no
        // derivation is used; signing binds them, so they must agree).
        let session_id = {
            let mut h = Sha256::new();
            h.update(b"tss-core/dkls23/reshare-session/v1\0");
            h.update(eid.as_bytes());
            h.finalize().to_vec()
        };
        let chain_code: [u8; 32] = {
            let mut h = Sha256::new();
            h.update(b"tss-core/dkls23/reshare-chain-code/v1\0");
            h.update(pk.to_sec1_point(true).as_bytes());
            h.finalize().into()
        };
        let hollow = Party {
            parameters: parameters(&committee)?,
            party_index: my_index,
            session_id,
            poly_point: x,
            pk,
            zero_share: dkls23::utilities::zero_shares::ZeroShare { seeds: Vec::new() },
            mul_senders: BTreeMap::new(),
            mul_receivers: BTreeMap::new(),
            derivation_data: dkls23::protocols::derivation::DerivData {
                depth: 0,
                child_number: 0,
                parent_fingerprint: [0; 4],
                poly_point: x,
                pk,
                chain_code,
            },
            address: dkls23::secp256k1::compute_eth_address(&pk),
        };
        let refresh_sid = eid.as_bytes().to_vec();
        let mut rounds = self.dkls23_rounds(&eid, KIND, &members)?;

        // Round 1: fragments of a random polynomial with a zero constant term (direct).
        let fragments = Zeroizing::new(rounds.compute(|| hollow.refresh_complete_phase1()));
        let received = rounds.exchange_fragments(&fragments).await?;
        drop(fragments);

        // Round 2: the proof of the (zero) constant term (broadcast, echo-checked) and
        // the zero-share seed commitments (direct). No commit-then-reveal here, unlike
        // keygen: the constant terms only have to sum to zero, and the correction they
        // make is discarded, so a party choosing its term after seeing the others' can
        // only make the run abort.
        let (correction, proof, zero_keep_2, zero_2) =
            rounds.compute(|| hollow.refresh_complete_phase2(&refresh_sid, &received));
        drop(received);
        let mut direct = BTreeMap::new();
        for msg in zero_2 {
            let to = members[usize::from(msg.parties.receiver.as_u8()) - 1];
            direct.insert(to, encode(&msg)?);
        }
        let got2 = rounds.exchange(2, direct, encode(&proof)?).await?;
        let mut proofs = vec![proof];
        let mut zero_received_2 = Vec::new();
        for (from, bytes) in &got2.direct {
            let sender = index_of(from)?;
            let msg: TransmitInitZeroSharePhase2to4 = decode(KIND, *from, bytes)?;
            check_parties(KIND, *from, &msg.parties, sender, my_index)?;
            zero_received_2.push(msg);
            let their_proof: ProofCommitment<Curve014> =
                decode(KIND, *from, &got2.broadcast[from])?;
            if their_proof.index != sender {
                return Err(misbehaviour(KIND, *from, "a proof naming another sender"));
            }
            proofs.push(their_proof);
        }
        proofs.sort_by_key(|p| p.index);

        // Round 3: the zero-share seeds (secret) and the base OTs (direct).
        let (zero_keep_3, zero_3, mul_keep, mul_3) =
            rounds.compute(|| hollow.refresh_complete_phase3(&refresh_sid, &zero_keep_2));
        drop(zero_keep_2);
        let direct = pack_seeds_and_base_ots(&members, zero_3, mul_3)?;
        let got3 = rounds.exchange(3, direct, Vec::new()).await?;
        let mut zero_received_3 = Vec::new();
        let mut mul_received = Vec::new();
        for (from, bytes) in &got3.direct {
            let sender = index_of(from)?;
            let (zero, mul) = unpack_seeds_and_base_ots(KIND, *from, bytes, sender, my_index)?;
            zero_received_3.push(zero);
            mul_received.push(mul);
        }
        let mut party = rounds
            .compute(|| {
                hollow.refresh_complete_phase4(
                    &refresh_sid,
                    &correction,
                    &proofs,
                    &zero_keep_3,
                    &zero_received_2,
                    &zero_received_3,
                    &mul_keep,
                    &mul_received,
                )
            })
            .map_err(|a| aborted(KIND, a, &members))?;
        // Keep the reshared share (see above): the refresh's correction is dropped.
        party.poly_point = x;
        party.derivation_data.poly_point = x;
        build_share(key_id, generation, committee, me, party, public_shares)
    }
}
