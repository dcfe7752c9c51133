//! Structure-aware decoding of every protocol message type: a real message of the chosen
//! type (from the recorded transcript, or a built reshare or pool control message), edited field by field
//! (`tss_fuzz::edit`: a big integer of a proof, a vector's length, an enum tag …), or raw
//! bytes, decoded with `tss_core::wire::decode_message` as that type. Must give a value
//! whose encoding is stable, or `WireError::Malformed` naming the sender; never a panic.
//! This is the target that reaches the GMP-backed (`rug`) big-integer decoding of the
//! Paillier keys and proofs: run it under AddressSanitizer too (`fuzz/run.sh`).
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use transport::NodeId;
use tss_fuzz::edit::{
    check_decode_as, control_samples, edited, reshare_samples, FieldEdit, MsgType,
};
use tss_fuzz::transcript::payloads_of;

#[derive(Arbitrary, Debug)]
struct Input {
    ty: MsgType,
    base: u8,
    edits: Vec<FieldEdit>,
    raw: Option<Vec<u8>>,
}

const FROM: NodeId = NodeId::from_bytes([7; 32]);

fn samples(ty: MsgType) -> &'static [Vec<u8>] {
    static S: OnceLock<Vec<Vec<Vec<u8>>>> = OnceLock::new();
    let all = S.get_or_init(|| {
        [
            MsgType::Reshare,
            MsgType::Keygen,
            MsgType::Aux,
            MsgType::Signing,
            MsgType::PartialSig,
            MsgType::Control,
        ]
        .into_iter()
        .map(|ty| match ty {
            MsgType::Reshare => reshare_samples(),
            MsgType::Control => control_samples(),
            ty => payloads_of(ty),
        })
        .collect()
    });
    &all[ty as usize]
}

fuzz_target!(|input: Input| {
    let bytes = match &input.raw {
        Some(raw) => raw.clone(),
        None => {
            let samples = samples(input.ty);
            let base = &samples[usize::from(input.base) % samples.len()];
            let edits = &input.edits[..input.edits.len().min(6)];
            let bytes = edited(input.ty, base, edits, samples);
            if edits.is_empty() {
                assert_eq!(&bytes, base);
                assert!(
                    check_decode_as(input.ty, FROM, &bytes),
                    "a real message decodes"
                );
            }
            bytes
        }
    };
    check_decode_as(input.ty, FROM, &bytes);
});
