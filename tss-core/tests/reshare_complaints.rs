//! Verifiable complaints in the reshare: a complaint is judged by every party on its
//! evidence, so a false complaint convicts the complainer (not the honest dealer it
//! accuses), a dealer's signed bad share convicts the dealer, and a complaint nobody can
//! check (no valid share) names no culprit. Every honest party reaches the same verdicts.
//!
//! Needs features `insecure-test-primes` and `test-hooks` (dev-dependencies enable both).

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::*;
use transport::NodeId;
use tss_core::reshare::{
    ComplaintEvidence, ComplaintVerdict, FalseEvidence, Finding, ReshareFault,
};
use tss_core::{Committee, ProtocolKind, ReshareOutcome, ReshareRequest, TssError, TssNode};

type Stored = Arc<Mutex<HashMap<NodeId, Vec<u8>>>>;

/// A reshare of the binary's shared 2-of-3 key (nodes 1..=3, dealers 1 and 2) to nodes
/// 1..=4 with threshold 3, where `faulty` misbehaves as `fault` says. Returns the request,
/// every party's result, and the new shares that were stored.
async fn reshare_with_fault(
    faulty: NodeId,
    fault: ReshareFault,
) -> (
    ReshareRequest,
    HashMap<NodeId, tss_core::Result<ReshareOutcome>>,
    Stored,
) {
    let pool = shared_2_of_3().await;
    let old_info = pool.parties[0].share.public_info();
    let new_members = node_ids(4);
    let dealers = old_info.committee.members()[..2].to_vec();
    let mut all = dealers.clone();
    all.extend(new_members.iter().copied());
    let request = ReshareRequest {
        new_generation: old_info.generation.next(),
        old: old_info.clone(),
        dealers,
        new_committee: Committee::new(new_members, 3).unwrap(),
        eid: fresh_eid(ProtocolKind::Reshare, &old_info.key_id, &all),
    };
    pool.node(faulty).inject_reshare_fault(request.eid, fault);
    // Every participant's node exists before any run starts: a message sent to a node
    // not yet on the network would be lost.
    let nodes: Vec<(NodeId, Arc<TssNode>)> = request
        .participants()
        .into_iter()
        .map(|id| (id, pool.node(id)))
        .collect();
    let stored = Stored::default();
    let mut tasks = Vec::new();
    for (id, node) in nodes {
        let parties = Arc::clone(&pool.parties);
        let old = parties.iter().position(|p| p.node.node_id() == id);
        let request = request.clone();
        let is_new = request.new_committee.index_of(&id).is_some();
        let primes = is_new.then(|| primes_for(&id));
        let stored = stored.clone();
        tasks.push((
            id,
            tokio::spawn(async move {
                let old_share = old.map(|i| &parties[i].share);
                reshare_party(&node, &request, old_share, primes, |share| {
                    let bytes = share.to_secret_bytes()?;
                    stored.lock().unwrap().insert(id, bytes.to_vec());
                    Ok(())
                })
                .await
            }),
        ));
    }
    let mut results = HashMap::new();
    for (id, task) in tasks {
        results.insert(id, task.await.unwrap());
    }
    (request, results, stored)
}

/// Every party except `faulty` aborted with [`TssError::Misbehaviour`] naming exactly
/// `culprits`, with the same verdicts; returns them.
fn same_verdicts_everywhere(
    results: HashMap<NodeId, tss_core::Result<ReshareOutcome>>,
    faulty: NodeId,
    culprits: &[NodeId],
) -> Vec<ComplaintVerdict> {
    let mut seen: Option<Vec<ComplaintVerdict>> = None;
    for (id, result) in results {
        if id == faulty {
            assert!(result.is_err(), "the faulty party does not complete either");
            continue;
        }
        match result {
            Err(TssError::Misbehaviour {
                protocol: ProtocolKind::Reshare,
                culprits: blamed,
                evidence,
                ..
            }) => {
                assert_eq!(blamed, culprits, "{id} names the culprits");
                match &seen {
                    None => seen = Some(evidence),
                    Some(first) => assert_eq!(*first, evidence, "{id} reached other verdicts"),
                }
            }
            other => panic!("{id}: expected a misbehaviour abort, got {other:?}"),
        }
    }
    seen.expect("honest parties")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_false_complaint_against_an_honest_dealer_blames_the_complainer() {
    let pool = shared_2_of_3().await;
    let dealer = pool.parties[0].node.node_id();
    let joiner = node_id(4);
    // With a forged share (the signature does not cover it) and with the valid share it
    // received: either way the evidence convicts the joiner, never the honest dealer.
    for evidence in [FalseEvidence::ForgedShare, FalseEvidence::ValidShare] {
        let (request, results, stored) =
            reshare_with_fault(joiner, ReshareFault::FalseComplaint { dealer, evidence }).await;
        let verdicts = same_verdicts_everywhere(results, joiner, &[joiner]);
        assert_eq!(verdicts.len(), 1, "{verdicts:?}");
        let verdict = &verdicts[0];
        assert_eq!((verdict.complainer, verdict.dealer), (joiner, dealer));
        assert!(matches!(
            verdict.evidence,
            ComplaintEvidence::InvalidShare { .. }
        ));
        assert_eq!(verdict.finding, Finding::FalseComplaint);
        assert_eq!(verdict.rejudge(&request).unwrap(), Finding::FalseComplaint);
        // Nothing was stored, so every member keeps its old share as its active one.
        assert!(stored.lock().unwrap().is_empty(), "no new share is stored");
    }
    // The old generation still signs: the run changed nothing.
    let parties = Arc::clone(&pool.parties);
    let presig = presign(&parties, &[0, 1]).await;
    for sig in sign_online(&parties, &[0, 1], presig, b"after a false complaint").await {
        sig.expect("the old generation signs");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_false_commitments_complaint_blames_the_complainer() {
    let pool = shared_2_of_3().await;
    let dealer = pool.parties[1].node.node_id();
    let joiner = node_id(4);
    let (request, results, stored) = reshare_with_fault(
        joiner,
        ReshareFault::FalseComplaint {
            dealer,
            evidence: FalseEvidence::Commitments,
        },
    )
    .await;
    let verdicts = same_verdicts_everywhere(results, joiner, &[joiner]);
    assert_eq!(verdicts.len(), 1, "{verdicts:?}");
    assert_eq!(verdicts[0].finding, Finding::FalseComplaint);
    assert_eq!(
        verdicts[0].rejudge(&request).unwrap(),
        Finding::FalseComplaint
    );
    assert!(stored.lock().unwrap().is_empty(), "no new share is stored");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dealer_sending_a_bad_signed_share_is_blamed_with_evidence() {
    let pool = shared_2_of_3().await;
    let dealer = pool.parties[0].node.node_id();
    let victim = node_id(4);
    let (request, results, stored) =
        reshare_with_fault(dealer, ReshareFault::BadSignedShareTo(victim)).await;
    let verdicts = same_verdicts_everywhere(results, dealer, &[dealer]);
    assert_eq!(verdicts.len(), 1, "{verdicts:?}");
    let verdict = &verdicts[0];
    assert_eq!((verdict.complainer, verdict.dealer), (victim, dealer));
    assert!(matches!(
        verdict.evidence,
        ComplaintEvidence::InvalidShare { .. }
    ));
    assert_eq!(verdict.finding, Finding::DealerCheated);
    // The evidence stands on its own: anyone with the request convicts the dealer again.
    assert_eq!(verdict.rejudge(&request).unwrap(), Finding::DealerCheated);
    // ... and it is the dealer's signature: with another complainer it no longer verifies.
    let mut moved = verdict.clone();
    moved.complainer = node_id(3);
    assert_eq!(moved.rejudge(&request).unwrap(), Finding::FalseComplaint);
    // The share is evidence, yet never shown by Debug.
    let shown = format!("{verdict:?}");
    assert!(shown.contains("<redacted>"), "{shown}");
    assert!(stored.lock().unwrap().is_empty(), "no new share is stored");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dealer_with_bad_commitments_is_blamed_by_everyone() {
    let pool = shared_2_of_3().await;
    let dealer = pool.parties[1].node.node_id();
    let (request, results, stored) = reshare_with_fault(dealer, ReshareFault::BadCommitments).await;
    let verdicts = same_verdicts_everywhere(results, dealer, &[dealer]);
    // Every party complained (the dealer about itself too: it runs the honest checks).
    assert!(!verdicts.is_empty());
    for v in &verdicts {
        assert_eq!(v.dealer, dealer);
        assert_eq!(v.evidence, ComplaintEvidence::InvalidCommitments);
        assert_eq!(v.finding, Finding::DealerCheated);
        assert_eq!(v.rejudge(&request).unwrap(), Finding::DealerCheated);
    }
    assert!(stored.lock().unwrap().is_empty(), "no new share is stored");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_share_without_a_valid_signature_is_an_unresolved_complaint_naming_nobody() {
    let pool = shared_2_of_3().await;
    let dealer = pool.parties[0].node.node_id();
    let victim = node_id(4);
    let (request, results, stored) =
        reshare_with_fault(dealer, ReshareFault::UnsignedShareTo(victim)).await;
    // Neither side can prove its story: no culprit, both named in the verdict.
    let verdicts = same_verdicts_everywhere(results, dealer, &[]);
    assert_eq!(verdicts.len(), 1, "{verdicts:?}");
    assert_eq!(
        (verdicts[0].complainer, verdicts[0].dealer),
        (victim, dealer)
    );
    assert_eq!(verdicts[0].evidence, ComplaintEvidence::NoValidShare);
    assert_eq!(verdicts[0].finding, Finding::Unresolved);
    assert_eq!(verdicts[0].rejudge(&request).unwrap(), Finding::Unresolved);
    assert!(stored.lock().unwrap().is_empty(), "no new share is stored");
}
