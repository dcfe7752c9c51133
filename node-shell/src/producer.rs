//! Batches: the epoch producer's loop, and the check every follower runs before it
//! co-signs a batch.
//!
//! Who produces is [`crate::schedule`]'s answer for the inbox's next L2 block, over the
//! members and stakes committed with the current key generation (derived from L1), at
//! the node's confirmed L1 height: the epoch's producer, or after a stall a fallback.
//! The producer builds the batch ([`crate::batch::next_proposal`]), the pool signs it (every
//! follower runs [`BatchDuty::check`], which rebuilds the transaction from its own L1
//! view, policy and L2 source and signs only that), and the producer sends it to L1 and
//! waits for the receipt. It proposes the next range only once its confirmed view shows
//! the last one appended, so it never signs the same range twice.

use std::sync::Arc;
use std::time::Duration;

use alloy::providers::Provider;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use transport::NodeId;
use tss_core::pool::{PoolNode, SignProposal, SigningInput};
use tss_core::{EthAddress, KeyId, PublicKeyInfo};

use crate::batch::{self, BatchPolicy, DemoL2, L2Source};
use crate::config::BatchSettings;
use crate::coordinator::PoolState;
use crate::error::{Error, Result};
use crate::l1::contracts::BatchInbox;
use crate::l1::view::{L1Reader, L1View};
use crate::metrics::{BatchStage, KeyMetrics, Metrics};
use crate::schedule::Schedule;

/// The producer and its failover level for the inbox's next batch at one L1 height.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerView {
    /// The L1 height this was computed at.
    pub l1_height: u64,
    /// The epoch of the inbox's next L2 block.
    pub epoch: u64,
    /// The member allowed to propose it now.
    pub producer: String,
    /// 0: the epoch's own producer; n: the n-th fallback after n stall windows (after
    /// the last member, round the order again: level 0 after as many windows as members).
    pub fallback_level: u64,
    /// The first L2 block of the next batch.
    pub next_l2_block: u64,
    /// The members likely to propose the next batches
    /// ([`Schedule::likely_producers`]): only these keep presignatures ready.
    pub likely_producers: Vec<String>,
    /// Batches in the inbox.
    pub batch_count: u64,
}

/// Batch duties of one node: what it needs to produce and to check batches.
pub struct BatchDuty {
    me: NodeId,
    key_id: KeyId,
    policy: BatchPolicy,
    schedule: Schedule,
    settings: BatchSettings,
    l2: Arc<dyn L2Source>,
    l1: Arc<L1Reader>,
    state: Arc<Mutex<Option<PoolState>>>,
    metrics: KeyMetrics,
    last: Mutex<Option<ProducerView>>,
    /// The last L2 block of the last batch this node submitted successfully: it waits
    /// for its confirmed view to pass it before proposing again.
    submitted_up_to: Mutex<Option<u64>>,
    /// The last batch this node submitted: L1 tx hash and range.
    last_submitted: Mutex<Option<SubmittedView>>,
}

/// A batch this node produced and sent.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SubmittedView {
    /// L1 transaction hash.
    pub tx_hash: String,
    /// `[first, last]` L2 blocks.
    pub range: (u64, u64),
    /// Mined with success.
    pub included: bool,
}

impl std::fmt::Debug for BatchDuty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchDuty")
            .field("me", &self.me)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl BatchDuty {
    /// Reads the chain id and the inbox's genesis block from this node's own L1 node
    /// and sets up the policy, the schedule (seeded with `seed`) and the demo L2.
    pub async fn connect(
        me: NodeId,
        key_id: KeyId,
        settings: BatchSettings,
        seed: [u8; 32],
        l1: Arc<L1Reader>,
        state: Arc<Mutex<Option<PoolState>>>,
        metrics: Arc<Metrics>,
    ) -> Result<Self> {
        let provider = l1.provider().clone();
        let chain_id = provider
            .get_chain_id()
            .await
            .map_err(|e| crate::l1::L1Error::rpc("eth_chainId", e))?;
        let inbox = BatchInbox::new(l1.deployment().inbox, provider);
        let genesis = inbox
            .genesisBlock()
            .call()
            .await
            .map_err(|e| crate::l1::L1Error::rpc("BatchInbox.genesisBlock", e))?;
        let policy = BatchPolicy {
            chain_id,
            inbox: l1.deployment().inbox,
            l2_genesis_block: genesis,
            epoch_length: settings.epoch_blocks,
            max_fee_per_gas_cap: settings.max_fee_cap,
            max_priority_fee_cap: settings.max_priority_fee_cap,
            min_gas_limit: settings.gas_limit_bounds.0,
            max_gas_limit: settings.gas_limit_bounds.1,
        };
        let schedule = Schedule {
            seed,
            genesis_l2_block: genesis,
            epoch_length: settings.epoch_blocks,
            stall_window: settings.stall_l1_blocks,
        };
        Ok(Self {
            metrics: metrics.for_key(key_id.as_str()),
            me,
            key_id,
            policy,
            schedule,
            l2: Arc::new(DemoL2::new(settings.demo_l2_tag.clone())),
            settings,
            l1,
            state,
            last: Mutex::new(None),
            submitted_up_to: Mutex::new(None),
            last_submitted: Mutex::new(None),
        })
    }

    /// The policy every follower applies.
    pub fn policy(&self) -> &BatchPolicy {
        &self.policy
    }

    /// The producer of the inbox's next batch at `view`'s height, over the committed
    /// members; `None` before keygen, before the MPC address is registered, or before the
    /// inbox's genesis.
    pub fn producer_at(&self, view: &L1View) -> Option<ProducerView> {
        let members: Vec<(NodeId, u128)> = self
            .state
            .lock()
            .as_ref()?
            .members
            .iter()
            .map(|m| (m.node, u128::from(m.stake)))
            .collect();
        let since = view.stall_clock_start()?;
        let epoch = self.schedule.epoch_of(view.next_l2_block)?;
        let order = self.schedule.order(&members, epoch);
        let level = self.schedule.level(since, view.height, order.len());
        Some(ProducerView {
            l1_height: view.height,
            epoch,
            producer: order.get(level)?.to_hex(),
            fallback_level: level as u64,
            next_l2_block: view.next_l2_block,
            likely_producers: self
                .schedule
                .likely_producers(&members, epoch, level)
                .iter()
                .map(NodeId::to_hex)
                .collect(),
            batch_count: view.batch_count,
        })
    }

    /// The follower's check of a batch signing proposal from `proposer`: at this node's
    /// own latest confirmed L1 view, the key is the registered MPC address, the proposer
    /// is the producer the schedule names now (epoch producer or, after a stall visible
    /// here, the fallback), the range continues the inbox, nonce and fees are what this
    /// node's view and policy say, the commitment matches this node's L2; the message
    /// signed is the transaction this node built itself.
    pub async fn check(
        &self,
        proposer: NodeId,
        p: &SignProposal,
        key: &PublicKeyInfo,
    ) -> std::result::Result<SigningInput, String> {
        self.check_batch(proposer, &p.request, key)
            .await
            .map_err(|e| e.to_string())
    }

    /// [`BatchDuty::check`] of a bare request, with the typed refusal: what this node's
    /// validator answers when `proposer` asks it to co-sign `request` now.
    pub async fn check_batch(
        &self,
        proposer: NodeId,
        request: &[u8],
        key: &PublicKeyInfo,
    ) -> std::result::Result<SigningInput, batch::BatchRejection> {
        let view = self
            .l1
            .latest()
            .await
            .map_err(|e| batch::BatchRejection::L1(e.to_string()))?;
        let producer = self.producer_at(&view);
        batch::check_request(
            request,
            proposer,
            key,
            &view,
            self.l1.provider(),
            &self.policy,
            |_epoch| {
                producer
                    .as_ref()
                    .and_then(|p| NodeId::from_hex(&p.producer).ok())
            },
            &*self.l2,
        )
        .await
    }

    /// Whether `me` should keep presignatures ready: it is one of the likely producers
    /// at the producer loop's last look at L1 (false before there is a producer: before
    /// keygen, the MPC address's registration or the inbox's genesis).
    pub fn presignatures_wanted(&self, me: NodeId) -> bool {
        let me = me.to_hex();
        self.last
            .lock()
            .as_ref()
            .is_some_and(|view| view.likely_producers.contains(&me))
    }

    /// What `GET /status` shows: the current producer (as last computed by the loop)
    /// and this node's last batch.
    pub fn status(&self) -> (Option<ProducerView>, Option<SubmittedView>) {
        (self.last.lock().clone(), self.last_submitted.lock().clone())
    }

    /// One round of the producer loop: if this node is the producer now, propose the
    /// next batch, have the pool sign it, send it and wait for the receipt.
    pub async fn produce_once(&self, pool_node: &PoolNode) -> Result<Option<SubmittedView>> {
        let Some(share) = pool_node.share(&self.key_id) else {
            return Ok(None);
        };
        let view = self.l1.latest().await?;
        let Some(producer) = self.producer_at(&view) else {
            *self.last.lock() = None;
            return Ok(None);
        };
        self.metrics.set_fallback_level(producer.fallback_level);
        *self.last.lock() = Some(producer.clone());
        if producer.producer != self.me.to_hex() {
            return Ok(None);
        }
        let address: EthAddress = share.ethereum_address();
        if view.mpc_address != Some(address.into()) {
            return Ok(None);
        }
        // Cadence: wait `interval_l1_blocks` after the last appended batch.
        let since = view.stall_clock_start().unwrap_or(view.height);
        if view.height < since.saturating_add(self.settings.interval_l1_blocks) {
            return Ok(None);
        }
        if self
            .submitted_up_to
            .lock()
            .is_some_and(|up_to| view.next_l2_block <= up_to)
        {
            // Our last batch is not in the confirmed view yet.
            return Ok(None);
        }
        let nonce = batch::pool_nonce(self.l1.provider(), address.into(), view.height).await?;
        let last_block = view
            .next_l2_block
            .saturating_add(self.settings.max_batch_blocks - 1);
        let (proposal, tx) = batch::next_proposal(
            &view,
            nonce,
            &self.policy,
            &*self.l2,
            last_block,
            self.settings.fees,
        )
        .await
        .map_err(|e| Error::Internal(format!("cannot build the next batch: {e}")))?;
        self.metrics.batch(BatchStage::Proposed);
        tracing::info!(
            epoch = proposal.epoch,
            first = proposal.first_block,
            last = proposal.last_block,
            level = producer.fallback_level,
            key = %self.key_id,
            "proposing batch"
        );
        let range = (proposal.first_block, proposal.last_block);
        let submitted = match batch::sign_and_submit(
            pool_node,
            &self.key_id,
            &proposal,
            tx,
            self.l1.provider(),
        )
        .await
        {
            Ok(s) => s,
            Err(batch::SubmitError::Pool(e)) => return Err(Error::Tss(e)),
            Err(e) => {
                // Signed but not sent, or sent without a receipt.
                self.metrics.batch(BatchStage::Signed);
                return Err(Error::Internal(format!("batch {range:?}: {e}")));
            }
        };
        self.metrics.batch(BatchStage::Signed);
        self.metrics.batch(BatchStage::Submitted);
        self.metrics.batch(if submitted.status {
            BatchStage::Included
        } else {
            BatchStage::Reverted
        });
        if submitted.status {
            *self.submitted_up_to.lock() = Some(range.1);
        }
        let out = SubmittedView {
            tx_hash: submitted.tx_hash.to_string(),
            range,
            included: submitted.status,
        };
        tracing::info!(tx = %out.tx_hash, first = range.0, last = range.1, included = out.included, key = %self.key_id, "batch sent to L1");
        *self.last_submitted.lock() = Some(out.clone());
        Ok(Some(out))
    }
}

/// The producer loop: [`BatchDuty::produce_once`] every `poll`.
pub async fn produce(duty: Arc<BatchDuty>, pool_node: PoolNode, poll: Duration) {
    loop {
        if let Err(e) = duty.produce_once(&pool_node).await {
            tracing::warn!(key = %duty.key_id, error = %e, "batch not produced; retrying");
        }
        tokio::time::sleep(poll).await;
    }
}
