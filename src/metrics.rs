//! Prometheus metrics served at `/metrics` on the app-server. Counters and
//! histograms are atomics updated where things happen (cheap enough to
//! leave on); gauges that describe current state (connections, QR sessions,
//! memory) are read when scraped.

use std::borrow::Cow;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PlatformLabel {
    pub platform: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

pub struct Metrics {
    registry: Registry,
    /// Messages committed (chat messages, notifications, system messages).
    pub messages_stored: Counter,
    /// Frames pushed to connections (`msg`, receipts, presence…).
    pub deliveries: Counter,
    /// Messages per group commit.
    pub commit_batch: Histogram,
    /// Seconds per group commit (the SQLite transaction).
    pub commit_seconds: Histogram,
    pub sms_sent: Counter,
    /// Logins by kind (`sms`, `qr`).
    pub logins: Family<KindLabel, Counter>,
    /// Faults injected on purpose (`imctl chaos`), by kind.
    faults: Family<KindLabel, Counter>,
    connections: Family<PlatformLabel, Gauge>,
    qr_sessions: Family<StateLabel, Gauge>,
    resident_bytes: Gauge,
    /// One scrape at a time: `render` clears and refills the gauges.
    scrape: std::sync::Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::labelled(None)
    }
}

impl Metrics {
    /// Metrics whose every series carries `node="NAME"` (a cluster's node),
    /// so one Prometheus can scrape every node and tell them apart.
    pub fn for_node(node: &str) -> Self {
        Self::labelled(Some(node))
    }

    fn labelled(node: Option<&str>) -> Self {
        let labels = node.map(|n| (Cow::Borrowed("node"), Cow::Owned(n.to_owned())));
        let mut registry = Registry::with_prefix_and_labels("imctl", labels.into_iter());
        let messages_stored = Counter::default();
        registry.register(
            "messages_stored",
            "Messages committed to the store",
            messages_stored.clone(),
        );
        let deliveries = Counter::default();
        registry.register(
            "deliveries",
            "Frames pushed to connections",
            deliveries.clone(),
        );
        let commit_batch = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "commit_batch_size",
            "Messages per group commit",
            commit_batch.clone(),
        );
        let commit_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        registry.register(
            "commit_seconds",
            "Duration of a group commit",
            commit_seconds.clone(),
        );
        let sms_sent = Counter::default();
        registry.register("sms_sent", "SMS codes sent", sms_sent.clone());
        let logins = Family::<KindLabel, Counter>::default();
        registry.register("logins", "Successful logins by kind", logins.clone());
        let faults = Family::<KindLabel, Counter>::default();
        registry.register(
            "faults_injected",
            "Faults injected on purpose (imctl chaos), by kind",
            faults.clone(),
        );
        let connections = Family::<PlatformLabel, Gauge>::default();
        registry.register(
            "connections",
            "Connected WebSockets by platform",
            connections.clone(),
        );
        let qr_sessions = Family::<StateLabel, Gauge>::default();
        registry.register(
            "qr_sessions",
            "Live QR login sessions by state",
            qr_sessions.clone(),
        );
        let resident_bytes = Gauge::default();
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of the imctl process",
            resident_bytes.clone(),
        );
        Self {
            registry,
            messages_stored,
            deliveries,
            commit_batch,
            commit_seconds,
            sms_sent,
            logins,
            faults,
            connections,
            qr_sessions,
            resident_bytes,
            scrape: std::sync::Mutex::new(()),
        }
    }
}

impl Metrics {
    pub fn login(&self, kind: &str) {
        self.logins
            .get_or_create(&KindLabel { kind: kind.into() })
            .inc();
    }

    pub fn fault(&self, kind: &str) {
        self.faults
            .get_or_create(&KindLabel { kind: kind.into() })
            .inc();
    }

    /// The text exposition, with the current-state gauges filled in from
    /// `platforms` (one entry per connection) and `qr_states` (one per session).
    pub fn render(
        &self,
        platforms: impl IntoIterator<Item = i32>,
        qr_states: impl IntoIterator<Item = &'static str>,
    ) -> String {
        let _one = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        self.connections.clear();
        for p in platforms {
            self.connections
                .get_or_create(&PlatformLabel {
                    platform: platform_name(p).into(),
                })
                .inc();
        }
        self.qr_sessions.clear();
        for s in qr_states {
            self.qr_sessions
                .get_or_create(&StateLabel { state: s.into() })
                .inc();
        }
        if let Some(rss) = resident_bytes() {
            self.resident_bytes.set(rss);
        }
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// Wildfire's platform numbers, as label values.
pub fn platform_name(p: i32) -> &'static str {
    match p {
        1 => "ios",
        2 => "android",
        3 => "windows",
        4 => "macos",
        5 => "web",
        6 => "wechat",
        7 => "linux",
        8 => "ipad",
        9 => "apad",
        _ => "other",
    }
}

/// The process's resident memory, from /proc (Linux only).
pub fn resident_bytes() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: i64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_current_state() {
        let m = Metrics::default();
        m.messages_stored.inc_by(3);
        m.commit_batch.observe(3.0);
        m.sms_sent.inc();
        m.login("sms");
        let text = m.render([2, 2, 5], ["waiting", "scanned"]);
        assert!(text.contains("imctl_messages_stored_total 3"), "{text}");
        assert!(text.contains("imctl_commit_batch_size_count 1"), "{text}");
        assert!(text.contains("imctl_sms_sent_total 1"), "{text}");
        assert!(
            text.contains("imctl_logins_total{kind=\"sms\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("imctl_connections{platform=\"android\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("imctl_connections{platform=\"web\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("imctl_qr_sessions{state=\"scanned\"} 1"),
            "{text}"
        );
        // Gauges follow the current state: a platform with no connection goes.
        let text = m.render([5], []);
        assert!(!text.contains("platform=\"android\""), "{text}");
        assert!(!text.contains("imctl_qr_sessions{"), "{text}");
    }

    #[test]
    fn a_clusters_node_labels_every_series() {
        let m = Metrics::for_node("n2");
        m.messages_stored.inc();
        let text = m.render([5], []);
        assert!(
            text.contains("imctl_messages_stored_total{node=\"n2\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("imctl_connections{node=\"n2\",platform=\"web\"} 1")
                || text.contains("imctl_connections{platform=\"web\",node=\"n2\"} 1"),
            "{text}"
        );
    }
}
