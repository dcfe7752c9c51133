//! The pool as L1 records it, derived from the contracts' events up to a confirmed height.
//!
//! Every node folds the same events (`Locked`, `StakeIncreased`, `Unlocked`,
//! `RoleAddressSet` of the staking contract for the inbox's role; `BatchAppended` of the
//! inbox) from the
//! deployment block to a height `h` that is at least `confirmations` blocks below the head,
//! in (block, log index) order. Two nodes that read the same `h` derive the same
//! [`L1View`]; a restarted node derives it again from L1 (nothing is trusted from its own
//! disk); a reorg shallower than the confirmation depth cannot change it.

use std::collections::BTreeMap;

use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::{Filter, Log};
use alloy::sol_types::SolEvent;
use parking_lot::Mutex;
use transport::NodeId;

use super::contracts::{BatchInbox, Deployment, SequencerStaking};
use super::L1Error;

/// A sequencer with stake locked on L1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L1Member {
    /// Its transport identity (the `nodeId` it locked with).
    pub node: NodeId,
    /// Its L1 account.
    pub account: Address,
    /// Its locked stake, in wei.
    pub stake: U256,
}

/// The last batch the inbox accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendedBatch {
    /// Its epoch.
    pub epoch: u64,
    /// First L2 block.
    pub first_block: u64,
    /// Last L2 block.
    pub last_block: u64,
    /// Its commitment.
    pub batch_hash: B256,
    /// The L1 block that included it.
    pub l1_block: u64,
}

/// What L1 says about the pool at one confirmed height.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L1View {
    /// The L1 height this view is at (every event up to and including this block).
    pub height: u64,
    /// That block's hash (two views at the same height and hash are the same view).
    pub block_hash: B256,
    /// Locked sequencers, sorted by node id.
    pub members: Vec<L1Member>,
    /// The pool's MPC address for the inbox's role ([`Deployment::role`]), once the admin
    /// registered it: the only sender the inbox accepts.
    pub mpc_address: Option<Address>,
    /// The L1 block of the last `RoleAddressSet` of that role.
    pub mpc_address_set_at: Option<u64>,
    /// The first L2 block of the next batch the inbox will accept.
    pub next_l2_block: u64,
    /// Number of batches appended.
    pub batch_count: u64,
    /// The last appended batch, if any.
    pub last_batch: Option<AppendedBatch>,
}

impl L1View {
    /// The member locked with `node`, if any.
    pub fn member(&self, node: &NodeId) -> Option<&L1Member> {
        self.members.iter().find(|m| m.node == *node)
    }

    /// Where the producers' stall clock starts (see [`crate::schedule`]): the L1 block of
    /// the last appended batch or of the MPC address registration, whichever is later;
    /// `None` while no MPC address is registered (nothing can be appended yet).
    pub fn stall_clock_start(&self) -> Option<u64> {
        let registered = self.mpc_address_set_at?;
        Some(
            self.last_batch
                .map_or(registered, |b| b.l1_block.max(registered)),
        )
    }
}

/// Folded state, kept between reads so each read fetches only new blocks.
#[derive(Clone, Debug)]
struct Folded {
    height: u64,
    by_account: BTreeMap<Address, L1Member>,
    mpc_address: Option<Address>,
    mpc_address_set_at: Option<u64>,
    next_l2_block: u64,
    batch_count: u64,
    last_batch: Option<AppendedBatch>,
}

/// Reads [`L1View`]s from an L1 node.
#[derive(Debug)]
pub struct L1Reader {
    provider: DynProvider,
    deployment: Deployment,
    confirmations: u64,
    /// Largest block range per `eth_getLogs` call.
    log_chunk: u64,
    cache: Mutex<Option<Folded>>,
}

impl L1Reader {
    /// A reader of `deployment` through `provider`; heights count as confirmed once
    /// `confirmations` blocks are on top of them (0: the head itself).
    pub fn new(provider: DynProvider, deployment: Deployment, confirmations: u64) -> Self {
        Self {
            provider,
            deployment,
            confirmations,
            log_chunk: 10_000,
            cache: Mutex::new(None),
        }
    }

    /// The provider.
    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    /// The contracts.
    pub fn deployment(&self) -> &Deployment {
        &self.deployment
    }

    /// Confirmation depth.
    pub fn confirmations(&self) -> u64 {
        self.confirmations
    }

    /// The highest confirmed height at or after the deployment block, if any.
    pub async fn confirmed_height(&self) -> Result<Option<u64>, L1Error> {
        let head = super::head(&self.provider).await?;
        Ok(head
            .checked_sub(self.confirmations)
            .filter(|h| *h >= self.deployment.deployment_block))
    }

    /// The view at the highest confirmed height.
    pub async fn latest(&self) -> Result<L1View, L1Error> {
        let deployment = self.deployment.deployment_block;
        match self.confirmed_height().await? {
            Some(h) => self.view_at(h).await,
            None => Err(L1Error::HeightNotConfirmed {
                height: deployment,
                confirmed: None,
                deployment,
            }),
        }
    }

    /// The view at `height`, which must be confirmed (else
    /// [`L1Error::HeightNotConfirmed`]: the caller waits and asks again).
    pub async fn view_at(&self, height: u64) -> Result<L1View, L1Error> {
        let confirmed = self.confirmed_height().await?;
        let deployment = self.deployment.deployment_block;
        if height < deployment || confirmed.is_none_or(|c| height > c) {
            return Err(L1Error::HeightNotConfirmed {
                height,
                confirmed,
                deployment,
            });
        }
        let cached = self.cache.lock().clone();
        let mut state = match cached {
            Some(f) if f.height <= height => f,
            _ => self.genesis().await?,
        };
        let mut from = if state.height < deployment {
            deployment
        } else {
            state.height + 1
        };
        while from <= height {
            let to = height.min(from.saturating_add(self.log_chunk - 1));
            let filter = Filter::new()
                .address(vec![self.deployment.staking, self.deployment.inbox])
                .from_block(from)
                .to_block(to);
            let mut logs = self
                .provider
                .get_logs(&filter)
                .await
                .map_err(|e| L1Error::rpc("eth_getLogs", e))?;
            logs.sort_by_key(|l| (l.block_number, l.log_index));
            for log in &logs {
                self.apply(&mut state, log)?;
            }
            from = to + 1;
        }
        state.height = height;
        let block = self
            .provider
            .get_block_by_number(height.into())
            .await
            .map_err(|e| L1Error::rpc("eth_getBlockByNumber", e))?
            .ok_or(L1Error::Malformed {
                what: "eth_getBlockByNumber",
                reason: format!("no block {height}"),
            })?;
        *self.cache.lock() = Some(state.clone());
        let mut members: Vec<L1Member> = state.by_account.values().cloned().collect();
        members.sort_by_key(|m| m.node);
        Ok(L1View {
            height,
            block_hash: block.header.hash,
            members,
            mpc_address: state.mpc_address,
            mpc_address_set_at: state.mpc_address_set_at,
            next_l2_block: state.next_l2_block,
            batch_count: state.batch_count,
            last_batch: state.last_batch,
        })
    }

    /// The state before the deployment block's first event.
    async fn genesis(&self) -> Result<Folded, L1Error> {
        let inbox = BatchInbox::new(self.deployment.inbox, self.provider.clone());
        let role = inbox
            .role()
            .call()
            .await
            .map_err(|e| L1Error::rpc("BatchInbox.role", e))?;
        if role != self.deployment.role {
            return Err(L1Error::Malformed {
                what: "BatchInbox.role",
                reason: format!(
                    "the inbox at {} serves the role {role}, not {}",
                    self.deployment.inbox, self.deployment.role
                ),
            });
        }
        let staking = inbox
            .staking()
            .call()
            .await
            .map_err(|e| L1Error::rpc("BatchInbox.staking", e))?;
        if staking != self.deployment.staking {
            return Err(L1Error::Malformed {
                what: "BatchInbox.staking",
                reason: format!(
                    "the inbox at {} reads its sender from the staking contract {staking}, not {}",
                    self.deployment.inbox, self.deployment.staking
                ),
            });
        }
        let genesis = inbox
            .genesisBlock()
            .call()
            .await
            .map_err(|e| L1Error::rpc("BatchInbox.genesisBlock", e))?;
        Ok(Folded {
            height: self.deployment.deployment_block.saturating_sub(1),
            by_account: BTreeMap::new(),
            mpc_address: None,
            mpc_address_set_at: None,
            next_l2_block: genesis,
            batch_count: 0,
            last_batch: None,
        })
    }

    fn apply(&self, state: &mut Folded, log: &Log) -> Result<(), L1Error> {
        let Some(topic) = log.topic0().copied() else {
            return Ok(());
        };
        let malformed = |what: &'static str| {
            move |e: alloy::sol_types::Error| L1Error::Malformed {
                what,
                reason: e.to_string(),
            }
        };
        let from_staking = log.address() == self.deployment.staking;
        let from_inbox = log.address() == self.deployment.inbox;
        if from_staking && topic == SequencerStaking::Locked::SIGNATURE_HASH {
            let e = SequencerStaking::Locked::decode_log_data(log.data())
                .map_err(malformed("Locked"))?;
            state.by_account.insert(
                e.account,
                L1Member {
                    node: NodeId::from_bytes(e.nodeId.0),
                    account: e.account,
                    stake: e.amount,
                },
            );
        } else if from_staking && topic == SequencerStaking::StakeIncreased::SIGNATURE_HASH {
            let e = SequencerStaking::StakeIncreased::decode_log_data(log.data())
                .map_err(malformed("StakeIncreased"))?;
            let m = state
                .by_account
                .get_mut(&e.account)
                .ok_or(L1Error::Malformed {
                    what: "StakeIncreased",
                    reason: format!("{} has no stake locked", e.account),
                })?;
            m.stake = e.newStake;
        } else if from_staking && topic == SequencerStaking::Unlocked::SIGNATURE_HASH {
            let e = SequencerStaking::Unlocked::decode_log_data(log.data())
                .map_err(malformed("Unlocked"))?;
            state.by_account.remove(&e.account);
        } else if from_staking && topic == SequencerStaking::RoleAddressSet::SIGNATURE_HASH {
            let e = SequencerStaking::RoleAddressSet::decode_log_data(log.data())
                .map_err(malformed("RoleAddressSet"))?;
            if e.role == self.deployment.role {
                state.mpc_address = Some(e.current);
                state.mpc_address_set_at = log.block_number;
            }
        } else if from_inbox && topic == BatchInbox::BatchAppended::SIGNATURE_HASH {
            let e = BatchInbox::BatchAppended::decode_log_data(log.data())
                .map_err(malformed("BatchAppended"))?;
            state.next_l2_block = e.lastBlock + 1;
            state.batch_count += 1;
            state.last_batch = Some(AppendedBatch {
                epoch: e.epoch,
                first_block: e.firstBlock,
                last_block: e.lastBlock,
                batch_hash: e.batchHash,
                l1_block: log.block_number.unwrap_or_default(),
            });
        }
        Ok(())
    }
}
