//! Round 3's end: the signed confirmation statement, its certificate, the staged result a
//! new member stores before it confirms ([`StagedReshare`]), the heartbeats that keep
//! waiting parties from timing out while others compute, and the confirmation phase.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use transport::{Destination, NodeId, SessionOutbox};

use crate::ecdsa::KeyShare;
use crate::error::{Result, TssError};
use crate::identity::{verify_identity_signature, IdentitySignature};
use crate::ids::{Committee, ExecutionId, Generation, KeyId};
use crate::wire::{decode_message, encode_message};

use super::{
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
    /// The new share, for members of the new committee (already handed to `persist`,
    /// which keeps it pending).
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

/// Runs `work`, broadcasting [`ReshareMsg::Alive`] on `channel` every `every` meanwhile,
/// from a task of its own: the work may block its thread (aux-info's CPU-bound rounds
/// run in `block_in_place`), and the heartbeats must go on.
pub(super) async fn with_heartbeats<T>(
    channel: &SessionOutbox,
    every: std::time::Duration,
    work: impl std::future::Future<Output = T>,
) -> T {
    struct AbortOnDrop(tokio::task::JoinHandle<()>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let channel = channel.clone();
    let _beats = AbortOnDrop(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if send(&channel, Destination::Broadcast, &ReshareMsg::Alive).is_err() {
                break;
            }
        }
    }));
    work.await
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
