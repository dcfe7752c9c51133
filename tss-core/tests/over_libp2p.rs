//! The MPC protocols over the real libp2p transport (TCP + noise + yamux on 127.0.0.1).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use transport::{Libp2pConfig, Libp2pIdentity, Libp2pTransport, NodeId};
use tss_core::{keccak256, Committee, KeyId, ProtocolKind, TssNode};

/// Starts `n` libp2p nodes that know each other; returns them with their TssNodes.
async fn libp2p_pool(n: u8) -> (Vec<Libp2pTransport>, Vec<Arc<TssNode>>) {
    let identities: Vec<Libp2pIdentity> = (1..=n)
        .map(|k| Libp2pIdentity::from_seed([k + 100; 32]).unwrap())
        .collect();
    let ids: Vec<NodeId> = identities.iter().map(|i| i.node_id()).collect();
    // Each node listens on a port the OS picks; then every node learns every address.
    let mut transports = Vec::new();
    for identity in &identities {
        let any_port = "/ip4/127.0.0.1/tcp/0".parse().unwrap();
        let config = Libp2pConfig::new(identity.clone(), any_port);
        transports.push(Libp2pTransport::start(config).await.unwrap());
    }
    let addrs: Vec<_> = transports
        .iter()
        .map(|t| t.listen_addrs().into_iter().next().unwrap())
        .collect();
    for t in &transports {
        for (id, addr) in ids.iter().zip(&addrs) {
            t.add_peer(*id, addr.clone()).unwrap();
        }
    }
    for t in &transports {
        t.wait_for_peers(&ids, Duration::from_secs(20))
            .await
            .unwrap();
    }
    let nodes = transports
        .iter()
        .map(|t| {
            Arc::new(TssNode::new(Arc::new(t.clone())).with_idle_timeout(Duration::from_secs(300)))
        })
        .collect();
    (transports, nodes)
}

#[tokio::test(flavor = "multi_thread")]
async fn five_nodes_run_keygen_and_3_of_5_signing_over_libp2p() {
    let (_transports, nodes) = libp2p_pool(5).await;
    let ids: Vec<NodeId> = nodes.iter().map(|n| n.node_id()).collect();
    let committee = Committee::new(ids.clone(), 3).unwrap();
    let key_id = KeyId::new("libp2p-key").unwrap();
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
            share: run.await.unwrap().expect("keygen over libp2p"),
        });
    }
    let address = parties[0].share.ethereum_address();
    let parties = Arc::new(parties);

    // One-round online signing after presigning, with two different signer sets.
    for signers in [[0usize, 1, 2], [2, 3, 4]] {
        let presig = presign(&parties, &signers).await;
        let batch = format!("batch signed by {signers:?}");
        let digest = keccak256(batch.as_bytes());
        for sig in sign_online(&parties, &signers, presig, batch.as_bytes()).await {
            assert_eq!(sig.unwrap().recover_address(&digest).unwrap(), address);
        }
    }

    // Ten concurrent full signing sessions on the one key.
    let mut batches = Vec::new();
    for b in 0..10u8 {
        let parties = parties.clone();
        batches.push(tokio::spawn(async move {
            let signers = [
                usize::from(b) % 5,
                (usize::from(b) + 1) % 5,
                (usize::from(b) + 3) % 5,
            ];
            let digest = keccak256(&[b]);
            (digest, sign_full(&parties, &signers, digest).await)
        }));
    }
    for batch in batches {
        let (digest, sigs) = batch.await.unwrap();
        for sig in sigs {
            assert_eq!(sig.unwrap().recover_address(&digest).unwrap(), address);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn five_nodes_run_dkls23_keygen_and_3_of_5_signing_over_libp2p() {
    let (_transports, nodes) = libp2p_pool(5).await;
    let ids: Vec<NodeId> = nodes.iter().map(|n| n.node_id()).collect();
    let committee = Committee::new(ids.clone(), 3).unwrap();
    let key_id = KeyId::new("libp2p-dkls23-key").unwrap();
    let eid = fresh_eid(ProtocolKind::Keygen, &key_id, &ids);
    let runs: Vec<_> = nodes
        .iter()
        .map(|node| {
            let (node, committee, key_id) = (node.clone(), committee.clone(), key_id.clone());
            tokio::spawn(async move { node.dkls23_keygen(key_id, committee, eid).await })
        })
        .collect();
    let mut shares = Vec::new();
    for run in runs {
        shares.push(run.await.unwrap().expect("DKLs23 keygen over libp2p"));
    }
    let shares = Arc::new(shares);
    let address = shares[0].ethereum_address();
    assert!(shares.iter().all(|s| s.ethereum_address() == address));

    // Two signings at once, by two different signer sets (sessions by execution id).
    let mut batches = Vec::new();
    for (k, signers) in [[0usize, 1, 2], [2, 3, 4]].into_iter().enumerate() {
        let digest = keccak256(format!("dkls23 batch {k}").as_bytes());
        let signer_ids: Vec<NodeId> = signers.iter().map(|&i| ids[i]).collect();
        let eid = fresh_eid(ProtocolKind::Sign, &key_id, &signer_ids);
        let runs: Vec<_> = signers
            .iter()
            .map(|&i| {
                let (node, shares, signer_ids) =
                    (nodes[i].clone(), shares.clone(), signer_ids.clone());
                tokio::spawn(async move { node.sign(&shares[i], &signer_ids, digest, eid).await })
            })
            .collect();
        batches.push((digest, runs));
    }
    for (digest, runs) in batches {
        for run in runs {
            let sig = run.await.unwrap().expect("DKLs23 signing over libp2p");
            assert_eq!(sig.recover_address(&digest).unwrap(), address);
        }
    }
}
