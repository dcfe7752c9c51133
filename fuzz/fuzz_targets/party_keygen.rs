//! A live keygen party (distributed key generation, then aux-info with all its
//! zero-knowledge proofs) fed the recorded peer's messages with fuzzer-chosen edits
//! (`tss_fuzz::party`). Without edits it must complete with the recorded key; with edits
//! it must end in a key share or a `TssError`, never a panic. `pick` bit 0 limits the
//! run to the aux-info stage alone (`TssNode::aux_info`), as after a reshare.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tss_fuzz::party::{address, committee, describe, party, primes, PartyInput};
use tss_fuzz::transcript::{transcript, Stage};

fuzz_target!(|input: PartyInput| {
    if std::env::var_os("FUZZ_DEBUG").is_some() {
        eprintln!("party_keygen: input {input:?}");
    }
    let t = transcript();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let (committee, key_id) = committee();
    let honest = input.edits.is_empty();
    if input.pick & 1 == 0 {
        let node = party(&[Stage::Dkg, Stage::Aux], &input.edits);
        let result = rt.block_on(node.keygen(
            key_id,
            committee,
            tss_fuzz::party::eid(t.keygen_eid),
            primes(),
        ));
        if std::env::var_os("FUZZ_DEBUG").is_some() {
            eprintln!(
                "party_keygen: {}",
                describe(&result.as_ref().map(|s| s.ethereum_address()))
            );
        }
        match result {
            Ok(share) if honest => assert_eq!(share.ethereum_address().0, address()),
            Ok(_) => {}
            Err(e) => assert!(!honest, "the recorded keygen replays: {e}"),
        }
    } else {
        let node = party(&[Stage::Aux], &input.edits);
        let result = rt.block_on(node.aux_info(&committee, Stage::Aux.eid(), primes()));
        if std::env::var_os("FUZZ_DEBUG").is_some() {
            eprintln!(
                "party_keygen (aux only): {}",
                describe(&result.as_ref().map(|_| ()))
            );
        }
        if let Err(e) = result {
            assert!(!honest, "the recorded aux-info replays: {e}");
        }
    }
});
