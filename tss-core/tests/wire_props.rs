//! Property tests of everything that crosses the wire: transport frames (and the
//! length-prefixed stream they travel in), and every protocol message type: the pool's
//! control messages (proposals, aborts), the reshare messages and cggmp21's keygen, aux-info, presigning / signing messages and partial
//! signatures. Each must decode to what was encoded, encode canonically, and refuse a
//! trailing byte and every truncation. Failing cases are kept in
//! `tests/wire_props.proptest-regressions` (commit it) and replayed first on later runs.
//!
//! The cggmp21 messages other than the last signing round come only out of a real run,
//! so `real_runs_round_trip` runs a whole 2-of-2 keygen (with aux-info), presign, online
//! signing and full signing per case, with random node ids, key id, prime pairs, message
//! and digest: 8 cases (6.4 minutes in all on a 2-core machine busy with other builds,
//! in the test profile).

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use cggmp21::generic_ec::{Point, Scalar};
use cggmp21::security_level::SecurityLevel128;
use cggmp21::supported_curves::Secp256k1;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde::{de::DeserializeOwned, Serialize};
use sha2::Sha256;
use transport::{
    decode_frame, encode_frame, read_length_prefixed, DeliveryKind, InMemoryNetwork,
    InMemoryTransport, NodeId, SessionId, Tamper, TamperingTransport, TransportError,
    FRAME_HEADER_LEN, MAX_MESSAGE_SIZE,
};
use tss_core::pool::{
    ControlMsg, KeygenProposal, PresignProposal, Proposal, ReshareProposal, SignProposal,
};
use tss_core::reshare::ReshareMsg;
use tss_core::wire::{decode_message, encode_message, WireError};
use tss_core::{
    keccak256, Committee, ExecutionId, Generation, KeyId, ProtocolKind, PublicKeyInfo, TssNode,
};

type KeygenMsg = cggmp21::keygen::ThresholdMsg<Secp256k1, SecurityLevel128, Sha256>;
type AuxMsg = cggmp21::key_refresh::AuxOnlyMsg<Sha256, SecurityLevel128>;
type SigningMsg = cggmp21::signing::msg::Msg<Secp256k1, Sha256>;
type PartialSig = cggmp21::PartialSignature<Secp256k1>;

const FROM: NodeId = NodeId::from_bytes([7; 32]);

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

/// Encodes, decodes and checks the encoding: canonical, strict about trailing bytes and
/// truncation. Returns the decoded value.
fn round_trip<M: Serialize + DeserializeOwned>(msg: &M) -> Result<M, TestCaseError> {
    let bytes = encode_message(msg).unwrap();
    let back: M = decode_message(FROM, &bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(
        &encode_message(&back).unwrap(),
        &bytes,
        "canonical encoding"
    );
    check_strict::<M>(&bytes)?;
    Ok(back)
}

/// A trailing byte and every strict prefix of `bytes` are refused, naming the sender.
fn check_strict<M: Serialize + DeserializeOwned>(bytes: &[u8]) -> Result<(), TestCaseError> {
    let mut longer = bytes.to_vec();
    longer.push(0);
    let refused = matches!(
        decode_message::<M>(FROM, &longer),
        Err(WireError::Malformed { from: FROM, .. })
    );
    prop_assert!(refused, "a trailing byte was accepted");
    // Every prefix for short messages; for long ones (aux-info proofs, hundreds of KiB)
    // the first and last 64 and every 997th.
    for len in 0..bytes.len() {
        if bytes.len() > 4096 && len > 64 && len + 64 < bytes.len() && len % 997 != 0 {
            continue;
        }
        let refused = decode_message::<M>(FROM, &bytes[..len]).is_err();
        prop_assert!(refused, "a {}-byte prefix of {} decoded", len, bytes.len());
    }
    Ok(())
}

fn scalar() -> impl Strategy<Value = Scalar<Secp256k1>> {
    any::<[u8; 32]>().prop_map(Scalar::from_be_bytes_mod_order)
}

fn point() -> impl Strategy<Value = Point<Secp256k1>> {
    prop_oneof![
        1 => Just(Point::zero()),
        9 => scalar().prop_map(|s| Point::generator() * s),
    ]
}

fn reshare_msg() -> impl Strategy<Value = ReshareMsg> {
    prop_oneof![
        (
            any::<[u8; 32]>(),
            prop::collection::vec(point(), 0..12),
            signature()
        )
            .prop_map(
                |(context, commitments, signature)| ReshareMsg::Commitments {
                    context,
                    commitments,
                    signature,
                }
            ),
        (scalar(), prop::collection::vec(any::<u8>(), 0..80)).prop_map(|(share, sig)| {
            ReshareMsg::Share {
                share,
                signature: tss_core::identity::IdentitySignature::from_bytes(sig),
            }
        }),
        prop::collection::vec(signed_commitments(), 0..8)
            .prop_map(|views| ReshareMsg::Echo { views }),
        (
            prop::option::of(prop::collection::vec(signed_commitments(), 0..8)),
            any::<[u8; 32]>(),
            complaint_evidence()
        )
            .prop_map(|(views, b, evidence)| ReshareMsg::Complaint {
                views,
                dealer: NodeId::from_bytes(b),
                evidence,
            }),
        prop::collection::vec(any::<u8>(), 0..80).prop_map(|b| ReshareMsg::Confirm {
            signature: tss_core::identity::IdentitySignature::from_bytes(b)
        }),
        Just(ReshareMsg::Alive),
    ]
}

fn signature() -> impl Strategy<Value = tss_core::identity::IdentitySignature> {
    prop::collection::vec(any::<u8>(), 0..80)
        .prop_map(tss_core::identity::IdentitySignature::from_bytes)
}

fn signed_commitments() -> impl Strategy<Value = tss_core::reshare::SignedCommitments> {
    (any::<[u8; 32]>(), signature())
        .prop_map(|(digest, signature)| tss_core::reshare::SignedCommitments { digest, signature })
}

fn complaint_evidence() -> impl Strategy<Value = tss_core::reshare::ComplaintEvidence> {
    use tss_core::reshare::ComplaintEvidence;
    prop_oneof![
        (scalar(), prop::collection::vec(any::<u8>(), 0..80)).prop_map(|(share, sig)| {
            ComplaintEvidence::InvalidShare {
                share,
                signature: tss_core::identity::IdentitySignature::from_bytes(sig),
            }
        }),
        Just(ComplaintEvidence::InvalidCommitments),
        Just(ComplaintEvidence::NoValidShare),
        Just(ComplaintEvidence::InvalidMessage),
        (signed_commitments(), signed_commitments())
            .prop_map(|(first, second)| ComplaintEvidence::Equivocation { first, second }),
    ]
}

fn node_id() -> impl Strategy<Value = NodeId> {
    any::<[u8; 32]>().prop_map(NodeId::from_bytes)
}

fn eid() -> impl Strategy<Value = ExecutionId> {
    any::<[u8; 32]>().prop_map(ExecutionId::from_bytes)
}

fn key_id() -> impl Strategy<Value = KeyId> {
    "[A-Za-z0-9_.:-]{1,128}".prop_map(|k| KeyId::new(k).unwrap())
}

fn committee() -> impl Strategy<Value = Committee> {
    prop::collection::btree_set(node_id(), 2..12).prop_flat_map(|members| {
        let n = members.len() as u16;
        (Just(members), 2..=n)
            .prop_map(|(m, t)| Committee::new(m.into_iter().collect(), t).unwrap())
    })
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

fn public_key_info() -> impl Strategy<Value = PublicKeyInfo> {
    (
        key_id(),
        any::<u64>(),
        committee(),
        bytes(40),
        prop::collection::vec(bytes(40), 0..12),
        any::<bool>(),
    )
        .prop_map(
            |(key_id, g, committee, public_key, public_shares, dkls23)| PublicKeyInfo {
                key_id,
                generation: Generation(g),
                committee,
                public_key,
                public_shares,
                // Both: a field a format leaves out for one protocol would not decode.
                protocol: if dkls23 {
                    tss_core::Protocol::Dkls23
                } else {
                    tss_core::Protocol::Cggmp21
                },
            },
        )
}

fn control_msg() -> impl Strategy<Value = ControlMsg> {
    let keygen = (eid(), key_id(), committee(), bytes(512), any::<bool>()).prop_map(
        |(eid, key_id, committee, context, dkls23)| {
            Proposal::Keygen(KeygenProposal {
                eid,
                key_id,
                committee,
                context,
                protocol: if dkls23 {
                    tss_core::Protocol::Dkls23
                } else {
                    tss_core::Protocol::Cggmp21
                },
            })
        },
    );
    let sign = (
        eid(),
        key_id(),
        any::<u64>(),
        prop::collection::vec(node_id(), 0..12),
        bytes(2048),
        prop::option::of(eid()),
    )
        .prop_map(|(eid, key_id, g, signers, request, presignature)| {
            Proposal::Sign(SignProposal {
                eid,
                key_id,
                generation: Generation(g),
                signers,
                request,
                presignature,
            })
        });
    let presign = (
        eid(),
        key_id(),
        any::<u64>(),
        prop::collection::vec(node_id(), 0..12),
    )
        .prop_map(|(eid, key_id, g, signers)| {
            Proposal::Presign(PresignProposal {
                eid,
                key_id,
                generation: Generation(g),
                signers,
            })
        });
    let reshare = (
        eid(),
        public_key_info(),
        prop::collection::vec(node_id(), 0..12),
        committee(),
        any::<u64>(),
        bytes(512),
    )
        .prop_map(|(eid, old, dealers, new_committee, g, context)| {
            Proposal::Reshare(ReshareProposal {
                eid,
                new_generation: Generation(g),
                old,
                dealers,
                new_committee,
                context,
            })
        });
    prop_oneof![
        prop_oneof![keygen, sign, reshare, presign].prop_map(ControlMsg::Propose),
        (
            eid(),
            "\\PC{0,600}",
            proptest::collection::vec(node_id(), 0..4)
        )
            .prop_map(|(eid, reason, blamed)| ControlMsg::Abort {
                eid,
                reason,
                blamed
            }),
        eid().prop_map(|eid| ControlMsg::Alive { eid }),
        eid().prop_map(|id| ControlMsg::PresignatureStored { id }),
        (eid(), key_id(), any::<u64>()).prop_map(|(eid, key_id, g)| {
            ControlMsg::GenerationInUse {
                eid,
                key_id,
                generation: Generation(g),
            }
        }),
    ]
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn control_messages_round_trip(msg in control_msg()) {
        prop_assert_eq!(round_trip(&msg)?, msg);
    }

    #[test]
    fn frames_round_trip(
        session in any::<[u8; 32]>(),
        broadcast in any::<bool>(),
        payload in prop::collection::vec(any::<u8>(), 0..8192),
    ) {
        let kind = if broadcast { DeliveryKind::Broadcast } else { DeliveryKind::Direct };
        let session = SessionId::from_bytes(session);
        let bytes = encode_frame(session, kind, &payload);
        prop_assert_eq!(bytes.len(), FRAME_HEADER_LEN + payload.len());
        let frame = decode_frame(&bytes, MAX_MESSAGE_SIZE).unwrap();
        prop_assert_eq!(frame.session, session);
        prop_assert_eq!(frame.kind, kind);
        prop_assert_eq!(&frame.payload, &payload);
        // A payload over the limit is refused with its size.
        if !payload.is_empty() {
            let refused = matches!(
                decode_frame(&bytes, payload.len() - 1),
                Err(TransportError::MessageTooLarge { .. })
            );
            prop_assert!(refused, "an oversized payload was accepted");
        }
        // A truncated header is refused.
        for len in 0..FRAME_HEADER_LEN {
            prop_assert!(decode_frame(&bytes[..len], MAX_MESSAGE_SIZE).is_err());
        }
    }

    #[test]
    fn length_prefixed_streams_round_trip(
        frames in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..2048), 0..8),
        cut in any::<prop::sample::Index>(),
    ) {
        // The reader's unit: a 4-byte big-endian length, then that many bytes.
        let length_prefixed = |f: &Vec<u8>| {
            let mut unit = (f.len() as u32).to_be_bytes().to_vec();
            unit.extend_from_slice(f);
            unit
        };
        let stream: Vec<u8> = frames.iter().flat_map(length_prefixed).collect();
        let read_all = |bytes: &[u8]| futures::executor::block_on(async {
            let mut r = futures::io::Cursor::new(bytes.to_vec());
            let mut out = Vec::new();
            loop {
                match read_length_prefixed(&mut r, 2048).await {
                    Ok(Some(f)) => out.push(f),
                    Ok(None) => return (out, true),
                    Err(_) => return (out, false),
                }
            }
        });
        let (read, clean) = read_all(&stream);
        prop_assert!(clean);
        prop_assert_eq!(&read, &frames);
        // Cut anywhere: the whole frames before the cut, then a clean end only at a
        // frame boundary.
        if !stream.is_empty() {
            let at = cut.index(stream.len());
            let (read, clean) = read_all(&stream[..at]);
            let mut boundary = 0;
            let mut whole = 0;
            for f in &frames {
                if boundary + 4 + f.len() > at { break; }
                boundary += 4 + f.len();
                whole += 1;
            }
            prop_assert_eq!(&read[..], &frames[..whole]);
            prop_assert_eq!(clean, boundary == at);
        }
    }

    #[test]
    fn reshare_messages_round_trip(msg in reshare_msg()) {
        prop_assert_eq!(round_trip(&msg)?, msg);
    }

    #[test]
    fn partial_signatures_and_last_signing_round_round_trip(
        r in scalar(), sigma in scalar(), digest in any::<[u8; 32]>(),
    ) {
        let back = round_trip(&PartialSig { r, sigma })?;
        prop_assert_eq!((back.r, back.sigma), (r, sigma));
        let round4 = SigningMsg::Round4(cggmp21::signing::msg::MsgRound4 { sigma });
        round_trip(&round4)?;
        let check = SigningMsg::ReliabilityCheck(cggmp21::signing::msg::MsgReliabilityCheck(
            digest.into(),
        ));
        round_trip(&check)?;
    }
}

type Log = Arc<Mutex<Vec<(SessionId, Vec<u8>)>>>;

/// The in-memory transport, recording every payload this node sends.
fn recording(inner: InMemoryTransport, log: Log) -> TamperingTransport<InMemoryTransport> {
    TamperingTransport::new(
        inner,
        Arc::new(move |session, _, _, payload| {
            log.lock().unwrap().push((session, payload.to_vec()));
            Tamper::Pass
        }),
    )
}

/// One real 2-of-2 run; returns every protocol message sent, with the kind of its session.
fn real_run(
    ids: &[NodeId],
    key_id: &KeyId,
    primes: [usize; 2],
    message: &[u8],
    digest: [u8; 32],
) -> Vec<(&'static str, Vec<u8>)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let network = InMemoryNetwork::new();
    let log: Log = Arc::default();
    let committee = Committee::new(ids.to_vec(), 2).unwrap();
    let keygen_eid = common::fresh_eid(ProtocolKind::Keygen, key_id, ids);
    let presign_eid = common::fresh_eid(ProtocolKind::Presign, key_id, ids);
    let sign_eid = common::fresh_eid(ProtocolKind::Sign, key_id, ids);
    let nodes: Vec<Arc<TssNode>> = ids
        .iter()
        .map(|id| {
            Arc::new(TssNode::new(Arc::new(recording(
                network.endpoint(*id),
                log.clone(),
            ))))
        })
        .collect();
    rt.block_on(async {
        let runs: Vec<_> = nodes
            .iter()
            .zip(primes)
            .map(|(node, p)| {
                let (node, committee, key_id, ids) = (
                    node.clone(),
                    committee.clone(),
                    key_id.clone(),
                    ids.to_vec(),
                );
                let message = message.to_vec();
                tokio::spawn(async move {
                    let share = node
                        .keygen(key_id.clone(), committee, keygen_eid, common::primes_at(p))
                        .await?;
                    node.presign(&share, &ids, presign_eid).await?;
                    let online = node
                        .sign_with_presignature(&key_id, presign_eid, &message)
                        .await?;
                    let full = node.sign(&share, &ids, digest, sign_eid).await?;
                    let address = share.ethereum_address();
                    Ok::<_, tss_core::TssError>((address, online, full))
                })
            })
            .collect();
        for run in runs {
            let (address, online, full) = run.await.unwrap().expect("the run succeeds");
            assert_eq!(
                online.recover_address(&keccak256(message)).unwrap(),
                address
            );
            assert_eq!(full.recover_address(&digest).unwrap(), address);
        }
    });
    let kind = |sid: &SessionId| {
        let s = |e: ExecutionId| e.session_id();
        match sid {
            x if *x == s(keygen_eid.sub("dkg")) => "keygen",
            x if *x == s(keygen_eid.sub("aux")) => "aux",
            x if *x == s(presign_eid.sub("online")) => "online",
            x if *x == s(presign_eid) || *x == s(sign_eid) => "signing",
            _ => panic!("a message of an unknown session"),
        }
    };
    let log = log.lock().unwrap();
    // Empty frames are heartbeats of a party that computes (tests/heartbeats.rs), sent
    // when a run is slow (a loaded machine), not protocol messages.
    log.iter()
        .filter(|(_, b)| !b.is_empty())
        .map(|(sid, b)| (kind(sid), b.clone()))
        .collect()
}

/// Decodes `bytes` as `M` and checks it like [`round_trip`].
fn decoded<M: Serialize + DeserializeOwned>(bytes: &[u8]) -> Result<M, TestCaseError> {
    let msg: M = decode_message(FROM, bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(
        &encode_message(&msg).unwrap()[..],
        bytes,
        "canonical encoding"
    );
    check_strict::<M>(bytes)?;
    Ok(msg)
}

proptest! {
    #![proptest_config(config(8))]

    #[test]
    fn real_runs_round_trip(
        seeds in prop::collection::btree_set(any::<[u8; 32]>(), 2..=2),
        key_id in "[A-Za-z0-9_.:-]{1,128}",
        primes in (0usize..12, 0usize..11),
        message in prop::collection::vec(any::<u8>(), 0..256),
        digest in any::<[u8; 32]>(),
    ) {
        let ids: Vec<NodeId> = seeds.into_iter().map(NodeId::from_bytes).collect();
        let key_id = KeyId::new(key_id).unwrap();
        // Two distinct pairs of the committed test primes.
        let primes = [primes.0, (primes.0 + 1 + primes.1) % 12];
        let mut seen = BTreeSet::new();
        for (kind, bytes) in real_run(&ids, &key_id, primes, &message, digest) {
            let variant = match kind {
                "keygen" => match decoded::<KeygenMsg>(&bytes)? {
                    KeygenMsg::Round1(_) => "Round1",
                    KeygenMsg::Round2Broad(_) => "Round2Broad",
                    KeygenMsg::Round2Uni(_) => "Round2Uni",
                    KeygenMsg::Round3(_) => "Round3",
                    KeygenMsg::ReliabilityCheck(_) => "ReliabilityCheck",
                },
                "aux" => match decoded::<AuxMsg>(&bytes)? {
                    AuxMsg::Round1(_) => "Round1",
                    AuxMsg::Round2(_) => "Round2",
                    AuxMsg::Round3(_) => "Round3",
                    AuxMsg::ReliabilityCheck(_) => "ReliabilityCheck",
                },
                "online" => {
                    decoded::<PartialSig>(&bytes)?;
                    "PartialSignature"
                }
                _ => match decoded::<SigningMsg>(&bytes)? {
                    SigningMsg::Round1a(_) => "Round1a",
                    SigningMsg::Round1b(_) => "Round1b",
                    SigningMsg::Round2(_) => "Round2",
                    SigningMsg::Round3(_) => "Round3",
                    SigningMsg::Round4(_) => "Round4",
                    SigningMsg::ReliabilityCheck(_) => "ReliabilityCheck",
                },
            };
            seen.insert(format!("{kind}/{variant}"));
        }
        for kind in [
            "keygen/Round1", "keygen/Round2Broad", "keygen/Round2Uni", "keygen/Round3",
            "aux/Round1", "aux/Round2", "aux/Round3", "online/PartialSignature",
            "signing/Round1a", "signing/Round1b", "signing/Round2", "signing/Round3",
            "signing/Round4",
        ] {
            prop_assert!(seen.contains(kind), "no {} message was sent; saw {:?}", kind, seen);
        }
    }
}
