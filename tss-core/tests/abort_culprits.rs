//! Culprits as data: when a cggmp21 protocol aborts on a well-formed but invalid message
//! from a party, every honest party's [`TssError::ProtocolAborted`] names that party in
//! `culprits` (read from cggmp21 0.6.3's private abort types, see
//! `tss_core::wire::classify_error`). This pins that reading against real aborts.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cggmp21::generic_ec::Point;
use cggmp21::signing::msg::Msg;
use cggmp21::supported_curves::Secp256k1;
use common::*;
use sha2::Sha256;
use transport::{DeliveryKind, NodeId, Tamper, TamperRule, TamperingTransport};
use tss_core::pool::{
    AcceptEverything, MemoryShareStore, PoolConfig, PoolEvent, PoolNode, ShareStore,
};
use tss_core::wire::{decode_message, encode_message};
use tss_core::{InsecureTestPrimes, ProtocolKind, Result as TssResult, TssError, TssNode};

type SigningMsg = Msg<Secp256k1, Sha256>;

/// The signing protocol message in `payload`, if it is one (large frames are never
/// decoded).
fn signing_msg(payload: &[u8]) -> Option<SigningMsg> {
    if payload.is_empty() || payload.len() > 256 * 1024 {
        return None;
    }
    decode_message(NodeId::from_bytes([0; 32]), payload).ok()
}

/// Signing round 2 (direct) with Γ moved by G: the message still decodes, but its ψ and
/// ψ' proofs no longer match, so cggmp21 aborts with InvalidPsi blaming the sender.
fn bad_round2_proofs() -> TamperRule {
    bad_round2_proofs_to(None)
}

/// [`bad_round2_proofs`] to `victim` only (every recipient if `None`).
fn bad_round2_proofs_to(victim: Option<NodeId>) -> TamperRule {
    Arc::new(
        move |_, to, kind, payload| match (signing_msg(payload), kind) {
            (Some(Msg::Round2(mut msg)), DeliveryKind::Direct)
                if victim.is_none_or(|v| v == to) =>
            {
                msg.Gamma += Point::<Secp256k1>::generator().to_point();
                let bytes = encode_message(&SigningMsg::Round2(msg)).unwrap();
                Tamper::Replace(vec![bytes])
            }
            _ => Tamper::Pass,
        },
    )
}

/// Presigns with the members of the 3-of-4 pool at `signer_positions` (signer list in
/// that order); the member at `byzantine` (a position in the pool) sends through `rule`.
/// Returns every honest signer's result (the Byzantine one's run is abandoned), and how
/// many presignatures of the key each honest signer holds afterwards.
async fn presign_with_byzantine(
    signer_positions: &[usize],
    byzantine: usize,
    rule: TamperRule,
) -> (
    HashMap<NodeId, TssResult<tss_core::ExecutionId>>,
    HashMap<NodeId, usize>,
) {
    let (network, parties) = pool(4, 3).await;
    let parties = Arc::new(parties);
    let signers: Vec<NodeId> = signer_positions
        .iter()
        .map(|&i| parties[i].node.node_id())
        .collect();
    let eid = fresh_eid(ProtocolKind::Presign, parties[0].share.key_id(), &signers);
    // Every node exists before any run starts: replacing an endpoint later would drop
    // the messages already sent to the old one.
    let mut runs = Vec::new();
    for &i in signer_positions {
        let id = parties[i].node.node_id();
        let node = if i == byzantine {
            byzantine_node(&network, id, &rule)
        } else {
            parties[i].node.clone()
        };
        runs.push((id, node, i));
    }
    let mut tasks = Vec::new();
    for (id, node, i) in runs {
        let (signers, parties) = (signers.clone(), parties.clone());
        tasks.push((
            id,
            tokio::spawn(async move { node.presign(&parties[i].share, &signers, eid).await }),
        ));
    }
    let byzantine_id = parties[byzantine].node.node_id();
    let mut results = HashMap::new();
    for (id, task) in tasks {
        if id == byzantine_id {
            task.abort();
        } else {
            results.insert(id, task.await.unwrap());
        }
    }
    let key_id = parties[0].share.key_id();
    let held = signer_positions
        .iter()
        .filter(|&&i| i != byzantine)
        .map(|&i| {
            (
                parties[i].node.node_id(),
                parties[i].node.presignatures_ready(key_id),
            )
        })
        .collect();
    (results, held)
}

#[test]
fn presign_abort_on_an_invalid_round2_proof_names_the_sender_as_culprit_at_every_honest_signer() {
    run(async {
        let ids = node_ids(4);
        // Signers 1, 3, 4 in that order: the cheater (node 3) is signer 1 but committee
        // member 2, so naming it proves cggmp21's index is read as a signer position.
        let (positions, byzantine) = ([0, 2, 3], 2);
        let cheater = ids[byzantine];
        let (results, _) = presign_with_byzantine(&positions, byzantine, bad_round2_proofs()).await;
        assert_eq!(results.len(), 2, "both honest signers ran");
        for (id, result) in &results {
            match result {
                Err(TssError::ProtocolAborted {
                    protocol: ProtocolKind::Presign,
                    culprits,
                    reason,
                }) => {
                    assert_eq!(
                        culprits,
                        &vec![cheater],
                        "{id} names the cheater only ({reason})"
                    );
                    assert!(reason.contains("ψ"), "an invalid ψ proof: {reason}");
                }
                other => panic!("{id} must abort naming {cheater}, got {other:?}"),
            }
        }
    });
}

type AuxMsg =
    cggmp21::key_refresh::msg::aux_only::Msg<Sha256, cggmp21::security_level::SecurityLevel128>;

/// The aux-info message in `payload`, if it is one (large frames are never decoded).
fn aux_msg(payload: &[u8]) -> Option<AuxMsg> {
    if payload.is_empty() || payload.len() > 256 * 1024 {
        return None;
    }
    decode_message(NodeId::from_bytes([0; 32]), payload).ok()
}

/// Node `id` on `network`: if it is `byzantine`, its messages go through `rule`.
fn node_sending_through(
    network: &transport::InMemoryNetwork,
    id: NodeId,
    byzantine: NodeId,
    rule: &TamperRule,
) -> Arc<TssNode> {
    if id != byzantine {
        return nodes(network, &[id]).remove(0);
    }
    byzantine_node(network, id, rule)
}

/// Node `id` on `network`, its messages going through `rule`.
fn byzantine_node(
    network: &transport::InMemoryNetwork,
    id: NodeId,
    rule: &TamperRule,
) -> Arc<TssNode> {
    Arc::new(
        TssNode::new(Arc::new(TamperingTransport::new(
            network.endpoint(id),
            rule.clone(),
        )))
        .with_identity(signer_for(&id))
        .unwrap()
        .with_idle_timeout(Duration::from_secs(300)),
    )
}

/// Aux-info of a committee of `ids` (threshold 2), `byzantine` sending through `rule`.
/// Returns every honest member's result (the Byzantine one's run is abandoned).
async fn aux_info_with_byzantine(
    ids: &[NodeId],
    byzantine: NodeId,
    rule: TamperRule,
) -> HashMap<NodeId, TssResult<()>> {
    let committee = tss_core::Committee::new(ids.to_vec(), 2).unwrap();
    let network = transport::InMemoryNetwork::new();
    let key_id = tss_core::KeyId::new("aux-culprits").unwrap();
    let eid = fresh_eid(ProtocolKind::AuxInfo, &key_id, ids);
    let mut tasks = Vec::new();
    for id in ids {
        let node = node_sending_through(&network, *id, byzantine, &rule);
        let committee = committee.clone();
        let id = *id;
        tasks.push((
            id,
            tokio::spawn(async move {
                node.aux_info(&committee, eid, primes_for(&id))
                    .await
                    .map(drop)
            }),
        ));
    }
    let mut results = HashMap::new();
    for (id, task) in tasks {
        if id == byzantine {
            task.abort();
        } else {
            results.insert(id, task.await.unwrap());
        }
    }
    results
}

#[test]
fn aux_info_abort_on_a_bad_decommitment_names_the_sender_as_culprit_at_every_honest_member() {
    run(async {
        let ids = node_ids(3);
        let cheater = ids[1];
        // Round 2 (broadcast, the same to everyone, so the round-1 reliability check
        // passes): one bit of the decommitment flipped. The message still decodes, but no
        // longer opens the sender's round-1 commitment: cggmp21 aborts with
        // InvalidDecommitment blaming the sender.
        let rule: TamperRule = Arc::new(move |_, _, kind, payload| {
            let msg = (payload.len() <= 256 * 1024 && !payload.is_empty())
                .then(|| decode_message::<AuxMsg>(NodeId::from_bytes([0; 32]), payload).ok())
                .flatten();
            match (msg, kind) {
                (Some(AuxMsg::Round2(mut msg)), DeliveryKind::Broadcast) => {
                    msg.decommit.as_mut()[0] ^= 1;
                    Tamper::Replace(vec![encode_message(&AuxMsg::Round2(msg)).unwrap()])
                }
                _ => Tamper::Pass,
            }
        });
        let results = aux_info_with_byzantine(&ids, cheater, rule).await;
        assert_eq!(results.len(), 2, "both honest members ran");
        for (id, result) in &results {
            match result {
                Err(TssError::ProtocolAborted {
                    protocol: ProtocolKind::AuxInfo,
                    culprits,
                    reason,
                }) => {
                    assert_eq!(
                        culprits,
                        &vec![cheater],
                        "{id} names the cheater only ({reason})"
                    );
                    assert!(
                        reason.contains("decommitment"),
                        "a bad decommitment: {reason}"
                    );
                }
                other => panic!("{id} must abort naming {cheater}, got {other:?}"),
            }
        }
    });
}

/// A 2-of-3 pool of `PoolNode`s on the keys of one keygen, node 2 (index 1) the
/// cheater: its round-2 signing messages carry proofs that do not verify. Node 1's
/// signer sets start with itself and node 2 (committee order), so in a first run node 1
/// is the one honest signer. Returns the nodes, their ids, the key and the cheater.
async fn pool_with_a_cheating_signer() -> (
    transport::InMemoryNetwork,
    Vec<PoolNode>,
    Vec<NodeId>,
    tss_core::KeyId,
    NodeId,
) {
    pool_with_a_byzantine_member(3, 2, bad_round2_proofs()).await
}

/// A `t`-of-`n` pool of `PoolNode`s on the keys of one keygen (each share active in its
/// node's store); node 2 (index 1) is Byzantine: every frame it sends passes through
/// `rule`. Returns the nodes, their ids, the key and the Byzantine member.
async fn pool_with_a_byzantine_member(
    n: u8,
    t: u16,
    rule: TamperRule,
) -> (
    transport::InMemoryNetwork,
    Vec<PoolNode>,
    Vec<NodeId>,
    tss_core::KeyId,
    NodeId,
) {
    let (network, parties) = pool(n, t).await;
    let ids = node_ids(n);
    let cheater = ids[1];
    let key_id = parties[0].share.key_id().clone();
    let mut nodes = Vec::new();
    for (i, party) in parties.iter().enumerate() {
        let id = ids[i];
        let store = Arc::new(MemoryShareStore::new());
        store.stage(&party.share, b"state").await.unwrap();
        store
            .activate(&key_id, party.share.generation(), b"state", None)
            .await
            .unwrap();
        let endpoint = network.endpoint(id);
        let transport: Arc<dyn transport::Transport> = if id == cheater {
            Arc::new(TamperingTransport::new(endpoint, rule.clone()))
        } else {
            Arc::new(endpoint)
        };
        let node = PoolNode::start(
            PoolConfig::new(ids.clone()).with_session_idle_timeout(Duration::from_secs(300)),
            transport,
            signer_for(&id),
            Arc::new(AcceptEverything),
            store,
            Arc::new(InsecureTestPrimes::new(i)),
            std::slice::from_ref(&key_id),
        )
        .await
        .unwrap();
        nodes.push(node);
    }
    (network, nodes, ids, key_id, cheater)
}

#[test]
fn a_pool_presign_aborted_by_an_invalid_proof_reports_the_culprit_in_its_run_finished_event() {
    run(async {
        let (_network, nodes, _ids, key_id, cheater) = pool_with_a_cheating_signer().await;
        let mut events = nodes[0].subscribe();
        let result = nodes[0].propose_presign(&key_id).await;
        match &result {
            Err(TssError::ProtocolAborted { culprits, .. }) => assert_eq!(culprits, &vec![cheater]),
            other => panic!("the proposer must abort naming {cheater}, got {other:?}"),
        }
        let finished = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                if let PoolEvent::RunFinished {
                    protocol: ProtocolKind::Presign,
                    culprits,
                    error,
                    ..
                } = events.recv().await.expect("event stream")
                {
                    return (culprits, error);
                }
            }
        })
        .await
        .expect("the run's end is reported");
        assert_eq!(
            finished.0,
            vec![cheater],
            "RunFinished names the cheater ({:?})",
            finished.1
        );
        for node in &nodes {
            node.shutdown();
        }
    });
}

#[test]
fn a_signer_convicted_of_an_invalid_proof_is_set_aside_and_the_honest_set_signs() {
    run(async {
        let (_network, nodes, ids, key_id, cheater) = pool_with_a_cheating_signer().await;
        let mut events = nodes[0].subscribe();
        // First set: node 1 and the cheater; node 1's own checks convict it, so the
        // second attempt signs with node 1 and node 3.
        let out = nodes[0]
            .propose_sign(&key_id, b"L2 batch".to_vec(), None)
            .await
            .expect("the honest set signs");
        assert_eq!(out.attempts, 2, "one attempt with the cheater, one without");
        assert_eq!(out.skipped, vec![cheater]);
        assert_eq!(out.signers, vec![ids[0], ids[2]]);
        // Set aside for the backoff: the next request does not try it first.
        assert!(
            nodes[0]
                .unresponsive_members()
                .iter()
                .any(|(m, _)| *m == cheater),
            "the cheater is set aside"
        );
        let skipped = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                if let PoolEvent::SignerSkipped { member, reason, .. } =
                    events.recv().await.expect("event stream")
                {
                    return (member, reason);
                }
            }
        })
        .await
        .expect("the skip is reported");
        assert_eq!(skipped.0, cheater);
        assert!(skipped.1.contains("blamed"), "{}", skipped.1);
        for node in &nodes {
            node.shutdown();
        }
    });
}

/// Every result in `results` is a `protocol` abort whose reason contains `says` (cggmp21's
/// failed echo check) and that names no culprit.
fn assert_echo_check_failed_blaming_nobody<T: std::fmt::Debug>(
    results: &HashMap<NodeId, TssResult<T>>,
    protocol: ProtocolKind,
    says: &str,
) {
    for (id, result) in results {
        match result {
            Err(TssError::ProtocolAborted {
                protocol: p,
                culprits,
                reason,
            }) if *p == protocol => {
                assert!(culprits.is_empty(), "{id} blames nobody: {culprits:?}");
                assert!(
                    reason.contains(says),
                    "{id}: the echo check fails: {reason}"
                );
            }
            other => panic!("{id} must abort {protocol:?} on the failed echo check, got {other:?}"),
        }
    }
}

/// Signing round 1a (a broadcast cggmp21 checks for reliability) sent to `victim` with
/// K and G swapped: both are valid Paillier ciphertexts of the sender, so the message
/// decodes and is well formed, but `victim` holds a different round-1a message from the
/// sender than every other signer does. Only the echo (reliability check) can see it.
fn equivocating_round1a_to(victim: NodeId) -> TamperRule {
    Arc::new(
        move |_, to, kind, payload| match (signing_msg(payload), kind) {
            (Some(Msg::Round1a(mut msg)), DeliveryKind::Broadcast) if to == victim => {
                std::mem::swap(&mut msg.K, &mut msg.G);
                Tamper::Replace(vec![encode_message(&SigningMsg::Round1a(msg)).unwrap()])
            }
            _ => Tamper::Pass,
        },
    )
}

#[test]
fn an_equivocating_round1_broadcast_aborts_every_honest_signer_blaming_nobody_and_keeping_nothing()
{
    run(async {
        // Signers 1, 2, 3 of the 3-of-4 pool; node 2 sends node 3 another round-1a
        // message than node 1.
        let ids = node_ids(4);
        let (positions, byzantine, victim) = ([0, 1, 2], 1, ids[2]);
        let (results, held) =
            presign_with_byzantine(&positions, byzantine, equivocating_round1a_to(victim)).await;
        assert_eq!(results.len(), 2, "both honest signers ran");
        // Each honest signer's echo check fails. Neither can tell whether node 2
        // equivocated or the other honest signer echoed a lie, so each names nobody
        // (never the other honest signer).
        assert_echo_check_failed_blaming_nobody(
            &results,
            ProtocolKind::Presign,
            "different broadcast messages",
        );
        // Neither keeps a part of the failed presignature.
        assert_eq!(held.len(), 2);
        for (id, held) in &held {
            assert_eq!(*held, 0, "{id} holds no presignature of the failed run");
        }
    });
}

#[test]
fn an_equivocating_aux_info_commitment_aborts_every_honest_member_blaming_nobody() {
    run(async {
        // Node 2 sends node 3 another round-1 commitment (one bit flipped: still a
        // well-formed hash) than node 1.
        let ids = node_ids(3);
        let (byzantine, victim) = (ids[1], ids[2]);
        let rule: TamperRule =
            Arc::new(move |_, to, kind, payload| match (aux_msg(payload), kind) {
                (Some(AuxMsg::Round1(mut msg)), DeliveryKind::Broadcast) if to == victim => {
                    msg.commitment[0] ^= 1;
                    Tamper::Replace(vec![encode_message(&AuxMsg::Round1(msg)).unwrap()])
                }
                _ => Tamper::Pass,
            });
        let results = aux_info_with_byzantine(&ids, byzantine, rule).await;
        assert_eq!(results.len(), 2, "both honest members ran");
        // cggmp21's own text names the party whose echo differs (the honest victim, as
        // seen from the other honest member): the culprit list does not take it for the
        // culprit.
        assert_echo_check_failed_blaming_nobody(
            &results,
            ProtocolKind::AuxInfo,
            "round 1 was not reliable",
        );
    });
}

type KeygenMsg =
    cggmp21::keygen::ThresholdMsg<Secp256k1, cggmp21::security_level::SecurityLevel128, Sha256>;

#[test]
fn an_equivocating_keygen_commitment_aborts_every_honest_member_blaming_nobody_and_keeping_no_share(
) {
    run(async {
        // Distributed key generation, 2-of-3: node 2 sends node 3 another round-1
        // commitment (one bit flipped: still a well-formed hash) than node 1. Only the
        // echo (reliability) check can see it.
        let ids = node_ids(3);
        let (byzantine, victim) = (ids[1], ids[2]);
        let rule: TamperRule = Arc::new(move |_, to, kind, payload| {
            let msg = (payload.len() <= 256 * 1024)
                .then(|| decode_message::<KeygenMsg>(NodeId::from_bytes([0; 32]), payload).ok())
                .flatten();
            match (msg, kind) {
                (Some(KeygenMsg::Round1(mut msg)), DeliveryKind::Broadcast) if to == victim => {
                    msg.commitment[0] ^= 1;
                    Tamper::Replace(vec![encode_message(&KeygenMsg::Round1(msg)).unwrap()])
                }
                _ => Tamper::Pass,
            }
        });
        let committee = tss_core::Committee::new(ids.clone(), 2).unwrap();
        let network = transport::InMemoryNetwork::new();
        let key_id = tss_core::KeyId::new("keygen-equivocation").unwrap();
        let eid = fresh_eid(ProtocolKind::Keygen, &key_id, &ids);
        let mut tasks = Vec::new();
        for id in &ids {
            let node = node_sending_through(&network, *id, byzantine, &rule);
            let (committee, key_id, id) = (committee.clone(), key_id.clone(), *id);
            tasks.push((
                id,
                tokio::spawn(
                    async move { node.keygen(key_id, committee, eid, primes_for(&id)).await },
                ),
            ));
        }
        let mut results = HashMap::new();
        for (id, task) in tasks {
            if id == byzantine {
                task.abort();
            } else {
                // No share: the result is an error (checked below), never a key.
                results.insert(id, task.await.unwrap().map(drop));
            }
        }
        assert_eq!(results.len(), 2, "both honest members ran");
        assert_echo_check_failed_blaming_nobody(
            &results,
            ProtocolKind::Keygen,
            "round1 wasn't reliable",
        );
    });
}

#[test]
fn a_signer_that_convicts_another_puts_both_in_a_dispute_and_neither_is_set_aside() {
    run(async {
        // 3-of-5. Node 1 proposes to nodes 1, 2 and 3 (committee order); node 2 sends bad
        // round-2 proofs to node 3 only, so node 1 sees nothing wrong and node 3 convicts
        // node 2 and aborts, blaming it. Node 1 cannot check the claim: it signs this
        // request without either of them (nodes 1, 4, 5), and sets neither aside.
        let ids = node_ids(5);
        let reporter = ids[2];
        let (_network, nodes, ids, key_id, cheater) =
            pool_with_a_byzantine_member(5, 3, bad_round2_proofs_to(Some(reporter))).await;
        let mut events = nodes[0].subscribe();
        let out = nodes[0]
            .propose_sign(&key_id, b"L2 batch".to_vec(), None)
            .await
            .expect("a set without either side of the dispute signs");
        assert_eq!(out.attempts, 2, "one attempt with the dispute, one without");
        assert_eq!(out.signers, vec![ids[0], ids[3], ids[4]]);
        let mut skipped = out.skipped.clone();
        skipped.sort();
        let mut sides = vec![cheater, reporter];
        sides.sort();
        assert_eq!(skipped, sides, "both sides are skipped for this request");
        assert!(
            nodes[0].unresponsive_members().is_empty(),
            "neither side is set aside on an unverifiable claim: {:?}",
            nodes[0].unresponsive_members()
        );
        let mut reported = Vec::new();
        while reported.len() < 2 {
            let event = tokio::time::timeout(Duration::from_secs(60), events.recv())
                .await
                .expect("the skips are reported")
                .expect("event stream");
            if let PoolEvent::SignerSkipped { member, reason, .. } = event {
                assert!(reason.starts_with("in a dispute"), "{reason}");
                reported.push(member);
            }
        }
        reported.sort();
        assert_eq!(reported, sides);
        for node in &nodes {
            node.shutdown();
        }
    });
}
