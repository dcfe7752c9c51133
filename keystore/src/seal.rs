//! AES-256-GCM sealing of individual records.
//!
//! Sealed layout: `version (1 byte) | nonce (12 random bytes) | ciphertext+tag`.
//! The associated data binds the record to its exact place in the store
//! (see [`Ad`]), so a record copied under another key id, generation or name
//! fails authentication; active pointers and state records are also bound to their
//! version (stored in clear in front of the sealed bytes, authenticated through the
//! associated data).

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

use crate::secret::{MasterKey, SecretBytes};
use crate::types::{Generation, KeyId, RecordName};

pub(crate) const RECORD_VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const DOMAIN: &[u8] = b"mpc-keystore/v1\0";

/// What a sealed value is bound to.
pub(crate) enum Ad<'a> {
    /// The key-check value, bound to the metadata header.
    KeyCheck(&'a [u8]),
    /// A key's active-generation pointer, at a version (see "Rollback" in the crate docs).
    Active(&'a KeyId, u64),
    /// A generation's manifest (list of record names).
    Manifest(&'a KeyId, Generation),
    /// One named secret record.
    Record(&'a KeyId, Generation, &'a RecordName),
    /// One named attachment of a generation, written after it (see
    /// `Keystore::put_attachment`).
    Attachment(&'a KeyId, Generation, &'a RecordName),
    /// A key's state record (the embedder's bytes committed with the active generation),
    /// at a version: the same as the pointer committed with it.
    State(&'a KeyId, u64),
    /// The store's high-water-mark file (`KEYSTORE.VERSIONS`).
    HighWaterMarks,
    /// One recorded execution id, at its sequence number.
    Execution(u64),
}

impl Ad<'_> {
    fn encode(&self) -> Vec<u8> {
        fn field(out: &mut Vec<u8>, b: &[u8]) {
            out.extend_from_slice(&(b.len() as u32).to_be_bytes());
            out.extend_from_slice(b);
        }
        let mut out = DOMAIN.to_vec();
        match self {
            Ad::KeyCheck(header) => {
                out.push(b'C');
                field(&mut out, header);
            }
            Ad::Active(id, version) => {
                out.push(b'A');
                field(&mut out, id.as_str().as_bytes());
                out.extend_from_slice(&version.to_be_bytes());
            }
            Ad::Manifest(id, g) => {
                out.push(b'M');
                field(&mut out, id.as_str().as_bytes());
                out.extend_from_slice(&g.0.to_be_bytes());
            }
            Ad::Record(id, g, name) => {
                out.push(b'R');
                field(&mut out, id.as_str().as_bytes());
                out.extend_from_slice(&g.0.to_be_bytes());
                field(&mut out, name.as_str().as_bytes());
            }
            Ad::Attachment(id, g, name) => {
                out.push(b'X');
                field(&mut out, id.as_str().as_bytes());
                out.extend_from_slice(&g.0.to_be_bytes());
                field(&mut out, name.as_str().as_bytes());
            }
            Ad::State(id, version) => {
                out.push(b'S');
                field(&mut out, id.as_str().as_bytes());
                out.extend_from_slice(&version.to_be_bytes());
            }
            Ad::HighWaterMarks => out.push(b'H'),
            Ad::Execution(seq) => {
                out.push(b'E');
                out.extend_from_slice(&seq.to_be_bytes());
            }
        }
        out
    }
}

fn cipher(key: &MasterKey) -> Aes256Gcm {
    Aes256Gcm::new((&key.0).into())
}

/// Encrypts `plaintext` under a fresh random nonce.
pub(crate) fn seal(key: &MasterKey, ad: &Ad<'_>, plaintext: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    // Reserve room for the tag up front so the buffer holding plaintext is
    // never reallocated (which would leave an unzeroized copy behind).
    let mut buf = Zeroizing::new(Vec::with_capacity(plaintext.len() + TAG_LEN));
    buf.extend_from_slice(plaintext);
    cipher(key)
        .encrypt_in_place(&Nonce::from(nonce), &ad.encode(), &mut *buf)
        .expect("AES-GCM encryption of an in-memory buffer cannot fail");
    let mut out = Vec::with_capacity(1 + NONCE_LEN + buf.len());
    out.push(RECORD_VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&buf);
    out
}

/// Decrypts and authenticates a sealed value. `None` means it is malformed,
/// of an unknown version, or fails authentication (wrong key, modified bytes,
/// or bound to another place).
pub(crate) fn open(key: &MasterKey, ad: &Ad<'_>, sealed: &[u8]) -> Option<SecretBytes> {
    if sealed.len() < 1 + NONCE_LEN + TAG_LEN || sealed[0] != RECORD_VERSION {
        return None;
    }
    let (nonce, ct) = sealed[1..].split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
    let mut buf = Zeroizing::new(ct.to_vec());
    cipher(key)
        .decrypt_in_place(&Nonce::from(nonce), &ad.encode(), &mut *buf)
        .ok()?;
    Some(SecretBytes::from(buf))
}
