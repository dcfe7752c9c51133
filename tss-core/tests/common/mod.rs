//! Shared test fixtures: node ids, committed test primes, and in-process keygen (with
//! a per-build cache of the keys that many tests share).
#![allow(dead_code)]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use transport::{InMemoryNetwork, NodeId};
use tss_core::{Committee, ExecutionId, KeyId, KeyShare, PaillierPrimes, ProtocolKind, TssNode};

/// Committed pregenerated primes (public, test-only).
const PRIMES_JSON: &str = include_str!("../../test-data/insecure-test-primes.json");

fn fixture_primes() -> &'static Vec<PaillierPrimes> {
    static PRIMES: OnceLock<Vec<PaillierPrimes>> = OnceLock::new();
    PRIMES.get_or_init(|| PaillierPrimes::list_from_json(PRIMES_JSON).expect("fixture primes"))
}

/// Runs `test` on its own multi-threaded runtime, and gives the runtime's tasks one second
/// to stop afterwards (a test whose nodes still have runs in flight is not held up).
pub fn run(test: impl std::future::Future<Output = ()>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(test);
    rt.shutdown_timeout(Duration::from_secs(1));
}

/// The identity key of test node `k` (1-based): the ed25519 key with seed `[k; 32]`.
pub fn signer(k: u8) -> tss_core::Ed25519Signer {
    tss_core::Ed25519Signer::from_seed([k; 32])
}

/// Test node `k`'s id: the public key of [`signer`]`(k)`.
pub fn node_id(k: u8) -> NodeId {
    static IDS: OnceLock<Vec<NodeId>> = OnceLock::new();
    IDS.get_or_init(|| (0..=64u8).map(|k| signer(k).node_id()).collect())[usize::from(k)]
}

/// The `k` of a test node id (panics for other ids).
pub fn number_of(node: &NodeId) -> u8 {
    (0..=64u8)
        .find(|k| node_id(*k) == *node)
        .expect("a test node id")
}

/// The identity key of test node `node`.
pub fn signer_for(node: &NodeId) -> Arc<dyn tss_core::IdentitySigner> {
    Arc::new(signer(number_of(node)))
}

/// Ids of nodes `1..=n`.
pub fn node_ids(n: u8) -> Vec<NodeId> {
    (1..=n).map(node_id).collect()
}

/// The `k`-th fixture prime pair (distinct for distinct `k` below 12).
pub fn primes_at(k: usize) -> PaillierPrimes {
    let list = fixture_primes();
    list[k % list.len()].clone_fixture()
}

/// The fixture primes of a test node (distinct per node).
pub fn primes_for(node: &NodeId) -> PaillierPrimes {
    let list = fixture_primes();
    let k = usize::from(number_of(node));
    list[(k - 1) % list.len()].clone_fixture()
}

/// A fresh execution id.
pub fn fresh_eid(protocol: ProtocolKind, key_id: &KeyId, parties: &[NodeId]) -> ExecutionId {
    ExecutionId::random(protocol, key_id, parties, &mut rand::thread_rng())
}

/// One party of a test pool.
pub struct Party {
    pub node: Arc<TssNode>,
    pub share: KeyShare,
}

/// Builds nodes for `ids` on `network`.
pub fn nodes(network: &InMemoryNetwork, ids: &[NodeId]) -> Vec<Arc<TssNode>> {
    ids.iter()
        .map(|id| {
            Arc::new(
                TssNode::new(Arc::new(network.endpoint(*id)))
                    .with_identity(signer_for(id))
                    .expect("the identity of the endpoint")
                    .with_idle_timeout(Duration::from_secs(300)),
            )
        })
        .collect()
}

/// Runs keygen for a `t`-of-`ids.len()` committee on the given nodes.
pub async fn keygen(
    nodes: &[Arc<TssNode>],
    committee: &Committee,
    key_id: &KeyId,
) -> Vec<KeyShare> {
    let eid = fresh_eid(ProtocolKind::Keygen, key_id, committee.members());
    let runs: Vec<_> = nodes
        .iter()
        .map(|node| {
            let (node, committee, key_id) = (node.clone(), committee.clone(), key_id.clone());
            tokio::spawn(async move {
                let primes = primes_for(&node.node_id());
                node.keygen(key_id, committee, eid, primes).await
            })
        })
        .collect();
    let mut shares = Vec::new();
    for run in runs {
        shares.push(run.await.expect("keygen task").expect("keygen"));
    }
    shares
}

/// Runs a DKLs23 keygen of key `key` for `committee` on the given nodes (same order).
pub async fn dkls23_keygen(
    nodes: &[Arc<TssNode>],
    committee: &Committee,
    key: &str,
) -> Vec<KeyShare> {
    let key_id = KeyId::new(key).unwrap();
    let eid = fresh_eid(ProtocolKind::Keygen, &key_id, committee.members());
    let runs: Vec<_> = nodes
        .iter()
        .map(|node| {
            let (node, committee, key_id) = (node.clone(), committee.clone(), key_id.clone());
            tokio::spawn(async move { node.dkls23_keygen(key_id, committee, eid).await })
        })
        .collect();
    let mut shares = Vec::new();
    for run in runs {
        shares.push(run.await.expect("keygen task").expect("DKLs23 keygen"));
    }
    shares
}

/// A fresh `t`-of-`n` DKLs23 key named `key` for nodes `1..=n` (made now: it takes a
/// moment, unlike a CGGMP21 keygen with aux-info), on a scratch network.
pub async fn dkls23_shares(n: u8, t: u16, key: &str) -> Vec<KeyShare> {
    let network = InMemoryNetwork::new();
    let committee = Committee::new(node_ids(n), t).unwrap();
    dkls23_keygen(&nodes(&network, committee.members()), &committee, key).await
}

/// A pool whose keygen ran once and is shared by every test of a test binary that asks
/// for the same `(n, t)` (keygen with aux-info is the slowest step of every test).
pub struct SharedPool {
    pub network: InMemoryNetwork,
    pub parties: Arc<Vec<Party>>,
    extra: std::sync::Mutex<std::collections::HashMap<NodeId, Arc<TssNode>>>,
}

impl SharedPool {
    /// Wraps a pool.
    pub fn new(network: InMemoryNetwork, parties: Vec<Party>) -> Self {
        Self {
            network,
            parties: Arc::new(parties),
            extra: Default::default(),
        }
    }

    /// The node of `id`: a pool member's, or a new one on the pool's network (created once,
    /// so concurrent tests share it instead of replacing each other's endpoint).
    pub fn node(&self, id: NodeId) -> Arc<TssNode> {
        if let Some(p) = self.parties.iter().find(|p| p.node.node_id() == id) {
            return p.node.clone();
        }
        self.extra
            .lock()
            .unwrap()
            .entry(id)
            .or_insert_with(|| nodes(&self.network, &[id]).remove(0))
            .clone()
    }
}

/// The shared 2-of-3 pool of this test binary.
pub async fn shared_2_of_3() -> &'static SharedPool {
    static POOL: tokio::sync::OnceCell<SharedPool> = tokio::sync::OnceCell::const_new();
    POOL.get_or_init(|| async {
        let (network, parties) = pool(3, 2).await;
        SharedPool::new(network, parties)
    })
    .await
}

/// A network with a fresh `t`-of-`n` key named `key`, made by keygen now (for tests of
/// keygen itself, or that need a key of their own).
pub async fn fresh_pool(n: u8, t: u16, key: &str) -> (InMemoryNetwork, Vec<Party>) {
    let network = InMemoryNetwork::new();
    let nodes = nodes(&network, &node_ids(n));
    let committee = Committee::new(node_ids(n), t).unwrap();
    let key_id = KeyId::new(key).unwrap();
    let shares = keygen(&nodes, &committee, &key_id).await;
    (network, parties_of(nodes, shares))
}

/// Pairs each node with its share (same order).
fn parties_of(nodes: Vec<Arc<TssNode>>, shares: Vec<KeyShare>) -> Vec<Party> {
    nodes
        .into_iter()
        .zip(shares)
        .map(|(node, share)| Party { node, share })
        .collect()
}

/// A network of new nodes holding a `t`-of-`n` key (`pool-{t}-of-{n}`) that a real
/// keygen (with aux-info) made once for this build of the tests: the shares are cached in
/// the build's test scratch directory (`CARGO_TARGET_TMPDIR`, insecure test keys), so
/// the test binaries after the first one load them instead of repeating the slowest step
/// of every test. A cache that does not decode to such shares is made again. Tests
/// that are about keygen use [`fresh_pool`].
pub async fn pool(n: u8, t: u16) -> (InMemoryNetwork, Vec<Party>) {
    let network = InMemoryNetwork::new();
    let nodes = nodes(&network, &node_ids(n));
    let shares = cached_shares(n, t).await;
    (network, parties_of(nodes, shares))
}

/// The shares of [`pool`]: loaded from the cache, or made by keygen and cached.
async fn cached_shares(n: u8, t: u16) -> Vec<KeyShare> {
    // One test of this binary at a time makes or reads a cache entry.
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _guard = LOCK.lock().await;
    let key_id = KeyId::new(format!("pool-{t}-of-{n}")).unwrap();
    let committee = Committee::new(node_ids(n), t).unwrap();
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("tss-core-test-pools");
    let path = dir.join(format!("{t}-of-{n}.json"));
    if let Some(shares) = std::fs::read(&path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Vec<Vec<u8>>>(&bytes).ok())
        .and_then(|list| {
            list.iter()
                .map(|b| KeyShare::from_secret_bytes(b).ok())
                .collect::<Option<Vec<_>>>()
        })
        .filter(|shares| {
            shares.len() == usize::from(n)
                && shares.iter().enumerate().all(|(i, s)| {
                    s.key_id() == &key_id
                        && s.committee() == &committee
                        && s.local_node() == node_ids(n)[i]
                        && s.public_info().public_key == shares[0].public_info().public_key
                })
        })
    {
        return shares;
    }
    let network = InMemoryNetwork::new();
    let shares = keygen(&nodes(&network, committee.members()), &committee, &key_id).await;
    let bytes: Vec<Vec<u8>> = shares
        .iter()
        .map(|s| s.to_secret_bytes().unwrap().to_vec())
        .collect();
    std::fs::create_dir_all(&dir).unwrap();
    // Written whole, then renamed: a test binary running beside this one never reads
    // half a file.
    let tmp = dir.join(format!("{t}-of-{n}.json.{}", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec(&bytes).unwrap()).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    shares
}

/// Every member of `signers` (positions into `parties`) presigns together; returns the
/// presignature id.
pub async fn presign(parties: &Arc<Vec<Party>>, signers: &[usize]) -> ExecutionId {
    let ids: Vec<NodeId> = signers.iter().map(|&i| parties[i].node.node_id()).collect();
    let key_id = parties[0].share.key_id().clone();
    let eid = fresh_eid(ProtocolKind::Presign, &key_id, &ids);
    let runs: Vec<_> = signers
        .iter()
        .map(|&i| {
            let (parties, ids) = (parties.clone(), ids.clone());
            tokio::spawn(async move {
                let p = &parties[i];
                p.node.presign(&p.share, &ids, eid).await
            })
        })
        .collect();
    for run in runs {
        assert_eq!(run.await.unwrap().expect("presign"), eid);
    }
    eid
}

/// Every member of `signers` signs `message` (its keccak256) with presignature `presig`.
pub async fn sign_online(
    parties: &Arc<Vec<Party>>,
    signers: &[usize],
    presig: ExecutionId,
    message: &[u8],
) -> Vec<tss_core::Result<tss_core::EthSignature>> {
    let runs: Vec<_> = signers
        .iter()
        .map(|&i| {
            let (parties, message) = (parties.clone(), message.to_vec());
            tokio::spawn(async move {
                let p = &parties[i];
                p.node
                    .sign_with_presignature(p.share.key_id(), presig, &message)
                    .await
            })
        })
        .collect();
    let mut out = Vec::new();
    for run in runs {
        out.push(run.await.unwrap());
    }
    out
}

/// Every member of `signers` runs full interactive signing of `digest`.
pub async fn sign_full(
    parties: &Arc<Vec<Party>>,
    signers: &[usize],
    digest: [u8; 32],
) -> Vec<tss_core::Result<tss_core::EthSignature>> {
    let ids: Vec<NodeId> = signers.iter().map(|&i| parties[i].node.node_id()).collect();
    let key_id = parties[0].share.key_id().clone();
    let eid = fresh_eid(ProtocolKind::Sign, &key_id, &ids);
    let runs: Vec<_> = signers
        .iter()
        .map(|&i| {
            let (parties, ids) = (parties.clone(), ids.clone());
            tokio::spawn(async move {
                let p = &parties[i];
                p.node.sign(&p.share, &ids, digest, eid).await
            })
        })
        .collect();
    let mut out = Vec::new();
    for run in runs {
        out.push(run.await.unwrap());
    }
    out
}

/// Runs one party's reshare the way an embedder does: [`TssNode::reshare`] with the role
/// its place in `request` gives it, then `store` on the staged share (new members only;
/// an error there ends the run for this party unconfirmed), then
/// [`tss_core::StagedReshare::confirm`].
pub async fn reshare_party(
    node: &TssNode,
    request: &tss_core::ReshareRequest,
    old_share: Option<&KeyShare>,
    primes: Option<PaillierPrimes>,
    store: impl FnOnce(&KeyShare) -> tss_core::Result<()>,
) -> tss_core::Result<tss_core::ReshareOutcome> {
    let role = tss_core::ReshareRole::for_party(request, &node.node_id(), old_share, primes)?;
    let staged = Box::pin(node.reshare(request, role)).await?;
    if let Some(share) = staged.new_share() {
        store(share)?;
    }
    Box::pin(staged.confirm()).await
}

/// A store step for [`reshare_party`] that keeps nothing.
pub fn store_nowhere(_: &KeyShare) -> tss_core::Result<()> {
    Ok(())
}

/// `proposer` proposes a keygen of `key` by `committee` with the embedder's `context`,
/// then waits until every node of `followers` has committed it
/// ([`tss_core::pool::PoolEvent::KeyCommitted`]), each within `limit`. Returns the
/// proposer's share.
pub async fn keygen_and_wait(
    proposer: &tss_core::pool::PoolNode,
    followers: &[tss_core::pool::PoolNode],
    key: &KeyId,
    committee: Committee,
    context: Vec<u8>,
    limit: Duration,
) -> Arc<KeyShare> {
    // Subscribed before the proposal: no commit can be missed.
    let mut events: Vec<_> = followers.iter().map(|n| n.subscribe()).collect();
    let share = proposer
        .propose_keygen(key.clone(), committee, context)
        .await
        .expect("keygen");
    for events in &mut events {
        tokio::time::timeout(limit, async {
            loop {
                let event = events.recv().await.expect("event stream");
                if let tss_core::pool::PoolEvent::KeyCommitted { .. } = event {
                    return;
                }
            }
        })
        .await
        .expect("every follower committed the key");
    }
    share
}
