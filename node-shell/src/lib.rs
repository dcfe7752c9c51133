//! `node-shell`: the sequencer node of a decentralized rollup sequencer pool.
//!
//! Sequencers stake to join a pool; more than two thirds of them co-sign each L2 batch
//! through threshold ECDSA ([`tss_core`]); when a sequencer joins or leaves, the key is
//! reshared to the new committee while its public key and Ethereum address stay the
//! same; key shares live encrypted in LevelDB ([`keystore`]); MPC messages travel over
//! libp2p ([`transport`]); a block producer is drawn per epoch by stake.
//!
//! Modules: [`config`] (TOML), [`pool`] (pure membership rules), [`keys`] (keystore
//! handle over [`keystore::AsyncKeystore`]), [`coordinator`] (the node and its protocol
//! runs), [`rpc`] (HTTP JSON API), [`metrics`] (Prometheus), [`devnet`] (a local
//! multi-node demo), [`identity`], [`logging`] (the binary's log set-up).
//!
//! Membership comes from L1 only ([`l1`]): the pool is the set of sequencers with stake
//! locked in the `SequencerStaking` contract at a confirmed height, and every node checks
//! a keygen or reshare proposal against its own L1 view ([`coordinator`]). The pure pool
//! rules (no I/O, so this runs as is; a node following L1 uses [`pool::PoolRules::l1`]):
//!
//! ```
//! use node_shell::pool::{Change, Member, Pool, PoolRules};
//! use node_shell::Error;
//! use transport::NodeId;
//!
//! let id = |i: u8| NodeId::from_bytes([i; 32]);
//! let rules = PoolRules {
//!     whitelist: Some((1..=5).map(id).collect()),
//!     min_stake: 1_000,
//!     max_stake: 1_000_000,
//!     min_members: 4, // the default; a pool of 3 would sign 3-of-3 and could lose no one
//!     max_members: 10,
//! };
//! let genesis = (1..=4).map(|i| Member { node: id(i), stake: 10_000 }).collect();
//! let pool = Pool::new(rules, genesis, 0)?;
//! assert_eq!(pool.threshold(), 3); // strictly more than 2/3 of 4
//!
//! // Node 5 is whitelisted and stakes enough: it joins, and the signing threshold grows.
//! let bigger = pool.apply(&Change::Join { node: id(5), stake: 20_000 })?;
//! assert_eq!((bigger.len(), bigger.threshold(), bigger.version()), (5, 4, 1));
//! // Node 9 is not on the whitelist: a typed error, and the pool is unchanged.
//! let refused = bigger.apply(&Change::Join { node: id(9), stake: 20_000 });
//! assert!(matches!(refused, Err(Error::NotWhitelisted(n)) if n == id(9)));
//! assert_eq!(bigger.len(), 5);
//!
//! // Every node draws the same block producer for an epoch, always a member.
//! let producer = bigger.block_producer(&[7; 32], 42).unwrap();
//! assert!(bigger.is_member(&producer));
//! assert_eq!(bigger.block_producer(&[7; 32], 42), Some(producer));
//! # Ok::<(), node_shell::Error>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod batch;
pub mod config;
pub mod coordinator;
pub mod devnet;
mod error;
pub mod identity;
pub mod keys;
pub mod l1;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod pool;
pub mod producer;
pub mod rpc;
pub mod schedule;

pub use coordinator::Node;
pub use error::{Error, Result};
