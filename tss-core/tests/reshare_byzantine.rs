//! Byzantine parties in a reshare: a node that runs the honest code but whose messages a
//! test replaces on the wire ([`TamperingTransport`]) with well-formed, validly signed
//! payloads of its choosing, per recipient. Every honest party must abort naming the
//! culprit (and only the culprit), with evidence that re-checks, and store nothing.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cggmp21::generic_ec::{Point, Scalar};
use cggmp21::supported_curves::Secp256k1;
use common::*;
use transport::{DeliveryKind, NodeId, Tamper, TamperRule, TamperingTransport};
use tss_core::reshare::{
    commitments_signing_bytes, dealer_commitments_digest, share_signing_bytes, ComplaintEvidence,
    Finding, ReshareMsg, SignedCommitments,
};
use tss_core::wire::{decode_message, encode_message};
use tss_core::{Committee, ProtocolKind, ReshareRequest, Result as TssResult, TssError, TssNode};

type Stored = Arc<Mutex<HashMap<NodeId, Vec<u8>>>>;

/// The reshare message in `payload`, if it is one (large frames are never decoded).
fn reshare_msg(payload: &[u8]) -> Option<ReshareMsg> {
    if payload.len() > 64 * 1024 {
        return None;
    }
    decode_message(NodeId::from_bytes([0; 32]), payload).ok()
}

fn encode(msg: &ReshareMsg) -> Vec<u8> {
    encode_message(msg).unwrap()
}

/// A 2-of-3 pool (nodes 1..=3) reshared to the same committee by dealers 1 and 2; node
/// `byzantine` sends through `rule`. Returns every honest party's result (the Byzantine
/// one's run is abandoned, see [`run`]), the request and what was stored.
async fn reshare_with_byzantine(
    byzantine: NodeId,
    rule: TamperRule,
) -> (
    HashMap<NodeId, TssResult<tss_core::ReshareOutcome>>,
    ReshareRequest,
    Stored,
) {
    let (network, old) = pool(3, 2).await;
    let info = old[0].share.public_info();
    let request = ReshareRequest {
        new_generation: info.generation.next(),
        old: info.clone(),
        dealers: info.committee.members()[..2].to_vec(),
        new_committee: Committee::new(node_ids(3), 2).unwrap(),
        eid: fresh_eid(ProtocolKind::Reshare, &info.key_id, &node_ids(3)),
    };
    let stored = Stored::default();
    // Every node exists before any run starts: replacing an endpoint later would drop
    // the messages already sent to the old one.
    let mut nodes = Vec::new();
    for party in old {
        let id = party.node.node_id();
        let node = if id == byzantine {
            Arc::new(
                TssNode::new(Arc::new(TamperingTransport::new(
                    network.endpoint(id),
                    rule.clone(),
                )))
                .with_identity(signer_for(&id))
                .unwrap()
                .with_idle_timeout(Duration::from_secs(300)),
            )
        } else {
            party.node.clone()
        };
        nodes.push((id, node, party));
    }
    let mut tasks = Vec::new();
    for (id, node, party) in nodes {
        let request = request.clone();
        let stored = stored.clone();
        tasks.push((
            id,
            tokio::spawn(async move {
                let old_share = request.dealers.contains(&id).then_some(&party.share);
                reshare_party(&node, &request, old_share, Some(primes_for(&id)), |share| {
                    let bytes = share.to_secret_bytes()?;
                    stored.lock().unwrap().insert(id, bytes.to_vec());
                    Ok(())
                })
                .await
            }),
        ));
    }
    let mut results = HashMap::new();
    let mut byzantine_run = None;
    for (id, task) in tasks {
        if id == byzantine {
            byzantine_run = Some(task);
        } else {
            results.insert(id, task.await.unwrap());
        }
    }
    if let Some(task) = byzantine_run {
        task.abort();
    }
    (results, request, stored)
}

/// Every honest party aborted naming exactly `byzantine`; returns their errors' evidence.
fn assert_honest_parties_convict(
    results: &HashMap<NodeId, TssResult<tss_core::ReshareOutcome>>,
    byzantine: NodeId,
) -> Vec<tss_core::reshare::ComplaintVerdict> {
    let mut all_evidence = Vec::new();
    assert_eq!(results.len(), 2, "both honest parties ran");
    for (id, result) in results {
        match result {
            Err(TssError::Misbehaviour {
                culprits, evidence, ..
            }) => {
                assert_eq!(culprits, &vec![byzantine], "{id} convicts the culprit only");
                all_evidence.extend(evidence.iter().cloned());
            }
            other => panic!("{id} must abort naming {byzantine}, got {other:?}"),
        }
    }
    all_evidence
}

#[test]
fn dealer_signing_two_commitment_vectors_is_convicted_by_every_party_at_the_echo_round() {
    run(async {
        let ids = node_ids(3);
        let (cheater, victim) = (ids[0], ids[2]);
        // The victim gets other commitments (the top coefficient plus G), signed by the
        // dealer, and a share that matches them, signed too: its own checks all pass, only
        // the echo round can show the split.
        let altered = Arc::new(Mutex::new(None::<([u8; 32], [u8; 32])>));
        let rule: TamperRule = Arc::new(move |_, to, kind, payload| {
            if to != victim {
                return Tamper::Pass;
            }
            let signer = signer_for(&cheater);
            match (reshare_msg(payload), kind) {
                (
                    Some(ReshareMsg::Commitments {
                        context,
                        mut commitments,
                        ..
                    }),
                    DeliveryKind::Broadcast,
                ) => {
                    let top = commitments.len() - 1;
                    commitments[top] += Point::<Secp256k1>::generator().to_point();
                    let digest = dealer_commitments_digest(&cheater, &context, &commitments);
                    *altered.lock().unwrap() = Some((context, digest));
                    let signature = signer.sign(&commitments_signing_bytes(&context, &digest));
                    Tamper::Replace(vec![encode(&ReshareMsg::Commitments {
                        context,
                        commitments,
                        signature,
                    })])
                }
                (Some(ReshareMsg::Share { share, .. }), DeliveryKind::Direct) => {
                    // f'(x) = f(x) + x^(t'-1): the victim (index 2) evaluates at x = 3, t' = 2.
                    let (context, digest) = altered.lock().unwrap().expect("commitments go first");
                    let share = share + Scalar::<Secp256k1>::from(3u64);
                    let signature = signer.sign(&share_signing_bytes(
                        &context, &cheater, &victim, 2, &share, &digest,
                    ));
                    Tamper::Replace(vec![encode(&ReshareMsg::Share { share, signature })])
                }
                _ => Tamper::Pass,
            }
        });
        let (results, request, stored) = reshare_with_byzantine(cheater, rule).await;
        let evidence = assert_honest_parties_convict(&results, cheater);
        // The victim convicts the dealer too: it is never blamed for what it was shown.
        assert!(!evidence.is_empty());
        for verdict in &evidence {
            assert_eq!(verdict.dealer, cheater);
            assert_eq!(verdict.finding, Finding::DealerCheated);
            let ComplaintEvidence::Equivocation { first, second } = &verdict.evidence else {
                panic!("equivocation evidence, got {:?}", verdict.evidence);
            };
            assert_ne!(first.digest, second.digest);
            // Anyone holding the request can check the two signatures again.
            assert_eq!(verdict.rejudge(&request).unwrap(), Finding::DealerCheated);
        }
        assert!(stored.lock().unwrap().is_empty(), "no new share is stored");
    });
}

#[test]
fn member_echoing_commitments_its_dealer_never_signed_is_convicted() {
    run(async {
        let ids = node_ids(3);
        let liar = ids[2];
        // The liar echoes a different digest for dealer 1 under the dealer's real signature
        // (of the real digest): to make others believe in a split view it would need the
        // dealer to sign the other version.
        let rule: TamperRule = Arc::new(move |_, _, kind, payload| match reshare_msg(payload) {
            Some(ReshareMsg::Echo { mut views }) if kind == DeliveryKind::Broadcast => {
                views[0].digest = [7; 32];
                Tamper::Replace(vec![encode(&ReshareMsg::Echo { views })])
            }
            _ => Tamper::Pass,
        });
        let (results, _, stored) = reshare_with_byzantine(liar, rule).await;
        assert_honest_parties_convict(&results, liar);
        for (id, result) in &results {
            let reason = result.as_ref().unwrap_err().to_string();
            assert!(reason.contains("echo"), "{id}: {reason}");
        }
        assert!(stored.lock().unwrap().is_empty(), "no new share is stored");
    });
}

#[test]
fn member_forging_equivocation_evidence_against_an_honest_dealer_is_convicted() {
    run(async {
        let ids = node_ids(3);
        let (dealer, framer) = (ids[0], ids[1]);
        // Instead of its echo, the framer complains that dealer 1 signed two versions: the
        // real signed digest, and another digest under the same signature.
        let rule: TamperRule = Arc::new(move |_, _, kind, payload| match reshare_msg(payload) {
            Some(ReshareMsg::Echo { views }) if kind == DeliveryKind::Broadcast => {
                let first = views[0].clone();
                let second = SignedCommitments {
                    digest: [7; 32],
                    signature: first.signature.clone(),
                };
                Tamper::Replace(vec![encode(&ReshareMsg::Complaint {
                    views: Some(views),
                    dealer,
                    evidence: ComplaintEvidence::Equivocation { first, second },
                })])
            }
            _ => Tamper::Pass,
        });
        let (results, request, stored) = reshare_with_byzantine(framer, rule).await;
        let evidence = assert_honest_parties_convict(&results, framer);
        for verdict in &evidence {
            assert_eq!((verdict.complainer, verdict.dealer), (framer, dealer));
            assert_eq!(verdict.finding, Finding::FalseComplaint);
            assert_eq!(verdict.rejudge(&request).unwrap(), Finding::FalseComplaint);
        }
        assert!(!evidence.is_empty());
        assert!(stored.lock().unwrap().is_empty(), "no new share is stored");
    });
}
