//! Prometheus metrics at `GET /metrics`, kept in a [`prometheus_client`] registry and
//! rendered in the Prometheus text exposition format (version 0.0.4).
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `node_shell_signatures_total` | counter | signatures produced and verified |
//! | `node_shell_sign_failures_total` | counter | signing runs that failed |
//! | `node_shell_proposals_rejected_total` | counter | proposals from peers this node refused (also replays of runs it already had) |
//! | `node_shell_http_bad_requests_total` | counter | HTTP requests answered with a 4xx |
//! | `node_shell_sessions_total{protocol}` | counter | protocol runs started (`keygen`, `sign`, `reshare`) |
//! | `node_shell_session_failures_total{protocol}` | counter | protocol runs that failed |
//! | `node_shell_pool_members{key}` | gauge | members of the sequencer pool committed with key `key` |
//! | `node_shell_has_key{key}` | gauge | 1 if this node holds a share of `key` |
//! | `node_shell_key_generation{key}` | gauge | generation of the held share of `key` |
//! | `node_shell_epoch` | gauge | current epoch |
//! | `node_shell_is_block_producer{key}` | gauge | 1 if this node produces blocks this epoch (by `key`'s committed pool) |
//! | `node_shell_sign_latency_seconds` | histogram | latency of signing runs |
//! | `node_shell_batches_total{key,stage}` | counter | this node's batches as producer for `key`'s inbox, by stage: `proposed`, `signed`, `submitted`, `included`, `reverted` |
//! | `node_shell_producer_fallback_level{key}` | gauge | failover level of the current batch's producer on `key`'s inbox (0: the epoch's own producer) |
//! | `node_shell_producer_stalls_total{key}` | counter | times this node saw `key`'s producer schedule move to a fallback (a stall) |
//! | `node_shell_presignatures_ready{key}` | gauge | presignatures of `key` of this node's own ready for its next signing requests |
//! | `node_shell_signers_skipped_total{member}` | counter | signing runs this node proposed that were abandoned because of `member` (silent, cut off, refusing or failing), so another set signed |
//!
//! `key` is the key id: a node serves one or more keys (`[[keys]]` in the config), and
//! each has its own series, created when the node starts.
//!
//! With a libp2p transport ([`Metrics::watch_transport`]; `node-shell run` and the devnet
//! set it), the transport's limits and faults too, read from [`Libp2pStats`] at each scrape:
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `node_shell_transport_dropped_total{reason}` | counter | messages or frames the transport dropped, by the limit or check that dropped them (below) |
//! | `node_shell_transport_early_held_messages` | gauge | messages held now for sessions this node has not opened yet (all peers) |
//! | `node_shell_transport_early_held_bytes` | gauge | their payload bytes |
//! | `node_shell_transport_frames_sent_total` | counter | frames sent (first sends) |
//! | `node_shell_transport_frames_delivered_total` | counter | frames the session table accepted |
//! | `node_shell_transport_frames_retransmitted_total` | counter | frames sent again after a connection broke before they were acknowledged |
//! | `node_shell_transport_keepalive_failures_total` | counter | connections closed because pings went unanswered |
//!
//! The `reason`s (each a limit of [`transport::HubLimits`] or [`transport::Libp2pConfig`],
//! all per peer, so a flooding peer loses its own messages only): `early_bytes`,
//! `early_messages`, `early_sessions` (a peer's quota for messages to sessions not opened
//! yet), `early_expired` (held longer than `early_ttl`), `early_not_expected` (sender not
//! a participant of an announced session), `inbox_bytes`, `inbox_messages` (a sender's
//! share of an open session's inbox), `queue_full` (outgoing queue to a peer),
//! `malformed` and `oversized` (frames that do not decode or are over the size limit),
//! `unknown_peer` (connections or streams from peers outside the known set), `duplicate`
//! (retransmissions of frames already delivered).

use std::fmt::Write;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use transport::Libp2pStats;

use prometheus_client::encoding::{
    prometheus_text, EncodeLabelSet, EncodeLabelValue, LabelValueEncoder,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Upper bounds (seconds) of the signing latency histogram buckets.
const LATENCY_BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Protocol kinds counted separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// Key generation.
    Keygen,
    /// Signing.
    Sign,
    /// Resharing.
    Reshare,
}

impl Protocol {
    const ALL: [Protocol; 3] = [Protocol::Keygen, Protocol::Sign, Protocol::Reshare];

    fn label(self) -> &'static str {
        match self {
            Protocol::Keygen => "keygen",
            Protocol::Sign => "sign",
            Protocol::Reshare => "reshare",
        }
    }
}

impl EncodeLabelValue for Protocol {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(self.label())
    }
}

/// Stages of a batch this node produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BatchStage {
    /// Proposed to the pool for signing.
    Proposed,
    /// Signed by the pool.
    Signed,
    /// Sent to L1 (`eth_sendRawTransaction` accepted it).
    Submitted,
    /// Mined with status success.
    Included,
    /// Mined and reverted.
    Reverted,
}

impl BatchStage {
    const ALL: [BatchStage; 5] = [
        BatchStage::Proposed,
        BatchStage::Signed,
        BatchStage::Submitted,
        BatchStage::Included,
        BatchStage::Reverted,
    ];

    fn label(self) -> &'static str {
        match self {
            BatchStage::Proposed => "proposed",
            BatchStage::Signed => "signed",
            BatchStage::Submitted => "submitted",
            BatchStage::Included => "included",
            BatchStage::Reverted => "reverted",
        }
    }
}

impl EncodeLabelValue for BatchStage {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(self.label())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StageLabel {
    key: String,
    stage: BatchStage,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KeyLabel {
    key: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ProtocolLabel {
    protocol: Protocol,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MemberLabel {
    member: String,
}

type U64Gauge = Gauge<u64, AtomicU64>;

/// Why the transport dropped something (`reason` of `node_shell_transport_dropped_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum DropReason {
    EarlyBytes,
    EarlyMessages,
    EarlySessions,
    EarlyExpired,
    EarlyNotExpected,
    InboxBytes,
    InboxMessages,
    QueueFull,
    Malformed,
    Oversized,
    UnknownPeer,
    Duplicate,
}

impl DropReason {
    /// Every reason with its count in `s`.
    fn counts(s: &Libp2pStats) -> [(DropReason, u64); 12] {
        let h = &s.sessions;
        [
            (DropReason::EarlyBytes, h.early_dropped_bytes),
            (DropReason::EarlyMessages, h.early_dropped_messages),
            (DropReason::EarlySessions, h.early_dropped_sessions),
            (DropReason::EarlyExpired, h.early_expired),
            (DropReason::EarlyNotExpected, h.early_dropped_not_expected),
            (DropReason::InboxBytes, h.inbox_dropped_bytes),
            (DropReason::InboxMessages, h.inbox_dropped_messages),
            (DropReason::QueueFull, s.dropped_queue_full),
            (DropReason::Malformed, s.malformed_frames),
            (DropReason::Oversized, s.oversized_frames),
            (DropReason::UnknownPeer, s.unknown_peer_refused),
            (DropReason::Duplicate, s.duplicates_dropped),
        ]
    }

    fn label(self) -> &'static str {
        match self {
            DropReason::EarlyBytes => "early_bytes",
            DropReason::EarlyMessages => "early_messages",
            DropReason::EarlySessions => "early_sessions",
            DropReason::EarlyExpired => "early_expired",
            DropReason::EarlyNotExpected => "early_not_expected",
            DropReason::InboxBytes => "inbox_bytes",
            DropReason::InboxMessages => "inbox_messages",
            DropReason::QueueFull => "queue_full",
            DropReason::Malformed => "malformed",
            DropReason::Oversized => "oversized",
            DropReason::UnknownPeer => "unknown_peer",
            DropReason::Duplicate => "duplicate",
        }
    }
}

impl EncodeLabelValue for DropReason {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(self.label())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: DropReason,
}

/// Where the transport's counters are read from at each scrape.
type StatsSource = Arc<dyn Fn() -> Libp2pStats + Send + Sync>;

/// The transport's metrics, brought up to date from its [`Libp2pStats`] at each render.
struct TransportMetrics {
    source: Mutex<Option<StatsSource>>,
    dropped: Family<ReasonLabel, Counter>,
    early_held_messages: U64Gauge,
    early_held_bytes: U64Gauge,
    frames_sent: Counter,
    frames_delivered: Counter,
    frames_retransmitted: Counter,
    keepalive_failures: Counter,
}

impl TransportMetrics {
    fn register(registry: &mut Registry) -> Self {
        let registry = registry.sub_registry_with_prefix("transport");
        let dropped = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "dropped",
            "Messages or frames the transport dropped, by the limit or check that dropped them",
            dropped.clone(),
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let g = U64Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        Self {
            source: Mutex::new(None),
            dropped,
            early_held_messages: gauge(
                registry,
                "early_held_messages",
                "Messages held now for sessions this node has not opened yet",
            ),
            early_held_bytes: gauge(
                registry,
                "early_held_bytes",
                "Payload bytes held now for sessions this node has not opened yet",
            ),
            frames_sent: counter(registry, "frames_sent", "Frames sent (first sends)"),
            frames_delivered: counter(
                registry,
                "frames_delivered",
                "Frames the session table accepted",
            ),
            frames_retransmitted: counter(
                registry,
                "frames_retransmitted",
                "Frames sent again after a connection broke before they were acknowledged",
            ),
            keepalive_failures: counter(
                registry,
                "keepalive_failures",
                "Connections closed because pings went unanswered",
            ),
        }
    }

    /// Reads the source (if any) and moves every metric to its figures.
    fn refresh(&self) {
        let source = self.source.lock();
        let Some(source) = source.as_ref() else {
            return;
        };
        let stats = source();
        // Counters only move forward: add what is new since the last scrape (the lock
        // keeps two scrapes from adding it twice).
        let advance = |c: &Counter, now: u64| {
            let before = c.get();
            if now > before {
                c.inc_by(now - before);
            }
        };
        for (reason, count) in DropReason::counts(&stats) {
            advance(&self.dropped.get_or_create(&ReasonLabel { reason }), count);
        }
        advance(&self.frames_sent, stats.frames_sent);
        advance(&self.frames_delivered, stats.frames_delivered);
        advance(&self.frames_retransmitted, stats.frames_retransmitted);
        advance(&self.keepalive_failures, stats.keepalive_failures);
        self.early_held_messages
            .set(stats.sessions.early_held_messages);
        self.early_held_bytes.set(stats.sessions.early_held_bytes);
    }
}

/// The node's counters, gauges and histogram, and the registry that renders them.
pub struct Metrics {
    registry: Registry,
    signatures: Counter,
    sign_failures: Counter,
    sessions_started: Family<ProtocolLabel, Counter>,
    sessions_failed: Family<ProtocolLabel, Counter>,
    proposals_rejected: Counter,
    http_bad_requests: Counter,
    pool_members: Family<KeyLabel, U64Gauge>,
    key_generation: Family<KeyLabel, U64Gauge>,
    has_key: Family<KeyLabel, U64Gauge>,
    epoch: U64Gauge,
    is_producer: Family<KeyLabel, U64Gauge>,
    sign_latency: Histogram,
    batches: Family<StageLabel, Counter>,
    fallback_level: Family<KeyLabel, U64Gauge>,
    stalls: Family<KeyLabel, Counter>,
    signers_skipped: Family<MemberLabel, Counter>,
    presignatures_ready: Family<KeyLabel, U64Gauge>,
    transport: TransportMetrics,
}

/// The series of one key (see [`Metrics::for_key`]). Cheap to clone.
#[derive(Clone)]
pub struct KeyMetrics {
    pool_members: U64Gauge,
    key_generation: U64Gauge,
    has_key: U64Gauge,
    is_producer: U64Gauge,
    batches: Vec<(BatchStage, Counter)>,
    fallback_level: U64Gauge,
    stalls: Counter,
    presignatures_ready: U64Gauge,
}

impl std::fmt::Debug for KeyMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyMetrics")
    }
}

impl KeyMetrics {
    /// How many presignatures of this node's own are ready.
    pub fn set_presignatures_ready(&self, n: usize) {
        self.presignatures_ready.set(n as u64);
    }
    /// Updates the key's gauges: members of its committed pool, the generation of the
    /// share held (`None`: none), and whether this node produces blocks this epoch.
    pub fn set_state(&self, members: usize, generation: Option<u64>, producer: bool) {
        self.pool_members.set(members as u64);
        self.has_key.set(u64::from(generation.is_some()));
        self.key_generation.set(generation.unwrap_or(0));
        self.is_producer.set(u64::from(producer));
    }
    /// One of this node's batches reached `stage`.
    pub fn batch(&self, stage: BatchStage) {
        if let Some((_, c)) = self.batches.iter().find(|(s, _)| *s == stage) {
            c.inc();
        }
    }
    /// How many of this node's batches reached `stage`.
    pub fn batches(&self, stage: BatchStage) -> u64 {
        self.batches
            .iter()
            .find(|(s, _)| *s == stage)
            .map_or(0, |(_, c)| c.get())
    }
    /// The producer schedule's failover level now; a rise from 0 counts as a stall.
    pub fn set_fallback_level(&self, level: u64) {
        let before = self.fallback_level.get();
        if before == 0 && level > 0 {
            self.stalls.inc();
        }
        self.fallback_level.set(level);
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric at zero, registered under the `node_shell_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("node_shell");
        // Registered names omit `_total` (counters) and `_seconds` (the unit): the encoder
        // appends them. The encoder also ends each help text with a period.
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let g = U64Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let per_protocol = |registry: &mut Registry, name: &str, help: &str| {
            let family = Family::<ProtocolLabel, Counter>::default();
            // Every protocol shows up from the start, at 0.
            for protocol in Protocol::ALL {
                drop(family.get_or_create(&ProtocolLabel { protocol }));
            }
            registry.register(name, help, family.clone());
            family
        };
        let signatures = counter(
            &mut registry,
            "signatures",
            "Signatures produced and verified",
        );
        let sign_failures = counter(&mut registry, "sign_failures", "Signing runs that failed");
        let proposals_rejected = counter(
            &mut registry,
            "proposals_rejected",
            "Proposals from peers this node refused",
        );
        let http_bad_requests = counter(
            &mut registry,
            "http_bad_requests",
            "HTTP requests answered with a 4xx",
        );
        let sessions_started = per_protocol(&mut registry, "sessions", "Protocol runs started");
        let sessions_failed = per_protocol(
            &mut registry,
            "session_failures",
            "Protocol runs that failed",
        );
        let per_key = |registry: &mut Registry, name: &str, help: &str| {
            let family = Family::<KeyLabel, U64Gauge>::default();
            registry.register(name, help, family.clone());
            family
        };
        let pool_members = per_key(
            &mut registry,
            "pool_members",
            "Members of the sequencer pool committed with the key",
        );
        let has_key = per_key(
            &mut registry,
            "has_key",
            "1 if this node holds a share of the key",
        );
        let key_generation = per_key(
            &mut registry,
            "key_generation",
            "Generation of the held share of the key",
        );
        let epoch = gauge(&mut registry, "epoch", "Current epoch");
        let is_producer = per_key(
            &mut registry,
            "is_block_producer",
            "1 if this node produces blocks this epoch",
        );
        let sign_latency = Histogram::new(LATENCY_BUCKETS);
        registry.register_with_unit(
            "sign_latency",
            "Latency of signing runs coordinated or joined by this node",
            Unit::Seconds,
            sign_latency.clone(),
        );
        let batches = Family::<StageLabel, Counter>::default();
        registry.register(
            "batches",
            "This node's batches as producer, by stage",
            batches.clone(),
        );
        let fallback_level = per_key(
            &mut registry,
            "producer_fallback_level",
            "Failover level of the current batch's producer (0: the epoch's own producer)",
        );
        let stalls = Family::<KeyLabel, Counter>::default();
        registry.register(
            "producer_stalls",
            "Times the producer schedule moved to a fallback",
            stalls.clone(),
        );
        let signers_skipped = Family::<MemberLabel, Counter>::default();
        registry.register(
            "signers_skipped",
            "Signing runs proposed here abandoned because of a member (silent, cut off, refusing or failing)",
            signers_skipped.clone(),
        );
        let presignatures_ready = per_key(
            &mut registry,
            "presignatures_ready",
            "Presignatures of this node's own ready for its next signing requests",
        );
        let transport = TransportMetrics::register(&mut registry);
        Self {
            registry,
            transport,
            signers_skipped,
            presignatures_ready,
            batches,
            fallback_level,
            stalls,
            signatures,
            sign_failures,
            sessions_started,
            sessions_failed,
            proposals_rejected,
            http_bad_requests,
            pool_members,
            key_generation,
            has_key,
            epoch,
            is_producer,
            sign_latency,
        }
    }

    /// A protocol run started (as coordinator or participant).
    pub fn session_started(&self, p: Protocol) {
        self.sessions_started
            .get_or_create(&ProtocolLabel { protocol: p })
            .inc();
    }
    /// A protocol run failed.
    pub fn session_failed(&self, p: Protocol) {
        self.sessions_failed
            .get_or_create(&ProtocolLabel { protocol: p })
            .inc();
        if p == Protocol::Sign {
            self.sign_failures.inc();
        }
    }
    /// A signature was produced (and verified) in `elapsed`.
    pub fn signature_made(&self, elapsed: Duration) {
        self.signatures.inc();
        self.sign_latency.observe(elapsed.as_secs_f64());
    }
    /// The series of key `key` (created at 0 on the first call; the node calls this for
    /// each key it serves when it starts).
    pub fn for_key(&self, key: &str) -> KeyMetrics {
        let label = KeyLabel {
            key: key.to_string(),
        };
        KeyMetrics {
            pool_members: self.pool_members.get_or_create(&label).clone(),
            key_generation: self.key_generation.get_or_create(&label).clone(),
            has_key: self.has_key.get_or_create(&label).clone(),
            is_producer: self.is_producer.get_or_create(&label).clone(),
            batches: BatchStage::ALL
                .iter()
                .map(|&stage| {
                    let c = self
                        .batches
                        .get_or_create(&StageLabel {
                            key: key.to_string(),
                            stage,
                        })
                        .clone();
                    (stage, c)
                })
                .collect(),
            fallback_level: self.fallback_level.get_or_create(&label).clone(),
            stalls: self.stalls.get_or_create(&label).clone(),
            presignatures_ready: self.presignatures_ready.get_or_create(&label).clone(),
        }
    }
    /// A signing run this node proposed was abandoned because of `member`.
    pub fn signer_skipped(&self, member: &transport::NodeId) {
        self.signers_skipped
            .get_or_create(&MemberLabel {
                member: member.to_string(),
            })
            .inc();
    }
    /// This node refused a proposal.
    pub fn proposal_rejected(&self) {
        self.proposals_rejected.inc();
    }
    /// The API answered a 4xx.
    pub fn bad_request(&self) {
        self.http_bad_requests.inc();
    }
    /// Sets the current epoch.
    pub fn set_epoch(&self, epoch: u64) {
        self.epoch.set(epoch);
    }
    /// Signatures produced so far.
    pub fn signatures(&self) -> u64 {
        self.signatures.get()
    }

    /// Reports the transport's limits and faults from now on: `stats` is read at each
    /// [`Metrics::render`] (for a libp2p node, `move || transport.stats()` on a clone of
    /// its [`transport::Libp2pTransport`]). Replaces an earlier source; counters carry on
    /// from where they are.
    pub fn watch_transport(&self, stats: impl Fn() -> Libp2pStats + Send + Sync + 'static) {
        *self.transport.source.lock() = Some(Arc::new(stats));
    }

    /// The Prometheus text exposition (served with [`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        self.transport.refresh();
        let mut out = String::new();
        // Writing to a String cannot fail; an encoder error would leave a partial page.
        if let Err(e) = prometheus_text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
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
        assert!(text.contains("node_shell_sign_latency_seconds_sum 0.3"));
    }

    #[test]
    fn every_family_is_typed_with_its_former_name() {
        let m = Metrics::default();
        // A labelled family shows up once it has a series.
        let key = m.for_key("batches-key");
        key.set_state(4, Some(2), true);
        key.batch(BatchStage::Included);
        key.set_fallback_level(1);
        m.signer_skipped(&transport::NodeId::from_bytes([7; 32]));
        let text = m.render();
        assert!(
            text.contains(&format!(
                "node_shell_signers_skipped_total{{member=\"{}\"}} 1",
                transport::NodeId::from_bytes([7; 32])
            )),
            "{text}"
        );
        for (name, kind) in [
            ("node_shell_signatures_total", "counter"),
            ("node_shell_sign_failures_total", "counter"),
            ("node_shell_proposals_rejected_total", "counter"),
            ("node_shell_http_bad_requests_total", "counter"),
            ("node_shell_sessions_total", "counter"),
            ("node_shell_session_failures_total", "counter"),
            ("node_shell_pool_members", "gauge"),
            ("node_shell_has_key", "gauge"),
            ("node_shell_key_generation", "gauge"),
            ("node_shell_epoch", "gauge"),
            ("node_shell_is_block_producer", "gauge"),
            ("node_shell_sign_latency_seconds", "histogram"),
            ("node_shell_batches_total", "counter"),
            ("node_shell_producer_fallback_level", "gauge"),
            ("node_shell_producer_stalls_total", "counter"),
            ("node_shell_signers_skipped_total", "counter"),
            ("node_shell_presignatures_ready", "gauge"),
        ] {
            assert!(
                text.lines().any(|l| l == format!("# TYPE {name} {kind}")),
                "no {kind} {name} in\n{text}"
            );
        }
        for series in [
            "node_shell_pool_members{key=\"batches-key\"} 4",
            "node_shell_key_generation{key=\"batches-key\"} 2",
            "node_shell_batches_total{key=\"batches-key\",stage=\"included\"} 1",
            "node_shell_batches_total{key=\"batches-key\",stage=\"reverted\"} 0",
            "node_shell_producer_stalls_total{key=\"batches-key\"} 1",
            "node_shell_presignatures_ready{key=\"batches-key\"} 0",
        ] {
            assert!(text.lines().any(|l| l == series), "no {series} in\n{text}");
        }
        // Every protocol is there from the start.
        for p in ["keygen", "sign", "reshare"] {
            assert!(
                text.contains(&format!("node_shell_sessions_total{{protocol=\"{p}\"}} 0")),
                "{text}"
            );
        }
    }
}
