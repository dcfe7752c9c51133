//! Rounds 1 and 2 (deal, verify, echo or complain) and round 3's computation (new share,
//! aux-info), up to the staged result.

use std::collections::HashMap;

use cggmp21::generic_ec::{NonZero, Point, Scalar, SecretScalar};
use cggmp21::key_share::{DirtyIncompleteKeyShare, DirtyKeyInfo, Validate, VssSetup};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use transport::{Destination, NodeId};

use crate::ecdsa::{Curve, KeyShare, TssNode};
use crate::error::{Result, TssError};
use crate::identity::{verify_identity_signature, IdentitySignature};
use crate::protocol::Protocol;
use crate::share::ShareSecret;
use zeroize::{Zeroize, Zeroizing};

use super::{
    complaints::{
        complaints_error, ComplaintEvidence, ComplaintVerdict, FalseEvidence, Judge, ReshareFault,
    },
    confirm::{heartbeat_interval, Heartbeats, ReshareStatement, StagedReshare},
    feldman::{eval_commitments, point_of},
    inbox::{echo_check, Inbox},
    messages::{
        commitments_signing_bytes, dealer_commitments_digest, echo_digest, send,
        share_signing_bytes, ReshareMsg, SignedCommitments,
    },
    PublicKeyInfo, ReshareRequest, ReshareRole,
};

impl TssNode {
    /// Runs one party's side of a reshare up to the new share: deal (dealers), verify and
    /// echo or complain (everyone), then build the new share and run the new committee's
    /// aux-info (new members). `role` must match the party's place in `request`.
    ///
    /// The result is staged, not final. A new member stores
    /// [`StagedReshare::new_share`] durably (as a pending generation, not active) and
    /// only then calls [`StagedReshare::confirm`], which signs the confirmation and
    /// collects the certificate; a dealer that leaves calls `confirm` at once. Heartbeats
    /// go on while the caller stores, so parties that only wait do not time out.
    /// Dropping the staged result without confirming leaves the run unconfirmed for
    /// everyone: nobody gets a certificate, nobody retires the old generation.
    pub async fn reshare(
        &self,
        request: &ReshareRequest,
        role: ReshareRole<'_>,
    ) -> Result<StagedReshare<'_>> {
        request.validate()?;
        let protocol = request.old.protocol;
        if !protocol.implementation().can_reshare() {
            return Err(TssError::Unsupported {
                protocol,
                operation: "resharing",
            });
        }
        let me = self.node_id();
        let dealers = request.dealers.clone();
        let new_members = request.new_committee.members().to_vec();
        let participants = request.participants();
        if !participants.contains(&me) {
            return Err(TssError::NotACommitteeMember(me));
        }
        let is_dealer = dealers.contains(&me);
        let new_index = request.new_committee.index_of(&me);
        if is_dealer != role.old_share().is_some() || new_index.is_some() != role.is_new_member() {
            let expected = match (is_dealer, new_index.is_some()) {
                (true, true) => "dealer and new member",
                (true, false) => "dealer",
                _ => "new member",
            };
            return Err(TssError::InvalidParticipants(format!(
                "{me} is a {expected} in this reshare but was given the role {}",
                role.name()
            )));
        }
        let old_share = role.old_share();
        let primes = role.into_primes();
        let context = request.context_digest();
        let (y, _) = request.old.points()?;
        let t_new = usize::from(request.new_committee.threshold());
        let fault = self.reshare_fault(&request.eid);

        // Dealers' Lagrange coefficients and expected constant terms λ_j · X_j.
        let judge = Judge::new(request)?;
        let lambdas = &judge.lambdas;

        let (channel, out) = self.open(&request.eid, &participants)?.split();
        let mut inbox = Inbox {
            channel,
            out,
            context,
            commitments: HashMap::new(),
            commitment_signatures: HashMap::new(),
            shares: HashMap::new(),
            round2: HashMap::new(),
            later: Vec::new(),
            later_limit: 4 * participants.len(),
        };

        // Round 1: deal.
        if is_dealer {
            let share = old_share.ok_or_else(|| {
                TssError::InvalidKeyShare("a dealer must provide its old share".into())
            })?;
            if share.public_info() != request.old {
                return Err(TssError::InvalidKeyShare(
                    "old share does not match the request's key generation".into(),
                ));
            }
            let identity = self.identity().cloned().ok_or_else(|| {
                TssError::InvalidParticipants(
                    "a dealer needs an identity key to sign its shares".into(),
                )
            })?;
            let j = dealers.iter().position(|d| *d == me).unwrap_or_default();
            let mut rng = ChaCha20Rng::from_entropy();
            let x_j = share.secret_scalar()?;
            let mut w = lambdas[j] * *x_j;
            let mut coefs: Vec<SecretScalar<Curve>> = vec![SecretScalar::new(&mut w)];
            coefs.extend((1..t_new).map(|_| SecretScalar::random(&mut rng)));
            let mut commitments: Vec<Point<Curve>> =
                coefs.iter().map(|c| Point::generator() * c).collect();
            if fault == Some(ReshareFault::BadCommitments) {
                commitments[0] += Point::generator().to_point();
            }
            let own_digest = dealer_commitments_digest(&me, &context, &commitments);
            let signature = identity.sign(&commitments_signing_bytes(&context, &own_digest));
            send(
                &inbox.out,
                Destination::Broadcast,
                &ReshareMsg::Commitments {
                    context,
                    commitments: commitments.clone(),
                    signature: signature.clone(),
                },
            )?;
            inbox.commitments.insert(me, (context, commitments));
            inbox.commitment_signatures.insert(me, signature);
            for (k, member) in new_members.iter().enumerate() {
                let x = point_of(k as u16);
                let mut value = Scalar::<Curve>::zero();
                for c in coefs.iter().rev() {
                    value = value * x + c.as_ref();
                }
                if *member == me {
                    // Never checked against a signature (see the verification below).
                    inbox
                        .shares
                        .insert(me, (value, IdentitySignature::from_bytes(Vec::new())));
                } else {
                    if fault == Some(ReshareFault::BadSignedShareTo(*member)) {
                        value += Scalar::<Curve>::one();
                    }
                    let mut signature = identity.sign(&share_signing_bytes(
                        &context,
                        &me,
                        member,
                        k as u16,
                        &value,
                        &own_digest,
                    ));
                    if fault == Some(ReshareFault::UnsignedShareTo(*member)) {
                        signature = IdentitySignature::from_bytes(vec![0; 64]);
                    }
                    send(
                        &inbox.out,
                        Destination::Direct(*member),
                        &ReshareMsg::Share {
                            share: value,
                            signature,
                        },
                    )?;
                }
            }
        }

        // Wait for all commitments, and (new members) all shares.
        while inbox.commitments.len() < dealers.len()
            || (new_index.is_some() && inbox.shares.len() < dealers.len())
        {
            if let Err(e) = inbox.next(&dealers).await {
                // A dealer that sent garbage is named to everyone, so that nobody waits
                // for a timeout to learn the run failed.
                let blamed = match &e {
                    TssError::MalformedMessage { from, .. } => Some(*from),
                    TssError::Misbehaviour { culprits, .. } => culprits.first().copied(),
                    _ => None,
                };
                if let Some(dealer) = blamed.filter(|b| dealers.contains(b)) {
                    let _ = send(
                        &inbox.out,
                        Destination::Broadcast,
                        &ReshareMsg::Complaint {
                            views: None,
                            dealer,
                            evidence: ComplaintEvidence::InvalidMessage,
                        },
                    );
                }
                return Err(e);
            }
        }

        // Verify public parts (everyone) and own shares (new members).
        let mut sum = Point::<Curve>::zero();
        let mut complaint: Option<(NodeId, ComplaintEvidence)> = None;
        for (j, dealer) in dealers.iter().enumerate() {
            let (their_context, commitments) = &inbox.commitments[dealer];
            if !judge.commitments_valid(j, their_context, commitments) {
                complaint.get_or_insert((*dealer, ComplaintEvidence::InvalidCommitments));
                continue;
            }
            sum += commitments[0];
            if let Some(k) = new_index {
                let (share, signature) = &inbox.shares[dealer];
                let signed = *dealer == me || {
                    let bytes = share_signing_bytes(
                        &context,
                        dealer,
                        &me,
                        k,
                        share,
                        &dealer_commitments_digest(dealer, their_context, commitments),
                    );
                    verify_identity_signature(dealer, &bytes, signature)
                };
                let expected = eval_commitments(commitments, &point_of(k));
                if !signed {
                    complaint.get_or_insert((*dealer, ComplaintEvidence::NoValidShare));
                } else if Point::generator() * share != expected {
                    complaint.get_or_insert((
                        *dealer,
                        ComplaintEvidence::InvalidShare {
                            share: *share,
                            signature: signature.clone(),
                        },
                    ));
                }
            }
        }
        if let Some(ReshareFault::FalseComplaint { dealer, evidence }) = &fault {
            let dealer = if dealers.contains(dealer) {
                dealer
            } else {
                &dealers[0]
            };
            let (share, signature) = inbox.shares.get(dealer).cloned().ok_or_else(|| {
                TssError::InvalidParticipants("a false complaint needs a share".into())
            })?;
            let evidence = match evidence {
                FalseEvidence::ForgedShare => ComplaintEvidence::InvalidShare {
                    share: share + Scalar::<Curve>::one(),
                    signature,
                },
                FalseEvidence::ValidShare => ComplaintEvidence::InvalidShare { share, signature },
                FalseEvidence::Commitments => ComplaintEvidence::InvalidCommitments,
                FalseEvidence::NoShare => ComplaintEvidence::NoValidShare,
            };
            complaint = Some((*dealer, evidence));
        }
        if complaint.is_none() && sum != y {
            // Every constant term matched λ_j·X_j, so the old public shares themselves are
            // inconsistent with the key: the request is wrong, not a dealer.
            return Err(TssError::InvalidKeyShare(
                "old public shares do not add up to the public key".into(),
            ));
        }

        // Round 2: echo the commitments, signed by their dealers (or complain).
        let digest = echo_digest(&dealers, &inbox.commitments);
        let views: Vec<SignedCommitments> = dealers
            .iter()
            .map(|d| {
                let (their_context, commitments) = &inbox.commitments[d];
                SignedCommitments {
                    digest: dealer_commitments_digest(d, their_context, commitments),
                    signature: inbox.commitment_signatures[d].clone(),
                }
            })
            .collect();
        let round2 = match complaint {
            Some((dealer, evidence)) => ReshareMsg::Complaint {
                views: Some(views),
                dealer,
                evidence,
            },
            None => ReshareMsg::Echo { views },
        };
        send(&inbox.out, Destination::Broadcast, &round2)?;
        inbox.round2.insert(me, round2);
        while inbox.round2.len() < participants.len() {
            inbox.next(&dealers).await?;
        }
        // Echo check first: complaints are judged on commitments every party agrees on.
        echo_check(&context, &dealers, &participants, &inbox.round2)?;
        // Every complaint is judged here, by every party, on its evidence.
        let verdicts: Vec<ComplaintVerdict> = participants
            .iter()
            .filter_map(|p| match inbox.round2.get(p) {
                Some(ReshareMsg::Complaint {
                    dealer, evidence, ..
                }) => {
                    let (context, commitments) =
                        inbox.commitments.get(dealer).cloned().unwrap_or_default();
                    let finding = judge.judge(*p, *dealer, evidence, &context, &commitments);
                    Some(ComplaintVerdict {
                        complainer: *p,
                        dealer: *dealer,
                        evidence: evidence.clone(),
                        context,
                        commitments,
                        finding,
                    })
                }
                _ => None,
            })
            .collect();
        if !verdicts.is_empty() {
            return Err(complaints_error(verdicts));
        }

        // New public shares, from the commitments.
        let new_public_shares: Vec<Point<Curve>> = (0..request.new_committee.n())
            .map(|k| {
                dealers
                    .iter()
                    .map(|d| eval_commitments(&inbox.commitments[d].1, &point_of(k)))
                    .fold(Point::zero(), |a, b| a + b)
            })
            .collect();
        let new_info = PublicKeyInfo {
            key_id: request.old.key_id.clone(),
            generation: request.new_generation,
            committee: request.new_committee.clone(),
            public_key: request.old.public_key.clone(),
            public_shares: new_public_shares
                .iter()
                .map(|p| p.to_bytes(true).as_ref().to_vec())
                .collect(),
            protocol: request.old.protocol,
        };
        let statement = ReshareStatement {
            eid: request.eid,
            key_id: new_info.key_id.clone(),
            generation: new_info.generation,
            public_key: new_info.public_key.clone(),
            new_committee: request.new_committee.clone(),
            threshold: request.new_committee.threshold(),
            commitments_digest: digest,
            public_info_digest: new_info.digest(),
        };
        // Round 3 (new members): build the new share and run aux-info. Heartbeats on
        // this session tell the parties that only wait (leaving dealers) that we are
        // alive; they go on while the caller stores the staged share.
        let mut new_share = None;
        let mut heartbeats = None;
        let mut identity = None;
        if let Some(k) = new_index {
            identity = Some(self.identity().cloned().ok_or_else(|| {
                TssError::InvalidParticipants(
                    "a new member needs an identity key to sign its confirmation".into(),
                )
            })?);
            let mut x: Scalar<Curve> = dealers.iter().map(|d| inbox.shares[d].0).sum();
            inbox.shares.clear();
            if protocol == Protocol::Dkls23 {
                // The same Shamir share, then the new committee's pairwise setup.
                let x_bytes = Zeroizing::new(x.to_be_bytes().as_bytes().to_vec());
                x.zeroize();
                let beats = Heartbeats::start(&inbox.out, heartbeat_interval(self.idle_timeout()));
                let share = Box::pin(self.dkls23_complete_reshare(
                    new_info.key_id.clone(),
                    new_info.generation,
                    request.new_committee.clone(),
                    &x_bytes,
                    &new_info.public_key,
                    new_info.public_shares.clone(),
                    request.eid.sub("dkls23-pairwise"),
                ))
                .await?;
                new_share = Some(share);
                heartbeats = Some(beats);
            } else {
                let x = NonZero::from_secret_scalar(SecretScalar::new(&mut x))
                    .ok_or_else(|| TssError::InvalidKeyShare("new share is zero".into()))?;
                let public_shares = new_public_shares
                    .iter()
                    .map(|p| NonZero::from_point(*p))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| TssError::InvalidKeyShare("a public share is zero".into()))?;
                let shared_public_key = NonZero::from_point(y)
                    .ok_or_else(|| TssError::InvalidKeyShare("public key is zero".into()))?;
                let core = DirtyIncompleteKeyShare::<Curve> {
                    i: k,
                    key_info: DirtyKeyInfo {
                        curve: Default::default(),
                        shared_public_key,
                        public_shares,
                        vss_setup: Some(VssSetup {
                            min_signers: request.new_committee.threshold(),
                            I: (0..request.new_committee.n())
                                .map(|i| NonZero::from_scalar(point_of(i)))
                                .collect::<Option<Vec<_>>>()
                                .ok_or_else(|| TssError::InvalidKeyShare("zero index".into()))?,
                        }),
                    },
                    x,
                }
                .validate()
                .map_err(|e| TssError::InvalidKeyShare(e.to_string()))?;
                let primes = primes.ok_or_else(|| {
                    TssError::InvalidKeyShare("a new member must provide Paillier primes".into())
                })?;
                let beats = Heartbeats::start(&inbox.out, heartbeat_interval(self.idle_timeout()));
                let aux =
                    Box::pin(self.aux_info(&request.new_committee, request.eid.sub("aux"), primes))
                        .await?;
                let inner = cggmp21::KeyShare::from_parts((core, aux.0))
                    .map_err(|e| TssError::InvalidKeyShare(e.to_string()))?;
                new_share = Some(KeyShare {
                    key_id: new_info.key_id.clone(),
                    generation: new_info.generation,
                    committee: request.new_committee.clone(),
                    local: me,
                    secret: ShareSecret::Cggmp21(Box::new(inner)),
                });
                heartbeats = Some(beats);
            }
        }
        Ok(StagedReshare {
            node: self,
            inbox,
            statement,
            new_members,
            participants,
            dealers,
            old_key: (request.old.key_id.clone(), request.old.generation),
            new_share,
            identity,
            heartbeats,
        })
    }
}
