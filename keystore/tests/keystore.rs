//! End-to-end behaviour of the keystore on a real directory.

use std::path::{Path, PathBuf};

use keystore::{
    Generation, GenerationRecords, KdfParams, KeyId, Keystore, KeystoreError, RecordName,
    SecretBytes, Unlock,
};
use rand_core::{OsRng, RngCore};

const PASS: &str = "operator passphrase for tests";

fn unlock() -> Unlock {
    Unlock::passphrase(PASS)
}

fn open(dir: &Path) -> Keystore {
    Keystore::open_with_kdf(dir, &unlock(), KdfParams::insecure_for_tests()).unwrap()
}

fn key(id: &str) -> KeyId {
    KeyId::new(id).unwrap()
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    OsRng.fill_bytes(&mut v);
    v
}

fn records(share: &[u8], aux: &[u8]) -> GenerationRecords {
    GenerationRecords::share_and_aux(SecretBytes::from_slice(share), SecretBytes::from_slice(aux))
}

/// Every regular file below `dir`, recursively.
fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(all_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Files below `dir` that contain `needle` anywhere.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    all_files(dir)
        .into_iter()
        .filter(|p| {
            let data = std::fs::read(p).unwrap();
            data.windows(needle.len()).any(|w| w == needle)
        })
        .collect()
}

#[test]
fn deleted_key_is_unrecoverable_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (doomed, kept) = (key("doomed"), key("kept"));
    let doomed_share = random_bytes(64);
    let ciphertexts;
    {
        let mut ks = open(dir.path());
        ks.put_generation(&doomed, Generation(1), &records(&doomed_share, b"aux-1"))
            .unwrap();
        ks.activate(&doomed, Generation(1)).unwrap();
        ks.put_generation(
            &doomed,
            Generation(2),
            &records(&random_bytes(64), b"aux-2"),
        )
        .unwrap();
        ks.put_generation(&kept, Generation(1), &records(b"kept share", b"kept aux"))
            .unwrap();
        ks.activate(&kept, Generation(1)).unwrap();
        ks.close().unwrap();
    }
    {
        // Reopen once so the records also live in table files, not just the log.
        let mut ks = open(dir.path());
        let mut cts = Vec::new();
        for g in [1, 2] {
            for name in [RecordName::KEY_SHARE, RecordName::AUX_INFO] {
                let sealed = ks
                    .sealed_record(&doomed, Generation(g), &RecordName::new(name).unwrap())
                    .unwrap();
                // Skip version byte and nonce: look for the ciphertext body.
                cts.push(sealed[13..].to_vec());
            }
        }
        for ct in &cts {
            assert!(
                !files_containing(dir.path(), ct).is_empty(),
                "sanity: ciphertext is on disk before deletion"
            );
        }
        ciphertexts = cts;
        ks.delete_key(&doomed).unwrap();
        assert!(
            matches!(ks.load_active(&doomed), Err(KeystoreError::UnknownKey(k)) if k == doomed)
        );
        for ct in &ciphertexts {
            assert_eq!(
                files_containing(dir.path(), ct),
                Vec::<PathBuf>::new(),
                "right after delete_key"
            );
        }
        ks.close().unwrap();
    }
    let mut ks = open(dir.path());
    assert!(matches!(
        ks.load(&doomed, Generation(1)),
        Err(KeystoreError::UnknownKey(_))
    ));
    assert!(matches!(
        ks.generations(&doomed),
        Err(KeystoreError::UnknownKey(_))
    ));
    assert_eq!(ks.list_keys().unwrap(), vec![kept.clone()]);
    for ct in &ciphertexts {
        assert_eq!(
            files_containing(dir.path(), ct),
            Vec::<PathBuf>::new(),
            "after reopen"
        );
    }
    let (_, kept_recs) = ks.load_active(&kept).unwrap();
    assert_eq!(kept_recs.key_share().unwrap().expose(), b"kept share");
}

#[test]
fn stored_generation_round_trips_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let id = key("rollup-sequencer");
    let share = random_bytes(1000);
    let aux = random_bytes(5000);
    {
        let mut ks = open(dir.path());
        let mut recs = records(&share, &aux);
        recs.insert(
            RecordName::new("extra-1").unwrap(),
            SecretBytes::new(vec![]),
        );
        ks.put_generation(&id, Generation(7), &recs).unwrap();
        ks.activate(&id, Generation(7)).unwrap();
        ks.close().unwrap();
    }
    // Reopening with the default KdfParams must use the stored (cheap) ones.
    let mut ks = Keystore::open(dir.path(), &unlock()).unwrap();
    assert_eq!(ks.list_keys().unwrap(), vec![id.clone()]);
    assert_eq!(ks.generations(&id).unwrap(), vec![Generation(7)]);
    assert_eq!(ks.active_generation(&id).unwrap(), Some(Generation(7)));
    let (g, loaded) = ks.load_active(&id).unwrap();
    assert_eq!(g, Generation(7));
    assert_eq!(loaded.len(), 3);
    assert_eq!(loaded.key_share().unwrap().expose(), &share[..]);
    assert_eq!(loaded.aux_info().unwrap().expose(), &aux[..]);
    assert!(loaded.get("extra-1").unwrap().is_empty());
}

#[test]
fn no_plaintext_share_bytes_appear_in_any_store_file() {
    let dir = tempfile::tempdir().unwrap();
    let share = random_bytes(64);
    let aux = random_bytes(64);
    let id = key("k1");
    let check = |when: &str| {
        for secret in [&share, &aux] {
            for window in std::iter::once(&secret[..]).chain(secret.chunks(16)) {
                assert_eq!(
                    files_containing(dir.path(), window),
                    Vec::<PathBuf>::new(),
                    "plaintext found on disk {when}"
                );
            }
        }
    };
    {
        let mut ks = open(dir.path());
        ks.put_generation(&id, Generation(1), &records(&share, &aux))
            .unwrap();
        ks.activate(&id, Generation(1)).unwrap();
        check("while open (write-ahead log)");
        ks.close().unwrap();
    }
    check("after close");
    let mut ks = open(dir.path()); // moves the log into a table file
    check("after reopen (table files)");
    assert_eq!(
        ks.load_active(&id).unwrap().1.key_share().unwrap().expose(),
        &share[..]
    );
    assert!(
        all_files(dir.path()).len() >= 3,
        "sanity: scanned the store's files"
    );
}

#[test]
fn wrong_passphrase_is_rejected_with_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let id = key("k");
    {
        let mut ks = open(dir.path());
        ks.put_generation(&id, Generation(1), &records(b"s", b"a"))
            .unwrap();
        ks.activate(&id, Generation(1)).unwrap();
    }
    let err = Keystore::open(dir.path(), &Unlock::passphrase("not the passphrase")).unwrap_err();
    assert!(matches!(err, KeystoreError::WrongPassphrase), "{err:?}");
    assert!(!err.to_string().contains("not the passphrase"));
    // Nothing was lost by the failed attempt.
    let mut ks = open(dir.path());
    assert_eq!(
        ks.load_active(&id).unwrap().1.key_share().unwrap().expose(),
        b"s"
    );
}

#[test]
fn key_file_unlocks_and_wrong_or_malformed_key_file_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let kf = dir.path().join("master.key");
    keystore::generate_key_file(&kf).unwrap();
    assert!(
        matches!(
            keystore::generate_key_file(&kf),
            Err(KeystoreError::Io { .. })
        ),
        "an existing key file is never overwritten"
    );
    let id = key("k");
    {
        let mut ks = Keystore::open(&store, &Unlock::key_file(&kf)).unwrap();
        ks.put_generation(&id, Generation(1), &records(b"share", b"aux"))
            .unwrap();
    }
    // The same key as 32 raw bytes unlocks too.
    let hex_text = std::fs::read_to_string(&kf).unwrap();
    let raw = dir.path().join("raw.key");
    std::fs::write(&raw, hex::decode(hex_text.trim()).unwrap()).unwrap();
    let mut ks = Keystore::open(&store, &Unlock::key_file(&raw)).unwrap();
    assert_eq!(
        ks.load(&id, Generation(1))
            .unwrap()
            .key_share()
            .unwrap()
            .expose(),
        b"share"
    );
    drop(ks);

    let other = dir.path().join("other.key");
    keystore::generate_key_file(&other).unwrap();
    let err = Keystore::open(&store, &Unlock::key_file(&other)).unwrap_err();
    assert!(
        matches!(err, KeystoreError::WrongKeyFile { ref path } if path == &other),
        "{err:?}"
    );

    let bad = dir.path().join("bad.key");
    std::fs::write(&bad, b"too short").unwrap();
    let err = Keystore::open(&store, &Unlock::key_file(&bad)).unwrap_err();
    assert!(
        matches!(err, KeystoreError::InvalidKeyFile { .. }),
        "{err:?}"
    );

    let err = Keystore::open(&store, &unlock()).unwrap_err();
    assert!(
        matches!(
            err,
            KeystoreError::UnlockMethodMismatch {
                store: keystore::UnlockMethod::KeyFile,
                given: keystore::UnlockMethod::Passphrase
            }
        ),
        "{err:?}"
    );
}

#[test]
fn second_handle_in_same_process_gets_locked_error() {
    let dir = tempfile::tempdir().unwrap();
    let ks = open(dir.path());
    let err = Keystore::open(dir.path(), &unlock()).unwrap_err();
    assert!(
        matches!(err, KeystoreError::Locked { ref path } if path.ends_with(keystore::LOCK_FILE_NAME)),
        "{err:?}"
    );
    drop(ks);
    open(dir.path()); // released on drop
}

#[test]
fn generation_switch_is_explicit_and_old_generation_stays_loadable() {
    let dir = tempfile::tempdir().unwrap();
    let id = key("k");
    let mut ks = open(dir.path());
    ks.put_generation(&id, Generation(1), &records(b"old share", b"old aux"))
        .unwrap();
    assert_eq!(
        ks.active_generation(&id).unwrap(),
        None,
        "new generations are inactive"
    );
    assert!(matches!(
        ks.load_active(&id),
        Err(KeystoreError::NoActiveGeneration(_))
    ));
    ks.activate(&id, Generation(1)).unwrap();
    ks.put_generation(&id, Generation(2), &records(b"new share", b"new aux"))
        .unwrap();
    assert_eq!(ks.active_generation(&id).unwrap(), Some(Generation(1)));
    ks.activate(&id, Generation(2)).unwrap();
    assert_eq!(
        ks.load_active(&id).unwrap().1.key_share().unwrap().expose(),
        b"new share"
    );
    assert_eq!(
        ks.load(&id, Generation(1))
            .unwrap()
            .key_share()
            .unwrap()
            .expose(),
        b"old share"
    );
    assert_eq!(
        ks.generations(&id).unwrap(),
        vec![Generation(1), Generation(2)]
    );
}

#[test]
fn generations_are_write_once_and_bad_input_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let id = key("k");
    let mut ks = open(dir.path());
    ks.put_generation(&id, Generation(1), &records(b"original", b"aux"))
        .unwrap();
    let err = ks
        .put_generation(&id, Generation(1), &records(b"overwrite", b"aux"))
        .unwrap_err();
    assert!(matches!(
        err,
        KeystoreError::GenerationExists {
            generation: Generation(1),
            ..
        }
    ));
    assert!(matches!(
        ks.put_generation(&id, Generation(2), &GenerationRecords::new()),
        Err(KeystoreError::EmptyGeneration)
    ));
    // Key ids are tss-core's; their error converts into the keystore's typed one.
    assert!(matches!(
        KeyId::new("a/b").map_err(KeystoreError::from),
        Err(KeystoreError::InvalidKeyId(
            tss_core::TssError::InvalidKeyId { .. }
        ))
    ));
    assert!(matches!(
        KeyId::new("x".repeat(129)).map_err(KeystoreError::from),
        Err(KeystoreError::InvalidKeyId(_))
    ));
    assert!(matches!(
        RecordName::new("Key Share"),
        Err(KeystoreError::InvalidRecordName { .. })
    ));
    assert!(matches!(
        ks.activate(&id, Generation(9)),
        Err(KeystoreError::UnknownGeneration {
            generation: Generation(9),
            ..
        })
    ));
    assert_eq!(ks.generations(&id).unwrap(), vec![Generation(1)]);
    assert_eq!(
        ks.load(&id, Generation(1))
            .unwrap()
            .key_share()
            .unwrap()
            .expose(),
        b"original"
    );
}

#[test]
fn unknown_keys_and_generations_give_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut ks = open(dir.path());
    let ghost = key("ghost");
    assert!(
        matches!(ks.load(&ghost, Generation(1)), Err(KeystoreError::UnknownKey(ref k)) if k == &ghost)
    );
    assert!(matches!(
        ks.load_active(&ghost),
        Err(KeystoreError::UnknownKey(_))
    ));
    assert!(matches!(
        ks.active_generation(&ghost),
        Err(KeystoreError::UnknownKey(_))
    ));
    assert!(matches!(
        ks.generations(&ghost),
        Err(KeystoreError::UnknownKey(_))
    ));
    assert!(matches!(
        ks.delete_key(&ghost),
        Err(KeystoreError::UnknownKey(_))
    ));
    assert!(matches!(
        ks.activate(&ghost, Generation(1)),
        Err(KeystoreError::UnknownKey(_))
    ));
    // "ghost" must not match a key whose id merely starts with it.
    ks.put_generation(&key("ghost2"), Generation(1), &records(b"s", b"a"))
        .unwrap();
    assert!(matches!(
        ks.generations(&ghost),
        Err(KeystoreError::UnknownKey(_))
    ));
    assert!(matches!(
        ks.load(&key("ghost2"), Generation(2)),
        Err(KeystoreError::UnknownGeneration {
            generation: Generation(2),
            ..
        })
    ));
}

#[test]
fn retired_generation_is_gone_from_disk_and_active_one_cannot_be_retired() {
    let dir = tempfile::tempdir().unwrap();
    let id = key("k");
    let mut ks = open(dir.path());
    ks.put_generation(&id, Generation(1), &records(&random_bytes(64), b"a1"))
        .unwrap();
    ks.activate(&id, Generation(1)).unwrap();
    ks.put_generation(&id, Generation(2), &records(b"reshared", b"a2"))
        .unwrap();
    let share_name = RecordName::new(RecordName::KEY_SHARE).unwrap();
    let old_ct = ks.sealed_record(&id, Generation(1), &share_name).unwrap()[13..].to_vec();
    assert!(matches!(
        ks.retire_generation(&id, Generation(1)),
        Err(KeystoreError::GenerationActive {
            generation: Generation(1),
            ..
        })
    ));
    ks.activate(&id, Generation(2)).unwrap();
    ks.retire_generation(&id, Generation(1)).unwrap();
    assert_eq!(ks.generations(&id).unwrap(), vec![Generation(2)]);
    assert!(matches!(
        ks.load(&id, Generation(1)),
        Err(KeystoreError::UnknownGeneration { .. })
    ));
    assert_eq!(files_containing(dir.path(), &old_ct), Vec::<PathBuf>::new());
    ks.close().unwrap();
    let mut ks = open(dir.path());
    assert_eq!(
        ks.load_active(&id).unwrap().1.key_share().unwrap().expose(),
        b"reshared"
    );
    assert_eq!(files_containing(dir.path(), &old_ct), Vec::<PathBuf>::new());
}

/// CRC-32C (Castagnoli), bit by bit.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Recomputes the checksum of the LevelDB table block holding only the entry for
/// `user_key` whose value is `data[value_pos..value_pos + value_len]`, uncompressed:
/// `entry (shared 0, key length, value length varints | internal key | value) |
/// restart array (u32 0, u32 count 1) | compression (1) | masked CRC-32C (4, LE)`.
/// `flipped` is the offset in the value of the bit flipped (`0x01`), for a sanity check.
fn fix_block_crc(
    data: &mut [u8],
    value_pos: usize,
    value_len: usize,
    flipped: usize,
    user_key: &[u8],
) {
    let key_start = value_pos - 8 - user_key.len(); // internal key = user key | 8-byte tag
    assert_eq!(&data[key_start..key_start + user_key.len()], user_key);
    let varints = 1 + 1 + if value_len < 1 << 14 { 2 } else { 3 };
    let block_start = key_start - varints;
    assert_eq!(data[block_start], 0, "sanity: first entry of its block");
    let trailer = value_pos + value_len + 8;
    assert_eq!(&data[trailer - 8..trailer], &[0, 0, 0, 0, 1, 0, 0, 0]);
    assert_eq!(data[trailer], 0, "sanity: uncompressed block");
    let mask = |c: u32| c.rotate_right(15).wrapping_add(0xa282_ead8);
    // Sanity: with the flipped bit undone, this is the stored checksum.
    data[value_pos + flipped] ^= 0x01;
    let stored = &data[trailer + 1..trailer + 5];
    assert_eq!(
        stored,
        mask(crc32c(&data[block_start..=trailer])).to_le_bytes()
    );
    data[value_pos + flipped] ^= 0x01;
    let crc = mask(crc32c(&data[block_start..=trailer]));
    data[trailer + 1..trailer + 5].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn byte_flipped_on_disk_is_detected_and_other_keys_survive() {
    let dir = tempfile::tempdir().unwrap();
    let (victim, bystander) = (key("victim"), key("bystander"));
    let share_name = RecordName::new(RecordName::KEY_SHARE).unwrap();
    let ct;
    {
        let mut ks = open(dir.path());
        // Large records so each sits in its own LevelDB block.
        ks.put_generation(
            &bystander,
            Generation(1),
            &records(&[7u8; 6000], &[8u8; 6000]),
        )
        .unwrap();
        ks.activate(&bystander, Generation(1)).unwrap();
        ks.put_generation(&victim, Generation(1), &records(&[1u8; 6000], &[2u8; 6000]))
            .unwrap();
        ks.activate(&victim, Generation(1)).unwrap();
        ct = ks
            .sealed_record(&victim, Generation(1), &share_name)
            .unwrap();
    }
    drop(open(dir.path())); // move everything into table files
    let mut hits = 0;
    for f in all_files(dir.path()) {
        let mut data = std::fs::read(&f).unwrap();
        if let Some(pos) = data.windows(ct.len()).position(|w| w == ct) {
            data[pos + 3000] ^= 0x01; // one bit in the middle of the ciphertext
                                      // LevelDB checks each table block's CRC when it reads it, and would report
                                      // the block unreadable (the record missing) before AES-GCM sees anything.
                                      // Fix the CRC up, as an attacker (or a subtler corruption) would, so it is the
                                      // authentication of the value itself that must catch the change.
            let user_key = b"k/victim/g/00000000000000000001/r/key_share";
            fix_block_crc(&mut data, pos, ct.len(), 3000, user_key);
            std::fs::write(&f, &data).unwrap();
            hits += 1;
        }
    }
    assert_eq!(hits, 1, "sanity: the record is stored in exactly one file");

    let mut ks = open(dir.path());
    let err = ks.load(&victim, Generation(1)).unwrap_err();
    // The value reached the store (its block checksum is valid), and AES-GCM
    // authentication caught the flipped bit: never wrong plaintext.
    assert!(
        matches!(
            &err,
            KeystoreError::Tampered { key_id, generation: Generation(1), record }
                if key_id == &victim && record == "key_share"
        ),
        "{err:?}"
    );
    let (_, recs) = ks.load_active(&bystander).unwrap();
    assert_eq!(recs.key_share().unwrap().expose(), &[7u8; 6000][..]);
    assert_eq!(recs.aux_info().unwrap().expose(), &[8u8; 6000][..]);
}

#[test]
fn secrets_are_redacted_in_debug_output() {
    let dir = tempfile::tempdir().unwrap();
    let unlock = Unlock::passphrase("hunter2-hunter2");
    let mut ks =
        Keystore::open_with_kdf(dir.path(), &unlock, KdfParams::insecure_for_tests()).unwrap();
    let id = key("k");
    ks.put_generation(&id, Generation(1), &records(b"SECRETSHARE", b"SECRETAUX"))
        .unwrap();
    let recs = ks.load(&id, Generation(1)).unwrap();
    let rendered = format!(
        "{unlock:?} {ks:?} {recs:?} {:?} {:#?}",
        recs.key_share().unwrap(),
        recs
    );
    for secret in ["hunter2", "SECRET", "83, 69, 67"] {
        assert!(!rendered.contains(secret), "{secret} leaked in {rendered}");
    }
    assert!(rendered.contains("REDACTED"));
}

// ---------------------------------------------------------------------------
#[test]
fn default_kdf_params_are_the_documented_secure_ones_and_limits_are_enforced() {
    let d = KdfParams::default();
    assert_eq!(
        (d.memory_kib, d.iterations, d.parallelism),
        (64 * 1024, 3, 1)
    );
    d.validate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let too_big = KdfParams {
        memory_kib: u32::MAX,
        ..d
    };
    let err = Keystore::open_with_kdf(dir.path(), &unlock(), too_big).unwrap_err();
    assert!(matches!(err, KeystoreError::InvalidKdfParams(_)), "{err:?}");
    // The failed creation left nothing behind that blocks a proper one.
    open(dir.path());
}

#[test]
fn generation_zero_from_keygen_is_stored_activated_and_listed() {
    let dir = tempfile::tempdir().unwrap();
    let id = key("fresh-from-keygen");
    let mut ks = open(dir.path());
    ks.put_generation(&id, Generation::KEYGEN, &records(b"g0 share", b"g0 aux"))
        .unwrap();
    ks.activate(&id, Generation::KEYGEN).unwrap();
    ks.put_generation(&id, Generation::KEYGEN.next(), &records(b"g1", b"a1"))
        .unwrap();
    ks.close().unwrap();
    let mut ks = open(dir.path());
    assert_eq!(
        ks.generations(&id).unwrap(),
        vec![Generation(0), Generation(1)]
    );
    let (g, recs) = ks.load_active(&id).unwrap();
    assert_eq!(g, Generation::KEYGEN);
    assert_eq!(recs.key_share().unwrap().expose(), b"g0 share");
}

#[test]
fn activate_with_state_switches_pointer_and_state_together_and_activate_keeps_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (key("a"), key("b"));
    {
        let mut ks = open(dir.path());
        assert_eq!(ks.load_state(&a).unwrap(), None);
        ks.put_generation(&a, Generation(0), &records(b"a0", b"x"))
            .unwrap();
        ks.put_generation(&a, Generation(1), &records(b"a1", b"x"))
            .unwrap();
        ks.activate_with_state(&a, Generation(0), b"S0").unwrap();
        assert_eq!(ks.load_state(&a).unwrap().unwrap(), b"S0");
        ks.activate_with_state(&a, Generation(1), b"S1").unwrap();
        assert_eq!(ks.active_generation(&a).unwrap(), Some(Generation(1)));
        assert_eq!(ks.load_state(&a).unwrap().unwrap(), b"S1");
        // A failed activation changes neither.
        assert!(matches!(
            ks.activate_with_state(&a, Generation(7), b"S7"),
            Err(KeystoreError::UnknownGeneration { .. })
        ));
        assert_eq!(ks.active_generation(&a).unwrap(), Some(Generation(1)));
        assert_eq!(ks.load_state(&a).unwrap().unwrap(), b"S1");
        // `activate` alone leaves the state as it is; `save_state` alone the pointer.
        ks.activate(&a, Generation(0)).unwrap();
        assert_eq!(ks.load_state(&a).unwrap().unwrap(), b"S1");
        ks.save_state(&a, b"S1'").unwrap();
        assert_eq!(ks.active_generation(&a).unwrap(), Some(Generation(0)));
        // Any key may have a state, with no generation; it is not listed as a key.
        ks.save_state(&b, b"").unwrap();
        assert_eq!(ks.list_keys().unwrap(), vec![a.clone()]);
        assert!(matches!(
            ks.generations(&b),
            Err(KeystoreError::UnknownKey(_))
        ));
        ks.close().unwrap();
    }
    let mut ks = open(dir.path());
    assert_eq!(ks.load_state(&a).unwrap().unwrap(), b"S1'");
    assert_eq!(ks.load_state(&b).unwrap().unwrap(), b"");
    assert_eq!(ks.active_generation(&a).unwrap(), Some(Generation(0)));
}

#[test]
fn state_is_encrypted_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let id = key("k");
    let state = b"pool members: alice, bob, carol; l1 height 19000000".to_vec();
    {
        let mut ks = open(dir.path());
        ks.put_generation(&id, Generation(0), &records(b"s", b"a"))
            .unwrap();
        ks.activate_with_state(&id, Generation(0), &state).unwrap();
        assert_eq!(
            files_containing(dir.path(), b"pool members"),
            Vec::<PathBuf>::new()
        );
        ks.close().unwrap();
    }
    let mut ks = open(dir.path()); // the log becomes a table file
    assert_eq!(
        files_containing(dir.path(), b"pool members"),
        Vec::<PathBuf>::new()
    );
    assert_eq!(ks.load_state(&id).unwrap().unwrap(), state);
}

#[test]
fn delete_key_with_state_removes_the_generations_and_replaces_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let (gone, kept) = (key("gone"), key("kept"));
    let mut ks = open(dir.path());
    let share = random_bytes(64);
    ks.put_generation(&gone, Generation(0), &records(&share, b"aux"))
        .unwrap();
    ks.activate_with_state(&gone, Generation(0), b"member")
        .unwrap();
    ks.put_generation(&kept, Generation(0), &records(b"k", b"aux"))
        .unwrap();
    ks.activate_with_state(&kept, Generation(0), b"kept state")
        .unwrap();
    let ct = ks
        .sealed_record(
            &gone,
            Generation(0),
            &RecordName::new(RecordName::KEY_SHARE).unwrap(),
        )
        .unwrap()[13..]
        .to_vec();
    assert!(ks.delete_key_with_state(&gone, b"left the pool").unwrap());
    assert!(matches!(
        ks.load_active(&gone),
        Err(KeystoreError::UnknownKey(_))
    ));
    assert_eq!(ks.load_state(&gone).unwrap().unwrap(), b"left the pool");
    assert_eq!(files_containing(dir.path(), &ct), Vec::<PathBuf>::new());
    // Nothing left to delete: only the state is written.
    assert!(!ks.delete_key_with_state(&gone, b"again").unwrap());
    assert_eq!(ks.load_state(&gone).unwrap().unwrap(), b"again");
    // `delete_key` keeps the state.
    ks.delete_key(&kept).unwrap();
    assert_eq!(ks.load_state(&kept).unwrap().unwrap(), b"kept state");
    ks.compact().unwrap();
    assert_eq!(ks.load_state(&kept).unwrap().unwrap(), b"kept state");
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[cfg(unix)]
fn assert_private(dir: &Path) {
    assert_eq!(format!("{:o}", mode(dir)), "700", "{}", dir.display());
    let files = all_files(dir);
    assert!(files.len() >= 4, "sanity: {files:?}");
    for f in files {
        assert_eq!(format!("{:o}", mode(&f)), "600", "{}", f.display());
    }
}

#[cfg(unix)]
#[test]
fn store_directory_is_0700_and_every_file_in_it_0600() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("node").join("keystore");
    let id = key("k");
    {
        let mut ks = open(&dir);
        assert_eq!(format!("{:o}", mode(&root.path().join("node"))), "700");
        assert_private(&dir);
        ks.put_generation(&id, Generation(0), &records(b"s0", b"a0"))
            .unwrap();
        ks.activate_with_state(&id, Generation(0), b"S0").unwrap();
        ks.put_generation(&id, Generation(1), &records(b"s1", b"a1"))
            .unwrap();
        ks.activate_with_state(&id, Generation(1), b"S1").unwrap();
        // Retiring compacts: new table files, a new log, a new MANIFEST.
        ks.retire_generation(&id, Generation(0)).unwrap();
        assert_private(&dir);
        ks.close().unwrap();
    }
    drop(open(&dir)); // recovery writes a table and a new log
    assert_private(&dir);
}

#[cfg(unix)]
#[test]
fn an_existing_store_with_wider_permissions_is_tightened_on_open() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let id = key("k");
    {
        let mut ks = open(dir.path());
        ks.put_generation(&id, Generation(0), &records(b"s0", b"a0"))
            .unwrap();
        ks.close().unwrap();
    }
    // As a store written before the permission rule (or by a wide umask) may be.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for f in all_files(dir.path()) {
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let mut ks = open(dir.path());
    assert_private(dir.path());
    assert!(ks.load(&id, Generation(0)).is_ok());
}

#[test]
fn a_crash_between_commit_and_high_water_mark_does_not_brick_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let id = key("k");
    let marks = dir.path().join(keystore::VERSIONS_FILE_NAME);
    let before;
    {
        let mut ks = open(dir.path());
        ks.put_generation(&id, Generation(0), &records(b"s0", b"a0"))
            .unwrap();
        ks.put_generation(&id, Generation(1), &records(b"s1", b"a1"))
            .unwrap();
        ks.activate_with_state(&id, Generation(0), b"S0").unwrap();
        before = std::fs::read(&marks).unwrap();
        ks.activate_with_state(&id, Generation(1), b"S1").unwrap();
        assert_ne!(std::fs::read(&marks).unwrap(), before, "mark written");
        ks.close().unwrap();
    }
    // As if the process died after the LevelDB batch, before the mark was replaced.
    std::fs::write(&marks, &before).unwrap();
    {
        let mut ks = open(dir.path());
        let (g, recs) = ks.load_active(&id).unwrap();
        assert_eq!(g, Generation(1));
        assert_eq!(recs.key_share().unwrap().expose(), b"s1");
        assert_eq!(ks.load_state(&id).unwrap().unwrap(), b"S1");
        // The open caught the mark up (the file was rewritten, under a fresh nonce).
        assert_ne!(
            std::fs::read(&marks).unwrap(),
            before,
            "mark raised on open"
        );
        // And the store goes on committing.
        ks.activate_with_state(&id, Generation(0), b"S0 again")
            .unwrap();
        ks.close().unwrap();
    }
    let mut ks = open(dir.path());
    assert_eq!(ks.active_generation(&id).unwrap(), Some(Generation(0)));
    assert_eq!(ks.load_state(&id).unwrap().unwrap(), b"S0 again");
}

#[test]
fn a_marks_file_that_fails_authentication_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let marks = dir.path().join(keystore::VERSIONS_FILE_NAME);
    {
        let mut ks = open(dir.path());
        ks.put_generation(&key("k"), Generation(0), &records(b"s", b"a"))
            .unwrap();
        ks.activate(&key("k"), Generation(0)).unwrap();
        ks.close().unwrap();
    }
    // Another store's (valid) marks file.
    let other = tempfile::tempdir().unwrap();
    open(other.path()).close().unwrap();
    std::fs::copy(other.path().join(keystore::VERSIONS_FILE_NAME), &marks).unwrap();
    let err = Keystore::open(dir.path(), &unlock()).unwrap_err();
    assert!(matches!(err, KeystoreError::Corrupt { .. }), "{err:?}");
}

#[test]
fn recorded_execution_ids_survive_a_reopen_and_only_the_most_recent_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let id = |k: u8| [k; 32];
    let mut ks = open(dir.path());
    assert!(ks.executions().unwrap().is_empty(), "a new store has none");
    ks.record_executions(&[id(1), id(2)], 3).unwrap();
    ks.record_executions(&[id(3)], 3).unwrap();
    assert_eq!(ks.executions().unwrap(), vec![id(1), id(2), id(3)]);
    ks.close().unwrap();

    let mut ks = open(dir.path());
    assert_eq!(
        ks.executions().unwrap(),
        vec![id(1), id(2), id(3)],
        "the ids are read back after a reopen, oldest first"
    );
    // The sequence goes on after the reopen: the oldest are dropped, none overwritten.
    ks.record_executions(&[id(4), id(5)], 3).unwrap();
    assert_eq!(ks.executions().unwrap(), vec![id(3), id(4), id(5)]);
    ks.close().unwrap();
    let mut ks = open(dir.path());
    assert_eq!(ks.executions().unwrap(), vec![id(3), id(4), id(5)]);
    assert!(
        files_containing(dir.path(), &id(4)).is_empty(),
        "the ids are sealed like every record"
    );
}
