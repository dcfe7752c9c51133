//! The one error type of node-shell.

use transport::NodeId;

/// Everything that can go wrong in a sequencer node: bad configuration, pool rule
/// violations, bad RPC input, and failures of the keystore, transport or MPC protocols.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ----- configuration -----
    /// The configuration file could not be read.
    #[error("cannot read config file {path}: {source}")]
    ConfigRead {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is not valid TOML or has unknown / mistyped fields.
    #[error("config is not valid: {0}")]
    ConfigParse(String),
    /// A configuration field has a bad value.
    #[error("config field `{field}` is invalid: {reason}")]
    ConfigInvalid {
        /// Dotted path of the field, e.g. `pool.min_stake`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The identity key file is missing or malformed.
    #[error("identity key file {path}: {reason}")]
    Identity {
        /// The file.
        path: String,
        /// What is wrong (never contains key material).
        reason: String,
        /// The I/O error, when reading or writing the file failed.
        #[source]
        source: Option<std::io::Error>,
    },

    /// An L1 read or transaction failed.
    #[error(transparent)]
    L1(#[from] crate::l1::L1Error),
    /// The operation is switched off by configuration.
    #[error("disabled: {0}")]
    Disabled(String),

    // ----- pool rules -----
    /// A candidate is not on the admin whitelist.
    #[error("{0} is not on the admin whitelist")]
    NotWhitelisted(NodeId),
    /// A stake is below the pool minimum.
    #[error("stake {stake} is below the minimum stake {min}")]
    StakeTooLow {
        /// Offered stake.
        stake: u64,
        /// Pool minimum.
        min: u64,
    },
    /// A stake is above the pool maximum.
    #[error("stake {stake} is above the maximum stake {max}")]
    StakeTooHigh {
        /// Offered stake.
        stake: u64,
        /// Pool maximum.
        max: u64,
    },
    /// The node is already a pool member.
    #[error("{0} is already a member of the pool")]
    AlreadyMember(NodeId),
    /// The node is not a pool member.
    #[error("{0} is not a member of the pool")]
    NotMember(NodeId),
    /// Joining would exceed the maximum pool size.
    #[error("the pool is full ({max} members)")]
    PoolFull {
        /// Maximum members.
        max: usize,
    },
    /// A pool would have fewer members than its minimum size (a genesis set too small,
    /// or an exit that would shrink the pool below it).
    #[error("the pool cannot shrink below {min} members")]
    PoolTooSmall {
        /// Minimum members.
        min: usize,
    },

    // ----- requests -----
    /// A request is malformed (bad hex, wrong length, missing field, ...).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// This node holds no key share (yet, or any more).
    #[error("no key share for key {0} on this node")]
    NoKey(String),
    /// The operation conflicts with the node's current state.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A party refused a proposal this node coordinated.
    #[error("{by} rejected the proposal: {reason}")]
    Rejected {
        /// The refusing party (authenticated by the transport).
        by: NodeId,
        /// Its reason.
        reason: String,
    },
    /// A proposal received from a peer was invalid.
    #[error("invalid proposal from {from}: {reason}")]
    InvalidProposal {
        /// The proposer (authenticated by the transport).
        from: NodeId,
        /// What is wrong with it.
        reason: String,
    },

    // ----- subsystems -----
    /// The MPC protocol library failed.
    #[error("threshold protocol failed: {0}")]
    Tss(#[from] tss_core::TssError),
    /// The keystore failed.
    #[error("keystore: {0}")]
    Keystore(#[from] keystore::KeystoreError),
    /// The transport failed.
    #[error("transport: {0}")]
    Transport(#[from] transport::TransportError),
    /// A produced signature did not recover to the key's address.
    #[error("signature does not verify against the key's address")]
    SignatureMismatch,
    /// A background task or actor stopped.
    #[error("internal: {0}")]
    Internal(String),
    /// I/O failure.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The devnet demo failed a check.
    #[error("devnet check failed: {0}")]
    Devnet(String),
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
