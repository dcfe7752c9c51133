//! The [`Keystore`] itself.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rusty_leveldb::{LdbIterator, Options, StatusCode, WriteBatch, DB};

use crate::crash_point;
use crate::env::{open_private, SecureEnv};
use crate::error::{KeystoreError, Result};
use crate::kdf::{random_salt, KdfParams, Unlock, UnlockMethod, SALT_LEN};
use crate::seal::{self, Ad};
use crate::secret::{MasterKey, SecretBytes};
use crate::types::{Generation, GenerationRecords, KeyId, RecordName};
use crate::versions::{self, Marks};

/// Name of the advisory lock file inside the store directory.
pub const LOCK_FILE_NAME: &str = "KEYSTORE.LOCK";

const META_KEY: &[u8] = b"meta";
const META_MAGIC: &[u8; 8] = b"MPCKSTR1";
/// 2: active pointers and state records carry a version, and the store has a
/// high-water-mark file (`KEYSTORE.VERSIONS`). Stores of format 1 are refused.
const META_FORMAT_VERSION: u8 = 2;
const META_HEADER_LEN: usize = 8 + 1 + 1 + SALT_LEN + 4 * 3;
const KEY_CHECK_PLAINTEXT: &[u8] = b"mpc-keystore key-check v1";
const KEY_PREFIX: &[u8] = b"k/";

/// Database key layout (key ids and record names cannot contain `/`):
///
/// ```text
/// meta                                  -> header | sealed key-check value
/// k/<key id>/a                          -> version (u64 BE) | sealed active generation (u64 BE)
/// k/<key id>/g/<gen, 20 digits>/m       -> sealed manifest (record names)
/// k/<key id>/g/<gen, 20 digits>/r/<name>-> sealed record
/// s/<key id>                            -> version (u64 BE) | sealed state (the embedder's bytes)
/// e/<seq, 20 digits>                    -> sealed execution id (32 bytes), see `record_executions`
/// ```
///
/// State records live outside `k/` so a key with only a state (before keygen, or after
/// its shares were deleted) has no generations and is not listed by `list_keys`.
fn state_key(id: &KeyId) -> Vec<u8> {
    format!("s/{id}").into_bytes()
}
fn key_prefix(id: &KeyId) -> Vec<u8> {
    format!("k/{id}/").into_bytes()
}
fn active_key(id: &KeyId) -> Vec<u8> {
    format!("k/{id}/a").into_bytes()
}
fn gen_prefix(id: &KeyId, g: Generation) -> Vec<u8> {
    format!("k/{id}/g/{:020}/", g.0).into_bytes()
}
fn manifest_key(id: &KeyId, g: Generation) -> Vec<u8> {
    format!("k/{id}/g/{:020}/m", g.0).into_bytes()
}
fn record_key(id: &KeyId, g: Generation, name: &RecordName) -> Vec<u8> {
    format!("k/{id}/g/{:020}/r/{name}", g.0).into_bytes()
}
fn execution_key(seq: u64) -> Vec<u8> {
    format!("e/{seq:020}").into_bytes()
}
const EXECUTION_PREFIX: &[u8] = b"e/";
fn attachment_key(id: &KeyId, g: Generation, name: &RecordName) -> Vec<u8> {
    format!("k/{id}/g/{:020}/x/{name}", g.0).into_bytes()
}

/// An encrypted, generation-aware store of key shares in a LevelDB directory.
///
/// * Every secret record is sealed with AES-256-GCM under the master key
///   derived at [`open`](Keystore::open), with a fresh random nonce and
///   associated data binding it to its key id, generation and record name.
/// * Each key id has any number of write-once generations and at most one
///   *active* generation; [`activate`](Keystore::activate) switches it with a
///   single synced write batch, so a crash leaves either the old or the new
///   generation active, never a mix.
/// * The active pointer and the state record carry a per-key version, and the
///   store keeps a high-water mark of it outside the database
///   (`KEYSTORE.VERSIONS`), so an older pointer or state written back is
///   [`KeystoreError::RolledBack`]: see "Rollback" in the crate docs.
/// * [`activate_with_state`](Keystore::activate_with_state) switches the active
///   generation **and** stores the embedder's state (e.g. the pool it belongs to) in the
///   same synced batch, so after a crash both are old or both are new.
/// * [`delete_key`](Keystore::delete_key) and
///   [`retire_generation`](Keystore::retire_generation) remove the records
///   and compact the database so the ciphertext is gone from its files.
/// * The directory is exclusively locked (`KEYSTORE.LOCK`) while open.
/// * The directory is mode `0700` and every file in it `0600` (Unix), whatever the
///   umask: see [`open`](Keystore::open).
///
/// The store never keeps plaintext in memory: [`load`](Keystore::load)
/// returns freshly decrypted [`SecretBytes`](crate::SecretBytes) owned (and zeroized) by the
/// caller.
///
/// `Keystore` is not `Send` (rusty-leveldb uses `Rc` internally): keep it on
/// one thread, e.g. owned by a dedicated blocking task.
pub struct Keystore {
    // Field order matters: the database is closed before the lock is released.
    // `None` only if reopening during a purge failed.
    db: Option<DB>,
    key: MasterKey,
    method: UnlockMethod,
    path: PathBuf,
    /// The high-water marks (see "Rollback" in the crate docs): the file's, raised on
    /// open to what the database holds, and after each commit.
    marks: Marks,
    /// The sequence numbers of the first and next execution-id records
    /// ([`record_executions`](Keystore::record_executions)), read on first use.
    executions: Option<(u64, u64)>,
    _lock: File,
}

impl fmt::Debug for Keystore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keystore")
            .field("path", &self.path)
            .field("unlock_method", &self.method)
            .field("master_key", &"[REDACTED]")
            .finish()
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> KeystoreError + '_ {
    move |source| KeystoreError::Io {
        path: path.to_owned(),
        source,
    }
}

fn corrupt(reason: impl Into<String>) -> KeystoreError {
    KeystoreError::Corrupt {
        reason: reason.into(),
    }
}

impl Keystore {
    /// Opens the store in directory `path`, creating it (with the default
    /// [`KdfParams`]) if it does not exist yet.
    ///
    /// Permissions (Unix): the directory (and any missing parent) is created with mode
    /// `0700` and set to `0700` on every open, whatever the umask; every file the store
    /// and LevelDB create in it is created `0600` and `fchmod`ed to `0600`; and files
    /// already there with a wider mode (stores written before this rule) are set to
    /// `0600` when the store is opened. Both layers hold on their own: nothing in the
    /// directory is reachable by other users, and no file is readable by them either.
    ///
    /// Errors: [`KeystoreError::WrongPassphrase`] / [`KeystoreError::WrongKeyFile`]
    /// if the credential does not match, [`KeystoreError::Locked`] if the store
    /// is open elsewhere, [`KeystoreError::UnlockMethodMismatch`] if the store
    /// was created with the other unlock method.
    ///
    /// `Locked` can also be transient: while another thread of this process is
    /// spawning a child, the child holds a copy of every open descriptor until it
    /// calls `exec`, so a store closed in that moment stays locked for it. A process
    /// that spawns children and re-opens stores quickly should retry `Locked` briefly.
    pub fn open(path: impl AsRef<Path>, unlock: &Unlock) -> Result<Keystore> {
        Self::open_with_kdf(path, unlock, KdfParams::default())
    }

    /// Like [`open`](Keystore::open), but a newly created store uses
    /// `kdf_params`. An existing store always uses the parameters stored in
    /// it, whatever is passed here.
    pub fn open_with_kdf(
        path: impl AsRef<Path>,
        unlock: &Unlock,
        kdf_params: KdfParams,
    ) -> Result<Keystore> {
        let path = path.as_ref().to_owned();
        if !path.exists() {
            create_private_dir(&path)?;
        }
        restrict_dir(&path)?;
        let lock_path = path.join(LOCK_FILE_NAME);
        let lock = open_private(
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false),
            &lock_path,
        )
        .map_err(io_err(&lock_path))?;
        if let Err(e) = fs2::FileExt::try_lock_exclusive(&lock) {
            return Err(if e.kind() == fs2::lock_contended_error().kind() {
                KeystoreError::Locked { path: lock_path }
            } else {
                KeystoreError::Io {
                    path: lock_path,
                    source: e,
                }
            });
        }

        let mut db = open_db(&path)?;
        restrict_files(&path)?;

        let (key, marks) = match get(&mut db, META_KEY)? {
            Some(meta) => {
                let key = unlock_existing(&meta, unlock)?;
                // Written before the metadata when the store was created, and only ever
                // replaced atomically since: its absence is not a crash but a deletion.
                let marks = versions::read(&path, &key)?.ok_or_else(|| {
                    corrupt(format!(
                        "high-water-mark file {} is missing",
                        versions::VERSIONS_FILE_NAME
                    ))
                })?;
                (key, marks)
            }
            None => (
                create_new(&mut db, &path, unlock, kdf_params)?,
                Marks::new(),
            ),
        };
        let mut store = Keystore {
            db: Some(db),
            key,
            method: unlock.method(),
            path,
            marks,
            executions: None,
            _lock: lock,
        };
        store.raise_marks_to_the_database()?;
        Ok(store)
    }

    /// The store directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores a new generation of `key_id`, **inactive**. All records and the
    /// generation's manifest are written in one synced batch. Generations are
    /// write-once: an existing one gives [`KeystoreError::GenerationExists`].
    pub fn put_generation(
        &mut self,
        key_id: &KeyId,
        generation: Generation,
        records: &GenerationRecords,
    ) -> Result<()> {
        if records.is_empty() {
            return Err(KeystoreError::EmptyGeneration);
        }
        if get(self.db()?, &manifest_key(key_id, generation))?.is_some() {
            return Err(KeystoreError::GenerationExists {
                key_id: key_id.clone(),
                generation,
            });
        }
        let mut batch = WriteBatch::default();
        let mut manifest = Vec::new();
        manifest.extend_from_slice(&(records.len() as u32).to_be_bytes());
        for (name, secret) in records.iter() {
            manifest.extend_from_slice(&(name.as_str().len() as u16).to_be_bytes());
            manifest.extend_from_slice(name.as_str().as_bytes());
            let sealed = seal::seal(
                &self.key,
                &Ad::Record(key_id, generation, name),
                secret.expose(),
            );
            batch.put(&record_key(key_id, generation, name), &sealed);
        }
        let sealed_manifest = seal::seal(&self.key, &Ad::Manifest(key_id, generation), &manifest);
        batch.put(&manifest_key(key_id, generation), &sealed_manifest);
        self.db()?.write(batch, true)?;
        Ok(())
    }

    /// Makes `generation` the active generation of `key_id`, atomically (one
    /// synced write batch). The generation is fully decrypted and verified
    /// first, so a damaged generation is never activated. The content of the key's
    /// state record (see [`activate_with_state`](Keystore::activate_with_state)) is left
    /// as it is.
    ///
    /// Like every change of the pointer or the state, this is a new *version* of the key
    /// (see "Rollback" in the crate docs): an existing state record is sealed again at the
    /// new version in the same batch, so it must open ([`KeystoreError::TamperedState`],
    /// [`KeystoreError::RolledBack`] otherwise).
    pub fn activate(&mut self, key_id: &KeyId, generation: Generation) -> Result<()> {
        drop(self.load(key_id, generation)?);
        let (batch, version) = self.new_version(key_id, Some(generation), None, &[])?;
        self.db()?.write(batch, true)?;
        self.record_mark(key_id, version)
    }

    /// Makes `generation` the active generation of `key_id` **and** stores `state` as the
    /// key's state record, in one synced LevelDB write batch: a crash (or kill) at any
    /// point leaves either the previous active generation with the previous state, or
    /// `generation` with `state`, never one without the other. (LevelDB writes a batch as
    /// one checksummed write-ahead-log record; a torn record is dropped when the store is
    /// reopened, and so is anything after it.)
    ///
    /// `state` is the embedder's description of what the generation belongs to (pool
    /// members, L1 height, ...). It is sealed like a share (AES-256-GCM, bound to the key
    /// id and to its kind, so it cannot be swapped with another key's state or with any
    /// other record); [`load_state`](Keystore::load_state) reads it back.
    ///
    /// The generation is fully decrypted and verified first, as in
    /// [`activate`](Keystore::activate).
    ///
    /// Both records carry the key's next version (bound into their associated data), and
    /// the store's high-water mark is raised to it once the batch is written (see
    /// "Rollback" in the crate docs; a crash in between is caught up on the next open).
    pub fn activate_with_state(
        &mut self,
        key_id: &KeyId,
        generation: Generation,
        state: &[u8],
    ) -> Result<()> {
        drop(self.load(key_id, generation)?);
        let (batch, version) = self.new_version(key_id, Some(generation), Some(state), &[])?;
        crash_point::reached("activate:before-write");
        crash_point::arm_torn_log_write("activate:torn-write");
        let written = self.db()?.write(batch, true);
        crash_point::disarm_torn_log_write();
        written?;
        crash_point::reached("activate:after-write");
        self.record_mark(key_id, version)
    }

    /// Stores `state` as the state record of `key_id` (one synced write), leaving its
    /// generations and active pointer alone: e.g. the pool state before keygen, or after
    /// a change that does not switch generations. Any key id may have a state, with or
    /// without generations.
    ///
    /// This is a new version of the key: an existing active pointer is sealed again at the
    /// new version in the same batch, so it must open
    /// ([`KeystoreError::TamperedActivePointer`], [`KeystoreError::RolledBack`] otherwise).
    pub fn save_state(&mut self, key_id: &KeyId, state: &[u8]) -> Result<()> {
        let (batch, version) = self.new_version(key_id, None, Some(state), &[])?;
        self.db()?.write(batch, true)?;
        self.record_mark(key_id, version)
    }

    /// The state record of `key_id` (see [`activate_with_state`](Keystore::activate_with_state),
    /// [`save_state`](Keystore::save_state), [`delete_key_with_state`](Keystore::delete_key_with_state)),
    /// or `None` if none was stored. [`KeystoreError::TamperedState`] if it fails
    /// authentication; [`KeystoreError::RolledBack`] if it (or the active pointer) is older
    /// than the key's last commit (see "Rollback" in the crate docs). The state is sealed on
    /// disk but not treated as a secret in memory (a plain `Vec`, not zeroized).
    pub fn load_state(&mut self, key_id: &KeyId) -> Result<Option<Vec<u8>>> {
        let state = self.current_state(key_id)?;
        let pointer = self.current_pointer(key_id)?;
        same_commit(
            key_id,
            pointer.map(|(v, _)| v),
            state.as_ref().map(|(v, _)| *v),
        )?;
        Ok(state.map(|(_, s)| s.expose().to_vec()))
    }

    /// The active generation of `key_id`, or `None` if none was activated yet.
    /// Unknown keys give [`KeystoreError::UnknownKey`];
    /// [`KeystoreError::TamperedActivePointer`] a pointer that fails authentication, and
    /// [`KeystoreError::RolledBack`] an authentic pointer (or state record) older than the
    /// key's last commit (see "Rollback" in the crate docs).
    pub fn active_generation(&mut self, key_id: &KeyId) -> Result<Option<Generation>> {
        match self.current_pointer(key_id)? {
            Some((version, generation)) => {
                let state = self.current_state(key_id)?.map(|(v, _)| v);
                same_commit(key_id, Some(version), state)?;
                Ok(Some(generation))
            }
            None if self.key_exists(key_id)? => Ok(None),
            None => Err(KeystoreError::UnknownKey(key_id.clone())),
        }
    }

    /// Decrypts and returns every record of one generation.
    ///
    /// Errors: [`KeystoreError::UnknownKey`], [`KeystoreError::UnknownGeneration`],
    /// [`KeystoreError::Tampered`] if any record (or the manifest) fails
    /// authentication, [`KeystoreError::MissingRecord`] if a listed record is gone.
    pub fn load(&mut self, key_id: &KeyId, generation: Generation) -> Result<GenerationRecords> {
        let names = self.manifest(key_id, generation)?;
        let mut out = GenerationRecords::new();
        for name in names {
            let sealed =
                get(self.db()?, &record_key(key_id, generation, &name))?.ok_or_else(|| {
                    KeystoreError::MissingRecord {
                        key_id: key_id.clone(),
                        generation,
                        record: name.clone(),
                    }
                })?;
            let secret = seal::open(&self.key, &Ad::Record(key_id, generation, &name), &sealed)
                .ok_or_else(|| KeystoreError::Tampered {
                    key_id: key_id.clone(),
                    generation,
                    record: name.to_string(),
                })?;
            out.insert(name, secret);
        }
        Ok(out)
    }

    /// Loads the active generation: `(generation, records)`.
    /// [`KeystoreError::NoActiveGeneration`] if none was activated.
    pub fn load_active(&mut self, key_id: &KeyId) -> Result<(Generation, GenerationRecords)> {
        let g = self
            .active_generation(key_id)?
            .ok_or_else(|| KeystoreError::NoActiveGeneration(key_id.clone()))?;
        Ok((g, self.load(key_id, g)?))
    }

    /// All key ids that have at least one generation, sorted.
    pub fn list_keys(&mut self) -> Result<Vec<KeyId>> {
        let mut keys: Vec<KeyId> = Vec::new();
        for k in self.keys_with_prefix(KEY_PREFIX)? {
            let rest = &k[KEY_PREFIX.len()..];
            let end = rest
                .iter()
                .position(|&b| b == b'/')
                .ok_or_else(|| corrupt("malformed database key"))?;
            let id = std::str::from_utf8(&rest[..end])
                .ok()
                .and_then(|s| KeyId::new(s).ok())
                .ok_or_else(|| corrupt("malformed key id in database"))?;
            if keys.last() != Some(&id) {
                keys.push(id);
            }
        }
        Ok(keys)
    }

    /// The stored generations of `key_id`, ascending.
    /// [`KeystoreError::UnknownKey`] if there are none.
    pub fn generations(&mut self, key_id: &KeyId) -> Result<Vec<Generation>> {
        let mut prefix = key_prefix(key_id);
        prefix.extend_from_slice(b"g/");
        let mut gens = Vec::new();
        for k in self.keys_with_prefix(&prefix)? {
            let rest = &k[prefix.len()..];
            if rest.len() == 22 && rest.ends_with(b"/m") {
                let g = std::str::from_utf8(&rest[..20])
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| corrupt("malformed generation number in database"))?;
                gens.push(Generation(g));
            }
        }
        if gens.is_empty() {
            return Err(KeystoreError::UnknownKey(key_id.clone()));
        }
        Ok(gens)
    }

    /// Stores `bytes` as attachment `name` of an existing generation (one synced write),
    /// e.g. the certificate that its committee confirmed it. Unlike a generation's
    /// records, which are written once with it, an attachment is written later; an
    /// existing one of that name is replaced. It is sealed like a record (bound to key id,
    /// generation and name), is not part of the generation's manifest (so
    /// [`load`](Keystore::load) does not return it), and is deleted with the generation.
    pub fn put_attachment(
        &mut self,
        key_id: &KeyId,
        generation: Generation,
        name: &RecordName,
        bytes: &[u8],
    ) -> Result<()> {
        self.manifest(key_id, generation)?;
        let sealed = seal::seal(&self.key, &Ad::Attachment(key_id, generation, name), bytes);
        let mut batch = WriteBatch::default();
        batch.put(&attachment_key(key_id, generation, name), &sealed);
        self.db()?.write(batch, true)?;
        Ok(())
    }

    /// Attachment `name` of a generation (see [`put_attachment`](Keystore::put_attachment)),
    /// or `None`. [`KeystoreError::Tampered`] if it fails authentication; the errors of a
    /// missing generation as in [`load`](Keystore::load).
    pub fn load_attachment(
        &mut self,
        key_id: &KeyId,
        generation: Generation,
        name: &RecordName,
    ) -> Result<Option<SecretBytes>> {
        self.manifest(key_id, generation)?;
        let Some(sealed) = get(self.db()?, &attachment_key(key_id, generation, name))? else {
            return Ok(None);
        };
        seal::open(
            &self.key,
            &Ad::Attachment(key_id, generation, name),
            &sealed,
        )
        .map(Some)
        .ok_or_else(|| KeystoreError::Tampered {
            key_id: key_id.clone(),
            generation,
            record: format!("attachment {name}"),
        })
    }

    /// Returns the sealed (encrypted, authenticated) bytes of one record
    /// exactly as stored: `version | nonce | ciphertext+tag`. Safe to copy
    /// into encrypted backups; also lets tests verify secure deletion.
    pub fn sealed_record(
        &mut self,
        key_id: &KeyId,
        generation: Generation,
        name: &RecordName,
    ) -> Result<Vec<u8>> {
        self.manifest(key_id, generation)?;
        get(self.db()?, &record_key(key_id, generation, name))?.ok_or_else(|| {
            KeystoreError::MissingRecord {
                key_id: key_id.clone(),
                generation,
                record: name.clone(),
            }
        })
    }

    /// Deletes a generation that is **not** active (e.g. the pre-reshare
    /// generation once the new committee confirmed), then compacts the
    /// database so its ciphertext is gone from the files.
    /// [`KeystoreError::GenerationActive`] if it is the active one; the errors of
    /// [`active_generation`](Keystore::active_generation) (a tampered or rolled-back
    /// pointer or state) if the active one cannot be told.
    pub fn retire_generation(&mut self, key_id: &KeyId, generation: Generation) -> Result<()> {
        // Existence check first so unknown keys/generations get typed errors.
        if get(self.db()?, &manifest_key(key_id, generation))?.is_none() {
            return Err(self.missing_generation(key_id, generation)?);
        }
        // A pointer that fails authentication or was rolled back is an error here, not
        // "no active generation": the generation it hides may be the active one.
        if self.active_generation(key_id)? == Some(generation) {
            return Err(KeystoreError::GenerationActive {
                key_id: key_id.clone(),
                generation,
            });
        }
        let keys = self.keys_with_prefix(&gen_prefix(key_id, generation))?;
        let mut batch = WriteBatch::default();
        for k in &keys {
            batch.delete(k);
        }
        self.write_and_purge(batch, None)
    }

    /// Deletes every generation of `key_id` and its active pointer in one
    /// synced batch, then compacts the database so the ciphertext is gone from
    /// its files. Plaintext is never cached by the store, so there is no
    /// in-memory copy left to zeroize (records already returned by
    /// [`load`](Keystore::load) are zeroized when the caller drops them).
    ///
    /// The key's state record is kept (sealed again at the key's next version, so the
    /// deleted active pointer cannot be replayed: see "Rollback" in the crate docs);
    /// [`delete_key_with_state`](Keystore::delete_key_with_state) replaces it in the same
    /// batch.
    pub fn delete_key(&mut self, key_id: &KeyId) -> Result<()> {
        let keys = self.keys_with_prefix(&key_prefix(key_id))?;
        if keys.is_empty() {
            return Err(KeystoreError::UnknownKey(key_id.clone()));
        }
        let (batch, version) = self.new_version(key_id, None, None, &keys)?;
        self.write_and_purge(batch, Some((key_id, version)))
    }

    /// Deletes every generation of `key_id` and its active pointer **and** stores `state`
    /// as its state record (e.g. what the node knows of the pool it left). Returns whether
    /// any generation existed; with none, only the state is written.
    ///
    /// This takes two steps, in the crash-safe order:
    ///
    /// 1. one synced write batch deletes the records and writes the state: this is the
    ///    logical change, atomic like [`activate_with_state`](Keystore::activate_with_state)
    ///    (after a crash, either the key still has its generations and the old state, or
    ///    it has none and the new state);
    /// 2. the database is compacted so the deleted ciphertext is gone from its files.
    ///
    /// A crash between the two leaves the store logically correct; only the deleted
    /// (encrypted) records may remain in the LevelDB files until the next compaction
    /// (the next [`retire_generation`](Keystore::retire_generation), deletion or
    /// [`compact`](Keystore::compact)). The reverse order could not be crash-safe: the
    /// compaction only drops what is already deleted.
    pub fn delete_key_with_state(&mut self, key_id: &KeyId, state: &[u8]) -> Result<bool> {
        let keys = self.keys_with_prefix(&key_prefix(key_id))?;
        let existed = !keys.is_empty();
        let (batch, version) = self.new_version(key_id, None, Some(state), &keys)?;
        self.write_and_purge(batch, Some((key_id, version)))?;
        Ok(existed)
    }

    /// Compacts the whole database so records deleted earlier are gone from its files
    /// (obsolete files are overwritten before being unlinked). Retiring and deleting
    /// already do this; it is only needed after a crash between a deletion and its
    /// compaction (see [`delete_key_with_state`](Keystore::delete_key_with_state)).
    pub fn compact(&mut self) -> Result<()> {
        self.purge()
    }

    /// Flushes and closes the store, releasing the lock. (Dropping the store
    /// does the same but cannot report errors.)
    pub fn close(mut self) -> Result<()> {
        if let Some(mut db) = self.db.take() {
            db.close()?;
        }
        Ok(())
    }

    fn db(&mut self) -> Result<&mut DB> {
        self.db.as_mut().ok_or_else(|| {
            KeystoreError::Database(
                "database handle was lost when reopening after a purge failed; reopen the keystore"
                    .into(),
            )
        })
    }

    /// Writes `batch` (synced), records the key's new version `mark` if any, then
    /// compacts.
    fn write_and_purge(&mut self, batch: WriteBatch, mark: Option<(&KeyId, u64)>) -> Result<()> {
        self.db()?.write(batch, true)?;
        if let Some((key_id, version)) = mark {
            self.record_mark(key_id, version)?;
        }
        crash_point::reached("delete:before-purge");
        self.purge()
    }

    /// The key's active pointer `(version, generation)`, if any, authenticated and checked
    /// against the key's high-water mark.
    fn current_pointer(&mut self, key_id: &KeyId) -> Result<Option<(u64, Generation)>> {
        let Some(value) = get(self.db()?, &active_key(key_id))? else {
            return Ok(None);
        };
        let (version, generation) = open_pointer(&self.key, key_id, &value).ok_or_else(|| {
            KeystoreError::TamperedActivePointer {
                key_id: key_id.clone(),
            }
        })?;
        self.check_mark(key_id, "active pointer", version)?;
        Ok(Some((version, generation)))
    }

    /// The key's state record `(version, state)`, if any, authenticated and checked
    /// against the key's high-water mark.
    fn current_state(&mut self, key_id: &KeyId) -> Result<Option<(u64, SecretBytes)>> {
        let Some(value) = get(self.db()?, &state_key(key_id))? else {
            return Ok(None);
        };
        let (version, state) =
            open_state(&self.key, key_id, &value).ok_or_else(|| KeystoreError::TamperedState {
                key_id: key_id.clone(),
            })?;
        self.check_mark(key_id, "state", version)?;
        Ok(Some((version, state)))
    }

    /// [`KeystoreError::RolledBack`] if `version` of the key's `record` is below its mark.
    fn check_mark(&self, key_id: &KeyId, record: &str, version: u64) -> Result<()> {
        let mark = self.marks.get(key_id).copied().unwrap_or(0);
        if version < mark {
            return Err(KeystoreError::RolledBack {
                key_id: key_id.clone(),
                record: record.into(),
                found: version,
                expected: mark,
            });
        }
        Ok(())
    }

    /// A batch committing the key's next version: deletes `deletes`; sets the active
    /// pointer to `pointer` (or seals the current one again at the new version, unless
    /// it is deleted); sets the state to `state` (or seals the current one again). The
    /// records kept must open and must not be rolled back. Returns the batch and the new
    /// version, to give [`record_mark`](Self::record_mark) once the batch is written.
    fn new_version(
        &mut self,
        key_id: &KeyId,
        pointer: Option<Generation>,
        state: Option<&[u8]>,
        deletes: &[Vec<u8>],
    ) -> Result<(WriteBatch, u64)> {
        let pointer_key = active_key(key_id);
        let pointer_deleted = deletes.contains(&pointer_key);
        let pointer = match pointer {
            Some(g) => Some(g),
            None if pointer_deleted => None,
            None => self.current_pointer(key_id)?.map(|(_, g)| g),
        };
        let kept_state;
        let state = match state {
            Some(s) => Some(s),
            None => {
                kept_state = self.current_state(key_id)?;
                kept_state.as_ref().map(|(_, s)| s.expose())
            }
        };
        let version = self
            .marks
            .get(key_id)
            .copied()
            .unwrap_or(0)
            .checked_add(1)
            .ok_or_else(|| corrupt(format!("version counter of key {key_id} is exhausted")))?;
        let mut batch = WriteBatch::default();
        for k in deletes {
            batch.delete(k);
        }
        if let Some(g) = pointer {
            batch.put(&pointer_key, &seal_pointer(&self.key, key_id, version, g));
        }
        if let Some(s) = state {
            batch.put(
                &state_key(key_id),
                &seal_state(&self.key, key_id, version, s),
            );
        }
        Ok((batch, version))
    }

    /// Raises the key's high-water mark to `version` (just committed) and writes the
    /// marks file. If this fails (or the process dies first), the database is one commit
    /// ahead of the file, which the next open catches up.
    fn record_mark(&mut self, key_id: &KeyId, version: u64) -> Result<()> {
        let mark = self.marks.entry(key_id.clone()).or_insert(0);
        if *mark >= version {
            return Ok(());
        }
        *mark = version;
        versions::write(&self.path, &self.key, &self.marks)
    }

    /// Raises every key's mark to the version of its authentic active pointer and state
    /// record, if higher (a commit whose mark was not written before a crash), and writes
    /// the marks file if anything changed. Records that fail authentication are left for
    /// the loads to report.
    fn raise_marks_to_the_database(&mut self) -> Result<()> {
        let mut found: Vec<(KeyId, u64)> = Vec::new();
        let mut it = self.db()?.new_iter()?;
        it.seek_to_first();
        while let Some((k, v)) = it.current() {
            let parsed = if let Some(id) = k
                .strip_prefix(KEY_PREFIX)
                .and_then(|rest| rest.strip_suffix(b"/a"))
                .and_then(parse_key_id)
            {
                open_pointer(&self.key, &id, &v).map(|(version, _)| (id, version))
            } else if let Some(id) = k.strip_prefix(b"s/").and_then(parse_key_id) {
                open_state(&self.key, &id, &v).map(|(version, _)| (id, version))
            } else {
                None
            };
            found.extend(parsed);
            if !it.advance() {
                break;
            }
        }
        drop(it);
        let mut changed = false;
        for (id, version) in found {
            let mark = self.marks.entry(id).or_insert(0);
            if version > *mark {
                *mark = version;
                changed = true;
            }
        }
        if changed {
            versions::write(&self.path, &self.key, &self.marks)?;
        }
        Ok(())
    }

    /// Rewrites the database so deleted values are dropped from every file:
    /// the memtable is flushed to a table (and the old write-ahead log
    /// deleted), and all levels are compacted, dropping shadowed values and
    /// tombstones. Obsolete files are shredded by [`SecureEnv`].
    ///
    /// The database is closed and reopened first: rusty-leveldb 4.0 never
    /// releases the "oldest snapshot" marker once any read took a snapshot,
    /// which makes compactions keep every obsolete value. A fresh handle has
    /// no snapshots, so this compaction really drops them.
    fn purge(&mut self) -> Result<()> {
        if let Some(mut db) = self.db.take() {
            db.close()?;
        }
        let db = self.db.insert(open_db(&self.path)?);
        db.compact_range(b"\x00", b"\xff")?;
        Ok(())
    }

    fn manifest(&mut self, key_id: &KeyId, generation: Generation) -> Result<Vec<RecordName>> {
        let Some(sealed) = get(self.db()?, &manifest_key(key_id, generation))? else {
            return Err(self.missing_generation(key_id, generation)?);
        };
        let tampered = || KeystoreError::Tampered {
            key_id: key_id.clone(),
            generation,
            record: "manifest".into(),
        };
        let plain = seal::open(&self.key, &Ad::Manifest(key_id, generation), &sealed)
            .ok_or_else(tampered)?;
        parse_manifest(plain.expose()).ok_or_else(tampered)
    }

    fn missing_generation(
        &mut self,
        key_id: &KeyId,
        generation: Generation,
    ) -> Result<KeystoreError> {
        Ok(if self.key_exists(key_id)? {
            KeystoreError::UnknownGeneration {
                key_id: key_id.clone(),
                generation,
            }
        } else {
            KeystoreError::UnknownKey(key_id.clone())
        })
    }

    fn key_exists(&mut self, key_id: &KeyId) -> Result<bool> {
        Ok(!self.keys_with_prefix(&key_prefix(key_id))?.is_empty())
    }

    /// Durably records `eids`, the execution ids of protocol runs this node took part in
    /// (one synced batch), and keeps only the `keep` most recent ones recorded: older
    /// records are deleted in the same batch. Ids are opaque 32-byte values to the store
    /// (tss-core's `ExecutionId`s); [`executions`](Keystore::executions) reads them back,
    /// so a node refuses a run it already had also after a restart.
    ///
    /// Each id is sealed like every other record (bound to its sequence number). Ids are
    /// not secret; sealing makes the records unforgeable. Deleting them (an attacker with
    /// write access to the directory) is not detected: it only makes the node forget runs
    /// it had, which it then validates again as new proposals.
    pub fn record_executions(&mut self, eids: &[[u8; 32]], keep: usize) -> Result<()> {
        let (mut first, mut next) = self.execution_range()?;
        let mut batch = WriteBatch::default();
        for eid in eids {
            batch.put(
                &execution_key(next),
                &seal::seal(&self.key, &Ad::Execution(next), eid),
            );
            next += 1;
        }
        let keep_from = next.saturating_sub(keep as u64);
        while first < keep_from {
            batch.delete(&execution_key(first));
            first += 1;
        }
        self.db()?.write(batch, true)?;
        self.executions = Some((first, next));
        Ok(())
    }

    /// The execution ids recorded by [`record_executions`](Keystore::record_executions)
    /// and still kept, oldest first. [`KeystoreError::Corrupt`] if one fails
    /// authentication or is malformed.
    pub fn executions(&mut self) -> Result<Vec<[u8; 32]>> {
        let mut it = self.db()?.new_iter()?;
        it.seek(EXECUTION_PREFIX);
        let mut out = Vec::new();
        while let Some((k, v)) = it.current() {
            if !k.starts_with(EXECUTION_PREFIX) {
                break;
            }
            let seq = parse_execution_seq(&k)
                .ok_or_else(|| corrupt("malformed execution-id key in database"))?;
            let eid = seal::open(&self.key, &Ad::Execution(seq), &v)
                .and_then(|id| <[u8; 32]>::try_from(id.expose()).ok())
                .ok_or_else(|| {
                    corrupt(format!("execution-id record {seq} fails authentication"))
                })?;
            out.push(eid);
            if !it.advance() {
                break;
            }
        }
        Ok(out)
    }

    /// `(first, next)` sequence numbers of the execution-id records.
    fn execution_range(&mut self) -> Result<(u64, u64)> {
        if let Some(range) = self.executions {
            return Ok(range);
        }
        let keys = self.keys_with_prefix(EXECUTION_PREFIX)?;
        let seqs: Vec<u64> = keys
            .iter()
            .map(|k| {
                parse_execution_seq(k)
                    .ok_or_else(|| corrupt("malformed execution-id key in database"))
            })
            .collect::<Result<_>>()?;
        let range = match (seqs.first(), seqs.last()) {
            (Some(first), Some(last)) => (*first, last + 1),
            _ => (0, 0),
        };
        self.executions = Some(range);
        Ok(range)
    }

    fn keys_with_prefix(&mut self, prefix: &[u8]) -> Result<Vec<Vec<u8>>> {
        let mut it = self.db()?.new_iter()?;
        it.seek(prefix);
        let mut out = Vec::new();
        while let Some((k, _)) = it.current() {
            if !k.starts_with(prefix) {
                break;
            }
            out.push(k.to_vec());
            if !it.advance() {
                break;
            }
        }
        Ok(out)
    }
}

/// The active pointer and the state, when both exist, were written by the same commit
/// (every commit writes both at its version, given as `pointer` and `state`);
/// [`KeystoreError::RolledBack`] names the older one otherwise. This catches the replay of
/// one of them even while the mark lags the database after a crash.
fn same_commit(key_id: &KeyId, pointer: Option<u64>, state: Option<u64>) -> Result<()> {
    match (pointer, state) {
        (Some(p), Some(s)) if p != s => Err(KeystoreError::RolledBack {
            key_id: key_id.clone(),
            record: if p < s { "active pointer" } else { "state" }.into(),
            found: p.min(s),
            expected: p.max(s),
        }),
        _ => Ok(()),
    }
}

fn parse_execution_seq(k: &[u8]) -> Option<u64> {
    let digits = k.strip_prefix(EXECUTION_PREFIX)?;
    if digits.len() != 20 {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn parse_key_id(b: &[u8]) -> Option<KeyId> {
    std::str::from_utf8(b).ok().and_then(|s| KeyId::new(s).ok())
}

/// `version (u64 BE) | sealed`, the layout of active pointers and state records.
fn versioned(version: u64, sealed: Vec<u8>) -> Vec<u8> {
    let mut out = version.to_be_bytes().to_vec();
    out.extend(sealed);
    out
}

fn split_version(value: &[u8]) -> Option<(u64, &[u8])> {
    if value.len() < 8 {
        return None;
    }
    let (v, sealed) = value.split_at(8);
    Some((u64::from_be_bytes(v.try_into().ok()?), sealed))
}

fn seal_pointer(key: &MasterKey, key_id: &KeyId, version: u64, g: Generation) -> Vec<u8> {
    let sealed = seal::seal(key, &Ad::Active(key_id, version), &g.0.to_be_bytes());
    versioned(version, sealed)
}

/// An authentic active pointer's `(version, generation)`; `None` if it fails
/// authentication or is malformed.
fn open_pointer(key: &MasterKey, key_id: &KeyId, value: &[u8]) -> Option<(u64, Generation)> {
    let (version, sealed) = split_version(value)?;
    let plain = seal::open(key, &Ad::Active(key_id, version), sealed)?;
    let g: [u8; 8] = plain.expose().try_into().ok()?;
    Some((version, Generation(u64::from_be_bytes(g))))
}

fn seal_state(key: &MasterKey, key_id: &KeyId, version: u64, state: &[u8]) -> Vec<u8> {
    versioned(version, seal::seal(key, &Ad::State(key_id, version), state))
}

/// An authentic state record's `(version, state)`; `None` if it fails authentication or
/// is malformed.
fn open_state(key: &MasterKey, key_id: &KeyId, value: &[u8]) -> Option<(u64, SecretBytes)> {
    let (version, sealed) = split_version(value)?;
    let plain = seal::open(key, &Ad::State(key_id, version), sealed)?;
    Some((version, plain))
}

fn open_db(path: &Path) -> Result<DB> {
    let opts = Options {
        env: Rc::new(Box::new(SecureEnv::new())),
        create_if_missing: true,
        paranoid_checks: true,
        // Never append to an old write-ahead log: each open turns the
        // previous log into a table and deletes (shreds) it.
        reuse_logs: false,
        ..Options::default()
    };
    DB::open(path, opts).map_err(|s| {
        if s.code == StatusCode::LockError {
            KeystoreError::Locked {
                path: path.join("LOCK"),
            }
        } else {
            KeystoreError::from(s)
        }
    })
}

fn parse_manifest(mut b: &[u8]) -> Option<Vec<RecordName>> {
    let take = |b: &mut &[u8], n: usize| -> Option<Vec<u8>> {
        if b.len() < n {
            return None;
        }
        let (h, t) = b.split_at(n);
        *b = t;
        Some(h.to_vec())
    };
    let count = u32::from_be_bytes(take(&mut b, 4)?.try_into().ok()?);
    let mut names = Vec::new();
    for _ in 0..count {
        let len = u16::from_be_bytes(take(&mut b, 2)?.try_into().ok()?) as usize;
        let name = String::from_utf8(take(&mut b, len)?).ok()?;
        names.push(RecordName::new(name).ok()?);
    }
    b.is_empty().then_some(names)
}

fn get(db: &mut DB, key: &[u8]) -> Result<Option<Vec<u8>>> {
    let snap = db.get_snapshot();
    Ok(db.get_at(&snap, key)?.map(|b| b.to_vec()))
}

fn create_private_dir(path: &Path) -> Result<()> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(path).map_err(io_err(path))
}

/// Sets the store directory to mode `0700` (the mode given at creation is reduced by the
/// umask, and an existing directory may have any mode).
fn restrict_dir(_path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(_path)
            .map_err(io_err(_path))?
            .permissions()
            .mode();
        if mode & 0o777 != 0o700 {
            fs::set_permissions(_path, fs::Permissions::from_mode(0o700)).map_err(io_err(_path))?;
        }
    }
    Ok(())
}

/// Sets every regular file directly in the store directory that is readable, writable
/// or executable by anyone but the owner to mode `0600`. Files created since this rule
/// already are (see [`SecureEnv`]); this fixes up stores written before it.
fn restrict_files(_dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for entry in fs::read_dir(_dir).map_err(io_err(_dir))? {
            let entry = entry.map_err(io_err(_dir))?;
            let p = entry.path();
            let meta = fs::symlink_metadata(&p).map_err(io_err(&p))?;
            if meta.is_file() && meta.permissions().mode() & 0o777 != 0o600 {
                fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).map_err(io_err(&p))?;
            }
        }
    }
    Ok(())
}

fn encode_header(method: UnlockMethod, salt: &[u8; SALT_LEN], p: KdfParams) -> Vec<u8> {
    let mut h = Vec::with_capacity(META_HEADER_LEN);
    h.extend_from_slice(META_MAGIC);
    h.push(META_FORMAT_VERSION);
    h.push(method.to_byte());
    h.extend_from_slice(salt);
    h.extend_from_slice(&p.memory_kib.to_be_bytes());
    h.extend_from_slice(&p.iterations.to_be_bytes());
    h.extend_from_slice(&p.parallelism.to_be_bytes());
    h
}

fn create_new(db: &mut DB, dir: &Path, unlock: &Unlock, params: KdfParams) -> Result<MasterKey> {
    // A crash between creating the database and writing the metadata leaves
    // an empty database, which is simply initialised again here.
    let mut it = db.new_iter()?;
    it.seek_to_first();
    if it.valid() {
        return Err(corrupt(
            "metadata record is missing but the store holds data",
        ));
    }
    params.validate()?;
    let salt = random_salt();
    let key = unlock.derive(&salt, params)?;
    let header = encode_header(unlock.method(), &salt, params);
    let mut meta = header.clone();
    meta.extend(seal::seal(
        &key,
        &Ad::KeyCheck(&header),
        KEY_CHECK_PLAINTEXT,
    ));
    // The marks file first: a store with metadata always has one (a crash before the
    // metadata is written leaves an empty database, created again from scratch).
    versions::write(dir, &key, &Marks::new())?;
    let mut batch = WriteBatch::default();
    batch.put(META_KEY, &meta);
    db.write(batch, true)?;
    Ok(key)
}

/// The parsed header of a store's metadata record (see [`decode_metadata`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetadataHeader {
    /// How the store is unlocked.
    pub method: UnlockMethod,
    /// The KDF salt (not secret).
    pub salt: [u8; SALT_LEN],
    /// The KDF parameters (validated against the limits of [`KdfParams`]).
    pub kdf: KdfParams,
}

/// Decodes a store's metadata record (`header | sealed key-check value`) without
/// deriving any key: the pure part of [`Keystore::open`]. Public with the `fuzzing` feature.
/// Returns the header and the sealed key-check bytes.
///
/// Any input gives a header or a typed error ([`KeystoreError::Corrupt`],
/// [`KeystoreError::InvalidKdfParams`]), never a panic.
pub fn decode_metadata(meta: &[u8]) -> Result<(MetadataHeader, &[u8])> {
    if meta.len() < META_HEADER_LEN || &meta[..8] != META_MAGIC {
        return Err(corrupt("metadata record is malformed"));
    }
    let (header, check) = meta.split_at(META_HEADER_LEN);
    if header[8] == 1 {
        return Err(corrupt(
            "keystore format version 1 (written before rollback detection: its active \
             pointers and state records carry no version) is not supported; re-create the \
             store and stage the shares again",
        ));
    }
    if header[8] != META_FORMAT_VERSION {
        return Err(corrupt(format!(
            "unsupported keystore format version {}",
            header[8]
        )));
    }
    let method = UnlockMethod::from_byte(header[9])
        .ok_or_else(|| corrupt("unknown unlock method in metadata"))?;
    let mut salt = [0u8; SALT_LEN];
    salt.copy_from_slice(&header[10..10 + SALT_LEN]);
    let u32_at = |i: usize| u32::from_be_bytes(header[i..i + 4].try_into().expect("4 bytes"));
    let kdf = KdfParams {
        memory_kib: u32_at(10 + SALT_LEN),
        iterations: u32_at(14 + SALT_LEN),
        parallelism: u32_at(18 + SALT_LEN),
    };
    kdf.validate()?;
    Ok((MetadataHeader { method, salt, kdf }, check))
}

/// Decodes a generation's manifest (its list of record names) from decrypted bytes.
/// Public with the `fuzzing` feature; [`KeystoreError::Corrupt`] if malformed.
#[cfg(feature = "fuzzing")]
pub fn decode_manifest(bytes: &[u8]) -> Result<Vec<RecordName>> {
    parse_manifest(bytes).ok_or_else(|| corrupt("malformed generation manifest"))
}

/// Opens one sealed record (`version | nonce | ciphertext+tag`, as returned by
/// [`Keystore::sealed_record`]) with a raw 32-byte master key, checking it is bound to
/// `key_id`, `generation` and `name`. Public with the `fuzzing` feature (the fuzz
/// targets); [`Keystore::load`] is the way to read records.
///
/// Any input gives the plaintext or [`KeystoreError::Tampered`], never a panic.
#[cfg(feature = "fuzzing")]
pub fn open_sealed_record(
    master_key: &[u8; 32],
    key_id: &KeyId,
    generation: Generation,
    name: &RecordName,
    sealed: &[u8],
) -> Result<SecretBytes> {
    let key = MasterKey(*master_key);
    seal::open(&key, &Ad::Record(key_id, generation, name), sealed).ok_or_else(|| {
        KeystoreError::Tampered {
            key_id: key_id.clone(),
            generation,
            record: name.to_string(),
        }
    })
}

fn unlock_existing(meta: &[u8], unlock: &Unlock) -> Result<MasterKey> {
    let (
        MetadataHeader {
            method,
            salt,
            kdf: params,
        },
        check,
    ) = decode_metadata(meta)?;
    let header = &meta[..META_HEADER_LEN];
    if method != unlock.method() {
        return Err(KeystoreError::UnlockMethodMismatch {
            store: method,
            given: unlock.method(),
        });
    }
    let key = unlock.derive(&salt, params)?;
    match seal::open(&key, &Ad::KeyCheck(header), check) {
        Some(p) if p.expose() == KEY_CHECK_PLAINTEXT => Ok(key),
        _ => Err(match unlock {
            Unlock::Passphrase(_) => KeystoreError::WrongPassphrase,
            Unlock::KeyFile(p) => KeystoreError::WrongKeyFile { path: p.clone() },
        }),
    }
}

#[cfg(test)]
mod tests {
    //! Tests that modify raw database values, which the public API cannot do.

    use super::*;
    use crate::secret::SecretBytes;

    fn open(dir: &Path) -> Keystore {
        Keystore::open_with_kdf(
            dir,
            &Unlock::passphrase("pw"),
            KdfParams::insecure_for_tests(),
        )
        .unwrap()
    }

    fn id(s: &str) -> KeyId {
        KeyId::new(s).unwrap()
    }

    fn recs(share: &[u8]) -> GenerationRecords {
        GenerationRecords::share_and_aux(
            SecretBytes::from_slice(share),
            SecretBytes::from_slice(b"aux"),
        )
    }

    fn raw_get(ks: &mut Keystore, k: &[u8]) -> Vec<u8> {
        get(ks.db().unwrap(), k).unwrap().unwrap()
    }

    fn raw_put(ks: &mut Keystore, k: &[u8], v: &[u8]) {
        let mut b = WriteBatch::default();
        b.put(k, v);
        ks.db().unwrap().write(b, true).unwrap();
    }

    fn share_name() -> RecordName {
        RecordName::new(RecordName::KEY_SHARE).unwrap()
    }

    #[test]
    fn tampered_record_is_detected_and_other_keys_survive() {
        let dir = tempfile::tempdir().unwrap();
        let mut ks = open(dir.path());
        let (victim, other) = (id("victim"), id("other"));
        ks.put_generation(&victim, Generation(1), &recs(b"victim share"))
            .unwrap();
        ks.put_generation(&other, Generation(1), &recs(b"other share"))
            .unwrap();
        ks.activate(&other, Generation(1)).unwrap();
        let rk = record_key(&victim, Generation(1), &share_name());
        let original = raw_get(&mut ks, &rk);
        // Flip one byte at every position: version, nonce, ciphertext, tag.
        for pos in 0..original.len() {
            let mut bad = original.clone();
            bad[pos] ^= 0x80;
            raw_put(&mut ks, &rk, &bad);
            let err = ks.load(&victim, Generation(1)).unwrap_err();
            assert!(
                matches!(&err, KeystoreError::Tampered { key_id, generation: Generation(1), record }
                    if key_id == &victim && record == "key_share"),
                "byte {pos}: {err:?}"
            );
            // A damaged generation is never activated.
            assert!(matches!(
                ks.activate(&victim, Generation(1)),
                Err(KeystoreError::Tampered { .. })
            ));
        }
        // Truncated record.
        raw_put(&mut ks, &rk, &original[..10]);
        assert!(matches!(
            ks.load(&victim, Generation(1)),
            Err(KeystoreError::Tampered { .. })
        ));
        // Nothing else was lost; restoring the bytes restores the record.
        let (_, o) = ks.load_active(&other).unwrap();
        assert_eq!(o.key_share().unwrap().expose(), b"other share");
        raw_put(&mut ks, &rk, &original);
        assert_eq!(
            ks.load(&victim, Generation(1))
                .unwrap()
                .key_share()
                .unwrap()
                .expose(),
            b"victim share"
        );
    }

    #[test]
    fn record_swapped_between_keys_generations_or_names_fails_authentication() {
        let dir = tempfile::tempdir().unwrap();
        let mut ks = open(dir.path());
        let (a, b) = (id("a"), id("b"));
        ks.put_generation(&a, Generation(1), &recs(b"a1")).unwrap();
        ks.put_generation(&a, Generation(2), &recs(b"a2")).unwrap();
        ks.put_generation(&b, Generation(1), &recs(b"b1")).unwrap();
        let aux = RecordName::new(RecordName::AUX_INFO).unwrap();

        // Other key, same generation and name.
        let from_b = raw_get(&mut ks, &record_key(&b, Generation(1), &share_name()));
        raw_put(
            &mut ks,
            &record_key(&a, Generation(1), &share_name()),
            &from_b,
        );
        assert!(matches!(
            ks.load(&a, Generation(1)),
            Err(KeystoreError::Tampered { .. })
        ));

        // Same key, other generation (a rollback of the share).
        let from_g1 = raw_get(&mut ks, &record_key(&a, Generation(1), &aux));
        raw_put(&mut ks, &record_key(&a, Generation(2), &aux), &from_g1);
        assert!(matches!(
            ks.load(&a, Generation(2)),
            Err(KeystoreError::Tampered { .. })
        ));

        // Same key and generation, other record name.
        let share_b = raw_get(&mut ks, &record_key(&b, Generation(1), &share_name()));
        raw_put(&mut ks, &record_key(&b, Generation(1), &aux), &share_b);
        assert!(matches!(
            ks.load(&b, Generation(1)),
            Err(KeystoreError::Tampered { .. })
        ));

        // Manifest moved from another generation.
        let m1 = raw_get(&mut ks, &manifest_key(&a, Generation(1)));
        raw_put(&mut ks, &manifest_key(&a, Generation(2)), &m1);
        assert!(matches!(
            ks.load(&a, Generation(2)),
            Err(KeystoreError::Tampered { ref record, .. }) if record == "manifest"
        ));
    }

    #[test]
    fn tampered_or_replayed_active_pointer_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let mut ks = open(dir.path());
        let (a, b) = (id("a"), id("b"));
        ks.put_generation(&a, Generation(1), &recs(b"a1")).unwrap();
        ks.put_generation(&a, Generation(2), &recs(b"a2")).unwrap();
        ks.put_generation(&b, Generation(5), &recs(b"b5")).unwrap();
        ks.activate(&a, Generation(1)).unwrap();
        ks.activate(&b, Generation(5)).unwrap();

        // Replay: the raw value of a's pointer before the switch to generation 2,
        // written back after it. It authenticates (it is a's own pointer) but is older.
        let old_pointer = raw_get(&mut ks, &active_key(&a));
        ks.activate(&a, Generation(2)).unwrap();
        raw_put(&mut ks, &active_key(&a), &old_pointer);
        let err = ks.active_generation(&a).unwrap_err();
        assert!(
            matches!(&err, KeystoreError::RolledBack { key_id, record, found: 1, expected: 2 }
                if key_id == &a && record == "active pointer"),
            "{err:?}"
        );
        assert!(
            matches!(ks.load_active(&a), Err(KeystoreError::RolledBack { .. })),
            "never the old share"
        );
        // The generation the replayed pointer hides cannot be retired.
        assert!(matches!(
            ks.retire_generation(&a, Generation(2)),
            Err(KeystoreError::RolledBack { .. })
        ));
        // Neither is the replayed pointer kept by a commit that would seal it again.
        assert!(matches!(
            ks.save_state(&a, b"S"),
            Err(KeystoreError::RolledBack { .. })
        ));

        // Tampering: another key's pointer fails authentication.
        let pointer_b = raw_get(&mut ks, &active_key(&b));
        raw_put(&mut ks, &active_key(&a), &pointer_b);
        assert!(matches!(
            ks.active_generation(&a),
            Err(KeystoreError::TamperedActivePointer { ref key_id }) if key_id == &a
        ));
        // So does one whose clear version was changed (it is in the associated data).
        let mut bumped = old_pointer.clone();
        bumped[7] = 9;
        raw_put(&mut ks, &active_key(&a), &bumped);
        assert!(matches!(
            ks.active_generation(&a),
            Err(KeystoreError::TamperedActivePointer { .. })
        ));
        assert_eq!(ks.active_generation(&b).unwrap(), Some(Generation(5)));
        // A new activation heals the key.
        ks.activate(&a, Generation(2)).unwrap();
        assert_eq!(ks.active_generation(&a).unwrap(), Some(Generation(2)));
    }

    /// Writes `values` into the closed store's database directly, as an attacker with
    /// access to its files can.
    fn offline_put(dir: &Path, values: &[(Vec<u8>, Vec<u8>)]) {
        let mut db = open_db(dir).unwrap();
        let mut b = WriteBatch::default();
        for (k, v) in values {
            b.put(k, v);
        }
        db.write(b, true).unwrap();
        db.close().unwrap();
    }

    #[test]
    fn replaying_an_older_active_pointer_is_detected_after_restart() {
        let dir = tempfile::tempdir().unwrap();
        let a = id("a");
        let (old_pointer, old_state) = {
            let mut ks = open(dir.path());
            ks.put_generation(&a, Generation(0), &recs(b"a0")).unwrap();
            ks.put_generation(&a, Generation(1), &recs(b"a1")).unwrap();
            ks.activate_with_state(&a, Generation(0), b"S0").unwrap();
            let old = (
                raw_get(&mut ks, &active_key(&a)),
                raw_get(&mut ks, &state_key(&a)),
            );
            ks.activate_with_state(&a, Generation(1), b"S1").unwrap();
            ks.close().unwrap();
            old
        };
        // The old pointer alone.
        offline_put(dir.path(), &[(active_key(&a), old_pointer.clone())]);
        let mut ks = open(dir.path());
        let err = ks.load_active(&a).unwrap_err();
        assert!(
            matches!(&err, KeystoreError::RolledBack { key_id, record, found: 1, expected: 2 }
                if key_id == &a && record == "active pointer"),
            "{err:?}"
        );
        ks.close().unwrap();
        // The old pointer and the old state together: a consistent older commit, which
        // only the high-water mark outside the database tells from the current one.
        offline_put(
            dir.path(),
            &[(active_key(&a), old_pointer), (state_key(&a), old_state)],
        );
        let mut ks = open(dir.path());
        for err in [
            ks.load_active(&a).unwrap_err(),
            ks.load_state(&a).unwrap_err(),
        ] {
            assert!(
                matches!(
                    &err,
                    KeystoreError::RolledBack {
                        found: 1,
                        expected: 2,
                        ..
                    }
                ),
                "{err:?}"
            );
        }
        // Deleting the marks file does not help: such a store is refused.
        ks.close().unwrap();
        fs::remove_file(dir.path().join(versions::VERSIONS_FILE_NAME)).unwrap();
        let err = Keystore::open(dir.path(), &Unlock::passphrase("pw")).unwrap_err();
        assert!(matches!(err, KeystoreError::Corrupt { .. }), "{err:?}");
    }

    #[test]
    fn a_format_1_store_is_refused_with_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut ks = open(dir.path());
        let mut meta = raw_get(&mut ks, META_KEY);
        ks.close().unwrap();
        meta[8] = 1;
        offline_put(dir.path(), &[(META_KEY.to_vec(), meta)]);
        let err = Keystore::open(dir.path(), &Unlock::passphrase("pw")).unwrap_err();
        assert!(
            matches!(&err, KeystoreError::Corrupt { reason } if reason.contains("format version 1")),
            "{err:?}"
        );
    }

    #[test]
    fn pointer_and_state_from_different_commits_are_detected() {
        let dir = tempfile::tempdir().unwrap();
        let mut ks = open(dir.path());
        let a = id("a");
        ks.put_generation(&a, Generation(0), &recs(b"a0")).unwrap();
        ks.put_generation(&a, Generation(1), &recs(b"a1")).unwrap();
        ks.activate_with_state(&a, Generation(0), b"S0").unwrap();
        let (old_pointer, old_state) = (
            raw_get(&mut ks, &active_key(&a)),
            raw_get(&mut ks, &state_key(&a)),
        );
        ks.activate_with_state(&a, Generation(1), b"S1").unwrap();
        let new_pointer = raw_get(&mut ks, &active_key(&a));

        // The state replayed alone.
        raw_put(&mut ks, &state_key(&a), &old_state);
        let err = ks.load_state(&a).unwrap_err();
        assert!(
            matches!(&err, KeystoreError::RolledBack { record, found: 1, expected: 2, .. }
                if record == "state"),
            "{err:?}"
        );
        // Both replayed: the pointer and the state agree, the mark does not.
        raw_put(&mut ks, &active_key(&a), &old_pointer);
        assert!(matches!(
            ks.load_active(&a),
            Err(KeystoreError::RolledBack {
                found: 1,
                expected: 2,
                ..
            })
        ));
        // Even with the marks forgotten (as if the last mark write was lost), the
        // pointer and state of different commits do not pass.
        raw_put(&mut ks, &active_key(&a), &new_pointer);
        ks.marks.clear();
        let err = ks.active_generation(&a).unwrap_err();
        assert!(
            matches!(&err, KeystoreError::RolledBack { record, found: 1, expected: 2, .. }
                if record == "state"),
            "{err:?}"
        );
    }

    #[test]
    fn a_deleted_keys_pointer_cannot_be_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let mut ks = open(dir.path());
        let a = id("a");
        ks.put_generation(&a, Generation(0), &recs(b"a0")).unwrap();
        ks.activate(&a, Generation(0)).unwrap();
        let pointer = raw_get(&mut ks, &active_key(&a));
        let manifest = raw_get(&mut ks, &manifest_key(&a, Generation(0)));
        let share = raw_get(&mut ks, &record_key(&a, Generation(0), &share_name()));
        let aux_name = RecordName::new(RecordName::AUX_INFO).unwrap();
        let aux = raw_get(&mut ks, &record_key(&a, Generation(0), &aux_name));
        ks.delete_key(&a).unwrap();
        // Everything written back from a copy taken before the deletion.
        raw_put(&mut ks, &manifest_key(&a, Generation(0)), &manifest);
        raw_put(
            &mut ks,
            &record_key(&a, Generation(0), &share_name()),
            &share,
        );
        raw_put(&mut ks, &record_key(&a, Generation(0), &aux_name), &aux);
        raw_put(&mut ks, &active_key(&a), &pointer);
        assert!(matches!(
            ks.load_active(&a),
            Err(KeystoreError::RolledBack {
                found: 1,
                expected: 2,
                ..
            })
        ));
    }

    #[test]
    fn state_moved_between_keys_or_from_another_record_kind_fails_authentication() {
        let dir = tempfile::tempdir().unwrap();
        let mut ks = open(dir.path());
        let (a, b) = (id("a"), id("b"));
        ks.put_generation(&a, Generation(0), &recs(b"a0")).unwrap();
        ks.put_generation(&b, Generation(0), &recs(b"b0")).unwrap();
        ks.activate_with_state(&a, Generation(0), b"state of a")
            .unwrap();
        ks.activate_with_state(&b, Generation(0), b"state of b")
            .unwrap();
        let original = raw_get(&mut ks, &state_key(&a));

        // Another key's state.
        let of_b = raw_get(&mut ks, &state_key(&b));
        raw_put(&mut ks, &state_key(&a), &of_b);
        assert!(matches!(
            ks.load_state(&a),
            Err(KeystoreError::TamperedState { ref key_id }) if key_id == &a
        ));
        // The key's own active pointer, sealed under the same key.
        let pointer = raw_get(&mut ks, &active_key(&a));
        raw_put(&mut ks, &state_key(&a), &pointer);
        assert!(matches!(
            ks.load_state(&a),
            Err(KeystoreError::TamperedState { .. })
        ));
        // One flipped bit.
        let mut bad = original.clone();
        *bad.last_mut().unwrap() ^= 1;
        raw_put(&mut ks, &state_key(&a), &bad);
        assert!(matches!(
            ks.load_state(&a),
            Err(KeystoreError::TamperedState { .. })
        ));
        // Restored, it opens again; b was never affected.
        raw_put(&mut ks, &state_key(&a), &original);
        assert_eq!(ks.load_state(&a).unwrap().unwrap(), b"state of a");
        assert_eq!(ks.load_state(&b).unwrap().unwrap(), b"state of b");
    }

    #[test]
    fn removed_record_listed_in_manifest_is_reported_missing() {
        let dir = tempfile::tempdir().unwrap();
        let mut ks = open(dir.path());
        let a = id("a");
        ks.put_generation(&a, Generation(1), &recs(b"a1")).unwrap();
        let mut batch = WriteBatch::default();
        batch.delete(&record_key(&a, Generation(1), &share_name()));
        ks.db().unwrap().write(batch, true).unwrap();
        assert!(matches!(
            ks.load(&a, Generation(1)),
            Err(KeystoreError::MissingRecord { ref record, .. }) if record.as_str() == "key_share"
        ));
    }

    #[test]
    fn crash_before_metadata_write_is_recovered_and_foreign_data_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        // An empty LevelDB (crash right after creation) is initialised normally.
        drop(open_db(dir.path()).unwrap());
        let mut ks = open(dir.path());
        ks.put_generation(&id("a"), Generation(1), &recs(b"a1"))
            .unwrap();
        drop(ks);

        // A LevelDB with data but no keystore metadata is refused, untouched.
        let other = tempfile::tempdir().unwrap();
        {
            let mut db = open_db(other.path()).unwrap();
            db.put(b"foreign", b"data").unwrap();
            db.close().unwrap();
        }
        let err = Keystore::open(other.path(), &Unlock::passphrase("pw")).unwrap_err();
        assert!(matches!(err, KeystoreError::Corrupt { .. }), "{err:?}");
        let mut db = open_db(other.path()).unwrap();
        assert_eq!(
            get(&mut db, b"foreign").unwrap().as_deref(),
            Some(&b"data"[..])
        );
    }
}
