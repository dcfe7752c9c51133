//! The keystore against other processes: a writer killed mid-write, a store locked by
//! another process, the active generation and the embedder's state killed between (and
//! inside) the steps of committing them, and file permissions under a permissive umask.
//!
//! Kills land at chosen points through the test-only crash points of the `test-util`
//! feature (`KEYSTORE_CRASH_POINT`, see `src/crash_point.rs`): the child announces the
//! point on stdout and stops there until it is killed.
//!
//! These tests live in their own test binary, apart from `keystore.rs`: spawning a child
//! duplicates every open file descriptor of the test process until the child calls
//! `exec`, including the `KEYSTORE.LOCK` of a store another test thread has just closed,
//! which then stays locked for that moment and makes a quick re-open fail with `Locked`.
//! For the same reason the two tests here never run at the same time ([`ONE_AT_A_TIME`]).

mod common;

use parking_lot::{Mutex, MutexGuard};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use keystore::{
    AsyncKeystore, Generation, GenerationRecords, KdfParams, KeyId, Keystore, KeystoreError,
    RecordName, SecretBytes, Unlock,
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

// Multi-process tests. The test binary re-executes itself, running only one
// ignored helper (`child_process_...`), selected by name, with the store
// directory passed in an environment variable.

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

// ----- the active generation and the state, killed around `activate` -----

const CHILD_STATE_TEST: &str = "child_process_commits_generations_with_their_state";
const CHILD_SCENARIO_ENV: &str = "KEYSTORE_TEST_CHILD_SCENARIO";
const CRASH_POINT_ENV: &str = "KEYSTORE_CRASH_POINT";
const POOL_KEY: &str = "pool-key";

/// The state committed with generation `g`.
fn state_for(g: u64) -> Vec<u8> {
    format!("S{g}").into_bytes()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn open_async(dir: &Path) -> AsyncKeystore {
    AsyncKeystore::open_with_kdf(dir, unlock(), KdfParams::insecure_for_tests())
        .await
        .unwrap()
}

/// A store where generation 0 of `pool-key` is active with state `S0`.
fn store_with_generation_0_active(dir: &Path) {
    runtime().block_on(async {
        let ks = open_async(dir).await;
        ks.stage(&common::share(POOL_KEY, 0)).await.unwrap();
        ks.activate(&key(POOL_KEY), Generation(0), &state_for(0))
            .await
            .unwrap();
        ks.close().await.unwrap();
    })
}

/// What a restarted node finds: the active share's generation, the state, and every
/// stored generation.
fn what_a_restart_finds(dir: &Path) -> (Option<Generation>, Option<Vec<u8>>, Vec<Generation>) {
    runtime().block_on(async {
        let ks = open_async(dir).await;
        let k = key(POOL_KEY);
        let active = ks.load_active(&k).await.unwrap().map(|s| s.generation());
        // The pointer and the decoded share agree.
        assert_eq!(active, ks.active_generation(&k).await.unwrap());
        let found = (
            active,
            ks.load_state(&k).await.unwrap(),
            ks.generations(&k).await.unwrap(),
        );
        // Every stored generation is complete and decodes.
        for g in &found.2 {
            assert_eq!(ks.load(&k, *g).await.unwrap().generation(), *g);
        }
        ks.close().await.unwrap();
        found
    })
}

/// The helper run as a child. Scenarios (`KEYSTORE_TEST_CHILD_SCENARIO`):
/// * `activate-once`: stages generation 1, prints `STAGED 1`, activates it with `S1`,
///   prints `ACTIVATED 1`, then waits to be killed;
/// * `activate-forever`: for g = 1, 2, ...: stages g, activates it with `S<g>`, prints
///   `ACTIVATED <g>`;
/// * `delete`: deletes the key with state `left`, prints `DELETED`, waits to be killed.
///
/// `KEYSTORE_CRASH_POINT`, if set, stops it inside the keystore instead.
#[tokio::test]
#[ignore = "helper run as a child process by the state crash tests"]
async fn child_process_commits_generations_with_their_state() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let ks = open_async(Path::new(&dir)).await;
    let k = key(POOL_KEY);
    match std::env::var(CHILD_SCENARIO_ENV).unwrap().as_str() {
        "activate-once" => {
            ks.stage(&common::share(POOL_KEY, 1)).await.unwrap();
            println!("STAGED 1");
            ks.activate(&k, Generation(1), &state_for(1)).await.unwrap();
            println!("ACTIVATED 1");
        }
        "activate-forever" => {
            for g in 1.. {
                ks.stage(&common::share(POOL_KEY, g)).await.unwrap();
                ks.activate(&k, Generation(g), &state_for(g)).await.unwrap();
                println!("ACTIVATED {g}");
            }
        }
        "delete" => {
            assert!(ks.delete(&k, b"left").await.unwrap());
            println!("DELETED");
        }
        other => panic!("unknown scenario {other}"),
    }
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

/// Starts the state child on `dir` with `scenario`, stopping at `crash_point` if given.
fn spawn_state_child(
    dir: &Path,
    scenario: &str,
    crash_point: Option<&str>,
) -> (KillOnDrop, impl Iterator<Item = String>) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        CHILD_STATE_TEST,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_DIR_ENV, dir)
    .env(CHILD_SCENARIO_ENV, scenario)
    .env_remove(CRASH_POINT_ENV)
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    if let Some(point) = crash_point {
        cmd.env(CRASH_POINT_ENV, point);
    }
    let mut child = KillOnDrop(cmd.spawn().unwrap());
    let lines = BufReader::new(child.0.stdout.take().unwrap())
        .lines()
        .map_while(|l| l.ok());
    (child, lines)
}

/// Waits for a line containing `marker` (libtest may print its own prefix on the line).
fn wait_for(lines: &mut impl Iterator<Item = String>, marker: &str) {
    assert!(
        lines.any(|l| l.contains(marker)),
        "child exited without printing {marker:?}"
    );
}

fn kill(mut child: KillOnDrop) {
    child.0.kill().unwrap();
    child.0.wait().unwrap();
}

/// Prepares generation 0 (state S0), lets a child stage generation 1 and activate it
/// with S1, kills it (SIGKILL) when it prints `marker`, and returns what a restart finds.
fn kill_activating_child_at(
    crash_point: Option<&str>,
    marker: &str,
) -> (Option<Generation>, Option<Vec<u8>>, Vec<Generation>) {
    let dir = tempfile::tempdir().unwrap();
    store_with_generation_0_active(dir.path());
    let (child, mut lines) = spawn_state_child(dir.path(), "activate-once", crash_point);
    wait_for(&mut lines, "STAGED 1");
    wait_for(&mut lines, marker);
    kill(child);
    what_a_restart_finds(dir.path())
}

const OLD: (Option<Generation>, Option<&[u8]>) = (Some(Generation(0)), Some(b"S0"));
const NEW: (Option<Generation>, Option<&[u8]>) = (Some(Generation(1)), Some(b"S1"));

fn pair(
    found: &(Option<Generation>, Option<Vec<u8>>, Vec<Generation>),
) -> (Option<Generation>, Option<&[u8]>) {
    (found.0, found.1.as_deref())
}

#[test]
fn state_and_active_generation_survive_a_kill_before_the_commit_together() {
    let _serial = one_at_a_time();
    let found = kill_activating_child_at(
        Some("activate:before-write"),
        "CRASH-POINT activate:before-write",
    );
    assert_eq!(pair(&found), OLD);
    // The staged generation survives, inactive: the reshare can be activated again.
    assert_eq!(found.2, vec![Generation(0), Generation(1)]);
}

#[test]
fn state_and_active_generation_survive_a_kill_with_the_commit_half_written_together() {
    let _serial = one_at_a_time();
    // The batch (active pointer, then state) is in the write-ahead log but for its
    // last byte: the new pointer is on disk, the record is torn.
    let found = kill_activating_child_at(
        Some("activate:torn-write"),
        "CRASH-POINT activate:torn-write",
    );
    assert_eq!(pair(&found), OLD);
    assert_eq!(found.2, vec![Generation(0), Generation(1)]);
}

#[test]
fn state_and_active_generation_survive_a_kill_after_the_commit_together() {
    let _serial = one_at_a_time();
    let found = kill_activating_child_at(
        Some("activate:after-write"),
        "CRASH-POINT activate:after-write",
    );
    assert_eq!(pair(&found), NEW);
}

#[test]
fn state_and_active_generation_survive_a_kill_right_after_activate_returned_together() {
    let _serial = one_at_a_time();
    let found = kill_activating_child_at(None, "ACTIVATED 1");
    assert_eq!(pair(&found), NEW);
    assert_eq!(found.2, vec![Generation(0), Generation(1)]);
}

#[test]
fn state_and_active_generation_survive_a_kill_at_any_moment_together() {
    let _serial = one_at_a_time();
    for round in 0..4u64 {
        let dir = tempfile::tempdir().unwrap();
        store_with_generation_0_active(dir.path());
        let (child, lines) = spawn_state_child(dir.path(), "activate-forever", None);
        let mut activated = lines.filter_map(|l| {
            l.rsplit_once("ACTIVATED ")
                .and_then(|(_, n)| n.trim().parse::<u64>().ok())
        });
        assert!(activated.by_ref().any(|g| g >= 2));
        // Let it get busy staging and activating, then kill it wherever it is.
        std::thread::sleep(Duration::from_millis(5 + round * 11));
        kill(child);
        let last_reported = activated.last().unwrap_or(2).max(2);

        let (active, state, _) = what_a_restart_finds(dir.path());
        let active = active.expect("a generation is active").get();
        assert!(
            active >= last_reported,
            "round {round}: active {active} < reported {last_reported}"
        );
        // Never a mix: the state is the one committed with the active generation.
        assert_eq!(
            state.as_deref(),
            Some(&state_for(active)[..]),
            "round {round}: generation {active} active"
        );
    }
}

#[test]
fn a_kill_between_deletion_and_compaction_leaves_the_deletion_and_its_state_committed() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    store_with_generation_0_active(dir.path());
    let sealed = {
        let mut ks = open(dir.path());
        let name = RecordName::new(RecordName::KEY_SHARE).unwrap();
        let sealed = ks
            .sealed_record(&key(POOL_KEY), Generation(0), &name)
            .unwrap();
        ks.close().unwrap();
        sealed[13..].to_vec()
    };
    let (child, mut lines) = spawn_state_child(dir.path(), "delete", Some("delete:before-purge"));
    wait_for(&mut lines, "CRASH-POINT delete:before-purge");
    kill(child);

    let (active, state, generations) = what_a_restart_finds(dir.path());
    assert_eq!(active, None);
    assert!(generations.is_empty());
    assert_eq!(state.as_deref(), Some(&b"left"[..]));
    // The next compaction drops the ciphertext the kill left in the files.
    let mut ks = open(dir.path());
    ks.compact().unwrap();
    ks.close().unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let data = std::fs::read(p).unwrap();
            data.windows(sealed.len()).any(|w| w == &sealed[..])
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

// ----- permissions, whatever the umask -----

const CHILD_PERMS_TEST: &str = "child_process_writes_a_store";

#[test]
#[ignore = "helper run as a child process by the permission test"]
fn child_process_writes_a_store() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let id = key("k");
    let mut ks = open(Path::new(&dir));
    ks.put_generation(&id, Generation(0), &records(b"s0", b"a0"))
        .unwrap();
    ks.activate_with_state(&id, Generation(0), b"S0").unwrap();
    ks.put_generation(&id, Generation(1), &records(b"s1", b"a1"))
        .unwrap();
    ks.activate_with_state(&id, Generation(1), b"S1").unwrap();
    // Compacts: the tables, log, MANIFEST and CURRENT written now were all created
    // after `open` tightened what it found, so only their creation mode protects them.
    ks.retire_generation(&id, Generation(0)).unwrap();
    ks.close().unwrap();
}

#[cfg(unix)]
#[test]
fn store_is_private_even_when_written_under_umask_000() {
    use std::os::unix::fs::PermissionsExt;
    let _serial = one_at_a_time();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("keystore");
    let status = Command::new("/bin/sh")
        .arg("-c")
        .arg(r#"umask 000 && exec "$0" "$@""#)
        .arg(std::env::current_exe().unwrap())
        .args([CHILD_PERMS_TEST, "--exact", "--ignored", "--test-threads=1"])
        .env(CHILD_DIR_ENV, &dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(format!("{:o}", mode(&dir)), "700");
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(files.len() >= 4, "{files:?}");
    for f in files {
        assert_eq!(format!("{:o}", mode(&f)), "600", "{}", f.display());
    }
}
