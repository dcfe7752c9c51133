//! Threshold ECDSA for decentralized rollup sequencers.
//!
//! `tss-core` runs the MPC protocols a sequencer pool needs — distributed key
//! generation, aux-info generation, presigning, one-round online signing, full signing and
//! resharing to a new committee — over any [`transport::Transport`]. The ECDSA backend is
//! [`cggmp21`] on secp256k1 and its output is Ethereum-ready: `(r, s, v)` with low `s`,
//! and the key's Ethereum address.
//!
//! Every run has an [`ExecutionId`] agreed by its parties and bound into the protocol; a
//! node refuses to run the same execution id twice. Senders are identified by the
//! transport's authenticated identity, never by message contents. Presignatures live in
//! memory only and are handed out once.
//!
//! ```no_run
//! use std::sync::Arc;
//! use tss_core::{Committee, ExecutionId, KeyId, PaillierPrimes, ProtocolKind, TssNode};
//! use transport::{InMemoryNetwork, NodeId};
//!
//! # async fn demo() -> tss_core::Result<()> {
//! let network = InMemoryNetwork::new();
//! let ids: Vec<NodeId> = (1..=3).map(|i| NodeId::from_bytes([i; 32])).collect();
//! let committee = Committee::new(ids.clone(), 2)?;
//! let key_id = KeyId::new("sequencer-key")?;
//! // The coordinator picks a fresh execution id and sends it to every party.
//! let eid = ExecutionId::random(ProtocolKind::Keygen, &key_id, &ids, &mut rand::thread_rng());
//! let mut runs = Vec::new();
//! for id in &ids {
//!     let node = TssNode::new(Arc::new(network.endpoint(*id)));
//!     let (committee, key_id) = (committee.clone(), key_id.clone());
//!     runs.push(tokio::spawn(async move {
//!         node.keygen(key_id, committee, eid, PaillierPrimes::generate()).await
//!     }));
//! }
//! for run in runs {
//!     let share = run.await.unwrap()?;
//!     println!("{} holds a share of {}", share.local_node(), share.ethereum_address());
//! }
//! # Ok(()) }
//! ```
//! A runnable version of this (with keygen, presigning and signing) is in
//! `examples/keygen_and_sign.rs`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod ecdsa;
mod error;
pub mod ethereum;
mod ids;
mod primes;
pub mod reshare;
pub mod wire;

pub use ecdsa::{AuxInfo, KeyShare, Presignature, TssNode};
pub use error::{ProtocolKind, Result, TssError};
pub use ethereum::{keccak256, EthAddress, EthSignature};
pub use ids::{Committee, ExecutionId, Generation, KeyId};
pub use primes::{PaillierPrimes, PrimePool};
pub use reshare::{PersistShare, PublicKeyInfo, ReshareOutcome, ReshareRequest};
pub use transport;
