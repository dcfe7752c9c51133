//! Cancelling a protocol run from outside it.
//!
//! The pool layer runs every protocol inside [`scoped`]: when the run's token is
//! cancelled (a participant aborted it), the run stops at its next await point, also
//! inside the CPU-heavy parts that run off the executor, instead of waiting for the idle
//! timeout.

use std::future::Future;

use tokio_util::sync::CancellationToken;

tokio::task_local! {
    static CANCEL: CancellationToken;
}

/// The token of the run this task belongs to, if it runs inside [`scoped`].
pub(crate) fn current() -> Option<CancellationToken> {
    CANCEL.try_with(|t| t.clone()).ok()
}

/// Runs `fut` so that cancelling `token` stops it (also in its off-executor parts).
/// `None` when it was cancelled.
pub(crate) async fn scoped<F: Future>(token: CancellationToken, fut: F) -> Option<F::Output> {
    let inner = token.clone();
    CANCEL
        .scope(token, async move {
            tokio::select! {
                biased;
                _ = inner.cancelled() => None,
                out = fut => Some(out),
            }
        })
        .await
}
