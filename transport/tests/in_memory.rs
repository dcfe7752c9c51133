//! The in-memory transport, the session rules every transport shares, and the fault
//! injection wrapper (each fault has an observable effect).

use std::time::{Duration, Instant};

use transport::{
    DeliveryKind, Destination, Fault, FaultPlan, FaultyTransport, InMemoryNetwork,
    InMemoryTransport, InboundMessage, NodeId, RejectReason, SessionChannel, SessionConfig,
    SessionId, Transport, TransportError, MAX_MESSAGE_SIZE,
};

const WAIT: Duration = Duration::from_secs(5);

fn node(i: u8) -> NodeId {
    NodeId::from_bytes([i; 32])
}

fn session(i: u8) -> SessionId {
    SessionId::from_bytes([i; 32])
}

fn nodes(n: u8) -> Vec<NodeId> {
    (1..=n).map(node).collect()
}

async fn recv(ch: &mut SessionChannel) -> InboundMessage {
    tokio::time::timeout(WAIT, ch.recv())
        .await
        .expect("no message in time")
        .expect("session failed")
}

/// Nothing arrives within the (short) idle timeout of `ch`.
async fn assert_nothing(ch: &mut SessionChannel) {
    match ch.recv().await {
        Err(TransportError::Timeout { .. }) => {}
        other => panic!("expected nothing, got {other:?}"),
    }
}

fn short(participants: Vec<NodeId>) -> SessionConfig {
    SessionConfig::new(participants).with_idle_timeout(Duration::from_millis(300))
}

// ---------------------------------------------------------------------------------------
// In-memory transport and session rules
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn broadcast_reaches_every_other_participant_with_authenticated_sender() {
    let net = InMemoryNetwork::new();
    let ids = nodes(4);
    let eps: Vec<InMemoryTransport> = ids.iter().map(|n| net.endpoint(*n)).collect();
    let mut chans: Vec<_> = eps
        .iter()
        .map(|e| e.open_session(session(1), short(ids.clone())).unwrap())
        .collect();
    // The payload claims another sender; the transport ignores that.
    chans[0]
        .send(Destination::Broadcast, node(3).as_bytes().to_vec())
        .unwrap();
    for ch in chans.iter_mut().skip(1) {
        let msg = recv(ch).await;
        assert_eq!(msg.from, ids[0]);
        assert_eq!(msg.kind, DeliveryKind::Broadcast);
    }
    assert_nothing(&mut chans[0]).await; // not to itself
}

#[tokio::test]
async fn messages_for_an_unopened_session_are_held_until_it_opens() {
    let net = InMemoryNetwork::new();
    let ids = nodes(2);
    let a = net.endpoint(ids[0]);
    let b = net.endpoint(ids[1]);
    let on_a = a.open_session(session(2), short(ids.clone())).unwrap();
    on_a.send(Destination::Direct(ids[1]), b"early".to_vec())
        .unwrap();
    let mut on_b = b.open_session(session(2), short(ids)).unwrap();
    assert_eq!(recv(&mut on_b).await.payload, b"early");
}

#[tokio::test]
async fn finished_session_rejects_messages_and_cannot_be_reopened() {
    let net = InMemoryNetwork::new();
    let ids = nodes(2);
    let b = net.endpoint(ids[1]);
    let on_b = b.open_session(session(3), short(ids.clone())).unwrap();
    drop(on_b);
    let err = b
        .hub()
        .deliver(
            session(3),
            InboundMessage {
                from: ids[0],
                kind: DeliveryKind::Direct,
                payload: b"late".to_vec(),
            },
        )
        .unwrap_err();
    assert_eq!(
        err,
        TransportError::Rejected {
            session: session(3),
            from: ids[0],
            reason: RejectReason::SessionFinished
        }
    );
    assert_eq!(
        b.open_session(session(3), short(ids)).unwrap_err(),
        TransportError::SessionReused(session(3))
    );
}

#[tokio::test]
async fn non_participant_sender_is_rejected() {
    let net = InMemoryNetwork::new();
    let ids = nodes(2);
    let b = net.endpoint(ids[1]);
    let _on_b = b.open_session(session(4), short(ids)).unwrap();
    let err = b
        .hub()
        .deliver(
            session(4),
            InboundMessage {
                from: node(9),
                kind: DeliveryKind::Direct,
                payload: vec![],
            },
        )
        .unwrap_err();
    assert!(matches!(
        err,
        TransportError::Rejected {
            reason: RejectReason::SenderNotParticipant,
            ..
        }
    ));
}

#[tokio::test]
async fn oversized_payload_and_unknown_recipient_are_refused_on_send() {
    let net = InMemoryNetwork::new();
    let ids = nodes(2);
    let a = net.endpoint(ids[0]);
    let on_a = a.open_session(session(5), short(ids.clone())).unwrap();
    assert!(matches!(
        on_a.send(Destination::Broadcast, vec![0; MAX_MESSAGE_SIZE + 1]),
        Err(TransportError::MessageTooLarge { .. })
    ));
    assert!(matches!(
        on_a.send(Destination::Direct(node(9)), vec![1]),
        Err(TransportError::UnknownRecipient { .. })
    ));
    assert!(matches!(
        on_a.send(Destination::Direct(ids[0]), vec![1]),
        Err(TransportError::UnknownRecipient { .. })
    ));
}

#[tokio::test]
async fn idle_session_times_out_naming_the_silent_parties() {
    let net = InMemoryNetwork::new();
    let ids = nodes(3);
    let eps: Vec<_> = ids.iter().map(|n| net.endpoint(*n)).collect();
    let mut on_a = eps[0].open_session(session(6), short(ids.clone())).unwrap();
    let on_b = eps[1].open_session(session(6), short(ids.clone())).unwrap();
    on_b.send(Destination::Broadcast, b"hi".to_vec()).unwrap();
    assert_eq!(recv(&mut on_a).await.from, ids[1]);
    assert_eq!(
        on_a.recv().await.unwrap_err(),
        TransportError::Timeout {
            session: session(6),
            silent: vec![ids[2]]
        }
    );
}

// ---------------------------------------------------------------------------------------
// Fault injection
// ---------------------------------------------------------------------------------------

/// Node 1 sends through a faulty wrapper; nodes 2.. receive normally.
fn faulty(plan: FaultPlan, n: u8) -> (SessionChannel, Vec<SessionChannel>, Vec<NodeId>) {
    let net = InMemoryNetwork::new();
    let ids = nodes(n);
    let sender = FaultyTransport::new(net.endpoint(ids[0]), plan);
    let tx = sender.open_session(session(7), short(ids.clone())).unwrap();
    let rxs = ids[1..]
        .iter()
        .map(|id| {
            net.endpoint(*id)
                .open_session(session(7), short(ids.clone()))
                .unwrap()
        })
        .collect();
    (tx, rxs, ids)
}

#[tokio::test]
async fn fault_drop_loses_messages() {
    let (tx, mut rxs, ids) = faulty(FaultPlan::single(Fault::Drop(1.0)), 2);
    tx.send(Destination::Direct(ids[1]), b"lost".to_vec())
        .unwrap();
    assert_nothing(&mut rxs[0]).await;

    let (tx, mut rxs, ids) = faulty(FaultPlan::single(Fault::DropTo(node(3))), 3);
    tx.send(Destination::Broadcast, b"to all".to_vec()).unwrap();
    assert_eq!(recv(&mut rxs[0]).await.payload, b"to all");
    assert_nothing(&mut rxs[1]).await;
    let _ = ids;
}

#[tokio::test]
async fn fault_duplicate_delivers_twice() {
    let (tx, mut rxs, ids) = faulty(FaultPlan::single(Fault::Duplicate), 2);
    tx.send(Destination::Direct(ids[1]), b"twice".to_vec())
        .unwrap();
    assert_eq!(recv(&mut rxs[0]).await.payload, b"twice");
    assert_eq!(recv(&mut rxs[0]).await.payload, b"twice");
    assert_nothing(&mut rxs[0]).await;
}

#[tokio::test]
async fn fault_reorder_swaps_consecutive_messages() {
    let (tx, mut rxs, ids) = faulty(FaultPlan::single(Fault::Reorder), 2);
    tx.send(Destination::Direct(ids[1]), b"first".to_vec())
        .unwrap();
    tx.send(Destination::Direct(ids[1]), b"second".to_vec())
        .unwrap();
    assert_eq!(recv(&mut rxs[0]).await.payload, b"second");
    assert_eq!(recv(&mut rxs[0]).await.payload, b"first");
}

#[tokio::test]
async fn fault_corrupt_flips_one_byte() {
    let (tx, mut rxs, ids) = faulty(FaultPlan::single(Fault::Corrupt), 2);
    let sent = vec![0u8; 64];
    tx.send(Destination::Direct(ids[1]), sent.clone()).unwrap();
    let got = recv(&mut rxs[0]).await.payload;
    assert_eq!(got.len(), sent.len());
    let differing = got.iter().zip(&sent).filter(|(a, b)| a != b).count();
    assert_eq!(differing, 1);
}

#[tokio::test]
async fn fault_equivocate_broadcast_sends_a_different_version_to_the_listed_nodes() {
    let plan = FaultPlan::single(Fault::EquivocateBroadcastTo(vec![node(3)]));
    let (tx, mut rxs, ids) = faulty(plan, 4);
    let sent = b"the one true broadcast".to_vec();
    tx.send(Destination::Broadcast, sent.clone()).unwrap();
    assert_eq!(recv(&mut rxs[0]).await.payload, sent); // node 2: honest copy
    assert_ne!(recv(&mut rxs[1]).await.payload, sent); // node 3: equivocated
    assert_eq!(recv(&mut rxs[2]).await.payload, sent); // node 4: honest copy
                                                       // Direct messages to the listed node are untouched.
    tx.send(Destination::Direct(ids[2]), sent.clone()).unwrap();
    assert_eq!(recv(&mut rxs[1]).await.payload, sent);
}

#[tokio::test]
async fn fault_garble_broadcast_appends_a_byte_for_the_listed_nodes_only() {
    let plan = FaultPlan::single(Fault::GarbleBroadcastTo(vec![node(3)]));
    let (tx, mut rxs, ids) = faulty(plan, 4);
    let sent = b"the one true broadcast".to_vec();
    tx.send(Destination::Broadcast, sent.clone()).unwrap();
    assert_eq!(recv(&mut rxs[0]).await.payload, sent);
    let garbled = recv(&mut rxs[1]).await.payload;
    assert_eq!(garbled.len(), sent.len() + 1);
    assert_eq!(&garbled[..sent.len()], &sent[..]);
    assert_eq!(recv(&mut rxs[2]).await.payload, sent);
    tx.send(Destination::Direct(ids[2]), sent.clone()).unwrap();
    assert_eq!(recv(&mut rxs[1]).await.payload, sent);
}

#[tokio::test]
async fn fault_delay_holds_messages_back() {
    let delay = Duration::from_millis(250);
    let (tx, mut rxs, ids) = faulty(FaultPlan::single(Fault::Delay(delay)), 2);
    let start = Instant::now();
    tx.send(Destination::Direct(ids[1]), b"later".to_vec())
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(100), rxs[0].recv())
            .await
            .is_err(),
        "arrived before the delay"
    );
    assert_eq!(recv(&mut rxs[0]).await.payload, b"later");
    assert!(start.elapsed() >= delay);
}

#[tokio::test]
async fn finished_sessions_are_remembered_up_to_a_bound() {
    let net = InMemoryNetwork::new();
    let ids = nodes(2);
    let a = net.endpoint(ids[0]);
    let _b = net.endpoint(ids[1]);
    let config = SessionConfig::new(ids.clone());
    let id = |i: usize| {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&(i as u64).to_be_bytes());
        SessionId::from_bytes(bytes)
    };
    let total = transport::FINISHED_SESSIONS_REMEMBERED + 1;
    for i in 0..total {
        drop(a.open_session(id(i), config.clone()).unwrap());
    }
    assert_eq!(
        a.hub().finished_sessions(),
        transport::FINISHED_SESSIONS_REMEMBERED
    );
    // The newest is still refused; the oldest has been forgotten.
    assert_eq!(
        a.open_session(id(total - 1), config.clone()).unwrap_err(),
        TransportError::SessionReused(id(total - 1))
    );
    assert!(a.open_session(id(0), config).is_ok());
}
