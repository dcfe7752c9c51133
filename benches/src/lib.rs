//! Fixtures for the criterion benchmarks in `benches/protocols.rs`: committees of
//! `tss-core` nodes on the in-memory transport and on libp2p over 127.0.0.1, and the same
//! CGGMP21 protocols run "raw" (straight `cggmp21` calls over `round_based`'s in-process
//! simulated network, no serialization, no transport) as the baseline.
//!
//! Every party runs as its own tokio task on the caller's runtime, in both ours and raw,
//! so the ratio ours/raw shows what our layers (postcard encoding, session multiplexing,
//! the transport) cost on top of the cryptography.
//!
//! All Paillier primes come from the committed, public, **insecure** test fixture
//! `tss-core/test-data/insecure-test-primes.json` (generating real ones takes
//! minutes); they make no difference to the speed of the protocols themselves.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use cggmp21::supported_curves::Secp256k1;
use cggmp21::{DataToSign, PregeneratedPrimes};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use transport::p2p::libp2p::Multiaddr;
use transport::{InMemoryNetwork, Libp2pConfig, Libp2pIdentity, Libp2pTransport, NodeId};
use tss_core::{
    Committee, EthSignature, ExecutionId, KeyId, KeyShare, PaillierPrimes, ProtocolKind,
    ReshareOutcome, ReshareRequest, ReshareRole, TssNode,
};

/// The committed public test primes (12 pairs).
const PRIMES_JSON: &str = include_str!("../../tss-core/test-data/insecure-test-primes.json");

/// Idle timeout of every benchmark session: generous, nothing should ever wait this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// A committee shape: `t` signers out of `n` members.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size {
    /// Signers needed.
    pub t: u16,
    /// Members.
    pub n: u16,
}

impl Size {
    /// `"t-of-n"`.
    pub fn label(&self) -> String {
        format!("{}-of-{}", self.t, self.n)
    }
}

/// The sizes the issue asks for.
pub const SIZES: [Size; 3] = [
    Size { t: 2, n: 3 },
    Size { t: 3, n: 5 },
    Size { t: 7, n: 10 },
];

/// Which transport our nodes use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Net {
    /// [`InMemoryNetwork`].
    InMemory,
    /// [`Libp2pTransport`] (TCP + noise + yamux) on 127.0.0.1.
    Libp2p,
}

impl Net {
    /// Short name used in benchmark ids.
    pub fn label(&self) -> &'static str {
        match self {
            Net::InMemory => "inmem",
            Net::Libp2p => "libp2p",
        }
    }
}

/// A multi-threaded tokio runtime with one worker per core (the bench machine has 2).
pub fn runtime() -> tokio::runtime::Runtime {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn fixture_primes() -> &'static [PaillierPrimes] {
    static PRIMES: OnceLock<Vec<PaillierPrimes>> = OnceLock::new();
    PRIMES.get_or_init(|| PaillierPrimes::list_from_json(PRIMES_JSON).expect("fixture primes"))
}

/// Fixture primes of party `i` (0-based; distinct for up to 12 parties).
pub fn primes_for(i: usize) -> PaillierPrimes {
    let list = fixture_primes();
    list[i % list.len()].clone_fixture()
}

/// The same fixture primes as raw `cggmp21` values, for the baseline.
pub fn raw_primes_for(i: usize) -> PregeneratedPrimes {
    static RAW: OnceLock<Vec<PregeneratedPrimes>> = OnceLock::new();
    let list = RAW.get_or_init(|| serde_json::from_str(PRIMES_JSON).expect("fixture primes"));
    list[i % list.len()].clone()
}

/// libp2p identities of parties `0..n` (deterministic seeds). Their node ids are used on
/// both transports, so one keygen's shares serve both.
pub fn identities(n: u16) -> Vec<Libp2pIdentity> {
    (0..n)
        .map(|i| Libp2pIdentity::from_seed([i as u8 + 1; 32]).expect("identity"))
        .collect()
}

/// A fresh execution id.
pub fn fresh_eid(protocol: ProtocolKind, key_id: &KeyId, parties: &[NodeId]) -> ExecutionId {
    ExecutionId::random(protocol, key_id, parties, &mut rand::thread_rng())
}

/// Worker threads of the runtime the libp2p swarms share: `BENCH_SWARM_THREADS`, default
/// one per core (like the parties' runtime). With a single thread, all n swarms' message
/// handling is serialised, which made 3-of-5 online signing about 0.5 ms slower here.
pub fn swarm_threads() -> usize {
    std::env::var("BENCH_SWARM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        })
}

/// `n` tss-core nodes on one transport.
pub struct Nodes {
    /// The nodes, in committee order.
    pub nodes: Vec<Arc<TssNode>>,
    /// Their ids, in committee order.
    pub ids: Vec<NodeId>,
    libp2p: Vec<Libp2pTransport>,
    /// Runtime of the libp2p swarms (see [`Nodes::libp2p`]).
    net_runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Nodes {
    fn drop(&mut self) {
        if let Some(rt) = self.net_runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Nodes {
    /// Nodes of `identities` on a fresh [`InMemoryNetwork`].
    pub fn in_memory(identities: &[Libp2pIdentity]) -> Self {
        let network = InMemoryNetwork::new();
        let ids: Vec<NodeId> = identities.iter().map(|i| i.node_id()).collect();
        let nodes = ids
            .iter()
            .zip(identities)
            .map(|(id, identity)| {
                Arc::new(
                    TssNode::new(Arc::new(network.endpoint(*id)))
                        .with_identity(Arc::new(identity.clone()))
                        .expect("the endpoint's identity")
                        .with_idle_timeout(IDLE_TIMEOUT),
                )
            })
            .collect();
        Self {
            nodes,
            ids,
            libp2p: Vec::new(),
            net_runtime: None,
        }
    }

    /// Nodes of `identities` on libp2p over 127.0.0.1, all connected to each other.
    ///
    /// The swarms run on their own runtime ([`swarm_threads`] workers), not on the
    /// caller's: here all n parties share one process, and CGGMP21's long CPU-bound rounds
    /// would otherwise starve the swarms (with the earlier request-response transport a
    /// starved swarm dropped messages whose acknowledgement timed out, and runs hung). In a
    /// real deployment each process runs one party.
    pub async fn libp2p(identities: &[Libp2pIdentity]) -> Self {
        let net_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(swarm_threads())
            .thread_name("libp2p-swarms")
            .enable_all()
            .build()
            .expect("libp2p runtime");
        // Each node listens on a port the OS picks; then every node learns every address.
        let ids: Vec<NodeId> = identities.iter().map(|i| i.node_id()).collect();
        let mut transports = Vec::new();
        for identity in identities {
            let any_port: Multiaddr = "/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr");
            let mut config = Libp2pConfig::new(identity.clone(), any_port);
            config.redial_initial_backoff = Duration::from_millis(50);
            config.redial_max_backoff = Duration::from_millis(400);
            let started = net_runtime.spawn(Libp2pTransport::start(config));
            transports.push(started.await.expect("start task").expect("libp2p start"));
        }
        let addrs: Vec<Multiaddr> = transports
            .iter()
            .map(|t| t.listen_addrs().into_iter().next().expect("listen address"))
            .collect();
        for t in &transports {
            for (id, addr) in ids.iter().zip(&addrs) {
                t.add_peer(*id, addr.clone()).expect("add peer");
            }
        }
        for t in &transports {
            t.wait_for_peers(&ids, Duration::from_secs(30))
                .await
                .expect("libp2p peers connect");
        }
        let nodes = transports
            .iter()
            .zip(identities)
            .map(|(t, identity)| {
                Arc::new(
                    TssNode::new(Arc::new(t.clone()))
                        .with_identity(Arc::new(identity.clone()))
                        .expect("the transport's identity")
                        .with_idle_timeout(IDLE_TIMEOUT),
                )
            })
            .collect();
        Self {
            nodes,
            ids,
            libp2p: transports,
            net_runtime: Some(net_runtime),
        }
    }

    /// Nodes on already connected libp2p transports (in committee order), whose swarms
    /// run on a runtime the caller keeps alive (e.g. `transport::proxy::ProxiedNetwork`).
    pub fn from_libp2p(transports: Vec<Libp2pTransport>) -> Self {
        use transport::Transport;
        let ids = transports.iter().map(|t| t.local_node()).collect();
        let nodes = transports
            .iter()
            .map(|t| Arc::new(TssNode::new(Arc::new(t.clone())).with_idle_timeout(IDLE_TIMEOUT)))
            .collect();
        Self {
            nodes,
            ids,
            libp2p: transports,
            net_runtime: None,
        }
    }

    /// Nodes on `net`.
    pub async fn start(net: Net, identities: &[Libp2pIdentity]) -> Self {
        match net {
            Net::InMemory => Self::in_memory(identities),
            Net::Libp2p => Self::libp2p(identities).await,
        }
    }

    /// Stops libp2p swarms (no-op in memory).
    pub async fn shutdown(&self) {
        for t in &self.libp2p {
            t.shutdown().await;
        }
    }

    /// libp2p messages lost so far (drops on full queues; frames on failed streams are
    /// retransmitted, not lost), summed over the nodes: non-zero means a run may have
    /// stalled on a lost message.
    pub fn libp2p_losses(&self) -> u64 {
        self.libp2p
            .iter()
            .map(|t| t.stats().dropped_queue_full)
            .sum()
    }

    /// Bytes each node has handed to its libp2p streams so far, in committee order
    /// (`Libp2pStats::bytes_sent`: frames with their length prefixes and sequence numbers;
    /// not noise, yamux or TCP overhead). Empty in memory.
    pub fn libp2p_bytes_sent(&self) -> Vec<u64> {
        self.libp2p.iter().map(|t| t.stats().bytes_sent).collect()
    }

    /// The first `t` node ids: the signer set used by every signing benchmark.
    pub fn signers(&self, t: u16) -> Vec<NodeId> {
        self.ids[..usize::from(t)].to_vec()
    }
}

async fn join_all<T: Send + 'static>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await.expect("party task panicked"));
    }
    out
}

/// Our keygen (DKG then aux-info) at every node; returns the shares in committee order.
pub async fn keygen(nodes: &Nodes, t: u16, key_id: &KeyId) -> Vec<KeyShare> {
    let committee = Committee::new(nodes.ids.clone(), t).expect("committee");
    let eid = fresh_eid(ProtocolKind::Keygen, key_id, &nodes.ids);
    let tasks = nodes
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let (node, committee, key_id) = (node.clone(), committee.clone(), key_id.clone());
            tokio::spawn(async move { node.keygen(key_id, committee, eid, primes_for(i)).await })
        })
        .collect();
    join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("keygen"))
        .collect()
}

/// Our presigning by the first `t` nodes; the presignature stays in their memory.
pub async fn presign(nodes: &Nodes, shares: &Arc<Vec<KeyShare>>, t: u16) -> ExecutionId {
    let signers = nodes.signers(t);
    let eid = fresh_eid(ProtocolKind::Presign, shares[0].key_id(), &signers);
    let tasks = (0..usize::from(t))
        .map(|i| {
            let (node, shares, signers) = (nodes.nodes[i].clone(), shares.clone(), signers.clone());
            tokio::spawn(async move { node.presign(&shares[i], &signers, eid).await })
        })
        .collect();
    for r in join_all(tasks).await {
        r.expect("presign");
    }
    eid
}

/// Our one-round online signing of `message` (its keccak256) by the first `t` nodes with
/// presignature `presig`.
pub async fn sign_online(
    nodes: &Nodes,
    key_id: &KeyId,
    t: u16,
    presig: ExecutionId,
    message: &[u8],
) -> EthSignature {
    let tasks = (0..usize::from(t))
        .map(|i| {
            let (node, key_id, message) =
                (nodes.nodes[i].clone(), key_id.clone(), message.to_vec());
            tokio::spawn(
                async move { node.sign_with_presignature(&key_id, presig, &message).await },
            )
        })
        .collect();
    let sigs: Vec<EthSignature> = join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("online signing"))
        .collect();
    sigs[0]
}

/// Our full interactive signing (presign + online) by the first `t` nodes.
pub async fn sign_full(
    nodes: &Nodes,
    shares: &Arc<Vec<KeyShare>>,
    t: u16,
    digest: [u8; 32],
) -> EthSignature {
    let signers = nodes.signers(t);
    let eid = fresh_eid(ProtocolKind::Sign, shares[0].key_id(), &signers);
    let tasks = (0..usize::from(t))
        .map(|i| {
            let (node, shares, signers) = (nodes.nodes[i].clone(), shares.clone(), signers.clone());
            tokio::spawn(async move { node.sign(&shares[i], &signers, digest, eid).await })
        })
        .collect();
    let sigs: Vec<EthSignature> = join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("signing"))
        .collect();
    sigs[0]
}

/// DKLs23 keygen at every node; returns the shares in committee order.
pub async fn dkls23_keygen(nodes: &Nodes, t: u16, key_id: &KeyId) -> Vec<tss_core::KeyShare> {
    let committee = Committee::new(nodes.ids.clone(), t).expect("committee");
    let eid = fresh_eid(ProtocolKind::Keygen, key_id, &nodes.ids);
    let tasks = nodes
        .nodes
        .iter()
        .map(|node| {
            let (node, committee, key_id) = (node.clone(), committee.clone(), key_id.clone());
            tokio::spawn(async move { node.dkls23_keygen(key_id, committee, eid).await })
        })
        .collect();
    join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("DKLs23 keygen"))
        .collect()
}

/// DKLs23 full signing (three rounds, no presignature) by the first `t` nodes.
pub async fn dkls23_sign(
    nodes: &Nodes,
    shares: &Arc<Vec<tss_core::KeyShare>>,
    t: u16,
    digest: [u8; 32],
) -> EthSignature {
    let signers = nodes.signers(t);
    let eid = fresh_eid(ProtocolKind::Sign, shares[0].key_id(), &signers);
    let tasks = (0..usize::from(t))
        .map(|i| {
            let (node, shares, signers) = (nodes.nodes[i].clone(), shares.clone(), signers.clone());
            tokio::spawn(async move { node.sign(&shares[i], &signers, digest, eid).await })
        })
        .collect();
    let sigs: Vec<EthSignature> = join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("DKLs23 signing"))
        .collect();
    sigs[0]
}

/// Our resharing of the key to the same `t`-of-`n` committee (a share refresh): the
/// first `t` members deal, all `n` receive new shares (running the protocol's completion:
/// CGGMP21's aux-info generation, DKLs23's pairwise setup) and confirm. The new shares are not stored. The old shares stay valid, so this can repeat.
pub async fn reshare(nodes: &Nodes, shares: &Arc<Vec<KeyShare>>, t: u16) -> Vec<ReshareOutcome> {
    let new_committee = Committee::new(nodes.ids.clone(), t).expect("committee");
    let dealers = nodes.signers(t);
    let request = ReshareRequest {
        new_generation: shares[0].public_info().generation.next(),
        old: shares[0].public_info(),
        dealers: dealers.clone(),
        new_committee,
        eid: fresh_eid(ProtocolKind::Reshare, shares[0].key_id(), &nodes.ids),
    };
    let tasks = (0..nodes.nodes.len())
        .map(|i| {
            let (node, shares, request) = (nodes.nodes[i].clone(), shares.clone(), request.clone());
            let dealer = i < usize::from(t);
            tokio::spawn(async move {
                let protocol = shares[i].protocol().implementation();
                let primes = protocol.needs_paillier_primes().then(|| primes_for(i));
                let role = match dealer {
                    true => ReshareRole::DealerAndNewMember {
                        old_share: &shares[i],
                        primes,
                    },
                    false => ReshareRole::NewMember { primes },
                };
                // The new share is not stored (a benchmark): confirm at once.
                Box::pin(node.reshare(&request, role))
                    .await?
                    .confirm()
                    .await
            })
        })
        .collect();
    join_all(tasks)
        .await
        .into_iter()
        .map(|r| {
            let outcome = r.expect("reshare");
            assert!(outcome.may_retire_old_share(), "every member confirmed");
            outcome
        })
        .collect()
}

/// Runs `f` and returns how long it took.
pub async fn timed<T, F: std::future::Future<Output = T>>(f: F) -> (Duration, T) {
    let start = Instant::now();
    let out = f.await;
    (start.elapsed(), out)
}

/// The baseline: the same CGGMP21 protocols called directly, every party a tokio task,
/// messages passed by `round_based::sim::async_env::Network` (an in-process broadcast
/// channel: no serialization, no sessions, no transport).
pub mod raw {
    use super::*;
    use round_based::sim::async_env::{MockedDelivery, Network};
    use round_based::MpcParty;

    /// A raw key share.
    pub type RawKeyShare = cggmp21::KeyShare<Secp256k1>;
    /// A raw presignature.
    pub type RawPresignature = cggmp21::Presignature<Secp256k1>;

    /// Enough buffered messages for any protocol here (a lagging reader fails otherwise).
    const CAPACITY: usize = 20_000;

    fn rng() -> ChaCha20Rng {
        ChaCha20Rng::from_entropy()
    }

    /// One party's end of the simulated network.
    type Party<M> = MpcParty<M, MockedDelivery<M>>;

    /// Connects `n` parties to one simulated network, then spawns `run(i, party)` for
    /// each as a tokio task; returns their outputs in party order. Every party joins
    /// before any starts: one that joined later would miss the broadcasts sent before.
    async fn run_parties<M, T, Fut>(n: u16, run: impl Fn(u16, Party<M>) -> Fut) -> Vec<T>
    where
        M: Clone + Send + Unpin + 'static,
        T: Send + 'static,
        Fut: std::future::Future<Output = T> + Send + 'static,
    {
        let mut net = Network::with_capacity(CAPACITY);
        let parties: Vec<_> = (0..n).map(|_| net.add_party()).collect();
        let tasks = parties
            .into_iter()
            .zip(0..)
            .map(|(party, i)| tokio::spawn(run(i, party)))
            .collect();
        join_all(tasks).await
    }

    fn eid_bytes() -> [u8; 32] {
        let mut b = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut b);
        b
    }

    /// Threshold DKG then aux-info generation, like [`super::keygen`].
    pub async fn keygen(t: u16, n: u16) -> Vec<RawKeyShare> {
        let eid = eid_bytes();
        let incomplete = run_parties(n, |i, party| async move {
            cggmp21::keygen::<Secp256k1>(cggmp21::ExecutionId::new(&eid), i, n)
                .set_threshold(t)
                .start(&mut rng(), party)
                .await
                .expect("raw keygen")
        })
        .await;
        let aux = aux_info(n).await;
        incomplete
            .into_iter()
            .zip(aux)
            .map(|parts| cggmp21::KeyShare::from_parts(parts).expect("raw key share"))
            .collect()
    }

    /// Aux-info generation alone for `n` parties (the bulk of a reshare's work; there is
    /// no raw reshare in cggmp21 to compare ours with).
    pub async fn aux_info(n: u16) -> Vec<cggmp21::key_share::AuxInfo> {
        let eid = eid_bytes();
        run_parties(n, |i, party| {
            let primes = raw_primes_for(usize::from(i));
            async move {
                cggmp21::aux_info_gen(cggmp21::ExecutionId::new(&eid), i, n, primes)
                    .start(&mut rng(), party)
                    .await
                    .expect("raw aux info")
            }
        })
        .await
    }

    /// Presigning by parties `0..t`.
    pub async fn presign(shares: &Arc<Vec<RawKeyShare>>, t: u16) -> Vec<RawPresignature> {
        let eid = eid_bytes();
        let indices: Arc<Vec<u16>> = Arc::new((0..t).collect());
        run_parties(t, |i, party| {
            let (shares, indices) = (shares.clone(), indices.clone());
            async move {
                cggmp21::signing(
                    cggmp21::ExecutionId::new(&eid),
                    i,
                    &indices,
                    &shares[usize::from(i)],
                )
                .generate_presignature(&mut rng(), party)
                .await
                .expect("raw presign")
            }
        })
        .await
    }

    /// The online round, computed locally: every signer hashes `message` (keccak256, as
    /// ours does), issues its partial signature and combines all of them (no delivery at
    /// all: pure computation).
    pub fn sign_online(
        presigs: Vec<RawPresignature>,
        message: &[u8],
    ) -> cggmp21::Signature<Secp256k1> {
        let data = DataToSign::from_scalar(
            cggmp21::generic_ec::Scalar::<Secp256k1>::from_be_bytes_mod_order(tss_core::keccak256(
                message,
            )),
        );
        let partials: Vec<_> = presigs
            .into_iter()
            .map(|p| p.issue_partial_signature(data))
            .collect();
        let mut sig = None;
        for _ in 0..partials.len() {
            sig = Some(cggmp21::PartialSignature::combine(&partials).expect("raw combine"));
        }
        sig.expect("at least one signer")
    }

    /// Full interactive signing by parties `0..t`.
    pub async fn sign_full(
        shares: &Arc<Vec<RawKeyShare>>,
        t: u16,
        digest: [u8; 32],
    ) -> cggmp21::Signature<Secp256k1> {
        let eid = eid_bytes();
        let indices: Arc<Vec<u16>> = Arc::new((0..t).collect());
        let data = DataToSign::from_scalar(
            cggmp21::generic_ec::Scalar::<Secp256k1>::from_be_bytes_mod_order(digest),
        );
        run_parties(t, |i, party| {
            let (shares, indices) = (shares.clone(), indices.clone());
            async move {
                cggmp21::signing(
                    cggmp21::ExecutionId::new(&eid),
                    i,
                    &indices,
                    &shares[usize::from(i)],
                )
                .sign(&mut rng(), party, data)
                .await
                .expect("raw signing")
            }
        })
        .await
        .remove(0)
    }
}
