//! The node: the sequencer pool's rules on top of the library's pool layer, with the
//! pool's membership read from L1 only.
//!
//! Coordination (proposals, aborts, commit order) is [`tss_core::pool::PoolNode`]'s job;
//! this module supplies what is specific to the sequencer pool:
//!
//! - **Following L1.** Every `l1.poll_seconds` the node reads the pool at the highest
//!   confirmed L1 height `h` ([`L1Reader::latest`]): the sequencers with stake locked in
//!   `SequencerStaking`, sorted by node id, stakes in gwei ([`crate::pool::stake_from_wei`]).
//!   That is the desired committee ([`desired_pool`]; fewer than `pool.min_members` or
//!   more than `pool.max_members`: nothing happens, and `GET /status` says why). No key
//!   yet: keygen. A key whose committee differs: a reshare to the desired committee
//!   (joins and exits; a stake change alone changes no committee and triggers nothing).
//! - **Who proposes** is a liveness matter only: the smallest node id of the committee
//!   that holds the key (for keygen: of the desired committee); if the change has not
//!   taken effect after `l1.leader_timeout_seconds`, the next one in node-id order, and
//!   so on. Every proposal carries `h` and the members it derived ([`MembershipProposal`]).
//! - **Safety comes from the followers**: [`SequencerRules`], the [`ProposalValidator`]
//!   every party (the proposer included) runs before it joins a run, accepts a keygen or
//!   reshare only if `h` is confirmed in its *own* L1 view (it waits up to
//!   `l1.proposal_wait_seconds` for its confirmed head to reach `h`, then refuses), `h`
//!   is above the height of the state it committed last (no going back), the members
//!   and the committee are exactly what it derives from L1 at `h`, the proposer holds the
//!   key (reshare) or is a member at `h` (keygen), and, for a joiner that holds no share,
//!   the old key's Ethereum address is the MPC address registered on L1 at `h` for the
//!   key's role. So one member cannot evict another, nor add anyone: the others refuse.
//! - **Several keys** (`[[keys]]`, [`crate::config::KeySettings`]): all of the above runs
//!   per key ([`KeyNode`]), each with its own L1 role (its address is
//!   `SequencerStaking.roleAddress(keccak256(role))`, and the role's `BatchInbox` accepts
//!   only it), committed pool, follower, batch producer and presignatures; [`KeyRules`]
//!   sends each proposal to its key's rules and refuses a key the node does not serve.
//! - The pool state (L1 height, members with stakes, version) is committed by the share
//!   store in the same atomic step as the key generation it belongs to, and restored from
//!   there on start; the block producer of each epoch is drawn by stake from it. So the
//!   schedule uses the stakes as of the last keygen or reshare: an `increase` on L1
//!   changes no committee, and weighs in from the next membership change on.
//!
//! A membership change takes effect only through a reshare in which `t_old` members of
//! the old committee (more than two thirds) take part after validating it, and every
//! new member confirmed storing its share before anyone activates or retires anything.
//!
//! Raw-digest signing (`POST /sign`) is off unless `rpc.unsafe_raw_digest_signing` is
//! set, and a follower joins such a run only if its own flag is set too: a 32-byte digest
//! is not a validated batch.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use transport::{NodeId, Transport};
use tss_core::pool::{
    KeygenProposal, PoolConfig, PoolEvent, PoolNode, PrimeSource, ProposalValidator, Rejection,
    ReshareProposal, SignProposal, SigningInput,
};
use tss_core::{
    EthAddress, EthSignature, KeyId, KeyShare, PrimePool, ProtocolKind, PublicKeyInfo, TssError,
};

use crate::config::{KeySettings, NodeSettings, PrimeSourceConfig};
use crate::error::{Error, Result};
use crate::l1::contracts::Deployment;
use crate::l1::view::{L1Reader, L1View};
use crate::l1::L1Error;
use crate::metrics::{KeyMetrics, Metrics, Protocol};
use crate::pool::{stake_from_wei, Member, Pool, PoolRules};
use crate::producer::BatchDuty;

/// The pool state committed with each key generation: the L1 height it was derived at
/// and the members (sorted by node id, stakes in gwei).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolState {
    /// The key generation it belongs to: 0 after keygen, +1 per reshare.
    pub version: u64,
    /// The L1 height the members were read at.
    #[serde(default)]
    pub l1_height: u64,
    /// The members, in committee order (sorted by node id).
    pub members: Vec<Member>,
}

impl PoolState {
    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
    fn decode(bytes: &[u8]) -> std::result::Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
    fn member_ids(&self) -> Vec<NodeId> {
        self.members.iter().map(|m| m.node).collect()
    }
    /// The members as a [`Pool`] (for the producer schedule and the API views).
    fn pool(&self) -> Option<Pool> {
        Pool::new(
            PoolRules::l1(2, usize::MAX),
            self.members.clone(),
            self.version,
        )
        .ok()
    }
}

/// What a keygen or reshare proposal carries (its `context`): the L1 height the
/// proposer read and the members it derived there. Every follower derives them itself
/// and refuses on any difference.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipProposal {
    /// The confirmed L1 height the members were read at.
    pub l1_height: u64,
    /// The members at that height, sorted by node id, stakes in gwei.
    pub members: Vec<Member>,
}

impl MembershipProposal {
    /// The proposal's encoding (JSON).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
    fn decode(bytes: &[u8]) -> std::result::Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("malformed membership proposal: {e}"))
    }
}

/// What a signing request carries: today a 32-byte digest (raw-digest signing, off
/// unless `rpc.unsafe_raw_digest_signing`).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct SignRequest {
    digest: [u8; 32],
}

/// The pool L1 records at `view`'s height under `rules`' size bounds: the locked
/// sequencers sorted by node id, stakes in gwei. An error says why there is no valid
/// pool (too few or too many members).
pub fn desired_pool(rules: &PoolRules, view: &L1View) -> Result<Pool> {
    let members = view
        .members
        .iter()
        .map(|m| Member {
            node: m.node,
            stake: stake_from_wei(m.stake),
        })
        .collect();
    Pool::new(rules.clone(), members, 0)
}

/// The Ethereum address of a compressed secp256k1 public key.
fn address_of(public_key: &[u8]) -> std::result::Result<EthAddress, String> {
    let key = k256::ecdsa::VerifyingKey::from_sec1_bytes(public_key)
        .map_err(|_| "the old key is not a valid secp256k1 point".to_string())?;
    Ok(EthAddress::from_public_key(&key))
}

/// The sequencer pool's rules as a [`ProposalValidator`]: see the [module docs](self).
pub struct SequencerRules {
    me: NodeId,
    key_id: KeyId,
    rules: PoolRules,
    state: Arc<Mutex<Option<PoolState>>>,
    l1: Arc<L1Reader>,
    proposal_wait: Duration,
    raw_digest_signing: bool,
    batches: Option<Arc<BatchDuty>>,
}

impl std::fmt::Debug for SequencerRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SequencerRules")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

fn reject(reason: impl std::fmt::Display) -> Rejection {
    Rejection::new(reason.to_string())
}

impl SequencerRules {
    /// The rules of node `me` for `key_id`: `rules`' size bounds, L1 read through `l1`,
    /// a follower waiting up to `proposal_wait` for its view to reach a proposal's
    /// height, raw-digest signing only if `raw_digest_signing`. No pool committed yet
    /// ([`Node::start`] builds its own with the state restored from the keystore; this is
    /// for embedders and tests that run a [`PoolNode`] themselves).
    pub fn new(
        me: NodeId,
        key_id: KeyId,
        rules: PoolRules,
        l1: Arc<L1Reader>,
        proposal_wait: Duration,
        raw_digest_signing: bool,
    ) -> Self {
        Self {
            me,
            key_id,
            rules,
            state: Arc::new(Mutex::new(None)),
            l1,
            proposal_wait,
            raw_digest_signing,
            batches: None,
        }
    }

    /// The same rules, co-signing the batches `duty` checks.
    pub fn with_batches(mut self, duty: Arc<BatchDuty>) -> Self {
        self.batches = Some(duty);
        self
    }

    fn check_key_id(&self, key_id: &KeyId) -> std::result::Result<(), Rejection> {
        if *key_id != self.key_id {
            return Err(reject(format!(
                "this pool serves key {}, not {key_id}",
                self.key_id
            )));
        }
        Ok(())
    }

    /// This node's own L1 view at `height`, waiting up to `proposal_wait` for its
    /// confirmed head to reach it.
    async fn own_view_at(&self, height: u64) -> std::result::Result<L1View, Rejection> {
        let started = Instant::now();
        loop {
            match self.l1.view_at(height).await {
                Ok(view) => return Ok(view),
                Err(L1Error::HeightNotConfirmed { confirmed, .. })
                    if started.elapsed() < self.proposal_wait =>
                {
                    tracing::debug!(height, ?confirmed, "waiting for L1 to confirm a proposal's height");
                }
                Err(L1Error::HeightNotConfirmed { confirmed, .. }) => {
                    return Err(reject(format!(
                        "L1 height {height} is not confirmed in this node's view (confirmed head {confirmed:?}) after {:?}",
                        self.proposal_wait
                    )))
                }
                Err(e) if started.elapsed() < self.proposal_wait => {
                    tracing::warn!(error = %e, "L1 read failed while checking a proposal; retrying");
                }
                Err(e) => return Err(reject(format!("cannot read L1: {e}"))),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Checks a proposal's L1 facts against this node's own view: `h` above the last
    /// committed height, confirmed here, and the members exactly L1's at `h`.
    async fn check_membership(
        &self,
        ctx: &MembershipProposal,
    ) -> std::result::Result<(Pool, L1View), Rejection> {
        if let Some(state) = self.state.lock().as_ref() {
            if ctx.l1_height <= state.l1_height {
                return Err(reject(format!(
                    "L1 height {} is not above the height {} of this node's committed pool",
                    ctx.l1_height, state.l1_height
                )));
            }
        }
        let view = self.own_view_at(ctx.l1_height).await?;
        let desired = desired_pool(&self.rules, &view).map_err(|e| {
            reject(format!(
                "L1 at height {} gives no valid pool: {e}",
                ctx.l1_height
            ))
        })?;
        if desired.members() != ctx.members.as_slice() {
            return Err(reject(format!(
                "the proposed members differ from the sequencers locked on L1 at height {}",
                ctx.l1_height
            )));
        }
        Ok((desired, view))
    }
}

#[async_trait]
impl ProposalValidator for SequencerRules {
    async fn check_keygen(
        &self,
        proposer: NodeId,
        p: &KeygenProposal,
    ) -> std::result::Result<Vec<u8>, Rejection> {
        self.check_key_id(&p.key_id)?;
        if self.state.lock().is_some() {
            return Err(reject("this node already committed a pool for this key"));
        }
        let ctx = MembershipProposal::decode(&p.context).map_err(reject)?;
        let (desired, view) = self.check_membership(&ctx).await?;
        if let Some(registered) = view.mpc_address {
            return Err(reject(format!(
                "L1 already has an MPC address ({registered}) at height {}: no new keygen",
                ctx.l1_height
            )));
        }
        if !desired.is_member(&proposer) {
            return Err(reject("the proposer is not locked on L1"));
        }
        if desired.committee().map_err(reject)? != p.committee {
            return Err(reject(
                "the committee is not the sequencers locked on L1 (sorted by node id, > 2/3)",
            ));
        }
        Ok(PoolState {
            version: 0,
            l1_height: ctx.l1_height,
            members: ctx.members,
        }
        .encode())
    }

    async fn check_sign(
        &self,
        proposer: NodeId,
        p: &SignProposal,
        key: &PublicKeyInfo,
    ) -> std::result::Result<SigningInput, Rejection> {
        self.check_key_id(&p.key_id)?;
        let is_member = self
            .state
            .lock()
            .as_ref()
            .is_some_and(|s| s.members.iter().any(|m| m.node == proposer));
        if !is_member {
            return Err(reject("the proposer is not a pool member"));
        }
        // A raw digest only with the explicit testing flag; everything else is a batch
        // that this node checks and rebuilds itself.
        if let Ok(request) = serde_json::from_slice::<SignRequest>(&p.request) {
            if !self.raw_digest_signing {
                return Err(reject(
                    "raw-digest signing is off on this node (rpc.unsafe_raw_digest_signing)",
                ));
            }
            return Ok(SigningInput::Digest(request.digest));
        }
        match &self.batches {
            Some(duty) => duty.check(proposer, p, key).await.map_err(reject),
            None => Err(reject(
                "this node co-signs no batches (no [batches] section)",
            )),
        }
    }

    async fn check_reshare(
        &self,
        proposer: NodeId,
        p: &ReshareProposal,
        current: Option<&PublicKeyInfo>,
    ) -> std::result::Result<Vec<u8>, Rejection> {
        self.check_key_id(&p.old.key_id)?;
        if p.old.committee.index_of(&proposer).is_none() {
            return Err(reject("the proposer does not hold the key"));
        }
        let ctx = MembershipProposal::decode(&p.context).map_err(reject)?;
        if current.is_some() {
            // The pool layer checked that the old key facts are this node's share's.
            let state = self
                .state
                .lock()
                .clone()
                .ok_or_else(|| reject("this node holds a share but no committed pool state"))?;
            if p.old.committee.members() != state.member_ids().as_slice() {
                return Err(reject(
                    "the old committee is not this node's committed pool",
                ));
            }
        }
        let (desired, view) = self.check_membership(&ctx).await?;
        if desired.member_ids().as_slice() == p.old.committee.members() {
            return Err(reject(format!(
                "nothing to reshare: the committee at L1 height {} is the key's",
                ctx.l1_height
            )));
        }
        if desired.committee().map_err(reject)? != p.new_committee {
            return Err(reject(format!(
                "the new committee is not the sequencers locked on L1 at height {}",
                ctx.l1_height
            )));
        }
        if current.is_none() {
            // A joiner cannot check the old shares; it checks that the key is the one L1
            // accepts batches from.
            let offered = address_of(&p.old.public_key).map_err(reject)?;
            match view.mpc_address {
                None => {
                    return Err(reject(format!(
                        "no MPC address is registered on L1 at height {}: not joining",
                        ctx.l1_height
                    )))
                }
                Some(registered) if registered.0 .0 != offered.0 => {
                    return Err(reject(format!(
                        "the offered key's address {} is not the MPC address {registered} registered on L1",
                        offered.to_checksum_string()
                    )))
                }
                Some(_) => {}
            }
        }
        Ok(PoolState {
            version: p.new_generation.get(),
            l1_height: ctx.l1_height,
            members: ctx.members,
        }
        .encode())
    }

    async fn committed(&self, key_id: &KeyId, state: &[u8]) {
        if *key_id != self.key_id {
            return;
        }
        match PoolState::decode(state) {
            Ok(saved) => *self.state.lock() = Some(saved),
            Err(e) => tracing::error!(error = %e, "committed pool state does not decode"),
        }
    }
}

/// The validator of a node with several keys: each proposal goes to the
/// [`SequencerRules`] of its key (each with the key's own L1 role, committed pool and
/// batch duties); a proposal for a key this node does not serve is refused.
pub struct KeyRules {
    keys: std::collections::BTreeMap<KeyId, Arc<SequencerRules>>,
}

impl std::fmt::Debug for KeyRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRules")
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl KeyRules {
    /// Routes to `rules`, one per key (a later one for the same key replaces an earlier).
    pub fn new(rules: impl IntoIterator<Item = SequencerRules>) -> Self {
        Self {
            keys: rules
                .into_iter()
                .map(|r| (r.key_id.clone(), Arc::new(r)))
                .collect(),
        }
    }

    fn rules_for(&self, key_id: &KeyId) -> std::result::Result<&SequencerRules, Rejection> {
        self.keys
            .get(key_id)
            .map(|r| &**r)
            .ok_or_else(|| reject(format!("this node serves no key {key_id}")))
    }
}

#[async_trait]
impl ProposalValidator for KeyRules {
    async fn check_keygen(
        &self,
        proposer: NodeId,
        p: &KeygenProposal,
    ) -> std::result::Result<Vec<u8>, Rejection> {
        self.rules_for(&p.key_id)?.check_keygen(proposer, p).await
    }

    async fn check_sign(
        &self,
        proposer: NodeId,
        p: &SignProposal,
        key: &PublicKeyInfo,
    ) -> std::result::Result<SigningInput, Rejection> {
        self.rules_for(&p.key_id)?
            .check_sign(proposer, p, key)
            .await
    }

    async fn check_reshare(
        &self,
        proposer: NodeId,
        p: &ReshareProposal,
        current: Option<&PublicKeyInfo>,
    ) -> std::result::Result<Vec<u8>, Rejection> {
        self.rules_for(&p.old.key_id)?
            .check_reshare(proposer, p, current)
            .await
    }

    async fn committed(&self, key_id: &KeyId, state: &[u8]) {
        if let Some(rules) = self.keys.get(key_id) {
            rules.committed(key_id, state).await;
        }
    }
}

/// Paillier primes: generated in the background, or (feature `insecure-test-primes`) the
/// public test fixture.
fn prime_source(config: &PrimeSourceConfig) -> Result<Arc<dyn PrimeSource>> {
    match config {
        PrimeSourceConfig::Generate => Ok(Arc::new(PrimePool::spawn(1))),
        #[cfg(feature = "insecure-test-primes")]
        PrimeSourceConfig::InsecureFixture { index } => {
            if *index >= tss_core::InsecureTestPrimes::available() {
                return Err(Error::ConfigInvalid {
                    field: "tss.insecure_test_primes_index".into(),
                    reason: format!(
                        "the fixture has only {} pairs",
                        tss_core::InsecureTestPrimes::available()
                    ),
                });
            }
            tracing::warn!(
                index,
                "USING PUBLIC INSECURE TEST PRIMES: anyone can read this node's Paillier \
                 secret key. For tests and devnets ONLY, never with real funds."
            );
            Ok(Arc::new(tss_core::InsecureTestPrimes::new(*index)))
        }
        #[cfg(not(feature = "insecure-test-primes"))]
        PrimeSourceConfig::InsecureFixture { .. } => Err(Error::ConfigInvalid {
            field: "tss.insecure_test_primes_index".into(),
            reason: "this build has no insecure test primes (feature insecure-test-primes)".into(),
        }),
    }
}

/// One key the node serves: its L1 role and reader, the pool state committed with it,
/// and what its L1 follower does.
struct KeyContext {
    key_id: KeyId,
    settings: KeySettings,
    state: Arc<Mutex<Option<PoolState>>>,
    /// This key's L1 reader (the staking contract and the key's own inbox and role).
    l1: Arc<L1Reader>,
    /// The latest L1 view read by the key's follower loop.
    l1_latest: Mutex<Option<L1View>>,
    /// What the key's follower loop is doing, for `GET /status`.
    membership: Mutex<String>,
    batches: Option<Arc<BatchDuty>>,
    metrics: KeyMetrics,
}

struct Inner {
    id: NodeId,
    pool_node: PoolNode,
    /// The keys, the default key (of `/key` and `/sign`) first.
    keys: Vec<Arc<KeyContext>>,
    rules: PoolRules,
    l1_settings: crate::config::L1Settings,
    raw_digest_signing: bool,
    /// Keygen and reshare runs this node takes part in now (of any key), and when one
    /// last started or ended: the next member in line waits while the pool is busy with
    /// a change.
    membership_runs: Mutex<(usize, Option<Instant>)>,
    metrics: Arc<Metrics>,
    epoch_length: Duration,
    epoch_seed: [u8; 32],
    transport_kind: String,
}

/// A running sequencer node: one pool, one or more keys ([`KeyNode`]). The methods that
/// name no key act on the default key (the first of [`NodeSettings::keys`]). Cheap to
/// clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}

/// One key of a running node ([`Node::key_node`]): its share, committed pool, follower
/// status, signing and deletion. Cheap to clone.
#[derive(Clone)]
pub struct KeyNode {
    node: Node,
    key: Arc<KeyContext>,
}

impl std::fmt::Debug for KeyNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyNode")
            .field("node", &self.node.inner.id)
            .field("key_id", &self.key.key_id)
            .field("role", &self.key.settings.role)
            .finish_non_exhaustive()
    }
}

/// A signature over a batch digest and who made it.
#[derive(Clone, Debug)]
pub struct SignOutcome {
    /// `(r, s, v)`.
    pub signature: EthSignature,
    /// The signers, in protocol order.
    pub signers: Vec<NodeId>,
    /// Members left out: set aside by an earlier attempt (silent, cut off, refusing or
    /// failing) or passed over as down.
    pub skipped: Vec<NodeId>,
    /// The key's address (the signature recovers to it: checked).
    pub address: String,
    /// Key generation used.
    pub generation: u64,
}

/// Public view of the key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyView {
    /// Key name.
    pub key_id: String,
    /// Share generation.
    pub generation: u64,
    /// Compressed secp256k1 public key, `0x` hex.
    pub public_key: String,
    /// EIP-55 Ethereum address.
    pub address: String,
    /// Committee members (hex node ids) in order.
    pub committee: Vec<String>,
    /// Signers needed.
    pub threshold: u16,
}

/// A pool member as shown by the API.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemberView {
    /// Hex node id.
    pub node_id: String,
    /// Stake in gwei (L1 stakes are wei; see [`crate::pool::stake_from_wei`]).
    pub stake: u64,
}

/// Node status.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusView {
    /// This node's id.
    pub node_id: String,
    /// `libp2p` or `in-memory`.
    pub transport: String,
    /// Current epoch.
    pub epoch: u64,
    /// This epoch's block producer (drawn by stake from the committed pool).
    pub block_producer: Option<String>,
    /// Whether this node is it.
    pub is_block_producer: bool,
    /// Whether this node is a member of the committed pool and holds a share.
    pub is_member: bool,
    /// Pool version (the key generation the committed pool belongs to).
    pub pool_version: u64,
    /// The L1 height the committed pool was read at.
    pub pool_l1_height: Option<u64>,
    /// The latest confirmed L1 height this node read.
    pub l1_confirmed_height: Option<u64>,
    /// What the node does about membership, e.g. why nothing happens.
    pub membership: String,
    /// Signers needed (> 2/3 of the pool).
    pub threshold: usize,
    /// Members of the committed pool.
    pub members: Vec<MemberView>,
    /// The key, if held.
    pub key: Option<KeyView>,
    /// Signatures made.
    pub signatures: u64,
    /// With `[batches]`: who may propose the inbox's next batch now (epoch, failover
    /// level), as last computed from the confirmed L1 view.
    pub batch_producer: Option<crate::producer::ProducerView>,
    /// With `[batches]`: the last batch this node produced and sent.
    pub last_batch: Option<crate::producer::SubmittedView>,
    /// Members that signing runs proposed by this node found silent, cut off, refusing or
    /// failing in the last minute (they are picked last), most recent first.
    pub unresponsive_members: Vec<UnresponsiveView>,
    /// Presignatures of this node's own ready for its next requests (`pool.presignatures`).
    pub presignatures_ready: usize,
    /// Every key this node serves. The key, pool, membership, producer and presignature
    /// fields above are the default key's; `signatures`, `unresponsive_members`,
    /// `transport` and `node_id` are the node's.
    pub keys: Vec<KeyStatusView>,
}

/// One key as `GET /keys/{id}` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyStatusView {
    /// The key's id.
    pub key_id: String,
    /// Its L1 role's name.
    pub role: String,
    /// The inbox it appends to.
    pub inbox: String,
    /// Its threshold protocol (`cggmp21` or `dkls23`).
    pub protocol: tss_core::Protocol,
    /// The address registered on L1 for its role, at the latest confirmed height read.
    pub registered_address: Option<String>,
    /// Pool version (the key generation the committed pool belongs to).
    pub pool_version: u64,
    /// The L1 height the committed pool was read at.
    pub pool_l1_height: Option<u64>,
    /// The latest confirmed L1 height the key's follower read.
    pub l1_confirmed_height: Option<u64>,
    /// What the key's follower does about membership, e.g. why nothing happens.
    pub membership: String,
    /// Whether this node is a member of the key's committed pool and holds a share.
    pub is_member: bool,
    /// Signers needed (> 2/3 of the pool).
    pub threshold: usize,
    /// Members of the committed pool.
    pub members: Vec<MemberView>,
    /// The key, if held.
    pub key: Option<KeyView>,
    /// Presignatures of this node's own ready for its next requests with this key.
    pub presignatures_ready: usize,
    /// With `[batches]`: who may propose the key's inbox's next batch now.
    pub batch_producer: Option<crate::producer::ProducerView>,
    /// With `[batches]`: the last batch this node produced for the key's inbox.
    pub last_batch: Option<crate::producer::SubmittedView>,
}

/// A member set aside by signing runs this node proposed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UnresponsiveView {
    /// Hex node id.
    pub node_id: String,
    /// Seconds since it was last found unresponsive.
    pub seconds_ago: u64,
}

fn key_view(share: &KeyShare) -> KeyView {
    let info = share.public_info();
    KeyView {
        key_id: share.key_id().to_string(),
        generation: share.generation().0,
        public_key: format!("0x{}", hex::encode(&info.public_key)),
        address: share.ethereum_address().to_checksum_string(),
        committee: share
            .committee()
            .members()
            .iter()
            .map(|m| m.to_hex())
            .collect(),
        threshold: share.committee().threshold(),
    }
}

fn map_tss(e: TssError) -> Error {
    match e {
        TssError::Aborted { by, reason, .. } => Error::Rejected { by, reason },
        TssError::InvalidProposal { from, reason } => Error::InvalidProposal { from, reason },
        TssError::Busy(_) => {
            Error::Conflict("a keygen or reshare is already running on this node".into())
        }
        TssError::NoShare(key) => Error::NoKey(key.to_string()),
        TssError::ReshareNotConfirmed { missing, .. } => Error::Conflict(format!(
            "reshare not confirmed by every new member (missing {missing:?}); this node kept its old key generation"
        )),
        // The share store is the keystore: its error keeps its type.
        TssError::Store(e) => match e.downcast::<keystore::KeystoreError>() {
            Ok(e) => Error::Keystore(*e),
            Err(e) => Error::Tss(TssError::Store(e)),
        },
        other => Error::Tss(other),
    }
}

/// A change the follower loop saw on L1 and has not made yet.
#[derive(Debug)]
struct PendingChange {
    /// The committee L1 calls for.
    committee: Vec<NodeId>,
    /// When this node first saw it.
    since: Instant,
    /// This node's failed proposals of it.
    failures: u32,
    /// After a failed proposal, when this node may propose it again.
    retry_at: Option<Instant>,
    /// A member that refused this node's keygen of the change because it already holds
    /// the key, and when: the pool has it, so this node waits to be given a share
    /// instead, for [`KEY_HELD_PAUSE`] (the claim is one member's word: a liar, or a
    /// member whose stale share is deleted since, stops this node's keygen only for a
    /// while).
    key_held_by: Option<(NodeId, Instant)>,
}

/// How long a node without a share waits, after a member said it holds the key, before
/// it proposes the keygen again.
const KEY_HELD_PAUSE: Duration = Duration::from_secs(120);

/// The longest pause between two failed proposals of the same change.
const RETRY_PAUSE_MAX: Duration = Duration::from_secs(8);

impl PendingChange {
    /// The pause after the `failures`-th failed proposal: 0.5 s, doubling, at most
    /// [`RETRY_PAUSE_MAX`]. A proposal the followers refuse (say a joiner waiting for
    /// the key's address on L1) costs them a validation each time: the pause keeps a
    /// change L1 does not allow yet from flooding the pool with refused runs.
    fn retry_pause(failures: u32) -> Duration {
        Duration::from_millis(500)
            .saturating_mul(1 << failures.saturating_sub(1).min(5))
            .min(RETRY_PAUSE_MAX)
    }
}

/// What the follower loop would do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    Keygen,
    Reshare,
}

impl Node {
    /// Starts a node on `transport`: opens the keystore, and for each key of
    /// `settings.keys` loads its active share and the pool state committed with it and
    /// connects its L1 reader (the staking contract and the key's inbox); starts the pool
    /// layer with every key, and spawns the event listener, the epoch ticker and, per key,
    /// the L1 follower, the presignature refill and (with `[batches]`) the batch producer.
    /// `identity` is the key of the transport's identity (it signs reshare confirmations;
    /// for libp2p, the node's `Libp2pIdentity`).
    pub async fn start(
        settings: NodeSettings,
        transport: Arc<dyn Transport>,
        identity: Arc<dyn tss_core::IdentitySigner>,
        transport_kind: &str,
    ) -> Result<Node> {
        let id = transport.local_node();
        crate::config::check_keys("keys", &settings.keys)?;
        let store = crate::keys::open_store(&settings).await?;
        let primes = prime_source(&settings.primes)?;
        let provider = crate::l1::connect(&settings.l1.rpc_url)?;
        let metrics = Arc::new(Metrics::default());
        let mut keys = Vec::with_capacity(settings.keys.len());
        let mut rules = Vec::with_capacity(settings.keys.len());
        for key in &settings.keys {
            let key_id = KeyId::new(key.id.clone())?;
            let state = match store
                .load_state(&key_id)
                .await
                .map_err(|e| map_tss(TssError::Store(e)))?
            {
                Some(bytes) if !bytes.is_empty() => {
                    Some(PoolState::decode(&bytes).map_err(|e| {
                        Error::Conflict(format!(
                            "the pool state of key {key_id} in the keystore is corrupt: {e}"
                        ))
                    })?)
                }
                _ => None,
            };
            let state = Arc::new(Mutex::new(state));
            let l1 = Arc::new(L1Reader::new(
                provider.clone(),
                Deployment {
                    inbox: key.inbox,
                    role: key.role_id(),
                    ..settings.l1.deployment
                },
                settings.l1.confirmations,
            ));
            let batches = match &settings.batches {
                Some(b) => Some(Arc::new(
                    BatchDuty::connect(
                        id,
                        key_id.clone(),
                        b.clone(),
                        settings.epoch_seed,
                        l1.clone(),
                        state.clone(),
                        metrics.clone(),
                    )
                    .await?,
                )),
                None => None,
            };
            rules.push(SequencerRules {
                me: id,
                key_id: key_id.clone(),
                rules: settings.rules.clone(),
                state: state.clone(),
                l1: l1.clone(),
                proposal_wait: settings.l1.proposal_wait,
                raw_digest_signing: settings.unsafe_raw_digest_signing,
                batches: batches.clone(),
            });
            keys.push(Arc::new(KeyContext {
                metrics: metrics.for_key(key_id.as_str()),
                key_id,
                settings: key.clone(),
                state,
                l1,
                l1_latest: Mutex::new(None),
                membership: Mutex::new("starting: L1 not read yet".into()),
                batches,
            }));
        }
        let key_ids: Vec<KeyId> = keys.iter().map(|k| k.key_id.clone()).collect();

        let mut participants: Vec<NodeId> = settings.peers.clone();
        participants.push(id);
        let mut config = PoolConfig::new(participants)
            .with_session_idle_timeout(settings.session_idle_timeout)
            .with_signer_silence_timeout(settings.signer_silence)
            .with_sign_attempts(settings.sign_attempts);
        for key in &keys {
            config = config.with_protocol(key.key_id.clone(), key.settings.protocol);
        }
        let pool_node = PoolNode::start(
            config,
            transport,
            identity,
            Arc::new(KeyRules::new(rules)),
            store,
            primes,
            &key_ids,
        )
        .await
        .map_err(map_tss)?;
        for key_id in &key_ids {
            if let Some(share) = pool_node.share(key_id) {
                tracing::info!(key = %key_id, generation = share.generation().get(), address = %share.ethereum_address(), "loaded key share");
            }
        }
        let node = Node {
            inner: Arc::new(Inner {
                id,
                pool_node,
                keys,
                rules: settings.rules.clone(),
                l1_settings: settings.l1.clone(),
                raw_digest_signing: settings.unsafe_raw_digest_signing,
                membership_runs: Mutex::new((0, None)),
                metrics,
                epoch_length: settings.epoch_length,
                epoch_seed: settings.epoch_seed,
                transport_kind: transport_kind.to_string(),
            }),
        };
        let on_shutdown = node.inner.pool_node.clone();
        let shutdown = settings.shutdown.clone();
        // Tracked with the node's loops: whoever waits for them (the devnet, `run`) also
        // waits until the pool layer's runs have ended, before the runtime goes.
        settings.tasks.spawn(async move {
            shutdown.cancelled().await;
            on_shutdown.stopped().await;
        });
        settings.spawn_until_shutdown(follow_events(
            node.clone(),
            node.inner.pool_node.subscribe(),
        ));
        settings.spawn_until_shutdown(epoch_ticker(node.clone()));
        for key in node.keys() {
            if settings.presignatures > 0 {
                settings.spawn_until_shutdown(refill_presignatures(
                    key.clone(),
                    settings.presignatures,
                ));
            }
            if let Some(duty) = key.key.batches.clone() {
                settings.spawn_until_shutdown(crate::producer::produce(
                    duty,
                    node.inner.pool_node.clone(),
                    settings.l1.poll_interval,
                ));
            }
            settings.spawn_until_shutdown(follow_l1(key));
        }
        tracing::info!(node = %id, keys = ?key_ids, "node started");
        Ok(node)
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The keys this node serves, the default key first.
    pub fn keys(&self) -> Vec<KeyNode> {
        self.inner
            .keys
            .iter()
            .map(|key| KeyNode {
                node: self.clone(),
                key: key.clone(),
            })
            .collect()
    }

    /// The key `key_id`, if this node serves it.
    pub fn key_node(&self, key_id: &str) -> Option<KeyNode> {
        self.keys().into_iter().find(|k| k.key_id() == key_id)
    }

    /// The default key (the first of [`NodeSettings::keys`]).
    pub fn default_key(&self) -> KeyNode {
        KeyNode {
            node: self.clone(),
            key: self.inner.keys[0].clone(),
        }
    }

    /// Name of the default key.
    pub fn key_id(&self) -> &str {
        self.inner.keys[0].key_id.as_str()
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// With `[batches]`: the default key's batch duties (the producer schedule and the
    /// check it runs as a follower).
    pub fn batch_duty(&self) -> Option<&Arc<BatchDuty>> {
        self.inner.keys[0].batches.as_ref()
    }

    /// The library's pool node underneath.
    pub fn pool_node(&self) -> &PoolNode {
        &self.inner.pool_node
    }

    /// The default key's L1 reader.
    pub fn l1(&self) -> &Arc<L1Reader> {
        &self.inner.keys[0].l1
    }

    /// The pool state committed with the default key's current generation (`None`
    /// before keygen).
    pub fn pool_state(&self) -> Option<PoolState> {
        self.default_key().pool_state()
    }

    /// The pool committed with the default key (`None` before keygen).
    pub fn pool(&self) -> Option<Pool> {
        self.default_key().pool()
    }

    /// What the default key's L1 follower is doing (shown in `GET /status`).
    pub fn membership_status(&self) -> String {
        self.default_key().membership_status()
    }

    /// The current epoch: wall-clock time divided by the epoch length.
    pub fn epoch(&self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        (now / self.inner.epoch_length.as_millis().max(1)) as u64
    }

    /// The block producer of `epoch`, drawn by stake from the pool committed with the
    /// default key.
    pub fn block_producer(&self, epoch: u64) -> Option<NodeId> {
        self.default_key().block_producer(epoch)
    }

    /// The default key, if this node holds a share.
    pub fn key(&self) -> Option<KeyView> {
        self.default_key().key()
    }

    /// Status for `GET /status`: the node, its default key, and every key.
    pub fn status(&self) -> StatusView {
        // The default key is the first: its status is computed once.
        let keys: Vec<KeyStatusView> = self.keys().iter().map(KeyNode::status).collect();
        let default = keys[0].clone();
        // With batches, the epoch is the inbox's next L2 block's and the producer the
        // schedule's (failover included); without, the wall-clock epoch's draw.
        let (epoch, producer) = match &default.batch_producer {
            Some(v) => (v.epoch, NodeId::from_hex(&v.producer).ok()),
            None => {
                let epoch = self.epoch();
                (epoch, self.block_producer(epoch))
            }
        };
        StatusView {
            presignatures_ready: default.presignatures_ready,
            batch_producer: default.batch_producer,
            last_batch: default.last_batch,
            unresponsive_members: self
                .inner
                .pool_node
                .unresponsive_members()
                .into_iter()
                .map(|(node, ago)| UnresponsiveView {
                    node_id: node.to_hex(),
                    seconds_ago: ago.as_secs(),
                })
                .collect(),
            node_id: self.inner.id.to_hex(),
            transport: self.inner.transport_kind.clone(),
            epoch,
            block_producer: producer.map(|p| p.to_hex()),
            is_block_producer: producer == Some(self.inner.id),
            is_member: default.is_member,
            pool_version: default.pool_version,
            pool_l1_height: default.pool_l1_height,
            l1_confirmed_height: default.l1_confirmed_height,
            membership: default.membership,
            threshold: default.threshold,
            members: default.members,
            key: default.key,
            signatures: self.inner.metrics.signatures(),
            keys,
        }
    }

    /// Proposes signing of a raw 32-byte digest with the default key: see
    /// [`KeyNode::sign`].
    pub async fn sign(&self, digest: [u8; 32]) -> Result<SignOutcome> {
        self.default_key().sign(digest).await
    }

    /// Deletes this node's share of the default key: see [`KeyNode::delete_key`].
    pub async fn delete_key(&self, force: bool) -> Result<()> {
        self.default_key().delete_key(force).await
    }
}

impl KeyNode {
    /// The key's id.
    pub fn key_id(&self) -> &str {
        self.key.key_id.as_str()
    }

    /// The key's settings (id, L1 role, inbox).
    pub fn settings(&self) -> &KeySettings {
        &self.key.settings
    }

    /// The node serving it.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// With `[batches]`: the key's batch duties on its inbox.
    pub fn batch_duty(&self) -> Option<&Arc<BatchDuty>> {
        self.key.batches.as_ref()
    }

    /// The key's L1 reader (the staking contract, the key's inbox and role).
    pub fn l1(&self) -> &Arc<L1Reader> {
        &self.key.l1
    }

    fn share(&self) -> Option<Arc<KeyShare>> {
        self.node.inner.pool_node.share(&self.key.key_id)
    }

    /// The pool state committed with the key's current generation (`None` before keygen).
    pub fn pool_state(&self) -> Option<PoolState> {
        self.key.state.lock().clone()
    }

    /// The committed pool (`None` before keygen).
    pub fn pool(&self) -> Option<Pool> {
        self.pool_state().and_then(|s| s.pool())
    }

    /// What the key's L1 follower is doing.
    pub fn membership_status(&self) -> String {
        self.key.membership.lock().clone()
    }

    fn set_membership(&self, text: String) {
        let mut m = self.key.membership.lock();
        if *m != text {
            tracing::info!(key = %self.key.key_id, status = %text, "membership");
            *m = text;
        }
    }

    /// The block producer of `epoch`, drawn by stake from the key's committed pool.
    pub fn block_producer(&self, epoch: u64) -> Option<NodeId> {
        self.pool()?
            .block_producer(&self.node.inner.epoch_seed, epoch)
    }

    /// The key, if this node holds a share.
    pub fn key(&self) -> Option<KeyView> {
        self.share().as_deref().map(key_view)
    }

    /// The key's status (`GET /keys/{id}`).
    pub fn status(&self) -> KeyStatusView {
        let state = self.pool_state();
        let pool = state.as_ref().and_then(|s| s.pool());
        let share = self.share();
        let (batch_producer, last_batch) = self
            .key
            .batches
            .as_ref()
            .map(|d| d.status())
            .unwrap_or_default();
        let latest = self.key.l1_latest.lock().clone();
        KeyStatusView {
            key_id: self.key_id().to_string(),
            role: self.key.settings.role.clone(),
            inbox: self.key.settings.inbox.to_checksum(None),
            protocol: self.key.settings.protocol,
            registered_address: latest
                .as_ref()
                .and_then(|v| v.mpc_address)
                .map(|a| a.to_checksum(None)),
            pool_version: state.as_ref().map_or(0, |s| s.version),
            pool_l1_height: state.as_ref().map(|s| s.l1_height),
            l1_confirmed_height: latest.as_ref().map(|v| v.height),
            membership: self.membership_status(),
            is_member: share.is_some()
                && pool
                    .as_ref()
                    .is_some_and(|p| p.is_member(&self.node.inner.id)),
            threshold: pool.as_ref().map_or(0, |p| p.threshold()),
            members: state
                .as_ref()
                .map(|s| {
                    s.members
                        .iter()
                        .map(|m| MemberView {
                            node_id: m.node.to_hex(),
                            stake: m.stake,
                        })
                        .collect()
                })
                .unwrap_or_default(),
            key: share.as_deref().map(key_view),
            presignatures_ready: self
                .node
                .inner
                .pool_node
                .presignatures_ready(&self.key.key_id),
            batch_producer,
            last_batch,
        }
    }

    /// Proposes signing of a raw 32-byte digest with this key (only with
    /// `rpc.unsafe_raw_digest_signing`): this node and `t - 1` live members
    /// ([`PoolNode::propose_sign`] picks them and retries without a member that fails),
    /// each signing only if its own flag is on too. The signature is
    /// checked to recover to the key's address.
    pub async fn sign(&self, digest: [u8; 32]) -> Result<SignOutcome> {
        if !self.node.inner.raw_digest_signing {
            return Err(Error::Disabled(
                "raw-digest signing is off (rpc.unsafe_raw_digest_signing = false)".into(),
            ));
        }
        let request = serde_json::to_vec(&SignRequest { digest })
            .map_err(|e| Error::Internal(e.to_string()))?;
        let out = self
            .node
            .inner
            .pool_node
            .propose_sign(&self.key.key_id, request, None)
            .await
            .map_err(map_tss)?;
        Ok(SignOutcome {
            signature: out.signature,
            signers: out.signers,
            skipped: out.skipped,
            address: out.address.to_checksum_string(),
            generation: out.generation.get(),
        })
    }

    /// Proposes keygen for `desired` (the pool L1 records at `l1_height`).
    async fn propose_keygen(&self, desired: &Pool, l1_height: u64) -> Result<KeyView> {
        let committee = desired.committee()?;
        tracing::info!(
            key = %self.key.key_id,
            n = committee.n(),
            t = committee.threshold(),
            l1_height,
            "proposing keygen"
        );
        let context = MembershipProposal {
            l1_height,
            members: desired.members().to_vec(),
        };
        let share = self
            .node
            .inner
            .pool_node
            .propose_keygen(self.key.key_id.clone(), committee, context.encode())
            .await
            .map_err(map_tss)?;
        let view = key_view(&share);
        tracing::info!(key = %self.key.key_id, address = %view.address, "keygen complete; share stored");
        Ok(view)
    }

    /// Proposes a reshare of the key to `desired` (the pool L1 records at `l1_height`).
    /// With `leavers_deal`, members that leave deal first (after this node): a dealer
    /// that leaves retires its share when the run commits, so a sequencer that unlocked
    /// does not keep a share of the key. A leaver may already be offline, so a retry
    /// after a failed attempt passes `false` (members that stay deal).
    async fn propose_reshare(
        &self,
        desired: &Pool,
        l1_height: u64,
        leavers_deal: bool,
    ) -> Result<()> {
        let share = self
            .share()
            .ok_or_else(|| Error::NoKey(self.key.key_id.to_string()))?;
        let new_committee = desired.committee()?;
        let old = share.committee();
        let me = self.node.inner.id;
        let dealers = if leavers_deal {
            let mut order: Vec<NodeId> = old.index_of(&me).map(|_| me).into_iter().collect();
            let (leaving, staying): (Vec<NodeId>, Vec<NodeId>) = old
                .members()
                .iter()
                .copied()
                .filter(|m| *m != me)
                .partition(|m| new_committee.index_of(m).is_none());
            order.extend(leaving);
            order.extend(staying);
            order.truncate(usize::from(old.threshold()));
            order
        } else {
            // This node first, then members that stay, then (only if needed to reach the
            // old threshold) members that leave.
            tss_core::pool::default_dealers(old, me, &new_committee)
        };
        let context = MembershipProposal {
            l1_height,
            members: desired.members().to_vec(),
        };
        tracing::info!(
            key = %self.key.key_id,
            l1_height,
            n = new_committee.n(),
            "proposing reshare to the L1 committee"
        );
        self.node
            .inner
            .pool_node
            .propose_reshare(
                &self.key.key_id,
                new_committee,
                Some(dealers),
                context.encode(),
            )
            .await
            .map_err(map_tss)?;
        Ok(())
    }

    /// Deletes this node's share of the key (every generation) from the keystore and
    /// memory. A pool member must pass `force` (deleting a member's share weakens the
    /// pool).
    pub async fn delete_key(&self, force: bool) -> Result<()> {
        let state = self.pool_state();
        let me = self.node.inner.id;
        let member = state
            .as_ref()
            .is_some_and(|s| s.members.iter().any(|m| m.node == me));
        if self.share().is_some() && member && !force {
            return Err(Error::Conflict(
                "this node is a pool member: unlock its stake on L1 first, or pass force=true"
                    .into(),
            ));
        }
        let existed = self
            .node
            .inner
            .pool_node
            .delete_key(
                &self.key.key_id,
                &state.map(|s| s.encode()).unwrap_or_default(),
            )
            .await
            .map_err(map_tss)?;
        if !existed {
            return Err(Error::NoKey(self.key.key_id.to_string()));
        }
        tracing::info!(key = %self.key.key_id, "key share deleted");
        Ok(())
    }

    /// One round of the key's L1 follower: reads the latest confirmed view and, if this
    /// node is the one in line, proposes the keygen or reshare it calls for. `pending`
    /// is the change seen and not made yet (when it was first seen picks who is in line).
    async fn follow_l1_once(&self, pending: &mut Option<PendingChange>) {
        let inner = &self.node.inner;
        let view = match self.key.l1.latest().await {
            Ok(v) => v,
            Err(e) => {
                self.set_membership(format!("L1 not readable: {e}"));
                return;
            }
        };
        let h = view.height;
        *self.key.l1_latest.lock() = Some(view.clone());
        let desired = match desired_pool(&inner.rules, &view) {
            Ok(p) => p,
            Err(e) => {
                *pending = None;
                self.set_membership(format!(
                    "waiting: L1 at height {h} has {} locked sequencer(s), no valid pool ({e})",
                    view.members.len()
                ));
                return;
            }
        };
        let wanted = desired.member_ids();
        let share = self.share();
        let (kind, in_line) = match (&share, self.pool_state()) {
            (Some(s), _) if s.committee().members() == wanted.as_slice() => {
                *pending = None;
                self.set_membership(format!(
                    "in sync with L1 at height {h}: {} members",
                    wanted.len()
                ));
                return;
            }
            (Some(s), _) => (Pending::Reshare, s.committee().members().to_vec()),
            (None, None) if view.mpc_address.is_none() => (Pending::Keygen, wanted.clone()),
            (None, _) => {
                *pending = None;
                let joining = wanted.contains(&inner.id);
                self.set_membership(if joining {
                    format!("locked on L1 at height {h}; waiting to be given a share")
                } else {
                    "not a pool member".into()
                });
                return;
            }
        };
        let change = match pending {
            Some(p) if p.committee == wanted => p,
            _ => pending.insert(PendingChange {
                committee: wanted.clone(),
                since: Instant::now(),
                failures: 0,
                retry_at: None,
                key_held_by: None,
            }),
        };
        if change
            .key_held_by
            .is_some_and(|(_, at)| at.elapsed() >= KEY_HELD_PAUSE)
        {
            change.key_held_by = None;
        }
        if let (Pending::Keygen, Some((holder, _))) = (kind, change.key_held_by) {
            // Keygen was only this node's guess (no share here, no address registered for
            // the key's role): a member holds the key, so it is a reshare this node waits
            // for, once L1 registers the key's address.
            self.set_membership(format!(
                "locked on L1 at height {h}; the pool already holds this key ({} said so): \
                 waiting to be given a share",
                holder.to_hex()
            ));
            return;
        }
        let since = change.since;
        // While a keygen or reshare runs here, or shortly after one, the member in line
        // is not passed over.
        let (active, last_run) = *inner.membership_runs.lock();
        let since = if active > 0 {
            Instant::now()
        } else {
            last_run.map_or(since, |t| t.max(since))
        };
        let mut in_line = in_line;
        in_line.sort();
        let slot = since.elapsed().as_secs() / inner.l1_settings.leader_timeout.as_secs().max(1);
        let leader = in_line[(slot as usize) % in_line.len()];
        if leader != inner.id {
            self.set_membership(format!(
                "{kind:?} to the {} members locked at L1 height {h} pending; {} proposes",
                wanted.len(),
                leader.to_hex()
            ));
            return;
        }
        if change.retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        self.set_membership(format!(
            "proposing {kind:?} to the {} members locked at L1 height {h}",
            wanted.len()
        ));
        let started = Instant::now();
        let outcome = match kind {
            Pending::Keygen => self.propose_keygen(&desired, h).await.map(|_| ()),
            Pending::Reshare => {
                self.propose_reshare(&desired, h, change.failures == 0)
                    .await
            }
        };
        if let Err(Error::Rejected { by, reason }) = &outcome {
            if kind == Pending::Keygen && reason.contains(tss_core::pool::ALREADY_HOLDS_A_SHARE) {
                change.key_held_by = Some((*by, Instant::now()));
            }
        }
        if outcome.is_err() {
            change.failures += 1;
            change.retry_at = Some(Instant::now() + PendingChange::retry_pause(change.failures));
        }
        match outcome {
            Ok(()) => tracing::info!(
                key = %self.key.key_id,
                ?kind,
                l1_height = h,
                secs = started.elapsed().as_secs(),
                "membership change committed"
            ),
            Err(e) => {
                tracing::warn!(key = %self.key.key_id, ?kind, l1_height = h, error = %e, "membership change failed; retrying");
                self.set_membership(format!("{kind:?} at L1 height {h} failed: {e}; retrying"));
            }
        }
    }
}

/// Follows L1 for one key: see [`KeyNode::follow_l1_once`].
async fn follow_l1(key: KeyNode) {
    let mut pending = None;
    loop {
        key.follow_l1_once(&mut pending).await;
        tokio::time::sleep(key.node.inner.l1_settings.poll_interval).await;
    }
}

fn protocol_of(p: ProtocolKind) -> Protocol {
    match p {
        ProtocolKind::Keygen => Protocol::Keygen,
        ProtocolKind::Reshare => Protocol::Reshare,
        _ => Protocol::Sign,
    }
}

/// Feeds the pool layer's events into the pool state and the metrics.
async fn follow_events(node: Node, mut events: tokio::sync::broadcast::Receiver<PoolEvent>) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let event = match events.recv().await {
            Ok(e) => e,
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "pool events lagged");
                continue;
            }
            Err(RecvError::Closed) => break,
        };
        let m = &node.inner.metrics;
        let membership_run = |started: bool| {
            let mut runs = node.inner.membership_runs.lock();
            runs.0 = if started {
                runs.0 + 1
            } else {
                runs.0.saturating_sub(1)
            };
            runs.1 = Some(Instant::now());
        };
        match &event {
            PoolEvent::RunStarted { protocol, .. } | PoolEvent::RunFinished { protocol, .. }
                if matches!(protocol, ProtocolKind::Keygen | ProtocolKind::Reshare) =>
            {
                membership_run(matches!(event, PoolEvent::RunStarted { .. }))
            }
            _ => {}
        }
        match event {
            PoolEvent::RunStarted { protocol, .. } => m.session_started(protocol_of(protocol)),
            PoolEvent::RunFinished {
                protocol,
                error,
                elapsed,
                eid,
                proposer,
                ..
            } => match error {
                None if protocol == ProtocolKind::Sign => m.signature_made(elapsed),
                None => {}
                Some(error) => {
                    m.session_failed(protocol_of(protocol));
                    tracing::warn!(%eid, %proposer, %protocol, %error, "run failed");
                }
            },
            PoolEvent::Refused {
                eid,
                proposer,
                reason,
            } => {
                m.proposal_rejected();
                tracing::warn!(%eid, %proposer, %reason, "proposal refused");
            }
            PoolEvent::ReplayRefused { eid, proposer } => {
                m.proposal_rejected();
                tracing::warn!(%eid, %proposer, "proposal of a run this node already had dropped (a replay)");
            }
            PoolEvent::SignerSkipped {
                eid,
                member,
                reason,
            } => {
                m.signer_skipped(&member);
                tracing::warn!(%eid, %member, %reason, "signer set aside; signing with another set");
            }
            PoolEvent::Misbehaved { eid, party, reason } => {
                tracing::warn!(%eid, %party, %reason, "a party misbehaved during a reshare's confirmation (ignored)");
            }
            PoolEvent::ReshareComplaints {
                eid,
                culprits,
                verdicts,
            } => {
                // Verdicts' Debug shows no share (redacted).
                tracing::warn!(%eid, ?culprits, ?verdicts, "a reshare aborted on judged complaints");
            }
            _ => {}
        }
    }
}

/// Keeps `target` presignatures of this node's own of one key ready while it holds a
/// share: one presign run at a time, with this node and `t - 1` live members (the set it
/// would sign with), so that a batch it proposes is signed in one round. Why this set: a
/// request is proposed by the node that produces the batch, and a presignature can be
/// spent only by its own proposer, so each node prepares for its own requests. They live
/// in memory only; a reshare or a restart drops them and this loop makes new ones.
///
/// With batch duties, only a likely producer refills
/// ([`crate::producer::BatchDuty::presignatures_wanted`]: the producer of the current
/// failover level, the next level's and the next epoch's, from the schedule every member
/// computes alike): at most three members propose presign runs (each with `t - 1`
/// co-signers), not the whole pool. A
/// member that becomes the producer without presignatures (an unforeseen fallback) signs
/// with full interactive signing. A member that stops being likely keeps what it made.
/// Without batch duties any member may propose, so every member refills.
async fn refill_presignatures(key: KeyNode, target: usize) {
    let pool_node = key.node.inner.pool_node.clone();
    let me = key.node.inner.id;
    let key_id = key.key.key_id.clone();
    let mut was_wanted = None;
    loop {
        let mut pause = Duration::from_secs(2);
        let wanted = key
            .key
            .batches
            .as_ref()
            .is_none_or(|duty| duty.presignatures_wanted(me));
        if was_wanted != Some(wanted) {
            tracing::debug!(key = %key_id, wanted, "presignature refill (only likely producers refill)");
            was_wanted = Some(wanted);
        }
        if wanted
            && pool_node.share(&key_id).is_some()
            && pool_node.presignatures_ready(&key_id) < target
        {
            match pool_node.propose_presign(&key_id).await {
                Ok(id) => {
                    pause = Duration::ZERO;
                    tracing::debug!(key = %key_id, %id, ready = pool_node.presignatures_ready(&key_id), "presignature made");
                }
                Err(e) => {
                    pause = Duration::from_secs(10);
                    tracing::info!(key = %key_id, error = %e, "presignature not made; trying again later");
                }
            }
        }
        key.key
            .metrics
            .set_presignatures_ready(pool_node.presignatures_ready(&key_id));
        tokio::time::sleep(pause).await;
    }
}

async fn epoch_ticker(node: Node) {
    let mut last = None;
    loop {
        let epoch = node.epoch();
        node.inner.metrics.set_epoch(epoch);
        for key in node.keys() {
            let pool = key.pool();
            let producer = pool
                .as_ref()
                .and_then(|p| p.block_producer(&node.inner.epoch_seed, epoch));
            key.key.metrics.set_state(
                pool.as_ref().map_or(0, |p| p.len()),
                key.share().map(|s| s.generation().get()),
                producer == Some(node.inner.id),
            );
            if last != Some(epoch) {
                if let Some(p) = producer {
                    tracing::debug!(key = %key.key.key_id, epoch, producer = %p, me = producer == Some(node.inner.id), "epoch");
                }
            }
        }
        last = Some(epoch);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_proposed_in_vain_is_retried_after_a_growing_pause_of_at_most_eight_seconds() {
        let pauses: Vec<u64> = (1..=7)
            .map(|f| PendingChange::retry_pause(f).as_millis() as u64)
            .collect();
        assert_eq!(pauses, [500, 1000, 2000, 4000, 8000, 8000, 8000]);
        assert_eq!(PendingChange::retry_pause(u32::MAX), RETRY_PAUSE_MAX);
    }

    #[test]
    fn store_errors_of_the_keystore_keep_their_type() {
        let e = map_tss(TssError::Store(Box::new(keystore::KeystoreError::Closed)));
        assert!(
            matches!(e, Error::Keystore(keystore::KeystoreError::Closed)),
            "{e:?}"
        );
        let other = map_tss(TssError::Store(Box::new(std::io::Error::other(
            "disk full",
        ))));
        assert!(matches!(other, Error::Tss(TssError::Store(_))), "{other:?}");
    }
}
