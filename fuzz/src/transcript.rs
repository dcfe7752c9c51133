//! The recorded 2-of-2 run (`seeds/transcript.bin`, written by tss-core's
//! `examples/fuzz_seeds.rs`) and which message type each of its sessions carries.

use std::sync::OnceLock;

use tss_core::fuzzing::{RecordedMessage, Transcript};
use tss_core::ExecutionId;

use crate::edit::MsgType;

const TRANSCRIPT: &[u8] = include_bytes!("../seeds/transcript.bin");

/// The transcript, decoded once.
pub fn transcript() -> &'static Transcript {
    static T: OnceLock<Transcript> = OnceLock::new();
    T.get_or_init(|| postcard::from_bytes(TRANSCRIPT).expect("seeds/transcript.bin decodes"))
}

/// A protocol session of the transcript.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Keygen's distributed key generation (`eid.sub("dkg")`).
    Dkg,
    /// Keygen's aux-info stage (`eid.sub("aux")`).
    Aux,
    /// Presigning.
    Presign,
    /// Online signing with the presignature (`presign_eid.sub("online")`).
    Online,
    /// Full signing.
    Sign,
}

impl Stage {
    /// Every stage.
    pub const ALL: [Stage; 5] = [
        Stage::Dkg,
        Stage::Aux,
        Stage::Presign,
        Stage::Online,
        Stage::Sign,
    ];

    /// Its execution id in the transcript.
    pub fn eid(self) -> ExecutionId {
        let t = transcript();
        match self {
            Stage::Dkg => ExecutionId::from_bytes(t.keygen_eid).sub("dkg"),
            Stage::Aux => ExecutionId::from_bytes(t.keygen_eid).sub("aux"),
            Stage::Presign => ExecutionId::from_bytes(t.presign_eid),
            Stage::Online => ExecutionId::from_bytes(t.presign_eid).sub("online"),
            Stage::Sign => ExecutionId::from_bytes(t.sign_eid),
        }
    }

    /// The message type it carries.
    pub fn msg_type(self) -> MsgType {
        match self {
            Stage::Dkg => MsgType::Keygen,
            Stage::Aux => MsgType::Aux,
            Stage::Presign | Stage::Sign => MsgType::Signing,
            Stage::Online => MsgType::PartialSig,
        }
    }

    /// The stage of a recorded message.
    pub fn of(m: &RecordedMessage) -> Option<Stage> {
        Stage::ALL
            .into_iter()
            .find(|s| s.eid().as_bytes() == &m.session)
    }
}

/// Every recorded payload of type `ty`, in send order.
pub fn payloads_of(ty: MsgType) -> Vec<Vec<u8>> {
    transcript()
        .messages
        .iter()
        .filter(|m| Stage::of(m).map(Stage::msg_type) == Some(ty))
        .map(|m| m.payload.clone())
        .collect()
}
