//! Bytes each party sends per protocol over libp2p on 127.0.0.1 (issue 16's traffic
//! rows): keygen (DKG then aux-info), aux-info alone, presign, one-round online signing,
//! full signing, and a reshare to the same committee (the first `t` members deal, all `n`
//! receive, run aux-info and confirm).
//!
//! Counted: `Libp2pStats::bytes_sent`, the frames each node hands to its streams with
//! their 4-byte length prefix and 8-byte sequence number, including the protocol
//! heartbeats sent while a run lasts (one small frame per peer every 20 s at the
//! benchmarks' 300 s idle timeout). Not counted: noise, yamux and TCP overhead,
//! acknowledgements, stream handshakes. Counts hardly depend on timing, so this needs no
//! quiet machine.
//!
//! ```text
//! cargo run --release -p benches --example bytes -- <2-of-3|3-of-5|7-of-10>
//! ```
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Instant;

use benches::{identities, Net, Nodes, SIZES};
use tss_core::{Committee, KeyId, ProtocolKind};

/// One row: the parties that took part (indices) and what each of them sent.
fn row(name: &str, nodes: &Nodes, before: &[u64], parties: std::ops::Range<usize>, secs: f64) {
    let after = nodes.libp2p_bytes_sent();
    let sent: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    let mine = &sent[parties.clone()];
    let (min, max) = (mine.iter().min().unwrap(), mine.iter().max().unwrap());
    let mean = mine.iter().sum::<u64>() / mine.len() as u64;
    println!(
        "| {name} | parties {}..={} | {min} | {max} | {mean} | {secs:.1} s | {sent:?}",
        parties.start,
        parties.end - 1
    );
}

fn main() {
    let usage = "usage: bytes <2-of-3|3-of-5|7-of-10>";
    let label = std::env::args().nth(1).expect(usage);
    let size = SIZES.into_iter().find(|s| s.label() == label).expect(usage);
    let (t, n) = (size.t, size.n);
    let rt = benches::runtime();
    rt.block_on(async {
        let key_id = KeyId::new(format!("bytes-{label}")).unwrap();
        let nodes = Nodes::start(Net::Libp2p, &identities(n)).await;
        let all = 0..usize::from(n);
        let signers = 0..usize::from(t);
        println!("| protocol ({label}) | who | min bytes | max bytes | mean bytes | wall time | every node's bytes |");
        println!("| --- | --- | --- | --- | --- | --- | --- |");

        let before = nodes.libp2p_bytes_sent();
        let start = Instant::now();
        let shares = Arc::new(benches::keygen(&nodes, t, &key_id).await);
        row("keygen (DKG + aux-info)", &nodes, &before, all.clone(), start.elapsed().as_secs_f64());

        let before = nodes.libp2p_bytes_sent();
        let start = Instant::now();
        let committee = Committee::new(nodes.ids.clone(), t).expect("committee");
        let eid = benches::fresh_eid(ProtocolKind::AuxInfo, &key_id, &nodes.ids);
        let tasks: Vec<_> = nodes
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let (node, committee) = (node.clone(), committee.clone());
                tokio::spawn(async move {
                    node.aux_info(&committee, eid, benches::primes_for(i)).await
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("aux-info task").expect("aux-info");
        }
        row("aux-info alone", &nodes, &before, all.clone(), start.elapsed().as_secs_f64());

        let before = nodes.libp2p_bytes_sent();
        let start = Instant::now();
        let presig = benches::presign(&nodes, &shares, t).await;
        row("presign", &nodes, &before, signers.clone(), start.elapsed().as_secs_f64());

        let before = nodes.libp2p_bytes_sent();
        let start = Instant::now();
        benches::sign_online(&nodes, &key_id, t, presig, b"L2 batch").await;
        row("online signing", &nodes, &before, signers.clone(), start.elapsed().as_secs_f64());

        let before = nodes.libp2p_bytes_sent();
        let start = Instant::now();
        benches::sign_full(&nodes, &shares, t, [7; 32]).await;
        row("full signing (presign + online)", &nodes, &before, signers.clone(), start.elapsed().as_secs_f64());

        let before = nodes.libp2p_bytes_sent();
        let start = Instant::now();
        benches::reshare(&nodes, &shares, t).await;
        let secs = start.elapsed().as_secs_f64();
        row("reshare, dealers", &nodes, &before, signers.clone(), secs);
        row("reshare, other members", &nodes, &before, usize::from(t)..usize::from(n), secs);

        println!("libp2p messages lost: {}", nodes.libp2p_losses());
        nodes.shutdown().await;
    });
}
