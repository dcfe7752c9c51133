//! The crate's single error type.

use std::path::PathBuf;

use crate::kdf::UnlockMethod;
use crate::types::{Generation, KeyId, RecordName};

/// Convenience alias for `Result<T, KeystoreError>`.
pub type Result<T, E = KeystoreError> = std::result::Result<T, E>;

/// Everything that can go wrong in the keystore.
///
/// No variant ever carries secret material; all are safe to log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeystoreError {
    /// The passphrase does not unlock this store (the key-check value failed
    /// to authenticate). Nothing was modified.
    #[error("wrong passphrase for this keystore")]
    WrongPassphrase,

    /// The key file does not unlock this store. Nothing was modified.
    #[error("key file {path} does not unlock this keystore")]
    WrongKeyFile {
        /// The key file that was tried.
        path: PathBuf,
    },

    /// The store was created with a different unlock method.
    #[error("keystore was created for {store} unlock, but {given} was supplied")]
    UnlockMethodMismatch {
        /// Method recorded in the store.
        store: UnlockMethod,
        /// Method supplied to `open`.
        given: UnlockMethod,
    },

    /// The key file is not 32 raw bytes or 64 hex characters.
    #[error("invalid key file {path}: {reason}")]
    InvalidKeyFile {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// Another process (or another handle in this process) has the store open.
    #[error("keystore at {path} is locked by another process or handle")]
    Locked {
        /// The lock file that could not be acquired.
        path: PathBuf,
    },

    /// No generation of this key exists.
    #[error("unknown key {0}")]
    UnknownKey(KeyId),

    /// The key exists but not this generation.
    #[error("unknown generation {generation} of key {key_id}")]
    UnknownGeneration {
        /// The key.
        key_id: KeyId,
        /// The missing generation.
        generation: Generation,
    },

    /// The key has generations but none was activated yet.
    #[error("key {0} has no active generation")]
    NoActiveGeneration(KeyId),

    /// Generations are write-once; this one is already stored.
    #[error("generation {generation} of key {key_id} already exists")]
    GenerationExists {
        /// The key.
        key_id: KeyId,
        /// The existing generation.
        generation: Generation,
    },

    /// The active generation cannot be retired; activate another one first
    /// (or delete the whole key).
    #[error("generation {generation} of key {key_id} is active and cannot be retired")]
    GenerationActive {
        /// The key.
        key_id: KeyId,
        /// The active generation.
        generation: Generation,
    },

    /// A generation must contain at least one record.
    #[error("a generation must contain at least one record")]
    EmptyGeneration,

    /// A record failed authentication or is malformed: it was modified,
    /// corrupted, or moved from another key/generation/name.
    #[error("record {record} of key {key_id} generation {generation} is tampered or corrupted")]
    Tampered {
        /// The key.
        key_id: KeyId,
        /// The generation.
        generation: Generation,
        /// Which record (or `manifest` for the generation's record list).
        record: String,
    },

    /// The active-generation pointer of a key failed authentication.
    #[error("active-generation pointer of key {key_id} is tampered or corrupted")]
    TamperedActivePointer {
        /// The key.
        key_id: KeyId,
    },

    /// A generation's manifest lists a record that is missing from the store.
    #[error("record {record} of key {key_id} generation {generation} is missing")]
    MissingRecord {
        /// The key.
        key_id: KeyId,
        /// The generation.
        generation: Generation,
        /// The missing record.
        record: RecordName,
    },

    /// Invalid key id: the [`tss_core::TssError::InvalidKeyId`] of
    /// [`KeyId::new`](tss_core::KeyId::new), which names the id and the reason.
    #[error(transparent)]
    InvalidKeyId(tss_core::TssError),

    /// A stored key share cannot be encoded or decoded
    /// ([`tss_core::KeyShare::to_secret_bytes`] / [`tss_core::KeyShare::from_secret_bytes`]
    /// failed), or it is not the share of the key and generation it is stored under.
    #[error("key share {generation} of key {key_id} cannot be used: {reason}")]
    InvalidKeyShare {
        /// The key.
        key_id: KeyId,
        /// The generation.
        generation: Generation,
        /// What is wrong (never secret material).
        reason: String,
    },

    /// Another error of tss-core (the keystore itself only produces the variants above).
    #[error(transparent)]
    Core(tss_core::TssError),

    /// The state record of a key (see [`Keystore::save_state`](crate::Keystore::save_state))
    /// failed authentication: it was modified, corrupted, or moved from another key.
    #[error("state record of key {key_id} is tampered or corrupted")]
    TamperedState {
        /// The key.
        key_id: KeyId,
    },

    /// An authentic active pointer or state record of a key is older than the key's last
    /// commit: it was replayed (an earlier value written back into the database), or the
    /// pointer and the state come from different commits. See "Rollback" in the crate
    /// docs for what is and is not detected.
    #[error(
        "{record} of key {key_id} was rolled back: version {found}, expected at least {expected}"
    )]
    RolledBack {
        /// The key.
        key_id: KeyId,
        /// Which record: `active pointer` or `state`.
        record: String,
        /// The version of the record found.
        found: u64,
        /// The version it must have at least (the key's high-water mark, or the version
        /// of the other record of the commit).
        expected: u64,
    },

    /// The [`AsyncKeystore`](crate::AsyncKeystore) was closed (by
    /// [`AsyncKeystore::close`](crate::AsyncKeystore::close) on another handle), or
    /// its thread stopped.
    #[error("the keystore is closed")]
    Closed,

    /// Invalid record name.
    #[error("invalid record name: {reason}")]
    InvalidRecordName {
        /// Why it was rejected.
        reason: String,
    },

    /// Argon2 parameters rejected (when creating a store, or stored ones on open).
    #[error("invalid KDF parameters: {0}")]
    InvalidKdfParams(String),

    /// Store-level corruption (metadata record, unknown format version, ...).
    #[error("keystore is corrupt: {reason}")]
    Corrupt {
        /// What was found to be wrong.
        reason: String,
    },

    /// An error reported by the LevelDB engine (the source; downcast it to
    /// `rusty_leveldb::Status` for the engine's code).
    #[error("database error: {0}")]
    Database(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),

    /// A filesystem error.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The path being accessed.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// [`tss_core::TssError::InvalidKeyId`] becomes [`KeystoreError::InvalidKeyId`] (so
/// `KeyId::new(..)?` works in functions returning [`Result`]); anything else
/// [`KeystoreError::Core`].
impl From<tss_core::TssError> for KeystoreError {
    fn from(e: tss_core::TssError) -> Self {
        match e {
            e @ tss_core::TssError::InvalidKeyId { .. } => KeystoreError::InvalidKeyId(e),
            e => KeystoreError::Core(e),
        }
    }
}

impl From<rusty_leveldb::Status> for KeystoreError {
    fn from(s: rusty_leveldb::Status) -> Self {
        KeystoreError::Database(Box::new(s))
    }
}
