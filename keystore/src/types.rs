//! Identifier newtypes and the per-generation record set.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::error::KeystoreError;
use crate::secret::SecretBytes;

/// Maximum length of a [`KeyId`] in bytes.
pub const MAX_KEY_ID_LEN: usize = 128;
/// Maximum length of a [`RecordName`] in bytes.
pub const MAX_RECORD_NAME_LEN: usize = 64;

/// Identifier of a logical key (one threshold public key / signing committee).
///
/// Valid ids are 1 to [`MAX_KEY_ID_LEN`] ASCII characters from
/// `[A-Za-z0-9._:-]`. The restriction keeps database keys unambiguous (no `/`)
/// and ids safe to print in logs (key ids are *not* secret).
///
/// ```
/// use keystore::KeyId;
/// let id: KeyId = "sequencer-mainnet:1".parse().unwrap();
/// assert_eq!(id.as_str(), "sequencer-mainnet:1");
/// assert!(KeyId::new("has/slash").is_err());
/// assert!(KeyId::new("").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct KeyId(String);

impl KeyId {
    /// Validates and wraps a key id.
    pub fn new(id: impl Into<String>) -> Result<Self, KeystoreError> {
        let id = id.into();
        validate_ident(&id, MAX_KEY_ID_LEN, |c| {
            c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')
        })
        .map_err(|reason| KeystoreError::InvalidKeyId { reason })?;
        Ok(KeyId(id))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for KeyId {
    type Err = KeystoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyId::new(s)
    }
}

impl TryFrom<&str> for KeyId {
    type Error = KeystoreError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        KeyId::new(s)
    }
}

impl TryFrom<String> for KeyId {
    type Error = KeystoreError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        KeyId::new(s)
    }
}

/// A generation of a key: one per keygen or reshare. Generations of one key
/// are independent records; exactly one of them may be *active*.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Generation(pub u64);

impl Generation {
    /// The numeric value.
    pub fn get(self) -> u64 {
        self.0
    }

    /// The following generation (`self + 1`), or `None` on overflow.
    pub fn next(self) -> Option<Generation> {
        self.0.checked_add(1).map(Generation)
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<u64> for Generation {
    fn from(g: u64) -> Self {
        Generation(g)
    }
}

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
