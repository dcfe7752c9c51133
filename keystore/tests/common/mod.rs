//! Key-share fixtures shared by the test binaries.
#![allow(dead_code)]

use keystore::{Generation, KeyId};
use tss_core::KeyShare;

/// A real tss-core key share (party 1 of a 2-of-2 keygen of key `fixture-key`,
/// generation 0), made from tss-core's public test primes by
/// `regenerate_key_share_fixture` in `tests/async_keystore.rs`. Test-only: its key is
/// public.
pub const SHARE_JSON: &str = include_str!("../../test-data/insecure-test-key-share.json");

/// The fixture share relabelled as generation `generation` of `key`: a valid share (the
/// keystore never looks inside one), distinguishable by its key id and generation.
pub fn share(key: &str, generation: u64) -> KeyShare {
    let mut v: serde_json::Value = serde_json::from_str(SHARE_JSON).unwrap();
    v["key_id"] = key.into();
    v["generation"] = generation.into();
    KeyShare::from_secret_bytes(&serde_json::to_vec(&v).unwrap()).unwrap()
}

/// Key id `id`, which must be valid.
pub fn key(id: &str) -> KeyId {
    KeyId::new(id).unwrap()
}

/// Generation `g`.
pub fn generation(g: u64) -> Generation {
    Generation(g)
}
