//! The node's ed25519 identity key file: 64 hex digits of seed, written with mode 0600.
//! The node id is the ed25519 public key. The seed never appears in logs or Debug output.

use std::io::Write;
use std::path::Path;

use transport::Libp2pIdentity;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

fn ident_err(path: &Path, reason: impl Into<String>) -> Error {
    Error::Identity {
        path: path.display().to_string(),
        reason: reason.into(),
        source: None,
    }
}

fn ident_io_err<'a>(path: &'a Path, what: &'a str) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |e| Error::Identity {
        path: path.display().to_string(),
        reason: format!("{what}: {e}"),
        source: Some(e),
    }
}

/// Generates a fresh identity and writes its seed to `path` (refusing to overwrite an
/// existing file unless `force`). Returns the identity.
pub fn generate(path: &Path, force: bool) -> Result<Libp2pIdentity> {
    let mut seed = Zeroizing::new([0u8; 32]);
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, seed.as_mut());
    let identity = Libp2pIdentity::from_seed(*seed).map_err(|e| ident_err(path, e.to_string()))?;
    let text = Zeroizing::new(hex::encode(seed.as_ref()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(ident_io_err(path, "cannot create"))?;
    file.write_all(text.as_bytes())
        .and_then(|_| file.write_all(b"\n"))
        .and_then(|_| file.sync_all())
        .map_err(ident_io_err(path, "cannot write"))?;
    Ok(identity)
}

/// Loads the identity whose seed is in `path`.
pub fn load(path: &Path) -> Result<Libp2pIdentity> {
    let text =
        Zeroizing::new(std::fs::read_to_string(path).map_err(ident_io_err(path, "cannot read"))?);
    let bytes = Zeroizing::new(
        hex::decode(text.trim())
            .map_err(|_| ident_err(path, "not hex (expected 64 hex digits)"))?,
    );
    let seed: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| ident_err(path, "expected 32 bytes (64 hex digits)"))?;
    Libp2pIdentity::from_seed(seed).map_err(|e| ident_err(path, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_identity_round_trips_and_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id.key");
        let a = generate(&path, false).unwrap();
        let b = load(&path).unwrap();
        assert_eq!(a.node_id(), b.node_id());
        assert!(matches!(
            generate(&path, false),
            Err(Error::Identity { .. })
        ));
        std::fs::write(&path, "nothex").unwrap();
        assert!(matches!(load(&path), Err(Error::Identity { .. })));
    }
}
