//! The node's keystore handle: a thin wrapper over [`keystore::AsyncKeystore`].
//!
//! [`keystore::Keystore`] is not `Send` (rusty-leveldb uses `Rc`); `AsyncKeystore` owns it
//! on a dedicated thread and is what async code uses. This wrapper keeps the byte-oriented
//! calls the coordinator makes today (key ids as `&str`, generations as `u64`, shares as
//! serialized bytes). Secrets cross the channel as [`keystore::SecretBytes`] (zeroized on
//! drop, redacted in Debug). New code should use `AsyncKeystore` directly, which also
//! commits the pool state with the active generation (`tss_core::pool::ShareStore`).

use std::path::PathBuf;

use keystore::{
    AsyncKeystore, Generation, GenerationRecords, KdfParams, KeyId, KeystoreError, RecordName,
    SecretBytes, Unlock,
};
use zeroize::Zeroizing;

use crate::config::UnlockConfig;
use crate::error::{Error, Result};

/// Handle to the keystore. Cheap to clone; the store is closed when the last handle is
/// dropped.
#[derive(Clone)]
pub struct KeysHandle {
    store: AsyncKeystore,
}

impl std::fmt::Debug for KeysHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeysHandle")
    }
}

fn key_id(s: &str) -> Result<KeyId> {
    Ok(KeyId::new(s)?)
}

impl KeysHandle {
    /// Opens (creating if needed, mode 0700) the keystore at `dir` on its own thread.
    pub async fn open(
        dir: PathBuf,
        unlock: &UnlockConfig,
        insecure_fast_kdf: bool,
    ) -> Result<Self> {
        let unlock = match unlock {
            UnlockConfig::Passphrase(p) => Unlock::passphrase(p.as_str()),
            UnlockConfig::KeyFile(path) => Unlock::key_file(path.clone()),
        };
        let store = if insecure_fast_kdf {
            AsyncKeystore::open_with_kdf(&dir, unlock, KdfParams::insecure_for_tests()).await?
        } else {
            AsyncKeystore::open(&dir, unlock).await?
        };
        Ok(Self { store })
    }

    /// The active generation and its key-share bytes, if the key exists.
    pub async fn load_active(&self, key: &str) -> Result<Option<(u64, SecretBytes)>> {
        let key = key_id(key)?;
        let loaded =
            self.store
                .with_store(move |store| match store.load_active(&key) {
                    Ok((generation, records)) => match records.key_share() {
                        Some(share) => Ok(Some((
                            generation.0,
                            SecretBytes::from_slice(share.expose()),
                        ))),
                        None => Err(Error::Internal(format!(
                            "active generation {generation} of {key} has no key share record"
                        ))),
                    },
                    Err(KeystoreError::UnknownKey(_))
                    | Err(KeystoreError::NoActiveGeneration(_)) => Ok(None),
                    Err(e) => Err(e.into()),
                })
                .await??;
        Ok(loaded)
    }

    /// Stores `bytes` as generation `generation`, inactive. A leftover *inactive*
    /// generation with that number (from an earlier failed reshare) is replaced; the
    /// active generation never is.
    pub async fn put_fresh(
        &self,
        key: &str,
        generation: u64,
        bytes: Zeroizing<Vec<u8>>,
    ) -> Result<()> {
        let key = key_id(key)?;
        let secret = SecretBytes::from(bytes);
        self.store
            .with_store(move |store| {
                let g = Generation(generation);
                let active = store.active_generation(&key).ok().flatten();
                if active != Some(g) && store.generations(&key).unwrap_or_default().contains(&g) {
                    store.retire_generation(&key, g)?;
                }
                let mut records = GenerationRecords::new();
                records.insert(RecordName::new(RecordName::KEY_SHARE)?, secret);
                store.put_generation(&key, g, &records)
            })
            .await??;
        Ok(())
    }

    /// Makes `generation` active.
    pub async fn activate(&self, key: &str, generation: u64) -> Result<()> {
        let key = key_id(key)?;
        self.store
            .with_store(move |store| store.activate(&key, Generation(generation)))
            .await??;
        Ok(())
    }

    /// Deletes an inactive generation (nothing to do if it is not stored).
    pub async fn retire(&self, key: &str, generation: u64) -> Result<()> {
        let key = key_id(key)?;
        self.store.retire(&key, Generation(generation)).await?;
        Ok(())
    }

    /// Deletes every generation of the key; `false` if there was none.
    pub async fn delete(&self, key: &str) -> Result<bool> {
        let key = key_id(key)?;
        let deleted = self
            .store
            .with_store(move |store| match store.delete_key(&key) {
                Ok(()) => Ok(true),
                Err(KeystoreError::UnknownKey(_)) => Ok(false),
                Err(e) => Err(e),
            })
            .await??;
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn actor_stores_activates_retires_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let unlock = UnlockConfig::Passphrase(Zeroizing::new("test passphrase".into()));
        let keys = KeysHandle::open(dir.path().join("ks"), &unlock, true)
            .await
            .unwrap();
        assert!(keys.load_active("k").await.unwrap().is_none());
        keys.put_fresh("k", 0, Zeroizing::new(b"gen0".to_vec()))
            .await
            .unwrap();
        // Written inactive.
        assert!(keys.load_active("k").await.unwrap().is_none());
        keys.activate("k", 0).await.unwrap();
        keys.put_fresh("k", 1, Zeroizing::new(b"gen1-a".to_vec()))
            .await
            .unwrap();
        // A leftover inactive generation is replaced.
        keys.put_fresh("k", 1, Zeroizing::new(b"gen1-b".to_vec()))
            .await
            .unwrap();
        // The active one is not.
        assert!(keys
            .put_fresh("k", 0, Zeroizing::new(b"x".to_vec()))
            .await
            .is_err());
        keys.activate("k", 1).await.unwrap();
        keys.retire("k", 0).await.unwrap();
        let (g, bytes) = keys.load_active("k").await.unwrap().unwrap();
        assert_eq!((g, bytes.expose()), (1, &b"gen1-b"[..]));
        assert!(keys.delete("k").await.unwrap());
        assert!(!keys.delete("k").await.unwrap());
        assert!(keys.load_active("k").await.unwrap().is_none());
    }
}
