//! HTTP API behaviour that needs no MPC run and no L1: access control (operator token,
//! Host allow-list, Origin, JSON only, body size; each test named for the attack it
//! defeats), clear 4xx JSON errors for bad input, no membership-changing endpoints,
//! raw-digest signing off unless configured, the status view, and refusal of a keygen
//! proposal that the follower's own L1 view does not back. In-memory transport, an
//! unreachable L1 endpoint, no keygen: fast. (Membership from a real L1:
//! `tests/l1_membership.rs`.)

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use node_shell::config::{KeySettings, L1Settings, NodeSettings, PrimeSourceConfig, UnlockConfig};
use node_shell::coordinator::MembershipProposal;
use node_shell::devnet::http;
use node_shell::l1::contracts::Deployment;
use node_shell::pool::{Member, PoolRules};
use node_shell::rpc::auth::{Access, ApiToken, MAX_BODY_BYTES};
use node_shell::Node;
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use transport::{Destination, InMemoryNetwork, NodeId, SessionConfig, Transport};
use tss_core::pool::{control_session_id, ControlMsg, KeygenProposal, Proposal};
use tss_core::wire::{decode_message, encode_message};
use tss_core::{Committee, ExecutionId, KeyId, ProtocolKind};

const KEY: &str = "test-key";
/// The second key every test node serves (role `state`).
const SECOND_KEY: &str = "state-key";

/// Test node `k`'s id: the public key of the identity key with seed `[k; 32]`.
fn id(k: u8) -> NodeId {
    tss_core::Ed25519Signer::from_seed([k; 32]).node_id()
}

struct Net {
    _dir: tempfile::TempDir,
    network: InMemoryNetwork,
    rpc: Vec<SocketAddr>,
    /// Each node's operator token (in `<its dir>/rpc-token`).
    tokens: Vec<ApiToken>,
    _nodes: Vec<Node>,
    /// Stops all three nodes and their HTTP servers.
    shutdown: CancellationToken,
    servers: Vec<JoinHandle<()>>,
}

/// Three nodes (ids 1..=3; raw-digest signing on at 1 and 2, off at 3) and a fourth
/// peer (id 4) that runs no node. Their L1 endpoint answers nothing (port 1): no
/// committed pool, no keygen.
async fn pool() -> Net {
    let dir = tempfile::tempdir().unwrap();
    let network = InMemoryNetwork::new();
    // Set explicitly (the default is 4): these tests are about the HTTP API. Never run a
    // real pool of 3 (3-of-3).
    let rules = PoolRules::l1(3, 5);
    let mut l1 = L1Settings::new(
        "http://127.0.0.1:1",
        Deployment {
            staking: [1u8; 20].into(),
            inbox: [2u8; 20].into(),
            role: node_shell::config::role_id(node_shell::config::BATCHES_ROLE),
            deployment_block: 1,
        },
    );
    l1.poll_interval = Duration::from_millis(200);
    l1.proposal_wait = Duration::from_secs(1);
    let mut rpc = Vec::new();
    let mut tokens = Vec::new();
    let mut nodes = Vec::new();
    let mut servers = Vec::new();
    let shutdown = CancellationToken::new();
    for k in 1..=3u8 {
        let mut settings = NodeSettings::new(
            KEY,
            dir.path().join(format!("n{k}")).join("keystore"),
            UnlockConfig::Passphrase(zeroize::Zeroizing::new("test passphrase".into())),
            rules.clone(),
            l1.clone(),
            [9; 32],
        )
        .with_key(KeySettings::new(SECOND_KEY, "state", [3u8; 20].into()));
        settings.insecure_fast_kdf = true;
        settings.peers = (1..=4).map(id).collect();
        settings.epoch_length = Duration::from_secs(5);
        settings.session_idle_timeout = Duration::from_secs(10);
        settings.primes = PrimeSourceConfig::InsecureFixture {
            index: usize::from(k),
        };
        settings.unsafe_raw_digest_signing = k != 3;
        settings.shutdown = shutdown.clone();
        let transport: Arc<dyn Transport> = Arc::new(network.endpoint(id(k)));
        let node = Node::start(
            settings,
            transport,
            Arc::new(tss_core::Ed25519Signer::from_seed([k; 32])),
            "in-memory",
        )
        .await
        .unwrap();
        let token =
            ApiToken::load_or_create(&dir.path().join(format!("n{k}")).join("rpc-token")).unwrap();
        let (addr, server) = node_shell::rpc::serve_with_shutdown(
            node.clone(),
            "127.0.0.1:0".parse().unwrap(),
            Access::new(token.clone()),
            shutdown.clone(),
        )
        .await
        .unwrap();
        rpc.push(addr);
        tokens.push(token);
        nodes.push(node);
        servers.push(server);
    }
    Net {
        _dir: dir,
        network,
        rpc,
        tokens,
        _nodes: nodes,
        shutdown,
        servers,
    }
}

impl Net {
    /// The operator token of the node serving `addr`.
    fn token_of(&self, addr: SocketAddr) -> &str {
        let i = self.rpc.iter().position(|a| *a == addr).expect("a node");
        self.tokens[i].secret()
    }
}

/// An authenticated JSON call.
async fn call(
    net: &Net,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let token = net.token_of(addr);
    let (status, text) = http(addr, Some(token), method, path, body.as_ref())
        .await
        .unwrap();
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

    let (s, v) = call(&net, a, "POST", "/sign", Some(json!({"digest": "0xzz"}))).await;
    assert_eq!(s, 400);
    assert!(error_of(&v).contains("not hex"), "{v}");

    let (s, v) = call(&net, a, "POST", "/sign", Some(json!({"digest": "0xabcd"}))).await;
    assert_eq!(s, 400);
    assert!(error_of(&v).contains("32 bytes"), "{v}");

    let (s, v) = call(&net, a, "POST", "/sign", Some(json!({"hash": digest}))).await;
    assert_eq!(s, 400);
    assert!(error_of(&v).contains("invalid JSON body"), "{v}");

    // Well-formed, but no key exists yet.
    let (s, v) = call(&net, a, "POST", "/sign", Some(json!({"digest": digest}))).await;
    assert_eq!(s, 404);
    assert!(error_of(&v).contains("no key share"), "{v}");
    let (s, v) = call(&net, a, "GET", "/key", None).await;
    assert_eq!(s, 404);
    assert_eq!(error_of(&v), "no key share for key test-key on this node");

    // Raw-digest signing is off unless configured.
    let (s, v) = call(
        &net,
        net.rpc[2],
        "POST",
        "/sign",
        Some(json!({"digest": digest})),
    )
    .await;
    assert_eq!(s, 403);
    assert!(error_of(&v).contains("unsafe_raw_digest_signing"), "{v}");

    // Membership changes on one node's word are gone: L1 is the record.
    for path in ["/pool/join", "/pool/exit", "/keygen"] {
        let body = json!({"node_id": id(4).to_hex(), "stake": 5000});
        let (s, v) = call(&net, a, "POST", path, Some(body)).await;
        assert_eq!(s, 404, "{path}");
        assert_eq!(error_of(&v), "no such endpoint");
    }

    let (s, v) = call(&net, a, "DELETE", "/key?force=maybe", None).await;
    assert_eq!(s, 400);
    assert!(error_of(&v).contains("force=true"), "{v}");
    let (s, _) = call(&net, a, "DELETE", "/key", None).await;
    assert_eq!(s, 404);
    let (s, v) = call(&net, a, "GET", "/nope", None).await;
    assert_eq!(s, 404);
    assert_eq!(error_of(&v), "no such endpoint");

    let (s, text) = http(a, None, "GET", "/metrics", None).await.unwrap();
    assert_eq!(s, 200);
    let bad = text
        .lines()
        .find_map(|l| l.strip_prefix("node_shell_http_bad_requests_total "))
        .and_then(|n| n.parse::<u64>().ok())
        .expect("bad request counter");
    // 3 malformed, 1 without a key, 2 on DELETE /key (the 403 was node 3's).
    assert!(bad >= 6, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_addressed_by_id_and_a_key_the_node_does_not_serve_is_404() {
    let net = pool().await;
    let a = net.rpc[0];
    let digest = format!("0x{}", "11".repeat(32));

    let (s, v) = call(&net, a, "GET", "/keys", None).await;
    assert_eq!(s, 200);
    let keys = v.as_array().unwrap_or_else(|| panic!("not a list: {v}"));
    let listed: Vec<(&str, &str)> = keys
        .iter()
        .map(|k| (k["key_id"].as_str().unwrap(), k["role"].as_str().unwrap()))
        .collect();
    assert_eq!(listed, [(KEY, "batches"), (SECOND_KEY, "state")]);
    assert!(keys.iter().all(|k| k["key"].is_null()), "{v}");

    let (s, v) = call(&net, a, "GET", &format!("/keys/{SECOND_KEY}"), None).await;
    assert_eq!(s, 200);
    assert_eq!(v["key_id"], SECOND_KEY);
    assert_eq!(
        v["inbox"].as_str().unwrap().to_lowercase(),
        format!("0x{}", "03".repeat(20))
    );
    let (s, v) = call(&net, a, "GET", "/status", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["keys"].as_array().unwrap().len(), 2, "{v}");

    // Every route of a key the node does not serve: 404 naming it, and nothing happens.
    for (method, path, body) in [
        ("GET", "/keys/other-key", None),
        (
            "POST",
            "/keys/other-key/sign",
            Some(json!({"digest": digest})),
        ),
        ("DELETE", "/keys/other-key?force=true", None),
    ] {
        let (s, v) = call(&net, a, method, path, body).await;
        assert_eq!(s, 404, "{method} {path}: {v}");
        assert!(error_of(&v).contains("other-key"), "{v}");
    }

    // A served key without a share: the same answers as the default key's routes.
    let (s, v) = call(
        &net,
        a,
        "POST",
        &format!("/keys/{SECOND_KEY}/sign"),
        Some(json!({"digest": digest})),
    )
    .await;
    assert_eq!(s, 404);
    assert!(error_of(&v).contains(SECOND_KEY), "{v}");
    // Raw-digest signing stays off per node for every key.
    let (s, v) = call(
        &net,
        net.rpc[2],
        "POST",
        &format!("/keys/{SECOND_KEY}/sign"),
        Some(json!({"digest": digest})),
    )
    .await;
    assert_eq!(s, 403);
    assert!(error_of(&v).contains("unsafe_raw_digest_signing"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_says_why_there_is_no_pool_yet() {
    let net = pool().await;
    let mut v = Value::Null;
    for _ in 0..50 {
        let (s, w) = call(&net, net.rpc[1], "GET", "/status", None).await;
        assert_eq!(s, 200);
        v = w;
        if v["membership"]
            .as_str()
            .unwrap_or("")
            .contains("L1 not readable")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(v["node_id"], id(2).to_hex());
    assert_eq!(v["transport"], "in-memory");
    assert!(
        v["membership"]
            .as_str()
            .unwrap()
            .contains("L1 not readable"),
        "{v}"
    );
    assert_eq!(v["is_member"], false);
    assert_eq!(v["members"].as_array().unwrap().len(), 0);
    assert!(v["pool_l1_height"].is_null());
    assert!(v["l1_confirmed_height"].is_null());
    assert!(v["block_producer"].is_null());
    assert!(v["key"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygen_proposal_not_backed_by_the_followers_l1_view_is_refused() {
    let net = pool().await;
    // Peer 4 is on the control channel; it proposes a keygen citing an L1 height that
    // node 1 cannot confirm (its L1 answers nothing).
    let candidate = net.network.endpoint(id(4));
    let participants: Vec<NodeId> = (1..=4).map(id).collect();
    let key_id = KeyId::new(KEY).unwrap();
    let mut control = candidate
        .open_session(
            control_session_id(&participants),
            SessionConfig::new(participants.clone()).with_idle_timeout(Duration::from_secs(10)),
        )
        .unwrap();
    let members: Vec<Member> = (1..=4)
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
    let proposal = ControlMsg::Propose(Proposal::Keygen(KeygenProposal {
        eid,
        key_id: key_id.clone(),
        committee: Committee::new(participants.clone(), 3).unwrap(),
        context: MembershipProposal {
            l1_height: 5,
            members,
        }
        .encode(),
        protocol: Default::default(),
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
            ..
        } => {
            assert_eq!(rejected, eid);
            assert!(reason.contains("L1"), "{reason}");
        }
        other => panic!("expected an abort, got {other:?}"),
    }
    // Node 1 did not start a keygen.
    let (s, _) = call(&net, net.rpc[0], "GET", "/key", None).await;
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

    let (s, _) = call(&net, a, "POST", "/sign", Some(json!({"digest": "0x12"}))).await;
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
        assert_eq!(call(&net, *addr, "GET", "/status", None).await.0, 200);
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

// ----- access control: each test named for the attack it defeats -----

/// A response: status, headers (names lower-cased) and body.
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn error(&self) -> String {
        let v: Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {:?}", self.body));
        error_of(&v).to_owned()
    }
}

/// Sends `head` (request line and headers, without the final blank line) and `body` as
/// written, and reads the answer. A server that refuses early may close the connection
/// before reading the whole body (the read then ends in a reset): what arrived counts.
async fn raw(addr: SocketAddr, head: &str, body: &[u8]) -> Raw {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("{head}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let _ = stream.write_all(body).await; // may fail once the server has answered
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if !got.is_empty() => {
                eprintln!("read ended with {e} after a response");
                break;
            }
            Err(e) => panic!("no response: {e}"),
        }
    }
    let text = String::from_utf8(got).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Raw {
        status,
        headers,
        body: body.to_owned(),
    }
}

fn digest_body() -> String {
    json!({"digest": format!("0x{}", "11".repeat(32))}).to_string()
}

/// `POST /sign` with a JSON body and the given extra header lines.
fn sign_head(addr: SocketAddr, extra: &str, len: usize) -> String {
    format!(
        "POST /sign HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {len}{extra}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_without_token_is_refused_401() {
    let net = pool().await;
    let a = net.rpc[0];
    let body = digest_body();
    let r = raw(a, &sign_head(a, "", body.len()), body.as_bytes()).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let e = r.error();
    assert!(e.contains("Authorization: Bearer"), "{e}");
    assert!(e.contains("rpc-token"), "says where the token is: {e}");
    // Reads need the token too (key, status).
    for path in ["/status", "/key"] {
        let r = raw(a, &format!("GET {path} HTTP/1.1\r\nHost: {a}"), b"").await;
        assert_eq!(r.status, 401, "{path}: {}", r.body);
    }
    let (s, _) = http(a, None, "DELETE", "/key?force=true", None)
        .await
        .unwrap();
    assert_eq!(s, 401);
    // The documented exception: metrics (no secrets) while rpc.metrics_public = true.
    let (s, _) = http(a, None, "GET", "/metrics", None).await.unwrap();
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_with_wrong_token_is_refused_401() {
    let net = pool().await;
    let a = net.rpc[0];
    let body = digest_body();
    let own = net.tokens[0].secret().to_owned();
    let other_nodes = net.tokens[1].secret().to_owned();
    // The same length, the last digit changed.
    let last = if own.ends_with('0') { "1" } else { "0" };
    let almost = format!("{}{last}", &own[..own.len() - 1]);
    for wrong in [
        format!("Bearer {other_nodes}"),
        format!("Bearer {almost}"),
        format!("Bearer {own}x"),
        format!("Basic {own}"),
        "Bearer ".to_owned(),
    ] {
        let head = sign_head(a, &format!("\r\nAuthorization: {wrong}"), body.len());
        let r = raw(a, &head, body.as_bytes()).await;
        assert_eq!(r.status, 401, "{wrong}: {}", r.body);
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        assert!(r.error().contains("operator token"), "{wrong}: {}", r.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_origin_post_from_a_web_page_is_refused_403() {
    let net = pool().await;
    let a = net.rpc[0];
    let body = digest_body();
    // What `fetch("http://127.0.0.1:port/sign", {method: "POST", mode: "no-cors", body})`
    // sends from https://evil.example: a "simple" request (text/plain), with an Origin.
    let head = format!(
        "POST /sign HTTP/1.1\r\nHost: {a}\r\nOrigin: https://evil.example\r\nContent-Type: text/plain;charset=UTF-8\r\nContent-Length: {}",
        body.len()
    );
    let r = raw(a, &head, body.as_bytes()).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.error().contains("cross-origin"), "{}", r.body);
    assert!(
        r.headers
            .iter()
            .all(|(k, _)| !k.starts_with("access-control-")),
        "CORS headers sent: {:?}",
        r.headers
    );
    // Refused even if the page somehow had the token, and from sandboxed/file pages.
    let token = format!("\r\nAuthorization: Bearer {}", net.tokens[0].secret());
    for origin in ["https://evil.example", "null", "http://127.0.0.1"] {
        let head = sign_head(a, &format!("{token}\r\nOrigin: {origin}"), body.len());
        let r = raw(a, &head, body.as_bytes()).await;
        assert_eq!(r.status, 403, "{origin}: {}", r.body);
    }
    // A CORS preflight gets no permission either.
    let r = raw(
        a,
        &format!(
            "OPTIONS /sign HTTP/1.1\r\nHost: {a}\r\nOrigin: https://evil.example\r\nAccess-Control-Request-Method: POST"
        ),
        b"",
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r
        .headers
        .iter()
        .all(|(k, _)| !k.starts_with("access-control-")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_rebinding_host_header_is_refused_403() {
    let net = pool().await;
    let a = net.rpc[0];
    let port = a.port();
    let token = net.tokens[0].secret();
    // After rebinding evil.example to 127.0.0.1, the page's requests carry its own name.
    for host in [
        format!("evil.example:{port}"),
        "evil.example".to_owned(),
        format!("127.0.0.1:{}", port.wrapping_add(1)),
        format!("127.0.0.1.evil.example:{port}"),
    ] {
        for path in ["/key", "/status", "/metrics"] {
            let head =
                format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}");
            let r = raw(a, &head, b"").await;
            assert_eq!(r.status, 403, "{host}{path}: {}", r.body);
            assert!(r.error().contains("not allowed"), "{}", r.body);
        }
    }
    // No Host at all (HTTP/1.0): refused too.
    let r = raw(
        a,
        &format!("GET /key HTTP/1.0\r\nAuthorization: Bearer {token}"),
        b"",
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    // The loopback names of the bound port are allowed.
    for host in [
        format!("127.0.0.1:{port}"),
        format!("LOCALHOST:{port}"),
        format!("[::1]:{port}"),
    ] {
        let head = format!("GET /status HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}");
        let r = raw(a, &head, b"").await;
        assert_eq!(r.status, 200, "{host}: {}", r.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_post_without_json_content_type_is_refused_415() {
    let net = pool().await;
    let a = net.rpc[0];
    let auth = format!("Authorization: Bearer {}", net.tokens[0].secret());
    let form = format!("digest=0x{}", "11".repeat(32));
    for (ct, body) in [
        ("application/x-www-form-urlencoded", form.clone()),
        ("multipart/form-data; boundary=x", form.clone()),
        ("text/plain", digest_body()),
        ("application/jsonx", digest_body()),
    ] {
        let head = format!(
            "POST /sign HTTP/1.1\r\nHost: {a}\r\n{auth}\r\nContent-Type: {ct}\r\nContent-Length: {}",
            body.len()
        );
        let r = raw(a, &head, body.as_bytes()).await;
        assert_eq!(r.status, 415, "{ct}: {}", r.body);
        assert!(
            r.error().contains("Content-Type: application/json"),
            "{}",
            r.body
        );
    }
    // A body without any Content-Type.
    let body = digest_body();
    let head = format!(
        "POST /sign HTTP/1.1\r\nHost: {a}\r\n{auth}\r\nContent-Length: {}",
        body.len()
    );
    assert_eq!(raw(a, &head, body.as_bytes()).await.status, 415);
    // JSON with parameters is JSON (and reaches the handler: no key yet, 404).
    let head = format!(
        "POST /sign HTTP/1.1\r\nHost: {a}\r\n{auth}\r\nContent-Type: Application/JSON; charset=utf-8\r\nContent-Length: {}",
        body.len()
    );
    let r = raw(a, &head, body.as_bytes()).await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.error().contains("no key share"), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_is_refused_413() {
    let net = pool().await;
    let a = net.rpc[0];
    let auth = format!("\r\nAuthorization: Bearer {}", net.tokens[0].secret());
    // Declared too large: refused before the body is read.
    let big = format!(
        "{{\"digest\": \"0x{}\", \"pad\": \"{}\"}}",
        "11".repeat(32),
        "a".repeat(MAX_BODY_BYTES)
    );
    let r = raw(a, &sign_head(a, &auth, big.len()), big.as_bytes()).await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.error().contains("limit"), "{}", r.body);
    // Chunked, no length declared: refused while reading.
    let mut chunked = Vec::new();
    for piece in big.as_bytes().chunks(8192) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let head = format!(
        "POST /sign HTTP/1.1\r\nHost: {a}{auth}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked"
    );
    let r = raw(a, &head, &chunked).await;
    assert_eq!(r.status, 413, "{}", r.body);
    // Just under the limit is read (and then judged on its content: unknown field, 400).
    let fits = format!(
        "{{\"digest\": \"0x{}\", \"pad\": \"{}\"}}",
        "11".repeat(32),
        "a".repeat(MAX_BODY_BYTES - 200)
    );
    assert!(fits.len() <= MAX_BODY_BYTES);
    let r = raw(a, &sign_head(a, &auth, fits.len()), fits.as_bytes()).await;
    assert_eq!(r.status, 400, "{}", r.body);
}

#[cfg(unix)]
#[test]
fn token_file_is_created_0600_and_a_world_readable_one_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data").join("rpc-token");
    let created = ApiToken::load_or_create(&path).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    let secret = created.secret();
    assert_eq!(secret.len(), 64);
    assert!(secret.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(!format!("{created:?}").contains(secret));
    // Read back, not replaced.
    let again = ApiToken::load_or_create(&path).unwrap();
    assert_eq!(again.secret(), secret);
    assert_eq!(again.path(), Some(path.as_path()));
    // Another node's file is another token.
    let other = ApiToken::load_or_create(&dir.path().join("other")).unwrap();
    assert_ne!(other.secret(), secret);

    for loose in [0o644, 0o640, 0o604, 0o620] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(loose)).unwrap();
        let err = ApiToken::load_or_create(&path).unwrap_err();
        assert!(
            matches!(&err, node_shell::Error::ConfigInvalid { field, .. } if field == "rpc.token_file"),
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("chmod 600 {}", path.display())),
            "{msg}"
        );
        assert!(!msg.contains(secret), "the error leaks the token: {msg}");
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(ApiToken::load_or_create(&path).unwrap().secret(), secret);
    // An operator-written token must be long enough.
    std::fs::write(&path, "short\n").unwrap();
    let err = ApiToken::load_or_create(&path).unwrap_err().to_string();
    assert!(err.contains("at least 32"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticated_json_request_from_a_local_client_still_works() {
    let net = pool().await;
    let a = net.rpc[0];
    let token = net.tokens[0].secret();
    // What `curl -H "Authorization: Bearer $(cat rpc-token)" ...` sends.
    let r = raw(
        a,
        &format!("GET /status HTTP/1.1\r\nHost: localhost:{}\r\nUser-Agent: curl/8\r\nAccept: */*\r\nAuthorization: Bearer {token}", a.port()),
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["node_id"], id(1).to_hex());
    // The scheme is case-insensitive; an allowed Origin (the API's own) is accepted.
    let body = json!({"digest": format!("0x{}", "22".repeat(32))}).to_string();
    let head = format!(
        "POST /sign HTTP/1.1\r\nHost: {a}\r\nOrigin: http://{a}\r\nauthorization: bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}",
        body.len()
    );
    let r = raw(a, &head, body.as_bytes()).await;
    assert_eq!(r.status, 404, "{}", r.body); // reached the node: no key yet
    assert!(r.error().contains("no key share"), "{}", r.body);
    // A body-less request needs no Content-Type.
    let r = raw(
        a,
        &format!("DELETE /key HTTP/1.1\r\nHost: {a}\r\nAuthorization: Bearer {token}\r\nContent-Length: 0"),
        b"",
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.error().contains("no key share"), "{}", r.body);
}
