//! A live signing party with the recorded key share: presigning followed by one-round
//! online signing, or full interactive signing (`pick` bit 0), fed the recorded peer's
//! messages with fuzzer-chosen edits (`tss_fuzz::party`). Without edits both must
//! complete with signatures of the recorded key; with edits a run must end in a
//! signature that recovers to the key's address, or a `TssError`; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tss_core::keccak256;
use tss_fuzz::party::{address, describe, key_share, members, party, PartyInput};
use tss_fuzz::transcript::{transcript, Stage};

fuzz_target!(|input: PartyInput| {
    if std::env::var_os("FUZZ_DEBUG").is_some() {
        eprintln!("party_signing: input {input:?}");
    }
    let t = transcript();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let share = key_share();
    let signers = members();
    let honest = input.edits.is_empty();
    let (digest, result) = if input.pick & 1 == 0 {
        let node = party(&[Stage::Presign, Stage::Online], &input.edits);
        let result = rt.block_on(async {
            let id = node
                .presign(&share, &signers, tss_fuzz::party::eid(t.presign_eid))
                .await?;
            node.sign_with_presignature(&tss_fuzz::party::committee().1, id, &t.online_message)
                .await
        });
        (keccak256(&t.online_message), result)
    } else {
        let node = party(&[Stage::Sign], &input.edits);
        let result = rt.block_on(node.sign(
            &share,
            &signers,
            t.sign_digest,
            tss_fuzz::party::eid(t.sign_eid),
        ));
        (t.sign_digest, result)
    };
    if std::env::var_os("FUZZ_DEBUG").is_some() {
        eprintln!(
            "party_signing: pick {}: {}",
            input.pick & 1,
            describe(&result)
        );
    }
    match result {
        Ok(sig) => assert_eq!(
            sig.recover_address(&digest)
                .expect("a returned signature recovers")
                .0,
            address(),
            "a completed signing signs with the key"
        ),
        Err(e) => assert!(!honest, "the recorded signing replays: {e}"),
    }
});
