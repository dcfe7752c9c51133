//! The reshare's wire messages and the byte strings its parties sign and hash.

use std::collections::HashMap;

use cggmp21::generic_ec::{Point, Scalar};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use transport::{Destination, NodeId, SessionOutbox};
use zeroize::Zeroizing;

use crate::ecdsa::Curve;
use crate::error::{ProtocolKind, Result, TssError};
use crate::identity::IdentitySignature;
use crate::wire::encode_message;

use super::{complaints::ComplaintEvidence, confirm::ReshareCertificate};

/// Messages of the reshare protocol. `Debug` never shows a share.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub enum ReshareMsg {
    /// Round 1, broadcast by a dealer: Feldman commitments to its polynomial, signed.
    Commitments {
        /// Hash of the agreed request.
        context: [u8; 32],
        /// `f_j` coefficients times G, constant term first.
        commitments: Vec<Point<Curve>>,
        /// The dealer's identity signature of [`commitments_signing_bytes`].
        signature: IdentitySignature,
    },
    /// Round 1, dealer to one new member: `f_j(k)`, signed.
    Share {
        /// The share.
        share: Scalar<Curve>,
        /// The dealer's identity signature of [`share_signing_bytes`].
        signature: IdentitySignature,
    },
    /// Round 2, broadcast by everyone: every dealer's commitments as this party received
    /// them, signed by the dealer (in dealer order).
    Echo {
        /// One per dealer.
        views: Vec<SignedCommitments>,
    },
    /// Round 2 instead of an echo: a dealer's share or commitments did not verify (see
    /// the module docs' *Complaints*).
    Complaint {
        /// What an echo would carry (`None` from a party that aborts before it saw every
        /// dealer's commitments).
        views: Option<Vec<SignedCommitments>>,
        /// The accused dealer.
        dealer: NodeId,
        /// Why.
        evidence: ComplaintEvidence,
    },
    /// Round 3, broadcast by each new member once its share is stored: its identity
    /// signature of the run's [`ReshareStatement`](super::ReshareStatement).
    Confirm {
        /// The signature.
        signature: IdentitySignature,
    },
    /// Round 3, broadcast by a party that holds every confirmation.
    Certificate(Box<ReshareCertificate>),
    /// A heartbeat: the sender is alive and computing (aux-info, storing).
    Alive,
}

impl std::fmt::Debug for ReshareMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReshareMsg::Commitments {
                context,
                commitments,
                signature,
            } => f
                .debug_struct("Commitments")
                .field("context", &hex::encode(context))
                .field("commitments", &commitments.len())
                .field("signature", signature)
                .finish(),
            ReshareMsg::Share { signature, .. } => f
                .debug_struct("Share")
                .field("share", &"<redacted>")
                .field("signature", signature)
                .finish(),
            ReshareMsg::Echo { views } => f.debug_struct("Echo").field("views", views).finish(),
            ReshareMsg::Complaint {
                views,
                dealer,
                evidence,
            } => f
                .debug_struct("Complaint")
                .field("views", views)
                .field("dealer", dealer)
                .field("evidence", evidence)
                .finish(),
            ReshareMsg::Confirm { signature } => f
                .debug_struct("Confirm")
                .field("signature", signature)
                .finish(),
            ReshareMsg::Certificate(c) => f.debug_tuple("Certificate").field(c).finish(),
            ReshareMsg::Alive => f.write_str("Alive"),
        }
    }
}

/// One dealer's round-1 broadcast as a party received it: the
/// [`dealer_commitments_digest`] and the dealer's signature of
/// [`commitments_signing_bytes`]. Round 2 carries one per dealer, so a dealer that
/// showed two parties different commitments has signed two digests, and everyone can
/// see it (the echo check).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCommitments {
    /// [`dealer_commitments_digest`] of what was received.
    pub digest: [u8; 32],
    /// The dealer's identity signature of [`commitments_signing_bytes`].
    pub signature: IdentitySignature,
}

impl std::fmt::Debug for SignedCommitments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedCommitments")
            .field("digest", &hex::encode(self.digest))
            .field("signature", &self.signature)
            .finish()
    }
}

/// The bytes a dealer signs for its commitments ([`ReshareMsg::Commitments`]): a domain
/// tag, the run's context digest and the [`dealer_commitments_digest`] (which binds the
/// dealer, the context it sent and the commitments). The run's context keeps a signature
/// from another run from counting in this one.
pub fn commitments_signing_bytes(context: &[u8; 32], commitments_digest: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    out.extend_from_slice(b"tss-core/reshare-commitments/v1");
    out.extend_from_slice(context);
    out.extend_from_slice(commitments_digest);
    out
}

/// The bytes a dealer signs for a share ([`ReshareMsg::Share`]): a domain tag, the run's
/// context digest (execution id, old key facts, dealers, new committee), dealer, recipient,
/// the recipient's index in the new committee, the share and
/// [`dealer_commitments_digest`] of the dealer's commitments. Holds the share: zeroized
/// on drop.
pub fn share_signing_bytes(
    context: &[u8; 32],
    dealer: &NodeId,
    recipient: &NodeId,
    recipient_index: u16,
    share: &Scalar<Curve>,
    commitments_digest: &[u8; 32],
) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(200));
    out.extend_from_slice(b"tss-core/reshare-share/v1");
    out.extend_from_slice(context);
    out.extend_from_slice(dealer.as_bytes());
    out.extend_from_slice(recipient.as_bytes());
    out.extend_from_slice(&recipient_index.to_be_bytes());
    out.extend_from_slice(share.to_be_bytes().as_ref());
    out.extend_from_slice(commitments_digest);
    out
}

/// A hash of one dealer's broadcast: its id, the context it carried and its commitments
/// (bound into its share signatures).
pub fn dealer_commitments_digest(
    dealer: &NodeId,
    context: &[u8; 32],
    commitments: &[Point<Curve>],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"tss-core/reshare-dealer-commitments/v1");
    h.update(dealer.as_bytes());
    h.update(context);
    h.update((commitments.len() as u64).to_be_bytes());
    for p in commitments {
        h.update(p.to_bytes(true).as_ref());
    }
    h.finalize().into()
}

pub(super) fn message_name(m: &ReshareMsg) -> &'static str {
    match m {
        ReshareMsg::Commitments { .. } => "commitments",
        ReshareMsg::Share { .. } => "share",
        ReshareMsg::Echo { .. } => "echo",
        ReshareMsg::Complaint { .. } => "complaint",
        ReshareMsg::Confirm { .. } => "confirm",
        ReshareMsg::Certificate(_) => "certificate",
        ReshareMsg::Alive => "heartbeat",
    }
}

pub(super) fn send(channel: &SessionOutbox, to: Destination, msg: &ReshareMsg) -> Result<()> {
    let bytes = encode_message(msg).map_err(|e| TssError::ProtocolAborted {
        protocol: ProtocolKind::Reshare,
        culprits: Vec::new(),
        reason: e.to_string(),
    })?;
    Ok(channel.send(to, bytes)?)
}

/// The digest of every dealer's commitments as this party received them, in dealer order
/// (each as [`dealer_commitments_digest`]): what [`ReshareStatement`]'s
/// `commitments_digest` holds. Equal at every party that passed the echo check.
pub(crate) fn echo_digest(
    dealers: &[NodeId],
    commitments: &HashMap<NodeId, ([u8; 32], Vec<Point<Curve>>)>,
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"tss-core/reshare-echo/v2");
    for d in dealers {
        h.update(d.as_bytes());
        if let Some((context, points)) = commitments.get(d) {
            h.update(dealer_commitments_digest(d, context, points));
        }
    }
    h.finalize().into()
}
