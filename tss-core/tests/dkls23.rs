//! DKLs23 (the second protocol): keygen and full signing over the in-memory transport,
//! the Ethereum output checked independently, shares tagged with their protocol, and the
//! parties that lie about who they are or equivocate a broadcast.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use k256::ecdsa::signature::hazmat::PrehashVerifier;
use transport::{DeliveryKind, InMemoryNetwork, NodeId, Tamper, TamperingTransport};
use tss_core::{
    keccak256, Committee, ExecutionId, KeyId, KeyShare, Protocol, ProtocolKind, TssError, TssNode,
};

type Signing = tokio::task::JoinHandle<tss_core::Result<tss_core::EthSignature>>;

/// Every signer in `signers` (positions in `nodes`/`shares`) signs `digest`.
async fn dkls23_sign(
    nodes: &[Arc<TssNode>],
    shares: &Arc<Vec<KeyShare>>,
    signers: &[usize],
    digest: [u8; 32],
) -> Vec<tss_core::Result<tss_core::EthSignature>> {
    let mut out = Vec::new();
    for run in start_signing(nodes, shares, signers, digest) {
        out.push(run.await.expect("signing task"));
    }
    out
}

/// Starts the signing of `digest` at every signer in `signers`.
fn start_signing(
    nodes: &[Arc<TssNode>],
    shares: &Arc<Vec<KeyShare>>,
    signers: &[usize],
    digest: [u8; 32],
) -> Vec<Signing> {
    let ids: Vec<NodeId> = signers.iter().map(|&k| nodes[k].node_id()).collect();
    let eid = ExecutionId::random(
        ProtocolKind::Sign,
        shares[0].key_id(),
        &ids,
        &mut rand::thread_rng(),
    );
    signers
        .iter()
        .map(|&k| {
            let (node, shares, ids) = (nodes[k].clone(), shares.clone(), ids.clone());
            tokio::spawn(async move { node.sign(&shares[k], &ids, digest, eid).await })
        })
        .collect()
}

/// What an L1 contract does (recover the address) and what k256 does (verify (r, s)
/// against the public key), both outside the `dkls23` crate.
fn assert_valid_for(share: &KeyShare, digest: &[u8; 32], sig: &tss_core::EthSignature) {
    assert_eq!(
        sig.recover_address(digest).unwrap(),
        share.ethereum_address()
    );
    let k256_sig = k256::ecdsa::Signature::from_scalars(sig.r, sig.s).unwrap();
    assert!(k256_sig.normalize_s().is_none(), "s must be low");
    share
        .public_key()
        .verify_prehash(digest, &k256_sig)
        .expect("k256 verifies the signature");
}

async fn keygen_then_every_signer_set_signs(n: u8, t: u16) {
    let network = InMemoryNetwork::new();
    let ids = node_ids(n);
    let nodes = nodes(&network, &ids);
    let committee = Committee::new(ids.clone(), t).unwrap();
    let shares = dkls23_keygen(&nodes, &committee, &format!("dkls-{t}-of-{n}")).await;
    let address = shares[0].ethereum_address();
    for s in &shares {
        assert_eq!(s.ethereum_address(), address, "all shares name one key");
        assert_eq!(s.protocol(), Protocol::Dkls23);
    }
    let shares = Arc::new(shares);
    // The first t members, and the last t: two signer sets with different Lagrange
    // coefficients and different pairwise OT state.
    let t = usize::from(t);
    let n = usize::from(n);
    for signers in [(0..t).collect::<Vec<_>>(), (n - t..n).collect()] {
        let digest = keccak256(format!("L2 batch signed by {signers:?}").as_bytes());
        let sigs = dkls23_sign(&nodes, &shares, &signers, digest).await;
        assert_eq!(sigs.len(), t);
        for sig in &sigs {
            assert_valid_for(&shares[0], &digest, sig.as_ref().expect("signing"));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dkls23_two_of_three_keygen_and_signing_recover_the_keys_ethereum_address() {
    keygen_then_every_signer_set_signs(3, 2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dkls23_three_of_five_keygen_and_signing_recover_the_keys_ethereum_address() {
    keygen_then_every_signer_set_signs(5, 3).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dkls23_share_survives_its_sealed_bytes_and_is_refused_as_a_cggmp21_share() {
    let network = InMemoryNetwork::new();
    let ids = node_ids(3);
    let nodes = nodes(&network, &ids);
    let committee = Committee::new(ids.clone(), 2).unwrap();
    let shares = dkls23_keygen(&nodes, &committee, "sealed").await;
    let restored: Vec<KeyShare> = shares
        .iter()
        .map(|s| {
            KeyShare::from_secret_bytes_of(&s.to_secret_bytes().unwrap(), Protocol::Dkls23).unwrap()
        })
        .collect();
    assert_eq!(restored[1].ethereum_address(), shares[1].ethereum_address());
    assert_eq!(restored[1].local_node(), ids[1]);
    // The restored shares still sign.
    let restored = Arc::new(restored);
    let digest = keccak256(b"after a restart");
    for sig in dkls23_sign(&nodes, &restored, &[0, 2], digest).await {
        assert_valid_for(&restored[0], &digest, sig.as_ref().expect("signing"));
    }
    // Debug shows no secret.
    let debug = format!("{:?}", shares[0]);
    assert!(
        debug.contains("REDACTED") && !debug.contains("poly_point"),
        "{debug}"
    );

    // Decoded as the other protocol's share, either way round: refused, naming both.
    let bytes = shares[0].to_secret_bytes().unwrap();
    match KeyShare::from_secret_bytes_of(&bytes, Protocol::Cggmp21) {
        Err(TssError::ProtocolMismatch { expected, found }) => {
            assert_eq!(expected, Protocol::Cggmp21);
            assert_eq!(found, "dkls23");
        }
        other => panic!("a DKLs23 share decoded as CGGMP21: {other:?}"),
    }
    // Decoded without an expectation, it is what its bytes name.
    assert_eq!(
        KeyShare::from_secret_bytes(&bytes).unwrap().protocol(),
        Protocol::Dkls23
    );
    // A share whose own public share is not its secret's is refused.
    let mut json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    json["public_shares"][0] = json["public_shares"][1].clone();
    assert!(matches!(
        KeyShare::from_secret_bytes(&serde_json::to_vec(&json).unwrap()),
        Err(TssError::InvalidKeyShare(_))
    ));
    // A share that names another node's place is refused too.
    let mut json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    json["local"] = serde_json::to_value(ids[2]).unwrap();
    assert!(matches!(
        KeyShare::from_secret_bytes_of(&serde_json::to_vec(&json).unwrap(), Protocol::Dkls23),
        Err(TssError::InvalidKeyShare(_))
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cggmp21_share_is_refused_as_a_dkls23_share() {
    let pool = shared_2_of_3().await;
    let bytes = pool.parties[0].share.to_secret_bytes().unwrap();
    match KeyShare::from_secret_bytes_of(&bytes, Protocol::Dkls23) {
        Err(TssError::ProtocolMismatch { expected, found }) => {
            assert_eq!(expected, Protocol::Dkls23);
            assert_eq!(found, "cggmp21");
        }
        other => panic!("a CGGMP21 share decoded as DKLs23: {other:?}"),
    }
    // Shares sealed before protocols were recorded (no `protocol` field) are CGGMP21's.
    let mut json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    json.as_object_mut().unwrap().remove("protocol");
    let old = serde_json::to_vec(&json).unwrap();
    assert_eq!(
        KeyShare::from_secret_bytes(&old).unwrap().protocol(),
        Protocol::Cggmp21
    );
    assert!(matches!(
        KeyShare::from_secret_bytes_of(&old, Protocol::Dkls23),
        Err(TssError::ProtocolMismatch { .. })
    ));
}

/// Offset of a DKLs23 frame's `direct` bytes: postcard of `Frame::Round { round,
/// direct, broadcast }` is the variant (0), the round, the length of `direct` (LEB128),
/// then `direct`.
fn direct_offset(frame: &[u8]) -> usize {
    let mut at = 2;
    while frame[at] & 0x80 != 0 {
        at += 1;
    }
    at + 1
}

/// Signers 1 and 2 of a 3-of-3 key sign honestly; signer 3 runs the honest code behind
/// `rule`. Returns the two honest signers' results (signer 3's run is stopped then: it
/// may wait for messages the honest ones, having aborted, never send).
async fn sign_beside_a_tampering_signer(
    rule: transport::TamperRule,
) -> Vec<tss_core::Result<tss_core::EthSignature>> {
    let network = InMemoryNetwork::new();
    let ids = node_ids(3);
    let honest = nodes(&network, &ids);
    let committee = Committee::new(ids.clone(), 3).unwrap();
    let shares = Arc::new(dkls23_keygen(&honest, &committee, "byzantine").await);
    let mut signers = honest.clone();
    signers[2] = Arc::new(
        TssNode::new(Arc::new(TamperingTransport::new(
            network.endpoint(ids[2]),
            rule,
        )))
        .with_identity(signer_for(&ids[2]))
        .unwrap()
        .with_idle_timeout(std::time::Duration::from_secs(300)),
    );
    drop(honest);
    let digest = keccak256(b"tampered");
    let mut runs = start_signing(&signers, &shares, &[0, 1, 2], digest);
    let byzantine = runs.pop().unwrap();
    let mut results = Vec::new();
    for run in runs {
        results.push(run.await.expect("signing task"));
    }
    byzantine.abort();
    results
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signer_claiming_another_parties_index_in_its_message_is_blamed_by_the_transports_identity(
) {
    let liar = node_ids(3)[2];
    // Signer 3 writes party 1's index as the sender of its round-1 messages.
    let rule: transport::TamperRule = Arc::new(move |_, _, _, payload: &[u8]| {
        if payload.len() > 4 && payload[0] == 0 && payload[1] == 1 {
            let mut forged = payload.to_vec();
            let at = direct_offset(&forged);
            forged[at] = 1;
            Tamper::Replace(vec![forged])
        } else {
            Tamper::Pass
        }
    });
    for result in sign_beside_a_tampering_signer(rule).await {
        match result {
            Err(TssError::Misbehaviour {
                culprits, reason, ..
            }) => {
                assert_eq!(culprits, vec![liar], "{reason}");
                assert!(reason.contains("claiming to be from party 1"), "{reason}");
            }
            other => panic!("an honest signer accepted a forged sender: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signer_equivocating_its_round_3_broadcast_aborts_every_honest_signer_by_the_echo_check()
{
    let victim = node_ids(3)[0];
    // Signer 3 sends signer 1 another (u, w) than signer 2 in round 3.
    let rule: transport::TamperRule = Arc::new(move |_, to, kind, payload: &[u8]| {
        if kind == DeliveryKind::Direct
            && to == victim
            && payload.len() > 4
            && payload[0] == 0
            && payload[1] == 3
        {
            let mut forged = payload.to_vec();
            let last = forged.len() - 1;
            forged[last] ^= 1;
            Tamper::Replace(vec![forged])
        } else {
            Tamper::Pass
        }
    });
    for result in sign_beside_a_tampering_signer(rule).await {
        match result {
            Err(TssError::ProtocolAborted {
                culprits, reason, ..
            }) => {
                assert!(culprits.is_empty(), "{culprits:?}");
                assert!(reason.contains("echo check"), "{reason}");
            }
            other => panic!("an honest signer went on past an equivocated broadcast: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dkls23_signing_refuses_a_signer_set_that_is_not_the_threshold() {
    let network = InMemoryNetwork::new();
    let ids = node_ids(3);
    let nodes = nodes(&network, &ids);
    let committee = Committee::new(ids.clone(), 2).unwrap();
    let shares = dkls23_keygen(&nodes, &committee, "count").await;
    let eid = fresh_eid(ProtocolKind::Sign, shares[0].key_id(), &ids);
    let err = nodes[0]
        .sign(&shares[0], &ids, [7; 32], eid)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            TssError::WrongSignerCount {
                expected: 2,
                got: 3
            }
        ),
        "{err:?}"
    );
}

/// Nodes for `ids` with `idle` as their idle timeout; `slow` (a position) computes each
/// DKLs23 phase `delay` longer, as on a loaded machine.
fn nodes_with(
    network: &InMemoryNetwork,
    ids: &[NodeId],
    idle: Duration,
    slow: Option<(usize, Duration)>,
) -> Vec<Arc<TssNode>> {
    ids.iter()
        .enumerate()
        .map(|(k, id)| {
            let mut node = TssNode::new(Arc::new(network.endpoint(*id)))
                .with_identity(signer_for(id))
                .unwrap()
                .with_idle_timeout(idle);
            if let Some((at, delay)) = slow {
                if at == k {
                    node = node.with_dkls23_phase_delay(delay);
                }
            }
            Arc::new(node)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dkls23_keygen_whose_phases_take_longer_than_the_idle_timeout_still_finishes() {
    // The idle timeout counts silence: a party sends heartbeats while it computes, so a
    // member whose every phase takes twice the timeout does not make the others give up.
    let network = InMemoryNetwork::new();
    let ids = node_ids(3);
    let idle = Duration::from_secs(1);
    let nodes = nodes_with(&network, &ids, idle, Some((0, idle * 2)));
    let committee = Committee::new(ids.clone(), 2).unwrap();
    let shares = dkls23_keygen(&nodes, &committee, "slow-phases").await;
    assert!(shares
        .iter()
        .all(|s| s.ethereum_address() == shares[0].ethereum_address()));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_members_waiting_for_a_silent_one_time_out_instead_of_keeping_each_other_alive() {
    // Member 3 never starts (crashed). Members 1 and 2 wait for it; neither may keep the
    // other's session alive with heartbeats while only waiting.
    let network = InMemoryNetwork::new();
    let ids = node_ids(3);
    let nodes = nodes_with(&network, &ids, Duration::from_secs(1), None);
    let committee = Committee::new(ids.clone(), 2).unwrap();
    let key_id = KeyId::new("silent-member").unwrap();
    let eid = fresh_eid(ProtocolKind::Keygen, &key_id, &ids);
    let runs: Vec<_> = nodes[..2]
        .iter()
        .map(|node| {
            let (node, committee, key_id) = (node.clone(), committee.clone(), key_id.clone());
            tokio::spawn(async move { node.dkls23_keygen(key_id, committee, eid).await })
        })
        .collect();
    for run in runs {
        let result = tokio::time::timeout(Duration::from_secs(120), run)
            .await
            .expect("a member waiting for a silent one must time out, not hang")
            .unwrap();
        match result {
            Err(TssError::Transport(transport::TransportError::Timeout { silent, .. })) => {
                assert!(silent.contains(&ids[2]), "{silent:?}");
            }
            other => panic!("expected a timeout naming member 3, got {other:?}"),
        }
    }
}

/// The test's copy of a DKLs23 session frame (postcard is structural: the same shape
/// encodes the same bytes as tss-core's private one).
#[derive(serde::Serialize, serde::Deserialize)]
enum Frame {
    Round {
        round: u8,
        direct: Vec<u8>,
        broadcast: Vec<u8>,
    },
    Echo {
        round: u8,
        digest: [u8; 32],
    },
    Alive,
}

/// tss-core's echo digest of one round's broadcasts (see `Rounds::echo_digest`).
fn echo_digest(eid: &[u8; 32], round: u8, all: &BTreeMap<NodeId, Vec<u8>>) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"tss-core/dkls23/echo/v1\0");
    h.update(eid);
    h.update([round]);
    for (who, bytes) in all {
        h.update(who.as_bytes());
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    }
    h.finalize().into()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_revealing_another_proof_than_it_committed_to_is_blamed_in_keygen() {
    use dkls23::protocols::dkg::{BroadcastDerivationPhase3to4, ProofCommitment};
    type Reveal = (
        ProofCommitment<k256_dkls23::Secp256k1>,
        BroadcastDerivationPhase3to4,
    );
    // Member 3 changes its round-3 reveal the same way for everyone, and echoes the
    // digest of what the others received, so the echo check passes: what is left to catch
    // it is that the reveal no longer matches the hash it committed to in round 2.
    let network = InMemoryNetwork::new();
    let ids = node_ids(3);
    let cheat = ids[2];
    // Every member's round-3 broadcast as sent (member 3's as changed).
    let sent: Arc<Mutex<BTreeMap<NodeId, Vec<u8>>>> = Arc::default();
    let record = |me: NodeId, changes: bool| -> transport::TamperRule {
        let sent = sent.clone();
        Arc::new(move |session: transport::SessionId, _, _, payload: &[u8]| {
            match postcard::from_bytes::<Frame>(payload) {
                Ok(Frame::Round {
                    round: 3,
                    direct,
                    broadcast,
                }) => {
                    let broadcast = match changes {
                        false => broadcast,
                        true => {
                            let (mut proof, cc): Reveal = postcard::from_bytes(&broadcast).unwrap();
                            proof.commitment[0] ^= 1;
                            postcard::to_allocvec(&(proof, cc)).unwrap()
                        }
                    };
                    sent.lock().unwrap().insert(me, broadcast.clone());
                    let frame = Frame::Round {
                        round: 3,
                        direct,
                        broadcast,
                    };
                    Tamper::Replace(vec![postcard::to_allocvec(&frame).unwrap()])
                }
                Ok(Frame::Echo { round: 3, .. }) if changes => {
                    let digest = echo_digest(session.as_bytes(), 3, &sent.lock().unwrap());
                    let frame = Frame::Echo { round: 3, digest };
                    Tamper::Replace(vec![postcard::to_allocvec(&frame).unwrap()])
                }
                _ => Tamper::Pass,
            }
        })
    };
    let nodes: Vec<Arc<TssNode>> = ids
        .iter()
        .map(|id| {
            let rule = record(*id, *id == cheat);
            Arc::new(
                TssNode::new(Arc::new(TamperingTransport::new(
                    network.endpoint(*id),
                    rule,
                )))
                .with_identity(signer_for(id))
                .unwrap()
                .with_idle_timeout(Duration::from_secs(300)),
            )
        })
        .collect();
    let committee = Committee::new(ids.clone(), 2).unwrap();
    let key_id = KeyId::new("committed").unwrap();
    let eid = fresh_eid(ProtocolKind::Keygen, &key_id, &ids);
    let runs: Vec<_> = nodes
        .iter()
        .map(|node| {
            let (node, committee, key_id) = (node.clone(), committee.clone(), key_id.clone());
            tokio::spawn(async move { node.dkls23_keygen(key_id, committee, eid).await })
        })
        .collect();
    let mut runs = runs.into_iter();
    for run in runs.by_ref().take(2) {
        match run.await.unwrap() {
            Err(TssError::Misbehaviour {
                culprits, reason, ..
            }) => {
                assert_eq!(culprits, vec![cheat], "{reason}");
                assert!(reason.contains("round-2 commitment"), "{reason}");
            }
            other => panic!("an honest member accepted a changed reveal: {other:?}"),
        }
    }
    runs.next().unwrap().abort();
}
