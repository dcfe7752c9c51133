//! One pool, two keys, each with its own L1 role and its own threshold protocol (the
//! batches key CGGMP21, the state key DKLs23): against a real anvil started by the
//! test, with real nodes (in-memory transport, insecure test primes). Each key gets its
//! own keygen, its own address, its own reshare gated by its own role's registration on
//! L1, and appends batches to its own inbox only; a key the nodes do not serve gets no
//! keygen.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::Address;
use common::*;
use node_shell::config::{role_id, BatchSettings, KeySettings};
use node_shell::devnet::inbox_batches;
use node_shell::l1::contracts::deploy_inbox;
use transport::NodeId;
use tss_core::pool::{
    KeygenProposal, ProposalValidator, Rejection, ReshareProposal, SignProposal, SigningInput,
};
use tss_core::{Committee, KeyId, Protocol, PublicKeyInfo};

const KEYGEN: Duration = Duration::from_secs(900);
/// The second key and its role.
const STATE_KEY: &str = "state-key";
const STATE_ROLE: &str = "state";

/// Progress on stderr, for a failure's context.
fn step(t: Instant, what: &str) {
    eprintln!("{:6.1}s {what}", t.elapsed().as_secs_f64());
}

/// A member's own validator that accepts any keygen (so it proposes keygens of keys
/// nobody serves) and nothing else.
struct ProposesAnyKeygen;

#[async_trait::async_trait]
impl ProposalValidator for ProposesAnyKeygen {
    async fn check_keygen(&self, _: NodeId, _: &KeygenProposal) -> Result<Vec<u8>, Rejection> {
        Ok(Vec::new())
    }
    async fn check_sign(
        &self,
        _: NodeId,
        _: &SignProposal,
        _: &PublicKeyInfo,
    ) -> Result<SigningInput, Rejection> {
        Err(Rejection::new("signs nothing"))
    }
    async fn check_reshare(
        &self,
        _: NodeId,
        _: &ReshareProposal,
        _: Option<&PublicKeyInfo>,
    ) -> Result<Vec<u8>, Rejection> {
        Err(Rejection::new("reshares nothing"))
    }
}

/// Waits until `inbox` holds at least one batch; returns them all (each checked against
/// `sender`).
async fn wait_for_batches(
    pool: &L1Pool,
    inbox: Address,
    sender: Address,
    limit: Duration,
) -> Vec<node_shell::devnet::InboxBatch> {
    let started = Instant::now();
    loop {
        let batches = inbox_batches(&pool.provider, inbox, sender).await.unwrap();
        if !batches.is_empty() {
            return batches;
        }
        assert!(
            started.elapsed() < limit,
            "no batch in the inbox {inbox} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_keys_of_two_protocols_get_their_own_keygen_reshare_and_inbox_each_gated_by_its_own_l1_role(
) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let Some(anvil) = anvil() else { return };
    let mut pool = L1Pool::new(anvil, 6, 4).await;
    let state_inbox = deploy_inbox(
        &pool.provider,
        pool.admin,
        pool.deployment.staking,
        role_id(STATE_ROLE),
        1,
    )
    .await
    .unwrap();
    pool.extra_keys
        .push(KeySettings::new(STATE_KEY, STATE_ROLE, state_inbox).with_protocol(Protocol::Dkls23));
    let mut batches = BatchSettings::demo("many keys");
    batches.max_batch_blocks = 5;
    // Few batches: each is a full signing, and they compete with the reshares for CPU.
    batches.interval_l1_blocks = 30;
    pool.batches = Some(batches);
    for k in 1..=4 {
        pool.lock(k, u64::from(k)).await;
    }
    for k in 1..=5 {
        pool.start(k).await;
    }

    // Both keys: a keygen each, on their own, with two different addresses.
    let t = Instant::now();
    let batches_address = pool.wait_for_generation(&[1, 2, 3, 4], 0, KEYGEN).await;
    let state_address = pool
        .wait_for_key_generation(STATE_KEY, &[1, 2, 3, 4], 0, KEYGEN)
        .await;
    eprintln!("two keygens: {:.1}s", t.elapsed().as_secs_f64());
    assert_ne!(batches_address, state_address);
    let status = pool.node(2).status();
    assert_eq!(status.keys.len(), 2);
    assert_eq!(status.keys[0].protocol, Protocol::Cggmp21);
    assert_eq!(status.keys[1].protocol, Protocol::Dkls23);
    let state_key_id = KeyId::new(STATE_KEY).unwrap();
    for k in 1..=4 {
        let pool_node = pool.node(k).pool_node();
        let held = |key: &KeyId| pool_node.share(key).map(|s| s.protocol());
        assert_eq!(held(&state_key_id), Some(Protocol::Dkls23), "node {k}");
        assert_eq!(
            held(&KeyId::new(KEY).unwrap()),
            Some(Protocol::Cggmp21),
            "node {k}"
        );
    }
    assert_eq!(
        status.keys[1].key.as_ref().map(|k| k.address.clone()),
        Some(state_address.clone())
    );

    step(t, "a keygen of a key nobody serves");
    // A member proposing a keygen of a key the nodes do not serve: every node refuses.
    let rogue = pool.start_rogue_with(6, Arc::new(ProposesAnyKeygen)).await;
    let refused: Vec<_> = (1..=4)
        .map(|k| refusals(pool.node(k).pool_node()))
        .collect();
    let mut parties: Vec<NodeId> = (1..=4).chain([6]).map(id).collect();
    parties.sort();
    let committee = Committee::new(parties, 4).unwrap();
    let attempt = rogue
        .pool_node
        .propose_keygen(KeyId::new("unserved-key").unwrap(), committee, Vec::new())
        .await;
    assert!(attempt.is_err(), "{attempt:?}");
    for seen in &refused {
        wait_refusal(
            seen,
            "this node serves no key unserved-key",
            Duration::from_secs(60),
        )
        .await;
    }
    rogue.pool_node.shutdown();

    step(t, "Only the batches role is registered");
    // Only the batches role is registered: node 5 locks, and it takes a share of the
    // batches key but refuses one of the state key, whose role has no address on L1.
    let batches_mpc: Address = batches_address.parse().unwrap();
    let state_mpc: Address = state_address.parse().unwrap();
    pool.set_mpc_address(batches_mpc).await;
    pool.fund(batches_mpc).await;
    let joiner = refusals(pool.node(5).pool_node());
    pool.lock(5, 5).await;
    let after = pool.wait_for_generation(&[1, 2, 3, 4, 5], 1, KEYGEN).await;
    assert_eq!(after, batches_address);
    wait_refusal(
        &joiner,
        "no MPC address is registered on L1",
        Duration::from_secs(120),
    )
    .await;
    assert!(pool.node(5).key_node(STATE_KEY).unwrap().key().is_none());
    // Node 5 has the smallest id of the five, so with no share and no address for the
    // state role it guessed a keygen; the first member's refusal (it holds the key) told
    // it the pool has one, and it waits to be given a share instead of proposing again.
    assert_eq!((1..=5).map(id).min(), Some(id(5)));
    let started = Instant::now();
    loop {
        let status = pool
            .node(5)
            .key_node(STATE_KEY)
            .unwrap()
            .membership_status();
        if status.contains("the pool already holds this key") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "node 5 still guesses a keygen: {status}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for k in 1..=4 {
        let state_key = pool.node(k).key_node(STATE_KEY).unwrap().key().unwrap();
        assert_eq!(state_key.generation, 0, "node {k}");
    }

    step(t, "one address, one role");
    // The admin cannot register the batches key's address for the state role (one
    // address, one role), so the state key cannot pass for the batches key or back.
    // (Simulated with eth_call: a transaction refused by the gas estimate would leave a
    // gap in the admin's cached nonce.)
    let refused_on_l1 = pool
        .staking
        .setRoleAddress(role_id(STATE_ROLE), batches_mpc)
        .from(pool.admin)
        .call()
        .await
        .map_err(|e| {
            node_shell::Error::L1(node_shell::l1::L1Error::Rpc {
                call: "setRoleAddress",
                reason: e.to_string(),
            })
        });
    assert!(
        node_shell::devnet::reverted_with(&refused_on_l1, "AddressHasRole"),
        "{refused_on_l1:?}"
    );

    step(t, "Once L1 names the state key's address");
    // Once L1 names the state key's address for its role, its reshare goes through.
    pool.set_role_address(STATE_ROLE, state_mpc).await;
    pool.fund(state_mpc).await;
    let after = pool
        .wait_for_key_generation(STATE_KEY, &[1, 2, 3, 4, 5], 1, KEYGEN)
        .await;
    assert_eq!(after, state_address);
    assert_eq!(
        pool.node(5)
            .pool_node()
            .share(&state_key_id)
            .map(|s| s.protocol()),
        Some(Protocol::Dkls23),
        "the joiner holds a DKLs23 share of the state key"
    );

    step(t, "Each key appends batches to its own inbox");
    // Each key appends batches to its own inbox, every one sent from its own address.
    let on_batches = wait_for_batches(
        &pool,
        pool.deployment.inbox,
        batches_mpc,
        Duration::from_secs(300),
    )
    .await;
    let on_state = wait_for_batches(&pool, state_inbox, state_mpc, Duration::from_secs(300)).await;
    assert!(on_batches.iter().all(|b| b.verified), "{on_batches:?}");
    assert!(on_state.iter().all(|b| b.verified), "{on_state:?}");

    step(t, "A digest signed with the state key");
    // A digest signed with the state key recovers to the state address.
    let signed = pool
        .node(5)
        .key_node(STATE_KEY)
        .unwrap()
        .sign([9; 32])
        .await
        .unwrap();
    assert_eq!(signed.address, state_address);
    assert_eq!(signed.generation, 1);
}
