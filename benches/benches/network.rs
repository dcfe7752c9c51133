//! Criterion benchmark: signing at 3-of-5 over libp2p on 127.0.0.1 with every link
//! through a delaying TCP proxy (`transport::proxy`), at 0, 10 and 50 ms one-way delay (no
//! jitter): one-round online signing with a fresh presignature (ids
//! `online_delay/3-of-5/<ms>ms`) and full interactive signing, presign + online in one run
//! (ids `full_delay/3-of-5/<ms>ms`). Before the timed runs it prints the bytes each party
//! sent (`Libp2pStats::bytes_sent`: frames with their length prefixes and sequence numbers,
//! without noise/yamux/TCP overhead) for one presign and one online signing; the
//! `bytes` example prints them for every protocol.
//!
//! `BENCH_DELAYS_MS=0,50` restricts the delays. In criterion's `--test` mode each row
//! runs once.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use benches::{identities, timed, Nodes};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use transport::proxy::ProxiedNetwork;
use transport::{Libp2pConfig, Libp2pTransport};
use tss_core::KeyId;

const T: u16 = 3;
const N: u16 = 5;

fn delays() -> Vec<u64> {
    std::env::var("BENCH_DELAYS_MS")
        .ok()
        .map(|v| v.split(',').filter_map(|d| d.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![0, 10, 50])
}

fn bytes_sent(transports: &[Libp2pTransport]) -> Vec<u64> {
    transports.iter().map(|t| t.stats().bytes_sent).collect()
}

fn per_party(before: &[u64], after: &[u64], parties: usize) -> String {
    let sent: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    format!(
        "{:?} bytes (signers {}..{}: mean {} bytes)",
        sent,
        0,
        parties - 1,
        sent[..parties].iter().sum::<u64>() / parties as u64
    )
}

fn bench(c: &mut Criterion) {
    let rt = benches::runtime();
    let ids = identities(N);
    let key_id = KeyId::new("bench-network-3-of-5").unwrap();
    // Shares from one in-memory keygen with the libp2p identities' node ids.
    let shares = Arc::new(rt.block_on(async {
        let nodes = Nodes::in_memory(&ids);
        benches::keygen(&nodes, T, &key_id).await
    }));
    for delay in delays() {
        // The swarms and proxies run on their own runtime (see `Nodes::libp2p`).
        let net_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(benches::swarm_threads())
            .enable_all()
            .build()
            .unwrap();
        let configs = ids
            .iter()
            .map(|id| {
                let mut c = Libp2pConfig::new(id.clone(), "/ip4/127.0.0.1/tcp/0".parse().unwrap());
                c.redial_initial_backoff = Duration::from_millis(50);
                c
            })
            .collect();
        let net = net_rt
            .block_on(ProxiedNetwork::start(configs, Duration::from_secs(30)))
            .expect("proxied network");
        net.set_delay(Duration::from_millis(delay), Duration::ZERO);
        let nodes = Nodes::from_libp2p(net.nodes.clone());
        {
            let before = bytes_sent(&net.nodes);
            let presig = rt.block_on(benches::presign(&nodes, &shares, T));
            let mid = bytes_sent(&net.nodes);
            rt.block_on(benches::sign_online(&nodes, &key_id, T, presig, b"bytes"));
            let after = bytes_sent(&net.nodes);
            eprintln!(
                "3-of-5, {delay} ms: presign sent {}; online sent {}",
                per_party(&before, &mid, usize::from(T)),
                per_party(&mid, &after, usize::from(T))
            );
        }
        let mut i = 0u64;
        let mut g = c.benchmark_group("online_delay");
        g.sampling_mode(SamplingMode::Flat).sample_size(10);
        g.bench_function(format!("3-of-5/{delay}ms"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    i += 1;
                    let message = format!("batch {i}");
                    total += rt.block_on(async {
                        let presig = benches::presign(&nodes, &shares, T).await;
                        timed(benches::sign_online(
                            &nodes,
                            &key_id,
                            T,
                            presig,
                            message.as_bytes(),
                        ))
                        .await
                        .0
                    });
                }
                total
            })
        });
        g.finish();
        let mut g = c.benchmark_group("full_delay");
        g.sampling_mode(SamplingMode::Flat).sample_size(10);
        g.bench_function(format!("3-of-5/{delay}ms"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    i += 1;
                    let mut digest = [0u8; 32];
                    digest[..8].copy_from_slice(&i.to_le_bytes());
                    let signature =
                        rt.block_on(timed(benches::sign_full(&nodes, &shares, T, digest)));
                    total += signature.0;
                }
                total
            })
        });
        g.finish();
        net_rt.block_on(net.shutdown());
        drop(nodes);
        drop(net);
        net_rt.shutdown_background();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
