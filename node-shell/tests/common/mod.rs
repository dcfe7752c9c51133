//! A pool of real nodes (in-memory transport, insecure test primes) following a real
//! anvil started by the test, with the L1 actions a test needs.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::{Address, FixedBytes, B256, U256};
use alloy::providers::{DynProvider, Provider};
use async_trait::async_trait;
use node_shell::config::{
    role_id, BatchSettings, KeySettings, L1Settings, NodeSettings, PrimeSourceConfig, UnlockConfig,
};
use node_shell::coordinator::SequencerRules;
use node_shell::devnet::{eth, lock_stake};
use node_shell::l1::anvil::{Anvil, AnvilOptions};
use node_shell::l1::contracts::{deploy, send_and_confirm, Deployment, SequencerStaking};
use node_shell::l1::view::L1Reader;
use node_shell::pool::PoolRules;
use node_shell::Node;
use tokio_util::sync::CancellationToken;
use transport::{InMemoryNetwork, NodeId, Transport};
use tss_core::pool::{
    KeygenProposal, MemoryShareStore, PoolConfig, PoolEvent, PoolNode, ProposalValidator,
    Rejection, ReshareProposal, SignProposal, SigningInput,
};
use tss_core::{ExecutionId, KeyId, PublicKeyInfo};

pub const KEY: &str = "l1-test-key";

/// Test node `k`'s identity key (its id is the public key: the transport and the
/// reshare confirmations use the same key).
pub fn signer(k: u8) -> tss_core::Ed25519Signer {
    tss_core::Ed25519Signer::from_seed([k; 32])
}

pub fn id(k: u8) -> NodeId {
    signer(k).node_id()
}

/// anvil mining a block every second, or `None` (with a message) when it is not
/// installed and CI is not set.
pub fn anvil() -> Option<Anvil> {
    anvil_with(&AnvilOptions {
        block_time: Some(1),
        ..AnvilOptions::default()
    })
}

/// anvil started with `opts` (e.g. no block time: blocks only on transactions and
/// [`Anvil::mine`]), or `None` (with a message) when it is not installed and CI is not
/// set.
pub fn anvil_with(opts: &AnvilOptions) -> Option<Anvil> {
    if Anvil::binary().is_none() && std::env::var_os("CI").is_none() {
        eprintln!(
            "SKIPPED: anvil not installed (run `npm ci` in the repository root); CI never skips"
        );
        return None;
    }
    Some(Anvil::spawn(opts).expect("anvil starts"))
}

/// L1 (anvil + contracts) and nodes `1..=max_id` on one in-memory network; node `k`
/// locks from dev account `k`.
pub struct L1Pool {
    pub anvil: Anvil,
    pub provider: DynProvider,
    pub deployment: Deployment,
    pub staking: SequencerStaking::SequencerStakingInstance<DynProvider>,
    pub admin: Address,
    pub network: InMemoryNetwork,
    pub dir: tempfile::TempDir,
    pub rules: PoolRules,
    pub peers: Vec<NodeId>,
    pub nodes: Vec<Option<(Node, CancellationToken)>>,
    pub l1: L1Settings,
    /// `[batches]` of the nodes started from now on (`None`: no batches).
    pub batches: Option<BatchSettings>,
    /// `pool.presignatures` of the nodes started from now on (0: none).
    pub presignatures: usize,
    /// Keys the nodes started from now on serve besides [`KEY`] (role `batches`).
    pub extra_keys: Vec<KeySettings>,
}

impl L1Pool {
    /// Deploys the contracts (stake 1..=10 ETH) and whitelists accounts `1..=max_id`.
    pub async fn new(anvil: Anvil, max_id: u8, min_members: usize) -> L1Pool {
        let provider = anvil.provider();
        let admin = anvil.accounts()[0];
        let deployment = deploy(&provider, admin, eth(1), eth(10), 1).await.unwrap();
        let staking = SequencerStaking::new(deployment.staking, provider.clone());
        for k in 1..=max_id {
            let tx = staking
                .setWhitelisted(anvil.accounts()[usize::from(k)], true)
                .from(admin)
                .into_transaction_request();
            send_and_confirm(&provider, "setWhitelisted", tx)
                .await
                .unwrap();
        }
        let mut l1 = L1Settings::new(anvil.endpoint(), deployment);
        l1.confirmations = 1;
        l1.poll_interval = Duration::from_millis(400);
        l1.proposal_wait = Duration::from_secs(4);
        l1.leader_timeout = Duration::from_secs(600);
        L1Pool {
            provider,
            deployment,
            staking,
            admin,
            network: InMemoryNetwork::new(),
            dir: tempfile::tempdir().unwrap(),
            rules: PoolRules::l1(min_members, 10),
            peers: (1..=max_id).map(id).collect(),
            nodes: (0..=max_id).map(|_| None).collect(),
            l1,
            batches: None,
            presignatures: 0,
            extra_keys: Vec::new(),
            anvil,
        }
    }

    pub fn account(&self, k: u8) -> Address {
        self.anvil.accounts()[usize::from(k)]
    }

    pub async fn lock(&self, k: u8, eth_amount: u64) -> B256 {
        lock_stake(&self.staking, self.account(k), id(k), eth(eth_amount))
            .await
            .unwrap()
    }

    pub async fn unlock(&self, k: u8) -> B256 {
        let tx = self
            .staking
            .unlock()
            .from(self.account(k))
            .into_transaction_request();
        send_and_confirm(&self.provider, "unlock", tx)
            .await
            .unwrap()
    }

    pub async fn set_mpc_address(&self, address: Address) {
        let tx = self
            .staking
            .setMpcAddress(address)
            .from(self.admin)
            .into_transaction_request();
        send_and_confirm(&self.provider, "setMpcAddress", tx)
            .await
            .unwrap();
    }

    /// The admin registers `address` for the L1 role named `role`.
    pub async fn set_role_address(&self, role: &str, address: Address) {
        let tx = self
            .staking
            .setRoleAddress(role_id(role), address)
            .from(self.admin)
            .into_transaction_request();
        send_and_confirm(&self.provider, "setRoleAddress", tx)
            .await
            .unwrap();
    }

    /// Gives `address` 100 ETH on L1 (for gas).
    pub async fn fund(&self, address: Address) {
        self.provider
            .raw_request::<_, serde_json::Value>("anvil_setBalance".into(), (address, eth(100)))
            .await
            .unwrap();
    }

    pub fn settings(&self, k: u8) -> NodeSettings {
        let mut s = NodeSettings::new(
            KEY,
            self.dir.path().join(format!("n{k}")).join("keystore"),
            UnlockConfig::Passphrase(zeroize::Zeroizing::new("test passphrase".into())),
            self.rules.clone(),
            self.l1.clone(),
            [3; 32],
        );
        s.insecure_fast_kdf = true;
        s.peers = self.peers.clone();
        s.epoch_length = Duration::from_secs(30);
        s.session_idle_timeout = Duration::from_secs(60);
        s.primes = PrimeSourceConfig::InsecureFixture {
            index: usize::from(k),
        };
        s.unsafe_raw_digest_signing = true;
        s.batches = self.batches.clone();
        s.presignatures = self.presignatures;
        for key in &self.extra_keys {
            s = s.with_key(key.clone());
        }
        s
    }

    /// Starts (or restarts) node `k`.
    pub async fn start(&mut self, k: u8) -> Node {
        let mut settings = self.settings(k);
        let stop = CancellationToken::new();
        settings.shutdown = stop.clone();
        let started = Instant::now();
        let node = loop {
            // A node just stopped may still hold its keystore lock for a moment.
            let transport: Arc<dyn Transport> = Arc::new(self.network.endpoint(id(k)));
            match Node::start(
                settings.clone(),
                transport,
                Arc::new(signer(k)),
                "in-memory",
            )
            .await
            {
                Ok(n) => break n,
                Err(e) if started.elapsed() < Duration::from_secs(20) => {
                    eprintln!("node {k} start: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Err(e) => panic!("node {k} does not start: {e}"),
            }
        };
        self.nodes[usize::from(k)] = Some((node.clone(), stop));
        node
    }

    /// Stops node `k` (its loops and pool layer).
    pub async fn stop(&mut self, k: u8) {
        if let Some((node, stop)) = self.nodes[usize::from(k)].take() {
            stop.cancel();
            drop(node);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    pub fn node(&self, k: u8) -> &Node {
        &self.nodes[usize::from(k)].as_ref().expect("node running").0
    }

    /// Waits until every node in `ks` holds generation `generation`; returns the common
    /// address.
    pub async fn wait_for_generation(&self, ks: &[u8], generation: u64, limit: Duration) -> String {
        self.wait_for_key_generation(KEY, ks, generation, limit)
            .await
    }

    /// Waits until every node in `ks` holds generation `generation` of key `key_id`;
    /// returns the common address.
    pub async fn wait_for_key_generation(
        &self,
        key_id: &str,
        ks: &[u8],
        generation: u64,
        limit: Duration,
    ) -> String {
        let started = Instant::now();
        let mut address: Option<String> = None;
        for &k in ks {
            loop {
                let key_node = self
                    .node(k)
                    .key_node(key_id)
                    .expect("a key the node serves");
                if let Some(key) = key_node.key() {
                    if key.generation == generation {
                        match &address {
                            None => address = Some(key.address.clone()),
                            Some(a) => assert_eq!(*a, key.address, "node {k}'s address"),
                        }
                        break;
                    }
                }
                assert!(
                    started.elapsed() < limit,
                    "node {k} has no generation {generation} of {key_id} after {limit:?}: {:?}",
                    key_node.status()
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        address.expect("some node")
    }

    /// The confirmed L1 head (confirmation depth 1).
    pub async fn confirmed_head(&self) -> u64 {
        let reader = L1Reader::new(self.provider.clone(), self.deployment, 1);
        reader.confirmed_height().await.unwrap().unwrap()
    }

    /// Waits until every block mined so far is confirmed (so nodes started now see it).
    pub async fn wait_confirmed(&self) {
        let head = self.head().await;
        while self.confirmed_head().await < head {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn head(&self) -> u64 {
        self.provider.get_block_number().await.unwrap()
    }
}

/// A pool member gone rogue: honest during keygen (the real rules), but it proposes
/// any reshare it likes, since its own validator accepts every reshare. Runs a bare
/// [`PoolNode`] with an in-memory share store.
pub struct Rogue {
    pub pool_node: PoolNode,
    pub key_id: KeyId,
}

struct AcceptAnyReshare(SequencerRules);

#[async_trait]
impl ProposalValidator for AcceptAnyReshare {
    async fn check_keygen(&self, p: NodeId, k: &KeygenProposal) -> Result<Vec<u8>, Rejection> {
        self.0.check_keygen(p, k).await
    }
    async fn check_sign(
        &self,
        p: NodeId,
        s: &SignProposal,
        key: &PublicKeyInfo,
    ) -> Result<SigningInput, Rejection> {
        self.0.check_sign(p, s, key).await
    }
    async fn check_reshare(
        &self,
        _p: NodeId,
        _r: &ReshareProposal,
        _c: Option<&PublicKeyInfo>,
    ) -> Result<Vec<u8>, Rejection> {
        Ok(Vec::new())
    }
    async fn committed(&self, key_id: &KeyId, state: &[u8]) {
        self.0.committed(key_id, state).await
    }
}

impl L1Pool {
    /// Starts node `k` as a [`Rogue`].
    pub async fn start_rogue(&self, k: u8) -> Rogue {
        let key_id = KeyId::new(KEY).unwrap();
        let rules = self.rules_of(k, &key_id);
        self.start_rogue_with(k, Arc::new(AcceptAnyReshare(rules)))
            .await
    }

    /// The real rules of node `k` for `key_id` (raw-digest signing on).
    pub fn rules_of(&self, k: u8, key_id: &KeyId) -> SequencerRules {
        let reader = Arc::new(L1Reader::new(
            self.provider.clone(),
            self.deployment,
            self.l1.confirmations,
        ));
        SequencerRules::new(
            id(k),
            key_id.clone(),
            self.rules.clone(),
            reader,
            self.l1.proposal_wait,
            true,
        )
    }

    /// Starts node `k` as a bare [`PoolNode`] of key [`KEY`] (in-memory share store)
    /// whose own validator is `validator`.
    pub async fn start_rogue_with(&self, k: u8, validator: Arc<dyn ProposalValidator>) -> Rogue {
        let key_id = KeyId::new(KEY).unwrap();
        let mut participants = self.peers.clone();
        participants.push(id(k));
        let pool_node = PoolNode::start(
            PoolConfig::new(participants).with_session_idle_timeout(Duration::from_secs(60)),
            Arc::new(self.network.endpoint(id(k))),
            Arc::new(signer(k)),
            validator,
            Arc::new(MemoryShareStore::new()),
            Arc::new(tss_core::InsecureTestPrimes::new(usize::from(k))),
            std::slice::from_ref(&key_id),
        )
        .await
        .unwrap();
        Rogue { pool_node, key_id }
    }
}

/// A sign validator that checks nothing about a batch: it signs the transaction the
/// request carries (what a producer whose own check is skipped, stale or broken would
/// do). Keygen and reshare are refused.
struct SignsItsOwnBatches;

#[async_trait]
impl ProposalValidator for SignsItsOwnBatches {
    async fn check_keygen(&self, _: NodeId, _: &KeygenProposal) -> Result<Vec<u8>, Rejection> {
        Err(Rejection::new("an impostor takes part in no keygen"))
    }
    async fn check_sign(
        &self,
        _: NodeId,
        s: &SignProposal,
        _: &PublicKeyInfo,
    ) -> Result<SigningInput, Rejection> {
        node_shell::batch::BatchProposal::decode(&s.request)
            .map(|b| SigningInput::Message(b.tx.to_vec()))
            .map_err(|e| Rejection::new(e.to_string()))
    }
    async fn check_reshare(
        &self,
        _: NodeId,
        _: &ReshareProposal,
        _: Option<&PublicKeyInfo>,
    ) -> Result<Vec<u8>, Rejection> {
        Err(Rejection::new("an impostor takes part in no reshare"))
    }
}

impl L1Pool {
    /// Stops node `k` and runs, in its place, a bare [`PoolNode`] with node `k`'s
    /// identity and key share (its keystore) whose own validator signs any batch it is
    /// asked to (so a batch it proposes reaches the followers unchecked by itself). Shut
    /// it down ([`PoolNode::shutdown`]) and drop it before starting node `k` again.
    pub async fn start_impostor(&mut self, k: u8) -> PoolNode {
        self.stop(k).await;
        let settings = self.settings(k);
        let started = Instant::now();
        let store = loop {
            match node_shell::keys::open_store(&settings).await {
                Ok(s) => break s,
                Err(e) if started.elapsed() < Duration::from_secs(20) => {
                    eprintln!("node {k}'s keystore: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Err(e) => panic!("node {k}'s keystore does not open: {e}"),
            }
        };
        PoolNode::start(
            PoolConfig::new(self.peers.clone())
                .with_session_idle_timeout(settings.session_idle_timeout),
            Arc::new(self.network.endpoint(id(k))),
            Arc::new(signer(k)),
            Arc::new(SignsItsOwnBatches),
            store,
            Arc::new(tss_core::InsecureTestPrimes::new(usize::from(k))),
            &[KeyId::new(KEY).unwrap()],
        )
        .await
        .unwrap()
    }
}

/// Collects the reasons of the proposals `node` refused, as they come.
pub fn refusals(node: &PoolNode) -> Arc<parking_lot::Mutex<Vec<String>>> {
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let out = seen.clone();
    let mut events = node.subscribe();
    tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            if let PoolEvent::Refused { reason, .. } = e {
                out.lock().push(reason);
            }
        }
    });
    seen
}

/// Waits until `seen` has a reason containing `text`.
pub async fn wait_refusal(seen: &parking_lot::Mutex<Vec<String>>, text: &str, limit: Duration) {
    let started = Instant::now();
    loop {
        if seen.lock().iter().any(|r| r.contains(text)) {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "no refusal containing {text:?} after {limit:?}; refusals: {:?}",
            seen.lock()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How a node was done with a run: it refused the proposal, or the run ended there
/// (`error: None` when it completed).
#[derive(Clone, Debug)]
pub enum RunEnd {
    Refused { reason: String },
    Finished { error: Option<String> },
}

impl RunEnd {
    /// The run completed at this node (it did not refuse it, and it ended without error).
    pub fn completed(&self) -> bool {
        matches!(self, RunEnd::Finished { error: None })
    }
}

/// The runs `node` was done with from now on, as `(eid, proposer, how)`, in the order it
/// reported them ([`PoolEvent::Refused`] and [`PoolEvent::RunFinished`]).
pub type RunsDone = tokio::sync::watch::Receiver<Vec<(ExecutionId, NodeId, RunEnd)>>;

/// Starts collecting the runs `node` is done with (see [`RunsDone`]).
pub fn runs_done(node: &PoolNode) -> RunsDone {
    let (tx, rx) = tokio::sync::watch::channel(Vec::new());
    let mut events = node.subscribe();
    tokio::spawn(async move {
        loop {
            let done = match events.recv().await {
                Ok(PoolEvent::Refused {
                    eid,
                    proposer,
                    reason,
                }) => (eid, proposer, RunEnd::Refused { reason }),
                Ok(PoolEvent::RunFinished {
                    eid,
                    proposer,
                    error,
                    ..
                }) => (eid, proposer, RunEnd::Finished { error }),
                Ok(_) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    // Waits on it end at once (a missed run would look silent).
                    eprintln!("runs_done: missed {n} pool events; collecting stopped");
                    break;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            };
            tx.send_modify(|runs| runs.push(done));
        }
    });
    rx
}

/// Waits until `runs` has `n` runs proposed by `proposer`, and returns their ids.
/// `limit` only ends a wait that hears nothing: a proposal this node made and that was
/// refused ends within a few L1 reads.
pub async fn wait_runs_of(
    runs: &RunsDone,
    proposer: NodeId,
    n: usize,
    limit: Duration,
) -> Vec<ExecutionId> {
    let of = |runs: &[(ExecutionId, NodeId, RunEnd)]| -> Vec<ExecutionId> {
        runs.iter()
            .filter(|(_, p, _)| *p == proposer)
            .map(|(eid, ..)| *eid)
            .collect()
    };
    let mut rx = runs.clone();
    let waited = tokio::time::timeout(limit, rx.wait_for(|r| of(r).len() >= n)).await;
    let runs = runs.borrow().clone();
    assert!(
        matches!(waited, Ok(Ok(_))),
        "{} of {n} runs of {proposer} ended after {limit:?}; runs: {runs:?}",
        of(&runs).len()
    );
    of(&runs)
}

/// Waits until `runs` has run `eid` (the node refused it or it ended there) and returns
/// how it ended. `limit` only ends a wait that hears nothing of it.
pub async fn wait_done(runs: &RunsDone, eid: ExecutionId, limit: Duration) -> RunEnd {
    let mut rx = runs.clone();
    let waited =
        tokio::time::timeout(limit, rx.wait_for(|r| r.iter().any(|(e, ..)| *e == eid))).await;
    let runs = runs.borrow().clone();
    assert!(
        matches!(waited, Ok(Ok(_))),
        "run {eid} not done after {limit:?}; runs: {runs:?}"
    );
    let (.., end) = runs.into_iter().find(|(e, ..)| *e == eid).unwrap();
    end
}

/// Waits until `node` holds a share of `key_id`, woken by its events (the share comes
/// with [`PoolEvent::KeyCommitted`]). `limit` only ends a wait that hears nothing.
pub async fn wait_share(node: &PoolNode, key_id: &KeyId, limit: Duration) {
    let mut events = node.subscribe();
    let started = Instant::now();
    while node.share(key_id).is_none() {
        let left = limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, events.recv()).await {
            Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(e)) => panic!("the events of the node ended: {e}"),
            Err(_) => panic!("no share of {key_id} after {limit:?}"),
        }
    }
}

pub fn fixed(k: u8) -> FixedBytes<32> {
    FixedBytes([k; 32])
}

pub fn wei(n: u64) -> U256 {
    U256::from(n)
}
