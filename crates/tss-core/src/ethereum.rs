//! Ethereum view of a key and its signatures: address, (r, s, v) with low s.

use std::fmt;

use k256::ecdsa::{RecoveryId, Signature as K256Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha3::{Digest, Keccak256};

use crate::error::{Result, TssError};

/// A 20-byte Ethereum address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EthAddress(pub [u8; 20]);

impl EthAddress {
    /// The address of a secp256k1 public key: last 20 bytes of keccak256 of the
    /// uncompressed point without its 0x04 prefix.
    pub fn from_public_key(key: &VerifyingKey) -> Self {
        let point = key.to_encoded_point(false);
        let hash = Keccak256::digest(&point.as_bytes()[1..]);
        let mut out = [0u8; 20];
        out.copy_from_slice(&hash[12..]);
        Self(out)
    }

    /// EIP-55 mixed-case checksummed hex, with `0x`.
    pub fn to_checksum_string(&self) -> String {
        let lower = hex::encode(self.0);
        let hash = Keccak256::digest(lower.as_bytes());
        let mut out = String::from("0x");
        for (i, c) in lower.chars().enumerate() {
            let nibble = (hash[i / 2] >> (if i % 2 == 0 { 4 } else { 0 })) & 0x0f;
            if c.is_ascii_alphabetic() && nibble >= 8 {
                out.push(c.to_ascii_uppercase());
            } else {
                out.push(c);
            }
        }
        out
    }
}

impl fmt::Display for EthAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_checksum_string())
    }
}
impl fmt::Debug for EthAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EthAddress({self})")
    }
}

/// An ECDSA signature in Ethereum form: `s` is in the lower half of the curve order and
/// `v` (0 or 1) is the recovery id; `v + 27` is the legacy encoding.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub struct EthSignature {
    /// `r`, big-endian.
    pub r: [u8; 32],
    /// `s`, big-endian, low-s.
    pub s: [u8; 32],
    /// Recovery id (0 or 1).
    pub v: u8,
}

impl EthSignature {
    /// Builds the Ethereum form of `(r, s)` over `digest` for `key`: normalises `s` and
    /// finds the recovery id. Fails if the signature does not verify.
    pub fn from_rs(
        r: [u8; 32],
        s: [u8; 32],
        digest: &[u8; 32],
        key: &VerifyingKey,
    ) -> Result<Self> {
        let sig = K256Signature::from_scalars(r, s).map_err(|_| TssError::InvalidSignature)?;
        let sig = sig.normalize_s().unwrap_or(sig);
        for v in 0..2u8 {
            let recid = RecoveryId::from_byte(v).ok_or(TssError::InvalidSignature)?;
            if let Ok(recovered) = VerifyingKey::recover_from_prehash(digest, &sig, recid) {
                if &recovered == key {
                    let (r, s) = sig.split_bytes();
                    return Ok(Self {
                        r: r.into(),
                        s: s.into(),
                        v,
                    });
                }
            }
        }
        Err(TssError::InvalidSignature)
    }

    /// 65 bytes `r || s || (v + 27)`, as `ecrecover` and most tooling expect.
    pub fn to_bytes(&self) -> [u8; 65] {
        let mut out = [0u8; 65];
        out[..32].copy_from_slice(&self.r);
        out[32..64].copy_from_slice(&self.s);
        out[64] = self.v + 27;
        out
    }

    /// Recovers the signer's address from `digest` (what an L1 contract's `ecrecover`
    /// does).
    pub fn recover_address(&self, digest: &[u8; 32]) -> Result<EthAddress> {
        let sig =
            K256Signature::from_scalars(self.r, self.s).map_err(|_| TssError::InvalidSignature)?;
        let recid = RecoveryId::from_byte(self.v).ok_or(TssError::InvalidSignature)?;
        let key = VerifyingKey::recover_from_prehash(digest, &sig, recid)
            .map_err(|_| TssError::InvalidSignature)?;
        Ok(EthAddress::from_public_key(&key))
    }
}

/// keccak256 of `data` (how L2 batch digests are made).
pub fn keccak256(data: &[u8]) -> [u8; 32] {
    Keccak256::digest(data).into()
}
