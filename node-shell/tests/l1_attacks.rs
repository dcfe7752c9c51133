//! Attacks on membership (issue #13): a member (or a proposer of any kind) cannot change
//! the pool on its own word. Real anvil, real nodes (in-memory transport); the attacker
//! is a pool member whose own validator accepts any reshare (it runs a bare `PoolNode`),
//! so only the other nodes' checks stand in its way.

mod common;

use std::time::Duration;

use alloy::primitives::Address;
use common::*;
use node_shell::coordinator::MembershipProposal;
use node_shell::pool::Member;
use tss_core::Committee;

const KEYGEN: Duration = Duration::from_secs(900);
/// How long a node may stay silent about a run it is asked to check (a refusal is a few
/// L1 reads): generous, it only ends a wait that hears nothing.
const DONE: Duration = Duration::from_secs(120);

/// Nodes 1..=3 honest, node 4 the rogue; all four locked; min pool size 3 so a reshare
/// dropping one member would be a valid pool. Returns after keygen.
async fn pool_with_rogue() -> Option<(L1Pool, Rogue, String)> {
    let anvil = anvil()?;
    let mut pool = L1Pool::new(anvil, 5, 3).await;
    for k in 1..=4 {
        pool.lock(k, u64::from(k)).await;
    }
    // All four locks confirmed before any node looks (else 1..=3 could already be a pool).
    pool.wait_confirmed().await;
    let rogue = pool.start_rogue(4).await;
    for k in 1..=3 {
        pool.start(k).await;
    }
    let address = pool.wait_for_generation(&[1, 2, 3], 0, KEYGEN).await;
    // The rogue took part in the same keygen: its commit follows the others' at once.
    wait_share(&rogue.pool_node, &rogue.key_id, DONE).await;
    Some((pool, rogue, address))
}

/// Members `ks` as a proposal lists them: sorted by node id, stakes in gwei.
fn members(ks: &[u8]) -> Vec<Member> {
    let mut members: Vec<Member> = ks
        .iter()
        .map(|k| Member {
            node: id(*k),
            stake: u64::from(*k) * 1_000_000_000,
        })
        .collect();
    members.sort_by_key(|m| m.node);
    members
}

async fn assert_unchanged(pool: &L1Pool, address: &str) {
    for k in 1..=3 {
        let key = pool.node(k).key().unwrap();
        assert_eq!(key.generation, 0, "node {k}");
        assert_eq!(key.address, address);
        assert_eq!(key.committee.len(), 4);
        assert_eq!(pool.node(k).pool_state().unwrap().members.len(), 4);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_member_cannot_evict_another() {
    let Some((pool, rogue, address)) = pool_with_rogue().await else {
        return;
    };
    let seen: Vec<_> = (1..=3)
        .map(|k| refusals(pool.node(k).pool_node()))
        .collect();
    let runs: Vec<_> = (1..=2)
        .map(|k| runs_done(pool.node(k).pool_node()))
        .collect();
    let rogue_runs = runs_done(&rogue.pool_node);
    // Node 3 is still locked on L1; the rogue proposes a reshare without it, citing the
    // current confirmed height.
    let h = pool.confirmed_head().await;
    let ctx = MembershipProposal {
        l1_height: h,
        members: members(&[1, 2, 4]),
    };
    let out = rogue
        .pool_node
        .propose_reshare(
            &rogue.key_id,
            Committee::two_thirds(sorted(vec![id(1), id(2), id(4)])).unwrap(),
            None,
            ctx.encode(),
        )
        .await;
    assert!(out.is_err(), "the eviction went through: {out:?}");
    // Every honest node refused it (node 3 is not asked to deal: it is told of the abort
    // or refuses too if asked); none changed anything.
    for (i, s) in seen.iter().enumerate().take(2) {
        wait_refusal(
            s,
            "differ from the sequencers locked on L1",
            Duration::from_secs(30),
        )
        .await;
        eprintln!("node {} refused: {:?}", i + 1, s.lock());
    }
    // The run's parties are its dealers (the rogue, then 1 and 2: the old threshold,
    // staying members first) and its new committee: node 3 is not one and never hears
    // of it. Both honest parties are done with it, and neither completed it.
    let rogue_eids = wait_runs_of(&rogue_runs, id(4), 1, DONE).await;
    for (k, runs) in (1..=2).zip(&runs) {
        let end = wait_done(runs, rogue_eids[0], DONE).await;
        assert!(!end.completed(), "node {k} completed the eviction: {end:?}");
    }
    assert_unchanged(&pool, &address).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reshare_citing_an_unconfirmed_or_old_height_is_refused() {
    let Some((pool, rogue, address)) = pool_with_rogue().await else {
        return;
    };
    let seen: Vec<_> = (1..=3)
        .map(|k| refusals(pool.node(k).pool_node()))
        .collect();
    let runs: Vec<_> = (1..=3)
        .map(|k| runs_done(pool.node(k).pool_node()))
        .collect();
    let rogue_runs = runs_done(&rogue.pool_node);
    let committed = pool.node(1).pool_state().unwrap().l1_height;
    let propose = |h: u64| {
        let ctx = MembershipProposal {
            l1_height: h,
            members: members(&[1, 2, 3]),
        };
        rogue.pool_node.propose_reshare(
            &rogue.key_id,
            Committee::two_thirds(sorted(vec![id(1), id(2), id(3)])).unwrap(),
            None,
            ctx.encode(),
        )
    };
    // A height no node has confirmed (far ahead of the head).
    let ahead = pool.head().await + 1_000;
    assert!(propose(ahead).await.is_err());
    for s in seen.iter().take(2) {
        wait_refusal(
            s,
            "is not confirmed in this node's view",
            Duration::from_secs(30),
        )
        .await;
    }
    // The height the current pool was committed at (going back, or standing still).
    assert!(propose(committed).await.is_err());
    for s in seen.iter().take(2) {
        wait_refusal(s, "is not above the height", Duration::from_secs(30)).await;
    }
    assert!(propose(committed - 1).await.is_err());
    // Every honest node is a party of the three runs (dealers 4, 1, 2; node 3 is in the
    // new committee): each is done with every one of them, and completed none.
    let rogue_eids = wait_runs_of(&rogue_runs, id(4), 3, DONE).await;
    for (k, runs) in (1..=3).zip(&runs) {
        for eid in &rogue_eids {
            let end = wait_done(runs, *eid, DONE).await;
            assert!(
                !end.completed(),
                "node {k} completed the reshare {eid}: {end:?}"
            );
        }
    }
    assert_unchanged(&pool, &address).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_joiner_offered_a_key_that_differs_from_l1_refuses() {
    let Some(anvil) = anvil() else { return };
    let mut pool = L1Pool::new(anvil, 5, 4).await;
    for k in 1..=4 {
        pool.lock(k, u64::from(k)).await;
    }
    for k in 1..=5 {
        pool.start(k).await;
    }
    let address = pool.wait_for_generation(&[1, 2, 3, 4], 0, KEYGEN).await;
    let joiner = refusals(pool.node(5).pool_node());

    // No MPC address registered yet: the joiner refuses to take a share of any key.
    pool.lock(5, 5).await;
    wait_refusal(
        &joiner,
        "no MPC address is registered on L1",
        Duration::from_secs(120),
    )
    .await;

    // The admin registers another address: the pool's key is not it; still refused.
    let other: Address = pool.account(12);
    pool.set_mpc_address(other).await;
    wait_refusal(&joiner, "is not the MPC address", Duration::from_secs(120)).await;
    assert!(pool.node(5).key().is_none());
    for k in 1..=4 {
        assert_eq!(pool.node(k).key().unwrap().generation, 0, "node {k}");
    }

    // Once L1 names the pool's address, the same reshare goes through.
    pool.set_mpc_address(address.parse().unwrap()).await;
    let after = pool.wait_for_generation(&[1, 2, 3, 4, 5], 1, KEYGEN).await;
    assert_eq!(after, address);
}

/// Committee order: by node id.
fn sorted(mut ids: Vec<transport::NodeId>) -> Vec<transport::NodeId> {
    ids.sort();
    ids
}
