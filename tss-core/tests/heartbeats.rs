//! Protocol sessions count silence, not CPU time: a party whose computation outlasts the
//! idle timeout keeps the others' sessions alive with heartbeats, and the heartbeats of
//! waiting parties do not keep each other going, so a party that crashed still times the
//! session out, named.

mod common;

use std::time::Duration;

use common::node_ids;
use futures::{SinkExt, StreamExt};
use round_based::{MessageDestination, Outgoing};
use transport::{
    InMemoryNetwork, NodeId, SessionChannel, SessionConfig, SessionId, Transport, TransportError,
};
use tss_core::wire::{delivery_with_heartbeats, WireError};

const SESSION: SessionId = SessionId::from_bytes([7; 32]);

fn open(network: &InMemoryNetwork, me: NodeId, all: &[NodeId], idle: Duration) -> SessionChannel {
    network
        .endpoint(me)
        .open_session(
            SESSION,
            SessionConfig::new(all.to_vec()).with_idle_timeout(idle),
        )
        .unwrap()
}

/// Polls `fut` on this thread the way the library runs protocols (the worker hands its
/// other tasks over), so a blocking computation inside it holds the thread.
fn block_in_place<F: std::future::Future>(fut: F) -> F::Output {
    let handle = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| handle.block_on(fut))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_party_computing_longer_than_the_idle_timeout_does_not_time_the_others_out() {
    let network = InMemoryNetwork::new();
    let ids = node_ids(2);
    let idle = Duration::from_secs(5);
    let computing = open(&network, ids[0], &ids, idle);
    let waiting = open(&network, ids[1], &ids, idle);
    let ((_, mut out), liveness) = delivery_with_heartbeats::<u32>(computing, idle / 50);
    let ((mut incoming, _), _waiting_liveness) =
        delivery_with_heartbeats::<u32>(waiting, idle / 50);
    let computation = tokio::spawn(async move {
        block_in_place(liveness.track(async move {
            // One poll that holds its thread for more than twice the idle timeout (an
            // aux-info round of a large committee on a loaded machine), then the result.
            std::thread::sleep(idle * 12 / 5);
            out.send(Outgoing {
                recipient: MessageDestination::AllParties,
                msg: 7,
            })
            .await
        }))
    });
    let received = incoming.next().await.expect("the stream goes on");
    let received = received.expect("the waiting party hears the result, not a timeout");
    assert_eq!(received.msg, 7);
    assert_eq!(received.sender, 0);
    computation.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parties_waiting_for_a_crashed_one_still_time_out_naming_it() {
    let network = InMemoryNetwork::new();
    let ids = node_ids(3);
    let crashed = ids[2];
    // On the network (messages to it are accepted), but it never opens the session.
    let _crashed_endpoint = network.endpoint(crashed);
    let idle = Duration::from_secs(2);
    let mut runs = Vec::new();
    for (k, me) in ids[..2].iter().enumerate() {
        let channel = open(&network, *me, &ids, idle);
        runs.push(tokio::spawn(async move {
            let ((mut incoming, mut out), liveness) =
                delivery_with_heartbeats::<u32>(channel, idle / 20);
            block_in_place(liveness.track(async move {
                // Compute for a while (heartbeats go out), send, then wait for the two
                // others: the live one answers, the crashed one never does.
                std::thread::sleep(idle / 2);
                out.send(Outgoing {
                    recipient: MessageDestination::AllParties,
                    msg: k as u32,
                })
                .await
                .unwrap();
                let mut heard = Vec::new();
                while heard.len() < 2 {
                    match incoming.next().await.expect("the stream goes on") {
                        Ok(msg) => heard.push(msg.sender),
                        Err(e) => return (heard, e),
                    }
                }
                panic!("a party that never sent was heard: {heard:?}");
            }))
        }));
    }
    for (k, run) in runs.into_iter().enumerate() {
        // Were heartbeats to wake the waiting parties, each would answer the other's
        // forever and this would never end.
        let (heard, error) = tokio::time::timeout(idle * 30, run)
            .await
            .expect("the session times out")
            .unwrap();
        assert_eq!(heard, vec![1 - k as u16], "party {k} heard the live party");
        match error {
            WireError::Transport(TransportError::Timeout { silent, .. }) => {
                assert_eq!(silent, vec![crashed], "party {k} names the crashed party")
            }
            other => panic!("party {k} ended with {other:?}, not a timeout"),
        }
    }
}
