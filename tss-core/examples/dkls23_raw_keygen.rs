//! The `dkls23` crate's own keygen without tss-core (no transport, no checks of ours):
//! every party in one thread, messages routed by hand as in the crate's own test. It
//! gives the crate's CPU cost of a keygen, for the comparison in BENCHMARKS.md ("Where
//! DKLs23 keygen spends its time"). Run it with
//! `cargo run --release -p tss-core --example dkls23_raw_keygen`.
#![forbid(unsafe_code)]

use dkls23::protocols::dkg::TransmitInitZeroSharePhase2to4;
use dkls23::protocols::{Parameters, PartyIndex};
use dkls23::DkgSession;
use std::collections::BTreeMap;
use std::time::Instant;
type C = k256_dkls23::Secp256k1;

/// One `t`-of-`n` keygen, all parties in this thread.
fn run(t: u8, n: u8) {
    let parameters = Parameters {
        threshold: t,
        share_count: n,
    };
    let sid = [7u8; 32];
    let nn = n as usize;
    let mut sessions: Vec<DkgSession<C>> = (0..n)
        .map(|i| {
            DkgSession::new(
                parameters.clone(),
                PartyIndex::new(i + 1).unwrap(),
                sid.to_vec(),
            )
        })
        .collect();
    let mut d1 = Vec::new();
    for s in &sessions {
        d1.push(s.phase1());
    }
    let mut frag = vec![Vec::new(); nn];
    for row in d1 {
        for j in 0..nn {
            frag[j].push(row[j]);
        }
    }
    let mut pc = Vec::new();
    let mut z2 = Vec::new();
    let mut b2 = BTreeMap::new();
    for (i, s) in sessions.iter_mut().enumerate() {
        let (p, z, b) = s.phase2(&frag[i]).unwrap();
        pc.push(p);
        z2.push(z);
        b2.insert(PartyIndex::new(i as u8 + 1).unwrap(), b);
    }
    let route2 = |i: u8| -> Vec<TransmitInitZeroSharePhase2to4> {
        z2.iter()
            .flatten()
            .filter(|m| m.parties.receiver == PartyIndex::new(i).unwrap())
            .cloned()
            .collect()
    };
    let mut z3 = Vec::new();
    let mut m3 = Vec::new();
    let mut b3 = BTreeMap::new();
    for (i, s) in sessions.iter_mut().enumerate() {
        let (z, m, b) = s.phase3().unwrap();
        z3.push(z);
        m3.push(m);
        b3.insert(PartyIndex::new(i as u8 + 1).unwrap(), b);
    }
    for (i, s) in sessions.into_iter().enumerate() {
        let pi = PartyIndex::new(i as u8 + 1).unwrap();
        let zr: Vec<_> = z3
            .iter()
            .flatten()
            .filter(|m| m.parties.receiver == pi)
            .cloned()
            .collect();
        let mr: Vec<_> = m3
            .iter()
            .flatten()
            .filter(|m| m.parties.receiver == pi)
            .cloned()
            .collect();
        s.phase4(&pc, &route2(i as u8 + 1), &zr, &mr, &b2, &b3, |_| {
            String::new()
        })
        .unwrap();
    }
}

fn main() {
    for (t, n) in [(2u8, 3u8), (3, 5)] {
        for _ in 0..3 {
            let s = Instant::now();
            run(t, n);
            println!(
                "{t}-of-{n}: {:.2} s (all {n} parties, one thread)",
                s.elapsed().as_secs_f64()
            );
        }
    }
}
