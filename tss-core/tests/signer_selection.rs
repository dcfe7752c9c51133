//! Signing that survives a member down: the proposer picks live signers, detects a
//! signer that goes silent or refuses within seconds, aborts the run for everyone and
//! signs with another set, naming the members it left out.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use transport::{
    Destination, InMemoryNetwork, NodeId, SessionConfig, Tamper, TamperingTransport, Transport,
};
use tss_core::pool::{
    control_session_id, ControlMsg, KeygenProposal, MemoryShareStore, PoolConfig, PoolEvent,
    PoolNode, Proposal, ProposalValidator, Rejection, ReshareProposal, ShareStore, SignProposal,
    SigningInput,
};
use tss_core::wire::encode_message;
use tss_core::{
    ExecutionId, InsecureTestPrimes, KeyId, KeyShare, ProtocolKind, PublicKeyInfo, TssError,
};
use zeroize::Zeroizing;

const N: u8 = 5;
const T: u16 = 4;

fn key() -> KeyId {
    KeyId::new("selection").unwrap()
}

/// The shares of one 4-of-5 keygen, made once for this test binary (keygen with aux-info
/// is the slow part), kept as bytes so every test loads its own copies.
async fn shares() -> &'static Vec<Zeroizing<Vec<u8>>> {
    static SHARES: tokio::sync::OnceCell<Vec<Zeroizing<Vec<u8>>>> =
        tokio::sync::OnceCell::const_new();
    SHARES
        .get_or_init(|| async {
            let (_network, parties) = common::fresh_pool(N, T, "selection").await;
            parties
                .iter()
                .map(|p| p.share.to_secret_bytes().unwrap())
                .collect()
        })
        .await
}

/// Accepts everything, unless `refuse_sign`. With `hold`, a request `b"hold"` is
/// validated only once the test releases it (`hold.1`), after telling it (`hold.0`):
/// the member's follow slot stays taken meanwhile.
struct Rules {
    refuse_sign: bool,
    hold: Option<Arc<(tokio::sync::Notify, tokio::sync::Notify)>>,
}

#[async_trait]
impl ProposalValidator for Rules {
    async fn check_keygen(&self, _: NodeId, p: &KeygenProposal) -> Result<Vec<u8>, Rejection> {
        Ok(p.context.clone())
    }
    async fn check_sign(
        &self,
        _: NodeId,
        p: &SignProposal,
        _: &PublicKeyInfo,
    ) -> Result<SigningInput, Rejection> {
        if self.refuse_sign {
            return Err(Rejection::new("this member refuses every batch"));
        }
        if let (Some(hold), b"hold") = (&self.hold, p.request.as_slice()) {
            hold.0.notify_one();
            hold.1.notified().await;
        }
        Ok(SigningInput::Message(p.request.clone()))
    }
    async fn check_reshare(
        &self,
        _: NodeId,
        p: &ReshareProposal,
        _: Option<&PublicKeyInfo>,
    ) -> Result<Vec<u8>, Rejection> {
        Ok(p.context.clone())
    }
}

/// A transport that can be muted: once `muted` is set, everything this node sends is
/// dropped (a frozen process, or one cut off by the network while its peers' connections
/// still look open).
fn mutable(
    inner: transport::InMemoryTransport,
    muted: Arc<AtomicBool>,
) -> TamperingTransport<transport::InMemoryTransport> {
    TamperingTransport::new(
        inner,
        Arc::new(move |_, _, _, _| {
            if muted.load(Ordering::SeqCst) {
                Tamper::Drop
            } else {
                Tamper::Pass
            }
        }),
    )
}

/// Silence a signing run tolerates here. Heartbeats go out five times as often, from a
/// task apart from the protocol's CPU work.
const SILENCE: Duration = Duration::from_secs(3);
/// Idle timeout of protocol sessions: far longer than any test, so a test that finishes
/// proves the heartbeat watch (not an idle timeout) found the silent member.
const IDLE: Duration = Duration::from_secs(900);

struct Pool {
    network: InMemoryNetwork,
    ids: Vec<NodeId>,
    nodes: Vec<PoolNode>,
    muted: Vec<Arc<AtomicBool>>,
    stores: Vec<Arc<MemoryShareStore>>,
    refusing: Option<usize>,
    /// Member index whose validator holds `b"hold"` requests, and the pair of signals.
    holding: Option<(usize, Arc<(tokio::sync::Notify, tokio::sync::Notify)>)>,
    /// Member index that follows one run at a time (`PoolConfig::max_concurrent_runs`).
    one_run_at_a_time: Option<usize>,
    /// A second key, held by members 1-4 (its 3-of-4 committee), if the test wants one.
    second_key: Option<KeyId>,
}

impl Pool {
    /// Five members holding the 4-of-5 key; member `refusing` (if any) refuses to sign.
    async fn start(refusing: Option<usize>) -> Pool {
        Self::start_with(refusing, None, None).await
    }

    /// As [`Pool::start`]; member `holding.0` holds `b"hold"` requests (see [`Rules`]),
    /// member `one_run_at_a_time` follows one run at a time.
    async fn start_with(
        refusing: Option<usize>,
        holding: Option<(usize, Arc<(tokio::sync::Notify, tokio::sync::Notify)>)>,
        one_run_at_a_time: Option<usize>,
    ) -> Pool {
        let shares = shares().await;
        let ids = common::node_ids(N);
        let network = InMemoryNetwork::new();
        let key = key();
        let mut pool = Pool {
            network,
            ids: ids.clone(),
            nodes: Vec::new(),
            muted: Vec::new(),
            stores: Vec::new(),
            refusing,
            holding,
            one_run_at_a_time,
            second_key: None,
        };
        for (i, share) in shares.iter().enumerate() {
            let store = Arc::new(MemoryShareStore::new());
            let share = KeyShare::from_secret_bytes(share).unwrap();
            store.stage(&share, b"state").await.unwrap();
            store
                .activate(&key, share.generation(), b"state", None)
                .await
                .unwrap();
            pool.stores.push(store);
            let flag = Arc::new(AtomicBool::new(false));
            pool.muted.push(flag.clone());
            let node = pool.start_node(i, flag).await;
            pool.nodes.push(node);
        }
        pool
    }

    /// As [`Pool::start_with`] with `holding`; members 1-4 also hold a second key, a
    /// 3-of-4 one of their own (committee: members 1-4), returned with the pool.
    async fn start_with_a_second_key(
        holding: Arc<(tokio::sync::Notify, tokio::sync::Notify)>,
    ) -> (Pool, KeyId) {
        let (_network, parties) = common::pool(4, 3).await;
        let second = parties[0].share.key_id().clone();
        let mut pool = Pool::start_with(None, None, None).await;
        for node in &pool.nodes {
            node.shutdown();
        }
        pool.nodes.clear();
        pool.network = InMemoryNetwork::new();
        pool.holding = Some((1, holding));
        pool.second_key = Some(second.clone());
        for (i, party) in parties.iter().enumerate() {
            pool.stores[i].stage(&party.share, b"state").await.unwrap();
            pool.stores[i]
                .activate(&second, party.share.generation(), b"state", None)
                .await
                .unwrap();
        }
        for i in 0..usize::from(N) {
            let node = pool.start_node(i, pool.muted[i].clone()).await;
            pool.nodes.push(node);
        }
        (pool, second)
    }

    async fn start_node(&self, i: usize, muted: Arc<AtomicBool>) -> PoolNode {
        let id = self.ids[i];
        let transport = mutable(self.network.endpoint(id), muted);
        let mut config = PoolConfig::new(self.ids.clone())
            .with_session_idle_timeout(IDLE)
            .with_signer_silence_timeout(SILENCE);
        if self.one_run_at_a_time == Some(i) {
            config.max_concurrent_runs = 1;
        }
        PoolNode::start(
            config,
            Arc::new(transport),
            common::signer_for(&id),
            Arc::new(Rules {
                refuse_sign: self.refusing == Some(i),
                hold: self
                    .holding
                    .as_ref()
                    .filter(|(at, _)| *at == i)
                    .map(|(_, hold)| hold.clone()),
            }),
            self.stores[i].clone(),
            Arc::new(InsecureTestPrimes::new(i)),
            &self.keys_of(i),
        )
        .await
        .unwrap()
    }

    /// The keys member `i` holds.
    fn keys_of(&self, i: usize) -> Vec<KeyId> {
        let mut keys = vec![key()];
        if let Some(second) = self.second_key.as_ref().filter(|_| i < 4) {
            keys.push(second.clone());
        }
        keys
    }

    /// Restarts member `i` on its store (a new process: nothing kept in memory).
    async fn restart(&mut self, i: usize) {
        self.nodes[i].shutdown();
        let node = self.start_node(i, self.muted[i].clone()).await;
        self.nodes[i] = node;
    }

    /// Kills member `i`: its node stops and the network no longer reaches it.
    fn kill(&self, i: usize) {
        self.nodes[i].shutdown();
        self.network.disconnect(&self.ids[i]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pool_with_one_member_down_keeps_signing_and_names_the_skipped_member() {
    let pool = Pool::start(None).await;
    // Member 2 is the first the proposer (member 1) would pick after itself.
    pool.kill(1);
    let out = pool.nodes[0]
        .propose_sign(&key(), b"batch 1".to_vec(), None)
        .await
        .expect("four live members of five sign");
    assert_eq!(out.signers.len(), usize::from(T));
    assert!(
        !out.signers.contains(&pool.ids[1]),
        "the dead member is not a signer"
    );
    assert_eq!(out.skipped, vec![pool.ids[1]], "the dead member is named");
    assert_eq!(
        out.attempts, 1,
        "a member the transport reports down is not tried"
    );
    assert_eq!(
        out.signature.recover_address(&out.digest).unwrap(),
        out.address
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_signer_that_goes_silent_mid_run_is_detected_and_the_retry_succeeds() {
    let pool = Pool::start(None).await;
    let silent = 1;
    // Member 2 goes silent as soon as it has joined the run: its connections still look
    // open, so only the missing heartbeats can tell.
    let mut events = pool.nodes[silent].subscribe();
    let flag = pool.muted[silent].clone();
    tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            if matches!(event, PoolEvent::RunStarted { .. }) {
                flag.store(true, Ordering::SeqCst);
                return;
            }
        }
    });
    let mut proposer_events = pool.nodes[0].subscribe();
    let out = pool.nodes[0]
        .propose_sign(&key(), b"batch 2".to_vec(), None)
        .await
        .expect("the second set signs");
    assert_eq!(out.attempts, 2, "the first set failed, the second signed");
    assert_eq!(out.skipped, vec![pool.ids[silent]]);
    assert!(!out.signers.contains(&pool.ids[silent]));
    assert_eq!(
        out.signature.recover_address(&out.digest).unwrap(),
        out.address
    );
    // The proposer reported whom it set aside, and why.
    let mut skipped_event = None;
    while let Ok(event) = proposer_events.try_recv() {
        if let PoolEvent::SignerSkipped { member, reason, .. } = event {
            skipped_event = Some((member, reason));
        }
    }
    let (member, reason) = skipped_event.expect("a SignerSkipped event");
    assert_eq!(member, pool.ids[silent]);
    assert!(reason.contains("no sign of life"), "{reason}");
    let unresponsive = pool.nodes[0].unresponsive_members();
    assert_eq!(unresponsive.len(), 1);
    assert_eq!(unresponsive[0].0, pool.ids[silent]);
    // The other signers of the first run stopped too (the abort reached them): each of
    // them signed the second run, which needs the key not to be stuck in the first.
    for s in &out.signers {
        assert_ne!(*s, pool.ids[silent]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_signer_that_refuses_is_set_aside_and_another_set_signs() {
    // Member 3 refuses every batch (a broken or dishonest follower).
    let pool = Pool::start(Some(2)).await;
    let out = pool.nodes[0]
        .propose_sign(&key(), b"batch 3".to_vec(), None)
        .await
        .expect("the set without the refuser signs");
    assert_eq!(out.attempts, 2);
    assert_eq!(out.skipped, vec![pool.ids[2]]);
    assert!(!out.signers.contains(&pool.ids[2]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_busy_signer_is_passed_over_for_this_request_but_not_set_aside() {
    // Member 2 follows one run at a time, and its one slot is taken: member 5's request
    // `hold` waits in member 2's validator until the end of the test.
    let hold = Arc::new((tokio::sync::Notify::new(), tokio::sync::Notify::new()));
    let pool = Pool::start_with(None, Some((1, hold.clone())), Some(1)).await;
    let ids = pool.ids.clone();
    let holder = pool.nodes[4].clone();
    let held = tokio::spawn(async move {
        holder
            .propose_sign(
                &key(),
                b"hold".to_vec(),
                Some(vec![ids[4], ids[1], ids[2], ids[3]]),
            )
            .await
    });
    tokio::time::timeout(Duration::from_secs(120), hold.0.notified())
        .await
        .expect("member 2 is validating the held request");
    // Member 1 would sign with members 1-4; member 2 refuses at once as busy.
    let mut events = pool.nodes[0].subscribe();
    let out = pool.nodes[0]
        .propose_sign(&key(), b"batch 7".to_vec(), None)
        .await
        .expect("a set without the busy member signs");
    assert_eq!(out.attempts, 2);
    assert_eq!(out.skipped, vec![pool.ids[1]]);
    assert!(!out.signers.contains(&pool.ids[1]));
    // Busy is not unresponsive: member 2 is not set aside for the next requests.
    assert!(
        pool.nodes[0]
            .unresponsive_members()
            .iter()
            .all(|(m, _)| *m != pool.ids[1]),
        "{:?}",
        pool.nodes[0].unresponsive_members()
    );
    let reason = loop {
        match events.recv().await.expect("event stream") {
            PoolEvent::SignerSkipped { member, reason, .. } if member == pool.ids[1] => {
                break reason
            }
            _ => {}
        }
    };
    assert!(reason.starts_with("busy:"), "{reason}");
    hold.1.notify_one();
    held.abort();
    for node in &pool.nodes {
        node.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_fewer_live_members_than_the_threshold_signing_fails_naming_them() {
    let pool = Pool::start(None).await;
    pool.kill(1);
    pool.kill(3);
    let err = pool.nodes[0]
        .propose_sign(&key(), b"batch 4".to_vec(), None)
        .await
        .expect_err("three live members cannot reach a threshold of four");
    match err {
        TssError::NotEnoughSigners {
            needed,
            available,
            mut unresponsive,
            ..
        } => {
            assert_eq!(needed, 4);
            assert_eq!(available, 3);
            unresponsive.sort();
            let mut dead = vec![pool.ids[1], pool.ids[3]];
            dead.sort();
            assert_eq!(unresponsive, dead);
        }
        other => panic!("expected NotEnoughSigners, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_signer_aborts_when_the_proposer_goes_silent() {
    let pool = Pool::start(None).await;
    let mut follower = pool.nodes[1].subscribe();
    let flag = pool.muted[0].clone();
    // The proposer freezes as soon as the follower has joined.
    let mut joined = pool.nodes[1].subscribe();
    tokio::spawn(async move {
        while let Ok(event) = joined.recv().await {
            if matches!(event, PoolEvent::RunStarted { .. }) {
                flag.store(true, Ordering::SeqCst);
                return;
            }
        }
    });
    let proposer = pool.nodes[0].clone();
    let key = key();
    let run =
        tokio::spawn(async move { proposer.propose_sign(&key, b"batch 5".to_vec(), None).await });
    // The follower ends its run (well before the 900 s idle timeout) with the proposer
    // named silent.
    let error = tokio::time::timeout(IDLE / 3, async {
        loop {
            if let PoolEvent::RunFinished { error, .. } = follower.recv().await.unwrap() {
                return error;
            }
        }
    })
    .await
    .expect("the follower's run ended long before the idle timeout")
    .expect("it failed");
    assert!(error.contains("no sign of life"), "{error}");
    assert!(error.contains(&pool.ids[0].to_string()), "{error}");
    run.abort();
}

// ------------------------------------------------------------------ presignature pool

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ready_presignature_signs_in_one_round_once_and_then_the_pool_falls_back_to_full_signing()
{
    let pool = Pool::start(None).await;
    let key = key();
    assert_eq!(pool.nodes[0].fill_presignatures(&key, 1).await.unwrap(), 1);
    assert_eq!(pool.nodes[0].presignatures_ready(&key), 1);

    let first = pool.nodes[0]
        .propose_sign(&key, b"batch 6".to_vec(), None)
        .await
        .unwrap();
    let id = first.presignature.expect("the ready presignature was used");
    assert_eq!(
        first.signature.recover_address(&first.digest).unwrap(),
        first.address
    );
    assert_eq!(first.digest, tss_core::keccak256(b"batch 6"));
    assert_eq!(pool.nodes[0].presignatures_ready(&key), 0);

    // The pool is empty: the next request signs fully.
    let second = pool.nodes[0]
        .propose_sign(&key, b"batch 7".to_vec(), None)
        .await
        .unwrap();
    assert_eq!(second.presignature, None);
    assert_eq!(
        second.signature.recover_address(&second.digest).unwrap(),
        second.address
    );

    // Replaying the used presignature id with the same signers is refused by every one
    // of them (each burned it), so nothing is signed with it twice.
    let err = pool.nodes[0]
        .propose_sign(&key, b"batch 8".to_vec(), Some(first.signers.clone()))
        .await;
    assert!(
        err.is_ok(),
        "an explicit set without a presignature still signs fully"
    );
    for (i, node) in pool.nodes.iter().enumerate() {
        assert!(
            node.tss().presignature_info(&id).is_none(),
            "node {i} no longer holds the used presignature"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_never_share_a_presignature() {
    let pool = Pool::start(None).await;
    let key = key();
    pool.nodes[0].fill_presignatures(&key, 2).await.unwrap();
    let (a, b) = tokio::join!(
        pool.nodes[0].propose_sign(&key, b"batch A".to_vec(), None),
        pool.nodes[0].propose_sign(&key, b"batch B".to_vec(), None),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let (pa, pb) = (a.presignature.unwrap(), b.presignature.unwrap());
    assert_ne!(pa, pb, "each request took its own presignature");
    for out in [&a, &b] {
        assert_eq!(
            out.signature.recover_address(&out.digest).unwrap(),
            out.address
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_cannot_spend_or_burn_another_members_presignature() {
    let pool = Pool::start(None).await;
    let key = key();
    let id = pool.nodes[0].propose_presign(&key).await.unwrap();
    let (_, generation, signers) = pool.nodes[2]
        .tss()
        .presignature_info(&id)
        .expect("member 3 holds its part of member 1's presignature");
    assert!(signers.contains(&pool.ids[1]) && signers[0] == pool.ids[0]);
    // Member 2, a signer of it, turns attacker: its node stops and a raw endpoint takes
    // its place, proposing a batch of its own with member 1's presignature.
    pool.nodes[1].shutdown();
    let attacker = pool.network.endpoint(pool.ids[1]);
    let control = attacker
        .open_session(
            control_session_id(&pool.ids),
            SessionConfig::new(pool.ids.clone()).with_idle_timeout(IDLE),
        )
        .unwrap();
    let mut events = pool.nodes[2].subscribe();
    let proposal = SignProposal {
        eid: ExecutionId::random(ProtocolKind::Sign, &key, &signers, &mut rand::thread_rng()),
        key_id: key.clone(),
        generation,
        signers: signers.clone(),
        request: b"the attacker's batch".to_vec(),
        presignature: Some(id),
    };
    let msg = encode_message(&ControlMsg::Propose(Proposal::Sign(proposal))).unwrap();
    for to in signers.iter().filter(|s| **s != pool.ids[1]) {
        control.send(Destination::Direct(*to), msg.clone()).unwrap();
    }
    let reason = tokio::time::timeout(IDLE / 3, async {
        loop {
            if let PoolEvent::Refused { reason, .. } = events.recv().await.unwrap() {
                return reason;
            }
        }
    })
    .await
    .expect("member 3 refused");
    assert!(reason.contains("not this proposer's"), "{reason}");
    for i in [0, 2, 3] {
        assert!(
            pool.nodes[i].tss().presignature_info(&id).is_some(),
            "member {} still holds the presignature: the refusal burned nothing",
            i + 1
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_presignature_lost_in_a_restart_is_never_used_and_signing_falls_back_to_full() {
    let mut pool = Pool::start(None).await;
    let key = key();
    let id = pool.nodes[0].propose_presign(&key).await.unwrap();
    // Member 2 restarts: presignatures live in memory only, so its part is gone.
    pool.restart(1).await;
    assert!(pool.nodes[1].tss().presignature_info(&id).is_none());
    let out = pool.nodes[0]
        .propose_sign(&key, b"batch 10".to_vec(), None)
        .await
        .expect("full signing after the presignature was refused");
    assert_eq!(out.presignature, None, "the lost presignature was not used");
    assert_eq!(out.attempts, 2);
    assert!(
        out.skipped.is_empty(),
        "nobody is blamed for a lost presignature"
    );
    assert_eq!(
        out.signature.recover_address(&out.digest).unwrap(),
        out.address
    );
    assert!(
        pool.nodes[0].tss().presignature_info(&id).is_none(),
        "the proposer burned it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_keys_sign_concurrently_and_a_run_held_on_one_does_not_block_the_other() {
    // Member 2 holds the first key's request `hold` in its validator (its run on that
    // key stays open) while member 1 signs with the second key, with member 2 among the
    // signers: each key has its own busy mark and runs, so the second signature comes
    // while the first run is still open, and then the first completes too.
    let hold = Arc::new((tokio::sync::Notify::new(), tokio::sync::Notify::new()));
    let (pool, second) = Pool::start_with_a_second_key(hold.clone()).await;
    let proposer = pool.nodes[0].clone();
    let first =
        tokio::spawn(async move { proposer.propose_sign(&key(), b"hold".to_vec(), None).await });
    tokio::time::timeout(Duration::from_secs(120), hold.0.notified())
        .await
        .expect("member 2 is validating the first key's request");
    // Bounded (a regression that serialized keys would otherwise wait forever on the
    // held run); the bound is silence, far above what a loaded machine needs.
    let out = tokio::time::timeout(
        Duration::from_secs(300),
        pool.nodes[0].propose_sign(&second, b"state commitment".to_vec(), None),
    )
    .await
    .expect("the second key's request does not wait for the first key's run")
    .expect("the second key signs while the first key's run is open");
    assert!(out.signers.contains(&pool.ids[1]), "{:?}", out.signers);
    assert_eq!(out.attempts, 1, "nobody was busy or skipped");
    let second_address = pool.nodes[0].share(&second).unwrap().ethereum_address();
    assert_eq!(out.address, second_address);
    assert_eq!(
        out.signature.recover_address(&out.digest).unwrap(),
        second_address
    );
    assert!(!first.is_finished(), "the first key's run is still held");
    hold.1.notify_one();
    let first = tokio::time::timeout(Duration::from_secs(300), first)
        .await
        .expect("the first key's run ends once released")
        .unwrap()
        .expect("the first key signs");
    let first_address = pool.nodes[0].share(&key()).unwrap().ethereum_address();
    assert_eq!(first.address, first_address);
    assert_ne!(first_address, second_address);
    assert_eq!(
        first.signature.recover_address(&first.digest).unwrap(),
        first_address
    );
    for node in &pool.nodes {
        node.shutdown();
    }
}
