//! The pool's L1: contract bindings, a local anvil for the devnet and tests, and the
//! pool view every node derives from the contracts' events.
//!
//! - [`contracts`]: `sol!` bindings generated from the committed artifacts in
//!   `contracts/artifacts/` (the same bytes `contracts/compile.js --check` verifies), and
//!   [`contracts::deploy`].
//! - [`anvil`]: starts Foundry's anvil (from the pinned npm package) on a port the OS picks
//!   and stops it on drop.
//! - [`view`]: [`view::L1Reader`] folds the staking and inbox events from the deployment
//!   block up to a confirmed height into an [`view::L1View`]: members, stakes, the MPC
//!   address and the inbox's next block range. Every node that reads the same height
//!   derives the same view; a restart re-derives it.

pub mod anvil;
pub mod contracts;
pub mod view;

use alloy::providers::{DynProvider, Provider, ProviderBuilder};

/// Errors talking to the L1 node or reading its contracts.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum L1Error {
    /// The RPC endpoint URL does not parse.
    #[error("bad L1 RPC url {url}: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// Why it does not parse.
        reason: String,
    },
    /// A JSON-RPC call failed (transport error or an error response).
    #[error("L1 RPC {call}: {reason}")]
    Rpc {
        /// What was called.
        call: &'static str,
        /// The error.
        reason: String,
    },
    /// A transaction was mined but reverted.
    #[error("L1 transaction {tx} reverted ({call})")]
    Reverted {
        /// What was called.
        call: &'static str,
        /// Transaction hash.
        tx: String,
    },
    /// A contract event or return value does not have the expected shape.
    #[error("L1 data from {what} is malformed: {reason}")]
    Malformed {
        /// Which event or call.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The requested height is not confirmed yet (or before the deployment block).
    #[error("L1 height {height} is not readable (confirmed head {confirmed:?}, deployment block {deployment})")]
    HeightNotConfirmed {
        /// The requested height.
        height: u64,
        /// The confirmed head, if any block is confirmed.
        confirmed: Option<u64>,
        /// The contracts' deployment block.
        deployment: u64,
    },
    /// anvil could not be started.
    #[error("anvil: {0}")]
    Anvil(String),
}

impl L1Error {
    pub(crate) fn rpc(call: &'static str, e: impl std::fmt::Display) -> Self {
        L1Error::Rpc {
            call,
            reason: e.to_string(),
        }
    }
}

/// An HTTP JSON-RPC provider for `url` with alloy's recommended fillers (nonce, gas, chain
/// id), type-erased so callers need not name the filler stack.
pub fn connect(url: &str) -> Result<DynProvider, L1Error> {
    let parsed =
        alloy::transports::http::reqwest::Url::parse(url).map_err(|e| L1Error::BadUrl {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
    Ok(ProviderBuilder::new().connect_http(parsed).erased())
}

/// The latest L1 block number.
pub async fn head(provider: &DynProvider) -> Result<u64, L1Error> {
    provider
        .get_block_number()
        .await
        .map_err(|e| L1Error::rpc("eth_blockNumber", e))
}
