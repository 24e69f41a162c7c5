//! The flaky upstream the circuit-breaker scenario and tests call: an axum server whose
//! latency and error rate the caller changes while it runs, and which counts what it
//! received.
//!
//! `GET /work` sleeps for the current latency, then answers `200 ok` or, with the
//! current error probability, `503 injected failure`. It records the arrival time of
//! every request (so a scenario can count the load per phase, retries included) and
//! how many were in its handler at once (so a test can hold the bulkhead to its limit
//! *at the upstream*, where it matters). The counts are what the upstream saw, which
//! is the point: a client's own counters could hide its retries.
//!
//! Left out: load-dependent failure (a real upstream gets slower as load grows, which
//! is what makes retry storms self-sustaining); here the scenario sets the faults, so
//! each configuration meets the same outage.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use parking_lot::Mutex;

use crate::framework::http::{serve, HttpServer};
use crate::framework::DemoError;

/// How the upstream behaves right now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Faults {
    /// How long each request takes before it is answered.
    pub latency: Duration,
    /// The probability (0..=1) that a request is answered 503.
    pub error_rate: f64,
}

impl Faults {
    /// Fast and always right.
    pub const HEALTHY: Faults = Faults { latency: Duration::from_millis(2), error_rate: 0.0 };
    /// Answers 503 to everything, quickly (a dependency behind it is down).
    pub const FAILING: Faults = Faults { latency: Duration::from_millis(2), error_rate: 1.0 };

    /// Always right, but slow.
    pub fn slow(latency: Duration) -> Faults {
        Faults { latency, error_rate: 0.0 }
    }
}

/// What the handler shares with the controller.
struct Shared {
    faults: Mutex<Faults>,
    /// Decides which requests fail; seeded, so a run repeats.
    rng: Mutex<fastrand::Rng>,
    arrivals: Mutex<Vec<Instant>>,
    errors: AtomicU64,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// Decrements the in-flight count however the handler ends (answered or dropped).
struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn work(State(shared): State<Arc<Shared>>) -> (StatusCode, &'static str) {
    shared.arrivals.lock().push(Instant::now());
    let now_in_flight = shared.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
    let _in_flight = InFlight(shared.clone());
    shared.max_in_flight.fetch_max(now_in_flight, Ordering::AcqRel);
    let faults = *shared.faults.lock();
    if !faults.latency.is_zero() {
        tokio::time::sleep(faults.latency).await;
    }
    let fail = faults.error_rate > 0.0 && shared.rng.lock().f64() < faults.error_rate;
    if fail {
        shared.errors.fetch_add(1, Ordering::Relaxed);
        (StatusCode::SERVICE_UNAVAILABLE, "injected failure")
    } else {
        (StatusCode::OK, "ok")
    }
}

/// A running flaky upstream on a free loopback port. Dropping it stops it.
pub struct FlakyUpstream {
    server: HttpServer,
    shared: Arc<Shared>,
}

impl FlakyUpstream {
    /// Starts healthy; `seed` decides which requests fail when the error rate is set.
    pub async fn start(seed: u64) -> Result<FlakyUpstream, DemoError> {
        let shared = Arc::new(Shared {
            faults: Mutex::new(Faults::HEALTHY),
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
            arrivals: Mutex::new(Vec::new()),
            errors: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
        let router = Router::new().route("/work", get(work)).with_state(shared.clone());
        let server = serve(router).await?;
        Ok(FlakyUpstream { server, shared })
    }

    /// `http://127.0.0.1:PORT/work`.
    pub fn url(&self) -> String {
        self.server.url("/work")
    }

    pub fn set_faults(&self, faults: Faults) {
        assert!((0.0..=1.0).contains(&faults.error_rate), "an error rate is a probability");
        *self.shared.faults.lock() = faults;
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.shared.arrivals.lock().len() as u64
    }

    /// Requests received in `[from, to)`.
    pub fn requests_between(&self, from: Instant, to: Instant) -> u64 {
        self.shared.arrivals.lock().iter().filter(|&&at| at >= from && at < to).count() as u64
    }

    /// When each request arrived, in order.
    pub fn arrivals(&self) -> Vec<Instant> {
        self.shared.arrivals.lock().clone()
    }

    /// Requests answered 503.
    pub fn errors_served(&self) -> u64 {
        self.shared.errors.load(Ordering::Relaxed)
    }

    /// Requests in the handler right now.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Acquire)
    }

    /// The most requests ever in the handler at once.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::Acquire)
    }

    /// Stops accepting and waits for in-flight requests.
    pub async fn stop(self) {
        self.server.stop().await;
    }
}
