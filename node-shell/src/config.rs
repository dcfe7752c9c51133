//! TOML configuration of `node-shell run`.
//!
//! See `examples/node.toml` for a complete, commented file. Defaults:
//!
//! | field | default |
//! | --- | --- |
//! | `node.key_id` | `"sequencer-key"` (the one key, with role `batches` on `l1.inbox`, unless `[[keys]]` lists the keys) |
//! | `keys` | absent: one key, `node.key_id` (see **Keys** below) |
//! | `keys[].inbox` | `l1.inbox` for the role `batches`; required for every other role |
//! | `keys[].protocol` | `"cggmp21"`; or `"dkls23"` (every node must name the same; see README, "Choosing a protocol") |
//! | `node.rpc_listen` | `"127.0.0.1:8645"` (must be a loopback address) |
//! | `rpc.token_file` | `<node.data_dir>/rpc-token` (created with mode 0600 if missing; refused if group or others may read it) |
//! | `rpc.allowed_hosts` | `["127.0.0.1:<port>", "localhost:<port>", "[::1]:<port>"]` of `node.rpc_listen` |
//! | `rpc.metrics_public` | `true` (`GET /metrics` needs no token; it holds no secrets) |
//! | `rpc.unsafe_raw_digest_signing` | `false` (`POST /sign` of a caller's 32-byte digest is refused, and so are such proposals from peers) |
//! | `l1.confirmations` | `2` (a height is used once this many blocks are on top of it) |
//! | `l1.poll_seconds` | `2` |
//! | `l1.proposal_wait_seconds` | `30` (how long a follower waits for its own L1 view to reach a proposal's height before refusing it) |
//! | `l1.leader_timeout_seconds` | `120` (after this long without the change taking effect, the next member in line proposes it) |
//! | `keystore.passphrase_env` | `"NODE_SHELL_PASSPHRASE"` (used unless `keystore.key_file` is set) |
//! | `keystore.insecure_fast_kdf` | `false` |
//! | `transport.session_idle_timeout_secs` | `120` |
//! | `pool.signer_silence_seconds` | `5` (a signer that shows no sign of life this long, or whose connection drops, is set aside and another set signs) |
//! | `pool.sign_attempts` | `3` (signer sets tried per signing request) |
//! | `pool.presignatures` | `0` (off: every batch is signed with full interactive signing; `n > 0`: this node keeps `n` presignatures of its own ready, so a batch it proposes is signed in one round; with `[batches]` only while it is one of the likely next producers; see [`crate::coordinator`]) |
//! | `pool.epoch_seconds` | `60` (wall-clock epochs of `GET /status` without `[batches]`; with it, epochs are spans of L2 blocks) |
//! | `batches` | absent: the node neither produces nor co-signs batches |
//! | `batches.epoch_blocks` | `100` |
//! | `batches.max_batch_blocks` | `10` |
//! | `batches.interval_l1_blocks` | `5` |
//! | `batches.stall_l1_blocks` | `30` (failover window, see [`crate::schedule`]) |
//! | `batches.max_fee_per_gas_gwei` / `max_priority_fee_gwei` / `gas_limit` | `50` / `2` / `200000` (what the producer offers) |
//! | `batches.max_fee_cap_gwei` / `max_priority_fee_cap_gwei` | `500` / `50` (the most a follower signs) |
//! | `batches.min_gas_limit` / `max_gas_limit` | `60000` / `1000000` |
//! | `pool.min_members` | `4` (see below) |
//! | `pool.max_members` | `100` |
//! | `tss.insecure_test_primes_index` | unset: real safe primes are generated in the background (set: the public test primes built in with the `insecure-test-primes` feature; refused by builds without it) |
//!
//! Unknown fields are errors, so typos are caught at start.
//!
//! **Membership comes from L1 only.** `[l1]` names the RPC endpoint and the
//! `SequencerStaking` / `BatchInbox` contracts; the pool is the set of sequencers with
//! stake locked there (the contract enforces the admin whitelist and the stake bounds).
//! There is no genesis member list and no whitelist in this file; `[pool]` keeps the
//! size bounds, the epoch length and the producer schedule's seed.
//!
//! **Keys.** A node serves one or more keys, all held by the same pool (the sequencers
//! locked on L1), each with its own key generations, presignatures and L1 *role*:
//!
//! ```toml
//! [[keys]]
//! id = "batches-key"
//! role = "batches"        # its address is SequencerStaking.roleAddress(keccak256("batches"))
//!                         # (= mpcAddress()); inbox defaults to l1.inbox
//! [[keys]]
//! id = "state-key"
//! role = "state"
//! inbox = "0x..."         # a BatchInbox deployed for the role keccak256("state")
//! protocol = "dkls23"     # its threshold protocol (default "cggmp21")
//! ```
//!
//! Each key has its own keygen (once enough sequencers are locked and no address is
//! registered for its role), its own reshares, and with `[batches]` its own producer on
//! its own inbox (the same `[batches]` policy for every key). Ids, roles and inboxes must
//! be distinct. `node.key_id` is a shorthand for one key with role `batches`; it cannot be
//! combined with `[[keys]]`.
//!
//! **Pool size.** The signing threshold is `floor(2n/3) + 1`, which is 3-of-3 at `n = 3`:
//! losing any one member then makes the key unusable and un-resharable. That is why
//! `pool.min_members` defaults to 4 (3-of-4 survives the loss of one member). A smaller
//! value is accepted, with a warning at start. A pool that loses more than `n - t`
//! members needs a new keygen, hence a new address registered on L1 by the admin: see
//! [`crate::pool`].

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use transport::NodeId;

use crate::error::{Error, Result};
use crate::pool::PoolRules;

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct FileConfig {
    /// `[node]`
    pub node: NodeSection,
    /// `[keystore]`
    #[serde(default)]
    pub keystore: KeystoreSection,
    /// `[transport]`
    pub transport: TransportSection,
    /// `[[peers]]`: every known sequencer (pool members and whitelisted candidates).
    #[serde(default)]
    pub peers: Vec<PeerSection>,
    /// `[pool]`
    pub pool: PoolSection,
    /// `[tss]`
    #[serde(default)]
    pub tss: TssSection,
    /// `[rpc]`: access control of the HTTP API.
    #[serde(default)]
    pub rpc: RpcSection,
    /// `[l1]`: where the pool's membership is recorded.
    pub l1: L1Section,
    /// `[batches]`: the L2 batches the pool signs and appends to the inbox (absent: this
    /// node neither produces nor co-signs batches).
    #[serde(default)]
    pub batches: Option<BatchesSection>,
    /// `[[keys]]`: the keys this node serves (absent: one key, `node.key_id`).
    #[serde(default)]
    pub keys: Vec<KeySection>,
}

/// `[[keys]]`: one key the node serves.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct KeySection {
    /// The key's id (the same on every node).
    pub id: String,
    /// Its L1 role: its address is `SequencerStaking.roleAddress(keccak256(role))`.
    pub role: String,
    /// The `BatchInbox` it appends to (deployed for its role); default `l1.inbox` for the
    /// role `batches`, required for any other role.
    #[serde(default)]
    pub inbox: Option<String>,
    /// Its threshold protocol: `"cggmp21"` (default) or `"dkls23"` (see README, "Choosing
    /// a protocol"). Every node of the pool must name the same.
    #[serde(default)]
    pub protocol: Option<String>,
}

/// The L1 role whose address `SequencerStaking.mpcAddress()` returns and the inbox of
/// `[l1]` accepts.
pub const BATCHES_ROLE: &str = "batches";

/// One key a node serves: its id, its L1 role, the inbox it appends to and its threshold
/// protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeySettings {
    /// The key's id.
    pub id: String,
    /// Its L1 role's name.
    pub role: String,
    /// The `BatchInbox` of its role.
    pub inbox: alloy::primitives::Address,
    /// Its threshold protocol (default CGGMP21).
    pub protocol: tss_core::Protocol,
}

impl KeySettings {
    /// Key `id` with role `role`, appending to `inbox`, with the default protocol
    /// (CGGMP21; see [`KeySettings::with_protocol`]).
    pub fn new(
        id: impl Into<String>,
        role: impl Into<String>,
        inbox: alloy::primitives::Address,
    ) -> Self {
        Self {
            id: id.into(),
            role: role.into(),
            inbox,
            protocol: tss_core::Protocol::default(),
        }
    }

    /// The same key with threshold protocol `protocol`.
    pub fn with_protocol(mut self, protocol: tss_core::Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// The role's id on L1: `keccak256(role)`.
    pub fn role_id(&self) -> alloy::primitives::B256 {
        role_id(&self.role)
    }
}

/// The id on L1 of the role named `role`: `keccak256(role)` (what
/// `SequencerStaking.roleAddress` and `BatchInbox.role` take).
pub fn role_id(role: &str) -> alloy::primitives::B256 {
    alloy::primitives::keccak256(role.as_bytes())
}

/// Checks a list of keys: at least one, valid and distinct ids, distinct non-empty roles,
/// distinct inboxes. `field` names the list in errors.
pub fn check_keys(field: &str, keys: &[KeySettings]) -> Result<()> {
    if keys.is_empty() {
        return Err(invalid(field, "at least one key is needed"));
    }
    for (i, k) in keys.iter().enumerate() {
        tss_core::KeyId::new(k.id.clone())
            .map_err(|e| invalid(format!("{field}[{i}].id"), e.to_string()))?;
        if k.role.trim().is_empty() {
            return Err(invalid(format!("{field}[{i}].role"), "must not be empty"));
        }
        if k.role.trim() != k.role {
            // keccak256 of the name is the role on L1: a stray space is another role.
            return Err(invalid(
                format!("{field}[{i}].role"),
                format!("{:?} has leading or trailing whitespace", k.role),
            ));
        }
        if k.inbox.is_zero() {
            return Err(invalid(
                format!("{field}[{i}].inbox"),
                "must not be the zero address",
            ));
        }
        for (j, other) in keys[..i].iter().enumerate() {
            let clash = if other.id == k.id {
                Some(("id", format!("{:?}", k.id)))
            } else if other.role == k.role {
                Some(("role", format!("{:?}", k.role)))
            } else if other.inbox == k.inbox {
                Some(("inbox", k.inbox.to_string()))
            } else {
                None
            };
            if let Some((what, value)) = clash {
                return Err(invalid(
                    format!("{field}[{i}].{what}"),
                    format!("{value} is already {field}[{j}]'s: every key needs its own {what}"),
                ));
            }
        }
    }
    Ok(())
}

/// `[batches]`: what the pool signs. Every node must use the same values (a follower
/// refuses a transaction its own policy would not build). Fees are in gwei.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct BatchesSection {
    /// The L2 source. The binary has one: `"demo"`, a deterministic stand-in chain for
    /// devnets and tests (see [`crate::batch::DemoL2`]); embedders implement
    /// [`crate::batch::L2Source`] over their L2 node and use the library instead.
    pub l2: String,
    /// Tag of the demo chain (the same on every node).
    #[serde(default)]
    pub demo_l2_tag: String,
    /// L2 blocks per epoch (each epoch has its own producer).
    #[serde(default = "default_epoch_blocks")]
    pub epoch_blocks: u64,
    /// Largest batch, in L2 blocks.
    #[serde(default = "default_max_batch_blocks")]
    pub max_batch_blocks: u64,
    /// L1 blocks the producer waits after the last appended batch before it proposes
    /// the next (batch cadence; followers do not check it).
    #[serde(default = "default_interval_l1_blocks")]
    pub interval_l1_blocks: u64,
    /// L1 blocks without an appended batch after which the next producer in the epoch's
    /// order may propose (failover; see [`crate::schedule`]).
    #[serde(default = "default_stall_l1_blocks")]
    pub stall_l1_blocks: u64,
    /// `max_fee_per_gas` the producer offers.
    #[serde(default = "default_max_fee_gwei")]
    pub max_fee_per_gas_gwei: u64,
    /// `max_priority_fee_per_gas` the producer offers.
    #[serde(default = "default_priority_fee_gwei")]
    pub max_priority_fee_gwei: u64,
    /// Gas limit of a batch transaction.
    #[serde(default = "default_gas_limit")]
    pub gas_limit: u64,
    /// Highest `max_fee_per_gas` a follower signs.
    #[serde(default = "default_max_fee_cap_gwei")]
    pub max_fee_cap_gwei: u64,
    /// Highest `max_priority_fee_per_gas` a follower signs.
    #[serde(default = "default_priority_fee_cap_gwei")]
    pub max_priority_fee_cap_gwei: u64,
    /// Smallest gas limit a follower signs.
    #[serde(default = "default_min_gas_limit")]
    pub min_gas_limit: u64,
    /// Largest gas limit a follower signs.
    #[serde(default = "default_max_gas_limit")]
    pub max_gas_limit: u64,
}

/// Validated `[batches]` section (chain id and the inbox's genesis block are read from
/// L1 when the node starts).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BatchSettings {
    /// Tag of the demo L2 chain.
    pub demo_l2_tag: Vec<u8>,
    /// L2 blocks per epoch.
    pub epoch_blocks: u64,
    /// Largest batch, in L2 blocks.
    pub max_batch_blocks: u64,
    /// Batch cadence in L1 blocks (producer only).
    pub interval_l1_blocks: u64,
    /// Failover window in L1 blocks.
    pub stall_l1_blocks: u64,
    /// What the producer offers.
    pub fees: crate::batch::BatchFees,
    /// Highest `max_fee_per_gas` signed (wei).
    pub max_fee_cap: u128,
    /// Highest `max_priority_fee_per_gas` signed (wei).
    pub max_priority_fee_cap: u128,
    /// Gas limit bounds signed.
    pub gas_limit_bounds: (u64, u64),
}

impl BatchSettings {
    /// The config file's defaults with the demo L2 tagged `demo_l2_tag`.
    pub fn demo(demo_l2_tag: impl Into<Vec<u8>>) -> Self {
        const GWEI: u128 = 1_000_000_000;
        Self {
            demo_l2_tag: demo_l2_tag.into(),
            epoch_blocks: default_epoch_blocks(),
            max_batch_blocks: default_max_batch_blocks(),
            interval_l1_blocks: default_interval_l1_blocks(),
            stall_l1_blocks: default_stall_l1_blocks(),
            fees: crate::batch::BatchFees {
                max_fee_per_gas: u128::from(default_max_fee_gwei()) * GWEI,
                max_priority_fee_per_gas: u128::from(default_priority_fee_gwei()) * GWEI,
                gas_limit: default_gas_limit(),
            },
            max_fee_cap: u128::from(default_max_fee_cap_gwei()) * GWEI,
            max_priority_fee_cap: u128::from(default_priority_fee_cap_gwei()) * GWEI,
            gas_limit_bounds: (default_min_gas_limit(), default_max_gas_limit()),
        }
    }
}

fn default_epoch_blocks() -> u64 {
    100
}
fn default_max_batch_blocks() -> u64 {
    10
}
fn default_interval_l1_blocks() -> u64 {
    5
}
fn default_stall_l1_blocks() -> u64 {
    30
}
fn default_max_fee_gwei() -> u64 {
    50
}
fn default_priority_fee_gwei() -> u64 {
    2
}
fn default_gas_limit() -> u64 {
    200_000
}
fn default_max_fee_cap_gwei() -> u64 {
    500
}
fn default_priority_fee_cap_gwei() -> u64 {
    50
}
fn default_min_gas_limit() -> u64 {
    60_000
}
fn default_max_gas_limit() -> u64 {
    1_000_000
}

fn parse_batches(b: &BatchesSection) -> Result<BatchSettings> {
    const GWEI: u128 = 1_000_000_000;
    if b.l2 != "demo" {
        return Err(invalid(
            "batches.l2",
            format!(
                "{:?} is not an L2 source this binary has (only \"demo\"; embed the library \
                 with your own L2Source for a real L2)",
                b.l2
            ),
        ));
    }
    for (field, v) in [
        ("batches.epoch_blocks", b.epoch_blocks),
        ("batches.max_batch_blocks", b.max_batch_blocks),
        ("batches.stall_l1_blocks", b.stall_l1_blocks),
    ] {
        if v == 0 {
            return Err(invalid(field, "must be positive"));
        }
    }
    if b.min_gas_limit > b.max_gas_limit {
        return Err(invalid(
            "batches.min_gas_limit",
            "must not exceed batches.max_gas_limit",
        ));
    }
    Ok(BatchSettings {
        demo_l2_tag: b.demo_l2_tag.as_bytes().to_vec(),
        epoch_blocks: b.epoch_blocks,
        max_batch_blocks: b.max_batch_blocks,
        interval_l1_blocks: b.interval_l1_blocks,
        stall_l1_blocks: b.stall_l1_blocks,
        fees: crate::batch::BatchFees {
            max_fee_per_gas: u128::from(b.max_fee_per_gas_gwei) * GWEI,
            max_priority_fee_per_gas: u128::from(b.max_priority_fee_gwei) * GWEI,
            gas_limit: b.gas_limit,
        },
        max_fee_cap: u128::from(b.max_fee_cap_gwei) * GWEI,
        max_priority_fee_cap: u128::from(b.max_priority_fee_cap_gwei) * GWEI,
        gas_limit_bounds: (b.min_gas_limit, b.max_gas_limit),
    })
}

/// `[l1]`: the L1 endpoint and contracts the pool's membership is read from.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct L1Section {
    /// JSON-RPC endpoint (HTTP) of an L1 node.
    pub rpc_url: String,
    /// `SequencerStaking` address (`0x` + 40 hex).
    pub staking: String,
    /// `BatchInbox` address.
    pub inbox: String,
    /// Block the contracts were deployed in (event scans start here).
    pub deployment_block: u64,
    /// Blocks on top of a height before it counts as confirmed.
    #[serde(default = "default_confirmations")]
    pub confirmations: u64,
    /// Seconds between two reads of L1.
    #[serde(default = "default_poll_seconds")]
    pub poll_seconds: u64,
    /// Seconds a follower waits for its L1 view to reach a proposal's height.
    #[serde(default = "default_proposal_wait")]
    pub proposal_wait_seconds: u64,
    /// Seconds before the next member in line proposes a pending change.
    #[serde(default = "default_leader_timeout")]
    pub leader_timeout_seconds: u64,
}

/// Validated `[l1]` section.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct L1Settings {
    /// JSON-RPC endpoint.
    pub rpc_url: String,
    /// The contracts.
    pub deployment: crate::l1::contracts::Deployment,
    /// Confirmation depth.
    pub confirmations: u64,
    /// Time between two reads of L1.
    pub poll_interval: Duration,
    /// How long a follower waits for its L1 view to reach a proposal's height.
    pub proposal_wait: Duration,
    /// How long a pending change waits before the next member in line proposes it.
    pub leader_timeout: Duration,
}

impl L1Settings {
    /// Settings for `deployment` behind `rpc_url` with the config file's defaults
    /// (2 confirmations, 2 s polls, 30 s proposal wait, 120 s leader timeout).
    pub fn new(rpc_url: impl Into<String>, deployment: crate::l1::contracts::Deployment) -> Self {
        Self {
            rpc_url: rpc_url.into(),
            deployment,
            confirmations: default_confirmations(),
            poll_interval: Duration::from_secs(default_poll_seconds()),
            proposal_wait: Duration::from_secs(default_proposal_wait()),
            leader_timeout: Duration::from_secs(default_leader_timeout()),
        }
    }
}

/// `[rpc]`: access control of the HTTP API (see [`crate::rpc::auth`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpcSection {
    /// File holding the operator token (default `<node.data_dir>/rpc-token`).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Allowed `Host` header values, `host:port` (default: the loopback names of
    /// `node.rpc_listen`'s port).
    #[serde(default)]
    pub allowed_hosts: Option<Vec<String>>,
    /// Whether `GET /metrics` is served without the token.
    #[serde(default = "default_true")]
    pub metrics_public: bool,
    /// Whether `POST /sign` signs a caller's 32-byte digest, and whether this node joins
    /// such signing runs proposed by peers. **Off by default**: a raw digest is not a
    /// validated batch; on only for devnets and tests.
    #[serde(default)]
    pub unsafe_raw_digest_signing: bool,
}

impl Default for RpcSection {
    fn default() -> Self {
        Self {
            token_file: None,
            allowed_hosts: None,
            metrics_public: true,
            unsafe_raw_digest_signing: false,
        }
    }
}

/// `[node]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct NodeSection {
    /// File holding the node's ed25519 identity seed (hex), made by `gen-identity`.
    pub identity_file: PathBuf,
    /// Directory for the keystore and pool state.
    pub data_dir: PathBuf,
    /// Name of the shared key (a shorthand for one `[[keys]]` entry with role `batches`;
    /// default `"sequencer-key"` when there is no `[[keys]]`).
    #[serde(default)]
    pub key_id: Option<String>,
    /// Address of the HTTP JSON API (loopback only).
    #[serde(default = "default_rpc_listen")]
    pub rpc_listen: String,
}

/// `[keystore]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct KeystoreSection {
    /// Environment variable holding the keystore passphrase.
    #[serde(default = "default_passphrase_env")]
    pub passphrase_env: String,
    /// Key file (32 raw bytes or 64 hex chars) unlocking the keystore instead of a
    /// passphrase.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Cheap Argon2 parameters. **Tests and devnets only.**
    #[serde(default)]
    pub insecure_fast_kdf: bool,
}

impl Default for KeystoreSection {
    fn default() -> Self {
        Self {
            passphrase_env: default_passphrase_env(),
            key_file: None,
            insecure_fast_kdf: false,
        }
    }
}

/// `[transport]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TransportSection {
    /// libp2p listen multiaddr, e.g. `/ip4/127.0.0.1/tcp/9000`.
    pub listen: String,
    /// Seconds a protocol session may hear nothing before failing.
    #[serde(default = "default_idle")]
    pub session_idle_timeout_secs: u64,
}

/// `[[peers]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PeerSection {
    /// Hex node id (ed25519 public key).
    pub node_id: String,
    /// libp2p multiaddr.
    pub address: String,
}

/// `[pool]`: size bounds and the producer schedule (members come from `[l1]`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PoolSection {
    /// Minimum pool size (default 4; at 3 the pool signs 3-of-3 and cannot lose anyone).
    #[serde(default = "default_min_members")]
    pub min_members: usize,
    /// Maximum pool size.
    #[serde(default = "default_max_members")]
    pub max_members: usize,
    /// Epoch length in seconds (block producer rotation).
    #[serde(default = "default_epoch_seconds")]
    pub epoch_seconds: u64,
    /// Seconds a signing run tolerates no heartbeat from a signer it watches.
    #[serde(default = "default_signer_silence_seconds")]
    pub signer_silence_seconds: u64,
    /// Signer sets tried per signing request.
    #[serde(default = "default_sign_attempts")]
    pub sign_attempts: usize,
    /// Presignatures this node keeps ready (0: none).
    #[serde(default)]
    pub presignatures: usize,
    /// 32-byte hex seed of the block-producer schedule.
    pub epoch_seed: String,
}

/// `[tss]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TssSection {
    /// Which pair of the **public, insecure** test primes this node uses (distinct per
    /// node). Tests and devnets only; a build without the `insecure-test-primes` feature
    /// refuses it.
    #[serde(default)]
    pub insecure_test_primes_index: Option<usize>,
}

fn default_key_id() -> String {
    "sequencer-key".into()
}
fn default_rpc_listen() -> String {
    "127.0.0.1:8645".into()
}
fn default_true() -> bool {
    true
}
fn default_passphrase_env() -> String {
    "NODE_SHELL_PASSPHRASE".into()
}
fn default_idle() -> u64 {
    120
}
fn default_min_members() -> usize {
    crate::pool::DEFAULT_MIN_MEMBERS
}
fn default_max_members() -> usize {
    crate::pool::DEFAULT_MAX_MEMBERS
}
fn default_signer_silence_seconds() -> u64 {
    tss_core::pool::DEFAULT_SIGNER_SILENCE_TIMEOUT.as_secs()
}

fn default_sign_attempts() -> usize {
    tss_core::pool::DEFAULT_SIGN_ATTEMPTS
}

fn default_epoch_seconds() -> u64 {
    60
}
fn default_confirmations() -> u64 {
    2
}
fn default_poll_seconds() -> u64 {
    2
}
fn default_proposal_wait() -> u64 {
    30
}
fn default_leader_timeout() -> u64 {
    120
}

/// Where Paillier primes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PrimeSourceConfig {
    /// Generated in the background (real deployments).
    Generate,
    /// Pair `index` of the public test primes (feature `insecure-test-primes`).
    /// **Insecure: tests and devnets only.**
    InsecureFixture {
        /// Which pair.
        index: usize,
    },
}

/// How the keystore is unlocked.
#[derive(Clone)]
#[non_exhaustive]
pub enum UnlockConfig {
    /// A passphrase (kept out of Debug output).
    Passphrase(zeroize::Zeroizing<String>),
    /// A key file.
    KeyFile(PathBuf),
}

impl std::fmt::Debug for UnlockConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UnlockConfig::Passphrase(_) => f.write_str("Passphrase([REDACTED])"),
            UnlockConfig::KeyFile(p) => write!(f, "KeyFile({})", p.display()),
        }
    }
}

/// Validated settings of one node (what [`crate::coordinator::Node::start`] needs besides
/// a transport). Built from a [`FileConfig`] or with [`NodeSettings::new`] (devnet, tests,
/// embedders), whose defaults the public fields can then override.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NodeSettings {
    /// The keys this node serves (at least one; the first is the default key of the API's
    /// `/key` and `/sign`). See [`check_keys`].
    pub keys: Vec<KeySettings>,
    /// Keystore directory.
    pub keystore_dir: PathBuf,
    /// Keystore unlock.
    pub unlock: UnlockConfig,
    /// Cheap KDF (tests only).
    pub insecure_fast_kdf: bool,
    /// Every known sequencer (the control channel's participants), self included.
    pub peers: Vec<NodeId>,
    /// Pool rules (size bounds; see [`PoolRules::l1`]).
    pub rules: PoolRules,
    /// Where membership is read from.
    pub l1: L1Settings,
    /// Whether this node signs raw 32-byte digests (`rpc.unsafe_raw_digest_signing`),
    /// as proposer (`POST /sign`) and as follower.
    pub unsafe_raw_digest_signing: bool,
    /// Epoch length.
    pub epoch_length: Duration,
    /// Block producer schedule seed.
    pub epoch_seed: [u8; 32],
    /// Batches (`None`: this node neither produces nor co-signs batches).
    pub batches: Option<BatchSettings>,
    /// Protocol session idle timeout.
    pub session_idle_timeout: Duration,
    /// How long a signing run tolerates no heartbeat from a signer it watches
    /// ([`tss_core::pool::PoolConfig::signer_silence_timeout`]).
    pub signer_silence: Duration,
    /// Signer sets tried per signing request
    /// ([`tss_core::pool::PoolConfig::sign_attempts`]).
    pub sign_attempts: usize,
    /// Presignatures this node keeps ready for the requests it proposes (0: none; see
    /// [`tss_core::pool::PoolNode::fill_presignatures`]).
    pub presignatures: usize,
    /// Paillier prime source.
    pub primes: PrimeSourceConfig,
    /// Cancelled when the node is to stop: its background loops (control messages, epoch
    /// ticker, auto keygen) end. One token can stop many nodes and their HTTP servers
    /// ([`crate::rpc::serve_with_shutdown`]).
    pub shutdown: CancellationToken,
    /// Tracks the node's background loops: after cancelling [`NodeSettings::shutdown`],
    /// `tasks.close(); tasks.wait().await` returns once every loop has ended (so no
    /// loop is still running when the runtime shuts down). One tracker can serve many
    /// nodes.
    pub tasks: TaskTracker,
}

impl NodeSettings {
    /// Settings with what has no default given, and the defaults of a config file for the
    /// rest: one key, `key_id`, with role [`BATCHES_ROLE`] on `l1`'s inbox (add more with
    /// [`NodeSettings::with_key`]), no `peers` (set them: only they, and this node, can take part), real Argon2
    /// parameters, 60 s epochs, a 120 s session idle timeout, generated Paillier primes,
    /// raw-digest signing off, and a fresh shutdown token.
    pub fn new(
        key_id: impl Into<String>,
        keystore_dir: impl Into<PathBuf>,
        unlock: UnlockConfig,
        rules: PoolRules,
        l1: L1Settings,
        epoch_seed: [u8; 32],
    ) -> Self {
        Self {
            keys: vec![KeySettings::new(key_id, BATCHES_ROLE, l1.deployment.inbox)],
            keystore_dir: keystore_dir.into(),
            unlock,
            insecure_fast_kdf: false,
            peers: Vec::new(),
            rules,
            l1,
            unsafe_raw_digest_signing: false,
            epoch_length: Duration::from_secs(default_epoch_seconds()),
            epoch_seed,
            batches: None,
            session_idle_timeout: Duration::from_secs(default_idle()),
            signer_silence: Duration::from_secs(default_signer_silence_seconds()),
            sign_attempts: default_sign_attempts(),
            presignatures: 0,
            primes: PrimeSourceConfig::Generate,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }
    }

    /// The same settings with one more key (checked when the node starts).
    pub fn with_key(mut self, key: KeySettings) -> Self {
        self.keys.push(key);
        self
    }

    /// The default key's id (the first key's).
    pub fn key_id(&self) -> &str {
        self.keys.first().map_or("", |k| k.id.as_str())
    }

    /// Spawns `task` on the runtime; it is dropped (ends at its next `.await`) once
    /// [`NodeSettings::shutdown`] is cancelled.
    pub fn spawn_until_shutdown<F>(&self, task: F) -> JoinHandle<Option<F::Output>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks
            .spawn(self.shutdown.clone().run_until_cancelled_owned(task))
    }
}

/// A fully parsed `run` configuration.
#[derive(Debug)]
#[non_exhaustive]
pub struct RunConfig {
    /// Node settings.
    pub settings: NodeSettings,
    /// Identity key file.
    pub identity_file: PathBuf,
    /// HTTP API address.
    pub rpc_listen: SocketAddr,
    /// HTTP API access control.
    pub rpc: RpcSettings,
    /// libp2p listen address.
    pub listen: String,
    /// Peers with their addresses.
    pub peer_addrs: Vec<(NodeId, String)>,
}

/// Validated `[rpc]` section.
#[derive(Debug, Clone)]
pub struct RpcSettings {
    /// The operator token file.
    pub token_file: PathBuf,
    /// Allowed `Host` values; `None`: the loopback names of the bound port.
    pub allowed_hosts: Option<Vec<String>>,
    /// Whether `GET /metrics` is served without the token.
    pub metrics_public: bool,
}

impl RpcSettings {
    /// Reads (or creates) the token file and returns the access control of
    /// [`crate::rpc::serve_with_shutdown`].
    pub fn access(&self) -> Result<crate::rpc::auth::Access> {
        Ok(crate::rpc::auth::Access {
            token: crate::rpc::auth::ApiToken::load_or_create(&self.token_file)?,
            allowed_hosts: self.allowed_hosts.clone(),
            metrics_public: self.metrics_public,
        })
    }
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::ConfigInvalid {
        field: field.into(),
        reason: reason.into(),
    }
}

fn parse_node_id(field: &str, s: &str) -> Result<NodeId> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    NodeId::from_hex(s).map_err(|_| invalid(field, format!("{s:?} is not a 64-hex-digit node id")))
}

fn parse_address(field: &str, s: &str) -> Result<alloy::primitives::Address> {
    let hex_part = s.strip_prefix("0x").unwrap_or(s);
    if hex_part.len() != 40 {
        return Err(invalid(field, format!("{s:?} is not 0x + 40 hex digits")));
    }
    s.parse()
        .map_err(|_| invalid(field, format!("{s:?} is not an address")))
}

fn parse_l1(l1: &L1Section) -> Result<L1Settings> {
    crate::l1::connect(&l1.rpc_url).map_err(|e| invalid("l1.rpc_url", e.to_string()))?;
    if l1.poll_seconds == 0 {
        return Err(invalid("l1.poll_seconds", "must be positive"));
    }
    if l1.leader_timeout_seconds == 0 {
        return Err(invalid("l1.leader_timeout_seconds", "must be positive"));
    }
    Ok(L1Settings {
        rpc_url: l1.rpc_url.clone(),
        deployment: crate::l1::contracts::Deployment {
            staking: parse_address("l1.staking", &l1.staking)?,
            inbox: parse_address("l1.inbox", &l1.inbox)?,
            role: role_id(BATCHES_ROLE),
            deployment_block: l1.deployment_block,
        },
        confirmations: l1.confirmations,
        poll_interval: Duration::from_secs(l1.poll_seconds),
        proposal_wait: Duration::from_secs(l1.proposal_wait_seconds),
        leader_timeout: Duration::from_secs(l1.leader_timeout_seconds),
    })
}

/// The keys of `[[keys]]`, or the one key of `node.key_id`.
fn parse_keys(file: &FileConfig, l1: &L1Settings) -> Result<Vec<KeySettings>> {
    if file.keys.is_empty() {
        let id = file.node.key_id.clone().unwrap_or_else(default_key_id);
        tss_core::KeyId::new(id.clone()).map_err(|e| invalid("node.key_id", e.to_string()))?;
        return Ok(vec![KeySettings::new(
            id,
            BATCHES_ROLE,
            l1.deployment.inbox,
        )]);
    }
    if file.node.key_id.is_some() {
        return Err(invalid(
            "node.key_id",
            "set either node.key_id (one key) or [[keys]], not both",
        ));
    }
    let mut keys = Vec::with_capacity(file.keys.len());
    for (i, k) in file.keys.iter().enumerate() {
        let inbox = match (&k.inbox, k.role.as_str()) {
            (Some(a), _) => parse_address(&format!("keys[{i}].inbox"), a)?,
            (None, BATCHES_ROLE) => l1.deployment.inbox,
            (None, _) => {
                return Err(invalid(
                    format!("keys[{i}].inbox"),
                    format!(
                        "required for the role {:?} (only the role {BATCHES_ROLE:?} defaults to l1.inbox)",
                        k.role
                    ),
                ))
            }
        };
        let protocol = match &k.protocol {
            None => tss_core::Protocol::default(),
            Some(name) => name.parse().map_err(|e: tss_core::UnknownProtocol| {
                invalid(format!("keys[{i}].protocol"), e.to_string())
            })?,
        };
        keys.push(KeySettings::new(k.id.clone(), k.role.clone(), inbox).with_protocol(protocol));
    }
    check_keys("keys", &keys)?;
    Ok(keys)
}

/// Parses 32 bytes of hex (optional `0x`).
pub fn parse_hex32(field: &str, s: &str) -> Result<[u8; 32]> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    let bytes = hex::decode(s).map_err(|_| invalid(field, "not hex"))?;
    bytes
        .try_into()
        .map_err(|_| invalid(field, "must be exactly 32 bytes (64 hex digits)"))
}

impl RunConfig {
    /// Reads and validates a config file. Relative paths are resolved against the
    /// file's directory. The keystore passphrase is read from the environment here.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::ConfigRead {
            path: path.display().to_string(),
            source: e,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_toml(&text, base, |name| std::env::var(name).ok())
    }

    /// Parses and validates TOML; `env` looks up environment variables.
    pub fn from_toml(
        text: &str,
        base: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let file: FileConfig =
            toml::from_str(text).map_err(|e| Error::ConfigParse(e.to_string()))?;
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };

        let rpc_listen: SocketAddr = file.node.rpc_listen.parse().map_err(|_| {
            invalid(
                "node.rpc_listen",
                "not a socket address like 127.0.0.1:8645",
            )
        })?;
        if !rpc_listen.ip().is_loopback() {
            return Err(invalid(
                "node.rpc_listen",
                "the HTTP API must listen on a loopback address",
            ));
        }
        if let Some(hosts) = &file.rpc.allowed_hosts {
            for (i, h) in hosts.iter().enumerate() {
                if h.is_empty() || !h.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(invalid(
                        format!("rpc.allowed_hosts[{i}]"),
                        format!("{h:?} is not a host:port"),
                    ));
                }
            }
        }
        let rpc = RpcSettings {
            token_file: match &file.rpc.token_file {
                Some(p) => resolve(p),
                None => resolve(&file.node.data_dir).join("rpc-token"),
            },
            allowed_hosts: file.rpc.allowed_hosts.clone(),
            metrics_public: file.rpc.metrics_public,
        };

        let unlock = match &file.keystore.key_file {
            Some(kf) => UnlockConfig::KeyFile(resolve(kf)),
            None => {
                let var = &file.keystore.passphrase_env;
                let pass = env(var).ok_or_else(|| {
                    invalid(
                        "keystore.passphrase_env",
                        format!("environment variable {var} is not set (or set keystore.key_file)"),
                    )
                })?;
                if pass.len() < 8 {
                    return Err(invalid(
                        "keystore.passphrase_env",
                        format!("the passphrase in {var} is shorter than 8 characters"),
                    ));
                }
                UnlockConfig::Passphrase(zeroize::Zeroizing::new(pass))
            }
        };

        if file.transport.session_idle_timeout_secs == 0 {
            return Err(invalid(
                "transport.session_idle_timeout_secs",
                "must be positive",
            ));
        }
        if file.pool.epoch_seconds == 0 {
            return Err(invalid("pool.epoch_seconds", "must be positive"));
        }
        if file.pool.signer_silence_seconds == 0 {
            return Err(invalid("pool.signer_silence_seconds", "must be positive"));
        }
        if file.pool.sign_attempts == 0 {
            return Err(invalid("pool.sign_attempts", "must be at least 1"));
        }
        let epoch_seed = parse_hex32("pool.epoch_seed", &file.pool.epoch_seed)?;

        let mut peer_addrs = Vec::new();
        for (i, p) in file.peers.iter().enumerate() {
            let id = parse_node_id(&format!("peers[{i}].node_id"), &p.node_id)?;
            if p.address.trim().is_empty() {
                return Err(invalid(format!("peers[{i}].address"), "must not be empty"));
            }
            peer_addrs.push((id, p.address.clone()));
        }
        let rules = PoolRules::l1(file.pool.min_members, file.pool.max_members);
        if rules.min_members < 2 {
            return Err(invalid("pool.min_members", "must be at least 2"));
        }
        if rules.max_members < rules.min_members {
            return Err(invalid(
                "pool.max_members",
                "must be at least pool.min_members",
            ));
        }
        let l1 = parse_l1(&file.l1)?;
        let keys = parse_keys(&file, &l1)?;
        if rules.min_members < crate::pool::DEFAULT_MIN_MEMBERS {
            let n = rules.min_members;
            tracing::warn!(
                "pool.min_members = {n}: a pool of {n} signs {t}-of-{n} and cannot lose a \
                 single member (the key could then neither sign nor reshare; recovery is a \
                 new keygen and a new address on L1). Use at least {min}.",
                t = crate::pool::threshold_for(n),
                min = crate::pool::DEFAULT_MIN_MEMBERS
            );
        }
        let primes = match file.tss.insecure_test_primes_index {
            None => PrimeSourceConfig::Generate,
            Some(index) => PrimeSourceConfig::InsecureFixture { index },
        };

        let peers: Vec<NodeId> = peer_addrs.iter().map(|(id, _)| *id).collect();
        Ok(Self {
            settings: NodeSettings {
                keys,
                keystore_dir: resolve(&file.node.data_dir).join("keystore"),
                unlock,
                insecure_fast_kdf: file.keystore.insecure_fast_kdf,
                peers,
                rules,
                l1,
                unsafe_raw_digest_signing: file.rpc.unsafe_raw_digest_signing,
                epoch_length: Duration::from_secs(file.pool.epoch_seconds),
                epoch_seed,
                batches: file.batches.as_ref().map(parse_batches).transpose()?,
                session_idle_timeout: Duration::from_secs(file.transport.session_idle_timeout_secs),
                signer_silence: Duration::from_secs(file.pool.signer_silence_seconds),
                sign_attempts: file.pool.sign_attempts,
                presignatures: file.pool.presignatures,
                primes,
                shutdown: CancellationToken::new(),
                tasks: TaskTracker::new(),
            },
            identity_file: resolve(&file.node.identity_file),
            rpc_listen,
            rpc,
            listen: file.transport.listen,
            peer_addrs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222222222222222222222222222";
    const C: &str = "3333333333333333333333333333333333333333333333333333333333333333";
    const D: &str = "4444444444444444444444444444444444444444444444444444444444444444";

    fn sample(rpc: &str, min_stake: u64, seed: &str) -> String {
        format!(
            r#"
[node]
identity_file = "identity.key"
data_dir = "data"
rpc_listen = "{rpc}"

[transport]
listen = "/ip4/127.0.0.1/tcp/9000"

[[peers]]
node_id = "{A}"
address = "/ip4/127.0.0.1/tcp/9000"
[[peers]]
node_id = "{B}"
address = "/ip4/127.0.0.1/tcp/9001"
[[peers]]
node_id = "{C}"
address = "/ip4/127.0.0.1/tcp/9002"
[[peers]]
node_id = "{D}"
address = "/ip4/127.0.0.1/tcp/9003"

[pool]
min_members = {min_stake}
epoch_seed = "{seed}"

[l1]
rpc_url = "http://127.0.0.1:8545"
staking = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
inbox = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"
deployment_block = 1
"#
        )
    }

    fn env_ok(name: &str) -> Option<String> {
        (name == "NODE_SHELL_PASSPHRASE").then(|| "a long enough passphrase".to_string())
    }

    const STATE_INBOX: &str = "0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0";

    fn with_keys(keys: &str) -> Result<RunConfig> {
        RunConfig::from_toml(
            &format!("{}\n{keys}", sample("127.0.0.1:8645", 4, A)),
            Path::new("/etc/ns"),
            env_ok,
        )
    }

    fn field_of(e: &Error) -> &str {
        match e {
            Error::ConfigInvalid { field, .. } => field,
            other => panic!("not a config error: {other:?}"),
        }
    }

    #[test]
    fn keys_with_their_own_roles_and_inboxes_parse_the_batches_role_defaulting_to_l1_inbox() {
        let cfg = with_keys(&format!(
            r#"
[[keys]]
id = "batches-key"
role = "batches"
[[keys]]
id = "state-key"
role = "state"
inbox = "{STATE_INBOX}"
protocol = "dkls23"
"#
        ))
        .unwrap();
        let keys = &cfg.settings.keys;
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].protocol, tss_core::Protocol::Cggmp21, "the default");
        assert_eq!(keys[1].protocol, tss_core::Protocol::Dkls23);
        assert_eq!(cfg.settings.key_id(), "batches-key");
        assert_eq!(keys[0].inbox, cfg.settings.l1.deployment.inbox);
        assert_eq!(keys[0].role_id(), role_id("batches"));
        assert_eq!(keys[1].role, "state");
        assert_eq!(
            keys[1].inbox,
            STATE_INBOX.parse::<alloy::primitives::Address>().unwrap()
        );
        assert_eq!(
            keys[1].role_id(),
            alloy::primitives::keccak256(b"state"),
            "the role id is keccak256 of its name, as on L1"
        );
        // Without [[keys]]: one key, node.key_id, role batches on l1.inbox.
        let one = RunConfig::from_toml(
            &sample("127.0.0.1:8645", 4, A).replace("[node]", "[node]\nkey_id = \"solo\""),
            Path::new("/etc/ns"),
            env_ok,
        )
        .unwrap();
        assert_eq!(
            one.settings.keys,
            [KeySettings::new(
                "solo",
                BATCHES_ROLE,
                one.settings.l1.deployment.inbox
            )]
        );
    }

    #[test]
    fn a_key_naming_a_protocol_this_build_does_not_implement_is_refused_naming_the_field_and_the_known_ones(
    ) {
        let err = with_keys("[[keys]]\nid = \"k\"\nrole = \"batches\"\nprotocol = \"gg18\"\n")
            .unwrap_err();
        match err {
            Error::ConfigInvalid { field, reason } => {
                assert_eq!(field, "keys[0].protocol");
                assert!(
                    reason.contains("gg18") && reason.contains("cggmp21, dkls23"),
                    "{reason}"
                );
            }
            other => panic!("unexpected error: {other}"),
        }
    }

    #[test]
    fn keys_sharing_an_id_a_role_or_an_inbox_or_lacking_an_inbox_are_refused_naming_the_field() {
        let key = |id: &str, role: &str, inbox: Option<&str>| {
            format!(
                "[[keys]]\nid = \"{id}\"\nrole = \"{role}\"\n{}",
                inbox
                    .map(|a| format!("inbox = \"{a}\"\n"))
                    .unwrap_or_default()
            )
        };
        let other_inbox = "0x0000000000000000000000000000000000000007";
        for (keys, field, says) in [
            (
                key("k", "batches", None) + &key("k", "state", Some(STATE_INBOX)),
                "keys[1].id",
                "own id",
            ),
            (
                key("a", "state", Some(STATE_INBOX)) + &key("b", "state", Some(other_inbox)),
                "keys[1].role",
                "own role",
            ),
            (
                key("a", "batches", None)
                    + &key(
                        "b",
                        "state",
                        Some("0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"),
                    ),
                "keys[1].inbox",
                "own inbox",
            ),
            (
                key("a", "state", None),
                "keys[0].inbox",
                "required for the role",
            ),
            (
                key("a", "", Some(STATE_INBOX)),
                "keys[0].role",
                "must not be empty",
            ),
            (
                key("a", "state ", Some(STATE_INBOX)),
                "keys[0].role",
                "whitespace",
            ),
            (
                key(
                    "a",
                    "state",
                    Some("0x0000000000000000000000000000000000000000"),
                ),
                "keys[0].inbox",
                "zero address",
            ),
            (key("no spaces allowed", "batches", None), "keys[0].id", ""),
        ] {
            let e = with_keys(&keys).unwrap_err();
            assert_eq!(field_of(&e), field, "{keys}: {e}");
            assert!(e.to_string().contains(says), "{e}");
        }
        // node.key_id and [[keys]] together: ambiguous, refused.
        let both = RunConfig::from_toml(
            &format!(
                "{}\n{}",
                sample("127.0.0.1:8645", 4, A).replace("[node]", "[node]\nkey_id = \"solo\""),
                key("a", "batches", None)
            ),
            Path::new("/etc/ns"),
            env_ok,
        )
        .unwrap_err();
        assert_eq!(field_of(&both), "node.key_id");
    }

    #[test]
    fn valid_config_parses_with_documented_defaults() {
        let cfg = RunConfig::from_toml(
            &sample("127.0.0.1:8645", 4, A),
            Path::new("/etc/ns"),
            env_ok,
        )
        .unwrap();
        assert_eq!(cfg.settings.key_id(), "sequencer-key");
        assert_eq!(cfg.settings.rules.min_members, 4);
        assert_eq!(cfg.settings.rules.max_members, 100);
        assert_eq!(cfg.settings.rules.whitelist, None);
        assert_eq!(cfg.settings.epoch_length, Duration::from_secs(60));
        assert_eq!(cfg.settings.session_idle_timeout, Duration::from_secs(120));
        assert_eq!(cfg.settings.primes, PrimeSourceConfig::Generate);
        assert!(!cfg.settings.unsafe_raw_digest_signing);
        assert_eq!(cfg.settings.l1.confirmations, 2);
        assert_eq!(cfg.settings.l1.poll_interval, Duration::from_secs(2));
        assert_eq!(cfg.settings.l1.deployment.deployment_block, 1);
        assert_eq!(cfg.identity_file, Path::new("/etc/ns/identity.key"));
        assert_eq!(
            cfg.settings.keystore_dir,
            Path::new("/etc/ns/data/keystore")
        );
        assert_eq!(cfg.peer_addrs.len(), 4);
        assert_eq!(cfg.rpc.token_file, Path::new("/etc/ns/data/rpc-token"));
        assert_eq!(cfg.rpc.allowed_hosts, None);
        assert!(cfg.rpc.metrics_public);
        assert!(format!("{:?}", cfg.settings.unlock).contains("REDACTED"));
        assert!(!format!("{:?}", cfg.settings).contains("a long enough passphrase"));
    }

    #[test]
    fn sample_config_file_parses() {
        let text = include_str!("../examples/node.toml");
        let cfg = RunConfig::from_toml(text, Path::new("/srv/node"), env_ok).unwrap();
        assert_eq!(cfg.peer_addrs.len(), 5);
        assert_eq!(cfg.settings.rules.min_members, 4);
        assert_eq!(cfg.rpc_listen, "127.0.0.1:8645".parse().unwrap());
        assert_eq!(cfg.rpc.token_file, Path::new("/srv/node/data/rpc-token"));
        assert!(cfg.rpc.metrics_public);
        assert!(!cfg.settings.unsafe_raw_digest_signing);
        let batches = cfg.settings.batches.expect("[batches]");
        assert_eq!(batches.epoch_blocks, 100);
        assert_eq!(batches.stall_l1_blocks, 30);
        assert_eq!(batches.max_fee_cap, 500 * 1_000_000_000);
    }

    #[test]
    fn a_batches_section_with_an_l2_source_the_binary_lacks_is_refused() {
        let text =
            include_str!("../examples/node.toml").replace("l2 = \"demo\"", "l2 = \"op-geth\"");
        let err = RunConfig::from_toml(&text, Path::new("/srv/node"), env_ok).unwrap_err();
        assert!(
            matches!(&err, Error::ConfigInvalid { field, .. } if field == "batches.l2"),
            "{err}"
        );
        let text = include_str!("../examples/node.toml")
            .replace("stall_l1_blocks = 30", "stall_l1_blocks = 0");
        let err = RunConfig::from_toml(&text, Path::new("/srv/node"), env_ok).unwrap_err();
        assert!(
            matches!(&err, Error::ConfigInvalid { field, .. } if field == "batches.stall_l1_blocks"),
            "{err}"
        );
    }

    #[test]
    fn the_fuzzers_valid_seed_parses() {
        let text = include_str!("../../fuzz/corpus/node_config/valid");
        let cfg = RunConfig::from_toml(text, Path::new("/fuzz"), env_ok).unwrap();
        assert_eq!(cfg.settings.l1.confirmations, 2);
        let text = include_str!("../../fuzz/corpus/node_config/l1_bad_address");
        let err = RunConfig::from_toml(text, Path::new("/fuzz"), env_ok).unwrap_err();
        assert!(
            matches!(&err, Error::ConfigInvalid { field, .. } if field == "l1.staking"),
            "{err}"
        );
    }

    #[test]
    fn the_membership_sections_of_old_configs_are_refused() {
        // Membership is L1's record: a genesis list or a whitelist here is an error.
        for old in ["whitelist = []", "min_stake = 1", "members = []"] {
            let text = sample("127.0.0.1:1", 4, A).replace("[pool]\n", &format!("[pool]\n{old}\n"));
            let err = RunConfig::from_toml(&text, Path::new("."), env_ok).unwrap_err();
            assert!(matches!(err, Error::ConfigParse(_)), "{old}: {err}");
        }
        let bad = sample("127.0.0.1:1", 4, A).replace(
            "staking = \"0x5FbDB2315678afecb367f032d93F642f64180aa3\"",
            "staking = \"0x1234\"",
        );
        let err = RunConfig::from_toml(&bad, Path::new("."), env_ok).unwrap_err();
        assert!(
            matches!(&err, Error::ConfigInvalid { field, .. } if field == "l1.staking"),
            "{err}"
        );
        let raw = sample("127.0.0.1:1", 4, A).replace(
            "[pool]",
            "[rpc]\nunsafe_raw_digest_signing = true\n\n[pool]",
        );
        let cfg = RunConfig::from_toml(&raw, Path::new("."), env_ok).unwrap();
        assert!(cfg.settings.unsafe_raw_digest_signing);
    }

    #[test]
    fn non_loopback_rpc_is_a_typed_error() {
        let err = RunConfig::from_toml(&sample("0.0.0.0:8645", 4, A), Path::new("."), env_ok)
            .unwrap_err();
        assert!(
            matches!(&err, Error::ConfigInvalid { field, .. } if field == "node.rpc_listen"),
            "{err}"
        );
    }

    #[test]
    fn bad_seed_is_a_typed_error() {
        let err = RunConfig::from_toml(&sample("127.0.0.1:1", 4, "abcd"), Path::new("."), env_ok)
            .unwrap_err();
        assert!(
            matches!(&err, Error::ConfigInvalid { field, .. } if field == "pool.epoch_seed"),
            "{err}"
        );
    }

    #[test]
    fn pool_size_bounds_are_checked() {
        let err =
            RunConfig::from_toml(&sample("127.0.0.1:1", 1, A), Path::new("."), env_ok).unwrap_err();
        assert!(
            matches!(&err, Error::ConfigInvalid { field, .. } if field == "pool.min_members"),
            "{err}"
        );
        // Three members only with an explicit (documented as risky) min_members.
        let cfg =
            RunConfig::from_toml(&sample("127.0.0.1:1", 3, A), Path::new("."), env_ok).unwrap();
        assert_eq!(cfg.settings.rules.min_members, 3);
    }

    #[test]
    fn unknown_field_and_bad_toml_are_parse_errors() {
        let text =
            sample("127.0.0.1:1", 4, A).replace("[transport]", "[transport]\nlisten_typo = 1");
        let err = RunConfig::from_toml(&text, Path::new("."), env_ok).unwrap_err();
        assert!(
            matches!(&err, Error::ConfigParse(m) if m.contains("listen_typo")),
            "{err}"
        );
        let err = RunConfig::from_toml("[node", Path::new("."), env_ok).unwrap_err();
        assert!(matches!(err, Error::ConfigParse(_)));
    }

    #[test]
    fn missing_passphrase_is_a_typed_error() {
        let err = RunConfig::from_toml(&sample("127.0.0.1:1", 4, A), Path::new("."), |_| None)
            .unwrap_err();
        assert!(
            matches!(&err, Error::ConfigInvalid { field, .. } if field == "keystore.passphrase_env"),
            "{err}"
        );
    }

    #[test]
    fn bad_node_id_names_the_field() {
        let text = sample("127.0.0.1:1", 4, A).replacen(
            &format!("node_id = \"{B}\""),
            "node_id = \"zz\"",
            1,
        );
        let err = RunConfig::from_toml(&text, Path::new("."), env_ok).unwrap_err();
        assert!(
            matches!(&err, Error::ConfigInvalid { field, .. } if field == "peers[1].node_id"),
            "{err}"
        );
    }
}
