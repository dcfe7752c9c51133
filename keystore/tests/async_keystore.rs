//! The async adapter, [`keystore::AsyncKeystore`], with real tss-core key shares.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{generation as g, key, share};
use keystore::{AsyncKeystore, Generation, KdfParams, KeystoreError, RecordName, Unlock};
use tss_core::pool::ShareStore;
use tss_core::transport::NodeId;
use tss_core::{IdentitySignature, ReshareCertificate, ReshareStatement};

const PASS: &str = "operator passphrase for tests";

async fn open(dir: &std::path::Path) -> AsyncKeystore {
    AsyncKeystore::open_with_kdf(
        dir,
        Unlock::passphrase(PASS),
        KdfParams::insecure_for_tests(),
    )
    .await
    .unwrap()
}

/// Writes `test-data/insecure-test-key-share.json`: party 1's share of a 2-of-2 keygen
/// with tss-core's public test primes. Run by hand:
/// `cargo test -p keystore --test async_keystore regenerate_key_share_fixture -- --ignored`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "regenerates a committed fixture"]
async fn regenerate_key_share_fixture() {
    use tss_core::transport::{InMemoryNetwork, NodeId};
    use tss_core::{Committee, ExecutionId, PaillierPrimes, ProtocolKind, TssNode};

    let primes = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tss-core/test-data/insecure-test-primes.json"
    ))
    .unwrap();
    let mut primes = PaillierPrimes::list_from_json(&primes).unwrap();
    let network = InMemoryNetwork::new();
    let ids: Vec<NodeId> = (1..=2).map(|i| NodeId::from_bytes([i; 32])).collect();
    let committee = Committee::new(ids.clone(), 2).unwrap();
    let key_id = key("fixture-key");
    let eid = ExecutionId::random(ProtocolKind::Keygen, &key_id, &ids, &mut rand::thread_rng());
    let nodes: Vec<TssNode> = ids
        .iter()
        .map(|id| TssNode::new(Arc::new(network.endpoint(*id))))
        .collect();
    let mut runs = Vec::new();
    for node in nodes {
        let (committee, key_id, primes) = (committee.clone(), key_id.clone(), primes.remove(0));
        runs.push(tokio::spawn(async move {
            node.keygen(key_id, committee, eid, primes).await
        }));
    }
    let mut shares = Vec::new();
    for run in runs {
        shares.push(run.await.unwrap().unwrap());
    }
    assert_eq!(shares[0].generation(), Generation::KEYGEN);
    let bytes = shares[0].to_secret_bytes().unwrap();
    std::fs::write(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/test-data/insecure-test-key-share.json"
        ),
        &bytes[..],
    )
    .unwrap();
}

fn assert_send_sync_clone<T: Send + Sync + Clone + 'static>() {}

#[test]
fn handle_is_send_sync_and_cheap_to_clone() {
    assert_send_sync_clone::<AsyncKeystore>();
}

#[tokio::test]
async fn staged_generation_is_not_active_until_activated() {
    let dir = tempfile::tempdir().unwrap();
    let ks = open(dir.path()).await;
    let k = key("pool-key");
    ks.save_state(&k, b"S-genesis").await.unwrap();
    // Generation 0 is what keygen makes: it is stored like any other.
    ks.stage(&share("pool-key", 0)).await.unwrap();
    assert!(ks.load_active(&k).await.unwrap().is_none());
    assert_eq!(ks.active_generation(&k).await.unwrap(), None);
    assert_eq!(ks.generations(&k).await.unwrap(), vec![Generation::KEYGEN]);
    assert_eq!(ks.load_state(&k).await.unwrap().unwrap(), b"S-genesis");
    // The staged share can be read explicitly.
    assert_eq!(ks.load(&k, g(0)).await.unwrap().generation(), g(0));

    ks.activate(&k, Generation::KEYGEN, b"S0").await.unwrap();
    let active = ks.load_active(&k).await.unwrap().unwrap();
    assert_eq!((active.key_id(), active.generation()), (&k, g(0)));
    assert_eq!(ks.load_state(&k).await.unwrap().unwrap(), b"S0");
    ks.close().await.unwrap();
}

#[tokio::test]
async fn activate_switches_share_and_state_together() {
    let dir = tempfile::tempdir().unwrap();
    let ks = open(dir.path()).await;
    let k = key("pool-key");
    ks.stage(&share("pool-key", 0)).await.unwrap();
    ks.activate(&k, g(0), b"S0").await.unwrap();

    // A reshare stages generation 1: nothing visible changes yet.
    ks.stage(&share("pool-key", 1)).await.unwrap();
    assert_eq!(
        ks.load_active(&k).await.unwrap().unwrap().generation(),
        g(0)
    );
    assert_eq!(ks.load_state(&k).await.unwrap().unwrap(), b"S0");

    ks.activate(&k, g(1), b"S1").await.unwrap();
    assert_eq!(
        ks.load_active(&k).await.unwrap().unwrap().generation(),
        g(1)
    );
    assert_eq!(ks.active_generation(&k).await.unwrap(), Some(g(1)));
    assert_eq!(ks.load_state(&k).await.unwrap().unwrap(), b"S1");
    assert_eq!(ks.generations(&k).await.unwrap(), vec![g(0), g(1)]);
    ks.close().await.unwrap();
}

#[tokio::test]
async fn activating_a_generation_that_is_not_staged_fails_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ks = open(dir.path()).await;
    let k = key("pool-key");
    ks.stage(&share("pool-key", 0)).await.unwrap();
    ks.activate(&k, g(0), b"S0").await.unwrap();
    let err = ks.activate(&k, g(1), b"S1").await.unwrap_err();
    assert!(
        matches!(err, KeystoreError::UnknownGeneration { generation, .. } if generation == g(1)),
        "{err:?}"
    );
    let err = ks.activate(&key("other"), g(0), b"S1").await.unwrap_err();
    assert!(matches!(err, KeystoreError::UnknownKey(_)), "{err:?}");
    assert_eq!(ks.active_generation(&k).await.unwrap(), Some(g(0)));
    assert_eq!(ks.load_state(&k).await.unwrap().unwrap(), b"S0");
    assert_eq!(ks.load_state(&key("other")).await.unwrap(), None);
}

#[tokio::test]
async fn a_share_stored_under_another_key_or_generation_is_never_activated() {
    let dir = tempfile::tempdir().unwrap();
    let ks = open(dir.path()).await;
    let k = key("pool-key");
    // Raw access: the bytes of generation 0's share, stored as generation 5.
    let bytes = share("pool-key", 0).to_secret_bytes().unwrap();
    ks.with_store(move |store| {
        let mut records = keystore::GenerationRecords::new();
        records.insert(
            RecordName::new(RecordName::KEY_SHARE).unwrap(),
            keystore::SecretBytes::from(bytes),
        );
        store.put_generation(&key("pool-key"), g(5), &records)
    })
    .await
    .unwrap()
    .unwrap();
    let err = ks.activate(&k, g(5), b"S5").await.unwrap_err();
    assert!(
        matches!(&err, KeystoreError::InvalidKeyShare { generation, .. } if *generation == g(5)),
        "{err:?}"
    );
    assert!(err.to_string().contains("gen0"), "{err}");
    assert_eq!(ks.active_generation(&k).await.unwrap(), None);
    assert_eq!(ks.load_state(&k).await.unwrap(), None);
}

#[tokio::test]
async fn retire_refuses_the_active_generation_and_deletes_an_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let ks = open(dir.path()).await;
    let k = key("pool-key");
    ks.stage(&share("pool-key", 0)).await.unwrap();
    ks.activate(&k, g(0), b"S0").await.unwrap();
    let err = ks.retire(&k, g(0)).await.unwrap_err();
    assert!(
        matches!(err, KeystoreError::GenerationActive { generation, .. } if generation == g(0)),
        "{err:?}"
    );
    ks.stage(&share("pool-key", 1)).await.unwrap();
    ks.activate(&k, g(1), b"S1").await.unwrap();
    assert!(ks.retire(&k, g(0)).await.unwrap());
    assert_eq!(ks.generations(&k).await.unwrap(), vec![g(1)]);
    // Repeating it (e.g. after a crash) is fine.
    assert!(!ks.retire(&k, g(0)).await.unwrap());
    assert!(!ks.retire(&key("unknown"), g(0)).await.unwrap());
    assert_eq!(
        ks.load_active(&k).await.unwrap().unwrap().generation(),
        g(1)
    );
    assert_eq!(ks.load_state(&k).await.unwrap().unwrap(), b"S1");
}

#[tokio::test]
async fn a_staged_generation_is_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let ks = open(dir.path()).await;
    let k = key("pool-key");
    ks.stage(&share("pool-key", 1)).await.unwrap();
    let sealed = |ks: AsyncKeystore| async move {
        ks.with_store(|store| {
            store.sealed_record(
                &key("pool-key"),
                g(1),
                &RecordName::new(RecordName::KEY_SHARE).unwrap(),
            )
        })
        .await
        .unwrap()
        .unwrap()
    };
    let before = sealed(ks.clone()).await;
    let err = ks.stage(&share("pool-key", 1)).await.unwrap_err();
    assert!(
        matches!(err, KeystoreError::GenerationExists { generation, .. } if generation == g(1)),
        "{err:?}"
    );
    // Same ciphertext (a rewrite would have a fresh nonce), still not active.
    assert_eq!(sealed(ks.clone()).await, before);
    assert!(ks.load_active(&k).await.unwrap().is_none());
    // Nor is an active one.
    ks.activate(&k, g(1), b"S1").await.unwrap();
    assert!(matches!(
        ks.stage(&share("pool-key", 1)).await,
        Err(KeystoreError::GenerationExists { .. })
    ));
    assert_eq!(sealed(ks.clone()).await, before);
}

#[tokio::test]
async fn shares_and_state_load_after_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (key("key-a"), key("key-b"));
    {
        let ks = open(dir.path()).await;
        ks.stage(&share("key-a", 0)).await.unwrap();
        ks.activate(&a, g(0), b"A0").await.unwrap();
        ks.stage(&share("key-a", 1)).await.unwrap();
        ks.stage(&share("key-b", 3)).await.unwrap();
        ks.save_state(&b, b"B-before-keygen").await.unwrap();
        ks.close().await.unwrap();
    }
    // Closed means unlocked: reopening right away works.
    let ks = open(dir.path()).await;
    let active = ks.load_active(&a).await.unwrap().unwrap();
    assert_eq!((active.key_id(), active.generation()), (&a, g(0)));
    assert_eq!(ks.load_state(&a).await.unwrap().unwrap(), b"A0");
    assert_eq!(ks.generations(&a).await.unwrap(), vec![g(0), g(1)]);
    assert!(ks.load_active(&b).await.unwrap().is_none());
    assert_eq!(ks.generations(&b).await.unwrap(), vec![g(3)]);
    assert_eq!(
        ks.load_state(&b).await.unwrap().unwrap(),
        b"B-before-keygen"
    );
    assert_eq!(ks.list_keys().await.unwrap(), vec![a.clone(), b.clone()]);
    // A wrong passphrase is a typed error, from the thread.
    ks.close().await.unwrap();
    let err = AsyncKeystore::open(dir.path(), Unlock::passphrase("wrong"))
        .await
        .unwrap_err();
    assert!(matches!(err, KeystoreError::WrongPassphrase), "{err:?}");
}

#[tokio::test]
async fn delete_removes_every_generation_and_stores_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let ks = open(dir.path()).await;
    let k = key("pool-key");
    ks.stage(&share("pool-key", 0)).await.unwrap();
    ks.activate(&k, g(0), b"S0").await.unwrap();
    ks.stage(&share("pool-key", 1)).await.unwrap();
    assert!(ks.delete(&k, b"left the pool").await.unwrap());
    assert!(ks.load_active(&k).await.unwrap().is_none());
    assert!(ks.generations(&k).await.unwrap().is_empty());
    assert_eq!(ks.active_generation(&k).await.unwrap(), None);
    assert_eq!(ks.load_state(&k).await.unwrap().unwrap(), b"left the pool");
    assert!(ks.list_keys().await.unwrap().is_empty());
    assert!(!ks.delete(&k, b"still out").await.unwrap());
    assert_eq!(ks.load_state(&k).await.unwrap().unwrap(), b"still out");
    // The key can be created again from keygen.
    ks.stage(&share("pool-key", 0)).await.unwrap();
}

#[tokio::test]
async fn close_on_one_handle_closes_the_store_for_every_clone() {
    let dir = tempfile::tempdir().unwrap();
    let ks = open(dir.path()).await;
    let other = ks.clone();
    ks.close().await.unwrap();
    let err = other.load_state(&key("k")).await.unwrap_err();
    assert!(matches!(err, KeystoreError::Closed), "{err:?}");
    // Closing again is harmless.
    other.close().await.unwrap();
    open(dir.path()).await.close().await.unwrap();
}

#[tokio::test]
async fn dropping_the_last_handle_closes_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let ks = open(dir.path()).await;
    let clone = ks.clone();
    drop(ks);
    // One handle left: still open (and locked).
    clone.save_state(&key("k"), b"x").await.unwrap();
    let err = AsyncKeystore::open(dir.path(), Unlock::passphrase(PASS))
        .await
        .unwrap_err();
    assert!(matches!(err, KeystoreError::Locked { .. }), "{err:?}");
    drop(clone);
    // The thread closes the store a moment after the last drop.
    let deadline = Instant::now() + Duration::from_secs(10);
    let reopened = loop {
        match AsyncKeystore::open_with_kdf(
            dir.path(),
            Unlock::passphrase(PASS),
            KdfParams::insecure_for_tests(),
        )
        .await
        {
            Ok(ks) => break ks,
            Err(KeystoreError::Locked { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Err(e) => panic!("{e:?}"),
        }
    };
    assert_eq!(reopened.load_state(&key("k")).await.unwrap().unwrap(), b"x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_from_many_tasks_are_serialized() {
    let dir = tempfile::tempdir().unwrap();
    let ks = open(dir.path()).await;
    let tasks: Vec<_> = (0..8u64)
        .map(|i| {
            let ks = ks.clone();
            tokio::spawn(async move {
                let id = format!("key-{i}");
                ks.stage(&share(&id, i)).await.unwrap();
                ks.activate(&key(&id), g(i), id.as_bytes()).await.unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    for i in 0..8u64 {
        let id = format!("key-{i}");
        let active = ks.load_active(&key(&id)).await.unwrap().unwrap();
        assert_eq!(active.generation(), g(i));
        assert_eq!(
            ks.load_state(&key(&id)).await.unwrap().unwrap(),
            id.as_bytes()
        );
    }
}

#[tokio::test]
async fn a_panic_in_with_store_reaches_the_caller_and_the_store_stays_open() {
    let dir = tempfile::tempdir().unwrap();
    let ks = open(dir.path()).await;
    let call = ks.clone();
    let panicked = tokio::spawn(async move {
        call.with_store(|_store| -> () { panic!("boom in with_store") })
            .await
    })
    .await
    .unwrap_err();
    assert!(panicked.is_panic());
    ks.save_state(&key("k"), b"still works").await.unwrap();
    assert_eq!(
        ks.load_state(&key("k")).await.unwrap().unwrap(),
        b"still works"
    );
}

#[tokio::test]
async fn works_as_the_pool_layers_share_store() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ShareStore> = Arc::new(open(dir.path()).await);
    let k = key("pool-key");
    store.save_state(&k, b"S-genesis").await.unwrap();
    store.stage(&share("pool-key", 0), b"S0").await.unwrap();
    assert!(store.load_active(&k).await.unwrap().is_none());
    store.activate(&k, g(0), b"S0", None).await.unwrap();
    store.stage(&share("pool-key", 1), b"S1").await.unwrap();
    store.activate(&k, g(1), b"S1", None).await.unwrap();
    // Errors keep their type: downcast to the keystore's.
    let err = store.retire(&k, g(1)).await.unwrap_err();
    assert!(matches!(
        err.downcast_ref::<KeystoreError>(),
        Some(KeystoreError::GenerationActive { .. })
    ));
    let err = store
        .stage(&share("pool-key", 1), b"other")
        .await
        .unwrap_err();
    assert!(matches!(
        err.downcast_ref::<KeystoreError>(),
        Some(KeystoreError::GenerationExists { .. })
    ));
    store.retire(&k, g(0)).await.unwrap();
    store.retire(&k, g(0)).await.unwrap();
    assert_eq!(
        store.load_active(&k).await.unwrap().unwrap().generation(),
        g(1)
    );
    assert_eq!(store.load_state(&k).await.unwrap().unwrap(), b"S1");
    assert!(store.delete(&k, b"gone").await.unwrap());
    assert!(store.load_active(&k).await.unwrap().is_none());
    assert_eq!(store.load_state(&k).await.unwrap().unwrap(), b"gone");
}

fn certificate_for(key_id: &str, generation: u64) -> ReshareCertificate {
    let members: Vec<NodeId> = (1..=2).map(|i| NodeId::from_bytes([i; 32])).collect();
    let committee = tss_core::Committee::new(members, 2).unwrap();
    ReshareCertificate {
        statement: ReshareStatement {
            eid: tss_core::ExecutionId::from_bytes([5; 32]),
            key_id: key(key_id),
            generation: g(generation),
            public_key: vec![2; 33],
            new_committee: committee,
            threshold: 2,
            commitments_digest: [6; 32],
            public_info_digest: [7; 32],
        },
        signatures: vec![IdentitySignature::from_bytes(vec![8; 64]); 2],
    }
}

#[tokio::test]
async fn a_pending_generation_and_its_certificate_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let k = key("pending-key");
    let certificate = certificate_for("pending-key", 1);
    {
        let ks = open(dir.path()).await;
        let store: &dyn ShareStore = &ks;
        store.stage(&share("pending-key", 0), b"S0").await.unwrap();
        store.activate(&k, g(0), b"S0", None).await.unwrap();
        store
            .stage(&share("pending-key", 1), b"S1 pending")
            .await
            .unwrap();
        // Staging never overwrites a pending generation.
        assert!(store
            .stage(&share("pending-key", 1), b"other")
            .await
            .is_err());
        // Closed before the reopen (dropping the handle releases the lock on the store's
        // own thread, a moment later).
        ks.close().await.unwrap();
    }
    let ks = open(dir.path()).await;
    let store: &dyn ShareStore = &ks;
    let pending = store.load_pending(&k).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].share.generation(), g(1));
    assert_eq!(pending[0].state, b"S1 pending");
    assert!(pending[0].certificate.is_none());
    assert_eq!(
        store.load_active(&k).await.unwrap().unwrap().generation(),
        g(0)
    );
    assert!(store.load_certificate(&k, g(1)).await.unwrap().is_none());

    store
        .activate(&k, g(1), b"S1", Some(&certificate))
        .await
        .unwrap();
    ks.close().await.unwrap();
    let ks = open(dir.path()).await;
    let store: &dyn ShareStore = &ks;
    assert!(store.load_pending(&k).await.unwrap().is_empty());
    assert_eq!(
        store.load_active(&k).await.unwrap().unwrap().generation(),
        g(1)
    );
    assert_eq!(
        store.load_certificate(&k, g(1)).await.unwrap(),
        Some(certificate)
    );
    // Retired with its generation.
    store.retire(&k, g(0)).await.unwrap();
    assert!(store.delete(&k, b"gone").await.unwrap());
    assert!(store.load_certificate(&k, g(1)).await.unwrap().is_none());
}

/// Bans stored with a generation (the pool layer's `MemberBanned`) survive closing and
/// reopening the store, belong to that generation only, cannot be stored for a
/// generation that does not exist, and are deleted with their generation.
#[tokio::test]
async fn bans_survive_a_reopen_and_go_with_their_generation() {
    let dir = tempfile::tempdir().unwrap();
    let k = key("banned-key");
    let (a, b) = (NodeId::from_bytes([1; 32]), NodeId::from_bytes([2; 32]));
    {
        let ks = open(dir.path()).await;
        let store: &dyn ShareStore = &ks;
        store.stage(&share("banned-key", 0), b"S0").await.unwrap();
        store.activate(&k, g(0), b"S0", None).await.unwrap();
        store.stage(&share("banned-key", 1), b"S1").await.unwrap();
        assert!(store.load_bans(&k, g(0)).await.unwrap().is_empty());
        store
            .save_bans(&k, g(0), &[a].into_iter().collect())
            .await
            .unwrap();
        // A second ban replaces the set with the larger one.
        store
            .save_bans(&k, g(0), &[a, b].into_iter().collect())
            .await
            .unwrap();
        let missing = store
            .save_bans(&k, g(7), &[a].into_iter().collect())
            .await
            .expect_err("no generation 7");
        assert!(
            matches!(
                missing.downcast_ref::<KeystoreError>(),
                Some(KeystoreError::UnknownGeneration { .. })
            ),
            "{missing}"
        );
        ks.close().await.unwrap();
    }
    let ks = open(dir.path()).await;
    let store: &dyn ShareStore = &ks;
    assert_eq!(
        store.load_bans(&k, g(0)).await.unwrap(),
        [a, b].into_iter().collect()
    );
    assert!(store.load_bans(&k, g(1)).await.unwrap().is_empty());
    store.activate(&k, g(1), b"S1", None).await.unwrap();
    store.retire(&k, g(0)).await.unwrap();
    let gone = store.load_bans(&k, g(0)).await.expect_err("retired");
    assert!(
        matches!(
            gone.downcast_ref::<KeystoreError>(),
            Some(KeystoreError::UnknownGeneration { .. })
        ),
        "{gone}"
    );
    // Deleted with the key's generations: a generation stored again under the same
    // number starts without bans.
    store
        .save_bans(&k, g(1), &[b].into_iter().collect())
        .await
        .unwrap();
    assert!(store.delete(&k, b"gone").await.unwrap());
    store
        .stage(&share("banned-key", 1), b"again")
        .await
        .unwrap();
    assert!(
        store.load_bans(&k, g(1)).await.unwrap().is_empty(),
        "the bans went with the deleted generation"
    );
}
