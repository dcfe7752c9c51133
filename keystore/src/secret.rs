//! Secret-holding wrappers: zeroized on drop, redacted in `Debug`.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// An owned buffer of secret bytes (a serialized key share, aux info, ...).
///
/// * The memory is overwritten with zeros when the value is dropped.
/// * `Debug` prints `SecretBytes([REDACTED; N bytes])` and never the content.
/// * It is deliberately **not** `Clone`: copies of secrets should be explicit
///   (`SecretBytes::new(s.expose().to_vec())`).
///
/// ```
/// use keystore::SecretBytes;
/// let s = SecretBytes::new(vec![1, 2, 3]);
/// assert_eq!(s.expose(), &[1, 2, 3]);
/// assert!(!format!("{s:?}").contains('1'));
/// ```
#[derive(Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// Takes ownership of `bytes` (no copy is made).
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretBytes(bytes)
    }

    /// Copies `bytes` into a new secret buffer. The caller remains responsible
    /// for zeroizing its own copy.
    pub fn from_slice(bytes: &[u8]) -> Self {
        SecretBytes(bytes.to_vec())
    }

    /// Borrows the secret content.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length of the secret in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(v: Vec<u8>) -> Self {
        SecretBytes::new(v)
    }
}

impl From<Zeroizing<Vec<u8>>> for SecretBytes {
    fn from(mut v: Zeroizing<Vec<u8>>) -> Self {
        SecretBytes::new(std::mem::take(&mut *v))
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes([REDACTED; {} bytes])", self.0.len())
    }
}

/// An operator passphrase. Zeroized on drop, redacted in `Debug`, not `Clone`.
///
/// ```
/// use keystore::Passphrase;
/// let p = Passphrase::new("correct horse battery staple");
/// assert_eq!(format!("{p:?}"), "Passphrase([REDACTED])");
/// ```
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Passphrase(String);

impl Passphrase {
    /// Wraps a passphrase.
    pub fn new(passphrase: impl Into<String>) -> Self {
        Passphrase(passphrase.into())
    }

    /// Borrows the passphrase bytes (UTF-8).
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase([REDACTED])")
    }
}

/// The 256-bit master key derived when the store is unlocked. Zeroized on
/// drop, never printed.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct MasterKey(pub(crate) [u8; 32]);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([REDACTED])")
    }
}
