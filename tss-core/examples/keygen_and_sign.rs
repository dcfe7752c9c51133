//! Keygen, presign, one-round signing and a reshare among in-process parties.
//!
//! `cargo run -p tss-core --example keygen_and_sign`
//!
//! Uses the public test primes so it runs in seconds; real nodes use `PrimePool`.

use std::sync::Arc;

use transport::{InMemoryNetwork, NodeId};
use tss_core::{
    keccak256, Committee, Ed25519Signer, ExecutionId, KeyId, KeyShare, PaillierPrimes,
    ProtocolKind, ReshareRequest, ReshareRole, TssNode,
};

const PRIMES: &str = include_str!("../test-data/insecure-test-primes.json");

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let primes = PaillierPrimes::list_from_json(PRIMES)?;
    let network = InMemoryNetwork::new();
    // Each node's id is the public key of its identity key, which signs its reshare
    // confirmations (libp2p nodes use their `Libp2pIdentity`).
    let identities: Vec<Ed25519Signer> =
        (1..=4).map(|i| Ed25519Signer::from_seed([i; 32])).collect();
    let ids: Vec<NodeId> = identities.iter().map(|i| i.node_id()).collect();
    let mut nodes: Vec<Arc<TssNode>> = Vec::new();
    for identity in identities {
        let endpoint = Arc::new(network.endpoint(identity.node_id()));
        nodes.push(Arc::new(
            TssNode::new(endpoint).with_identity(Arc::new(identity))?,
        ));
    }
    let mut rng = rand::thread_rng();

    // 1. Keygen: 2-of-3 among the first three nodes.
    let committee = Committee::new(ids[..3].to_vec(), 2)?;
    let key_id = KeyId::new("example-key")?;
    let eid = ExecutionId::random(ProtocolKind::Keygen, &key_id, committee.members(), &mut rng);
    let mut runs = Vec::new();
    for (k, node) in nodes[..3].iter().enumerate() {
        let (node, committee, key_id) = (node.clone(), committee.clone(), key_id.clone());
        let primes = primes[k].clone_fixture();
        runs.push(tokio::spawn(async move {
            node.keygen(key_id, committee, eid, primes).await
        }));
    }
    let mut shares: Vec<KeyShare> = Vec::new();
    for run in runs {
        shares.push(run.await??);
    }
    let address = shares[0].ethereum_address();
    println!("keygen done: 2-of-3 key, address {address}");

    // 2. Presign with nodes 1 and 2, then sign a batch in one round. With a presignature
    //    the signers are given the batch bytes, never a digest: each computes keccak256
    //    itself (RUSTSEC-2025-0127).
    let signers = ids[..2].to_vec();
    let shares = Arc::new(shares);
    let presig_eid = ExecutionId::random(ProtocolKind::Presign, &key_id, &signers, &mut rng);
    let mut runs = Vec::new();
    for k in 0..2 {
        let (node, shares, signers) = (nodes[k].clone(), shares.clone(), signers.clone());
        runs.push(tokio::spawn(async move {
            node.presign(&shares[k], &signers, presig_eid).await
        }));
    }
    for run in runs {
        run.await??;
    }
    let batch: &[u8] = b"L2 batch 1";
    let digest = keccak256(batch);
    let mut runs = Vec::new();
    for node in &nodes[..2] {
        let (node, key_id) = (node.clone(), key_id.clone());
        runs.push(tokio::spawn(async move {
            node.sign_with_presignature(&key_id, presig_eid, batch)
                .await
        }));
    }
    for run in runs {
        let sig = run.await??;
        println!(
            "signed: r=0x{} s=0x{} v={} -> recovers {}",
            hex::encode(sig.r),
            hex::encode(sig.s),
            sig.v,
            sig.recover_address(&digest)?
        );
    }

    // 3. Node 4 joins: reshare 2-of-3 -> 3-of-4, same address.
    let new_committee = Committee::two_thirds(ids.clone())?;
    let request = ReshareRequest {
        new_generation: shares[0].public_info().generation.next(),
        old: shares[0].public_info(),
        dealers: ids[..2].to_vec(),
        new_committee,
        eid: ExecutionId::random(ProtocolKind::Reshare, &key_id, &ids, &mut rng),
    };
    let mut runs = Vec::new();
    for (k, node) in nodes.iter().enumerate() {
        let (node, shares, request) = (node.clone(), shares.clone(), request.clone());
        let primes = primes[k].clone_fixture();
        runs.push(tokio::spawn(async move {
            // Nodes 0 and 1 deal and stay; node 2 stays; node 3 joins.
            let role = match k {
                0 | 1 => ReshareRole::DealerAndNewMember {
                    old_share: &shares[k],
                    primes: Some(primes),
                },
                _ => ReshareRole::NewMember {
                    primes: Some(primes),
                },
            };
            let staged = node.reshare(&request, role).await?;
            if let Some(_share) = staged.new_share() {
                // A real node seals `_share.to_secret_bytes()` in its keystore here, as a
                // pending generation, before it confirms.
            }
            staged.confirm().await
        }));
    }
    for run in runs {
        let outcome = run.await??;
        if let Some(share) = &outcome.new_share {
            println!(
                "reshared: {} now holds generation {} of {} (retire old share: {})",
                share.local_node(),
                share.generation(),
                share.ethereum_address(),
                outcome.may_retire_old_share()
            );
            assert_eq!(share.ethereum_address(), address);
        }
    }
    Ok(())
}
