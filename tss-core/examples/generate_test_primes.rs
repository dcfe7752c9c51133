//! Writes `count` Paillier safe-prime pairs as JSON, for **test fixtures only**.
//!
//! `cargo run -p tss-core --example generate_test_primes -- 12 test-data/insecure-test-primes.json`
//!
//! Primes in a public file are not secret: never use them for real keys. Production nodes
//! use [`tss_core::PrimePool`], which generates fresh pairs in the background.

use tss_core::PaillierPrimes;

fn main() {
    let mut args = std::env::args().skip(1);
    let count: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(12);
    let path = args
        .next()
        .unwrap_or_else(|| "test-data/insecure-test-primes.json".into());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_thread = count.div_ceil(threads);
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                (0..per_thread)
                    .map(|_| PaillierPrimes::generate())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<PaillierPrimes> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("prime generation thread panicked"))
        .collect();
    all.truncate(count);
    std::fs::write(&path, PaillierPrimes::list_to_json(&all))
        .expect("cannot write the fixture file");
    println!("wrote {} prime pairs to {path}", all.len());
}
