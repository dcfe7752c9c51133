//! The libp2p transport on real sockets through misbehaving TCP proxies
//! (`transport::proxy`): cut connections, stalled links, delay, duplicates.
#![cfg(feature = "libp2p")]

use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use transport::p2p::libp2p::{self, Multiaddr, PeerId, StreamProtocol};
use transport::p2p::libp2p_stream;
use transport::p2p::{stream_unit, PROTOCOL_NAME, STREAM_ACCEPTED};
use transport::proxy::ProxiedNetwork;
use transport::{
    encode_frame, ConnectionEvent, ConnectionState, DeliveryKind, Destination, Libp2pConfig,
    Libp2pIdentity, Libp2pTransport, SessionConfig, SessionId, Transport,
};

/// Upper bound for anything a test waits on (never a sleep before an assert).
const WAIT: Duration = Duration::from_secs(30);

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn config(seed: u8) -> Libp2pConfig {
    let identity = Libp2pIdentity::from_seed([seed; 32]).unwrap();
    let mut config = Libp2pConfig::new(identity, "/ip4/127.0.0.1/tcp/0".parse().unwrap());
    config.redial_initial_backoff = Duration::from_millis(50);
    config.redial_max_backoff = Duration::from_millis(300);
    config
}

async fn network(seeds: &[u8], tweak: impl Fn(&mut Libp2pConfig)) -> ProxiedNetwork {
    let configs = seeds
        .iter()
        .map(|s| {
            let mut c = config(*s);
            tweak(&mut c);
            c
        })
        .collect();
    ProxiedNetwork::start(configs, WAIT).await.unwrap()
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits for `peer`'s next change to `state` on `events`; returns how long it took.
async fn wait_for_state(
    events: &mut tokio::sync::broadcast::Receiver<ConnectionEvent>,
    peer: transport::NodeId,
    state: ConnectionState,
) -> Duration {
    let start = tokio::time::Instant::now();
    loop {
        let event = tokio::time::timeout(WAIT, events.recv())
            .await
            .unwrap_or_else(|_| panic!("{peer} never became {state:?}"))
            .expect("event stream");
        if event.peer == peer && event.state == state {
            return start.elapsed();
        }
    }
}

/// A's frames are in flight (a throttled link) when every connection is cut and new
/// ones are refused for a while. They are retransmitted on the next connection: B gets
/// every message exactly once and in order. Without retransmission the frames the cut
/// destroyed are lost, and this test fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_in_flight_when_the_connection_is_cut_arrive_once_after_it_is_restored() {
    init_tracing();
    let net = network(&[151, 152], |_| {}).await;
    let ids = net.node_ids();
    let (a, b) = (&net.nodes[0], &net.nodes[1]);
    let s = SessionId::from_bytes([151; 32]);
    let config = SessionConfig::new(ids.clone());
    let on_a = a.open_session(s, config.clone()).unwrap();
    let mut on_b = b.open_session(s, config).unwrap();
    net.set_delay(Duration::from_millis(20), Duration::from_millis(10));
    for p in net.proxies() {
        p.set_throttle(Some(256 * 1024));
    }

    // 200 messages of 4 KiB: about 3 s through the throttle.
    const N: u32 = 200;
    let message = |i: u32| {
        let mut m = i.to_be_bytes().to_vec();
        m.resize(4096, 0x42);
        m
    };
    for i in 0..N {
        on_a.send(Destination::Direct(ids[1]), message(i)).unwrap();
    }
    // The first message arrived, so the rest is on its way: cut now, with frames still in
    // the proxies' delay lines, and keep the link down for a while.
    let first = tokio::time::timeout(WAIT, on_b.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.payload, message(0));
    let in_flight_at_cut = N as u64 - b.stats().frames_delivered;
    for p in net.proxies() {
        p.set_refusing(true);
        p.cut_all();
    }
    let mut events = a.connection_events();
    if a.connection_state(&ids[1]) == ConnectionState::Connected {
        wait_for_state(&mut events, ids[1], ConnectionState::Down).await;
    }
    for p in net.proxies() {
        p.set_refusing(false);
        p.set_throttle(None);
        p.set_delay(Duration::ZERO, Duration::ZERO);
    }
    for i in 1..N {
        let msg = tokio::time::timeout(WAIT, on_b.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "message {i} never arrived: {:?} {:?} proxies {:?}",
                    a.stats(),
                    b.stats(),
                    net.proxies()
                        .map(|p| (p.connections_accepted(), p.bytes_forwarded()))
                        .collect::<Vec<_>>()
                )
            })
            .unwrap();
        assert_eq!(
            msg.payload[..4],
            i.to_be_bytes(),
            "in order, none twice, none lost"
        );
    }
    // Nothing after the last one: a marker sent now is the very next message.
    on_a.send(Destination::Direct(ids[1]), b"end".to_vec())
        .unwrap();
    let msg = tokio::time::timeout(WAIT, on_b.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.payload, b"end");
    let (sa, sb) = (a.stats(), b.stats());
    assert!(in_flight_at_cut > 0, "the cut must hit frames in flight");
    assert!(
        sa.frames_retransmitted > 0,
        "frames lost in the cut were retransmitted: {sa:?}"
    );
    assert_eq!(sb.frames_delivered, N as u64 + 1, "{sb:?}");
    net.shutdown().await;
}

/// A peer whose link stalls (connection open, nothing passes: a dead cable, a frozen
/// host) is reported down by the keepalive within interval + timeout, not after TCP's
/// minutes; once the link is back, it is reported up again and messages sent meanwhile
/// arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stays_away_is_reported_down_within_seconds() {
    init_tracing();
    let interval = Duration::from_millis(200);
    let timeout = Duration::from_secs(1);
    let net = network(&[161, 162], |c| {
        c.keepalive_interval = interval;
        c.keepalive_timeout = timeout;
    })
    .await;
    let ids = net.node_ids();
    let a = &net.nodes[0];
    assert_eq!(a.connection_state(&ids[1]), ConnectionState::Connected);
    assert_eq!(
        a.connection_state(&transport::NodeId::from_bytes([9; 32])),
        ConnectionState::Unknown
    );
    let mut events = a.connection_events();
    for p in net.proxies() {
        p.set_stalled(true);
    }
    let took = wait_for_state(&mut events, ids[1], ConnectionState::Down).await;
    assert!(
        took <= interval + timeout + Duration::from_secs(2),
        "reported down after {took:?}"
    );
    assert_eq!(a.connection_state(&ids[1]), ConnectionState::Down);
    assert_eq!(
        Transport::connection_state(a, &ids[1]),
        ConnectionState::Down
    );
    assert!(a.stats().keepalive_failures >= 1);

    // Sent while the peer is away; delivered once it is back.
    let s = SessionId::from_bytes([161; 32]);
    let config = SessionConfig::new(ids.clone());
    let on_a = a.open_session(s, config.clone()).unwrap();
    let mut on_b = net.nodes[1].open_session(s, config).unwrap();
    on_a.send(Destination::Direct(ids[1]), b"while away".to_vec())
        .unwrap();
    for p in net.proxies() {
        p.set_stalled(false);
    }
    wait_for_state(&mut events, ids[1], ConnectionState::Connected).await;
    let msg = tokio::time::timeout(WAIT, on_b.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.payload, b"while away");
    net.shutdown().await;
}

/// A raw client that speaks the stream protocol by hand.
struct RawClient {
    control: libp2p_stream::Control,
    dial: tokio::sync::mpsc::UnboundedSender<Multiaddr>,
    _task: tokio::task::JoinHandle<()>,
}

impl RawClient {
    fn new(seed: u8) -> Self {
        let keypair = libp2p::identity::Keypair::ed25519_from_bytes([seed; 32]).unwrap();
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(
                libp2p::tcp::Config::default(),
                libp2p::noise::Config::new,
                libp2p::yamux::Config::default,
            )
            .unwrap()
            .with_behaviour(|_| libp2p_stream::Behaviour::new())
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        let control = swarm.behaviour().new_control();
        let (dial, mut dials) = tokio::sync::mpsc::unbounded_channel::<Multiaddr>();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    Some(addr) = dials.recv() => { let _ = swarm.dial(addr); }
                    _ = swarm.select_next_some() => {}
                }
            }
        });
        Self {
            control,
            dial,
            _task: task,
        }
    }

    /// Opens a stream and shakes hands as `incarnation`; returns it with the receiver's
    /// next expected sequence number.
    async fn open(
        &mut self,
        to: PeerId,
        addr: &Multiaddr,
        incarnation: u64,
    ) -> (libp2p::Stream, u64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        self.dial.send(addr.clone()).unwrap();
        let mut stream = loop {
            match self
                .control
                .open_stream(to, StreamProtocol::new(PROTOCOL_NAME))
                .await
            {
                Ok(stream) => break stream,
                Err(e) => {
                    assert!(tokio::time::Instant::now() < deadline, "no stream: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        assert_eq!(byte[0], STREAM_ACCEPTED);
        stream.write_all(&incarnation.to_be_bytes()).await.unwrap();
        stream.flush().await.unwrap();
        let mut next = [0u8; 8];
        stream.read_exact(&mut next).await.unwrap();
        (stream, u64::from_be_bytes(next))
    }
}

async fn try_send_seq(
    stream: &mut libp2p::Stream,
    session: SessionId,
    seqs: &[u64],
) -> std::io::Result<()> {
    for &seq in seqs {
        let frame = encode_frame(session, DeliveryKind::Direct, &seq.to_be_bytes());
        stream.write_all(&stream_unit(seq, &frame).unwrap()).await?;
    }
    stream.flush().await
}

async fn send_seq(stream: &mut libp2p::Stream, session: SessionId, seqs: &[u64]) {
    try_send_seq(stream, session, seqs).await.unwrap();
}

/// A sender that retransmits frames the receiver already has (on the same stream and on
/// a new one) gets each sequence number delivered once; the handshake of the new stream
/// says where the receiver is; a new incarnation (a restarted sender) starts from 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retransmitted_duplicates_are_delivered_once() {
    init_tracing();
    let receiver_config = {
        let mut c = config(171);
        c.listen_addr = "/ip4/127.0.0.1/tcp/0".parse().unwrap();
        let raw = Libp2pIdentity::from_seed([172; 32]).unwrap();
        // The raw client does not listen: the receiver's dials to it fail harmlessly.
        c.with_peer(raw.node_id(), "/ip4/127.0.0.1/tcp/1".parse().unwrap())
    };
    let receiver = Libp2pTransport::start(receiver_config).await.unwrap();
    let addr = receiver.listen_addrs()[0].clone();
    let raw_node = Libp2pIdentity::from_seed([172; 32]).unwrap().node_id();
    let s = SessionId::from_bytes([171; 32]);
    let mut inbox = receiver
        .open_session(s, SessionConfig::new(vec![receiver.local_node(), raw_node]))
        .unwrap();
    let mut raw = RawClient::new(172);
    let peer = receiver.local_peer_id();

    let (mut first, next) = raw.open(peer, &addr, 7).await;
    assert_eq!(next, 0);
    send_seq(&mut first, s, &[0, 1, 2, 1, 2]).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let msg = tokio::time::timeout(WAIT, inbox.recv())
            .await
            .unwrap()
            .unwrap();
        got.push(u64::from_be_bytes(msg.payload.try_into().unwrap()));
    }
    assert_eq!(got, [0, 1, 2]);
    // The acks came back on the stream.
    let mut ack = [0u8; 8];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        first.read_exact(&mut ack).await.unwrap();
        if u64::from_be_bytes(ack) == 3 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline);
    }

    // A new stream from the same incarnation: the receiver says it expects 3; a sender
    // that resends 1 and 2 anyway does not get them delivered again.
    let (mut second, next) = raw.open(peer, &addr, 7).await;
    assert_eq!(next, 3);
    send_seq(&mut second, s, &[1, 2, 3]).await;
    let msg = tokio::time::timeout(WAIT, inbox.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.payload, 3u64.to_be_bytes());
    let r = receiver.clone();
    wait_until("duplicates counted", || r.stats().duplicates_dropped == 4).await;

    // The older stream was superseded: what it carries now is not read.
    let _ = try_send_seq(&mut first, s, &[4]).await;
    // A restarted sender (new incarnation) starts again from 0.
    let (mut third, next) = raw.open(peer, &addr, 8).await;
    assert_eq!(next, 0);
    send_seq(&mut third, s, &[0]).await;
    let msg = tokio::time::timeout(WAIT, inbox.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        msg.payload,
        0u64.to_be_bytes(),
        "seq 4 on the superseded stream was not delivered"
    );
    let stats = receiver.stats();
    assert_eq!(stats.frames_delivered, 5);
    assert_eq!(stats.duplicates_dropped, 4);
    receiver.shutdown().await;
}
