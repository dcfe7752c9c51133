//! Structure-aware edits of protocol messages, chosen by the fuzzer (`arbitrary`).
//!
//! A message is decoded as its type, turned into its field tree ([`crate::tree`]), edited
//! at one node (a field, a vector, a big integer's bytes, an enum tag …), and encoded
//! again: the result is a message that is well-formed up to the edit, so decoding gets
//! past the layout and the protocol's own checks (proofs, commitments, ranges) see it.

use arbitrary::Arbitrary;
use cggmp21::generic_ec::{Point, Scalar};
use cggmp21::security_level::SecurityLevel128;
use cggmp21::supported_curves::Secp256k1;
use serde::{de::DeserializeOwned, Serialize};
use sha2::Sha256;
use transport::NodeId;
use tss_core::pool::{
    ControlMsg, KeygenProposal, PresignProposal, Proposal, ReshareProposal, SignProposal,
};
use tss_core::reshare::ReshareMsg;
use tss_core::wire::{decode_message, encode_message, WireError};
use tss_core::{Committee, ExecutionId, Generation, KeyId, PublicKeyInfo};

use crate::tree::{to_tree, Node};

/// cggmp21's keygen message.
pub type KeygenMsg = cggmp21::keygen::ThresholdMsg<Secp256k1, SecurityLevel128, Sha256>;
/// cggmp21's aux-info message.
pub type AuxMsg = cggmp21::key_refresh::AuxOnlyMsg<Sha256, SecurityLevel128>;
/// cggmp21's presigning / signing message.
pub type SigningMsg = cggmp21::signing::msg::Msg<Secp256k1, Sha256>;
/// A partial signature (one-round online signing).
pub type PartialSig = cggmp21::PartialSignature<Secp256k1>;

/// Every protocol message type tss-core receives.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsgType {
    /// `tss_core::reshare::ReshareMsg`.
    Reshare,
    /// Keygen.
    Keygen,
    /// Aux-info (keygen's second stage, and after a reshare).
    Aux,
    /// Presigning and full signing.
    Signing,
    /// Online signing.
    PartialSig,
    /// `tss_core::pool::ControlMsg`: proposals and aborts of the pool's control session.
    Control,
}

/// One edit of one node of a message's field tree. `node` is taken modulo the number of
/// nodes (pre-order), item indices modulo the number of items.
#[derive(Arbitrary, Debug, Clone)]
pub struct FieldEdit {
    /// Which node.
    pub node: u16,
    /// What to do to it.
    pub op: Op,
}

/// What to do to a node.
#[derive(Arbitrary, Debug, Clone)]
pub enum Op {
    /// Flip one bit of the node's encoding.
    FlipBit(u16),
    /// Overwrite the node's encoding from an offset, keeping its length.
    Overwrite {
        /// Offset (modulo the length).
        at: u16,
        /// New bytes.
        bytes: Vec<u8>,
    },
    /// A number: that value; a byte string: its big-endian bytes without leading zeros
    /// (a small big integer); a sequence: cut to that many items; an enum: that variant.
    Set(u64),
    /// All bits zero (a byte string keeps its length; a sequence becomes empty).
    Zero,
    /// All bits one (numbers: the maximum).
    Ones,
    /// Remove one item of a sequence, map or struct.
    Remove(u16),
    /// Repeat one item of a sequence, map or struct.
    Duplicate(u16),
    /// Replace the node by a node of another message of the same type.
    Splice {
        /// Which other message.
        msg: u8,
        /// Which of its nodes.
        node: u16,
    },
}

fn overwrite_encoding(node: &mut Node, f: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = node.encode();
    f(&mut bytes);
    *node = Node::Raw(bytes);
}

fn items_mut(node: &mut Node) -> Option<&mut Vec<Node>> {
    match node {
        Node::Seq(c) | Node::Map(c) | Node::Group(c) => Some(c),
        _ => None,
    }
}

/// Applies `edit` to `tree`; `others` are trees of other messages of the same type.
pub fn apply(tree: &mut Node, edit: &FieldEdit, others: &[Node]) {
    let count = tree.count();
    let Some(node) = tree.nth_mut(usize::from(edit.node) % count) else {
        return;
    };
    match &edit.op {
        Op::FlipBit(bit) => overwrite_encoding(node, |b| {
            if !b.is_empty() {
                let bit = usize::from(*bit) % (b.len() * 8);
                b[bit / 8] ^= 1 << (bit % 8);
            }
        }),
        Op::Overwrite { at, bytes } => overwrite_encoding(node, |b| {
            if !b.is_empty() {
                let at = usize::from(*at) % b.len();
                let n = bytes.len().min(b.len() - at);
                b[at..at + n].copy_from_slice(&bytes[..n]);
            }
        }),
        Op::Set(v) => match node {
            Node::Uint(x) => *x = u128::from(*v),
            Node::Sint(x) => *x = i128::from(*v as i64),
            Node::Raw(b) => {
                let le = v.to_le_bytes();
                let n = b.len().min(8);
                b[..n].copy_from_slice(&le[..n]);
            }
            Node::Bytes(b) => {
                let be = v.to_be_bytes();
                let skip = be.iter().take_while(|x| **x == 0).count();
                *b = be[skip..].to_vec();
            }
            Node::Seq(c) | Node::Map(c) | Node::Group(c) => {
                let keep = (*v as usize) % (c.len() + 1);
                c.truncate(keep);
            }
            Node::Variant(i, _) => *i = (*v % 64) as u32,
        },
        Op::Zero => match node {
            Node::Uint(x) => *x = 0,
            Node::Sint(x) => *x = 0,
            Node::Raw(b) | Node::Bytes(b) => b.iter_mut().for_each(|x| *x = 0),
            Node::Seq(c) | Node::Map(c) => c.clear(),
            other => overwrite_encoding(other, |b| b.iter_mut().for_each(|x| *x = 0)),
        },
        Op::Ones => match node {
            Node::Uint(x) => *x = u128::from(u64::MAX),
            Node::Sint(x) => *x = i128::from(i64::MIN),
            Node::Raw(b) | Node::Bytes(b) => b.iter_mut().for_each(|x| *x = 0xff),
            other => overwrite_encoding(other, |b| b.iter_mut().for_each(|x| *x = 0xff)),
        },
        Op::Remove(i) => {
            if let Some(c) = items_mut(node) {
                if !c.is_empty() {
                    let i = usize::from(*i) % c.len();
                    c.remove(i);
                }
            }
        }
        Op::Duplicate(i) => {
            if let Some(c) = items_mut(node) {
                if !c.is_empty() {
                    let i = usize::from(*i) % c.len();
                    let copy = c[i].clone();
                    c.insert(i, copy);
                }
            }
        }
        Op::Splice { msg, node: from } => {
            if !others.is_empty() {
                let other = &others[usize::from(*msg) % others.len()];
                if let Some(n) = other.nth(usize::from(*from) % other.count()) {
                    *node = n.clone();
                }
            }
        }
    }
}

/// The field tree of `bytes` decoded as `M`; `None` if they do not decode. Checks that the
/// tree encodes back to `bytes` (the tree follows postcard's format).
pub fn tree_as<M: Serialize + DeserializeOwned>(bytes: &[u8]) -> Option<Node> {
    let msg: M = decode_message(NodeId::from_bytes([0; 32]), bytes).ok()?;
    let tree = to_tree(&msg).expect("protocol messages serialize");
    assert_eq!(
        tree.encode(),
        bytes,
        "the field tree encodes as postcard does"
    );
    Some(tree)
}

/// [`tree_as`] for a message type known at run time.
pub fn tree_of(ty: MsgType, bytes: &[u8]) -> Option<Node> {
    match ty {
        MsgType::Reshare => tree_as::<ReshareMsg>(bytes),
        MsgType::Keygen => tree_as::<KeygenMsg>(bytes),
        MsgType::Aux => tree_as::<AuxMsg>(bytes),
        MsgType::Signing => tree_as::<SigningMsg>(bytes),
        MsgType::PartialSig => tree_as::<PartialSig>(bytes),
        MsgType::Control => tree_as::<ControlMsg>(bytes),
    }
}

/// `bytes` (a message of type `ty`) with `edits` applied; `others` are other messages
/// of that type, for splicing. Bytes that are not a message of `ty` stay as they are.
pub fn edited(ty: MsgType, bytes: &[u8], edits: &[FieldEdit], others: &[Vec<u8>]) -> Vec<u8> {
    let Some(mut tree) = tree_of(ty, bytes) else {
        return bytes.to_vec();
    };
    let others: Vec<Node> = if edits.iter().any(|e| matches!(e.op, Op::Splice { .. })) {
        others.iter().filter_map(|o| tree_of(ty, o)).collect()
    } else {
        Vec::new()
    };
    for e in edits {
        apply(&mut tree, e, &others);
    }
    tree.encode()
}

/// Decodes `bytes` as `M` from `from`: either a typed `Malformed` error naming `from`,
/// or a value whose encoding decodes to a value with the same encoding (idempotent).
pub fn check_decode<M: Serialize + DeserializeOwned>(from: NodeId, bytes: &[u8]) -> bool {
    match decode_message::<M>(from, bytes) {
        Ok(m) => {
            let once = encode_message(&m).expect("a decoded message re-encodes");
            let again: M = decode_message(from, &once).expect("a re-encoded message decodes");
            assert_eq!(
                encode_message(&again).unwrap(),
                once,
                "re-encoding is stable"
            );
            true
        }
        Err(WireError::Malformed { from: f, .. }) => {
            assert_eq!(f, from, "errors name the authenticated sender");
            false
        }
        Err(e) => panic!("decoding gave a non-decoding error: {e}"),
    }
}

/// [`check_decode`] for a message type known at run time.
pub fn check_decode_as(ty: MsgType, from: NodeId, bytes: &[u8]) -> bool {
    match ty {
        MsgType::Reshare => check_decode::<ReshareMsg>(from, bytes),
        MsgType::Keygen => check_decode::<KeygenMsg>(from, bytes),
        MsgType::Aux => check_decode::<AuxMsg>(from, bytes),
        MsgType::Signing => check_decode::<SigningMsg>(from, bytes),
        MsgType::PartialSig => check_decode::<PartialSig>(from, bytes),
        MsgType::Control => check_decode::<ControlMsg>(from, bytes),
    }
}

/// Well-formed reshare messages of every variant (the transcript holds no reshare).
pub fn reshare_samples() -> Vec<Vec<u8>> {
    let view = |b: u8| tss_core::reshare::SignedCommitments {
        digest: [b; 32],
        signature: tss_core::IdentitySignature::from_bytes(vec![0x34; 64]),
    };
    let g = Point::<Secp256k1>::generator().to_point();
    [
        ReshareMsg::Commitments {
            context: [1; 32],
            commitments: vec![g * Scalar::from(11u64), g * Scalar::from(7u64), g],
            signature: tss_core::IdentitySignature::from_bytes(vec![0x56; 64]),
        },
        ReshareMsg::Share {
            share: Scalar::from(123_456_789u64),
            signature: tss_core::IdentitySignature::from_bytes(vec![0xef; 64]),
        },
        ReshareMsg::Echo {
            views: vec![view(0xab), view(0xcd)],
        },
        ReshareMsg::Complaint {
            views: Some(vec![view(0xab)]),
            dealer: NodeId::from_bytes([3; 32]),
            evidence: tss_core::reshare::ComplaintEvidence::InvalidShare {
                share: Scalar::from(987_654_321u64),
                signature: tss_core::IdentitySignature::from_bytes(vec![0x12; 64]),
            },
        },
        ReshareMsg::Complaint {
            views: None,
            dealer: NodeId::from_bytes([3; 32]),
            evidence: tss_core::reshare::ComplaintEvidence::InvalidMessage,
        },
        ReshareMsg::Complaint {
            views: None,
            dealer: NodeId::from_bytes([3; 32]),
            evidence: tss_core::reshare::ComplaintEvidence::Equivocation {
                first: view(0x01),
                second: view(0x02),
            },
        },
        ReshareMsg::Confirm {
            signature: tss_core::IdentitySignature::from_bytes(vec![0xcd; 64]),
        },
        ReshareMsg::Alive,
    ]
    .iter()
    .map(|m| encode_message(m).unwrap())
    .collect()
}

/// Well-formed control messages: every proposal kind and an abort.
pub fn control_samples() -> Vec<Vec<u8>> {
    let ids: Vec<NodeId> = (1..=4).map(|k| NodeId::from_bytes([k; 32])).collect();
    let committee = Committee::new(ids[..3].to_vec(), 2).unwrap();
    let key_id = KeyId::new("fuzz-key").unwrap();
    let g = Point::<Secp256k1>::generator().to_point();
    let point = |k: u64| (g * Scalar::from(k)).to_bytes(true).as_ref().to_vec();
    let old = PublicKeyInfo {
        key_id: key_id.clone(),
        generation: Generation(3),
        committee: committee.clone(),
        public_key: point(11),
        public_shares: vec![point(1), point(2), point(3)],
        protocol: Default::default(),
    };
    [
        ControlMsg::Propose(Proposal::Keygen(KeygenProposal {
            eid: ExecutionId::from_bytes([1; 32]),
            key_id: key_id.clone(),
            committee: committee.clone(),
            context: b"l1 block 1234".to_vec(),
            protocol: Default::default(),
        })),
        ControlMsg::Propose(Proposal::Sign(SignProposal {
            eid: ExecutionId::from_bytes([2; 32]),
            key_id: key_id.clone(),
            generation: Generation(3),
            signers: ids[..2].to_vec(),
            request: vec![0xb7; 300],
            presignature: Some(ExecutionId::from_bytes([6; 32])),
        })),
        ControlMsg::Propose(Proposal::Presign(PresignProposal {
            eid: ExecutionId::from_bytes([7; 32]),
            key_id: key_id.clone(),
            generation: Generation(3),
            signers: ids[..2].to_vec(),
        })),
        ControlMsg::Propose(Proposal::Reshare(ReshareProposal {
            eid: ExecutionId::from_bytes([3; 32]),
            new_generation: old.generation.next(),
            old,
            dealers: ids[..2].to_vec(),
            new_committee: Committee::new(ids.clone(), 3).unwrap(),
            context: b"join 0x04".to_vec(),
        })),
        ControlMsg::Abort {
            eid: ExecutionId::from_bytes([4; 32]),
            reason: "refused by the validator".into(),
            blamed: Vec::new(),
        },
        ControlMsg::Abort {
            eid: ExecutionId::from_bytes([9; 32]),
            reason: "sign protocol aborted: invalid proof".into(),
            blamed: ids[1..2].to_vec(),
        },
        ControlMsg::Alive {
            eid: ExecutionId::from_bytes([5; 32]),
        },
        ControlMsg::PresignatureStored {
            id: ExecutionId::from_bytes([8; 32]),
        },
        ControlMsg::GenerationInUse {
            eid: ExecutionId::from_bytes([9; 32]),
            key_id: key_id.clone(),
            generation: Generation(4),
        },
    ]
    .iter()
    .map(|m| encode_message(m).unwrap())
    .collect()
}
