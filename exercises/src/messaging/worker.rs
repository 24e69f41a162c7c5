//! The notification worker: reserve a job, work out which attempt this is, try the
//! provider, and carry out the retry scheduler's decision, with plain beanstalkd 1.12
//! commands only (so it runs unchanged on a real beanstalkd).
//!
//! ```text
//!  reserve-with-timeout ──> stats-job <id> ──> attempt = reserves
//!        │                                        │ retry::on_reserve (crash loop?)
//!        │                                        ▼
//!        │                          parse ──> provider.send ──> delete         (delivered)
//!        │                                        │ failure ──> retry::on_failure
//!        │                                        ├── Retry ──> release <id> <pri> <delay>
//!        └────────────────────────────────────────└── Dead  ──> put envelope to <tube>.dlq,
//!                                                                then delete <id>
//! ```
//!
//! **The attempt number is `stats-job`'s `reserves`**, the number of times the job has
//! been reserved, this time included. Why not `releases + timeouts + 1`: when a worker's
//! connection closes while it holds a job (the process crashed), beanstalkd puts the job
//! back without touching either counter, so a message that crashes the worker every
//! time would look like attempt 1 for ever: an endless crash loop. `reserves` counts
//! those attempts too, so [`super::retry::on_reserve`] stops it after `max_attempts`.
//! Why not a counter in the body: `release` cannot change a body, and rewriting the job
//! (delete + put) is two commands a crash can split. The cost is one `stats-job` round
//! trip per job.
//!
//! **Delivery is at-least-once.** The job is deleted only after the provider accepted
//! it; a worker that dies between the two leaves the job reserved, and the queue gives
//! it to another worker (at once if the connection closed, after the TTR if the worker
//! hangs with its socket open), which delivers it again. [`Fault`] injects exactly that.
//! Dead-lettering is at-least-once too: the envelope is put before the original is
//! deleted, so a crash in between leaves the job to be dead-lettered again (two
//! envelopes with the same `source_job_id`) rather than lost.
//!
//! Left out: `touch` for long jobs (a notification takes milliseconds; a TTR of a few
//! seconds covers it), batching, and graceful drain on shutdown (stopping drops the
//! connection, which returns any reserved job to ready at once).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use minibench::queue::client::{self, Client, Job};
use parking_lot::Mutex;
use tokio::sync::{watch, Notify};

use super::dlq::{self, Moved};
use super::letter::{clip_error, unix_ms, Body, DeadLetter};
use super::notification::Notification;
use super::provider::{Provider, ProviderError};
use super::retry::{self, DeadReason, Decision, Failure, RetryPolicy, Variant};
use crate::framework::DemoError;

/// How long one `reserve-with-timeout` waits before the loop looks at its stop signal
/// again (the stop signal also interrupts it; this is the fallback).
const RESERVE_POLL_SECS: u32 = 1;

/// How much longer than the TTR a hung worker stays hung (then its connection closes,
/// as when a supervisor kills it), so the queue has clearly taken the job back first.
pub const HANG_MARGIN: Duration = Duration::from_millis(500);

/// What a worker needs to know.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// `host:port` of the queue.
    pub addr: String,
    /// The tube it works on.
    pub tube: String,
    /// Where dead letters go (`<tube>.dlq`).
    pub dlq_tube: String,
    pub policy: RetryPolicy,
    /// [`Variant::Correct`] except in the tests and the demo's broken runs.
    pub variant: Variant,
}

/// A worker failure injected after the provider accepted a notification and before
/// the job is deleted: the window that makes delivery at-least-once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The process dies: its connection closes and the queue puts the job back to
    /// ready at once.
    CrashAfterDelivery,
    /// The process hangs with its socket open (a GC pause, a stuck thread, a network
    /// partition): the queue takes the job back only when its TTR runs out.
    HangAfterDelivery,
}

/// The faults to inject, by notification id; each fires once.
#[derive(Default)]
pub struct Faults {
    planned: Mutex<HashMap<u64, Fault>>,
}

impl Faults {
    pub fn new(planned: impl IntoIterator<Item = (u64, Fault)>) -> Faults {
        Faults { planned: Mutex::new(planned.into_iter().collect()) }
    }

    fn take(&self, notification_id: u64) -> Option<Fault> {
        self.planned.lock().remove(&notification_id)
    }
}

/// What one attempt ended in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The provider accepted it and the job was deleted.
    Delivered,
    /// Released with a delay drawn from `[0, ceiling_secs]`.
    Retrying { error: String, delay_secs: u32, ceiling_secs: u32 },
    /// Moved to the DLQ tube (envelope job `dlq_job_id`) and deleted.
    DeadLettered { reason: DeadReason, error: String, dlq_job_id: u64 },
    /// The envelope did not fit in a job, so the original was buried in its own tube
    /// instead (plain beanstalk: the body is kept, the reason is not).
    Buried { reason: DeadReason, error: String },
    /// Delivered, then the worker died before deleting (an injected [`Fault`]).
    CrashedAfterDelivery,
    /// Delivered, then the worker hung past the job's TTR (an injected [`Fault`]).
    HungAfterDelivery { ttr_secs: u32 },
}

impl Outcome {
    /// A short word for tables.
    pub fn word(&self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Retrying { .. } => "retry",
            Outcome::DeadLettered { reason, .. } if reason.is_poison() => "poison → DLQ",
            Outcome::DeadLettered { .. } => "exhausted → DLQ",
            Outcome::Buried { .. } => "buried",
            Outcome::CrashedAfterDelivery => "delivered, crashed",
            Outcome::HungAfterDelivery { .. } => "delivered, hung",
        }
    }

    /// Whether the job left the main tube's ready/delayed/reserved sets for good.
    pub fn settles(&self) -> bool {
        matches!(self, Outcome::Delivered | Outcome::DeadLettered { .. } | Outcome::Buried { .. })
    }
}

/// One attempt, as the worker saw it.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// Which worker (for the timeline).
    pub worker: usize,
    pub job_id: u64,
    /// `None` when the payload did not parse.
    pub notification_id: Option<u64>,
    /// The attempt number (`stats-job` `reserves`).
    pub attempt: u32,
    /// When the reserve answered, since the timeline's start.
    pub reserved_at: Duration,
    /// When the decision was carried out (the release, delete or put answered).
    pub finished_at: Duration,
    pub outcome: Outcome,
}

/// Every attempt of every worker, in the order they finished, and a count of settled
/// jobs that a scenario waits on.
pub struct Timeline {
    start: Instant,
    attempts: Mutex<Vec<Attempt>>,
    settled: AtomicUsize,
    changed: Notify,
}

impl Timeline {
    pub fn new(start: Instant) -> Timeline {
        Timeline { start, attempts: Mutex::new(Vec::new()), settled: AtomicUsize::new(0), changed: Notify::new() }
    }

    pub fn start(&self) -> Instant {
        self.start
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    fn record(&self, attempt: Attempt) {
        let settles = attempt.outcome.settles();
        self.attempts.lock().push(attempt);
        if settles {
            self.settled.fetch_add(1, Ordering::SeqCst);
        }
        self.changed.notify_waiters();
    }

    pub fn attempts(&self) -> Vec<Attempt> {
        self.attempts.lock().clone()
    }

    /// How many jobs have settled (delivered and deleted, or dead-lettered).
    pub fn settled(&self) -> usize {
        self.settled.load(Ordering::SeqCst)
    }

    /// Waits until `count` jobs have settled; `false` if `deadline` came first.
    pub async fn wait_settled(&self, count: usize, deadline: Instant) -> bool {
        loop {
            let changed = self.changed.notified();
            if self.settled() >= count {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            // The notification can be missed between the check and the wait; the short
            // timeout bounds that.
            let _ = tokio::time::timeout((deadline - now).min(Duration::from_millis(100)), changed).await;
        }
    }
}

/// Why a worker stopped early.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("worker {worker}: queue: {source}")]
    Queue {
        worker: usize,
        #[source]
        source: client::Error,
    },
    #[error("worker {worker}: stats-job {job} has no {field} counter; is this a beanstalk 1.12 server?")]
    Stats { worker: usize, job: u64, field: &'static str },
}

impl From<WorkerError> for DemoError {
    fn from(e: WorkerError) -> Self {
        DemoError::Scenario(e.to_string())
    }
}

/// What a worker did, for the report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerSummary {
    pub attempts: u64,
    /// Connections it opened again after an injected fault.
    pub restarts: u64,
}

/// What the loop does after a job.
enum After {
    Next,
    /// The injected fault "killed" the worker: drop the connection (after holding it
    /// this long, for a hang) and start again.
    Restart {
        hold: Duration,
    },
}

/// A running pool of workers on one tube: the stop switch and their tasks.
pub struct WorkerPool {
    pub stop: watch::Sender<bool>,
    pub handles: Vec<tokio::task::JoinHandle<Result<WorkerSummary, WorkerError>>>,
}

/// Starts `count` workers sharing `config`, the provider, the faults and the timeline;
/// worker `w` draws its jitter from `rng_of(w)`, so a run can be repeated.
pub fn spawn_pool(
    count: usize,
    config: WorkerConfig,
    provider: &Arc<Provider>,
    faults: Faults,
    timeline: &Arc<Timeline>,
    rng_of: impl Fn(usize) -> fastrand::Rng,
) -> WorkerPool {
    let config = Arc::new(config);
    let faults = Arc::new(faults);
    let (stop, stopped) = watch::channel(false);
    let handles = (0..count)
        .map(|w| {
            let worker = Worker::new(w, config.clone(), provider.clone(), faults.clone(), timeline.clone(), rng_of(w));
            tokio::spawn(worker.run(stopped.clone()))
        })
        .collect();
    WorkerPool { stop, handles }
}

/// One worker: one connection, one job at a time.
pub struct Worker {
    id: usize,
    config: Arc<WorkerConfig>,
    provider: Arc<Provider>,
    faults: Arc<Faults>,
    timeline: Arc<Timeline>,
    /// Draws the jitter; seeded per worker so a run can be repeated.
    rng: fastrand::Rng,
}

impl Worker {
    pub fn new(
        id: usize,
        config: Arc<WorkerConfig>,
        provider: Arc<Provider>,
        faults: Arc<Faults>,
        timeline: Arc<Timeline>,
        rng: fastrand::Rng,
    ) -> Worker {
        Worker { id, config, provider, faults, timeline, rng }
    }

    fn queue_error(&self, source: client::Error) -> WorkerError {
        WorkerError::Queue { worker: self.id, source }
    }

    /// Watches the tube (and only it), and uses the DLQ tube for its puts: the worker
    /// never puts to its own tube.
    async fn connect(&self) -> Result<Client, WorkerError> {
        let setup = async {
            let mut client = Client::connect(&self.config.addr).await?;
            client.watch(&self.config.tube).await?;
            if self.config.tube != "default" {
                client.ignore("default").await?;
            }
            client.use_tube(&self.config.dlq_tube).await?;
            Ok::<Client, client::Error>(client)
        };
        setup.await.map_err(|e| self.queue_error(e))
    }

    /// Works until `stop` turns true (or its sender is dropped).
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<WorkerSummary, WorkerError> {
        let mut summary = WorkerSummary::default();
        let mut client = self.connect().await?;
        loop {
            if *stop.borrow() {
                break;
            }
            let job = tokio::select! {
                biased;
                _ = stop.changed() => break,
                reserved = client.reserve_with_timeout(RESERVE_POLL_SECS) => match reserved {
                    Ok(job) => job,
                    // DEADLINE_SOON cannot happen (a worker holds nothing while it
                    // reserves), but it is harmless: ask again.
                    Err(client::Error::TimedOut | client::Error::DeadlineSoon) => continue,
                    Err(e) => return Err(self.queue_error(e)),
                },
            };
            summary.attempts += 1;
            match self.process(&mut client, job).await? {
                After::Next => {}
                After::Restart { hold } => {
                    if !hold.is_zero() {
                        tokio::select! {
                            _ = tokio::time::sleep(hold) => {}
                            _ = stop.changed() => {}
                        }
                    }
                    drop(client);
                    summary.restarts += 1;
                    client = self.connect().await?;
                }
            }
        }
        Ok(summary)
    }

    /// One attempt at one job.
    async fn process(&mut self, client: &mut Client, job: Job) -> Result<After, WorkerError> {
        let reserved_at = self.timeline.elapsed();
        let stats = client.stats_job(job.id).await.map_err(|e| self.queue_error(e))?;
        let counter = |field: &'static str| {
            stats.get_u64(field).and_then(|v| u32::try_from(v).ok()).ok_or(WorkerError::Stats {
                worker: self.id,
                job: job.id,
                field,
            })
        };
        let attempt = counter("reserves")?;
        let pri = counter("pri")?;
        let ttr = counter("ttr")?;
        let age_secs = stats.get_u64("age").unwrap_or(0);
        assert!(attempt >= 1, "a job we hold has been reserved at least once");
        let context = JobContext { job: &job, attempt, pri, ttr, age_secs, reserved_at };

        if let Some(reason) = retry::on_reserve(&self.config.policy, self.config.variant, attempt) {
            let error = format!(
                "reserved {attempt} times, over the limit of {}: earlier attempts crashed or timed out",
                self.config.policy.max_attempts
            );
            return self.dead_letter(client, &context, None, reason, error).await;
        }
        let notification = match Notification::parse(&job.body) {
            Ok(notification) => notification,
            Err(malformed) => {
                return self.failed(client, &context, None, Failure::Malformed, malformed.to_string()).await;
            }
        };
        let id = Some(notification.id);
        match self.provider.send(&notification).await {
            Ok(()) => match self.faults.take(notification.id) {
                Some(Fault::CrashAfterDelivery) => {
                    self.record(&context, id, Outcome::CrashedAfterDelivery);
                    Ok(After::Restart { hold: Duration::ZERO })
                }
                Some(Fault::HangAfterDelivery) => {
                    self.record(&context, id, Outcome::HungAfterDelivery { ttr_secs: ttr });
                    Ok(After::Restart { hold: Duration::from_secs(u64::from(ttr)) + HANG_MARGIN })
                }
                None => {
                    client.delete(job.id).await.map_err(|e| self.queue_error(e))?;
                    self.record(&context, id, Outcome::Delivered);
                    Ok(After::Next)
                }
            },
            Err(ProviderError::Permanent(error)) => self.failed(client, &context, id, Failure::Permanent, error).await,
            Err(ProviderError::Transient(error)) => self.failed(client, &context, id, Failure::Transient, error).await,
        }
    }

    async fn failed(
        &mut self,
        client: &mut Client,
        context: &JobContext<'_>,
        notification_id: Option<u64>,
        failure: Failure,
        error: String,
    ) -> Result<After, WorkerError> {
        let decision =
            retry::on_failure(&self.config.policy, self.config.variant, context.attempt, failure, &mut self.rng);
        match decision {
            Decision::Retry { delay_secs, ceiling_secs } => {
                client.release(context.job.id, context.pri, delay_secs).await.map_err(|e| self.queue_error(e))?;
                self.record(context, notification_id, Outcome::Retrying { error, delay_secs, ceiling_secs });
                Ok(After::Next)
            }
            Decision::DeadLetter(reason) => self.dead_letter(client, context, notification_id, reason, error).await,
        }
    }

    async fn dead_letter(
        &mut self,
        client: &mut Client,
        context: &JobContext<'_>,
        notification_id: Option<u64>,
        reason: DeadReason,
        error: String,
    ) -> Result<After, WorkerError> {
        let now_ms = unix_ms();
        let letter = DeadLetter {
            source_tube: self.config.tube.clone(),
            source_job_id: context.job.id,
            body: Body::new(&context.job.body),
            pri: context.pri,
            ttr: context.ttr,
            reason,
            attempts: context.attempt,
            last_error: clip_error(&error),
            enqueued_at_unix_s: (now_ms / 1000).saturating_sub(context.age_secs),
            dead_lettered_at_unix_ms: now_ms,
        };
        let moved =
            dlq::move_to_dlq(client, context.job.id, context.pri, &letter).await.map_err(|e| self.queue_error(e))?;
        let outcome = match moved {
            Moved::ToDlq(dlq_job_id) => Outcome::DeadLettered { reason, error: letter.last_error, dlq_job_id },
            Moved::Buried => Outcome::Buried { reason, error: letter.last_error },
        };
        self.record(context, notification_id, outcome);
        Ok(After::Next)
    }

    fn record(&self, context: &JobContext<'_>, notification_id: Option<u64>, outcome: Outcome) {
        self.timeline.record(Attempt {
            worker: self.id,
            job_id: context.job.id,
            notification_id,
            attempt: context.attempt,
            reserved_at: context.reserved_at,
            finished_at: self.timeline.elapsed(),
            outcome,
        });
    }
}

/// What `stats-job` said about the job being worked on.
struct JobContext<'a> {
    job: &'a Job,
    attempt: u32,
    pri: u32,
    ttr: u32,
    age_secs: u64,
    reserved_at: Duration,
}

/// The producer's side: puts each body on `tube`, in order, and returns the job ids.
pub async fn publish(
    addr: &str,
    tube: &str,
    bodies: &[Vec<u8>],
    pri: u32,
    ttr: u32,
) -> Result<Vec<u64>, client::Error> {
    let mut client = Client::connect(addr).await?;
    client.use_tube(tube).await?;
    let mut ids = Vec::with_capacity(bodies.len());
    for body in bodies {
        ids.push(client.put(pri, 0, ttr, body).await?);
    }
    Ok(ids)
}

/// A tube's job counts by state, from `stats-tube` (all zero when the server does not
/// know the tube: beanstalkd forgets a tube nobody uses, watches or fills).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TubeCounts {
    pub ready: u64,
    pub reserved: u64,
    pub delayed: u64,
    pub buried: u64,
}

impl TubeCounts {
    /// Jobs some worker will still process (buried ones wait for a kick).
    pub fn active(&self) -> u64 {
        self.ready + self.reserved + self.delayed
    }

    pub fn total(&self) -> u64 {
        self.active() + self.buried
    }
}

pub async fn tube_counts(client: &mut Client, tube: &str) -> Result<TubeCounts, client::Error> {
    let stats = match client.stats_tube(tube).await {
        Ok(stats) => stats,
        Err(client::Error::NotFound) => return Ok(TubeCounts::default()),
        Err(e) => return Err(e),
    };
    let get = |key: &str| stats.get_u64(key).unwrap_or(0);
    Ok(TubeCounts {
        ready: get("current-jobs-ready"),
        reserved: get("current-jobs-reserved"),
        delayed: get("current-jobs-delayed"),
        buried: get("current-jobs-buried"),
    })
}
