//! L2 batches the pool signs for L1: what the epoch's producer proposes, what every
//! follower checks and computes itself, and how the signed transaction reaches the inbox.
//!
//! A batch is one L1 transaction from the pool's MPC address:
//! `BatchInbox.appendBatch(epoch, firstBlock, lastBlock, batchHash)` as an EIP-1559
//! transaction. The producer of the epoch proposes a [`BatchProposal`] (the `request` of a
//! pool [`SignProposal`](tss_core::pool::SignProposal)); every signer's validator calls
//! [`validate`] against its own [`L1View`] (read at a confirmed height), the pool's nonce
//! at that height ([`pool_nonce`]) and its own view of L2 ([`L2Source`]); `validate`
//! **builds the transaction itself** from the checked fields and the node's own
//! [`BatchPolicy`], compares it with the one the producer sent, and returns it. The
//! validator then returns
//! `SigningInput::Message(tx.encoded_for_signing())` ([`signing_message`]): each signer
//! hashes that itself (keccak256 of it is the EIP-1559 signing hash), so no signer signs
//! a digest it did not compute from a batch it checked.
//!
//! Producer side: [`next_proposal`] (or [`build`]) the proposal and transaction, then
//! [`sign_and_submit`]: pool signing, [`signed_raw`] (EIP-2718 envelope) and [`submit`]
//! (`eth_sendRawTransaction`, wait for the receipt). A producer may instead sign the bare
//! transaction through [`tss_core::alloy::PoolSigner`] (an alloy `TxSigner`):
//! [`BatchProposal::decode`] reads such a request as the batch its calldata describes.
//!
//! Wiring into a node (sketch; `reader` is the node's [`L1Reader`](crate::l1::view::L1Reader),
//! `membership` its [`Pool`](crate::pool::Pool), `l2` its [`L2Source`]):
//!
//! ```ignore
//! // ProposalValidator::check_sign
//! let view = reader.latest().await.map_err(reject)?;
//! batch::check_request(&p.request, proposer, key, &view, reader.provider(), &policy,
//!     |epoch| membership.block_producer(&seed, epoch), &*l2).await.map_err(reject)
//!
//! // The producer loop, whenever this node is the producer of `policy.next_epoch(&view)`
//! let nonce = batch::pool_nonce(reader.provider(), pool_address, view.height).await?;
//! let (proposal, tx) = batch::next_proposal(&view, nonce, &policy, &*l2, l2_head, fees).await?;
//! let submitted = batch::sign_and_submit(&pool_node, &key_id, &proposal, tx, reader.provider()).await?;
//! ```

use alloy::consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy::eips::eip2718::Encodable2718;
use alloy::primitives::{Address, Bytes, TxKind, B256, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::sol_types::SolCall;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use transport::NodeId;
use tss_core::pool::{PoolNode, SigningInput};
use tss_core::{EthAddress, EthSignature, KeyId, PublicKeyInfo, TssError};

use crate::l1::contracts::BatchInbox;
use crate::l1::view::L1View;
use crate::l1::L1Error;

/// What a batch [`SignProposal`](tss_core::pool::SignProposal)'s `request` carries
/// (JSON, [`BatchProposal::encode`]).
///
/// The fields are what the follower checks; `tx` is the producer's signing encoding of
/// the transaction it wants signed. A follower never signs `tx` as given: it builds the
/// transaction from the fields and its own policy and refuses the proposal if the two
/// differ ([`BatchRejection::TxMismatch`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchProposal {
    /// The epoch the batch belongs to (see [`BatchPolicy::epoch_of`]).
    pub epoch: u64,
    /// First L2 block of the batch.
    pub first_block: u64,
    /// Last L2 block of the batch (inclusive).
    pub last_block: u64,
    /// The batch commitment the inbox stores (checked against the follower's
    /// [`L2Source`]).
    pub batch_hash: B256,
    /// The pool address's L1 nonce the transaction uses.
    pub nonce: u64,
    /// EIP-1559 `max_fee_per_gas` (wei).
    pub max_fee_per_gas: u128,
    /// EIP-1559 `max_priority_fee_per_gas` (wei).
    pub max_priority_fee_per_gas: u128,
    /// Gas limit.
    pub gas_limit: u64,
    /// The producer's EIP-1559 signing encoding (`0x02 || rlp(fields)`) of the
    /// transaction.
    pub tx: Bytes,
}

impl BatchProposal {
    /// The request bytes (JSON).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a batch proposal always serializes")
    }

    /// Parses request bytes: a JSON [`BatchProposal`] ([`BatchProposal::encode`]), or the
    /// bare EIP-1559 signing encoding of an `appendBatch` transaction (`0x02 || rlp`,
    /// what [`tss_core::alloy::PoolSigner`] sends; see
    /// [`BatchProposal::from_signing_request`]). Anything else is
    /// [`BatchRejection::Malformed`].
    pub fn decode(request: &[u8]) -> Result<Self, BatchRejection> {
        if request.first() == Some(&0x02) {
            return Self::from_signing_request(request);
        }
        serde_json::from_slice(request).map_err(|e| BatchRejection::Malformed(e.to_string()))
    }

    /// The proposal a bare transaction stands for: epoch, range and hash from its
    /// `appendBatch` calldata, nonce, fees and gas from its fields, and the request itself
    /// as `tx`. [`validate`] then checks everything else about the transaction (chain,
    /// inbox, value, access list) by rebuilding it and comparing
    /// ([`BatchRejection::TxMismatch`]).
    pub fn from_signing_request(request: &[u8]) -> Result<Self, BatchRejection> {
        let tx = tss_core::alloy::decode_eip1559_request(request)
            .map_err(|e| BatchRejection::Malformed(e.to_string()))?;
        let call = BatchInbox::appendBatchCall::abi_decode(&tx.input)
            .map_err(|e| BatchRejection::Malformed(format!("not an appendBatch call: {e}")))?;
        Ok(Self {
            epoch: call.epoch,
            first_block: call.firstBlock,
            last_block: call.lastBlock,
            batch_hash: call.batchHash,
            nonce: tx.nonce,
            max_fee_per_gas: tx.max_fee_per_gas,
            max_priority_fee_per_gas: tx.max_priority_fee_per_gas,
            gas_limit: tx.gas_limit,
            tx: request.to_vec().into(),
        })
    }
}

/// The pool's batch rules, from the node's configuration (every node must use the same
/// values, or followers refuse the producer's transaction).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchPolicy {
    /// L1 chain id.
    pub chain_id: u64,
    /// The `BatchInbox` contract.
    pub inbox: Address,
    /// The inbox's genesis L2 block (`BatchInbox.genesisBlock()`): epoch 0 starts here.
    pub l2_genesis_block: u64,
    /// L2 blocks per epoch (> 0). Epoch `e` is
    /// `[genesis + e * epoch_length, genesis + (e + 1) * epoch_length - 1]`; a batch
    /// lies within one epoch.
    pub epoch_length: u64,
    /// Highest `max_fee_per_gas` a follower signs (wei).
    pub max_fee_per_gas_cap: u128,
    /// Highest `max_priority_fee_per_gas` a follower signs (wei).
    pub max_priority_fee_cap: u128,
    /// Smallest gas limit accepted.
    pub min_gas_limit: u64,
    /// Largest gas limit accepted.
    pub max_gas_limit: u64,
}

impl BatchPolicy {
    /// The epoch of L2 block `block` (`None` before the genesis block or with a zero
    /// epoch length).
    pub fn epoch_of(&self, block: u64) -> Option<u64> {
        block
            .checked_sub(self.l2_genesis_block)?
            .checked_div(self.epoch_length)
    }

    /// The epoch of the next batch the inbox accepts: the one whose producer may propose
    /// now (use it to pick `expected_producer` for [`validate`]).
    pub fn next_epoch(&self, view: &L1View) -> Option<u64> {
        self.epoch_of(view.next_l2_block)
    }

    /// The last L2 block of `epoch`.
    pub fn epoch_end(&self, epoch: u64) -> Option<u64> {
        epoch
            .checked_add(1)?
            .checked_mul(self.epoch_length)?
            .checked_add(self.l2_genesis_block)?
            .checked_sub(1)
    }
}

/// Why the follower's L2 view cannot answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum L2SourceError {
    /// The follower has not seen these blocks yet (it may accept later).
    #[error("L2 blocks up to {last_block} are not known here (known up to {known:?})")]
    Unknown {
        /// The last block asked for.
        last_block: u64,
        /// The highest block this node knows, if any.
        known: Option<u64>,
    },
    /// The L2 node could not be asked.
    #[error("L2 source unavailable: {0}")]
    Unavailable(String),
}

/// The embedder's view of L2: the commitment of a block range as this node computes it
/// from its own L2 blocks (e.g. keccak256 of the encoded batch, over its own L2 node's
/// blocks). The pool signs a batch only if every signer's source gives the producer's
/// hash.
#[async_trait]
pub trait L2Source: Send + Sync {
    /// The commitment of L2 blocks `[first_block, last_block]`.
    async fn batch_hash(&self, first_block: u64, last_block: u64) -> Result<B256, L2SourceError>;
}

/// **Demo only** (devnet and tests): a deterministic stand-in for an L2 chain, not a
/// rollup. Block `n`'s hash is `keccak256("node-shell/demo-l2/v1" || tag || n)` and a
/// batch's commitment is keccak256 of its blocks' hashes in order, so every node with the
/// same `tag` computes the same commitments without any L2. Blocks above `head` (if set)
/// are unknown. A real embedder implements [`L2Source`] over its L2 node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DemoL2 {
    /// Distinguishes demo chains.
    pub tag: Vec<u8>,
    /// The highest block this node has "seen" (`None`: all).
    pub head: Option<u64>,
}

impl DemoL2 {
    /// A demo chain `tag` with every block known.
    pub fn new(tag: impl Into<Vec<u8>>) -> Self {
        Self {
            tag: tag.into(),
            head: None,
        }
    }

    /// The demo hash of block `n`.
    pub fn block_hash(&self, n: u64) -> B256 {
        let mut data = b"node-shell/demo-l2/v1".to_vec();
        data.extend_from_slice(&self.tag);
        data.extend_from_slice(&n.to_be_bytes());
        alloy::primitives::keccak256(data)
    }

    /// The demo commitment of `[first, last]` (no bound on `head`). Empty range: zero.
    pub fn commitment(&self, first: u64, last: u64) -> B256 {
        if last < first {
            return B256::ZERO;
        }
        let mut data = Vec::with_capacity(32 * (last - first).min(1 << 16) as usize + 32);
        for n in first..=last {
            data.extend_from_slice(self.block_hash(n).as_slice());
        }
        alloy::primitives::keccak256(data)
    }
}

#[async_trait]
impl L2Source for DemoL2 {
    async fn batch_hash(&self, first_block: u64, last_block: u64) -> Result<B256, L2SourceError> {
        if let Some(head) = self.head {
            if last_block > head {
                return Err(L2SourceError::Unknown {
                    last_block,
                    known: Some(head),
                });
            }
        }
        if last_block.saturating_sub(first_block) > 100_000 {
            return Err(L2SourceError::Unavailable(
                "demo ranges are at most 100 000 blocks".into(),
            ));
        }
        Ok(self.commitment(first_block, last_block))
    }
}

/// Why a follower refuses a batch. Short and free of secrets: it is sent to every party
/// in the abort.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BatchRejection {
    /// The request is not a [`BatchProposal`].
    #[error("malformed batch proposal: {0}")]
    Malformed(String),
    /// The proposer is not the epoch's block producer.
    #[error("{proposer} is not the block producer ({producer:?}) of the next epoch")]
    NotProducer {
        /// Who proposed.
        proposer: NodeId,
        /// Who may propose (`None`: no producer, e.g. an empty pool).
        producer: Option<NodeId>,
    },
    /// L1 has no MPC address registered: the inbox would refuse any batch.
    #[error("no MPC address is registered on L1")]
    NoMpcAddress,
    /// The MPC address on L1 is not this pool key's address.
    #[error("L1's MPC address {registered} is not the pool key's {key}")]
    MpcAddressMismatch {
        /// On L1.
        registered: Address,
        /// The key's.
        key: Address,
    },
    /// `last_block < first_block`, or the range does not fit the inbox.
    #[error("invalid block range [{first_block}, {last_block}]")]
    InvalidRange {
        /// First block.
        first_block: u64,
        /// Last block.
        last_block: u64,
    },
    /// The batch starts after the inbox's next block: blocks would be skipped.
    #[error(
        "block range gap: the inbox expects block {expected}, the batch starts at {first_block}"
    )]
    RangeGap {
        /// `nextBlock()` on L1.
        expected: u64,
        /// The batch's first block.
        first_block: u64,
    },
    /// The batch starts before the inbox's next block: a partial overlap.
    #[error("block range overlap: the inbox expects block {expected}, the batch starts at {first_block}")]
    RangeOverlap {
        /// `nextBlock()` on L1.
        expected: u64,
        /// The batch's first block.
        first_block: u64,
    },
    /// The batch is (the range of) one already appended.
    #[error("replayed batch [{first_block}, {last_block}] (already on L1)")]
    Replayed {
        /// First block.
        first_block: u64,
        /// Last block.
        last_block: u64,
    },
    /// The epoch is not the one of the batch's blocks, or the batch spans two epochs.
    #[error("wrong epoch {epoch}: the batch's blocks are in epoch {expected:?}")]
    WrongEpoch {
        /// The proposal's epoch.
        epoch: u64,
        /// The epoch of its first block (`None`: before genesis).
        expected: Option<u64>,
    },
    /// The nonce is not the pool address's L1 nonce.
    #[error("wrong nonce {nonce}: the pool's L1 nonce is {expected}")]
    WrongNonce {
        /// The proposal's nonce.
        nonce: u64,
        /// The pool address's transaction count at the view's height.
        expected: u64,
    },
    /// A fee is above the policy's cap.
    #[error("{field} {value} is above the cap {cap}")]
    FeeAboveCap {
        /// Which fee.
        field: &'static str,
        /// Proposed.
        value: u128,
        /// Cap.
        cap: u128,
    },
    /// `max_priority_fee_per_gas > max_fee_per_gas`.
    #[error("priority fee {priority} is above the max fee {max}")]
    PriorityAboveMaxFee {
        /// Priority fee.
        priority: u128,
        /// Max fee.
        max: u128,
    },
    /// The gas limit is outside the policy's bounds.
    #[error("gas limit {gas_limit} outside [{min}, {max}]")]
    GasLimitOutOfBounds {
        /// Proposed.
        gas_limit: u64,
        /// Lower bound.
        min: u64,
        /// Upper bound.
        max: u64,
    },
    /// The commitment differs from the one this node computes from its L2 view.
    #[error("batch hash {proposed} differs from this node's {computed}")]
    BatchHashMismatch {
        /// The proposal's.
        proposed: B256,
        /// This node's.
        computed: B256,
    },
    /// This node's L2 view cannot compute the commitment (yet).
    #[error("L2 view: {0}")]
    L2(#[from] L2SourceError),
    /// The transaction in the request is not the one the fields and policy give.
    #[error("the request's transaction does not match its fields")]
    TxMismatch,
    /// The pool key's public key does not decode.
    #[error("pool key: {0}")]
    Key(String),
    /// This node could not read what it needs from L1 (e.g. the pool's nonce).
    #[error("L1 unavailable: {0}")]
    L1(String),
}

/// The registered MPC address of `view`, checked to be the pool key's own address
/// (`key_address`, e.g. `EthAddress::from_sec1_bytes(&key.public_key)` of the
/// `PublicKeyInfo` that `check_sign` gets): a pool must not sign batches L1 would refuse.
pub fn check_pool_address(view: &L1View, key_address: Address) -> Result<Address, BatchRejection> {
    match view.mpc_address {
        None => Err(BatchRejection::NoMpcAddress),
        Some(a) if a != key_address => Err(BatchRejection::MpcAddressMismatch {
            registered: a,
            key: key_address,
        }),
        Some(a) => Ok(a),
    }
}

/// The EIP-1559 transaction of `proposal` under `policy`: `appendBatch(epoch, first,
/// last, hash)` to the inbox, value 0, empty access list. Both sides build it with this.
pub fn batch_tx(policy: &BatchPolicy, p: &BatchProposal) -> TxEip1559 {
    let call = BatchInbox::appendBatchCall {
        epoch: p.epoch,
        firstBlock: p.first_block,
        lastBlock: p.last_block,
        batchHash: p.batch_hash,
    };
    TxEip1559 {
        chain_id: policy.chain_id,
        nonce: p.nonce,
        gas_limit: p.gas_limit,
        max_fee_per_gas: p.max_fee_per_gas,
        max_priority_fee_per_gas: p.max_priority_fee_per_gas,
        to: TxKind::Call(policy.inbox),
        value: U256::ZERO,
        access_list: Default::default(),
        input: call.abi_encode().into(),
    }
}

/// The message every signer signs for `tx`: its EIP-1559 signing encoding
/// (`0x02 || rlp(fields)`), whose keccak256 is the signing hash. Return it as
/// `SigningInput::Message`.
pub fn signing_message(tx: &TxEip1559) -> Vec<u8> {
    tx.encoded_for_signing()
}

/// Fee and gas fields of a batch transaction (the producer's choice, within the policy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchFees {
    /// `max_fee_per_gas`.
    pub max_fee_per_gas: u128,
    /// `max_priority_fee_per_gas`.
    pub max_priority_fee_per_gas: u128,
    /// Gas limit.
    pub gas_limit: u64,
}

/// Producer side: the proposal (with its `tx`) and the transaction for the batch
/// `[first_block, last_block]` with commitment `batch_hash`, at `nonce` (from
/// [`pool_nonce`]). Encode the proposal as the signing request; after the pool signed,
/// [`signed_raw`] the transaction.
pub fn build(
    policy: &BatchPolicy,
    epoch: u64,
    first_block: u64,
    last_block: u64,
    batch_hash: B256,
    nonce: u64,
    fees: BatchFees,
) -> (BatchProposal, TxEip1559) {
    let mut p = BatchProposal {
        epoch,
        first_block,
        last_block,
        batch_hash,
        nonce,
        max_fee_per_gas: fees.max_fee_per_gas,
        max_priority_fee_per_gas: fees.max_priority_fee_per_gas,
        gas_limit: fees.gas_limit,
        tx: Bytes::new(),
    };
    let tx = batch_tx(policy, &p);
    p.tx = signing_message(&tx).into();
    (p, tx)
}

/// Follower side: checks `proposal` from `proposer` and returns the transaction this node
/// built itself (sign [`signing_message`] of it).
///
/// - `expected_producer`: the block producer of the epoch of `view.next_l2_block`
///   ([`BatchPolicy::next_epoch`]), as this node computes it;
/// - `view`: this node's [`L1View`] at the height the pool agreed on;
/// - `pool_nonce`: the pool address's L1 transaction count at `view.height`
///   ([`pool_nonce`]).
///
/// Checks, in order: producer, MPC address registered, range shape, range against the
/// inbox (replay, overlap, gap), epoch, nonce, fees and gas, the commitment against
/// `l2`, and finally that the request's `tx` is exactly the transaction built here.
#[allow(clippy::too_many_arguments)]
pub async fn validate(
    proposal: &BatchProposal,
    proposer: NodeId,
    expected_producer: Option<NodeId>,
    view: &L1View,
    pool_nonce: u64,
    policy: &BatchPolicy,
    l2: &dyn L2Source,
) -> Result<TxEip1559, BatchRejection> {
    let p = proposal;
    if expected_producer != Some(proposer) {
        return Err(BatchRejection::NotProducer {
            proposer,
            producer: expected_producer,
        });
    }
    if view.mpc_address.is_none() {
        return Err(BatchRejection::NoMpcAddress);
    }
    if p.last_block < p.first_block || p.last_block == u64::MAX {
        return Err(BatchRejection::InvalidRange {
            first_block: p.first_block,
            last_block: p.last_block,
        });
    }
    let expected = view.next_l2_block;
    if p.first_block < expected {
        let replay = view
            .last_batch
            .is_some_and(|b| b.first_block == p.first_block && b.last_block == p.last_block);
        return Err(if replay || p.last_block < expected {
            BatchRejection::Replayed {
                first_block: p.first_block,
                last_block: p.last_block,
            }
        } else {
            BatchRejection::RangeOverlap {
                expected,
                first_block: p.first_block,
            }
        });
    }
    if p.first_block > expected {
        return Err(BatchRejection::RangeGap {
            expected,
            first_block: p.first_block,
        });
    }
    let epoch = policy.epoch_of(p.first_block);
    if epoch != Some(p.epoch) || policy.epoch_of(p.last_block) != Some(p.epoch) {
        return Err(BatchRejection::WrongEpoch {
            epoch: p.epoch,
            expected: epoch,
        });
    }
    if p.nonce != pool_nonce {
        return Err(BatchRejection::WrongNonce {
            nonce: p.nonce,
            expected: pool_nonce,
        });
    }
    if p.max_fee_per_gas > policy.max_fee_per_gas_cap {
        return Err(BatchRejection::FeeAboveCap {
            field: "max_fee_per_gas",
            value: p.max_fee_per_gas,
            cap: policy.max_fee_per_gas_cap,
        });
    }
    if p.max_priority_fee_per_gas > policy.max_priority_fee_cap {
        return Err(BatchRejection::FeeAboveCap {
            field: "max_priority_fee_per_gas",
            value: p.max_priority_fee_per_gas,
            cap: policy.max_priority_fee_cap,
        });
    }
    if p.max_priority_fee_per_gas > p.max_fee_per_gas {
        return Err(BatchRejection::PriorityAboveMaxFee {
            priority: p.max_priority_fee_per_gas,
            max: p.max_fee_per_gas,
        });
    }
    if p.gas_limit < policy.min_gas_limit || p.gas_limit > policy.max_gas_limit {
        return Err(BatchRejection::GasLimitOutOfBounds {
            gas_limit: p.gas_limit,
            min: policy.min_gas_limit,
            max: policy.max_gas_limit,
        });
    }
    let computed = l2.batch_hash(p.first_block, p.last_block).await?;
    if computed != p.batch_hash || computed == B256::ZERO {
        return Err(BatchRejection::BatchHashMismatch {
            proposed: p.batch_hash,
            computed,
        });
    }
    let tx = batch_tx(policy, p);
    if signing_message(&tx) != p.tx.as_ref() {
        return Err(BatchRejection::TxMismatch);
    }
    Ok(tx)
}

/// The whole follower check of a batch signing request, for
/// `ProposalValidator::check_sign`: decodes the [`BatchProposal`], checks that `view`'s
/// MPC address is the address of `key` (the key being signed with), reads the pool's
/// nonce at `view.height` through `provider`, takes the expected producer from
/// `producer_of(epoch)` for the epoch of `view.next_l2_block`, runs [`validate`] and
/// returns the message this node computed (`SigningInput::Message` of the transaction's
/// signing encoding).
///
/// `view` must be this node's view at the height the pool agreed on (every follower
/// reading the same confirmed height derives the same view).
#[allow(clippy::too_many_arguments)]
pub async fn check_request(
    request: &[u8],
    proposer: NodeId,
    key: &PublicKeyInfo,
    view: &L1View,
    provider: &DynProvider,
    policy: &BatchPolicy,
    producer_of: impl FnOnce(u64) -> Option<NodeId>,
    l2: &dyn L2Source,
) -> Result<SigningInput, BatchRejection> {
    let proposal = BatchProposal::decode(request)?;
    let key_address = EthAddress::from_sec1_bytes(&key.public_key)
        .map_err(|e| BatchRejection::Key(e.to_string()))?;
    let pool = check_pool_address(view, key_address.into())?;
    let nonce = pool_nonce(provider, pool, view.height)
        .await
        .map_err(|e| BatchRejection::L1(e.to_string()))?;
    let producer = policy.next_epoch(view).and_then(producer_of);
    let tx = validate(&proposal, proposer, producer, view, nonce, policy, l2).await?;
    Ok(SigningInput::Message(signing_message(&tx)))
}

/// Producer side: the next batch after `view`, up to `last_block` (clamped to the end of
/// the epoch of `view.next_l2_block`), with the commitment from this node's `l2` and the
/// pool's nonce at `view.height` (`pool_nonce`). Propose it with [`sign_and_submit`].
pub async fn next_proposal(
    view: &L1View,
    pool_nonce: u64,
    policy: &BatchPolicy,
    l2: &dyn L2Source,
    last_block: u64,
    fees: BatchFees,
) -> Result<(BatchProposal, TxEip1559), BatchRejection> {
    let first = view.next_l2_block;
    let epoch = policy.epoch_of(first).ok_or(BatchRejection::WrongEpoch {
        epoch: 0,
        expected: None,
    })?;
    let last = policy
        .epoch_end(epoch)
        .map_or(last_block, |e| e.min(last_block));
    if last < first {
        return Err(BatchRejection::InvalidRange {
            first_block: first,
            last_block: last,
        });
    }
    let hash = l2.batch_hash(first, last).await?;
    Ok(build(policy, epoch, first, last, hash, pool_nonce, fees))
}

/// Why [`sign_and_submit`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// The pool did not sign (a follower refused: [`TssError::Aborted`] names it).
    #[error("pool signing: {0}")]
    Pool(#[from] TssError),
    /// The pool signed something other than the transaction's signing hash (a
    /// misconfigured validator); nothing was sent.
    #[error("the pool signed digest {signed}, not the transaction's signing hash {expected}")]
    DigestMismatch {
        /// What was signed.
        signed: B256,
        /// The transaction's signing hash.
        expected: B256,
    },
    /// Sending or confirming on L1 failed.
    #[error(transparent)]
    L1(#[from] L1Error),
}

/// Producer side: proposes `proposal` to the pool as a signing request (every signer
/// validates it and builds `tx` itself), checks the signature is over `tx`'s signing
/// hash, and submits the signed transaction. `tx` is what [`build`] /
/// [`next_proposal`] returned with `proposal`. A reverted transaction is `Ok` with
/// `status: false`.
pub async fn sign_and_submit(
    node: &PoolNode,
    key_id: &KeyId,
    proposal: &BatchProposal,
    tx: TxEip1559,
    provider: &DynProvider,
) -> Result<SubmittedBatch, SubmitError> {
    let out = node.propose_sign(key_id, proposal.encode(), None).await?;
    let expected = tx.signature_hash();
    if B256::from(out.digest) != expected {
        return Err(SubmitError::DigestMismatch {
            signed: B256::from(out.digest),
            expected,
        });
    }
    Ok(submit(provider, &signed_raw(tx, out.signature)).await?)
}

/// The signed transaction as an EIP-2718 envelope (`0x02 || rlp(fields, y_parity, r,
/// s)`), for `eth_sendRawTransaction`. The signature's `v` is the recovery id (0/1),
/// which is the envelope's `y_parity`.
pub fn signed_raw(tx: TxEip1559, signature: EthSignature) -> Vec<u8> {
    let signed = tx.into_signed(alloy::primitives::Signature::from(signature));
    TxEnvelope::from(signed).encoded_2718()
}

/// The outcome of [`submit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubmittedBatch {
    /// The transaction hash.
    pub tx_hash: B256,
    /// `true` if it succeeded, `false` if it was mined and reverted.
    pub status: bool,
    /// The L1 block that included it.
    pub block: Option<u64>,
}

/// Sends `raw` with `eth_sendRawTransaction` and waits for its receipt. A mined but
/// reverted transaction is `Ok` with `status: false`.
pub async fn submit(provider: &DynProvider, raw: &[u8]) -> Result<SubmittedBatch, L1Error> {
    let receipt = provider
        .send_raw_transaction(raw)
        .await
        .map_err(|e| L1Error::Rpc {
            call: "eth_sendRawTransaction",
            reason: e.to_string(),
        })?
        .get_receipt()
        .await
        .map_err(|e| L1Error::Rpc {
            call: "eth_getTransactionReceipt",
            reason: e.to_string(),
        })?;
    Ok(SubmittedBatch {
        tx_hash: receipt.transaction_hash,
        status: receipt.status(),
        block: receipt.block_number,
    })
}

/// The pool address's L1 nonce (`eth_getTransactionCount`) at block `height`: read it
/// at the height of the [`L1View`] the batch is validated against, so nonce and inbox
/// state agree.
pub async fn pool_nonce(
    provider: &DynProvider,
    pool: Address,
    height: u64,
) -> Result<u64, L1Error> {
    provider
        .get_transaction_count(pool)
        .block_id(height.into())
        .await
        .map_err(|e| L1Error::Rpc {
            call: "eth_getTransactionCount",
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::l1::view::AppendedBatch;
    use proptest::prelude::*;

    const PRODUCER: NodeId = NodeId::from_bytes([1; 32]);

    fn policy() -> BatchPolicy {
        BatchPolicy {
            chain_id: 31337,
            inbox: Address::repeat_byte(0x1b),
            l2_genesis_block: 100,
            epoch_length: 10,
            max_fee_per_gas_cap: 100,
            max_priority_fee_cap: 5,
            min_gas_limit: 60_000,
            max_gas_limit: 500_000,
        }
    }

    /// The inbox after one batch [100, 104]: the next batch starts at 105 (epoch 0).
    fn view() -> L1View {
        L1View {
            height: 42,
            block_hash: B256::ZERO,
            members: vec![],
            mpc_address: Some(Address::repeat_byte(0xaa)),
            mpc_address_set_at: Some(30),
            next_l2_block: 105,
            batch_count: 1,
            last_batch: Some(AppendedBatch {
                epoch: 0,
                first_block: 100,
                last_block: 104,
                batch_hash: B256::repeat_byte(1),
                l1_block: 40,
            }),
        }
    }

    const NONCE: u64 = 3;

    fn valid() -> BatchProposal {
        let l2 = DemoL2::new("t");
        let fees = BatchFees {
            max_fee_per_gas: 50,
            max_priority_fee_per_gas: 2,
            gas_limit: 100_000,
        };
        build(&policy(), 0, 105, 108, l2.commitment(105, 108), NONCE, fees).0
    }

    fn run(p: &BatchProposal, proposer: NodeId) -> Result<TxEip1559, BatchRejection> {
        futures::executor::block_on(validate(
            p,
            proposer,
            Some(PRODUCER),
            &view(),
            NONCE,
            &policy(),
            &DemoL2::new("t"),
        ))
    }

    #[test]
    fn the_valid_batch_is_accepted_and_its_message_is_the_signing_encoding() {
        let p = valid();
        let tx = run(&p, PRODUCER).unwrap();
        assert_eq!(signing_message(&tx), p.tx.as_ref());
        assert_eq!(
            alloy::primitives::keccak256(signing_message(&tx)),
            tx.signature_hash()
        );
        assert_eq!(BatchProposal::decode(&p.encode()).unwrap(), p);
    }

    #[test]
    fn a_bare_signing_request_decodes_to_the_same_proposal() {
        let p = valid();
        assert_eq!(BatchProposal::decode(&p.tx).unwrap(), p);
        let mut evil = batch_tx(&policy(), &p);
        evil.input = vec![0xde, 0xad, 0xbe, 0xef].into();
        assert!(matches!(
            BatchProposal::decode(&signing_message(&evil)),
            Err(BatchRejection::Malformed(_))
        ));
        // A transaction that carries the right call but also sends ETH is refused.
        let mut value = batch_tx(&policy(), &p);
        value.value = U256::from(1);
        let q = BatchProposal::decode(&signing_message(&value)).unwrap();
        assert_eq!(run(&q, PRODUCER), Err(BatchRejection::TxMismatch));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Random changes to the valid proposal: `validate` accepts exactly when every
        /// rule holds (judged here independently of `validate`), and never otherwise.
        #[test]
        fn validate_never_accepts_an_invalid_proposal(
            epoch in prop_oneof![Just(0u64), 0u64..3],
            proposer in prop_oneof![Just(1u8), 0u8..4],
            first in prop_oneof![Just(105u64), 98u64..112],
            len in prop_oneof![Just(4u64), 0u64..12],
            nonce in prop_oneof![Just(NONCE), 0u64..6],
            max_fee in prop_oneof![Just(50u128), 0u128..120],
            tip in prop_oneof![Just(2u128), 0u128..8],
            gas in prop_oneof![Just(100_000u64), 0u64..600_000],
            honest_hash in prop_oneof![Just(true), any::<bool>()],
            honest_tx in prop_oneof![Just(true), any::<bool>()],
        ) {
            let l2 = DemoL2::new("t");
            // len 0: an inverted range [first, first - 1].
            let last = first + len - 1;
            let hash = if honest_hash { l2.commitment(first, last) } else { B256::repeat_byte(9) };
            let fees = BatchFees { max_fee_per_gas: max_fee, max_priority_fee_per_gas: tip, gas_limit: gas };
            let (mut p, _) = build(&policy(), epoch, first, last, hash, nonce, fees);
            if !honest_tx {
                let mut evil = batch_tx(&policy(), &p);
                evil.value = U256::from(1);
                p.tx = signing_message(&evil).into();
            }
            let proposer = NodeId::from_bytes([proposer; 32]);
            let pol = policy();
            let is_valid = proposer == PRODUCER
                && last >= first
                && first == 105
                && pol.epoch_of(first) == Some(epoch)
                && pol.epoch_of(last) == Some(epoch)
                && nonce == NONCE
                && max_fee <= 100
                && tip <= 5
                && tip <= max_fee
                && (60_000..=500_000).contains(&gas)
                && honest_hash
                && honest_tx;
            let result = run(&p, proposer);
            prop_assert_eq!(result.is_ok(), is_valid, "{:?} -> {:?}", p, result);
            if let Ok(tx) = result {
                prop_assert_eq!(signing_message(&tx), p.tx.to_vec());
            }
        }
    }
}
