//! Where a node keeps its key shares: the [`ShareStore`] trait and an in-memory
//! implementation for tests.
//!
//! The pool layer drives a store in one fixed **commit order** (see
//! [`crate::pool`]): a new share is first *staged* (durable, not active), then, once the
//! run is confirmed, *activated* together with the embedder's pool state in one atomic
//! step, and only then is the previous generation *retired*. A crash at any point leaves
//! either the old generation active with the old state, or the new one with the new state.
//!
//! A reshared generation is activated only with its [`ReshareCertificate`] (every new
//! member's signed confirmation), stored with it. A staged generation that never got one
//! stays **pending**: not active, not deleted, never overwritten, listed by
//! [`ShareStore::load_pending`] with the state to commit with it, until a certificate
//! arrives (from any peer, also after a restart).

use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use async_trait::async_trait;
use transport::NodeId;

use crate::ecdsa::KeyShare;
use crate::error::StoreError;
use crate::ids::{ExecutionId, Generation, KeyId};
use crate::reshare::ReshareCertificate;

/// A staged generation that is not active yet (see [`ShareStore::load_pending`]).
pub struct PendingGeneration {
    /// The staged share.
    pub share: KeyShare,
    /// The embedder's state to commit with it when it is activated.
    pub state: Vec<u8>,
    /// Its certificate, if one was stored (a crash between storing it and activating).
    pub certificate: Option<ReshareCertificate>,
}

impl std::fmt::Debug for PendingGeneration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingGeneration")
            .field("key_id", self.share.key_id())
            .field("generation", &self.share.generation())
            .field("certified", &self.certificate.is_some())
            .finish_non_exhaustive()
    }
}

/// Durable storage of key shares and of the embedder's state committed with them.
///
/// `state` is opaque to the pool layer: the embedder's description of the pool that the
/// active generation belongs to (members, stakes, L1 height...). It is written in the same
/// atomic step as the active-generation switch, so the two never disagree after a crash.
/// `keystore::AsyncKeystore` implements this trait on the encrypted LevelDB keystore.
#[async_trait]
pub trait ShareStore: Send + Sync + 'static {
    /// The active share of `key_id`, if any.
    async fn load_active(&self, key_id: &KeyId) -> Result<Option<KeyShare>, StoreError>;

    /// The state last committed for `key_id` (by [`ShareStore::activate`],
    /// [`ShareStore::save_state`] or [`ShareStore::delete`]), if any.
    async fn load_state(&self, key_id: &KeyId) -> Result<Option<Vec<u8>>, StoreError>;

    /// Durably stores `share` as a **pending** generation, with the embedder's
    /// `pending_state` to commit when it is activated: not active, not loaded by
    /// [`ShareStore::load_active`]. Fails if that generation already exists (a store never
    /// overwrites a generation, pending or not).
    async fn stage(&self, share: &KeyShare, pending_state: &[u8]) -> Result<(), StoreError>;

    /// The staged generations of `key_id` newer than its active one (all of them if none
    /// is active), oldest first, each with the state staged with it and its certificate if
    /// one was stored.
    async fn load_pending(&self, key_id: &KeyId) -> Result<Vec<PendingGeneration>, StoreError>;

    /// In one atomic step as far as the active generation and `state` go: makes the
    /// staged `generation` of `key_id` the active one and stores `state` with it. A
    /// reshared generation comes with its `certificate`, stored with the generation
    /// (before the switch, so the active generation always has it); keygen has none.
    async fn activate(
        &self,
        key_id: &KeyId,
        generation: Generation,
        state: &[u8],
        certificate: Option<&ReshareCertificate>,
    ) -> Result<(), StoreError>;

    /// The certificate stored with `generation` of `key_id`, if any.
    async fn load_certificate(
        &self,
        key_id: &KeyId,
        generation: Generation,
    ) -> Result<Option<ReshareCertificate>, StoreError>;

    /// Deletes generation `generation` of `key_id`, which must not be the active one.
    /// Its certificate and bans go with it.
    async fn retire(&self, key_id: &KeyId, generation: Generation) -> Result<(), StoreError>;

    /// Durably stores `members` as the members banned from `generation` of `key_id`
    /// (replacing the set stored before), so a restart keeps refusing to run that
    /// generation with them (see [`crate::pool::PoolEvent::MemberBanned`]). The
    /// generation must be stored; its bans are deleted with it.
    async fn save_bans(
        &self,
        key_id: &KeyId,
        generation: Generation,
        members: &BTreeSet<NodeId>,
    ) -> Result<(), StoreError>;

    /// The members stored by [`ShareStore::save_bans`] for `generation` of `key_id`;
    /// empty if none were.
    async fn load_bans(
        &self,
        key_id: &KeyId,
        generation: Generation,
    ) -> Result<BTreeSet<NodeId>, StoreError>;

    /// Deletes every generation of `key_id` and stores `state` (what the node knows of the
    /// pool it left). Returns whether any generation existed.
    async fn delete(&self, key_id: &KeyId, state: &[u8]) -> Result<bool, StoreError>;

    /// Stores `state` for `key_id` without touching its shares (e.g. before keygen).
    async fn save_state(&self, key_id: &KeyId, state: &[u8]) -> Result<(), StoreError>;

    /// Every generation of `key_id` in the store (active, pending or left over), oldest
    /// first; empty for an unknown key. [`crate::pool::PoolNode::start`] retires those
    /// older than the active one that a crash between activation and retirement left.
    async fn stored_generations(&self, key_id: &KeyId) -> Result<Vec<Generation>, StoreError>;

    /// Durably records `eids`, keeping the `keep` most recently recorded ones and
    /// forgetting older ones. They are opaque 32-byte ids to the store:
    /// [`crate::pool::PoolNode`] records one per proposal it had (proposed, followed or
    /// refused), a digest of the proposal's sender and execution id, and reads them back
    /// with [`ShareStore::load_executions`] when it starts, so a proposal replayed after
    /// a restart is refused like one replayed before it.
    async fn record_executions(&self, eids: &[ExecutionId], keep: usize) -> Result<(), StoreError>;

    /// The execution ids recorded by [`ShareStore::record_executions`] and still kept,
    /// oldest first.
    async fn load_executions(&self) -> Result<Vec<ExecutionId>, StoreError>;
}

/// Errors of [`MemoryShareStore`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MemoryStoreError {
    /// The generation was already stored.
    #[error("generation {generation} of key {key_id} already exists")]
    GenerationExists {
        /// The key.
        key_id: KeyId,
        /// The generation.
        generation: Generation,
    },
    /// The generation is not stored.
    #[error("generation {generation} of key {key_id} is not stored")]
    NoSuchGeneration {
        /// The key.
        key_id: KeyId,
        /// The generation.
        generation: Generation,
    },
    /// Retiring the active generation was asked for.
    #[error("generation {generation} of key {key_id} is active and cannot be retired")]
    RetiringActive {
        /// The key.
        key_id: KeyId,
        /// The generation.
        generation: Generation,
    },
}

#[derive(Default)]
struct MemoryKey {
    generations: BTreeMap<Generation, zeroize::Zeroizing<Vec<u8>>>,
    pending_states: BTreeMap<Generation, Vec<u8>>,
    certificates: BTreeMap<Generation, ReshareCertificate>,
    bans: BTreeMap<Generation, BTreeSet<NodeId>>,
    active: Option<Generation>,
    state: Option<Vec<u8>>,
}

/// A [`ShareStore`] in memory (tests, examples, and embedders that keep shares
/// elsewhere). Shares are kept as their serialized secret bytes, zeroized on drop.
#[derive(Default)]
pub struct MemoryShareStore {
    keys: Mutex<HashMap<KeyId, MemoryKey>>,
    executions: Mutex<VecDeque<ExecutionId>>,
}

impl std::fmt::Debug for MemoryShareStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryShareStore([REDACTED])")
    }
}

impl MemoryShareStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The generations stored for `key_id` (active or pending), oldest first.
    pub fn generations(&self, key_id: &KeyId) -> Vec<Generation> {
        let keys = self.keys.lock();
        keys.get(key_id)
            .map(|k| k.generations.keys().copied().collect())
            .unwrap_or_default()
    }

    /// The active generation of `key_id`.
    pub fn active_generation(&self, key_id: &KeyId) -> Option<Generation> {
        let keys = self.keys.lock();
        keys.get(key_id).and_then(|k| k.active)
    }
}

#[async_trait]
impl ShareStore for MemoryShareStore {
    async fn load_active(&self, key_id: &KeyId) -> Result<Option<KeyShare>, StoreError> {
        let bytes = {
            let keys = self.keys.lock();
            match keys
                .get(key_id)
                .and_then(|k| k.active.and_then(|g| k.generations.get(&g)))
            {
                Some(bytes) => bytes.clone(),
                None => return Ok(None),
            }
        };
        Ok(Some(KeyShare::from_secret_bytes(&bytes)?))
    }

    async fn load_state(&self, key_id: &KeyId) -> Result<Option<Vec<u8>>, StoreError> {
        let keys = self.keys.lock();
        Ok(keys.get(key_id).and_then(|k| k.state.clone()))
    }

    async fn stage(&self, share: &KeyShare, pending_state: &[u8]) -> Result<(), StoreError> {
        let bytes = share.to_secret_bytes()?;
        let mut keys = self.keys.lock();
        let key = keys.entry(share.key_id().clone()).or_default();
        if key.generations.contains_key(&share.generation()) {
            return Err(Box::new(MemoryStoreError::GenerationExists {
                key_id: share.key_id().clone(),
                generation: share.generation(),
            }));
        }
        key.generations.insert(share.generation(), bytes);
        key.pending_states
            .insert(share.generation(), pending_state.to_vec());
        Ok(())
    }

    async fn load_pending(&self, key_id: &KeyId) -> Result<Vec<PendingGeneration>, StoreError> {
        let staged: Vec<(
            Generation,
            zeroize::Zeroizing<Vec<u8>>,
            Vec<u8>,
            Option<ReshareCertificate>,
        )> = {
            let keys = self.keys.lock();
            let Some(key) = keys.get(key_id) else {
                return Ok(Vec::new());
            };
            key.generations
                .iter()
                .filter(|(g, _)| key.active.is_none_or(|a| **g > a))
                .map(|(g, bytes)| {
                    (
                        *g,
                        bytes.clone(),
                        key.pending_states.get(g).cloned().unwrap_or_default(),
                        key.certificates.get(g).cloned(),
                    )
                })
                .collect()
        };
        staged
            .into_iter()
            .map(|(_, bytes, state, certificate)| {
                Ok(PendingGeneration {
                    share: KeyShare::from_secret_bytes(&bytes)?,
                    state,
                    certificate,
                })
            })
            .collect()
    }

    async fn load_certificate(
        &self,
        key_id: &KeyId,
        generation: Generation,
    ) -> Result<Option<ReshareCertificate>, StoreError> {
        let keys = self.keys.lock();
        Ok(keys
            .get(key_id)
            .and_then(|k| k.certificates.get(&generation).cloned()))
    }

    async fn activate(
        &self,
        key_id: &KeyId,
        generation: Generation,
        state: &[u8],
        certificate: Option<&ReshareCertificate>,
    ) -> Result<(), StoreError> {
        let mut keys = self.keys.lock();
        let key = keys.entry(key_id.clone()).or_default();
        if !key.generations.contains_key(&generation) {
            return Err(Box::new(MemoryStoreError::NoSuchGeneration {
                key_id: key_id.clone(),
                generation,
            }));
        }
        if let Some(certificate) = certificate {
            key.certificates.insert(generation, certificate.clone());
        }
        key.pending_states.remove(&generation);
        key.active = Some(generation);
        key.state = Some(state.to_vec());
        Ok(())
    }

    async fn retire(&self, key_id: &KeyId, generation: Generation) -> Result<(), StoreError> {
        let mut keys = self.keys.lock();
        let Some(key) = keys.get_mut(key_id) else {
            return Ok(());
        };
        if key.active == Some(generation) {
            return Err(Box::new(MemoryStoreError::RetiringActive {
                key_id: key_id.clone(),
                generation,
            }));
        }
        key.generations.remove(&generation);
        key.pending_states.remove(&generation);
        key.certificates.remove(&generation);
        key.bans.remove(&generation);
        Ok(())
    }

    async fn delete(&self, key_id: &KeyId, state: &[u8]) -> Result<bool, StoreError> {
        let mut keys = self.keys.lock();
        let key = keys.entry(key_id.clone()).or_default();
        let existed = !key.generations.is_empty();
        key.generations.clear();
        key.pending_states.clear();
        key.certificates.clear();
        key.bans.clear();
        key.active = None;
        key.state = Some(state.to_vec());
        Ok(existed)
    }

    async fn save_bans(
        &self,
        key_id: &KeyId,
        generation: Generation,
        members: &BTreeSet<NodeId>,
    ) -> Result<(), StoreError> {
        let mut keys = self.keys.lock();
        let key = keys
            .get_mut(key_id)
            .filter(|k| k.generations.contains_key(&generation))
            .ok_or_else(|| MemoryStoreError::NoSuchGeneration {
                key_id: key_id.clone(),
                generation,
            })?;
        key.bans.insert(generation, members.clone());
        Ok(())
    }

    async fn load_bans(
        &self,
        key_id: &KeyId,
        generation: Generation,
    ) -> Result<BTreeSet<NodeId>, StoreError> {
        let keys = self.keys.lock();
        Ok(keys
            .get(key_id)
            .and_then(|k| k.bans.get(&generation).cloned())
            .unwrap_or_default())
    }

    async fn save_state(&self, key_id: &KeyId, state: &[u8]) -> Result<(), StoreError> {
        let mut keys = self.keys.lock();
        keys.entry(key_id.clone()).or_default().state = Some(state.to_vec());
        Ok(())
    }

    async fn stored_generations(&self, key_id: &KeyId) -> Result<Vec<Generation>, StoreError> {
        Ok(self.generations(key_id))
    }

    async fn record_executions(&self, eids: &[ExecutionId], keep: usize) -> Result<(), StoreError> {
        let mut executions = self.executions.lock();
        executions.extend(eids.iter().copied());
        while executions.len() > keep {
            executions.pop_front();
        }
        Ok(())
    }

    async fn load_executions(&self) -> Result<Vec<ExecutionId>, StoreError> {
        Ok(self.executions.lock().iter().copied().collect())
    }
}
