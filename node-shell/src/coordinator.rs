//! The node: pool state, key share, and the protocol runs it coordinates or joins.
//!
//! # Coordination
//!
//! Every node keeps one long-lived **control session** on the transport whose
//! participants are all known sequencers (configured peers, the admin whitelist and the
//! genesis pool) and whose id is `sha256("node-shell/control/v1" || key_id || sorted
//! participants)`. A coordinator (the node that received the RPC request, or the
//! auto-keygen leader) picks a fresh [`ExecutionId`] and sends a [`ControlMsg`] proposal
//! directly to every other party of the run. The proposer is the transport-authenticated
//! sender of the message; proposals carry no sender field. Each party validates the
//! proposal against its own state (proposer is a pool member, signers are a threshold
//! subset of the committee, pool version and membership match, the change passes the pool
//! rules, the old key info equals its own share's) before joining; otherwise it answers
//! [`ControlMsg::Reject`] and the coordinator aborts the run with [`Error::Rejected`].
//!
//! A membership change takes effect only through a reshare in which `t_old` members of
//! the old committee (more than two thirds) deal, and each of them validates the change
//! independently, so no single member can change the pool.
//!
//! After a reshare, a node activates its new generation and retires the old one only if
//! [`tss_core::ReshareOutcome::may_retire_old_share`] (every new member confirmed it
//! stored its share); otherwise it keeps the old generation active. A leaving node that
//! dealt deletes its key once every new member confirmed.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;
use transport::{
    Destination, NodeId, SessionConfig, SessionId, SessionInbox, SessionOutbox, Transport,
    TransportError,
};
use tss_core::{
    Committee, EthSignature, ExecutionId, KeyId, KeyShare, PaillierPrimes, PersistShare, PrimePool,
    ProtocolKind, PublicKeyInfo, ReshareRequest, TssNode,
};

use crate::config::{NodeSettings, PrimeSourceConfig};
use crate::error::{Error, Result};
use crate::keys::KeysHandle;
use crate::metrics::{Metrics, Protocol};
use crate::pool::{Change, Member, Pool};

/// The public test-prime fixture compiled into the binary (tests and devnets only).
pub const INSECURE_TEST_PRIMES_JSON: &str =
    include_str!("../../tss-core/test-data/insecure-test-primes.json");

/// Messages of the control session.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ControlMsg {
    /// Run keygen for the pool `members` at `pool_version`.
    ProposeKeygen {
        /// The run's id.
        eid: ExecutionId,
        /// The pool as the proposer sees it.
        members: Vec<Member>,
        /// Its version.
        pool_version: u64,
    },
    /// Sign `digest` with `signers` (ordered) using key generation `generation`.
    ProposeSign {
        /// The run's id.
        eid: ExecutionId,
        /// Exactly the threshold of committee members, in the order all use.
        signers: Vec<NodeId>,
        /// The 32-byte batch digest.
        digest: [u8; 32],
        /// Key generation to sign with.
        generation: u64,
    },
    /// Reshare to the pool after `change`.
    ProposeReshare {
        /// The run's id.
        eid: ExecutionId,
        /// The membership change.
        change: Change,
        /// The pool before the change, as the proposer sees it.
        members: Vec<Member>,
        /// Its version.
        pool_version: u64,
        /// Old members that deal (exactly the old threshold).
        dealers: Vec<NodeId>,
        /// Public facts of the current key generation.
        old: PublicKeyInfo,
    },
    /// The sender refuses to take part in run `eid`.
    Reject {
        /// The refused run.
        eid: ExecutionId,
        /// Why.
        reason: String,
    },
}

/// Where this node's Paillier primes come from.
#[derive(Clone)]
enum PrimeSource {
    Fixture(Arc<Vec<PaillierPrimes>>, usize),
    Pool(PrimePool),
}

impl PrimeSource {
    async fn take(&self) -> Result<PaillierPrimes> {
        match self {
            PrimeSource::Fixture(list, i) => Ok(list[*i].clone_fixture()),
            PrimeSource::Pool(pool) => Ok(pool.take().await?),
        }
    }
}

struct State {
    pool: Pool,
    share: Option<Arc<KeyShare>>,
}

type RejectSender = oneshot::Sender<(NodeId, String)>;

struct Inner {
    id: NodeId,
    key_id: KeyId,
    tss: TssNode,
    keys: KeysHandle,
    control: SessionOutbox,
    primes: PrimeSource,
    metrics: Arc<Metrics>,
    epoch_length: Duration,
    epoch_seed: [u8; 32],
    transport_kind: String,
    pool_file: PathBuf,
    state: Mutex<State>,
    /// One keygen/reshare at a time on this node (as coordinator or participant).
    membership: tokio::sync::Mutex<()>,
    pending: Mutex<HashMap<ExecutionId, (Vec<NodeId>, RejectSender)>>,
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

#[derive(Serialize, Deserialize)]
struct PoolFile {
    version: u64,
    members: Vec<Member>,
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

/// Id of the control session among `participants` (sorted) for `key_id`.
pub fn control_session_id(key_id: &KeyId, participants: &[NodeId]) -> SessionId {
    let mut h = Sha256::new();
    h.update(b"node-shell/control/v1");
    h.update((key_id.as_str().len() as u32).to_be_bytes());
    h.update(key_id.as_str().as_bytes());
    for p in participants {
        h.update(p.as_bytes());
    }
    SessionId::from_bytes(h.finalize().into())
}

impl Node {
    /// Starts a node on `transport`: opens the keystore, loads the active key share,
    /// restores the pool (or starts from genesis), opens the control session and spawns
    /// the control loop, the epoch ticker and (if enabled) the auto-keygen loop.
    pub async fn start(
        settings: NodeSettings,
        transport: Arc<dyn Transport>,
        transport_kind: &str,
    ) -> Result<Node> {
        let id = transport.local_node();
        let key_id = KeyId::new(settings.key_id.clone())?;
        let keys = KeysHandle::open(
            settings.keystore_dir.clone(),
            &settings.unlock,
            settings.insecure_fast_kdf,
        )
        .await?;
        let share = match keys.load_active(key_id.as_str()).await? {
            Some((generation, bytes)) => {
                let share = KeyShare::from_secret_bytes(bytes.expose())?;
                if share.local_node() != id || share.key_id() != &key_id {
                    return Err(Error::Conflict(format!(
                        "stored share (generation {generation}) belongs to another node or key"
                    )));
                }
                tracing::info!(generation, address = %share.ethereum_address(), "loaded key share");
                Some(Arc::new(share))
            }
            None => None,
        };
        let genesis = Pool::new(settings.rules.clone(), settings.genesis.clone(), 0)?;
        let pool_file = settings
            .keystore_dir
            .parent()
            .map(|p| p.join("pool-state.json"))
            .unwrap_or_else(|| PathBuf::from("pool-state.json"));
        let pool = match std::fs::read(&pool_file) {
            Ok(bytes) => {
                let saved: PoolFile = serde_json::from_slice(&bytes).map_err(|e| {
                    Error::Conflict(format!(
                        "pool state {} is corrupt: {e}",
                        pool_file.display()
                    ))
                })?;
                genesis.with_members(saved.members, saved.version)?
            }
            Err(_) => genesis,
        };

        let primes = match &settings.primes {
            PrimeSourceConfig::Generate => PrimeSource::Pool(PrimePool::spawn(1)),
            PrimeSourceConfig::InsecureFixture { file, index } => {
                let json = match file {
                    Some(path) => std::fs::read_to_string(path).map_err(|e| Error::ConfigRead {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })?,
                    None => INSECURE_TEST_PRIMES_JSON.to_string(),
                };
                let list = PaillierPrimes::list_from_json(&json)?;
                if *index >= list.len() {
                    return Err(Error::ConfigInvalid {
                        field: "tss.insecure_test_primes_index".into(),
                        reason: format!("the fixture has only {} pairs", list.len()),
                    });
                }
                tracing::warn!(
                    index,
                    "USING PUBLIC INSECURE TEST PRIMES: anyone can read this node's Paillier \
                     secret key. For tests and devnets ONLY, never with real funds."
                );
                PrimeSource::Fixture(Arc::new(list), *index)
            }
        };

        let mut participants: BTreeSet<NodeId> = settings.peers.iter().copied().collect();
        participants.extend(settings.rules.whitelist.iter().copied());
        participants.extend(settings.genesis.iter().map(|m| m.node));
        participants.insert(id);
        let participants: Vec<NodeId> = participants.into_iter().collect();
        let session = control_session_id(&key_id, &participants);
        let channel = transport.open_session(
            session,
            SessionConfig::new(participants).with_idle_timeout(Duration::from_secs(3600)),
        )?;
        let (inbox, control) = channel.split();

        let tss = TssNode::new(transport).with_idle_timeout(settings.session_idle_timeout);
        let inner = Arc::new(Inner {
            id,
            key_id,
            tss,
            keys,
            control,
            primes,
            metrics: Arc::new(Metrics::default()),
            epoch_length: settings.epoch_length,
            epoch_seed: settings.epoch_seed,
            transport_kind: transport_kind.to_string(),
            pool_file,
            state: Mutex::new(State { pool, share }),
            membership: tokio::sync::Mutex::new(()),
            pending: Mutex::new(HashMap::new()),
        });
        let node = Node { inner };
        settings.spawn_until_shutdown(control_loop(node.clone(), inbox));
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

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn snapshot(&self) -> (Pool, Option<Arc<KeyShare>>) {
        let st = self.state();
        (st.pool.clone(), st.share.clone())
    }

    /// The current pool.
    pub fn pool(&self) -> Pool {
        self.state().pool.clone()
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
        self.state()
            .pool
            .block_producer(&self.inner.epoch_seed, epoch)
    }

    /// The key, if this node holds a share.
    pub fn key(&self) -> Option<KeyView> {
        self.state().share.as_deref().map(key_view)
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

    fn send_control(&self, to: NodeId, msg: &ControlMsg) -> Result<()> {
        let bytes = serde_json::to_vec(msg).map_err(|e| Error::Internal(e.to_string()))?;
        self.inner.control.send(Destination::Direct(to), bytes)?;
        Ok(())
    }

    /// Runs `fut`, aborting with [`Error::Rejected`] if one of `parties` rejects `eid`.
    async fn unless_rejected<T>(
        &self,
        eid: ExecutionId,
        parties: &[NodeId],
        fut: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let (tx, mut rx) = oneshot::channel();
        self.inner
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(eid, (parties.to_vec(), tx));
        tokio::pin!(fut);
        let out = tokio::select! {
            r = &mut fut => r,
            Ok((by, reason)) = &mut rx => Err(Error::Rejected { by, reason }),
        };
        self.inner
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&eid);
        out
    }

    fn membership_guard(&self) -> Result<tokio::sync::MutexGuard<'_, ()>> {
        self.inner.membership.try_lock().map_err(|_| {
            Error::Conflict("a keygen or reshare is already running on this node".into())
        })
    }

    // ------------------------------------------------------------------ keygen

    /// Coordinates keygen for the current pool (this node must be a member and no key
    /// may exist yet).
    pub async fn propose_keygen(&self) -> Result<KeyView> {
        let _guard = self.membership_guard()?;
        let (pool, share) = self.snapshot();
        if share.is_some() {
            return Err(Error::Conflict("a key already exists".into()));
        }
        if !pool.is_member(&self.inner.id) {
            return Err(Error::NotMember(self.inner.id));
        }
        let committee = pool.committee()?;
        let eid = ExecutionId::random(
            ProtocolKind::Keygen,
            &self.inner.key_id,
            committee.members(),
            &mut rand::thread_rng(),
        );
        let msg = ControlMsg::ProposeKeygen {
            eid,
            members: pool.members().to_vec(),
            pool_version: pool.version(),
        };
        for m in committee.members().iter().filter(|m| **m != self.inner.id) {
            self.send_control(*m, &msg)?;
        }
        tracing::info!(%eid, n = committee.n(), t = committee.threshold(), "proposed keygen");
        let members = committee.members().to_vec();
        self.unless_rejected(eid, &members, self.run_keygen(committee, eid))
            .await
    }

    async fn follow_keygen(
        &self,
        from: NodeId,
        eid: ExecutionId,
        members: Vec<Member>,
        pool_version: u64,
    ) -> Result<()> {
        let _guard = self.membership_guard()?;
        let (pool, share) = self.snapshot();
        let bad = |reason: &str| Error::InvalidProposal {
            from,
            reason: reason.into(),
        };
        if share.is_some() {
            return Err(bad("this node already holds a key"));
        }
        if !pool.is_member(&from) {
            return Err(bad("proposer is not a pool member"));
        }
        if pool.version() != pool_version || pool.members() != members.as_slice() {
            return Err(bad("pool membership differs from this node's"));
        }
        if !pool.is_member(&self.inner.id) {
            return Err(bad("this node is not a pool member"));
        }
        self.run_keygen(pool.committee()?, eid).await.map(|_| ())
    }

    async fn run_keygen(&self, committee: Committee, eid: ExecutionId) -> Result<KeyView> {
        let m = &self.inner.metrics;
        m.session_started(Protocol::Keygen);
        let result = async {
            let primes = self.inner.primes.take().await?;
            let share = self
                .inner
                .tss
                .keygen(self.inner.key_id.clone(), committee, eid, primes)
                .await?;
            let generation = share.generation().0;
            self.inner
                .keys
                .put_fresh(
                    self.inner.key_id.as_str(),
                    generation,
                    share.to_secret_bytes()?,
                )
                .await?;
            self.inner
                .keys
                .activate(self.inner.key_id.as_str(), generation)
                .await?;
            let view = key_view(&share);
            self.state().share = Some(Arc::new(share));
            tracing::info!(address = %view.address, "keygen complete; share stored");
            Ok(view)
        }
        .await;
        if result.is_err() {
            m.session_failed(Protocol::Keygen);
        }
        result
    }

    // ------------------------------------------------------------------ signing

    /// Coordinates signing of a 32-byte batch digest: this node and the next `t - 1`
    /// committee members (in committee order) sign. The signature is checked to recover
    /// to the key's address.
    pub async fn sign(&self, digest: [u8; 32]) -> Result<SignOutcome> {
        let share = self
            .state()
            .share
            .clone()
            .ok_or_else(|| Error::NoKey(self.inner.key_id.to_string()))?;
        let committee = share.committee();
        let members = committee.members();
        let me = committee
            .index_of(&self.inner.id)
            .ok_or(Error::NotMember(self.inner.id))? as usize;
        let t = usize::from(committee.threshold());
        let signers: Vec<NodeId> = (0..t).map(|k| members[(me + k) % members.len()]).collect();
        let eid = ExecutionId::random(
            ProtocolKind::Sign,
            &self.inner.key_id,
            &signers,
            &mut rand::thread_rng(),
        );
        let generation = share.generation().0;
        let msg = ControlMsg::ProposeSign {
            eid,
            signers: signers.clone(),
            digest,
            generation,
        };
        for s in signers.iter().filter(|s| **s != self.inner.id) {
            self.send_control(*s, &msg)?;
        }
        let signature = self
            .unless_rejected(
                eid,
                &signers,
                self.run_sign(share.clone(), signers.clone(), digest, eid),
            )
            .await?;
        Ok(SignOutcome {
            signature,
            signers,
            address: share.ethereum_address().to_checksum_string(),
            generation,
        })
    }

    async fn follow_sign(
        &self,
        from: NodeId,
        eid: ExecutionId,
        signers: Vec<NodeId>,
        digest: [u8; 32],
        generation: u64,
    ) -> Result<()> {
        let bad = |reason: String| Error::InvalidProposal { from, reason };
        let share = self
            .state()
            .share
            .clone()
            .ok_or_else(|| bad("this node holds no key share".into()))?;
        if share.generation().0 != generation {
            return Err(bad(format!(
                "key generation {generation} requested, this node holds {}",
                share.generation().0
            )));
        }
        let committee = share.committee();
        if !signers.contains(&from) {
            return Err(bad("proposer is not among the signers".into()));
        }
        if !signers.contains(&self.inner.id) {
            return Err(bad("this node is not among the signers".into()));
        }
        if signers.len() != usize::from(committee.threshold()) {
            return Err(bad(format!(
                "{} signers proposed, the threshold is {}",
                signers.len(),
                committee.threshold()
            )));
        }
        let distinct: BTreeSet<&NodeId> = signers.iter().collect();
        if distinct.len() != signers.len() {
            return Err(bad("signers are not distinct".into()));
        }
        if let Some(outsider) = signers.iter().find(|s| committee.index_of(s).is_none()) {
            return Err(bad(format!("signer {outsider} is not a committee member")));
        }
        // A production sequencer would also check here that `digest` is the hash of a
        // batch it agrees with; this shell signs any digest a member proposes.
        self.run_sign(share, signers, digest, eid).await.map(|_| ())
    }

    async fn run_sign(
        &self,
        share: Arc<KeyShare>,
        signers: Vec<NodeId>,
        digest: [u8; 32],
        eid: ExecutionId,
    ) -> Result<EthSignature> {
        let m = &self.inner.metrics;
        m.session_started(Protocol::Sign);
        let start = Instant::now();
        let result = async {
            let sig = self.inner.tss.sign(&share, &signers, digest, eid).await?;
            if sig.recover_address(&digest)? != share.ethereum_address() {
                return Err(Error::SignatureMismatch);
            }
            Ok(sig)
        }
        .await;
        match &result {
            Ok(_) => m.signature_made(start.elapsed()),
            Err(_) => m.session_failed(Protocol::Sign),
        }
        result
    }

    // ------------------------------------------------------------------ resharing

    /// Coordinates a membership change: validates it against the pool rules, then
    /// reshares the key to the new pool (same public key and address).
    pub async fn change_membership(&self, change: Change) -> Result<ChangeOutcome> {
        let _guard = self.membership_guard()?;
        let (pool, share) = self.snapshot();
        // Pool rules first: they give the most useful error.
        let new_pool = pool.apply(&change)?;
        if !pool.is_member(&self.inner.id) {
            return Err(Error::NotMember(self.inner.id));
        }
        let share = share.ok_or_else(|| Error::NoKey(self.inner.key_id.to_string()))?;
        let old = share.public_info();
        let dealers = choose_dealers(&old.committee, self.inner.id, &change);
        let new_committee = new_pool.committee()?;
        let placeholder = ExecutionId::from_bytes([0; 32]);
        let mut request = ReshareRequest {
            old: old.clone(),
            dealers: dealers.clone(),
            new_committee,
            eid: placeholder,
        };
        let parties = request.participants();
        request.eid = ExecutionId::random(
            ProtocolKind::Reshare,
            &self.inner.key_id,
            &parties,
            &mut rand::thread_rng(),
        );
        let msg = ControlMsg::ProposeReshare {
            eid: request.eid,
            change: change.clone(),
            members: pool.members().to_vec(),
            pool_version: pool.version(),
            dealers,
            old,
        };
        for p in parties.iter().filter(|p| **p != self.inner.id) {
            self.send_control(*p, &msg)?;
        }
        tracing::info!(eid = %request.eid, ?change, "proposed reshare");
        let address_before = share.ethereum_address().to_checksum_string();
        let confirmed = self
            .unless_rejected(
                request.eid,
                &parties,
                self.run_reshare(request, Some(share), new_pool.clone()),
            )
            .await?;
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
            confirmed_by: confirmed.iter().map(|m| m.to_hex()).collect(),
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn follow_reshare(
        &self,
        from: NodeId,
        eid: ExecutionId,
        change: Change,
        members: Vec<Member>,
        pool_version: u64,
        dealers: Vec<NodeId>,
        old: PublicKeyInfo,
    ) -> Result<()> {
        let _guard = self.membership_guard()?;
        let me = self.inner.id;
        let bad = |reason: String| Error::InvalidProposal { from, reason };
        let (mut pool, share) = self.snapshot();
        if pool.version() != pool_version || pool.members() != members.as_slice() {
            // A joining node that holds nothing adopts the pool it is told about; the
            // reshare itself proves the old key info against the dealers' commitments.
            let joining = matches!(&change, Change::Join { node, .. } if *node == me);
            if share.is_none() && !pool.is_member(&me) && joining {
                pool = pool.with_members(members, pool_version)?;
            } else {
                return Err(bad("pool membership differs from this node's".into()));
            }
        }
        if !pool.is_member(&from) {
            return Err(bad("proposer is not a pool member".into()));
        }
        let new_pool = pool.apply(&change).map_err(|e| bad(e.to_string()))?;
        if old.key_id != self.inner.key_id {
            return Err(bad(format!("unknown key {}", old.key_id)));
        }
        if old.committee.members() != pool.member_ids().as_slice() {
            return Err(bad("old committee is not the pool".into()));
        }
        match &share {
            Some(s) if s.public_info() != old => {
                return Err(bad("old key info differs from this node's share".into()))
            }
            None if !matches!(&change, Change::Join { node, .. } if *node == me) => {
                return Err(bad("this node holds no share and is not the joiner".into()))
            }
            _ => {}
        }
        if dealers.len() != usize::from(old.committee.threshold())
            || dealers.iter().collect::<BTreeSet<_>>().len() != dealers.len()
            || dealers.iter().any(|d| old.committee.index_of(d).is_none())
        {
            return Err(bad(
                "dealers must be a threshold of distinct old members".into()
            ));
        }
        let request = ReshareRequest {
            old,
            dealers,
            new_committee: new_pool.committee()?,
            eid,
        };
        if !request.participants().contains(&me) {
            return Err(bad("this node is not a party of the reshare".into()));
        }
        self.run_reshare(request, share, new_pool).await.map(|_| ())
    }

    /// Runs this node's side of a reshare and commits its result. Returns the new
    /// members that confirmed.
    async fn run_reshare(
        &self,
        request: ReshareRequest,
        old_share: Option<Arc<KeyShare>>,
        new_pool: Pool,
    ) -> Result<Vec<NodeId>> {
        let m = &self.inner.metrics;
        m.session_started(Protocol::Reshare);
        let result = self.run_reshare_inner(request, old_share, new_pool).await;
        if result.is_err() {
            m.session_failed(Protocol::Reshare);
        }
        result
    }

    async fn run_reshare_inner(
        &self,
        request: ReshareRequest,
        old_share: Option<Arc<KeyShare>>,
        new_pool: Pool,
    ) -> Result<Vec<NodeId>> {
        let key = self.inner.key_id.as_str().to_string();
        let is_new = request.new_committee.index_of(&self.inner.id).is_some();
        let (primes, persist) = if is_new {
            let keys = self.inner.keys.clone();
            let key = key.clone();
            let persist: PersistShare = Box::new(move |bytes, generation| {
                Box::pin(async move {
                    keys.put_fresh(&key, generation.0, bytes)
                        .await
                        .map_err(|e| e.to_string())
                })
            });
            (Some(self.inner.primes.take().await?), Some(persist))
        } else {
            (None, None)
        };
        let outcome = self
            .inner
            .tss
            .reshare(&request, old_share.as_deref(), primes, persist)
            .await?;
        if !outcome.may_retire_old_share() {
            tracing::error!(
                missing = ?outcome.missing_confirmations,
                "reshare incomplete: keeping the old generation active"
            );
            return Err(Error::Conflict(format!(
                "reshare incomplete, missing confirmations from {:?}; old key generation kept",
                outcome.missing_confirmations
            )));
        }
        match outcome.new_share {
            Some(new_share) => {
                let generation = new_share.generation().0;
                self.inner.keys.activate(&key, generation).await?;
                if let Some(old) = &old_share {
                    if let Err(e) = self.inner.keys.retire(&key, old.generation().0).await {
                        tracing::warn!(error = %e, "could not retire the old generation");
                    }
                }
                self.inner.tss.discard_presignatures(
                    &self.inner.key_id,
                    tss_core::Generation(generation.saturating_sub(1)),
                );
                tracing::info!(generation, address = %new_share.ethereum_address(), "reshare complete; new generation active, old retired");
                let mut st = self.state();
                st.share = Some(Arc::new(new_share));
                st.pool = new_pool.clone();
            }
            None => {
                self.inner.keys.delete(&key).await?;
                self.inner
                    .tss
                    .discard_presignatures(&self.inner.key_id, tss_core::Generation(u64::MAX));
                tracing::info!("left the committee; every new member confirmed; key share deleted");
                let mut st = self.state();
                st.share = None;
                st.pool = new_pool.clone();
            }
        }
        self.save_pool(&new_pool);
        Ok(outcome.confirmed_by)
    }

    fn save_pool(&self, pool: &Pool) {
        let file = PoolFile {
            version: pool.version(),
            members: pool.members().to_vec(),
        };
        let result = serde_json::to_vec_pretty(&file)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&self.inner.pool_file, bytes));
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not save the pool state");
        }
    }

    // ------------------------------------------------------------------ deletion

    /// Deletes this node's key share (every generation) from the keystore and memory.
    /// A pool member must pass `force` (deleting a member's share weakens the pool).
    pub async fn delete_key(&self, force: bool) -> Result<()> {
        let _guard = self.membership_guard()?;
        let (pool, share) = self.snapshot();
        if share.is_some() && pool.is_member(&self.inner.id) && !force {
            return Err(Error::Conflict(
                "this node is a pool member: exit the pool first, or pass force=true".into(),
            ));
        }
        let existed = self.inner.keys.delete(self.inner.key_id.as_str()).await?;
        self.inner
            .tss
            .discard_presignatures(&self.inner.key_id, tss_core::Generation(u64::MAX));
        self.state().share = None;
        if !existed && share.is_none() {
            return Err(Error::NoKey(self.inner.key_id.to_string()));
        }
        tracing::info!("key share deleted");
        Ok(())
    }

    // ------------------------------------------------------------------ control loop

    async fn handle(&self, from: NodeId, msg: ControlMsg) {
        let (eid, result) = match msg {
            ControlMsg::Reject { eid, reason } => {
                let mut pending = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
                let is_party = pending
                    .get(&eid)
                    .is_some_and(|(parties, _)| parties.contains(&from));
                if is_party {
                    if let Some((_, tx)) = pending.remove(&eid) {
                        let _ = tx.send((from, reason));
                    }
                } else {
                    tracing::debug!(%from, %eid, "ignoring a rejection for a run it is not party to");
                }
                return;
            }
            ControlMsg::ProposeKeygen {
                eid,
                members,
                pool_version,
            } => (
                eid,
                self.follow_keygen(from, eid, members, pool_version).await,
            ),
            ControlMsg::ProposeSign {
                eid,
                signers,
                digest,
                generation,
            } => (
                eid,
                self.follow_sign(from, eid, signers, digest, generation)
                    .await,
            ),
            ControlMsg::ProposeReshare {
                eid,
                change,
                members,
                pool_version,
                dealers,
                old,
            } => (
                eid,
                self.follow_reshare(from, eid, change, members, pool_version, dealers, old)
                    .await,
            ),
        };
        if let Err(e) = result {
            tracing::warn!(%from, %eid, error = %e, "run proposed by a peer failed or was refused");
            if matches!(
                e,
                Error::InvalidProposal { .. } | Error::Conflict(_) | Error::NoKey(_)
            ) {
                self.inner.metrics.proposal_rejected();
            }
            let reject = ControlMsg::Reject {
                eid,
                reason: e.to_string(),
            };
            if let Err(e) = self.send_control(from, &reject) {
                tracing::debug!(error = %e, "could not send a rejection");
            }
        }
    }
}

/// Dealers of a reshare: exactly the old threshold of old members. The coordinator
/// first, then the others in committee order; a leaving member deals only if it is the
/// coordinator (voluntary exit: it then sees every confirmation and deletes its key) or
/// if it is needed to reach the threshold.
fn choose_dealers(old: &Committee, coordinator: NodeId, change: &Change) -> Vec<NodeId> {
    let t = usize::from(old.threshold());
    let leaver = match change {
        Change::Exit { node } if *node != coordinator => Some(*node),
        _ => None,
    };
    let mut order: Vec<NodeId> = vec![coordinator];
    order.extend(
        old.members()
            .iter()
            .filter(|m| **m != coordinator && Some(**m) != leaver),
    );
    order.extend(leaver);
    order.truncate(t);
    order
}

async fn control_loop(node: Node, mut inbox: SessionInbox) {
    loop {
        match inbox.recv().await {
            Ok(msg) => {
                let from = msg.from; // authenticated by the transport
                match serde_json::from_slice::<ControlMsg>(&msg.payload) {
                    Ok(control) => {
                        let node = node.clone();
                        tokio::spawn(async move { node.handle(from, control).await });
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

async fn epoch_ticker(node: Node) {
    let mut last = None;
    loop {
        let epoch = node.epoch();
        let (pool, share) = node.snapshot();
        let producer = pool.block_producer(&node.inner.epoch_seed, epoch);
        node.inner.metrics.set_state(
            pool.len(),
            share.map(|s| s.generation().0),
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
            match node.propose_keygen().await {
                Ok(key) => {
                    tracing::info!(address = %key.address, "auto-keygen complete");
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

    fn id(k: u8) -> NodeId {
        NodeId::from_bytes([k; 32])
    }

    #[test]
    fn dealers_are_a_threshold_starting_with_the_coordinator() {
        let old = Committee::two_thirds((1..=6).map(id).collect()).unwrap(); // t = 5
        let join = Change::Join {
            node: id(7),
            stake: 1,
        };
        assert_eq!(
            choose_dealers(&old, id(3), &join),
            vec![id(3), id(1), id(2), id(4), id(5)]
        );
        // Forced exit of node 2: it does not deal.
        let exit = Change::Exit { node: id(2) };
        assert_eq!(
            choose_dealers(&old, id(1), &exit),
            vec![id(1), id(3), id(4), id(5), id(6)]
        );
        // Voluntary exit: the leaver coordinates and deals.
        assert_eq!(
            choose_dealers(&old, id(2), &exit),
            vec![id(2), id(1), id(3), id(4), id(5)]
        );
        // Leaver needed to reach the threshold.
        let small = Committee::two_thirds((1..=3).map(id).collect()).unwrap(); // t = 3
        let exit3 = Change::Exit { node: id(3) };
        assert_eq!(
            choose_dealers(&small, id(1), &exit3),
            vec![id(1), id(2), id(3)]
        );
    }
}
