//! Members stopped at each step of a reshare's commit order, restarted on their encrypted
//! keystores reopened from disk.
//!
//! The commit order (see `tss_core::pool`): stage the new share (pending), confirm it,
//! store the certificate, activate (with the state), retire the old generation. A member
//! stopped anywhere in it restarts on a generation the whole new committee confirmed, or
//! on its old one; never on an unconfirmed one; and never keeps an old share next to a
//! certified new one.
//!
//! How a member is stopped: its store ([`Stopping`]) stops at the chosen step, the way
//! a killed process stops there: the call never returns, the node is shut down, and its
//! keystore is closed and reopened from its directory for the restart. Whatever the store
//! had written (each keystore write is one synced LevelDB batch) is what the restarted
//! node finds. (The keystore's own kills of real processes inside its writes are
//! `keystore/tests/crash.rs`.)

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::{node_ids, signer_for};
use keystore::{AsyncKeystore, KdfParams, Unlock};
use transport::{InMemoryNetwork, NodeId};
use tss_core::pool::{
    AcceptEverything, PendingGeneration, PoolConfig, PoolEvent, PoolNode, ShareStore,
};
use tss_core::{
    Committee, ExecutionId, Generation, InsecureTestPrimes, KeyId, KeyShare, Protocol,
    ReshareCertificate, StoreError,
};

/// Where a [`Stopping`] store stops.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Step {
    /// When the new share is to be staged, before anything is written.
    BeforeStage,
    /// Right after staging the new share (durable, pending): before confirming it.
    AfterStage,
    /// At activation, before anything of it is written (the certificate included).
    BeforeActivation,
    /// At activation, after the certificate is stored, before the active-generation
    /// switch (the keystore writes the two separately).
    BetweenCertificateAndSwitch,
    /// Right after activation (new generation active), before the old one is retired.
    BeforeRetirement,
}

/// A keystore that stops forever at `at`, after telling `reached`.
struct Stopping {
    inner: AsyncKeystore,
    at: Option<Step>,
    reached: tokio::sync::mpsc::UnboundedSender<(NodeId, Step)>,
    me: NodeId,
}

impl Stopping {
    async fn stop_if(&self, step: Step) {
        if self.at == Some(step) {
            let _ = self.reached.send((self.me, step));
            std::future::pending::<()>().await;
        }
    }
}

#[async_trait]
impl ShareStore for Stopping {
    async fn load_active(&self, key_id: &KeyId) -> Result<Option<KeyShare>, StoreError> {
        ShareStore::load_active(&self.inner, key_id).await
    }
    async fn load_state(&self, key_id: &KeyId) -> Result<Option<Vec<u8>>, StoreError> {
        ShareStore::load_state(&self.inner, key_id).await
    }
    async fn stage(&self, share: &KeyShare, pending_state: &[u8]) -> Result<(), StoreError> {
        self.stop_if(Step::BeforeStage).await;
        ShareStore::stage(&self.inner, share, pending_state).await?;
        self.stop_if(Step::AfterStage).await;
        Ok(())
    }
    async fn load_pending(&self, key_id: &KeyId) -> Result<Vec<PendingGeneration>, StoreError> {
        ShareStore::load_pending(&self.inner, key_id).await
    }
    async fn activate(
        &self,
        key_id: &KeyId,
        generation: Generation,
        state: &[u8],
        certificate: Option<&ReshareCertificate>,
    ) -> Result<(), StoreError> {
        self.stop_if(Step::BeforeActivation).await;
        if let Some(certificate) = certificate {
            self.inner
                .put_certificate(key_id, generation, certificate)
                .await?;
        }
        self.stop_if(Step::BetweenCertificateAndSwitch).await;
        self.inner.activate(key_id, generation, state).await?;
        Ok(())
    }
    async fn load_certificate(
        &self,
        key_id: &KeyId,
        generation: Generation,
    ) -> Result<Option<ReshareCertificate>, StoreError> {
        ShareStore::load_certificate(&self.inner, key_id, generation).await
    }
    async fn retire(&self, key_id: &KeyId, generation: Generation) -> Result<(), StoreError> {
        self.stop_if(Step::BeforeRetirement).await;
        ShareStore::retire(&self.inner, key_id, generation).await
    }
    async fn delete(&self, key_id: &KeyId, state: &[u8]) -> Result<bool, StoreError> {
        ShareStore::delete(&self.inner, key_id, state).await
    }
    async fn save_state(&self, key_id: &KeyId, state: &[u8]) -> Result<(), StoreError> {
        ShareStore::save_state(&self.inner, key_id, state).await
    }
    async fn save_bans(
        &self,
        key_id: &KeyId,
        generation: Generation,
        members: &std::collections::BTreeSet<transport::NodeId>,
    ) -> Result<(), StoreError> {
        ShareStore::save_bans(&self.inner, key_id, generation, members).await
    }
    async fn load_bans(
        &self,
        key_id: &KeyId,
        generation: Generation,
    ) -> Result<std::collections::BTreeSet<transport::NodeId>, StoreError> {
        ShareStore::load_bans(&self.inner, key_id, generation).await
    }
    async fn stored_generations(&self, key_id: &KeyId) -> Result<Vec<Generation>, StoreError> {
        ShareStore::stored_generations(&self.inner, key_id).await
    }
    async fn record_executions(&self, eids: &[ExecutionId], keep: usize) -> Result<(), StoreError> {
        ShareStore::record_executions(&self.inner, eids, keep).await
    }
    async fn load_executions(&self) -> Result<Vec<ExecutionId>, StoreError> {
        ShareStore::load_executions(&self.inner).await
    }
}

async fn open(dir: &Path) -> AsyncKeystore {
    AsyncKeystore::open_with_kdf(
        dir,
        Unlock::passphrase("restart tests"),
        KdfParams::insecure_for_tests(),
    )
    .await
    .unwrap()
}

/// Silence that ends a run (long enough for aux-info rounds on a loaded machine).
const IDLE: Duration = Duration::from_secs(30);
/// How long a test waits for what must come (far beyond any run's work).
const WAIT: Duration = Duration::from_secs(300);

/// Nodes 1..=4; 1..=3 hold the build's cached 2-of-3 key ([`common::pool`]), active in
/// their keystores with the state `pool v1`; node 4 has an empty keystore and joins by
/// the reshare.
struct Pool {
    network: InMemoryNetwork,
    protocol: Protocol,
    ids: Vec<NodeId>,
    key: KeyId,
    _dirs: tempfile::TempDir,
    dirs: Vec<PathBuf>,
    stores: Vec<AsyncKeystore>,
    nodes: Vec<PoolNode>,
    reached: tokio::sync::mpsc::UnboundedReceiver<(NodeId, Step)>,
}

impl Pool {
    /// Starts the pool (a CGGMP21 key: the build's cached one), node `i` stopping at
    /// `stops[i]`.
    async fn start(stops: [Option<Step>; 4]) -> Pool {
        Self::start_with(stops, Protocol::Cggmp21).await
    }

    /// Starts the pool with a key of `protocol` (DKLs23: made now).
    async fn start_with(stops: [Option<Step>; 4], protocol: Protocol) -> Pool {
        let network = InMemoryNetwork::new();
        let ids = node_ids(4);
        let shares: Vec<KeyShare> = match protocol {
            Protocol::Dkls23 => common::dkls23_shares(3, 2, "dkls23-pool").await,
            _ => common::pool(3, 2)
                .await
                .1
                .into_iter()
                .map(|p| p.share)
                .collect(),
        };
        let key = shares[0].key_id().clone();
        let root = tempfile::tempdir().unwrap();
        let dirs: Vec<PathBuf> = (1..=4)
            .map(|k| root.path().join(format!("node{k}")))
            .collect();
        let (tell, reached) = tokio::sync::mpsc::unbounded_channel();
        let mut stores = Vec::new();
        let mut nodes = Vec::new();
        for (i, stop) in stops.into_iter().enumerate() {
            let store = open(&dirs[i]).await;
            if let Some(share) = shares.get(i) {
                ShareStore::stage(&store, share, b"pool v1").await.unwrap();
                ShareStore::activate(&store, &key, Generation(0), b"pool v1", None)
                    .await
                    .unwrap();
            }
            let stopping = Stopping {
                inner: store.clone(),
                at: stop,
                reached: tell.clone(),
                me: ids[i],
            };
            nodes.push(start_node(&network, &ids, i, Arc::new(stopping), &key, protocol).await);
            stores.push(store);
        }
        Pool {
            network,
            protocol,
            ids,
            key,
            _dirs: root,
            dirs,
            stores,
            nodes,
            reached,
        }
    }

    /// Node 1 proposes the reshare to {1, 2, 3, 4}, 3-of-4 (node 4 joins), in a task.
    fn reshare_to_all_four(
        &self,
    ) -> tokio::task::JoinHandle<tss_core::Result<tss_core::pool::ReshareCommit>> {
        let proposer = self.nodes[0].clone();
        let (key, committee) = (
            self.key.clone(),
            Committee::two_thirds(self.ids.clone()).unwrap(),
        );
        tokio::spawn(async move {
            proposer
                .propose_reshare(&key, committee, None, b"pool v2".to_vec())
                .await
        })
    }

    /// Waits until the nodes of `expected` (by index) reached their stops, and checks
    /// that each stopped where it was told to.
    async fn assert_stopped(&mut self, expected: &[(usize, Step)]) {
        let mut stops = Vec::new();
        while stops.len() < expected.len() {
            let stop = tokio::time::timeout(WAIT, self.reached.recv())
                .await
                .expect("the member reached its stop")
                .unwrap();
            stops.push(stop);
        }
        let mut expected: Vec<(NodeId, Step)> = expected
            .iter()
            .map(|(i, step)| (self.ids[*i], *step))
            .collect();
        stops.sort_by_key(|(node, _)| *node);
        expected.sort_by_key(|(node, _)| *node);
        assert_eq!(stops, expected, "each member stopped where it was told to");
    }

    /// "Kills" node `i` (shut down, keystore closed) and reopens its keystore from disk.
    async fn kill(&mut self, i: usize) {
        self.nodes[i].shutdown();
        self.stores[i].clone().close().await.unwrap();
        self.stores[i] = open(&self.dirs[i]).await;
    }

    /// Starts node `i` again on its reopened keystore (nothing stops it now).
    async fn restart(&mut self, i: usize) {
        self.nodes[i] = start_node(
            &self.network,
            &self.ids,
            i,
            Arc::new(self.stores[i].clone()),
            &self.key,
            self.protocol,
        )
        .await;
    }

    /// Waits until node `i` serves `generation`.
    async fn wait_serving(&self, i: usize, generation: Generation) {
        let node = &self.nodes[i];
        let waited = tokio::time::timeout(WAIT, async {
            while node.share(&self.key).map(|s| s.generation()) != Some(generation) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(waited.is_ok(), "node {} serves {generation}", i + 1);
    }
}

/// What `store` holds of `key` after a kill: its active generation, every stored
/// generation, and whether it has the certificate of generation 1.
async fn held(store: &AsyncKeystore, key: &KeyId) -> (Option<Generation>, Vec<Generation>, bool) {
    (
        store.active_generation(key).await.unwrap(),
        store.generations(key).await.unwrap(),
        ShareStore::load_certificate(store, key, Generation(1))
            .await
            .unwrap()
            .is_some(),
    )
}

async fn start_node(
    network: &InMemoryNetwork,
    ids: &[NodeId],
    i: usize,
    store: Arc<dyn ShareStore>,
    key: &KeyId,
    protocol: Protocol,
) -> PoolNode {
    PoolNode::start(
        PoolConfig::new(ids.to_vec())
            .with_protocol(key.clone(), protocol)
            .with_session_idle_timeout(IDLE)
            .with_certificate_retry_interval(Duration::from_secs(1)),
        Arc::new(network.endpoint(ids[i])),
        signer_for(&ids[i]),
        Arc::new(AcceptEverything),
        store,
        Arc::new(InsecureTestPrimes::new(i)),
        std::slice::from_ref(key),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_killed_at_each_step_after_confirmation_restart_on_the_certified_generation_with_the_old_share_retired(
) {
    killed_at_each_step_after_confirmation(Protocol::Cggmp21).await;
}

/// The same kills with a DKLs23 key: the commit order and the restarts are the pool
/// layer's, whatever the protocol; the restarted members hold DKLs23 shares and sign.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dkls23_members_killed_at_each_step_after_confirmation_restart_on_the_certified_generation_with_the_old_share_retired(
) {
    killed_at_each_step_after_confirmation(Protocol::Dkls23).await;
}

async fn killed_at_each_step_after_confirmation(protocol: Protocol) {
    // Node 4 joins: {1, 2, 3} 2-of-3 -> {1, 2, 3, 4} 3-of-4. Every new member confirms
    // (so a certificate exists), then node 1 (the proposer) stops after activating, before
    // retiring its old share; node 2 at activation before anything is written; node 3
    // between storing the certificate and switching. Node 4 completes.
    let mut pool = Pool::start_with(
        [
            Some(Step::BeforeRetirement),
            Some(Step::BeforeActivation),
            Some(Step::BetweenCertificateAndSwitch),
            None,
        ],
        protocol,
    )
    .await;
    let address = pool.nodes[0].share(&pool.key).unwrap().ethereum_address();
    let mut joiner = pool.nodes[3].subscribe();
    let run = pool.reshare_to_all_four();
    pool.assert_stopped(&[
        (0, Step::BeforeRetirement),
        (1, Step::BeforeActivation),
        (2, Step::BetweenCertificateAndSwitch),
    ])
    .await;
    tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(PoolEvent::KeyCommitted { generation, .. }) = joiner.recv().await {
                if generation == Generation(1) {
                    break;
                }
            }
        }
    })
    .await
    .expect("the joiner commits the new generation");
    for i in 0..3 {
        pool.kill(i).await;
    }
    run.abort();

    let (g0, g1) = (Generation(0), Generation(1));
    assert_eq!(
        held(&pool.stores[0], &pool.key).await,
        (Some(g1), vec![g0, g1], true)
    );
    assert_eq!(
        held(&pool.stores[1], &pool.key).await,
        (Some(g0), vec![g0, g1], false)
    );
    assert_eq!(
        held(&pool.stores[2], &pool.key).await,
        (Some(g0), vec![g0, g1], true)
    );

    for i in 0..3 {
        pool.restart(i).await;
    }
    // Node 1 retires its left-over share at start; node 3 activates with the certificate
    // it stored; node 2 fetches the certificate from its peers and activates.
    for i in 0..3 {
        pool.wait_serving(i, g1).await;
    }
    for (i, store) in pool.stores.iter().enumerate() {
        // A node serves the new share a moment before it retires the old one.
        let settled = tokio::time::timeout(WAIT, async {
            while held(store, &pool.key).await != (Some(g1), vec![g1], true) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(
            settled.is_ok(),
            "node {}: the certified generation is active, the old share gone: {:?}",
            i + 1,
            held(store, &pool.key).await
        );
        assert_eq!(
            store.load_state(&pool.key).await.unwrap().as_deref(),
            Some(&b"pool v2"[..]),
            "node {}: committed with the state staged with it",
            i + 1
        );
        assert_eq!(
            store
                .load_active(&pool.key)
                .await
                .unwrap()
                .unwrap()
                .protocol(),
            protocol,
            "node {}",
            i + 1
        );
    }
    // The new committee signs for the pool's address.
    let signed = pool.nodes[1]
        .propose_sign(
            &pool.key,
            b"first batch after the restarts".to_vec(),
            Some(pool.ids[..3].to_vec()),
        )
        .await
        .expect("the restarted members sign");
    assert_eq!(
        signed.signature.recover_address(&signed.digest).unwrap(),
        address
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_killed_before_confirming_their_new_shares_never_activate_them_and_the_old_committee_still_signs(
) {
    // Node 2 stops right after storing its new share, before confirming it; node 3 before
    // storing its own. No certificate can exist anywhere.
    let mut pool = Pool::start([None, Some(Step::AfterStage), Some(Step::BeforeStage), None]).await;
    let address = pool.nodes[0].share(&pool.key).unwrap().ethereum_address();
    let run = pool.reshare_to_all_four();
    pool.assert_stopped(&[(1, Step::AfterStage), (2, Step::BeforeStage)])
        .await;
    pool.kill(1).await;
    pool.kill(2).await;
    let outcome = tokio::time::timeout(WAIT, run)
        .await
        .expect("the run ends once node 2 is silent")
        .unwrap();
    assert!(outcome.is_err(), "the reshare fails: {outcome:?}");
    let (g0, g1) = (Generation(0), Generation(1));
    for (i, store) in pool.stores.iter().enumerate() {
        assert_eq!(
            ShareStore::load_certificate(store, &pool.key, g1)
                .await
                .unwrap(),
            None,
            "node {} holds no certificate",
            i + 1
        );
    }
    assert_eq!(
        pool.stores[1].generations(&pool.key).await.unwrap(),
        vec![g0, g1],
        "node 2's new share was stored before the kill"
    );
    assert_eq!(
        pool.stores[2].generations(&pool.key).await.unwrap(),
        vec![g0],
        "node 3 stored nothing new"
    );

    // A node activates only with a certificate, and none exists: both restart on their
    // old generation (node 2's new one pending).
    pool.restart(1).await;
    pool.restart(2).await;
    for (i, store) in pool.stores.iter().enumerate().take(3) {
        assert_eq!(
            store.active_generation(&pool.key).await.unwrap(),
            Some(g0),
            "node {} keeps its old generation",
            i + 1
        );
    }
    let signed = pool.nodes[1]
        .propose_sign(
            &pool.key,
            b"batch after the failed reshare".to_vec(),
            Some(pool.ids[1..3].to_vec()),
        )
        .await
        .expect("the restarted nodes 2 and 3 sign with their old shares");
    assert_eq!(
        signed.signature.recover_address(&signed.digest).unwrap(),
        address
    );
    for i in [1, 2] {
        assert_eq!(
            pool.nodes[i].share(&pool.key).unwrap().generation(),
            g0,
            "node {} serves its old generation",
            i + 1
        );
    }
    let pending = pool.stores[1].load_pending(&pool.key).await.unwrap();
    assert_eq!(pending.len(), 1, "node 2's new share stays pending");
    assert_eq!(pending[0].share.generation(), g1);
}
