//! Unlocking: Argon2id for passphrases, HKDF-SHA256 for raw key files.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use hkdf::Hkdf;
use rand_core::{OsRng, RngCore};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::{KeystoreError, Result};
use crate::secret::{MasterKey, Passphrase};

/// Length of the random per-store salt.
pub const SALT_LEN: usize = 16;

const MAX_MEMORY_KIB: u32 = 4 * 1024 * 1024; // 4 GiB
const MAX_ITERATIONS: u32 = 64;
const MAX_PARALLELISM: u32 = 16;
const KEY_FILE_HKDF_INFO: &[u8] = b"mpc-keystore/v1 key-file master key";

/// Argon2id cost parameters, chosen when a store is created and stored in its
/// metadata record (reopening always uses the stored values).
///
/// The [`Default`] is `m = 64 MiB, t = 3, p = 1`, in line with the OWASP /
/// RFC 9106 recommendations for interactive unlock on a server; it takes
/// roughly 0.1–0.3 s per unlock on current hardware.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory cost in KiB (`m`).
    pub memory_kib: u32,
    /// Number of passes (`t`).
    pub iterations: u32,
    /// Degree of parallelism (`p`).
    pub parallelism: u32,
}

impl Default for KdfParams {
    fn default() -> Self {
        KdfParams {
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 1,
        }
    }
}

impl KdfParams {
    /// Minimal Argon2id cost (`m = 8 KiB, t = 1, p = 1`): **only for tests**,
    /// it offers no meaningful resistance against passphrase guessing.
    pub fn insecure_for_tests() -> Self {
        KdfParams {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1,
        }
    }

    /// Checks the parameters are accepted by Argon2 and within sane upper
    /// bounds (m ≤ 4 GiB, t ≤ 64, p ≤ 16), so a tampered metadata record
    /// cannot make `open` allocate unbounded memory.
    pub fn validate(&self) -> Result<()> {
        self.to_argon2().map(|_| ())
    }

    fn to_argon2(self) -> Result<argon2::Params> {
        if self.memory_kib > MAX_MEMORY_KIB
            || self.iterations > MAX_ITERATIONS
            || self.parallelism > MAX_PARALLELISM
        {
            return Err(KeystoreError::InvalidKdfParams(format!(
                "{self:?} exceeds the limits m<={MAX_MEMORY_KIB} KiB, t<={MAX_ITERATIONS}, p<={MAX_PARALLELISM}"
            )));
        }
        argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
            .map_err(|e| KeystoreError::InvalidKdfParams(format!("{self:?}: {e}")))
    }
}

/// How a store is unlocked. A store remembers the method it was created with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnlockMethod {
    /// Operator passphrase through Argon2id.
    Passphrase,
    /// Raw 256-bit key file through HKDF-SHA256.
    KeyFile,
}

impl UnlockMethod {
    pub(crate) fn to_byte(self) -> u8 {
        match self {
            UnlockMethod::Passphrase => 1,
            UnlockMethod::KeyFile => 2,
        }
    }

    pub(crate) fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(UnlockMethod::Passphrase),
            2 => Some(UnlockMethod::KeyFile),
            _ => None,
        }
    }
}

impl fmt::Display for UnlockMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UnlockMethod::Passphrase => "passphrase",
            UnlockMethod::KeyFile => "key-file",
        })
    }
}

/// The credential used to unlock (or create) a store. `Debug` never shows the
/// passphrase.
///
/// * `Passphrase`: master key = Argon2id(passphrase, store salt, stored params).
/// * `KeyFile`: the file holds a 256-bit key, either as exactly 32 raw bytes or
///   as 64 hex characters (surrounding whitespace ignored); master key =
///   HKDF-SHA256(ikm = file key, salt = store salt, info = domain string).
///   Argon2 is skipped because the key already has full entropy. See
///   [`generate_key_file`].
#[derive(Debug)]
pub enum Unlock {
    /// Operator passphrase.
    Passphrase(Passphrase),
    /// Path of a raw key file.
    KeyFile(PathBuf),
}

impl Unlock {
    /// Shortcut for `Unlock::Passphrase(Passphrase::new(p))`.
    pub fn passphrase(p: impl Into<String>) -> Self {
        Unlock::Passphrase(Passphrase::new(p))
    }

    /// Shortcut for `Unlock::KeyFile(path.into())`.
    pub fn key_file(path: impl Into<PathBuf>) -> Self {
        Unlock::KeyFile(path.into())
    }

    /// Which method this credential uses.
    pub fn method(&self) -> UnlockMethod {
        match self {
            Unlock::Passphrase(_) => UnlockMethod::Passphrase,
            Unlock::KeyFile(_) => UnlockMethod::KeyFile,
        }
    }

    pub(crate) fn derive(&self, salt: &[u8; SALT_LEN], params: KdfParams) -> Result<MasterKey> {
        let mut out = MasterKey([0u8; 32]);
        match self {
            Unlock::Passphrase(p) => {
                let argon = argon2::Argon2::new(
                    argon2::Algorithm::Argon2id,
                    argon2::Version::V0x13,
                    params.to_argon2()?,
                );
                argon
                    .hash_password_into(p.expose(), salt, &mut out.0)
                    .map_err(|e| KeystoreError::InvalidKdfParams(e.to_string()))?;
            }
            Unlock::KeyFile(path) => {
                let key = read_key_file(path)?;
                let hk = Hkdf::<Sha256>::new(Some(salt), &key[..]);
                hk.expand(KEY_FILE_HKDF_INFO, &mut out.0)
                    .expect("32 bytes is a valid HKDF-SHA256 output length");
            }
        }
        Ok(out)
    }
}

fn read_key_file(path: &Path) -> Result<Zeroizing<[u8; 32]>> {
    let raw = Zeroizing::new(fs::read(path).map_err(|source| KeystoreError::Io {
        path: path.to_owned(),
        source,
    })?);
    let invalid = |reason: &str| KeystoreError::InvalidKeyFile {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let mut key = Zeroizing::new([0u8; 32]);
    if raw.len() == 32 {
        key.copy_from_slice(&raw);
        return Ok(key);
    }
    let trimmed = raw.trim_ascii();
    if trimmed.len() == 64 {
        hex::decode_to_slice(trimmed, &mut key[..])
            .map_err(|_| invalid("64 characters but not valid hex"))?;
        return Ok(key);
    }
    Err(invalid(
        "expected exactly 32 raw bytes or 64 hex characters",
    ))
}

/// Creates a new key file at `path` holding 32 random bytes as 64 hex
/// characters (plus a newline), readable by the owner only on Unix. Fails if
/// the file already exists, so an existing key is never overwritten.
pub fn generate_key_file(path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let io = |source| KeystoreError::Io {
        path: path.to_owned(),
        source,
    };
    let mut key = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(&mut key[..]);
    let mut text = Zeroizing::new(hex::encode(&key[..]).into_bytes());
    text.push(b'\n');
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(io)?;
    f.write_all(&text).map_err(io)?;
    f.sync_all().map_err(io)?;
    Ok(())
}

pub(crate) fn random_salt() -> [u8; SALT_LEN] {
    let mut salt = [0u8; SALT_LEN];
    OsRng.fill_bytes(&mut salt);
    salt
}
