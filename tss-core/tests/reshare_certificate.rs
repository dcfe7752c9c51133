//! A reshare ends with a certificate every member can hold: every new member's signed
//! confirmation. Members activate the new generation iff they hold one, a member that
//! missed it fetches it (also after a restart), junk and equivocation during the
//! confirmation phase are ignored and named, and idle timeouts count silence, not work.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{node_id, node_ids, primes_for, signer, signer_for, store_nowhere};
use transport::{
    DeliveryKind, InMemoryNetwork, NodeId, SessionId, Tamper as Action, TamperRule as Rule,
    TamperingTransport, Transport,
};
use tss_core::pool::{
    control_session_id, AcceptEverything, ControlMsg, MemoryShareStore, PoolConfig, PoolEvent,
    PoolNode, ShareStore,
};
use tss_core::reshare::{FalseEvidence, Finding, ReshareFault, ReshareMsg};
use tss_core::wire::{decode_message, encode_message};
use tss_core::{
    Committee, ExecutionId, Generation, IdentitySigner, InsecureTestPrimes, KeyId,
    ReshareCertificate, ReshareRequest, ReshareStatement, TssError, TssNode,
};

// ---------------------------------------------------------------------- tampering

/// The reshare message in `payload`, if it is a confirmation-phase one. Larger frames
/// (commitments, aux-info messages) are never decoded here.
fn reshare_msg(payload: &[u8]) -> Option<ReshareMsg> {
    // Tag of `ReshareMsg::Confirm` and `ReshareMsg::Certificate` (postcard varint).
    if payload.len() > 16 * 1024 || !matches!(payload.first(), Some(4 | 5)) {
        return None;
    }
    decode_message(NodeId::from_bytes([0; 32]), payload).ok()
}

fn control_msg(payload: &[u8]) -> Option<ControlMsg> {
    decode_message(NodeId::from_bytes([0; 32]), payload).ok()
}

/// Drops every confirmation and certificate sent to `leaver` in the reshare run while
/// `in_run` is set, and every certificate sent to it on the control session while
/// `on_control` is set (one flag may serve for both).
fn lose_certificates_to(
    leaver: NodeId,
    in_run: Arc<AtomicBool>,
    on_control: Arc<AtomicBool>,
) -> Rule {
    Arc::new(move |_, to, _, payload| {
        let lost = to == leaver
            && ((in_run.load(Ordering::SeqCst)
                && matches!(
                    reshare_msg(payload),
                    Some(ReshareMsg::Confirm { .. } | ReshareMsg::Certificate(_))
                ))
                || (on_control.load(Ordering::SeqCst)
                    && matches!(control_msg(payload), Some(ControlMsg::Certificate(_)))));
        if lost {
            Action::Drop
        } else {
            Action::Pass
        }
    })
}

// ---------------------------------------------------------------------- the pool

/// Nodes 1..=4; 1..=3 hold a 2-of-3 key, 4 joins by the reshare.
struct Pool {
    network: InMemoryNetwork,
    ids: Vec<NodeId>,
    key: KeyId,
    stores: Vec<Arc<MemoryShareStore>>,
    nodes: Vec<PoolNode>,
    control: SessionId,
}

async fn start_node(
    network: &InMemoryNetwork,
    ids: &[NodeId],
    i: usize,
    store: Arc<MemoryShareStore>,
    rule: Option<Rule>,
    idle: Duration,
    key: &KeyId,
) -> PoolNode {
    let endpoint = network.endpoint(ids[i]);
    let transport: Arc<dyn Transport> = match rule {
        Some(rule) => Arc::new(TamperingTransport::new(endpoint, rule)),
        None => Arc::new(endpoint),
    };
    PoolNode::start(
        PoolConfig::new(ids.to_vec())
            .with_session_idle_timeout(idle)
            .with_certificate_retry_interval(Duration::from_secs(1)),
        transport,
        signer_for(&ids[i]),
        Arc::new(AcceptEverything),
        store,
        Arc::new(InsecureTestPrimes::new(i)),
        std::slice::from_ref(key),
    )
    .await
    .unwrap()
}

/// Starts the four nodes (node `i` with `rules[i]`); nodes 1..=3 hold the build's cached
/// 2-of-3 key ([`common::pool`], made by one real keygen with aux-info), active with the
/// state `pool v1`, as a keygen through the pool would have left them. Keygen itself is
/// not what these tests are about, and a keygen per test was most of this file's time.
async fn pool(rules: Vec<Option<Rule>>, idle: Duration) -> Pool {
    let network = InMemoryNetwork::new();
    let ids = node_ids(4);
    let (_, parties) = common::pool(3, 2).await;
    let key = parties[0].share.key_id().clone();
    let stores: Vec<Arc<MemoryShareStore>> = ids.iter().map(|_| Arc::default()).collect();
    for (i, party) in parties.iter().enumerate() {
        assert_eq!(party.share.local_node(), ids[i]);
        stores[i].stage(&party.share, b"pool v1").await.unwrap();
        stores[i]
            .activate(&key, party.share.generation(), b"pool v1", None)
            .await
            .unwrap();
    }
    let mut nodes = Vec::new();
    for (i, rule) in rules.into_iter().enumerate() {
        nodes.push(start_node(&network, &ids, i, stores[i].clone(), rule, idle, &key).await);
    }
    let control = control_session_id(&ids);
    Pool {
        network,
        ids,
        key,
        stores,
        nodes,
        control,
    }
}

const WAIT: Duration = Duration::from_secs(240);

async fn wait_event<T>(
    events: &mut tokio::sync::broadcast::Receiver<PoolEvent>,
    mut pick: impl FnMut(&PoolEvent) -> Option<T>,
) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            let event = events.recv().await.expect("event stream");
            if let Some(t) = pick(&event) {
                return t;
            }
        }
    })
    .await
    .expect("the event came")
}

/// Waits until `store`'s active generation of `key` is `generation`.
async fn wait_active(store: &MemoryShareStore, key: &KeyId, generation: Generation) {
    let waited = tokio::time::timeout(WAIT, async {
        while store.active_generation(key) != Some(generation) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "active generation stayed {:?}, expected {generation}",
        store.active_generation(key)
    );
}

/// Misbehaved events seen so far on `events`: (party, reason).
fn misbehaved(events: &mut tokio::sync::broadcast::Receiver<PoolEvent>) -> Vec<(NodeId, String)> {
    let mut out = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let PoolEvent::Misbehaved { party, reason, .. } = event {
            out.push((party, reason));
        }
    }
    out
}

/// Every honest node's stored certificate of `generation` verifies and certifies its share.
async fn assert_certified(pool: &Pool, nodes: &[usize], generation: Generation) {
    for &i in nodes {
        let certificate = pool.stores[i]
            .load_certificate(&pool.key, generation)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("node {} stored the certificate", i + 1));
        certificate.verify().expect("a valid certificate");
        let share = pool.nodes[i].share(&pool.key).expect("a share");
        assert!(certificate.statement.certifies(&share.public_info()));
    }
}

// ---------------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_equivocating_joiner_cannot_split_the_pool_across_generations() {
    // The joiner (node 4) sends node 1 a different confirmation (a valid signature by it,
    // of another statement) and the honest one to everyone else. Before certificates,
    // node 1 aborted after the others had retired their old shares: the pool was split
    // across generations and could not sign.
    let ids = node_ids(4);
    let victim = ids[0];
    let equivocation: Rule = Arc::new(move |_, to, kind, payload| match reshare_msg(payload) {
        Some(ReshareMsg::Confirm { .. }) if to == victim && kind == DeliveryKind::Broadcast => {
            let other = signer(4).sign(b"a statement of another generation");
            Action::Replace(vec![encode_message(&ReshareMsg::Confirm {
                signature: other,
            })
            .unwrap()])
        }
        _ => Action::Pass,
    });
    let pool = pool(
        vec![None, None, None, Some(equivocation)],
        Duration::from_secs(120),
    )
    .await;
    let mut victim_events = pool.nodes[0].subscribe();
    let commit = pool.nodes[1]
        .propose_reshare(
            &pool.key,
            Committee::two_thirds(pool.ids.clone()).unwrap(),
            None,
            b"pool v2".to_vec(),
        )
        .await
        .expect("the reshare completes at the proposer");
    assert_eq!(commit.new_generation, Some(Generation(1)));
    // Every member, the one shown the different confirmation included, ends on the new
    // generation, its old one retired.
    for i in 0..4 {
        wait_active(&pool.stores[i], &pool.key, Generation(1)).await;
    }
    for i in 0..3 {
        assert_eq!(pool.stores[i].generations(&pool.key), vec![Generation(1)]);
    }
    assert_certified(&pool, &[0, 1, 2, 3], Generation(1)).await;
    // The victim named the equivocator, and no one else.
    let blamed = misbehaved(&mut victim_events);
    assert!(
        blamed.iter().any(|(p, _)| *p == ids[3]),
        "the equivocating joiner is named: {blamed:?}"
    );
    assert!(blamed.iter().all(|(p, _)| *p == ids[3]), "{blamed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn presignatures_made_before_a_reshare_are_never_used_after_it() {
    // A presignature is a function of the old shares: after a reshare it must be gone at
    // every member that held a part, so nobody can spend it, and signing falls back to a
    // full run of the new committee.
    let pool = pool(vec![None, None, None, None], Duration::from_secs(120)).await;
    let id = pool.nodes[0].propose_presign(&pool.key).await.unwrap();
    let (_, generation, signers) = pool.nodes[0]
        .tss()
        .presignature_info(&id)
        .expect("the proposer holds its part");
    assert_eq!(generation, Generation(0));
    assert_eq!(pool.nodes[0].presignatures_ready(&pool.key), 1);

    pool.nodes[1]
        .propose_reshare(
            &pool.key,
            Committee::two_thirds(pool.ids.clone()).unwrap(),
            None,
            b"pool v2".to_vec(),
        )
        .await
        .expect("the reshare completes");
    for i in 0..4 {
        wait_active(&pool.stores[i], &pool.key, Generation(1)).await;
    }

    for (i, node) in pool.nodes.iter().enumerate() {
        assert!(
            node.tss().presignature_info(&id).is_none(),
            "node {} (signer: {}) dropped its part",
            i + 1,
            signers.contains(&pool.ids[i])
        );
    }
    assert_eq!(pool.nodes[0].presignatures_ready(&pool.key), 0);
    let signed = pool.nodes[0]
        .propose_sign(&pool.key, b"batch after the reshare".to_vec(), None)
        .await
        .expect("the new committee signs");
    assert_eq!(signed.presignature, None, "no old presignature is used");
    assert_eq!(
        signed.signature.recover_address(&signed.digest).unwrap(),
        signed.address
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_that_missed_the_certificate_activates_after_restart_by_fetching_it() {
    // Node 3 hears no confirmation and no certificate (its peers' frames to it are lost)
    // and no answer to its certificate requests until it restarts. Its new share stays
    // pending (staged, neither active nor deleted) meanwhile; after the restart it asks
    // its peers, gets the certificate and activates.
    let ids = node_ids(4);
    let missed = ids[2];
    let lossy = Arc::new(AtomicBool::new(true));
    let control = control_session_id(&ids);
    let rule = |lossy: Arc<AtomicBool>| -> Rule {
        Arc::new(move |session, to, _, payload| {
            if to != missed || !lossy.load(Ordering::SeqCst) {
                return Action::Pass;
            }
            let lost = if session == control {
                matches!(control_msg(payload), Some(ControlMsg::Certificate(_)))
            } else {
                matches!(
                    reshare_msg(payload),
                    Some(ReshareMsg::Confirm { .. } | ReshareMsg::Certificate(_))
                )
            };
            if lost {
                Action::Drop
            } else {
                Action::Pass
            }
        })
    };
    // Short enough that node 3's wait for confirmations ends soon, long enough for
    // aux-info rounds on a loaded machine.
    let idle = Duration::from_secs(30);
    let pool = Box::pin(pool(
        vec![
            Some(rule(lossy.clone())),
            Some(rule(lossy.clone())),
            None,
            Some(rule(lossy.clone())),
        ],
        idle,
    ))
    .await;
    let mut missed_events = pool.nodes[2].subscribe();
    pool.nodes[0]
        .propose_reshare(
            &pool.key,
            Committee::two_thirds(pool.ids.clone()).unwrap(),
            None,
            b"pool v2".to_vec(),
        )
        .await
        .expect("the reshare completes at the proposer");
    for i in [0, 1, 3] {
        wait_active(&pool.stores[i], &pool.key, Generation(1)).await;
    }
    // Node 3's run ends without a certificate; it asks for one, hears nothing, and asks
    // again (it asks only while the generation is pending: the second request shows the
    // first one brought nothing).
    for _ in 0..2 {
        let generation = wait_event(&mut missed_events, |e| match e {
            PoolEvent::CertificateRequested { generation, .. } => Some(*generation),
            _ => None,
        })
        .await;
        assert_eq!(generation, Generation(1));
    }
    let store = &pool.stores[2];
    assert_eq!(store.active_generation(&pool.key), Some(Generation(0)));
    assert_eq!(
        store.generations(&pool.key),
        vec![Generation(0), Generation(1)],
        "the new share is kept, pending"
    );
    let pending = store.load_pending(&pool.key).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].share.generation(), Generation(1));
    assert_eq!(pending[0].state, b"pool v2");
    assert!(pending[0].certificate.is_none());
    // A pending generation is never overwritten.
    assert!(store
        .stage(&pending[0].share, b"something else")
        .await
        .is_err());

    // Restart node 3 (same store, new process) once the network delivers again.
    pool.nodes[2].shutdown();
    lossy.store(false, Ordering::SeqCst);
    let restarted = Box::pin(start_node(
        &pool.network,
        &pool.ids,
        2,
        pool.stores[2].clone(),
        None,
        idle,
        &pool.key,
    ))
    .await;
    wait_active(store, &pool.key, Generation(1)).await;
    assert_eq!(
        store.generations(&pool.key),
        vec![Generation(1)],
        "old share retired"
    );
    assert_eq!(
        restarted.share(&pool.key).unwrap().generation(),
        Generation(1)
    );
    assert_eq!(
        store.load_state(&pool.key).await.unwrap().unwrap(),
        b"pool v2",
        "activated with the state staged with it"
    );
    let certificate = store
        .load_certificate(&pool.key, Generation(1))
        .await
        .unwrap()
        .expect("the fetched certificate is stored");
    certificate.verify().unwrap();
    assert_eq!(pool.control, control);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn junk_during_confirmation_is_ignored_and_the_sender_named() {
    // With its confirmation the joiner sends every member a frame that does not decode,
    // an echo that differs from the one it sent in round 2, and its confirmation twice.
    let junk: Rule = Arc::new(move |_, _, kind, payload| match reshare_msg(payload) {
        Some(ReshareMsg::Confirm { .. }) if kind == DeliveryKind::Broadcast => {
            Action::Replace(vec![
                vec![0xff; 40],
                encode_message(&ReshareMsg::Echo { views: Vec::new() }).unwrap(),
                payload.to_vec(),
                payload.to_vec(),
            ])
        }
        _ => Action::Pass,
    });
    let pool = pool(vec![None, None, None, Some(junk)], Duration::from_secs(120)).await;
    let mut events: Vec<_> = pool.nodes[..3].iter().map(|n| n.subscribe()).collect();
    pool.nodes[0]
        .propose_reshare(
            &pool.key,
            Committee::two_thirds(pool.ids.clone()).unwrap(),
            None,
            b"pool v2".to_vec(),
        )
        .await
        .expect("junk does not abort the reshare");
    for i in 0..4 {
        wait_active(&pool.stores[i], &pool.key, Generation(1)).await;
    }
    assert_certified(&pool, &[0, 1, 2, 3], Generation(1)).await;
    let joiner = pool.ids[3];
    for (i, events) in events.iter_mut().enumerate() {
        let blamed = misbehaved(events);
        assert!(
            blamed
                .iter()
                .any(|(p, r)| *p == joiner && r.contains("does not decode")),
            "node {} names the joiner for its junk: {blamed:?}",
            i + 1
        );
        assert!(
            blamed
                .iter()
                .any(|(p, r)| *p == joiner && r.contains("echo")),
            "node {} names the joiner for its changed echo: {blamed:?}",
            i + 1
        );
        assert!(
            blamed.iter().all(|(p, _)| *p == joiner),
            "only the joiner is blamed (a repeated frame is no fault): {blamed:?}"
        );
    }
}

/// Runs a reshare among `nodes`; returns each party's result and how long it took.
async fn run_reshare(
    nodes: &HashMap<NodeId, (Arc<TssNode>, Option<usize>)>,
    old: &Arc<Vec<common::Party>>,
    request: &ReshareRequest,
) -> HashMap<NodeId, (tss_core::Result<tss_core::ReshareOutcome>, Duration)> {
    let mut tasks = Vec::new();
    for id in request.participants() {
        let (node, index) = nodes[&id].clone();
        let old = old.clone();
        let request = request.clone();
        let is_new = request.new_committee.index_of(&id).is_some();
        tasks.push((
            id,
            tokio::spawn(async move {
                let started = Instant::now();
                let primes = is_new.then(|| primes_for(&id));
                let old_share = index.map(|i| &old[i].share);
                let out =
                    common::reshare_party(&node, &request, old_share, primes, store_nowhere).await;
                (out, started.elapsed())
            }),
        ));
    }
    let mut out = HashMap::new();
    for (id, task) in tasks {
        out.insert(id, task.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dealer_waiting_through_slow_aux_info_does_not_time_out() {
    // Dealer 1 leaves: after round 2 it only waits while the new committee {2, 3, 4}
    // runs aux-info, here made slow (8 s each, as on a loaded machine). Its idle timeout
    // is 2 s: it survives only because the timeout counts silence and the computing
    // members send heartbeats.
    let (network, old) = common::pool(3, 2).await;
    let old_info = old[0].share.public_info();
    let ids = node_ids(4);
    let dealer_idle = Duration::from_secs(2);
    let aux_delay = Duration::from_secs(8);
    let mut nodes = HashMap::new();
    for (i, id) in ids.iter().enumerate() {
        let mut node = TssNode::new(Arc::new(network.endpoint(*id)))
            .with_identity(signer_for(id))
            .unwrap();
        node = if i == 0 {
            node.with_idle_timeout(dealer_idle)
        } else {
            node.with_idle_timeout(Duration::from_secs(120))
                .with_aux_info_delay(aux_delay)
        };
        nodes.insert(*id, (Arc::new(node), (i < old.len()).then_some(i)));
    }
    let request = ReshareRequest {
        new_generation: old_info.generation.next(),
        old: old_info.clone(),
        dealers: vec![ids[0], ids[1]],
        new_committee: Committee::new(ids[1..].to_vec(), 2).unwrap(),
        eid: common::fresh_eid(tss_core::ProtocolKind::Reshare, &old_info.key_id, &ids),
    };
    let results = run_reshare(&nodes, &Arc::new(old), &request).await;
    let (dealer, waited) = &results[&ids[0]];
    let dealer = dealer
        .as_ref()
        .expect("the waiting dealer does not time out");
    assert!(
        dealer.may_retire_old_share(),
        "the dealer holds the certificate"
    );
    assert!(dealer.new_share.is_none());
    assert!(
        *waited > aux_delay && *waited > dealer_idle * 3,
        "the dealer waited {waited:?}, far beyond its idle timeout"
    );
    for id in &ids[1..] {
        let outcome = results[id].0.as_ref().expect("new members finish");
        assert!(outcome.may_retire_old_share());
        assert!(outcome.faults.is_empty(), "{:?}", outcome.faults);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn silence_still_times_out_a_waiting_dealer() {
    // The counterpart: the same short idle timeout, and a new member that never runs.
    // Nothing is heard from it, so the dealer's run ends after the idle timeout, naming it.
    let (network, old) = common::pool(3, 2).await;
    let old = Arc::new(old);
    let old_info = old[0].share.public_info();
    let ids = node_ids(4);
    let absent = node_id(4);
    // Reachable, but it runs nothing.
    let _absent_endpoint = network.endpoint(absent);
    let request = ReshareRequest {
        new_generation: old_info.generation.next(),
        old: old_info.clone(),
        dealers: vec![ids[0], ids[1]],
        new_committee: Committee::new(ids[1..].to_vec(), 2).unwrap(),
        eid: common::fresh_eid(tss_core::ProtocolKind::Reshare, &old_info.key_id, &ids),
    };
    // Every node exists before any run starts: replacing an endpoint later would drop
    // the messages already sent to the old one (and the member would look silent too).
    let nodes: Vec<TssNode> = ids[..3]
        .iter()
        .map(|id| {
            TssNode::new(Arc::new(network.endpoint(*id)))
                .with_identity(signer_for(id))
                .unwrap()
                .with_idle_timeout(Duration::from_secs(2))
        })
        .collect();
    let started = Instant::now();
    let mut runs = Vec::new();
    for (i, (id, node)) in ids[..3].iter().zip(nodes).enumerate() {
        let (request, old) = (request.clone(), old.clone());
        let is_new = i > 0;
        let id = *id;
        runs.push(tokio::spawn(async move {
            common::reshare_party(
                &node,
                &request,
                Some(&old[i].share),
                is_new.then(|| primes_for(&id)),
                store_nowhere,
            )
            .await
        }));
    }
    let result = runs.remove(0).await.unwrap();
    match result {
        Err(TssError::Timeout { silent, .. }) => assert_eq!(silent, vec![absent]),
        other => panic!("expected a timeout naming the silent joiner, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_past_its_deadline_fails_however_long_the_idle_timeout() {
    // The backstop: whatever keeps a session from being idle (here, an idle timeout of
    // 15 minutes stands for heartbeats or retransmissions), a run ends at its deadline.
    let network = InMemoryNetwork::new();
    let ids = node_ids(2);
    let key = KeyId::new("deadline").unwrap();
    let node = PoolNode::start(
        PoolConfig::new(ids.clone())
            .with_session_idle_timeout(Duration::from_secs(900))
            .with_run_deadline(Duration::from_secs(2)),
        Arc::new(network.endpoint(ids[0])),
        signer_for(&ids[0]),
        Arc::new(AcceptEverything),
        Arc::new(MemoryShareStore::new()),
        Arc::new(InsecureTestPrimes::new(0)),
        std::slice::from_ref(&key),
    )
    .await
    .unwrap();
    network.endpoint(ids[1]); // reachable, but runs nothing
    let started = Instant::now();
    let result = node
        .propose_keygen(
            key,
            Committee::new(ids.clone(), 2).unwrap(),
            b"pool".to_vec(),
        )
        .await;
    assert!(
        matches!(result, Err(TssError::DeadlineExceeded { .. })),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_false_complaint_in_a_pool_reshare_blames_the_joiner_and_keeps_the_old_generation() {
    // The joiner (node 4) complains against dealer 1 with the valid share it received
    // and its valid signature (test hook). Every honest member judges the evidence itself,
    // convicts the joiner (never the dealer), and stays on generation 0.
    let pool = pool(vec![None, None, None, None], Duration::from_secs(120)).await;
    let (dealer, joiner) = (pool.ids[0], pool.ids[3]);
    pool.nodes[3]
        .tss()
        .inject_reshare_fault_in_every_run(ReshareFault::FalseComplaint {
            dealer,
            evidence: FalseEvidence::ValidShare,
        });
    let mut events: Vec<_> = pool.nodes[..3].iter().map(|n| n.subscribe()).collect();
    let result = pool.nodes[1]
        .propose_reshare(
            &pool.key,
            Committee::two_thirds(pool.ids.clone()).unwrap(),
            Some(vec![pool.ids[0], pool.ids[1]]),
            b"pool v2".to_vec(),
        )
        .await;
    assert!(result.is_err(), "the reshare aborts: {result:?}");
    for (i, events) in events.iter_mut().enumerate() {
        // Until this node's reshare run finished: its judged complaints, and how it ended.
        let mut complaints = Vec::new();
        let aborted_by = wait_event(events, |e| match e {
            PoolEvent::ReshareComplaints {
                culprits, verdicts, ..
            } => {
                complaints.push((culprits.clone(), verdicts.clone()));
                None
            }
            PoolEvent::RunFinished {
                protocol: tss_core::ProtocolKind::Reshare,
                error,
                aborted_by,
                ..
            } => {
                assert!(error.is_some(), "node {} did not fail", i + 1);
                Some(*aborted_by)
            }
            _ => None,
        })
        .await;
        for (culprits, verdicts) in &complaints {
            assert_eq!(
                *culprits,
                vec![joiner],
                "node {} convicts the joiner",
                i + 1
            );
            assert_eq!(verdicts.len(), 1, "{verdicts:?}");
            assert_eq!(
                (verdicts[0].complainer, verdicts[0].dealer),
                (joiner, dealer)
            );
            assert_eq!(verdicts[0].finding, Finding::FalseComplaint);
        }
        // A node that another party's abort reached first (the joiner's own, after it
        // judged its complaint false, or an honest member's) did not judge by itself: the
        // abort can win the race against the last round-2 message. Whoever judged
        // convicted the joiner (above); nobody convicted the dealer.
        assert!(
            !complaints.is_empty() || aborted_by.is_some(),
            "node {} neither judged nor was aborted",
            i + 1
        );
    }
    for i in 0..3 {
        assert_eq!(
            pool.stores[i].active_generation(&pool.key),
            Some(Generation(0))
        );
        assert_eq!(pool.stores[i].generations(&pool.key), vec![Generation(0)]);
    }
    assert_eq!(pool.stores[3].active_generation(&pool.key), None);
    assert!(pool.stores[3]
        .load_pending(&pool.key)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leaving_dealer_that_missed_the_certificate_retires_its_share_only_with_that_certificate()
{
    // Node 1 deals the key away (reshare {1, 2, 3} -> {2, 3, 4}, dealers [2, 1]) but hears
    // no confirmation and no certificate, in the run or on the control session, so its
    // run ends without one: it keeps its share and asks its peers, again and again. A
    // self-consistent but forged certificate (a committee of other identities, each of
    // which signed) must not make it delete its share; once the network delivers, the
    // run's real certificate, fetched from a peer, does.
    let ids = node_ids(4);
    let leaver = ids[0];
    let lossy = Arc::new(AtomicBool::new(true));
    let rule = || Some(lose_certificates_to(leaver, lossy.clone(), lossy.clone()));
    // Short enough that the leaver's wait for confirmations ends soon, long enough for
    // aux-info rounds on a loaded machine.
    let idle = Duration::from_secs(30);
    let pool = Box::pin(pool(vec![None, rule(), rule(), rule()], idle)).await;
    let mut leaver_events = pool.nodes[0].subscribe();
    let new_committee = Committee::new(ids[1..].to_vec(), 2).unwrap();
    pool.nodes[1]
        .propose_reshare(
            &pool.key,
            new_committee.clone(),
            Some(vec![ids[1], ids[0]]),
            b"pool v2".to_vec(),
        )
        .await
        .expect("the reshare completes at the proposer");
    for i in 1..4 {
        wait_active(&pool.stores[i], &pool.key, Generation(1)).await;
    }
    // The leaver's run ends without a certificate; it asks for one and hears nothing.
    let asked = wait_event(&mut leaver_events, |e| match e {
        PoolEvent::CertificateRequested { generation, .. } => Some(*generation),
        _ => None,
    })
    .await;
    assert_eq!(asked, Generation(1));
    let store = &pool.stores[0];
    assert_eq!(store.active_generation(&pool.key), Some(Generation(0)));
    let old = pool.nodes[0]
        .share(&pool.key)
        .expect("the leaver keeps its share");

    // A forged certificate: a statement of this key's next generation naming a committee
    // of two other identities, signed by both. It verifies on its own.
    let forged_committee = Committee::new(ids[2..].to_vec(), 2).unwrap();
    let statement = ReshareStatement {
        eid: ExecutionId::from_bytes([7; 32]),
        key_id: pool.key.clone(),
        generation: Generation(1),
        public_key: old.public_info().public_key,
        new_committee: forged_committee.clone(),
        threshold: 2,
        commitments_digest: [1; 32],
        public_info_digest: [2; 32],
    };
    let forged = ReshareCertificate {
        signatures: forged_committee
            .members()
            .iter()
            .map(|m| signer_for(m).sign(&statement.signing_bytes()))
            .collect(),
        statement,
    };
    forged.verify().expect("the forgery is self-consistent");
    assert!(!pool.nodes[0].adopt_certificate(forged).await.unwrap());
    assert_eq!(store.active_generation(&pool.key), Some(Generation(0)));
    assert!(pool.nodes[0].share(&pool.key).is_some());

    // The network delivers again: the leaver's next request fetches the run's real
    // certificate from a peer, and the share is retired.
    lossy.store(false, Ordering::SeqCst);
    wait_event(&mut leaver_events, |e| {
        matches!(e, PoolEvent::KeyLeft { state, .. } if state.as_slice() == b"pool v2")
            .then_some(())
    })
    .await;
    assert!(pool.nodes[0].share(&pool.key).is_none());
    assert_eq!(store.active_generation(&pool.key), None);
    assert!(
        store.generations(&pool.key).is_empty(),
        "every generation deleted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_after_an_unconfirmed_reshare_skips_the_generation_left_pending_and_retires_it() {
    // The first reshare ends with no certificate anywhere: no confirmation reaches or
    // leaves the joiner (node 4), so nobody holds all four. Every new member keeps its
    // staged generation 1 pending (its certificate could still exist elsewhere, so it is
    // never overwritten). Before generations were proposed, every retry named generation
    // 1 again and failed at the members holding it: the pool could never reshare again.
    // Here the retry's proposer (node 1) does not know of any pending generation (as if
    // it had failed before staging): the members that hold one refuse generation 1 and
    // say so, and the proposer proposes again above it, by itself.
    let ids = node_ids(4);
    let joiner = ids[3];
    let cut = Arc::new(AtomicBool::new(true));
    let rule = |me: NodeId| -> Rule {
        let cut = cut.clone();
        Arc::new(move |_, to, _, payload| {
            let confirmation = matches!(
                reshare_msg(payload),
                Some(ReshareMsg::Confirm { .. } | ReshareMsg::Certificate(_))
            );
            if confirmation && (me == joiner || to == joiner) && cut.load(Ordering::SeqCst) {
                Action::Drop
            } else {
                Action::Pass
            }
        })
    };
    // Short enough that the wait for the missing confirmations ends soon; computing
    // parties send heartbeats, so a loaded machine does not reach it.
    let idle = Duration::from_secs(15);
    let pool = Box::pin(pool(ids.iter().map(|id| Some(rule(*id))).collect(), idle)).await;
    let new_committee = Committee::two_thirds(pool.ids.clone()).unwrap();
    let mut ends: Vec<_> = pool.nodes.iter().map(|n| n.subscribe()).collect();
    let failed = pool.nodes[1]
        .propose_reshare(&pool.key, new_committee.clone(), None, b"pool v2".to_vec())
        .await;
    // Unconfirmed here, or aborted by a party whose wait ended first.
    assert!(
        matches!(
            failed,
            Err(TssError::ReshareNotConfirmed { .. } | TssError::Aborted { .. })
        ),
        "the first attempt ends without a certificate: {failed:?}"
    );
    // Every node's run is over: it asks its peers for the missing certificate.
    for events in &mut ends {
        wait_event(events, |e| {
            matches!(e, PoolEvent::CertificateRequested { .. }).then_some(())
        })
        .await;
    }
    for (i, store) in pool.stores.iter().enumerate() {
        let pending = store.load_pending(&pool.key).await.unwrap();
        assert_eq!(
            pending
                .iter()
                .map(|p| p.share.generation())
                .collect::<Vec<_>>(),
            vec![Generation(1)],
            "node {} keeps generation 1 pending",
            i + 1
        );
        if i < 3 {
            assert_eq!(store.active_generation(&pool.key), Some(Generation(0)));
        }
    }

    // The network delivers again; node 1 forgets its pending share.
    cut.store(false, Ordering::SeqCst);
    pool.stores[0]
        .retire(&pool.key, Generation(1))
        .await
        .unwrap();
    let mut refusals: Vec<_> = pool.nodes[1..].iter().map(|n| n.subscribe()).collect();
    let commit = pool.nodes[0]
        .propose_reshare(&pool.key, new_committee, None, b"pool v2".to_vec())
        .await
        .expect("the retry completes");
    // Node 1 retired its own pending generation 1: only the others' claims can have
    // moved the retry to generation 2.
    assert_eq!(commit.new_generation, Some(Generation(2)));
    // Each of them refused the first attempt naming its pending generation 1, or (if the
    // second attempt reached it first and took the key) as busy; at least one said so.
    let mut named = 0;
    for (i, events) in refusals.iter_mut().enumerate() {
        let reason = wait_event(events, |e| match e {
            PoolEvent::Refused { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .await;
        let pending = reason.contains("generation gen1") && reason.contains("gen1 is held pending");
        assert!(
            pending || reason.contains("is already running on this node"),
            "node {} refused the first attempt for its pending generation 1 or as busy: {reason}",
            i + 2
        );
        named += usize::from(pending);
    }
    assert!(named >= 1, "a party named its pending generation 1");
    // Every member ends on generation 2, certified; generation 0 and the failed run's
    // pending generation 1 are retired everywhere.
    for i in 0..4 {
        wait_active(&pool.stores[i], &pool.key, Generation(2)).await;
        assert_eq!(
            pool.stores[i].generations(&pool.key),
            vec![Generation(2)],
            "node {} kept only generation 2",
            i + 1
        );
    }
    assert_certified(&pool, &[0, 1, 2, 3], Generation(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_certificate_of_a_run_a_member_left_never_deletes_the_share_it_got_on_rejoining() {
    // Node 1 deals the key away ({1, 2, 3} -> {2, 3, 4}) but misses the certificate, so
    // it keeps its old share and remembers its run. Its operator deletes that share, and
    // node 1 joins again ({2, 3, 4} -> {1, 2, 3, 4}), getting generation 2. The first
    // run's certificate, arriving only now, certifies exactly the run node 1 left: it
    // must not delete the share node 1 got since.
    let ids = node_ids(4);
    let leaver = ids[0];
    let run_lossy = Arc::new(AtomicBool::new(true));
    let control_lossy = Arc::new(AtomicBool::new(true));
    let rule = || {
        Some(lose_certificates_to(
            leaver,
            run_lossy.clone(),
            control_lossy.clone(),
        ))
    };
    let idle = Duration::from_secs(15);
    let pool = Box::pin(pool(vec![None, rule(), rule(), rule()], idle)).await;
    let mut leaver_events = pool.nodes[0].subscribe();
    let left = pool.nodes[1]
        .propose_reshare(
            &pool.key,
            Committee::new(ids[1..].to_vec(), 2).unwrap(),
            Some(vec![ids[1], ids[0]]),
            b"pool v2".to_vec(),
        )
        .await
        .expect("the reshare completes at the proposer");
    for i in 1..4 {
        wait_active(&pool.stores[i], &pool.key, Generation(1)).await;
    }
    let asked = wait_event(&mut leaver_events, |e| match e {
        PoolEvent::CertificateRequested { generation, .. } => Some(*generation),
        _ => None,
    })
    .await;
    assert_eq!(asked, Generation(1));
    assert_eq!(
        pool.stores[0].active_generation(&pool.key),
        Some(Generation(0)),
        "without the certificate the leaver keeps its share"
    );

    // The operator retires the old share by hand; node 1 joins again. Its run delivers
    // now; certificates on the control session still do not reach it.
    assert!(pool.nodes[0]
        .delete_key(&pool.key, b"left")
        .await
        .expect("the share is deleted"));
    run_lossy.store(false, Ordering::SeqCst);
    let rejoined = pool.nodes[1]
        .propose_reshare(
            &pool.key,
            Committee::two_thirds(ids.clone()).unwrap(),
            None,
            b"pool v3".to_vec(),
        )
        .await
        .expect("node 1 joins again");
    assert_eq!(rejoined.new_generation, Some(Generation(2)));
    wait_active(&pool.stores[0], &pool.key, Generation(2)).await;

    // The first run's certificate arrives late: it is valid and certifies the very run
    // node 1 left, but node 1 keeps the share it holds now.
    control_lossy.store(false, Ordering::SeqCst);
    assert!(!pool.nodes[0]
        .adopt_certificate(left.certificate.clone())
        .await
        .expect("a valid certificate"));
    let share = pool.nodes[0]
        .share(&pool.key)
        .expect("node 1 holds a share");
    assert_eq!(share.generation(), Generation(2));
    assert_eq!(
        pool.stores[0].generations(&pool.key),
        vec![Generation(2)],
        "the share node 1 got on rejoining is kept"
    );
    assert_eq!(
        pool.stores[0].load_state(&pool.key).await.unwrap().unwrap(),
        b"pool v3"
    );
}

type AuxMsg = cggmp21::key_refresh::msg::aux_only::Msg<
    sha2::Sha256,
    cggmp21::security_level::SecurityLevel128,
>;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_equivocating_aux_info_commitment_in_a_pool_reshare_leaves_every_member_on_its_generation_with_nothing_staged(
) {
    // The joiner (node 4) runs the honest code, but in the new committee's aux-info it
    // sends node 1 another round-1 commitment (one bit flipped: a well-formed hash) than
    // everyone else. Only cggmp21's echo check can see it: every honest member aborts
    // blaming nobody, stores nothing, keeps generation 0, and the old committee signs.
    let victim = node_id(1);
    let equivocation: Rule = Arc::new(move |_, to, kind, payload| {
        let msg = (payload.len() <= 256 * 1024)
            .then(|| decode_message::<AuxMsg>(NodeId::from_bytes([0; 32]), payload).ok())
            .flatten();
        match (msg, kind) {
            (Some(AuxMsg::Round1(mut msg)), DeliveryKind::Broadcast) if to == victim => {
                msg.commitment[0] ^= 1;
                Action::Replace(vec![encode_message(&AuxMsg::Round1(msg)).unwrap()])
            }
            _ => Action::Pass,
        }
    });
    let pool = pool(
        vec![None, None, None, Some(equivocation)],
        Duration::from_secs(120),
    )
    .await;
    let address = pool.nodes[0].share(&pool.key).unwrap().ethereum_address();
    let mut events: Vec<_> = pool.nodes[..3].iter().map(|n| n.subscribe()).collect();
    let result = pool.nodes[1]
        .propose_reshare(
            &pool.key,
            Committee::two_thirds(pool.ids.clone()).unwrap(),
            None,
            b"pool v2".to_vec(),
        )
        .await;
    assert!(result.is_err(), "the reshare aborts: {result:?}");
    for (i, events) in events.iter_mut().enumerate() {
        let culprits = wait_event(events, |e| match e {
            PoolEvent::RunFinished {
                protocol: tss_core::ProtocolKind::Reshare,
                error,
                culprits,
                ..
            } => {
                assert!(error.is_some(), "node {} did not fail", i + 1);
                Some(culprits.clone())
            }
            _ => None,
        })
        .await;
        assert!(
            culprits.is_empty(),
            "node {} blames nobody: {culprits:?}",
            i + 1
        );
    }
    for i in 0..3 {
        assert_eq!(
            pool.stores[i].active_generation(&pool.key),
            Some(Generation(0)),
            "node {} keeps its generation",
            i + 1
        );
        assert_eq!(
            pool.stores[i].generations(&pool.key),
            vec![Generation(0)],
            "node {} staged nothing",
            i + 1
        );
    }
    assert!(pool.stores[3].generations(&pool.key).is_empty());
    let signed = pool.nodes[0]
        .propose_sign(
            &pool.key,
            b"batch after the aborted reshare".to_vec(),
            Some(pool.ids[..2].to_vec()),
        )
        .await
        .expect("the old committee signs");
    assert_eq!(
        signed.signature.recover_address(&signed.digest).unwrap(),
        address
    );
}
