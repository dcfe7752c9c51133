//! A few timed runs of one benchmark row, for the rows too slow for criterion's minimum
//! of 10 samples (keygen and resharing at larger sizes). Same code paths as
//! `benches/protocols.rs`; prints every run and the median. `online` also prints the
//! (untimed for the median) presigning run made before each online run.
//!
//! ```text
//! cargo run --release -p benches --example quick -- <keygen|presign|online|sign|reshare> <t-of-n> <inmem|libp2p|raw> [runs=3]
//! ```
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use benches::{identities, raw, timed, Net, Nodes, SIZES};
use tss_core::KeyId;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: quick <op> <t-of-n> <inmem|libp2p|raw> [runs]";
    let (op, size, imp) = match &args[..] {
        [op, size, imp, ..] => (op.as_str(), size.as_str(), imp.as_str()),
        _ => panic!("{usage}"),
    };
    let runs: usize = args.get(3).map(|r| r.parse().expect(usage)).unwrap_or(3);
    let size = SIZES
        .into_iter()
        .find(|s| s.label() == size)
        .expect("size is 2-of-3, 3-of-5 or 7-of-10");
    let net = match imp {
        "inmem" => Some(Net::InMemory),
        "libp2p" => Some(Net::Libp2p),
        "raw" => None,
        _ => panic!("{usage}"),
    };
    let rt = benches::runtime();
    let key_id = KeyId::new(format!("quick-{}", size.label())).unwrap();
    let ids = identities(size.n);
    let (t, n) = (size.t, size.n);
    let mut times: Vec<Duration> = rt.block_on(async {
        let nodes = match net {
            Some(net) => Some(Nodes::start(net, &ids).await),
            None => None,
        };
        let needs_shares = op != "keygen";
        let shares = match (&nodes, needs_shares) {
            (Some(nodes), true) => Some(Arc::new(benches::keygen(nodes, t, &key_id).await)),
            _ => None,
        };
        let raw_shares = match (&nodes, needs_shares && op != "reshare") {
            (None, true) => Some(Arc::new(raw::keygen(t, n).await)),
            _ => None,
        };
        let mut times = Vec::new();
        for i in 0..runs {
            let d = match (op, &nodes) {
                ("keygen", Some(nodes)) => timed(benches::keygen(nodes, t, &key_id)).await.0,
                ("keygen", None) => timed(raw::keygen(t, n)).await.0,
                ("presign", Some(nodes)) => {
                    let s = shares.as_ref().unwrap();
                    let d = timed(benches::presign(nodes, s, t)).await.0;
                    for node in &nodes.nodes {
                        node.discard_presignatures(&key_id, tss_core::Generation(u64::MAX));
                    }
                    d
                }
                ("presign", None) => timed(raw::presign(raw_shares.as_ref().unwrap(), t)).await.0,
                ("online", Some(nodes)) => {
                    let (p, presig) =
                        timed(benches::presign(nodes, shares.as_ref().unwrap(), t)).await;
                    println!(
                        "presign {} {imp} run {i}: {p:?} (setup of online run {i})",
                        size.label()
                    );
                    timed(benches::sign_online(
                        nodes,
                        &key_id,
                        t,
                        presig,
                        format!("L2 batch {i}").as_bytes(),
                    ))
                    .await
                    .0
                }
                ("online", None) => {
                    let (p, presigs) = timed(raw::presign(raw_shares.as_ref().unwrap(), t)).await;
                    println!(
                        "presign {} {imp} run {i}: {p:?} (setup of online run {i})",
                        size.label()
                    );
                    timed(async { raw::sign_online(presigs, format!("L2 batch {i}").as_bytes()) })
                        .await
                        .0
                }
                ("sign", Some(nodes)) => {
                    timed(benches::sign_full(
                        nodes,
                        shares.as_ref().unwrap(),
                        t,
                        [i as u8; 32],
                    ))
                    .await
                    .0
                }
                ("sign", None) => {
                    timed(raw::sign_full(
                        raw_shares.as_ref().unwrap(),
                        t,
                        [i as u8; 32],
                    ))
                    .await
                    .0
                }
                ("reshare", Some(nodes)) => {
                    timed(benches::reshare(nodes, shares.as_ref().unwrap(), t))
                        .await
                        .0
                }
                ("reshare", None) => timed(raw::aux_info(n)).await.0,
                _ => panic!("{usage}"),
            };
            println!("{op} {} {imp} run {i}: {d:?}", size.label());
            times.push(d);
        }
        if let Some(nodes) = nodes {
            if net == Some(Net::Libp2p) {
                println!("libp2p messages lost: {}", nodes.libp2p_losses());
            }
            nodes.shutdown().await;
        }
        times
    });
    times.sort();
    println!(
        "{op} {} {imp}: median of {} runs {:?} (min {:?}, max {:?})",
        size.label(),
        times.len(),
        times[times.len() / 2],
        times[0],
        times[times.len() - 1]
    );
}
