//! Two nodes on 127.0.0.1 exchange messages in one session over libp2p.
//!
//! Run with `cargo run -p transport --example two_nodes_libp2p`
//! (`RUST_LOG=transport=debug` for the transport's logs).

use std::time::Duration;

use transport::{
    Destination, Libp2pConfig, Libp2pIdentity, Libp2pTransport, SessionConfig, SessionId, Transport,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();

    // Demo seeds only: a real node loads its ed25519 seed from the keystore.
    let alice_id = Libp2pIdentity::from_seed([1; 32])?;
    let bob_id = Libp2pIdentity::from_seed([2; 32])?;
    let (alice_node, bob_node) = (alice_id.node_id(), bob_id.node_id());

    // Both listen on a free port of 127.0.0.1, then learn each other's address.
    // (With fixed addresses, list the peers in `Libp2pConfig::peers` instead.)
    let any_port = "/ip4/127.0.0.1/tcp/0".parse()?;
    let alice = Libp2pTransport::start(Libp2pConfig::new(alice_id, any_port)).await?;
    let any_port = "/ip4/127.0.0.1/tcp/0".parse()?;
    let bob = Libp2pTransport::start(Libp2pConfig::new(bob_id, any_port)).await?;
    alice.add_peer(bob_node, bob.listen_addrs()[0].clone())?;
    bob.add_peer(alice_node, alice.listen_addrs()[0].clone())?;
    alice
        .wait_for_peers(&[bob_node], Duration::from_secs(10))
        .await?;
    println!("alice {alice_node} <-> bob {bob_node}: connected");

    // One session, named by a 32-byte id both agree on.
    let session = SessionId::from_bytes([42; 32]);
    let config = SessionConfig::new(vec![alice_node, bob_node]);
    let mut on_alice = alice.open_session(session, config.clone())?;
    let mut on_bob = bob.open_session(session, config)?;

    on_alice.send(Destination::Direct(bob_node), b"hello bob".to_vec())?;
    let msg = on_bob.recv().await?;
    println!(
        "bob got {:?} from {} ({:?})",
        String::from_utf8_lossy(&msg.payload),
        msg.from,
        msg.kind
    );
    assert_eq!(msg.from, alice_node); // the noise-authenticated sender

    on_bob.send(Destination::Broadcast, b"hello everyone".to_vec())?;
    let msg = on_alice.recv().await?;
    println!(
        "alice got {:?} from {} ({:?})",
        String::from_utf8_lossy(&msg.payload),
        msg.from,
        msg.kind
    );

    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}
