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
