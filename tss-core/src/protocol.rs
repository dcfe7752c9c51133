//! Which threshold-ECDSA protocol a key belongs to.
//!
//! Every [`crate::KeyShare`] carries its [`Protocol`]; its sealed bytes
//! ([`crate::KeyShare::to_secret_bytes`]) record it, so a keystore holds it with the share.
//! Decoding a share as one protocol's refuses another's with
//! [`crate::TssError::ProtocolMismatch`], naming both.
//!
//! Two protocols: [`Protocol::Cggmp21`] (the pool layer's, `crate::ecdsa`) and
//! [`Protocol::Dkls23`] (keygen and full signing in `crate::dkls23`; not yet driven by the
//! pool layer). A name this build does not implement is refused with [`UnknownProtocol`],
//! which names the ones it has.
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

/// Checks the `protocol` field of a sealed share before it is decoded as `expected`'s.
/// Shares sealed before protocols were recorded have none: they are CGGMP21's.
pub(crate) fn expect_stored_protocol(bytes: &[u8], expected: Protocol) -> crate::Result<()> {
    #[derive(Deserialize)]
    struct Header {
        #[serde(default)]
        protocol: Option<String>,
    }
    let header: Header = serde_json::from_slice(bytes).map_err(|e| crate::TssError::Decode {
        what: "key share",
        reason: e.to_string(),
    })?;
    let found = header
        .protocol
        .unwrap_or_else(|| Protocol::Cggmp21.name().to_owned());
    if found != expected.name() {
        return Err(crate::TssError::ProtocolMismatch {
            expected,
            found: found.chars().take(64).collect(),
        });
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
