//! `node-shell`: the sequencer node of a decentralized rollup sequencer pool.
//!
//! Sequencers stake to join a pool; more than two thirds of them co-sign each L2 batch
//! through threshold ECDSA ([`tss_core`]); when a sequencer joins or leaves, the key is
//! reshared to the new committee while its public key and Ethereum address stay the
//! same; key shares live encrypted in LevelDB ([`keystore`]); MPC messages travel over
//! libp2p ([`transport`]); a block producer is drawn per epoch by stake.
//!
//! Modules: [`config`] (TOML), [`pool`] (pure membership rules), [`keys`] (keystore
//! actor), [`coordinator`] (the node and its protocol runs), [`rpc`] (HTTP JSON API),
//! [`metrics`] (Prometheus), [`devnet`] (a local multi-node demo), [`identity`].
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod config;
pub mod coordinator;
pub mod devnet;
mod error;
pub mod identity;
pub mod keys;
pub mod metrics;
pub mod net;
pub mod pool;
pub mod rpc;

pub use coordinator::Node;
pub use error::{Error, Result};
