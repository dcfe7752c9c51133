//! [`AsyncKeystore`]: the keystore for async code, and its [`ShareStore`] implementation.

use std::collections::BTreeSet;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};

use async_trait::async_trait;
use tokio::sync::oneshot;
use tss_core::pool::{PendingGeneration, ShareStore};
use tss_core::transport::NodeId;
use tss_core::{ExecutionId, KeyShare, ReshareCertificate, StoreError, TssError};

use crate::error::{KeystoreError, Result};
use crate::kdf::{KdfParams, Unlock};
use crate::secret::SecretBytes;
use crate::store::Keystore;
use crate::types::{Generation, GenerationRecords, KeyId, RecordName};

type Job = Box<dyn FnOnce(&mut Keystore) + Send>;

enum Msg {
    Run(Job),
    Close(oneshot::Sender<Result<()>>),
}

/// A [`Keystore`] for async code: `Send + Sync`, cheap to clone, usable from any task.
///
/// [`Keystore`] is not `Send` (rusty-leveldb uses `Rc`), so the store lives on a
/// dedicated thread that owns it, and each call is a job sent to that thread over a
/// channel, answered over a oneshot channel. Calls never block the async runtime, also
/// not while the store is opened (Argon2id takes a while on purpose), and run one at a
/// time in the order they were made.
///
/// The typed API speaks [`tss_core::KeyShare`]: a generation is **staged** (stored,
/// write-once, not active), then **activated** together with the embedder's state in one
/// atomic step, then the previous generation is **retired**; see
/// [`Keystore::activate_with_state`] for the crash guarantee. It implements
/// [`tss_core::pool::ShareStore`]. Each generation is stored as one record,
/// [`RecordName::KEY_SHARE`], holding [`KeyShare::to_secret_bytes`]; those bytes cross the
/// channel as [`SecretBytes`] and are zeroized when dropped, on either side.
/// [`with_store`](AsyncKeystore::with_store) gives the thread's [`Keystore`] itself, for
/// raw records and everything else.
///
/// The thread closes the store (releasing its lock) when the last handle is dropped, a
/// moment after the drop; [`close`](AsyncKeystore::close) closes it at once and reports
/// errors, and the store can be reopened as soon as it returned. A call whose future is
/// dropped still runs to completion on the thread (an `activate` is never cut short).
///
/// ```
/// use keystore::{AsyncKeystore, KdfParams, KeyId, Unlock};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> keystore::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// // Real deployments use `AsyncKeystore::open` (Argon2id m=64 MiB, t=3, p=1).
/// let store = AsyncKeystore::open_with_kdf(
///     dir.path(),
///     Unlock::passphrase("correct horse battery staple"),
///     KdfParams::insecure_for_tests(),
/// )
/// .await?;
/// let key = KeyId::new("sequencer-key")?;
/// assert!(store.load_active(&key).await?.is_none());
/// store.save_state(&key, b"pool: genesis").await?;
/// // After keygen: store.stage(&share).await?; then, once every party confirmed,
/// // store.activate(&key, share.generation(), b"pool: members ...").await?;
/// assert_eq!(store.load_state(&key).await?.as_deref(), Some(&b"pool: genesis"[..]));
/// store.close().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct AsyncKeystore {
    tx: mpsc::Sender<Msg>,
    path: Arc<PathBuf>,
}

impl fmt::Debug for AsyncKeystore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncKeystore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Why a stored generation is not a usable share (never including secret bytes).
fn invalid_share(key_id: &KeyId, generation: Generation, reason: String) -> KeystoreError {
    KeystoreError::InvalidKeyShare {
        key_id: key_id.clone(),
        generation,
        reason,
    }
}

fn tss_reason(e: TssError) -> String {
    match e {
        // serde's message may quote part of the (secret) input.
        TssError::Decode { .. } => "it does not decode as a tss-core key share".into(),
        e => e.to_string(),
    }
}

/// The [`KeyShare`] in `records`, checked to be the share of `key_id` at `generation`.
fn decode_share(
    key_id: &KeyId,
    generation: Generation,
    records: &GenerationRecords,
) -> Result<KeyShare> {
    let bytes = records.key_share().ok_or_else(|| {
        invalid_share(
            key_id,
            generation,
            "the generation has no key_share record".into(),
        )
    })?;
    let share = KeyShare::from_secret_bytes(bytes.expose())
        .map_err(|e| invalid_share(key_id, generation, tss_reason(e)))?;
    if share.key_id() != key_id || share.generation() != generation {
        return Err(invalid_share(
            key_id,
            generation,
            format!(
                "it holds the share of key {} {}",
                share.key_id(),
                share.generation()
            ),
        ));
    }
    Ok(share)
}

/// Name of the record holding a staged generation's pending state.
pub const PENDING_STATE_RECORD: &str = "pending_state";
/// Name of the attachment holding a generation's reshare certificate.
pub const CERTIFICATE_ATTACHMENT: &str = "reshare_certificate";

/// Name of the attachment holding the members banned from a generation (their 32-byte
/// node ids, concatenated, in order).
pub const BANS_ATTACHMENT: &str = "banned_members";

fn load_bans_in(
    ks: &mut Keystore,
    key_id: &KeyId,
    generation: Generation,
) -> Result<BTreeSet<NodeId>> {
    let Some(bytes) = ks.load_attachment(key_id, generation, &RecordName::new(BANS_ATTACHMENT)?)?
    else {
        return Ok(BTreeSet::new());
    };
    let bytes = bytes.expose();
    if bytes.len() % 32 != 0 {
        return Err(invalid_share(
            key_id,
            generation,
            format!(
                "its bans are {} bytes, not a whole number of 32-byte node ids",
                bytes.len()
            ),
        ));
    }
    Ok(bytes
        .chunks_exact(32)
        .map(|id| NodeId::from_bytes(id.try_into().expect("32 bytes")))
        .collect())
}

fn load_certificate_in(
    ks: &mut Keystore,
    key_id: &KeyId,
    generation: Generation,
) -> Result<Option<ReshareCertificate>> {
    let Some(bytes) = ks.load_attachment(
        key_id,
        generation,
        &RecordName::new(CERTIFICATE_ATTACHMENT)?,
    )?
    else {
        return Ok(None);
    };
    ReshareCertificate::from_bytes(bytes.expose())
        .map(Some)
        .map_err(|e| invalid_share(key_id, generation, format!("its certificate: {e}")))
}

fn serve(mut store: Keystore, rx: mpsc::Receiver<Msg>) {
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Run(job) => job(&mut store),
            Msg::Close(reply) => {
                // The store (and its lock) is released before the reply is sent.
                let _ = reply.send(store.close());
                return;
            }
        }
    }
    // Every handle was dropped: nobody is left to report an error to.
    let _ = store.close();
}

impl AsyncKeystore {
    /// Opens the store in directory `path` on a new thread, creating it (with the
    /// default, secure [`KdfParams`]) if it does not exist: [`Keystore::open`], whose
    /// errors it returns.
    pub async fn open(path: impl AsRef<Path>, unlock: Unlock) -> Result<AsyncKeystore> {
        Self::start(path.as_ref().to_owned(), move |p| {
            Keystore::open(p, &unlock)
        })
        .await
    }

    /// Like [`open`](AsyncKeystore::open), but a newly created store uses `kdf_params`
    /// ([`Keystore::open_with_kdf`]).
    pub async fn open_with_kdf(
        path: impl AsRef<Path>,
        unlock: Unlock,
        kdf_params: KdfParams,
    ) -> Result<AsyncKeystore> {
        Self::start(path.as_ref().to_owned(), move |p| {
            Keystore::open_with_kdf(p, &unlock, kdf_params)
        })
        .await
    }

    async fn start(
        path: PathBuf,
        open: impl FnOnce(&Path) -> Result<Keystore> + Send + 'static,
    ) -> Result<AsyncKeystore> {
        let (tx, rx) = mpsc::channel::<Msg>();
        let (ready_tx, ready_rx) = oneshot::channel::<Result<()>>();
        let thread_path = path.clone();
        std::thread::Builder::new()
            .name("keystore".into())
            .spawn(move || {
                // `open` owns the credential; it is dropped (zeroized) once used.
                let opened = open(&thread_path);
                match opened {
                    Ok(store) => {
                        if ready_tx.send(Ok(())).is_ok() {
                            serve(store, rx);
                        }
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .map_err(|source| KeystoreError::Io {
                path: path.clone(),
                source,
            })?;
        ready_rx.await.map_err(|_| KeystoreError::Closed)??;
        Ok(AsyncKeystore {
            tx,
            path: Arc::new(path),
        })
    }

    /// The store directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the store's thread with the [`Keystore`] itself and returns its
    /// result: raw records ([`Keystore::load`], [`Keystore::sealed_record`],
    /// [`Keystore::put_generation`] with any records), [`Keystore::list_keys`], ...
    /// `f` runs between other calls, never concurrently with one. It must not wait
    /// for a call on this store (that call would wait for `f`). A panic in `f` is
    /// resumed in the caller; the store stays open.
    ///
    /// [`KeystoreError::Closed`] if the store was closed.
    pub async fn with_store<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Keystore) -> R + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |store| {
            let _ = tx.send(panic::catch_unwind(AssertUnwindSafe(|| f(store))));
        });
        self.tx
            .send(Msg::Run(job))
            .map_err(|_| KeystoreError::Closed)?;
        match rx.await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(payload)) => panic::resume_unwind(payload),
            Err(_) => Err(KeystoreError::Closed),
        }
    }

    async fn call<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Keystore) -> Result<R> + Send + 'static,
    {
        self.with_store(f).await?
    }

    /// The active share of `key_id`, or `None` if the key has no generation or none
    /// was activated.
    ///
    /// [`KeystoreError::InvalidKeyShare`] if the stored bytes are not a share of this key
    /// and generation; the other errors of [`Keystore::load_active`] (tampering, ...).
    pub async fn load_active(&self, key_id: &KeyId) -> Result<Option<KeyShare>> {
        let key_id = key_id.clone();
        self.call(move |ks| match ks.load_active(&key_id) {
            Ok((generation, records)) => decode_share(&key_id, generation, &records).map(Some),
            Err(KeystoreError::UnknownKey(_)) | Err(KeystoreError::NoActiveGeneration(_)) => {
                Ok(None)
            }
            Err(e) => Err(e),
        })
        .await
    }

    /// The share of one stored generation of `key_id`, active or not
    /// ([`KeystoreError::UnknownKey`], [`KeystoreError::UnknownGeneration`]).
    pub async fn load(&self, key_id: &KeyId, generation: Generation) -> Result<KeyShare> {
        let key_id = key_id.clone();
        self.call(move |ks| {
            let records = ks.load(&key_id, generation)?;
            decode_share(&key_id, generation, &records)
        })
        .await
    }

    /// Stores `share` as generation [`share.generation()`](KeyShare::generation) of
    /// [`share.key_id()`](KeyShare::key_id), **not active** ([`load_active`](Self::load_active)
    /// does not return it until [`activate`](Self::activate)). One synced write.
    /// Generations are write-once: an existing one (active or not) gives
    /// [`KeystoreError::GenerationExists`] and is left untouched.
    pub async fn stage(&self, share: &KeyShare) -> Result<()> {
        let (key_id, generation) = (share.key_id().clone(), share.generation());
        let bytes = SecretBytes::from(
            share
                .to_secret_bytes()
                .map_err(|e| invalid_share(&key_id, generation, tss_reason(e)))?,
        );
        self.call(move |ks| {
            let mut records = GenerationRecords::new();
            records.insert(RecordName::new(RecordName::KEY_SHARE)?, bytes);
            ks.put_generation(&key_id, generation, &records)
        })
        .await
    }

    /// In one atomic, synced step: makes the staged `generation` of `key_id` the active
    /// one and stores `state` as the key's state ([`Keystore::activate_with_state`]).
    /// The generation is decrypted and decoded first, so a damaged or foreign share is
    /// never activated ([`KeystoreError::UnknownGeneration`], [`KeystoreError::Tampered`],
    /// [`KeystoreError::InvalidKeyShare`]).
    pub async fn activate(
        &self,
        key_id: &KeyId,
        generation: Generation,
        state: &[u8],
    ) -> Result<()> {
        let (key_id, state) = (key_id.clone(), state.to_vec());
        self.call(move |ks| {
            let records = ks.load(&key_id, generation)?;
            drop(decode_share(&key_id, generation, &records)?);
            drop(records);
            ks.activate_with_state(&key_id, generation, &state)
        })
        .await
    }

    /// Like [`AsyncKeystore::stage`], and stores `pending_state` (the embedder's state to
    /// commit when the generation is activated) as its [`PENDING_STATE_RECORD`] record.
    pub async fn stage_pending(&self, share: &KeyShare, pending_state: &[u8]) -> Result<()> {
        let (key_id, generation) = (share.key_id().clone(), share.generation());
        let bytes = SecretBytes::from(
            share
                .to_secret_bytes()
                .map_err(|e| invalid_share(&key_id, generation, tss_reason(e)))?,
        );
        let state = SecretBytes::from(zeroize::Zeroizing::new(pending_state.to_vec()));
        self.call(move |ks| {
            let mut records = GenerationRecords::new();
            records.insert(RecordName::new(RecordName::KEY_SHARE)?, bytes);
            records.insert(RecordName::new(PENDING_STATE_RECORD)?, state);
            ks.put_generation(&key_id, generation, &records)
        })
        .await
    }

    /// The staged generations of `key_id` newer than the active one (all if none is
    /// active), oldest first, with their pending state and stored certificate.
    pub async fn load_pending(&self, key_id: &KeyId) -> Result<Vec<PendingGeneration>> {
        let key_id = key_id.clone();
        self.call(move |ks| {
            let active = match ks.active_generation(&key_id) {
                Ok(a) => a,
                Err(KeystoreError::UnknownKey(_)) => return Ok(Vec::new()),
                Err(e) => return Err(e),
            };
            let generations = match ks.generations(&key_id) {
                Ok(g) => g,
                Err(KeystoreError::UnknownKey(_)) => return Ok(Vec::new()),
                Err(e) => return Err(e),
            };
            let mut out = Vec::new();
            for g in generations
                .into_iter()
                .filter(|g| active.is_none_or(|a| *g > a))
            {
                let records = ks.load(&key_id, g)?;
                let share = decode_share(&key_id, g, &records)?;
                let state = records
                    .get(PENDING_STATE_RECORD)
                    .map(|s| s.expose().to_vec())
                    .unwrap_or_default();
                let certificate = load_certificate_in(ks, &key_id, g)?;
                out.push(PendingGeneration {
                    share,
                    state,
                    certificate,
                });
            }
            Ok(out)
        })
        .await
    }

    /// Stores `certificate` with `generation` of `key_id` (an attachment, see
    /// [`Keystore::put_attachment`]).
    pub async fn put_certificate(
        &self,
        key_id: &KeyId,
        generation: Generation,
        certificate: &ReshareCertificate,
    ) -> Result<()> {
        let (key_id, bytes) = (key_id.clone(), certificate.to_bytes());
        self.call(move |ks| {
            ks.put_attachment(
                &key_id,
                generation,
                &RecordName::new(CERTIFICATE_ATTACHMENT)?,
                &bytes,
            )
        })
        .await
    }

    /// Stores `members` as the members banned from `generation` of `key_id` (an
    /// attachment, [`BANS_ATTACHMENT`], replacing the one stored before; deleted with the
    /// generation).
    pub async fn put_bans(
        &self,
        key_id: &KeyId,
        generation: Generation,
        members: &BTreeSet<NodeId>,
    ) -> Result<()> {
        let key_id = key_id.clone();
        let bytes: Vec<u8> = members.iter().flat_map(|m| *m.as_bytes()).collect();
        self.call(move |ks| {
            ks.put_attachment(
                &key_id,
                generation,
                &RecordName::new(BANS_ATTACHMENT)?,
                &bytes,
            )
        })
        .await
    }

    /// The members stored by [`put_bans`](Self::put_bans) for `generation` of `key_id`;
    /// empty if none were. [`KeystoreError::InvalidKeyShare`] if the record is not a
    /// list of node ids, [`KeystoreError::Tampered`] if it fails authentication.
    pub async fn load_bans(
        &self,
        key_id: &KeyId,
        generation: Generation,
    ) -> Result<BTreeSet<NodeId>> {
        let key_id = key_id.clone();
        self.call(move |ks| load_bans_in(ks, &key_id, generation))
            .await
    }

    /// The certificate stored with `generation` of `key_id`, if any.
    pub async fn load_certificate(
        &self,
        key_id: &KeyId,
        generation: Generation,
    ) -> Result<Option<ReshareCertificate>> {
        let key_id = key_id.clone();
        self.call(
            move |ks| match load_certificate_in(ks, &key_id, generation) {
                Err(KeystoreError::UnknownKey(_))
                | Err(KeystoreError::UnknownGeneration { .. }) => Ok(None),
                other => other,
            },
        )
        .await
    }

    /// Deletes generation `generation` of `key_id` (then compacts the database, see
    /// [`Keystore::retire_generation`]). Returns `false` if there was no such
    /// generation, so a retire repeated after a crash succeeds.
    /// [`KeystoreError::GenerationActive`] if it is the active generation.
    pub async fn retire(&self, key_id: &KeyId, generation: Generation) -> Result<bool> {
        let key_id = key_id.clone();
        self.call(move |ks| match ks.retire_generation(&key_id, generation) {
            Ok(()) => Ok(true),
            Err(KeystoreError::UnknownKey(_)) | Err(KeystoreError::UnknownGeneration { .. }) => {
                Ok(false)
            }
            Err(e) => Err(e),
        })
        .await
    }

    /// Deletes every generation of `key_id` and stores `state` in the same synced batch,
    /// then compacts ([`Keystore::delete_key_with_state`], which says why this order is
    /// crash-safe). Returns whether any generation existed.
    pub async fn delete(&self, key_id: &KeyId, state: &[u8]) -> Result<bool> {
        let (key_id, state) = (key_id.clone(), state.to_vec());
        self.call(move |ks| ks.delete_key_with_state(&key_id, &state))
            .await
    }

    /// The state last stored for `key_id` by [`activate`](Self::activate),
    /// [`save_state`](Self::save_state) or [`delete`](Self::delete), if any.
    pub async fn load_state(&self, key_id: &KeyId) -> Result<Option<Vec<u8>>> {
        let key_id = key_id.clone();
        self.call(move |ks| ks.load_state(&key_id)).await
    }

    /// Stores `state` for `key_id` without touching its generations (one synced write).
    pub async fn save_state(&self, key_id: &KeyId, state: &[u8]) -> Result<()> {
        let (key_id, state) = (key_id.clone(), state.to_vec());
        self.call(move |ks| ks.save_state(&key_id, &state)).await
    }

    /// The stored generations of `key_id` (active and staged), ascending; empty if none.
    pub async fn generations(&self, key_id: &KeyId) -> Result<Vec<Generation>> {
        let key_id = key_id.clone();
        self.call(move |ks| match ks.generations(&key_id) {
            Err(KeystoreError::UnknownKey(_)) => Ok(Vec::new()),
            other => other,
        })
        .await
    }

    /// The active generation of `key_id`, or `None` if it has none (or no generation).
    pub async fn active_generation(&self, key_id: &KeyId) -> Result<Option<Generation>> {
        let key_id = key_id.clone();
        self.call(move |ks| match ks.active_generation(&key_id) {
            Err(KeystoreError::UnknownKey(_)) => Ok(None),
            other => other,
        })
        .await
    }

    /// All key ids with at least one generation, sorted ([`Keystore::list_keys`]).
    pub async fn list_keys(&self) -> Result<Vec<KeyId>> {
        self.call(|ks| ks.list_keys()).await
    }

    /// Closes the store now and releases its lock, reporting any error of
    /// [`Keystore::close`]; it can be reopened as soon as this returns. Other handles
    /// to the same store then get [`KeystoreError::Closed`]. Closing a store that another
    /// handle already closed succeeds.
    pub async fn close(self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Close(tx)).is_err() {
            return Ok(());
        }
        // No reply: another handle's close came first and the thread has ended.
        rx.await.unwrap_or(Ok(()))
    }
}

/// The pool layer's view of the keystore. Errors are [`KeystoreError`]s (downcast the
/// [`StoreError`] to read them); [`ShareStore::retire`] of a generation that is not
/// stored succeeds, like [`AsyncKeystore::retire`].
#[async_trait]
impl ShareStore for AsyncKeystore {
    async fn load_active(&self, key_id: &KeyId) -> Result<Option<KeyShare>, StoreError> {
        Ok(AsyncKeystore::load_active(self, key_id).await?)
    }

    async fn load_state(&self, key_id: &KeyId) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(AsyncKeystore::load_state(self, key_id).await?)
    }

    async fn stage(&self, share: &KeyShare, pending_state: &[u8]) -> Result<(), StoreError> {
        Ok(AsyncKeystore::stage_pending(self, share, pending_state).await?)
    }

    async fn load_pending(&self, key_id: &KeyId) -> Result<Vec<PendingGeneration>, StoreError> {
        Ok(AsyncKeystore::load_pending(self, key_id).await?)
    }

    async fn activate(
        &self,
        key_id: &KeyId,
        generation: Generation,
        state: &[u8],
        certificate: Option<&ReshareCertificate>,
    ) -> Result<(), StoreError> {
        if let Some(certificate) = certificate {
            AsyncKeystore::put_certificate(self, key_id, generation, certificate).await?;
        }
        Ok(AsyncKeystore::activate(self, key_id, generation, state).await?)
    }

    async fn load_certificate(
        &self,
        key_id: &KeyId,
        generation: Generation,
    ) -> Result<Option<ReshareCertificate>, StoreError> {
        Ok(AsyncKeystore::load_certificate(self, key_id, generation).await?)
    }

    async fn retire(&self, key_id: &KeyId, generation: Generation) -> Result<(), StoreError> {
        AsyncKeystore::retire(self, key_id, generation).await?;
        Ok(())
    }

    async fn delete(&self, key_id: &KeyId, state: &[u8]) -> Result<bool, StoreError> {
        Ok(AsyncKeystore::delete(self, key_id, state).await?)
    }

    async fn save_state(&self, key_id: &KeyId, state: &[u8]) -> Result<(), StoreError> {
        Ok(AsyncKeystore::save_state(self, key_id, state).await?)
    }

    async fn save_bans(
        &self,
        key_id: &KeyId,
        generation: Generation,
        members: &BTreeSet<NodeId>,
    ) -> Result<(), StoreError> {
        Ok(AsyncKeystore::put_bans(self, key_id, generation, members).await?)
    }

    async fn load_bans(
        &self,
        key_id: &KeyId,
        generation: Generation,
    ) -> Result<BTreeSet<NodeId>, StoreError> {
        Ok(AsyncKeystore::load_bans(self, key_id, generation).await?)
    }

    async fn stored_generations(&self, key_id: &KeyId) -> Result<Vec<Generation>, StoreError> {
        match AsyncKeystore::generations(self, key_id).await {
            Ok(generations) => Ok(generations),
            Err(KeystoreError::UnknownKey(_)) => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }

    async fn record_executions(&self, eids: &[ExecutionId], keep: usize) -> Result<(), StoreError> {
        let eids: Vec<[u8; 32]> = eids.iter().map(|e| *e.as_bytes()).collect();
        Ok(self
            .call(move |ks| ks.record_executions(&eids, keep))
            .await?)
    }

    async fn load_executions(&self) -> Result<Vec<ExecutionId>, StoreError> {
        let eids = self.call(|ks| ks.executions()).await?;
        Ok(eids.into_iter().map(ExecutionId::from_bytes).collect())
    }
}
