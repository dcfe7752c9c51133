//! Signatures under a node's transport identity.
//!
//! A [`NodeId`] is the ed25519 public key the transport authenticates (libp2p: the noise
//! handshake's key; in memory: the endpoint's id). What a node signs with the matching
//! secret key can be checked by anyone who knows only its `NodeId`, and passed on: a
//! reshare certificate ([`crate::reshare::ReshareCertificate`]) is such a set of
//! signatures, and a member that missed the end of a reshare can take it from any peer.
//!
//! [`IdentitySigner`] is the seam: `transport::Libp2pIdentity` implements it (the same key
//! as the node's libp2p identity), [`Ed25519Signer`] is a plain ed25519 key for in-memory
//! transports and tests. [`verify_identity_signature`] checks a signature against a
//! `NodeId`.

use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use transport::NodeId;

/// Signs with the secret key of a node's transport identity.
pub trait IdentitySigner: Send + Sync + 'static {
    /// The node id: the ed25519 public key matching the secret key.
    fn node_id(&self) -> NodeId;

    /// An ed25519 signature of `message`.
    fn sign(&self, message: &[u8]) -> IdentitySignature;
}

/// An ed25519 signature (64 bytes when well-formed; anything else never verifies).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentitySignature(Vec<u8>);

impl IdentitySignature {
    /// Wraps signature bytes (not checked: [`verify_identity_signature`] does).
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for IdentitySignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex = hex::encode(&self.0);
        write!(f, "IdentitySignature({})", &hex[..hex.len().min(16)])
    }
}

/// Whether `signature` is `node`'s ed25519 signature of `message` (strict verification:
/// non-canonical encodings and small-order keys are refused).
pub fn verify_identity_signature(
    node: &NodeId,
    message: &[u8],
    signature: &IdentitySignature,
) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(node.as_bytes()) else {
        return false;
    };
    let Ok(bytes) = <[u8; 64]>::try_from(signature.as_bytes()) else {
        return false;
    };
    let signature = ed25519_dalek::Signature::from_bytes(&bytes);
    key.verify_strict(message, &signature).is_ok() && key.verify(message, &signature).is_ok()
}

/// A plain ed25519 identity key: for in-memory transports, tests and embedders that keep
/// the identity key themselves. Its `Debug` shows only the node id; the secret is zeroized
/// on drop.
pub struct Ed25519Signer {
    key: SigningKey,
}

impl Ed25519Signer {
    /// The key whose 32-byte secret (seed) is `seed`; the same seed as
    /// `transport::Libp2pIdentity::from_seed` gives the same node id.
    pub fn from_seed(mut seed: [u8; 32]) -> Self {
        use zeroize::Zeroize;
        let key = SigningKey::from_bytes(&seed);
        seed.zeroize();
        Self { key }
    }

    /// The node id (the public key); also [`IdentitySigner::node_id`].
    pub fn node_id(&self) -> NodeId {
        NodeId::from_bytes(self.key.verifying_key().to_bytes())
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        use rand_core::RngCore;
        let mut seed = zeroize::Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(seed.as_mut());
        Self::from_seed(*seed)
    }
}

impl std::fmt::Debug for Ed25519Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ed25519Signer")
            .field("node", &self.node_id())
            .finish_non_exhaustive()
    }
}

impl IdentitySigner for Ed25519Signer {
    fn node_id(&self) -> NodeId {
        Ed25519Signer::node_id(self)
    }

    fn sign(&self, message: &[u8]) -> IdentitySignature {
        IdentitySignature(self.key.sign(message).to_bytes().to_vec())
    }
}

impl IdentitySigner for transport::Libp2pIdentity {
    fn node_id(&self) -> NodeId {
        transport::Libp2pIdentity::node_id(self)
    }

    fn sign(&self, message: &[u8]) -> IdentitySignature {
        IdentitySignature(transport::Libp2pIdentity::sign(self, message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_for_their_node_and_message() {
        let a = Ed25519Signer::from_seed([1; 32]);
        let b = Ed25519Signer::from_seed([2; 32]);
        let sig = a.sign(b"statement");
        assert!(verify_identity_signature(&a.node_id(), b"statement", &sig));
        assert!(!verify_identity_signature(&a.node_id(), b"other", &sig));
        assert!(!verify_identity_signature(&b.node_id(), b"statement", &sig));
        assert!(!verify_identity_signature(
            &a.node_id(),
            b"statement",
            &IdentitySignature::from_bytes(vec![0; 10])
        ));
    }

    #[test]
    fn libp2p_identity_and_plain_key_agree() {
        let seed = [7; 32];
        let p2p = transport::Libp2pIdentity::from_seed(seed).unwrap();
        let plain = Ed25519Signer::from_seed(seed);
        assert_eq!(IdentitySigner::node_id(&p2p), plain.node_id());
        let sig = IdentitySigner::sign(&p2p, b"m");
        assert!(verify_identity_signature(&plain.node_id(), b"m", &sig));
    }
}
