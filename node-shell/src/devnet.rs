//! `node-shell devnet`: a local pool of sequencer nodes in one process, each with its own
//! identity, keystore (in a temp dir), transport endpoint and HTTP port on 127.0.0.1.
//!
//! The demo: keygen (automatic), sign batches through the HTTP API at the epoch's block
//! producer, verify every signature by recovering the address, add a sequencer (reshare
//! n -> n+1), sign with the new member, remove one (voluntary exit: reshare n+1 -> n, the
//! leaver deletes its key), sign again, and check the address never changed.
//!
//! Progress lines go to stdout and end in a summary: the pool address, every step with
//! its duration and result, the signatures verified, the address after each reshare.
//! The binary sends the nodes' own logs to a file (see [`crate::logging`]).
//!
//! Each node's HTTP API token is in `<its data dir>/rpc-token` (see [`crate::rpc::auth`]);
//! the demo's client sends it, and shows that a request without it is refused.
//!
//! **Insecure by design**: it uses the public test primes compiled into the binary and a
//! cheap KDF, so it finishes in minutes. Never reuse its keys.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::{CancellationToken, DropGuard};
use transport::{Libp2pConfig, Libp2pIdentity, NodeId, Transport};
use tss_core::EthSignature;

use crate::config::{NodeSettings, PrimeSourceConfig, UnlockConfig};
use crate::coordinator::Node;
use crate::error::{Error, Result};
use crate::pool::{threshold_for, Member, PoolRules, DEFAULT_MIN_MEMBERS};
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
        }
    }
}

/// One signed batch.
#[derive(Clone, Debug)]
pub struct SignedBatch {
    /// What was signed.
    pub label: String,
    /// keccak256 of the batch.
    pub digest: String,
    /// Node index that coordinated.
    pub coordinator: usize,
    /// Node indices that signed.
    pub signers: Vec<usize>,
    /// Address recovered from the signature.
    pub recovered: String,
    /// Whether it equals the pool address.
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
    /// Address after keygen.
    pub address_after_keygen: String,
    /// Address after the join reshare.
    pub address_after_join: String,
    /// Address after the exit reshare.
    pub address_after_exit: String,
    /// Every signed batch.
    pub batches: Vec<SignedBatch>,
    /// Index of the node that joined.
    pub joined: usize,
    /// Index of the node that left.
    pub left: usize,
    /// Whether the leaver's key was deleted (its `GET /key` is 404).
    pub leaver_key_deleted: bool,
    /// Pool sizes: initial, after join, after exit.
    pub pool_sizes: [usize; 3],
    /// Every step with its duration, in order.
    pub steps: Vec<DevnetStep>,
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
    fn index_of_hex(&self, hex: &str) -> Option<usize> {
        self.ids.iter().position(|id| id.to_hex() == hex)
    }

    fn remaining(&self) -> Result<Duration> {
        self.deadline
            .checked_duration_since(Instant::now())
            .ok_or_else(|| Error::Devnet("devnet deadline passed".into()))
    }

    /// Polls `GET /key` on `nodes` until each has generation `generation`; returns the
    /// (common) address.
    async fn wait_for_key(&self, nodes: &[usize], generation: u64) -> Result<String> {
        let mut address = None;
        for &i in nodes {
            loop {
                self.remaining()?;
                let (status, key) = http_json(&self.nodes[i], "GET", "/key", None).await?;
                if status == 200 && key["generation"].as_u64() == Some(generation) {
                    let a = key["address"].as_str().unwrap_or_default().to_string();
                    match &address {
                        None => address = Some(a),
                        Some(prev) => check(
                            *prev == a,
                            format!("node {i} reports address {a}, others {prev}"),
                        )?,
                    }
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        address.ok_or_else(|| Error::Devnet("no nodes".into()))
    }

    async fn producer(&self, among: &[usize]) -> Result<usize> {
        let (_, status) = http_json(&self.nodes[among[0]], "GET", "/status", None).await?;
        let epoch = status["epoch"].as_u64().unwrap_or_default();
        let producer = status["block_producer"]
            .as_str()
            .and_then(|h| self.index_of_hex(h))
            .ok_or_else(|| Error::Devnet("no block producer".into()))?;
        println!("  epoch {epoch}: block producer is node {producer}");
        Ok(producer)
    }

    async fn sign_batch(&self, via: usize, label: &str, address: &str) -> Result<SignedBatch> {
        let batch = json!({ "batch": label, "txs": [format!("0x{}", hex::encode(Sha256::digest(label.as_bytes())))] });
        let digest = tss_core::keccak256(batch.to_string().as_bytes());
        let digest_hex = format!("0x{}", hex::encode(digest));
        let started = Instant::now();
        let (status, resp) = http_json(
            &self.nodes[via],
            "POST",
            "/sign",
            Some(&json!({ "digest": digest_hex })),
        )
        .await?;
        check(
            status == 200,
            format!("POST /sign at node {via}: {status} {resp}"),
        )?;
        let parse32 = |k: &str| -> Result<[u8; 32]> {
            crate::rpc::parse_digest(resp[k].as_str().unwrap_or_default())
                .map_err(|_| Error::Devnet(format!("bad {k} in sign response")))
        };
        let v = resp["v"].as_u64().unwrap_or(0);
        let sig = EthSignature {
            r: parse32("r")?,
            s: parse32("s")?,
            v: v.saturating_sub(27) as u8,
        };
        let recovered = sig.recover_address(&digest)?.to_checksum_string();
        let signers: Vec<usize> = resp["signers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().and_then(|h| self.index_of_hex(h)))
                    .collect()
            })
            .unwrap_or_default();
        let verified = recovered == address;
        println!(
            "  signed {label:<22} digest {}.. via node {via}, signers {signers:?}, v={v}, recovered {recovered} -> {} ({:.1}s)",
            &digest_hex[..12],
            if verified { "OK" } else { "MISMATCH" },
            started.elapsed().as_secs_f64()
        );
        Ok(SignedBatch {
            label: label.to_string(),
            digest: digest_hex,
            coordinator: via,
            signers,
            recovered,
            verified,
        })
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
    let mut step = |name: String, t0: Instant, outcome: String| {
        steps.push(DevnetStep {
            name,
            elapsed: t0.elapsed(),
            outcome,
        })
    };
    let t0 = Instant::now();
    let total = n + 1;
    let identities: Vec<Libp2pIdentity> = (0..total).map(|_| Libp2pIdentity::generate()).collect();
    let ids: Vec<NodeId> = identities.iter().map(|i| i.node_id()).collect();

    // Transports.
    let mut transports: Vec<Arc<dyn Transport>> = Vec::new();
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

    let rules = PoolRules {
        whitelist: ids.iter().copied().collect(),
        min_stake: 1_000,
        max_stake: 1_000_000,
        min_members: DEFAULT_MIN_MEMBERS,
        max_members: total,
    };
    let genesis: Vec<Member> = ids[..n]
        .iter()
        .enumerate()
        .map(|(i, id)| Member {
            node: *id,
            stake: 1_000 * (i as u64 + 1),
        })
        .collect();
    let seed: [u8; 32] = Sha256::digest(b"node-shell devnet epoch seed").into();

    let shutdown = CancellationToken::new();
    let stop = shutdown.clone().drop_guard();
    let mut nodes = Vec::new();
    for (i, transport) in transports.into_iter().enumerate() {
        let mut pass = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut pass);
        let settings = NodeSettings {
            key_id: "devnet-sequencer-key".into(),
            keystore_dir: dir.path().join(format!("node-{i}")).join("keystore"),
            unlock: UnlockConfig::Passphrase(zeroize::Zeroizing::new(hex::encode(pass))),
            insecure_fast_kdf: true,
            peers: ids.clone(),
            rules: rules.clone(),
            genesis: genesis.clone(),
            epoch_length: opts.epoch_length,
            epoch_seed: seed,
            session_idle_timeout: Duration::from_secs(120),
            primes: PrimeSourceConfig::InsecureFixture { index: i },
            auto_keygen: true,
            auto_keygen_delay: Duration::from_millis(500),
            shutdown: shutdown.clone(),
        };
        let token =
            ApiToken::load_or_create(&dir.path().join(format!("node-{i}")).join("rpc-token"))?;
        let signer: Arc<dyn tss_core::IdentitySigner> = Arc::new(identities[i].clone());
        let node = Node::start(settings, transport, signer, kind).await?;
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
                "  (candidate, not yet in the pool)"
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
        format!("start {total} nodes ({kind})"),
        t0,
        "connected".into(),
    );

    let (t_n, t_join) = (threshold_for(n), threshold_for(n + 1));
    println!("\n[1] keygen ({n} sequencers, threshold {t_n}-of-{n} = more than 2/3)");
    let t0 = Instant::now();
    let address = net.wait_for_key(&members, 0).await?;
    println!(
        "  pool address {address} (keygen {:.1}s)",
        t0.elapsed().as_secs_f64()
    );
    step(
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

    println!("\n[2] sign {} batches at the block producer", opts.batches);
    let t0 = Instant::now();
    let mut batches = Vec::new();
    for b in 0..opts.batches {
        let via = net.producer(&members).await?;
        batches.push(
            net.sign_batch(via, &format!("L2 batch #{b}"), &address)
                .await?,
        );
    }
    let verified = |bs: &[SignedBatch]| {
        format!(
            "{} of {} signatures verified",
            bs.iter().filter(|b| b.verified).count(),
            bs.len()
        )
    };
    step(
        format!(
            "sign {} batch{} ({t_n}-of-{n})",
            opts.batches,
            if opts.batches == 1 { "" } else { "es" }
        ),
        t0,
        verified(&batches),
    );
    let (status, err) = http_json(
        &net.nodes[0],
        "POST",
        "/sign",
        Some(&json!({"digest": "0x1234"})),
    )
    .await?;
    check(
        status == 400,
        format!("malformed digest gave {status}, expected 400"),
    )?;
    println!("  malformed digest rejected: {status} {err}");
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

    let joiner = n;
    println!(
        "\n[3] sequencer node {joiner} joins with stake 5000 (reshare {n} -> {})",
        n + 1
    );
    let via = net.producer(&members).await?;
    let t0 = Instant::now();
    let (status, out) = http_json(
        &net.nodes[via],
        "POST",
        "/pool/join",
        Some(&json!({"node_id": net.ids[joiner].to_hex(), "stake": 5000})),
    )
    .await?;
    check(status == 200, format!("POST /pool/join: {status} {out}"))?;
    let members_after_join: Vec<usize> = (0..=n).collect();
    let address_after_join = net.wait_for_key(&members_after_join, 1).await?;
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
        format!(
            "reshare: node {joiner} joins ({t_n}-of-{n} -> {t_join}-of-{})",
            n + 1
        ),
        t0,
        unchanged(&address, &address_after_join).into(),
    );
    check(address == address_after_join, "address changed after join")?;
    let t0 = Instant::now();
    batches.push(net.sign_batch(joiner, "L2 batch #join", &address).await?);
    check(
        batches.last().is_some_and(|b| b.signers.contains(&joiner)),
        "the new member did not sign",
    )?;
    step(
        format!("sign with the new member ({t_join}-of-{})", n + 1),
        t0,
        verified(&batches[batches.len() - 1..]),
    );

    let leaver = 1;
    println!(
        "\n[4] sequencer node {leaver} exits (reshare {} -> {n}); it deals, then deletes its key",
        n + 1
    );
    let t0 = Instant::now();
    let (status, out) =
        http_json(&net.nodes[leaver], "POST", "/pool/exit", Some(&json!({}))).await?;
    check(status == 200, format!("POST /pool/exit: {status} {out}"))?;
    let remaining: Vec<usize> = (0..=n).filter(|i| *i != leaver).collect();
    let address_after_exit = net.wait_for_key(&remaining, 2).await?;
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
    let (status, _) = http_json(&net.nodes[leaver], "GET", "/key", None).await?;
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
    let t0 = Instant::now();
    let via = net.producer(&remaining).await?;
    batches.push(net.sign_batch(via, "L2 batch #exit", &address).await?);
    check(
        batches.last().is_some_and(|b| !b.signers.contains(&leaver)),
        "the leaver signed after leaving",
    )?;
    steps.push(DevnetStep {
        name: format!("sign after the exit ({t_n}-of-{n})"),
        elapsed: t0.elapsed(),
        outcome: verified(&batches[batches.len() - 1..]),
    });
    let (status, metrics) = http(net.nodes[via].rpc, None, "GET", "/metrics", None).await?;
    check(status == 200, "GET /metrics")?;
    if let Some(line) = metrics
        .lines()
        .find(|l| l.starts_with("node_shell_signatures_total"))
    {
        println!("  node {via} /metrics: {line}");
    }

    let report = DevnetReport {
        transport: opts.transport,
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
    print_summary(&report);
    check(report.all_ok(), "summary checks failed")?;
    Ok(report)
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
    println!("pool address:         {}", r.address_after_keygen);
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
    for b in &r.batches {
        println!(
            "batch {:<22} signers {:?} -> {}",
            b.label,
            b.signers,
            if b.verified {
                "verified"
            } else {
                "NOT VERIFIED"
            }
        );
    }
    println!(
        "signatures verified:  {} of {}",
        r.batches.iter().filter(|b| b.verified).count(),
        r.batches.len()
    );
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
