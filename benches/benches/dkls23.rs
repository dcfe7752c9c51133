//! Criterion benchmarks of the second protocol, DKLs23: keygen, full signing (three
//! rounds, no presignature) and resharing to the same committee at 2-of-3, 3-of-5 and
//! 7-of-10, over the in-memory transport
//! (`inmem`) and over libp2p on 127.0.0.1 (`libp2p`). The CGGMP21 rows of the same
//! operations are in `protocols.rs` (`keygen/...`, `sign/...`, `reshare/...`), same ids
//! and sizes.
//!
//! Ids are `dkls23-<operation>/<t-of-n>/<transport>`, e.g.
//! `cargo bench -p benches --bench dkls23 -- 'dkls23-sign/3-of-5'`. `BENCH_SIZES` and
//! `BENCH_NETS` (`inmem,libp2p`) restrict the rows as in `protocols.rs`; in criterion's
//! `--test` mode only 2-of-3 runs unless `BENCH_SIZES` says otherwise.
//!
//! Every sample is one protocol run timed with `iter_custom` (keygen for the signing rows
//! runs once per size and transport, outside the measurement).
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use benches::{identities, timed, Net, Nodes, Size, SIZES};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use tss_core::KeyId;

fn list_env(name: &str) -> Option<Vec<String>> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect())
}

fn sizes() -> Vec<Size> {
    let test_mode = std::env::args().any(|a| a == "--test");
    match list_env("BENCH_SIZES") {
        Some(wanted) => SIZES
            .into_iter()
            .filter(|s| wanted.contains(&s.label()))
            .collect(),
        None if test_mode => vec![SIZES[0]],
        None => SIZES.to_vec(),
    }
}

fn nets() -> Vec<Net> {
    let all = [Net::InMemory, Net::Libp2p];
    match list_env("BENCH_NETS") {
        Some(wanted) => all
            .into_iter()
            .filter(|n| wanted.iter().any(|w| w == n.label()))
            .collect(),
        None => all.to_vec(),
    }
}

fn digest(i: u64) -> [u8; 32] {
    let mut d = [0xa5; 32];
    d[..8].copy_from_slice(&i.to_be_bytes());
    d
}

fn all(c: &mut Criterion) {
    let rt = benches::runtime();
    let mut keygen = c.benchmark_group("dkls23-keygen");
    keygen
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_millis(1));
    let mut started = Vec::new();
    for size in sizes() {
        let ids = identities(size.n);
        let key_id = KeyId::new(format!("dkls23-bench-{}", size.label())).unwrap();
        for net in nets() {
            let nodes = Arc::new(rt.block_on(Nodes::start(net, &ids)));
            keygen.bench_function(format!("{}/{}", size.label(), net.label()), |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| {
                            rt.block_on(timed(benches::dkls23_keygen(&nodes, size.t, &key_id)))
                                .0
                        })
                        .sum()
                })
            });
            started.push((size, net, key_id.clone(), nodes));
        }
    }
    keygen.finish();

    let mut sign = c.benchmark_group("dkls23-sign");
    sign.sampling_mode(SamplingMode::Flat)
        .sample_size(30)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_millis(1));
    for (size, net, key_id, nodes) in &started {
        let shares = Arc::new(rt.block_on(benches::dkls23_keygen(nodes, size.t, key_id)));
        sign.bench_function(format!("{}/{}", size.label(), net.label()), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|i| {
                        rt.block_on(timed(benches::dkls23_sign(
                            nodes,
                            &shares,
                            size.t,
                            digest(i),
                        )))
                        .0
                    })
                    .sum()
            })
        });
    }
    sign.finish();

    // Resharing to the same committee (the first t deal, all n receive and run the
    // pairwise setup, then confirm); the old shares stay valid, so it repeats.
    let mut reshare = c.benchmark_group("dkls23-reshare");
    reshare
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_millis(1));
    for (size, net, key_id, nodes) in &started {
        let shares = Arc::new(rt.block_on(benches::dkls23_keygen(nodes, size.t, key_id)));
        reshare.bench_function(format!("{}/{}", size.label(), net.label()), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        rt.block_on(timed(benches::reshare(nodes, &shares, size.t)))
                            .0
                    })
                    .sum()
            })
        });
    }
    reshare.finish();
    for (_, _, _, nodes) in started {
        rt.block_on(nodes.shutdown());
    }
}

criterion_group!(benches, all);
criterion_main!(benches);
