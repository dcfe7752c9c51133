//! Record names and the per-generation record set. Key ids and generations are
//! tss-core's [`KeyId`] and [`Generation`] (re-exported by this crate).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

pub use tss_core::{Generation, KeyId};

use crate::error::KeystoreError;
use crate::secret::SecretBytes;

/// Maximum length of a [`KeyId`] in bytes (the same as [`KeyId::MAX_LEN`]).
pub const MAX_KEY_ID_LEN: usize = KeyId::MAX_LEN;
/// Maximum length of a [`RecordName`] in bytes.
pub const MAX_RECORD_NAME_LEN: usize = 64;

/// Name of one secret blob inside a generation, e.g. [`RecordName::KEY_SHARE`].
///
/// Valid names are 1 to [`MAX_RECORD_NAME_LEN`] characters from `[a-z0-9_-]`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct RecordName(String);

impl RecordName {
    /// Conventional name of the serialized key share.
    pub const KEY_SHARE: &'static str = "key_share";
    /// Conventional name of the serialized auxiliary info (Paillier keys, ...).
    pub const AUX_INFO: &'static str = "aux_info";

    /// Validates and wraps a record name.
    pub fn new(name: impl Into<String>) -> Result<Self, KeystoreError> {
        let name = name.into();
        validate_ident(&name, MAX_RECORD_NAME_LEN, |c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_')
        })
        .map_err(|reason| KeystoreError::InvalidRecordName { reason })?;
        Ok(RecordName(name))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RecordName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for RecordName {
    type Err = KeystoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RecordName::new(s)
    }
}

fn validate_ident(s: &str, max: usize, allowed: impl Fn(char) -> bool) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > max {
        return Err(format!("must be at most {max} bytes, got {}", s.len()));
    }
    if let Some(c) = s.chars().find(|c| !allowed(*c)) {
        return Err(format!("character {c:?} is not allowed"));
    }
    Ok(())
}

/// The named secret blobs making up one generation of a key, typically
/// [`RecordName::KEY_SHARE`] and [`RecordName::AUX_INFO`].
///
/// `Debug` shows the record names and sizes only.
///
/// ```
/// use keystore::{GenerationRecords, RecordName, SecretBytes};
/// let recs = GenerationRecords::share_and_aux(
///     SecretBytes::new(b"s3cr3t share".to_vec()),
///     SecretBytes::new(b"aux".to_vec()),
/// );
/// assert_eq!(recs.key_share().unwrap().expose(), b"s3cr3t share");
/// assert_eq!(recs.get(RecordName::AUX_INFO).unwrap().expose(), b"aux");
/// let debug = format!("{recs:?}");
/// assert!(debug.contains("key_share") && debug.contains("REDACTED"));
/// assert!(!debug.contains("s3cr3t") && !debug.contains("115, 51"));
/// ```
#[derive(Default, Debug, PartialEq, Eq)]
pub struct GenerationRecords {
    records: BTreeMap<RecordName, SecretBytes>,
}

impl GenerationRecords {
    /// An empty set of records.
    pub fn new() -> Self {
        Self::default()
    }

    /// The common case: a key share and its aux info.
    pub fn share_and_aux(key_share: SecretBytes, aux_info: SecretBytes) -> Self {
        let mut r = Self::new();
        r.insert(RecordName(RecordName::KEY_SHARE.into()), key_share);
        r.insert(RecordName(RecordName::AUX_INFO.into()), aux_info);
        r
    }

    /// Adds (or replaces) a record, returning the previous value if any.
    pub fn insert(&mut self, name: RecordName, secret: SecretBytes) -> Option<SecretBytes> {
        self.records.insert(name, secret)
    }

    /// The record called `name`, if present.
    pub fn get(&self, name: &str) -> Option<&SecretBytes> {
        self.records
            .iter()
            .find(|(n, _)| n.as_str() == name)
            .map(|(_, v)| v)
    }

    /// Shortcut for `get(RecordName::KEY_SHARE)`.
    pub fn key_share(&self) -> Option<&SecretBytes> {
        self.get(RecordName::KEY_SHARE)
    }

    /// Shortcut for `get(RecordName::AUX_INFO)`.
    pub fn aux_info(&self) -> Option<&SecretBytes> {
        self.get(RecordName::AUX_INFO)
    }

    /// Iterates over `(name, secret)` in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&RecordName, &SecretBytes)> {
        self.records.iter()
    }

    /// Record names in order.
    pub fn names(&self) -> impl Iterator<Item = &RecordName> {
        self.records.keys()
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}
