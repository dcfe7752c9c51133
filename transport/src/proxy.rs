//! A TCP proxy on 127.0.0.1 that misbehaves on command, to test the network transports
//! on real sockets where the kernel offers no netem (feature `test-util`, tests only).
//!
//! [`TcpProxy::start`] listens on a free port and forwards every connection to one
//! upstream address, byte for byte, in both directions. While it runs it can
//! - delay every chunk of bytes by a one-way delay plus a random jitter
//!   ([`TcpProxy::set_delay`]; order is kept, as TCP would),
//! - throttle each direction of each connection to a rate ([`TcpProxy::set_throttle`]),
//! - stall: hold everything (connections stay open, nothing is forwarded) until released
//!   ([`TcpProxy::set_stalled`]), what a dead cable or a frozen peer looks like,
//! - cut every open connection ([`TcpProxy::cut_all`]),
//! - refuse new connections for a while ([`TcpProxy::set_refusing`]; accepted, then
//!   closed at once).
//!
//! Defaults: no delay, no jitter, no throttle, not stalled, not refusing.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The misbehaviour currently applied.
#[derive(Debug, Clone, Copy, Default)]
struct Conditions {
    delay: Duration,
    jitter: Duration,
    bytes_per_sec: Option<u64>,
    stalled: bool,
    refusing: bool,
}

struct Shared {
    upstream: SocketAddr,
    conditions: watch::Sender<Conditions>,
    /// Bumped by [`TcpProxy::cut_all`]: connections of older generations end.
    generation: watch::Sender<u64>,
    accepted: AtomicU64,
    refused: AtomicU64,
    forwarded: AtomicU64,
    /// Bytes read from one side and not yet written to the other (nor lost to a cut).
    in_flight: AtomicU64,
}

/// A misbehaving TCP forwarder (see the [module docs](self)). Stops when dropped.
pub struct TcpProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for TcpProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.shared.upstream)
            .finish_non_exhaustive()
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
        // Every connection ends too.
        self.cut_all();
    }
}

impl TcpProxy {
    /// Listens on `127.0.0.1:0` (read the port back with [`TcpProxy::local_addr`]) and
    /// forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            conditions: watch::channel(Conditions::default()).0,
            generation: watch::channel(0).0,
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
        });
        let task = tokio::spawn(accept(listener, shared.clone()));
        Ok(Self { addr, shared, task })
    }

    /// The address to dial instead of the upstream.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address it forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    /// Every chunk is delivered `delay` plus a uniform random `[0, jitter]` after it was
    /// read (never before an earlier chunk of the same direction). Applies to bytes read
    /// from now on.
    pub fn set_delay(&self, delay: Duration, jitter: Duration) {
        self.shared.conditions.send_modify(|c| {
            c.delay = delay;
            c.jitter = jitter;
        });
    }

    /// Caps each direction of each connection at `bytes_per_sec` (`None`: no cap).
    pub fn set_throttle(&self, bytes_per_sec: Option<u64>) {
        self.shared
            .conditions
            .send_modify(|c| c.bytes_per_sec = bytes_per_sec.filter(|r| *r > 0));
    }

    /// While stalled, connections stay open but nothing is forwarded (bytes are held and
    /// go on when released); new connections are accepted and held the same way.
    pub fn set_stalled(&self, stalled: bool) {
        self.shared.conditions.send_modify(|c| c.stalled = stalled);
    }

    /// While refusing, new connections are accepted and closed at once.
    pub fn set_refusing(&self, refusing: bool) {
        self.shared
            .conditions
            .send_modify(|c| c.refusing = refusing);
    }

    /// Closes every open connection (both sides see the connection end).
    pub fn cut_all(&self) {
        self.shared.generation.send_modify(|g| *g += 1);
    }

    /// Connections accepted and forwarded since start.
    pub fn connections_accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// Connections refused since start.
    pub fn connections_refused(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }

    /// Bytes forwarded (both directions) since start.
    pub fn bytes_forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::Relaxed)
    }

    /// Bytes read and not yet delivered (held by the delay, a throttle or a stall): what
    /// [`TcpProxy::cut_all`] would destroy now.
    pub fn bytes_in_flight(&self) -> u64 {
        self.shared.in_flight.load(Ordering::Relaxed)
    }
}

/// Bytes one direction holds; given back to [`Shared::in_flight`] when it ends.
struct Pending {
    shared: Arc<Shared>,
    bytes: AtomicU64,
}

impl Pending {
    fn add(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
        self.shared.in_flight.fetch_add(n, Ordering::Relaxed);
    }
    fn sub(&self, n: u64) {
        self.bytes.fetch_sub(n, Ordering::Relaxed);
        self.shared.in_flight.fetch_sub(n, Ordering::Relaxed);
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let left = self.bytes.load(Ordering::Relaxed);
        self.shared.in_flight.fetch_sub(left, Ordering::Relaxed);
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if shared.conditions.borrow().refusing {
            shared.refused.fetch_add(1, Ordering::Relaxed);
            drop(client);
            continue;
        }
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(connection(client, shared.clone()));
    }
}

async fn connection(client: TcpStream, shared: Arc<Shared>) {
    let mut generation = shared.generation.subscribe();
    let Ok(server) = TcpStream::connect(shared.upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pump(client_read, server_write, shared.clone());
    let down = pump(server_read, client_write, shared.clone());
    tokio::select! {
        _ = generation.changed() => {}
        _ = async { tokio::join!(up, down) } => {}
    }
    // Dropping the halves closes both sockets.
}

/// Forwards one direction: a reader stamps chunks with their delivery time, a writer
/// delivers them then.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    shared: Arc<Shared>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let pending = Arc::new(Pending {
        shared: shared.clone(),
        bytes: AtomicU64::new(0),
    });
    let pending_in = pending.clone();
    let conditions = shared.conditions.subscribe();
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        let mut last = Instant::now();
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let c = *conditions.borrow();
            let jitter = if c.jitter.is_zero() {
                Duration::ZERO
            } else {
                rand::thread_rng().gen_range(Duration::ZERO..=c.jitter)
            };
            let at = (Instant::now() + c.delay + jitter).max(last);
            last = at;
            pending_in.add(n as u64);
            if tx.send((at, buf[..n].to_vec())).is_err() {
                return;
            }
        }
    };
    let mut conditions = shared.conditions.subscribe();
    let writer = async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            loop {
                let stalled = conditions.borrow_and_update().stalled;
                if !stalled {
                    break;
                }
                if conditions.changed().await.is_err() {
                    return;
                }
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
            pending.sub(chunk.len() as u64);
            shared
                .forwarded
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            let rate = conditions.borrow().bytes_per_sec;
            if let Some(rate) = rate {
                let secs = chunk.len() as f64 / rate as f64;
                tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

/// Libp2p nodes on 127.0.0.1 whose every connection runs through a [`TcpProxy`]: one
/// proxy per ordered pair of nodes (`from` dials `to` through `proxy(from, to)`), so a
/// test can slow, stall or cut one link, or every link of one node.
#[cfg(feature = "libp2p")]
pub struct ProxiedNetwork {
    /// The nodes, in the order of the configurations given to [`ProxiedNetwork::start`].
    pub nodes: Vec<crate::Libp2pTransport>,
    proxies: Vec<((usize, usize), TcpProxy)>,
}

#[cfg(feature = "libp2p")]
impl std::fmt::Debug for ProxiedNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxiedNetwork")
            .field("nodes", &self.nodes.len())
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "libp2p")]
impl ProxiedNetwork {
    /// Starts one node per configuration (each should listen on `/ip4/127.0.0.1/tcp/0`;
    /// the port is read back), a proxy per ordered pair, and makes every node know every
    /// other through its proxy (the configurations' `peers` are replaced). Returns once
    /// every node is connected to every other, or fails after `timeout`.
    pub async fn start(
        configs: Vec<crate::Libp2pConfig>,
        timeout: Duration,
    ) -> Result<Self, crate::TransportError> {
        use crate::TransportError;
        let mut nodes = Vec::new();
        for mut config in configs {
            config.peers.clear();
            nodes.push(crate::Libp2pTransport::start(config).await?);
        }
        let mut listen = Vec::new();
        for node in &nodes {
            let addr = node
                .listen_addrs()
                .into_iter()
                .find_map(|a| socket_addr(&a))
                .ok_or_else(|| TransportError::Network("no tcp listen address".into()))?;
            listen.push(addr);
        }
        let ids: Vec<crate::NodeId> = nodes.iter().map(crate::Transport::local_node).collect();
        let mut proxies = Vec::new();
        for from in 0..nodes.len() {
            for to in 0..nodes.len() {
                if from == to {
                    continue;
                }
                let proxy = TcpProxy::start(listen[to])
                    .await
                    .map_err(|e| TransportError::Network(format!("proxy: {e}")))?;
                let addr = format!("/ip4/127.0.0.1/tcp/{}", proxy.local_addr().port())
                    .parse()
                    .map_err(|e| TransportError::Network(format!("proxy address: {e}")))?;
                nodes[from].add_peer(ids[to], addr)?;
                proxies.push(((from, to), proxy));
            }
        }
        for node in &nodes {
            node.wait_for_peers(&ids, timeout).await?;
        }
        Ok(Self { nodes, proxies })
    }

    /// The nodes' ids, in order.
    pub fn node_ids(&self) -> Vec<crate::NodeId> {
        self.nodes
            .iter()
            .map(crate::Transport::local_node)
            .collect()
    }

    /// The proxy `from` dials `to` through.
    pub fn proxy(&self, from: usize, to: usize) -> &TcpProxy {
        &self
            .proxies
            .iter()
            .find(|(pair, _)| *pair == (from, to))
            .expect("a proxy for every ordered pair of distinct nodes")
            .1
    }

    /// Every proxy.
    pub fn proxies(&self) -> impl Iterator<Item = &TcpProxy> {
        self.proxies.iter().map(|(_, p)| p)
    }

    /// The proxies of every link of node `k` (both directions).
    pub fn proxies_of(&self, k: usize) -> impl Iterator<Item = &TcpProxy> {
        self.proxies
            .iter()
            .filter(move |((from, to), _)| *from == k || *to == k)
            .map(|(_, p)| p)
    }

    /// Sets the same delay and jitter on every proxy.
    pub fn set_delay(&self, delay: Duration, jitter: Duration) {
        for p in self.proxies() {
            p.set_delay(delay, jitter);
        }
    }

    /// Bytes forwarded by every proxy together.
    pub fn bytes_forwarded(&self) -> u64 {
        self.proxies().map(TcpProxy::bytes_forwarded).sum()
    }

    /// Bytes every proxy together holds now ([`TcpProxy::bytes_in_flight`]).
    pub fn bytes_in_flight(&self) -> u64 {
        self.proxies().map(TcpProxy::bytes_in_flight).sum()
    }

    /// Stops every node.
    pub async fn shutdown(&self) {
        for node in &self.nodes {
            node.shutdown().await;
        }
    }
}

#[cfg(feature = "libp2p")]
fn socket_addr(addr: &crate::p2p::libp2p::Multiaddr) -> Option<SocketAddr> {
    use crate::p2p::libp2p::multiaddr::Protocol;
    let mut ip = None;
    let mut port = None;
    for part in addr.iter() {
        match part {
            Protocol::Ip4(a) => ip = Some(std::net::IpAddr::V4(a)),
            Protocol::Ip6(a) => ip = Some(std::net::IpAddr::V6(a)),
            Protocol::Tcp(p) => port = Some(p),
            _ => {}
        }
    }
    Some(SocketAddr::new(ip?, port?))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn round_trip(addr: SocketAddr) -> io::Result<Duration> {
        let mut s = TcpStream::connect(addr).await?;
        let start = Instant::now();
        s.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"ping");
        Ok(start.elapsed())
    }

    #[tokio::test]
    async fn forwards_delays_refuses_and_cuts() {
        let proxy = TcpProxy::start(echo_server().await).await.unwrap();
        round_trip(proxy.local_addr()).await.unwrap();
        proxy.set_delay(Duration::from_millis(50), Duration::ZERO);
        let rtt = round_trip(proxy.local_addr()).await.unwrap();
        assert!(
            rtt >= Duration::from_millis(100),
            "two delayed legs: {rtt:?}"
        );
        proxy.set_delay(Duration::ZERO, Duration::ZERO);

        proxy.set_refusing(true);
        assert!(round_trip(proxy.local_addr()).await.is_err());
        assert_eq!(proxy.connections_refused(), 1);
        proxy.set_refusing(false);

        let mut s = TcpStream::connect(proxy.local_addr()).await.unwrap();
        s.write_all(b"x").await.unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        proxy.cut_all();
        let mut rest = Vec::new();
        let ended = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
        assert!(ended.is_ok(), "a cut connection ends");
    }

    #[tokio::test]
    async fn a_stalled_proxy_holds_bytes_until_released() {
        let proxy = TcpProxy::start(echo_server().await).await.unwrap();
        let mut s = TcpStream::connect(proxy.local_addr()).await.unwrap();
        proxy.set_stalled(true);
        s.write_all(b"held").await.unwrap();
        let mut buf = [0u8; 4];
        let early = tokio::time::timeout(Duration::from_millis(300), s.read_exact(&mut buf)).await;
        assert!(early.is_err(), "nothing forwarded while stalled");
        proxy.set_stalled(false);
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf, b"held");
    }
}
