//! Runs `node-shell devnet --nodes 4` (libp2p on 127.0.0.1) and checks its summary: the
//! address is unchanged across both reshares and every signature verifies.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn devnet_keeps_the_address_across_reshares_and_signatures_verify() {
    let deadline = Duration::from_secs(900);
    let mut child = Command::new(env!("CARGO_BIN_EXE_node-shell"))
        .args([
            "devnet",
            "--nodes",
            "4",
            "--batches",
            "1",
            "--timeout-secs",
            "840",
        ])
        .env("RUST_LOG", "warn")
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
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert!(
        status.success(),
        "devnet failed: {status}\nstdout:\n{out}\nstderr:\n{err}"
    );

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
    let keygen = field("address after keygen:");
    let join = field("address after join:");
    let exit = field("address after exit:");
    assert!(keygen.starts_with("0x") && keygen.len() == 42, "{keygen}");
    assert_eq!(keygen, join, "address changed when a sequencer joined");
    assert_eq!(join, exit, "address changed when a sequencer left");

    let batch_lines: Vec<&str> = out.lines().filter(|l| l.starts_with("batch ")).collect();
    // 1 before the reshares, 1 after the join, 1 after the exit.
    assert_eq!(batch_lines.len(), 3, "{out}");
    assert!(
        batch_lines.iter().all(|l| l.ends_with("-> verified")),
        "{out}"
    );
    assert!(
        out.contains("pool sizes:           4 -> 5 (node 4 joined) -> 4 (node 1 left)"),
        "{out}"
    );
    assert!(out.contains("leaver's key deleted: true"), "{out}");
    assert!(out.contains("ALL CHECKS PASSED"), "{out}");
}
