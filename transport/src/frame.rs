//! The wire frame of the network transports, as pure functions (fuzzable, no I/O).
//!
//! ```text
//! version (1 byte) | session id (32 bytes) | kind (1 byte: 0 direct, 1 broadcast) | payload
//! ```
//!
//! There is deliberately **no sender field**: the sender of a frame is the peer that the
//! connection authenticated (noise handshake), never something the frame claims.

use crate::{DeliveryKind, SessionId, TransportError};

/// Version byte of the current frame format.
pub const FRAME_VERSION: u8 = 1;

/// Bytes before the payload: version, session id, kind.
pub const FRAME_HEADER_LEN: usize = 1 + 32 + 1;

const KIND_DIRECT: u8 = 0;
const KIND_BROADCAST: u8 = 1;

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The session the frame belongs to.
    pub session: SessionId,
    /// Direct or broadcast.
    pub kind: DeliveryKind,
    /// Opaque protocol bytes.
    pub payload: Vec<u8>,
}

/// Encodes one frame. Never fails; size limits are enforced by the caller and the decoder.
pub fn encode_frame(session: SessionId, kind: DeliveryKind, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
    out.push(FRAME_VERSION);
    out.extend_from_slice(session.as_bytes());
    out.push(match kind {
        DeliveryKind::Direct => KIND_DIRECT,
        DeliveryKind::Broadcast => KIND_BROADCAST,
    });
    out.extend_from_slice(payload);
    out
}

/// Decodes one frame whose payload may be at most `max_payload` bytes.
///
/// Any input gives either a frame or a typed error — never a panic:
/// [`TransportError::MalformedFrame`] for a short frame, an unknown version or an unknown
/// kind byte, [`TransportError::MessageTooLarge`] for a payload over `max_payload`.
pub fn decode_frame(bytes: &[u8], max_payload: usize) -> Result<Frame, TransportError> {
    let Some((&version, rest)) = bytes.split_first() else {
        return Err(TransportError::MalformedFrame("empty frame".into()));
    };
    if version != FRAME_VERSION {
        return Err(TransportError::MalformedFrame(format!(
            "unsupported frame version {version}"
        )));
    }
    if bytes.len() < FRAME_HEADER_LEN {
        return Err(TransportError::MalformedFrame(format!(
            "frame of {} bytes is shorter than its {FRAME_HEADER_LEN}-byte header",
            bytes.len()
        )));
    }
    let mut session = [0u8; 32];
    session.copy_from_slice(&rest[..32]);
    let kind = match rest[32] {
        KIND_DIRECT => DeliveryKind::Direct,
        KIND_BROADCAST => DeliveryKind::Broadcast,
        other => {
            return Err(TransportError::MalformedFrame(format!(
                "unknown delivery kind {other}"
            )))
        }
    };
    let payload = &bytes[FRAME_HEADER_LEN..];
    if payload.len() > max_payload {
        return Err(TransportError::MessageTooLarge {
            size: payload.len(),
            limit: max_payload,
        });
    }
    Ok(Frame {
        session: SessionId::from_bytes(session),
        kind,
        payload: payload.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let s = SessionId::from_bytes([9; 32]);
        for kind in [DeliveryKind::Direct, DeliveryKind::Broadcast] {
            let f = encode_frame(s, kind, b"abc");
            assert_eq!(f.len(), FRAME_HEADER_LEN + 3);
            let d = decode_frame(&f, 10).unwrap();
            assert_eq!(
                (d.session, d.kind, d.payload.as_slice()),
                (s, kind, &b"abc"[..])
            );
        }
    }

    #[test]
    fn garbage_is_a_typed_error() {
        assert!(matches!(
            decode_frame(&[], 10),
            Err(TransportError::MalformedFrame(_))
        ));
        assert!(matches!(
            decode_frame(&[7; 50], 100),
            Err(TransportError::MalformedFrame(_))
        ));
        assert!(matches!(
            decode_frame(&[FRAME_VERSION; 10], 100),
            Err(TransportError::MalformedFrame(_))
        ));
        let mut bad_kind = encode_frame(SessionId::from_bytes([0; 32]), DeliveryKind::Direct, b"");
        bad_kind[33] = 2;
        assert!(matches!(
            decode_frame(&bad_kind, 100),
            Err(TransportError::MalformedFrame(_))
        ));
        let big = encode_frame(
            SessionId::from_bytes([0; 32]),
            DeliveryKind::Direct,
            &[0; 11],
        );
        assert_eq!(
            decode_frame(&big, 10),
            Err(TransportError::MessageTooLarge {
                size: 11,
                limit: 10
            })
        );
    }
}
