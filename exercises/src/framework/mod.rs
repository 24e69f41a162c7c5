//! What every exercise shares: its catalogue entry, the endpoints it runs against, the
//! report it prints, and the run loop behind `mini demo <name>`.
//!
//! An exercise is an [`Exercise`]: a name, a theme, a one-line summary, which backends it
//! [`Needs`], and a `run` function that takes a [`Demo`] (resolved endpoints, a seed, a
//! scale) and returns a [`Report`]. [`run`] does the set-up around it:
//!
//! ```text
//!  DemoOptions { kv: Option<url>, queue: Option<url>, seed, scale }
//!     │  endpoints.rs: parse redis://host:port and beanstalk://host:port
//!     │  backends.rs:  for each backend the exercise needs and no URL names,
//!     │                serve minikv / miniqueue in-process on a free loopback port
//!     ▼
//!  Demo { kv, queue, seed, scale } ──(exercise.run)──> Report ──> backends stopped
//! ```
//!
//! Left out: running several exercises at once, and remote endpoints that need TLS or
//! AUTH (a `redis://user:pass@host` URL is passed through to the client as given).

pub mod backends;
pub mod endpoints;
pub mod histogram;
pub mod http;
pub mod report;

use std::fmt;
use std::future::Future;
use std::pin::Pin;

pub use endpoints::{Endpoint, Served};
pub use histogram::LatencyHistogram;
pub use report::Report;

/// The themes exercises are grouped by; one module of this crate each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Theme {
    RateLimit,
    Idempotency,
    Caching,
    Messaging,
    Ids,
    Resilience,
}

impl Theme {
    /// The module name, as the catalogue prints it.
    pub fn name(self) -> &'static str {
        match self {
            Theme::RateLimit => "ratelimit",
            Theme::Idempotency => "idempotency",
            Theme::Caching => "caching",
            Theme::Messaging => "messaging",
            Theme::Ids => "ids",
            Theme::Resilience => "resilience",
        }
    }
}

/// Which backends a scenario talks to. [`run`] starts the in-process ones for the
/// needs that no endpoint was given for, and refuses an endpoint nobody needs (a
/// `--queue` given to a KV-only exercise is a mistake worth saying).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    pub kv: bool,
    pub queue: bool,
}

impl Needs {
    pub const NOTHING: Needs = Needs { kv: false, queue: false };
    pub const KV: Needs = Needs { kv: true, queue: false };
    pub const QUEUE: Needs = Needs { kv: false, queue: true };
    pub const KV_AND_QUEUE: Needs = Needs { kv: true, queue: true };
}

/// What a scenario's `run` returns: a boxed future, so the catalogue can hold plain
/// function pointers.
pub type DemoFuture = Pin<Box<dyn Future<Output = Result<Report, DemoError>> + Send>>;

/// One exercise in the catalogue.
pub struct Exercise {
    /// As `mini demo <name>` spells it: lower-case words joined by dashes.
    pub name: &'static str,
    pub theme: Theme,
    /// One line for `mini demo --list`.
    pub summary: &'static str,
    pub needs: Needs,
    /// The scenario. It must finish within about 30 seconds at [`Scale::Full`] and
    /// within a few seconds at [`Scale::Quick`].
    pub run: fn(Demo) -> DemoFuture,
}

impl fmt::Debug for Exercise {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exercise").field("name", &self.name).field("theme", &self.theme).finish()
    }
}

/// How big a scenario runs. The demo is [`Scale::Full`]; tests run the same scenario
/// at [`Scale::Quick`] (fewer clients, fewer rounds, shorter phases) so CI stays fast,
/// and assert the same verdict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scale {
    #[default]
    Full,
    Quick,
}

impl Scale {
    /// `full` at [`Scale::Full`], `quick` at [`Scale::Quick`]: the one place a scenario
    /// picks its sizes, so both are visible side by side.
    pub fn pick<T>(self, full: T, quick: T) -> T {
        match self {
            Scale::Full => full,
            Scale::Quick => quick,
        }
    }
}

/// What a scenario gets: the endpoints it talks to, already reachable, and its knobs.
#[derive(Clone, Debug)]
pub struct Demo {
    /// The KV store (set when the exercise needs it).
    pub kv: Option<Endpoint>,
    /// The queue (set when the exercise needs it).
    pub queue: Option<Endpoint>,
    /// Seeds every random choice the scenario makes (jitter, fault points, key
    /// choice), so a run can be repeated. The report prints it.
    pub seed: u64,
    pub scale: Scale,
}

impl Demo {
    /// The KV store's URL (`redis://host:port`), for `redis::Client::open`.
    pub fn kv_url(&self) -> Result<&str, DemoError> {
        self.kv.as_ref().map(|e| e.url.as_str()).ok_or(DemoError::NotProvided("kv"))
    }

    /// The queue's `host:port`, for `minibench::queue::client::Client::connect`.
    pub fn queue_addr(&self) -> Result<&str, DemoError> {
        self.queue.as_ref().map(|e| e.addr.as_str()).ok_or(DemoError::NotProvided("queue"))
    }

    /// A generator seeded from [`Demo::seed`] and `stream`, so separate parts of a
    /// scenario (each worker, the fault injector) draw independent, repeatable numbers.
    pub fn rng(&self, stream: u64) -> fastrand::Rng {
        fastrand::Rng::with_seed(self.seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// A report titled after the exercise, with the endpoints and seed already in it.
    pub fn report(&self, exercise: &str, title: &str) -> Report {
        let mut report = Report::new(exercise, title);
        if let Some(kv) = &self.kv {
            report.line("kv", kv);
        }
        if let Some(queue) = &self.queue {
            report.line("queue", queue);
        }
        report.line("seed", self.seed);
        report
    }
}

/// What `mini demo` was asked for.
#[derive(Clone, Debug, Default)]
pub struct DemoOptions {
    /// `--kv redis://host:port`: use this KV store instead of an in-process minikv.
    pub kv: Option<String>,
    /// `--queue beanstalk://host:port`: use this queue instead of an in-process miniqueue.
    pub queue: Option<String>,
    /// `--seed N`; a fixed default keeps two plain runs comparable.
    pub seed: Option<u64>,
    pub scale: Scale,
}

/// The seed a run uses when none is given.
pub const DEFAULT_SEED: u64 = 42;

/// Everything a scenario or its set-up can fail with. A broken invariant is not an
/// error: it is a failed check in the [`Report`]. Errors are for "could not run".
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{0}")]
    Endpoint(String),
    #[error("this exercise does not use a {0} (it needs: {1}); drop the flag")]
    NotNeeded(&'static str, String),
    #[error("no {0} endpoint was set up for this scenario (a bug in the exercise's `needs`)")]
    NotProvided(&'static str),
    #[error("can't start {what}: {why}")]
    Backend { what: &'static str, why: String },
    #[error("KV store: {0}")]
    Kv(#[from] redis::RedisError),
    #[error("queue: {0}")]
    Queue(#[from] minibench::queue::client::Error),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The scenario could not go on (a task panicked, a phase timed out).
    #[error("{0}")]
    Scenario(String),
}

impl From<tokio::task::JoinError> for DemoError {
    fn from(e: tokio::task::JoinError) -> Self {
        DemoError::Scenario(format!("a scenario task failed: {e}"))
    }
}

/// Runs `exercise` with `options`: resolves or starts its backends, runs the scenario,
/// stops what it started, and returns the report.
pub async fn run(exercise: &Exercise, options: DemoOptions) -> Result<Report, DemoError> {
    let needs = exercise.needs;
    let wanted = describe_needs(needs);
    if options.kv.is_some() && !needs.kv {
        return Err(DemoError::NotNeeded("KV store (--kv)", wanted));
    }
    if options.queue.is_some() && !needs.queue {
        return Err(DemoError::NotNeeded("queue (--queue)", wanted));
    }

    // The in-process servers live until the scenario is done; dropping them stops them.
    let mut mini_kv = None;
    let mut mini_queue = None;
    let kv = match (&options.kv, needs.kv) {
        (Some(url), _) => Some(Endpoint::parse_kv(url)?),
        (None, true) => {
            let server = backends::MiniKv::start().await?;
            let endpoint = server.endpoint();
            mini_kv = Some(server);
            Some(endpoint)
        }
        (None, false) => None,
    };
    let queue = match (&options.queue, needs.queue) {
        (Some(url), _) => Some(Endpoint::parse_queue(url)?),
        (None, true) => {
            let server = backends::MiniQueue::start().await?;
            let endpoint = server.endpoint();
            mini_queue = Some(server);
            Some(endpoint)
        }
        (None, false) => None,
    };
    if let Some(endpoint) = &kv {
        endpoint.check_reachable().await?;
    }
    if let Some(endpoint) = &queue {
        endpoint.check_reachable().await?;
    }

    let demo = Demo { kv, queue, seed: options.seed.unwrap_or(DEFAULT_SEED), scale: options.scale };
    let report = (exercise.run)(demo).await;
    drop(mini_kv);
    drop(mini_queue);
    report
}

fn describe_needs(needs: Needs) -> String {
    match (needs.kv, needs.queue) {
        (true, true) => "a KV store and a queue".into(),
        (true, false) => "a KV store".into(),
        (false, true) => "a queue".into(),
        (false, false) => "no backend".into(),
    }
}
