//! Batches against a real anvil: the pool (in-process `PoolNode`s, in-memory transport,
//! insecure test primes) signs a batch transaction that every follower built and checked
//! itself (`batch::validate` against its `L1Reader` view), and the inbox appends it. Each
//! attack a follower must refuse is its own test; those run the followers' check
//! (`BatchRules::check`, what `check_sign` calls) against the real L1 view, with a local
//! key standing in for the pool's MPC key so no keygen is needed.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use alloy::consensus::{SignableTransaction, TxEnvelope};
use alloy::eips::eip2718::Encodable2718;
use alloy::network::TxSigner;
use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use alloy::signers::Signer;
use alloy::signers::SignerSync;
use async_trait::async_trait;
use node_shell::batch::{
    self, BatchFees, BatchPolicy, BatchProposal, BatchRejection, DemoL2, L2Source,
};
use node_shell::l1::anvil::{Anvil, AnvilOptions};
use node_shell::l1::contracts::{
    deploy, send_and_confirm, BatchInbox, Deployment, SequencerStaking,
};
use node_shell::l1::view::{L1Reader, L1View};
use node_shell::l1::L1Error;
use node_shell::pool::{Member, Pool, PoolRules};
use transport::{InMemoryNetwork, NodeId};
use tss_core::alloy::PoolSigner;
use tss_core::pool::{
    KeygenProposal, MemoryShareStore, PoolConfig, PoolEvent, PoolNode, ProposalValidator,
    Rejection, ReshareProposal, SignProposal, SigningInput,
};
use tss_core::{Committee, EthSignature, Generation, InsecureTestPrimes, KeyId, PublicKeyInfo};

const ETH: u128 = 1_000_000_000_000_000_000;
const GWEI: u128 = 1_000_000_000;
const GENESIS_L2: u64 = 100;
const SEED: [u8; 32] = [7; 32];

fn anvil() -> Option<Anvil> {
    if Anvil::binary().is_none() && std::env::var_os("CI").is_none() {
        eprintln!("SKIPPED: anvil not installed (run `npm ci`); CI never skips");
        return None;
    }
    Some(Anvil::spawn(&AnvilOptions::default()).expect("anvil starts"))
}

fn signer(i: u8) -> tss_core::Ed25519Signer {
    tss_core::Ed25519Signer::from_seed([i; 32])
}

fn node(i: u8) -> NodeId {
    signer(i).node_id()
}

fn policy(anvil: &Anvil, d: &Deployment) -> BatchPolicy {
    BatchPolicy {
        chain_id: anvil.chain_id(),
        inbox: d.inbox,
        l2_genesis_block: GENESIS_L2,
        epoch_length: 10,
        max_fee_per_gas_cap: 100 * GWEI,
        max_priority_fee_cap: 5 * GWEI,
        min_gas_limit: 60_000,
        max_gas_limit: 500_000,
    }
}

fn fees() -> BatchFees {
    BatchFees {
        max_fee_per_gas: 50 * GWEI,
        max_priority_fee_per_gas: 2 * GWEI,
        gas_limit: 200_000,
    }
}

/// The membership every node agrees on (in the real node: from the L1 view); members
/// `1..=n` with distinct stakes, so the stake-weighted producer draw is not trivial.
fn membership(n: u8) -> Pool {
    let rules = PoolRules {
        whitelist: Some((1..=n).map(node).collect::<BTreeSet<_>>()),
        min_stake: 1,
        max_stake: 1_000,
        min_members: 2,
        max_members: 10,
    };
    let members = (1..=n)
        .map(|i| Member {
            node: node(i),
            stake: 10 * u64::from(i),
        })
        .collect();
    Pool::new(rules, members, 0).unwrap()
}

/// The sequencer rules a follower applies to a batch signing proposal: the node-shell
/// wiring of `batch::validate` (L1 view at the confirmed head, the pool's nonce at that
/// height, the epoch's producer, this node's L2 view).
struct BatchRules {
    reader: L1Reader,
    policy: BatchPolicy,
    pool: Pool,
    l2: Box<dyn L2Source>,
}

impl BatchRules {
    /// What `check_sign` runs: `batch::check_request` on this node's view at the
    /// confirmed head.
    async fn check(
        &self,
        proposer: NodeId,
        request: &[u8],
        key: &PublicKeyInfo,
    ) -> Result<SigningInput, BatchRejection> {
        let view = self.reader.latest().await.expect("L1 view");
        batch::check_request(
            request,
            proposer,
            key,
            &view,
            self.reader.provider(),
            &self.policy,
            |epoch| self.pool.block_producer(&SEED, epoch),
            &*self.l2,
        )
        .await
    }
}

#[async_trait]
impl ProposalValidator for BatchRules {
    async fn check_keygen(&self, _: NodeId, p: &KeygenProposal) -> Result<Vec<u8>, Rejection> {
        Ok(p.context.clone())
    }
    async fn check_sign(
        &self,
        proposer: NodeId,
        p: &SignProposal,
        key: &PublicKeyInfo,
    ) -> Result<SigningInput, Rejection> {
        self.check(proposer, &p.request, key)
            .await
            .map_err(|e| Rejection::new(e.to_string()))
    }
    async fn check_reshare(
        &self,
        _: NodeId,
        _: &ReshareProposal,
        _: Option<&PublicKeyInfo>,
    ) -> Result<Vec<u8>, Rejection> {
        Err(Rejection::new("not in this test"))
    }
}

/// Anvil with both contracts (genesis L2 block 100) and the admin (account 0).
async fn l1() -> Option<(Anvil, Deployment)> {
    let anvil = anvil()?;
    let d = deploy(
        &anvil.provider(),
        anvil.accounts()[0],
        U256::from(ETH),
        U256::from(10 * ETH),
        GENESIS_L2,
    )
    .await
    .unwrap();
    Some((anvil, d))
}

/// The admin registers `pool` as the MPC address and anvil funds it.
async fn register_and_fund(anvil: &Anvil, d: &Deployment, pool: Address) {
    let p = anvil.provider();
    let staking = SequencerStaking::new(d.staking, p.clone());
    let tx = staking
        .setMpcAddress(pool)
        .from(anvil.accounts()[0])
        .into_transaction_request();
    send_and_confirm(&p, "setMpcAddress", tx).await.unwrap();
    p.raw_request::<_, serde_json::Value>("anvil_setBalance".into(), (pool, U256::from(10 * ETH)))
        .await
        .unwrap();
}

fn rules(anvil: &Anvil, d: &Deployment, members: u8, l2: DemoL2) -> BatchRules {
    BatchRules {
        reader: L1Reader::new(anvil.provider(), *d, 0),
        policy: policy(anvil, d),
        pool: membership(members),
        l2: Box::new(l2),
    }
}

/// The producer of the next epoch and the valid next batch of `blocks` blocks.
async fn next_batch(r: &BatchRules, pool: Address, blocks: u64) -> (NodeId, BatchProposal) {
    let view = r.reader.latest().await.unwrap();
    let epoch = r.policy.next_epoch(&view).unwrap();
    let producer = r.pool.block_producer(&SEED, epoch).unwrap();
    let first = view.next_l2_block;
    let last = first + blocks - 1;
    let nonce = batch::pool_nonce(r.reader.provider(), pool, view.height)
        .await
        .unwrap();
    let hash = r.l2.batch_hash(first, last).await.unwrap();
    let (proposal, _) = batch::build(&r.policy, epoch, first, last, hash, nonce, fees());
    (producer, proposal)
}

fn not_producer(r: &BatchRules, producer: NodeId) -> NodeId {
    *r.pool
        .members()
        .iter()
        .map(|m| &m.node)
        .find(|n| **n != producer)
        .unwrap()
}

/// A local key standing in for the pool's MPC key (the refusal tests need no MPC).
struct StandIn {
    key: PrivateKeySigner,
}

impl StandIn {
    fn new() -> Self {
        Self {
            key: PrivateKeySigner::random(),
        }
    }
    fn address(&self) -> Address {
        self.key.address()
    }
    /// The public facts `check_sign` gets for this key.
    fn info(&self) -> PublicKeyInfo {
        let ids: Vec<NodeId> = (1..=4).map(node).collect();
        PublicKeyInfo {
            key_id: KeyId::new("stand-in").unwrap(),
            generation: Generation::KEYGEN,
            committee: Committee::new(ids, 3).unwrap(),
            public_key: self
                .key
                .credential()
                .verifying_key()
                .to_sec1_bytes()
                .to_vec(),
            public_shares: vec![],
            protocol: Default::default(),
        }
    }
    /// Signs and submits `proposal`'s transaction as the pool would.
    async fn append(
        &self,
        r: &BatchRules,
        anvil: &Anvil,
        proposal: &BatchProposal,
    ) -> batch::SubmittedBatch {
        let tx = batch::batch_tx(&r.policy, proposal);
        let sig = self.key.sign_hash_sync(&tx.signature_hash()).unwrap();
        let eth = EthSignature::try_from(sig).unwrap();
        batch::submit(&anvil.provider(), &batch::signed_raw(tx, eth))
            .await
            .unwrap()
    }
}

/// A refusal-test fixture: anvil, contracts, a registered and funded stand-in pool, the
/// follower's rules (4 members) with the demo L2.
async fn fixture() -> Option<(Anvil, Deployment, StandIn, BatchRules)> {
    let (anvil, d) = l1().await?;
    let pool = StandIn::new();
    register_and_fund(&anvil, &d, pool.address()).await;
    let r = rules(&anvil, &d, 4, DemoL2::new("devnet"));
    Some((anvil, d, pool, r))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_pool_signs_a_batch_every_follower_built_itself_and_the_inbox_appends_it() {
    let Some((anvil, d)) = l1().await else { return };
    let ids: Vec<NodeId> = (1..=3).map(node).collect();
    let key = KeyId::new("sequencer-pool").unwrap();
    let network = InMemoryNetwork::new();
    let mut nodes = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        nodes.push(
            PoolNode::start(
                PoolConfig::new(ids.clone()).with_session_idle_timeout(Duration::from_secs(600)),
                Arc::new(network.endpoint(*id)),
                Arc::new(signer(i as u8 + 1)),
                Arc::new(rules(&anvil, &d, 3, DemoL2::new("devnet"))),
                Arc::new(MemoryShareStore::new()),
                Arc::new(InsecureTestPrimes::new(i)),
                std::slice::from_ref(&key),
            )
            .await
            .unwrap(),
        );
    }
    let mut events: Vec<_> = nodes[1..].iter().map(|n| n.subscribe()).collect();
    let share = nodes[0]
        .propose_keygen(key.clone(), Committee::new(ids.clone(), 3).unwrap(), vec![])
        .await
        .unwrap();
    for ev in &mut events {
        while !matches!(ev.recv().await.unwrap(), PoolEvent::KeyCommitted { .. }) {}
    }
    let pool = Address::from(share.ethereum_address());
    register_and_fund(&anvil, &d, pool).await;

    let r = rules(&anvil, &d, 3, DemoL2::new("devnet"));
    // The producer's epoch loop: read L1, pick the next range, propose, submit.
    let view = r.reader.latest().await.unwrap();
    let epoch = r.policy.next_epoch(&view).unwrap();
    let producer = r.pool.block_producer(&SEED, epoch).unwrap();
    let at = ids.iter().position(|n| *n == producer).unwrap();
    let nonce = batch::pool_nonce(r.reader.provider(), pool, view.height)
        .await
        .unwrap();
    let (proposal, tx) =
        batch::next_proposal(&view, nonce, &r.policy, &*r.l2, GENESIS_L2 + 4, fees())
            .await
            .unwrap();
    let submitted = batch::sign_and_submit(&nodes[at], &key, &proposal, tx, &anvil.provider())
        .await
        .expect("every follower accepts the producer's batch");
    assert!(submitted.status, "the inbox appended the batch");
    let view = r.reader.latest().await.unwrap();
    assert_eq!(view.batch_count, 1);
    assert_eq!(view.next_l2_block, GENESIS_L2 + 5);
    assert_eq!(view.last_batch.unwrap().batch_hash, proposal.batch_hash);

    // The next batch proposed by a node that is not the producer: refused, nothing signed.
    let (producer, next) = next_batch(&r, pool, 5).await;
    let intruder = not_producer(&r, producer);
    let at = ids.iter().position(|n| *n == intruder).unwrap();
    let err = nodes[at]
        .propose_sign(&key, next.encode(), None)
        .await
        .expect_err("a non-producer's batch is refused");
    assert!(err.to_string().contains("not the block producer"), "{err}");
    assert_eq!(r.reader.latest().await.unwrap().batch_count, 1);

    // The producer signs the same batch through the alloy adapter (`PoolSigner`, an
    // alloy `TxSigner`): the request is the bare transaction, which every follower
    // decodes and checks as a batch. Signed with the pool's next nonce, appended.
    assert_eq!(next.nonce, 1);
    let at = ids.iter().position(|n| *n == producer).unwrap();
    let signer = PoolSigner::new(nodes[at].clone(), key.clone())
        .unwrap()
        .with_chain_id(Some(anvil.chain_id()));
    let mut tx = batch::batch_tx(&r.policy, &next);
    let sig = signer.sign_transaction(&mut tx).await.unwrap();
    let signed = tx.into_signed(sig);
    assert_eq!(signed.recover_signer().unwrap(), pool);
    let raw = TxEnvelope::from(signed).encoded_2718();
    let submitted = batch::submit(&anvil.provider(), &raw).await.unwrap();
    assert!(submitted.status);
    let view = r.reader.latest().await.unwrap();
    assert_eq!((view.batch_count, view.next_l2_block), (2, GENESIS_L2 + 10));
}

#[tokio::test]
async fn a_batch_from_a_non_producer_is_refused() {
    let Some((_anvil, _d, pool, r)) = fixture().await else {
        return;
    };
    let (producer, proposal) = next_batch(&r, pool.address(), 5).await;
    let intruder = not_producer(&r, producer);
    assert!(matches!(
        r.check(intruder, &proposal.encode(), &pool.info()).await,
        Err(BatchRejection::NotProducer { proposer, producer: Some(p) }) if proposer == intruder && p == producer
    ));
    // The same proposal from the producer is accepted.
    r.check(producer, &proposal.encode(), &pool.info())
        .await
        .unwrap();
}

/// Re-signs the proposal's `tx` after a field changed (an honest-looking request).
fn rebuilt(r: &BatchRules, mut p: BatchProposal) -> BatchProposal {
    p.tx = batch::signing_message(&batch::batch_tx(&r.policy, &p)).into();
    p
}

#[tokio::test]
async fn a_pool_whose_key_is_not_the_registered_mpc_address_refuses() {
    let Some((_anvil, _d, pool, r)) = fixture().await else {
        return;
    };
    let (producer, proposal) = next_batch(&r, pool.address(), 5).await;
    let other_key = StandIn::new();
    assert!(matches!(
        r.check(producer, &proposal.encode(), &other_key.info()).await,
        Err(BatchRejection::MpcAddressMismatch { registered, key })
            if registered == pool.address() && key == other_key.address()
    ));
}

#[tokio::test]
async fn a_batch_leaving_a_gap_is_refused() {
    let Some((_anvil, _d, pool, r)) = fixture().await else {
        return;
    };
    let (producer, mut p) = next_batch(&r, pool.address(), 5).await;
    p.first_block += 2;
    p.batch_hash = r.l2.batch_hash(p.first_block, p.last_block).await.unwrap();
    let p = rebuilt(&r, p);
    assert!(matches!(
        r.check(producer, &p.encode(), &pool.info()).await,
        Err(BatchRejection::RangeGap {
            expected: GENESIS_L2,
            first_block: 102
        })
    ));
}

#[tokio::test]
async fn an_overlapping_or_replayed_batch_is_refused() {
    let Some((anvil, _d, pool, r)) = fixture().await else {
        return;
    };
    let (producer, first) = next_batch(&r, pool.address(), 5).await;
    assert!(pool.append(&r, &anvil, &first).await.status);

    // The same range again (with the pool's new nonce): a replay.
    let (producer2, next) = next_batch(&r, pool.address(), 5).await;
    let mut replay = first.clone();
    replay.nonce = next.nonce;
    let replay = rebuilt(&r, replay);
    let proposer = if r.policy.epoch_of(first.first_block) == r.policy.epoch_of(next.first_block) {
        producer
    } else {
        producer2
    };
    assert!(matches!(
        r.check(proposer, &replay.encode(), &pool.info()).await,
        Err(BatchRejection::Replayed {
            first_block: 100,
            last_block: 104
        })
    ));
    // A range that starts inside the appended one and runs past it: an overlap.
    let mut overlap = next.clone();
    overlap.first_block = 103;
    overlap.batch_hash = r.l2.batch_hash(103, overlap.last_block).await.unwrap();
    let overlap = rebuilt(&r, overlap);
    assert!(matches!(
        r.check(proposer, &overlap.encode(), &pool.info()).await,
        Err(BatchRejection::RangeOverlap {
            expected: 105,
            first_block: 103
        })
    ));
    // The exact same signed transaction sent again is refused by L1 itself (nonce used).
    let tx = batch::batch_tx(&r.policy, &first);
    let sig = pool.key.sign_hash_sync(&tx.signature_hash()).unwrap();
    let raw = batch::signed_raw(tx, EthSignature::try_from(sig).unwrap());
    assert!(batch::submit(&anvil.provider(), &raw).await.is_err());
}

#[tokio::test]
async fn a_batch_with_a_stale_or_future_nonce_is_refused() {
    let Some((_anvil, _d, pool, r)) = fixture().await else {
        return;
    };
    let (producer, p) = next_batch(&r, pool.address(), 5).await;
    for nonce in [p.nonce + 1, p.nonce + 1000] {
        let bad = rebuilt(&r, BatchProposal { nonce, ..p.clone() });
        assert!(matches!(
            r.check(producer, &bad.encode(), &pool.info()).await,
            Err(BatchRejection::WrongNonce { nonce: n, expected: 0 }) if n == nonce
        ));
    }
}

#[tokio::test]
async fn a_batch_in_the_wrong_epoch_is_refused() {
    let Some((_anvil, _d, pool, r)) = fixture().await else {
        return;
    };
    let (producer, p) = next_batch(&r, pool.address(), 5).await;
    let later = rebuilt(
        &r,
        BatchProposal {
            epoch: p.epoch + 1,
            ..p.clone()
        },
    );
    assert!(matches!(
        r.check(producer, &later.encode(), &pool.info()).await,
        Err(BatchRejection::WrongEpoch { .. })
    ));
    // A batch running into the next epoch (epochs are 10 blocks).
    let mut spanning = p.clone();
    spanning.last_block = p.first_block + 10;
    spanning.batch_hash =
        r.l2.batch_hash(spanning.first_block, spanning.last_block)
            .await
            .unwrap();
    let spanning = rebuilt(&r, spanning);
    assert!(matches!(
        r.check(producer, &spanning.encode(), &pool.info()).await,
        Err(BatchRejection::WrongEpoch { .. })
    ));
}

#[tokio::test]
async fn fees_above_the_cap_are_refused() {
    let Some((_anvil, _d, pool, r)) = fixture().await else {
        return;
    };
    let (producer, p) = next_batch(&r, pool.address(), 5).await;
    let greedy = rebuilt(
        &r,
        BatchProposal {
            max_fee_per_gas: 101 * GWEI,
            ..p.clone()
        },
    );
    assert!(matches!(
        r.check(producer, &greedy.encode(), &pool.info()).await,
        Err(BatchRejection::FeeAboveCap {
            field: "max_fee_per_gas",
            ..
        })
    ));
    let tip = rebuilt(
        &r,
        BatchProposal {
            max_priority_fee_per_gas: 6 * GWEI,
            ..p.clone()
        },
    );
    assert!(matches!(
        r.check(producer, &tip.encode(), &pool.info()).await,
        Err(BatchRejection::FeeAboveCap {
            field: "max_priority_fee_per_gas",
            ..
        })
    ));
    let gas = rebuilt(
        &r,
        BatchProposal {
            gas_limit: 5_000_000,
            ..p.clone()
        },
    );
    assert!(matches!(
        r.check(producer, &gas.encode(), &pool.info()).await,
        Err(BatchRejection::GasLimitOutOfBounds { .. })
    ));
}

#[tokio::test]
async fn a_batch_hash_that_differs_from_the_followers_l2_view_is_refused() {
    let Some((anvil, d, pool, producer_rules)) = fixture().await else {
        return;
    };
    // The producer's L2 differs from this follower's (another chain, or forged blocks).
    let (producer, p) = next_batch(&producer_rules, pool.address(), 5).await;
    let follower = rules(&anvil, &d, 4, DemoL2::new("the follower's own chain"));
    assert!(matches!(
        follower.check(producer, &p.encode(), &pool.info()).await,
        Err(BatchRejection::BatchHashMismatch { proposed, .. }) if proposed == p.batch_hash
    ));
    // A follower that has not seen the blocks yet refuses too.
    let behind = rules(
        &anvil,
        &d,
        4,
        DemoL2 {
            head: Some(GENESIS_L2 + 2),
            ..DemoL2::new("devnet")
        },
    );
    assert!(matches!(
        behind.check(producer, &p.encode(), &pool.info()).await,
        Err(BatchRejection::L2(_))
    ));
}

#[tokio::test]
async fn a_request_whose_tx_does_not_match_its_fields_is_refused() {
    let Some((_anvil, _d, pool, r)) = fixture().await else {
        return;
    };
    let (producer, p) = next_batch(&r, pool.address(), 5).await;
    // Fields that pass every check, with a transaction that sends the pool's ETH away.
    let mut evil = batch::batch_tx(&r.policy, &p);
    evil.to = alloy::primitives::TxKind::Call(Address::repeat_byte(0xee));
    evil.value = U256::from(ETH);
    let forged = BatchProposal {
        tx: batch::signing_message(&evil).into(),
        ..p.clone()
    };
    assert!(matches!(
        r.check(producer, &forged.encode(), &pool.info()).await,
        Err(BatchRejection::TxMismatch)
    ));
    // The same evil transaction sent bare (as `PoolSigner` sends transactions): its
    // calldata is a valid batch, the rest is not what the follower builds.
    assert!(matches!(
        r.check(producer, &batch::signing_message(&evil), &pool.info())
            .await,
        Err(BatchRejection::TxMismatch)
    ));
    // Not a batch proposal at all.
    assert!(matches!(
        r.check(producer, b"sign this", &pool.info()).await,
        Err(BatchRejection::Malformed(_))
    ));
}

#[tokio::test]
async fn the_same_batch_from_another_account_reverts_on_l1() {
    let Some((anvil, d, pool, r)) = fixture().await else {
        return;
    };
    let (_, p) = next_batch(&r, pool.address(), 5).await;
    let p_ = anvil.provider();
    let inbox = BatchInbox::new(d.inbox, p_.clone());
    let tx = inbox
        .appendBatch(p.epoch, p.first_block, p.last_block, p.batch_hash)
        .from(anvil.accounts()[1])
        .gas(200_000)
        .into_transaction_request();
    assert!(matches!(
        send_and_confirm(&p_, "appendBatch", tx).await,
        Err(L1Error::Reverted { .. })
    ));
    // Signed by another key (raw), the pool's exact batch transaction reverts too.
    let other = StandIn::new();
    p_.raw_request::<_, serde_json::Value>(
        "anvil_setBalance".into(),
        (other.address(), U256::from(ETH)),
    )
    .await
    .unwrap();
    let mut q = p.clone();
    q.nonce = 0;
    let q = rebuilt(&r, q);
    assert!(!other.append(&r, &anvil, &q).await.status);
    let view: L1View = r.reader.latest().await.unwrap();
    assert_eq!(view.batch_count, 0);
    // From the pool it goes through.
    assert!(pool.append(&r, &anvil, &p).await.status);
    assert_eq!(r.reader.latest().await.unwrap().batch_count, 1);
}
