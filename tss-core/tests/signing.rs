//! Keygen → presign → sign → verify, end to end over the in-memory transport.

mod common;

use std::sync::Arc;

use common::*;
use k256::ecdsa::signature::hazmat::PrehashVerifier;
use tss_core::{keccak256, Committee, EthSignature, KeyId, ProtocolKind, TssError};

/// Checks a signature the way an L1 contract would: recover the address, compare; and
/// verify (r, s) with k256 against the public key.
fn assert_valid_for(parties: &[Party], digest: &[u8; 32], sig: &EthSignature) {
    let address = parties[0].share.ethereum_address();
    assert_eq!(sig.recover_address(digest).unwrap(), address);
    let k256_sig = k256::ecdsa::Signature::from_scalars(sig.r, sig.s).unwrap();
    assert!(k256_sig.normalize_s().is_none(), "s must be low");
    parties[0]
        .share
        .public_key()
        .verify_prehash(digest, &k256_sig)
        .expect("k256 verifies the signature");
}

async fn keygen_presign_sign_recovers_address(n: u8, t: u16) {
    let (_net, parties) = fresh_pool(n, t, &format!("key-{t}-of-{n}")).await;
    let address = parties[0].share.ethereum_address();
    for p in &parties {
        assert_eq!(
            p.share.ethereum_address(),
            address,
            "all shares name one key"
        );
    }
    let parties = Arc::new(parties);
    let signers: Vec<usize> = (0..usize::from(t)).collect();

    let presig = presign(&parties, &signers).await;
    let message = b"L2 batch #1";
    let digest = keccak256(message);
    let sigs = sign_online(&parties, &signers, presig, message).await;
    for sig in &sigs {
        assert_valid_for(&parties, &digest, sig.as_ref().expect("online signing"));
    }

    let digest = keccak256(b"L2 batch #2");
    let sigs = sign_full(&parties, &signers, digest).await;
    for sig in &sigs {
        assert_valid_for(&parties, &digest, sig.as_ref().expect("full signing"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_of_three_keygen_presign_sign_recovers_ethereum_address() {
    keygen_presign_sign_recovers_address(3, 2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn three_of_five_keygen_presign_sign_recovers_ethereum_address() {
    keygen_presign_sign_recovers_address(5, 3).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_signer_subset_of_a_2_of_3_key_signs_validly() {
    let parties = shared_2_of_3().await.parties.clone();
    for (k, subset) in [[0, 1], [0, 2], [1, 2], [2, 0]].iter().enumerate() {
        let message = format!("batch {k}");
        let digest = keccak256(message.as_bytes());
        let presig = presign(&parties, subset).await;
        for sig in sign_online(&parties, subset, presig, message.as_bytes()).await {
            assert_valid_for(&parties, &digest, &sig.expect("subset signs"));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn presignature_cannot_be_used_twice() {
    let parties = shared_2_of_3().await.parties.clone();
    let signers = [0, 1];
    let presig = presign(&parties, &signers).await;
    for sig in sign_online(&parties, &signers, presig, b"first").await {
        sig.expect("first use signs");
    }
    for result in sign_online(&parties, &signers, presig, b"second").await {
        assert!(
            matches!(result, Err(TssError::PresignatureAlreadyUsed(id)) if id == presig),
            "second use must be refused, got {result:?}"
        );
    }
    // Neither signer holds it any more.
    for p in &parties[..2] {
        let third = sign_online_one(p, presig, b"third").await;
        assert!(matches!(third, Err(TssError::PresignatureAlreadyUsed(_))));
    }
}

async fn sign_online_one(
    p: &Party,
    presig: tss_core::ExecutionId,
    message: &[u8],
) -> tss_core::Result<EthSignature> {
    p.node
        .sign_with_presignature(p.share.key_id(), presig, message)
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_party_count_gives_clear_error() {
    let ids = node_ids(3);
    assert!(matches!(
        Committee::new(ids.clone(), 4),
        Err(TssError::InvalidParticipants(_))
    ));
    assert!(matches!(
        Committee::new(ids[..1].to_vec(), 1),
        Err(TssError::InvalidParticipants(_))
    ));
    let dup = vec![ids[0], ids[0], ids[1]];
    assert!(matches!(
        Committee::new(dup, 2),
        Err(TssError::InvalidParticipants(_))
    ));

    let parties = shared_2_of_3().await.parties.clone();
    let p = &parties[0];
    let key_id = p.share.key_id().clone();
    let too_many = node_ids(3);
    let eid = fresh_eid(ProtocolKind::Sign, &key_id, &too_many);
    let err = p
        .node
        .sign(&p.share, &too_many, [7; 32], eid)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            TssError::WrongSignerCount {
                expected: 2,
                got: 3
            }
        ),
        "{err}"
    );
    let outsider = vec![node_id(1), node_id(9)];
    let eid = fresh_eid(ProtocolKind::Presign, &key_id, &outsider);
    let err = p.node.presign(&p.share, &outsider, eid).await.unwrap_err();
    assert!(
        matches!(err, TssError::NotACommitteeMember(n) if n == node_id(9)),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn execution_id_cannot_be_reused_on_a_node() {
    let parties = shared_2_of_3().await.parties.clone();
    let signers = [0, 1];
    let presig = presign(&parties, &signers).await;
    // Presigning again under the same execution id is refused before any message is sent.
    let ids: Vec<_> = signers.iter().map(|&i| parties[i].node.node_id()).collect();
    let p = &parties[0];
    let err = p.node.presign(&p.share, &ids, presig).await.unwrap_err();
    assert!(
        matches!(
            err,
            TssError::Transport(transport::TransportError::SessionReused(_))
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn key_share_survives_serialization_and_debug_hides_the_secret() {
    let parties = shared_2_of_3().await.parties.clone();
    let share = &parties[1].share;
    let bytes = share.to_secret_bytes().unwrap();
    let restored = tss_core::KeyShare::from_secret_bytes(&bytes).unwrap();
    assert_eq!(restored.ethereum_address(), share.ethereum_address());
    assert_eq!(restored.committee(), share.committee());
    assert_eq!(restored.local_node(), share.local_node());
    let debug = format!("{share:?}");
    assert!(debug.contains("REDACTED"));
    // The secret share x is serialized as hex in the stored form; it must not be in Debug.
    let stored: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let x = stored["share"]["core"]["x"]
        .as_str()
        .expect("x is stored")
        .to_owned();
    assert!(!debug.contains(&x));
    let mut corrupted = bytes.to_vec();
    corrupted.truncate(corrupted.len() / 2);
    assert!(matches!(
        tss_core::KeyShare::from_secret_bytes(&corrupted),
        Err(TssError::Decode { .. })
    ));
    let _ = KeyId::new("x").unwrap();
}
