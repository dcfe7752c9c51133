//! Complaints and their judgement: the evidence a party brings against a dealer, and the
//! deterministic verdict every party reaches on it (see the module docs of
//! [`crate::reshare`], *Complaints*).

use cggmp21::generic_ec::{Point, Scalar};
use serde::{Deserialize, Serialize};
use transport::NodeId;

use crate::ecdsa::Curve;
use crate::error::{ProtocolKind, Result, TssError};
use crate::identity::{verify_identity_signature, IdentitySignature};

use super::{
    feldman::{eval_commitments, lagrange_at_zero, point_of},
    messages::{
        commitments_signing_bytes, dealer_commitments_digest, share_signing_bytes,
        SignedCommitments,
    },
    ReshareRequest,
};

/// What a [`ReshareMsg::Complaint`](super::ReshareMsg::Complaint) offers against a dealer (module docs, *Complaints*).
/// `Debug` never shows a share.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub enum ComplaintEvidence {
    /// (a) The dealer's share to the complainer with the dealer's signature of it
    /// ([`share_signing_bytes`]); the share does not match the dealer's commitments.
    InvalidShare {
        /// The share as received (published: the run aborts, it is never used).
        share: Scalar<Curve>,
        /// The dealer's signature as received.
        signature: IdentitySignature,
    },
    /// (b) The dealer's commitments are wrong (every party checks them itself).
    InvalidCommitments,
    /// (c) The complainer holds no share of the dealer with a valid signature (none came,
    /// or its signature did not verify).
    NoValidShare,
    /// A message of the dealer did not decode, or the dealer sent two different ones for
    /// a round: sent by a party that aborts at once. Unverifiable, like (c).
    InvalidMessage,
    /// (d) The dealer signed two different commitment digests in this run (found in two
    /// parties' echoes by the echo check): proof of equivocation.
    Equivocation {
        /// One version, as the first party (in participant order) echoed it.
        first: SignedCommitments,
        /// Another, as the `complainer` of the verdict echoed it.
        second: SignedCommitments,
    },
}

impl std::fmt::Debug for ComplaintEvidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ComplaintEvidence::InvalidShare { signature, .. } => f
                .debug_struct("InvalidShare")
                .field("share", &"<redacted>")
                .field("signature", signature)
                .finish(),
            ComplaintEvidence::InvalidCommitments => f.write_str("InvalidCommitments"),
            ComplaintEvidence::NoValidShare => f.write_str("NoValidShare"),
            ComplaintEvidence::InvalidMessage => f.write_str("InvalidMessage"),
            ComplaintEvidence::Equivocation { first, second } => f
                .debug_struct("Equivocation")
                .field("first", first)
                .field("second", second)
                .finish(),
        }
    }
}

/// What every party concludes from one complaint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finding {
    /// The evidence proves the dealer cheated: it is a culprit.
    DealerCheated,
    /// The evidence proves the complaint false (forged or valid share, right
    /// commitments, a complaint against a non-dealer or by a party owed no share): the
    /// complainer is a culprit.
    FalseComplaint,
    /// Neither side can be proven wrong ((c), or an invalid message): nobody is a
    /// culprit; both are suspects.
    Unresolved,
}

/// One judged complaint: who complained about whom, the evidence, the dealer's
/// commitments as every party echoed them, and the finding. Carried by
/// [`TssError::Misbehaviour`]'s `evidence` for an operator.
#[derive(Clone, Debug, PartialEq)]
pub struct ComplaintVerdict {
    /// The complainer (authenticated by the transport).
    pub complainer: NodeId,
    /// The accused dealer.
    pub dealer: NodeId,
    /// The complaint's evidence.
    pub evidence: ComplaintEvidence,
    /// The context the dealer's commitments carried (zero if it sent none).
    pub context: [u8; 32],
    /// The dealer's commitments (empty if it sent none or is no dealer).
    pub commitments: Vec<Point<Curve>>,
    /// The finding.
    pub finding: Finding,
}

impl ComplaintVerdict {
    /// The party this verdict convicts, if any.
    pub fn culprit(&self) -> Option<NodeId> {
        match self.finding {
            Finding::DealerCheated => Some(self.dealer),
            Finding::FalseComplaint => Some(self.complainer),
            Finding::Unresolved => None,
        }
    }

    /// Judges the complaint again from `request` alone (the signature, the share and the
    /// commitments are all in the verdict): what an operator runs to check the evidence.
    pub fn rejudge(&self, request: &ReshareRequest) -> Result<Finding> {
        request.validate()?;
        Ok(Judge::new(request)?.judge(
            self.complainer,
            self.dealer,
            &self.evidence,
            &self.context,
            &self.commitments,
        ))
    }
}

/// Test-only misbehaviour of a reshare party (feature `test-hooks`,
/// `TssNode::inject_reshare_fault`).
#[doc(hidden)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReshareFault {
    /// As a dealer: send this new member a share off by one, validly signed.
    BadSignedShareTo(NodeId),
    /// As a dealer: broadcast commitments with a wrong constant term.
    BadCommitments,
    /// As a dealer: send this new member its share with a signature that does not verify.
    UnsignedShareTo(NodeId),
    /// As a new member: complain against `dealer`, whatever was received.
    FalseComplaint {
        /// The accused (the first dealer if this one does not deal in the run).
        dealer: NodeId,
        /// With what.
        evidence: FalseEvidence,
    },
}

/// The evidence of a [`ReshareFault::FalseComplaint`].
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FalseEvidence {
    /// The received share altered, with the dealer's signature of the real one.
    ForgedShare,
    /// The received (valid) share and its valid signature.
    ValidShare,
    /// "The commitments are wrong".
    Commitments,
    /// "No valid share came".
    NoShare,
}

/// What every party needs to check commitments and judge complaints, from the request.
pub(super) struct Judge<'a> {
    pub(super) request: &'a ReshareRequest,
    pub(super) context: [u8; 32],
    pub(super) t_new: usize,
    /// Each dealer's Lagrange coefficient at 0 over the dealers' evaluation points.
    pub(super) lambdas: Vec<Scalar<Curve>>,
    /// Each dealer's expected constant term, `λ_j · X_j`.
    pub(super) expected: Vec<Point<Curve>>,
}

impl<'a> Judge<'a> {
    pub(super) fn new(request: &'a ReshareRequest) -> Result<Self> {
        let (_, old_public_shares) = request.old.points()?;
        let dealer_indices: Vec<u16> = request
            .dealers
            .iter()
            .map(|d| request.old.committee.require_index(d))
            .collect::<Result<_>>()?;
        let dealer_points: Vec<Scalar<Curve>> =
            dealer_indices.iter().map(|i| point_of(*i)).collect();
        let lambdas: Vec<Scalar<Curve>> = (0..dealer_points.len())
            .map(|j| {
                lagrange_at_zero(j, &dealer_points)
                    .ok_or_else(|| TssError::InvalidParticipants("repeated dealer".into()))
            })
            .collect::<Result<_>>()?;
        let expected = dealer_indices
            .iter()
            .zip(&lambdas)
            .map(|(i, l)| old_public_shares[usize::from(*i)] * l)
            .collect();
        Ok(Self {
            request,
            context: request.context_digest(),
            t_new: usize::from(request.new_committee.threshold()),
            lambdas,
            expected,
        })
    }

    /// Whether dealer number `j`'s broadcast is right: this run's context, `t'`
    /// commitments, constant term `λ_j · X_j`.
    pub(super) fn commitments_valid(
        &self,
        j: usize,
        context: &[u8; 32],
        commitments: &[Point<Curve>],
    ) -> bool {
        *context == self.context
            && commitments.len() == self.t_new
            && commitments[0] == self.expected[j]
    }

    /// The rule of the module docs' *Complaints*.
    pub(super) fn judge(
        &self,
        complainer: NodeId,
        dealer: NodeId,
        evidence: &ComplaintEvidence,
        context: &[u8; 32],
        commitments: &[Point<Curve>],
    ) -> Finding {
        let Some(j) = self.request.dealers.iter().position(|d| *d == dealer) else {
            return Finding::FalseComplaint;
        };
        let commitments_ok = self.commitments_valid(j, context, commitments);
        let recipient = self
            .request
            .new_committee
            .index_of(&complainer)
            .filter(|_| complainer != dealer);
        let signed_by_dealer = |v: &SignedCommitments| {
            verify_identity_signature(
                &dealer,
                &commitments_signing_bytes(&self.context, &v.digest),
                &v.signature,
            )
        };
        match evidence {
            ComplaintEvidence::Equivocation { first, second } => {
                if first.digest != second.digest
                    && signed_by_dealer(first)
                    && signed_by_dealer(second)
                {
                    Finding::DealerCheated
                } else {
                    Finding::FalseComplaint
                }
            }
            ComplaintEvidence::InvalidCommitments if commitments_ok => Finding::FalseComplaint,
            ComplaintEvidence::InvalidCommitments => Finding::DealerCheated,
            ComplaintEvidence::InvalidShare { share, signature } => {
                let Some(k) = recipient else {
                    return Finding::FalseComplaint;
                };
                let bytes = share_signing_bytes(
                    &self.context,
                    &dealer,
                    &complainer,
                    k,
                    share,
                    &dealer_commitments_digest(&dealer, context, commitments),
                );
                if !verify_identity_signature(&dealer, &bytes, signature) {
                    Finding::FalseComplaint
                } else if !commitments_ok
                    || Point::generator() * share != eval_commitments(commitments, &point_of(k))
                {
                    Finding::DealerCheated
                } else {
                    Finding::FalseComplaint
                }
            }
            _ if !commitments_ok => Finding::DealerCheated,
            ComplaintEvidence::NoValidShare if recipient.is_none() => Finding::FalseComplaint,
            ComplaintEvidence::NoValidShare | ComplaintEvidence::InvalidMessage => {
                Finding::Unresolved
            }
        }
    }
}

/// The abort after judged complaints: the convicted parties as culprits, every verdict as
/// evidence.
pub(super) fn complaints_error(verdicts: Vec<ComplaintVerdict>) -> TssError {
    let mut culprits: Vec<NodeId> = verdicts.iter().filter_map(|v| v.culprit()).collect();
    culprits.sort();
    culprits.dedup();
    let describe = |finding: Finding| -> Vec<String> {
        verdicts
            .iter()
            .filter(|v| v.finding == finding)
            .map(|v| format!("{} against {}", v.complainer, v.dealer))
            .collect()
    };
    let mut parts = Vec::new();
    for (finding, what) in [
        (Finding::DealerCheated, "dealer convicted"),
        (Finding::FalseComplaint, "false complaint"),
        (
            Finding::Unresolved,
            "unresolved (no culprit, both suspected)",
        ),
    ] {
        let found = describe(finding);
        if !found.is_empty() {
            parts.push(format!("{what}: {}", found.join(", ")));
        }
    }
    TssError::Misbehaviour {
        protocol: ProtocolKind::Reshare,
        culprits,
        reason: format!("reshare complaints: {}", parts.join("; ")),
        evidence: verdicts,
    }
}
