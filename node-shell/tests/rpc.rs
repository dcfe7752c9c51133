//! HTTP API behaviour that needs no MPC run: clear 4xx JSON errors for bad input, the
//! status view, and refusal of a proposal whose (transport-authenticated) sender is not
//! a pool member. In-memory transport, no keygen: fast.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use node_shell::config::{NodeSettings, PrimeSourceConfig, UnlockConfig};
use node_shell::devnet::http;
use node_shell::pool::{Member, PoolRules};
use node_shell::Node;
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use transport::{Destination, InMemoryNetwork, NodeId, SessionConfig, Transport};
use tss_core::pool::{control_session_id, ControlMsg, KeygenProposal, Proposal};
use tss_core::wire::{decode_message, encode_message};
use tss_core::{Committee, ExecutionId, KeyId, ProtocolKind};

const KEY: &str = "test-key";

fn id(k: u8) -> NodeId {
    NodeId::from_bytes([k; 32])
}

struct Net {
    _dir: tempfile::TempDir,
    network: InMemoryNetwork,
    rpc: Vec<SocketAddr>,
    _nodes: Vec<Node>,
    /// Stops all three nodes and their HTTP servers.
    shutdown: CancellationToken,
    servers: Vec<JoinHandle<()>>,
}

/// Three members (ids 1..=3) and a whitelisted candidate (id 4) that runs no node.
async fn pool() -> Net {
    let dir = tempfile::tempdir().unwrap();
    let network = InMemoryNetwork::new();
    let members: Vec<Member> = (1..=3)
        .map(|k| Member {
            node: id(k),
            stake: 1000 * u64::from(k),
        })
        .collect();
    let rules = PoolRules {
        whitelist: (1..=4).map(id).collect(),
        min_stake: 1000,
        max_stake: 10_000,
        // Set explicitly (the default is 4): these tests are about the HTTP API, and a
        // third node less keeps them fast. Never run a real pool of 3 (3-of-3).
        min_members: 3,
        max_members: 5,
    };
    let mut rpc = Vec::new();
    let mut nodes = Vec::new();
    let mut servers = Vec::new();
    let shutdown = CancellationToken::new();
    for k in 1..=3u8 {
        let settings = NodeSettings {
            key_id: KEY.into(),
            keystore_dir: dir.path().join(format!("n{k}")).join("keystore"),
            unlock: UnlockConfig::Passphrase(zeroize::Zeroizing::new("test passphrase".into())),
            insecure_fast_kdf: true,
            peers: (1..=4).map(id).collect(),
            rules: rules.clone(),
            genesis: members.clone(),
            epoch_length: Duration::from_secs(5),
            epoch_seed: [9; 32],
            session_idle_timeout: Duration::from_secs(10),
            primes: PrimeSourceConfig::InsecureFixture {
                index: usize::from(k),
            },
            auto_keygen: false,
            auto_keygen_delay: Duration::from_secs(1),
            shutdown: shutdown.clone(),
        };
        let transport: Arc<dyn Transport> = Arc::new(network.endpoint(id(k)));
        let node = Node::start(settings, transport, "in-memory").await.unwrap();
        let (addr, server) = node_shell::rpc::serve_with_shutdown(
            node.clone(),
            "127.0.0.1:0".parse().unwrap(),
            shutdown.clone(),
        )
        .await
        .unwrap();
        rpc.push(addr);
        nodes.push(node);
        servers.push(server);
    }
    Net {
        _dir: dir,
        network,
        rpc,
        _nodes: nodes,
        shutdown,
        servers,
    }
}

async fn call(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let (status, text) = http(addr, method, path, body.as_ref()).await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

fn error_of(v: &Value) -> &str {
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error field in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_json_errors() {
    let net = pool().await;
    let a = net.rpc[0];
    let digest = format!("0x{}", "11".repeat(32));

    let (s, v) = call(a, "POST", "/sign", Some(json!({"digest": "0xzz"}))).await;
    assert_eq!(s, 400);
    assert!(error_of(&v).contains("not hex"), "{v}");

    let (s, v) = call(a, "POST", "/sign", Some(json!({"digest": "0xabcd"}))).await;
    assert_eq!(s, 400);
    assert!(error_of(&v).contains("32 bytes"), "{v}");

    let (s, v) = call(a, "POST", "/sign", Some(json!({"hash": digest}))).await;
    assert_eq!(s, 400);
    assert!(error_of(&v).contains("invalid JSON body"), "{v}");

    // Well-formed, but no key exists yet.
    let (s, v) = call(a, "POST", "/sign", Some(json!({"digest": digest}))).await;
    assert_eq!(s, 404);
    assert!(error_of(&v).contains("no key share"), "{v}");
    let (s, v) = call(a, "GET", "/key", None).await;
    assert_eq!(s, 404);
    assert_eq!(error_of(&v), "no key share for key test-key on this node");

    // Pool rules are checked before anything else.
    let outsider = id(9).to_hex();
    let (s, v) = call(
        a,
        "POST",
        "/pool/join",
        Some(json!({"node_id": outsider, "stake": 5000})),
    )
    .await;
    assert_eq!(s, 422);
    assert!(error_of(&v).contains("not on the admin whitelist"), "{v}");
    let (s, v) = call(
        a,
        "POST",
        "/pool/join",
        Some(json!({"node_id": id(4).to_hex(), "stake": 10})),
    )
    .await;
    assert_eq!(s, 422);
    assert!(error_of(&v).contains("below the minimum stake"), "{v}");
    let (s, v) = call(
        a,
        "POST",
        "/pool/join",
        Some(json!({"node_id": "abc", "stake": 5000})),
    )
    .await;
    assert_eq!(s, 400);
    assert!(error_of(&v).contains("node_id"), "{v}");
    let (s, v) = call(
        a,
        "POST",
        "/pool/exit",
        Some(json!({"node_id": id(4).to_hex()})),
    )
    .await;
    assert_eq!(s, 422);
    assert!(error_of(&v).contains("not a member"), "{v}");
    // Three members is the minimum.
    let (s, v) = call(a, "POST", "/pool/exit", Some(json!({}))).await;
    assert_eq!(s, 422);
    assert!(error_of(&v).contains("cannot shrink below 3"), "{v}");

    let (s, v) = call(a, "DELETE", "/key?force=maybe", None).await;
    assert_eq!(s, 400);
    assert!(error_of(&v).contains("force=true"), "{v}");
    let (s, _) = call(a, "DELETE", "/key", None).await;
    assert_eq!(s, 404);
    let (s, v) = call(a, "GET", "/nope", None).await;
    assert_eq!(s, 404);
    assert_eq!(error_of(&v), "no such endpoint");

    let (s, text) = http(a, "GET", "/metrics", None).await.unwrap();
    assert_eq!(s, 200);
    let bad = text
        .lines()
        .find_map(|l| l.strip_prefix("node_shell_http_bad_requests_total "))
        .and_then(|n| n.parse::<u64>().ok())
        .expect("bad request counter");
    assert!(bad >= 10, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_pool_threshold_and_block_producer() {
    let net = pool().await;
    let (s, v) = call(net.rpc[1], "GET", "/status", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["node_id"], id(2).to_hex());
    assert_eq!(v["transport"], "in-memory");
    assert_eq!(v["is_member"], true);
    assert_eq!(v["members"].as_array().unwrap().len(), 3);
    assert_eq!(v["threshold"], 3); // floor(2*3/3)+1
    assert!(v["key"].is_null());
    let producer = v["block_producer"].as_str().unwrap();
    assert!((1..=3).any(|k| id(k).to_hex() == producer), "{producer}");
    // Every node computes the same producer for the same epoch.
    let (_, w) = call(net.rpc[2], "GET", "/status", None).await;
    if w["epoch"] == v["epoch"] {
        assert_eq!(w["block_producer"], v["block_producer"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposal_from_a_non_member_is_rejected_using_the_authenticated_sender() {
    let net = pool().await;
    // The whitelisted candidate (id 4) is on the control channel but not in the pool.
    let candidate = net.network.endpoint(id(4));
    let participants: Vec<NodeId> = (1..=4).map(id).collect();
    let key_id = KeyId::new(KEY).unwrap();
    let mut control = candidate
        .open_session(
            control_session_id(&participants),
            SessionConfig::new(participants.clone()).with_idle_timeout(Duration::from_secs(10)),
        )
        .unwrap();
    let members: Vec<Member> = (1..=3)
        .map(|k| Member {
            node: id(k),
            stake: 1000 * u64::from(k),
        })
        .collect();
    let eid = ExecutionId::random(
        ProtocolKind::Keygen,
        &key_id,
        &participants,
        &mut rand::thread_rng(),
    );
    // The candidate proposes a keygen that includes itself.
    let proposal = ControlMsg::Propose(Proposal::Keygen(KeygenProposal {
        eid,
        key_id: key_id.clone(),
        committee: Committee::new(participants.clone(), 3).unwrap(),
        context: serde_json::to_vec(&serde_json::json!({"version": 0, "members": members}))
            .unwrap(),
    }));
    control
        .send(
            Destination::Direct(id(1)),
            encode_message(&proposal).unwrap(),
        )
        .unwrap();
    let reply = control.recv().await.unwrap();
    assert_eq!(reply.from, id(1));
    match decode_message::<ControlMsg>(reply.from, &reply.payload).unwrap() {
        ControlMsg::Abort {
            eid: rejected,
            reason,
        } => {
            assert_eq!(rejected, eid);
            assert!(reason.contains("proposer is not a pool member"), "{reason}");
        }
        other => panic!("expected an abort, got {other:?}"),
    }
    // Node 1 did not start a keygen.
    let (s, _) = call(net.rpc[0], "GET", "/key", None).await;
    assert_eq!(s, 404);
}

/// `GET /metrics` with its response head (status line and headers) and body.
async fn get_metrics(addr: SocketAddr) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).expect("metrics are UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    (head.to_owned(), body.to_owned())
}

/// Parses the Prometheus text exposition format (version 0.0.4) strictly enough to catch
/// what a scraper would refuse: every sample belongs to the family of the `# TYPE` line
/// before it (histograms: `_bucket`, `_sum`, `_count`), names and labels are well formed,
/// values are floats, no family is typed twice, histogram buckets are cumulative and end
/// in `+Inf` equal to `_count`. Returns each family's type and every sample
/// (`name{labels}` as written) with its value.
fn parse_exposition(text: &str) -> (HashMap<String, String>, HashMap<String, f64>) {
    fn valid_name(s: &str) -> bool {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }
    /// `k="v",k2="v2"` (escapes: \\ \" \n); returns the pairs.
    fn labels(s: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut rest = s;
        while !rest.is_empty() {
            let (key, after) = rest.split_once("=\"").expect("label key=\"value\"");
            assert!(valid_name(key), "label name {key:?}");
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next().expect("unterminated label value") {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next().expect("dangling escape").1 {
                        'n' => value.push('\n'),
                        c @ ('\\' | '"') => value.push(c),
                        c => panic!("bad escape \\{c}"),
                    },
                    (_, c) => value.push(c),
                }
            };
            out.push((key.to_owned(), value));
            rest = &after[end + 1..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
        out
    }
    let mut types = HashMap::new();
    let mut samples = HashMap::new();
    let mut family: Option<(String, String)> = None;
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    let check_buckets =
        |buckets: &mut Vec<(f64, f64)>, samples: &HashMap<String, f64>, fam: &str| {
            if buckets.is_empty() {
                return;
            }
            assert!(
                buckets
                    .windows(2)
                    .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
                "{fam}: buckets not cumulative"
            );
            let (le, n) = *buckets.last().unwrap();
            assert_eq!(le, f64::INFINITY, "{fam}: no +Inf bucket");
            assert_eq!(
                Some(&n),
                samples.get(&format!("{fam}_count")),
                "{fam}: +Inf bucket != count"
            );
            buckets.clear();
        };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(comment) = line.strip_prefix('#') {
            let words: Vec<&str> = comment.trim_start().splitn(3, ' ').collect();
            match words.as_slice() {
                ["TYPE", name, kind] => {
                    assert!(valid_name(name), "family name {name:?}");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(kind),
                        "type {kind:?}"
                    );
                    if let Some((prev, _)) = &family {
                        check_buckets(&mut buckets, &samples, prev);
                    }
                    assert!(
                        types.insert(name.to_string(), kind.to_string()).is_none(),
                        "{name} typed twice"
                    );
                    family = Some((name.to_string(), kind.to_string()));
                }
                ["HELP", name, ..] => assert!(valid_name(name), "help for {name:?}"),
                _ => {} // a comment
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("value of {line:?}")),
        };
        let (name, label_pairs) = match series.split_once('{') {
            Some((name, rest)) => (name, labels(rest.strip_suffix('}').expect("closing brace"))),
            None => (series, Vec::new()),
        };
        assert!(valid_name(name), "sample name {name:?}");
        let (fam, kind) = family
            .as_ref()
            .unwrap_or_else(|| panic!("{name} before any # TYPE"));
        if kind == "histogram" {
            let suffix = name
                .strip_prefix(fam.as_str())
                .unwrap_or_else(|| panic!("{name} outside {fam}"));
            assert!(
                ["_bucket", "_sum", "_count"].contains(&suffix),
                "{name} in histogram {fam}"
            );
            if suffix == "_bucket" {
                let le = label_pairs
                    .iter()
                    .find(|(k, _)| k == "le")
                    .expect("bucket without le");
                let le = if le.1 == "+Inf" {
                    f64::INFINITY
                } else {
                    le.1.parse().expect("le")
                };
                buckets.push((le, value));
            }
        } else {
            assert_eq!(name, fam, "sample outside the family typed before it");
        }
        assert!(
            samples.insert(series.to_owned(), value).is_none(),
            "{series} twice"
        );
    }
    if let Some((fam, _)) = &family {
        check_buckets(&mut buckets, &samples, fam);
    }
    (types, samples)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text_and_count_bad_requests() {
    let net = pool().await;
    let a = net.rpc[0];
    let (head, text) = get_metrics(a).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let (types, before) = parse_exposition(&text);
    for (family, kind) in [
        ("node_shell_signatures_total", "counter"),
        ("node_shell_http_bad_requests_total", "counter"),
        ("node_shell_sessions_total", "counter"),
        ("node_shell_pool_members", "gauge"),
        ("node_shell_sign_latency_seconds", "histogram"),
    ] {
        assert_eq!(
            types.get(family).map(String::as_str),
            Some(kind),
            "{family}\n{text}"
        );
    }
    assert_eq!(before["node_shell_signatures_total"], 0.0);
    assert_eq!(before["node_shell_sessions_total{protocol=\"sign\"}"], 0.0);
    assert_eq!(before["node_shell_sign_latency_seconds_count"], 0.0);

    let (s, _) = call(a, "POST", "/sign", Some(json!({"digest": "0x12"}))).await;
    assert_eq!(s, 400);
    let (_, text) = get_metrics(a).await;
    let (_, after) = parse_exposition(&text);
    assert_eq!(
        after["node_shell_http_bad_requests_total"],
        before["node_shell_http_bad_requests_total"] + 1.0,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_cancelled_token_stops_every_http_server() {
    let net = pool().await;
    for addr in &net.rpc {
        assert_eq!(call(*addr, "GET", "/status", None).await.0, 200);
    }
    net.shutdown.cancel();
    for server in net.servers {
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the server stops")
            .expect("the server task ends cleanly");
    }
    for addr in &net.rpc {
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "{addr} still accepts connections"
        );
    }
}
