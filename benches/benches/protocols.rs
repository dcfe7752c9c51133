//! Criterion benchmarks: keygen, presign, online signing, full signing and resharing at
//! 2-of-3, 3-of-5 and 7-of-10, over the in-memory transport (`inmem`), over libp2p on
//! 127.0.0.1 (`libp2p`), and raw cggmp21 (`raw`) as the baseline.
//!
//! Ids are `<operation>/<t-of-n>/<transport>`, so e.g.
//! `cargo bench -p benches -- 'online/3-of-5'` runs one row. Environment:
//! - `BENCH_SIZES=2-of-3,3-of-5` restricts the sizes (default: all three);
//! - `BENCH_NETS=inmem,raw` restricts the transports (default: inmem,libp2p,raw).
//!
//! In criterion's `--test` mode (`cargo bench -p benches -- --test`, each benchmark run
//! once, for CI) only 2-of-3 runs unless `BENCH_SIZES` says otherwise.
//!
//! Every sample is one protocol run (flat sampling, one iteration per sample) timed with
//! `iter_custom`, so setup (keygen for the signing benchmarks, presignatures for online
//! signing) is never inside the measurement, and criterion's median is the median run.
#![forbid(unsafe_code)]

use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use benches::raw::{self, RawKeyShare};
use benches::{identities, timed, Net, Nodes, Size, SIZES};
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, SamplingMode};
use transport::Libp2pIdentity;
use tss_core::{KeyId, KeyShare};

/// What a benchmark row runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Impl {
    Ours(Net),
    Raw,
}

impl Impl {
    fn label(&self) -> &'static str {
        match self {
            Impl::Ours(net) => net.label(),
            Impl::Raw => "raw",
        }
    }
}

fn test_mode() -> bool {
    std::env::args().any(|a| a == "--test")
}

fn list_env(name: &str) -> Option<Vec<String>> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect())
}

fn sizes() -> Vec<Size> {
    match list_env("BENCH_SIZES") {
        Some(wanted) => SIZES
            .into_iter()
            .filter(|s| wanted.contains(&s.label()))
            .collect(),
        None if test_mode() => vec![SIZES[0]],
        None => SIZES.to_vec(),
    }
}

fn impls() -> Vec<Impl> {
    let all = [
        Impl::Ours(Net::InMemory),
        Impl::Ours(Net::Libp2p),
        Impl::Raw,
    ];
    match list_env("BENCH_NETS") {
        Some(wanted) => all
            .into_iter()
            .filter(|i| wanted.iter().any(|w| w == i.label()))
            .collect(),
        None => all.to_vec(),
    }
}

/// Per-size state, made lazily (only for rows that run) and kept for the whole process.
struct Fixture {
    size: Size,
    identities: Vec<Libp2pIdentity>,
    key_id: KeyId,
    shares: OnceCell<Arc<Vec<KeyShare>>>,
    raw_shares: OnceCell<Arc<Vec<RawKeyShare>>>,
    nodes: RefCell<HashMap<Net, Arc<Nodes>>>,
}

impl Fixture {
    fn new(size: Size) -> Self {
        Self {
            size,
            identities: identities(size.n),
            key_id: KeyId::new(format!("bench-{}", size.label())).unwrap(),
            shares: OnceCell::new(),
            raw_shares: OnceCell::new(),
            nodes: RefCell::new(HashMap::new()),
        }
    }

    fn nodes(&self, rt: &tokio::runtime::Runtime, net: Net) -> Arc<Nodes> {
        self.nodes
            .borrow_mut()
            .entry(net)
            .or_insert_with(|| Arc::new(rt.block_on(Nodes::start(net, &self.identities))))
            .clone()
    }

    /// Our shares, from one in-memory keygen (their node ids are the libp2p ones, so the
    /// libp2p nodes use them too).
    fn shares(&self, rt: &tokio::runtime::Runtime) -> Arc<Vec<KeyShare>> {
        self.shares
            .get_or_init(|| {
                let nodes = self.nodes(rt, Net::InMemory);
                Arc::new(rt.block_on(benches::keygen(&nodes, self.size.t, &self.key_id)))
            })
            .clone()
    }

    fn raw_shares(&self, rt: &tokio::runtime::Runtime) -> Arc<Vec<RawKeyShare>> {
        self.raw_shares
            .get_or_init(|| Arc::new(rt.block_on(raw::keygen(self.size.t, self.size.n))))
            .clone()
    }
}

struct Ctx {
    rt: tokio::runtime::Runtime,
    fixtures: Vec<Fixture>,
    impls: Vec<Impl>,
}

fn digest(i: u64) -> [u8; 32] {
    let mut d = [0x5a; 32];
    d[..8].copy_from_slice(&i.to_be_bytes());
    d
}

/// What online signing signs: message bytes (each signer hashes them itself).
fn message(i: u64) -> Vec<u8> {
    format!("L2 batch {i}").into_bytes()
}

/// One protocol run per sample; `samples` samples after one warm-up run.
fn group<'a>(c: &'a mut Criterion, name: &str, samples: usize) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(samples)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_millis(1));
    g
}

/// Registers one benchmark row per size and implementation in group `name`: `samples`
/// samples of one protocol run each, timed by `run(fixture, implementation, sample index)`
/// (which returns the measured time, setup excluded).
fn bench_rows(
    c: &mut Criterion,
    ctx: &Ctx,
    name: &str,
    samples: impl Fn(Size) -> usize,
    run: impl Fn(&Fixture, Impl, u64) -> Duration,
) {
    let mut g = group(c, name, 10);
    for f in &ctx.fixtures {
        // Criterion's minimum is 10.
        g.sample_size(samples(f.size).max(10));
        for &imp in &ctx.impls {
            // cggmp21 has no resharing of threshold keys; the raw reshare row is aux-info
            // generation for the new committee alone, the bulk of a reshare's work.
            let id = match imp {
                Impl::Raw if name == "reshare" => format!("{}/raw-aux-info-only", f.size.label()),
                _ => format!("{}/{}", f.size.label(), imp.label()),
            };
            g.bench_function(id, |b| {
                b.iter_custom(|iters| (0..iters).map(|i| run(f, imp, i)).sum())
            });
        }
    }
    g.finish();
}

fn bench_keygen(c: &mut Criterion, ctx: &Ctx) {
    bench_rows(
        c,
        ctx,
        "keygen",
        |_| 10,
        |f, imp, _| match imp {
            Impl::Ours(net) => {
                let nodes = f.nodes(&ctx.rt, net);
                ctx.rt
                    .block_on(timed(benches::keygen(&nodes, f.size.t, &f.key_id)))
                    .0
            }
            Impl::Raw => ctx.rt.block_on(timed(raw::keygen(f.size.t, f.size.n))).0,
        },
    );
}

fn bench_presign(c: &mut Criterion, ctx: &Ctx) {
    bench_rows(
        c,
        ctx,
        "presign",
        |_| 10,
        |f, imp, _| match imp {
            Impl::Ours(net) => {
                let (nodes, shares) = (f.nodes(&ctx.rt, net), f.shares(&ctx.rt));
                let (time, _) = ctx
                    .rt
                    .block_on(timed(benches::presign(&nodes, &shares, f.size.t)));
                // Do not let unused presignatures pile up in memory.
                for node in &nodes.nodes {
                    node.discard_presignatures(&f.key_id, tss_core::Generation(u64::MAX));
                }
                time
            }
            Impl::Raw => {
                let shares = f.raw_shares(&ctx.rt);
                ctx.rt.block_on(timed(raw::presign(&shares, f.size.t))).0
            }
        },
    );
}

fn bench_online(c: &mut Criterion, ctx: &Ctx) {
    // Each sample needs a fresh presignature, made (untimed) right before it.
    let samples = |size: Size| if size.t > 3 { 10 } else { 20 };
    bench_rows(c, ctx, "online", samples, |f, imp, i| match imp {
        Impl::Ours(net) => {
            let (nodes, shares) = (f.nodes(&ctx.rt, net), f.shares(&ctx.rt));
            ctx.rt.block_on(async {
                let presig = benches::presign(&nodes, &shares, f.size.t).await;
                timed(benches::sign_online(
                    &nodes,
                    &f.key_id,
                    f.size.t,
                    presig,
                    &message(i),
                ))
                .await
                .0
            })
        }
        Impl::Raw => {
            let shares = f.raw_shares(&ctx.rt);
            let presigs = ctx.rt.block_on(raw::presign(&shares, f.size.t));
            let start = std::time::Instant::now();
            std::hint::black_box(raw::sign_online(presigs, &message(i)));
            start.elapsed()
        }
    });
}

fn bench_sign(c: &mut Criterion, ctx: &Ctx) {
    bench_rows(
        c,
        ctx,
        "sign",
        |_| 10,
        |f, imp, i| match imp {
            Impl::Ours(net) => {
                let (nodes, shares) = (f.nodes(&ctx.rt, net), f.shares(&ctx.rt));
                ctx.rt
                    .block_on(timed(benches::sign_full(
                        &nodes,
                        &shares,
                        f.size.t,
                        digest(i),
                    )))
                    .0
            }
            Impl::Raw => {
                let shares = f.raw_shares(&ctx.rt);
                ctx.rt
                    .block_on(timed(raw::sign_full(&shares, f.size.t, digest(i))))
                    .0
            }
        },
    );
}

fn bench_reshare(c: &mut Criterion, ctx: &Ctx) {
    bench_rows(
        c,
        ctx,
        "reshare",
        |_| 10,
        |f, imp, _| match imp {
            Impl::Ours(net) => {
                let (nodes, shares) = (f.nodes(&ctx.rt, net), f.shares(&ctx.rt));
                ctx.rt
                    .block_on(timed(benches::reshare(&nodes, &shares, f.size.t)))
                    .0
            }
            Impl::Raw => ctx.rt.block_on(timed(raw::aux_info(f.size.n))).0,
        },
    );
}

/// The Ethereum conversion every signer does after combining partial signatures:
/// verifying `(r, s)` against the public key and deriving `v` (pure computation), beside
/// k256's own public-key recovery for scale.
fn bench_eth_conversion(c: &mut Criterion) {
    use k256::ecdsa::{SigningKey, VerifyingKey};
    use tss_core::EthSignature;

    let mut g = c.benchmark_group("eth_conversion");
    let key = SigningKey::from_slice(&[0x42; 32]).unwrap();
    let vk = *key.verifying_key();
    // Several digests, so both recovery ids occur.
    let cases: Vec<_> = (0u64..8)
        .map(|i| {
            let d = digest(i);
            let (sig, recid) = key.sign_prehash_recoverable(&d).unwrap();
            (d, sig, recid)
        })
        .collect();
    let mut next = cases.iter().cycle();
    g.bench_function("from_rs", |b| {
        b.iter(|| {
            let (d, sig, _) = next.next().unwrap();
            let (r, s) = sig.split_bytes();
            EthSignature::from_rs(r.into(), s.into(), d, &vk).unwrap()
        })
    });
    g.bench_function("k256_recover_from_prehash", |b| {
        b.iter(|| {
            let (d, sig, recid) = next.next().unwrap();
            VerifyingKey::recover_from_prehash(d, sig, *recid).unwrap()
        })
    });
    g.finish();
}

fn all(c: &mut Criterion) {
    bench_eth_conversion(c);
    let ctx = Ctx {
        rt: benches::runtime(),
        fixtures: sizes().into_iter().map(Fixture::new).collect(),
        impls: impls(),
    };
    bench_online(c, &ctx);
    bench_presign(c, &ctx);
    bench_sign(c, &ctx);
    bench_keygen(c, &ctx);
    bench_reshare(c, &ctx);
    for f in &ctx.fixtures {
        for (net, nodes) in f.nodes.borrow().iter() {
            if *net == Net::Libp2p {
                eprintln!(
                    "{}: libp2p messages lost during the run: {}",
                    f.size.label(),
                    nodes.libp2p_losses()
                );
            }
            ctx.rt.block_on(nodes.shutdown());
        }
    }
}

criterion_group!(benches, all);
criterion_main!(benches);
