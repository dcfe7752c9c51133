//! A key share of either protocol: [`KeyShare`].
//!
//! The pool layer, the keystore adapter and the node see only this type: which protocol
//! a share belongs to is a value ([`KeyShare::protocol`]), never a type parameter, and no
//! `cggmp21` or `dkls23` type appears in its API. Its sealed bytes
//! ([`KeyShare::to_secret_bytes`]) name the protocol, so a keystore that holds the bytes
//! holds the protocol with them.

use k256::ecdsa::VerifyingKey;
use transport::NodeId;
use zeroize::Zeroizing;

use crate::ecdsa::Curve;
use crate::error::{Result, TssError};
use crate::ethereum::EthAddress;
use crate::ids::{Committee, Generation, KeyId};
use crate::protocol::Protocol;

/// One party's share of a threshold ECDSA key, of one [`Protocol`], ready to sign: for
/// CGGMP21 complete with aux info (Paillier keys), for DKLs23 with its pairwise
/// oblivious-transfer and zero-share state. Secret: Debug shows only public facts, not
/// Clone.
pub struct KeyShare {
    pub(crate) key_id: KeyId,
    pub(crate) generation: Generation,
    pub(crate) committee: Committee,
    pub(crate) local: NodeId,
    pub(crate) secret: ShareSecret,
}

/// The protocol-specific part of a [`KeyShare`].
pub(crate) enum ShareSecret {
    Cggmp21(Box<cggmp21::KeyShare<Curve>>),
    Dkls23(Box<crate::dkls23::Dkls23Secret>),
}

impl std::fmt::Debug for KeyShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyShare")
            .field("protocol", &self.protocol())
            .field("key_id", &self.key_id)
            .field("generation", &self.generation)
            .field("local", &self.local)
            .field("threshold", &self.committee.threshold())
            .field("n", &self.committee.n())
            .field("address", &self.ethereum_address())
            .field("secret", &"[REDACTED]")
            .finish()
    }
}

impl KeyShare {
    /// The protocol this share belongs to.
    pub fn protocol(&self) -> Protocol {
        match self.secret {
            ShareSecret::Cggmp21(_) => Protocol::Cggmp21,
            ShareSecret::Dkls23(_) => Protocol::Dkls23,
        }
    }
    /// The key's name.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }
    /// Which generation of shares this is.
    pub fn generation(&self) -> Generation {
        self.generation
    }
    /// The committee holding the key.
    pub fn committee(&self) -> &Committee {
        &self.committee
    }
    /// The node holding this share.
    pub fn local_node(&self) -> NodeId {
        self.local
    }
    /// The shared public key.
    pub fn public_key(&self) -> VerifyingKey {
        match &self.secret {
            ShareSecret::Cggmp21(inner) => {
                let point = inner.shared_public_key;
                VerifyingKey::from_sec1_bytes(point.to_bytes(false).as_ref())
                    .expect("a non-zero secp256k1 point is a valid public key")
            }
            ShareSecret::Dkls23(secret) => secret.public_key,
        }
    }
    /// The key's Ethereum address.
    pub fn ethereum_address(&self) -> EthAddress {
        EthAddress::from_public_key(&self.public_key())
    }

    /// Serializes the share (secret!) for an encrypted keystore, naming its protocol.
    /// The buffer is wiped on drop.
    pub fn to_secret_bytes(&self) -> Result<Zeroizing<Vec<u8>>> {
        match &self.secret {
            ShareSecret::Cggmp21(inner) => crate::ecdsa::seal_share(self, inner),
            ShareSecret::Dkls23(secret) => crate::dkls23::seal_share(self, secret),
        }
    }

    /// Restores a share from [`KeyShare::to_secret_bytes`] output, of whichever protocol
    /// it names, and checks it against its committee. Shares sealed before protocols
    /// were recorded name none and are CGGMP21's. A protocol this build does not know is
    /// refused ([`TssError::ProtocolMismatch`]).
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self> {
        match crate::protocol::stored_protocol(bytes)? {
            Protocol::Cggmp21 => crate::ecdsa::unseal_share(bytes),
            Protocol::Dkls23 => crate::dkls23::unseal_share(bytes),
        }
    }

    /// Like [`KeyShare::from_secret_bytes`], but a share of any protocol other than
    /// `expected` is refused with [`TssError::ProtocolMismatch`] naming both.
    pub fn from_secret_bytes_of(bytes: &[u8], expected: Protocol) -> Result<Self> {
        crate::protocol::expect_stored_protocol(bytes, expected)?;
        Self::from_secret_bytes(bytes)
    }

    /// This party's Shamir share of the secret key (at the evaluation point of its
    /// committee index + 1, in both protocols), for a reshare's dealing. Wiped on drop.
    pub(crate) fn secret_scalar(&self) -> Result<Zeroizing<cggmp21::generic_ec::Scalar<Curve>>> {
        match &self.secret {
            ShareSecret::Cggmp21(inner) => Ok(Zeroizing::new(*inner.x.as_ref())),
            ShareSecret::Dkls23(secret) => secret.secret_scalar(),
        }
    }

    /// The CGGMP21 share, or [`TssError::Unsupported`] naming `operation` for a share of
    /// another protocol.
    pub(crate) fn cggmp21(&self, operation: &'static str) -> Result<&cggmp21::KeyShare<Curve>> {
        match &self.secret {
            ShareSecret::Cggmp21(inner) => Ok(inner),
            ShareSecret::Dkls23(_) => Err(TssError::Unsupported {
                protocol: Protocol::Dkls23,
                operation,
            }),
        }
    }

    /// The DKLs23 share, or [`TssError::ProtocolMismatch`] for a share of another
    /// protocol.
    pub(crate) fn dkls23(&self) -> Result<&crate::dkls23::Dkls23Secret> {
        match &self.secret {
            ShareSecret::Dkls23(secret) => Ok(secret),
            ShareSecret::Cggmp21(_) => Err(TssError::ProtocolMismatch {
                expected: Protocol::Dkls23,
                found: Protocol::Cggmp21.name().into(),
            }),
        }
    }
}
