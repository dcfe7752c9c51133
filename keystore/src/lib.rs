//! Encrypted, generation-aware storage of threshold key shares.
//!
//! Two APIs over one store:
//!
//! * [`AsyncKeystore`]: for async code (`Send + Sync`, cheap to clone), typed with
//!   tss-core's [`KeyShare`](tss_core::KeyShare): stage a generation, activate it
//!   together with the embedder's state in one atomic step, retire the old one. It
//!   implements [`tss_core::pool::ShareStore`].
//! * [`Keystore`]: the synchronous, byte-oriented store underneath (callers serialize
//!   records themselves); not `Send`.
//!
//! Key ids and generations are tss-core's [`KeyId`] and [`Generation`], re-exported here;
//! generation 0 ([`Generation::KEYGEN`]) is the one keygen produces.
//!
//! ```
//! use keystore::{Generation, GenerationRecords, KdfParams, KeyId, Keystore, SecretBytes, Unlock};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let unlock = Unlock::passphrase("correct horse battery staple");
//! // Real deployments use `Keystore::open` (Argon2id m=64 MiB, t=3, p=1).
//! let mut store = Keystore::open_with_kdf(dir.path(), &unlock, KdfParams::insecure_for_tests())?;
//!
//! let key = KeyId::new("sequencer-key")?;
//! let records = GenerationRecords::share_and_aux(
//!     SecretBytes::new(b"serialized key share".to_vec()),
//!     SecretBytes::new(b"serialized aux info".to_vec()),
//! );
//! store.put_generation(&key, Generation::KEYGEN, &records)?; // written inactive
//! store.activate_with_state(&key, Generation::KEYGEN, b"pool v1")?; // atomic switch
//! store.close()?;
//!
//! let mut store = Keystore::open(dir.path(), &unlock)?; // stored KDF params are reused
//! let (generation, loaded) = store.load_active(&key)?;
//! assert_eq!(generation, Generation::KEYGEN);
//! assert_eq!(store.load_state(&key)?.as_deref(), Some(&b"pool v1"[..]));
//! assert_eq!(loaded.key_share().unwrap().expose(), b"serialized key share");
//! # Ok::<(), keystore::KeystoreError>(())
//! ```
//!
//! # Design
//!
//! * **Storage**: a [rusty-leveldb](rusty_leveldb) directory, plus an advisory
//!   lock file `KEYSTORE.LOCK` held exclusively while a [`Keystore`] is open
//!   ([`KeystoreError::Locked`] otherwise), and the high-water-mark file
//!   `KEYSTORE.VERSIONS` (see [Rollback](#rollback); back it up **with** the rest
//!   of the directory, a store without it is refused). On Unix the directory is mode `0700` and
//!   every file in it `0600`, whatever the umask (see [`Keystore::open`]).
//! * **Keys**: at creation a random 16-byte salt and the [`KdfParams`] are
//!   stored in a metadata record. A passphrase is stretched with Argon2id; a
//!   key file (32 raw bytes or 64 hex chars) goes through HKDF-SHA256 with
//!   the same salt. The metadata also holds a *key-check value* (a sealed
//!   constant bound to the metadata), so a wrong credential is reported as
//!   [`KeystoreError::WrongPassphrase`] / [`KeystoreError::WrongKeyFile`]
//!   rather than as tampering.
//! * **Records**: `version (1) | nonce (12, OsRng) | AES-256-GCM ciphertext+tag`,
//!   with associated data = domain string + key id + generation + record
//!   name, so records moved between keys, generations or names fail with
//!   [`KeystoreError::Tampered`]. The active-generation pointer, each
//!   generation's manifest (list of record names) and each key's state record
//!   are sealed too (bound to the key id and their kind), so they cannot be
//!   truncated or swapped either. The active pointer and the state record also
//!   carry a per-key *version*, bound into their associated data, so an older
//!   value written back is detected: see [Rollback](#rollback).
//! * **Generations**: written inactive by [`Keystore::put_generation`] (one
//!   synced batch), switched by [`Keystore::activate`] or
//!   [`Keystore::activate_with_state`] (pointer and state in one synced batch). A crash at any point leaves the previously active generation
//!   intact and active, with its state, or the new one with the new state.
//! * **Deletion**: [`Keystore::delete_key`] / [`Keystore::delete_key_with_state`] /
//!   [`Keystore::retire_generation`]
//!   delete in one synced batch, then compact the whole database; LevelDB
//!   files made obsolete are overwritten with zeros before being unlinked.
//!   This guarantees the ciphertext is gone from the store's files; whether
//!   the underlying blocks are physically erased depends on the filesystem
//!   and device (copy-on-write filesystems, SSDs and snapshots may retain
//!   them), which is one more reason records are encrypted.
//! * **Execution ids**: [`Keystore::record_executions`] keeps the ids of the node's
//!   last protocol runs (sealed, bound to their sequence number; the oldest dropped past
//!   a limit), read back by [`Keystore::executions`], so the pool layer refuses a run
//!   replayed after a restart.
//! * **Secrets** ([`SecretBytes`], [`Passphrase`], the master key) are
//!   zeroized on drop and print as `[REDACTED]`.
//! * **Format**: the metadata record holds a format version, now 2. Stores of
//!   format 1 (written before versions and the high-water-mark file existed) are
//!   not migrated: opening one gives [`KeystoreError::Corrupt`] saying so;
//!   re-create the store and stage the shares again.
//!
//! # Rollback
//!
//! AES-GCM proves a value was written by this store for this place (key id,
//! generation, record name), not that it is the *latest* value written there: an
//! older sealed active pointer, copied before a reshare and written back after it,
//! authenticates. So:
//!
//! * **Versions.** Each key has a version counter. Every change of its active
//!   pointer or state record ([`Keystore::activate`], [`Keystore::activate_with_state`],
//!   [`Keystore::save_state`], [`Keystore::delete_key`],
//!   [`Keystore::delete_key_with_state`]) is one *commit* at the next version: it
//!   writes the pointer and the state (the kept one sealed again) at that version in
//!   one synced batch. The value is `version (u64 BE) | sealed`, and the version is
//!   in the associated data, so it cannot be changed without failing authentication.
//!   A pointer and a state of different versions are not from the same commit:
//!   [`KeystoreError::RolledBack`].
//! * **High-water marks.** An anchor outside the database holds, per key id, the
//!   last version committed: the file `KEYSTORE.VERSIONS` ([`VERSIONS_FILE_NAME`])
//!   in the store directory, sealed with the store key (AES-256-GCM, so it cannot be
//!   forged or taken from another store), replaced atomically (written to a
//!   temporary file, `fsync`, rename, directory `fsync`) after each commit, and
//!   created before the metadata record, so a store without it is refused
//!   ([`KeystoreError::Corrupt`]). An active pointer or state record whose version
//!   is below its key's mark is [`KeystoreError::RolledBack`] (`found`, `expected`)
//!   when it is read: [`Keystore::active_generation`], [`Keystore::load_active`],
//!   [`Keystore::load_state`], and the commits that keep one of them.
//! * **Crash safety.** The mark is written after the batch. A crash in between leaves
//!   the database one commit ahead of the mark; versions at or above the mark are
//!   accepted, and [`Keystore::open`] raises each mark to the versions of the
//!   authentic records it finds, so the store opens with the new commit, like
//!   before. The only cost: in that window, a replay of the commit just before is
//!   not caught by the mark (it still is by the pointer/state cross-check if only
//!   one of the two is replayed).
//!
//! Threat model: an attacker who can write the store's files (but does not have
//! the passphrase or key file) and rolls back **part** of the store, e.g. writes one
//! older record (the active pointer, the state) back into the LevelDB database, or
//! restores older LevelDB files without the marks file, is detected. A rollback of
//! the **whole directory**, marks file included (restoring a backup or a
//! filesystem snapshot), is not detectable locally: nothing the node keeps on the
//! same disk can tell an old copy from the current one. The pool notices that case
//! from outside (a node holding an old generation fails the next signing or
//! resharing with the others, and the L1 shows the current committee). Deleting
//! records (rather than replaying older ones) is not reported as a rollback: a
//! deleted active pointer or state record reads as absent (`None`,
//! [`KeystoreError::NoActiveGeneration`]), a deleted share as
//! [`KeystoreError::MissingRecord`] or [`KeystoreError::UnknownKey`]. That denies
//! service but never substitutes an older share or state.
//!
//! # Features
//!
//! * `test-util`: test-only crash points (the process stops at a named point inside
//!   [`Keystore::activate_with_state`] or [`Keystore::delete_key_with_state`] when the
//!   environment variable `KEYSTORE_CRASH_POINT` names it, so a test can kill it there;
//!   see `src/crash_point.rs`). Used by this crate's own tests; never enable it in
//!   production.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod async_store;
mod crash_point;
mod env;
mod error;
mod kdf;
mod seal;
mod secret;
mod store;
mod types;
mod versions;

pub use async_store::{
    AsyncKeystore, BANS_ATTACHMENT, CERTIFICATE_ATTACHMENT, PENDING_STATE_RECORD,
};
pub use error::{KeystoreError, Result};
pub use kdf::{generate_key_file, KdfParams, Unlock, UnlockMethod, SALT_LEN};
pub use secret::{Passphrase, SecretBytes};
#[cfg(feature = "fuzzing")]
pub use store::{decode_manifest, decode_metadata, open_sealed_record, MetadataHeader};
pub use store::{Keystore, LOCK_FILE_NAME};
pub use types::{
    Generation, GenerationRecords, KeyId, RecordName, MAX_KEY_ID_LEN, MAX_RECORD_NAME_LEN,
};
pub use versions::VERSIONS_FILE_NAME;
