//! The store's high-water marks: the file `KEYSTORE.VERSIONS` next to the LevelDB files,
//! holding, for every key id, the highest version of its active pointer and state record
//! the store ever committed (see "Rollback" in the crate docs).
//!
//! File layout: `magic (8) | seal(payload)`, sealed with the store's master key (so only
//! this store can write it and a modified or foreign file fails authentication), with
//! `payload = count (u32 BE) | count * (id length (u16 BE) | id | version (u64 BE))`.
//!
//! It is replaced atomically: written to `KEYSTORE.VERSIONS.tmp`, `fsync`ed, renamed over
//! the old file, and the directory `fsync`ed.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use crate::env::open_private;
use crate::error::{KeystoreError, Result};
use crate::seal::{self, Ad};
use crate::secret::MasterKey;
use crate::types::KeyId;

/// Name of the high-water-mark file inside the store directory.
pub const VERSIONS_FILE_NAME: &str = "KEYSTORE.VERSIONS";
const TMP_FILE_NAME: &str = "KEYSTORE.VERSIONS.tmp";
const MAGIC: &[u8; 8] = b"MPCKSVM1";

/// Highest committed version per key id.
pub(crate) type Marks = BTreeMap<KeyId, u64>;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> KeystoreError + '_ {
    move |source| KeystoreError::Io {
        path: path.to_owned(),
        source,
    }
}

fn corrupt(reason: &str) -> KeystoreError {
    KeystoreError::Corrupt {
        reason: format!("high-water-mark file {VERSIONS_FILE_NAME}: {reason}"),
    }
}

/// Reads the marks of the store in `dir`; `None` if the file does not exist.
pub(crate) fn read(dir: &Path, key: &MasterKey) -> Result<Option<Marks>> {
    let path = dir.join(VERSIONS_FILE_NAME);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path)(e)),
    };
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(corrupt("malformed"));
    }
    let plain = seal::open(key, &Ad::HighWaterMarks, &bytes[MAGIC.len()..])
        .ok_or_else(|| corrupt("fails authentication (modified, or from another store)"))?;
    decode(plain.expose())
        .map(Some)
        .ok_or_else(|| corrupt("malformed content"))
}

/// Atomically replaces the marks of the store in `dir` (write, fsync, rename, fsync dir).
pub(crate) fn write(dir: &Path, key: &MasterKey, marks: &Marks) -> Result<()> {
    let mut bytes = MAGIC.to_vec();
    bytes.extend(seal::seal(key, &Ad::HighWaterMarks, &encode(marks)));
    let tmp = dir.join(TMP_FILE_NAME);
    let mut f = open_private(
        OpenOptions::new().write(true).create(true).truncate(true),
        &tmp,
    )
    .map_err(io_err(&tmp))?;
    f.write_all(&bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    drop(f);
    let path = dir.join(VERSIONS_FILE_NAME);
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    sync_dir(dir)
}

fn sync_dir(_dir: &Path) -> Result<()> {
    #[cfg(unix)]
    File::open(_dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(_dir))?;
    Ok(())
}

fn encode(marks: &Marks) -> Vec<u8> {
    let mut out = (marks.len() as u32).to_be_bytes().to_vec();
    for (id, v) in marks {
        out.extend_from_slice(&(id.as_str().len() as u16).to_be_bytes());
        out.extend_from_slice(id.as_str().as_bytes());
        out.extend_from_slice(&v.to_be_bytes());
    }
    out
}

fn decode(mut b: &[u8]) -> Option<Marks> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if b.len() < n {
            return None;
        }
        let (h, t) = b.split_at(n);
        *b = t;
        Some(h)
    }
    let count = u32::from_be_bytes(take(&mut b, 4)?.try_into().ok()?);
    let mut marks = Marks::new();
    for _ in 0..count {
        let len = u16::from_be_bytes(take(&mut b, 2)?.try_into().ok()?) as usize;
        let id = KeyId::new(std::str::from_utf8(take(&mut b, len)?).ok()?).ok()?;
        let v = u64::from_be_bytes(take(&mut b, 8)?.try_into().ok()?);
        marks.insert(id, v);
    }
    b.is_empty().then_some(marks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_round_trip_and_a_modified_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = MasterKey([7; 32]);
        assert!(read(dir.path(), &key).unwrap().is_none());
        let mut marks = Marks::new();
        marks.insert(KeyId::new("a").unwrap(), 3);
        marks.insert(KeyId::new("pool-key").unwrap(), u64::MAX);
        write(dir.path(), &key, &marks).unwrap();
        assert_eq!(read(dir.path(), &key).unwrap(), Some(marks));
        assert!(!dir.path().join(TMP_FILE_NAME).exists());

        let path = dir.path().join(VERSIONS_FILE_NAME);
        let mut bytes = fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            read(dir.path(), &key),
            Err(KeystoreError::Corrupt { .. })
        ));
        // Another store's key.
        write(dir.path(), &MasterKey([8; 32]), &Marks::new()).unwrap();
        assert!(matches!(
            read(dir.path(), &key),
            Err(KeystoreError::Corrupt { .. })
        ));
    }
}
