//! The node: the sequencer pool's rules on top of the library's pool layer.
//!
//! Coordination (proposals, aborts, commit order) is [`tss_core::pool::PoolNode`]'s job;
//! this module supplies what is specific to the sequencer pool:
//!
//! - [`SequencerRules`], the [`ProposalValidator`] every node runs before it joins a run:
//!   the proposer is a pool member; keygen is for exactly this node's view of the pool;
//!   a reshare applies a membership change that passes the pool rules to this node's view
//!   of the pool, and its new committee is exactly the result.
//! - The pool state (members, stakes, version), committed by the share store in the same
//!   atomic step as the key generation it belongs to, and restored from there on start.
//! - Views for the HTTP API, and metrics fed from the pool layer's events.
//!   The pool state in memory follows each commit (the validator's `committed` hook).
//!
//! A membership change takes effect only through a reshare in which `t_old` members of
//! the old committee (more than two thirds) take part after validating it, and every
//! new member confirmed storing its share before anyone activates or retires anything.
//!
//! Known gap (planned): followers co-sign any 32-byte digest a pool member proposes;
//! batch validation and membership from L1 come next.

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
use tss_core::{EthSignature, KeyId, KeyShare, PrimePool, ProtocolKind, PublicKeyInfo, TssError};

use crate::config::{NodeSettings, PrimeSourceConfig};
use crate::error::{Error, Result};
use crate::metrics::{Metrics, Protocol};
use crate::pool::{Change, Member, Pool};

/// The pool state committed with each key generation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct PoolState {
    version: u64,
    members: Vec<Member>,
}

impl PoolState {
    fn of(pool: &Pool) -> Self {
        Self {
            version: pool.version(),
            members: pool.members().to_vec(),
        }
    }
    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
    fn decode(bytes: &[u8]) -> std::result::Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}

/// What a signing request carries: today a 32-byte digest.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct SignRequest {
    digest: [u8; 32],
}

/// What a reshare proposal carries: the change and the pool it applies to.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct ReshareContext {
    change: Change,
    before: PoolState,
}

/// The sequencer pool's rules as a [`ProposalValidator`].
pub struct SequencerRules {
    me: NodeId,
    key_id: KeyId,
    pool: Arc<Mutex<Pool>>,
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

#[async_trait]
impl ProposalValidator for SequencerRules {
    async fn check_keygen(
        &self,
        proposer: NodeId,
        p: &KeygenProposal,
    ) -> std::result::Result<Vec<u8>, Rejection> {
        if p.key_id != self.key_id {
            return Err(reject(format!(
                "this pool serves key {}, not {}",
                self.key_id, p.key_id
            )));
        }
        let pool = self.pool.lock().clone();
        if !pool.is_member(&proposer) {
            return Err(reject("the proposer is not a pool member"));
        }
        let theirs = PoolState::decode(&p.context).map_err(reject)?;
        if theirs != PoolState::of(&pool) {
            return Err(reject("pool membership differs from this node's"));
        }
        if pool.committee().map_err(reject)? != p.committee {
            return Err(reject("the committee is not the pool"));
        }
        Ok(p.context.clone())
    }

    async fn check_sign(
        &self,
        proposer: NodeId,
        p: &SignProposal,
        _key: &PublicKeyInfo,
    ) -> std::result::Result<SigningInput, Rejection> {
        if p.key_id != self.key_id {
            return Err(reject(format!(
                "this pool serves key {}, not {}",
                self.key_id, p.key_id
            )));
        }
        if !self.pool.lock().is_member(&proposer) {
            return Err(reject("the proposer is not a pool member"));
        }
        let request: SignRequest = serde_json::from_slice(&p.request).map_err(reject)?;
        // Known gap (planned): the batch behind the digest is not validated yet.
        Ok(SigningInput::Digest(request.digest))
    }

    async fn check_reshare(
        &self,
        proposer: NodeId,
        p: &ReshareProposal,
        current: Option<&PublicKeyInfo>,
    ) -> std::result::Result<Vec<u8>, Rejection> {
        if p.old.key_id != self.key_id {
            return Err(reject(format!(
                "this pool serves key {}, not {}",
                self.key_id, p.old.key_id
            )));
        }
        let ctx: ReshareContext = serde_json::from_slice(&p.context).map_err(reject)?;
        let mut pool = self.pool.lock().clone();
        if PoolState::of(&pool) != ctx.before {
            // A joining node that holds nothing adopts the pool it is told about; the
            // reshare itself proves the old key facts against the dealers' commitments.
            // (Planned: check them against the pool's L1 record instead.)
            let joining = matches!(&ctx.change, Change::Join { node, .. } if *node == self.me);
            if current.is_none() && !pool.is_member(&self.me) && joining {
                pool = pool
                    .with_members(ctx.before.members.clone(), ctx.before.version)
                    .map_err(reject)?;
            } else {
                return Err(reject("pool membership differs from this node's"));
            }
        }
        if !pool.is_member(&proposer) {
            return Err(reject("the proposer is not a pool member"));
        }
        if p.old.committee.members() != pool.member_ids().as_slice() {
            return Err(reject("the old committee is not the pool"));
        }
        let new_pool = pool.apply(&ctx.change).map_err(reject)?;
        if new_pool.committee().map_err(reject)? != p.new_committee {
            return Err(reject("the new committee is not the pool after the change"));
        }
        Ok(PoolState::of(&new_pool).encode())
    }

    async fn committed(&self, key_id: &KeyId, state: &[u8]) {
        if *key_id != self.key_id {
            return;
        }
        match PoolState::decode(state) {
            Ok(saved) => {
                let mut pool = self.pool.lock();
                match pool.with_members(saved.members, saved.version) {
                    Ok(p) => *pool = p,
                    Err(e) => tracing::error!(error = %e, "committed pool state breaks the rules"),
                }
            }
            Err(e) => tracing::error!(error = %e, "committed pool state does not decode"),
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

struct Inner {
    id: NodeId,
    key_id: KeyId,
    pool_node: PoolNode,
    pool: Arc<Mutex<Pool>>,
    metrics: Arc<Metrics>,
    epoch_length: Duration,
    epoch_seed: [u8; 32],
    transport_kind: String,
}

/// A running sequencer node. Cheap to clone.
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

/// A signature over a batch digest and who made it.
#[derive(Clone, Debug)]
pub struct SignOutcome {
    /// `(r, s, v)`.
    pub signature: EthSignature,
    /// The signers, in protocol order.
    pub signers: Vec<NodeId>,
    /// The key's address (the signature recovers to it: checked).
    pub address: String,
    /// Key generation used.
    pub generation: u64,
}

/// Result of a membership change at the coordinator.
#[derive(Clone, Debug, Serialize)]
pub struct ChangeOutcome {
    /// Address before.
    pub address_before: String,
    /// Address after (equal: resharing keeps the key).
    pub address_after: String,
    /// New key generation (of the coordinator's share; `None` if it left).
    pub generation: Option<u64>,
    /// Pool members after the change.
    pub members: Vec<String>,
    /// Signing threshold after the change.
    pub threshold: usize,
    /// New members that confirmed they stored their share.
    pub confirmed_by: Vec<String>,
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
    /// Stake.
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
    /// This epoch's block producer.
    pub block_producer: Option<String>,
    /// Whether this node is it.
    pub is_block_producer: bool,
    /// Whether this node is a pool member.
    pub is_member: bool,
    /// Pool version.
    pub pool_version: u64,
    /// Signers needed (> 2/3 of the pool).
    pub threshold: usize,
    /// Members.
    pub members: Vec<MemberView>,
    /// The key, if held.
    pub key: Option<KeyView>,
    /// Signatures made.
    pub signatures: u64,
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

impl Node {
    /// Starts a node on `transport`: opens the keystore, loads the active key share and
    /// the pool state committed with it (or starts from genesis), starts the pool layer,
    /// and spawns the event listener, the epoch ticker and (if enabled) auto-keygen.
    /// `identity` is the key of the transport's identity (it signs reshare
    /// confirmations; for libp2p, the node's `Libp2pIdentity`).
    pub async fn start(
        settings: NodeSettings,
        transport: Arc<dyn Transport>,
        identity: Arc<dyn tss_core::IdentitySigner>,
        transport_kind: &str,
    ) -> Result<Node> {
        let id = transport.local_node();
        let key_id = KeyId::new(settings.key_id.clone())?;
        let store = crate::keys::open_store(&settings).await?;
        let genesis = Pool::new(settings.rules.clone(), settings.genesis.clone(), 0)?;
        let pool = match store
            .load_state(&key_id)
            .await
            .map_err(|e| map_tss(TssError::Store(e)))?
        {
            Some(bytes) => {
                let saved = PoolState::decode(&bytes).map_err(|e| {
                    Error::Conflict(format!("the pool state in the keystore is corrupt: {e}"))
                })?;
                genesis.with_members(saved.members, saved.version)?
            }
            None => genesis,
        };
        let pool = Arc::new(Mutex::new(pool));
        let primes = prime_source(&settings.primes)?;

        let mut participants: Vec<NodeId> = settings.peers.clone();
        participants.extend(settings.rules.whitelist.iter().copied());
        participants.extend(settings.genesis.iter().map(|m| m.node));
        participants.push(id);
        let config =
            PoolConfig::new(participants).with_session_idle_timeout(settings.session_idle_timeout);
        let rules = Arc::new(SequencerRules {
            me: id,
            key_id: key_id.clone(),
            pool: pool.clone(),
        });
        let pool_node = PoolNode::start(
            config,
            transport,
            identity,
            rules,
            store,
            primes,
            std::slice::from_ref(&key_id),
        )
        .await
        .map_err(map_tss)?;
        if let Some(share) = pool_node.share(&key_id) {
            tracing::info!(generation = share.generation().get(), address = %share.ethereum_address(), "loaded key share");
        }
        let node = Node {
            inner: Arc::new(Inner {
                id,
                key_id,
                pool_node,
                pool,
                metrics: Arc::new(Metrics::default()),
                epoch_length: settings.epoch_length,
                epoch_seed: settings.epoch_seed,
                transport_kind: transport_kind.to_string(),
            }),
        };
        let on_shutdown = node.inner.pool_node.clone();
        let shutdown = settings.shutdown.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            on_shutdown.shutdown();
        });
        settings.spawn_until_shutdown(follow_events(
            node.clone(),
            node.inner.pool_node.subscribe(),
        ));
        settings.spawn_until_shutdown(epoch_ticker(node.clone()));
        if settings.auto_keygen {
            settings.spawn_until_shutdown(auto_keygen(node.clone(), settings.auto_keygen_delay));
        }
        tracing::info!(node = %id, "node started");
        Ok(node)
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// Name of the shared key.
    pub fn key_id(&self) -> &str {
        self.inner.key_id.as_str()
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// The library's pool node underneath.
    pub fn pool_node(&self) -> &PoolNode {
        &self.inner.pool_node
    }

    fn share(&self) -> Option<Arc<KeyShare>> {
        self.inner.pool_node.share(&self.inner.key_id)
    }

    fn snapshot(&self) -> (Pool, Option<Arc<KeyShare>>) {
        (self.pool(), self.share())
    }

    /// The current pool.
    pub fn pool(&self) -> Pool {
        self.inner.pool.lock().clone()
    }

    /// The current epoch: wall-clock time divided by the epoch length.
    pub fn epoch(&self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        (now / self.inner.epoch_length.as_millis().max(1)) as u64
    }

    /// The block producer of `epoch` for the current pool.
    pub fn block_producer(&self, epoch: u64) -> Option<NodeId> {
        self.pool().block_producer(&self.inner.epoch_seed, epoch)
    }

    /// The key, if this node holds a share.
    pub fn key(&self) -> Option<KeyView> {
        self.share().as_deref().map(key_view)
    }

    /// Status for `GET /status`.
    pub fn status(&self) -> StatusView {
        let (pool, share) = self.snapshot();
        let epoch = self.epoch();
        let producer = pool.block_producer(&self.inner.epoch_seed, epoch);
        StatusView {
            node_id: self.inner.id.to_hex(),
            transport: self.inner.transport_kind.clone(),
            epoch,
            block_producer: producer.map(|p| p.to_hex()),
            is_block_producer: producer == Some(self.inner.id),
            is_member: pool.is_member(&self.inner.id),
            pool_version: pool.version(),
            threshold: pool.threshold(),
            members: pool
                .members()
                .iter()
                .map(|m| MemberView {
                    node_id: m.node.to_hex(),
                    stake: m.stake,
                })
                .collect(),
            key: share.as_deref().map(key_view),
            signatures: self.inner.metrics.signatures(),
        }
    }

    /// Proposes keygen for the current pool (this node must be a member and no key may
    /// exist yet).
    pub async fn propose_keygen(&self) -> Result<KeyView> {
        let (pool, share) = self.snapshot();
        if share.is_some() {
            return Err(Error::Conflict("a key already exists".into()));
        }
        if !pool.is_member(&self.inner.id) {
            return Err(Error::NotMember(self.inner.id));
        }
        let committee = pool.committee()?;
        tracing::info!(
            n = committee.n(),
            t = committee.threshold(),
            "proposing keygen"
        );
        let share = self
            .inner
            .pool_node
            .propose_keygen(
                self.inner.key_id.clone(),
                committee,
                PoolState::of(&pool).encode(),
            )
            .await
            .map_err(map_tss)?;
        let view = key_view(&share);
        tracing::info!(address = %view.address, "keygen complete; share stored");
        Ok(view)
    }

    /// Proposes signing of a 32-byte batch digest: this node and the next `t - 1`
    /// committee members (in committee order) sign. The signature is checked to recover
    /// to the key's address.
    pub async fn sign(&self, digest: [u8; 32]) -> Result<SignOutcome> {
        let request = serde_json::to_vec(&SignRequest { digest })
            .map_err(|e| Error::Internal(e.to_string()))?;
        let out = self
            .inner
            .pool_node
            .propose_sign(&self.inner.key_id, request, None)
            .await
            .map_err(map_tss)?;
        Ok(SignOutcome {
            signature: out.signature,
            signers: out.signers,
            address: out.address.to_checksum_string(),
            generation: out.generation.get(),
        })
    }

    /// Proposes a membership change: validates it against the pool rules, then reshares
    /// the key to the new pool (same public key and address).
    pub async fn change_membership(&self, change: Change) -> Result<ChangeOutcome> {
        let (pool, share) = self.snapshot();
        let new_pool = pool.apply(&change)?;
        if !pool.is_member(&self.inner.id) {
            return Err(Error::NotMember(self.inner.id));
        }
        let share = share.ok_or_else(|| Error::NoKey(self.inner.key_id.to_string()))?;
        let address_before = share.ethereum_address().to_checksum_string();
        let context = serde_json::to_vec(&ReshareContext {
            change: change.clone(),
            before: PoolState::of(&pool),
        })
        .map_err(|e| Error::Internal(e.to_string()))?;
        // Dealers: this node first, then members that stay, then (only if needed to
        // reach the old threshold) members that leave, which may already be gone.
        let dealers = tss_core::pool::default_dealers(
            share.committee(),
            self.inner.id,
            &new_pool.committee()?,
        );
        tracing::info!(?change, "proposing reshare");
        let commit = self
            .inner
            .pool_node
            .propose_reshare(
                &self.inner.key_id,
                new_pool.committee()?,
                Some(dealers),
                context,
            )
            .await
            .map_err(map_tss)?;
        let key = self.key();
        Ok(ChangeOutcome {
            address_before,
            address_after: key
                .as_ref()
                .map(|k| k.address.clone())
                .unwrap_or_else(|| "(this node left the pool)".into()),
            generation: key.map(|k| k.generation),
            members: new_pool.member_ids().iter().map(|m| m.to_hex()).collect(),
            threshold: new_pool.threshold(),
            confirmed_by: commit.confirmed_by.iter().map(|m| m.to_hex()).collect(),
        })
    }

    /// Deletes this node's key share (every generation) from the keystore and memory.
    /// A pool member must pass `force` (deleting a member's share weakens the pool).
    pub async fn delete_key(&self, force: bool) -> Result<()> {
        let (pool, share) = self.snapshot();
        if share.is_some() && pool.is_member(&self.inner.id) && !force {
            return Err(Error::Conflict(
                "this node is a pool member: exit the pool first, or pass force=true".into(),
            ));
        }
        let existed = self
            .inner
            .pool_node
            .delete_key(&self.inner.key_id, &PoolState::of(&pool).encode())
            .await
            .map_err(map_tss)?;
        if !existed {
            return Err(Error::NoKey(self.inner.key_id.to_string()));
        }
        tracing::info!("key share deleted");
        Ok(())
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
            PoolEvent::Misbehaved { eid, party, reason } => {
                tracing::warn!(%eid, %party, %reason, "a party misbehaved during a reshare's confirmation (ignored)");
            }
            _ => {}
        }
    }
}

async fn epoch_ticker(node: Node) {
    let mut last = None;
    loop {
        let epoch = node.epoch();
        let (pool, share) = node.snapshot();
        let producer = pool.block_producer(&node.inner.epoch_seed, epoch);
        node.inner.metrics.set_state(
            pool.len(),
            share.map(|s| s.generation().get()),
            epoch,
            producer == Some(node.inner.id),
        );
        if last != Some(epoch) {
            if let Some(p) = producer {
                tracing::debug!(epoch, producer = %p, me = producer == Some(node.inner.id), "epoch");
            }
            last = Some(epoch);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// When no key exists, the pool member with the lowest node id proposes keygen, retrying
/// every few seconds until a key exists.
async fn auto_keygen(node: Node, delay: Duration) {
    tokio::time::sleep(delay).await;
    loop {
        let (pool, share) = node.snapshot();
        if share.is_some() {
            return;
        }
        let leader = pool.member_ids().into_iter().min();
        if leader == Some(node.inner.id) {
            let started = Instant::now();
            match node.propose_keygen().await {
                Ok(key) => {
                    tracing::info!(address = %key.address, secs = started.elapsed().as_secs(), "auto-keygen complete");
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "auto-keygen failed; retrying"),
            }
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
