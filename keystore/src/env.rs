//! A LevelDB [`Env`] hardened for key storage.
//!
//! It wraps rusty-leveldb's [`PosixDiskEnv`] and changes four things:
//!
//! * **Private files.** Every file LevelDB creates through this environment (tables,
//!   write-ahead logs, `MANIFEST-*`, `CURRENT`, the info `LOG`, `LOCK`) is created with
//!   mode `0600` and then `fchmod`ed to `0600`, whatever the process umask.
//!
//! * **Durable flushes.** rusty-leveldb implements a synced write
//!   (`DB::write(batch, true)`) as a `flush()` of the log writer. Here every
//!   writable file's `flush()` also calls `fsync` (`sync_data`), so a synced
//!   write really is on stable storage before it returns.
//! * **Overwrite before unlink.** When LevelDB deletes an obsolete file (old
//!   write-ahead log, compacted table), its content is first overwritten with
//!   zeros and synced. On a conventional filesystem this removes the old
//!   ciphertext from the disk blocks; on copy-on-write filesystems, SSD
//!   wear-levelling or snapshots it is best-effort only.
//! * **Directory sync** after renames and deletions, so the new `CURRENT`
//!   pointer and removed files are durable.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use rusty_leveldb::env::{Env, FileLock, Logger, RandomAccess};
use rusty_leveldb::{PosixDiskEnv, Result, Status};

pub(crate) struct SecureEnv {
    inner: PosixDiskEnv,
}

impl SecureEnv {
    pub(crate) fn new() -> Self {
        SecureEnv {
            inner: PosixDiskEnv::new(),
        }
    }
}

/// Opens (creating if needed) a file readable and writable by the owner only: created
/// with mode `0600`, and set to `0600` after opening so neither the umask nor an older,
/// wider mode of an existing file matters.
pub(crate) fn open_private(opts: &mut OpenOptions, p: &Path) -> io::Result<File> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let f = opts.open(p)?;
    restrict_file(&f)?;
    Ok(f)
}

/// Sets an open file's mode to `0600` (no-op off Unix).
pub(crate) fn restrict_file(_f: &File) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        _f.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// A file whose `flush()` is an `fsync`.
struct SyncOnFlush {
    file: File,
    /// Whether this is a write-ahead log (`*.log`), for the test-only torn-write point.
    #[cfg_attr(not(feature = "test-util"), allow(dead_code))]
    is_log: bool,
}

impl SyncOnFlush {
    fn new(file: File, p: &Path) -> Self {
        SyncOnFlush {
            file,
            is_log: p.extension().is_some_and(|e| e == "log"),
        }
    }
}

impl Write for SyncOnFlush {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        #[cfg(feature = "test-util")]
        if self.is_log && buf.len() > 1 {
            if let Some(point) = crate::crash_point::take_torn_log_write() {
                self.file.write_all(&buf[..buf.len() - 1])?;
                crate::crash_point::stall(point);
            }
        }
        self.file.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()?;
        self.file.sync_data()
    }
}

fn status(op: &str, p: &Path, e: io::Error) -> Status {
    let mut s = Status::from(e);
    s.err = format!("{op}: {}: {}", s.err, p.display());
    s
}

fn sync_parent_dir(p: &Path) {
    // Best effort: not every platform allows opening a directory.
    if let Some(dir) = p.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

/// Overwrites the whole file with zeros and syncs it.
fn shred(p: &Path) -> io::Result<()> {
    let mut f = OpenOptions::new().write(true).open(p)?;
    let len = f.metadata()?.len();
    let zeros = [0u8; 8192];
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        f.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    f.sync_all()
}

impl Env for SecureEnv {
    fn open_sequential_file(&self, p: &Path) -> Result<Box<dyn Read>> {
        self.inner.open_sequential_file(p)
    }
    fn open_random_access_file(&self, p: &Path) -> Result<Box<dyn RandomAccess>> {
        self.inner.open_random_access_file(p)
    }
    fn open_writable_file(&self, p: &Path) -> Result<Box<dyn Write>> {
        let f = open_private(
            OpenOptions::new().create(true).truncate(true).write(true),
            p,
        )
        .map_err(|e| status("open (write)", p, e))?;
        sync_parent_dir(p);
        Ok(Box::new(SyncOnFlush::new(f, p)))
    }
    fn open_appendable_file(&self, p: &Path) -> Result<Box<dyn Write>> {
        let f = open_private(OpenOptions::new().create(true).append(true), p)
            .map_err(|e| status("open (append)", p, e))?;
        Ok(Box::new(SyncOnFlush::new(f, p)))
    }
    fn exists(&self, p: &Path) -> Result<bool> {
        self.inner.exists(p)
    }
    fn children(&self, p: &Path) -> Result<Vec<PathBuf>> {
        self.inner.children(p)
    }
    fn size_of(&self, p: &Path) -> Result<usize> {
        self.inner.size_of(p)
    }
    fn delete(&self, p: &Path) -> Result<()> {
        // Shredding is best effort; the unlink itself must succeed.
        let _ = shred(p);
        fs::remove_file(p).map_err(|e| status("delete", p, e))?;
        sync_parent_dir(p);
        Ok(())
    }
    fn mkdir(&self, p: &Path) -> Result<()> {
        self.inner.mkdir(p)
    }
    fn rmdir(&self, p: &Path) -> Result<()> {
        self.inner.rmdir(p)
    }
    fn rename(&self, old: &Path, new: &Path) -> Result<()> {
        self.inner.rename(old, new)?;
        sync_parent_dir(new);
        Ok(())
    }
    fn lock(&self, p: &Path) -> Result<FileLock> {
        // rusty-leveldb creates `LOCK` with the default mode: create it private first
        // (it truncates, but never recreates, an existing file).
        open_private(
            OpenOptions::new().create(true).truncate(false).write(true),
            p,
        )
        .map_err(|e| status("lock", p, e))?;
        self.inner.lock(p)
    }
    fn unlock(&self, l: FileLock) -> Result<()> {
        self.inner.unlock(l)
    }
    fn new_logger(&self, p: &Path) -> Result<Logger> {
        Ok(Logger::new(self.open_appendable_file(p)?))
    }
    fn micros(&self) -> u64 {
        self.inner.micros()
    }
    fn sleep_for(&self, micros: u32) {
        self.inner.sleep_for(micros)
    }
}
