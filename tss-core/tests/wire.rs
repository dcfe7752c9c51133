//! Every message of a real 2-of-2 keygen (with aux info), presigning, online signing and
//! full signing, recorded on its way out, is a canonical postcard encoding of its cggmp21
//! type: it decodes, re-encodes to the same bytes, and refuses a trailing byte.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use cggmp21::security_level::SecurityLevel128;
use cggmp21::supported_curves::Secp256k1;
use common::*;
use serde::{de::DeserializeOwned, Serialize};
use sha2::Sha256;
use transport::{
    InMemoryNetwork, InMemoryTransport, NodeId, SessionId, Tamper, TamperingTransport,
};
use tss_core::wire::{decode_message, encode_message, WireError};
use tss_core::{keccak256, Committee, ExecutionId, KeyId, ProtocolKind, TssNode};

type KeygenMsg = cggmp21::keygen::ThresholdMsg<Secp256k1, SecurityLevel128, Sha256>;
type AuxMsg = cggmp21::key_refresh::AuxOnlyMsg<Sha256, SecurityLevel128>;
type SigningMsg = cggmp21::signing::msg::Msg<Secp256k1, Sha256>;
type PartialSig = cggmp21::PartialSignature<Secp256k1>;

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

/// Decodes `bytes` as `M`, checks the encoding is canonical and strict, returns the value.
fn canonical<M: Serialize + DeserializeOwned>(bytes: &[u8]) -> M {
    let from = NodeId::from_bytes([1; 32]);
    let msg: M = decode_message(from, bytes).expect("a sent message decodes as its type");
    assert_eq!(encode_message(&msg).unwrap(), bytes, "canonical encoding");
    let mut longer = bytes.to_vec();
    longer.push(0);
    assert!(matches!(
        decode_message::<M>(from, &longer),
        Err(WireError::Malformed { .. })
    ));
    msg
}

#[tokio::test(flavor = "multi_thread")]
async fn every_protocol_message_of_a_real_run_round_trips_through_postcard() {
    let network = InMemoryNetwork::new();
    let ids = node_ids(2);
    let log: Log = Arc::default();
    let nodes: Vec<Arc<TssNode>> = ids
        .iter()
        .map(|id| {
            Arc::new(TssNode::new(Arc::new(recording(
                network.endpoint(*id),
                log.clone(),
            ))))
        })
        .collect();
    let key_id = KeyId::new("wire-test").unwrap();
    let committee = Committee::new(ids.clone(), 2).unwrap();

    let keygen_eid = fresh_eid(ProtocolKind::Keygen, &key_id, &ids);
    let presign_eid = fresh_eid(ProtocolKind::Presign, &key_id, &ids);
    let sign_eid = fresh_eid(ProtocolKind::Sign, &key_id, &ids);
    let runs: Vec<_> = nodes
        .iter()
        .map(|node| {
            let (node, committee, key_id, ids) =
                (node.clone(), committee.clone(), key_id.clone(), ids.clone());
            tokio::spawn(async move {
                let primes = primes_for(&node.node_id());
                let share = node
                    .keygen(key_id.clone(), committee, keygen_eid, primes)
                    .await?;
                node.presign(&share, &ids, presign_eid).await?;
                let online = node
                    .sign_with_presignature(&key_id, presign_eid, b"online")
                    .await?;
                let full = node
                    .sign(&share, &ids, keccak256(b"full"), sign_eid)
                    .await?;
                Ok::<_, tss_core::TssError>((online, full))
            })
        })
        .collect();
    for run in runs {
        run.await
            .unwrap()
            .expect("keygen, presign and both signings succeed");
    }

    let session = |eid: ExecutionId| eid.session_id();
    let kinds: HashMap<SessionId, &str> = [
        (session(keygen_eid.sub("dkg")), "keygen"),
        (session(keygen_eid.sub("aux")), "aux"),
        (session(presign_eid), "presign"),
        (session(presign_eid.sub("online")), "online"),
        (session(sign_eid), "sign"),
    ]
    .into_iter()
    .collect();
    let mut seen = BTreeSet::new();
    let log = log.lock().unwrap();
    // Empty frames are heartbeats of a party that computes (tests/heartbeats.rs), not
    // protocol messages.
    for (sid, bytes) in log.iter().filter(|(_, bytes)| !bytes.is_empty()) {
        let kind = kinds.get(sid).expect("a message of a known session");
        let variant = match *kind {
            "keygen" => match canonical::<KeygenMsg>(bytes) {
                KeygenMsg::Round1(_) => "Round1",
                KeygenMsg::Round2Broad(_) => "Round2Broad",
                KeygenMsg::Round2Uni(_) => "Round2Uni",
                KeygenMsg::Round3(_) => "Round3",
                KeygenMsg::ReliabilityCheck(_) => "ReliabilityCheck",
            },
            "aux" => match canonical::<AuxMsg>(bytes) {
                AuxMsg::Round1(_) => "Round1",
                AuxMsg::Round2(_) => "Round2",
                AuxMsg::Round3(_) => "Round3",
                AuxMsg::ReliabilityCheck(_) => "ReliabilityCheck",
            },
            "online" => {
                canonical::<PartialSig>(bytes);
                "PartialSignature"
            }
            _ => match canonical::<SigningMsg>(bytes) {
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
    let expected = [
        "keygen/Round1",
        "keygen/Round2Broad",
        "keygen/Round2Uni",
        "keygen/Round3",
        "aux/Round1",
        "aux/Round2",
        "aux/Round3",
        "presign/Round1a",
        "presign/Round1b",
        "presign/Round2",
        "presign/Round3",
        "online/PartialSignature",
        "sign/Round1a",
        "sign/Round1b",
        "sign/Round2",
        "sign/Round3",
        "sign/Round4",
    ];
    for kind in expected {
        assert!(
            seen.contains(kind),
            "no {kind} message was sent; saw {seen:?}"
        );
    }
}
