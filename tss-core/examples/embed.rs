//! What a rollup team's node embeds: a signing pool over libp2p with encrypted storage.
//!
//! Four nodes in one process (one per sequencer in real life) run keygen through the
//! pool layer, store their shares in the encrypted keystore, reload them, presign and
//! sign a message in one round, reshare to a fifth node (same address) and delete a key.
//!
//! `cargo run -p tss-core --example embed` (public insecure test primes: demo only).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use keystore::{AsyncKeystore, KdfParams, Unlock};
use transport::{Libp2pConfig, Libp2pIdentity, Libp2pTransport, NodeId, Transport};
use tss_core::pool::{
    KeygenProposal, PoolConfig, PoolEvent, PoolNode, ProposalValidator, Rejection, ReshareProposal,
    ShareStore, SignProposal, SigningInput,
};
use tss_core::{Committee, ExecutionId, InsecureTestPrimes, KeyId, ProtocolKind, PublicKeyInfo};

/// The team's rules. Here: accept, and sign the request bytes as the message (a real
/// validator checks the proposer, the batch and the committee against its own L1 view).
struct DemoRules;

#[async_trait]
impl ProposalValidator for DemoRules {
    async fn check_keygen(&self, _: NodeId, p: &KeygenProposal) -> Result<Vec<u8>, Rejection> {
        Ok(p.context.clone())
    }
    async fn check_sign(
        &self,
        _: NodeId,
        p: &SignProposal,
        _: &PublicKeyInfo,
    ) -> Result<SigningInput, Rejection> {
        Ok(SigningInput::Message(p.request.clone()))
    }
    async fn check_reshare(
        &self,
        _: NodeId,
        p: &ReshareProposal,
        _: Option<&PublicKeyInfo>,
    ) -> Result<Vec<u8>, Rejection> {
        Ok(p.context.clone())
    }
}

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Waits until the node committed a key generation.
async fn committed(events: &mut tokio::sync::broadcast::Receiver<PoolEvent>) {
    while let Ok(event) = events.recv().await {
        if matches!(event, PoolEvent::KeyCommitted { .. }) {
            return;
        }
    }
}

async fn open_store(dir: &std::path::Path, k: usize) -> Result<AsyncKeystore, Error> {
    let unlock = Unlock::passphrase(format!("demo passphrase {k}").as_str());
    let path = dir.join(format!("node-{k}"));
    Ok(AsyncKeystore::open_with_kdf(path, unlock, KdfParams::insecure_for_tests()).await?)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let key = KeyId::new("batch-submitter")?;
    // Five libp2p nodes on 127.0.0.1 (ports picked by the OS), each knowing the others.
    let mut transports = Vec::new();
    let mut identities = Vec::new();
    for k in 1..=5u8 {
        let identity = Libp2pIdentity::from_seed([k; 32])?; // real nodes: a stored seed
        identities.push(identity.clone()); // signs this node's reshare confirmations
        let config = Libp2pConfig::new(identity, "/ip4/127.0.0.1/tcp/0".parse()?);
        transports.push(Libp2pTransport::start(config).await?);
    }
    let ids: Vec<NodeId> = transports.iter().map(|t| t.local_node()).collect();
    for t in &transports {
        for (id, other) in ids.iter().zip(&transports) {
            t.add_peer(*id, other.listen_addrs()[0].clone())?;
        }
    }
    let mut nodes = Vec::new();
    for (k, t) in transports.iter().enumerate() {
        let store: Arc<dyn ShareStore> = Arc::new(open_store(dir.path(), k).await?);
        let config =
            PoolConfig::new(ids.clone()).with_session_idle_timeout(Duration::from_secs(600));
        let primes = Arc::new(InsecureTestPrimes::new(k));
        let rules = Arc::new(DemoRules);
        nodes.push(
            PoolNode::start(
                config,
                Arc::new(t.clone()),
                Arc::new(identities[k].clone()),
                rules,
                store,
                primes,
                std::slice::from_ref(&key),
            )
            .await?,
        );
    }

    // Keygen, 3-of-4, proposed by node 0; the others validate and follow.
    let mut follower_events: Vec<_> = nodes[1..4].iter().map(|n| n.subscribe()).collect();
    let mut node4_events = nodes[4].subscribe();
    let committee = Committee::two_thirds(ids[..4].to_vec())?;
    let share = nodes[0]
        .propose_keygen(key.clone(), committee, b"pool v1".to_vec())
        .await?;
    let address = share.ethereum_address();
    println!("keygen: pool address {address}");
    // Followers commit when their own run ends, which may be after the proposer returns.
    for events in &mut follower_events {
        committed(events).await;
    }

    // Reload: what a restarted node finds in its (encrypted) keystore.
    let reopened = nodes[1].store().load_active(&key).await?.expect("stored");
    assert_eq!(reopened.ethereum_address(), address);
    println!("reload: node 1 holds generation {}", reopened.generation());

    // Presign with nodes 0-2, then sign a message in one round.
    let signers = ids[..3].to_vec();
    let presig = ExecutionId::random(
        ProtocolKind::Presign,
        &key,
        &signers,
        &mut rand::thread_rng(),
    );
    let mut runs = Vec::new();
    for node in &nodes[..3] {
        let (node, signers, share) = (
            node.clone(),
            signers.clone(),
            node.share(&key).expect("share"),
        );
        runs.push(tokio::spawn(async move {
            node.tss().presign(&share, &signers, presig).await
        }));
    }
    for run in runs {
        run.await??;
    }
    let message = b"L2 batch 1: blocks 100..=199".to_vec();
    let mut runs = Vec::new();
    for node in &nodes[..3] {
        let (node, key, message) = (node.clone(), key.clone(), message.clone());
        runs.push(tokio::spawn(async move {
            node.tss()
                .sign_with_presignature(&key, presig, &message)
                .await
        }));
    }
    for run in runs {
        let signature = run.await??;
        assert_eq!(
            signature.recover_address(&tss_core::keccak256(&message))?,
            address
        );
    }
    println!("presign + online: signature recovers to {address}");

    // Full signing through the pool layer: every signer validates and hashes itself.
    let out = nodes[2]
        .propose_sign(&key, b"L2 batch 2".to_vec(), None)
        .await?;
    println!("pool signing: signers {:?}", out.signers.len());

    // Node 4 joins: reshare 3-of-4 -> 4-of-5, same address.
    let new = Committee::two_thirds(ids.clone())?;
    let commit = nodes[0]
        .propose_reshare(&key, new, None, b"pool v2".to_vec())
        .await?;
    assert_eq!(commit.address, address);
    println!(
        "reshare: generation {:?}, address {}",
        commit.new_generation, commit.address
    );

    // Key deletion (e.g. an operator wiping a decommissioned node).
    committed(&mut node4_events).await;
    assert!(nodes[4].delete_key(&key, b"left").await?);
    assert!(nodes[4].store().load_active(&key).await?.is_none());
    println!("delete: node 4's share is gone");
    for t in transports {
        t.shutdown().await;
    }
    Ok(())
}
