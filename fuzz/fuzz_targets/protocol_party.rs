//! A live protocol party fed arbitrary messages: one party of a real tss-core reshare
//! (node D, a new member that is not a dealer), on the in-memory transport, whose peers
//! are simulated. The fuzzer's messages are delivered into D's session as coming from
//! legitimate participants (authenticated by the transport, as a malicious peer's would
//! be), optionally mixed with the honest dealers' round-1 messages and everyone's echo so
//! that later rounds are reachable. The run must end with `Err(TssError::..)` (it can
//! never complete: the other parties are not really there) and must never panic. A short
//! idle timeout bounds every run.
//!
//! Input: byte 0 = flags (bit 0/2: honest commitments of dealer A/B, bit 1/3: honest
//! share A->D / B->D, bit 4: honest echoes from A, B, C, bit 5: honest messages before
//! the fuzzed ones); then records `sender (u8) | kind (u8) | len (u8) | payload` until
//! the input ends (sender % 4: A, B, C, or a non-participant; kind & 1: direct/broadcast).
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use cggmp21::generic_ec::{Point, Scalar};
use cggmp21::supported_curves::Secp256k1;
use libfuzzer_sys::fuzz_target;
use transport::{DeliveryKind, InMemoryNetwork, InboundMessage, NodeId};
use tss_core::reshare::{
    commitments_signing_bytes, dealer_commitments_digest, share_signing_bytes, ReshareMsg,
    SignedCommitments,
};
use tss_core::wire::encode_message;
use tss_core::{
    Committee, Ed25519Signer, ExecutionId, Generation, IdentitySigner, KeyId, PaillierPrimes,
    PublicKeyInfo, ReshareRequest, ReshareRole, TssNode,
};

type S = Scalar<Secp256k1>;
type P = Point<Secp256k1>;

const PRIMES_JSON: &str = include_str!("../../tss-core/test-data/insecure-test-primes.json");
const IDLE: Duration = Duration::from_millis(3);

/// Node `k`'s identity key (dealers sign their shares with it).
fn signer(k: u8) -> Ed25519Signer {
    Ed25519Signer::from_seed([k; 32])
}

fn node(k: u8) -> NodeId {
    signer(k).node_id()
}

struct Setup {
    rt: tokio::runtime::Runtime,
    primes: PaillierPrimes,
    request: ReshareRequest,
    /// Honest round-1 messages of dealers A and B: (commitments, share for D).
    dealt: Vec<(ReshareMsg, ReshareMsg)>,
    echo: ReshareMsg,
}

fn point_of(i: u64) -> S {
    S::from(i + 1)
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let primes = PaillierPrimes::list_from_json(PRIMES_JSON)
            .unwrap()
            .remove(3);
        // Old key: 2-of-3 over A, B, C with secret polynomial f(x) = 11 + 7x.
        let f = |x: &S| S::from(11u64) + S::from(7u64) * x;
        let g = P::generator();
        let old_committee = Committee::new(vec![node(1), node(2), node(3)], 2).unwrap();
        let old = PublicKeyInfo {
            key_id: KeyId::new("fuzz-key").unwrap(),
            generation: Generation(0),
            committee: old_committee,
            public_key: (g * f(&S::zero())).to_bytes(true).as_ref().to_vec(),
            public_shares: (0..3)
                .map(|i| (g * f(&point_of(i))).to_bytes(true).as_ref().to_vec())
                .collect(),
            protocol: Default::default(),
        };
        let new_committee = Committee::new(vec![node(1), node(2), node(3), node(4)], 3).unwrap();
        let request = ReshareRequest {
            new_generation: old.generation.next(),
            old,
            dealers: vec![node(1), node(2)],
            new_committee,
            eid: ExecutionId::from_bytes([9; 32]),
        };
        let context = context(&request);
        // Lagrange coefficients at 0 of dealers at points 1 and 2: 2 and -1.
        let lambdas = [S::from(2u64), -S::from(1u64)];
        let dealt = (0..2)
            .map(|j| {
                let w = lambdas[j] * f(&point_of(j as u64));
                let coefs = [w, S::from(100 + j as u64), S::from(200 + j as u64)];
                let commitments: Vec<P> = coefs.iter().map(|c| g * c).collect();
                let x = point_of(3); // D's evaluation point
                let share = coefs.iter().rev().fold(S::zero(), |acc, c| acc * x + c);
                let dealer = node(j as u8 + 1);
                let digest = dealer_commitments_digest(&dealer, &context, &commitments);
                let signature = signer(j as u8 + 1).sign(&share_signing_bytes(
                    &context,
                    &dealer,
                    &node(4),
                    3,
                    &share,
                    &digest,
                ));
                let view = SignedCommitments {
                    digest,
                    signature: signer(j as u8 + 1)
                        .sign(&commitments_signing_bytes(&context, &digest)),
                };
                (
                    ReshareMsg::Commitments {
                        context,
                        commitments,
                        signature: view.signature.clone(),
                    },
                    ReshareMsg::Share { share, signature },
                    view,
                )
            })
            .collect::<Vec<_>>();
        let echo = ReshareMsg::Echo {
            views: dealt.iter().map(|(_, _, view)| view.clone()).collect(),
        };
        let dealt = dealt.into_iter().map(|(c, s, _)| (c, s)).collect();
        Setup {
            rt,
            primes,
            request,
            dealt,
            echo,
        }
    })
}

fn context(r: &ReshareRequest) -> [u8; 32] {
    r.context()
}

fn msg(from: NodeId, kind: DeliveryKind, m: &ReshareMsg) -> InboundMessage {
    InboundMessage {
        from,
        kind,
        payload: encode_message(m).unwrap(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let s = setup();
    let mut fuzzed = Vec::new();
    while let [sender, kind, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let from = match sender % 4 {
            0 => node(1),
            1 => node(2),
            2 => node(3),
            _ => node(5),
        };
        let kind = if kind & 1 == 0 {
            DeliveryKind::Direct
        } else {
            DeliveryKind::Broadcast
        };
        fuzzed.push(InboundMessage {
            from,
            kind,
            payload: tail[..len].to_vec(),
        });
        rest = &tail[len..];
    }
    let mut honest = Vec::new();
    for (j, (commitments, share)) in s.dealt.iter().enumerate() {
        let dealer = node(j as u8 + 1);
        if flags & (1 << (2 * j)) != 0 {
            honest.push(msg(dealer, DeliveryKind::Broadcast, commitments));
        }
        if flags & (1 << (2 * j + 1)) != 0 {
            honest.push(msg(dealer, DeliveryKind::Direct, share));
        }
    }
    if flags & 0x10 != 0 {
        for k in 1..=3 {
            honest.push(msg(node(k), DeliveryKind::Broadcast, &s.echo));
        }
    }
    let all: Vec<InboundMessage> = if flags & 0x20 != 0 {
        honest.into_iter().chain(fuzzed).collect()
    } else {
        fuzzed.into_iter().chain(honest).collect()
    };

    let network = InMemoryNetwork::new();
    for k in 1..=3 {
        network.endpoint(node(k)); // so D's own sends have somewhere to go
    }
    let d = network.endpoint(node(4));
    let session = s.request.eid.session_id();
    for m in all {
        // Held until D opens the session; refusals (non-participant, backlog full) are
        // the transport doing its job.
        let _ = d.hub().deliver(session, m);
    }
    let party = TssNode::new(std::sync::Arc::new(d)).with_idle_timeout(IDLE);
    let role = ReshareRole::NewMember {
        primes: Some(s.primes.clone_fixture()),
    };
    let result = s.rt.block_on(async {
        // The new share (if any) is not stored: nothing here may confirm anyway.
        party.reshare(&s.request, role).await?.confirm().await
    });
    match result {
        Err(e) => {
            // `FUZZ_DEBUG=1`: show how each input ended (to check seeds reach deep rounds).
            if std::env::var_os("FUZZ_DEBUG").is_some() {
                eprintln!("protocol_party: flags {flags:#04x}: {e}");
            }
        }
        Ok(outcome) => panic!("a reshare without real peers completed: {outcome:?}"),
    }
});
