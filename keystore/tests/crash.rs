//! The keystore against other processes: a writer killed mid-write, and a store locked
//! by another process.
//!
//! These tests live in their own test binary, apart from `keystore.rs`: spawning a child
//! duplicates every open file descriptor of the test process until the child calls
//! `exec`, including the `KEYSTORE.LOCK` of a store another test thread has just closed,
//! which then stays locked for that moment and makes a quick re-open fail with `Locked`.
//! For the same reason the two tests here never run at the same time ([`ONE_AT_A_TIME`]).

use parking_lot::{Mutex, MutexGuard};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use keystore::{
    Generation, GenerationRecords, KdfParams, KeyId, Keystore, KeystoreError, SecretBytes, Unlock,
};

const PASS: &str = "operator passphrase for tests";

/// Held for the whole of each test that spawns a child.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock()
}

fn unlock() -> Unlock {
    Unlock::passphrase(PASS)
}

fn open(dir: &Path) -> Keystore {
    Keystore::open_with_kdf(dir, &unlock(), KdfParams::insecure_for_tests()).unwrap()
}

fn key(id: &str) -> KeyId {
    KeyId::new(id).unwrap()
}

fn records(share: &[u8], aux: &[u8]) -> GenerationRecords {
    GenerationRecords::share_and_aux(SecretBytes::from_slice(share), SecretBytes::from_slice(aux))
}

// Multi-process tests. The test binary re-executes itself, running only the
// ignored helper `child_process_writes_generations_until_killed`, selected by
// name, with the store directory passed in an environment variable.

const CHILD_DIR_ENV: &str = "KEYSTORE_TEST_CHILD_DIR";
const CHILD_TEST: &str = "child_process_writes_generations_until_killed";

fn share_for(g: u64) -> Vec<u8> {
    (0..20_000u32)
        .map(|i| (i as u64 * 31 + g * 7) as u8)
        .collect()
}

#[test]
#[ignore = "helper run as a child process by the crash and lock tests"]
fn child_process_writes_generations_until_killed() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let id = key("crashy");
    let mut ks = open(Path::new(&dir));
    let mut g = 1u64;
    loop {
        ks.put_generation(
            &id,
            Generation(g),
            &records(&share_for(g), &share_for(g + 1000)),
        )
        .unwrap();
        ks.activate(&id, Generation(g)).unwrap();
        println!("ACTIVE {g}");
        g += 1;
    }
}

struct KillOnDrop(Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the writer child and returns it once it reported `ACTIVE <until>`,
/// together with the last generation it reported active.
fn spawn_writer(dir: &Path, until: u64) -> (KillOnDrop, impl Iterator<Item = u64>) {
    let mut child = KillOnDrop(
        Command::new(std::env::current_exe().unwrap())
            .args([
                CHILD_TEST,
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR_ENV, dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(child.0.stdout.take().unwrap())
        .lines()
        .map_while(|l| l.ok())
        // libtest may print its "test <name> ... " prefix on the same line.
        .filter_map(|l| {
            l.rsplit_once("ACTIVE ")
                .and_then(|(_, n)| n.trim().parse::<u64>().ok())
        });
    let first = lines.by_ref().find(|&g| g >= until);
    assert!(
        first.is_some(),
        "child never reported generation {until} active"
    );
    (child, lines)
}

#[test]
fn store_held_by_another_process_is_reported_as_locked() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let (child, _) = spawn_writer(dir.path(), 1);
    let err = Keystore::open(dir.path(), &unlock()).unwrap_err();
    assert!(matches!(err, KeystoreError::Locked { .. }), "{err:?}");
    drop(child); // killed: the OS releases its lock
    open(dir.path());
}

#[test]
fn crash_during_write_leaves_previous_generation_readable() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let id = key("crashy");
    for round in 0..3 {
        let (mut child, mut reported) = spawn_writer(dir.path(), 3);
        // Let it get busy writing, then kill it wherever it is.
        std::thread::sleep(std::time::Duration::from_millis(20 + round * 15));
        child.0.kill().unwrap();
        child.0.wait().unwrap();
        let last_reported = reported.by_ref().last().unwrap_or(3).max(3);

        let mut ks = open(dir.path());
        let (active, recs) = ks.load_active(&id).unwrap();
        assert!(
            active.get() >= last_reported,
            "active {active} < reported {last_reported}"
        );
        assert_eq!(
            recs.key_share().unwrap().expose(),
            &share_for(active.get())[..]
        );
        assert_eq!(
            recs.aux_info().unwrap().expose(),
            &share_for(active.get() + 1000)[..]
        );
        // Every generation that made it to disk is complete and intact.
        for g in ks.generations(&id).unwrap() {
            let r = ks.load(&id, g).unwrap();
            assert_eq!(r.key_share().unwrap().expose(), &share_for(g.get())[..]);
        }
        // Next round starts on a clean slate.
        ks.delete_key(&id).unwrap();
    }
}
