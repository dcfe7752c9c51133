//! A local L1 for the devnet and the tests: Foundry's `anvil`, from the npm package
//! `@foundry-rs/anvil-linux-amd64` pinned in the repository's `package-lock.json`
//! (`npm ci` installs it under `node_modules/`).
//!
//! [`Anvil::spawn`] starts it on `127.0.0.1` with `--port 0` (the OS picks a free port;
//! anvil prints it and we read it back, so there is no race for a port), on the Cancun
//! hardfork the contracts are compiled for, and kills it when the handle is dropped.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use alloy::primitives::Address;
use alloy::providers::{DynProvider, Provider};

use super::L1Error;

/// Options for [`Anvil::spawn`].
#[derive(Clone, Debug)]
pub struct AnvilOptions {
    /// Dev accounts to create, each funded with 10 000 ETH (anvil's default funding).
    pub accounts: usize,
    /// Mine a block every this many seconds as well as on each transaction (`None`:
    /// only on transactions; tests then advance the chain with [`Anvil::mine`]).
    pub block_time: Option<u64>,
    /// L1 chain id.
    pub chain_id: u64,
}

impl Default for AnvilOptions {
    fn default() -> Self {
        Self {
            accounts: 20,
            block_time: None,
            chain_id: 31337,
        }
    }
}

/// A running anvil; killed on drop.
#[derive(Debug)]
pub struct Anvil {
    child: Child,
    port: u16,
    accounts: Vec<Address>,
    chain_id: u64,
}

impl Anvil {
    /// Where the anvil binary is: `$ANVIL` if set, else the npm package under the
    /// repository's `node_modules/`. `None` if neither exists.
    pub fn binary() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("ANVIL") {
            let p = PathBuf::from(p);
            return p.is_file().then_some(p);
        }
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let p = root.join("node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
        p.is_file().then_some(p)
    }

    /// Starts anvil and waits until it listens (it prints its address; no polling of a
    /// guessed port).
    pub fn spawn(opts: &AnvilOptions) -> Result<Anvil, L1Error> {
        let bin = Self::binary().ok_or_else(|| {
            L1Error::Anvil(
                "anvil not found: run `npm ci` in the repository root (or set ANVIL)".into(),
            )
        })?;
        let mut cmd = Command::new(&bin);
        cmd.args(["--host", "127.0.0.1", "--port", "0", "--hardfork", "cancun"])
            .args(["--accounts", &opts.accounts.to_string()])
            .args(["--chain-id", &opts.chain_id.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(secs) = opts.block_time {
            cmd.args(["--block-time", &secs.to_string()]);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| L1Error::Anvil(format!("cannot start {}: {e}", bin.display())))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut port = None;
        let mut accounts = Vec::new();
        let mut in_accounts = false;
        // anvil prints its accounts, keys and finally "Listening on 127.0.0.1:PORT".
        for line in lines.by_ref() {
            let line = line.map_err(|e| L1Error::Anvil(format!("reading its output: {e}")))?;
            let line = line.trim();
            if line.starts_with("Available Accounts") {
                in_accounts = true;
            } else if line.starts_with("Private Keys") {
                in_accounts = false;
            } else if in_accounts && line.starts_with('(') {
                if let Some(addr) = line.split_whitespace().nth(1) {
                    if let Ok(a) = addr.parse() {
                        accounts.push(a);
                    }
                }
            } else if let Some(addr) = line.strip_prefix("Listening on ") {
                port = addr.rsplit(':').next().and_then(|p| p.parse().ok());
                break;
            }
        }
        let Some(port) = port else {
            let _ = child.kill();
            let status = child.wait().ok();
            return Err(L1Error::Anvil(format!(
                "exited before listening ({status:?})"
            )));
        };
        // Keep draining stdout so anvil never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Anvil {
            child,
            port,
            accounts,
            chain_id: opts.chain_id,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port anvil listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The funded dev accounts, in anvil's order (account 0 is the usual deployer).
    pub fn accounts(&self) -> &[Address] {
        &self.accounts
    }

    /// The anvil process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The chain id.
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// A provider for this node.
    pub fn provider(&self) -> DynProvider {
        super::connect(&self.endpoint()).expect("anvil's own endpoint parses")
    }

    /// Mines `blocks` empty blocks at once (`anvil_mine`).
    pub async fn mine(&self, blocks: u64) -> Result<(), L1Error> {
        self.provider()
            .raw_request::<_, serde_json::Value>("anvil_mine".into(), (blocks, 0u64))
            .await
            .map_err(|e| L1Error::rpc("anvil_mine", e))?;
        Ok(())
    }

    /// Stops anvil now (also done on drop).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        self.stop();
    }
}
