//! Node config parsing: `node_shell::config::RunConfig::from_toml` on arbitrary text
//! (no file I/O; the passphrase variable is "set"). Must give a config or a typed
//! `node_shell::Error`, never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use node_shell::config::RunConfig;
use node_shell::Error;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = |name: &str| (name == "NODE_SHELL_PASSPHRASE").then(|| "fuzz passphrase".to_owned());
    match RunConfig::from_toml(text, Path::new("/fuzz"), env) {
        Ok(config) => {
            // A valid config is internally consistent.
            assert!(config.rpc_listen.ip().is_loopback());
            let _ = format!("{config:?}");
        }
        // Typed errors: `ConfigParse`, `ConfigInvalid`, or the pool's own rule errors.
        Err(e) => {
            let _: &Error = &e;
            let _ = e.to_string();
        }
    }
});
