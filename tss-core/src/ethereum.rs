//! Ethereum view of a key and its signatures: address, (r, s, v) with low s.

use std::fmt;

use k256::ecdsa::{RecoveryId, Signature as K256Signature, VerifyingKey};
use k256::elliptic_curve::ops::{LinearCombination, Reduce};
use k256::elliptic_curve::sec1::ToEncodedPoint;
use k256::{ProjectivePoint, Scalar, U256};
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

    /// The address of a SEC1-encoded secp256k1 public key (compressed, 33 bytes, as in
    /// [`crate::PublicKeyInfo::public_key`], or uncompressed).
    pub fn from_sec1_bytes(bytes: &[u8]) -> Result<Self> {
        let key = VerifyingKey::from_sec1_bytes(bytes).map_err(|_| TssError::Decode {
            what: "public key",
            reason: "not a SEC1 secp256k1 point".into(),
        })?;
        Ok(Self::from_public_key(&key))
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
///
/// `v` is always 0 or 1 in this library (never 27/28, never an EIP-155 value): it is the
/// `y_parity` of typed transactions and of alloy's `Signature` (feature `alloy`:
/// `From<EthSignature> for alloy_primitives::Signature`); [`EthSignature::to_bytes`]
/// adds 27 for `ecrecover`-style 65-byte signatures.
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
        // ECDSA verification computes the nonce point R = (z·G + r·X) / s and accepts iff
        // R.x ≡ r; R's y parity is then the recovery id. One double-scalar multiplication
        // instead of a trial recovery per candidate id (each of which also re-verifies).
        let z = <Scalar as Reduce<U256>>::reduce_bytes(&(*digest).into());
        let s_inv = Option::<Scalar>::from(sig.s().invert()).ok_or(TssError::InvalidSignature)?;
        let nonce_point = ProjectivePoint::lincomb(
            &ProjectivePoint::GENERATOR,
            &(z * s_inv),
            &ProjectivePoint::from(*key.as_affine()),
            &(*sig.r() * s_inv),
        )
        .to_affine()
        .to_encoded_point(true);
        let encoded = nonce_point.as_bytes();
        // `R.x ≥ n` (r = R.x − n, probability ~2^-128) has no Ethereum `v`: rejected too.
        if encoded.len() != 33 || encoded[1..] != r {
            return Err(TssError::InvalidSignature);
        }
        let y_odd = encoded[0] == 0x03;
        // (r, −s) belongs to the nonce point −R, whose y parity is the opposite.
        let (sig, negated) = match sig.normalize_s() {
            Some(low) => (low, true),
            None => (sig, false),
        };
        let (r, s) = sig.split_bytes();
        Ok(Self {
            r: r.into(),
            s: s.into(),
            v: u8::from(y_odd ^ negated),
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use k256::ecdsa::SigningKey;

    /// A k256 signature over `digest` (low s) with its recovery id.
    fn signed(digest: &[u8; 32]) -> (VerifyingKey, [u8; 32], [u8; 32], u8) {
        let key = SigningKey::random(&mut rand::thread_rng());
        let (sig, recid) = key.sign_prehash_recoverable(digest).unwrap();
        assert!(sig.normalize_s().is_none(), "k256 signs low-s");
        let (r, s) = sig.split_bytes();
        (*key.verifying_key(), r.into(), s.into(), recid.to_byte())
    }

    fn negate(s: [u8; 32]) -> [u8; 32] {
        let sig = K256Signature::from_scalars([1u8; 32], s).unwrap();
        (-*sig.s()).to_bytes().into()
    }

    #[test]
    fn v_is_the_recovery_id_and_recovers_the_signers_address() {
        let mut seen = [false; 2];
        for i in 0..32u8 {
            let digest = keccak256(&[i]);
            let (key, r, s, v) = signed(&digest);
            let sig = EthSignature::from_rs(r, s, &digest, &key).expect("valid signature");
            assert_eq!((sig.r, sig.s, sig.v), (r, s, v));
            assert_eq!(
                sig.recover_address(&digest).unwrap(),
                EthAddress::from_public_key(&key)
            );
            let address = EthAddress::from_public_key(&key);
            assert_eq!(
                EthAddress::from_sec1_bytes(&key.to_sec1_bytes()).unwrap(),
                address
            );
            let uncompressed = key.to_encoded_point(false);
            assert_eq!(
                EthAddress::from_sec1_bytes(uncompressed.as_bytes()).unwrap(),
                address
            );
            seen[usize::from(v)] = true;
        }
        assert_eq!(seen, [true, true], "both recovery ids were exercised");
    }

    #[test]
    fn a_public_key_that_is_not_a_point_has_no_address() {
        assert!(EthAddress::from_sec1_bytes(&[]).is_err());
        assert!(EthAddress::from_sec1_bytes(&[5u8; 33]).is_err());
    }

    #[test]
    fn high_s_is_normalised_and_v_still_recovers_the_key() {
        for i in 0..8u8 {
            let digest = keccak256(&[b'h', i]);
            let (key, r, s, v) = signed(&digest);
            let sig = EthSignature::from_rs(r, negate(s), &digest, &key).expect("valid signature");
            assert_eq!((sig.r, sig.s, sig.v), (r, s, v));
        }
    }

    #[test]
    fn signatures_that_do_not_verify_are_rejected() {
        let digest = keccak256(b"other key");
        let (key, r, s, _) = signed(&digest);
        let (other, ..) = signed(&digest);
        assert!(matches!(
            EthSignature::from_rs(r, s, &digest, &other),
            Err(TssError::InvalidSignature)
        ));
        assert!(matches!(
            EthSignature::from_rs(r, s, &keccak256(b"another digest"), &key),
            Err(TssError::InvalidSignature)
        ));
        assert!(matches!(
            EthSignature::from_rs(r, [0u8; 32], &digest, &key),
            Err(TssError::InvalidSignature)
        ));
    }
}
