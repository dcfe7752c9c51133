//! The pool layer with either threshold protocol: a key is created and used with the
//! protocol every member's [`PoolConfig`] names for it, and a member configured for
//! another protocol (or holding a share of another) refuses.
//!
//! The behaviour tests that run against both protocols are generated per protocol by
//! `for_each_protocol!` (one test function per protocol, named after it).

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::{keygen_and_wait, node_ids};
use transport::{Destination, InMemoryNetwork, NodeId, SessionConfig, Transport};
use tss_core::pool::{
    control_session_id, AcceptEverything, ControlMsg, MemoryShareStore, PoolConfig, PoolEvent,
    PoolNode, PresignProposal, Proposal,
};
use tss_core::wire::encode_message;
use tss_core::{keccak256, Committee, ExecutionId, InsecureTestPrimes, KeyId, Protocol, TssError};

const LIMIT: Duration = Duration::from_secs(300);

async fn start_node(
    network: &InMemoryNetwork,
    all: &[NodeId],
    me: NodeId,
    store: Arc<MemoryShareStore>,
    key: &KeyId,
    protocol: Protocol,
) -> Result<PoolNode, TssError> {
    let index = all.iter().position(|n| *n == me).unwrap();
    PoolNode::start(
        PoolConfig::new(all.to_vec()).with_protocol(key.clone(), protocol),
        Arc::new(network.endpoint(me)),
        common::signer_for(&me),
        Arc::new(AcceptEverything),
        store,
        Arc::new(InsecureTestPrimes::new(index)),
        std::slice::from_ref(key),
    )
    .await
}

/// Starts `protocols.len()` nodes, node `i` configured with `protocols[i]` for `key`.
async fn start_nodes(
    network: &InMemoryNetwork,
    key: &KeyId,
    protocols: &[Protocol],
) -> (Vec<NodeId>, Vec<PoolNode>, Vec<Arc<MemoryShareStore>>) {
    let ids = node_ids(protocols.len() as u8);
    let mut nodes = Vec::new();
    let mut stores = Vec::new();
    for (id, protocol) in ids.iter().zip(protocols) {
        let store = Arc::new(MemoryShareStore::new());
        nodes.push(
            start_node(network, &ids, *id, store.clone(), key, *protocol)
                .await
                .unwrap(),
        );
        stores.push(store);
    }
    (ids, nodes, stores)
}

/// One `#[test]` per protocol, each calling `$body(protocol)`.
macro_rules! for_each_protocol {
    ($body:ident: $($name:ident => $protocol:expr),+ $(,)?) => {
        $(
            #[test]
            fn $name() {
                common::run($body($protocol));
            }
        )+
    };
}

/// A 2-of-3 pool creates the key through a keygen proposal, every member holds a share
/// of the configured protocol, and a validated request signed through `propose_sign` by
/// two different signer sets recovers (ecrecover, outside the protocol code) to the key's
/// Ethereum address; a second request signs too.
async fn keygen_then_validated_signing_recovers_the_pool_address(protocol: Protocol) {
    let network = InMemoryNetwork::new();
    let key = KeyId::new("pool-key").unwrap();
    let (ids, nodes, _) = start_nodes(&network, &key, &[protocol; 3]).await;
    let committee = Committee::new(ids.clone(), 2).unwrap();
    let share = keygen_and_wait(
        &nodes[0],
        &nodes[1..],
        &key,
        committee,
        b"l1".to_vec(),
        LIMIT,
    )
    .await;
    assert_eq!(share.protocol(), protocol);
    for node in &nodes {
        let held = node.share(&key).expect("every member holds a share");
        assert_eq!(held.protocol(), protocol);
        assert_eq!(held.ethereum_address(), share.ethereum_address());
    }
    for (proposer, request) in [(0usize, &b"batch 1"[..]), (2, &b"batch 2"[..])] {
        let out = nodes[proposer]
            .propose_sign(&key, request.to_vec(), None)
            .await
            .expect("signing");
        assert_eq!(out.digest, keccak256(request));
        assert_eq!(
            out.signature.recover_address(&keccak256(request)).unwrap(),
            share.ethereum_address()
        );
        assert!(out.signers.contains(&ids[proposer]));
    }
}

for_each_protocol!(keygen_then_validated_signing_recovers_the_pool_address:
    cggmp21_pool_keygen_then_validated_signing_recovers_the_pool_address => Protocol::Cggmp21,
    dkls23_pool_keygen_then_validated_signing_recovers_the_pool_address => Protocol::Dkls23,
);

/// A member configured for another protocol than the proposer's refuses its keygen
/// proposal, naming both protocols; the key is created by nobody.
async fn a_member_configured_for_another_protocol_refuses_the_keygen(protocol: Protocol) {
    let other = match protocol {
        Protocol::Cggmp21 => Protocol::Dkls23,
        _ => Protocol::Cggmp21,
    };
    let network = InMemoryNetwork::new();
    let key = KeyId::new("pool-key").unwrap();
    let (ids, nodes, _) = start_nodes(&network, &key, &[protocol, protocol, other]).await;
    let committee = Committee::new(ids.clone(), 2).unwrap();
    let err = nodes[0]
        .propose_keygen(key.clone(), committee, Vec::new())
        .await
        .expect_err("a member keeps the key in another protocol");
    let text = err.to_string();
    assert!(
        text.contains(other.name()) && text.contains(protocol.name()),
        "{text}"
    );
    for node in &nodes {
        assert!(node.share(&key).is_none());
    }
}

for_each_protocol!(a_member_configured_for_another_protocol_refuses_the_keygen:
    a_dkls23_member_refuses_a_cggmp21_keygen => Protocol::Cggmp21,
    a_cggmp21_member_refuses_a_dkls23_keygen => Protocol::Dkls23,
);

/// A DKLs23 key has no presignatures: filling makes none, the node's own presign
/// proposal is refused with a typed error, signing is full signing, and a member sending
/// a presign proposal anyway (around its node's check) is refused by the follower.
#[test]
fn a_dkls23_key_makes_no_presignatures_refuses_a_members_presign_proposal_and_signs_fully() {
    common::run(async {
        let network = InMemoryNetwork::new();
        let key = KeyId::new("pool-key").unwrap();
        let (ids, nodes, _) = start_nodes(&network, &key, &[Protocol::Dkls23; 3]).await;
        let committee = Committee::new(ids.clone(), 2).unwrap();
        keygen_and_wait(&nodes[0], &nodes[1..], &key, committee, Vec::new(), LIMIT).await;
        assert_eq!(nodes[0].fill_presignatures(&key, 2).await.unwrap(), 0);
        assert_eq!(nodes[0].presignatures_ready(&key), 0);
        match nodes[0].propose_presign(&key).await {
            Err(TssError::Unsupported {
                protocol: Protocol::Dkls23,
                operation,
            }) => assert_eq!(operation, "presignatures"),
            other => panic!("a DKLs23 presignature was proposed: {other:?}"),
        }
        let out = nodes[1]
            .propose_sign(&key, b"after the refusal".to_vec(), None)
            .await
            .unwrap();
        assert_eq!(out.presignature, None);

        // A member that bypasses its own node's check (a raw control session on its
        // authenticated endpoint) proposes a presignature anyway: the follower refuses
        // it, naming the protocol, and holds none.
        let mut events = nodes[0].subscribe();
        nodes[2].shutdown();
        nodes[2].stopped().await;
        let raw = network.endpoint(ids[2]);
        let control = raw
            .open_session(
                control_session_id(&ids),
                SessionConfig::new(ids.clone()).with_idle_timeout(LIMIT),
            )
            .unwrap();
        let signers = vec![ids[2], ids[0]];
        let eid = ExecutionId::random(
            tss_core::ProtocolKind::Presign,
            &key,
            &signers,
            &mut rand::thread_rng(),
        );
        let proposal = Proposal::Presign(PresignProposal {
            eid,
            key_id: key.clone(),
            generation: tss_core::Generation(0),
            signers,
        });
        control
            .send(
                Destination::Direct(ids[0]),
                encode_message(&ControlMsg::Propose(proposal)).unwrap(),
            )
            .unwrap();
        let reason = tokio::time::timeout(LIMIT, async {
            loop {
                if let Ok(PoolEvent::Refused {
                    eid: refused,
                    proposer,
                    reason,
                }) = events.recv().await
                {
                    if refused == eid {
                        assert_eq!(proposer, ids[2]);
                        return reason;
                    }
                }
            }
        })
        .await
        .expect("the follower refuses the presign proposal");
        assert!(
            reason.contains("dkls23") && reason.contains("presignatures"),
            "{reason}"
        );
        assert_eq!(nodes[0].presignatures_ready(&key), 0);
    });
}

/// A node whose stored share is of another protocol than its configuration names for
/// the key refuses to start, with a typed error naming both (rather than serve the key
/// with the wrong protocol or drop the share).
async fn a_node_refuses_to_start_with_a_stored_share_of_another_protocol(protocol: Protocol) {
    let other = match protocol {
        Protocol::Cggmp21 => Protocol::Dkls23,
        _ => Protocol::Cggmp21,
    };
    let network = InMemoryNetwork::new();
    let key = KeyId::new("pool-key").unwrap();
    let (ids, nodes, stores) = start_nodes(&network, &key, &[protocol; 3]).await;
    let committee = Committee::new(ids.clone(), 2).unwrap();
    keygen_and_wait(&nodes[0], &nodes[1..], &key, committee, Vec::new(), LIMIT).await;
    nodes[2].shutdown();
    nodes[2].stopped().await;
    let restarted = InMemoryNetwork::new();
    match start_node(&restarted, &ids, ids[2], stores[2].clone(), &key, other).await {
        Err(TssError::ProtocolMismatch { expected, found }) => {
            assert_eq!(expected, other);
            assert_eq!(found, protocol.name());
        }
        Ok(_) => panic!("started with a {protocol} share configured as {other}"),
        Err(e) => panic!("unexpected error: {e}"),
    }
    // The share is still there: configured right, the node starts and holds it.
    let node = start_node(&restarted, &ids, ids[2], stores[2].clone(), &key, protocol)
        .await
        .unwrap();
    assert_eq!(node.share(&key).unwrap().protocol(), protocol);
}

for_each_protocol!(a_node_refuses_to_start_with_a_stored_share_of_another_protocol:
    a_node_refuses_to_start_with_a_stored_cggmp21_share_configured_as_dkls23 => Protocol::Cggmp21,
    a_node_refuses_to_start_with_a_stored_dkls23_share_configured_as_cggmp21 => Protocol::Dkls23,
);

/// A 2-of-3 key is reshared to a 3-of-4 committee with a joiner: the public key and so
/// the Ethereum address stay the same, every member (the joiner too) holds generation 1
/// of the configured protocol, and a request the joiner proposes, signed by a set that
/// includes it, recovers to the address registered before the reshare.
async fn a_reshare_to_a_joiner_keeps_the_address_and_the_joiner_signs(protocol: Protocol) {
    let network = InMemoryNetwork::new();
    let key = KeyId::new("pool-key").unwrap();
    let (ids, nodes, _) = start_nodes(&network, &key, &[protocol; 4]).await;
    let committee = Committee::new(ids[..3].to_vec(), 2).unwrap();
    let share = keygen_and_wait(&nodes[0], &nodes[1..3], &key, committee, Vec::new(), LIMIT).await;
    let address = share.ethereum_address();
    assert!(nodes[3].share(&key).is_none());

    let new_committee = Committee::new(ids.clone(), 3).unwrap();
    let mut events: Vec<_> = nodes[1..].iter().map(|n| n.subscribe()).collect();
    let commit = nodes[0]
        .propose_reshare(&key, new_committee.clone(), None, b"joined".to_vec())
        .await
        .expect("reshare");
    assert_eq!(commit.new_generation, Some(tss_core::Generation(1)));
    assert_eq!(commit.address, address);
    for events in &mut events {
        tokio::time::timeout(LIMIT, async {
            loop {
                if let Ok(tss_core::pool::PoolEvent::KeyCommitted { generation, .. }) =
                    events.recv().await
                {
                    if generation == tss_core::Generation(1) {
                        return;
                    }
                }
            }
        })
        .await
        .expect("every member commits its new share");
    }
    for node in &nodes {
        let held = node.share(&key).expect("a share of the new generation");
        assert_eq!(held.protocol(), protocol);
        assert_eq!(held.generation(), tss_core::Generation(1));
        assert_eq!(held.committee(), &new_committee);
        assert_eq!(held.ethereum_address(), address, "the address is kept");
    }
    let request = b"a batch after the join".to_vec();
    let out = nodes[3]
        .propose_sign(&key, request.clone(), None)
        .await
        .expect("the new committee signs");
    assert!(out.signers.contains(&ids[3]));
    assert_eq!(out.signers.len(), 3);
    assert_eq!(
        out.signature.recover_address(&keccak256(&request)).unwrap(),
        address
    );
}

for_each_protocol!(a_reshare_to_a_joiner_keeps_the_address_and_the_joiner_signs:
    a_cggmp21_reshare_to_a_joiner_keeps_the_address_and_the_joiner_signs => Protocol::Cggmp21,
    a_dkls23_reshare_to_a_joiner_keeps_the_address_and_the_joiner_signs => Protocol::Dkls23,
);

/// A dealer that sends the joiner a wrong share (validly signed, so the joiner can prove
/// it) is convicted: the reshare fails naming that dealer, nobody activates the new
/// generation, the old committee keeps generation 0 and still signs, and the joiner
/// holds nothing.
async fn a_dealer_sending_a_bad_share_is_convicted_and_the_old_generation_stays(
    protocol: Protocol,
) {
    let network = InMemoryNetwork::new();
    let key = KeyId::new("pool-key").unwrap();
    let (ids, nodes, _) = start_nodes(&network, &key, &[protocol; 4]).await;
    let committee = Committee::new(ids[..3].to_vec(), 2).unwrap();
    let share = keygen_and_wait(&nodes[0], &nodes[1..3], &key, committee, Vec::new(), LIMIT).await;
    // Dealers of a 2-of-3 key proposed by node 0: nodes 0 and 1.
    let mut events: Vec<_> = [0, 2, 3].iter().map(|&k| nodes[k].subscribe()).collect();
    nodes[1].tss().inject_reshare_fault_in_every_run(
        tss_core::reshare::ReshareFault::BadSignedShareTo(ids[3]),
    );
    let err = nodes[0]
        .propose_reshare(
            &key,
            Committee::new(ids.clone(), 3).unwrap(),
            None,
            Vec::new(),
        )
        .await
        .expect_err("a bad dealer");
    // The proposer either convicts the dealer itself or hears the abort of a party that
    // did first; at least one honest party convicts it on the evidence, and none
    // convicts anyone else.
    assert!(
        matches!(&err, TssError::Misbehaviour { culprits, .. } if culprits == &vec![ids[1]])
            || matches!(&err, TssError::Aborted { .. }),
        "expected the dealer convicted, got {err}"
    );
    // The proposer's run may end (on another party's abort) before a convicting party
    // has reported its judgement: wait for one.
    let mut convictions = 0;
    let waited = tokio::time::timeout(LIMIT, async {
        loop {
            for events in &mut events {
                while let Ok(event) = events.try_recv() {
                    if let tss_core::pool::PoolEvent::ReshareComplaints { culprits, .. } = event {
                        assert_eq!(culprits, vec![ids[1]], "only the bad dealer is convicted");
                        convictions += 1;
                    }
                }
            }
            if convictions >= 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "an honest party convicts the bad dealer");
    for node in &nodes[..3] {
        assert_eq!(
            node.share(&key).unwrap().generation(),
            tss_core::Generation(0)
        );
    }
    assert!(nodes[3].share(&key).is_none());
    let request = b"still the old committee".to_vec();
    let out = nodes[2]
        .propose_sign(&key, request.clone(), None)
        .await
        .unwrap();
    assert_eq!(
        out.signature.recover_address(&keccak256(&request)).unwrap(),
        share.ethereum_address()
    );
}

for_each_protocol!(a_dealer_sending_a_bad_share_is_convicted_and_the_old_generation_stays:
    a_bad_cggmp21_dealer_is_convicted_and_the_old_generation_stays => Protocol::Cggmp21,
    a_bad_dkls23_dealer_is_convicted_and_the_old_generation_stays => Protocol::Dkls23,
);

/// DKLs23: a member that corrupts its oblivious-transfer data while signing (which, if
/// repeated, leaks the pairwise state) is banned from the key by the co-signer whose
/// check fails: that run ends with `MustExclude` naming it, the co-signer says so
/// (`MemberBanned`), leaves it out of every set it picks afterwards (requests are still
/// signed, by others), and refuses a sign proposal it proposes.
#[test]
fn a_dkls23_signer_failing_an_ot_check_is_banned_and_signing_goes_on_without_it() {
    common::run(async {
        let network = InMemoryNetwork::new();
        let key = KeyId::new("pool-key").unwrap();
        let (ids, nodes, _) = start_nodes(&network, &key, &[Protocol::Dkls23; 4]).await;
        let committee = Committee::new(ids.clone(), 2).unwrap();
        let share =
            keygen_and_wait(&nodes[0], &nodes[1..], &key, committee, Vec::new(), LIMIT).await;
        let mut events = nodes[0].subscribe();
        nodes[1].tss().inject_dkls23_ot_tampering();

        let err = nodes[0]
            .propose_sign(&key, b"first".to_vec(), Some(vec![ids[0], ids[1]]))
            .await
            .expect_err("the OT check fails");
        match &err {
            TssError::MustExclude { culprit, .. } => assert_eq!(*culprit, ids[1]),
            other => panic!("expected MustExclude naming node 1, got {other}"),
        }
        assert_eq!(nodes[0].banned(&key), BTreeSet::from([ids[1]]));
        let mut said = false;
        while let Ok(event) = events.try_recv() {
            if let tss_core::pool::PoolEvent::MemberBanned { member, .. } = event {
                assert_eq!(member, ids[1]);
                said = true;
            }
        }
        assert!(said, "the ban is reported");

        for k in 0..4u8 {
            let request = vec![b'r', k];
            let out = nodes[0]
                .propose_sign(&key, request.clone(), None)
                .await
                .expect("signed without the banned member");
            assert!(!out.signers.contains(&ids[1]), "{:?}", out.signers);
            assert_eq!(
                out.signature.recover_address(&keccak256(&request)).unwrap(),
                share.ethereum_address()
            );
        }
        let refused = nodes[1]
            .propose_sign(
                &key,
                b"from the banned".to_vec(),
                Some(vec![ids[1], ids[0]]),
            )
            .await
            .expect_err("refused");
        assert!(refused.to_string().contains("banned"), "{refused}");
    });
}

/// A ban is stored with the generation it concerns: after every node restarts from its
/// store, the co-signer still refuses the banned member's proposal and still signs
/// without it. A reshare (every pair gets a fresh pairwise setup) ends the ban: the new
/// generation signs with that member again.
#[test]
fn a_dkls23_ban_outlives_a_restart_and_ends_with_the_generation() {
    common::run(async {
        let network = InMemoryNetwork::new();
        let key = KeyId::new("pool-key").unwrap();
        let (ids, nodes, stores) = start_nodes(&network, &key, &[Protocol::Dkls23; 4]).await;
        let committee = Committee::new(ids.clone(), 2).unwrap();
        let share = keygen_and_wait(
            &nodes[0],
            &nodes[1..],
            &key,
            committee.clone(),
            Vec::new(),
            LIMIT,
        )
        .await;
        nodes[1].tss().inject_dkls23_ot_tampering();
        nodes[0]
            .propose_sign(&key, b"first".to_vec(), Some(vec![ids[0], ids[1]]))
            .await
            .expect_err("the OT check fails");
        assert_eq!(nodes[0].banned(&key), BTreeSet::from([ids[1]]));

        for node in &nodes {
            node.shutdown();
            node.stopped().await;
        }
        let network = InMemoryNetwork::new();
        let mut restarted = Vec::new();
        for (id, store) in ids.iter().zip(&stores) {
            restarted.push(
                start_node(&network, &ids, *id, store.clone(), &key, Protocol::Dkls23)
                    .await
                    .unwrap(),
            );
        }
        let nodes = restarted;
        assert_eq!(
            nodes[0].banned(&key),
            BTreeSet::from([ids[1]]),
            "the ban is read back from the store"
        );
        let refused = nodes[1]
            .propose_sign(&key, b"after restart".to_vec(), Some(vec![ids[1], ids[0]]))
            .await
            .expect_err("refused");
        assert!(refused.to_string().contains("banned"), "{refused}");
        let request = b"signed without it".to_vec();
        let out = nodes[0]
            .propose_sign(&key, request.clone(), None)
            .await
            .expect("signed without the banned member");
        assert!(!out.signers.contains(&ids[1]), "{:?}", out.signers);
        assert_eq!(
            out.signature.recover_address(&keccak256(&request)).unwrap(),
            share.ethereum_address()
        );

        // The L1 record keeps the member; the reshare gives every pair a fresh setup.
        let commit = nodes[2]
            .propose_reshare(&key, committee, None, b"same committee".to_vec())
            .await
            .expect("reshare");
        assert_eq!(commit.new_generation, Some(tss_core::Generation(1)));
        for node in &nodes {
            wait_for_generation(node, &key, tss_core::Generation(1)).await;
        }
        assert!(
            nodes[0].banned(&key).is_empty(),
            "the ban ended with generation 0"
        );
        let request = b"the new generation".to_vec();
        let out = nodes[1]
            .propose_sign(&key, request.clone(), Some(vec![ids[1], ids[0]]))
            .await
            .expect("the former culprit signs in the new generation");
        assert_eq!(
            out.signature.recover_address(&keccak256(&request)).unwrap(),
            share.ethereum_address()
        );
        // Also after a restart: the stored ban belongs to generation 0 only.
        nodes[0].shutdown();
        nodes[0].stopped().await;
        let node0 = start_node(
            &network,
            &ids,
            ids[0],
            stores[0].clone(),
            &key,
            Protocol::Dkls23,
        )
        .await
        .unwrap();
        assert_eq!(
            node0.share(&key).unwrap().generation(),
            tss_core::Generation(1)
        );
        assert!(
            node0.banned(&key).is_empty(),
            "no ban of generation 1 after a restart"
        );
    });
}

/// Waits until `node` holds `generation` of `key`.
async fn wait_for_generation(node: &PoolNode, key: &KeyId, generation: tss_core::Generation) {
    tokio::time::timeout(LIMIT, async {
        while node.share(key).map(|s| s.generation()) != Some(generation) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the node holds the new generation");
}
