//! Resharing: move a key to a new committee (and threshold) keeping its public key, and
//! so its Ethereum address.
//!
//! `cggmp21` has no resharing for threshold keys; this is ours. Parties are a quorum of
//! the old committee (the *dealers*, exactly the old threshold) and the new committee;
//! a node may be both.
//!
//! 1. **Deal.** Dealer `j` turns its share into an additive one, `w_j = λ_j · x_j`
//!    (Lagrange at 0 over the dealers' evaluation points), samples a polynomial `f_j` of
//!    degree `t' - 1` with `f_j(0) = w_j`, broadcasts Feldman commitments `F_j = f_j·G`
//!    with its signature of their digest ([`commitments_signing_bytes`]), and sends
//!    `f_j(k)` privately to each new member `k`.
//!    Each share travels with the dealer's signature under its transport identity
//!    ([`crate::identity::IdentitySigner`], the key that also signs confirmations) of
//!    [`share_signing_bytes`]: the run's context (execution id, old key facts, dealers,
//!    new committee), dealer, recipient, the recipient's index, the share and the digest of
//!    the dealer's commitments. Every dealer therefore needs an identity key.
//! 2. **Verify and echo.** Everyone checks `F_j(0) = λ_j · X_j` for each dealer (its old
//!    public share) and `Σ_j F_j(0) = Y` (the public key); new members check each share's
//!    signature and the share against the commitments. Everyone then broadcasts, for
//!    each dealer, the digest of the commitments it received with the dealer's signature
//!    ([`SignedCommitments`]), either as an echo or inside a complaint against a dealer,
//!    with evidence (see *Complaints* below). The echo check: an echo that is not
//!    backed by the dealers' signatures convicts its sender; a dealer whose signature
//!    appears on two different digests showed different commitments to different
//!    parties and is convicted with both as evidence ([`ComplaintEvidence::Equivocation`]);
//!    the party that was shown the other version is never blamed. A failed echo check,
//!    or any complaint, aborts the run for everyone with [`TssError::Misbehaviour`].
//! 3. **New shares.** New member `k` sums its shares, `x'_k = Σ_j f_j(k)`; everyone
//!    computes the new public shares from the commitments. The new committee runs aux-info
//!    generation (fresh Paillier keys, all proofs checked) and builds CGGMP21 key shares.
//! 4. **Confirm.** Each new member stores its share (the caller's `persist` step, which
//!    keeps it *pending*), then signs a [`ReshareStatement`] (execution id, key, new
//!    generation, public key, new committee and threshold, the agreed commitments digest,
//!    the new public key facts) with the key of its transport identity
//!    ([`crate::identity::IdentitySigner`]) and broadcasts the signature. One valid
//!    signature from **every** new member is a [`ReshareCertificate`]: whoever holds one
//!    may activate the new generation and retire the old one
//!    ([`ReshareOutcome::may_retire_old_share`]); without one nobody does. A party that
//!    assembles a certificate broadcasts it, so a party that missed one confirmation
//!    (say, a joiner sent it a different one) still completes; and a certificate is
//!    self-verifying, so a member that missed the end can take it from any peer later
//!    (the pool layer's certificate request).
//!
//! # Complaints
//!
//! A complaint ([`ReshareMsg::Complaint`]) names one dealer and carries
//! [`ComplaintEvidence`]:
//!
//! - (a) [`ComplaintEvidence::InvalidShare`]: the dealer's *signed* share to the
//!   complainer, which does not match the dealer's commitments;
//! - (b) [`ComplaintEvidence::InvalidCommitments`]: the dealer's commitments themselves are
//!   wrong (context, length, or constant term `≠ λ_j · X_j`);
//! - (c) [`ComplaintEvidence::NoValidShare`]: the complainer holds no share of the dealer
//!   with a valid signature (an unsigned or badly signed share cannot be shown to anyone);
//! - [`ComplaintEvidence::InvalidMessage`]: a message of the dealer did not decode or
//!   changed (sent by a party that aborts at once, before it saw every commitment);
//! - (d) [`ComplaintEvidence::Equivocation`]: two different commitment digests signed by
//!   the dealer (found by the echo check; a party may also send it as a complaint).
//!
//! After the echo check (so every honest party judges the same commitments), every party
//! judges every complaint itself, deterministically, in participant order
//! ([`ComplaintVerdict`], [`Finding`]); nobody takes a complaint on trust:
//!
//! - (a) a valid dealer signature over a share that does not verify (or over commitments
//!   that are themselves wrong) convicts the **dealer**; a signature that does not verify,
//!   or a share that does, convicts the **complainer** (a false complaint);
//! - (b) wrong commitments convict the dealer, right ones the complainer;
//! - (d) two valid dealer signatures on different digests convict the dealer; anything
//!   less (a signature that does not verify, equal digests) convicts the complainer;
//! - (c) and an invalid message are **unresolved**: neither side can prove its story (a
//!   dealer may have withheld or mangled the share; the complainer may lie). Unless the
//!   dealer's commitments are wrong (then it is convicted) or the complainer was owed no
//!   share (a (c) complaint from a party that is not a new member, or from the dealer
//!   itself, convicts the complainer), the run aborts naming **nobody** in `culprits`; the
//!   verdict names both as suspects for an operator. Never the dealer alone: otherwise a
//!   malicious joiner could frame any honest member and block every reshare with it.
//!   (A justification round, in which the accused dealer publishes the signed share so
//!   the run can go on, would resolve (c); it is not implemented.)
//!
//! A complaint against a party that is not a dealer convicts the complainer. The abort's
//! [`TssError::Misbehaviour`] lists the convicted parties in `culprits` and every verdict
//! with its evidence in `evidence`; [`ComplaintVerdict::rejudge`] re-checks a verdict from
//! the request alone. Honest parties that received the same round-2 messages reach the
//! same culprit list (a party that sends different round-2 messages to different parties
//! splits their views, but then no certificate can form and nobody retires a share).
//!
//! During the confirmation phase nothing a party receives aborts the run: a frame that
//! does not decode, a confirmation that does not verify (an equivocating or broken new
//! member), an unexpected or changed message are ignored and reported with the sender
//! named ([`ReshareOutcome::faults`]). Identical retransmissions are ignored silently.
//! New members send [`ReshareMsg::Alive`] heartbeats while they compute (aux-info,
//! storing), so parties that only wait (e.g. leaving dealers) do not reach their idle
//! timeout, which counts silence, not work.

use std::collections::HashMap;

use cggmp21::generic_ec::{NonZero, Point, Scalar, SecretScalar};
use cggmp21::key_share::{DirtyIncompleteKeyShare, DirtyKeyInfo, Validate, VssSetup};
use futures::future::BoxFuture;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use transport::{DeliveryKind, Destination, NodeId, SessionInbox, SessionOutbox, TransportError};
use zeroize::Zeroizing;

use crate::ecdsa::{Curve, KeyShare, TssNode};
use crate::error::{ProtocolKind, Result, StoreError, TssError};
use crate::identity::{verify_identity_signature, IdentitySignature};
use crate::ids::{Committee, ExecutionId, Generation, KeyId};
use crate::primes::PaillierPrimes;
use crate::wire::{decode_message, encode_message};

/// Public facts about a key generation, enough for a joining node to check a reshare:
/// the public key, the committee and every member's public share.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKeyInfo {
    /// The key.
    pub key_id: KeyId,
    /// The generation these facts describe.
    pub generation: Generation,
    /// The committee holding it.
    pub committee: Committee,
    /// Compressed public key (33 bytes).
    pub public_key: Vec<u8>,
    /// Compressed public share of each member, in committee order.
    pub public_shares: Vec<Vec<u8>>,
}

impl PublicKeyInfo {
    fn points(&self) -> Result<(Point<Curve>, Vec<Point<Curve>>)> {
        let decode = |b: &[u8]| {
            Point::<Curve>::from_bytes(b).map_err(|_| TssError::Decode {
                what: "public key info",
                reason: "invalid point".into(),
            })
        };
        let y = decode(&self.public_key)?;
        let shares = self
            .public_shares
            .iter()
            .map(|b| decode(b))
            .collect::<Result<Vec<_>>>()?;
        if shares.len() != usize::from(self.committee.n()) {
            return Err(TssError::Decode {
                what: "public key info",
                reason: "one public share per member is needed".into(),
            });
        }
        Ok((y, shares))
    }

    /// A hash of these facts (bound into reshare confirmations).
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"tss-core/public-key-info/v1");
        h.update(serde_json::to_vec(self).unwrap_or_default());
        h.finalize().into()
    }
}

impl KeyShare {
    /// The public facts of this share's generation (safe to send to joining nodes).
    pub fn public_info(&self) -> PublicKeyInfo {
        PublicKeyInfo {
            key_id: self.key_id.clone(),
            generation: self.generation,
            committee: self.committee.clone(),
            public_key: self
                .inner
                .shared_public_key
                .to_bytes(true)
                .as_ref()
                .to_vec(),
            public_shares: self
                .inner
                .public_shares
                .iter()
                .map(|p| p.to_bytes(true).as_ref().to_vec())
                .collect(),
        }
    }
}

/// What every party of a reshare must agree on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReshareRequest {
    /// The key's current public facts.
    pub old: PublicKeyInfo,
    /// The old members that deal: exactly the old threshold of them.
    pub dealers: Vec<NodeId>,
    /// The committee that will hold the key.
    pub new_committee: Committee,
    /// This run's execution id.
    pub eid: ExecutionId,
}

impl ReshareRequest {
    /// All parties of the run: dealers, then new members that are not dealers.
    pub fn participants(&self) -> Vec<NodeId> {
        let mut all = self.dealers.clone();
        for m in self.new_committee.members() {
            if !all.contains(m) {
                all.push(*m);
            }
        }
        all
    }

    /// The digest binding a run to everything its parties must agree on (old key facts,
    /// dealers, new committee, execution id). Every dealer's
    /// [`ReshareMsg::Commitments`] carries it, and receivers refuse a different one.
    /// Public with the `fuzzing` feature only (the fuzz targets forge messages with it).
    #[cfg(feature = "fuzzing")]
    pub fn context(&self) -> [u8; 32] {
        self.context_digest()
    }

    /// See `context` (public with the `fuzzing` feature).
    pub(crate) fn context_digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"tss-core/reshare-context/v1");
        h.update(self.old.digest());
        for d in &self.dealers {
            h.update(d.as_bytes());
        }
        h.update(serde_json::to_vec(&self.new_committee).unwrap_or_default());
        h.update(self.eid.as_bytes());
        h.finalize().into()
    }

    fn validate(&self) -> Result<()> {
        let t = usize::from(self.old.committee.threshold());
        if self.dealers.len() != t {
            return Err(TssError::WrongSignerCount {
                expected: t,
                got: self.dealers.len(),
            });
        }
        let mut seen = Vec::new();
        for d in &self.dealers {
            self.old.committee.require_index(d)?;
            if seen.contains(d) {
                return Err(TssError::InvalidParticipants(
                    "dealers must be distinct".into(),
                ));
            }
            seen.push(*d);
        }
        self.old.points()?;
        Ok(())
    }
}

/// What every new member signs once its new share is stored: a reshare confirmation.
///
/// Every honest party of a run computes the same statement (the commitments digest is the
/// one all of them echoed), so a confirmation is checked against the receiver's own
/// statement, never against one sent with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReshareStatement {
    /// The run's execution id.
    pub eid: ExecutionId,
    /// The key.
    pub key_id: KeyId,
    /// The new generation.
    pub generation: Generation,
    /// Compressed public key (unchanged by resharing).
    pub public_key: Vec<u8>,
    /// The new committee.
    pub new_committee: Committee,
    /// The new threshold (also in `new_committee`; signed explicitly).
    pub threshold: u16,
    /// Digest of every dealer's commitments, as echoed by every party.
    pub commitments_digest: [u8; 32],
    /// [`PublicKeyInfo::digest`] of the new generation (public shares included).
    pub public_info_digest: [u8; 32],
}

impl ReshareStatement {
    /// The bytes a new member signs: a domain tag and the statement's wire encoding.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = b"tss-core/reshare-confirm/v1".to_vec();
        // A statement always encodes (a committee is bounded); an empty encoding would
        // only make every signature over it fail to match any honest one.
        out.extend(encode_message(self).unwrap_or_default());
        out
    }

    /// Whether this statement describes the generation `info` (key, generation,
    /// committee, threshold, public key and public shares).
    pub fn certifies(&self, info: &PublicKeyInfo) -> bool {
        self.key_id == info.key_id
            && self.generation == info.generation
            && self.new_committee == info.committee
            && self.threshold == info.committee.threshold()
            && self.public_key == info.public_key
            && self.public_info_digest == info.digest()
    }
}

/// Proof that every member of a new committee stored its share of a reshared
/// generation: each one's signature, under its transport identity, of the same
/// [`ReshareStatement`]. Self-verifying ([`ReshareCertificate::verify`]): it can be
/// forwarded by anyone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReshareCertificate {
    /// What was confirmed.
    pub statement: ReshareStatement,
    /// One signature per new member, in committee order.
    pub signatures: Vec<IdentitySignature>,
}

impl ReshareCertificate {
    /// The key.
    pub fn key_id(&self) -> &KeyId {
        &self.statement.key_id
    }

    /// The certified generation.
    pub fn generation(&self) -> Generation {
        self.statement.generation
    }

    /// Its wire encoding (for stores).
    pub fn to_bytes(&self) -> Vec<u8> {
        encode_message(self).unwrap_or_default()
    }

    /// Decodes [`ReshareCertificate::to_bytes`]' output (not verified: call
    /// [`ReshareCertificate::verify`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        decode_message(NodeId::from_bytes([0; 32]), bytes).map_err(|e| TssError::Decode {
            what: "reshare certificate",
            reason: e.to_string(),
        })
    }

    /// Checks that it holds a valid signature of its statement from every member of the
    /// new committee. [`TssError::InvalidCertificate`] names the members whose signature
    /// does not verify.
    pub fn verify(&self) -> Result<()> {
        let members = self.statement.new_committee.members();
        if self.signatures.len() != members.len() {
            return Err(TssError::InvalidCertificate {
                culprits: Vec::new(),
                reason: format!(
                    "{} signatures for {} members",
                    self.signatures.len(),
                    members.len()
                ),
            });
        }
        if self.statement.threshold != self.statement.new_committee.threshold() {
            return Err(TssError::InvalidCertificate {
                culprits: Vec::new(),
                reason: "the threshold differs from the committee's".into(),
            });
        }
        let bytes = self.statement.signing_bytes();
        let culprits: Vec<NodeId> = members
            .iter()
            .zip(&self.signatures)
            .filter(|(m, sig)| !verify_identity_signature(m, &bytes, sig))
            .map(|(m, _)| *m)
            .collect();
        if culprits.is_empty() {
            Ok(())
        } else {
            Err(TssError::InvalidCertificate {
                culprits,
                reason: "signatures that do not verify".into(),
            })
        }
    }
}

/// Something a party did wrong during the confirmation phase, which was ignored (not a
/// reason to abort) and is reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfirmFault {
    /// The sender (authenticated by the transport).
    pub party: NodeId,
    /// What it sent.
    pub reason: String,
}

/// How a reshare ended for one party.
#[derive(Debug)]
pub struct ReshareOutcome {
    /// The new share, for members of the new committee (already handed to `persist`,
    /// which keeps it pending).
    pub new_share: Option<KeyShare>,
    /// New members whose valid confirmation this party holds.
    pub confirmed_by: Vec<NodeId>,
    /// New members whose valid confirmation did not arrive (timeout).
    pub missing_confirmations: Vec<NodeId>,
    /// The certificate, if this party holds one (every confirmation, or a forwarded
    /// certificate).
    pub certificate: Option<ReshareCertificate>,
    /// What was ignored during the confirmation phase, with the sender named.
    pub faults: Vec<ConfirmFault>,
}

impl ReshareOutcome {
    /// True only when this party holds a valid certificate: then, and only then, old
    /// shares may be retired and the new generation activated.
    pub fn may_retire_old_share(&self) -> bool {
        self.certificate.is_some()
    }
}

/// Messages of the reshare protocol. `Debug` never shows a share.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub enum ReshareMsg {
    /// Round 1, broadcast by a dealer: Feldman commitments to its polynomial, signed.
    Commitments {
        /// Hash of the agreed request.
        context: [u8; 32],
        /// `f_j` coefficients times G, constant term first.
        commitments: Vec<Point<Curve>>,
        /// The dealer's identity signature of [`commitments_signing_bytes`].
        signature: IdentitySignature,
    },
    /// Round 1, dealer to one new member: `f_j(k)`, signed.
    Share {
        /// The share.
        share: Scalar<Curve>,
        /// The dealer's identity signature of [`share_signing_bytes`].
        signature: IdentitySignature,
    },
    /// Round 2, broadcast by everyone: every dealer's commitments as this party received
    /// them, signed by the dealer (in dealer order).
    Echo {
        /// One per dealer.
        views: Vec<SignedCommitments>,
    },
    /// Round 2 instead of an echo: a dealer's share or commitments did not verify (see
    /// the module docs' *Complaints*).
    Complaint {
        /// What an echo would carry (`None` from a party that aborts before it saw every
        /// dealer's commitments).
        views: Option<Vec<SignedCommitments>>,
        /// The accused dealer.
        dealer: NodeId,
        /// Why.
        evidence: ComplaintEvidence,
    },
    /// Round 3, broadcast by each new member once its share is stored: its identity
    /// signature of the run's [`ReshareStatement`].
    Confirm {
        /// The signature.
        signature: IdentitySignature,
    },
    /// Round 3, broadcast by a party that holds every confirmation.
    Certificate(Box<ReshareCertificate>),
    /// A heartbeat: the sender is alive and computing (aux-info, storing).
    Alive,
}

impl std::fmt::Debug for ReshareMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReshareMsg::Commitments {
                context,
                commitments,
                signature,
            } => f
                .debug_struct("Commitments")
                .field("context", &hex::encode(context))
                .field("commitments", &commitments.len())
                .field("signature", signature)
                .finish(),
            ReshareMsg::Share { signature, .. } => f
                .debug_struct("Share")
                .field("share", &"<redacted>")
                .field("signature", signature)
                .finish(),
            ReshareMsg::Echo { views } => f.debug_struct("Echo").field("views", views).finish(),
            ReshareMsg::Complaint {
                views,
                dealer,
                evidence,
            } => f
                .debug_struct("Complaint")
                .field("views", views)
                .field("dealer", dealer)
                .field("evidence", evidence)
                .finish(),
            ReshareMsg::Confirm { signature } => f
                .debug_struct("Confirm")
                .field("signature", signature)
                .finish(),
            ReshareMsg::Certificate(c) => f.debug_tuple("Certificate").field(c).finish(),
            ReshareMsg::Alive => f.write_str("Alive"),
        }
    }
}

/// One dealer's round-1 broadcast as a party received it: the
/// [`dealer_commitments_digest`] and the dealer's signature of
/// [`commitments_signing_bytes`]. Round 2 carries one per dealer, so a dealer that
/// showed two parties different commitments has signed two digests, and everyone can
/// see it (the echo check).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCommitments {
    /// [`dealer_commitments_digest`] of what was received.
    pub digest: [u8; 32],
    /// The dealer's identity signature of [`commitments_signing_bytes`].
    pub signature: IdentitySignature,
}

impl std::fmt::Debug for SignedCommitments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedCommitments")
            .field("digest", &hex::encode(self.digest))
            .field("signature", &self.signature)
            .finish()
    }
}

/// The bytes a dealer signs for its commitments ([`ReshareMsg::Commitments`]): a domain
/// tag, the run's context digest and the [`dealer_commitments_digest`] (which binds the
/// dealer, the context it sent and the commitments). The run's context keeps a signature
/// from another run from counting in this one.
pub fn commitments_signing_bytes(context: &[u8; 32], commitments_digest: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    out.extend_from_slice(b"tss-core/reshare-commitments/v1");
    out.extend_from_slice(context);
    out.extend_from_slice(commitments_digest);
    out
}

/// What a [`ReshareMsg::Complaint`] offers against a dealer (module docs, *Complaints*).
/// `Debug` never shows a share.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub enum ComplaintEvidence {
    /// (a) The dealer's share to the complainer with the dealer's signature of it
    /// ([`share_signing_bytes`]); the share does not match the dealer's commitments.
    InvalidShare {
        /// The share as received (published: the run aborts, it is never used).
        share: Scalar<Curve>,
        /// The dealer's signature as received.
        signature: IdentitySignature,
    },
    /// (b) The dealer's commitments are wrong (every party checks them itself).
    InvalidCommitments,
    /// (c) The complainer holds no share of the dealer with a valid signature (none came,
    /// or its signature did not verify).
    NoValidShare,
    /// A message of the dealer did not decode, or the dealer sent two different ones for
    /// a round: sent by a party that aborts at once. Unverifiable, like (c).
    InvalidMessage,
    /// (d) The dealer signed two different commitment digests in this run (found in two
    /// parties' echoes by the echo check): proof of equivocation.
    Equivocation {
        /// One version, as the first party (in participant order) echoed it.
        first: SignedCommitments,
        /// Another, as the `complainer` of the verdict echoed it.
        second: SignedCommitments,
    },
}

impl std::fmt::Debug for ComplaintEvidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ComplaintEvidence::InvalidShare { signature, .. } => f
                .debug_struct("InvalidShare")
                .field("share", &"<redacted>")
                .field("signature", signature)
                .finish(),
            ComplaintEvidence::InvalidCommitments => f.write_str("InvalidCommitments"),
            ComplaintEvidence::NoValidShare => f.write_str("NoValidShare"),
            ComplaintEvidence::InvalidMessage => f.write_str("InvalidMessage"),
            ComplaintEvidence::Equivocation { first, second } => f
                .debug_struct("Equivocation")
                .field("first", first)
                .field("second", second)
                .finish(),
        }
    }
}

/// What every party concludes from one complaint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finding {
    /// The evidence proves the dealer cheated: it is a culprit.
    DealerCheated,
    /// The evidence proves the complaint false (forged or valid share, right
    /// commitments, a complaint against a non-dealer or by a party owed no share): the
    /// complainer is a culprit.
    FalseComplaint,
    /// Neither side can be proven wrong ((c), or an invalid message): nobody is a
    /// culprit; both are suspects.
    Unresolved,
}

/// One judged complaint: who complained about whom, the evidence, the dealer's
/// commitments as every party echoed them, and the finding. Carried by
/// [`TssError::Misbehaviour`]'s `evidence` for an operator.
#[derive(Clone, Debug, PartialEq)]
pub struct ComplaintVerdict {
    /// The complainer (authenticated by the transport).
    pub complainer: NodeId,
    /// The accused dealer.
    pub dealer: NodeId,
    /// The complaint's evidence.
    pub evidence: ComplaintEvidence,
    /// The context the dealer's commitments carried (zero if it sent none).
    pub context: [u8; 32],
    /// The dealer's commitments (empty if it sent none or is no dealer).
    pub commitments: Vec<Point<Curve>>,
    /// The finding.
    pub finding: Finding,
}

impl ComplaintVerdict {
    /// The party this verdict convicts, if any.
    pub fn culprit(&self) -> Option<NodeId> {
        match self.finding {
            Finding::DealerCheated => Some(self.dealer),
            Finding::FalseComplaint => Some(self.complainer),
            Finding::Unresolved => None,
        }
    }

    /// Judges the complaint again from `request` alone (the signature, the share and the
    /// commitments are all in the verdict): what an operator runs to check the evidence.
    pub fn rejudge(&self, request: &ReshareRequest) -> Result<Finding> {
        request.validate()?;
        Ok(Judge::new(request)?.judge(
            self.complainer,
            self.dealer,
            &self.evidence,
            &self.context,
            &self.commitments,
        ))
    }
}

/// Test-only misbehaviour of a reshare party (feature `test-hooks`,
/// `TssNode::inject_reshare_fault`).
#[doc(hidden)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReshareFault {
    /// As a dealer: send this new member a share off by one, validly signed.
    BadSignedShareTo(NodeId),
    /// As a dealer: broadcast commitments with a wrong constant term.
    BadCommitments,
    /// As a dealer: send this new member its share with a signature that does not verify.
    UnsignedShareTo(NodeId),
    /// As a new member: complain against `dealer`, whatever was received.
    FalseComplaint {
        /// The accused (the first dealer if this one does not deal in the run).
        dealer: NodeId,
        /// With what.
        evidence: FalseEvidence,
    },
}

/// The evidence of a [`ReshareFault::FalseComplaint`].
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FalseEvidence {
    /// The received share altered, with the dealer's signature of the real one.
    ForgedShare,
    /// The received (valid) share and its valid signature.
    ValidShare,
    /// "The commitments are wrong".
    Commitments,
    /// "No valid share came".
    NoShare,
}

/// The bytes a dealer signs for a share ([`ReshareMsg::Share`]): a domain tag, the run's
/// context digest (execution id, old key facts, dealers, new committee), dealer, recipient,
/// the recipient's index in the new committee, the share and
/// [`dealer_commitments_digest`] of the dealer's commitments. Holds the share: zeroized
/// on drop.
pub fn share_signing_bytes(
    context: &[u8; 32],
    dealer: &NodeId,
    recipient: &NodeId,
    recipient_index: u16,
    share: &Scalar<Curve>,
    commitments_digest: &[u8; 32],
) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(200));
    out.extend_from_slice(b"tss-core/reshare-share/v1");
    out.extend_from_slice(context);
    out.extend_from_slice(dealer.as_bytes());
    out.extend_from_slice(recipient.as_bytes());
    out.extend_from_slice(&recipient_index.to_be_bytes());
    out.extend_from_slice(share.to_be_bytes().as_ref());
    out.extend_from_slice(commitments_digest);
    out
}

/// A hash of one dealer's broadcast: its id, the context it carried and its commitments
/// (bound into its share signatures).
pub fn dealer_commitments_digest(
    dealer: &NodeId,
    context: &[u8; 32],
    commitments: &[Point<Curve>],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"tss-core/reshare-dealer-commitments/v1");
    h.update(dealer.as_bytes());
    h.update(context);
    h.update((commitments.len() as u64).to_be_bytes());
    for p in commitments {
        h.update(p.to_bytes(true).as_ref());
    }
    h.finalize().into()
}

/// What every party needs to check commitments and judge complaints, from the request.
struct Judge<'a> {
    request: &'a ReshareRequest,
    context: [u8; 32],
    t_new: usize,
    /// Each dealer's Lagrange coefficient at 0 over the dealers' evaluation points.
    lambdas: Vec<Scalar<Curve>>,
    /// Each dealer's expected constant term, `λ_j · X_j`.
    expected: Vec<Point<Curve>>,
}

impl<'a> Judge<'a> {
    fn new(request: &'a ReshareRequest) -> Result<Self> {
        let (_, old_public_shares) = request.old.points()?;
        let dealer_indices: Vec<u16> = request
            .dealers
            .iter()
            .map(|d| request.old.committee.require_index(d))
            .collect::<Result<_>>()?;
        let dealer_points: Vec<Scalar<Curve>> =
            dealer_indices.iter().map(|i| point_of(*i)).collect();
        let lambdas: Vec<Scalar<Curve>> = (0..dealer_points.len())
            .map(|j| {
                lagrange_at_zero(j, &dealer_points)
                    .ok_or_else(|| TssError::InvalidParticipants("repeated dealer".into()))
            })
            .collect::<Result<_>>()?;
        let expected = dealer_indices
            .iter()
            .zip(&lambdas)
            .map(|(i, l)| old_public_shares[usize::from(*i)] * l)
            .collect();
        Ok(Self {
            request,
            context: request.context_digest(),
            t_new: usize::from(request.new_committee.threshold()),
            lambdas,
            expected,
        })
    }

    /// Whether dealer number `j`'s broadcast is right: this run's context, `t'`
    /// commitments, constant term `λ_j · X_j`.
    fn commitments_valid(
        &self,
        j: usize,
        context: &[u8; 32],
        commitments: &[Point<Curve>],
    ) -> bool {
        *context == self.context
            && commitments.len() == self.t_new
            && commitments[0] == self.expected[j]
    }

    /// The rule of the module docs' *Complaints*.
    fn judge(
        &self,
        complainer: NodeId,
        dealer: NodeId,
        evidence: &ComplaintEvidence,
        context: &[u8; 32],
        commitments: &[Point<Curve>],
    ) -> Finding {
        let Some(j) = self.request.dealers.iter().position(|d| *d == dealer) else {
            return Finding::FalseComplaint;
        };
        let commitments_ok = self.commitments_valid(j, context, commitments);
        let recipient = self
            .request
            .new_committee
            .index_of(&complainer)
            .filter(|_| complainer != dealer);
        let signed_by_dealer = |v: &SignedCommitments| {
            verify_identity_signature(
                &dealer,
                &commitments_signing_bytes(&self.context, &v.digest),
                &v.signature,
            )
        };
        match evidence {
            ComplaintEvidence::Equivocation { first, second } => {
                if first.digest != second.digest
                    && signed_by_dealer(first)
                    && signed_by_dealer(second)
                {
                    Finding::DealerCheated
                } else {
                    Finding::FalseComplaint
                }
            }
            ComplaintEvidence::InvalidCommitments if commitments_ok => Finding::FalseComplaint,
            ComplaintEvidence::InvalidCommitments => Finding::DealerCheated,
            ComplaintEvidence::InvalidShare { share, signature } => {
                let Some(k) = recipient else {
                    return Finding::FalseComplaint;
                };
                let bytes = share_signing_bytes(
                    &self.context,
                    &dealer,
                    &complainer,
                    k,
                    share,
                    &dealer_commitments_digest(&dealer, context, commitments),
                );
                if !verify_identity_signature(&dealer, &bytes, signature) {
                    Finding::FalseComplaint
                } else if !commitments_ok
                    || Point::generator() * share != eval_commitments(commitments, &point_of(k))
                {
                    Finding::DealerCheated
                } else {
                    Finding::FalseComplaint
                }
            }
            _ if !commitments_ok => Finding::DealerCheated,
            ComplaintEvidence::NoValidShare if recipient.is_none() => Finding::FalseComplaint,
            ComplaintEvidence::NoValidShare | ComplaintEvidence::InvalidMessage => {
                Finding::Unresolved
            }
        }
    }
}

/// Receives and sorts reshare messages, checking that each comes from a party allowed to
/// send it, the right way (broadcast or direct).
struct Inbox {
    channel: SessionInbox,
    out: SessionOutbox,
    /// This run's context digest (commitment signatures are checked against it).
    context: [u8; 32],
    commitments: HashMap<NodeId, ([u8; 32], Vec<Point<Curve>>)>,
    /// Each dealer's signature of its commitments (checked on arrival).
    commitment_signatures: HashMap<NodeId, IdentitySignature>,
    shares: HashMap<NodeId, (Scalar<Curve>, IdentitySignature)>,
    round2: HashMap<NodeId, ReshareMsg>,
    /// Confirmation-phase messages that arrived before this party got there.
    later: Vec<(NodeId, ReshareMsg)>,
    /// Bound of `later`.
    later_limit: usize,
}

fn misbehaviour(culprits: Vec<NodeId>, reason: impl Into<String>) -> TssError {
    TssError::Misbehaviour {
        protocol: ProtocolKind::Reshare,
        culprits,
        reason: reason.into(),
        evidence: Vec::new(),
    }
}

impl Inbox {
    async fn next(&mut self, dealers: &[NodeId]) -> Result<()> {
        let msg = self.channel.recv().await.map_err(|e| match e {
            TransportError::Timeout { silent, .. } => TssError::Timeout {
                protocol: ProtocolKind::Reshare,
                silent,
            },
            other => TssError::Transport(other),
        })?;
        let from = msg.from;
        let decoded: ReshareMsg =
            decode_message(from, &msg.payload).map_err(|e| TssError::MalformedMessage {
                protocol: ProtocolKind::Reshare,
                from,
                reason: e.to_string(),
            })?;
        let broadcast = msg.kind == DeliveryKind::Broadcast;
        let is_dealer = dealers.contains(&from);
        // A repeated identical message (a retransmission) is ignored; a different one is
        // equivocation.
        fn insert<V: PartialEq>(map: &mut HashMap<NodeId, V>, from: NodeId, v: V) -> Result<()> {
            match map.get(&from) {
                Some(old) if *old == v => Ok(()),
                Some(_) => Err(misbehaviour(
                    vec![from],
                    "sent two different messages for one round",
                )),
                None => {
                    map.insert(from, v);
                    Ok(())
                }
            }
        }
        match decoded {
            ReshareMsg::Commitments {
                context,
                commitments,
                signature,
            } if is_dealer && broadcast => {
                let digest = dealer_commitments_digest(&from, &context, &commitments);
                let bytes = commitments_signing_bytes(&self.context, &digest);
                if !verify_identity_signature(&from, &bytes, &signature) {
                    return Err(misbehaviour(
                        vec![from],
                        "commitments not signed by their dealer",
                    ));
                }
                insert(&mut self.commitments, from, (context, commitments))?;
                self.commitment_signatures.entry(from).or_insert(signature);
                Ok(())
            }
            ReshareMsg::Share { share, signature } if is_dealer && !broadcast => {
                insert(&mut self.shares, from, (share, signature))
            }
            m @ (ReshareMsg::Echo { .. } | ReshareMsg::Complaint { .. }) if broadcast => {
                insert(&mut self.round2, from, m)
            }
            ReshareMsg::Alive => Ok(()),
            // Confirmation-phase messages may overtake a slower party's round 2 (they come
            // from other senders): kept for later, and judged then.
            m @ (ReshareMsg::Confirm { .. } | ReshareMsg::Certificate(_)) if broadcast => {
                if self.later.len() < self.later_limit {
                    self.later.push((from, m));
                }
                Ok(())
            }
            other => Err(misbehaviour(
                vec![from],
                format!("unexpected message {}", message_name(&other)),
            )),
        }
    }
}

/// The echo check (round 2), the same at every party that received the same round-2
/// messages: every echo must hold, for each dealer, a digest that dealer signed in this
/// run (a party whose echo does not is convicted: nobody can make a dealer sign for it);
/// a dealer with two different signed digests among the echoes showed two parties
/// different commitments, and is convicted with both as evidence
/// ([`ComplaintEvidence::Equivocation`]). An honest party that received other
/// commitments than the rest is never the culprit.
fn echo_check(
    context: &[u8; 32],
    dealers: &[NodeId],
    participants: &[NodeId],
    round2: &HashMap<NodeId, ReshareMsg>,
) -> Result<()> {
    let mut unbacked = Vec::new();
    // Per dealer: each distinct signed digest with the first party (in participant
    // order) that echoed it.
    let mut versions: Vec<Vec<(NodeId, SignedCommitments)>> = vec![Vec::new(); dealers.len()];
    for p in participants {
        let views = match round2.get(p) {
            Some(ReshareMsg::Echo { views })
            | Some(ReshareMsg::Complaint {
                views: Some(views), ..
            }) => views,
            // Sent by a party that aborted before it saw every commitment: judged later.
            Some(ReshareMsg::Complaint { views: None, .. }) | None => continue,
            Some(_) => {
                unbacked.push(*p);
                continue;
            }
        };
        let backed = views.len() == dealers.len()
            && dealers.iter().zip(views).all(|(d, v)| {
                verify_identity_signature(
                    d,
                    &commitments_signing_bytes(context, &v.digest),
                    &v.signature,
                )
            });
        if !backed {
            unbacked.push(*p);
            continue;
        }
        for (j, v) in views.iter().enumerate() {
            if !versions[j].iter().any(|(_, seen)| seen.digest == v.digest) {
                versions[j].push((*p, v.clone()));
            }
        }
    }
    if !unbacked.is_empty() {
        return Err(misbehaviour(
            unbacked,
            "echo check failed: an echo not backed by the dealers' signatures",
        ));
    }
    let verdicts: Vec<ComplaintVerdict> = dealers
        .iter()
        .zip(versions)
        .filter(|(_, v)| v.len() > 1)
        .map(|(dealer, v)| ComplaintVerdict {
            complainer: v[1].0,
            dealer: *dealer,
            evidence: ComplaintEvidence::Equivocation {
                first: v[0].1.clone(),
                second: v[1].1.clone(),
            },
            context: *context,
            commitments: Vec::new(),
            finding: Finding::DealerCheated,
        })
        .collect();
    if verdicts.is_empty() {
        Ok(())
    } else {
        Err(complaints_error(verdicts))
    }
}

/// The abort after judged complaints: the convicted parties as culprits, every verdict as
/// evidence.
fn complaints_error(verdicts: Vec<ComplaintVerdict>) -> TssError {
    let mut culprits: Vec<NodeId> = verdicts.iter().filter_map(|v| v.culprit()).collect();
    culprits.sort();
    culprits.dedup();
    let describe = |finding: Finding| -> Vec<String> {
        verdicts
            .iter()
            .filter(|v| v.finding == finding)
            .map(|v| format!("{} against {}", v.complainer, v.dealer))
            .collect()
    };
    let mut parts = Vec::new();
    for (finding, what) in [
        (Finding::DealerCheated, "dealer convicted"),
        (Finding::FalseComplaint, "false complaint"),
        (
            Finding::Unresolved,
            "unresolved (no culprit, both suspected)",
        ),
    ] {
        let found = describe(finding);
        if !found.is_empty() {
            parts.push(format!("{what}: {}", found.join(", ")));
        }
    }
    TssError::Misbehaviour {
        protocol: ProtocolKind::Reshare,
        culprits,
        reason: format!("reshare complaints: {}", parts.join("; ")),
        evidence: verdicts,
    }
}

fn message_name(m: &ReshareMsg) -> &'static str {
    match m {
        ReshareMsg::Commitments { .. } => "commitments",
        ReshareMsg::Share { .. } => "share",
        ReshareMsg::Echo { .. } => "echo",
        ReshareMsg::Complaint { .. } => "complaint",
        ReshareMsg::Confirm { .. } => "confirm",
        ReshareMsg::Certificate(_) => "certificate",
        ReshareMsg::Alive => "heartbeat",
    }
}

/// Evaluation point of the party with index `i` (CGGMP21 uses `i + 1`).
fn point_of(i: u16) -> Scalar<Curve> {
    Scalar::from(u64::from(i) + 1)
}

fn lagrange_at_zero(j: usize, xs: &[Scalar<Curve>]) -> Option<Scalar<Curve>> {
    let mut num = Scalar::<Curve>::one();
    let mut den = Scalar::<Curve>::one();
    for (m, x_m) in xs.iter().enumerate() {
        if m != j {
            num *= x_m;
            den *= *x_m - xs[j];
        }
    }
    Some(num * den.invert()?)
}

fn eval_commitments(commitments: &[Point<Curve>], x: &Scalar<Curve>) -> Point<Curve> {
    let mut acc = Point::<Curve>::zero();
    for c in commitments.iter().rev() {
        acc = acc * x + c;
    }
    acc
}

fn send(channel: &SessionOutbox, to: Destination, msg: &ReshareMsg) -> Result<()> {
    let bytes = encode_message(msg).map_err(|e| TssError::ProtocolAborted {
        protocol: ProtocolKind::Reshare,
        reason: e.to_string(),
    })?;
    Ok(channel.send(to, bytes)?)
}

/// Stores a new share before it is confirmed: receives the share's secret bytes (see
/// [`KeyShare::to_secret_bytes`]) and its generation. Its error is the store's own, boxed:
/// [`TssNode::reshare`] reports it as [`TssError::Store`] (a boxed [`TssError`] is passed
/// through as it is, e.g. the share's bytes not decoding).
pub type PersistShare = Box<
    dyn FnOnce(Zeroizing<Vec<u8>>, Generation) -> BoxFuture<'static, Result<(), StoreError>> + Send,
>;

impl TssNode {
    /// Runs one party's side of a reshare. `old_share` is required from dealers; `primes`
    /// and `persist` from new members (`persist` must durably store the new share before
    /// it returns: only then is the share confirmed to the others).
    pub async fn reshare(
        &self,
        request: &ReshareRequest,
        old_share: Option<&KeyShare>,
        primes: Option<PaillierPrimes>,
        persist: Option<PersistShare>,
    ) -> Result<ReshareOutcome> {
        request.validate()?;
        let me = self.node_id();
        let dealers = request.dealers.clone();
        let new_members = request.new_committee.members().to_vec();
        let participants = request.participants();
        if !participants.contains(&me) {
            return Err(TssError::NotACommitteeMember(me));
        }
        let is_dealer = dealers.contains(&me);
        let new_index = request.new_committee.index_of(&me);
        let context = request.context_digest();
        let (y, _) = request.old.points()?;
        let t_new = usize::from(request.new_committee.threshold());
        let fault = self.reshare_fault(&request.eid);

        // Dealers' Lagrange coefficients and expected constant terms λ_j · X_j.
        let judge = Judge::new(request)?;
        let lambdas = &judge.lambdas;

        let (channel, out) = self.open(&request.eid, &participants)?.split();
        let mut inbox = Inbox {
            channel,
            out,
            context,
            commitments: HashMap::new(),
            commitment_signatures: HashMap::new(),
            shares: HashMap::new(),
            round2: HashMap::new(),
            later: Vec::new(),
            later_limit: 4 * participants.len(),
        };

        // Round 1: deal.
        if is_dealer {
            let share = old_share.ok_or_else(|| {
                TssError::InvalidKeyShare("a dealer must provide its old share".into())
            })?;
            if share.public_info() != request.old {
                return Err(TssError::InvalidKeyShare(
                    "old share does not match the request's key generation".into(),
                ));
            }
            let identity = self.identity().cloned().ok_or_else(|| {
                TssError::InvalidParticipants(
                    "a dealer needs an identity key to sign its shares".into(),
                )
            })?;
            let j = dealers.iter().position(|d| *d == me).unwrap_or_default();
            let mut rng = ChaCha20Rng::from_entropy();
            let x_j: &Scalar<Curve> = share.inner.x.as_ref();
            let mut w = lambdas[j] * x_j;
            let mut coefs: Vec<SecretScalar<Curve>> = vec![SecretScalar::new(&mut w)];
            coefs.extend((1..t_new).map(|_| SecretScalar::random(&mut rng)));
            let mut commitments: Vec<Point<Curve>> =
                coefs.iter().map(|c| Point::generator() * c).collect();
            if fault == Some(ReshareFault::BadCommitments) {
                commitments[0] += Point::generator().to_point();
            }
            let own_digest = dealer_commitments_digest(&me, &context, &commitments);
            let signature = identity.sign(&commitments_signing_bytes(&context, &own_digest));
            send(
                &inbox.out,
                Destination::Broadcast,
                &ReshareMsg::Commitments {
                    context,
                    commitments: commitments.clone(),
                    signature: signature.clone(),
                },
            )?;
            inbox.commitments.insert(me, (context, commitments));
            inbox.commitment_signatures.insert(me, signature);
            for (k, member) in new_members.iter().enumerate() {
                let x = point_of(k as u16);
                let mut value = Scalar::<Curve>::zero();
                for c in coefs.iter().rev() {
                    value = value * x + c.as_ref();
                }
                if *member == me {
                    // Never checked against a signature (see the verification below).
                    inbox
                        .shares
                        .insert(me, (value, IdentitySignature::from_bytes(Vec::new())));
                } else {
                    if fault == Some(ReshareFault::BadSignedShareTo(*member)) {
                        value += Scalar::<Curve>::one();
                    }
                    let mut signature = identity.sign(&share_signing_bytes(
                        &context,
                        &me,
                        member,
                        k as u16,
                        &value,
                        &own_digest,
                    ));
                    if fault == Some(ReshareFault::UnsignedShareTo(*member)) {
                        signature = IdentitySignature::from_bytes(vec![0; 64]);
                    }
                    send(
                        &inbox.out,
                        Destination::Direct(*member),
                        &ReshareMsg::Share {
                            share: value,
                            signature,
                        },
                    )?;
                }
            }
        }

        // Wait for all commitments, and (new members) all shares.
        while inbox.commitments.len() < dealers.len()
            || (new_index.is_some() && inbox.shares.len() < dealers.len())
        {
            if let Err(e) = inbox.next(&dealers).await {
                // A dealer that sent garbage is named to everyone, so that nobody waits
                // for a timeout to learn the run failed.
                let blamed = match &e {
                    TssError::MalformedMessage { from, .. } => Some(*from),
                    TssError::Misbehaviour { culprits, .. } => culprits.first().copied(),
                    _ => None,
                };
                if let Some(dealer) = blamed.filter(|b| dealers.contains(b)) {
                    let _ = send(
                        &inbox.out,
                        Destination::Broadcast,
                        &ReshareMsg::Complaint {
                            views: None,
                            dealer,
                            evidence: ComplaintEvidence::InvalidMessage,
                        },
                    );
                }
                return Err(e);
            }
        }

        // Verify public parts (everyone) and own shares (new members).
        let mut sum = Point::<Curve>::zero();
        let mut complaint: Option<(NodeId, ComplaintEvidence)> = None;
        for (j, dealer) in dealers.iter().enumerate() {
            let (their_context, commitments) = &inbox.commitments[dealer];
            if !judge.commitments_valid(j, their_context, commitments) {
                complaint.get_or_insert((*dealer, ComplaintEvidence::InvalidCommitments));
                continue;
            }
            sum += commitments[0];
            if let Some(k) = new_index {
                let (share, signature) = &inbox.shares[dealer];
                let signed = *dealer == me || {
                    let bytes = share_signing_bytes(
                        &context,
                        dealer,
                        &me,
                        k,
                        share,
                        &dealer_commitments_digest(dealer, their_context, commitments),
                    );
                    verify_identity_signature(dealer, &bytes, signature)
                };
                let expected = eval_commitments(commitments, &point_of(k));
                if !signed {
                    complaint.get_or_insert((*dealer, ComplaintEvidence::NoValidShare));
                } else if Point::generator() * share != expected {
                    complaint.get_or_insert((
                        *dealer,
                        ComplaintEvidence::InvalidShare {
                            share: *share,
                            signature: signature.clone(),
                        },
                    ));
                }
            }
        }
        if let Some(ReshareFault::FalseComplaint { dealer, evidence }) = &fault {
            let dealer = if dealers.contains(dealer) {
                dealer
            } else {
                &dealers[0]
            };
            let (share, signature) = inbox.shares.get(dealer).cloned().ok_or_else(|| {
                TssError::InvalidParticipants("a false complaint needs a share".into())
            })?;
            let evidence = match evidence {
                FalseEvidence::ForgedShare => ComplaintEvidence::InvalidShare {
                    share: share + Scalar::<Curve>::one(),
                    signature,
                },
                FalseEvidence::ValidShare => ComplaintEvidence::InvalidShare { share, signature },
                FalseEvidence::Commitments => ComplaintEvidence::InvalidCommitments,
                FalseEvidence::NoShare => ComplaintEvidence::NoValidShare,
            };
            complaint = Some((*dealer, evidence));
        }
        if complaint.is_none() && sum != y {
            // Every constant term matched λ_j·X_j, so the old public shares themselves are
            // inconsistent with the key: the request is wrong, not a dealer.
            return Err(TssError::InvalidKeyShare(
                "old public shares do not add up to the public key".into(),
            ));
        }

        // Round 2: echo the commitments, signed by their dealers (or complain).
        let digest = echo_digest(&dealers, &inbox.commitments);
        let views: Vec<SignedCommitments> = dealers
            .iter()
            .map(|d| {
                let (their_context, commitments) = &inbox.commitments[d];
                SignedCommitments {
                    digest: dealer_commitments_digest(d, their_context, commitments),
                    signature: inbox.commitment_signatures[d].clone(),
                }
            })
            .collect();
        let round2 = match complaint {
            Some((dealer, evidence)) => ReshareMsg::Complaint {
                views: Some(views),
                dealer,
                evidence,
            },
            None => ReshareMsg::Echo { views },
        };
        send(&inbox.out, Destination::Broadcast, &round2)?;
        inbox.round2.insert(me, round2);
        while inbox.round2.len() < participants.len() {
            inbox.next(&dealers).await?;
        }
        // Echo check first: complaints are judged on commitments every party agrees on.
        echo_check(&context, &dealers, &participants, &inbox.round2)?;
        // Every complaint is judged here, by every party, on its evidence.
        let verdicts: Vec<ComplaintVerdict> = participants
            .iter()
            .filter_map(|p| match inbox.round2.get(p) {
                Some(ReshareMsg::Complaint {
                    dealer, evidence, ..
                }) => {
                    let (context, commitments) =
                        inbox.commitments.get(dealer).cloned().unwrap_or_default();
                    let finding = judge.judge(*p, *dealer, evidence, &context, &commitments);
                    Some(ComplaintVerdict {
                        complainer: *p,
                        dealer: *dealer,
                        evidence: evidence.clone(),
                        context,
                        commitments,
                        finding,
                    })
                }
                _ => None,
            })
            .collect();
        if !verdicts.is_empty() {
            return Err(complaints_error(verdicts));
        }

        // New public shares, from the commitments.
        let new_public_shares: Vec<Point<Curve>> = (0..request.new_committee.n())
            .map(|k| {
                dealers
                    .iter()
                    .map(|d| eval_commitments(&inbox.commitments[d].1, &point_of(k)))
                    .fold(Point::zero(), |a, b| a + b)
            })
            .collect();
        let new_info = PublicKeyInfo {
            key_id: request.old.key_id.clone(),
            generation: request.old.generation.next(),
            committee: request.new_committee.clone(),
            public_key: request.old.public_key.clone(),
            public_shares: new_public_shares
                .iter()
                .map(|p| p.to_bytes(true).as_ref().to_vec())
                .collect(),
        };
        let statement = ReshareStatement {
            eid: request.eid,
            key_id: new_info.key_id.clone(),
            generation: new_info.generation,
            public_key: new_info.public_key.clone(),
            new_committee: request.new_committee.clone(),
            threshold: request.new_committee.threshold(),
            commitments_digest: digest,
            public_info_digest: new_info.digest(),
        };
        let statement_bytes = statement.signing_bytes();
        let mut phase = ConfirmPhase {
            statement: &statement,
            statement_bytes: &statement_bytes,
            new_members: &new_members,
            signatures: HashMap::new(),
            certificate: None,
            faults: Vec::new(),
        };

        // Round 3 (new members): build, aux-info, store, confirm.
        let mut new_share = None;
        if let Some(k) = new_index {
            let identity = self.identity().cloned().ok_or_else(|| {
                TssError::InvalidParticipants(
                    "a new member needs an identity key to sign its confirmation".into(),
                )
            })?;
            let mut x: Scalar<Curve> = dealers.iter().map(|d| inbox.shares[d].0).sum();
            inbox.shares.clear();
            let x = NonZero::from_secret_scalar(SecretScalar::new(&mut x))
                .ok_or_else(|| TssError::InvalidKeyShare("new share is zero".into()))?;
            let public_shares = new_public_shares
                .iter()
                .map(|p| NonZero::from_point(*p))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| TssError::InvalidKeyShare("a public share is zero".into()))?;
            let shared_public_key = NonZero::from_point(y)
                .ok_or_else(|| TssError::InvalidKeyShare("public key is zero".into()))?;
            let core = DirtyIncompleteKeyShare::<Curve> {
                i: k,
                key_info: DirtyKeyInfo {
                    curve: Default::default(),
                    shared_public_key,
                    public_shares,
                    vss_setup: Some(VssSetup {
                        min_signers: request.new_committee.threshold(),
                        I: (0..request.new_committee.n())
                            .map(|i| NonZero::from_scalar(point_of(i)))
                            .collect::<Option<Vec<_>>>()
                            .ok_or_else(|| TssError::InvalidKeyShare("zero index".into()))?,
                    }),
                },
                x,
            }
            .validate()
            .map_err(|e| TssError::InvalidKeyShare(e.to_string()))?;
            let primes = primes.ok_or_else(|| {
                TssError::InvalidKeyShare("a new member must provide Paillier primes".into())
            })?;
            let persist = persist.ok_or_else(|| {
                TssError::InvalidKeyShare("a new member must provide a persist step".into())
            })?;
            // Aux-info and storing take long on a loaded machine: heartbeats on this
            // session tell the parties that only wait (leaving dealers) that we are alive.
            let work = async {
                let aux = self
                    .aux_info(&request.new_committee, request.eid.sub("aux"), primes)
                    .await?;
                let inner = cggmp21::KeyShare::from_parts((core, aux.0))
                    .map_err(|e| TssError::InvalidKeyShare(e.to_string()))?;
                let share = KeyShare {
                    key_id: new_info.key_id.clone(),
                    generation: new_info.generation,
                    committee: request.new_committee.clone(),
                    local: me,
                    inner,
                };
                persist(share.to_secret_bytes()?, share.generation())
                    .await
                    .map_err(|e| match e.downcast::<TssError>() {
                        Ok(e) => *e,
                        Err(e) => TssError::Store(e),
                    })?;
                Ok::<_, TssError>(share)
            };
            let share = with_heartbeats(
                &inbox.out,
                heartbeat_interval(self.idle_timeout()),
                Box::pin(work),
            )
            .await?;
            let signature = identity.sign(&statement_bytes);
            send(
                &inbox.out,
                Destination::Broadcast,
                &ReshareMsg::Confirm {
                    signature: signature.clone(),
                },
            )?;
            phase.signatures.insert(me, signature);
            new_share = Some(share);
        }

        // Everyone collects a certificate: every new member's valid confirmation, or a
        // certificate another party assembled. Nothing received here aborts the run.
        for (from, msg) in std::mem::take(&mut inbox.later) {
            phase.take(from, msg);
        }
        phase.try_complete();
        let mut seen_raw: Vec<(NodeId, Vec<u8>)> = Vec::new();
        while phase.certificate.is_none() {
            let msg = match inbox.channel.recv().await {
                Ok(msg) => msg,
                Err(TransportError::Timeout { .. }) => break,
                Err(e) => return Err(TssError::Transport(e)),
            };
            let from = msg.from;
            if !participants.contains(&from) {
                continue;
            }
            // Identical retransmissions are ignored without a word.
            let raw = (from, msg.payload.clone());
            if seen_raw.contains(&raw) {
                continue;
            }
            if seen_raw.len() < 8 * participants.len() {
                seen_raw.push(raw);
            }
            match decode_message::<ReshareMsg>(from, &msg.payload) {
                Ok(m) if msg.kind == DeliveryKind::Broadcast => {
                    // A repeat of an earlier round's message is a retransmission.
                    let repeat = match &m {
                        ReshareMsg::Commitments {
                            context,
                            commitments,
                            ..
                        } => inbox.commitments.get(&from) == Some(&(*context, commitments.clone())),
                        ReshareMsg::Echo { .. } | ReshareMsg::Complaint { .. } => {
                            inbox.round2.get(&from) == Some(&m)
                        }
                        _ => false,
                    };
                    if !repeat {
                        phase.take(from, m);
                    }
                }
                Ok(ReshareMsg::Share { .. }) if dealers.contains(&from) => {}
                Ok(m) => phase.fault(
                    from,
                    format!("{} sent directly during confirmation", message_name(&m)),
                ),
                Err(_) => phase.fault(
                    from,
                    "a frame that does not decode during confirmation".into(),
                ),
            }
            phase.try_complete();
        }
        if let Some(certificate) = &phase.certificate {
            // Whoever missed a confirmation (or got a different one) completes with this.
            let _ = send(
                &inbox.out,
                Destination::Broadcast,
                &ReshareMsg::Certificate(Box::new(certificate.clone())),
            );
        }
        let (confirmed_by, missing_confirmations): (Vec<NodeId>, Vec<NodeId>) =
            match &phase.certificate {
                Some(_) => (new_members.clone(), Vec::new()),
                None => new_members
                    .iter()
                    .partition(|m| phase.signatures.contains_key(*m)),
            };
        if !missing_confirmations.is_empty() {
            tracing::warn!(
                missing = ?missing_confirmations,
                "reshare not confirmed by every new member: old shares must be kept"
            );
        }
        if phase.certificate.is_some() {
            self.discard_presignatures(&request.old.key_id, request.old.generation);
        }
        Ok(ReshareOutcome {
            new_share,
            confirmed_by,
            missing_confirmations,
            certificate: phase.certificate,
            faults: phase.faults,
        })
    }
}

/// How often a computing party sends a heartbeat: a quarter of its idle timeout, and at
/// least every second (other parties may wait with shorter timeouts; a heartbeat is a few
/// bytes).
fn heartbeat_interval(idle_timeout: std::time::Duration) -> std::time::Duration {
    (idle_timeout / 4).clamp(
        std::time::Duration::from_millis(10),
        std::time::Duration::from_secs(1),
    )
}

/// Runs `work`, broadcasting [`ReshareMsg::Alive`] on `channel` every `every` meanwhile,
/// from a task of its own: the work may block its thread (aux-info's CPU-bound rounds
/// run in `block_in_place`), and the heartbeats must go on.
async fn with_heartbeats<T>(
    channel: &SessionOutbox,
    every: std::time::Duration,
    work: impl std::future::Future<Output = T>,
) -> T {
    struct AbortOnDrop(tokio::task::JoinHandle<()>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let channel = channel.clone();
    let _beats = AbortOnDrop(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if send(&channel, Destination::Broadcast, &ReshareMsg::Alive).is_err() {
                break;
            }
        }
    }));
    work.await
}

/// Most faults recorded per run (a flooding party is named once it is here).
const MAX_FAULTS: usize = 64;

/// The confirmation phase's state at one party.
struct ConfirmPhase<'a> {
    statement: &'a ReshareStatement,
    statement_bytes: &'a [u8],
    new_members: &'a [NodeId],
    signatures: HashMap<NodeId, IdentitySignature>,
    certificate: Option<ReshareCertificate>,
    faults: Vec<ConfirmFault>,
}

impl ConfirmPhase<'_> {
    fn fault(&mut self, party: NodeId, reason: String) {
        if self
            .faults
            .iter()
            .any(|f| f.party == party && f.reason == reason)
        {
            return;
        }
        tracing::warn!(%party, %reason, "ignored during reshare confirmation");
        if self.faults.len() < MAX_FAULTS {
            self.faults.push(ConfirmFault { party, reason });
        }
    }

    /// Judges one broadcast message of the confirmation phase.
    fn take(&mut self, from: NodeId, msg: ReshareMsg) {
        match msg {
            ReshareMsg::Alive => {}
            ReshareMsg::Confirm { signature } if self.new_members.contains(&from) => {
                if !verify_identity_signature(&from, self.statement_bytes, &signature) {
                    self.fault(
                        from,
                        "a confirmation that does not verify against this run's statement \
                         (equivocation or junk)"
                            .into(),
                    );
                } else if let Some(earlier) = self.signatures.get(&from) {
                    if *earlier != signature {
                        // Two valid signatures of one statement: not a protocol fault of
                        // consequence, but not what an honest signer (deterministic
                        // ed25519) does.
                        self.fault(from, "two different valid confirmations".into());
                    }
                } else {
                    self.signatures.insert(from, signature);
                }
            }
            ReshareMsg::Certificate(certificate) => {
                if certificate.statement != *self.statement {
                    self.fault(from, "a certificate of a different statement".into());
                } else if let Err(e) = certificate.verify() {
                    self.fault(from, format!("an invalid certificate: {e}"));
                } else if self.certificate.is_none() {
                    self.certificate = Some(*certificate);
                }
            }
            other => self.fault(
                from,
                format!("an unexpected {} during confirmation", message_name(&other)),
            ),
        }
    }

    /// Assembles the certificate once every new member's confirmation is here.
    fn try_complete(&mut self) {
        if self.certificate.is_some() {
            return;
        }
        let signatures: Option<Vec<IdentitySignature>> = self
            .new_members
            .iter()
            .map(|m| self.signatures.get(m).cloned())
            .collect();
        if let Some(signatures) = signatures {
            self.certificate = Some(ReshareCertificate {
                statement: self.statement.clone(),
                signatures,
            });
        }
    }
}

/// The digest of every dealer's commitments as this party received them, in dealer order
/// (each as [`dealer_commitments_digest`]): what [`ReshareStatement`]'s
/// `commitments_digest` holds. Equal at every party that passed the echo check.
pub(crate) fn echo_digest(
    dealers: &[NodeId],
    commitments: &HashMap<NodeId, ([u8; 32], Vec<Point<Curve>>)>,
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"tss-core/reshare-echo/v2");
    for d in dealers {
        h.update(d.as_bytes());
        if let Some((context, points)) = commitments.get(d) {
            h.update(dealer_commitments_digest(d, context, points));
        }
    }
    h.finalize().into()
}
