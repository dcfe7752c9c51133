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
//! 4. **Confirm.** [`TssNode::reshare`](crate::TssNode::reshare) returns here with a
//!    [`StagedReshare`]: each new member's caller stores the staged share
//!    ([`StagedReshare::new_share`]) as *pending* (not active), then calls
//!    [`StagedReshare::confirm`], which signs a [`ReshareStatement`] (execution id, key, new
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
//! # The API: a role, then two steps
//!
//! Each party states what it brings as a [`ReshareRole`] (a dealer brings its old share, a
//! new member of a CGGMP21 key its Paillier primes; a party may be both), checked against
//! its place in the [`ReshareRequest`]. The run then ends in two steps, so that the store
//! stays with the caller and no callback reaches back into it:
//!
//! ```no_run
//! # use tss_core::{KeyShare, PaillierPrimes, ReshareRequest, ReshareRole, TssNode};
//! # async fn run(node: &TssNode, request: &ReshareRequest, old: &KeyShare,
//! #     primes: PaillierPrimes) -> tss_core::Result<()> {
//! let role = ReshareRole::DealerAndNewMember { old_share: old, primes: Some(primes) };
//! let staged = node.reshare(request, role).await?; // rounds 1-3: deal, echo, aux-info
//! if let Some(share) = staged.new_share() {
//!     // Seal `share.to_secret_bytes()` in the store as a pending generation here.
//! }
//! let outcome = staged.confirm().await?; // sign the statement, collect the certificate
//! if let Some(certificate) = outcome.certificate {
//!     // Activate the pending generation and retire the old one, with the certificate.
//! }
//! # Ok(()) }
//! ```
//!
//! The pool layer ([`crate::pool`]) does exactly this with its share store, and also
//! fetches a missed certificate from peers.
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

use cggmp21::generic_ec::Point;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use transport::NodeId;

use crate::ecdsa::Curve;
use crate::error::{Result, TssError};
use crate::ids::{Committee, ExecutionId, Generation, KeyId};
use crate::primes::PaillierPrimes;
use crate::protocol::Protocol;
use crate::share::{KeyShare, ShareSecret};

mod complaints;
mod confirm;
mod feldman;
mod inbox;
mod messages;
mod rounds;

pub use complaints::{ComplaintEvidence, ComplaintVerdict, FalseEvidence, Finding, ReshareFault};
pub use confirm::{
    ConfirmFault, ReshareCertificate, ReshareOutcome, ReshareStatement, StagedReshare,
};
pub use messages::{
    commitments_signing_bytes, dealer_commitments_digest, share_signing_bytes, ReshareMsg,
    SignedCommitments,
};

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
    /// The key's protocol (absent in JSON written before protocols were recorded:
    /// CGGMP21; left out of [`PublicKeyInfo::digest`] for CGGMP21, so the digests of
    /// CGGMP21 keys, bound into stored certificates, are what they were).
    #[serde(default)]
    pub protocol: Protocol,
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
        /// The fields before protocols were recorded, in their order.
        #[derive(Serialize)]
        struct WithoutProtocol<'a> {
            key_id: &'a KeyId,
            generation: Generation,
            committee: &'a Committee,
            public_key: &'a Vec<u8>,
            public_shares: &'a Vec<Vec<u8>>,
        }
        let encoded = match self.protocol {
            Protocol::Cggmp21 => serde_json::to_vec(&WithoutProtocol {
                key_id: &self.key_id,
                generation: self.generation,
                committee: &self.committee,
                public_key: &self.public_key,
                public_shares: &self.public_shares,
            }),
            _ => serde_json::to_vec(self),
        };
        let mut h = Sha256::new();
        h.update(b"tss-core/public-key-info/v1");
        h.update(encoded.unwrap_or_default());
        h.finalize().into()
    }
}

impl KeyShare {
    /// The public facts of this share's generation (safe to send to joining nodes).
    pub fn public_info(&self) -> PublicKeyInfo {
        let (public_key, public_shares) = match &self.secret {
            ShareSecret::Cggmp21(inner) => (
                inner.shared_public_key.to_bytes(true).as_ref().to_vec(),
                inner
                    .public_shares
                    .iter()
                    .map(|p| p.to_bytes(true).as_ref().to_vec())
                    .collect(),
            ),
            ShareSecret::Dkls23(secret) => (
                secret.public_key.to_encoded_point(true).as_bytes().to_vec(),
                secret.public_shares.clone(),
            ),
        };
        PublicKeyInfo {
            key_id: self.key_id.clone(),
            generation: self.generation,
            committee: self.committee.clone(),
            public_key,
            public_shares,
            protocol: self.protocol(),
        }
    }
}

/// What a party brings to a reshare, by its place in the [`ReshareRequest`]: a dealer
/// brings its old share, a new member of a CGGMP21 key the Paillier primes of its new
/// share's aux-info (a DKLs23 key needs none: `None`).
/// [`TssNode::reshare`](crate::TssNode::reshare) refuses a role that does not match the
/// request ([`TssError::InvalidParticipants`]).
pub enum ReshareRole<'a> {
    /// One of the request's dealers that is not in the new committee (it leaves, or the
    /// committee no longer counts it).
    Dealer {
        /// Its share of the request's old generation.
        old_share: &'a KeyShare,
    },
    /// A member of the new committee that does not deal: a joiner, or an old member
    /// that is not among the dealers.
    NewMember {
        /// Primes for the new committee's aux-info (CGGMP21 keys only).
        primes: Option<PaillierPrimes>,
    },
    /// A dealer that stays in the new committee.
    DealerAndNewMember {
        /// Its share of the request's old generation.
        old_share: &'a KeyShare,
        /// Primes for the new committee's aux-info (CGGMP21 keys only).
        primes: Option<PaillierPrimes>,
    },
}

impl<'a> ReshareRole<'a> {
    /// The role of `node` in `request`, from what it holds: its old share (needed if it
    /// is a dealer) and primes (needed if it is a new member and the key's protocol has
    /// Paillier keys; ignored otherwise). Fails
    /// if `node` takes no part in the request ([`TssError::NotACommitteeMember`]) or
    /// lacks what its place needs ([`TssError::InvalidKeyShare`]).
    pub fn for_party(
        request: &ReshareRequest,
        node: &NodeId,
        old_share: Option<&'a KeyShare>,
        primes: Option<PaillierPrimes>,
    ) -> Result<Self> {
        let dealer = request.dealers.contains(node);
        let new_member = request.new_committee.index_of(node).is_some();
        let old_share = || {
            old_share.ok_or_else(|| {
                TssError::InvalidKeyShare("a dealer must provide its old share".into())
            })
        };
        let needs_primes = request
            .old
            .protocol
            .implementation()
            .needs_paillier_primes();
        let primes = || match (primes, needs_primes) {
            (None, true) => Err(TssError::InvalidKeyShare(
                "a new member must provide Paillier primes".into(),
            )),
            (primes, true) => Ok(primes),
            (_, false) => Ok(None),
        };
        Ok(match (dealer, new_member) {
            (true, true) => Self::DealerAndNewMember {
                old_share: old_share()?,
                primes: primes()?,
            },
            (true, false) => Self::Dealer {
                old_share: old_share()?,
            },
            (false, true) => Self::NewMember { primes: primes()? },
            (false, false) => return Err(TssError::NotACommitteeMember(*node)),
        })
    }

    /// The old share, if this role deals.
    pub fn old_share(&self) -> Option<&'a KeyShare> {
        match self {
            Self::Dealer { old_share } | Self::DealerAndNewMember { old_share, .. } => {
                Some(old_share)
            }
            Self::NewMember { .. } => None,
        }
    }

    /// Whether this role is in the new committee.
    pub fn is_new_member(&self) -> bool {
        !matches!(self, Self::Dealer { .. })
    }

    /// The role's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Dealer { .. } => "dealer",
            Self::NewMember { .. } => "new member",
            Self::DealerAndNewMember { .. } => "dealer and new member",
        }
    }

    fn into_primes(self) -> Option<PaillierPrimes> {
        match self {
            Self::NewMember { primes } | Self::DealerAndNewMember { primes, .. } => primes,
            Self::Dealer { .. } => None,
        }
    }
}

impl std::fmt::Debug for ReshareRole<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The share and the primes are secret; their own Debug redacts them, but the
        // role's name is all a log needs.
        f.write_str(self.name())
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
    /// The generation the new shares get: above the old one. Usually the next
    /// ([`ReshareRequest::next_generation`]); a retry after a run that failed unconfirmed
    /// skips the generations parties may still hold pending from it.
    pub new_generation: Generation,
    /// This run's execution id.
    pub eid: ExecutionId,
}

impl ReshareRequest {
    /// The generation after `old`'s: what a first attempt to reshare `old` uses.
    pub fn next_generation(old: &PublicKeyInfo) -> Generation {
        old.generation.next()
    }

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
    /// dealers, new committee, new generation, execution id). Every dealer's
    /// [`ReshareMsg::Commitments`] carries it, and receivers refuse a different one.
    /// Public with the `fuzzing` feature only (the fuzz targets forge messages with it).
    #[cfg(feature = "fuzzing")]
    pub fn context(&self) -> [u8; 32] {
        self.context_digest()
    }

    /// See `context` (public with the `fuzzing` feature).
    pub(crate) fn context_digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"tss-core/reshare-context/v2");
        h.update(self.old.digest());
        for d in &self.dealers {
            h.update(d.as_bytes());
        }
        h.update(serde_json::to_vec(&self.new_committee).unwrap_or_default());
        h.update(self.new_generation.get().to_be_bytes());
        h.update(self.eid.as_bytes());
        h.finalize().into()
    }

    fn validate(&self) -> Result<()> {
        if self.new_generation <= self.old.generation {
            return Err(TssError::InvalidParticipants(format!(
                "the new generation ({}) must be above the old one ({})",
                self.new_generation, self.old.generation
            )));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Stored certificates bind `PublicKeyInfo::digest` of CGGMP21 keys as it was before
    /// protocols were recorded: the digest of such a key is still that of its JSON
    /// without the field, byte for byte; a DKLs23 key's digest covers its protocol.
    #[test]
    fn a_cggmp21_key_infos_digest_is_the_one_from_before_protocols_were_recorded() {
        let members = vec![NodeId::from_bytes([1; 32]), NodeId::from_bytes([2; 32])];
        let mut info = PublicKeyInfo {
            key_id: KeyId::new("k").unwrap(),
            generation: Generation(3),
            committee: Committee::new(members, 2).unwrap(),
            public_key: vec![2, 1],
            public_shares: vec![vec![3, 4], vec![5, 6]],
            protocol: Protocol::Cggmp21,
        };
        // The JSON as it was written before: the same fields, without `protocol` (last).
        let json = serde_json::to_string(&info).unwrap();
        let old_json = json.replace(r#","protocol":"cggmp21"}"#, "}");
        assert_ne!(old_json, json);
        assert_eq!(
            serde_json::from_str::<PublicKeyInfo>(&old_json).unwrap(),
            info,
            "old JSON reads as a CGGMP21 key's"
        );
        assert_eq!(info.protocol, Protocol::Cggmp21);
        let mut h = Sha256::new();
        h.update(b"tss-core/public-key-info/v1");
        h.update(old_json.as_bytes());
        let old_digest: [u8; 32] = h.finalize().into();
        assert_eq!(info.digest(), old_digest);
        info.protocol = Protocol::Dkls23;
        assert_ne!(info.digest(), old_digest);
    }
}
