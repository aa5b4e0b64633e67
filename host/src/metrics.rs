//! Prometheus metrics: what the host counts as it serves, and the text exposition at
//! `/metrics` (behind the admin token, or on `--metrics-listen` without one).
//!
//! Counters and histograms live here and are fed where things happen (requests, events,
//! commits, messages, alarms, outbound calls); gauges of what the host holds right now are read
//! from their owners at each scrape. Labels are namespaces (or apps) that an admin deployed,
//! never names a client chose, so that no client can grow the series without bound.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::time::Duration;

/// The label of most series: a deployed namespace, or an app for its worker.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamespaceLabel {
    pub namespace: String,
}

/// A request's answer: its status and, for an error, its code (`""` for none).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `""` when the request reached no deployed namespace.
    pub namespace: String,
    pub status: u16,
    pub code: String,
}

/// An event of an object: `kind` is `request`, `message` (a socket's event) or `alarm`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub namespace: String,
    pub kind: &'static str,
}

/// WebSocket messages by direction, `in` (from clients) or `out` (to them).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MessageLabels {
    pub namespace: String,
    pub direction: &'static str,
}

/// An alarm delivery's outcome: `fired` (handled, or found no longer set), `retried` (failed,
/// delivered again later), `dropped` (failed too often) or `refused` (the host had no room; again
/// in a second or two).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlarmLabels {
    pub namespace: String,
    pub outcome: &'static str,
}

/// An outbound HTTP request's outcome: `ok` (a response came) or the error's name
/// (`ConnectionRefused`, `ConnectionTimeout`, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutboundLabels {
    pub app: String,
    pub outcome: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// 100 µs to about 100 s, by factors of 2.5: an event, a commit, a wait in a queue.
pub fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.5, 16))
}

/// What the host counts as it serves. Cheap to clone: every instrument is shared.
#[derive(Clone)]
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    /// Wall time of an event, from its loop taking it up to its result (the output gate after
    /// it is in `commit_seconds`).
    pub event_seconds: Histograms<EventLabels>,
    /// Guest CPU of an event, from its fuel (10 million instructions a millisecond).
    pub event_cpu_seconds: Histograms<EventLabels>,
    /// Time an event waited in its object's queue before its loop took it.
    pub queue_seconds: Histograms<NamespaceLabel>,
    pub messages: Family<MessageLabels, Counter>,
    pub alarms: Family<AlarmLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::default(),
            event_seconds: Family::new_with_constructor(seconds_histogram),
            event_cpu_seconds: Family::new_with_constructor(seconds_histogram),
            queue_seconds: Family::new_with_constructor(seconds_histogram),
            messages: Family::default(),
            alarms: Family::default(),
        }
    }
}

impl Metrics {
    /// Counts an event of `namespace` that took `wall` and burned `fuel`.
    pub fn event(&self, namespace: &str, kind: &'static str, wall: Duration, fuel: u64) {
        let labels = EventLabels {
            namespace: namespace.to_owned(),
            kind,
        };
        self.event_seconds
            .get_or_create(&labels)
            .observe(wall.as_secs_f64());
        let cpu_ms = fuel as f64 / crate::config::FUEL_PER_MS as f64;
        self.event_cpu_seconds
            .get_or_create(&labels)
            .observe(cpu_ms / 1000.0);
    }

    /// Counts a WebSocket message of `namespace`'s objects.
    pub fn message(&self, namespace: &str, direction: &'static str) {
        self.messages
            .get_or_create(&MessageLabels {
                namespace: namespace.to_owned(),
                direction,
            })
            .inc();
    }

    /// Counts an alarm delivery's outcome.
    pub fn alarm(&self, namespace: &str, outcome: &'static str) {
        self.alarms
            .get_or_create(&AlarmLabels {
                namespace: namespace.to_owned(),
                outcome,
            })
            .inc();
    }

    /// The registry of every series: these instruments, and `now`'s gauges.
    pub fn registry(&self, now: &Now) -> Registry {
        let mut r = Registry::with_prefix("dohost");
        r.register(
            "requests",
            "Requests answered, by namespace, status and error code",
            self.requests.clone(),
        );
        r.register_with_unit(
            "event",
            "Wall time of objects' events",
            Unit::Seconds,
            self.event_seconds.clone(),
        );
        r.register_with_unit(
            "event_cpu",
            "Guest CPU time of objects' events, from their fuel",
            Unit::Seconds,
            self.event_cpu_seconds.clone(),
        );
        r.register_with_unit(
            "queue_wait",
            "Time events waited in their object's queue",
            Unit::Seconds,
            self.queue_seconds.clone(),
        );
        r.register(
            "websocket_messages",
            "WebSocket messages, by direction",
            self.messages.clone(),
        );
        r.register(
            "alarm_deliveries",
            "Alarm deliveries, by outcome",
            self.alarms.clone(),
        );
        now.register(&mut r);
        r
    }
}

/// A cluster's node at the moment of a scrape.
pub struct ClusterNow {
    /// Shards this node owns.
    pub shards: u64,
    /// Whether its lease is fresh (it serves its shards).
    pub lease_fresh: bool,
    /// Requests (and WebSocket upgrades) forwarded to other nodes since start.
    pub forwarded_requests: u64,
    /// Stub calls made to objects on other nodes since start.
    pub forwarded_calls: u64,
}

/// What the host holds at the moment of a scrape.
pub struct Now {
    pub live_instances: usize,
    pub awake_objects: usize,
    pub instance_memory_bytes: usize,
    pub open_sockets: usize,
    pub socket_bytes_waiting: usize,
    pub pending_alarms: usize,
    pub overloaded: u64,
    pub failed_commits: u64,
    /// Object commits made durable since start.
    pub commits: u64,
    /// Each group commit's transaction time (the committer's own histogram).
    pub commit_seconds: Histogram,
    pub storage_full: bool,
    /// Commits the cluster's fence refused (none without a cluster).
    pub fenced_commits: u64,
    /// A cluster's node: what it owns and forwards.
    pub cluster: Option<ClusterNow>,
    /// Bytes stored per deployed namespace.
    pub storage_bytes: Vec<(String, u64)>,
    /// Deployed namespaces whose events run in the background class now.
    pub background: Vec<String>,
    /// Outbound HTTP requests sent (the runtime's own counters).
    pub outbound: Family<OutboundLabels, Counter>,
}

impl Now {
    fn register(&self, r: &mut Registry) {
        let gauge = |value: u64| {
            let g: Gauge = Gauge::default();
            g.set(i64::try_from(value).unwrap_or(i64::MAX));
            g
        };
        let size = |n: usize| gauge(n as u64);
        r.register(
            "live_instances",
            "Objects' and workers' live instances",
            size(self.live_instances),
        );
        r.register(
            "awake_objects",
            "Objects with an event loop (a live instance, queued events or commits in flight)",
            size(self.awake_objects),
        );
        r.register_with_unit(
            "instance_memory",
            "Linear memory of all live instances",
            Unit::Bytes,
            size(self.instance_memory_bytes),
        );
        r.register(
            "open_sockets",
            "Open WebSockets and response streams",
            size(self.open_sockets),
        );
        r.register_with_unit(
            "socket_waiting",
            "Bytes sent to sockets and not yet written to their clients",
            Unit::Bytes,
            size(self.socket_bytes_waiting),
        );
        r.register(
            "pending_alarms",
            "Alarms set and not yet delivered",
            size(self.pending_alarms),
        );
        let overloaded: Counter = Counter::default();
        overloaded.inc_by(self.overloaded);
        r.register("overloaded", "Events refused as overloaded", overloaded);
        let commits: Counter = Counter::default();
        commits.inc_by(self.commits);
        r.register("commits", "Object commits made durable", commits);
        r.register_with_unit(
            "commit_batch",
            "Time of each group commit's transaction, fsync included",
            Unit::Seconds,
            self.commit_seconds.clone(),
        );
        let failed: Counter = Counter::default();
        failed.inc_by(self.failed_commits);
        r.register(
            "failed_commits",
            "Commits not made durable, failed or refused",
            failed,
        );
        r.register(
            "storage_full",
            "1 while the last commit failed for want of disk space",
            gauge(u64::from(self.storage_full)),
        );
        let fenced: Counter = Counter::default();
        fenced.inc_by(self.fenced_commits);
        r.register(
            "fenced_commits",
            "Commits the cluster's fence refused: their object had moved to another node",
            fenced,
        );
        if let Some(cluster) = &self.cluster {
            r.register(
                "cluster_shards",
                "Shards this node owns",
                gauge(cluster.shards),
            );
            r.register(
                "cluster_lease_fresh",
                "1 while this node's lease is fresh and it serves its shards",
                gauge(u64::from(cluster.lease_fresh)),
            );
            let requests: Counter = Counter::default();
            requests.inc_by(cluster.forwarded_requests);
            r.register(
                "cluster_forwarded_requests",
                "Requests and WebSocket upgrades forwarded to the node that serves their object",
                requests,
            );
            let calls: Counter = Counter::default();
            calls.inc_by(cluster.forwarded_calls);
            r.register(
                "cluster_forwarded_calls",
                "Stub calls made to objects another node serves",
                calls,
            );
        }
        let bytes: Family<NamespaceLabel, Gauge> = Family::default();
        for (namespace, size) in &self.storage_bytes {
            let label = NamespaceLabel {
                namespace: namespace.clone(),
            };
            bytes
                .get_or_create(&label)
                .set(i64::try_from(*size).unwrap_or(i64::MAX));
        }
        r.register_with_unit(
            "storage",
            "Bytes stored (keys plus values) by each namespace's objects",
            Unit::Bytes,
            bytes,
        );
        r.register(
            "outbound_requests",
            "Outbound HTTP requests sent, by app (\"\" for a lone class) and outcome",
            self.outbound.clone(),
        );
        let background: Family<NamespaceLabel, Gauge> = Family::default();
        for namespace in &self.background {
            let label = NamespaceLabel {
                namespace: namespace.clone(),
            };
            background.get_or_create(&label).set(1);
        }
        r.register(
            "background",
            "1 for a namespace whose events run in the background class now",
            background,
        );
    }
}

/// The text exposition of `metrics` and `now`.
pub fn render(metrics: &Metrics, now: &Now) -> String {
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &metrics.registry(now));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scrape with one series in every family.
    fn every_family() -> String {
        let metrics = Metrics::default();
        metrics
            .requests
            .get_or_create(&RequestLabels {
                namespace: "ns".into(),
                status: 200,
                code: String::new(),
            })
            .inc();
        metrics.event("ns", "request", Duration::from_millis(1), 10_000);
        metrics
            .queue_seconds
            .get_or_create(&NamespaceLabel {
                namespace: "ns".into(),
            })
            .observe(0.001);
        metrics.message("ns", "in");
        metrics.alarm("ns", "fired");
        let outbound: Family<OutboundLabels, Counter> = Family::default();
        outbound
            .get_or_create(&OutboundLabels {
                app: "app".into(),
                outcome: "ok".into(),
            })
            .inc();
        let now = Now {
            live_instances: 1,
            awake_objects: 1,
            instance_memory_bytes: 1,
            open_sockets: 1,
            socket_bytes_waiting: 0,
            pending_alarms: 0,
            overloaded: 0,
            failed_commits: 0,
            commits: 1,
            commit_seconds: seconds_histogram(),
            storage_full: false,
            fenced_commits: 0,
            cluster: Some(ClusterNow {
                shards: 1,
                lease_fresh: true,
                forwarded_requests: 1,
                forwarded_calls: 1,
            }),
            storage_bytes: vec![("ns".into(), 1)],
            background: vec!["ns".into()],
            outbound,
        };
        render(&metrics, &now)
    }

    /// Every series the Grafana dashboard in `ops/` asks for is one the host exposes.
    #[test]
    fn the_dashboard_asks_only_for_series_the_host_exposes() {
        let text = every_family();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../ops/grafana-dashboard.json");
        let dashboard: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mut asked = 0;
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                for (at, _) in expr.match_indices("dohost_") {
                    let name: String = expr[at..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    let exposed = text.lines().any(|l| {
                        l.strip_prefix(&name)
                            .is_some_and(|rest| rest.starts_with(['{', ' ']))
                    });
                    assert!(
                        exposed,
                        "the dashboard asks for {name}, which is not exposed"
                    );
                    asked += 1;
                }
            }
        }
        assert!(asked >= 12, "the dashboard asks for only {asked} series");
    }
}
