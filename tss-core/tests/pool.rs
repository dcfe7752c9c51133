//! The pool layer: proposals, the validation hook, aborts that reach every party, and a
//! reshare committed through the store.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::{keygen_and_wait, node_ids};
use transport::{Destination, InMemoryNetwork, NodeId, SessionConfig, Transport};
use tss_core::pool::{
    control_session_id, ControlMsg, KeygenProposal, MemoryShareStore, PoolConfig, PoolEvent,
    PoolNode, PrimeSource, Proposal, ProposalValidator, Rejection, ReshareProposal, ShareStore,
    SignProposal, SigningInput,
};
use tss_core::wire::{decode_message, encode_message};
use tss_core::{
    keccak256, Committee, Generation, InsecureTestPrimes, KeyId, PublicKeyInfo, TssError,
};

/// Accepts everything (the state to commit is the proposal's context), unless `refuse`.
struct Rules {
    refuse: bool,
}

#[async_trait]
impl ProposalValidator for Rules {
    async fn check_keygen(&self, _: NodeId, p: &KeygenProposal) -> Result<Vec<u8>, Rejection> {
        if self.refuse {
            return Err(Rejection::new(
                "this member does not agree to the committee",
            ));
        }
        Ok(p.context.clone())
    }
    async fn check_sign(
        &self,
        _: NodeId,
        p: &SignProposal,
        _: &PublicKeyInfo,
    ) -> Result<SigningInput, Rejection> {
        if self.refuse {
            return Err(Rejection::new("invalid batch"));
        }
        Ok(SigningInput::Message(p.request.clone()))
    }
    async fn check_reshare(
        &self,
        _: NodeId,
        p: &ReshareProposal,
        _: Option<&PublicKeyInfo>,
    ) -> Result<Vec<u8>, Rejection> {
        if self.refuse {
            return Err(Rejection::new("the committee differs from L1"));
        }
        Ok(p.context.clone())
    }
}

/// Idle timeout of every session: long, so a test that finishes proves the abort (not a
/// timeout) ended the run.
const IDLE: Duration = Duration::from_secs(900);

async fn start(
    network: &InMemoryNetwork,
    all: &[NodeId],
    me: NodeId,
    store: Arc<MemoryShareStore>,
    refuse: bool,
    key: &KeyId,
) -> PoolNode {
    let index = all.iter().position(|n| *n == me).unwrap();
    PoolNode::start(
        PoolConfig::new(all.to_vec()).with_session_idle_timeout(IDLE),
        Arc::new(network.endpoint(me)),
        common::signer_for(&me),
        Arc::new(Rules { refuse }),
        store,
        Arc::new(InsecureTestPrimes::new(index)),
        std::slice::from_ref(key),
    )
    .await
    .unwrap()
}

/// Starts an honest node for each of `members` (no key yet, fresh memory stores) that
/// follows at most `max_runs` runs at once, at most `per_proposer` of one proposer.
async fn start_capped(
    network: &InMemoryNetwork,
    all: &[NodeId],
    members: &[NodeId],
    max_runs: usize,
    per_proposer: usize,
) -> Vec<PoolNode> {
    let mut nodes = Vec::new();
    for (i, id) in members.iter().enumerate() {
        let node = PoolNode::start(
            PoolConfig::new(all.to_vec())
                .with_session_idle_timeout(IDLE)
                .with_max_concurrent_runs(max_runs)
                .with_max_runs_per_proposer(per_proposer),
            Arc::new(network.endpoint(*id)),
            common::signer_for(id),
            Arc::new(Rules { refuse: false }),
            Arc::new(MemoryShareStore::new()),
            Arc::new(InsecureTestPrimes::new(i)),
            &[],
        )
        .await
        .unwrap();
        nodes.push(node);
    }
    nodes
}

/// Waits (deadline far below the idle timeout) for the event `pick` selects.
async fn wait_for<T>(
    events: &mut tokio::sync::broadcast::Receiver<PoolEvent>,
    mut pick: impl FnMut(&PoolEvent) -> Option<T>,
) -> T {
    tokio::time::timeout(IDLE / 3, async {
        loop {
            let event = events.recv().await.expect("event stream");
            if let Some(t) = pick(&event) {
                return t;
            }
        }
    })
    .await
    .expect("the event came long before any idle timeout")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_proposal_stops_the_proposer_and_every_follower_naming_the_refuser() {
    let ids = node_ids(4);
    let key = KeyId::new("refused").unwrap();
    let network = InMemoryNetwork::new();
    let stores: Vec<Arc<MemoryShareStore>> = ids.iter().map(|_| Arc::default()).collect();
    let mut nodes = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        // Node 4 refuses.
        nodes.push(start(&network, &ids, *id, stores[i].clone(), i == 3, &key).await);
    }
    let mut follower_events: Vec<_> = nodes[1..3].iter().map(|n| n.subscribe()).collect();

    let committee = Committee::new(ids.clone(), 3).unwrap();
    let err = nodes[0]
        .propose_keygen(key.clone(), committee, b"pool v1".to_vec())
        .await
        .expect_err("node 4 refused");
    match err {
        TssError::Aborted { by, .. } => assert_eq!(by, ids[3], "the refuser is named"),
        other => panic!("expected an abort naming node 4, got {other}"),
    }
    for events in &mut follower_events {
        let by = wait_for(events, |e| match e {
            PoolEvent::RunFinished { aborted_by, .. } => Some(*aborted_by),
            _ => None,
        })
        .await;
        assert_eq!(by, Some(ids[3]), "each follower stopped, naming node 4");
    }
    for (store, node) in stores.iter().zip(&nodes) {
        assert_eq!(store.active_generation(&key), None, "nothing was stored");
        assert!(node.share(&key).is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_abort_from_a_node_outside_the_run_is_ignored() {
    // Nodes 1 and 2 run keygen; node 3 shares their control session but is not a party
    // of the run, and sends an abort for it while it runs.
    let ids = node_ids(3);
    let key = KeyId::new("outsider-abort").unwrap();
    let network = InMemoryNetwork::new();
    let outsider = network.endpoint(ids[2]);
    let mut nodes = Vec::new();
    for id in &ids[..2] {
        nodes.push(start(&network, &ids, *id, Arc::default(), false, &key).await);
    }
    let control = outsider
        .open_session(
            control_session_id(&ids),
            SessionConfig::new(ids.clone()).with_idle_timeout(IDLE),
        )
        .unwrap();
    let mut events = nodes[1].subscribe();
    let committee = Committee::new(ids[..2].to_vec(), 2).unwrap();
    let proposer = nodes[0].clone();
    let run = tokio::spawn(async move {
        proposer
            .propose_keygen(key.clone(), committee, b"two".to_vec())
            .await
    });
    let eid = wait_for(&mut events, |e| match e {
        PoolEvent::RunStarted { eid, .. } => Some(*eid),
        _ => None,
    })
    .await;
    let abort = encode_message(&ControlMsg::Abort {
        eid,
        reason: "I say so".into(),
        blamed: Vec::new(),
    })
    .unwrap();
    for party in &ids[..2] {
        control
            .send(Destination::Direct(*party), abort.clone())
            .unwrap();
    }
    let share = run
        .await
        .unwrap()
        .expect("keygen completes despite the outsider");
    assert_eq!(share.generation(), Generation::KEYGEN);
    let follower = wait_for(&mut events, |e| match e {
        PoolEvent::RunFinished {
            error, aborted_by, ..
        } => Some((error.clone(), *aborted_by)),
        _ => None,
    })
    .await;
    assert_eq!(
        follower,
        (None, None),
        "the follower finished too, unaborted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reshare_committed_through_the_store_survives_a_restart() {
    let ids = node_ids(4);
    let key = KeyId::new("restart").unwrap();
    let stores: Vec<Arc<MemoryShareStore>> = ids.iter().map(|_| Arc::default()).collect();

    // Keygen 2-of-3 among nodes 1-3, then node 4 joins: 3-of-4.
    let network = InMemoryNetwork::new();
    let mut nodes = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        nodes.push(start(&network, &ids, *id, stores[i].clone(), false, &key).await);
    }
    let old = Committee::new(ids[..3].to_vec(), 2).unwrap();
    let share = keygen_and_wait(
        &nodes[0],
        &nodes[1..3],
        &key,
        old,
        b"pool v1".to_vec(),
        IDLE / 3,
    )
    .await;
    let address = share.ethereum_address();
    let mut events: Vec<_> = nodes.iter().map(|n| n.subscribe()).collect();
    let new = Committee::new(ids.clone(), 3).unwrap();
    let commit = nodes[0]
        .propose_reshare(&key, new.clone(), None, b"pool v2".to_vec())
        .await
        .unwrap();
    assert_eq!(commit.address, address);
    assert_eq!(commit.new_generation, Some(Generation(1)));
    for ev in &mut events[1..] {
        let (generation, state) = wait_for(ev, |e| match e {
            PoolEvent::KeyCommitted {
                generation, state, ..
            } if generation.get() == 1 => Some((*generation, state.clone())),
            _ => None,
        })
        .await;
        assert_eq!(
            (generation, state.as_slice()),
            (Generation(1), &b"pool v2"[..])
        );
    }
    for store in &stores {
        assert_eq!(store.active_generation(&key), Some(Generation(1)));
        assert_eq!(
            store.generations(&key),
            vec![Generation(1)],
            "the old generation is retired after the commit"
        );
        assert_eq!(
            store.load_state(&key).await.unwrap().as_deref(),
            Some(&b"pool v2"[..]),
            "the state is committed with the active generation"
        );
    }

    // Restart every node on the same stores.
    for node in &nodes {
        node.shutdown();
    }
    drop(nodes);
    let network = InMemoryNetwork::new();
    let mut nodes = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        nodes.push(start(&network, &ids, *id, stores[i].clone(), false, &key).await);
    }
    for node in &nodes {
        let share = node.share(&key).expect("the share is loaded after restart");
        assert_eq!(share.generation(), Generation(1));
        assert_eq!(share.committee(), &new);
        assert_eq!(share.ethereum_address(), address);
    }
    // The new committee signs (nodes 2, 3, 4), for the same address.
    let out = nodes[1]
        .propose_sign(&key, b"L2 batch 7".to_vec(), Some(ids[1..].to_vec()))
        .await
        .unwrap();
    assert_eq!(
        out.digest,
        keccak256(b"L2 batch 7"),
        "signers hash the message themselves"
    );
    assert_eq!(out.signature.recover_address(&out.digest).unwrap(), address);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_equivocating_proposer_cannot_make_parties_commit_different_states() {
    // Node 1 (the attacker, a raw endpoint) shows node 2 and node 3 keygen proposals under
    // one eid that differ only in their context (say, the stake of a member), and runs
    // the protocol itself for both. Without binding the whole proposal into the run, 2
    // and 3 would complete one keygen together and commit different pool states.
    let ids = node_ids(3);
    let key = KeyId::new("equivocation").unwrap();
    let network = InMemoryNetwork::new();
    let attacker = Arc::new(network.endpoint(ids[0]));
    // Short idle timeout: the honest runs can only end in silence here.
    let quiet = Duration::from_secs(15);
    let mut honest = Vec::new();
    for (k, id) in ids.iter().enumerate().skip(1) {
        let node = PoolNode::start(
            PoolConfig::new(ids.clone()).with_session_idle_timeout(quiet),
            Arc::new(network.endpoint(*id)),
            common::signer_for(id),
            Arc::new(Rules { refuse: false }),
            Arc::new(MemoryShareStore::new()),
            Arc::new(InsecureTestPrimes::new(k)),
            std::slice::from_ref(&key),
        )
        .await
        .unwrap();
        honest.push(node);
    }
    let mut events: Vec<_> = honest.iter().map(|n| n.subscribe()).collect();
    let control = attacker
        .open_session(
            control_session_id(&ids),
            SessionConfig::new(ids.clone()).with_idle_timeout(IDLE),
        )
        .unwrap();
    let eid = tss_core::ExecutionId::random(
        tss_core::ProtocolKind::Keygen,
        &key,
        &ids,
        &mut rand::thread_rng(),
    );
    let committee = Committee::new(ids.clone(), 2).unwrap();
    let proposal = |context: &[u8]| {
        tss_core::pool::Proposal::Keygen(KeygenProposal {
            eid,
            key_id: key.clone(),
            committee: committee.clone(),
            context: context.to_vec(),
            protocol: Default::default(),
        })
    };
    let (to_2, to_3) = (proposal(b"stake 100"), proposal(b"stake 1000000"));
    assert_ne!(to_2.run_eid(), to_3.run_eid());
    for (to, p) in [(ids[1], &to_2), (ids[2], &to_3)] {
        let msg = encode_message(&ControlMsg::Propose(p.clone())).unwrap();
        control.send(Destination::Direct(to), msg).unwrap();
    }
    // The attacker takes part in both versions of the run.
    let tss = Arc::new(tss_core::TssNode::new(attacker.clone()).with_idle_timeout(quiet));
    for p in [to_2, to_3] {
        let (tss, key, committee) = (tss.clone(), key.clone(), committee.clone());
        tokio::spawn(async move {
            let _ = tss
                .keygen(
                    key,
                    committee,
                    p.run_eid(),
                    InsecureTestPrimes::new(0).take().await.unwrap(),
                )
                .await;
        });
    }
    for ev in &mut events {
        let error = wait_for(ev, |e| match e {
            PoolEvent::RunFinished { error, .. } => Some(error.clone()),
            PoolEvent::KeyCommitted { .. } => Some(None),
            _ => None,
        })
        .await;
        assert!(
            error.is_some(),
            "no honest node completes an equivocated run"
        );
    }
    for node in &honest {
        assert!(node.share(&key).is_none(), "nothing was committed");
    }
}

/// The next reshare proposal `control` receives (other control messages are skipped).
async fn next_reshare_proposal(control: &mut transport::SessionChannel) -> ReshareProposal {
    tokio::time::timeout(IDLE / 3, async {
        loop {
            let msg = control.recv().await.expect("control session");
            if let Ok(ControlMsg::Propose(Proposal::Reshare(p))) =
                decode_message::<ControlMsg>(msg.from, &msg.payload)
            {
                return p;
            }
        }
    })
    .await
    .expect("a reshare proposal came")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_generation_in_use_claim_counts_only_from_a_party_of_the_run_and_within_reach() {
    // Node 1 proposes that node 4 (a raw endpoint) joins {1, 2, 3}. While the run is
    // registered, node 1 hears four claims that some generation is held pending: one from
    // node 5 (a peer on the control session, not a party of the run), one from node 4 for
    // an execution id node 1 never ran, one from node 4 for an absurd generation (2000,
    // beyond the reach of 1024 above the active one), and one plausible claim from node 4
    // (generation 3). Node 4 then aborts. Node 1 proposes again above the plausible claim
    // only: generation 4, not 8, 10 or 2001.
    let ids = node_ids(5);
    let key = KeyId::new("generation-claims").unwrap();
    let network = InMemoryNetwork::new();
    let mut nodes = Vec::new();
    for id in &ids[..3] {
        nodes.push(start(&network, &ids, *id, Arc::default(), false, &key).await);
    }
    let endpoints = [network.endpoint(ids[3]), network.endpoint(ids[4])];
    let raw = |endpoint: &transport::InMemoryTransport| {
        endpoint
            .open_session(
                control_session_id(&ids),
                SessionConfig::new(ids.clone()).with_idle_timeout(IDLE),
            )
            .unwrap()
    };
    let (mut joiner, outsider) = (raw(&endpoints[0]), raw(&endpoints[1]));
    keygen_and_wait(
        &nodes[0],
        &nodes[1..],
        &key,
        Committee::new(ids[..3].to_vec(), 2).unwrap(),
        b"pool v1".to_vec(),
        IDLE / 3,
    )
    .await;

    let proposer = nodes[0].clone();
    let (run_key, committee) = (key.clone(), Committee::new(ids[..4].to_vec(), 3).unwrap());
    let run = tokio::spawn(async move {
        proposer
            .propose_reshare(&run_key, committee, None, b"pool v2".to_vec())
            .await
    });
    let first = next_reshare_proposal(&mut joiner).await;
    assert_eq!(first.new_generation, Generation(1));
    let claim = |eid, generation| {
        encode_message(&ControlMsg::GenerationInUse {
            eid,
            key_id: key.clone(),
            generation: Generation(generation),
        })
        .unwrap()
    };
    let to_proposer = Destination::Direct(ids[0]);
    outsider.send(to_proposer, claim(first.eid, 7)).unwrap();
    let unknown = tss_core::ExecutionId::random(
        tss_core::ProtocolKind::Reshare,
        &key,
        &ids[..4],
        &mut rand::thread_rng(),
    );
    for msg in [
        claim(unknown, 9),
        claim(first.eid, 2000),
        claim(first.eid, 3),
        encode_message(&ControlMsg::Abort {
            eid: first.eid,
            reason: "generation 3 is held pending here".into(),
            blamed: Vec::new(),
        })
        .unwrap(),
    ] {
        joiner.send(to_proposer, msg).unwrap();
    }

    let second = next_reshare_proposal(&mut joiner).await;
    assert_ne!(second.eid, first.eid, "a fresh execution id");
    assert_eq!(
        second.new_generation,
        Generation(4),
        "only the party's plausible claim moved the generation"
    );
    joiner
        .send(
            to_proposer,
            encode_message(&ControlMsg::Abort {
                eid: second.eid,
                reason: "no".into(),
                blamed: Vec::new(),
            })
            .unwrap(),
        )
        .unwrap();
    let result = run.await.unwrap();
    assert!(
        matches!(&result, Err(TssError::Aborted { by, .. }) if *by == ids[3]),
        "a refusal above every claim ends the proposal: {result:?}"
    );
    for node in &nodes {
        assert_eq!(node.share(&key).unwrap().generation(), Generation::KEYGEN);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_proposal_flood_from_one_member_cannot_take_every_follow_slot() {
    // Node 3 (a raw endpoint) sends node 2 six keygen proposals naming itself and node 2,
    // then never takes part: each run node 2 starts waits for it up to the idle timeout
    // (900 s). Node 2 follows at most 4 runs at once, at most 2 of one proposer, so the
    // flood holds 2 slots and node 1's keygen with node 2 still completes.
    let ids = node_ids(3);
    let network = InMemoryNetwork::new();
    let nodes = start_capped(&network, &ids, &ids[..2], 4, 2).await;
    let mut events = nodes[1].subscribe();
    let flooder_endpoint = network.endpoint(ids[2]);
    let flooder = flooder_endpoint
        .open_session(
            control_session_id(&ids),
            SessionConfig::new(ids.clone()).with_idle_timeout(IDLE),
        )
        .unwrap();
    let pair = Committee::new(vec![ids[1], ids[2]], 2).unwrap();
    for i in 0..6 {
        let key_id = KeyId::new(format!("flood-{i}")).unwrap();
        let proposal = Proposal::Keygen(KeygenProposal {
            eid: tss_core::ExecutionId::random(
                tss_core::ProtocolKind::Keygen,
                &key_id,
                pair.members(),
                &mut rand::thread_rng(),
            ),
            key_id,
            committee: pair.clone(),
            context: b"flood".to_vec(),
            protocol: Default::default(),
        });
        flooder
            .send(
                Destination::Direct(ids[1]),
                encode_message(&ControlMsg::Propose(proposal)).unwrap(),
            )
            .unwrap();
    }
    for _ in 0..2 {
        wait_for(&mut events, |e| {
            matches!(e, PoolEvent::RunStarted { proposer, .. } if *proposer == ids[2]).then_some(())
        })
        .await;
    }

    let honest = KeyId::new("honest").unwrap();
    // In a task of its own, so that the deadline is watched while the run computes.
    let run = {
        let (node, honest) = (nodes[0].clone(), honest.clone());
        let pair = Committee::new(ids[..2].to_vec(), 2).unwrap();
        tokio::spawn(async move { node.propose_keygen(honest, pair, b"pool v1".to_vec()).await })
    };
    let share = tokio::time::timeout(IDLE / 3, run)
        .await
        .expect("node 2 followed the honest run, not only the flood")
        .unwrap()
        .expect("keygen");
    assert_eq!(share.key_id(), &honest);
    let mut flood_runs = 2;
    loop {
        match events.try_recv() {
            Ok(PoolEvent::RunStarted { proposer, .. }) if proposer == ids[2] => flood_runs += 1,
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::TryRecvError::Lagged(missed)) => {
                panic!("{missed} events were missed: the flood's runs cannot be counted")
            }
            Err(_) => break,
        }
    }
    assert_eq!(flood_runs, 2, "the flood held only its 2 slots");
}

/// Sends `to` a keygen proposal of a fresh key named after `tag`, for `committee`, on the
/// raw control session `from`; returns its execution id.
fn send_keygen_proposal(
    from: &transport::SessionChannel,
    to: NodeId,
    committee: &Committee,
    tag: &str,
) -> tss_core::ExecutionId {
    let key_id = KeyId::new(tag).unwrap();
    let eid = tss_core::ExecutionId::random(
        tss_core::ProtocolKind::Keygen,
        &key_id,
        committee.members(),
        &mut rand::thread_rng(),
    );
    let proposal = Proposal::Keygen(KeygenProposal {
        eid,
        key_id,
        committee: committee.clone(),
        context: b"flood".to_vec(),
        protocol: Default::default(),
    });
    from.send(
        Destination::Direct(to),
        encode_message(&ControlMsg::Propose(proposal)).unwrap(),
    )
    .unwrap();
    eid
}

/// How long a refusal may take to reach the proposer: far below the idle timeout, which
/// is what a proposer waited for a dropped proposal.
const PROMPTLY: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_proposal_over_a_run_cap_is_refused_at_once_with_a_busy_abort_to_its_proposer() {
    // Node 1 follows at most 2 runs at once, at most 2 of one proposer. Node 2 (a raw
    // endpoint) takes both slots with runs it never works on, then sends proposals over
    // its cap: each is answered at once with a busy abort to node 2, except a replay and
    // one node 1 is no party of. Then node 0 proposes a keygen with nodes 1 and 3: node 1
    // is at its overall cap, so node 0's run fails at once naming node 1 as busy, and
    // node 0 passes the abort on to node 3, whose run ends too.
    let ids = node_ids(4);
    let network = InMemoryNetwork::new();
    let nodes = start_capped(&network, &ids, &[ids[0], ids[1], ids[3]], 2, 2).await;
    let mut busy_events = nodes[1].subscribe();
    let mut follower_events = nodes[2].subscribe();
    let flooder_endpoint = network.endpoint(ids[2]);
    let mut flooder = flooder_endpoint
        .open_session(
            control_session_id(&ids),
            SessionConfig::new(ids.clone()).with_idle_timeout(IDLE),
        )
        .unwrap();
    let pair = Committee::new(vec![ids[1], ids[2]], 2).unwrap();
    for i in 0..2 {
        send_keygen_proposal(&flooder, ids[1], &pair, &format!("held-{i}"));
    }
    for _ in 0..2 {
        wait_for(&mut busy_events, |e| {
            matches!(e, PoolEvent::RunStarted { proposer, .. } if *proposer == ids[2]).then_some(())
        })
        .await;
    }

    let over = [
        send_keygen_proposal(&flooder, ids[1], &pair, "over-0"),
        send_keygen_proposal(&flooder, ids[1], &pair, "over-1"),
    ];
    // Over the cap too, but not answered: node 1 is no party of this one...
    let elsewhere = Committee::new(vec![ids[0], ids[2]], 2).unwrap();
    send_keygen_proposal(&flooder, ids[1], &elsewhere, "not-node-1");
    // ...and this one is a replay of a refused proposal (same execution id).
    let replay = Proposal::Keygen(KeygenProposal {
        eid: over[0],
        key_id: KeyId::new("over-0").unwrap(),
        committee: pair.clone(),
        context: b"flood".to_vec(),
        protocol: Default::default(),
    });
    flooder
        .send(
            Destination::Direct(ids[1]),
            encode_message(&ControlMsg::Propose(replay)).unwrap(),
        )
        .unwrap();
    // Handled after those two: its answer shows they got none.
    let last = send_keygen_proposal(&flooder, ids[1], &pair, "over-2");

    let started = std::time::Instant::now();
    let mut answered = Vec::new();
    while answered.len() < 3 {
        let msg = tokio::time::timeout(PROMPTLY, flooder.recv())
            .await
            .expect("the refusals came at once")
            .expect("control session");
        if let Ok(ControlMsg::Abort { eid, reason, .. }) =
            decode_message::<ControlMsg>(msg.from, &msg.payload)
        {
            assert_eq!(msg.from, ids[1], "only node 1 answers");
            assert!(reason.starts_with("busy:"), "{reason}");
            answered.push(eid);
        }
    }
    assert!(started.elapsed() < PROMPTLY);
    assert_eq!(
        answered,
        vec![over[0], over[1], last],
        "one busy abort per refused proposal of a run of node 1, in order: none for the \
         replay, none for the run node 1 is no party of, none for the 2 runs it follows"
    );

    let trio = Committee::new(vec![ids[0], ids[1], ids[3]], 2).unwrap();
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(
        PROMPTLY,
        nodes[0].propose_keygen(KeyId::new("honest").unwrap(), trio, b"pool v1".to_vec()),
    )
    .await
    .expect("node 0's run ended at once, not after the idle timeout");
    let eid = match result {
        Err(TssError::Aborted {
            eid, by, reason, ..
        }) => {
            assert_eq!(by, ids[1], "the refusal names node 1");
            assert!(reason.starts_with("busy:"), "{reason}");
            eid
        }
        other => panic!("expected a busy refusal by node 1, got {other:?}"),
    };
    let aborted_by = tokio::time::timeout(PROMPTLY.saturating_sub(started.elapsed()), async {
        loop {
            match follower_events.recv().await.expect("event stream") {
                PoolEvent::RunFinished {
                    eid: e,
                    aborted_by,
                    error,
                    ..
                } if e == eid => {
                    assert!(
                        error.is_some_and(|e| e.contains("busy:")),
                        "the reason travels"
                    );
                    return aborted_by;
                }
                _ => {}
            }
        }
    })
    .await
    .expect("node 3's part of the run ended at once too");
    assert_eq!(aborted_by, Some(ids[0]), "node 0 passed the abort on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_has_at_most_max_runs_per_proposer_of_its_own_proposals_under_way() {
    // Node 0 may have 1 run of its own under way (its configuration says 0, set on the
    // public field past the builder's minimum: that counts as 1). It is asked for two
    // keygens with node 1 (a raw endpoint that never works on them): node 1 gets the
    // second proposal only once it has aborted the first.
    let ids = node_ids(2);
    let network = InMemoryNetwork::new();
    let mut config = PoolConfig::new(ids.clone()).with_session_idle_timeout(IDLE);
    config.max_runs_per_proposer = 0;
    let node = PoolNode::start(
        config,
        Arc::new(network.endpoint(ids[0])),
        common::signer_for(&ids[0]),
        Arc::new(Rules { refuse: false }),
        Arc::new(MemoryShareStore::new()),
        Arc::new(InsecureTestPrimes::new(0)),
        &[],
    )
    .await
    .unwrap();
    let peer_endpoint = network.endpoint(ids[1]);
    let mut peer = peer_endpoint
        .open_session(
            control_session_id(&ids),
            SessionConfig::new(ids.clone()).with_idle_timeout(IDLE),
        )
        .unwrap();
    let pair = Committee::new(ids.clone(), 2).unwrap();
    let runs: Vec<_> = (0..2)
        .map(|i| {
            let (node, pair) = (node.clone(), pair.clone());
            tokio::spawn(async move {
                node.propose_keygen(KeyId::new(format!("own-{i}")).unwrap(), pair, Vec::new())
                    .await
            })
        })
        .collect();
    async fn next_proposal(peer: &mut transport::SessionChannel) -> tss_core::ExecutionId {
        loop {
            let msg = peer.recv().await.expect("control session");
            if let Ok(ControlMsg::Propose(p)) = decode_message::<ControlMsg>(msg.from, &msg.payload)
            {
                return p.eid();
            }
        }
    }
    let first = tokio::time::timeout(PROMPTLY, next_proposal(&mut peer))
        .await
        .expect("the first proposal came");
    assert!(
        tokio::time::timeout(Duration::from_secs(3), next_proposal(&mut peer))
            .await
            .is_err(),
        "no second proposal while the first run is under way"
    );
    let abort = |eid| {
        encode_message(&ControlMsg::Abort {
            eid,
            reason: "not now".into(),
            blamed: Vec::new(),
        })
        .unwrap()
    };
    peer.send(Destination::Direct(ids[0]), abort(first))
        .unwrap();
    let second = tokio::time::timeout(PROMPTLY, next_proposal(&mut peer))
        .await
        .expect("the second proposal came once the first run ended");
    assert_ne!(first, second);
    peer.send(Destination::Direct(ids[0]), abort(second))
        .unwrap();
    for run in runs {
        let result = tokio::time::timeout(PROMPTLY, run).await.unwrap().unwrap();
        assert!(
            matches!(result, Err(TssError::Aborted { by, .. }) if by == ids[1]),
            "{result:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_proposal_replayed_after_a_restart_is_refused_from_the_execution_ids_in_the_keystore() {
    // Node 1 (a member, as a raw endpoint) sends node 2 a keygen proposal, which node 2's
    // rules refuse. Node 2 restarts on its encrypted keystore, reopened from disk. Node 1
    // sends the very same proposal again: node 2 drops it as a replay (it does not even
    // validate it again), while a new proposal is validated (and refused) as before.
    let ids = node_ids(2);
    let key = KeyId::new("replay").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let open = || async {
        keystore::AsyncKeystore::open_with_kdf(
            dir.path(),
            keystore::Unlock::passphrase("replay test"),
            keystore::KdfParams::insecure_for_tests(),
        )
        .await
        .unwrap()
    };
    let start_node_2 = |network: &InMemoryNetwork, store: keystore::AsyncKeystore| {
        PoolNode::start(
            PoolConfig::new(ids.clone()).with_session_idle_timeout(IDLE),
            Arc::new(network.endpoint(ids[1])),
            common::signer_for(&ids[1]),
            Arc::new(Rules { refuse: true }),
            Arc::new(store),
            Arc::new(InsecureTestPrimes::new(1)),
            std::slice::from_ref(&key),
        )
    };
    let proposal = || {
        let eid = tss_core::ExecutionId::random(
            tss_core::ProtocolKind::Keygen,
            &key,
            &ids,
            &mut rand::thread_rng(),
        );
        let p = Proposal::Keygen(KeygenProposal {
            eid,
            key_id: key.clone(),
            committee: Committee::new(ids.clone(), 2).unwrap(),
            context: b"pool v1".to_vec(),
            protocol: Default::default(),
        });
        (eid, encode_message(&ControlMsg::Propose(p)).unwrap())
    };
    let (eid, bytes) = proposal();
    let store = open().await;
    let network = InMemoryNetwork::new();
    let node = start_node_2(&network, store.clone()).await.unwrap();
    let control = raw_control(&network, &ids, ids[0]);
    assert_eq!(
        what_a_proposal_gets(&node, &control, eid, bytes.clone()).await,
        "refused",
        "the first time the rules judge it"
    );
    node.stopped().await;
    drop(node);
    store.close().await.unwrap();

    let store = open().await;
    assert_eq!(
        store.load_executions().await.unwrap().len(),
        1,
        "the proposal is recorded in the reopened keystore"
    );
    let network = InMemoryNetwork::new();
    let node = start_node_2(&network, store.clone()).await.unwrap();
    let control = raw_control(&network, &ids, ids[0]);
    assert_eq!(
        what_a_proposal_gets(&node, &control, eid, bytes).await,
        "replay",
        "after the restart the same proposal is dropped as a replay"
    );
    let (fresh, fresh_bytes) = proposal();
    assert_eq!(
        what_a_proposal_gets(&node, &control, fresh, fresh_bytes).await,
        "refused",
        "a new proposal is still judged by the rules"
    );
    node.stopped().await;
}

/// The control session of `me`, a raw endpoint of `network` (a member's, used by hand).
fn raw_control(network: &InMemoryNetwork, ids: &[NodeId], me: NodeId) -> transport::SessionChannel {
    network
        .endpoint(me)
        .open_session(
            control_session_id(ids),
            SessionConfig::new(ids.to_vec()).with_idle_timeout(IDLE),
        )
        .unwrap()
}

/// What `node` does with the control message `bytes` (a proposal of run `eid`) sent to
/// it on `control`: validates and refuses it, drops it as a replay, or starts the run
/// (the first event about `eid`).
async fn what_a_proposal_gets(
    node: &PoolNode,
    control: &transport::SessionChannel,
    eid: tss_core::ExecutionId,
    bytes: Vec<u8>,
) -> &'static str {
    let mut events = node.subscribe();
    control
        .send(Destination::Direct(node.node_id()), bytes)
        .unwrap();
    wait_for(&mut events, |e| match e {
        PoolEvent::Refused { eid: e, .. } if *e == eid => Some("refused"),
        PoolEvent::ReplayRefused { eid: e, proposer } if *e == eid => {
            assert_ne!(
                *proposer,
                node.node_id(),
                "the sender as the transport authenticated it"
            );
            Some("replay")
        }
        PoolEvent::RunStarted { eid: e, .. } if *e == eid => Some("started"),
        _ => None,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_sending_another_members_execution_id_first_does_not_make_it_a_replay() {
    // Node 3 (a member, raw endpoint) sends node 2 a proposal under the execution id that
    // node 1 (also raw) is about to use. Node 2 judges each on its own: node 1's proposal
    // is not dropped as a replay of node 3's, and only node 3 repeating itself is.
    let ids = node_ids(3);
    let key = KeyId::new("not-a-replay").unwrap();
    let network = InMemoryNetwork::new();
    let node = PoolNode::start(
        PoolConfig::new(ids.clone()).with_session_idle_timeout(IDLE),
        Arc::new(network.endpoint(ids[1])),
        common::signer_for(&ids[1]),
        Arc::new(Rules { refuse: true }),
        Arc::new(MemoryShareStore::new()),
        Arc::new(InsecureTestPrimes::new(1)),
        std::slice::from_ref(&key),
    )
    .await
    .unwrap();
    let eid = tss_core::ExecutionId::random(
        tss_core::ProtocolKind::Keygen,
        &key,
        &ids,
        &mut rand::thread_rng(),
    );
    let bytes = encode_message(&ControlMsg::Propose(Proposal::Keygen(KeygenProposal {
        eid,
        key_id: key.clone(),
        committee: Committee::new(ids.clone(), 2).unwrap(),
        context: b"pool v1".to_vec(),
        protocol: Default::default(),
    })))
    .unwrap();
    let (first, second) = (
        raw_control(&network, &ids, ids[2]),
        raw_control(&network, &ids, ids[0]),
    );
    assert_eq!(
        what_a_proposal_gets(&node, &first, eid, bytes.clone()).await,
        "refused"
    );
    assert_eq!(
        what_a_proposal_gets(&node, &second, eid, bytes.clone()).await,
        "refused",
        "node 1's proposal is judged, not dropped as node 3's replay"
    );
    assert_eq!(
        what_a_proposal_gets(&node, &first, eid, bytes).await,
        "replay",
        "node 3 sending it again is a replay"
    );
    node.stopped().await;
}
