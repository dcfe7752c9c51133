//! Threshold ECDSA for decentralized rollup sequencers.
//!
//! `tss-core` runs the MPC protocols a sequencer pool needs — distributed key
//! generation, aux-info generation, presigning, one-round online signing, full signing and
//! resharing to a new committee — over any [`transport::Transport`]. Two threshold-ECDSA
//! protocols on secp256k1 sit behind one seam ([`ThresholdProtocol`], [`Protocol`]):
//! [`cggmp21`] (the default) and DKLs23 ([`mod@dkls23`]). Their output is Ethereum-ready:
//! `(r, s, v)` with low `s`, and the key's Ethereum address.
//!
//! Every run has an [`ExecutionId`] agreed by its parties and bound into the protocol; a
//! node refuses to run the same execution id twice. Senders are identified by the
//! transport's authenticated identity, never by message contents. Presignatures live in
//! memory only and are handed out once, and they sign message bytes, never a digest
//! handed in by a caller: each signer computes the keccak256 itself (RUSTSEC-2025-0127,
//! see [`ecdsa`]).
//!
//! ```
//! use std::sync::Arc;
//! use tss_core::{keccak256, Committee, ExecutionId, KeyId, PaillierPrimes, ProtocolKind, TssNode};
//! use transport::{InMemoryNetwork, NodeId};
//!
//! # #[tokio::main(flavor = "multi_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Public test primes keep this fast; real nodes take theirs from a `PrimePool`.
//! let fixtures = std::fs::read_to_string(concat!(
//!     env!("CARGO_MANIFEST_DIR"),
//!     "/test-data/insecure-test-primes.json"
//! ))?;
//! let mut primes = PaillierPrimes::list_from_json(&fixtures)?;
//!
//! let network = InMemoryNetwork::new();
//! let ids: Vec<NodeId> = (1..=2).map(|i| NodeId::from_bytes([i; 32])).collect();
//! let committee = Committee::new(ids.clone(), 2)?;
//! let key_id = KeyId::new("sequencer-key")?;
//! // The coordinator picks fresh execution ids and sends them to every party.
//! let keygen_eid = ExecutionId::random(ProtocolKind::Keygen, &key_id, &ids, &mut rand::thread_rng());
//! let sign_eid = ExecutionId::random(ProtocolKind::Sign, &key_id, &ids, &mut rand::thread_rng());
//! let digest = keccak256(b"L2 batch");
//! // Every endpoint exists before any party starts sending to it.
//! let nodes: Vec<TssNode> = ids.iter().map(|id| TssNode::new(Arc::new(network.endpoint(*id)))).collect();
//! let mut runs = Vec::new();
//! for node in nodes {
//!     let (committee, key_id, ids) = (committee.clone(), key_id.clone(), ids.clone());
//!     let primes = primes.remove(0);
//!     runs.push(tokio::spawn(async move {
//!         let share = node.keygen(key_id, committee, keygen_eid, primes).await?;
//!         let signature = node.sign(&share, &ids, digest, sign_eid).await?;
//!         Ok::<_, tss_core::TssError>((share.ethereum_address(), signature))
//!     }));
//! }
//! for run in runs {
//!     let (address, signature) = run.await??;
//!     // What an L1 contract's ecrecover sees:
//!     assert_eq!(signature.recover_address(&digest)?, address);
//! }
//! # Ok(()) }
//! ```
//! `examples/keygen_and_sign.rs` adds presigning, one-round signing and a reshare.
//!
//! A node of a signing pool uses the [`pool`] layer on top of these protocols: proposals
//! that every party validates with the embedder's [`pool::ProposalValidator`], aborts that
//! reach every party, and results committed through a [`pool::ShareStore`] in a fixed
//! order (`examples/embed.rs` shows it over libp2p with the encrypted keystore).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "alloy")]
pub mod alloy;
mod cancel;
mod compute;
pub mod dkls23;
pub mod ecdsa;
mod error;
pub mod ethereum;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod identity;
mod ids;
pub mod pool;
mod primes;
pub mod protocol;
pub mod reshare;
mod share;
pub mod wire;

pub use ecdsa::{AuxInfo, KeyShare, Presignature, TssNode};
pub use error::{ProtocolKind, Result, StoreError, TssError};
pub use ethereum::{keccak256, EthAddress, EthSignature};
pub use identity::{verify_identity_signature, Ed25519Signer, IdentitySignature, IdentitySigner};
pub use ids::{Committee, ExecutionId, Generation, KeyId};
#[cfg(feature = "insecure-test-primes")]
pub use primes::{insecure_test_primes, InsecureTestPrimes};
pub use primes::{PaillierPrimes, PrimePool};
pub use protocol::{Protocol, ThresholdProtocol, UnknownProtocol};
pub use reshare::{
    ConfirmFault, PublicKeyInfo, ReshareCertificate, ReshareOutcome, ReshareRequest, ReshareRole,
    ReshareStatement, StagedReshare,
};
pub use transport;
