//! Receiving rounds 1 and 2: each message checked against who may send it and how
//! (broadcast or direct), and the echo check of round 2.

use std::collections::HashMap;

use cggmp21::generic_ec::{Point, Scalar};
use transport::{DeliveryKind, NodeId, SessionInbox, SessionOutbox, TransportError};

use crate::ecdsa::Curve;
use crate::error::{ProtocolKind, Result, TssError};
use crate::identity::{verify_identity_signature, IdentitySignature};
use crate::wire::decode_message;

use super::{
    complaints::{complaints_error, ComplaintEvidence, ComplaintVerdict, Finding},
    messages::{
        commitments_signing_bytes, dealer_commitments_digest, message_name, ReshareMsg,
        SignedCommitments,
    },
};

/// Receives and sorts reshare messages, checking that each comes from a party allowed to
/// send it, the right way (broadcast or direct).
pub(super) struct Inbox {
    pub(super) channel: SessionInbox,
    pub(super) out: SessionOutbox,
    /// This run's context digest (commitment signatures are checked against it).
    pub(super) context: [u8; 32],
    pub(super) commitments: HashMap<NodeId, ([u8; 32], Vec<Point<Curve>>)>,
    /// Each dealer's signature of its commitments (checked on arrival).
    pub(super) commitment_signatures: HashMap<NodeId, IdentitySignature>,
    pub(super) shares: HashMap<NodeId, (Scalar<Curve>, IdentitySignature)>,
    pub(super) round2: HashMap<NodeId, ReshareMsg>,
    /// Confirmation-phase messages that arrived before this party got there.
    pub(super) later: Vec<(NodeId, ReshareMsg)>,
    /// Bound of `later`.
    pub(super) later_limit: usize,
}

pub(super) fn misbehaviour(culprits: Vec<NodeId>, reason: impl Into<String>) -> TssError {
    TssError::Misbehaviour {
        protocol: ProtocolKind::Reshare,
        culprits,
        reason: reason.into(),
        evidence: Vec::new(),
    }
}

impl Inbox {
    pub(super) async fn next(&mut self, dealers: &[NodeId]) -> Result<()> {
        let msg = self.channel.recv().await.map_err(|e| match e {
            TransportError::Timeout { silent, .. } => TssError::Timeout {
                protocol: ProtocolKind::Reshare,
                silent,
            },
            other => TssError::Transport(other),
        })?;
        let from = msg.from;
        let decoded: ReshareMsg =
            decode_message(from, &msg.payload).map_err(|e| TssError::MalformedMessage {
                protocol: ProtocolKind::Reshare,
                from,
                reason: e.to_string(),
            })?;
        let broadcast = msg.kind == DeliveryKind::Broadcast;
        let is_dealer = dealers.contains(&from);
        // A repeated identical message (a retransmission) is ignored; a different one is
        // equivocation.
        fn insert<V: PartialEq>(map: &mut HashMap<NodeId, V>, from: NodeId, v: V) -> Result<()> {
            match map.get(&from) {
                Some(old) if *old == v => Ok(()),
                Some(_) => Err(misbehaviour(
                    vec![from],
                    "sent two different messages for one round",
                )),
                None => {
                    map.insert(from, v);
                    Ok(())
                }
            }
        }
        match decoded {
            ReshareMsg::Commitments {
                context,
                commitments,
                signature,
            } if is_dealer && broadcast => {
                let digest = dealer_commitments_digest(&from, &context, &commitments);
                let bytes = commitments_signing_bytes(&self.context, &digest);
                if !verify_identity_signature(&from, &bytes, &signature) {
                    return Err(misbehaviour(
                        vec![from],
                        "commitments not signed by their dealer",
                    ));
                }
                insert(&mut self.commitments, from, (context, commitments))?;
                self.commitment_signatures.entry(from).or_insert(signature);
                Ok(())
            }
            ReshareMsg::Share { share, signature } if is_dealer && !broadcast => {
                insert(&mut self.shares, from, (share, signature))
            }
            m @ (ReshareMsg::Echo { .. } | ReshareMsg::Complaint { .. }) if broadcast => {
                insert(&mut self.round2, from, m)
            }
            ReshareMsg::Alive => Ok(()),
            // Confirmation-phase messages may overtake a slower party's round 2 (they come
            // from other senders): kept for later, and judged then.
            m @ (ReshareMsg::Confirm { .. } | ReshareMsg::Certificate(_)) if broadcast => {
                if self.later.len() < self.later_limit {
                    self.later.push((from, m));
                }
                Ok(())
            }
            other => Err(misbehaviour(
                vec![from],
                format!("unexpected message {}", message_name(&other)),
            )),
        }
    }
}

/// The echo check (round 2), the same at every party that received the same round-2
/// messages: every echo must hold, for each dealer, a digest that dealer signed in this
/// run (a party whose echo does not is convicted: nobody can make a dealer sign for it);
/// a dealer with two different signed digests among the echoes showed two parties
/// different commitments, and is convicted with both as evidence
/// ([`ComplaintEvidence::Equivocation`]). An honest party that received other
/// commitments than the rest is never the culprit.
pub(super) fn echo_check(
    context: &[u8; 32],
    dealers: &[NodeId],
    participants: &[NodeId],
    round2: &HashMap<NodeId, ReshareMsg>,
) -> Result<()> {
    let mut unbacked = Vec::new();
    // Per dealer: each distinct signed digest with the first party (in participant
    // order) that echoed it.
    let mut versions: Vec<Vec<(NodeId, SignedCommitments)>> = vec![Vec::new(); dealers.len()];
    for p in participants {
        let views = match round2.get(p) {
            Some(ReshareMsg::Echo { views })
            | Some(ReshareMsg::Complaint {
                views: Some(views), ..
            }) => views,
            // Sent by a party that aborted before it saw every commitment: judged later.
            Some(ReshareMsg::Complaint { views: None, .. }) | None => continue,
            Some(_) => {
                unbacked.push(*p);
                continue;
            }
        };
        let backed = views.len() == dealers.len()
            && dealers.iter().zip(views).all(|(d, v)| {
                verify_identity_signature(
                    d,
                    &commitments_signing_bytes(context, &v.digest),
                    &v.signature,
                )
            });
        if !backed {
            unbacked.push(*p);
            continue;
        }
        for (j, v) in views.iter().enumerate() {
            if !versions[j].iter().any(|(_, seen)| seen.digest == v.digest) {
                versions[j].push((*p, v.clone()));
            }
        }
    }
    if !unbacked.is_empty() {
        return Err(misbehaviour(
            unbacked,
            "echo check failed: an echo not backed by the dealers' signatures",
        ));
    }
    let verdicts: Vec<ComplaintVerdict> = dealers
        .iter()
        .zip(versions)
        .filter(|(_, v)| v.len() > 1)
        .map(|(dealer, v)| ComplaintVerdict {
            complainer: v[1].0,
            dealer: *dealer,
            evidence: ComplaintEvidence::Equivocation {
                first: v[0].1.clone(),
                second: v[1].1.clone(),
            },
            context: *context,
            commitments: Vec::new(),
            finding: Finding::DealerCheated,
        })
        .collect();
    if verdicts.is_empty() {
        Ok(())
    } else {
        Err(complaints_error(verdicts))
    }
}
