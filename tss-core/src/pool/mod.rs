//! Pool coordination: what an embedder needs around the protocols.
//!
//! A [`PoolNode`] is one member of a signing pool. It turns the protocols of this crate
//! into runs that every party agrees to:
//!
//! - [`Proposal`]s (keygen, signing, resharing) name the run's execution id, its parties,
//!   the key and generation, and what is to be signed; they travel on a control session
//!   and the proposer is the transport-authenticated sender.
//! - Every party, the proposer included, checks the proposal's shape and then runs the
//!   embedder's [`ProposalValidator`] before it joins. Signers sign only a digest they
//!   computed themselves from a request their validator accepted.
//! - A refusal or failure is sent as an abort to every party of the run, which all stop at
//!   once, naming who aborted ([`crate::TssError::Aborted`]).
//! - Results are committed through a [`ShareStore`] in a fixed order (see [`PoolNode`]),
//!   with the embedder's state committed atomically with the active generation.

mod node;
mod proposal;
mod store;
mod validator;

pub use node::{
    control_session_id, default_dealers, PoolConfig, PoolEvent, PoolNode, PrimeSource,
    ReshareCommit, SignOutcome, ALREADY_HOLDS_A_SHARE, DEFAULT_CERTIFICATE_RETRY_INTERVAL,
    DEFAULT_MAX_CONCURRENT_RUNS, DEFAULT_MAX_PRESIGNATURES, DEFAULT_MAX_RUNS_PER_PROPOSER,
    DEFAULT_RUN_DEADLINE, DEFAULT_SIGNER_SILENCE_TIMEOUT, DEFAULT_SIGN_ATTEMPTS,
    DEFAULT_UNRESPONSIVE_BACKOFF, EXECUTIONS_REMEMBERED,
};
pub use proposal::{
    ControlMsg, KeygenProposal, PresignProposal, Proposal, ReshareProposal, SignProposal,
};
pub use store::{MemoryShareStore, MemoryStoreError, PendingGeneration, ShareStore};
#[cfg(feature = "test-hooks")]
pub use validator::AcceptEverything;
pub use validator::{ProposalValidator, Rejection, SigningInput};
