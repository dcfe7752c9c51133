//! Starting the libp2p transport on its own runtime.
//!
//! MPC protocol steps (aux-info proofs, Paillier operations) compute for long stretches
//! without yielding. If the libp2p swarm shared their tokio worker threads, messages to
//! and from this node would wait until a step yields, stalling every other party's round
//! (and a write stuck past the write timeout loses its frames). So the swarm of every [`Libp2pTransport`] started here runs on a dedicated
//! two-thread runtime ("p2p-net"), separate from the runtime running protocols and the
//! HTTP API; the OS scheduler then keeps the network responsive.

use std::sync::OnceLock;

use tokio::runtime::Handle;
use transport::{Libp2pConfig, Libp2pTransport};

use crate::error::{Error, Result};

fn network_handle() -> Result<Handle> {
    static HANDLE: OnceLock<Handle> = OnceLock::new();
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("p2p-net".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("p2p-net")
                .enable_all()
                .build();
            match runtime {
                Ok(rt) => {
                    let _ = tx.send(Ok(rt.handle().clone()));
                    rt.block_on(std::future::pending::<()>());
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        })?;
    let handle = rx
        .recv()
        .map_err(|_| Error::Internal("network runtime thread died".into()))??;
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// Starts a libp2p transport whose swarm runs on the dedicated network runtime.
pub async fn start_libp2p(config: Libp2pConfig) -> Result<Libp2pTransport> {
    let handle = network_handle()?;
    handle
        .spawn(Libp2pTransport::start(config))
        .await
        .map_err(|e| Error::Internal(format!("libp2p start task: {e}")))?
        .map_err(Error::from)
}
