//! The embedder's rules: what a node agrees to take part in.

use async_trait::async_trait;
use transport::NodeId;

use crate::ethereum::keccak256;
use crate::ids::KeyId;
use crate::pool::proposal::{KeygenProposal, ReshareProposal, SignProposal};
use crate::reshare::PublicKeyInfo;

/// Why a validator refused a proposal. Sent to every party of the run in the abort
/// message, so keep it short and free of secrets.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Rejection {
    /// Human-readable reason.
    pub reason: String,
}

impl Rejection {
    /// A rejection with `reason`.
    pub fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
        }
    }
}

/// What a signer signs, as its validator computed it from a validated request.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SigningInput {
    /// The message bytes; every signer hashes them itself (Keccak-256). For an Ethereum
    /// transaction: its unsigned encoding (`0x02 || rlp(fields)` for EIP-1559), whose
    /// Keccak-256 is the transaction's signing hash.
    Message(Vec<u8>),
    /// A 32-byte digest the validator accepted as is. Only for full interactive signing
    /// (the nonce is fixed after the digest); never used with presignatures
    /// (RUSTSEC-2025-0127). Prefer [`SigningInput::Message`].
    Digest([u8; 32]),
}

impl std::fmt::Debug for SigningInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SigningInput::Message(m) => write!(f, "Message({} bytes)", m.len()),
            SigningInput::Digest(d) => write!(f, "Digest(0x{})", hex::encode(d)),
        }
    }
}

impl SigningInput {
    /// The 32-byte digest that is signed.
    pub fn digest(&self) -> [u8; 32] {
        match self {
            SigningInput::Message(m) => keccak256(m),
            SigningInput::Digest(d) => *d,
        }
    }
}

/// The validation hook every party runs before it joins a run, the proposer included.
///
/// The pool layer has already checked the proposal's shape (see
/// [`crate::pool::Proposal::check_shape`]): the proposer and this node are parties, signer
/// and dealer sets are well formed, and (for signing) the generation and signer set match
/// this node's share. A validator adds the embedder's rules: is the proposer allowed to
/// propose this now, is the committee the one the pool's record (e.g. L1) says, is the
/// batch valid. Any `Err` refuses the run: the node sends an abort to every party and
/// takes no part.
#[async_trait]
pub trait ProposalValidator: Send + Sync + 'static {
    /// Checks a keygen proposal. Returns the state to commit with the new key (see
    /// [`crate::pool::ShareStore::activate`]).
    async fn check_keygen(
        &self,
        proposer: NodeId,
        proposal: &KeygenProposal,
    ) -> Result<Vec<u8>, Rejection>;

    /// Checks a signing proposal against the key `key`. Returns what to sign, computed by
    /// this node from the request it validated.
    async fn check_sign(
        &self,
        proposer: NodeId,
        proposal: &SignProposal,
        key: &PublicKeyInfo,
    ) -> Result<SigningInput, Rejection>;

    /// Checks a reshare proposal. `current` is this node's view of the key (`None` for a
    /// joiner that holds no share yet: it must check `proposal.old` against the pool's
    /// record). Returns the state to commit with the new generation (or, for a leaving
    /// member, with the deletion of its share).
    async fn check_reshare(
        &self,
        proposer: NodeId,
        proposal: &ReshareProposal,
        current: Option<&PublicKeyInfo>,
    ) -> Result<Vec<u8>, Rejection>;

    /// Called right after this node committed `state` for `key_id` (with a new active
    /// generation, or with the deletion of its share when it left the committee), before
    /// the run's result is returned or its event sent: the embedder's view of the pool
    /// (which the checks above read) is up to date before this node takes part in its
    /// next run. The default does nothing.
    async fn committed(&self, key_id: &KeyId, state: &[u8]) {
        let _ = (key_id, state);
    }
}

/// A validator that agrees to every proposal and signs the proposed request as is: no
/// rule of the pool's record is checked, so any one member decides what is signed.
/// Tests and benchmarks of the protocol layer only (feature `test-hooks`); a real pool
/// implements [`ProposalValidator`] with its own rules (see `examples/embed.rs`).
#[cfg(feature = "test-hooks")]
#[derive(Clone, Copy, Debug, Default)]
pub struct AcceptEverything;

#[cfg(feature = "test-hooks")]
#[async_trait]
impl ProposalValidator for AcceptEverything {
    async fn check_keygen(&self, _: NodeId, p: &KeygenProposal) -> Result<Vec<u8>, Rejection> {
        Ok(p.context.clone())
    }

    async fn check_sign(
        &self,
        _: NodeId,
        p: &SignProposal,
        _: &PublicKeyInfo,
    ) -> Result<SigningInput, Rejection> {
        Ok(SigningInput::Message(p.request.clone()))
    }

    async fn check_reshare(
        &self,
        _: NodeId,
        p: &ReshareProposal,
        _: Option<&PublicKeyInfo>,
    ) -> Result<Vec<u8>, Rejection> {
        Ok(p.context.clone())
    }
}
