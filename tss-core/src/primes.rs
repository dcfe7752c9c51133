//! Paillier safe primes for aux-info generation, made off the critical path.
//!
//! Safe-prime generation takes seconds to minutes. A [`PrimePool`] generates pairs on a
//! background thread with a userspace CSPRNG (ChaCha20 seeded once from the OS), so a
//! keygen or reshare only takes a ready pair.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

use cggmp21::PregeneratedPrimes;
use parking_lot::Mutex;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::error::{Result, TssError};

/// A pair of safe primes for one party's Paillier key. Secret: redacted in Debug, not
/// Clone.
pub struct PaillierPrimes(pub(crate) PregeneratedPrimes);

impl std::fmt::Debug for PaillierPrimes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PaillierPrimes([REDACTED])")
    }
}

impl PaillierPrimes {
    /// Generates a pair now (slow: seconds to minutes), with a ChaCha20 CSPRNG seeded from
    /// the OS.
    pub fn generate() -> Self {
        let mut rng = ChaCha20Rng::from_entropy();
        Self(PregeneratedPrimes::generate(&mut rng))
    }

    /// Decodes a list of pairs from JSON (as written by the `generate_test_primes`
    /// example). **Test fixtures only**: primes that are public are not secret.
    pub fn list_from_json(json: &str) -> Result<Vec<Self>> {
        let list: Vec<PregeneratedPrimes> =
            serde_json::from_str(json).map_err(|e| TssError::Decode {
                what: "prime fixtures",
                reason: e.to_string(),
            })?;
        Ok(list.into_iter().map(Self).collect())
    }

    /// Encodes pairs as JSON (for writing test fixtures).
    pub fn list_to_json(list: &[Self]) -> String {
        let raw: Vec<&PregeneratedPrimes> = list.iter().map(|p| &p.0).collect();
        serde_json::to_string(&raw).unwrap_or_default()
    }

    /// A copy, for test fixtures that hand the same pair to several runs.
    pub fn clone_fixture(&self) -> Self {
        Self(self.0.clone())
    }
}

/// A pool that keeps `capacity` prime pairs ready, refilled by a background thread.
#[derive(Clone)]
pub struct PrimePool {
    ready: Arc<Mutex<Receiver<PaillierPrimes>>>,
}

impl std::fmt::Debug for PrimePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrimePool")
    }
}

impl PrimePool {
    /// Starts a background thread that keeps `capacity` pairs ready.
    pub fn spawn(capacity: usize) -> Self {
        let (tx, rx) = sync_channel(capacity.max(1));
        std::thread::Builder::new()
            .name("prime-pool".into())
            .spawn(move || {
                let mut rng = ChaCha20Rng::from_entropy();
                loop {
                    let primes = PaillierPrimes(PregeneratedPrimes::generate(&mut rng));
                    if tx.send(primes).is_err() {
                        break;
                    }
                }
            })
            .map(|_| ())
            .unwrap_or_else(|e| tracing::error!(error = %e, "cannot start prime pool thread"));
        Self {
            ready: Arc::new(Mutex::new(rx)),
        }
    }

    /// Takes a ready pair, waiting (off the async executor) if none is ready yet.
    pub async fn take(&self) -> Result<PaillierPrimes> {
        let ready = self.ready.clone();
        tokio::task::spawn_blocking(move || {
            ready.lock().recv().map_err(|_| TssError::PrimePoolClosed)
        })
        .await
        .map_err(|_| TssError::PrimePoolClosed)?
    }
}

/// The public, **insecure** prime pairs committed in `test-data/` (feature
/// `insecure-test-primes`): anyone can read the Paillier secret keys made from them. For
/// tests, benches and devnets only; a build without the feature cannot load them.
#[cfg(feature = "insecure-test-primes")]
pub fn insecure_test_primes() -> Vec<PaillierPrimes> {
    const JSON: &str = include_str!("../test-data/insecure-test-primes.json");
    PaillierPrimes::list_from_json(JSON).unwrap_or_default()
}

/// A [`crate::pool::PrimeSource`] that hands out one fixed pair of the public insecure
/// test primes (feature `insecure-test-primes`; tests and devnets only).
#[cfg(feature = "insecure-test-primes")]
pub struct InsecureTestPrimes {
    pair: PaillierPrimes,
}

#[cfg(feature = "insecure-test-primes")]
impl std::fmt::Debug for InsecureTestPrimes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InsecureTestPrimes([PUBLIC TEST PRIMES])")
    }
}

#[cfg(feature = "insecure-test-primes")]
impl InsecureTestPrimes {
    /// The `index`-th pair (modulo the number of pairs committed; distinct for distinct
    /// indices below that number).
    pub fn new(index: usize) -> Self {
        let mut list = insecure_test_primes();
        let len = list.len().max(1);
        Self {
            pair: list.swap_remove(index % len),
        }
    }

    /// How many distinct pairs are committed.
    pub fn available() -> usize {
        insecure_test_primes().len()
    }
}

#[cfg(feature = "insecure-test-primes")]
#[async_trait::async_trait]
impl crate::pool::PrimeSource for InsecureTestPrimes {
    async fn take(&self) -> Result<PaillierPrimes> {
        Ok(self.pair.clone_fixture())
    }
}
