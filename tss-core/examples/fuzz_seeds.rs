//! Writes the fuzz seeds that hold real protocol messages (run after changing a protocol,
//! a message type or the deterministic-randomness hook):
//!
//! ```sh
//! cargo run -p tss-core --features fuzzing,insecure-test-primes --example fuzz_seeds
//! ```
//!
//! - `fuzz/seeds/transcript.bin`: a 2-of-2 keygen (with aux-info), presign, online
//!   signing and full signing between nodes `[1; 32]` and `[2; 32]`, every message
//!   recorded, under the fuzzing feature's deterministic randomness, plus both key shares
//!   (insecure test primes: worthless keys). The live-party fuzz targets re-run node 1
//!   with the same seed, so node 2's recorded messages stay valid for it.
//! - `fuzz/corpus/wire_frame/real_*`: one transport frame per message kind of that run
//!   and of a real reshare of the key to nodes 1, 2, 3 (dealer commitments and shares,
//!   echoes, confirmations; its aux-info messages have the types of the keygen's).
//!
//! The transcript and the keygen, aux-info and signing frames depend only on the seed
//! below (re-running gives the same bytes); the reshare's randomness is not hooked, so
//! its frames change on every run.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cggmp21::security_level::SecurityLevel128;
use cggmp21::supported_curves::Secp256k1;
use serde::de::DeserializeOwned;
use sha2::Sha256;
use transport::{
    encode_frame, DeliveryKind, InMemoryNetwork, InMemoryTransport, NodeId, SessionChannel,
    SessionConfig, SessionId, SessionSender, Transport, TransportError,
};
use tss_core::fuzzing::{set_deterministic_rng, RecordedMessage, Transcript};
use tss_core::reshare::ReshareMsg;
use tss_core::wire::decode_message;
use tss_core::{
    insecure_test_primes, Committee, Ed25519Signer, ExecutionId, KeyId, KeyShare, ProtocolKind,
    ReshareRequest, ReshareRole, TssNode,
};

type KeygenMsg = cggmp21::keygen::ThresholdMsg<Secp256k1, SecurityLevel128, Sha256>;
type AuxMsg = cggmp21::key_refresh::AuxOnlyMsg<Sha256, SecurityLevel128>;
type SigningMsg = cggmp21::signing::msg::Msg<Secp256k1, Sha256>;
type PartialSig = cggmp21::PartialSignature<Secp256k1>;

/// Fixed seed of the deterministic randomness (the fuzz targets read it from the file).
const SEED: [u8; 32] = *b"tss-sequencer fuzz transcript v1";

type Log = Arc<Mutex<Vec<RecordedMessage>>>;

struct Recording {
    inner: InMemoryTransport,
    log: Log,
}

struct RecordingSender {
    inner: Arc<dyn SessionSender>,
    from: NodeId,
    log: Log,
}

impl SessionSender for RecordingSender {
    fn send(
        &self,
        session: SessionId,
        to: NodeId,
        kind: DeliveryKind,
        payload: Vec<u8>,
    ) -> Result<(), TransportError> {
        self.log.lock().unwrap().push(RecordedMessage {
            session: *session.as_bytes(),
            from: self.from,
            to,
            broadcast: kind == DeliveryKind::Broadcast,
            payload: payload.clone(),
        });
        self.inner.send(session, to, kind, payload)
    }
}

impl Transport for Recording {
    fn local_node(&self) -> NodeId {
        self.inner.local_node()
    }
    fn open_session(
        &self,
        session: SessionId,
        config: SessionConfig,
    ) -> Result<SessionChannel, TransportError> {
        let (log, from) = (self.log.clone(), self.local_node());
        Ok(self
            .inner
            .open_session(session, config)?
            .wrap_sender(|inner| Arc::new(RecordingSender { inner, from, log })))
    }
}

/// Node `k`'s identity key (dealers of a reshare sign with it): ed25519, seed `[k; 32]`.
fn identity(k: u8) -> Ed25519Signer {
    Ed25519Signer::from_seed([k; 32])
}

/// Node `k`'s id: the public key of its [`identity`].
fn node(k: u8) -> NodeId {
    identity(k).node_id()
}

fn eid(protocol: ProtocolKind, key_id: &KeyId, parties: &[NodeId], nonce: u8) -> ExecutionId {
    ExecutionId::derive(protocol, key_id, parties, &[nonce; 32])
}

fn decodes<M: DeserializeOwned>(payload: &[u8]) -> Option<M> {
    decode_message::<M>(node(0), payload).ok()
}

/// Name of a recorded message's kind, for the corpus file name.
fn kind_of(sessions: &BTreeMap<[u8; 32], &'static str>, m: &RecordedMessage) -> String {
    let session = sessions.get(&m.session).copied().unwrap_or("reshare-aux");
    let p = &m.payload;
    let variant = match session {
        "keygen" => decodes::<KeygenMsg>(p).map(|m| match m {
            KeygenMsg::Round1(_) => "round1",
            KeygenMsg::Round2Broad(_) => "round2_broad",
            KeygenMsg::Round2Uni(_) => "round2_uni",
            KeygenMsg::Round3(_) => "round3",
            KeygenMsg::ReliabilityCheck(_) => "reliability_check",
        }),
        "aux" | "reshare-aux" => decodes::<AuxMsg>(p).map(|m| match m {
            AuxMsg::Round1(_) => "round1",
            AuxMsg::Round2(_) => "round2",
            AuxMsg::Round3(_) => "round3",
            AuxMsg::ReliabilityCheck(_) => "reliability_check",
        }),
        "online" => decodes::<PartialSig>(p).map(|_| "partial_signature"),
        "reshare" => decodes::<ReshareMsg>(p).map(|m| match m {
            ReshareMsg::Commitments { .. } => "commitments",
            ReshareMsg::Share { .. } => "share",
            ReshareMsg::Echo { .. } => "echo",
            ReshareMsg::Complaint { .. } => "complaint",
            ReshareMsg::Confirm { .. } => "confirm",
            ReshareMsg::Certificate(_) => "certificate",
            ReshareMsg::Alive => "alive",
        }),
        _ => decodes::<SigningMsg>(p).map(|m| match m {
            SigningMsg::Round1a(_) => "round1a",
            SigningMsg::Round1b(_) => "round1b",
            SigningMsg::Round2(_) => "round2",
            SigningMsg::Round3(_) => "round3",
            SigningMsg::Round4(_) => "round4",
            SigningMsg::ReliabilityCheck(_) => "reliability_check",
        }),
    };
    let variant = variant.unwrap_or_else(|| panic!("a recorded {session} message decodes"));
    format!("{session}_{variant}")
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fuzz_dir: PathBuf = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz"));
    set_deterministic_rng(Some(SEED));

    let network = InMemoryNetwork::new();
    let log: Log = Arc::default();
    let members = vec![node(1), node(2)];
    let recording_node = |k: u8| {
        Arc::new(
            TssNode::new(Arc::new(Recording {
                inner: network.endpoint(node(k)),
                log: log.clone(),
            }))
            .with_idle_timeout(Duration::from_secs(600))
            .with_identity(Arc::new(identity(k)))
            .expect("the identity of the transport's node"),
        )
    };
    let nodes: Vec<Arc<TssNode>> = (1..=3).map(recording_node).collect();
    let key_id = KeyId::new("fuzz-key")?;
    let committee = Committee::new(members.clone(), 2)?;
    let keygen_eid = eid(ProtocolKind::Keygen, &key_id, &members, 1);
    let presign_eid = eid(ProtocolKind::Presign, &key_id, &members, 2);
    let sign_eid = eid(ProtocolKind::Sign, &key_id, &members, 3);
    let online_message = b"fuzz batch".to_vec();
    let sign_digest = tss_core::keccak256(b"fuzz digest");
    let primes_index = vec![0usize, 1];

    let runs: Vec<_> = nodes[..2]
        .iter()
        .zip(&primes_index)
        .map(|(node, &pi)| {
            let (node, committee, key_id, members) = (
                node.clone(),
                committee.clone(),
                key_id.clone(),
                members.clone(),
            );
            let online_message = online_message.clone();
            tokio::spawn(async move {
                let primes = insecure_test_primes().remove(pi);
                let share = node
                    .keygen(key_id.clone(), committee, keygen_eid, primes)
                    .await?;
                node.presign(&share, &members, presign_eid).await?;
                let online = node
                    .sign_with_presignature(&key_id, presign_eid, &online_message)
                    .await?;
                let full = node.sign(&share, &members, sign_digest, sign_eid).await?;
                Ok::<_, tss_core::TssError>((share, online, full))
            })
        })
        .collect();
    let mut shares: Vec<KeyShare> = Vec::new();
    for run in runs {
        let (share, online, full) = run.await??;
        assert_eq!(
            online.recover_address(&tss_core::keccak256(&online_message))?,
            share.ethereum_address()
        );
        assert_eq!(
            full.recover_address(&sign_digest)?,
            share.ethereum_address()
        );
        shares.push(share);
    }
    let messages = std::mem::take(&mut *log.lock().unwrap());
    let transcript = Transcript {
        rng_seed: SEED,
        members: members.clone(),
        key_id: key_id.as_str().to_owned(),
        primes_index,
        keygen_eid: *keygen_eid.as_bytes(),
        presign_eid: *presign_eid.as_bytes(),
        sign_eid: *sign_eid.as_bytes(),
        online_message,
        sign_digest,
        key_shares: shares
            .iter()
            .map(|s| s.to_secret_bytes().map(|b| b.to_vec()))
            .collect::<Result<_, _>>()?,
        address: shares[0].ethereum_address().0,
        messages: messages.clone(),
    };
    let seeds = fuzz_dir.join("seeds");
    std::fs::create_dir_all(&seeds)?;
    std::fs::write(
        seeds.join("transcript.bin"),
        postcard::to_stdvec(&transcript)?,
    )?;

    // A real reshare of the key to nodes 1, 2, 3 (threshold 2), for its messages.
    let new_committee = Committee::new(vec![node(1), node(2), node(3)], 2)?;
    let request = ReshareRequest {
        new_generation: shares[0].public_info().generation.next(),
        old: shares[0].public_info(),
        dealers: members.clone(),
        new_committee,
        eid: eid(ProtocolKind::Reshare, &key_id, &members, 4),
    };
    let shares = Arc::new(shares);
    let reshares: Vec<_> = (0..3)
        .map(|k| {
            let (node, request, shares) = (nodes[k].clone(), request.clone(), shares.clone());
            tokio::spawn(async move {
                let primes = insecure_test_primes().remove(k);
                let role =
                    ReshareRole::for_party(&request, &node.node_id(), shares.get(k), Some(primes))?;
                // The seeds need the messages only: the new share is not stored.
                Box::pin(node.reshare(&request, role))
                    .await?
                    .confirm()
                    .await
            })
        })
        .collect();
    for run in reshares {
        assert!(run.await??.may_retire_old_share());
    }
    let reshare_messages: Vec<RecordedMessage> = std::mem::take(&mut *log.lock().unwrap());

    let mut sessions: BTreeMap<[u8; 32], &'static str> = BTreeMap::new();
    sessions.insert(*keygen_eid.sub("dkg").as_bytes(), "keygen");
    sessions.insert(*keygen_eid.sub("aux").as_bytes(), "aux");
    sessions.insert(*presign_eid.as_bytes(), "presign");
    sessions.insert(*presign_eid.sub("online").as_bytes(), "online");
    sessions.insert(*sign_eid.as_bytes(), "sign");
    sessions.insert(*request.eid.as_bytes(), "reshare");
    let corpus = fuzz_dir.join("corpus/wire_frame");
    std::fs::create_dir_all(&corpus)?;
    let mut written = BTreeMap::new();
    for m in messages.iter().chain(&reshare_messages) {
        if !sessions.contains_key(&m.session) {
            continue; // the reshare's aux-info: the same message types as the keygen's
        }
        let name = format!("real_{}", kind_of(&sessions, m));
        if written.contains_key(&name) {
            continue;
        }
        let kind = if m.broadcast {
            DeliveryKind::Broadcast
        } else {
            DeliveryKind::Direct
        };
        let frame = encode_frame(SessionId::from_bytes(m.session), kind, &m.payload);
        std::fs::write(corpus.join(&name), &frame)?;
        written.insert(name, frame.len());
    }
    println!(
        "transcript: {} messages, {} bytes of payload; largest {} bytes",
        messages.len(),
        messages.iter().map(|m| m.payload.len()).sum::<usize>(),
        messages.iter().map(|m| m.payload.len()).max().unwrap_or(0)
    );
    for (name, len) in written {
        println!("corpus/wire_frame/{name}: {len} bytes");
    }
    Ok(())
}
