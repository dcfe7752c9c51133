//! Round 3's end: the signed confirmation statement, its certificate, the staged result a
//! new member stores before it confirms ([`StagedReshare`]), the heartbeats that keep
//! waiting parties from timing out while others compute, and the confirmation phase.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use transport::{DeliveryKind, Destination, NodeId, SessionOutbox, TransportError};

use crate::ecdsa::{KeyShare, TssNode};
use crate::error::{Result, TssError};
use crate::identity::{verify_identity_signature, IdentitySignature, IdentitySigner};
use crate::ids::{Committee, ExecutionId, Generation, KeyId};
use crate::wire::{decode_message, encode_message};

use super::{
    inbox::Inbox,
    messages::{message_name, send, ReshareMsg},
    PublicKeyInfo,
};

/// What every new member signs once its new share is stored: a reshare confirmation.
///
/// Every honest party of a run computes the same statement (the commitments digest is the
/// one all of them echoed), so a confirmation is checked against the receiver's own
/// statement, never against one sent with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReshareStatement {
    /// The run's execution id.
    pub eid: ExecutionId,
    /// The key.
    pub key_id: KeyId,
    /// The new generation.
    pub generation: Generation,
    /// Compressed public key (unchanged by resharing).
    pub public_key: Vec<u8>,
    /// The new committee.
    pub new_committee: Committee,
    /// The new threshold (also in `new_committee`; signed explicitly).
    pub threshold: u16,
    /// Digest of every dealer's commitments, as echoed by every party.
    pub commitments_digest: [u8; 32],
    /// [`PublicKeyInfo::digest`] of the new generation (public shares included).
    pub public_info_digest: [u8; 32],
}

impl ReshareStatement {
    /// The bytes a new member signs: a domain tag and the statement's wire encoding.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = b"tss-core/reshare-confirm/v1".to_vec();
        // A statement always encodes (a committee is bounded); an empty encoding would
        // only make every signature over it fail to match any honest one.
        out.extend(encode_message(self).unwrap_or_default());
        out
    }

    /// Whether this statement describes the generation `info` (key, generation,
    /// committee, threshold, public key and public shares).
    pub fn certifies(&self, info: &PublicKeyInfo) -> bool {
        self.key_id == info.key_id
            && self.generation == info.generation
            && self.new_committee == info.committee
            && self.threshold == info.committee.threshold()
            && self.public_key == info.public_key
            && self.public_info_digest == info.digest()
    }
}

/// Proof that every member of a new committee stored its share of a reshared
/// generation: each one's signature, under its transport identity, of the same
/// [`ReshareStatement`]. Self-verifying ([`ReshareCertificate::verify`]): it can be
/// forwarded by anyone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReshareCertificate {
    /// What was confirmed.
    pub statement: ReshareStatement,
    /// One signature per new member, in committee order.
    pub signatures: Vec<IdentitySignature>,
}

impl ReshareCertificate {
    /// The key.
    pub fn key_id(&self) -> &KeyId {
        &self.statement.key_id
    }

    /// The certified generation.
    pub fn generation(&self) -> Generation {
        self.statement.generation
    }

    /// Its wire encoding (for stores).
    pub fn to_bytes(&self) -> Vec<u8> {
        encode_message(self).unwrap_or_default()
    }

    /// Decodes [`ReshareCertificate::to_bytes`]' output (not verified: call
    /// [`ReshareCertificate::verify`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        decode_message(NodeId::from_bytes([0; 32]), bytes).map_err(|e| TssError::Decode {
            what: "reshare certificate",
            reason: e.to_string(),
        })
    }

    /// Checks that it holds a valid signature of its statement from every member of the
    /// new committee. [`TssError::InvalidCertificate`] names the members whose signature
    /// does not verify.
    pub fn verify(&self) -> Result<()> {
        let members = self.statement.new_committee.members();
        if self.signatures.len() != members.len() {
            return Err(TssError::InvalidCertificate {
                culprits: Vec::new(),
                reason: format!(
                    "{} signatures for {} members",
                    self.signatures.len(),
                    members.len()
                ),
            });
        }
        if self.statement.threshold != self.statement.new_committee.threshold() {
            return Err(TssError::InvalidCertificate {
                culprits: Vec::new(),
                reason: "the threshold differs from the committee's".into(),
            });
        }
        let bytes = self.statement.signing_bytes();
        let culprits: Vec<NodeId> = members
            .iter()
            .zip(&self.signatures)
            .filter(|(m, sig)| !verify_identity_signature(m, &bytes, sig))
            .map(|(m, _)| *m)
            .collect();
        if culprits.is_empty() {
            Ok(())
        } else {
            Err(TssError::InvalidCertificate {
                culprits,
                reason: "signatures that do not verify".into(),
            })
        }
    }
}

/// Something a party did wrong during the confirmation phase, which was ignored (not a
/// reason to abort) and is reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfirmFault {
    /// The sender (authenticated by the transport).
    pub party: NodeId,
    /// What it sent.
    pub reason: String,
}

/// How a reshare ended for one party.
#[derive(Debug)]
pub struct ReshareOutcome {
    /// The new share, for members of the new committee (the one
    /// [`StagedReshare::new_share`] staged, which the caller stored as pending).
    pub new_share: Option<KeyShare>,
    /// New members whose valid confirmation this party holds.
    pub confirmed_by: Vec<NodeId>,
    /// New members whose valid confirmation did not arrive (timeout).
    pub missing_confirmations: Vec<NodeId>,
    /// The certificate, if this party holds one (every confirmation, or a forwarded
    /// certificate).
    pub certificate: Option<ReshareCertificate>,
    /// What was ignored during the confirmation phase, with the sender named.
    pub faults: Vec<ConfirmFault>,
}

impl ReshareOutcome {
    /// True only when this party holds a valid certificate: then, and only then, old
    /// shares may be retired and the new generation activated.
    pub fn may_retire_old_share(&self) -> bool {
        self.certificate.is_some()
    }
}

/// How often a computing party sends a heartbeat: a quarter of its idle timeout, and at
/// least every second (other parties may wait with shorter timeouts; a heartbeat is a few
/// bytes).
pub(super) fn heartbeat_interval(idle_timeout: std::time::Duration) -> std::time::Duration {
    (idle_timeout / 4).clamp(
        std::time::Duration::from_millis(10),
        std::time::Duration::from_secs(1),
    )
}

/// Broadcasts [`ReshareMsg::Alive`] on a session at a fixed interval until dropped, from
/// a task of its own: the work meanwhile may block its thread (aux-info's CPU-bound rounds
/// run in `block_in_place`), and the heartbeats must go on.
pub(super) struct Heartbeats(tokio::task::JoinHandle<()>);

impl Heartbeats {
    pub(super) fn start(channel: &SessionOutbox, every: std::time::Duration) -> Self {
        let channel = channel.clone();
        Self(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if send(&channel, Destination::Broadcast, &ReshareMsg::Alive).is_err() {
                    break;
                }
            }
        }))
    }
}

impl Drop for Heartbeats {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A reshare run at one party after its computation, before its confirmation: what
/// [`TssNode::reshare`] returns.
///
/// For a new member it holds the new share ([`StagedReshare::new_share`]), which the
/// caller must store durably, as a pending generation (not active), before it calls
/// [`StagedReshare::confirm`]: the confirmation this party then signs tells every other
/// party that the share is stored, and a certificate (every new member's confirmation)
/// lets them retire the old generation. A dealer that leaves holds no share and confirms
/// at once. While this value lives, the party keeps sending heartbeats on the run's
/// session, so parties that wait do not time out while the caller stores. Dropping it
/// without confirming leaves the run without a certificate for everyone.
pub struct StagedReshare<'a> {
    pub(super) node: &'a TssNode,
    pub(super) inbox: Inbox,
    pub(super) statement: ReshareStatement,
    pub(super) new_members: Vec<NodeId>,
    pub(super) participants: Vec<NodeId>,
    pub(super) dealers: Vec<NodeId>,
    /// The old generation (its presignatures are discarded once certified).
    pub(super) old_key: (KeyId, Generation),
    pub(super) new_share: Option<KeyShare>,
    /// New members sign their confirmation with it.
    pub(super) identity: Option<Arc<dyn IdentitySigner>>,
    pub(super) heartbeats: Option<Heartbeats>,
}

impl std::fmt::Debug for StagedReshare<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagedReshare")
            .field("statement", &self.statement)
            .field("new_share", &self.new_share)
            .finish_non_exhaustive()
    }
}

impl StagedReshare<'_> {
    /// The new share to store before [`StagedReshare::confirm`] (new members only; store
    /// its [`KeyShare::to_secret_bytes`] encrypted, as a pending generation).
    pub fn new_share(&self) -> Option<&KeyShare> {
        self.new_share.as_ref()
    }

    /// What this run's new members sign: the certificate, if one forms, certifies it.
    pub fn statement(&self) -> &ReshareStatement {
        &self.statement
    }

    /// Confirms and collects the certificate. A new member signs the run's
    /// [`ReshareStatement`] and broadcasts the signature: call this only once the share of
    /// [`StagedReshare::new_share`] is stored. Then every party collects the certificate:
    /// every new member's valid confirmation, or a certificate another party assembled
    /// (then forwarded to everyone, so a party that missed a confirmation completes).
    /// Nothing received here aborts the run: junk, equivocating confirmations and
    /// unexpected messages are ignored and reported in [`ReshareOutcome::faults`]. The
    /// wait ends at the certificate or after the session's idle timeout of silence;
    /// without a certificate the outcome names the members whose confirmation is
    /// missing, and the old generation must be kept.
    pub async fn confirm(mut self) -> Result<ReshareOutcome> {
        let statement_bytes = self.statement.signing_bytes();
        let mut phase = ConfirmPhase {
            statement: &self.statement,
            statement_bytes: &statement_bytes,
            new_members: &self.new_members,
            signatures: HashMap::new(),
            certificate: None,
            faults: Vec::new(),
        };
        let inbox = &mut self.inbox;
        if let Some(identity) = &self.identity {
            let signature = identity.sign(&statement_bytes);
            send(
                &inbox.out,
                Destination::Broadcast,
                &ReshareMsg::Confirm {
                    signature: signature.clone(),
                },
            )?;
            phase.signatures.insert(self.node.node_id(), signature);
        }
        // This party's work is done: from here on it only waits, as the others do.
        drop(self.heartbeats.take());

        // Everyone collects a certificate: every new member's valid confirmation, or a
        // certificate another party assembled. Nothing received here aborts the run.
        for (from, msg) in std::mem::take(&mut inbox.later) {
            phase.take(from, msg);
        }
        phase.try_complete();
        let participants = &self.participants;
        let mut seen_raw: Vec<(NodeId, Vec<u8>)> = Vec::new();
        while phase.certificate.is_none() {
            let msg = match inbox.channel.recv().await {
                Ok(msg) => msg,
                Err(TransportError::Timeout { .. }) => break,
                Err(e) => return Err(TssError::Transport(e)),
            };
            let from = msg.from;
            if !participants.contains(&from) {
                continue;
            }
            // Identical retransmissions are ignored without a word.
            let raw = (from, msg.payload.clone());
            if seen_raw.contains(&raw) {
                continue;
            }
            if seen_raw.len() < 8 * participants.len() {
                seen_raw.push(raw);
            }
            match decode_message::<ReshareMsg>(from, &msg.payload) {
                Ok(m) if msg.kind == DeliveryKind::Broadcast => {
                    // A repeat of an earlier round's message is a retransmission.
                    let repeat = match &m {
                        ReshareMsg::Commitments {
                            context,
                            commitments,
                            ..
                        } => inbox.commitments.get(&from) == Some(&(*context, commitments.clone())),
                        ReshareMsg::Echo { .. } | ReshareMsg::Complaint { .. } => {
                            inbox.round2.get(&from) == Some(&m)
                        }
                        _ => false,
                    };
                    if !repeat {
                        phase.take(from, m);
                    }
                }
                Ok(ReshareMsg::Share { .. }) if self.dealers.contains(&from) => {}
                Ok(m) => phase.fault(
                    from,
                    format!("{} sent directly during confirmation", message_name(&m)),
                ),
                Err(_) => phase.fault(
                    from,
                    "a frame that does not decode during confirmation".into(),
                ),
            }
            phase.try_complete();
        }
        if let Some(certificate) = &phase.certificate {
            // Whoever missed a confirmation (or got a different one) completes with this.
            let _ = send(
                &inbox.out,
                Destination::Broadcast,
                &ReshareMsg::Certificate(Box::new(certificate.clone())),
            );
        }
        let (confirmed_by, missing_confirmations): (Vec<NodeId>, Vec<NodeId>) =
            match &phase.certificate {
                Some(_) => (self.new_members.clone(), Vec::new()),
                None => self
                    .new_members
                    .iter()
                    .partition(|m| phase.signatures.contains_key(*m)),
            };
        if !missing_confirmations.is_empty() {
            tracing::warn!(
                missing = ?missing_confirmations,
                "reshare not confirmed by every new member: old shares must be kept"
            );
        }
        let (old_key_id, old_generation) = &self.old_key;
        if phase.certificate.is_some() {
            self.node.discard_presignatures(old_key_id, *old_generation);
        }
        let (certificate, faults) = (phase.certificate, phase.faults);
        Ok(ReshareOutcome {
            new_share: self.new_share.take(),
            confirmed_by,
            missing_confirmations,
            certificate,
            faults,
        })
    }
}

/// Most faults recorded per run (a flooding party is named once it is here).
pub(super) const MAX_FAULTS: usize = 64;

/// The confirmation phase's state at one party.
pub(super) struct ConfirmPhase<'a> {
    pub(super) statement: &'a ReshareStatement,
    pub(super) statement_bytes: &'a [u8],
    pub(super) new_members: &'a [NodeId],
    pub(super) signatures: HashMap<NodeId, IdentitySignature>,
    pub(super) certificate: Option<ReshareCertificate>,
    pub(super) faults: Vec<ConfirmFault>,
}

impl ConfirmPhase<'_> {
    pub(super) fn fault(&mut self, party: NodeId, reason: String) {
        if self
            .faults
            .iter()
            .any(|f| f.party == party && f.reason == reason)
        {
            return;
        }
        tracing::warn!(%party, %reason, "ignored during reshare confirmation");
        if self.faults.len() < MAX_FAULTS {
            self.faults.push(ConfirmFault { party, reason });
        }
    }

    /// Judges one broadcast message of the confirmation phase.
    pub(super) fn take(&mut self, from: NodeId, msg: ReshareMsg) {
        match msg {
            ReshareMsg::Alive => {}
            ReshareMsg::Confirm { signature } if self.new_members.contains(&from) => {
                if !verify_identity_signature(&from, self.statement_bytes, &signature) {
                    self.fault(
                        from,
                        "a confirmation that does not verify against this run's statement \
                         (equivocation or junk)"
                            .into(),
                    );
                } else if let Some(earlier) = self.signatures.get(&from) {
                    if *earlier != signature {
                        // Two valid signatures of one statement: not a protocol fault of
                        // consequence, but not what an honest signer (deterministic
                        // ed25519) does.
                        self.fault(from, "two different valid confirmations".into());
                    }
                } else {
                    self.signatures.insert(from, signature);
                }
            }
            ReshareMsg::Certificate(certificate) => {
                if certificate.statement != *self.statement {
                    self.fault(from, "a certificate of a different statement".into());
                } else if let Err(e) = certificate.verify() {
                    self.fault(from, format!("an invalid certificate: {e}"));
                } else if self.certificate.is_none() {
                    self.certificate = Some(*certificate);
                }
            }
            other => self.fault(
                from,
                format!("an unexpected {} during confirmation", message_name(&other)),
            ),
        }
    }

    /// Assembles the certificate once every new member's confirmation is here.
    pub(super) fn try_complete(&mut self) {
        if self.certificate.is_some() {
            return;
        }
        let signatures: Option<Vec<IdentitySignature>> = self
            .new_members
            .iter()
            .map(|m| self.signatures.get(m).cloned())
            .collect();
        if let Some(signatures) = signatures {
            self.certificate = Some(ReshareCertificate {
                statement: self.statement.clone(),
                signatures,
            });
        }
    }
}
