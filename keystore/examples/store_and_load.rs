//! Store a key share, rotate it (reshare), retire the old generation, reload.
//!
//! Run with `cargo run -p keystore --example store_and_load [STORE_DIR]`.
//! Without an argument a temporary directory is used. The passphrase is read
//! from `KEYSTORE_PASSPHRASE` (a demo default is used if unset).

use keystore::{Generation, GenerationRecords, KeyId, Keystore, SecretBytes, Unlock};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let dir = std::env::args_os()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().join("keystore"));
    let passphrase = std::env::var("KEYSTORE_PASSPHRASE")
        .unwrap_or_else(|_| "demo passphrase - do not use".into());
    let unlock = Unlock::passphrase(passphrase);

    // Argon2id with the secure defaults (m = 64 MiB, t = 3, p = 1).
    let mut store = Keystore::open(&dir, &unlock)?;
    println!("opened {store:?}");
    let key = KeyId::new("sequencer-signing-key")?;

    // Keygen makes generation 0; each reshare the next one.
    let next = match store.generations(&key) {
        Ok(gens) => gens.last().map_or(Generation::KEYGEN, |g| g.next()),
        Err(keystore::KeystoreError::UnknownKey(_)) => Generation::KEYGEN,
        Err(e) => return Err(e.into()),
    };
    let previous = store.active_generation(&key).unwrap_or(None);

    // In the real node these bytes come from tss-core's serialized key share.
    let records = GenerationRecords::share_and_aux(
        SecretBytes::new(format!("key share of generation {next}").into_bytes()),
        SecretBytes::new(b"aux info".to_vec()),
    );
    store.put_generation(&key, next, &records)?;
    // The pool state the generation belongs to is committed with the switch.
    let state = format!("pool state for {next}");
    store.activate_with_state(&key, next, state.as_bytes())?;
    if let Some(old) = previous {
        // After a reshare, once the new committee has confirmed:
        store.retire_generation(&key, old)?;
        println!("retired generation {old}");
    }

    let (active, loaded) = store.load_active(&key)?;
    println!(
        "active: {active}, key_share = {:?} ({})",
        loaded.key_share().expect("stored above"),
        String::from_utf8_lossy(loaded.key_share().expect("stored above").expose()),
    );
    println!(
        "state: {}",
        String::from_utf8_lossy(&store.load_state(&key)?.unwrap_or_default())
    );
    println!("keys: {:?}", store.list_keys()?);
    store.close()?;
    Ok(())
}
