//! [`PoolNode`]: proposes runs, follows the runs others propose, and commits their results.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use transport::{
    ConnectionState, Destination, NodeId, SessionConfig, SessionId, SessionInbox, SessionOutbox,
    Transport, TransportError,
};

use crate::cancel;
use crate::ecdsa::{KeyShare, TssNode};
use crate::error::{ProtocolKind, Result, TssError};
use crate::ethereum::{EthAddress, EthSignature};
use crate::identity::IdentitySigner;
use crate::ids::{Committee, ExecutionId, Generation, KeyId};
use crate::pool::proposal::{
    ControlMsg, KeygenProposal, PresignProposal, Proposal, ReshareProposal, SignProposal,
};
use crate::pool::store::ShareStore;
use crate::pool::validator::ProposalValidator;
use crate::pool::validator::SigningInput;
use crate::primes::{PaillierPrimes, PrimePool};
use crate::protocol::Protocol;
use crate::reshare::{PublicKeyInfo, ReshareCertificate, ReshareRole, ReshareStatement};
use crate::wire::{decode_message, encode_message};

/// Where a node's Paillier primes come from (one pair per keygen or reshare it joins as
/// a new member).
#[async_trait]
pub trait PrimeSource: Send + Sync + 'static {
    /// A fresh pair of safe primes.
    async fn take(&self) -> Result<PaillierPrimes>;
}

#[async_trait]
impl PrimeSource for PrimePool {
    async fn take(&self) -> Result<PaillierPrimes> {
        PrimePool::take(self).await
    }
}

/// How many aborts for runs this node has not seen yet it remembers.
const EARLY_ABORTS_REMEMBERED: usize = 1024;
/// How many proposals of runs this node has had (proposed, followed or refused; each
/// remembered as its sender and execution id) it remembers, in memory and in its store
/// across restarts: the same sender's proposal of one of them again is dropped without an
/// answer ([`PoolEvent::ReplayRefused`]). About 6 MiB in memory, 6 MiB in the keystore.
///
/// A window, not a history: a member that sends this many proposals pushes older ones
/// out, and a replay of an older proposal is validated again like a new one (the
/// embedder's rules, e.g. node-shell's check of the batch against the L1 record, then
/// refuse a stale request). Each of those proposals costs its sender a run slot here.
pub const EXECUTIONS_REMEMBERED: usize = 65_536;

/// The words of the refusal a member sends to a keygen proposal of a key it already
/// holds (`"<member> already holds a share of <key>"`, in [`TssError::Aborted`]'s reason
/// at the proposer): a node that holds no share learns from it that the pool already has
/// the key, and waits to be given a share instead of proposing the keygen again.
pub const ALREADY_HOLDS_A_SHARE: &str = "already holds a share of";
/// How the reason of a busy refusal starts: an abort a party at its run caps sends to the
/// proposer alone (see [`PoolConfig::max_concurrent_runs`]), which the proposer passes on.
const BUSY_REASON_PREFIX: &str = "busy:";
/// Longest abort reason kept or sent, in characters.
const MAX_REASON_CHARS: usize = 512;
/// Default of [`PoolConfig::max_concurrent_runs`].
pub const DEFAULT_MAX_CONCURRENT_RUNS: usize = 64;
/// Default of [`PoolConfig::max_runs_per_proposer`].
pub const DEFAULT_MAX_RUNS_PER_PROPOSER: usize = 8;
/// Default of [`PoolConfig::run_deadline`]: an hour, far beyond any run's work (a 7-of-10
/// reshare with all parties on 2 cores takes about 3 minutes).
pub const DEFAULT_RUN_DEADLINE: Duration = Duration::from_secs(3600);
/// How many certificates of generations this node does not hold it keeps to forward.
const CERTIFICATES_REMEMBERED: usize = 256;
/// Default of [`PoolConfig::signer_silence_timeout`].
pub const DEFAULT_SIGNER_SILENCE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default of [`PoolConfig::sign_attempts`].
pub const DEFAULT_SIGN_ATTEMPTS: usize = 3;
/// Default of [`PoolConfig::max_presignatures`].
pub const DEFAULT_MAX_PRESIGNATURES: usize = 64;
/// Default of [`PoolConfig::unresponsive_backoff`].
pub const DEFAULT_UNRESPONSIVE_BACKOFF: Duration = Duration::from_secs(60);
/// Default [`PoolConfig::certificate_retry_interval`].
pub const DEFAULT_CERTIFICATE_RETRY_INTERVAL: Duration = Duration::from_secs(30);
/// How many times a missing certificate is asked for after the first request.
const CERTIFICATE_RETRIES: u32 = 40;
/// How many times [`PoolNode::propose_reshare`] proposes in all when parties refuse a
/// generation they hold pending ([`ControlMsg::GenerationInUse`]).
const RESHARE_GENERATION_ATTEMPTS: usize = 3;
/// How far above a key's active generation a peer's [`ControlMsg::GenerationInUse`] may
/// push this node's next proposal (a larger claim is ignored as nonsense).
const MAX_GENERATION_LEAP: u64 = 1024;

/// Settings of a [`PoolNode`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PoolConfig {
    /// Every node that may propose or take part in a run (all configured peers). Every
    /// node must use the same set: it names the control session.
    pub control_participants: Vec<NodeId>,
    /// How long a protocol session may hear nothing before it fails. It counts silence:
    /// any message, heartbeats included, starts it again.
    pub session_idle_timeout: Duration,
    /// The longest a run may take however alive its parties look (heartbeats or
    /// retransmissions cannot keep a run going past it): a generous backstop, default
    /// [`DEFAULT_RUN_DEADLINE`]. A run past it fails with [`TssError::DeadlineExceeded`].
    pub run_deadline: Duration,
    /// How many runs proposed by peers this node takes part in at once (default
    /// [`DEFAULT_MAX_CONCURRENT_RUNS`]; at least 1, a 0 counts as 1). A proposal beyond
    /// that is refused at once: this node answers its proposer (only it) with
    /// [`ControlMsg::Abort`] whose reason starts with `busy:`, so the proposer's run ends
    /// with [`TssError::Aborted`] naming this node instead of waiting for it.
    pub max_concurrent_runs: usize,
    /// How many of those runs one proposer may hold at once (default
    /// [`DEFAULT_MAX_RUNS_PER_PROPOSER`]; at least 1, a 0 counts as 1); its proposals
    /// beyond that are refused the same way (`busy:`). A member that floods proposals and
    /// then stays silent (each run it starts waits for it up to the idle timeout) so
    /// takes at most this many slots, and the others' runs still find one; each refused
    /// proposal costs this node one small reply to the flooder, once per execution id.
    ///
    /// It also bounds this node's own proposals: at most this many `propose_*` calls
    /// (keygen, signing with all its attempts, presigning, resharing with its retries)
    /// are under way here at once, so each has at most one run out at a time. A further
    /// call waits first thing, holding nothing (no key's busy mark, no validation, no
    /// heartbeat), until one ends (or fails with [`TssError::Cancelled`] if the node shuts
    /// down meanwhile), so an honest proposer does not run into its peers' per-proposer
    /// caps however many requests its embedder makes at once. (A peer still finishing a
    /// run whose end this node has already seen may count it a moment longer and refuse
    /// as busy: signing then tries another set without setting that peer aside.)
    pub max_runs_per_proposer: usize,
    /// How long a signing run tolerates hearing no heartbeat ([`ControlMsg::Alive`]) from
    /// a party it watches (the proposer watches every signer, a signer watches the
    /// proposer) before it aborts the run for everyone with [`TssError::Unresponsive`].
    /// Heartbeats come from a task apart from the protocol's CPU work, so this counts
    /// silence (a dead, frozen or cut-off node), not slowness. Default
    /// [`DEFAULT_SIGNER_SILENCE_TIMEOUT`]; heartbeats go out five times as often.
    pub signer_silence_timeout: Duration,
    /// How many signer sets [`PoolNode::propose_sign`] tries, each with a fresh
    /// execution id, before it gives up (default [`DEFAULT_SIGN_ATTEMPTS`]).
    pub sign_attempts: usize,
    /// How long a member found unresponsive is put after the others when signers are
    /// picked (default [`DEFAULT_UNRESPONSIVE_BACKOFF`]).
    pub unresponsive_backoff: Duration,
    /// The most unused presignatures of one key this node holds (its own and its
    /// parts of other members'); a presign proposal beyond it is refused, so a member
    /// cannot make this node spend CPU and memory without bound. Default
    /// [`DEFAULT_MAX_PRESIGNATURES`].
    pub max_presignatures: usize,
    /// How often a node that misses the certificate of a reshare it took part in (its new
    /// share is pending, or it dealt the key away) asks its peers again, up to 40 times
    /// (default [`DEFAULT_CERTIFICATE_RETRY_INTERVAL`]); a restart asks again too.
    pub certificate_retry_interval: Duration,
    /// The threshold protocol of each key ([`PoolConfig::with_protocol`]); a key not
    /// named here is [`Protocol::Cggmp21`]'s. The node creates a key only with its
    /// protocol, refuses a keygen proposal of another, and refuses to start with a stored
    /// share of another ([`TssError::ProtocolMismatch`]).
    pub protocols: BTreeMap<KeyId, Protocol>,
}

impl PoolConfig {
    /// Settings with the transport's default idle timeout.
    pub fn new(control_participants: Vec<NodeId>) -> Self {
        Self {
            control_participants,
            session_idle_timeout: transport::DEFAULT_IDLE_TIMEOUT,
            max_concurrent_runs: DEFAULT_MAX_CONCURRENT_RUNS,
            max_runs_per_proposer: DEFAULT_MAX_RUNS_PER_PROPOSER,
            run_deadline: DEFAULT_RUN_DEADLINE,
            signer_silence_timeout: DEFAULT_SIGNER_SILENCE_TIMEOUT,
            sign_attempts: DEFAULT_SIGN_ATTEMPTS,
            unresponsive_backoff: DEFAULT_UNRESPONSIVE_BACKOFF,
            max_presignatures: DEFAULT_MAX_PRESIGNATURES,
            certificate_retry_interval: DEFAULT_CERTIFICATE_RETRY_INTERVAL,
            protocols: BTreeMap::new(),
        }
    }

    /// Sets the threshold protocol of `key_id` (see [`PoolConfig::protocols`]).
    pub fn with_protocol(mut self, key_id: KeyId, protocol: Protocol) -> Self {
        self.protocols.insert(key_id, protocol);
        self
    }

    /// The threshold protocol of `key_id`: as set, or [`Protocol::Cggmp21`].
    pub fn protocol_of(&self, key_id: &KeyId) -> Protocol {
        self.protocols.get(key_id).copied().unwrap_or_default()
    }

    /// Sets [`PoolConfig::certificate_retry_interval`] (at least 100 ms).
    pub fn with_certificate_retry_interval(mut self, interval: Duration) -> Self {
        self.certificate_retry_interval = interval.max(Duration::from_millis(100));
        self
    }

    /// Sets [`PoolConfig::max_presignatures`].
    pub fn with_max_presignatures(mut self, max: usize) -> Self {
        self.max_presignatures = max;
        self
    }

    /// Sets [`PoolConfig::signer_silence_timeout`] (at least 100 ms).
    pub fn with_signer_silence_timeout(mut self, timeout: Duration) -> Self {
        self.signer_silence_timeout = timeout.max(Duration::from_millis(100));
        self
    }

    /// Sets [`PoolConfig::sign_attempts`] (at least 1).
    pub fn with_sign_attempts(mut self, attempts: usize) -> Self {
        self.sign_attempts = attempts.max(1);
        self
    }

    /// Sets [`PoolConfig::unresponsive_backoff`].
    pub fn with_unresponsive_backoff(mut self, backoff: Duration) -> Self {
        self.unresponsive_backoff = backoff;
        self
    }

    /// How often a party of a signing run sends [`ControlMsg::Alive`]: a fifth of the
    /// silence timeout.
    pub fn heartbeat_interval(&self) -> Duration {
        self.signer_silence_timeout / 5
    }

    /// Sets the overall deadline of every run (see [`PoolConfig::run_deadline`]).
    pub fn with_run_deadline(mut self, deadline: Duration) -> Self {
        self.run_deadline = deadline;
        self
    }

    /// Sets how many runs proposed by peers this node takes part in at once.
    pub fn with_max_concurrent_runs(mut self, runs: usize) -> Self {
        self.max_concurrent_runs = runs.max(1);
        self
    }

    /// Sets [`PoolConfig::max_runs_per_proposer`] (at least 1).
    pub fn with_max_runs_per_proposer(mut self, runs: usize) -> Self {
        self.max_runs_per_proposer = runs.max(1);
        self
    }

    /// Sets the session idle timeout.
    pub fn with_session_idle_timeout(mut self, timeout: Duration) -> Self {
        self.session_idle_timeout = timeout;
        self
    }
}

/// Id of the control session among `participants` (order does not matter).
pub fn control_session_id(participants: &[NodeId]) -> SessionId {
    let sorted: BTreeSet<&NodeId> = participants.iter().collect();
    let mut h = Sha256::new();
    h.update(b"tss-core/pool/control/v1");
    for p in sorted {
        h.update(p.as_bytes());
    }
    SessionId::from_bytes(h.finalize().into())
}

/// What happened, for the embedder's logs, metrics and state.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum PoolEvent {
    /// This node joined a run (as proposer or follower) after validating it.
    RunStarted {
        /// The run.
        eid: ExecutionId,
        /// Which protocol.
        protocol: ProtocolKind,
        /// Who proposed it.
        proposer: NodeId,
    },
    /// A run this node took part in ended.
    RunFinished {
        /// The run.
        eid: ExecutionId,
        /// Which protocol.
        protocol: ProtocolKind,
        /// Who proposed it.
        proposer: NodeId,
        /// `None` on success, else the error's text.
        error: Option<String>,
        /// The party whose abort ended the run, if one did.
        aborted_by: Option<NodeId>,
        /// The parties this node's own run of the protocol proved to have sent invalid
        /// messages: the culprits of its error ([`TssError::ProtocolAborted`], e.g. a
        /// bad ZK proof in a cggmp21 run, or [`TssError::Misbehaviour`]), kept even when
        /// another party's abort ended the run first (then `error` is that abort); empty
        /// otherwise (also when this node's run was cancelled before it found them).
        culprits: Vec<NodeId>,
        /// How long it took.
        elapsed: Duration,
    },
    /// A proposal of a run this node already had from the same sender (proposed,
    /// followed or refused; also before a restart: they are kept in the store, see
    /// [`EXECUTIONS_REMEMBERED`]) was dropped without an answer.
    ReplayRefused {
        /// The run.
        eid: ExecutionId,
        /// Who sent the proposal again (authenticated by the transport).
        proposer: NodeId,
    },
    /// This node refused a proposal (it sent an abort to every party).
    Refused {
        /// The run.
        eid: ExecutionId,
        /// Who proposed it.
        proposer: NodeId,
        /// Why.
        reason: String,
    },
    /// A key generation became active here, committed with `state`. The key is no
    /// longer busy on this node: a reshare proposed on hearing this is not refused as
    /// [`TssError::Busy`].
    KeyCommitted {
        /// The key.
        key_id: KeyId,
        /// The now active generation.
        generation: Generation,
        /// The embedder's state committed with it.
        state: Vec<u8>,
    },
    /// A party sent something wrong during a reshare's confirmation phase (a confirmation
    /// that does not verify, junk, an unexpected message). It was ignored; this names it.
    Misbehaved {
        /// The run.
        eid: ExecutionId,
        /// The sender (authenticated by the transport).
        party: NodeId,
        /// What it sent.
        reason: String,
    },
    /// A reshare aborted here on complaints (round 2), each judged by this node on its
    /// evidence (see [`crate::reshare`]'s complaint rule): `culprits` are the parties the
    /// evidence convicts (possibly none: an unresolved complaint names no culprit), and
    /// `verdicts` keep the evidence for an operator
    /// ([`crate::reshare::ComplaintVerdict::rejudge`] re-checks one). The run's
    /// [`PoolEvent::RunFinished`] follows with the error.
    ReshareComplaints {
        /// The run.
        eid: ExecutionId,
        /// The convicted parties.
        culprits: Vec<NodeId>,
        /// Every judged complaint, with its evidence.
        verdicts: Vec<crate::reshare::ComplaintVerdict>,
    },
    /// This node asked its peers for the certificate of a pending generation (after a
    /// reshare that ended here without one, or at start), or asked again (every
    /// [`PoolConfig::certificate_retry_interval`] while it is still missing).
    CertificateRequested {
        /// The key.
        key_id: KeyId,
        /// The pending generation.
        generation: Generation,
    },
    /// A signing run proposed here was abandoned because of `member` (silent, cut off,
    /// or it refused or failed the run); [`PoolNode::propose_sign`] tries another set.
    SignerSkipped {
        /// The abandoned run.
        eid: ExecutionId,
        /// The member set aside.
        member: NodeId,
        /// Why.
        reason: String,
    },
    /// A run of `key_id` at this node failed a check that requires never running the
    /// key with `member` again ([`TssError::MustExclude`]: a failed DKLs23
    /// oblivious-transfer check). From now on this node leaves `member` out of the
    /// signers it picks for the key and refuses every sign or presign proposal of the
    /// key that `member` proposes or signs in. The ban is stored with the generation
    /// ([`ShareStore::save_bans`]), so it outlives a restart. It ends with that
    /// generation: a reshare gives every pair of members a fresh pairwise setup, which
    /// is what the failed check puts at risk. Removing `member` from the pool is an L1
    /// decision.
    MemberBanned {
        /// The key.
        key_id: KeyId,
        /// The generation the member is banned from.
        generation: Generation,
        /// The banned member.
        member: NodeId,
        /// The failed check.
        reason: String,
    },
    /// This node left a key's committee and deleted its share.
    KeyLeft {
        /// The key.
        key_id: KeyId,
        /// The embedder's state committed with the deletion.
        state: Vec<u8>,
    },
}

/// A signature and who made it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SignOutcome {
    /// The run.
    pub eid: ExecutionId,
    /// `(r, s, v)`; checked to recover to `address`.
    pub signature: EthSignature,
    /// The digest that was signed (computed by every signer itself).
    pub digest: [u8; 32],
    /// The signers, in protocol order.
    pub signers: Vec<NodeId>,
    /// The key's Ethereum address.
    pub address: EthAddress,
    /// The key generation used.
    pub generation: Generation,
    /// Members left out of this request: first those of earlier attempts that were set
    /// aside (silent, cut off, refusing or failing), in the order they were found, then
    /// those passed over because the transport reported them down or they were found
    /// unresponsive recently. Empty for an explicit signer set.
    pub skipped: Vec<NodeId>,
    /// How many signer sets were tried (1 if the first one signed).
    pub attempts: usize,
    /// The presignature used (one-round signing), or `None` (full interactive signing).
    pub presignature: Option<ExecutionId>,
}

/// A presignature this node proposed and holds its part of, ready for one signing run.
#[derive(Clone, Debug)]
struct ReadyPresignature {
    id: ExecutionId,
    generation: Generation,
    signers: Vec<NodeId>,
}

/// The result of a reshare at one party, after its commit.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ReshareCommit {
    /// The run.
    pub eid: ExecutionId,
    /// The key.
    pub key_id: KeyId,
    /// The key's address (unchanged by resharing).
    pub address: EthAddress,
    /// This node's new active generation; `None` if it left the committee.
    pub new_generation: Option<Generation>,
    /// The committee now holding the key.
    pub new_committee: Committee,
    /// New members that confirmed they stored their share (all of them).
    pub confirmed_by: Vec<NodeId>,
    /// Their signed confirmations: the proof that the new generation is complete.
    pub certificate: ReshareCertificate,
}

struct Run {
    /// The key and the kind of run (bans abort a banned member's sign and presign runs).
    key_id: KeyId,
    kind: ProtocolKind,
    participants: Vec<NodeId>,
    token: CancellationToken,
    aborted_by: Option<AbortNote>,
    /// When each party was last heard from on the control session ([`ControlMsg::Alive`]).
    heard: HashMap<NodeId, Instant>,
}

#[derive(Default)]
struct SeenProposals {
    eids: HashSet<ExecutionId>,
    order: VecDeque<ExecutionId>,
}

impl SeenProposals {
    /// Records `eid`; false if it was already recorded.
    fn insert(&mut self, eid: ExecutionId) -> bool {
        if !self.eids.insert(eid) {
            return false;
        }
        self.order.push_back(eid);
        while self.order.len() > EXECUTIONS_REMEMBERED {
            if let Some(old) = self.order.pop_front() {
                self.eids.remove(&old);
            }
        }
        true
    }
}

/// An abort a party sent: who (authenticated by the transport), why, and whom its own
/// checks convicted (its claim).
#[derive(Clone, Debug)]
struct AbortNote {
    by: NodeId,
    reason: String,
    blamed: Vec<NodeId>,
}

impl AbortNote {
    fn error(self, eid: ExecutionId) -> TssError {
        TssError::Aborted {
            eid,
            by: self.by,
            reason: self.reason,
            blamed: self.blamed,
        }
    }
}

#[derive(Default)]
struct EarlyAborts {
    by_eid: HashMap<ExecutionId, Vec<AbortNote>>,
    order: VecDeque<ExecutionId>,
}

struct Inner {
    me: NodeId,
    control_participants: Vec<NodeId>,
    tss: TssNode,
    control: SessionOutbox,
    validator: Arc<dyn ProposalValidator>,
    store: Arc<dyn ShareStore>,
    primes: Arc<dyn PrimeSource>,
    /// See [`PoolConfig::protocols`].
    protocols: BTreeMap<KeyId, Protocol>,
    /// Per key generation, the members this node never runs it with again
    /// ([`PoolEvent::MemberBanned`]); stored with the generation.
    bans: Mutex<HashMap<(KeyId, Generation), BTreeSet<NodeId>>>,
    /// Held while a ban is added and stored, so that concurrent bans reach the store in
    /// order (each stores the whole set) and none is lost.
    ban_store: tokio::sync::Mutex<()>,
    shares: Mutex<HashMap<KeyId, Arc<KeyShare>>>,
    busy: Mutex<HashSet<KeyId>>,
    /// Notified whenever a key stops being busy.
    busy_freed: tokio::sync::Notify,
    runs: Mutex<HashMap<ExecutionId, Run>>,
    early_aborts: Mutex<EarlyAborts>,
    seen: Mutex<SeenProposals>,
    /// Execution ids newly seen, for the task that records them in the store.
    seen_to_record: tokio::sync::mpsc::UnboundedSender<ExecutionId>,
    follow_slots: Arc<tokio::sync::Semaphore>,
    /// Runs each proposer holds here now (see [`PoolConfig::max_runs_per_proposer`]).
    follows_by_proposer: Arc<Mutex<HashMap<NodeId, usize>>>,
    max_runs_per_proposer: usize,
    /// Runs proposed here that may be under way at once (see
    /// [`PoolConfig::max_runs_per_proposer`]).
    own_runs: Arc<tokio::sync::Semaphore>,
    certificates: Mutex<VecDeque<ReshareCertificate>>,
    /// Keys this node dealt away in a reshare that ended here without a certificate: the
    /// run's own statement (only a certificate of exactly it retires the share) and the
    /// state to commit with the deletion. In memory only.
    leaving: Mutex<HashMap<KeyId, (ReshareStatement, Vec<u8>)>>,
    /// Per key, the highest generation a party of a reshare run proposed here said it
    /// holds pending ([`ControlMsg::GenerationInUse`]): the next proposal goes above it.
    /// In memory only (after a restart, one refused attempt teaches it again).
    generations_in_use: Mutex<HashMap<KeyId, Generation>>,
    run_deadline: Duration,
    signer_silence: Duration,
    heartbeat_interval: Duration,
    sign_attempts: usize,
    unresponsive_backoff: Duration,
    certificate_retry: Duration,
    /// Members found unresponsive by signing runs proposed here, and when.
    unresponsive: Mutex<HashMap<NodeId, Instant>>,
    /// Presignatures this node proposed, per key, oldest first; one is taken out (so no
    /// concurrent request can name it too) when a signing run is proposed with it.
    presignatures: Mutex<HashMap<KeyId, VecDeque<ReadyPresignature>>>,
    /// Presign runs proposed here that are waiting for every signer's
    /// [`ControlMsg::PresignatureStored`]: who has said so.
    presign_acks: Mutex<HashMap<ExecutionId, HashSet<NodeId>>>,
    presign_acked: tokio::sync::Notify,
    max_presignatures: usize,
    events: broadcast::Sender<PoolEvent>,
    shutdown: CancellationToken,
    /// Every task this node spawns (control loop, followed runs, watchdogs, heartbeats,
    /// certificate requests and adoptions), so [`PoolNode::stopped`] can wait for them.
    tasks: tokio_util::task::TaskTracker,
}

/// One node of a signing pool: the library's coordination layer.
///
/// It proposes keygen, signing and resharing runs, follows the runs other members
/// propose after its [`ProposalValidator`] accepted them, and commits results through
/// its [`ShareStore`] in a fixed order. Cheap to clone.
///
/// **Proposals.** The proposer picks a fresh [`ExecutionId`] and sends a [`Proposal`]
/// directly to every other party on the control session; the proposer is the
/// transport-authenticated sender, never a payload field. Every party, the proposer
/// included, checks the proposal's shape and runs the validator before it joins.
///
/// **Aborts.** A party that refuses a proposal, or whose run fails, sends
/// [`ControlMsg::Abort`] to every party of the run; each of them stops its run at once
/// with [`TssError::Aborted`] naming that party. Aborts are accepted only from parties of
/// the run. A party at its run caps ([`PoolConfig::max_concurrent_runs`],
/// [`PoolConfig::max_runs_per_proposer`]) answers only the proposer, with a reason
/// starting `busy:`; the proposer's run ends naming that party, and the proposer passes
/// the abort on to the other parties.
///
/// **Commit order of a reshare**, at every party: (1) each new member *stages* its new
/// share (durable, pending, with the state to commit) and only then signs its
/// confirmation; (2) a party that holds a valid [`ReshareCertificate`] (every new
/// member's signed confirmation) *activates* the new generation together with the
/// embedder's state and the certificate, in one atomic step; (3) then *retires* its old
/// generation; (4) then drops the presignatures of older generations. A member that
/// leaves deletes its share (with the state) only with the certificate. Without one
/// nothing is activated or retired, and the old generation stays active
/// ([`TssError::ReshareNotConfirmed`]); a staged share stays pending, and the node asks
/// its peers for the certificate ([`ControlMsg::CertificateRequest`], also at every
/// start) and activates the generation when a valid one arrives. So all members end on
/// the same generation: whoever activated holds the certificate and hands it on.
///
/// **Restarts.** A node killed at any step restarts on what its store holds: the old
/// generation, or the new one if it was activated (with its certificate); a pending one
/// only becomes active with a certificate (its own stored one, or a peer's). At start it
/// retires generations older than a certified active one, which a kill between steps (2)
/// and (3) leaves (`tests/restarts.rs`). The execution ids of its last
/// [`EXECUTIONS_REMEMBERED`] runs are recorded in the store
/// ([`ShareStore::record_executions`]) and read back at start: a proposal replayed after
/// a restart is dropped like one replayed before ([`PoolEvent::ReplayRefused`]).
///
/// **Confirmation phase.** Junk, changed or unverifiable frames are ignored and reported
/// as [`PoolEvent::Misbehaved`] naming the sender. Every run also has an overall
/// deadline ([`PoolConfig::run_deadline`]).
#[derive(Clone)]
pub struct PoolNode {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PoolNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolNode")
            .field("node", &self.inner.me)
            .finish_non_exhaustive()
    }
}

/// Burns a presignature (if any) when dropped: a sign run that named it, however it
/// ended, leaves it unusable at this node.
struct BurnPresignature<'a> {
    tss: &'a TssNode,
    id: Option<ExecutionId>,
}

impl Drop for BurnPresignature<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.tss.burn_presignature(&id);
        }
    }
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct BusyGuard<'a> {
    inner: &'a Inner,
    key_id: KeyId,
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.inner.busy.lock().remove(&self.key_id);
        self.inner.busy_freed.notify_waiters();
    }
}

impl PoolNode {
    /// Starts a pool node on `transport`: loads the active shares of `keys` from `store`,
    /// opens the control session among `config.control_participants` and spawns the task
    /// that follows proposals (it stops when [`PoolNode::shutdown`] is called).
    ///
    /// `identity` is the key of this node's transport identity (its node id must be the
    /// transport's): it signs this node's reshare confirmations. A pending generation of
    /// one of `keys` (staged by a reshare that ended here without a certificate) is
    /// activated if its certificate was stored, else the certificate is asked of every
    /// peer, and the generation activated when a valid one arrives.
    pub async fn start(
        config: PoolConfig,
        transport: Arc<dyn Transport>,
        identity: Arc<dyn IdentitySigner>,
        validator: Arc<dyn ProposalValidator>,
        store: Arc<dyn ShareStore>,
        primes: Arc<dyn PrimeSource>,
        keys: &[KeyId],
    ) -> Result<PoolNode> {
        let me = transport.local_node();
        let mut shares = HashMap::new();
        let mut bans = HashMap::new();
        for key_id in keys {
            if let Some(share) = store.load_active(key_id).await.map_err(TssError::Store)? {
                if share.local_node() != me || share.key_id() != key_id {
                    return Err(TssError::InvalidKeyShare(format!(
                        "the stored share of {key_id} belongs to another node or key"
                    )));
                }
                let expected = config.protocol_of(key_id);
                if share.protocol() != expected {
                    tracing::error!(%key_id, stored = %share.protocol(), configured = %expected, "the stored share is of another protocol than configured");
                    return Err(TssError::ProtocolMismatch {
                        expected,
                        found: share.protocol().name().into(),
                    });
                }
                // A store that cannot read the bans back must not start the node: it
                // would run the generation with members it banned.
                let banned = store
                    .load_bans(key_id, share.generation())
                    .await
                    .map_err(TssError::Store)?;
                if !banned.is_empty() {
                    tracing::warn!(%key_id, generation = %share.generation(), members = ?banned, "members banned from this generation stay banned");
                    bans.insert((key_id.clone(), share.generation()), banned);
                }
                shares.insert(key_id.clone(), Arc::new(share));
            }
        }
        // Runs this node had before a restart are refused like those of this life. A store
        // that cannot read them back costs the replay window, not the node.
        let mut seen = SeenProposals::default();
        match store.load_executions().await {
            Ok(recorded) => {
                for id in recorded {
                    seen.insert(id);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "the execution ids of earlier runs cannot be read: replays of them are validated again")
            }
        }
        let (seen_to_record, unrecorded) = tokio::sync::mpsc::unbounded_channel();
        let mut participants: BTreeSet<NodeId> =
            config.control_participants.iter().copied().collect();
        participants.insert(me);
        let participants: Vec<NodeId> = participants.into_iter().collect();
        let channel = transport.open_session(
            control_session_id(&participants),
            SessionConfig::new(participants.clone())
                .with_idle_timeout(Duration::from_secs(24 * 3600)),
        )?;
        let (inbox, control) = channel.split();
        let tss = TssNode::new(transport)
            .with_identity(identity)?
            .with_idle_timeout(config.session_idle_timeout);
        let (events, _) = broadcast::channel(256);
        // The fields are public: a 0 would refuse every proposal (or block every one of
        // this node's), so at least 1 as the builder methods ensure.
        let max_concurrent_runs = config.max_concurrent_runs.max(1);
        let max_runs_per_proposer = config.max_runs_per_proposer.max(1);
        let node = PoolNode {
            inner: Arc::new(Inner {
                me,
                control_participants: participants.clone(),
                tss,
                control,
                validator,
                store,
                primes,
                protocols: config.protocols.clone(),
                bans: Mutex::new(bans),
                ban_store: tokio::sync::Mutex::const_new(()),
                shares: Mutex::new(shares),
                busy: Mutex::default(),
                busy_freed: tokio::sync::Notify::new(),
                runs: Mutex::default(),
                early_aborts: Mutex::default(),
                seen: Mutex::new(seen),
                seen_to_record,
                follow_slots: Arc::new(tokio::sync::Semaphore::new(max_concurrent_runs)),
                follows_by_proposer: Arc::default(),
                max_runs_per_proposer,
                own_runs: Arc::new(tokio::sync::Semaphore::new(max_runs_per_proposer)),
                certificates: Mutex::default(),
                leaving: Mutex::default(),
                generations_in_use: Mutex::default(),
                run_deadline: config.run_deadline,
                signer_silence: config.signer_silence_timeout,
                heartbeat_interval: config.heartbeat_interval(),
                sign_attempts: config.sign_attempts,
                unresponsive_backoff: config.unresponsive_backoff,
                certificate_retry: config.certificate_retry_interval,
                unresponsive: Mutex::default(),
                presignatures: Mutex::default(),
                presign_acks: Mutex::default(),
                presign_acked: tokio::sync::Notify::new(),
                max_presignatures: config.max_presignatures,
                events,
                shutdown: CancellationToken::new(),
                tasks: tokio_util::task::TaskTracker::new(),
            }),
        };
        node.inner.tasks.spawn(control_loop(node.clone(), inbox));
        node.inner.tasks.spawn(record_executions(
            node.inner.store.clone(),
            unrecorded,
            node.inner.shutdown.clone(),
        ));
        let resumed = async {
            for key_id in keys {
                node.retire_leftovers(key_id).await;
                let pending = node
                    .inner
                    .store
                    .load_pending(key_id)
                    .await
                    .map_err(TssError::Store)?;
                for p in pending {
                    let expected = node.protocol_of(key_id);
                    if p.share.protocol() != expected {
                        tracing::error!(%key_id, stored = %p.share.protocol(), configured = %expected, "a pending share is of another protocol than configured");
                        return Err(TssError::ProtocolMismatch {
                            expected,
                            found: p.share.protocol().name().into(),
                        });
                    }
                    if let Some(certificate) = p.certificate {
                        Box::pin(node.adopt_certificate(certificate)).await?;
                    } else {
                        node.request_certificate(key_id, p.share.generation(), None);
                    }
                }
            }
            Ok::<(), TssError>(())
        };
        if let Err(e) = resumed.await {
            // The tasks started above end with the node: a failed start leaves nothing
            // running (and the store and control session free for another try).
            node.shutdown();
            return Err(e);
        }
        Ok(node)
    }

    /// Step 4 of the commit order, redone at start: retires the generations of `key_id`
    /// older than its active one that a crash (or a failed delete) between activation and
    /// retirement left in the store. The active generation's certificate is the proof that
    /// every new member stored its share; one without a certificate (keygen, generation
    /// 0) has no older generation to retire. Generations above the active one are pending
    /// and are kept (their certificate may yet come). A store error is logged, never fatal
    /// (as when retiring after a commit): the active generation is what the node serves.
    async fn retire_leftovers(&self, key_id: &KeyId) {
        let Some(active) = self.share(key_id).map(|s| s.generation()) else {
            return;
        };
        let store = &self.inner.store;
        let older: Vec<Generation> = match store.stored_generations(key_id).await {
            Ok(stored) => stored.into_iter().filter(|g| *g < active).collect(),
            Err(e) => {
                tracing::warn!(%key_id, error = %e, "cannot list the stored generations");
                return;
            }
        };
        if older.is_empty() {
            return;
        }
        match store.load_certificate(key_id, active).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                tracing::warn!(%key_id, %active, "older generations are kept: the active one has no certificate");
                return;
            }
            Err(e) => {
                tracing::warn!(%key_id, %active, error = %e, "older generations are kept: the active one's certificate cannot be read");
                return;
            }
        }
        for old in older {
            match store.retire(key_id, old).await {
                Ok(()) => {
                    tracing::info!(%key_id, generation = %old, "an older generation left by a crash is retired")
                }
                Err(e) => {
                    tracing::warn!(%key_id, generation = %old, error = %e, "could not retire an older generation")
                }
            }
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.me
    }

    /// The members this node never runs the active generation of `key_id` with again
    /// ([`PoolEvent::MemberBanned`]).
    pub fn banned(&self, key_id: &KeyId) -> BTreeSet<NodeId> {
        let Some(active) = self.share(key_id).map(|s| s.generation()) else {
            return BTreeSet::new();
        };
        self.inner
            .bans
            .lock()
            .get(&(key_id.clone(), active))
            .cloned()
            .unwrap_or_default()
    }

    /// Bans the culprit of `error` from the generation of `share` if the error requires
    /// it: aborts this node's other sign and presign runs of the key with the culprit
    /// (a run already under way would otherwise go on using the pairwise setup the check
    /// put at risk), and stores the ban with that generation. Bans are kept per
    /// generation, so a late failure in a run of an older generation never touches the
    /// bans of the active one. A store error is logged, and the store is tried again at
    /// the next ban of the key: until then the ban holds in memory only. `run` is the run
    /// that failed (it ends with `error` itself).
    async fn ban_if_required(&self, share: &KeyShare, run: ExecutionId, error: &TssError) {
        let TssError::MustExclude {
            culprit, reason, ..
        } = error
        else {
            return;
        };
        if *culprit == self.inner.me {
            return;
        }
        let (key_id, generation) = (share.key_id(), share.generation());
        let _in_order = self.inner.ban_store.lock().await;
        let (new, members) = {
            let mut bans = self.inner.bans.lock();
            let set = bans.entry((key_id.clone(), generation)).or_default();
            (set.insert(*culprit), set.clone())
        };
        if new {
            tracing::error!(%key_id, %generation, member = %culprit, %reason, "member banned from this generation of the key: it failed an oblivious-transfer check; remove it from the pool on L1");
            let with_culprit: Vec<ExecutionId> = self
                .inner
                .runs
                .lock()
                .iter()
                .filter(|(eid, r)| {
                    **eid != run
                        && r.key_id == *key_id
                        && matches!(r.kind, ProtocolKind::Sign | ProtocolKind::Presign)
                        && r.participants.contains(culprit)
                })
                .map(|(eid, _)| *eid)
                .collect();
            for eid in with_culprit {
                self.abort(eid, &format!("{culprit} is banned from {key_id}"));
            }
        }
        // Stored again also when the member was banned already: an earlier store error
        // is retried.
        if let Err(e) = self
            .inner
            .store
            .save_bans(key_id, generation, &members)
            .await
        {
            tracing::error!(%key_id, %generation, error = %e, "the ban cannot be stored: it holds in memory only until it is stored or this node stops");
        }
        if new {
            self.emit(PoolEvent::MemberBanned {
                key_id: key_id.clone(),
                generation,
                member: *culprit,
                reason: reason.clone(),
            });
        }
    }

    /// The threshold protocol this node keeps `key_id` in ([`PoolConfig::protocols`]).
    pub fn protocol_of(&self, key_id: &KeyId) -> Protocol {
        self.inner
            .protocols
            .get(key_id)
            .copied()
            .unwrap_or_default()
    }

    /// The protocol layer underneath (presignatures, direct protocol calls).
    pub fn tss(&self) -> &TssNode {
        &self.inner.tss
    }

    /// The share store.
    pub fn store(&self) -> &Arc<dyn ShareStore> {
        &self.inner.store
    }

    /// This node's active share of `key_id`.
    pub fn share(&self, key_id: &KeyId) -> Option<Arc<KeyShare>> {
        self.inner.shares.lock().get(key_id).cloned()
    }

    /// Events from now on (runs, refusals, commits).
    pub fn subscribe(&self) -> broadcast::Receiver<PoolEvent> {
        self.inner.events.subscribe()
    }

    /// Stops following proposals and cancels every running run (a run stops at its next
    /// await point; [`PoolNode::stopped`] waits for that). No run starts afterwards.
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
        for run in self.inner.runs.lock().values() {
            run.token.cancel();
        }
    }

    /// Shuts the node down (as [`PoolNode::shutdown`]) and waits until every task it
    /// spawned has ended: a protocol step still computing when the node was shut down
    /// finishes first. An embedder awaits this before it drops its tokio runtime, so
    /// no run is left polling timers of a runtime that is going away. Runs this node
    /// proposed are the caller's own futures: drop or await them as well.
    pub async fn stopped(&self) {
        self.shutdown();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    /// Records that `proposer` proposed run `eid` (in memory now, in the store soon
    /// after); false if it did before, also in an earlier life of this node.
    fn first_sighting(&self, proposer: NodeId, eid: ExecutionId) -> bool {
        let sighting = sighting(proposer, eid);
        let new = self.inner.seen.lock().insert(sighting);
        if new {
            // Fails only once the recording task has ended, at shutdown.
            let _ = self.inner.seen_to_record.send(sighting);
        }
        new
    }

    fn emit(&self, event: PoolEvent) {
        let _ = self.inner.events.send(event);
    }

    fn send_control(&self, to: NodeId, msg: &ControlMsg) {
        let sent = encode_message(msg)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                self.inner
                    .control
                    .send(Destination::Direct(to), bytes)
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = sent {
            tracing::debug!(%to, error = %e, "control message not sent");
        }
    }

    /// Tells every other party of run `eid` that this node abandons it, and whom its own
    /// checks convicted in it (`blamed`, empty if nobody).
    fn abort_to(&self, eid: ExecutionId, participants: &[NodeId], reason: &str, blamed: &[NodeId]) {
        let msg = ControlMsg::Abort {
            eid,
            reason: reason.chars().take(MAX_REASON_CHARS).collect(),
            blamed: blamed.to_vec(),
        };
        let recipients: BTreeSet<&NodeId> = participants.iter().collect();
        for p in recipients.into_iter().filter(|p| **p != self.inner.me) {
            self.send_control(*p, &msg);
        }
    }

    /// Abandons run `eid` (if this node takes part in it): every party is told and stops.
    pub fn abort(&self, eid: ExecutionId, reason: &str) {
        let participants = {
            let mut runs = self.inner.runs.lock();
            match runs.get_mut(&eid) {
                Some(run) => {
                    run.aborted_by.get_or_insert(AbortNote {
                        by: self.inner.me,
                        reason: reason.to_string(),
                        blamed: Vec::new(),
                    });
                    run.token.cancel();
                    run.participants.clone()
                }
                None => return,
            }
        };
        self.abort_to(eid, &participants, reason, &[]);
    }

    fn busy(&self, key_id: &KeyId) -> Result<BusyGuard<'_>> {
        if !self.inner.busy.lock().insert(key_id.clone()) {
            return Err(TssError::Busy(key_id.clone()));
        }
        Ok(BusyGuard {
            inner: &self.inner,
            key_id: key_id.clone(),
        })
    }

    /// [`PoolNode::busy`] for a follower: a run of the key that is ending here (say, the
    /// refused previous attempt of the same proposer, still being checked when the
    /// proposer already moved on) is waited for, up to the session idle timeout (the
    /// proposer waits that long for this node anyway).
    async fn busy_as_follower(&self, key_id: &KeyId) -> Result<BusyGuard<'_>> {
        let deadline = tokio::time::Instant::now() + self.inner.tss.idle_timeout();
        loop {
            let freed = self.inner.busy_freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match self.busy(key_id) {
                Ok(guard) => return Ok(guard),
                Err(e) => {
                    if tokio::time::timeout_at(deadline, freed).await.is_err() {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// Runs `fut` as this node's part of `proposal`: abortable by any party, announced
    /// to the others first when `propose` is set, and reported to every party as an
    /// abort when it fails here. The parties in `watched` must show signs of life
    /// ([`ControlMsg::Alive`]) or the run ends with [`TssError::Unresponsive`].
    async fn execute<T>(
        &self,
        proposal: &Proposal,
        proposer: NodeId,
        propose: bool,
        watched: &[NodeId],
        fut: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let eid = proposal.eid();
        let participants = proposal.participants();
        let protocol = match proposal {
            Proposal::Keygen(_) => ProtocolKind::Keygen,
            Proposal::Sign(_) => ProtocolKind::Sign,
            Proposal::Reshare(_) => ProtocolKind::Reshare,
            Proposal::Presign(_) => ProtocolKind::Presign,
        };
        // A peer replaying this proposal to this node later gets no answer.
        self.first_sighting(proposer, eid);
        let token = CancellationToken::new();
        let started = Instant::now();
        let early = {
            // Lock order everywhere: runs, then early_aborts.
            let mut runs = self.inner.runs.lock();
            // Checked under the lock `shutdown` takes after cancelling: a run registered
            // here is either refused now or cancelled by it.
            if self.inner.shutdown.is_cancelled() {
                return Err(TssError::Aborted {
                    eid,
                    by: self.inner.me,
                    reason: "this node shut down".into(),
                    blamed: Vec::new(),
                });
            }
            if runs.contains_key(&eid) {
                return Err(TssError::InvalidProposal {
                    from: proposer,
                    reason: format!("run {eid} is already running here"),
                });
            }
            runs.insert(
                eid,
                Run {
                    key_id: proposal.key_id().clone(),
                    kind: protocol,
                    participants: participants.clone(),
                    token: token.clone(),
                    aborted_by: None,
                    heard: participants.iter().map(|p| (*p, started)).collect(),
                },
            );
            // An abort that arrived before the proposal.
            let early = self.inner.early_aborts.lock().by_eid.remove(&eid);
            let found = early
                .into_iter()
                .flatten()
                .find(|note| participants.contains(&note.by));
            if found.is_some() {
                runs.remove(&eid);
            }
            found
        };
        if let Some(note) = early {
            let by = note.by;
            let error = note.error(eid);
            self.emit(PoolEvent::RunFinished {
                eid,
                protocol,
                proposer,
                error: Some(error.to_string()),
                aborted_by: Some(by),
                culprits: Vec::new(),
                elapsed: started.elapsed(),
            });
            return Err(error);
        }
        if propose {
            let msg = ControlMsg::Propose(proposal.clone());
            for p in participants.iter().filter(|p| **p != self.inner.me) {
                self.send_control(*p, &msg);
            }
        }
        self.emit(PoolEvent::RunStarted {
            eid,
            protocol,
            proposer,
        });
        // The deadline is a backstop: idle timeouts count silence, and a party that keeps
        // sending (heartbeats, retransmissions) could otherwise keep the run going
        // forever. It cancels the run through its token (a protocol blocked in its CPU
        // work sees only that), like an abort.
        let deadline = self.inner.run_deadline;
        let deadline_hit = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let timer = {
            let (token, hit) = (token.clone(), deadline_hit.clone());
            self.inner.tasks.spawn(async move {
                tokio::time::sleep(deadline).await;
                hit.store(true, std::sync::atomic::Ordering::SeqCst);
                token.cancel();
            })
        };
        let silent_found: Arc<Mutex<Option<Vec<NodeId>>>> = Arc::default();
        let watchdog = (!watched.is_empty()).then(|| {
            let (node, token, found) = (self.clone(), token.clone(), silent_found.clone());
            let watched = watched.to_vec();
            self.inner
                .tasks
                .spawn(async move { node.watch_run(eid, watched, token, found).await })
        });
        // Boxed: protocol futures are large, and several nest here.
        let out = cancel::scoped(token, Box::pin(fut)).await;
        timer.abort();
        if let Some(watchdog) = watchdog {
            watchdog.abort();
        }
        let past_deadline = deadline_hit.load(std::sync::atomic::Ordering::SeqCst);
        let silent = silent_found.lock().take();
        let run = self.inner.runs.lock().remove(&eid);
        let aborted = run.and_then(|r| r.aborted_by);
        // Kept even when another party's abort ended the run first: what this node proved
        // itself still stands.
        let culprits = match &out {
            Some(Err(
                TssError::ProtocolAborted { culprits, .. }
                | TssError::Misbehaviour { culprits, .. },
            )) => culprits.clone(),
            _ => Vec::new(),
        };
        let result = match (out, aborted) {
            (Some(Ok(v)), _) => Ok(v),
            // Cancelled (possibly finishing with `Cancelled` from inside the protocol).
            (Some(Err(_)) | None, Some(note)) => {
                // The proposer passes on a busy refusal of its run: the party told only
                // it (every other abort goes to every party from its sender).
                let by = note.by;
                if propose && by != self.inner.me && note.reason.starts_with(BUSY_REASON_PREFIX) {
                    let others: Vec<NodeId> =
                        participants.iter().filter(|p| **p != by).copied().collect();
                    let reason = format!("{by} aborted the run: {}", note.reason);
                    self.abort_to(eid, &others, &reason, &[]);
                }
                Err(note.error(eid))
            }
            (Some(Err(_)) | None, None) if silent.is_some() => {
                let e = TssError::Unresponsive {
                    eid,
                    silent: silent.unwrap_or_default(),
                    after: self.inner.signer_silence,
                };
                self.abort_to(eid, &participants, &e.to_string(), &[]);
                Err(e)
            }
            (Some(Err(_)) | None, None) if past_deadline => {
                let e = TssError::DeadlineExceeded {
                    eid,
                    after: deadline,
                };
                self.abort_to(eid, &participants, &e.to_string(), &[]);
                Err(e)
            }
            (Some(Err(e)), None) => {
                // The parties this node's own checks convicted go with the abort, so a
                // proposer that did not see their messages learns of the dispute.
                self.abort_to(eid, &participants, &e.to_string(), &culprits);
                Err(e)
            }
            (None, None) => Err(TssError::Aborted {
                eid,
                by: self.inner.me,
                reason: "this node shut down".into(),
                blamed: Vec::new(),
            }),
        };
        self.emit(PoolEvent::RunFinished {
            eid,
            protocol,
            proposer,
            error: result.as_ref().err().map(|e| e.to_string()),
            aborted_by: match &result {
                Err(TssError::Aborted { by, .. }) => Some(*by),
                _ => None,
            },
            culprits,
            elapsed: started.elapsed(),
        });
        result
    }

    /// A slot for one `propose_*` call: waits while [`PoolConfig::max_runs_per_proposer`]
    /// calls are under way here; fails with [`TssError::Cancelled`] if the node shuts
    /// down meanwhile. Taken first thing, before any key's busy mark, validation or
    /// heartbeat, so a waiting call holds nothing and tells no one.
    async fn own_run_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit> {
        tokio::select! {
            biased;
            _ = self.inner.shutdown.cancelled() => Err(TssError::Cancelled),
            slot = self.inner.own_runs.clone().acquire_owned() => {
                slot.map_err(|_| TssError::Cancelled)
            }
        }
    }

    /// Answers a proposal this node does not follow because it is at a run cap: an
    /// [`ControlMsg::Abort`] (reason `busy: …`) to the proposer, so its run ends at once
    /// naming this node rather than waiting for it and blaming it as silent.
    ///
    /// Not an amplifier: the reply goes only to `from` (the transport-authenticated
    /// sender), only for a well-formed proposal this node and `from` are parties of, and
    /// at most once per execution id (the caller has recorded it as seen: a replay gets
    /// nothing). So a flood earns its sender one small reply per proposal it sent, and
    /// nobody else hears of it; the other parties learn of the end from the proposer.
    fn refuse_busy(&self, from: NodeId, proposal: &Proposal, why: &str) {
        let eid = proposal.eid();
        tracing::warn!(%from, %eid, "{why}: proposal refused as busy");
        if proposal.check_shape(from, self.inner.me).is_err() {
            return;
        }
        self.send_control(
            from,
            &ControlMsg::Abort {
                eid,
                reason: format!("{BUSY_REASON_PREFIX} {why}"),
                blamed: Vec::new(),
            },
        );
    }

    /// Watches run `eid` until it ends: when a party of `watched` has shown no sign of
    /// life for the silence timeout (or for two heartbeat intervals while the transport
    /// reports it disconnected), records them in `found` and cancels the run.
    async fn watch_run(
        &self,
        eid: ExecutionId,
        watched: Vec<NodeId>,
        token: CancellationToken,
        found: Arc<Mutex<Option<Vec<NodeId>>>>,
    ) {
        let limit = self.inner.signer_silence;
        let every = self.inner.heartbeat_interval.max(Duration::from_millis(10));
        let transport = self.inner.tss.transport().clone();
        loop {
            let before = Instant::now();
            tokio::time::sleep(every).await;
            let now = Instant::now();
            // This task itself woke late: the runtime was starved, so heartbeats may be
            // waiting unread. Judge nobody on this round.
            if now.duration_since(before) > every * 2 {
                continue;
            }
            let silent: Vec<NodeId> = {
                let runs = self.inner.runs.lock();
                let Some(run) = runs.get(&eid) else { return };
                watched
                    .iter()
                    .filter(|p| {
                        let quiet = run
                            .heard
                            .get(p)
                            .map_or(Duration::MAX, |t| now.duration_since(*t));
                        quiet > limit
                            || (quiet > every * 2
                                && transport.connection_state(p) == ConnectionState::Down)
                    })
                    .copied()
                    .collect()
            };
            if !silent.is_empty() {
                tracing::warn!(%eid, ?silent, "signing parties went silent: aborting the run");
                *found.lock() = Some(silent);
                token.cancel();
                return;
            }
        }
    }

    /// Sends [`ControlMsg::Alive`] for `eid` to `to` now and every heartbeat interval,
    /// until the returned guard is dropped.
    fn heartbeats(&self, eid: ExecutionId, to: Vec<NodeId>) -> AbortOnDrop {
        let node = self.clone();
        let every = self.inner.heartbeat_interval.max(Duration::from_millis(10));
        AbortOnDrop(self.inner.tasks.spawn(async move {
            let msg = ControlMsg::Alive { eid };
            loop {
                for p in to.iter().filter(|p| **p != node.inner.me) {
                    node.send_control(*p, &msg);
                }
                tokio::time::sleep(every).await;
            }
        }))
    }

    fn on_alive(&self, from: NodeId, eid: ExecutionId) {
        if let Some(run) = self.inner.runs.lock().get_mut(&eid) {
            if run.participants.contains(&from) {
                run.heard.insert(from, Instant::now());
            }
        }
    }

    // ------------------------------------------------------------------ keygen

    /// Proposes keygen of `key_id` for `committee` (this node must be a member and hold
    /// no share of the key), with the embedder's `context` for the validators. Returns
    /// this node's share, stored and active.
    pub async fn propose_keygen(
        &self,
        key_id: KeyId,
        committee: Committee,
        context: Vec<u8>,
    ) -> Result<Arc<KeyShare>> {
        let _own_slot = self.own_run_slot().await?;
        let me = self.inner.me;
        let eid = ExecutionId::random(
            ProtocolKind::Keygen,
            &key_id,
            committee.members(),
            &mut rand::thread_rng(),
        );
        let proposal = KeygenProposal {
            eid,
            protocol: self.protocol_of(&key_id),
            key_id,
            committee,
            context,
        };
        Box::pin(self.keygen(me, proposal, true)).await
    }

    async fn keygen(
        &self,
        proposer: NodeId,
        p: KeygenProposal,
        propose: bool,
    ) -> Result<Arc<KeyShare>> {
        let proposal = Proposal::Keygen(p.clone());
        let prepared = async {
            proposal.check_shape(proposer, self.inner.me)?;
            let guard = match propose {
                true => self.busy(&p.key_id)?,
                false => self.busy_as_follower(&p.key_id).await?,
            };
            if self.share(&p.key_id).is_some() {
                return Err(TssError::InvalidProposal {
                    from: proposer,
                    reason: format!("{} {ALREADY_HOLDS_A_SHARE} {}", self.inner.me, p.key_id),
                });
            }
            let mine = self.protocol_of(&p.key_id);
            if p.protocol != mine {
                return Err(TssError::InvalidProposal {
                    from: proposer,
                    reason: format!(
                        "{} keeps {} as a {mine} key, not {}",
                        self.inner.me, p.key_id, p.protocol
                    ),
                });
            }
            let state = self
                .inner
                .validator
                .check_keygen(proposer, &p)
                .await
                .map_err(|r| TssError::InvalidProposal {
                    from: proposer,
                    reason: r.reason,
                })?;
            Ok((guard, state))
        }
        .await;
        let (guard, state) = self.refuse_unless_ok(&proposal, proposer, prepared)?;
        let run_eid = proposal.run_eid();
        let share = self
            .execute(&proposal, proposer, propose, &[], async {
                let protocol = p.protocol.implementation();
                let primes = match protocol.needs_paillier_primes() {
                    true => Some(self.inner.primes.take().await?),
                    false => None,
                };
                self.inner
                    .tss
                    .generate_key(
                        p.protocol,
                        p.key_id.clone(),
                        p.committee.clone(),
                        run_eid,
                        primes,
                    )
                    .await
            })
            .await?;
        // The protocol is over: the commit runs outside the abortable run, so a late
        // abort cannot leave the store and this node's memory disagreeing.
        self.inner
            .store
            .stage(&share, &state)
            .await
            .map_err(TssError::Store)?;
        self.inner
            .store
            .activate(&p.key_id, share.generation(), &state, None)
            .await
            .map_err(TssError::Store)?;
        let share = Arc::new(share);
        // The embedder's view first: whoever sees the new share sees the new state.
        self.inner.validator.committed(&p.key_id, &state).await;
        self.inner
            .shares
            .lock()
            .insert(p.key_id.clone(), share.clone());
        // Committed: whoever hears of it may propose the next run of this key at once.
        drop(guard);
        self.emit(PoolEvent::KeyCommitted {
            key_id: p.key_id.clone(),
            generation: share.generation(),
            state,
        });
        Ok(share)
    }

    /// On a failed check: tells every party (so they stop at once) and reports it.
    fn refuse_unless_ok<T>(
        &self,
        proposal: &Proposal,
        proposer: NodeId,
        checked: Result<T>,
    ) -> Result<T> {
        if let Err(e) = &checked {
            let reason = e.to_string();
            // Aborts go out only for a well-formed proposal this node is a party of: a
            // malformed one (say, a signer list of one victim repeated) is not reflected.
            if proposal.check_shape(proposer, self.inner.me).is_ok() {
                self.abort_to(proposal.eid(), &proposal.participants(), &reason, &[]);
            }
            self.emit(PoolEvent::Refused {
                eid: proposal.eid(),
                proposer,
                reason,
            });
        }
        checked
    }

    // ------------------------------------------------------------------ signing

    /// Proposes signing `request` (the embedder's description of what to sign) with key
    /// `key_id`. Every signer validates `request` and computes the digest itself; the
    /// signature is checked to recover to the key's address.
    ///
    /// With `signers = None` this node picks them, and tries again when a set fails:
    /// itself first, then the next members in committee order, leaving out members the
    /// transport reports down and preferring members that were not found unresponsive in
    /// the last [`PoolConfig::unresponsive_backoff`]. A signer that shows no sign of life for
    /// [`PoolConfig::signer_silence_timeout`] (or whose connection drops), refuses, or
    /// fails the run is set aside ([`PoolEvent::SignerSkipped`]), the run is aborted for
    /// everyone, and a new set signs under a fresh execution id, up to
    /// [`PoolConfig::sign_attempts`] sets. [`SignOutcome::skipped`] names the members set
    /// aside. Fails with [`TssError::NotEnoughSigners`] when too few members are left.
    ///
    /// Disputes: when a signer aborts saying its own checks convicted other signers of an
    /// invalid message sent to it ([`ControlMsg::Abort`]'s `blamed`), this node, which did
    /// not see those messages, cannot tell which side lies. Neither side signs this
    /// request (both are skipped), and neither is set aside for the backoff on that claim
    /// alone: setting the reporter aside would punish an honest one, and believing it
    /// would let a liar remove honest members. A claim against this node itself is a lie
    /// it can see: the claimant is set aside.
    ///
    /// With `signers = Some(set)` exactly that set is tried, once.
    pub async fn propose_sign(
        &self,
        key_id: &KeyId,
        request: Vec<u8>,
        signers: Option<Vec<NodeId>>,
    ) -> Result<SignOutcome> {
        let _own_slot = self.own_run_slot().await?;
        if let Some(signers) = signers {
            return self.propose_sign_once(key_id, request, signers).await;
        }
        let mut skipped: Vec<NodeId> = Vec::new();
        let mut attempt = 0;
        let mut use_presignatures = true;
        loop {
            attempt += 1;
            let share = self
                .share(key_id)
                .ok_or_else(|| TssError::NoShare(key_id.clone()))?;
            let ready = use_presignatures
                .then(|| self.take_ready_presignature(key_id, share.generation(), &skipped))
                .flatten();
            let (signers, passed_over, presignature) = match ready {
                Some(ready) => (ready.signers, Vec::new(), Some(ready.id)),
                None => {
                    let (signers, passed_over) =
                        self.pick_signers(key_id, share.committee(), &skipped)?;
                    (signers, passed_over, None)
                }
            };
            let eid = sign_eid(key_id, &signers);
            let result = self
                .propose_sign_with(eid, key_id, request.clone(), signers.clone(), presignature)
                .await;
            let disputed = result
                .as_ref()
                .err()
                .and_then(|e| self.disputed(e, &signers));
            if let (Some(sides), Err(e)) = (disputed, &result) {
                tracing::warn!(%key_id, %eid, ?sides, error = %e, "signers in a dispute; both skipped for this request");
                for member in sides {
                    self.emit(PoolEvent::SignerSkipped {
                        eid,
                        member,
                        reason: format!("in a dispute: {e}"),
                    });
                    if !skipped.contains(&member) {
                        skipped.push(member);
                    }
                }
                if attempt >= self.inner.sign_attempts {
                    return result;
                }
                continue;
            }
            match result {
                Ok(mut out) => {
                    {
                        let mut unresponsive = self.inner.unresponsive.lock();
                        for s in &out.signers {
                            unresponsive.remove(s);
                        }
                    }
                    for m in passed_over {
                        if !skipped.contains(&m) {
                            skipped.push(m);
                        }
                    }
                    out.skipped = skipped;
                    out.attempts = attempt;
                    return Ok(out);
                }
                // A signer at its run caps: another set next, without setting it aside
                // for the backoff (it is alive, only full for now).
                Err(TssError::Aborted { by, reason, .. })
                    if reason.starts_with(BUSY_REASON_PREFIX)
                        && by != self.inner.me
                        && signers.contains(&by)
                        && attempt < self.inner.sign_attempts =>
                {
                    tracing::info!(%key_id, %eid, %by, %reason, "a signer is busy; another set next");
                    self.emit(PoolEvent::SignerSkipped {
                        eid,
                        member: by,
                        reason,
                    });
                    if !skipped.contains(&by) {
                        skipped.push(by);
                    }
                }
                // The culprit is banned now (ban_if_required): the next set leaves it out.
                Err(TssError::MustExclude {
                    culprit, reason, ..
                }) if culprit != self.inner.me && attempt < self.inner.sign_attempts => {
                    self.emit(PoolEvent::SignerSkipped {
                        eid,
                        member: culprit,
                        reason,
                    });
                    if !skipped.contains(&culprit) {
                        skipped.push(culprit);
                    }
                }
                Err(TssError::Aborted { by, reason, .. })
                    if presignature.is_some() && attempt < self.inner.sign_attempts =>
                {
                    // A signer refused the presignature (say it restarted and lost it)
                    // or the request: try full signing before setting anyone aside.
                    tracing::info!(%key_id, %by, %reason, "signing with a presignature failed; full signing next");
                    use_presignatures = false;
                }
                Err(e) => {
                    let culprits = match &e {
                        TssError::Unresponsive { silent, .. } => silent.clone(),
                        TssError::Aborted { by, .. }
                            if *by != self.inner.me && signers.contains(by) =>
                        {
                            vec![*by]
                        }
                        // This node's own checks convicted signers of an invalid message
                        // (a bad proof): set them aside and sign with others.
                        TssError::ProtocolAborted { culprits, .. }
                        | TssError::Misbehaviour { culprits, .. }
                            if !culprits.is_empty()
                                && culprits
                                    .iter()
                                    .all(|c| *c != self.inner.me && signers.contains(c)) =>
                        {
                            culprits.clone()
                        }
                        _ => return Err(e),
                    };
                    let now = Instant::now();
                    for member in culprits {
                        tracing::warn!(%key_id, %eid, %member, error = %e, "signer set aside");
                        self.inner.unresponsive.lock().insert(member, now);
                        self.emit(PoolEvent::SignerSkipped {
                            eid,
                            member,
                            reason: e.to_string(),
                        });
                        if !skipped.contains(&member) {
                            skipped.push(member);
                        }
                    }
                    if attempt >= self.inner.sign_attempts {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// The sides of a dispute in signing run that this node proposed with `signers`: the
    /// signer that aborted it saying its own checks convicted other signers (not this
    /// node), then those. `None` for any other failure.
    fn disputed(&self, e: &TssError, signers: &[NodeId]) -> Option<Vec<NodeId>> {
        match e {
            TssError::Aborted { by, blamed, .. }
                if *by != self.inner.me
                    && signers.contains(by)
                    && !blamed.is_empty()
                    && blamed
                        .iter()
                        .all(|b| *b != self.inner.me && b != by && signers.contains(b)) =>
            {
                let mut sides = vec![*by];
                sides.extend(blamed.iter().copied());
                Some(sides)
            }
            _ => None,
        }
    }

    /// Members found unresponsive (or refusing) by signing runs this node proposed in the
    /// last [`PoolConfig::unresponsive_backoff`], with how long ago, most recent first.
    pub fn unresponsive_members(&self) -> Vec<(NodeId, Duration)> {
        let backoff = self.inner.unresponsive_backoff;
        let mut unresponsive = self.inner.unresponsive.lock();
        unresponsive.retain(|_, at| at.elapsed() < backoff);
        let mut list: Vec<(NodeId, Duration)> = unresponsive
            .iter()
            .map(|(n, at)| (*n, at.elapsed()))
            .collect();
        list.sort_by_key(|(n, ago)| (*ago, *n));
        list
    }

    /// `t` signers for `committee`: this node, then the other members in committee order
    /// starting after it, those not found unresponsive recently first; never one of
    /// `skipped`, nor one the transport reports down. Also returns the members passed over
    /// (down, or recently unresponsive and not needed).
    fn pick_signers(
        &self,
        key_id: &KeyId,
        committee: &Committee,
        skipped: &[NodeId],
    ) -> Result<(Vec<NodeId>, Vec<NodeId>)> {
        let me = self.inner.me;
        let members = committee.members();
        let at = committee
            .index_of(&me)
            .ok_or(TssError::NotACommitteeMember(me))? as usize;
        let needed = usize::from(committee.threshold());
        let transport = self.inner.tss.transport();
        let backoff = self.inner.unresponsive_backoff;
        let unresponsive = self.inner.unresponsive.lock().clone();
        let banned = self.banned(key_id);
        let skipped: Vec<NodeId> = skipped.iter().chain(&banned).copied().collect();
        let skipped = skipped.as_slice();
        let mut down = Vec::new();
        let mut ranked: Vec<(bool, usize, NodeId)> = Vec::new();
        for k in 1..members.len() {
            let m = members[(at + k) % members.len()];
            if skipped.contains(&m) {
                continue;
            }
            if transport.connection_state(&m) == ConnectionState::Down {
                down.push(m);
                continue;
            }
            let recently_failed = unresponsive.get(&m).is_some_and(|t| t.elapsed() < backoff);
            ranked.push((recently_failed, k, m));
        }
        ranked.sort();
        if ranked.len() + 1 < needed {
            let mut unresponsive = skipped.to_vec();
            unresponsive.extend(down);
            return Err(TssError::NotEnoughSigners {
                key_id: key_id.clone(),
                needed,
                available: ranked.len() + 1,
                unresponsive,
            });
        }
        let mut passed_over = down;
        passed_over.extend(
            ranked
                .iter()
                .skip(needed - 1)
                .filter(|(recently_failed, _, _)| *recently_failed)
                .map(|(_, _, m)| *m),
        );
        // Protocol order: committee order from this node on, as before.
        let mut chosen: Vec<(usize, NodeId)> = ranked
            .into_iter()
            .take(needed - 1)
            .map(|(_, k, m)| (k, m))
            .collect();
        chosen.sort();
        let signers = std::iter::once(me)
            .chain(chosen.into_iter().map(|(_, m)| m))
            .collect();
        Ok((signers, passed_over))
    }

    /// One signing run with exactly `signers`, full interactive signing.
    async fn propose_sign_once(
        &self,
        key_id: &KeyId,
        request: Vec<u8>,
        signers: Vec<NodeId>,
    ) -> Result<SignOutcome> {
        let eid = sign_eid(key_id, &signers);
        self.propose_sign_with(eid, key_id, request, signers, None)
            .await
    }

    /// One signing run `eid` with exactly `signers`, with `presignature` if given.
    async fn propose_sign_with(
        &self,
        eid: ExecutionId,
        key_id: &KeyId,
        request: Vec<u8>,
        signers: Vec<NodeId>,
        presignature: Option<ExecutionId>,
    ) -> Result<SignOutcome> {
        let me = self.inner.me;
        let share = self
            .share(key_id)
            .ok_or_else(|| TssError::NoShare(key_id.clone()))?;
        let proposal = SignProposal {
            eid,
            key_id: key_id.clone(),
            generation: share.generation(),
            signers,
            request,
            presignature,
        };
        Box::pin(self.sign(me, proposal, true)).await
    }

    /// Takes out a presignature this node proposed for `key_id` at `generation` whose
    /// signers are all live: none in `skipped`, none reported down, none found
    /// unresponsive recently. Presignatures of older generations are dropped on the way.
    fn take_ready_presignature(
        &self,
        key_id: &KeyId,
        generation: Generation,
        skipped: &[NodeId],
    ) -> Option<ReadyPresignature> {
        let transport = self.inner.tss.transport();
        let backoff = self.inner.unresponsive_backoff;
        let unresponsive = self.inner.unresponsive.lock().clone();
        let mut all = self.inner.presignatures.lock();
        let ready = all.get_mut(key_id)?;
        ready.retain(|r| r.generation == generation);
        let live = |r: &ReadyPresignature| {
            r.signers.iter().all(|s| {
                *s == self.inner.me
                    || (!skipped.contains(s)
                        && transport.connection_state(s) != ConnectionState::Down
                        && unresponsive.get(s).is_none_or(|t| t.elapsed() >= backoff))
            })
        };
        let at = ready.iter().position(live)?;
        ready.remove(at)
    }

    /// Presignatures this node proposed for `key_id` and holds, ready for
    /// [`PoolNode::propose_sign`].
    pub fn presignatures_ready(&self, key_id: &KeyId) -> usize {
        let generation = self.share(key_id).map(|s| s.generation());
        self.inner.presignatures.lock().get(key_id).map_or(0, |r| {
            r.iter()
                .filter(|p| Some(p.generation) == generation)
                .count()
        })
    }

    /// Proposes presignature runs for `key_id` until this node holds `target` of its own
    /// ([`PoolNode::presignatures_ready`]), each with this node and `t - 1` live members
    /// (picked as for signing). Returns how many were made. [`PoolNode::propose_sign`]
    /// then signs in one round with one of them when all its signers are live, and falls
    /// back to full signing when none is.
    ///
    /// Presignatures live in memory only: a restart, or a reshare of the key, drops
    /// them. A member refuses to make more than [`PoolConfig::max_presignatures`] of one
    /// key.
    ///
    /// A key whose protocol has no presignatures (DKLs23) makes none: this returns 0
    /// (signing is full signing, which for DKLs23 takes milliseconds).
    pub async fn fill_presignatures(&self, key_id: &KeyId, target: usize) -> Result<usize> {
        if !self
            .protocol_of(key_id)
            .implementation()
            .has_presignatures()
        {
            return Ok(0);
        }
        let mut made = 0;
        while self.presignatures_ready(key_id) < target {
            self.propose_presign(key_id).await?;
            made += 1;
        }
        Ok(made)
    }

    /// Proposes one presignature run for `key_id` with this node and `t - 1` live members;
    /// returns the presignature's id once every signer holds its part.
    pub async fn propose_presign(&self, key_id: &KeyId) -> Result<ExecutionId> {
        let _own_slot = self.own_run_slot().await?;
        let me = self.inner.me;
        let share = self
            .share(key_id)
            .ok_or_else(|| TssError::NoShare(key_id.clone()))?;
        presignatures_supported(&share)?;
        let (signers, _) = self.pick_signers(key_id, share.committee(), &[])?;
        let eid = ExecutionId::random(
            ProtocolKind::Presign,
            key_id,
            &signers,
            &mut rand::thread_rng(),
        );
        let proposal = PresignProposal {
            eid,
            key_id: key_id.clone(),
            generation: share.generation(),
            signers,
        };
        Box::pin(self.presign(me, proposal, true)).await
    }

    /// The checks of a sign or presign proposal's signer set: this node holds `key_id` at
    /// `generation`, and `signers` are exactly the threshold of committee members. Returns
    /// this node's share.
    fn signer_set_share(
        &self,
        proposer: NodeId,
        key_id: &KeyId,
        generation: Generation,
        signers: &[NodeId],
    ) -> Result<Arc<KeyShare>> {
        let bad = |reason: String| TssError::InvalidProposal {
            from: proposer,
            reason,
        };
        let share = self
            .share(key_id)
            .ok_or_else(|| bad(format!("{} holds no share of {key_id}", self.inner.me)))?;
        if share.generation() != generation {
            return Err(bad(format!(
                "generation {generation} proposed, this node holds {}",
                share.generation()
            )));
        }
        let committee = share.committee();
        if signers.len() != usize::from(committee.threshold()) {
            return Err(bad(format!(
                "{} signers proposed, the threshold is {}",
                signers.len(),
                committee.threshold()
            )));
        }
        if let Some(outsider) = signers.iter().find(|s| committee.index_of(s).is_none()) {
            return Err(bad(format!("signer {outsider} is not a committee member")));
        }
        let banned = self.banned(key_id);
        if let Some(member) = signers
            .iter()
            .chain(std::iter::once(&proposer))
            .find(|m| banned.contains(m))
        {
            return Err(bad(format!(
                "{member} is banned from {key_id} at {} (it failed an oblivious-transfer check)",
                self.inner.me
            )));
        }
        Ok(share)
    }

    async fn presign(
        &self,
        proposer: NodeId,
        p: PresignProposal,
        propose: bool,
    ) -> Result<ExecutionId> {
        let proposal = Proposal::Presign(p.clone());
        let me = self.inner.me;
        let _alive = p
            .signers
            .contains(&me)
            .then(|| self.heartbeats(p.eid, proposal.participants()));
        let watched: Vec<NodeId> = if proposer == me {
            p.signers.iter().copied().filter(|s| *s != me).collect()
        } else {
            vec![proposer]
        };
        let prepared = async {
            proposal.check_shape(proposer, me)?;
            let bad = |reason: String| TssError::InvalidProposal {
                from: proposer,
                reason,
            };
            let share = self.signer_set_share(proposer, &p.key_id, p.generation, &p.signers)?;
            presignatures_supported(&share).map_err(|e| bad(e.to_string()))?;
            let held = self.inner.tss.presignatures_ready(&p.key_id);
            if held >= self.inner.max_presignatures {
                return Err(bad(format!(
                    "this node already holds {held} presignatures of {} (the most it keeps)",
                    p.key_id
                )));
            }
            Ok(share)
        }
        .await;
        let share = self.refuse_unless_ok(&proposal, proposer, prepared)?;
        let run_eid = proposal.run_eid();
        if proposer == me {
            self.inner
                .presign_acks
                .lock()
                .insert(run_eid, HashSet::from([me]));
        }
        let made = self
            .execute(&proposal, proposer, propose, &watched, async {
                self.inner.tss.presign(&share, &p.signers, run_eid).await
            })
            .await;
        let id = match made {
            Ok(id) => id,
            Err(e) => {
                self.inner.presign_acks.lock().remove(&run_eid);
                return Err(e);
            }
        };
        if proposer != me {
            self.send_control(proposer, &ControlMsg::PresignatureStored { id });
            return Ok(id);
        }
        // Offered for signing only once every signer holds its part (a signer may finish
        // the last round after this node): wait for their word, within the silence
        // allowed to a signer.
        let all: HashSet<NodeId> = p.signers.iter().copied().collect();
        let waited = tokio::time::timeout(self.inner.signer_silence * 2, async {
            loop {
                let notified = self.inner.presign_acked.notified();
                if self
                    .inner
                    .presign_acks
                    .lock()
                    .get(&id)
                    .is_some_and(|acked| acked.is_superset(&all))
                {
                    return;
                }
                notified.await;
            }
        })
        .await;
        let acked = self
            .inner
            .presign_acks
            .lock()
            .remove(&id)
            .unwrap_or_default();
        if waited.is_err() {
            self.inner.tss.burn_presignature(&id);
            let silent: Vec<NodeId> = all.difference(&acked).copied().collect();
            return Err(TssError::Unresponsive {
                eid: p.eid,
                silent,
                after: self.inner.signer_silence * 2,
            });
        }
        // Dropped if the key was reshared meanwhile (its parts are discarded too).
        if self.share(&p.key_id).map(|s| s.generation()) == Some(p.generation) {
            self.inner
                .presignatures
                .lock()
                .entry(p.key_id.clone())
                .or_default()
                .push_back(ReadyPresignature {
                    id,
                    generation: p.generation,
                    signers: p.signers.clone(),
                });
        }
        Ok(id)
    }

    async fn sign(
        &self,
        proposer: NodeId,
        mut p: SignProposal,
        propose: bool,
    ) -> Result<SignOutcome> {
        let mut proposal = Proposal::Sign(p.clone());
        // Signs of life from the start (validation included), to every other signer: the
        // proposer watches every signer, each signer watches the proposer.
        let me = self.inner.me;
        let _alive = p
            .signers
            .contains(&me)
            .then(|| self.heartbeats(p.eid, proposal.participants()));
        let watched: Vec<NodeId> = if proposer == me {
            p.signers.iter().copied().filter(|s| *s != me).collect()
        } else {
            vec![proposer]
        };
        let prepared = async {
            proposal.check_shape(proposer, self.inner.me)?;
            let bad = |reason: String| TssError::InvalidProposal {
                from: proposer,
                reason,
            };
            let share = self.signer_set_share(proposer, &p.key_id, p.generation, &p.signers)?;
            let input = self
                .inner
                .validator
                .check_sign(proposer, &p, &share.public_info())
                .await
                .map_err(|r| bad(r.reason))?;
            if let Some(id) = &p.presignature {
                let message = matches!(input, SigningInput::Message(_));
                if !message && proposer != me {
                    return Err(bad(
                        "a presignature signs only a message each signer hashes itself, \
                         never a digest given as is"
                            .into(),
                    ));
                }
                // Only the presignature's own proposer (its first signer) may spend it,
                // on exactly the signers, key and generation it was made for.
                let fits = matches!(
                    self.inner.tss.presignature_info(id),
                    Some((k, g, s)) if k == p.key_id
                        && g == p.generation
                        && s == p.signers
                        && s.first() == Some(&proposer)
                );
                if message && !fits {
                    return Err(bad(format!(
                        "presignature {id} is unknown here, used, or not this proposer's \
                         for these signers"
                    )));
                }
            }
            Ok((share, input))
        }
        .await;
        let (share, input) = self.refuse_unless_ok(&proposal, proposer, prepared)?;
        // Validated: whatever happens from here, the presignature this run names is
        // never used again at this node. (A refused proposal burns nothing, so a member
        // cannot burn another's presignatures by naming them.)
        let mut burn = BurnPresignature {
            tss: &self.inner.tss,
            id: p.presignature,
        };
        if propose && p.presignature.is_some() && matches!(input, SigningInput::Digest(_)) {
            // This node's own validator gave a digest: sign it fully, and keep the
            // presignature for a later message.
            if let Some(id) = p.presignature.take() {
                burn.id = None;
                self.inner
                    .presignatures
                    .lock()
                    .entry(p.key_id.clone())
                    .or_default()
                    .push_front(ReadyPresignature {
                        id,
                        generation: p.generation,
                        signers: p.signers.clone(),
                    });
            }
            proposal = Proposal::Sign(p.clone());
        }
        let digest = input.digest();
        let presignature = p.presignature;
        self.execute(&proposal, proposer, propose, &watched, async {
            let signature = match (presignature, &input) {
                // One round; the digest is computed inside from the validated message.
                (Some(id), SigningInput::Message(message)) => {
                    self.inner
                        .tss
                        .sign_with_presignature(&p.key_id, id, message)
                        .await?
                }
                _ => match self
                    .inner
                    .tss
                    .sign(&share, &p.signers, digest, proposal.run_eid())
                    .await
                {
                    Ok(signature) => signature,
                    Err(e) => {
                        self.ban_if_required(&share, proposal.eid(), &e).await;
                        return Err(e);
                    }
                },
            };
            let address = share.ethereum_address();
            if signature.recover_address(&digest)? != address {
                return Err(TssError::InvalidSignature);
            }
            Ok(SignOutcome {
                eid: p.eid,
                signature,
                digest,
                signers: p.signers.clone(),
                address,
                generation: share.generation(),
                skipped: Vec::new(),
                attempts: 1,
                presignature,
            })
        })
        .await
    }

    // ------------------------------------------------------------------ resharing

    /// Proposes resharing `key_id` to `new_committee` with the embedder's `context` for
    /// the validators. This node must hold the key. `dealers` defaults to this node and
    /// the next old members in committee order (exactly the old threshold), preferring
    /// members that stay.
    pub async fn propose_reshare(
        &self,
        key_id: &KeyId,
        new_committee: Committee,
        dealers: Option<Vec<NodeId>>,
        context: Vec<u8>,
    ) -> Result<ReshareCommit> {
        let _own_slot = self.own_run_slot().await?;
        let me = self.inner.me;
        let share = self
            .share(key_id)
            .ok_or_else(|| TssError::NoShare(key_id.clone()))?;
        let protocol = share.protocol();
        if !protocol.implementation().can_reshare() {
            return Err(TssError::Unsupported {
                protocol,
                operation: "resharing",
            });
        }
        let old = share.public_info();
        let dealers =
            dealers.unwrap_or_else(|| default_dealers(&old.committee, me, &new_committee));
        let mut attempt = 0;
        loop {
            attempt += 1;
            let new_generation = self.next_reshare_generation(&old).await?;
            let mut proposal = ReshareProposal {
                eid: ExecutionId::from_bytes([0; 32]),
                old: old.clone(),
                dealers: dealers.clone(),
                new_committee: new_committee.clone(),
                new_generation,
                context: context.clone(),
            };
            proposal.eid = ExecutionId::random(
                ProtocolKind::Reshare,
                key_id,
                &proposal.request().participants(),
                &mut rand::thread_rng(),
            );
            let result = Box::pin(self.reshare(me, proposal, true)).await;
            // A party refused the generation (it holds it pending from a failed run):
            // propose again, above what it named, under a fresh execution id.
            let refused = self
                .inner
                .generations_in_use
                .lock()
                .get(key_id)
                .is_some_and(|g| *g >= new_generation);
            match result {
                Err(e) if refused && attempt < RESHARE_GENERATION_ATTEMPTS => {
                    tracing::info!(%key_id, %new_generation, error = %e, "generation in use at a party: proposing again above it");
                }
                result => return result,
            }
        }
    }

    /// The generation a reshare of `old` proposed here gets: above the active one, above
    /// any this node holds pending, and above any a party said it holds pending.
    async fn next_reshare_generation(&self, old: &PublicKeyInfo) -> Result<Generation> {
        let pending = self
            .inner
            .store
            .load_pending(&old.key_id)
            .await
            .map_err(store_error)?;
        let in_use = self
            .inner
            .generations_in_use
            .lock()
            .get(&old.key_id)
            .copied();
        let highest = pending
            .iter()
            .map(|p| p.share.generation())
            .chain(in_use)
            .fold(old.generation, Generation::max);
        Ok(highest.next())
    }

    /// A party of reshare run `eid` said it holds `generation` of `key_id` pending:
    /// remembered (if `from` is a party of a run here and the claim is plausible) so
    /// the next proposal goes above it.
    fn on_generation_in_use(
        &self,
        from: NodeId,
        eid: ExecutionId,
        key_id: KeyId,
        generation: Generation,
    ) {
        let party = self
            .inner
            .runs
            .lock()
            .get(&eid)
            .is_some_and(|run| run.participants.contains(&from));
        let Some(active) = self.share(&key_id).map(|s| s.generation()) else {
            return;
        };
        if !party || generation.get() > active.get().saturating_add(MAX_GENERATION_LEAP) {
            tracing::debug!(%from, %eid, %key_id, %generation, "ignoring a generation-in-use claim");
            return;
        }
        tracing::info!(%from, %eid, %key_id, %generation, "a party holds this generation pending");
        let mut in_use = self.inner.generations_in_use.lock();
        let highest = in_use.entry(key_id).or_insert(generation);
        *highest = (*highest).max(generation);
    }

    async fn reshare(
        &self,
        proposer: NodeId,
        p: ReshareProposal,
        propose: bool,
    ) -> Result<ReshareCommit> {
        let me = self.inner.me;
        let key_id = p.old.key_id.clone();
        let proposal = Proposal::Reshare(p.clone());
        let prepared = async {
            proposal.check_shape(proposer, me)?;
            let bad = |reason: String| TssError::InvalidProposal {
                from: proposer,
                reason,
            };
            let guard = match propose {
                true => self.busy(&key_id)?,
                false => self.busy_as_follower(&key_id).await?,
            };
            let share = self.share(&key_id);
            let current = share.as_ref().map(|s| s.public_info());
            match &current {
                Some(info) if *info != p.old => {
                    return Err(bad(format!(
                        "the key facts differ from this node's share ({})",
                        info.generation
                    )))
                }
                None if p.new_committee.index_of(&me).is_none()
                    || p.old.committee.index_of(&me).is_some() =>
                {
                    return Err(bad(format!(
                        "{me} holds no share of {key_id} and is not joining its committee"
                    )))
                }
                _ => {}
            }
            // A joiner has no share to compare with: its configuration says what the
            // key's protocol is.
            let mine = self.protocol_of(&key_id);
            if p.old.protocol != mine {
                return Err(bad(format!(
                    "{me} keeps {key_id} as a {mine} key, not {}",
                    p.old.protocol
                )));
            }
            if !mine.implementation().can_reshare() {
                return Err(bad(format!("{mine} keys cannot be reshared yet")));
            }
            // A store never overwrites a generation: one held pending from a failed run
            // (its certificate may yet come) makes this node refuse to reuse it.
            let pending = self
                .inner
                .store
                .load_pending(&key_id)
                .await
                .map_err(store_error)?;
            if let Some(highest) = pending.iter().map(|p| p.share.generation()).max() {
                if highest >= p.new_generation {
                    return Err(TssError::GenerationInUse {
                        key_id: key_id.clone(),
                        proposed: p.new_generation,
                        pending: highest,
                    });
                }
            }
            let state = self
                .inner
                .validator
                .check_reshare(proposer, &p, current.as_ref())
                .await
                .map_err(|r| bad(r.reason))?;
            Ok((guard, share, state))
        }
        .await;
        if let Err(TssError::GenerationInUse { pending, .. }) = &prepared {
            if proposer != me {
                // Before the abort (one ordered channel): the proposer learns what to skip.
                self.send_control(
                    proposer,
                    &ControlMsg::GenerationInUse {
                        eid: p.eid,
                        key_id: key_id.clone(),
                        generation: *pending,
                    },
                );
            }
        }
        let (guard, old_share, state) = self.refuse_unless_ok(&proposal, proposer, prepared)?;
        let is_new = p.new_committee.index_of(&me).is_some();
        let new_generation = p.new_generation;
        let executed = self
            .execute(&proposal, proposer, propose, &[], async {
                // The protocol runs under the bound id: parties shown different
                // proposals under one eid never meet in one session.
                let mut request = p.request();
                request.eid = proposal.run_eid();
                let needs_primes = p.old.protocol.implementation().needs_paillier_primes();
                let primes = match is_new && needs_primes {
                    true => Some(self.inner.primes.take().await?),
                    false => None,
                };
                let role = ReshareRole::for_party(&request, &me, old_share.as_deref(), primes)?;
                // Boxed: the protocol's future is large (debug builds poll it deep).
                let staged = Box::pin(self.inner.tss.reshare(&request, role))
                    .await
                    .inspect_err(|e| {
                        if let TssError::Misbehaviour {
                            culprits, evidence, ..
                        } = e
                        {
                            if !evidence.is_empty() {
                                self.emit(PoolEvent::ReshareComplaints {
                                    eid: p.eid,
                                    culprits: culprits.clone(),
                                    verdicts: evidence.clone(),
                                });
                            }
                        }
                    })?;
                // Stored as pending (not active) before this node confirms it.
                if let Some(share) = staged.new_share() {
                    self.inner
                        .store
                        .stage(share, &state)
                        .await
                        .map_err(store_error)?;
                }
                if is_new {
                    // Back in the committee: an earlier run this node left by no longer
                    // speaks for its shares.
                    self.inner.leaving.lock().remove(&key_id);
                } else {
                    // A dealer that leaves: if its run ends without a certificate, only a
                    // certificate of this very statement may retire its share later.
                    self.inner
                        .leaving
                        .lock()
                        .insert(key_id.clone(), (staged.statement().clone(), state.clone()));
                }
                let outcome = Box::pin(staged.confirm()).await?;
                for fault in &outcome.faults {
                    self.emit(PoolEvent::Misbehaved {
                        eid: p.eid,
                        party: fault.party,
                        reason: fault.reason.clone(),
                    });
                }
                if !outcome.may_retire_old_share() {
                    return Err(TssError::ReshareNotConfirmed {
                        eid: p.eid,
                        missing: outcome.missing_confirmations,
                    });
                }
                Ok(outcome)
            })
            .await;
        let outcome = match executed {
            Ok(outcome) => outcome,
            Err(e) => {
                // A new member may have staged its share and another party may hold the
                // certificate: ask for it (the generation stays pending until it comes).
                let leaving = !is_new && self.inner.leaving.lock().contains_key(&key_id);
                if is_new || leaving {
                    drop(guard);
                    self.request_certificate(
                        &key_id,
                        new_generation,
                        Some(&proposal.participants()),
                    );
                }
                return Err(e);
            }
        };
        let certificate =
            outcome
                .certificate
                .clone()
                .ok_or_else(|| TssError::ReshareNotConfirmed {
                    eid: p.eid,
                    missing: outcome.missing_confirmations.clone(),
                })?;
        self.remember_certificate(&certificate);
        // A valid certificate: the commit runs outside the abortable run, so a late abort
        // cannot interrupt it half-way.
        let address = EthAddress::from_public_key(&public_key_of(&p.old)?);
        let new_generation = match outcome.new_share {
            Some(new_share) => {
                let generation = new_share.generation();
                self.commit_new_generation(
                    &key_id,
                    new_share,
                    old_share.map(|s| s.generation()),
                    &state,
                    &certificate,
                    guard,
                )
                .await?;
                Some(generation)
            }
            None => {
                self.leave_key(&key_id, &state, guard).await?;
                None
            }
        };
        Ok(ReshareCommit {
            eid: p.eid,
            key_id: key_id.clone(),
            address,
            new_generation,
            new_committee: p.new_committee.clone(),
            confirmed_by: outcome.confirmed_by,
            certificate,
        })
    }

    // ------------------------------------------------------------------ certificates

    /// Keeps `certificate` to forward to peers that ask (bounded; the store keeps the
    /// certificates of the generations this node holds).
    fn remember_certificate(&self, certificate: &ReshareCertificate) {
        let mut certs = self.inner.certificates.lock();
        if certs.iter().any(|c| c == certificate) {
            return;
        }
        certs.push_back(certificate.clone());
        while certs.len() > CERTIFICATES_REMEMBERED {
            certs.pop_front();
        }
    }

    /// Asks `peers` (default: every control participant) for the certificate of
    /// `generation` of `key_id`; a valid answer activates the pending generation.
    fn request_certificate(
        &self,
        key_id: &KeyId,
        generation: Generation,
        peers: Option<&[NodeId]>,
    ) {
        let msg = ControlMsg::CertificateRequest {
            key_id: key_id.clone(),
            generation,
        };
        let peers: BTreeSet<NodeId> = match peers {
            Some(p) => p.iter().copied().collect(),
            None => self.inner.control_participants.iter().copied().collect(),
        };
        let peers: Vec<NodeId> = peers.into_iter().filter(|p| *p != self.inner.me).collect();
        for peer in &peers {
            self.send_control(*peer, &msg);
        }
        self.emit(PoolEvent::CertificateRequested {
            key_id: key_id.clone(),
            generation,
        });
        // Peers may be down or cut off right now: ask again while the certificate is
        // still missing (a restart asks again as well).
        let node = self.clone();
        let key_id = key_id.clone();
        self.inner.tasks.spawn(async move {
            for _ in 0..CERTIFICATE_RETRIES {
                tokio::select! {
                    _ = node.inner.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(node.inner.certificate_retry) => {}
                }
                if !node.still_missing_certificate(&key_id, generation).await {
                    return;
                }
                for peer in &peers {
                    node.send_control(*peer, &msg);
                }
                node.emit(PoolEvent::CertificateRequested {
                    key_id: key_id.clone(),
                    generation,
                });
            }
        });
    }

    /// Whether this node still waits for the certificate of `generation` of `key_id`: it
    /// dealt the key away in that run, or that generation is still pending here.
    async fn still_missing_certificate(&self, key_id: &KeyId, generation: Generation) -> bool {
        let leaving = self
            .inner
            .leaving
            .lock()
            .get(key_id)
            .is_some_and(|(statement, _)| statement.generation == generation);
        if leaving {
            return true;
        }
        if self
            .share(key_id)
            .is_some_and(|s| s.generation() >= generation)
        {
            return false;
        }
        match self.inner.store.load_pending(key_id).await {
            Ok(pending) => pending.iter().any(|p| p.share.generation() == generation),
            Err(_) => true,
        }
    }

    /// Answers a peer's certificate request, if this node has the certificate.
    async fn answer_certificate_request(
        &self,
        from: NodeId,
        key_id: KeyId,
        generation: Generation,
    ) {
        let remembered = self
            .inner
            .certificates
            .lock()
            .iter()
            .find(|c| *c.key_id() == key_id && c.generation() == generation)
            .cloned();
        let certificate = match remembered {
            Some(c) => Some(c),
            None => match self.inner.store.load_certificate(&key_id, generation).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(%key_id, %generation, error = %e, "cannot read a certificate");
                    None
                }
            },
        };
        if let Some(certificate) = certificate {
            self.send_control(from, &ControlMsg::Certificate(Box::new(certificate)));
        }
    }

    /// A reshare moved `key_id` to a committee without this node: deletes its share (every
    /// generation) with `state`, drops its presignatures and tells the embedder.
    async fn leave_key(&self, key_id: &KeyId, state: &[u8], guard: BusyGuard<'_>) -> Result<()> {
        self.inner
            .store
            .delete(key_id, state)
            .await
            .map_err(TssError::Store)?;
        self.inner.leaving.lock().remove(key_id);
        self.inner
            .tss
            .discard_presignatures(key_id, Generation(u64::MAX));
        self.inner.presignatures.lock().remove(key_id);
        self.inner.validator.committed(key_id, state).await;
        self.inner.shares.lock().remove(key_id);
        drop(guard);
        self.emit(PoolEvent::KeyLeft {
            key_id: key_id.clone(),
            state: state.to_vec(),
        });
        Ok(())
    }

    /// Activates the pending generation `certificate` certifies, if this node staged it
    /// and the certificate is valid; or, if this node dealt the key away in a run that
    /// ended here without a certificate, retires its share when `certificate` certifies
    /// exactly that run's statement. Returns whether it did either.
    pub async fn adopt_certificate(&self, certificate: ReshareCertificate) -> Result<bool> {
        certificate.verify()?;
        let key_id = certificate.key_id().clone();
        let generation = certificate.generation();
        let left_state = match self.inner.leaving.lock().get(&key_id) {
            // Equality with this node's own statement is the check that matters: a
            // self-consistent certificate naming a committee of someone's own identities
            // is easy to make, and must not make a member delete its share.
            Some((statement, state)) if *statement == certificate.statement => Some(state.clone()),
            _ => None,
        }
        // Only while the share held is still one the certified run replaced: never a
        // generation this node got later (it may have rejoined).
        .filter(|_| {
            self.share(&key_id)
                .is_some_and(|s| s.generation() < generation)
        });
        if let Some(state) = left_state {
            let Ok(guard) = self.busy(&key_id) else {
                return Ok(false);
            };
            self.remember_certificate(&certificate);
            self.leave_key(&key_id, &state, guard).await?;
            tracing::info!(%key_id, %generation, "share retired with a forwarded certificate: this node left the committee");
            return Ok(true);
        }
        if self
            .share(&key_id)
            .is_some_and(|s| s.generation() >= generation)
        {
            return Ok(false);
        }
        let Ok(guard) = self.busy(&key_id) else {
            // A run of this key is going on here: it ends with the certificate or asks
            // for it again.
            return Ok(false);
        };
        let pending = self
            .inner
            .store
            .load_pending(&key_id)
            .await
            .map_err(TssError::Store)?;
        let Some(p) = pending
            .into_iter()
            .find(|p| p.share.generation() == generation)
        else {
            return Ok(false);
        };
        if !certificate.statement.certifies(&p.share.public_info()) {
            return Err(TssError::InvalidCertificate {
                culprits: Vec::new(),
                reason: format!("it does not certify the staged {generation} of {key_id}"),
            });
        }
        self.remember_certificate(&certificate);
        let old = self.share(&key_id).map(|s| s.generation());
        self.commit_new_generation(&key_id, p.share, old, &p.state, &certificate, guard)
            .await?;
        tracing::info!(%key_id, %generation, "pending generation activated with a forwarded certificate");
        Ok(true)
    }

    /// Steps 2-4 of the commit order: activate with the state, retire the old
    /// generation, drop older presignatures.
    async fn commit_new_generation(
        &self,
        key_id: &KeyId,
        new_share: KeyShare,
        old_generation: Option<Generation>,
        state: &[u8],
        certificate: &ReshareCertificate,
        guard: BusyGuard<'_>,
    ) -> Result<()> {
        let generation = new_share.generation();
        // Generations staged below this one by runs that failed unconfirmed: once this
        // one is active, a certificate of theirs is ignored, so they are only garbage.
        let superseded: Vec<Generation> = match self.inner.store.load_pending(key_id).await {
            Ok(pending) => pending
                .iter()
                .map(|p| p.share.generation())
                .filter(|g| *g < generation)
                .collect(),
            Err(e) => {
                tracing::warn!(%key_id, error = %e, "cannot list pending generations");
                Vec::new()
            }
        };
        self.inner
            .store
            .activate(key_id, generation, state, Some(certificate))
            .await
            .map_err(TssError::Store)?;
        // The embedder's view first: whoever sees the new share sees the new state.
        self.inner.validator.committed(key_id, state).await;
        self.inner
            .shares
            .lock()
            .insert(key_id.clone(), Arc::new(new_share));
        for old in old_generation.into_iter().chain(superseded) {
            if let Err(e) = self.inner.store.retire(key_id, old).await {
                // The new generation is active; a leftover old record is only garbage.
                tracing::warn!(%key_id, generation = %old, error = %e, "could not retire an older generation");
            }
        }
        if generation.get() > 0 {
            self.inner
                .tss
                .discard_presignatures(key_id, Generation(generation.get() - 1));
        }
        if let Some(ready) = self.inner.presignatures.lock().get_mut(key_id) {
            ready.retain(|r| r.generation >= generation);
        }
        // Committed: whoever hears of it may propose the next run of this key at once.
        drop(guard);
        self.emit(PoolEvent::KeyCommitted {
            key_id: key_id.clone(),
            generation,
            state: state.to_vec(),
        });
        Ok(())
    }

    // ------------------------------------------------------------------ deletion

    /// Deletes this node's share of `key_id` (every generation) from the store and
    /// memory, committing `state` with the deletion. Returns whether a share existed.
    pub async fn delete_key(&self, key_id: &KeyId, state: &[u8]) -> Result<bool> {
        let _guard = self.busy(key_id)?;
        let existed = self
            .inner
            .store
            .delete(key_id, state)
            .await
            .map_err(TssError::Store)?;
        self.inner
            .tss
            .discard_presignatures(key_id, Generation(u64::MAX));
        self.inner.presignatures.lock().remove(key_id);
        let held = self.inner.shares.lock().remove(key_id).is_some();
        Ok(existed || held)
    }

    // ------------------------------------------------------------------ following

    async fn follow(&self, from: NodeId, proposal: Proposal) {
        let eid = proposal.eid();
        let result = match proposal {
            Proposal::Keygen(p) => Box::pin(self.keygen(from, p, false)).await.map(|_| ()),
            Proposal::Sign(p) => Box::pin(self.sign(from, p, false)).await.map(|_| ()),
            Proposal::Reshare(p) => Box::pin(self.reshare(from, p, false)).await.map(|_| ()),
            Proposal::Presign(p) => Box::pin(self.presign(from, p, false)).await.map(|_| ()),
        };
        if let Err(e) = result {
            tracing::info!(%from, %eid, error = %e, "run proposed by a peer ended without result here");
        }
    }

    fn on_abort(&self, from: NodeId, eid: ExecutionId, reason: String, blamed: Vec<NodeId>) {
        let reason: String = reason.chars().take(MAX_REASON_CHARS).collect();
        // Lock order everywhere: runs, then early_aborts.
        let mut runs = self.inner.runs.lock();
        match runs.get_mut(&eid) {
            Some(run) if run.participants.contains(&from) => {
                // Only other parties of the run, each once: the claim cannot name more.
                let mut named: Vec<NodeId> = Vec::new();
                for b in blamed {
                    if b != from && run.participants.contains(&b) && !named.contains(&b) {
                        named.push(b);
                    }
                }
                tracing::info!(%from, %eid, %reason, blamed = ?named, "run aborted by a party");
                run.aborted_by.get_or_insert(AbortNote {
                    by: from,
                    reason,
                    blamed: named,
                });
                run.token.cancel();
            }
            Some(_) => tracing::debug!(%from, %eid, "ignoring an abort from a non-party"),
            None => {
                let mut early = self.inner.early_aborts.lock();
                let early = &mut *early;
                let is_new = !early.by_eid.contains_key(&eid);
                let list = early.by_eid.entry(eid).or_default();
                // Without its run, the claim cannot be checked against the parties:
                // dropped (only a proposer acts on it, and it registers its run first).
                if list.len() < 16 && !list.iter().any(|note| note.by == from) {
                    list.push(AbortNote {
                        by: from,
                        reason,
                        blamed: Vec::new(),
                    });
                }
                if is_new {
                    early.order.push_back(eid);
                }
                while early.order.len() > EARLY_ABORTS_REMEMBERED {
                    if let Some(old) = early.order.pop_front() {
                        early.by_eid.remove(&old);
                    }
                }
            }
        }
    }
}

/// A store error as a [`TssError`] (a store may return one, e.g. a decryption failure).
fn store_error(e: crate::error::StoreError) -> TssError {
    match e.downcast::<TssError>() {
        Ok(e) => *e,
        Err(e) => TssError::Store(e),
    }
}

fn public_key_of(info: &PublicKeyInfo) -> Result<k256::ecdsa::VerifyingKey> {
    k256::ecdsa::VerifyingKey::from_sec1_bytes(&info.public_key).map_err(|_| TssError::Decode {
        what: "public key",
        reason: "not a valid secp256k1 point".into(),
    })
}

/// [`TssError::Unsupported`] unless `share`'s protocol has presignatures.
fn presignatures_supported(share: &KeyShare) -> Result<()> {
    let protocol = share.protocol();
    match protocol.implementation().has_presignatures() {
        true => Ok(()),
        false => Err(TssError::Unsupported {
            protocol,
            operation: "presignatures",
        }),
    }
}

/// Dealers of a reshare: exactly the old threshold of old members; the proposer first,
/// then members that stay in the new committee (in old committee order), then members
/// that leave.
pub fn default_dealers(old: &Committee, proposer: NodeId, new: &Committee) -> Vec<NodeId> {
    let mut order: Vec<NodeId> = Vec::new();
    if old.index_of(&proposer).is_some() {
        order.push(proposer);
    }
    let (staying, leaving): (Vec<NodeId>, Vec<NodeId>) = old
        .members()
        .iter()
        .copied()
        .filter(|m| *m != proposer)
        .partition(|m| new.index_of(m).is_some());
    order.extend(staying);
    order.extend(leaving);
    order.truncate(usize::from(old.threshold()));
    order
}

/// A fresh execution id of a signing run of `key_id` by `signers`.
fn sign_eid(key_id: &KeyId, signers: &[NodeId]) -> ExecutionId {
    ExecutionId::random(ProtocolKind::Sign, key_id, signers, &mut rand::thread_rng())
}

/// One run a proposer holds at this node; given back on drop.
struct ProposerSlot {
    counts: Arc<Mutex<HashMap<NodeId, usize>>>,
    proposer: NodeId,
}

impl ProposerSlot {
    /// A slot for `proposer`, unless it already holds `max`.
    fn take(
        counts: &Arc<Mutex<HashMap<NodeId, usize>>>,
        proposer: NodeId,
        max: usize,
    ) -> Option<Self> {
        let mut held = counts.lock();
        let count = held.entry(proposer).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(Self {
            counts: counts.clone(),
            proposer,
        })
    }
}

impl Drop for ProposerSlot {
    fn drop(&mut self) {
        let mut held = self.counts.lock();
        if let Some(count) = held.get_mut(&self.proposer) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.proposer);
            }
        }
    }
}

/// What [`SeenProposals`] and the store keep of a proposal: a digest of its sender and
/// execution id (so one member's proposal never stands for another's).
fn sighting(proposer: NodeId, eid: ExecutionId) -> ExecutionId {
    let mut h = Sha256::new();
    h.update(b"tss-core/pool/sighting/v1");
    h.update(proposer.as_bytes());
    h.update(eid.as_bytes());
    ExecutionId::from_bytes(h.finalize().into())
}

/// Records new sightings ([`sighting`]) in the store, as many at a time as have queued
/// up (one synced write per batch, off every run's path); a batch the store failed to
/// write is tried again with the next one. At shutdown it records what is queued, then
/// ends. A crash (or a store that keeps failing) loses the sightings of the last moments:
/// those runs are then validated again if replayed, like any new proposal.
async fn record_executions(
    store: Arc<dyn ShareStore>,
    mut unrecorded: tokio::sync::mpsc::UnboundedReceiver<ExecutionId>,
    shutdown: CancellationToken,
) {
    let mut failed: Vec<ExecutionId> = Vec::new();
    loop {
        let first = tokio::select! {
            biased;
            eid = unrecorded.recv() => match eid {
                Some(eid) => eid,
                None => return,
            },
            _ = shutdown.cancelled() => break,
        };
        let mut batch = std::mem::take(&mut failed);
        batch.push(first);
        while let Ok(eid) = unrecorded.try_recv() {
            batch.push(eid);
        }
        if let Err(e) = store.record_executions(&batch, EXECUTIONS_REMEMBERED).await {
            tracing::warn!(error = %e, ids = batch.len(), "cannot record execution ids in the store (tried again with the next ones)");
            let keep_from = batch.len().saturating_sub(EXECUTIONS_REMEMBERED);
            failed = batch.split_off(keep_from);
        }
    }
    unrecorded.close();
    let mut rest = failed;
    while let Ok(eid) = unrecorded.try_recv() {
        rest.push(eid);
    }
    if !rest.is_empty() {
        if let Err(e) = store.record_executions(&rest, EXECUTIONS_REMEMBERED).await {
            tracing::warn!(error = %e, ids = rest.len(), "cannot record execution ids in the store");
        }
    }
}

async fn control_loop(node: PoolNode, mut inbox: SessionInbox) {
    let shutdown = node.inner.shutdown.clone();
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => break,
            msg = inbox.recv() => msg,
        };
        match msg {
            Ok(msg) => {
                let from = msg.from; // authenticated by the transport
                match decode_message::<ControlMsg>(from, &msg.payload) {
                    Ok(ControlMsg::Propose(proposal)) => {
                        // Remembered per sender, and only when well formed with both this
                        // node and the sender among its parties: nobody can make this node
                        // drop another member's proposal by sending its id first.
                        let shaped = proposal.check_shape(from, node.inner.me).is_ok();
                        if shaped && !node.first_sighting(from, proposal.eid()) {
                            tracing::debug!(%from, eid = %proposal.eid(), "dropping a proposal seen before");
                            node.emit(PoolEvent::ReplayRefused {
                                eid: proposal.eid(),
                                proposer: from,
                            });
                            continue;
                        }
                        let max_own = node.inner.max_runs_per_proposer;
                        let Some(proposer_slot) =
                            ProposerSlot::take(&node.inner.follows_by_proposer, from, max_own)
                        else {
                            node.refuse_busy(
                                from,
                                &proposal,
                                &format!(
                                    "{} follows {max_own} runs of this proposer already",
                                    node.inner.me
                                ),
                            );
                            continue;
                        };
                        let Ok(slot) = node.inner.follow_slots.clone().try_acquire_owned() else {
                            drop(proposer_slot);
                            node.refuse_busy(
                                from,
                                &proposal,
                                &format!(
                                    "{} follows as many runs as it takes at once",
                                    node.inner.me
                                ),
                            );
                            continue;
                        };
                        let node = node.clone();
                        node.inner.tasks.clone().spawn(async move {
                            node.follow(from, proposal).await;
                            drop((slot, proposer_slot));
                        });
                    }
                    Ok(ControlMsg::Abort {
                        eid,
                        reason,
                        blamed,
                    }) => node.on_abort(from, eid, reason, blamed),
                    Ok(ControlMsg::Alive { eid }) => node.on_alive(from, eid),
                    Ok(ControlMsg::GenerationInUse {
                        eid,
                        key_id,
                        generation,
                    }) => node.on_generation_in_use(from, eid, key_id, generation),
                    Ok(ControlMsg::PresignatureStored { id }) => {
                        if let Some(acked) = node.inner.presign_acks.lock().get_mut(&id) {
                            acked.insert(from);
                        }
                        node.inner.presign_acked.notify_waiters();
                    }
                    Ok(ControlMsg::CertificateRequest { key_id, generation }) => {
                        let node = node.clone();
                        node.inner.tasks.clone().spawn(async move {
                            node.answer_certificate_request(from, key_id, generation)
                                .await
                        });
                    }
                    Ok(ControlMsg::Certificate(certificate)) => {
                        let node = node.clone();
                        node.inner.tasks.clone().spawn(async move {
                            let (key_id, generation) =
                                (certificate.key_id().clone(), certificate.generation());
                            match Box::pin(node.adopt_certificate(*certificate)).await {
                                Ok(_) => {}
                                Err(e) => {
                                    tracing::warn!(%from, %key_id, %generation, error = %e, "certificate refused")
                                }
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(%from, error = %e, "malformed control message dropped")
                    }
                }
            }
            Err(TransportError::Timeout { .. }) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "control session ended");
                break;
            }
        }
    }
}
