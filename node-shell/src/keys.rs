//! Opening the node's keystore as the pool layer's share store.
//!
//! [`keystore::AsyncKeystore`] owns the (not `Send`) LevelDB keystore on its own thread
//! and implements [`tss_core::pool::ShareStore`]: shares are staged, activated together
//! with the pool state, retired and deleted through it.

use std::sync::Arc;

use keystore::{AsyncKeystore, KdfParams, Unlock};
use tss_core::pool::ShareStore;

use crate::config::{NodeSettings, UnlockConfig};
use crate::error::Result;

/// Opens (creating if needed) the keystore of `settings`.
pub async fn open_store(settings: &NodeSettings) -> Result<Arc<dyn ShareStore>> {
    let unlock = match &settings.unlock {
        UnlockConfig::Passphrase(p) => Unlock::passphrase(p.as_str()),
        UnlockConfig::KeyFile(path) => Unlock::key_file(path.clone()),
    };
    let store = if settings.insecure_fast_kdf {
        AsyncKeystore::open_with_kdf(
            &settings.keystore_dir,
            unlock,
            KdfParams::insecure_for_tests(),
        )
        .await?
    } else {
        AsyncKeystore::open(&settings.keystore_dir, unlock).await?
    };
    Ok(Arc::new(store))
}
