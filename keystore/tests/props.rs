//! Property tests: whatever records, key names and generations go into a keystore come
//! back out, unchanged, after a close and re-open, and each generation sees only its own
//! records. Failing cases are kept in `tests/props.proptest-regressions` (commit it) and
//! replayed first on every later run.

use std::collections::{BTreeMap, BTreeSet};

use keystore::{
    Generation, GenerationRecords, KdfParams, KeyId, Keystore, KeystoreError, RecordName,
    SecretBytes, Unlock,
};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

fn unlock() -> Unlock {
    Unlock::passphrase("property test passphrase")
}

fn open(dir: &std::path::Path) -> Keystore {
    Keystore::open_with_kdf(dir, &unlock(), KdfParams::insecure_for_tests()).unwrap()
}

/// Key ids: 1 to 128 of `[A-Za-z0-9_.:-]` (every valid id).
fn key_id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.:-]{1,128}"
}

/// Record names: 1 to 64 of `[a-z0-9_-]` (every valid name).
fn record_name() -> impl Strategy<Value = String> {
    "[a-z0-9_-]{1,64}"
}

/// 1 to 4 records of 0 to 4 KiB.
fn records() -> impl Strategy<Value = BTreeMap<String, Vec<u8>>> {
    prop::collection::btree_map(
        record_name(),
        prop::collection::vec(any::<u8>(), 0..4096),
        1..4,
    )
}

/// 1 to 3 keys, each with 1 to 3 distinct generations (any u64) and their records.
#[allow(clippy::type_complexity)]
fn contents() -> impl Strategy<Value = BTreeMap<String, BTreeMap<u64, BTreeMap<String, Vec<u8>>>>> {
    prop::collection::btree_map(
        key_id(),
        prop::collection::btree_map(any::<u64>(), records(), 1..3),
        1..3,
    )
}

fn to_records(recs: &BTreeMap<String, Vec<u8>>) -> GenerationRecords {
    let mut out = GenerationRecords::new();
    for (name, bytes) in recs {
        out.insert(
            RecordName::new(name.as_str()).unwrap(),
            SecretBytes::new(bytes.clone()),
        );
    }
    out
}

fn check_equal(got: &GenerationRecords, want: &BTreeMap<String, Vec<u8>>) {
    let names: Vec<&str> = got.names().map(|n| n.as_str()).collect();
    let want_names: Vec<&str> = want.keys().map(String::as_str).collect();
    assert_eq!(names, want_names);
    for (name, bytes) in want {
        assert_eq!(
            got.get(name).unwrap().expose(),
            bytes.as_slice(),
            "record {name}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn records_round_trip_through_close_and_reopen(contents in contents()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        {
            let mut store = open(&path);
            for (key, generations) in &contents {
                let key = KeyId::new(key.as_str()).unwrap();
                for (g, recs) in generations {
                    store.put_generation(&key, Generation(*g), &to_records(recs)).unwrap();
                    // Write-once.
                    let again = store.put_generation(&key, Generation(*g), &to_records(recs));
                    let refused = matches!(again, Err(KeystoreError::GenerationExists { .. }));
                    prop_assert!(refused, "a generation was written twice");
                }
                // The newest generation becomes the active one.
                let newest = *generations.keys().next_back().unwrap();
                store.activate(&key, Generation(newest)).unwrap();
            }
            store.close().unwrap();
        }
        let mut store = open(&path);
        let keys: BTreeSet<String> =
            store.list_keys().unwrap().iter().map(|k| k.as_str().to_owned()).collect();
        prop_assert_eq!(keys, contents.keys().cloned().collect::<BTreeSet<_>>());
        for (key, generations) in &contents {
            let key = KeyId::new(key.as_str()).unwrap();
            let stored: Vec<u64> = store.generations(&key).unwrap().iter().map(|g| g.0).collect();
            prop_assert_eq!(stored, generations.keys().copied().collect::<Vec<_>>());
            for (g, recs) in generations {
                check_equal(&store.load(&key, Generation(*g)).unwrap(), recs);
            }
            let (active, recs) = store.load_active(&key).unwrap();
            let (newest, want) = generations.iter().next_back().unwrap();
            prop_assert_eq!(active.0, *newest);
            check_equal(&recs, want);
        }
        // A generation that was never written is not there.
        let (key, generations) = contents.iter().next().unwrap();
        if let Some(missing) = (0..).find(|g| !generations.contains_key(g)) {
            prop_assert!(store.load(&KeyId::new(key.as_str()).unwrap(), Generation(missing)).is_err());
        }
    }

    #[test]
    fn invalid_key_and_record_names_are_refused(
        name in prop_oneof!["[A-Za-z0-9_.:/ -]{0,140}", "[a-z0-9_-]{60,70}", "\\PC{0,140}"]
    ) {
        let valid_key = !name.is_empty() && name.len() <= 128
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
        prop_assert_eq!(KeyId::new(name.as_str()).is_ok(), valid_key);
        let valid_record = !name.is_empty() && name.len() <= 64
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-".contains(&b));
        prop_assert_eq!(RecordName::new(name.as_str()).is_ok(), valid_record);
    }
}
