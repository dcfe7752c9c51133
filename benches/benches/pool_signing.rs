//! Criterion benchmark: node-level signing latency of a `tss_core::pool::PoolNode` pool
//! over libp2p on 127.0.0.1, from the proposer's `propose_sign` call to the signature it
//! returns (checked there to recover to the key's address). Unlike `protocols.rs` and
//! `network.rs`, which drive `TssNode`s directly, this includes the pool's own work:
//! signer selection, the proposal and every member's validation of it, the presignature
//! bookkeeping, and the run's control messages.
//!
//! Rows (ids `pool_sign/...` and `pool_presign/...`):
//! - `pool_sign/<t>-of-<n>/presignature`: the proposer holds a ready presignature of its
//!   own (refilled with `fill_presignatures` before every sample, untimed): one-round
//!   signing.
//! - `pool_sign/<t>-of-<n>/full`: no presignature: full interactive signing.
//! - `pool_presign/<t>-of-<n>`: one `propose_presign` (the refill rate of a node's pool).
//! - `pool_sign/4-of-5-one-down/full`: a 4-of-5 pool with member 2 killed (its `PoolNode`
//!   shut down, its transport stopped) before the timed runs; signer selection passes it
//!   over, so the four live members sign (full signing).
//!
//! Sizes 3-of-5 and 7-of-10 (`BENCH_POOL_SIZES=3-of-5,7-of-10` restricts them; the
//! 7-of-10 keygen alone takes minutes). `BENCH_POOL_ROWS=presignature,full,presign,failover`
//! restricts the rows (the failover row needs its own 4-of-5 keygen). Keygen (in memory,
//! untimed) comes first. In criterion's `--test` mode each row runs once.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use benches::{identities, Nodes};
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, SamplingMode};
use transport::p2p::libp2p::Multiaddr;
use transport::{ConnectionState, Libp2pConfig, Libp2pIdentity, Libp2pTransport, NodeId};
use tss_core::pool::{
    AcceptEverything, MemoryShareStore, PoolConfig, PoolNode, PrimeSource, ShareStore,
};
use tss_core::{KeyId, KeyShare, PaillierPrimes};

/// Member `i`'s committed insecure fixture primes (only needed by keygen and reshare,
/// which this benchmark does not run through the pool).
struct FixturePrimes(usize);

#[async_trait]
impl PrimeSource for FixturePrimes {
    async fn take(&self) -> tss_core::Result<PaillierPrimes> {
        Ok(benches::primes_for(self.0))
    }
}

/// The pool sizes of the signing rows: `BENCH_POOL_SIZES` (e.g. `3-of-5,7-of-10`), by
/// default both. (The failover row is always 4-of-5.)
fn sizes() -> Vec<(u16, u16)> {
    std::env::var("BENCH_POOL_SIZES")
        .unwrap_or_else(|_| "3-of-5,7-of-10".into())
        .split(',')
        .map(|size| {
            let (t, n) = size
                .trim()
                .split_once("-of-")
                .expect("BENCH_POOL_SIZES: sizes like 3-of-5");
            (
                n.parse().expect("BENCH_POOL_SIZES: n"),
                t.parse().expect("BENCH_POOL_SIZES: t"),
            )
        })
        .collect()
}

fn rows() -> Vec<String> {
    std::env::var("BENCH_POOL_ROWS")
        .ok()
        .map(|v| v.split(',').map(|r| r.trim().to_string()).collect())
        .unwrap_or_else(|| {
            ["presignature", "full", "presign", "failover"]
                .map(String::from)
                .to_vec()
        })
}

/// A pool of `PoolNode`s on libp2p transports over 127.0.0.1. The swarms run on their own
/// runtime (see `benches::Nodes::libp2p` for why); the pool nodes on the caller's.
struct Pool {
    ids: Vec<NodeId>,
    nodes: Vec<PoolNode>,
    transports: Vec<Libp2pTransport>,
    net_rt: tokio::runtime::Runtime,
}

impl Pool {
    fn start(
        rt: &tokio::runtime::Runtime,
        identities: &[Libp2pIdentity],
        shares: &[KeyShare],
        key_id: &KeyId,
    ) -> Pool {
        let net_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(benches::swarm_threads())
            .thread_name("libp2p-swarms")
            .enable_all()
            .build()
            .expect("libp2p runtime");
        let ids: Vec<NodeId> = identities.iter().map(|i| i.node_id()).collect();
        let transports: Vec<Libp2pTransport> = net_rt.block_on(async {
            let mut transports = Vec::new();
            for identity in identities {
                let any_port: Multiaddr = "/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr");
                let mut config = Libp2pConfig::new(identity.clone(), any_port);
                config.redial_initial_backoff = Duration::from_millis(50);
                config.redial_max_backoff = Duration::from_millis(400);
                transports.push(Libp2pTransport::start(config).await.expect("libp2p start"));
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
            transports
        });
        let nodes = rt.block_on(async {
            let mut nodes = Vec::new();
            for (i, (share, transport)) in shares.iter().zip(&transports).enumerate() {
                let store = Arc::new(MemoryShareStore::new());
                store.stage(share, b"state").await.expect("stage");
                store
                    .activate(key_id, share.generation(), b"state", None)
                    .await
                    .expect("activate");
                let node = PoolNode::start(
                    PoolConfig::new(ids.clone()).with_session_idle_timeout(benches::IDLE_TIMEOUT),
                    Arc::new(transport.clone()),
                    Arc::new(identities[i].clone()),
                    Arc::new(AcceptEverything),
                    store as Arc<dyn ShareStore>,
                    Arc::new(FixturePrimes(i)),
                    std::slice::from_ref(key_id),
                )
                .await
                .expect("pool node start");
                nodes.push(node);
            }
            nodes
        });
        Pool {
            ids,
            nodes,
            transports,
            net_rt,
        }
    }

    /// Kills member `i`: its pool node stops and its transport shuts down; returns once
    /// member 0's transport reports it down.
    fn kill(&self, i: usize) {
        self.nodes[i].shutdown();
        self.net_rt.block_on(self.transports[i].shutdown());
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.transports[0].connection_state(&self.ids[i]) == ConnectionState::Connected {
            assert!(
                Instant::now() < deadline,
                "the killed member still looks connected"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn shutdown(self) {
        for node in &self.nodes {
            node.shutdown();
        }
        self.net_rt.block_on(async {
            for t in &self.transports {
                t.shutdown().await;
            }
        });
        self.net_rt.shutdown_background();
    }
}

/// Shares of one in-memory `t`-of-`n` keygen (`n` = the number of identities) with the
/// libp2p identities' node ids.
fn keygen(
    rt: &tokio::runtime::Runtime,
    ids: &[Libp2pIdentity],
    t: u16,
    key_id: &KeyId,
) -> Vec<KeyShare> {
    let started = Instant::now();
    let shares = rt.block_on(async {
        let nodes = Nodes::in_memory(ids);
        benches::keygen(&nodes, t, key_id).await
    });
    eprintln!(
        "keygen {t}-of-{} (untimed setup): {:.1?}",
        ids.len(),
        started.elapsed()
    );
    shares
}

/// Every sample is one run (flat sampling, 1 iteration per sample): the measurement time
/// is far below one run, so criterion takes its 10-sample minimum.
fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1));
    g
}

fn bench(c: &mut Criterion) {
    let rows = rows();
    let want = |r: &str| rows.iter().any(|x| x == r);
    let rt = benches::runtime();
    let mut counter = 0u64;
    let mut request = move || {
        counter += 1;
        format!("batch {counter}").into_bytes()
    };

    for (n, t) in sizes() {
        if !(want("presignature") || want("full") || want("presign")) {
            break;
        }
        let size = format!("{t}-of-{n}");
        let ids = identities(n);
        let key_id = KeyId::new(format!("bench-pool-{size}")).unwrap();
        let shares = keygen(&rt, &ids, t, &key_id);
        let pool = Pool::start(&rt, &ids, &shares, &key_id);
        let proposer = &pool.nodes[0];
        if want("full") {
            let mut g = group(c, "pool_sign");
            g.bench_function(format!("{size}/full"), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        assert_eq!(proposer.presignatures_ready(&key_id), 0);
                        let req = request();
                        let started = Instant::now();
                        let out = rt
                            .block_on(proposer.propose_sign(&key_id, req, None))
                            .expect("full signing");
                        total += started.elapsed();
                        assert!(out.presignature.is_none());
                        assert_eq!(out.signers.len(), usize::from(t));
                    }
                    total
                })
            });
            g.finish();
        }
        if want("presignature") {
            let mut g = group(c, "pool_sign");
            g.bench_function(format!("{size}/presignature"), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        rt.block_on(proposer.fill_presignatures(&key_id, 1))
                            .expect("fill presignatures");
                        let req = request();
                        let started = Instant::now();
                        let out = rt
                            .block_on(proposer.propose_sign(&key_id, req, None))
                            .expect("signing with a presignature");
                        total += started.elapsed();
                        assert!(out.presignature.is_some(), "a presignature was used");
                    }
                    total
                })
            });
            g.finish();
        }
        if want("presign") {
            let mut g = group(c, "pool_presign");
            g.bench_function(&size, |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let started = Instant::now();
                        rt.block_on(proposer.propose_presign(&key_id))
                            .expect("presign");
                        total += started.elapsed();
                    }
                    total
                })
            });
            g.finish();
            eprintln!(
                "presignatures now held by member 0: {}",
                proposer.presignatures_ready(&key_id)
            );
        }
        pool.shutdown();
    }

    if want("failover") {
        let t = 4;
        let ids = identities(5);
        let key_id = KeyId::new("bench-pool-4-of-5").unwrap();
        let shares = keygen(&rt, &ids, t, &key_id);
        let pool = Pool::start(&rt, &ids, &shares, &key_id);
        // Member 2 is the first the proposer (member 1) would pick after itself.
        pool.kill(1);
        let down = pool.ids[1];
        let proposer = &pool.nodes[0];
        let mut g = group(c, "pool_sign");
        g.bench_function("4-of-5-one-down/full", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let req = request();
                    let started = Instant::now();
                    let out = rt
                        .block_on(proposer.propose_sign(&key_id, req, None))
                        .expect("four live members sign");
                    total += started.elapsed();
                    assert!(
                        !out.signers.contains(&down),
                        "the dead member is not a signer"
                    );
                    assert_eq!(out.skipped, vec![down]);
                    assert_eq!(out.attempts, 1);
                }
                total
            })
        });
        g.finish();
        pool.shutdown();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
