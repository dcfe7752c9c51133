//! Runs `node-shell devnet --nodes 4` (libp2p on 127.0.0.1) with stdout and stderr piped
//! and checks its summary: the address is unchanged across both reshares, batches are
//! appended to the L1 inbox before and after each reshare, each by a transaction from the
//! pool's MPC address, raw-digest signing is refused, every step is reported with its duration; and that the output is readable:
//! no ANSI escapes (stdout is not a terminal), the nodes' logs in the log file, only
//! warnings and errors on stderr. Two devnet runs side by side, one per threshold protocol
//! (minutes on 2 cores, mostly waiting for L1 blocks): keep them the only ones in this
//! crate's tests.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn devnet_keeps_the_address_across_reshares_and_every_batch_comes_from_the_pool() {
    devnet_checks(None);
}

#[test]
fn devnet_with_dkls23_keeps_the_address_across_reshares_and_every_batch_comes_from_the_pool() {
    devnet_checks(Some("dkls23"));
}

/// One devnet run with `--protocol protocol` (none: the default, cggmp21), checked.
fn devnet_checks(protocol: Option<&str>) {
    let deadline = Duration::from_secs(900);
    let logs = tempfile::tempdir().expect("temp dir");
    let log_file = logs.path().join("devnet.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_node-shell"))
        .args([
            "devnet",
            "--nodes",
            "4",
            "--batches",
            "1",
            "--timeout-secs",
            "840",
            "--log-file",
        ])
        .arg(&log_file)
        .args(protocol.map(|p| ["--protocol", p]).into_iter().flatten())
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start node-shell");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    // Both pipes are drained while the devnet runs, so neither can fill up and block it.
    let mut stderr = child.stderr.take().expect("stderr");
    let err_reader = std::thread::spawn(move || {
        let mut err = String::new();
        let _ = stderr.read_to_string(&mut err);
        err
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            panic!("devnet did not finish within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = reader.join().expect("reader");
    let err = err_reader.join().expect("stderr reader");
    assert!(
        status.success(),
        "devnet failed: {status}\nstdout:\n{out}\nstderr:\n{err}"
    );

    // Readable when piped: no ANSI escapes; the nodes' logs went to the file, and only
    // warnings and errors to stderr.
    assert!(!out.contains("\x1b["), "ANSI escape in stdout:\n{out:?}");
    assert!(!err.contains("\x1b["), "ANSI escape in stderr:\n{err:?}");
    assert!(
        err.lines()
            .all(|l| l.is_empty() || l.starts_with("warning: ") || l.starts_with("error: ")),
        "stderr has more than warnings and errors:\n{err}"
    );
    assert!(
        out.contains(&format!("  logs:  {}", log_file.display())),
        "{out}"
    );
    let log = std::fs::read_to_string(&log_file).expect("log file");
    assert!(!log.is_empty(), "empty log file");
    assert!(!log.contains("\x1b["), "ANSI escape in the log file");

    let field = |name: &str| -> String {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|rest| {
                rest.split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
            .unwrap_or_else(|| panic!("no {name:?} line in:\n{out}"))
    };
    assert_eq!(field("threshold protocol:"), protocol.unwrap_or("cggmp21"));
    let pool_address = field("pool address:");
    let keygen = field("address after keygen:");
    assert_eq!(pool_address, keygen);
    let join = field("address after join:");
    let exit = field("address after exit:");
    assert!(keygen.starts_with("0x") && keygen.len() == 42, "{keygen}");
    assert_eq!(keygen, join, "address changed when a sequencer joined");
    assert_eq!(join, exit, "address changed when a sequencer left");

    let batch_lines: Vec<&str> = out.lines().filter(|l| l.starts_with("batch ")).collect();
    // At least 1 before the reshares, 1 after the join, 1 after the exit (the producer
    // keeps going meanwhile), each appended by a transaction from the pool's address.
    assert!(batch_lines.len() >= 3, "{out}");
    assert!(
        batch_lines.iter().all(|l| l.ends_with("-> verified")),
        "{out}"
    );
    let k = batch_lines.len();
    assert!(
        out.contains(&format!(
            "inbox batches:        {k} of {k} sent by the MPC address"
        )),
        "{out}"
    );
    assert!(
        out.contains("pool sizes:           4 -> 5 (node 4 joined) -> 4 (node 1 left)"),
        "{out}"
    );
    assert!(out.contains("leaver's key deleted: true"), "{out}");

    // Every step with its duration ("<name>  <seconds>s  <outcome>").
    let step = |name: &str| -> &str {
        out.lines()
            .find(|l| l.starts_with(&format!("  {name}")) && l.contains("s  "))
            .unwrap_or_else(|| panic!("no step {name:?} in:\n{out}"))
    };
    assert!(step("start 5 nodes").ends_with("connected"), "{out}");
    // L1: the contracts, the stakes, the MPC address registered by the admin, and a lock
    // by a non-whitelisted account reverted.
    assert!(
        step("L1: deploy, whitelist 5, lock 4 stakes").contains("staking 0x"),
        "{out}"
    );
    assert!(
        step("L1: admin registers the MPC address").contains("tx 0x"),
        "{out}"
    );
    assert!(out.contains("reverted on L1"), "{out}");
    let staking = field("SequencerStaking:");
    assert!(
        staking.starts_with("0x") && staking.len() == 42,
        "{staking}"
    );
    let txs: Vec<&str> = out
        .lines()
        .skip_while(|l| *l != "L1 transactions:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .collect();
    // 5 whitelistings, 4 + 1 locks, the MPC address, its funding, 1 unlock.
    assert_eq!(txs.len(), 13, "{out}");
    assert!(
        txs.iter().all(|l| l
            .trim_end()
            .rsplit(' ')
            .next()
            .is_some_and(|h| h.starts_with("0x") && h.len() == 66)),
        "{out}"
    );
    assert!(
        step("keygen 3-of-4").ends_with(&format!("address {keygen}")),
        "{out}"
    );
    assert!(
        step("pool appends 1 batch (3-of-4)").contains("sent by the MPC address"),
        "{out}"
    );
    assert!(out.contains("raw-digest signing refused: 403"), "{out}");
    assert!(
        step("reshare: node 4 joins (3-of-4 -> 4-of-5)").ends_with("address unchanged"),
        "{out}"
    );
    assert!(
        step("batches continue after the join (4-of-5)").contains("inbox "),
        "{out}"
    );
    assert!(
        step("reshare: node 1 exits (4-of-5 -> 3-of-4)")
            .ends_with("address unchanged, leaver's share deleted"),
        "{out}"
    );
    assert!(
        step("batches continue after the exit (3-of-4)").contains("inbox "),
        "{out}"
    );
    assert!(out.contains("ALL CHECKS PASSED"), "{out}");
}
