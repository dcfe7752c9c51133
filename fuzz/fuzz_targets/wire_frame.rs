//! Wire decoding: `transport::decode_frame` on arbitrary bytes, then the frame's payload
//! through `tss_core::wire::decode_message` as every protocol message type tss-core
//! receives (the pool's control messages included). Any input must give a value or a
//! typed error, never a panic; a frame or message that decodes must survive a round trip.
#![no_main]

use cggmp21::security_level::SecurityLevel128;
use cggmp21::supported_curves::Secp256k1;
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;
use transport::{decode_frame, encode_frame, NodeId, TransportError, MAX_MESSAGE_SIZE};
use tss_core::pool::ControlMsg;
use tss_core::reshare::ReshareMsg;
use tss_core::wire::{decode_message, encode_message, WireError};

type KeygenMsg = cggmp21::keygen::ThresholdMsg<Secp256k1, SecurityLevel128, Sha256>;
type AuxMsg = cggmp21::key_refresh::AuxOnlyMsg<Sha256, SecurityLevel128>;
type SigningMsg = cggmp21::signing::msg::Msg<Secp256k1, Sha256>;
type PartialSig = cggmp21::PartialSignature<Secp256k1>;

const FROM: NodeId = NodeId::from_bytes([7; 32]);

/// Decodes `bytes` as `M`; a decoded message must re-encode and decode again.
fn check<M>(bytes: &[u8]) -> Option<M>
where
    M: serde::Serialize + serde::de::DeserializeOwned,
{
    match decode_message::<M>(FROM, bytes) {
        Ok(m) => {
            let again = encode_message(&m).expect("a decoded message re-encodes");
            decode_message::<M>(FROM, &again).expect("a re-encoded message decodes");
            Some(m)
        }
        Err(WireError::Malformed { from, .. }) => {
            assert_eq!(from, FROM, "errors name the authenticated sender");
            None
        }
        Err(e) => panic!("decoding gave a non-decoding error: {e}"),
    }
}

fn payload(bytes: &[u8]) {
    if let Some(m) = check::<ReshareMsg>(bytes) {
        let again = encode_message(&m).unwrap();
        assert_eq!(decode_message::<ReshareMsg>(FROM, &again).unwrap(), m);
    }
    check::<PartialSig>(bytes);
    check::<SigningMsg>(bytes);
    check::<KeygenMsg>(bytes);
    check::<AuxMsg>(bytes);
    check::<ControlMsg>(bytes);
}

fuzz_target!(|data: &[u8]| {
    match decode_frame(data, MAX_MESSAGE_SIZE) {
        Ok(frame) => {
            let again = encode_frame(frame.session, frame.kind, &frame.payload);
            assert_eq!(again, data, "frame encoding is canonical");
            payload(&frame.payload);
        }
        Err(TransportError::MalformedFrame(_)) | Err(TransportError::MessageTooLarge { .. }) => {
            // Fuzz the message decoders on the raw bytes too.
            payload(data);
        }
        Err(e) => panic!("decode_frame gave an unexpected error: {e}"),
    }
});
