//! The keystore actor.
//!
//! [`keystore::Keystore`] is not `Send` (rusty-leveldb uses `Rc`), so it lives on a
//! dedicated thread that owns it; async code talks to it through [`KeysHandle`]. Secrets
//! cross the channel as [`keystore::SecretBytes`] (zeroized on drop, redacted in Debug).

use std::path::PathBuf;
use std::sync::mpsc;

use keystore::{
    Generation, GenerationRecords, KdfParams, KeyId, Keystore, KeystoreError, RecordName,
    SecretBytes, Unlock,
};
use tokio::sync::oneshot;
use zeroize::Zeroizing;

use crate::config::UnlockConfig;
use crate::error::{Error, Result};

type Reply<T> = oneshot::Sender<Result<T>>;

enum Command {
    LoadActive(KeyId, Reply<Option<(u64, SecretBytes)>>),
    PutFresh(KeyId, u64, SecretBytes, Reply<()>),
    Activate(KeyId, u64, Reply<()>),
    Retire(KeyId, u64, Reply<()>),
    Delete(KeyId, Reply<bool>),
}

/// Handle to the keystore thread. Cheap to clone; the thread stops (closing the store)
/// when the last handle is dropped.
#[derive(Clone)]
pub struct KeysHandle {
    tx: mpsc::Sender<Command>,
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
    /// Opens (creating if needed) the keystore at `dir` on a new thread.
    pub async fn open(
        dir: PathBuf,
        unlock: &UnlockConfig,
        insecure_fast_kdf: bool,
    ) -> Result<Self> {
        let unlock = match unlock {
            UnlockConfig::Passphrase(p) => Unlock::passphrase(p.as_str()),
            UnlockConfig::KeyFile(path) => Unlock::key_file(path.clone()),
        };
        let (tx, rx) = mpsc::channel::<Command>();
        let (ready_tx, ready_rx) = oneshot::channel::<Result<()>>();
        std::thread::Builder::new()
            .name("keystore".into())
            .spawn(move || {
                std::fs::create_dir_all(&dir).ok();
                let opened = if insecure_fast_kdf {
                    Keystore::open_with_kdf(&dir, &unlock, KdfParams::insecure_for_tests())
                } else {
                    Keystore::open(&dir, &unlock)
                };
                drop(unlock);
                let mut store = match opened {
                    Ok(s) => {
                        let _ = ready_tx.send(Ok(()));
                        s
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.into()));
                        return;
                    }
                };
                while let Ok(cmd) = rx.recv() {
                    serve(&mut store, cmd);
                }
                if let Err(e) = store.close() {
                    tracing::warn!(error = %e, "closing keystore failed");
                }
            })?;
        ready_rx
            .await
            .map_err(|_| Error::Internal("keystore thread died".into()))??;
        Ok(Self { tx })
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .map_err(|_| Error::Internal("keystore thread stopped".into()))?;
        rx.await
            .map_err(|_| Error::Internal("keystore thread stopped".into()))?
    }

    /// The active generation and its key-share bytes, if the key exists.
    pub async fn load_active(&self, key: &str) -> Result<Option<(u64, SecretBytes)>> {
        let key = key_id(key)?;
        self.call(|r| Command::LoadActive(key, r)).await
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
        self.call(|r| Command::PutFresh(key, generation, secret, r))
            .await
    }

    /// Makes `generation` active.
    pub async fn activate(&self, key: &str, generation: u64) -> Result<()> {
        let key = key_id(key)?;
        self.call(|r| Command::Activate(key, generation, r)).await
    }

    /// Deletes an inactive generation.
    pub async fn retire(&self, key: &str, generation: u64) -> Result<()> {
        let key = key_id(key)?;
        self.call(|r| Command::Retire(key, generation, r)).await
    }

    /// Deletes every generation of the key; `false` if there was none.
    pub async fn delete(&self, key: &str) -> Result<bool> {
        let key = key_id(key)?;
        self.call(|r| Command::Delete(key, r)).await
    }
}

fn serve(store: &mut Keystore, cmd: Command) {
    match cmd {
        Command::LoadActive(key, reply) => {
            let result = match store.load_active(&key) {
                Ok((generation, records)) => match records.key_share() {
                    Some(share) => Ok(Some((
                        generation.0,
                        SecretBytes::from_slice(share.expose()),
                    ))),
                    None => Err(Error::Internal(format!(
                        "active generation {generation} of {key} has no key share record"
                    ))),
                },
                Err(KeystoreError::UnknownKey(_)) | Err(KeystoreError::NoActiveGeneration(_)) => {
                    Ok(None)
                }
                Err(e) => Err(e.into()),
            };
            let _ = reply.send(result);
        }
        Command::PutFresh(key, generation, secret, reply) => {
            let result = (|| {
                let g = Generation(generation);
                let active = store.active_generation(&key).ok().flatten();
                if active != Some(g) && store.generations(&key).unwrap_or_default().contains(&g) {
                    store.retire_generation(&key, g)?;
                }
                let mut records = GenerationRecords::new();
                records.insert(RecordName::new(RecordName::KEY_SHARE)?, secret);
                store.put_generation(&key, g, &records)?;
                Ok(())
            })();
            let _ = reply.send(result);
        }
        Command::Activate(key, generation, reply) => {
            let _ = reply.send(
                store
                    .activate(&key, Generation(generation))
                    .map_err(Into::into),
            );
        }
        Command::Retire(key, generation, reply) => {
            let _ = reply.send(
                store
                    .retire_generation(&key, Generation(generation))
                    .map_err(Into::into),
            );
        }
        Command::Delete(key, reply) => {
            let result = match store.delete_key(&key) {
                Ok(()) => Ok(true),
                Err(KeystoreError::UnknownKey(_)) => Ok(false),
                Err(e) => Err(e.into()),
            };
            let _ = reply.send(result);
        }
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
