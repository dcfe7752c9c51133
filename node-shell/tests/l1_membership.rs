//! Membership from L1 only, against a real anvil started by the test, with real nodes
//! (in-memory transport, insecure test primes): keygen once enough sequencers are
//! locked, the admin registers the MPC address, a lock and an unlock each lead to a
//! reshare keeping the address, a restarted node re-derives the same pool, a
//! non-whitelisted lock reverts.

mod common;

use std::time::Duration;

use alloy::primitives::Address;
use common::*;
use node_shell::devnet::lock_stake;

const KEYGEN: Duration = Duration::from_secs(900);

/// Polls `check` every 250 ms until it gives a value, for at most `limit`.
async fn eventually<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let started = std::time::Instant::now();
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if started.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn membership_follows_locks_and_unlocks_on_l1() {
    let Some(anvil) = anvil() else { return };
    let mut pool = L1Pool::new(anvil, 5, 4).await;
    for k in 1..=3 {
        pool.lock(k, u64::from(k)).await;
    }
    for k in 1..=5 {
        pool.start(k).await;
    }
    // Three locked, four needed: nothing happens, and the status says why (once node 1
    // has read L1).
    eventually(Duration::from_secs(120), || {
        (pool.node(1).status().membership)
            .contains("3 locked sequencer(s), no valid pool")
            .then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("status never said why: {:?}", pool.node(1).status()));
    assert!(pool.node(1).key().is_none());

    // A lock by an account the admin did not whitelist reverts on L1.
    let outsider = pool.account(9);
    let refused = lock_stake(&pool.staking, outsider, id(9), node_shell::devnet::eth(1)).await;
    assert!(
        node_shell::devnet::reverted_with(&refused, "NotWhitelisted"),
        "{refused:?}"
    );

    // The fourth lock: keygen among 1..=4, started by the nodes on their own.
    pool.lock(4, 4).await;
    let t = std::time::Instant::now();
    let address = pool.wait_for_generation(&[1, 2, 3, 4], 0, KEYGEN).await;
    eprintln!(
        "keygen from L1: {:.1}s, address {address}",
        t.elapsed().as_secs_f64()
    );
    let state = pool.node(2).pool_state().unwrap();
    assert_eq!(state.members.len(), 4);
    let fourth = state.members.iter().find(|m| m.node == id(4)).unwrap();
    assert_eq!(fourth.stake, 4_000_000_000); // 4 ETH in gwei
    assert!(pool.node(5).key().is_none());
    for k in 1..=4 {
        assert_eq!(pool.node(k).pool_state().unwrap(), state, "node {k}");
    }

    // The admin registers the pool's address; raw-digest signing works (flag on).
    let mpc: Address = address.parse().unwrap();
    pool.set_mpc_address(mpc).await;
    let signed = pool.node(1).sign([7; 32]).await.unwrap();
    assert_eq!(signed.address, address);

    // Node 5 locks: reshare to 1..=5, same address on every node.
    pool.lock(5, 5).await;
    let t = std::time::Instant::now();
    let after_join = pool.wait_for_generation(&[1, 2, 3, 4, 5], 1, KEYGEN).await;
    eprintln!("reshare after a lock: {:.1}s", t.elapsed().as_secs_f64());
    assert_eq!(after_join, address);
    let joined = pool.node(5).pool_state().unwrap();
    assert_eq!(joined.members.len(), 5);
    assert!(joined.l1_height > state.l1_height);
    for k in 1..=5 {
        assert_eq!(pool.node(k).pool_state().unwrap(), joined, "node {k}");
    }

    // Node 2 restarts mid-epoch: it re-derives the same pool, the same producer, and
    // proposes nothing.
    let epoch = pool.node(2).epoch();
    let producer = pool.node(2).block_producer(epoch);
    pool.stop(2).await;
    let restarted = pool.start(2).await;
    eventually(Duration::from_secs(120), || {
        (restarted.membership_status().starts_with("in sync with L1")
            && restarted.pool_state().as_ref() == Some(&joined))
        .then_some(())
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "the restarted node never re-derived the pool: {}",
            restarted.membership_status()
        )
    });
    assert_eq!(restarted.pool_state().unwrap(), joined);
    assert_eq!(restarted.key().unwrap().generation, 1);
    assert_eq!(restarted.block_producer(epoch), producer);
    assert_eq!(pool.node(1).block_producer(epoch), producer);
    assert!(
        restarted.membership_status().starts_with("in sync with L1"),
        "{}",
        restarted.membership_status()
    );

    // Node 3 unlocks: reshare to 1, 2, 4, 5; node 3's share is retired.
    pool.unlock(3).await;
    let t = std::time::Instant::now();
    let after_exit = pool.wait_for_generation(&[1, 2, 4, 5], 2, KEYGEN).await;
    eprintln!("reshare after an unlock: {:.1}s", t.elapsed().as_secs_f64());
    assert_eq!(after_exit, address);
    let left = pool.node(1).pool_state().unwrap();
    let mut expected = vec![id(1), id(2), id(4), id(5)];
    expected.sort(); // committee order: by node id
    assert_eq!(
        left.members.iter().map(|m| m.node).collect::<Vec<_>>(),
        expected
    );
    let started = std::time::Instant::now();
    while pool.node(3).key().is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "node 3 kept its share"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let signed = pool.node(4).sign([8; 32]).await.unwrap();
    assert_eq!(signed.address, address);
    assert!(!signed.signers.contains(&id(3)));
}
