//! The HTTP admin endpoint: minicore's `/metrics`, `/healthz` and `/readyz`, plus JSON
//! endpoints over the dead-letter state.
//!
//! | method | path                | does                                               |
//! |--------|---------------------|----------------------------------------------------|
//! | GET    | `/dlq[?tube=T]`     | lists dead jobs (oldest first) with their history  |
//! | POST   | `/dlq/replay[?tube=T]` | replays every dead job (of one tube) to ready   |
//! | POST   | `/dlq/{id}/replay`  | replays one dead job; 404 if it is not dead        |
//! | POST   | `/dlq/purge[?tube=T]`  | deletes every dead job (of one tube)            |
//!
//! Replays and purges are journaled like the protocol's `kick` and `delete`, and the
//! response is sent only once they are as durable as `-f` promises.
//!
//! Metrics, per tube (label `tube`): `miniqueue_jobs{state}` for ready, reserved,
//! delayed, buried and dead; `miniqueue_puts_total`, `miniqueue_deletes_total`,
//! `miniqueue_retries_total`, `miniqueue_dead_letter_total`, the gauge
//! `miniqueue_dead_letter_jobs` (the dead-letter state's size), and the histogram
//! `miniqueue_put_to_delete_seconds` (a job's whole life, put to delete).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use minicore::admin::Admin;
use parking_lot::Mutex;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use serde_json::json;

use crate::job::NANOS_PER_SEC;
use crate::server::Shared;

/// The Prometheus series. Counters the engine keeps itself (retries, dead letters) are
/// carried over at scrape time by their increase since the last scrape.
pub struct Metrics {
    pub registry: Registry,
    jobs: IntGaugeVec,
    puts: IntCounterVec,
    deletes: IntCounterVec,
    retries: IntCounterVec,
    dead_letters: IntCounterVec,
    dead_letter_jobs: IntGaugeVec,
    put_to_delete: HistogramVec,
    connections: IntGauge,
    wal_bytes: IntGauge,
    /// The record log's own counters since start: their ratio is how many records one
    /// fsync covered, which is group commit at work.
    wal_fsyncs: IntGauge,
    wal_records: IntGauge,
    /// Last scraped (retries, dead) per tube, to turn engine totals into increments.
    last_totals: Mutex<HashMap<String, (u64, u64)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let jobs = IntGaugeVec::new(Opts::new("miniqueue_jobs", "Jobs by tube and state."), &["tube", "state"])
            .expect("valid metric");
        let puts = IntCounterVec::new(Opts::new("miniqueue_puts_total", "Jobs put, by tube."), &["tube"])
            .expect("valid metric");
        let deletes = IntCounterVec::new(Opts::new("miniqueue_deletes_total", "Jobs deleted, by tube."), &["tube"])
            .expect("valid metric");
        let retries =
            IntCounterVec::new(Opts::new("miniqueue_retries_total", "Failures that were retried, by tube."), &["tube"])
                .expect("valid metric");
        let dead_letters = IntCounterVec::new(
            Opts::new("miniqueue_dead_letter_total", "Jobs moved to the dead-letter state, by tube."),
            &["tube"],
        )
        .expect("valid metric");
        let dead_letter_jobs = IntGaugeVec::new(
            Opts::new("miniqueue_dead_letter_jobs", "Jobs in the dead-letter state now, by tube."),
            &["tube"],
        )
        .expect("valid metric");
        let put_to_delete = HistogramVec::new(
            HistogramOpts::new("miniqueue_put_to_delete_seconds", "Time from a job's put to its delete, by tube.")
                .buckets(vec![0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0, 3600.0]),
            &["tube"],
        )
        .expect("valid metric");
        let connections = IntGauge::new("miniqueue_connections", "Open client connections.").expect("valid metric");
        let wal_bytes = IntGauge::new("miniqueue_wal_bytes", "Bytes in write-ahead log files.").expect("valid metric");
        let wal_fsyncs =
            IntGauge::new("miniqueue_wal_fsyncs", "fsyncs of write-ahead log data since start.").expect("valid metric");
        let wal_records =
            IntGauge::new("miniqueue_wal_records", "Records appended to the write-ahead log since start.")
                .expect("valid metric");
        for collector in [
            Box::new(jobs.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(puts.clone()),
            Box::new(deletes.clone()),
            Box::new(retries.clone()),
            Box::new(dead_letters.clone()),
            Box::new(dead_letter_jobs.clone()),
            Box::new(put_to_delete.clone()),
            Box::new(connections.clone()),
            Box::new(wal_bytes.clone()),
            Box::new(wal_fsyncs.clone()),
            Box::new(wal_records.clone()),
        ] {
            registry.register(collector).expect("metric names are unique");
        }
        Metrics {
            registry,
            jobs,
            puts,
            deletes,
            retries,
            dead_letters,
            dead_letter_jobs,
            put_to_delete,
            connections,
            wal_bytes,
            wal_fsyncs,
            wal_records,
            last_totals: Mutex::new(HashMap::new()),
        }
    }

    pub fn observe_put(&self, tube: &str) {
        self.puts.with_label_values(&[tube]).inc();
    }

    pub fn observe_delete(&self, tube: &str, nanos: i64) {
        self.deletes.with_label_values(&[tube]).inc();
        self.put_to_delete.with_label_values(&[tube]).observe(nanos.max(0) as f64 / NANOS_PER_SEC as f64);
    }

    /// Refreshes the gauges from the engine, right before a scrape.
    fn refresh(&self, shared: &Shared) {
        let state = shared.state.lock();
        let engine = &state.engine;
        self.jobs.reset();
        self.dead_letter_jobs.reset();
        let mut last = self.last_totals.lock();
        for tube in engine.tubes.values() {
            let name = &*tube.name;
            let dead = tube.dead_ct as i64;
            for (label, value) in [
                ("ready", tube.ready.len() as i64),
                ("reserved", tube.reserved_ct as i64),
                ("delayed", tube.delayed.len() as i64),
                ("buried", tube.buried.len() as i64 - dead),
                ("dead", dead),
            ] {
                self.jobs.with_label_values(&[name, label]).set(value);
            }
            self.dead_letter_jobs.with_label_values(&[name]).set(dead);
            let seen = last.entry(name.to_owned()).or_insert((0, 0));
            if tube.total_retries > seen.0 {
                self.retries.with_label_values(&[name]).inc_by(tube.total_retries - seen.0);
            }
            if tube.total_dead > seen.1 {
                self.dead_letters.with_label_values(&[name]).inc_by(tube.total_dead - seen.1);
            }
            *seen = (tube.total_retries.max(seen.0), tube.total_dead.max(seen.1));
        }
        self.connections.set(engine.conns.len() as i64);
        if let Some(log) = &shared.log {
            let stats = log.stats();
            self.wal_bytes.set(stats.size_bytes as i64);
            self.wal_fsyncs.set(stats.fsyncs as i64);
            self.wal_records.set(stats.appends as i64);
        }
    }
}

/// The whole admin router: minicore's endpoints and the dead-letter ones.
pub fn router(shared: Arc<Shared>) -> Router {
    let mut admin = Admin::new(shared.metrics.registry.clone());
    admin.ready.store(true, Ordering::Release);
    let hook_shared = shared.clone();
    admin.before_scrape = Some(Arc::new(move || hook_shared.metrics.refresh(&hook_shared)));
    let dlq = Router::new()
        .route("/dlq", get(list_dead))
        .route("/dlq/replay", post(replay_all))
        .route("/dlq/purge", post(purge))
        .route("/dlq/{id}/replay", post(replay_one))
        .with_state(shared);
    admin.router().merge(dlq)
}

fn json_response(status: StatusCode, value: serde_json::Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], format!("{value}\n")).into_response()
}

/// The `tube` query parameter, percent-decoded.
fn tube_param(uri: &Uri) -> Option<String> {
    let query = uri.query()?;
    query.split('&').find_map(|pair| pair.strip_prefix("tube=")).map(percent_decode)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn list_dead(State(shared): State<Arc<Shared>>, uri: Uri) -> Response {
    let tube = tube_param(&uri);
    let jobs: Vec<serde_json::Value> = {
        let state = shared.state.lock();
        let engine = &state.engine;
        engine
            .dead_jobs(tube.as_deref())
            .into_iter()
            .filter_map(|id| engine.job(id))
            .map(|job| {
                let h = &job.history;
                let dead = h.dead.as_ref();
                json!({
                    "id": job.id,
                    "tube": &*job.tube,
                    "pri": job.pri,
                    "ttr": job.ttr / NANOS_PER_SEC,
                    "attempts": h.attempts,
                    "failures": h.failures,
                    "last_error": h.last_error,
                    "first_failed_at": h.first_failed_at / NANOS_PER_SEC,
                    "last_failed_at": h.last_failed_at / NANOS_PER_SEC,
                    "dead_at": dead.map(|d| d.at / NANOS_PER_SEC),
                    "dead_reason": dead.map(|d| d.reason.clone()),
                    "body": String::from_utf8_lossy(&job.body),
                })
            })
            .collect()
    };
    json_response(StatusCode::OK, json!({ "jobs": jobs }))
}

async fn replay_all(State(shared): State<Arc<Shared>>, uri: Uri) -> Response {
    let tube = tube_param(&uri);
    let (result, lsn) = shared.with_engine(|engine, now| engine.replay_dead(tube.as_deref(), now));
    finish(&shared, result.map(|n| json!({ "replayed": n })), lsn).await
}

async fn purge(State(shared): State<Arc<Shared>>, uri: Uri) -> Response {
    let tube = tube_param(&uri);
    let (result, lsn) = shared.with_engine(|engine, now| match &tube {
        Some(tube) => engine.purge_dead(tube, now),
        None => {
            let tubes: Vec<String> = engine.tube_order.iter().map(|t| t.to_string()).collect();
            let mut total = 0;
            for tube in tubes {
                total += engine.purge_dead(&tube, now)?;
            }
            Ok(total)
        }
    });
    finish(&shared, result.map(|n| json!({ "purged": n })), lsn).await
}

async fn replay_one(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return json_response(StatusCode::BAD_REQUEST, json!({ "error": format!("{id:?} is not a job id") }));
    };
    let (result, lsn) = shared.with_engine(|engine, now| {
        if !engine.job(id).is_some_and(|j| j.is_dead()) {
            return Ok(false);
        }
        engine.kick_job(id, now)
    });
    match result {
        Ok(false) => json_response(
            StatusCode::NOT_FOUND,
            json!({ "error": format!("job {id} is not in the dead-letter state") }),
        ),
        other => finish(&shared, other.map(|_| json!({ "replayed": 1 })), lsn).await,
    }
}

/// Waits for durability, then answers.
async fn finish(
    shared: &Shared,
    result: Result<serde_json::Value, crate::engine::JournalError>,
    lsn: Option<u64>,
) -> Response {
    match result {
        Ok(value) => match shared.commit(lsn).await {
            Ok(()) => json_response(StatusCode::OK, value),
            Err(e) => json_response(StatusCode::INTERNAL_SERVER_ERROR, json!({ "error": e })),
        },
        Err(e) => json_response(StatusCode::INTERNAL_SERVER_ERROR, json!({ "error": e.to_string() })),
    }
}
