//! Types that name things: keys, generations, executions, committees.

use std::fmt;

use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use transport::{NodeId, SessionId};

use crate::error::{ProtocolKind, Result, TssError};

/// Name of a shared key (stable across reshares).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct KeyId(String);

impl KeyId {
    /// A key id: 1 to [`KeyId::MAX_LEN`] characters of `[A-Za-z0-9_.:-]`. The restriction
    /// keeps database keys unambiguous (no `/`) and ids safe to print (key ids are not
    /// secret). Anything else is [`TssError::InvalidKeyId`].
    ///
    /// ```
    /// use tss_core::KeyId;
    /// assert_eq!(KeyId::new("sequencer-mainnet:1").unwrap().as_str(), "sequencer-mainnet:1");
    /// assert!(KeyId::new("has/slash").is_err());
    /// assert!(KeyId::new("").is_err());
    /// ```
    pub fn new(id: impl Into<String>) -> Result<Self> {
        let id = id.into();
        let reason = if id.is_empty() {
            Some("must not be empty")
        } else if id.len() > Self::MAX_LEN {
            Some("is longer than 128 bytes")
        } else if !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
        {
            Some("may only contain [A-Za-z0-9_.:-]")
        } else {
            None
        };
        match reason {
            None => Ok(Self(id)),
            Some(reason) => Err(TssError::InvalidKeyId {
                id: id.chars().take(Self::MAX_LEN).collect(),
                reason,
            }),
        }
    }

    /// Longest key id, in bytes.
    pub const MAX_LEN: usize = 128;

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for KeyId {
    type Err = TssError;
    fn from_str(s: &str) -> Result<Self> {
        KeyId::new(s)
    }
}

impl TryFrom<&str> for KeyId {
    type Error = TssError;
    fn try_from(s: &str) -> Result<Self> {
        KeyId::new(s)
    }
}

impl TryFrom<String> for KeyId {
    type Error = TssError;
    fn try_from(s: String) -> Result<Self> {
        KeyId::new(s)
    }
}

impl<'de> Deserialize<'de> for KeyId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        KeyId::new(s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.0)
    }
}
impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Generation of a key's shares: [`Generation::KEYGEN`] (0) after keygen, higher after
/// each reshare (+1, unless a retry skips generations a failed run left pending). The one generation type of the workspace (the keystore stores shares under it).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
pub struct Generation(pub u64);

impl Generation {
    /// The generation a key has right after keygen.
    pub const KEYGEN: Generation = Generation(0);

    /// The numeric value.
    pub fn get(self) -> u64 {
        self.0
    }

    /// The generation after this one.
    pub fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

impl From<u64> for Generation {
    fn from(g: u64) -> Self {
        Generation(g)
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gen{}", self.0)
    }
}

/// Unique id of one protocol execution, agreed by all its parties and bound into the
/// protocol (it is CGGMP21's execution id and the transport's session id).
///
/// It is a hash of the protocol kind, key id, participants and a fresh 32-byte nonce
/// chosen by the coordinator, so two runs never share one; each node additionally refuses
/// to open a session id twice (see [`transport::TransportError::SessionReused`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ExecutionId([u8; 32]);

impl ExecutionId {
    /// Derives the id from the run's parameters and the coordinator's nonce.
    pub fn derive(
        protocol: ProtocolKind,
        key_id: &KeyId,
        participants: &[NodeId],
        nonce: &[u8; 32],
    ) -> Self {
        let mut h = Sha256::new();
        h.update(b"tss-core/execution-id/v1");
        h.update(protocol.to_string().as_bytes());
        h.update([0]);
        h.update((key_id.as_str().len() as u32).to_be_bytes());
        h.update(key_id.as_str().as_bytes());
        h.update((participants.len() as u32).to_be_bytes());
        for p in participants {
            h.update(p.as_bytes());
        }
        h.update(nonce);
        Self(h.finalize().into())
    }

    /// A fresh id with a random nonce (what a coordinator proposes).
    pub fn random<R: RngCore + CryptoRng>(
        protocol: ProtocolKind,
        key_id: &KeyId,
        participants: &[NodeId],
        rng: &mut R,
    ) -> Self {
        let mut nonce = [0u8; 32];
        rng.fill_bytes(&mut nonce);
        Self::derive(protocol, key_id, participants, &nonce)
    }

    /// Id of a sub-protocol of this execution (e.g. the aux-info stage of a keygen).
    pub fn sub(&self, label: &str) -> Self {
        let mut h = Sha256::new();
        h.update(b"tss-core/sub-execution/v1");
        h.update(self.0);
        h.update(label.as_bytes());
        Self(h.finalize().into())
    }

    /// Wraps raw bytes (as received from a coordinator).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The transport session carrying this execution.
    pub fn session_id(&self) -> SessionId {
        SessionId::from_bytes(self.0)
    }
}

impl fmt::Debug for ExecutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ExecutionId({})", &hex::encode(self.0)[..16])
    }
}
impl fmt::Display for ExecutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0)[..16])
    }
}

/// The parties holding a key and how many of them must sign.
///
/// A member's party index is its position in `members`; every member must use the same
/// order. Deserializing checks the same rules as [`Committee::new`]: a committee read
/// from a peer or a file is never malformed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "CommitteeFields")]
pub struct Committee {
    members: Vec<NodeId>,
    threshold: u16,
}

#[derive(Deserialize)]
struct CommitteeFields {
    members: Vec<NodeId>,
    threshold: u16,
}

impl TryFrom<CommitteeFields> for Committee {
    type Error = TssError;
    fn try_from(f: CommitteeFields) -> Result<Self> {
        Committee::new(f.members, f.threshold)
    }
}

impl Committee {
    /// A committee of `members` where `threshold` of them sign. Needs 2 ≤ threshold ≤ n,
    /// distinct members and n ≤ 1000.
    pub fn new(members: Vec<NodeId>, threshold: u16) -> Result<Self> {
        let n = members.len();
        if !(2..=1000).contains(&n) {
            return Err(TssError::InvalidParticipants(format!(
                "a committee needs 2 to 1000 members, got {n}"
            )));
        }
        let mut sorted = members.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != n {
            return Err(TssError::InvalidParticipants(
                "committee members must be distinct".into(),
            ));
        }
        if threshold < 2 || usize::from(threshold) > n {
            return Err(TssError::InvalidParticipants(format!(
                "threshold must be between 2 and {n}, got {threshold}"
            )));
        }
        Ok(Self { members, threshold })
    }

    /// A committee whose threshold is the smallest number greater than two thirds of its
    /// members (`floor(2n/3) + 1`), as a sequencer pool requires.
    ///
    /// The key keeps working, for signing and for resharing, while at most `n - t`
    /// members are lost: 0 at `n` = 2 or 3, 1 at `n` = 4 to 6, 2 at `n` = 7 to 9, 3 at
    /// `n = 10`.
    ///
    /// # Warning: do not use fewer than 4 members
    ///
    /// At `n = 3` the threshold is 3 (3-of-3): the loss of **any one** member (a destroyed
    /// keystore, an operator gone for good) makes the key unusable, and it can no longer
    /// be reshared either, since resharing needs `t` of the old shares. Use `n >= 4`
    /// (3-of-4 survives one loss); node-shell's pools refuse fewer than 4 members unless
    /// configured otherwise.
    ///
    /// When more than `n - t` members are lost, the key cannot sign or reshare and cannot
    /// be recovered from the remaining shares. Recovery is a **new keygen** among the
    /// remaining and replacement members, which gives a **new public key and a new
    /// Ethereum address**; the rollup's L1 admin must register that address in place of
    /// the old one. The old shares are then worthless and should be deleted.
    ///
    /// ```
    /// # use tss_core::{transport::NodeId, Committee};
    /// let ids = |n: u8| (1..=n).map(|i| NodeId::from_bytes([i; 32])).collect::<Vec<_>>();
    /// let three = Committee::two_thirds(ids(3)).unwrap();
    /// assert_eq!((three.threshold(), three.n()), (3, 3)); // no member may be lost
    /// let four = Committee::two_thirds(ids(4)).unwrap();
    /// assert_eq!((four.threshold(), four.n()), (3, 4)); // one member may be lost
    /// ```
    pub fn two_thirds(members: Vec<NodeId>) -> Result<Self> {
        let t = (2 * members.len() / 3 + 1) as u16;
        Self::new(members, t)
    }

    /// Members in index order.
    pub fn members(&self) -> &[NodeId] {
        &self.members
    }
    /// Number of members.
    pub fn n(&self) -> u16 {
        self.members.len() as u16
    }
    /// Number of signers needed.
    pub fn threshold(&self) -> u16 {
        self.threshold
    }
    /// Party index of `node`, if a member.
    pub fn index_of(&self, node: &NodeId) -> Option<u16> {
        self.members
            .iter()
            .position(|m| m == node)
            .map(|i| i as u16)
    }
    /// Party index of `node`, or an error naming it.
    pub fn require_index(&self, node: &NodeId) -> Result<u16> {
        self.index_of(node)
            .ok_or(TssError::NotACommitteeMember(*node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committee_json_has_hex_members_and_reads_the_legacy_form() {
        let committee = Committee::new(
            vec![NodeId::from_bytes([1; 32]), NodeId::from_bytes([2; 32])],
            2,
        )
        .unwrap();
        let json = serde_json::to_value(&committee).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"members": ["01".repeat(32), "02".repeat(32)], "threshold": 2})
        );
        assert_eq!(
            serde_json::from_value::<Committee>(json).unwrap(),
            committee
        );
        // Key shares stored before node ids were hex hold arrays of 32 numbers.
        let legacy = format!(
            r#"{{"members": [{:?}, {:?}], "threshold": 2}}"#,
            [1u8; 32], [2u8; 32]
        );
        assert_eq!(
            serde_json::from_str::<Committee>(&legacy).unwrap(),
            committee
        );
    }
}
