//! The MPC protocols over libp2p on real sockets through misbehaving TCP proxies
//! (`transport::proxy`): connections cut in the middle of a run, delay.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use transport::proxy::ProxiedNetwork;
use transport::{InMemoryNetwork, Libp2pConfig, Libp2pIdentity, NodeId};
use tss_core::{keccak256, Committee, KeyId, KeyShare, ProtocolKind, TssNode};

const WAIT: Duration = Duration::from_secs(30);

/// `n` libp2p nodes on 127.0.0.1, every link through its own proxy.
async fn proxied(seeds: &[u8]) -> ProxiedNetwork {
    let configs = seeds
        .iter()
        .map(|s| {
            let identity = Libp2pIdentity::from_seed([*s; 32]).unwrap();
            let mut c = Libp2pConfig::new(identity, "/ip4/127.0.0.1/tcp/0".parse().unwrap());
            c.redial_initial_backoff = Duration::from_millis(50);
            c.redial_max_backoff = Duration::from_millis(500);
            c
        })
        .collect();
    ProxiedNetwork::start(configs, WAIT).await.unwrap()
}

/// Keygen among `ids` in memory (the transport under test is not what this measures),
/// with the fixture primes by position.
async fn keygen_in_memory(ids: &[NodeId], t: u16, key: &str) -> Vec<KeyShare> {
    let network = InMemoryNetwork::new();
    let committee = Committee::new(ids.to_vec(), t).unwrap();
    let key_id = KeyId::new(key).unwrap();
    let eid = fresh_eid(ProtocolKind::Keygen, &key_id, ids);
    // Every endpoint exists before anyone sends.
    let nodes: Vec<TssNode> = ids
        .iter()
        .map(|id| TssNode::new(Arc::new(network.endpoint(*id))))
        .collect();
    let runs: Vec<_> = nodes
        .into_iter()
        .enumerate()
        .map(|(k, node)| {
            let (committee, key_id) = (committee.clone(), key_id.clone());
            tokio::spawn(async move { node.keygen(key_id, committee, eid, primes_at(k)).await })
        })
        .collect();
    let mut shares = Vec::new();
    for run in runs {
        shares.push(run.await.unwrap().expect("keygen"));
    }
    shares
}

/// Full interactive signing (several rounds) at 2-of-3 over libp2p, 30 ms one-way delay
/// on every link. While a protocol message is on the wire (held in a proxy's delay line),
/// every connection is cut and new ones are refused for a second, then allowed again. The run still
/// completes with a valid signature: the frames the cut destroyed are retransmitted.
/// (Before retransmission, frames handed to a dying stream were lost and such a run
/// ended in `TransportError::Timeout`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_mid_signing_and_restored_still_completes_the_run() {
    let net = proxied(&[201, 202, 203]).await;
    let ids = net.node_ids();
    let shares: Arc<Vec<KeyShare>> = Arc::new(keygen_in_memory(&ids, 2, "cut-mid-signing").await);
    let address = shares[0].ethereum_address();
    let nodes: Vec<Arc<TssNode>> = net
        .nodes
        .iter()
        .map(|t| {
            Arc::new(TssNode::new(Arc::new(t.clone())).with_idle_timeout(Duration::from_secs(60)))
        })
        .collect();
    net.set_delay(Duration::from_millis(30), Duration::from_millis(5));

    let signers = [0usize, 1];
    let signer_ids: Vec<NodeId> = signers.iter().map(|&i| ids[i]).collect();
    let digest = keccak256(b"a batch signed across a cut");
    let eid = fresh_eid(ProtocolKind::Sign, shares[0].key_id(), &signer_ids);
    let before = net.bytes_forwarded();
    let runs: Vec<_> = signers
        .iter()
        .map(|&i| {
            let (node, shares, signer_ids) = (nodes[i].clone(), shares.clone(), signer_ids.clone());
            tokio::spawn(async move { node.sign(&shares[i], &signer_ids, digest, eid).await })
        })
        .collect();

    // Cut while a protocol message (kilobytes of proofs; keepalive pings are tens of
    // bytes) is between two nodes.
    let deadline = tokio::time::Instant::now() + WAIT;
    while net.bytes_in_flight() < 2048 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "signing sent nothing"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(net.bytes_forwarded() >= before);
    for p in net.proxies() {
        p.set_refusing(true);
        p.cut_all();
    }
    assert!(
        runs.iter().all(|r| !r.is_finished()),
        "the cut must fall inside the run"
    );
    let mut events = net.nodes[0].connection_events();
    let deadline = tokio::time::Instant::now() + WAIT;
    while net.nodes[0].connection_state(&ids[1]) == transport::ConnectionState::Connected {
        let _ = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("the cut is noticed");
    }
    // Stay away for a second, then come back.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for p in net.proxies() {
        p.set_refusing(false);
    }

    for run in runs {
        let sig = tokio::time::timeout(Duration::from_secs(120), run)
            .await
            .expect("the run completes after the link is restored")
            .unwrap()
            .expect("signing succeeds");
        assert_eq!(sig.recover_address(&digest).unwrap(), address);
    }
    let refused: u64 = net.proxies().map(|p| p.connections_refused()).sum();
    let retransmitted: u64 = net
        .nodes
        .iter()
        .map(|n| n.stats().frames_retransmitted)
        .sum();
    eprintln!("connections refused while away: {refused}, frames retransmitted: {retransmitted}");
    assert!(
        retransmitted > 0,
        "the message the cut destroyed came again by retransmission"
    );
    net.shutdown().await;
}

/// The whole life of a key among five nodes over libp2p with 50 ms one-way delay (5 ms
/// jitter) on every link: keygen 3-of-5, presign + one-round online signing, a reshare
/// to four of them (3-of-4) and signing with the new shares; the address never changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_complete_keygen_presign_online_and_reshare_with_50ms_delay() {
    use tss_core::ReshareRequest;

    let seeds = [211u8, 212, 213, 214, 215];
    let net = proxied(&seeds).await;
    net.set_delay(Duration::from_millis(50), Duration::from_millis(5));
    let ids = net.node_ids();
    // Each node signs its reshare confirmations with its transport identity.
    let nodes: Vec<Arc<TssNode>> = net
        .nodes
        .iter()
        .zip(seeds)
        .map(|(t, seed)| {
            let identity = Libp2pIdentity::from_seed([seed; 32]).unwrap();
            Arc::new(
                TssNode::new(Arc::new(t.clone()))
                    .with_idle_timeout(Duration::from_secs(600))
                    .with_identity(Arc::new(identity))
                    .unwrap(),
            )
        })
        .collect();

    // Keygen 3-of-5.
    let committee = Committee::new(ids.clone(), 3).unwrap();
    let key_id = KeyId::new("five-with-delay").unwrap();
    let eid = fresh_eid(ProtocolKind::Keygen, &key_id, &ids);
    let runs: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(k, node)| {
            let (node, committee, key_id) = (node.clone(), committee.clone(), key_id.clone());
            tokio::spawn(async move { node.keygen(key_id, committee, eid, primes_at(k)).await })
        })
        .collect();
    let mut parties = Vec::new();
    for (node, run) in nodes.iter().zip(runs) {
        parties.push(Party {
            node: node.clone(),
            share: run.await.unwrap().expect("keygen with delay"),
        });
    }
    let address = parties[0].share.ethereum_address();
    let old_info = parties[0].share.public_info();
    let parties = Arc::new(parties);

    // Presign + online signing.
    let presig = presign(&parties, &[0, 2, 4]).await;
    let batch = b"batch 1, five nodes, 50 ms";
    for sig in sign_online(&parties, &[0, 2, 4], presig, batch).await {
        assert_eq!(
            sig.unwrap().recover_address(&keccak256(batch)).unwrap(),
            address
        );
    }

    // Reshare to nodes 0..4 (3-of-4), dealt by the first three old members.
    let new_members = ids[..4].to_vec();
    let new_committee = Committee::new(new_members.clone(), 3).unwrap();
    let dealers = ids[..3].to_vec();
    let mut all = dealers.clone();
    all.extend(new_members.iter().copied());
    let request = ReshareRequest {
        new_generation: old_info.generation.next(),
        old: old_info.clone(),
        dealers,
        new_committee: new_committee.clone(),
        eid: fresh_eid(ProtocolKind::Reshare, &old_info.key_id, &all),
    };
    let mut runs = Vec::new();
    for id in request.participants() {
        let k = ids.iter().position(|x| *x == id).unwrap();
        let (node, parties, request) = (nodes[k].clone(), parties.clone(), request.clone());
        let is_new = new_committee.index_of(&id).is_some();
        runs.push(tokio::spawn(async move {
            let old_share = request.dealers.contains(&id).then(|| &parties[k].share);
            let primes = is_new.then(|| primes_at(k + 5));
            let outcome = reshare_party(&node, &request, old_share, primes, store_nowhere).await;
            (k, outcome)
        }));
    }
    let mut new_parties = Vec::new();
    for run in runs {
        let (k, outcome) = run.await.unwrap();
        let outcome = outcome.expect("reshare with delay");
        assert!(outcome.may_retire_old_share());
        if let Some(share) = outcome.new_share {
            assert_eq!(
                share.ethereum_address(),
                address,
                "same address after reshare"
            );
            new_parties.push((k, share));
        }
    }
    new_parties.sort_by_key(|(k, _)| *k);
    assert_eq!(new_parties.len(), 4);
    let new_parties = Arc::new(
        new_parties
            .into_iter()
            .map(|(k, share)| Party {
                node: nodes[k].clone(),
                share,
            })
            .collect::<Vec<_>>(),
    );
    let presig = presign(&new_parties, &[1, 2, 3]).await;
    let batch = b"batch 2, after the reshare";
    for sig in sign_online(&new_parties, &[1, 2, 3], presig, batch).await {
        assert_eq!(
            sig.unwrap().recover_address(&keccak256(batch)).unwrap(),
            address
        );
    }
    net.shutdown().await;
}
