//! What a proposer sends and what every participant checks before it joins a run.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use transport::NodeId;

use crate::error::{Result, TssError};
use crate::ids::{Committee, ExecutionId, Generation, KeyId};
use crate::protocol::Protocol;
use crate::reshare::{PublicKeyInfo, ReshareCertificate, ReshareRequest};

/// Run keygen for `committee`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeygenProposal {
    /// The run's id (fresh, chosen by the proposer).
    pub eid: ExecutionId,
    /// The key to create.
    pub key_id: KeyId,
    /// Who holds it and how many sign.
    pub committee: Committee,
    /// The embedder's facts the run is based on (e.g. the pool as read from L1); the
    /// [`crate::pool::ProposalValidator`] of every member checks them.
    pub context: Vec<u8>,
    /// The threshold protocol of the key. Every member refuses a keygen of another
    /// protocol than the one its [`crate::pool::PoolConfig`] names for the key.
    #[serde(default)]
    pub protocol: Protocol,
}

/// Sign what `request` describes with `signers`.
///
/// `request` is the embedder's description of what is to be signed (for a rollup: the
/// batch and the L1 transaction fields). Every signer's
/// [`crate::pool::ProposalValidator::check_sign`] validates it and returns the message
/// to sign; each signer hashes that itself. No signer signs a digest it did not compute
/// from content it validated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignProposal {
    /// The run's id.
    pub eid: ExecutionId,
    /// The key.
    pub key_id: KeyId,
    /// The key generation to sign with.
    pub generation: Generation,
    /// Exactly the threshold of committee members, in the order every signer uses.
    pub signers: Vec<NodeId>,
    /// What is to be signed, in the embedder's encoding.
    pub request: Vec<u8>,
    /// Sign in one round with this presignature (made earlier by a
    /// [`PresignProposal`] run of exactly `signers`), instead of full interactive
    /// signing. Each signer refuses an id it does not hold (unknown, used, or made for
    /// other signers, key or generation) and burns it on use, so it signs at most once;
    /// and only a [`crate::pool::SigningInput::Message`] (hashed by each signer itself)
    /// is signed with one, never a digest given as is.
    pub presignature: Option<ExecutionId>,
}

/// Make a presignature with `signers`, for a later [`SignProposal`] naming it. Nothing
/// is signed; each party keeps its part in memory only (never on disk) and drops it on
/// reshare and restart. The presignature's id is the run's
/// [`Proposal::run_eid`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresignProposal {
    /// The run's id.
    pub eid: ExecutionId,
    /// The key.
    pub key_id: KeyId,
    /// The key generation.
    pub generation: Generation,
    /// Exactly the threshold of committee members, in the order every signer uses.
    pub signers: Vec<NodeId>,
}

/// Reshare the key to `new_committee`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReshareProposal {
    /// The run's id.
    pub eid: ExecutionId,
    /// Public facts of the key generation being reshared.
    pub old: PublicKeyInfo,
    /// Old members that deal: exactly the old threshold of distinct old members.
    pub dealers: Vec<NodeId>,
    /// The committee that will hold the key.
    pub new_committee: Committee,
    /// The generation the new shares get (above `old`'s; see
    /// [`ReshareRequest::new_generation`]). A party that still holds a pending share of
    /// this generation or a later one refuses the proposal with
    /// [`TssError::GenerationInUse`] and tells the proposer
    /// ([`ControlMsg::GenerationInUse`]).
    pub new_generation: Generation,
    /// The embedder's facts the change is based on (e.g. the L1 event and height).
    pub context: Vec<u8>,
}

impl ReshareProposal {
    /// The reshare protocol's request.
    pub fn request(&self) -> ReshareRequest {
        ReshareRequest {
            old: self.old.clone(),
            dealers: self.dealers.clone(),
            new_committee: self.new_committee.clone(),
            new_generation: self.new_generation,
            eid: self.eid,
        }
    }
}

/// A proposal of one run. Serializable: it travels on the pool's control session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Proposal {
    /// Distributed key generation.
    Keygen(KeygenProposal),
    /// Signing.
    Sign(SignProposal),
    /// Resharing to a new committee.
    Reshare(ReshareProposal),
    /// A presignature for later one-round signing.
    Presign(PresignProposal),
}

impl Proposal {
    /// The run's execution id.
    pub fn eid(&self) -> ExecutionId {
        match self {
            Proposal::Keygen(p) => p.eid,
            Proposal::Sign(p) => p.eid,
            Proposal::Reshare(p) => p.eid,
            Proposal::Presign(p) => p.eid,
        }
    }

    /// The key the run is about.
    pub fn key_id(&self) -> &KeyId {
        match self {
            Proposal::Keygen(p) => &p.key_id,
            Proposal::Sign(p) => &p.key_id,
            Proposal::Reshare(p) => &p.old.key_id,
            Proposal::Presign(p) => &p.key_id,
        }
    }

    /// The execution id the run's protocol uses: a hash of the whole proposal (its `eid`
    /// included). Parties that were shown different proposals under one `eid` (an
    /// equivocating proposer) end up in different protocol sessions and never complete a
    /// run together, so they cannot commit different states for one run.
    pub fn run_eid(&self) -> ExecutionId {
        let mut h = Sha256::new();
        h.update(b"tss-core/pool/run/v1");
        match crate::wire::encode_message(self) {
            Ok(bytes) => h.update(&bytes),
            // Not reachable for a proposal that was received (it decoded); a local one too
            // large to encode cannot be sent either.
            Err(_) => h.update(self.eid().as_bytes()),
        }
        ExecutionId::from_bytes(h.finalize().into())
    }

    /// Every party of the run (the proposer included).
    pub fn participants(&self) -> Vec<NodeId> {
        match self {
            Proposal::Keygen(p) => p.committee.members().to_vec(),
            Proposal::Sign(p) => p.signers.clone(),
            Proposal::Reshare(p) => p.request().participants(),
            Proposal::Presign(p) => p.signers.clone(),
        }
    }

    /// The checks every party makes whatever the embedder's rules: the proposal is
    /// well-formed, `proposer` and `me` are parties of it, and (for resharing) the
    /// proposer holds the key being reshared. The embedder's
    /// [`crate::pool::ProposalValidator`] runs after these.
    pub fn check_shape(&self, proposer: NodeId, me: NodeId) -> Result<()> {
        let bad = |reason: String| TssError::InvalidProposal {
            from: proposer,
            reason,
        };
        let participants = self.participants();
        if !participants.contains(&proposer) {
            return Err(bad("the proposer is not a party of its own run".into()));
        }
        if !participants.contains(&me) {
            return Err(bad(format!("{me} is not a party of this run")));
        }
        match self {
            Proposal::Keygen(_) => Ok(()),
            Proposal::Sign(SignProposal { signers, .. })
            | Proposal::Presign(PresignProposal { signers, .. }) => {
                let distinct: BTreeSet<&NodeId> = signers.iter().collect();
                if distinct.len() != signers.len() {
                    return Err(bad("signers are not distinct".into()));
                }
                Ok(())
            }
            Proposal::Reshare(p) => {
                let old = &p.old.committee;
                if old.index_of(&proposer).is_none() {
                    return Err(bad(
                        "only a member of the old committee may propose a reshare".into(),
                    ));
                }
                let distinct: BTreeSet<&NodeId> = p.dealers.iter().collect();
                if p.dealers.len() != usize::from(old.threshold())
                    || distinct.len() != p.dealers.len()
                    || p.dealers.iter().any(|d| old.index_of(d).is_none())
                {
                    return Err(bad(format!(
                        "dealers must be {} distinct members of the old committee",
                        old.threshold()
                    )));
                }
                if p.old.public_shares.len() != usize::from(old.n()) {
                    return Err(bad("old key facts need one public share per member".into()));
                }
                if p.new_generation <= p.old.generation {
                    return Err(bad(format!(
                        "the new generation {} is not above the old one ({})",
                        p.new_generation, p.old.generation
                    )));
                }
                Ok(())
            }
        }
    }
}

/// Messages of the pool's control session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ControlMsg {
    /// A proposal, sent directly to every other party of the run.
    Propose(Proposal),
    /// The sender refuses or abandons run `eid`. Sent to every party of the run, so
    /// all of them stop at once instead of waiting for an idle timeout; except a busy
    /// refusal (reason `busy: …`, the sender is at a run cap and does not follow the
    /// proposal), which goes to the proposer alone and the proposer passes on. A passed-on
    /// refusal is the proposer's own abort: the other parties record the proposer as the
    /// one who aborted (the transport authenticates only it), and the busy member appears
    /// in the reason text only, as the proposer's unverified claim. Deliberately no
    /// "on behalf of" field: a party never blames a member on another member's word.
    Abort {
        /// The run.
        eid: ExecutionId,
        /// Why.
        reason: String,
        /// Parties of the run that the sender's own checks convicted of an invalid
        /// protocol message (a bad proof or share sent to it). The sender's claim: the
        /// receiver did not see those messages and cannot check it, so it never sets them
        /// aside on this alone (see [`crate::pool::PoolNode::propose_sign`]). Empty for a
        /// refusal and every other abort.
        blamed: Vec<NodeId>,
    },
    /// Asks for the certificate of a reshared generation (the sender staged its share but
    /// missed the end of the run). Peers that have it answer with
    /// [`ControlMsg::Certificate`]; others stay silent.
    CertificateRequest {
        /// The key.
        key_id: KeyId,
        /// The generation.
        generation: Generation,
    },
    /// A reshare certificate (self-verifying: the receiver checks every signature).
    Certificate(Box<ReshareCertificate>),
    /// A signer of presign run `id` (the run's [`Proposal::run_eid`]) stored its part;
    /// sent to the run's proposer, which offers the presignature for signing only once
    /// every signer said so.
    PresignatureStored {
        /// The presignature.
        id: ExecutionId,
    },
    /// A heartbeat of a signing run: the sender has run `eid` in hand (validating or
    /// computing). Sent to the run's other parties every
    /// [`crate::pool::PoolConfig::heartbeat_interval`]; a watched party that sends none for
    /// the silence timeout is taken as down.
    Alive {
        /// The run.
        eid: ExecutionId,
    },
    /// The sender refuses reshare run `eid` because it still holds a pending share of
    /// `key_id` at the proposed generation or a later one (from a run that failed
    /// unconfirmed), the highest being `generation`. Sent to the run's proposer before
    /// the [`ControlMsg::Abort`], so that it proposes again above `generation`.
    GenerationInUse {
        /// The refused run.
        eid: ExecutionId,
        /// The key.
        key_id: KeyId,
        /// The highest generation of `key_id` the sender holds pending.
        generation: Generation,
    },
}
