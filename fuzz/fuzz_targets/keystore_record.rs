//! Keystore decoding: the metadata record, a generation manifest and a sealed record,
//! from arbitrary bytes. Each must give a value or its typed error, never a panic; a
//! sealed record that was not made with the key, key id, generation and name it is
//! opened with must fail with `KeystoreError::Tampered`. Key ids and generations are
//! tss-core's (`keystore` re-exports them).
//!
//! The first byte picks the decoder (so the corpus can hold valid inputs for each):
//! 0 metadata, 1 manifest, 2 sealed record as given, 3 a record sealed here (AES-256-GCM,
//! the keystore's layout) from the rest as plaintext, with one byte flipped if the first
//! byte of the rest is odd.
#![no_main]

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use keystore::{
    decode_manifest, decode_metadata, open_sealed_record, Generation, KeyId, KeystoreError,
    RecordName,
};
use libfuzzer_sys::fuzz_target;

const MASTER_KEY: [u8; 32] = [0x42; 32];

fn ids() -> (KeyId, Generation, RecordName) {
    (
        KeyId::new("fuzz-key").unwrap(),
        Generation(3),
        RecordName::new("key_share").unwrap(),
    )
}

/// Associated data of a record, as the keystore binds it (see keystore/src/seal.rs).
fn record_ad(key_id: &KeyId, g: Generation, name: &RecordName) -> Vec<u8> {
    let mut ad = b"mpc-keystore/v1\0".to_vec();
    ad.push(b'R');
    ad.extend_from_slice(&(key_id.as_str().len() as u32).to_be_bytes());
    ad.extend_from_slice(key_id.as_str().as_bytes());
    ad.extend_from_slice(&g.0.to_be_bytes());
    ad.extend_from_slice(&(name.as_str().len() as u32).to_be_bytes());
    ad.extend_from_slice(name.as_str().as_bytes());
    ad
}

fn expect_tampered(r: keystore::Result<keystore::SecretBytes>) {
    match r {
        Err(KeystoreError::Tampered { .. }) => {}
        Err(e) => panic!("a bad sealed record gave {e}, not Tampered"),
        Ok(_) => panic!("a forged or modified record opened"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (key_id, generation, name) = ids();
    match mode % 4 {
        0 => match decode_metadata(rest) {
            Ok((header, check)) => {
                assert!(header.kdf.validate().is_ok());
                assert!(check.len() <= rest.len());
            }
            Err(KeystoreError::Corrupt { .. }) | Err(KeystoreError::InvalidKdfParams(_)) => {}
            Err(e) => panic!("metadata decoding gave an unexpected error: {e}"),
        },
        1 => match decode_manifest(rest) {
            Ok(names) => assert!(names.len() <= rest.len() / 2),
            Err(KeystoreError::Corrupt { .. }) => {}
            Err(e) => panic!("manifest decoding gave an unexpected error: {e}"),
        },
        2 => {
            if let Ok(plain) = open_sealed_record(&MASTER_KEY, &key_id, generation, &name, rest) {
                // Only possible if the input is a genuine record (a corpus seed).
                assert!(plain.expose().len() + 29 == rest.len());
            }
        }
        _ => {
            let Some((&flip, plain)) = rest.split_first() else {
                return;
            };
            let mut buf = plain.to_vec();
            let nonce = [flip; 12];
            Aes256Gcm::new((&MASTER_KEY).into())
                .encrypt_in_place(
                    &Nonce::from(nonce),
                    &record_ad(&key_id, generation, &name),
                    &mut buf,
                )
                .unwrap();
            let mut sealed = vec![1u8];
            sealed.extend_from_slice(&nonce);
            sealed.extend_from_slice(&buf);
            let opened = open_sealed_record(&MASTER_KEY, &key_id, generation, &name, &sealed)
                .expect("a record sealed with the keystore's layout opens");
            assert_eq!(opened.expose(), plain);
            // Bound elsewhere: another generation (keygen's 0 included) must not open it.
            for other in [Generation::KEYGEN, generation.next()] {
                expect_tampered(open_sealed_record(
                    &MASTER_KEY,
                    &key_id,
                    other,
                    &name,
                    &sealed,
                ));
            }
            if flip % 2 == 1 {
                let i = usize::from(flip) % sealed.len();
                sealed[i] ^= 1 << (flip % 8);
                expect_tampered(open_sealed_record(
                    &MASTER_KEY,
                    &key_id,
                    generation,
                    &name,
                    &sealed,
                ));
            }
        }
    }
});
