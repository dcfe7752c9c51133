//! The transport's per-peer limits show up on the node's metrics when a peer hits them:
//! a peer that sends more early messages than its quota loses the rest, and an operator
//! sees it in `node_shell_transport_dropped_total{reason="early_messages"}`.

use std::time::Duration;

use node_shell::metrics::Metrics;
use transport::{
    Destination, HubLimits, Libp2pConfig, Libp2pIdentity, Libp2pTransport, SessionConfig,
    SessionId, Transport,
};

/// Generous: two libp2p nodes on 127.0.0.1 on a loaded machine.
const WAIT: Duration = Duration::from_secs(60);

/// The value of the metric line `name` (with its labels) in `text`.
fn value(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

async fn start(identity: Libp2pIdentity, limits: HubLimits) -> Libp2pTransport {
    let mut config = Libp2pConfig::new(identity, "/ip4/127.0.0.1/tcp/0".parse().unwrap());
    config.hub_limits = limits;
    node_shell::net::start_libp2p(config).await.unwrap()
}

/// Polls `cond` every 20 ms until it holds, failing after [`WAIT`].
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_over_its_early_message_quota_shows_on_the_receivers_metrics() {
    let (a_identity, b_identity) = (Libp2pIdentity::generate(), Libp2pIdentity::generate());
    let (a_id, b_id) = (a_identity.node_id(), b_identity.node_id());
    let quota = 2;
    let receiver = start(
        a_identity,
        HubLimits {
            early_messages_per_peer: quota,
            ..HubLimits::default()
        },
    )
    .await;
    let sender = start(b_identity, HubLimits::default()).await;
    receiver
        .add_peer(b_id, sender.listen_addrs()[0].clone())
        .unwrap();
    sender
        .add_peer(a_id, receiver.listen_addrs()[0].clone())
        .unwrap();
    receiver.wait_for_peers(&[b_id], WAIT).await.unwrap();
    sender.wait_for_peers(&[a_id], WAIT).await.unwrap();

    let metrics = Metrics::new();
    let before = metrics.render();
    assert_eq!(
        value(
            &before,
            "node_shell_transport_dropped_total{reason=\"early_messages\"}"
        ),
        None,
        "no transport metrics before a transport is watched"
    );
    let watched = receiver.clone();
    metrics.watch_transport(move || watched.stats());

    // The sender opens a session the receiver has not opened yet and sends five
    // messages: two are held for it, three are over the sender's quota.
    let session = SessionId::from_bytes([42; 32]);
    let config = SessionConfig::new(vec![a_id, b_id]);
    let on_sender = sender.open_session(session, config.clone()).unwrap();
    let sent = 5;
    for i in 0..sent {
        on_sender
            .send(Destination::Direct(a_id), vec![i as u8; 100])
            .unwrap();
    }
    let routed = receiver.clone();
    wait_until("the receiver routes every message", || {
        let s = routed.stats();
        s.frames_delivered + s.rejected_by_session >= sent
    })
    .await;

    let text = metrics.render();
    let dropped = sent - quota as u64;
    assert_eq!(
        value(
            &text,
            "node_shell_transport_dropped_total{reason=\"early_messages\"}"
        ),
        Some(dropped),
        "{text}"
    );
    assert_eq!(
        value(&text, "node_shell_transport_early_held_messages"),
        Some(quota as u64),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "node_shell_transport_dropped_total{reason=\"inbox_bytes\"}"
        ),
        Some(0),
        "every reason is reported, at 0 if never hit: {text}"
    );
    // A second scrape does not count the same drops again.
    assert_eq!(
        value(
            &metrics.render(),
            "node_shell_transport_dropped_total{reason=\"early_messages\"}"
        ),
        Some(dropped)
    );

    // Once the receiver opens the session it gets the held messages; the gauge falls.
    let mut on_receiver = receiver.open_session(session, config).unwrap();
    for i in 0..quota {
        let msg = tokio::time::timeout(WAIT, on_receiver.recv())
            .await
            .expect("a held message")
            .expect("no transport error");
        assert_eq!((msg.from, msg.payload[0]), (b_id, i as u8));
    }
    let text = metrics.render();
    assert_eq!(
        value(&text, "node_shell_transport_early_held_messages"),
        Some(0),
        "{text}"
    );
    assert!(value(&text, "node_shell_transport_frames_delivered_total").unwrap() >= quota as u64);
    receiver.shutdown().await;
    sender.shutdown().await;
}
