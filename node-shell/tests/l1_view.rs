//! The L1 view against a real anvil: contracts deployed from the committed artifacts,
//! stake locked, increased and unlocked by sequencer accounts, the view derived from events.

use alloy::primitives::{FixedBytes, U256};
use alloy::providers::Provider;
use node_shell::l1::anvil::{Anvil, AnvilOptions};
use node_shell::l1::contracts::{deploy, SequencerStaking};
use node_shell::l1::view::L1Reader;
use node_shell::l1::L1Error;
use transport::NodeId;

fn anvil() -> Option<Anvil> {
    if Anvil::binary().is_none() && std::env::var_os("CI").is_none() {
        eprintln!("SKIPPED: anvil not installed (run `npm ci`); CI never skips");
        return None;
    }
    Some(Anvil::spawn(&AnvilOptions::default()).expect("anvil starts"))
}

const ETH: u128 = 1_000_000_000_000_000_000;

#[tokio::test]
async fn the_view_follows_locks_increases_unlocks_and_waits_for_confirmations() {
    let Some(anvil) = anvil() else { return };
    let p = anvil.provider();
    let admin = anvil.accounts()[0];
    let d = deploy(&p, admin, U256::from(ETH), U256::from(10 * ETH), 100)
        .await
        .unwrap();
    let staking = SequencerStaking::new(d.staking, p.clone());
    let seq = |i: usize| anvil.accounts()[i];
    let node = |i: u8| NodeId::from_bytes([i; 32]);
    for i in 1..=3u8 {
        staking
            .setWhitelisted(seq(i as usize), true)
            .from(admin)
            .send()
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        staking
            .lock(FixedBytes([i; 32]))
            .value(U256::from(2 * ETH))
            .from(seq(i as usize))
            .send()
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
    }
    staking
        .increase()
        .value(U256::from(ETH))
        .from(seq(2))
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    staking
        .unlock()
        .from(seq(3))
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    let head = p.get_block_number().await.unwrap();

    let reader = L1Reader::new(p.clone(), d, 2);
    // The head is not confirmed until two blocks are on top of it.
    assert!(matches!(
        reader.view_at(head).await,
        Err(L1Error::HeightNotConfirmed { .. })
    ));
    anvil.mine(2).await.unwrap();
    let view = reader.view_at(head).await.unwrap();
    let nodes: Vec<_> = view.members.iter().map(|m| m.node).collect();
    assert_eq!(nodes, vec![node(1), node(2)]);
    assert_eq!(view.member(&node(2)).unwrap().stake, U256::from(3 * ETH));
    assert_eq!(view.next_l2_block, 100);
    assert_eq!(view.mpc_address, None);

    // A second reader (a restarted node) derives the same view from L1 alone.
    let again = L1Reader::new(p.clone(), d, 2).view_at(head).await.unwrap();
    assert_eq!(again, view);
    // An earlier height shows the pool as it was then.
    let before_unlock = reader.view_at(head - 1).await.unwrap();
    assert_eq!(before_unlock.members.len(), 3);
}

#[tokio::test]
async fn a_reorg_shallower_than_the_confirmation_depth_changes_no_view_the_node_used() {
    let Some(anvil) = anvil() else { return };
    let p = anvil.provider();
    let admin = anvil.accounts()[0];
    let d = deploy(&p, admin, U256::from(ETH), U256::from(10 * ETH), 1)
        .await
        .unwrap();
    let staking = SequencerStaking::new(d.staking, p.clone());
    for i in 1..=2usize {
        staking
            .setWhitelisted(anvil.accounts()[i], true)
            .from(admin)
            .send()
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
    }
    staking
        .lock(FixedBytes([1; 32]))
        .value(U256::from(2 * ETH))
        .from(anvil.accounts()[1])
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    anvil.mine(3).await.unwrap();
    let reader = L1Reader::new(p.clone(), d, 2);
    let before = reader.latest().await.unwrap();
    assert_eq!(before.members.len(), 1);

    // Node 2 locks in the head block: not confirmed yet, so no view includes it.
    staking
        .lock(FixedBytes([2; 32]))
        .value(U256::from(2 * ETH))
        .from(anvil.accounts()[2])
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    let head = p.get_block_number().await.unwrap();
    let unconfirmed = reader.latest().await.unwrap();
    assert_eq!(unconfirmed.members.len(), 1);

    // A reorg of depth 1 replaces that block by an empty one: the lock is gone.
    p.raw_request::<_, serde_json::Value>(
        "anvil_reorg".into(),
        (1u64, Vec::<serde_json::Value>::new()),
    )
    .await
    .unwrap();
    assert_eq!(p.get_block_number().await.unwrap(), head);
    anvil.mine(2).await.unwrap();

    // Every view the node derived before the reorg is derived again unchanged, and the
    // newly confirmed height shows the chain as it is now (no lock of node 2).
    assert_eq!(reader.view_at(before.height).await.unwrap(), before);
    assert_eq!(
        L1Reader::new(p.clone(), d, 2)
            .view_at(unconfirmed.height)
            .await
            .unwrap(),
        unconfirmed
    );
    let after = reader.latest().await.unwrap();
    assert!(after.height >= head);
    let nodes: Vec<_> = after.members.iter().map(|m| m.node).collect();
    assert_eq!(nodes, vec![NodeId::from_bytes([1; 32])]);
}
