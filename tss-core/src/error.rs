//! The one error type of this crate.

use transport::{NodeId, TransportError};

use crate::ids::{ExecutionId, Generation, KeyId};

/// Which protocol failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProtocolKind {
    /// Distributed key generation.
    Keygen,
    /// Auxiliary info (Paillier keys, ring-Pedersen parameters) generation.
    AuxInfo,
    /// Presignature generation.
    Presign,
    /// One-round online signing with a presignature.
    OnlineSign,
    /// Full interactive signing.
    Sign,
    /// Moving a key to a new committee.
    Reshare,
}

impl std::fmt::Display for ProtocolKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            ProtocolKind::Keygen => "keygen",
            ProtocolKind::AuxInfo => "aux-info",
            ProtocolKind::Presign => "presign",
            ProtocolKind::OnlineSign => "online-sign",
            ProtocolKind::Sign => "sign",
            ProtocolKind::Reshare => "reshare",
        };
        f.write_str(s)
    }
}

/// Everything that can go wrong in tss-core. Variants that blame parties carry them as data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TssError {
    /// A key id is empty, too long or has characters outside `[A-Za-z0-9_.:-]`.
    #[error("invalid key id {id:?}: {reason}")]
    InvalidKeyId {
        /// The offending id (cut to the maximum length).
        id: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Committee or signer set is malformed (size, threshold, duplicates, local node absent).
    #[error("invalid participants: {0}")]
    InvalidParticipants(String),
    /// The signer set does not have exactly the threshold number of members.
    #[error("signing needs exactly {expected} signers, got {got}")]
    WrongSignerCount {
        /// The key's threshold.
        expected: usize,
        /// How many signers were given.
        got: usize,
    },
    /// A signer is not a member of the key's committee.
    #[error("{0} is not a member of the key's committee")]
    NotACommitteeMember(NodeId),
    /// The presignature was already used (or is being used) for a signature.
    #[error("presignature {0} was already used")]
    PresignatureAlreadyUsed(ExecutionId),
    /// No presignature with that id is held.
    #[error("no presignature {0} is held")]
    UnknownPresignature(ExecutionId),
    /// The presignature belongs to another key.
    #[error("presignature was made for key {expected}, not {got}")]
    PresignatureKeyMismatch {
        /// Key the presignature belongs to.
        expected: KeyId,
        /// Key requested.
        got: KeyId,
    },
    /// Parties sent nothing for the session's idle timeout.
    #[error("{protocol} timed out waiting for {silent:?}")]
    Timeout {
        /// The protocol.
        protocol: ProtocolKind,
        /// Parties that fell silent.
        silent: Vec<NodeId>,
    },
    /// A party sent a message that does not decode.
    #[error("{protocol}: malformed message from {from}: {reason}")]
    MalformedMessage {
        /// The protocol.
        protocol: ProtocolKind,
        /// The sender (authenticated by the transport).
        from: NodeId,
        /// Decoder's complaint.
        reason: String,
    },
    /// Parties misbehaved provably (bad share, bad proof, inconsistent broadcast), or a
    /// reshare complaint could not be resolved (then `culprits` may be empty and
    /// `evidence` names both sides: see [`crate::reshare`]'s complaint rule).
    #[error("{protocol}: misbehaving parties {culprits:?}: {reason}")]
    Misbehaviour {
        /// The protocol.
        protocol: ProtocolKind,
        /// The blamed parties: only those proven to have misbehaved.
        culprits: Vec<NodeId>,
        /// What they did.
        reason: String,
        /// A reshare's judged complaints, with their evidence (empty otherwise): every
        /// honest party computes the same list, and
        /// [`crate::reshare::ComplaintVerdict::rejudge`] checks one from the request alone.
        evidence: Vec<crate::reshare::ComplaintVerdict>,
    },
    /// The CGGMP21 protocol aborted (proof failure, inconsistent broadcast, …).
    #[error("{protocol} aborted (blamed {culprits:?}): {reason}")]
    ProtocolAborted {
        /// The protocol.
        protocol: ProtocolKind,
        /// The parties cggmp21 blames for a well-formed but invalid message (a bad ZK
        /// proof, decommitment or share): each proven to have sent it, as the transport
        /// authenticates senders. Empty when the abort blames nobody provably (a failed
        /// reliability check only shows that views differ), when the cause is not a
        /// party, and when cggmp21's error has a shape this crate does not know: the
        /// blamed party indices are read from the `Debug` text of cggmp21 0.6.3's private
        /// error types (see [`crate::wire::classify_error`]).
        culprits: Vec<NodeId>,
        /// cggmp21's explanation.
        reason: String,
    },
    /// DKLs23: `culprit` failed an oblivious-transfer check, which per the protocol leaks
    /// information about the pairwise state it shares with this node. It must never take
    /// part in a run of this key generation (whose pairwise setup it put at risk) with
    /// this node again. The pool layer bans it and stores the ban with the generation
    /// ([`crate::pool::PoolEvent::MemberBanned`]); a caller of [`crate::TssNode`]
    /// directly keeps it itself.
    #[error("{protocol}: {culprit} must be excluded from every later run of this key generation: {reason}")]
    MustExclude {
        /// The protocol.
        protocol: ProtocolKind,
        /// The party to exclude.
        culprit: NodeId,
        /// The crate's explanation.
        reason: String,
    },
    /// A sealed key share belongs to another threshold protocol than the one it was
    /// decoded as (or to one this build does not implement).
    #[error("a key share of protocol {found:?} cannot be used as a {expected} share")]
    ProtocolMismatch {
        /// The protocol asked for.
        expected: crate::protocol::Protocol,
        /// The protocol the share names.
        found: String,
    },
    /// The key's protocol has no such operation (e.g. presignatures with DKLs23), or
    /// this build does not implement it for that protocol yet.
    #[error("{protocol} keys do not support {operation}")]
    Unsupported {
        /// The key's protocol.
        protocol: crate::protocol::Protocol,
        /// What was asked for.
        operation: &'static str,
    },
    /// Combined signature does not verify under the public key.
    #[error("combined signature does not verify")]
    InvalidSignature,
    /// A key share failed validation.
    #[error("invalid key share: {0}")]
    InvalidKeyShare(String),
    /// Serialized data (a stored key share, fixture primes) does not decode.
    #[error("cannot decode {what}: {reason}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The prime pool stopped.
    #[error("prime pool is closed")]
    PrimePoolClosed,
    /// The share store failed; the store's own error is the source (downcast it to the
    /// store's type, e.g. `keystore::KeystoreError`).
    #[error("share store: {0}")]
    Store(#[source] StoreError),
    /// A participant refused the run (its validation hook said no) or aborted it; every
    /// participant of the run hears it and stops.
    #[error("run {eid} aborted by {by}: {reason}")]
    Aborted {
        /// The run.
        eid: ExecutionId,
        /// Who refused or aborted (authenticated by the transport).
        by: NodeId,
        /// Their reason.
        reason: String,
        /// Parties `by` says its own checks convicted of an invalid protocol message in
        /// this run ([`crate::pool::ControlMsg::Abort`]'s claim, unverified); empty when it
        /// named none.
        blamed: Vec<NodeId>,
    },
    /// A proposal this node received does not pass its checks (generic checks of the pool
    /// layer, or the embedder's [`crate::pool::ProposalValidator`]).
    #[error("proposal from {from} refused: {reason}")]
    InvalidProposal {
        /// The proposer (authenticated by the transport).
        from: NodeId,
        /// Why it was refused.
        reason: String,
    },
    /// The run was cancelled by its caller (the pool layer cancels a run that a
    /// participant aborted; it then reports [`TssError::Aborted`]).
    #[error("the run was cancelled")]
    Cancelled,
    /// This node has no active share of the key.
    #[error("no share of key {0} is held")]
    NoShare(KeyId),
    /// Another keygen or reshare of this key is running on this node.
    #[error("a keygen or reshare of key {0} is already running on this node")]
    Busy(KeyId),
    /// A reshare ended before this node held a certificate (a valid signed confirmation
    /// from every new member): nothing was activated or retired here; the old generation
    /// stays active, and a staged new share stays pending until a certificate arrives.
    #[error("reshare {eid} not confirmed by {missing:?}; the old generation stays active")]
    ReshareNotConfirmed {
        /// The run.
        eid: ExecutionId,
        /// New members whose valid confirmation did not arrive.
        missing: Vec<NodeId>,
    },
    /// A reshare proposal names a generation this node still holds pending (from an
    /// earlier run that failed unconfirmed, whose certificate may yet arrive): a store
    /// never overwrites a generation. The proposer should propose again above `pending`
    /// ([`crate::pool::PoolNode::propose_reshare`] does so by itself).
    #[error("generation {proposed} of key {key_id} is in use here: {pending} is held pending")]
    GenerationInUse {
        /// The key.
        key_id: KeyId,
        /// The generation proposed.
        proposed: Generation,
        /// The highest generation this node holds pending.
        pending: Generation,
    },
    /// A reshare certificate does not prove what it claims.
    #[error("invalid reshare certificate (blamed {culprits:?}): {reason}")]
    InvalidCertificate {
        /// Members whose signature in it does not verify (empty if the certificate is
        /// malformed as a whole).
        culprits: Vec<NodeId>,
        /// What is wrong.
        reason: String,
    },
    /// A run went past its overall deadline ([`crate::pool::PoolConfig::run_deadline`]),
    /// however alive its parties looked.
    #[error("run {eid} exceeded its deadline of {after:?}")]
    DeadlineExceeded {
        /// The run.
        eid: ExecutionId,
        /// The deadline.
        after: std::time::Duration,
    },
    /// Parties of a signing run stopped answering: no sign of life (heartbeat) for
    /// `after` ([`crate::pool::PoolConfig::signer_silence_timeout`]), or their connection
    /// dropped. The run was aborted for every party.
    #[error("run {eid}: no sign of life from {silent:?} for {after:?}")]
    Unresponsive {
        /// The run.
        eid: ExecutionId,
        /// The parties that went silent.
        silent: Vec<NodeId>,
        /// The silence that was tolerated.
        after: std::time::Duration,
    },
    /// Too few committee members are left to sign `key_id`: `needed` signers, `available`
    /// candidates once the members found unresponsive during this request are set aside.
    #[error("{key_id}: {needed} signers needed, {available} members available (unresponsive: {unresponsive:?})")]
    NotEnoughSigners {
        /// The key.
        key_id: KeyId,
        /// The threshold.
        needed: usize,
        /// Members still available.
        available: usize,
        /// Members set aside as unresponsive during this request.
        unresponsive: Vec<NodeId>,
    },
}

/// The error of a [`crate::pool::ShareStore`]: the store's own error type, boxed (callers
/// can downcast it).
pub type StoreError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result alias.
pub type Result<T, E = TssError> = std::result::Result<T, E>;
