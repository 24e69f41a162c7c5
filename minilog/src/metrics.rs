//! Prometheus metrics for `/metrics` on the admin port.
//!
//! Counters are bumped on the produce and fetch paths; the log end offsets and the
//! consumer-group lag are gauges refreshed from live state right before each scrape,
//! so they cost nothing between scrapes.

use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// The broker's metrics and the registry that exposes them.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    bytes_in: IntCounterVec,
    records_in: IntCounterVec,
    bytes_out: IntCounterVec,
    records_out: IntCounterVec,
    request_seconds: HistogramVec,
    pub log_end_offset: IntGaugeVec,
    pub log_start_offset: IntGaugeVec,
    pub log_size_bytes: IntGaugeVec,
    pub group_lag: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &["topic"]).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        let request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "minilog_request_duration_seconds",
                "Time from decoded request to encoded response, by API.",
            )
            .buckets(vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0]),
            &["api"],
        )
        .expect("valid metric");
        registry.register(Box::new(request_seconds.clone())).expect("unique metric");
        Metrics {
            bytes_in: counter("minilog_bytes_in_total", "Record batch bytes appended, by topic."),
            records_in: counter("minilog_records_in_total", "Records appended, by topic."),
            bytes_out: counter("minilog_bytes_out_total", "Record batch bytes served to fetches, by topic."),
            records_out: counter("minilog_records_out_total", "Records served to fetches, by topic."),
            request_seconds,
            log_end_offset: gauge("minilog_log_end_offset", "Next offset to be written.", &["topic", "partition"]),
            log_start_offset: gauge("minilog_log_start_offset", "First offset still stored.", &["topic", "partition"]),
            log_size_bytes: gauge("minilog_log_size_bytes", "Bytes of segments on disk.", &["topic", "partition"]),
            group_lag: gauge(
                "minilog_consumer_group_lag",
                "Log end offset minus the group's committed offset.",
                &["group", "topic", "partition"],
            ),
            registry,
        }
    }

    pub fn record_in(&self, topic: &str, bytes: u64, records: u64) {
        self.bytes_in.with_label_values(&[topic]).inc_by(bytes);
        self.records_in.with_label_values(&[topic]).inc_by(records);
    }

    pub fn record_out(&self, topic: &str, bytes: u64, records: u64) {
        self.bytes_out.with_label_values(&[topic]).inc_by(bytes);
        self.records_out.with_label_values(&[topic]).inc_by(records);
    }

    pub fn observe_request(&self, api: ApiKey, elapsed: Duration) {
        self.request_seconds.with_label_values(&[&format!("{api:?}")]).observe(elapsed.as_secs_f64());
    }

    /// Drops a deleted topic's series.
    pub fn forget_topic(&self, topic: &str) {
        for c in [&self.bytes_in, &self.records_in, &self.bytes_out, &self.records_out] {
            let _ = c.remove_label_values(&[topic]);
        }
        self.log_end_offset.reset();
        self.log_start_offset.reset();
        self.log_size_bytes.reset();
        self.group_lag.reset();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
