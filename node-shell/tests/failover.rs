//! Producer failover against a real anvil L1, with real nodes (in-memory transport,
//! insecure test primes) running their batch producer loops (`[batches]`).
//!
//! One pool of 4 members (threshold 3, so one member can be down) is shared by the tests
//! of this file: keygen is by far the most expensive step, so it runs once. The tests
//! take turns on the pool (a lock), and each one sets up the state it needs from whatever
//! state it finds (it stops the producer, restarts the others, mines what it needs), so
//! any order, or any one test alone, works.
//!
//! anvil mines only on transactions and when a test mines (`anvil_mine`): L1 height is
//! what moves the failover level, so the tests decide exactly when the stall window has
//! passed, with no clock involved. The nodes read L1 at one confirmation.
//!
//! Signer choice: a proposer signs with itself and the next `t - 1` members in committee
//! order. The stakes are chosen (computed below, from the schedule) so that the epoch's
//! producer order is a rotation of committee order: the producer comes right before its
//! first fallback, so when the producer is down the fallback's signers are the three
//! members that are up, and when the last member in the order is down the producer's
//! signers are the three others. With signer selection that skips unreachable members
//! this arrangement is no longer needed, and it does no harm.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{LazyLock, Mutex as StdMutex};
use std::time::{Duration, Instant};

use alloy::consensus::TxEip1559;
use alloy::primitives::{Address, Bytes, U256};
use alloy::providers::Provider;
use common::*;
use node_shell::batch::{self, BatchProposal, BatchRejection, DemoL2, SubmitError};
use node_shell::config::BatchSettings;
use node_shell::devnet::{inbox_batches, InboxBatch};
use node_shell::l1::anvil::AnvilOptions;
use node_shell::l1::contracts::{send_and_confirm, BatchInbox};
use node_shell::l1::view::{L1Reader, L1View};
use node_shell::l1::L1Error;
use node_shell::producer::ProducerView;
use node_shell::schedule::Schedule;
use tokio::sync::{Mutex, OnceCell};
use transport::NodeId;
use tss_core::{KeyId, PublicKeyInfo, TssError};

/// Pool members (nodes 1..=4); threshold 3.
const MEMBERS: u8 = 4;
/// `batches.stall_l1_blocks`: L1 blocks without a batch before the next fallback's turn.
const STALL: u64 = 10;
/// `batches.interval_l1_blocks`: the producer's cadence (smaller than the window).
const INTERVAL: u64 = 3;
/// L2 blocks per epoch: every batch of these tests is in epoch 0.
const EPOCH_BLOCKS: u64 = 1_000;
/// The inbox's genesis L2 block (`L1Pool::new` deploys with 1).
const GENESIS_L2: u64 = 1;
/// `L1Pool::settings`' producer schedule seed.
const SEED: [u8; 32] = [3; 32];
/// Bounds silence only (a hang, a lost message); a loaded machine takes what it takes.
const LIMIT: Duration = Duration::from_secs(300);
const KEYGEN: Duration = Duration::from_secs(900);
const GWEI_PER_ETH: u128 = 1_000_000_000;

// ------------------------------------------------------------------ the shared pool

/// The nodes' tasks live on this runtime, shared by the tests of this file.
static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("tokio runtime")
});

/// `None` when anvil is not installed (the tests skip, as the other L1 tests do).
static SCENARIO: OnceCell<Option<Mutex<Scenario>>> = OnceCell::const_new();

/// Statics are never dropped: anvil and the keystores go at process exit.
static ANVIL_PID: AtomicU32 = AtomicU32::new(0);
static TEMP_DIR: StdMutex<Option<PathBuf>> = StdMutex::new(None);

extern "C" fn clean_up_at_exit() {
    let pid = ANVIL_PID.load(Ordering::SeqCst);
    if pid != 0 {
        // SAFETY: kill(2) on the anvil child this process started.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
    }
    if let Ok(dir) = TEMP_DIR.lock() {
        if let Some(dir) = dir.as_ref() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Runs `test` on the shared pool, alone (the tests take turns).
fn run(test: impl AsyncFnOnce(&mut Scenario)) {
    RUNTIME.block_on(async {
        let Some(scenario) = SCENARIO.get_or_init(Scenario::start).await else {
            return;
        };
        let mut scenario = scenario.lock().await;
        test(&mut scenario).await;
    })
}

struct Scenario {
    pool: L1Pool,
    /// A reader at the nodes' confirmation depth.
    reader: L1Reader,
    key_id: KeyId,
    mpc: Address,
    settings: BatchSettings,
    schedule: Schedule,
}

/// Stakes (ETH, distinct, within the staking contract's 1..=10) for nodes 1..=4 such
/// that epoch 0's producer order, from the producer on, is committee order (by node id):
/// each member's default signers (itself and the next two in committee order) are then
/// the producer and its first fallbacks, never the member that the test stops (see the
/// module docs).
fn arranged_stakes(schedule: &Schedule) -> [u64; 4] {
    let mut committee: Vec<NodeId> = (1..=MEMBERS).map(id).collect();
    committee.sort();
    let at = |n: NodeId| committee.iter().position(|m| *m == n).unwrap();
    for code in 0..10_000u32 {
        let stakes: [u64; 4] =
            std::array::from_fn(|i| u64::from(code / 10u32.pow(i as u32) % 10) + 1);
        let mut distinct = stakes.to_vec();
        distinct.sort();
        distinct.dedup();
        if distinct.len() != 4 {
            continue;
        }
        let members: Vec<(NodeId, u128)> = (1..=MEMBERS)
            .map(|k| {
                let stake = u128::from(stakes[usize::from(k - 1)]) * GWEI_PER_ETH;
                (id(k), stake)
            })
            .collect();
        let order = schedule.order(&members, 0);
        let first = at(order[0]);
        if (0..order.len()).all(|i| at(order[i]) == (first + i) % committee.len()) {
            return stakes;
        }
    }
    panic!("no stakes make the producer order a rotation of committee order");
}

/// The key's series of `node_shell_producer_stalls_total`.
const STALLS: &str = "node_shell_producer_stalls_total{key=\"l1-test-key\"}";
/// The key's series of `node_shell_producer_fallback_level`.
const FALLBACK_LEVEL: &str = "node_shell_producer_fallback_level{key=\"l1-test-key\"}";

/// The value of one series (name and labels as rendered) in `node`'s Prometheus page.
fn metric(node: &node_shell::Node, name: &str) -> u64 {
    let page = node.metrics().render();
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in\n{page}"))
}

/// What [`Scenario::stall_until_the_fallback_appends`] did.
struct Failover {
    /// The epoch's producer (stopped).
    producer: u8,
    /// The first fallback (it appended).
    fallback: u8,
    /// The stall clock's start (L1 block).
    since: u64,
    /// The batch the stalled producer would have proposed when it stopped.
    late: BatchProposal,
    /// The batch the fallback appended.
    appended: InboxBatch,
    /// `node_shell_producer_stalls_total` of the running nodes before the stall.
    stalls_before: Vec<(u8, u64)>,
}

impl Scenario {
    async fn start() -> Option<Mutex<Scenario>> {
        let anvil = anvil_with(&AnvilOptions::default())?;
        ANVIL_PID.store(anvil.pid(), Ordering::SeqCst);
        static REGISTER: std::sync::Once = std::sync::Once::new();
        // SAFETY: registers a plain function that only calls kill(2) and removes a directory.
        REGISTER.call_once(|| unsafe {
            libc::atexit(clean_up_at_exit);
        });
        let mut pool = L1Pool::new(anvil, MEMBERS, usize::from(MEMBERS)).await;
        *TEMP_DIR.lock().unwrap() = Some(pool.dir.path().to_path_buf());
        let mut settings = BatchSettings::demo("failover test");
        settings.epoch_blocks = EPOCH_BLOCKS;
        settings.max_batch_blocks = 5;
        settings.interval_l1_blocks = INTERVAL;
        settings.stall_l1_blocks = STALL;
        pool.batches = Some(settings.clone());
        let schedule = Schedule {
            seed: SEED,
            genesis_l2_block: GENESIS_L2,
            epoch_length: EPOCH_BLOCKS,
            stall_window: STALL,
        };
        let stakes = arranged_stakes(&schedule);
        for k in 1..=MEMBERS {
            pool.lock(k, stakes[usize::from(k - 1)]).await;
        }
        // One block on top, so the nodes (one confirmation) see every lock.
        pool.anvil.mine(1).await.unwrap();
        for k in 1..=MEMBERS {
            pool.start(k).await;
        }
        let t = Instant::now();
        let address = pool.wait_for_generation(&[1, 2, 3, 4], 0, KEYGEN).await;
        eprintln!("keygen 3-of-4: {:.1}s", t.elapsed().as_secs_f64());
        let mpc: Address = address.parse().unwrap();
        pool.set_mpc_address(mpc).await;
        pool.provider
            .raw_request::<_, serde_json::Value>(
                "anvil_setBalance".into(),
                (mpc, U256::from(100u128 * GWEI_PER_ETH * GWEI_PER_ETH)),
            )
            .await
            .unwrap();
        pool.anvil.mine(1).await.unwrap();
        let reader = L1Reader::new(
            pool.provider.clone(),
            pool.deployment,
            pool.l1.confirmations,
        );
        let scenario = Scenario {
            reader,
            key_id: KeyId::new(KEY).unwrap(),
            mpc,
            settings,
            schedule,
            pool,
        };
        // The arrangement holds on the real committee and stakes.
        let key = scenario.pool.node(1).key().unwrap();
        let committee: Vec<NodeId> = key
            .committee
            .iter()
            .map(|h| NodeId::from_hex(h).unwrap())
            .collect();
        assert_eq!(key.threshold, 3);
        let view = scenario.view().await;
        let order = scenario.order(&view);
        let at = |n: NodeId| committee.iter().position(|m| *m == n).unwrap();
        for (i, n) in order.iter().enumerate() {
            assert_eq!(
                at(*n),
                (at(order[0]) + i) % committee.len(),
                "the producer order is not a rotation of committee order"
            );
        }
        Some(Mutex::new(scenario))
    }

    fn node(&self, k: u8) -> &node_shell::Node {
        self.pool.node(k)
    }

    fn k_of(&self, n: NodeId) -> u8 {
        (1..=MEMBERS).find(|k| id(*k) == n).expect("a member")
    }

    fn running(&self) -> Vec<u8> {
        (1..=MEMBERS)
            .filter(|k| self.pool.nodes[usize::from(*k)].is_some())
            .collect()
    }

    /// The confirmed view the nodes read.
    async fn view(&self) -> L1View {
        self.reader.latest().await.unwrap()
    }

    /// The producer order of the epoch of `view`'s next batch, over the committed pool.
    fn order(&self, view: &L1View) -> Vec<NodeId> {
        let k = self.running()[0];
        let members: Vec<(NodeId, u128)> = self
            .node(k)
            .pool_state()
            .unwrap()
            .members
            .iter()
            .map(|m| (m.node, u128::from(m.stake)))
            .collect();
        let epoch = self.schedule.epoch_of(view.next_l2_block).unwrap();
        self.schedule.order(&members, epoch)
    }

    /// Node `down` stopped, every other member running.
    async fn all_up_but(&mut self, down: u8) {
        self.pool.stop(down).await;
        for k in 1..=MEMBERS {
            if k != down && self.pool.nodes[usize::from(k)].is_none() {
                self.pool.start(k).await;
            }
        }
    }

    /// Mines until the confirmed height is `confirmed`.
    async fn mine_to(&self, confirmed: u64) {
        let head = self.pool.head().await;
        let target = confirmed + self.pool.l1.confirmations;
        assert!(head <= target, "L1 head {head} is already past {target}");
        if head < target {
            self.pool.anvil.mine(target - head).await.unwrap();
        }
    }

    /// The batch `view` calls for next, as any member builds it (what the producer of
    /// that moment proposes).
    async fn proposal(&self, view: &L1View) -> (BatchProposal, TxEip1559) {
        let k = self.running()[0];
        let duty = self.node(k).batch_duty().expect("[batches]");
        let nonce = batch::pool_nonce(&self.pool.provider, self.mpc, view.height)
            .await
            .unwrap();
        batch::next_proposal(
            view,
            nonce,
            duty.policy(),
            &DemoL2::new(self.settings.demo_l2_tag.clone()),
            view.next_l2_block + self.settings.max_batch_blocks - 1,
            self.settings.fees,
        )
        .await
        .unwrap()
    }

    /// Node `k` and the next `t - 1` members in committee order: who signs with `k`
    /// (passed explicitly, so the runs here do not depend on how a proposer picks its
    /// signers).
    fn signers_of(&self, k: u8) -> Vec<NodeId> {
        let any = *self
            .running()
            .iter()
            .find(|j| **j != k)
            .expect("a member up");
        let key = self.node(any).key().expect("a share");
        let committee: Vec<NodeId> = key
            .committee
            .iter()
            .map(|h| NodeId::from_hex(h).unwrap())
            .collect();
        let at = committee.iter().position(|m| *m == id(k)).unwrap();
        (0..usize::from(key.threshold))
            .map(|i| committee[(at + i) % committee.len()])
            .collect()
    }

    fn key_info(&self, k: u8) -> PublicKeyInfo {
        self.node(k)
            .pool_node()
            .share(&self.key_id)
            .expect("a share")
            .public_info()
    }

    /// Node `k`'s own follower check of `request` from `proposer`, typed.
    async fn check(&self, k: u8, proposer: u8, request: &[u8]) -> Result<(), BatchRejection> {
        let duty = self.node(k).batch_duty().expect("[batches]");
        duty.check_batch(id(proposer), request, &self.key_info(k))
            .await
            .map(|_| ())
    }

    /// Waits until every node in `ks` shows (`/status` `batch_producer`) a producer view
    /// for which `ok` holds.
    async fn wait_status(&self, what: &str, ks: &[u8], ok: impl Fn(&ProducerView) -> bool) {
        let started = Instant::now();
        loop {
            let views: Vec<(u8, Option<ProducerView>)> = ks
                .iter()
                .map(|k| (*k, self.node(*k).status().batch_producer))
                .collect();
            if views.iter().all(|(_, v)| v.as_ref().is_some_and(&ok)) {
                return;
            }
            assert!(
                started.elapsed() < LIMIT,
                "{what}: not shown after {LIMIT:?}; the nodes show {views:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn inbox(&self) -> Vec<InboxBatch> {
        inbox_batches(&self.pool.provider, self.pool.deployment.inbox, self.mpc)
            .await
            .unwrap()
    }

    async fn pool_nonce(&self) -> u64 {
        self.pool
            .provider
            .get_transaction_count(self.mpc)
            .await
            .unwrap()
    }

    /// The epoch's producer stops; L1 moves one stall window past the last batch; the
    /// first fallback proposes, the members that are up co-sign, the batch is appended.
    /// Returns once the inbox holds it (not yet confirmed for the nodes: the next block
    /// is not mined).
    async fn stall_until_the_fallback_appends(&mut self) -> Failover {
        let before = self.view().await;
        let since = before
            .stall_clock_start()
            .expect("the MPC address is registered");
        assert!(
            before.height < since + STALL,
            "a stall is already under way: {before:?}"
        );
        let order = self.order(&before);
        let (producer, fallback) = (self.k_of(order[0]), self.k_of(order[1]));
        self.all_up_but(producer).await;
        let up = self.running();
        self.wait_status("every node in sync, the producer at level 0", &up, |v| {
            v.l1_height == before.height && v.fallback_level == 0
        })
        .await;
        let (late, _) = self.proposal(&before).await;
        let stalls_before: Vec<(u8, u64)> = up
            .iter()
            .map(|k| (*k, metric(self.node(*k), STALLS)))
            .collect();
        let appended_before = self.inbox().await.len();

        self.mine_to(since + STALL).await;
        let started = Instant::now();
        let appended = loop {
            let inbox = self.inbox().await;
            if let Some(b) = inbox.iter().find(|b| b.first_block == before.next_l2_block) {
                assert_eq!(inbox.len(), appended_before + 1, "{inbox:?}");
                break b.clone();
            }
            assert!(
                started.elapsed() < LIMIT,
                "no batch from block {} after {LIMIT:?}; the nodes show {:#?}",
                before.next_l2_block,
                up.iter()
                    .map(|k| self.node(*k).status())
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        Failover {
            producer,
            fallback,
            since,
            late,
            appended,
            stalls_before,
        }
    }
}

// ------------------------------------------------------------------ the tests

#[test]
fn a_fallback_producer_appends_the_range_after_the_stall_window() {
    run(async |sc: &mut Scenario| {
        let f = sc.stall_until_the_fallback_appends().await;
        let (p_id, f_id) = (id(f.producer).to_hex(), id(f.fallback).to_hex());
        let up = sc.running();
        assert!(!up.contains(&f.producer));

        // The inbox holds the range the stalled producer was due to propose, sent by the
        // pool's MPC address, in a block after the window.
        let b = &f.appended;
        assert_eq!(
            (b.epoch, b.first_block, b.last_block),
            (f.late.epoch, f.late.first_block, f.late.last_block)
        );
        assert!(b.verified, "sent by {}, not the MPC address", b.from);
        assert!(b.l1_block > f.since + STALL, "{b:?} since {}", f.since);

        // The fallback produced it: its last batch is that transaction, included.
        let started = Instant::now();
        while sc
            .node(f.fallback)
            .status()
            .last_batch
            .is_none_or(|s| s.tx_hash != b.tx_hash)
        {
            assert!(
                started.elapsed() < LIMIT,
                "{:?}",
                sc.node(f.fallback).status()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mine = sc.node(f.fallback).status().last_batch.unwrap();
        assert!(mine.included);
        assert_eq!(mine.range, (b.first_block, b.last_block));
        for k in up.iter().filter(|k| **k != f.fallback) {
            let other = sc.node(*k).status().last_batch;
            assert!(
                other.is_none_or(|s| s.tx_hash != b.tx_hash),
                "node {k} claims the batch"
            );
        }

        // Until the append is confirmed, every node shows the fallback at level 1, and
        // counted the stall.
        sc.wait_status("the fallback at level 1", &up, |v| {
            v.producer == f_id && v.fallback_level == 1 && v.next_l2_block == b.first_block
        })
        .await;
        for (k, before) in &f.stalls_before {
            let node = sc.node(*k);
            assert_eq!(metric(node, FALLBACK_LEVEL), 1);
            assert_eq!(metric(node, STALLS), before + 1, "node {k}");
        }

        // Confirmed: the clock restarts at the append, the epoch's producer is back at
        // level 0 (it is still down: the next batch waits for the next window).
        sc.pool.anvil.mine(1).await.unwrap();
        sc.wait_status("the epoch's producer at level 0 again", &up, |v| {
            v.producer == p_id && v.fallback_level == 0 && v.next_l2_block == b.last_block + 1
        })
        .await;
        for k in &up {
            assert_eq!(metric(sc.node(*k), FALLBACK_LEVEL), 0);
        }
        let view = sc.view().await;
        let last = view.last_batch.unwrap();
        assert_eq!(last.batch_hash, f.late.batch_hash);
        assert_eq!(view.stall_clock_start(), Some(b.l1_block));
    });
}

#[test]
fn a_fallback_proposal_before_the_stall_window_is_refused_by_followers() {
    run(async |sc: &mut Scenario| {
        let before = sc.view().await;
        let since = before.stall_clock_start().expect("registered");
        assert!(
            before.height < since + STALL,
            "a stall is already under way: {before:?}"
        );
        let order = sc.order(&before);
        let (producer, fallback) = (sc.k_of(order[0]), sc.k_of(order[1]));
        sc.all_up_but(producer).await;
        let up = sc.running();
        let followers: Vec<u8> = up.iter().copied().filter(|k| *k != fallback).collect();

        // The producer is down and L1 is one block short of the window.
        sc.mine_to(since + STALL - 1).await;
        let view = sc.view().await;
        assert_eq!(view.height, since + STALL - 1);
        assert_eq!(sc.schedule.level(since, view.height, order.len()), 0);
        // (one block later it would be the fallback's turn)
        assert_eq!(sc.schedule.level(since, view.height + 1, order.len()), 1);
        let p_id = id(producer).to_hex();
        sc.wait_status("the epoch's producer at level 0", &up, |v| {
            v.producer == p_id && v.fallback_level == 0 && v.l1_height == view.height
        })
        .await;

        // The fallback proposes the next batch anyway.
        let (proposal, tx) = sc.proposal(&view).await;
        for k in &followers {
            assert_eq!(
                sc.check(*k, fallback, &proposal.encode()).await,
                Err(BatchRejection::NotProducer {
                    proposer: id(fallback),
                    producer: Some(id(producer)),
                }),
                "node {k}"
            );
        }
        let signatures: Vec<u64> = followers
            .iter()
            .map(|k| sc.node(*k).metrics().signatures())
            .collect();
        let stalls: Vec<u64> = followers
            .iter()
            .map(|k| metric(sc.node(*k), STALLS))
            .collect();
        let (inbox, nonce) = (sc.inbox().await.len(), sc.pool_nonce().await);

        // An honest fallback does not even send it: its own check refuses first.
        let err = batch::sign_and_submit(
            sc.node(fallback).pool_node(),
            &sc.key_id,
            &proposal,
            tx.clone(),
            &sc.pool.provider,
        )
        .await
        .expect_err("the fallback's own check refuses");
        match &err {
            SubmitError::Pool(TssError::InvalidProposal { from, reason }) => {
                assert_eq!(*from, id(fallback), "{err}");
                assert!(reason.contains("is not the block producer"), "{err}");
            }
            other => panic!("not the fallback's own refusal: {other}"),
        }

        // A fallback that proposes it anyway (its own check skipped): the followers
        // refuse.
        // With the producer down, the fallback's signers are exactly the members that
        // are up: the fallback and every follower.
        let signers = sc.signers_of(fallback);
        let mut asked: Vec<NodeId> = signers.clone();
        asked.sort();
        let mut members_up: Vec<NodeId> = up.iter().map(|k| id(*k)).collect();
        members_up.sort();
        assert_eq!(asked, members_up);
        let impostor = sc.pool.start_impostor(fallback).await;
        let seen: Vec<_> = followers
            .iter()
            .map(|k| (*k, refusals(sc.node(*k).pool_node())))
            .collect();
        let err = impostor
            .propose_sign(&sc.key_id, proposal.encode(), Some(signers))
            .await
            .expect_err("a fallback before its window is refused");
        impostor.shutdown();
        drop(impostor);
        match &err {
            TssError::Aborted { by, reason, .. } => {
                assert!(followers.contains(&sc.k_of(*by)), "{err}");
                assert!(reason.contains("is not the block producer"), "{err}");
            }
            other => panic!("not a follower's refusal: {other}"),
        }
        // Every follower refused it for that reason.
        for (k, seen) in &seen {
            wait_refusal(seen, "is not the block producer", LIMIT).await;
            assert!(
                seen.lock()
                    .iter()
                    .all(|r| r.contains(&id(fallback).to_string())),
                "node {k}: {:?}",
                seen.lock()
            );
        }
        // Nothing signed, nothing sent, nothing appended; no stall was counted.
        for (i, k) in followers.iter().enumerate() {
            assert_eq!(
                sc.node(*k).metrics().signatures(),
                signatures[i],
                "node {k}"
            );
            assert_eq!(metric(sc.node(*k), STALLS), stalls[i]);
        }
        assert_eq!(sc.pool_nonce().await, nonce);
        assert_eq!(sc.inbox().await.len(), inbox);
    });
}

#[test]
fn the_stalled_producers_late_proposal_for_the_same_range_is_refused() {
    run(async |sc: &mut Scenario| {
        let f = sc.stall_until_the_fallback_appends().await;
        let (first, last) = (f.late.first_block, f.late.last_block);
        assert_eq!(
            (f.appended.first_block, f.appended.last_block),
            (first, last)
        );
        sc.pool.anvil.mine(1).await.unwrap();
        let p_id = id(f.producer).to_hex();
        let in_sync = |v: &ProducerView| {
            v.producer == p_id && v.fallback_level == 0 && v.next_l2_block == last + 1
        };
        let up = sc.running();
        sc.wait_status("the append confirmed", &up, in_sync).await;

        // The stalled producer comes back; it is the epoch's producer again (level 0).
        sc.pool.start(f.producer).await;
        sc.wait_status("the producer back in sync", &[f.producer], in_sync)
            .await;
        let followers: Vec<u8> = sc
            .running()
            .into_iter()
            .filter(|k| *k != f.producer)
            .collect();

        // Its late proposal (the batch it was due to propose before it stalled), and the
        // same range at the pool's current nonce: each follower's own check refuses both
        // as a replay of what L1 holds.
        let view = sc.view().await;
        let since = view.stall_clock_start().unwrap();
        assert_eq!(sc.schedule.level(since, view.height, MEMBERS.into()), 0);
        assert_eq!(sc.order(&view)[0], id(f.producer));
        let nonce = sc.pool_nonce().await;
        let mut renonced = f.late.clone();
        renonced.nonce = nonce;
        let duty = sc.node(f.producer).batch_duty().unwrap();
        let renonced_tx = batch::batch_tx(duty.policy(), &renonced);
        renonced.tx = Bytes::from(batch::signing_message(&renonced_tx));
        assert!(f.late.nonce < nonce);
        for k in &followers {
            for p in [&f.late, &renonced] {
                assert_eq!(
                    sc.check(*k, f.producer, &p.encode()).await,
                    Err(BatchRejection::Replayed {
                        first_block: first,
                        last_block: last,
                    }),
                    "node {k}, nonce {}",
                    p.nonce
                );
            }
        }

        // The producer itself does not send it: its own check refuses first.
        let inbox = sc.inbox().await.len();
        let err = batch::sign_and_submit(
            sc.node(f.producer).pool_node(),
            &sc.key_id,
            &renonced,
            renonced_tx.clone(),
            &sc.pool.provider,
        )
        .await
        .expect_err("the producer's own check refuses a replay");
        let replayed = format!("replayed batch [{first}, {last}]");
        match &err {
            SubmitError::Pool(TssError::InvalidProposal { from, reason }) => {
                assert_eq!(*from, id(f.producer), "{err}");
                assert!(reason.contains(&replayed), "{err}");
            }
            other => panic!("not the producer's own refusal: {other}"),
        }

        // A node proposing as the producer, unchecked by itself (the stalled producer's
        // late proposal): the followers refuse, nothing is signed or appended.
        let signatures: Vec<(u8, u64)> = followers
            .iter()
            .map(|k| (*k, sc.node(*k).metrics().signatures()))
            .collect();
        let impostor = sc.pool.start_impostor(f.producer).await;
        let seen: Vec<_> = followers
            .iter()
            .map(|k| (*k, refusals(sc.node(*k).pool_node())))
            .collect();
        let signers = sc.signers_of(f.producer);
        let err = impostor
            .propose_sign(&sc.key_id, renonced.encode(), Some(signers.clone()))
            .await
            .expect_err("a replay is refused");
        impostor.shutdown();
        drop(impostor);
        match &err {
            TssError::Aborted { by, reason, .. } => {
                assert!(followers.contains(&sc.k_of(*by)), "{err}");
                assert!(reason.contains(&replayed), "{err}")
            }
            other => panic!("not a follower's refusal: {other}"),
        }
        // Every follower it asked refused it as a replay.
        for (k, seen) in &seen {
            if signers.contains(&id(*k)) {
                wait_refusal(seen, &replayed, LIMIT).await;
            }
        }
        for (k, before) in &signatures {
            assert_eq!(sc.node(*k).metrics().signatures(), *before, "node {k}");
        }
        assert_eq!(sc.pool_nonce().await, nonce);
        assert_eq!(sc.inbox().await.len(), inbox);

        // The inbox itself refuses the range again, even from the MPC address: the call
        // reverts with BlockRangeOverlap, and a mined transaction reverts.
        let inbox_contract = BatchInbox::new(sc.pool.deployment.inbox, sc.pool.provider.clone());
        let call = inbox_contract.appendBatch(f.late.epoch, first, last, f.late.batch_hash);
        let refused = call
            .clone()
            .from(sc.mpc)
            .call()
            .await
            .expect_err("the inbox refuses a range twice");
        match refused.as_decoded_interface_error::<BatchInbox::BatchInboxErrors>() {
            Some(BatchInbox::BatchInboxErrors::BlockRangeOverlap(e)) => {
                assert_eq!((e.expected, e.firstBlock), (last + 1, first));
            }
            other => panic!("not BlockRangeOverlap: {other:?} ({refused})"),
        }
        let provider = &sc.pool.provider;
        provider
            .raw_request::<_, serde_json::Value>("anvil_impersonateAccount".into(), (sc.mpc,))
            .await
            .unwrap();
        let tx = call.from(sc.mpc).gas(200_000).into_transaction_request();
        let sent = send_and_confirm(provider, "appendBatch", tx).await;
        provider
            .raw_request::<_, serde_json::Value>("anvil_stopImpersonatingAccount".into(), (sc.mpc,))
            .await
            .unwrap();
        assert!(matches!(sent, Err(L1Error::Reverted { .. })), "{sent:?}");
        // The fallback's signed transaction sent again is refused too (nonce used).
        let raw: Bytes = provider
            .raw_request(
                "eth_getRawTransactionByHash".into(),
                (f.appended.tx_hash.clone(),),
            )
            .await
            .unwrap();
        assert!(batch::submit(provider, &raw).await.is_err());
        let batches = sc.inbox().await;
        assert_eq!(batches.len(), inbox);
        assert_eq!(
            batches.iter().filter(|b| b.first_block == first).count(),
            1,
            "{batches:?}"
        );
    });
}

#[test]
fn the_turn_goes_round_the_order_when_the_last_fallback_is_down() {
    run(async |sc: &mut Scenario| {
        // The whole pool is down for longer than every member's window (an outage, or
        // the members' L1 endpoints unreachable); only the last member in the order
        // does not come back.
        let before = sc.view().await;
        let since = before
            .stall_clock_start()
            .expect("the MPC address is registered");
        assert!(
            before.height < since + STALL,
            "a stall is already under way: {before:?}"
        );
        let order = sc.order(&before);
        let n = order.len() as u64;
        let last = sc.k_of(order[order.len() - 1]);
        let producer = sc.k_of(order[0]);
        for k in 1..=MEMBERS {
            sc.pool.stop(k).await;
        }
        sc.mine_to(since + (n - 1) * STALL).await;
        for k in (1..=MEMBERS).filter(|k| *k != last) {
            sc.pool.start(k).await;
        }
        let up = sc.running();
        let last_id = id(last).to_hex();
        sc.wait_status("the last member's turn", &up, |v| {
            v.producer == last_id && v.fallback_level == n - 1
        })
        .await;
        let inbox = sc.inbox().await.len();

        // One more window: the epoch's producer's turn again, and the pool moves on.
        sc.mine_to(since + n * STALL).await;
        let p_id = id(producer).to_hex();
        let started = Instant::now();
        let appended = loop {
            let batches = sc.inbox().await;
            if let Some(b) = batches
                .iter()
                .find(|b| b.first_block == before.next_l2_block)
            {
                assert_eq!(batches.len(), inbox + 1, "{batches:?}");
                break b.clone();
            }
            assert!(
                started.elapsed() < LIMIT,
                "no batch after {LIMIT:?}; the nodes show {:#?}",
                up.iter().map(|k| sc.node(*k).status()).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(appended.verified);
        assert!(appended.l1_block > since + n * STALL);
        // Sent by the epoch's producer.
        let started = Instant::now();
        while sc
            .node(producer)
            .status()
            .last_batch
            .is_none_or(|s| s.tx_hash != appended.tx_hash)
        {
            assert!(
                started.elapsed() < LIMIT,
                "{:?}",
                sc.node(producer).status()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        sc.pool.anvil.mine(1).await.unwrap();
        sc.wait_status("level 0 after the batch", &up, |v| {
            v.producer == p_id
                && v.fallback_level == 0
                && v.next_l2_block == appended.last_block + 1
        })
        .await;
    });
}

#[test]
fn only_the_likely_producers_refill_presignatures() {
    run(async |sc: &mut Scenario| {
        for k in 1..=MEMBERS {
            if sc.pool.nodes[usize::from(k)].is_none() {
                sc.pool.start(k).await;
            }
        }
        let all: Vec<u8> = (1..=MEMBERS).collect();
        // A quiet L1, so the likely producers stay put: the producer's cadence passes,
        // it appends a batch, and one more block confirms it for the nodes. Nothing sends
        // an L1 transaction again until a block is mined (anvil mines only then).
        let before = sc.inbox().await.len();
        let view = sc.view().await;
        sc.mine_to(view.height + INTERVAL).await;
        let started = Instant::now();
        while sc.inbox().await.len() == before {
            assert!(started.elapsed() < LIMIT, "the producer did not append");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        sc.pool.anvil.mine(1).await.unwrap();
        let quiet = sc.view().await;
        let since = quiet.stall_clock_start().expect("registered");
        assert!(
            quiet.height < since + INTERVAL,
            "the last batch is confirmed and nobody's cadence has passed: {quiet:?}"
        );
        sc.wait_status("the quiet view", &all, |v| v.l1_height == quiet.height)
            .await;
        let likely_hex = sc.node(1).status().batch_producer.unwrap().likely_producers;
        let likely: Vec<u8> = all
            .iter()
            .copied()
            .filter(|k| likely_hex.contains(&id(*k).to_hex()))
            .collect();
        let unlikely: Vec<u8> = all
            .iter()
            .copied()
            .filter(|k| !likely.contains(k))
            .collect();
        assert!(!unlikely.is_empty(), "at most 3 of 4 members are likely");
        // Every member restarts wanting a presignature: the likely ones first, watched,
        // then the others, so any presign run one of them starts shows at a likely one
        // (each run has 3 of the 4 members, so at least one likely member).
        for k in 1..=MEMBERS {
            sc.pool.stop(k).await;
        }
        sc.pool.presignatures = 1;
        let mut watched = Vec::new();
        for k in &likely {
            let node = sc.pool.start(*k).await;
            watched.push(node.pool_node().subscribe());
        }
        for k in &unlikely {
            sc.pool.start(*k).await;
        }
        let started = Instant::now();
        let mut filled = false;
        while started.elapsed() < LIMIT {
            if likely
                .iter()
                .all(|k| sc.node(*k).pool_node().presignatures_ready(&sc.key_id) >= 1)
            {
                filled = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut proposers = std::collections::BTreeSet::new();
        let mut lagged = 0;
        for events in &mut watched {
            loop {
                match events.try_recv() {
                    Ok(tss_core::pool::PoolEvent::RunStarted {
                        protocol: tss_core::ProtocolKind::Presign,
                        proposer,
                        ..
                    }) => {
                        proposers.insert(sc.k_of(proposer));
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::TryRecvError::Lagged(n)) => lagged += n,
                    Err(_) => break,
                }
            }
        }
        let held: Vec<(u8, usize)> = unlikely
            .iter()
            .map(|k| (*k, sc.node(*k).pool_node().presignatures_ready(&sc.key_id)))
            .collect();
        let shown: Vec<(u8, Vec<String>)> = all
            .iter()
            .map(|k| {
                (
                    *k,
                    sc.node(*k)
                        .status()
                        .batch_producer
                        .unwrap()
                        .likely_producers,
                )
            })
            .collect();
        // The other tests run without presignatures: restored before any assertion.
        for k in 1..=MEMBERS {
            sc.pool.stop(k).await;
        }
        sc.pool.presignatures = 0;
        for k in 1..=MEMBERS {
            sc.pool.start(k).await;
        }
        assert!(
            filled,
            "the likely producers {likely:?} did not all make a presignature"
        );
        assert_eq!(lagged, 0, "pool events missed: the check would be blind");
        for (k, held) in held {
            assert!(
                !proposers.contains(&k),
                "node {k} is not a likely producer ({likely:?}) but proposed a presign run"
            );
            assert_eq!(held, 0, "node {k} holds no presignature");
        }
        // The view did not move meanwhile: the same likely producers at every node.
        for (k, shown) in shown {
            assert_eq!(shown, likely_hex, "node {k}'s likely producers");
        }
    })
}
