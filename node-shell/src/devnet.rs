//! `node-shell devnet`: a local L1 (anvil) and a pool of sequencer nodes in one process,
//! each with its own identity, keystore (in a temp dir), transport endpoint and HTTP port
//! on 127.0.0.1.
//!
//! The demo, membership from L1 only: start anvil, deploy `SequencerStaking` and
//! `BatchInbox` from dev account 0 (the admin), whitelist the sequencers' dev accounts
//! and lock stake for each; the nodes read L1 and run keygen on their own; the admin
//! registers the pool's MPC address (`setMpcAddress`) and funds it; from then on the
//! epoch's producer proposes batches of the demo L2 chain, every follower rebuilds and
//! checks the `appendBatch` transaction against its own L1 view before it co-signs, and
//! the producer sends the signed transaction to the inbox; a lock by a non-whitelisted
//! account reverts; a new sequencer locks stake and the nodes reshare n -> n+1 (same
//! address) and batches continue; one unlocks and they reshare n+1 -> n (the leaver's
//! share is retired) and batches continue. Every appended batch is checked on L1: sent by
//! the pool's MPC address.
//!
//! Progress lines go to stdout and end in a summary: the pool address, the contracts,
//! every L1 transaction hash, every step with its duration and result, the signatures
//! verified, the address after each reshare. The binary sends the nodes' own logs to a
//! file (see [`crate::logging`]).
//!
//! Each node's HTTP API token is in `<its data dir>/rpc-token` (see [`crate::rpc::auth`]);
//! the demo's client sends it, and shows that a request without it is refused.
//!
//! **Insecure by design**: it uses the public test primes compiled into the binary and a
//! cheap KDF, so it finishes in minutes, and a demo L2 (deterministic block hashes, no
//! rollup). Never reuse its keys.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;
use transport::{Libp2pConfig, Libp2pIdentity, Libp2pTransport, NodeId, Transport};

use alloy::primitives::{Address, FixedBytes, B256, U256};

use crate::config::{
    role_id, BatchSettings, KeySettings, L1Settings, NodeSettings, PrimeSourceConfig, UnlockConfig,
};
use crate::coordinator::Node;
use crate::error::{Error, Result};
use crate::l1::anvil::{Anvil, AnvilOptions};
use crate::l1::contracts::BatchInbox;
use crate::l1::contracts::{deploy, deploy_inbox, send_and_confirm, SequencerStaking};
use crate::l1::L1Error;
use crate::pool::{threshold_for, PoolRules, DEFAULT_MIN_MEMBERS};
use crate::rpc::auth::{Access, ApiToken};

/// Which transport the devnet nodes use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DevnetTransport {
    /// libp2p (TCP + noise + yamux) on 127.0.0.1.
    Libp2p,
    /// In-process channels.
    InMemory,
}

/// Devnet options: [`DevnetOptions::default`], then set the public fields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DevnetOptions {
    /// Initial pool size (4..=11: at least the default minimum pool size, see
    /// [`crate::pool`]; the committed test primes have 12 pairs); one more node is
    /// started as a whitelisted candidate.
    pub nodes: usize,
    /// Transport.
    pub transport: DevnetTransport,
    /// Batches signed before the first reshare.
    pub batches: usize,
    /// Epoch length (block producer rotation).
    pub epoch_length: Duration,
    /// Overall deadline of the demo.
    pub timeout: Duration,
    /// Where the nodes' logs go (only printed: the caller sets up logging).
    pub log_file: Option<PathBuf>,
    /// Also serve a second key, [`STATE_KEY`] with the L1 role [`STATE_ROLE`] and its own
    /// inbox: its own keygen, address registration, batches and reshares beside the
    /// batches key's.
    pub state_key: bool,
    /// The threshold protocol of every key (`--protocol`; default CGGMP21).
    pub protocol: tss_core::Protocol,
}

/// The devnet's second key (with [`DevnetOptions::state_key`]).
pub const STATE_KEY: &str = "devnet-state-key";
/// Its L1 role.
pub const STATE_ROLE: &str = "state";

/// What the devnet showed of its second key.
#[derive(Clone, Debug)]
pub struct StateKeyReport {
    /// Its own `BatchInbox` (deployed for the role [`STATE_ROLE`]).
    pub inbox: String,
    /// Its address after keygen, the join and the exit.
    pub addresses: [String; 3],
    /// Every batch its inbox appended (each checked: sent from its address).
    pub batches: Vec<InboxBatch>,
}

impl Default for DevnetOptions {
    fn default() -> Self {
        Self {
            nodes: 5,
            transport: DevnetTransport::Libp2p,
            batches: 2,
            epoch_length: Duration::from_secs(10),
            timeout: Duration::from_secs(900),
            log_file: None,
            state_key: false,
            protocol: tss_core::Protocol::default(),
        }
    }
}

/// One batch the inbox appended, as L1 records it.
#[derive(Clone, Debug)]
pub struct InboxBatch {
    /// Its epoch.
    pub epoch: u64,
    /// First L2 block.
    pub first_block: u64,
    /// Last L2 block.
    pub last_block: u64,
    /// The L1 transaction that appended it.
    pub tx_hash: String,
    /// The L1 block that included it.
    pub l1_block: u64,
    /// The transaction's sender.
    pub from: String,
    /// Whether the sender is the pool's MPC address (so the pool signed it).
    pub verified: bool,
}

/// One step of the demo.
#[derive(Clone, Debug)]
pub struct DevnetStep {
    /// What was done.
    pub name: String,
    /// How long it took.
    pub elapsed: Duration,
    /// What it showed.
    pub outcome: String,
}

/// What the devnet showed.
#[derive(Clone, Debug)]
pub struct DevnetReport {
    /// Transport used.
    pub transport: DevnetTransport,
    /// The keys' threshold protocol.
    pub protocol: tss_core::Protocol,
    /// The `SequencerStaking` contract on the devnet's anvil.
    pub staking: String,
    /// The `BatchInbox` contract.
    pub inbox: String,
    /// Every L1 transaction the demo sent: what, and its hash.
    pub l1_txs: Vec<(String, String)>,
    /// Address after keygen.
    pub address_after_keygen: String,
    /// Address after the join reshare.
    pub address_after_join: String,
    /// Address after the exit reshare.
    pub address_after_exit: String,
    /// Every batch the inbox appended, in order.
    pub batches: Vec<InboxBatch>,
    /// Index of the node that joined.
    pub joined: usize,
    /// Index of the node that left.
    pub left: usize,
    /// Whether the leaver's share was retired (its `GET /key` is 404).
    pub leaver_key_deleted: bool,
    /// Pool sizes: initial, after join, after exit.
    pub pool_sizes: [usize; 3],
    /// Every step with its duration, in order.
    pub steps: Vec<DevnetStep>,
    /// The second key, with [`DevnetOptions::state_key`].
    pub state_key: Option<StateKeyReport>,
    /// Wall-clock time.
    pub elapsed: Duration,
}

impl DevnetReport {
    /// Whether every check passed.
    pub fn all_ok(&self) -> bool {
        self.address_after_keygen == self.address_after_join
            && self.address_after_join == self.address_after_exit
            && !self.batches.is_empty()
            && self.batches.iter().all(|b| b.verified)
            && self.leaver_key_deleted
            && self.state_key.as_ref().is_none_or(|k| {
                k.addresses.iter().all(|a| *a == k.addresses[0])
                    && k.addresses[0] != self.address_after_keygen
                    && !k.batches.is_empty()
                    && k.batches.iter().all(|b| b.verified)
            })
    }
}

/// Minimal HTTP/1.1 client for the devnet's own loopback API (one request per
/// connection): sends `Host: <addr>`, `Content-Type: application/json` and, given a
/// `token`, `Authorization: Bearer <token>`. Returns the status code and body.
pub async fn http(
    addr: SocketAddr,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| Error::Devnet("malformed HTTP response".into()))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Devnet("malformed HTTP status line".into()))?;
    Ok((status, body.to_string()))
}

async fn http_json(
    node: &DevNode,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value)> {
    let (status, text) = http(node.rpc, Some(node.token.secret()), method, path, body).await?;
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, value))
}

fn check(cond: bool, what: impl Into<String>) -> Result<()> {
    if cond {
        Ok(())
    } else {
        Err(Error::Devnet(what.into()))
    }
}

struct DevNode {
    _node: Node,
    rpc: SocketAddr,
    /// The operator token of its HTTP API (in `<its data dir>/rpc-token`).
    token: ApiToken,
}

struct Devnet {
    /// Stops every node's background loops and HTTP server when the devnet ends.
    _stop: DropGuard,
    nodes: Vec<DevNode>,
    ids: Vec<NodeId>,
    deadline: Instant,
}

impl Devnet {
    fn remaining(&self) -> Result<Duration> {
        self.deadline
            .checked_duration_since(Instant::now())
            .ok_or_else(|| Error::Devnet("devnet deadline passed".into()))
    }

    /// Polls `GET /key` on `nodes` until each holds the same generation, `generation` or
    /// later; returns the (common) address and that generation.
    async fn wait_for_key(&self, nodes: &[usize], generation: u64) -> Result<(String, u64)> {
        self.wait_for_key_of(None, nodes, generation).await
    }

    /// [`Devnet::wait_for_key`] of the default key (`key_id` `None`: `GET /key`) or of
    /// key `key_id` (`GET /keys/{key_id}`).
    async fn wait_for_key_of(
        &self,
        key_id: Option<&str>,
        nodes: &[usize],
        generation: u64,
    ) -> Result<(String, u64)> {
        let mut reached = None;
        for &i in nodes {
            loop {
                self.remaining()?;
                let (status, key) = match key_id {
                    None => http_json(&self.nodes[i], "GET", "/key", None).await?,
                    Some(id) => {
                        let (status, view) =
                            http_json(&self.nodes[i], "GET", &format!("/keys/{id}"), None).await?;
                        let key = view["key"].clone();
                        (if key.is_null() { 404 } else { status }, key)
                    }
                };
                let held = key["generation"].as_u64().unwrap_or_default();
                // The first node fixes the generation the others must reach (a retried
                // reshare may skip generations a failed attempt left pending).
                let target = reached.as_ref().map_or(generation, |(_, g)| *g);
                if status == 200 && held >= target {
                    let a = key["address"].as_str().unwrap_or_default().to_string();
                    match &reached {
                        None => reached = Some((a, held)),
                        Some((prev, g)) => {
                            check(
                                *prev == a,
                                format!("node {i} reports address {a}, others {prev}"),
                            )?;
                            check(
                                *g == held,
                                format!("node {i} holds generation {held}, others {g}"),
                            )?;
                        }
                    }
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        reached.ok_or_else(|| Error::Devnet("no nodes".into()))
    }

    /// Waits until the inbox holds at least `count` batches; returns the count.
    async fn wait_for_batches(
        &self,
        inbox: &BatchInbox::BatchInboxInstance<alloy::providers::DynProvider>,
        count: u64,
    ) -> Result<u64> {
        loop {
            self.remaining()?;
            let n: u64 = inbox
                .batchCount()
                .call()
                .await
                .map_err(|e| Error::Devnet(format!("batchCount(): {e}")))?
                .try_into()
                .unwrap_or(u64::MAX);
            if n >= count {
                return Ok(n);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Runs the devnet demo and prints what it does. Fails on the first failed check; a
/// report is returned only if the whole scenario ran.
pub async fn run(opts: DevnetOptions) -> Result<DevnetReport> {
    let started = Instant::now();
    let n = opts.nodes;
    check(
        (DEFAULT_MIN_MEMBERS..=11).contains(&n),
        format!(
            "--nodes must be between {DEFAULT_MIN_MEMBERS} and 11 (a pool of 3 signs 3-of-3 \
             and cannot lose a member; the committed test primes have 12 pairs)"
        ),
    )?;
    let dir = tempfile::Builder::new()
        .prefix("node-shell-devnet-")
        .tempdir()?;
    println!("node-shell devnet: {n} sequencers + 1 candidate on 127.0.0.1");
    println!("  data:  {} (removed at the end)", dir.path().display());
    if let Some(log) = &opts.log_file {
        println!(
            "  logs:  {} (every node; warnings and errors also shown here)",
            log.display()
        );
    }
    println!("  WARNING: the devnet uses PUBLIC INSECURE TEST PRIMES and a cheap KDF; its keys are not secret.");

    let mut steps = Vec::new();
    let total = n + 1;
    let identities: Vec<Libp2pIdentity> = (0..total).map(|_| Libp2pIdentity::generate()).collect();
    let ids: Vec<NodeId> = identities.iter().map(|i| i.node_id()).collect();

    // Transports.
    let mut transports: Vec<Arc<dyn Transport>> = Vec::new();
    // Each libp2p node's counters, for its /metrics.
    let mut libp2p_stats: Vec<Option<Libp2pTransport>> = Vec::new();
    let kind = match opts.transport {
        DevnetTransport::Libp2p => {
            let mut started_transports = Vec::new();
            for identity in &identities {
                let addr = "/ip4/127.0.0.1/tcp/0"
                    .parse()
                    .map_err(|e| Error::Devnet(format!("multiaddr: {e}")))?;
                started_transports.push(
                    crate::net::start_libp2p(Libp2pConfig::new(identity.clone(), addr)).await?,
                );
            }
            let addrs: Vec<_> = started_transports
                .iter()
                .map(|t| t.listen_addrs().into_iter().next())
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| Error::Devnet("a libp2p node has no listen address".into()))?;
            for t in &started_transports {
                for (id, addr) in ids.iter().zip(&addrs) {
                    t.add_peer(*id, addr.clone())?;
                }
            }
            for t in &started_transports {
                t.wait_for_peers(&ids, Duration::from_secs(30)).await?;
            }
            for (i, a) in addrs.iter().enumerate() {
                println!("  node {i}: {} libp2p {a}", &ids[i].to_hex()[..16]);
            }
            libp2p_stats.extend(started_transports.iter().cloned().map(Some));
            transports.extend(
                started_transports
                    .into_iter()
                    .map(|t| Arc::new(t) as Arc<dyn Transport>),
            );
            "libp2p"
        }
        DevnetTransport::InMemory => {
            let network = transport::InMemoryNetwork::new();
            for id in &ids {
                transports.push(Arc::new(network.endpoint(*id)));
            }
            "in-memory"
        }
    };

    // L1: anvil, the contracts, the whitelist and the genesis stakes.
    let t0 = Instant::now();
    let anvil = Anvil::spawn(&AnvilOptions {
        accounts: total + 3,
        block_time: Some(1),
        ..AnvilOptions::default()
    })?;
    let provider = anvil.provider();
    let accounts = anvil.accounts().to_vec();
    check(
        accounts.len() > total + 1,
        "anvil reported too few dev accounts",
    )?;
    let admin = accounts[0];
    let account_of = |i: usize| accounts[i + 1];
    let deployment = deploy(&provider, admin, eth(1), eth(100), 1).await?;
    println!(
        "  L1:    anvil {} (chain {}), SequencerStaking {}, BatchInbox {}, deployed in block {}",
        anvil.endpoint(),
        anvil.chain_id(),
        deployment.staking,
        deployment.inbox,
        deployment.deployment_block
    );
    let staking = SequencerStaking::new(deployment.staking, provider.clone());
    let mut l1_txs: Vec<(String, String)> = Vec::new();
    let state_inbox = match opts.state_key {
        true => {
            let inbox =
                deploy_inbox(&provider, admin, deployment.staking, role_id(STATE_ROLE), 1).await?;
            println!("  L1:    BatchInbox of the role {STATE_ROLE:?} (key {STATE_KEY}): {inbox}");
            Some(inbox)
        }
        false => None,
    };
    for i in 0..total {
        let tx = staking
            .setWhitelisted(account_of(i), true)
            .from(admin)
            .into_transaction_request();
        let hash = send_and_confirm(&provider, "setWhitelisted", tx).await?;
        l1_txs.push((format!("admin whitelists node {i}"), hash.to_string()));
    }
    for (i, node) in ids.iter().enumerate().take(n) {
        let hash = lock_stake(&staking, account_of(i), *node, stake_of(i)).await?;
        l1_txs.push((format!("node {i} locks {} ETH", i + 1), hash.to_string()));
    }
    step(
        &mut steps,
        format!("L1: deploy, whitelist {total}, lock {n} stakes"),
        t0,
        format!("staking {}", deployment.staking),
    );
    // The nodes must first see every lock confirmed: a node that starts while the last
    // lock is still unconfirmed would (rightly) propose keygen for the members confirmed
    // so far, and the last one could then only join by reshare once the MPC address is
    // registered, which this demo does after a keygen of all `n`.
    let locked_at = crate::l1::head(&provider).await?;
    let confirmations = 1;
    loop {
        if crate::l1::head(&provider).await? >= locked_at + confirmations {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut l1 = L1Settings::new(anvil.endpoint(), deployment);
    l1.confirmations = confirmations;
    l1.poll_interval = Duration::from_millis(500);
    l1.leader_timeout = Duration::from_secs(90);
    l1.proposal_wait = Duration::from_secs(20);
    let rules = PoolRules::l1(DEFAULT_MIN_MEMBERS, total);
    let seed: [u8; 32] = Sha256::digest(b"node-shell devnet epoch seed").into();

    let t0 = Instant::now();
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    // Every step runs in this block, so that on success and on failure alike the nodes
    // are stopped and their loops awaited before the runtime goes (a loop still running
    // then would meet a runtime that is shutting down).
    let outcome: Result<DevnetReport> = async {
        let stop = shutdown.clone().drop_guard();
        let mut nodes = Vec::new();
        for (i, transport) in transports.into_iter().enumerate() {
            let mut pass = [0u8; 16];
            rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut pass);
            let mut settings = NodeSettings::new(
                "devnet-sequencer-key",
                dir.path().join(format!("node-{i}")).join("keystore"),
                UnlockConfig::Passphrase(zeroize::Zeroizing::new(hex::encode(pass))),
                rules.clone(),
                l1.clone(),
                seed,
            );
            settings.insecure_fast_kdf = true;
            settings.peers = ids.clone();
            settings.epoch_length = opts.epoch_length;
            settings.primes = PrimeSourceConfig::InsecureFixture { index: i };
            // Batches of the demo L2: a batch every few L1 blocks (anvil mines one a second),
            // a fallback producer after 40 blocks without one.
            let mut batches = BatchSettings::demo("node-shell devnet");
            batches.interval_l1_blocks = 3;
            batches.stall_l1_blocks = 40;
            settings.batches = Some(batches);
            // One presignature of its own ready at each node: the producer signs a batch in
            // one round, and refills in the background.
            settings.presignatures = 1;
            if let Some(inbox) = state_inbox {
                settings = settings.with_key(KeySettings::new(STATE_KEY, STATE_ROLE, inbox));
            }
            for key in &mut settings.keys {
                key.protocol = opts.protocol;
            }
            settings.shutdown = shutdown.clone();
            settings.tasks = tasks.clone();
            let token =
                ApiToken::load_or_create(&dir.path().join(format!("node-{i}")).join("rpc-token"))?;
            let signer: Arc<dyn tss_core::IdentitySigner> = Arc::new(identities[i].clone());
            let node = Node::start(settings, transport, signer, kind).await?;
            if let Some(t) = libp2p_stats.get(i).cloned().flatten() {
                node.metrics().watch_transport(move || t.stats());
            }
            let (rpc, _task) = crate::rpc::serve_with_shutdown(
                node.clone(),
                "127.0.0.1:0".parse().expect("addr"),
                Access::new(token.clone()),
                shutdown.clone(),
            )
            .await?;
            println!(
                "  node {i}: HTTP API http://{rpc} (token in {}){}",
                token.path().unwrap_or(dir.path()).display(),
                if i == n {
                    "  (candidate: whitelisted, no stake locked yet)"
                } else {
                    ""
                }
            );
            nodes.push(DevNode {
                _node: node,
                rpc,
                token,
            });
        }
        let net = Devnet {
            _stop: stop,
            nodes,
            ids,
            deadline: started + opts.timeout,
        };
        let members: Vec<usize> = (0..n).collect();
        step(
            &mut steps,
            format!("start {total} nodes ({kind})"),
            t0,
            "connected".into(),
        );

        let (t_n, t_join) = (threshold_for(n), threshold_for(n + 1));
        println!(
            "\n[1] keygen from L1 ({n} sequencers locked, threshold {t_n}-of-{n} = more than 2/3)"
        );
        let t0 = Instant::now();
        let (address, keygen_generation) = net.wait_for_key(&members, 0).await?;
        println!(
            "  pool address {address} (keygen {:.1}s)",
            t0.elapsed().as_secs_f64()
        );
        step(
            &mut steps,
            format!("keygen {t_n}-of-{n}"),
            t0,
            format!("address {address}"),
        );
        let (status, key) = http_json(&net.nodes[0], "GET", "/key", None).await?;
        check(status == 200, "GET /key")?;
        println!(
            "  public key {}",
            key["public_key"].as_str().unwrap_or_default()
        );
        let t0 = Instant::now();
        let mpc: Address = address
            .parse()
            .map_err(|e| Error::Devnet(format!("pool address {address}: {e}")))?;
        let tx = staking
            .setMpcAddress(mpc)
            .from(admin)
            .into_transaction_request();
        let hash = send_and_confirm(&provider, "setMpcAddress", tx).await?;
        l1_txs.push(("admin registers the MPC address".into(), hash.to_string()));
        let registered = staking
            .mpcAddress()
            .call()
            .await
            .map_err(|e| Error::Devnet(format!("mpcAddress(): {e}")))?;
        check(registered == mpc, "the MPC address on L1 is not the pool's")?;
        println!("  admin registered the MPC address on L1: tx {hash}");
        step(
            &mut steps,
            "L1: admin registers the MPC address".into(),
            t0,
            format!("tx {hash}"),
        );

        let t0 = Instant::now();
        let fund = alloy::rpc::types::TransactionRequest::default()
            .from(admin)
            .to(mpc)
            .value(eth(100));
        let hash = send_and_confirm(&provider, "fund the MPC address", fund).await?;
        l1_txs.push(("admin funds the MPC address".into(), hash.to_string()));
        step(
            &mut steps,
            "L1: admin funds the MPC address (100 ETH)".into(),
            t0,
            format!("tx {hash}"),
        );

        println!(
            "\n[2] the epoch's producer proposes batches; {t_n} signers each rebuild the appendBatch transaction from their own L1 view and co-sign; the producer sends it to the inbox"
        );
        let inbox = BatchInbox::new(deployment.inbox, provider.clone());
        let t0 = Instant::now();
        let count = net.wait_for_batches(&inbox, opts.batches as u64).await?;
        let appended = inbox_batches(&provider, deployment.inbox, mpc).await?;
        for b in &appended {
            println!(
                "  batch epoch {} L2 blocks [{}, {}] appended by tx {} from {}",
                b.epoch, b.first_block, b.last_block, b.tx_hash, b.from
            );
        }
        step(
            &mut steps,
            format!(
                "pool appends {} batch{} ({t_n}-of-{n})",
                opts.batches,
                if opts.batches == 1 { "" } else { "es" }
            ),
            t0,
            format!("inbox holds {count}, {}", from_pool(&appended)),
        );
        check(
            appended.iter().all(|b| b.verified),
            "a batch was appended by another account than the pool",
        )?;
        let (status, err) = http(
            net.nodes[0].rpc,
            Some(net.nodes[0].token.secret()),
            "POST",
            "/sign",
            Some(&json!({"digest": format!("0x{}", "11".repeat(32))})),
        )
        .await?;
        check(
            status == 403,
            format!(
                "POST /sign of a raw digest gave {status}, expected 403 (raw-digest signing is off)"
            ),
        )?;
        println!("  raw-digest signing refused: {status} {err}");
        let (status, err) = http(
            net.nodes[0].rpc,
            None,
            "POST",
            "/sign",
            Some(&json!({"digest": format!("0x{}", "11".repeat(32))})),
        )
        .await?;
        check(
            status == 401,
            format!("POST /sign without the operator token gave {status}, expected 401"),
        )?;
        println!("  request without the operator token refused: {status} {err}");

        let mut state_addresses = Vec::new();
        let mut state_generation = 0;
        if let Some(state_inbox) = state_inbox {
            println!(
                "\n[2b] the second key {STATE_KEY} (L1 role {STATE_ROLE:?}): its own keygen, address and inbox"
            );
            let t0 = Instant::now();
            let (state_address, g) = net.wait_for_key_of(Some(STATE_KEY), &members, 0).await?;
            state_generation = g;
            check(
                state_address != address,
                "the second key has the first key's address",
            )?;
            let state_mpc: Address = state_address
                .parse()
                .map_err(|e| Error::Devnet(format!("address {state_address}: {e}")))?;
            let tx = staking
                .setRoleAddress(role_id(STATE_ROLE), state_mpc)
                .from(admin)
                .into_transaction_request();
            let hash = send_and_confirm(&provider, "setRoleAddress", tx).await?;
            l1_txs.push((
                format!("admin registers {STATE_KEY}'s address for {STATE_ROLE:?}"),
                hash.to_string(),
            ));
            let fund = alloy::rpc::types::TransactionRequest::default()
                .from(admin)
                .to(state_mpc)
                .value(eth(100));
            let hash = send_and_confirm(&provider, "fund the state address", fund).await?;
            l1_txs.push((format!("admin funds {STATE_KEY}'s address"), hash.to_string()));
            let inbox = BatchInbox::new(state_inbox, provider.clone());
            let count = net.wait_for_batches(&inbox, 1).await?;
            let appended = inbox_batches(&provider, state_inbox, state_mpc).await?;
            println!(
                "  address {state_address}; its inbox holds {count} ({})",
                from_pool(&appended)
            );
            step(
                &mut steps,
                format!("second key {STATE_KEY}: keygen, registration, a batch on its inbox"),
                t0,
                format!("address {state_address}, {}", from_pool(&appended)),
            );
            check(
                appended.iter().all(|b| b.verified),
                "a batch was appended to the state inbox by another account than its key",
            )?;
            state_addresses.push(state_address);
        }

        let outsider = accounts[total + 1];
        let refused = lock_stake(&staking, outsider, NodeId::from_bytes([0xee; 32]), eth(1)).await;
        check(
            reverted_with(&refused, "NotWhitelisted"),
            format!("a lock by the non-whitelisted {outsider} did not revert: {refused:?}"),
        )?;
        println!("  a lock by the non-whitelisted account {outsider} reverted on L1");

        let joiner = n;
        println!(
            "\n[3] sequencer node {joiner} locks {} ETH on L1 (reshare {n} -> {})",
            joiner + 1,
            n + 1
        );
        let t0 = Instant::now();
        let hash = lock_stake(
            &staking,
            account_of(joiner),
            net.ids[joiner],
            stake_of(joiner),
        )
        .await?;
        l1_txs.push((
            format!("node {joiner} locks {} ETH", joiner + 1),
            hash.to_string(),
        ));
        println!("  lock tx {hash}");
        let members_after_join: Vec<usize> = (0..=n).collect();
        let (address_after_join, join_generation) = net
            .wait_for_key(&members_after_join, keygen_generation + 1)
            .await?;
        println!(
            "  reshare done in {:.1}s: address before {address}, after {address_after_join} -> {}",
            t0.elapsed().as_secs_f64(),
            if address == address_after_join {
                "UNCHANGED"
            } else {
                "CHANGED!"
            }
        );
        step(
            &mut steps,
            format!(
                "reshare: node {joiner} joins ({t_n}-of-{n} -> {t_join}-of-{})",
                n + 1
            ),
            t0,
            unchanged(&address, &address_after_join).into(),
        );
        check(address == address_after_join, "address changed after join")?;
        if !state_addresses.is_empty() {
            let (a, g) = net
                .wait_for_key_of(Some(STATE_KEY), &members_after_join, state_generation + 1)
                .await?;
            state_generation = g;
            println!(
                "  {STATE_KEY} reshared too: {}",
                unchanged(&state_addresses[0], &a)
            );
            check(a == state_addresses[0], "the second key's address changed after join")?;
            state_addresses.push(a);
        }
        let t0 = Instant::now();
        let before = inbox_count(&inbox).await?;
        let count = net.wait_for_batches(&inbox, before + 1).await?;
        step(
            &mut steps,
            format!("batches continue after the join ({t_join}-of-{})", n + 1),
            t0,
            format!("inbox {before} -> {count}"),
        );

        let leaver = 1;
        println!(
            "\n[4] sequencer node {leaver} unlocks its stake on L1 (reshare {} -> {n}); its share is retired",
            n + 1
        );
        let t0 = Instant::now();
        let tx = staking
            .unlock()
            .from(account_of(leaver))
            .into_transaction_request();
        let hash = send_and_confirm(&provider, "unlock", tx).await?;
        l1_txs.push((format!("node {leaver} unlocks"), hash.to_string()));
        println!("  unlock tx {hash}");
        let remaining: Vec<usize> = (0..=n).filter(|i| *i != leaver).collect();
        let (address_after_exit, _) = net.wait_for_key(&remaining, join_generation + 1).await?;
        println!(
            "  reshare done in {:.1}s: address before {address_after_join}, after {address_after_exit} -> {}",
            t0.elapsed().as_secs_f64(),
            if address_after_join == address_after_exit { "UNCHANGED" } else { "CHANGED!" }
        );
        let exit_elapsed = t0.elapsed();
        check(
            address_after_join == address_after_exit,
            "address changed after exit",
        )?;
        if !state_addresses.is_empty() {
            let (a, _) = net
                .wait_for_key_of(Some(STATE_KEY), &remaining, state_generation + 1)
                .await?;
            println!(
                "  {STATE_KEY} reshared too: {}",
                unchanged(&state_addresses[0], &a)
            );
            check(a == state_addresses[0], "the second key's address changed after exit")?;
            state_addresses.push(a);
        }
        // The leaver dealt (leavers deal first) and retires its share once the new
        // committee confirmed; give it a moment.
        let mut status = 200;
        for _ in 0..120 {
            status = http_json(&net.nodes[leaver], "GET", "/key", None).await?.0;
            if status == 404 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let leaver_key_deleted = status == 404;
        println!(
            "  node {leaver} GET /key -> {status} ({})",
            if leaver_key_deleted {
                "share deleted"
            } else {
                "share still present!"
            }
        );
        steps.push(DevnetStep {
            name: format!(
                "reshare: node {leaver} exits ({t_join}-of-{} -> {t_n}-of-{n})",
                n + 1
            ),
            elapsed: exit_elapsed,
            outcome: format!(
                "{}, leaver's share {}",
                unchanged(&address_after_join, &address_after_exit),
                if leaver_key_deleted {
                    "deleted"
                } else {
                    "STILL PRESENT"
                }
            ),
        });
        check(leaver_key_deleted, "the leaver still holds a key share")?;
        if !state_addresses.is_empty() {
            // The leaver dealt in the second key's reshare too, and retired that share.
            let mut held = true;
            for _ in 0..120 {
                let (_, view) =
                    http_json(&net.nodes[leaver], "GET", &format!("/keys/{STATE_KEY}"), None)
                        .await?;
                held = !view["key"].is_null();
                if !held {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            println!(
                "  node {leaver} GET /keys/{STATE_KEY} -> key {}",
                if held { "still present!" } else { "null (share deleted)" }
            );
            check(!held, "the leaver still holds a share of the second key")?;
        }
        let t0 = Instant::now();
        let before = inbox_count(&inbox).await?;
        let count = net.wait_for_batches(&inbox, before + 1).await?;
        steps.push(DevnetStep {
            name: format!("batches continue after the exit ({t_n}-of-{n})"),
            elapsed: t0.elapsed(),
            outcome: format!("inbox {before} -> {count}"),
        });
        let batches = inbox_batches(&provider, deployment.inbox, mpc).await?;
        check(
            batches.iter().all(|b| b.verified),
            "a batch was appended by another account than the pool",
        )?;
        for (i, node) in net.nodes.iter().enumerate() {
            let (status, metrics) = http(node.rpc, None, "GET", "/metrics", None).await?;
            check(status == 200, "GET /metrics")?;
            for line in metrics.lines().filter(|l| {
                l.starts_with("node_shell_batches_total{") && l.contains("stage=\"included\"")
            }) {
                println!("  node {i} /metrics: {line}");
            }
            if opts.transport == DevnetTransport::Libp2p {
                // The transport's counters reach /metrics: every node took part in runs.
                let delivered = metrics
                    .lines()
                    .find_map(|l| l.strip_prefix("node_shell_transport_frames_delivered_total "))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0);
                check(
                    delivered > 0,
                    format!("node {i}: /metrics shows no frames delivered by libp2p"),
                )?;
            }
        }

        let state_key = match state_inbox {
            Some(inbox) => {
                let mpc: Address = state_addresses[0]
                    .parse()
                    .map_err(|e| Error::Devnet(format!("state address: {e}")))?;
                Some(StateKeyReport {
                    inbox: inbox.to_string(),
                    addresses: state_addresses
                        .clone()
                        .try_into()
                        .map_err(|_| Error::Devnet("the second key missed a reshare".into()))?,
                    batches: inbox_batches(&provider, inbox, mpc).await?,
                })
            }
            None => None,
        };
        let report = DevnetReport {
            state_key,
            transport: opts.transport,
            protocol: opts.protocol,
            staking: deployment.staking.to_string(),
            inbox: deployment.inbox.to_string(),
            l1_txs,
            address_after_keygen: address,
            address_after_join,
            address_after_exit,
            batches,
            joined: joiner,
            left: leaver,
            leaver_key_deleted,
            pool_sizes: [n, n + 1, n],
            steps,
            elapsed: started.elapsed(),
        };
        drop(net);
        Ok(report)
    }
    .await;
    shutdown.cancel();
    tasks.close();
    tasks.wait().await;
    let report = outcome?;
    print_summary(&report);
    check(report.all_ok(), "summary checks failed")?;
    Ok(report)
}

/// Records a finished step of the demo, timed from `t0`.
fn step(steps: &mut Vec<DevnetStep>, name: String, t0: Instant, outcome: String) {
    steps.push(DevnetStep {
        name,
        elapsed: t0.elapsed(),
        outcome,
    });
}

/// The inbox's batch count.
async fn inbox_count(
    inbox: &BatchInbox::BatchInboxInstance<alloy::providers::DynProvider>,
) -> Result<u64> {
    Ok(inbox
        .batchCount()
        .call()
        .await
        .map_err(|e| Error::Devnet(format!("batchCount(): {e}")))?
        .try_into()
        .unwrap_or(u64::MAX))
}

/// Every `BatchAppended` of `inbox`, with the sender of its transaction (verified:
/// the pool's MPC address `mpc`).
pub async fn inbox_batches(
    provider: &alloy::providers::DynProvider,
    inbox: Address,
    mpc: Address,
) -> Result<Vec<InboxBatch>> {
    use alloy::providers::Provider;
    use alloy::sol_types::SolEvent;
    let filter = alloy::rpc::types::Filter::new()
        .address(inbox)
        .event_signature(BatchInbox::BatchAppended::SIGNATURE_HASH)
        .from_block(0u64);
    let logs = provider
        .get_logs(&filter)
        .await
        .map_err(|e| Error::Devnet(format!("eth_getLogs: {e}")))?;
    let mut out = Vec::new();
    for log in logs {
        let e = BatchInbox::BatchAppended::decode_log_data(log.data())
            .map_err(|e| Error::Devnet(format!("BatchAppended: {e}")))?;
        let hash = log.transaction_hash.unwrap_or_default();
        let tx = provider
            .get_transaction_by_hash(hash)
            .await
            .map_err(|e| Error::Devnet(format!("eth_getTransactionByHash: {e}")))?
            .ok_or_else(|| Error::Devnet(format!("no transaction {hash}")))?;
        let from = tx.inner.signer();
        out.push(InboxBatch {
            epoch: e.epoch,
            first_block: e.firstBlock,
            last_block: e.lastBlock,
            tx_hash: hash.to_string(),
            l1_block: log.block_number.unwrap_or_default(),
            from: from.to_string(),
            verified: from == mpc,
        });
    }
    Ok(out)
}

fn from_pool(batches: &[InboxBatch]) -> String {
    format!(
        "{} of {} sent by the MPC address",
        batches.iter().filter(|b| b.verified).count(),
        batches.len()
    )
}

/// `n` ETH in wei.
pub fn eth(n: u64) -> U256 {
    U256::from(n) * U256::from(10u64).pow(U256::from(18))
}

/// Node `i`'s stake in the devnet: `i + 1` ETH.
fn stake_of(i: usize) -> U256 {
    eth(i as u64 + 1)
}

/// `SequencerStaking.lock(node)` with `stake` wei from `account` (an account the L1 node
/// signs for), waiting for the receipt; a revert is [`L1Error::Reverted`].
pub async fn lock_stake(
    staking: &SequencerStaking::SequencerStakingInstance<alloy::providers::DynProvider>,
    account: Address,
    node: NodeId,
    stake: U256,
) -> Result<B256> {
    let tx = staking
        .lock(FixedBytes(*node.as_bytes()))
        .value(stake)
        .from(account)
        .into_transaction_request();
    Ok(send_and_confirm(staking.provider(), "lock", tx).await?)
}

/// Whether `result` is an L1 transaction refused with the `SequencerStaking` custom
/// error `error` (by name): reverted when mined, or refused by the node's gas estimate
/// (which carries the revert data).
pub fn reverted_with<T>(result: &Result<T>, error: &str) -> bool {
    let Some(selector) = SequencerStaking::SequencerStakingErrors::SELECTORS
        .iter()
        .zip(SequencerStaking::SequencerStakingErrors::VARIANT_NAMES)
        .find(|(_, name)| **name == error)
        .map(|(sel, _)| hex::encode(sel))
    else {
        return false;
    };
    match result {
        Err(Error::L1(L1Error::Rpc { reason, .. })) => {
            reason.contains("execution reverted") && reason.contains(&selector)
        }
        Err(Error::L1(L1Error::Reverted { .. })) => true,
        _ => false,
    }
}

fn unchanged(before: &str, after: &str) -> &'static str {
    if before == after {
        "address unchanged"
    } else {
        "ADDRESS CHANGED"
    }
}

fn print_summary(r: &DevnetReport) {
    println!("\n==================== devnet summary ====================");
    println!(
        "transport:            {}",
        match r.transport {
            DevnetTransport::Libp2p => "libp2p (TCP+noise+yamux on 127.0.0.1)",
            DevnetTransport::InMemory => "in-memory",
        }
    );
    println!("threshold protocol:   {}", r.protocol);
    println!("pool address:         {}", r.address_after_keygen);
    println!("SequencerStaking:     {}", r.staking);
    println!("BatchInbox:           {}", r.inbox);
    println!("L1 transactions:");
    for (what, hash) in &r.l1_txs {
        println!("  {what:<40} {hash}");
    }
    println!(
        "pool sizes:           {} -> {} (node {} joined) -> {} (node {} left)",
        r.pool_sizes[0], r.pool_sizes[1], r.joined, r.pool_sizes[2], r.left
    );
    println!("steps:");
    let width = r.steps.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for s in &r.steps {
        println!(
            "  {:<width$}  {:>7.1}s  {}",
            s.name,
            s.elapsed.as_secs_f64(),
            s.outcome
        );
    }
    println!("address after keygen: {}", r.address_after_keygen);
    println!(
        "address after join:   {}  {}",
        r.address_after_join,
        if r.address_after_join == r.address_after_keygen {
            "(unchanged)"
        } else {
            "(CHANGED)"
        }
    );
    println!(
        "address after exit:   {}  {}",
        r.address_after_exit,
        if r.address_after_exit == r.address_after_keygen {
            "(unchanged)"
        } else {
            "(CHANGED)"
        }
    );
    if let Some(k) = &r.state_key {
        println!(
            "second key {STATE_KEY} (role {STATE_ROLE:?}): address {} after keygen, join and exit: {}; inbox {}: {}",
            k.addresses[0],
            if k.addresses.iter().all(|a| *a == k.addresses[0]) {
                "unchanged"
            } else {
                "CHANGED"
            },
            k.inbox,
            from_pool(&k.batches)
        );
    }
    for b in &r.batches {
        println!(
            "batch epoch {} L2 [{}, {}] tx {} from {} -> {}",
            b.epoch,
            b.first_block,
            b.last_block,
            b.tx_hash,
            b.from,
            if b.verified {
                "verified"
            } else {
                "NOT FROM THE POOL"
            }
        );
    }
    println!("inbox batches:        {}", from_pool(&r.batches));
    println!("leaver's key deleted: {}", r.leaver_key_deleted);
    println!(
        "result:               {} in {:.1}s",
        if r.all_ok() {
            "ALL CHECKS PASSED"
        } else {
            "FAILED"
        },
        r.elapsed.as_secs_f64()
    );
}
