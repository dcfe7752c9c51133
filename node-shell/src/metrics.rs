//! Prometheus metrics, rendered as the text exposition format at `GET /metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the signing latency histogram buckets.
const LATENCY_BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Protocol kinds counted separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Key generation.
    Keygen,
    /// Signing.
    Sign,
    /// Resharing.
    Reshare,
}

impl Protocol {
    fn index(self) -> usize {
        self as usize
    }
    fn label(self) -> &'static str {
        match self {
            Protocol::Keygen => "keygen",
            Protocol::Sign => "sign",
            Protocol::Reshare => "reshare",
        }
    }
    const ALL: [Protocol; 3] = [Protocol::Keygen, Protocol::Sign, Protocol::Reshare];
}

#[derive(Default)]
struct Histogram {
    buckets: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// The node's counters and gauges.
#[derive(Default)]
pub struct Metrics {
    signatures: AtomicU64,
    sign_failures: AtomicU64,
    sessions_started: [AtomicU64; 3],
    sessions_failed: [AtomicU64; 3],
    proposals_rejected: AtomicU64,
    http_bad_requests: AtomicU64,
    pool_members: AtomicU64,
    key_generation: AtomicU64,
    has_key: AtomicU64,
    epoch: AtomicU64,
    is_producer: AtomicU64,
    sign_latency: Mutex<Histogram>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// A protocol run started (as coordinator or participant).
    pub fn session_started(&self, p: Protocol) {
        self.sessions_started[p.index()].fetch_add(1, Ordering::Relaxed);
    }
    /// A protocol run failed.
    pub fn session_failed(&self, p: Protocol) {
        self.sessions_failed[p.index()].fetch_add(1, Ordering::Relaxed);
        if p == Protocol::Sign {
            self.sign_failures.fetch_add(1, Ordering::Relaxed);
        }
    }
    /// A signature was produced (and verified) in `elapsed`.
    pub fn signature_made(&self, elapsed: Duration) {
        self.signatures.fetch_add(1, Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        let mut h = self.sign_latency.lock().unwrap_or_else(|e| e.into_inner());
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.buckets[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }
    /// This node refused a proposal.
    pub fn proposal_rejected(&self) {
        self.proposals_rejected.fetch_add(1, Ordering::Relaxed);
    }
    /// The API answered a 4xx.
    pub fn bad_request(&self) {
        self.http_bad_requests.fetch_add(1, Ordering::Relaxed);
    }
    /// Updates the gauges.
    pub fn set_state(&self, members: usize, generation: Option<u64>, epoch: u64, producer: bool) {
        self.pool_members.store(members as u64, Ordering::Relaxed);
        self.has_key
            .store(u64::from(generation.is_some()), Ordering::Relaxed);
        self.key_generation
            .store(generation.unwrap_or(0), Ordering::Relaxed);
        self.epoch.store(epoch, Ordering::Relaxed);
        self.is_producer
            .store(u64::from(producer), Ordering::Relaxed);
    }
    /// Signatures produced so far.
    pub fn signatures(&self) -> u64 {
        self.signatures.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        counter(
            "node_shell_signatures_total",
            "Signatures produced and verified.",
            load(&self.signatures),
        );
        counter(
            "node_shell_sign_failures_total",
            "Signing runs that failed.",
            load(&self.sign_failures),
        );
        counter(
            "node_shell_proposals_rejected_total",
            "Proposals from peers this node refused.",
            load(&self.proposals_rejected),
        );
        counter(
            "node_shell_http_bad_requests_total",
            "HTTP requests answered with a 4xx.",
            load(&self.http_bad_requests),
        );
        let _ = writeln!(
            out,
            "# HELP node_shell_sessions_total Protocol runs started.\n# TYPE node_shell_sessions_total counter"
        );
        for p in Protocol::ALL {
            let _ = writeln!(
                out,
                "node_shell_sessions_total{{protocol=\"{}\"}} {}",
                p.label(),
                load(&self.sessions_started[p.index()])
            );
        }
        let _ = writeln!(
            out,
            "# HELP node_shell_session_failures_total Protocol runs that failed.\n# TYPE node_shell_session_failures_total counter"
        );
        for p in Protocol::ALL {
            let _ = writeln!(
                out,
                "node_shell_session_failures_total{{protocol=\"{}\"}} {}",
                p.label(),
                load(&self.sessions_failed[p.index()])
            );
        }
        let mut gauge = |name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge(
            "node_shell_pool_members",
            "Members of the sequencer pool.",
            load(&self.pool_members),
        );
        gauge(
            "node_shell_has_key",
            "1 if this node holds a key share.",
            load(&self.has_key),
        );
        gauge(
            "node_shell_key_generation",
            "Generation of the held key share.",
            load(&self.key_generation),
        );
        gauge("node_shell_epoch", "Current epoch.", load(&self.epoch));
        gauge(
            "node_shell_is_block_producer",
            "1 if this node produces blocks this epoch.",
            load(&self.is_producer),
        );
        let h = self.sign_latency.lock().unwrap_or_else(|e| e.into_inner());
        let name = "node_shell_sign_latency_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Latency of signing runs coordinated or joined by this node.\n# TYPE {name} histogram"
        );
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", h.buckets[i]);
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(out, "{name}_sum {}", h.sum);
        let _ = writeln!(out, "{name}_count {}", h.count);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_contains_counters_and_cumulative_histogram() {
        let m = Metrics::default();
        m.session_started(Protocol::Sign);
        m.signature_made(Duration::from_millis(300));
        m.session_failed(Protocol::Reshare);
        let text = m.render();
        assert!(text.contains("node_shell_signatures_total 1"));
        assert!(text.contains("node_shell_sessions_total{protocol=\"sign\"} 1"));
        assert!(text.contains("node_shell_session_failures_total{protocol=\"reshare\"} 1"));
        assert!(text.contains("node_shell_sign_latency_seconds_bucket{le=\"0.25\"} 0"));
        assert!(text.contains("node_shell_sign_latency_seconds_bucket{le=\"0.5\"} 1"));
        assert!(text.contains("node_shell_sign_latency_seconds_bucket{le=\"+Inf\"} 1"));
        assert!(text.contains("node_shell_sign_latency_seconds_count 1"));
    }
}
