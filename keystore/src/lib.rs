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
//!   ([`KeystoreError::Locked`] otherwise). On Unix the directory is mode `0700` and
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
//!   silently rolled back, truncated or swapped either.
//! * **Generations**: written inactive by [`Keystore::put_generation`] (one
//!   synced batch), switched by [`Keystore::activate`] (one synced record
//!   write) or [`Keystore::activate_with_state`] (pointer and state in one
//!   synced batch). A crash at any point leaves the previously active generation
//!   intact and active, with its state, or the new one with the new state.
//! * **Deletion**: [`Keystore::delete_key`] / [`Keystore::delete_key_with_state`] /
//!   [`Keystore::retire_generation`]
//!   delete in one synced batch, then compact the whole database; LevelDB
//!   files made obsolete are overwritten with zeros before being unlinked.
//!   This guarantees the ciphertext is gone from the store's files; whether
//!   the underlying blocks are physically erased depends on the filesystem
//!   and device (copy-on-write filesystems, SSDs and snapshots may retain
//!   them), which is one more reason records are encrypted.
//! * **Secrets** ([`SecretBytes`], [`Passphrase`], the master key) are
//!   zeroized on drop and print as `[REDACTED]`.
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

pub use async_store::AsyncKeystore;
pub use error::{KeystoreError, Result};
pub use kdf::{generate_key_file, KdfParams, Unlock, UnlockMethod, SALT_LEN};
pub use secret::{Passphrase, SecretBytes};
pub use store::{
    decode_manifest, decode_metadata, open_sealed_record, Keystore, MetadataHeader, LOCK_FILE_NAME,
};
pub use types::{
    Generation, GenerationRecords, KeyId, RecordName, MAX_KEY_ID_LEN, MAX_RECORD_NAME_LEN,
};
