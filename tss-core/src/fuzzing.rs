//! Fuzzing support (feature `fuzzing`, never for production builds): deterministic
//! protocol randomness and the recorded-transcript format of the fuzz seeds.
//!
//! With [`set_deterministic_rng`], every keygen, aux-info, presign and signing run of a
//! [`crate::TssNode`] draws its randomness from a ChaCha20 stream seeded with
//! `SHA-256(seed || node id || execution id)` instead of the OS. A party that is re-run
//! with the same seed, execution ids and inputs then sends exactly the messages it sent
//! when the transcript was recorded, so the peers' recorded messages stay valid and a
//! fuzzer can drive it through every round (`fuzz/`, `examples/fuzz_seeds.rs`).

use parking_lot::Mutex;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use transport::NodeId;

use crate::ids::ExecutionId;

static SEED: Mutex<Option<[u8; 32]>> = Mutex::new(None);

/// Makes every protocol run of this process deterministic (`Some`) or random again
/// (`None`, the default). Insecure by design: fuzzing and seed generation only.
pub fn set_deterministic_rng(seed: Option<[u8; 32]>) {
    *SEED.lock() = seed;
}

/// The randomness of one protocol run of `node` under `eid`.
pub(crate) fn run_rng(node: NodeId, eid: &ExecutionId) -> Option<ChaCha20Rng> {
    let seed = (*SEED.lock())?;
    let mut h = Sha256::new();
    h.update(b"tss-core/fuzzing-rng/v1\0");
    h.update(seed);
    h.update(node.as_bytes());
    h.update(eid.as_bytes());
    Some(ChaCha20Rng::from_seed(h.finalize().into()))
}

/// One message as a party sent it, recorded on its way out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedMessage {
    /// Session (execution id's session id) it belongs to.
    pub session: [u8; 32],
    /// The sender.
    pub from: NodeId,
    /// The recipient (for a broadcast: each recipient gets its own record).
    pub to: NodeId,
    /// `true` for a broadcast.
    pub broadcast: bool,
    /// The encoded protocol message.
    pub payload: Vec<u8>,
}

/// A recorded 2-of-2 run (keygen with aux-info, presign, online signing, full signing)
/// under a deterministic seed: what the fuzz targets replay, mutated, into one live
/// party. Written by `examples/fuzz_seeds.rs`; insecure test primes only.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Transcript {
    /// Seed given to [`set_deterministic_rng`].
    pub rng_seed: [u8; 32],
    /// The committee, in order (2 members, threshold 2).
    pub members: Vec<NodeId>,
    /// Key id used.
    pub key_id: String,
    /// Index into the insecure test primes of each member's Paillier primes.
    pub primes_index: Vec<usize>,
    /// Execution id bytes of the keygen, presign and full signing runs.
    pub keygen_eid: [u8; 32],
    /// Presign run (its online signing uses the sub-id "online").
    pub presign_eid: [u8; 32],
    /// Full signing run.
    pub sign_eid: [u8; 32],
    /// Message given to `sign_with_presignature`.
    pub online_message: Vec<u8>,
    /// Digest given to `sign`.
    pub sign_digest: [u8; 32],
    /// Each member's key share (`KeyShare::to_secret_bytes`), in committee order.
    pub key_shares: Vec<Vec<u8>>,
    /// The Ethereum address of the key.
    pub address: [u8; 20],
    /// Every message sent, in send order.
    pub messages: Vec<RecordedMessage>,
}
