//! Log set-up of the `node-shell` binary.
//!
//! `node-shell run` logs to stderr (level from `RUST_LOG`, default `info`), with colours
//! only when stderr is a terminal.
//!
//! `node-shell devnet` runs every node in one process, so their logs would bury the
//! demo's report. [`init_devnet`] sends every node's log to a file (level from
//! `RUST_LOG`, default `info`, never coloured) and shows only warnings and errors on
//! stderr, each distinct message once ([`TerminalWarnings`]); the demo's progress lines
//! go to stdout. Nothing written to the terminal contains ANSI escapes unless both
//! stdout and stderr are terminals.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

fn env_filter(default: &str) -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default))
}

/// Logs of `node-shell run`: stderr, `RUST_LOG` or `default`, colours only on a terminal.
pub fn init_stderr(default: &str) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(env_filter(default))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Where the devnet's log goes by default: `node-shell-devnet-<UTC time>-<pid>.log` in
/// the system's temp directory.
pub fn default_devnet_log_path() -> PathBuf {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    std::env::temp_dir().join(format!(
        "node-shell-devnet-{}-{}.log",
        utc_stamp(secs),
        std::process::id()
    ))
}

/// `YYYYMMDD-HHMMSS` (UTC) of a Unix time.
fn utc_stamp(secs: u64) -> String {
    // Days to civil date (proleptic Gregorian), after H. Hinnant's `civil_from_days`.
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let rem = secs % 86_400;
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Logs of `node-shell devnet`: everything at `RUST_LOG` (default `info`) to `path`
/// (created or truncated, plain text), warnings and errors also to stderr through
/// [`TerminalWarnings`].
pub fn init_devnet(path: &Path) -> std::io::Result<()> {
    let file = File::create(path)?;
    let to_file = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(Mutex::new(file))
        .with_filter(env_filter("info"));
    let color = std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
    let to_terminal =
        TerminalWarnings::new(Box::new(std::io::stderr()), color).with_filter(LevelFilter::WARN);
    // Fails only if a subscriber is already set (then that one keeps logging).
    let _ = tracing_subscriber::registry()
        .with(to_file)
        .with(to_terminal)
        .try_init();
    Ok(())
}

/// A layer printing one line per warning or error: `warning: <message> (<fields>)
/// [<target>]`. A message already shown is not shown again (every devnet node logs the
/// same warnings; all of them are in the log file). No ANSI escapes unless `color`.
pub struct TerminalWarnings {
    out: Mutex<Box<dyn Write + Send>>,
    seen: Mutex<HashSet<String>>,
    color: bool,
}

impl TerminalWarnings {
    /// Writes to `out`; `color` makes the level label bold yellow / red.
    pub fn new(out: Box<dyn Write + Send>, color: bool) -> Self {
        Self {
            out: Mutex::new(out),
            seen: Mutex::new(HashSet::new()),
            color,
        }
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.push(field, format_args!("{value}"));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.push(field, format_args!("{value:?}"));
        }
    }
}

impl Fields {
    fn push(&mut self, field: &Field, value: std::fmt::Arguments<'_>) {
        if !self.rest.is_empty() {
            self.rest.push_str(", ");
        }
        let _ = write!(self.rest, "{}={value}", field.name());
    }
}

impl<S: Subscriber> Layer<S> for TerminalWarnings {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let level = *meta.level();
        if level > Level::WARN {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let key = format!("{} {}", meta.target(), fields.message);
        if !self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key)
        {
            return;
        }
        let label = match (level == Level::ERROR, self.color) {
            (true, true) => "\x1b[1;31merror\x1b[0m",
            (true, false) => "error",
            (false, true) => "\x1b[1;33mwarning\x1b[0m",
            (false, false) => "warning",
        };
        let mut line = format!("{label}: {}", fields.message);
        if !fields.rest.is_empty() {
            let _ = write!(line, " ({})", fields.rest);
        }
        let _ = writeln!(line, " [{}]", meta.target());
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = out.write_all(line.as_bytes());
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn terminal_shows_each_warning_once_without_ansi() {
        let buffer = Buffer::default();
        let layer = TerminalWarnings::new(Box::new(buffer.clone()), false);
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("progress detail");
            tracing::warn!(index = 0, "insecure primes");
            tracing::warn!(index = 1, "insecure primes");
            tracing::error!(peer = "n2", "stream to peer failed");
        });
        let out = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert!(!out.contains('\x1b'), "{out:?}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(
            lines[0].starts_with("warning: insecure primes (index=0) ["),
            "{out}"
        );
        assert!(
            lines[1].starts_with("error: stream to peer failed (peer=n2) ["),
            "{out}"
        );
    }

    #[test]
    fn colour_only_when_asked() {
        let buffer = Buffer::default();
        let layer = TerminalWarnings::new(Box::new(buffer.clone()), true);
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            tracing::warn!("look");
        });
        let out = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert!(out.starts_with("\x1b[1;33mwarning\x1b[0m: look"), "{out:?}");
    }

    #[test]
    fn utc_stamp_is_the_civil_date() {
        assert_eq!(utc_stamp(0), "19700101-000000");
        assert_eq!(utc_stamp(951_782_400), "20000229-000000");
        assert_eq!(utc_stamp(1_764_154_245), "20251126-105045");
        assert!(default_devnet_log_path()
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("node-shell-devnet-") && n.ends_with(".log")));
    }
}
