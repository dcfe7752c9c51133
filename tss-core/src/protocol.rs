//! Which threshold-ECDSA protocol a key belongs to.
//!
//! Every [`crate::KeyShare`] carries its [`Protocol`]; its sealed bytes
//! ([`crate::KeyShare::to_secret_bytes`]) record it, so a keystore holds it with the share.
//! Decoding a share as one protocol's refuses another's with
//! [`crate::TssError::ProtocolMismatch`], naming both.
//!
//! Two protocols: [`Protocol::Cggmp21`] (the default, `crate::ecdsa`) and
//! [`Protocol::Dkls23`] (`crate::dkls23`), each behind the [`ThresholdProtocol`] trait.
//! A name this build does not implement is refused with [`UnknownProtocol`], which names
//! the ones it has.
//!
//! ```
//! use tss_core::Protocol;
//!
//! let protocol: Protocol = "dkls23".parse().unwrap();
//! assert_eq!(protocol, Protocol::Dkls23);
//! assert_eq!(protocol.to_string(), "dkls23");
//! let unknown = "gg18".parse::<Protocol>().unwrap_err();
//! assert_eq!(unknown.name, "gg18");
//! ```

use serde::{Deserialize, Serialize};
use transport::NodeId;

use crate::ethereum::EthSignature;
use crate::ids::{Committee, ExecutionId, KeyId};
use crate::{KeyShare, PaillierPrimes, Result, TssError, TssNode};

/// A threshold-ECDSA protocol on secp256k1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Protocol {
    /// CGGMP21 (the `cggmp21` crate): keygen plus aux-info (Paillier keys with their
    /// ZK proofs), presignatures with one-round online signing, identifiable abort.
    #[default]
    Cggmp21,
    /// DKLs23 (the `dkls23` crate): OT-based, no Paillier keys, full signing in three
    /// rounds with exactly the threshold, no presignatures. Not audited.
    Dkls23,
}

impl Protocol {
    /// Every protocol this build implements.
    pub const ALL: &'static [Protocol] = &[Protocol::Cggmp21, Protocol::Dkls23];

    /// The protocol's name, as in configuration files and sealed shares.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Cggmp21 => "cggmp21",
            Protocol::Dkls23 => "dkls23",
        }
    }
}

impl Protocol {
    /// This protocol's implementation, behind the [`ThresholdProtocol`] seam.
    pub fn implementation(self) -> &'static dyn ThresholdProtocol {
        match self {
            Protocol::Cggmp21 => &Cggmp21,
            Protocol::Dkls23 => &Dkls23,
        }
    }
}

/// What a threshold-ECDSA protocol gives the rest of the crate: the pool layer, the node
/// and the benches call these (through [`Protocol::implementation`], or
/// [`TssNode::generate_key`] and [`TssNode::sign`], which dispatch on the protocol or the
/// share), and see only protocol-neutral types ([`KeyShare`], [`EthSignature`]).
///
/// Signing takes exactly the committee's threshold of signers with both protocols.
/// Resharing deals Shamir shares of the same secret to the new committee with the
/// crate's own Feldman rounds ([`TssNode::reshare`]); what a new member then runs to make
/// its share usable is the protocol's (CGGMP21: aux-info).
#[async_trait::async_trait]
pub trait ThresholdProtocol: Send + Sync {
    /// Which protocol this is.
    fn protocol(&self) -> Protocol;
    /// Whether keygen and resharing need Paillier primes (from a
    /// [`PrimeSource`](crate::pool::PrimeSource)).
    fn needs_paillier_primes(&self) -> bool;
    /// Whether the protocol has presignatures ([`TssNode::presign`] and one-round
    /// online signing).
    fn has_presignatures(&self) -> bool;
    /// Whether this build can reshare keys of this protocol to a new committee.
    fn can_reshare(&self) -> bool;
    /// Distributed key generation (see [`TssNode::generate_key`]).
    async fn keygen(
        &self,
        node: &TssNode,
        key_id: KeyId,
        committee: Committee,
        eid: ExecutionId,
        primes: Option<PaillierPrimes>,
    ) -> Result<KeyShare>;
    /// Full interactive signing of `digest` (see [`TssNode::sign`]).
    async fn sign(
        &self,
        node: &TssNode,
        share: &KeyShare,
        signers: &[NodeId],
        digest: [u8; 32],
        eid: ExecutionId,
    ) -> Result<EthSignature>;
}

/// CGGMP21 behind [`ThresholdProtocol`] (`crate::ecdsa`).
#[derive(Clone, Copy, Debug)]
pub struct Cggmp21;

/// DKLs23 behind [`ThresholdProtocol`] (`crate::dkls23`).
#[derive(Clone, Copy, Debug)]
pub struct Dkls23;

#[async_trait::async_trait]
impl ThresholdProtocol for Cggmp21 {
    fn protocol(&self) -> Protocol {
        Protocol::Cggmp21
    }
    fn needs_paillier_primes(&self) -> bool {
        true
    }
    fn has_presignatures(&self) -> bool {
        true
    }
    fn can_reshare(&self) -> bool {
        true
    }
    async fn keygen(
        &self,
        node: &TssNode,
        key_id: KeyId,
        committee: Committee,
        eid: ExecutionId,
        primes: Option<PaillierPrimes>,
    ) -> Result<KeyShare> {
        let primes = primes.ok_or_else(|| {
            TssError::InvalidKeyShare("a CGGMP21 keygen needs Paillier primes".into())
        })?;
        Box::pin(node.keygen(key_id, committee, eid, primes)).await
    }
    async fn sign(
        &self,
        node: &TssNode,
        share: &KeyShare,
        signers: &[NodeId],
        digest: [u8; 32],
        eid: ExecutionId,
    ) -> Result<EthSignature> {
        Box::pin(node.cggmp21_sign(share, signers, digest, eid)).await
    }
}

#[async_trait::async_trait]
impl ThresholdProtocol for Dkls23 {
    fn protocol(&self) -> Protocol {
        Protocol::Dkls23
    }
    fn needs_paillier_primes(&self) -> bool {
        false
    }
    fn has_presignatures(&self) -> bool {
        false
    }
    fn can_reshare(&self) -> bool {
        true
    }
    async fn keygen(
        &self,
        node: &TssNode,
        key_id: KeyId,
        committee: Committee,
        eid: ExecutionId,
        _primes: Option<PaillierPrimes>,
    ) -> Result<KeyShare> {
        Box::pin(node.dkls23_keygen(key_id, committee, eid)).await
    }
    async fn sign(
        &self,
        node: &TssNode,
        share: &KeyShare,
        signers: &[NodeId],
        digest: [u8; 32],
        eid: ExecutionId,
    ) -> Result<EthSignature> {
        Box::pin(node.dkls23_sign(share, signers, digest, eid)).await
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A protocol name this build does not implement.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown threshold protocol {name:?}: this build implements {}",
    known_names()
)]
pub struct UnknownProtocol {
    /// The name that was given.
    pub name: String,
}

fn known_names() -> String {
    Protocol::ALL
        .iter()
        .map(|p| p.name())
        .collect::<Vec<_>>()
        .join(", ")
}

impl std::str::FromStr for Protocol {
    type Err = UnknownProtocol;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Protocol::ALL
            .iter()
            .copied()
            .find(|p| p.name() == name)
            .ok_or_else(|| UnknownProtocol {
                name: name.chars().take(64).collect(),
            })
    }
}

/// The name in the `protocol` field of a sealed share. Shares sealed before protocols
/// were recorded have none: they are CGGMP21's.
fn stored_protocol_name(bytes: &[u8]) -> crate::Result<String> {
    #[derive(Deserialize)]
    struct Header {
        #[serde(default)]
        protocol: Option<String>,
    }
    let header: Header = serde_json::from_slice(bytes).map_err(|e| crate::TssError::Decode {
        what: "key share",
        reason: e.to_string(),
    })?;
    Ok(header
        .protocol
        .map(|name| name.chars().take(64).collect())
        .unwrap_or_else(|| Protocol::Cggmp21.name().to_owned()))
}

/// The protocol a sealed share names; one this build does not implement is refused
/// (as a mismatch with the default protocol, naming what the share says).
pub(crate) fn stored_protocol(bytes: &[u8]) -> crate::Result<Protocol> {
    let found = stored_protocol_name(bytes)?;
    found
        .parse()
        .map_err(|_| crate::TssError::ProtocolMismatch {
            expected: Protocol::default(),
            found,
        })
}

/// Checks the `protocol` field of a sealed share before it is decoded as `expected`'s.
pub(crate) fn expect_stored_protocol(bytes: &[u8], expected: Protocol) -> crate::Result<()> {
    let found = stored_protocol_name(bytes)?;
    if found != expected.name() {
        return Err(crate::TssError::ProtocolMismatch { expected, found });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_protocol_parses_back_from_its_name_and_serde_uses_the_same_name() {
        for &p in Protocol::ALL {
            assert_eq!(p.name().parse::<Protocol>(), Ok(p));
            assert_eq!(
                serde_json::to_string(&p).unwrap(),
                format!("\"{}\"", p.name())
            );
        }
    }

    #[test]
    fn a_name_this_build_does_not_implement_is_refused_naming_the_known_ones() {
        let err = "gg18".parse::<Protocol>().unwrap_err();
        assert_eq!(err.name, "gg18");
        assert!(err.to_string().contains("cggmp21, dkls23"), "{err}");
        assert!("CGGMP21".parse::<Protocol>().is_err());
        assert!(serde_json::from_str::<Protocol>("\"gg18\"").is_err());
    }
}
