//! The `payment` exercise: an idempotent payment processor whose workers are killed at
//! random points, audited at the end for zero double charges and zero lost payments.
//!
//! ```text
//!  producer ──put──> tube pay-<seed>-<run>  (one job per payment, TTR 2 s)
//!                        │ reserve
//!                        ▼
//!  worker:  ✝ before charge
//!           provider.charge(payment, Idempotency-Key: pay-<payment id>)
//!           ✝ after charge            (or hang here, still connected, holding the job)
//!           ledger.record(entry)      WATCH marker / GET / MULTI SET marker + RPUSH journal / EXEC
//!           ✝ after ledger
//!           delete job
//!           ✝ after delete
//!  supervisor: aborts a worker at its ✝ (its TCP connections close abruptly, so the
//!              queue puts its reserved job back to ready at once), aborts random
//!              workers at random moments too, starts a replacement for each, and
//!              kills any worker whose heartbeat is older than the stall timeout
//! ```
//!
//! **Why it holds.** Each step is safe to repeat, so a job that comes back after any
//! kill is simply processed again:
//! - the charge carries a key derived from the *payment* (not the job id, which a
//!   re-queued job would not keep), so the provider moves money once and answers the
//!   same charge id to every retry, even one whose first reply was lost;
//! - the ledger append is conditional and atomic ([`super::ledger`]), so a redelivery
//!   after the write finds the marker and appends nothing;
//! - the job is deleted last, so until the ledger says so, the job is still owed.
//!
//! The queue is the at-least-once part: a worker that dies holding a job gives it back
//! (its connection closed), and one that hangs holding it loses it when the TTR runs
//! out, the second safety net, for the worker that is alive but stuck. Idempotency at
//! the two side effects turns at-least-once delivery into exactly-once *effects*.
//!
//! **The TTR is not enough on its own.** Debian's beanstalkd 1.12 does not always take
//! back the job of a connection that stays open and silent: in this exercise's runs
//! one in six to three in four of the hung workers' jobs stayed `reserved` long after
//! their 2 s TTR, until the connection closed (a plain-socket script reproduces it, with `reserve` and
//! with `reserve-with-timeout`; upstream has reports of the same, beanstalkd issues
//! #262 and #380), or freed them late, when another connection's close woke the
//! server up. miniqueue takes them back on time. So the supervisor also runs a
//! watchdog: every worker beats a heartbeat at each step, and one silent for
//! [`PaymentConfig::stall_timeout`] is killed, which closes its connections and frees
//! its job on any server. The report says which net caught each hang.
//!
//! **Kills are planned per payment**, from the seed: a fixed number of payments die at
//! each point on their first pass there (and a few hang after the charge), so every
//! point is exercised in every run, whatever the scheduling. The random-moment kills
//! come on top and land anywhere, mid-`WATCH` included.
//!
//! [`Variant`] holds the deliberately broken workers the audit must catch. Only plain
//! beanstalkd 1.12 commands are used (`use`, `watch`, `ignore`, `put`,
//! `reserve-with-timeout`, `release`, `bury`, `delete`, `stats-tube`), so this runs
//! unchanged on a real beanstalkd. Left out: dead-lettering payments that fail for ever
//! (a malformed job is buried and counted instead), and a provider that declines.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use minibench::queue::client::{Client, Command, Error as QueueError, Reply};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};

use crate::framework::{Demo, DemoError, LatencyHistogram, Report, Scale};
use crate::messaging::worker::{tube_counts, TubeCounts};

use super::audit::{self, Audit, PaymentRequest};
use super::ledger::{self, Ledger, LedgerEntry, LedgerKeys, LedgerWrite, Recorded};
use super::provider::{ChargeError, ChargeRequest, PaymentProvider, ProviderConfig, ProviderStats};

/// The jobs' priority: all payments are equal.
const PRIORITY: u32 = 1024;

/// How many puts go in one pipelined write.
const PUT_BATCH: usize = 250;

/// How often the supervisor looks at the tube to see whether every job is done.
const POLL_EVERY: Duration = Duration::from_millis(50);

/// Workers that fail on their own (not killed) before the run gives up: the KV store
/// or the queue is probably gone.
const MAX_WORKER_ERRORS: usize = 20;

/// The worker, and deliberately broken versions the audit must catch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Variant {
    #[default]
    Correct,
    /// Broken: charges without an idempotency key. A job redelivered after its charge
    /// (a kill after the charge or after the ledger write, a hang, a lost reply) moves
    /// money again.
    ChargeWithoutKey,
    /// Broken: appends to the journal without the conditional check. A job redelivered
    /// after its ledger write is recorded twice (the provider still charges once).
    RecordWithoutCheck,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Correct => "correct",
            Variant::ChargeWithoutKey => "charge without key",
            Variant::RecordWithoutCheck => "record without check",
        }
    }

    fn ledger_write(self) -> LedgerWrite {
        match self {
            Variant::RecordWithoutCheck => LedgerWrite::Blind,
            Variant::Correct | Variant::ChargeWithoutKey => LedgerWrite::Checked,
        }
    }

    fn idempotency_key(self, payment_id: &str) -> Option<String> {
        match self {
            Variant::ChargeWithoutKey => None,
            Variant::Correct | Variant::RecordWithoutCheck => Some(format!("pay-{payment_id}")),
        }
    }
}

/// Where a worker dies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KillPoint {
    BeforeCharge,
    AfterCharge,
    AfterLedger,
    AfterDelete,
    /// Stops after the charge but stays connected, holding the job: only the TTR gets
    /// it back.
    HangAfterCharge,
    /// Aborted by the supervisor at a random moment.
    Anywhere,
}

impl KillPoint {
    /// The points a payment can be planned to die at, with how the plan sizes them.
    pub const PLANNED: [KillPoint; 5] = [
        KillPoint::BeforeCharge,
        KillPoint::AfterCharge,
        KillPoint::AfterLedger,
        KillPoint::AfterDelete,
        KillPoint::HangAfterCharge,
    ];

    pub fn describe(self) -> &'static str {
        match self {
            KillPoint::BeforeCharge => "killed before the charge",
            KillPoint::AfterCharge => "killed after the charge, before the ledger",
            KillPoint::AfterLedger => "killed after the ledger, before the delete",
            KillPoint::AfterDelete => "killed after the delete",
            KillPoint::HangAfterCharge => "hung after the charge, still connected",
            KillPoint::Anywhere => "aborted at a random moment",
        }
    }
}

/// One run's knobs.
#[derive(Clone, Copy, Debug)]
pub struct PaymentConfig {
    pub payments: usize,
    pub workers: usize,
    pub variant: Variant,
    /// The jobs' time-to-run, in seconds (beanstalkd's unit; it treats 0 as 1).
    pub ttr_seconds: u32,
    /// The fraction of payments planned to die at each of the four kill points.
    pub kill_fraction: f64,
    /// The fraction of payments whose worker hangs after the charge.
    pub hang_fraction: f64,
    /// Mean time between random-moment kills; `None` for none.
    pub anywhere_every: Option<Duration>,
    /// The supervisor kills a worker whose heartbeat is older than this: the third
    /// safety net, for a hung worker whose job the queue's TTR does not take back (see
    /// the module docs). Longer than the TTR, so the TTR acts first where it works.
    pub stall_timeout: Duration,
    pub provider: ProviderConfig,
    pub seed: u64,
    /// The run stops (and fails its "finished" check) if the queue is not drained by then.
    pub deadline: Duration,
}

impl PaymentConfig {
    /// The sizes the demo uses at `scale`.
    pub fn for_scale(scale: Scale, variant: Variant, seed: u64) -> PaymentConfig {
        PaymentConfig {
            payments: match variant {
                Variant::Correct => scale.pick(3_000, 120),
                _ => scale.pick(400, 80),
            },
            workers: scale.pick(8, 4),
            variant,
            ttr_seconds: 2,
            kill_fraction: scale.pick(0.02, 0.04),
            hang_fraction: scale.pick(0.002, 0.01),
            anywhere_every: Some(Duration::from_millis(scale.pick(100, 150))),
            stall_timeout: Duration::from_secs(5),
            provider: ProviderConfig {
                latency: (Duration::from_micros(500), Duration::from_millis(3)),
                lost_reply_probability: 0.02,
                seed,
            },
            seed,
            deadline: Duration::from_secs(scale.pick(25, 20)),
        }
    }

    /// How many payments the plan kills at `point`: at least one, so every point runs.
    fn planned(&self, point: KillPoint) -> usize {
        let fraction = if point == KillPoint::HangAfterCharge { self.hang_fraction } else { self.kill_fraction };
        ((self.payments as f64 * fraction).round() as usize).max(1)
    }
}

/// What the workers did, summed over all of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerStats {
    pub reservations: u64,
    pub lost_replies: u64,
    pub provider_replays: u64,
    pub appended: u64,
    pub already_recorded: u64,
    /// A redelivered payment whose ledger entry names another charge than the provider
    /// just answered: the keyless variant's double charge, seen from the worker.
    pub conflicting_records: u64,
    pub deleted: u64,
    /// `delete` answered NOT_FOUND: the TTR ran out and another worker had the job.
    pub delete_not_found: u64,
    pub buried: u64,
}

#[derive(Default)]
struct Counters {
    reservations: AtomicU64,
    lost_replies: AtomicU64,
    provider_replays: AtomicU64,
    appended: AtomicU64,
    already_recorded: AtomicU64,
    conflicting_records: AtomicU64,
    deleted: AtomicU64,
    delete_not_found: AtomicU64,
    buried: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Everything one run measured.
pub struct PaymentRun {
    pub config: PaymentConfig,
    pub audit: Audit,
    /// Kills by point, as they happened.
    pub kills: BTreeMap<KillPoint, u64>,
    pub workers_started: u64,
    pub worker_errors: Vec<String>,
    /// The queue drained before the deadline.
    pub finished: bool,
    /// What was left in the tube at the end.
    pub left: TubeCounts,
    /// The payments whose worker hung holding them (only the TTR frees those).
    pub hung_payments: Vec<String>,
    /// What each live worker was doing when the run ended (`worker: step`).
    pub live_workers: Vec<String>,
    /// Workers the watchdog killed for a stale heartbeat (hung ones included).
    pub watchdog_kills: u64,
    /// Hung workers' jobs the queue's TTR took back before the watchdog acted.
    pub hangs_freed_by_ttr: u64,
    /// Hung workers' jobs freed only when the watchdog killed the worker.
    pub hangs_freed_by_watchdog: u64,
    pub elapsed: Duration,
    pub stats: WorkerStats,
    pub provider: ProviderStats,
    /// Reserve to delete, for jobs that got there.
    pub processing: LatencyHistogram,
    /// From a kill (connection closed) to that payment's job being deleted.
    pub recovery_after_kill: LatencyHistogram,
    /// From a hang (connection open) to that payment's job being deleted: the TTR.
    pub recovery_after_hang: LatencyHistogram,
}

/// What workers share: read-mostly, behind an `Arc`.
struct Context {
    queue_addr: String,
    kv_url: String,
    tube: String,
    ledger_keys: LedgerKeys,
    variant: Variant,
    provider: Arc<PaymentProvider>,
    counters: Counters,
    /// Payment id → where its first pass dies.
    plan: HashMap<String, KillPoint>,
    /// Planned kills that have fired; a payment dies once, its redeliveries go through.
    fired: Mutex<HashSet<String>>,
    /// Worker → the payment it holds now, so a random-moment kill knows what it hit.
    holding: Mutex<HashMap<u64, String>>,
    /// Worker → the step it is in, for the report of a run that misses its deadline.
    doing: Mutex<HashMap<u64, &'static str>>,
    /// Worker → when it last started a step: the watchdog's heartbeat. A healthy idle
    /// worker beats at least once per `reserve-with-timeout` (1 s).
    heartbeat: Mutex<HashMap<u64, Instant>>,
    /// Payment → when its job was deleted.
    done_at: Mutex<HashMap<String, Instant>>,
    processing: Mutex<LatencyHistogram>,
}

/// A worker telling the supervisor where it stopped.
struct KillNotice {
    worker: u64,
    point: KillPoint,
    payment_id: String,
    at: Instant,
}

impl Context {
    /// Dies here if the plan says this payment dies here and it has not yet: tells the
    /// supervisor and waits to be aborted (or, for a hang, waits for ever).
    async fn checkpoint(
        &self,
        worker: u64,
        point: KillPoint,
        payment_id: &str,
        notices: &mpsc::UnboundedSender<KillNotice>,
    ) {
        if self.plan.get(payment_id) != Some(&point) || !self.fired.lock().insert(payment_id.to_string()) {
            return;
        }
        let notice = KillNotice { worker, point, payment_id: payment_id.to_string(), at: Instant::now() };
        if notices.send(notice).is_ok() {
            std::future::pending::<()>().await;
        }
    }
}

/// One worker: reserve, charge, record, delete, until aborted.
async fn worker(id: u64, ctx: Arc<Context>, notices: mpsc::UnboundedSender<KillNotice>) -> Result<(), String> {
    let doing = |step: &'static str| {
        ctx.doing.lock().insert(id, step);
        ctx.heartbeat.lock().insert(id, Instant::now());
    };
    doing("connecting");
    let mut queue = Client::connect(&ctx.queue_addr).await.map_err(|e| format!("worker {id}: queue: {e}"))?;
    queue.watch(&ctx.tube).await.map_err(|e| format!("worker {id}: watch: {e}"))?;
    queue.ignore("default").await.map_err(|e| format!("worker {id}: ignore: {e}"))?;
    let mut ledger = Ledger::connect(&ctx.kv_url, ctx.ledger_keys.clone(), ctx.variant.ledger_write())
        .await
        .map_err(|e| format!("worker {id}: ledger: {e}"))?;
    loop {
        doing("reserving");
        let job = match queue.reserve_with_timeout(1).await {
            Ok(job) => job,
            Err(QueueError::TimedOut | QueueError::DeadlineSoon) => continue,
            Err(e) => return Err(format!("worker {id}: reserve: {e}")),
        };
        let reserved_at = Instant::now();
        bump(&ctx.counters.reservations);
        let payment: PaymentRequest = match serde_json::from_slice(&job.body) {
            Ok(payment) => payment,
            Err(_) => {
                // Poison: no retry will parse it. Buried, so the audit counts it as left.
                bump(&ctx.counters.buried);
                queue.bury(job.id, PRIORITY).await.map_err(|e| format!("worker {id}: bury: {e}"))?;
                continue;
            }
        };
        let pid = payment.payment_id.as_str();
        ctx.holding.lock().insert(id, payment.payment_id.clone());

        ctx.checkpoint(id, KillPoint::BeforeCharge, pid, &notices).await;
        doing("charging");
        let request = ChargeRequest {
            payment_id: payment.payment_id.clone(),
            amount_cents: payment.amount_cents,
            idempotency_key: ctx.variant.idempotency_key(pid),
        };
        let receipt = match ctx.provider.charge(&request).await {
            Ok(receipt) => receipt,
            Err(ChargeError::ReplyLost) => {
                // Charged or not, we cannot know: give the job back and retry it.
                bump(&ctx.counters.lost_replies);
                ctx.holding.lock().remove(&id);
                doing("releasing");
                queue.release(job.id, PRIORITY, 0).await.map_err(|e| format!("worker {id}: release: {e}"))?;
                continue;
            }
            Err(e @ ChargeError::KeyReused(_)) => {
                bump(&ctx.counters.buried);
                ctx.holding.lock().remove(&id);
                queue.bury(job.id, PRIORITY).await.map_err(|q| format!("worker {id}: bury after {e}: {q}"))?;
                continue;
            }
        };
        if receipt.replayed {
            bump(&ctx.counters.provider_replays);
        }
        ctx.checkpoint(id, KillPoint::AfterCharge, pid, &notices).await;
        ctx.checkpoint(id, KillPoint::HangAfterCharge, pid, &notices).await;

        doing("recording");
        let entry = LedgerEntry {
            payment_id: payment.payment_id.clone(),
            account: payment.account.clone(),
            amount_cents: payment.amount_cents,
            charge_id: receipt.charge_id.clone(),
        };
        match ledger.record(&entry).await.map_err(|e| format!("worker {id}: ledger: {e}"))? {
            Recorded::Appended => bump(&ctx.counters.appended),
            Recorded::AlreadyRecorded { charge_id } => {
                bump(&ctx.counters.already_recorded);
                if charge_id != receipt.charge_id {
                    bump(&ctx.counters.conflicting_records);
                }
            }
        }
        ctx.checkpoint(id, KillPoint::AfterLedger, pid, &notices).await;

        doing("deleting");
        match queue.delete(job.id).await {
            Ok(()) => {
                bump(&ctx.counters.deleted);
                ctx.done_at.lock().insert(payment.payment_id.clone(), Instant::now());
                ctx.processing.lock().record(reserved_at.elapsed());
            }
            // The TTR ran out and another worker holds the job now; it will delete it.
            Err(QueueError::NotFound) => bump(&ctx.counters.delete_not_found),
            Err(e) => return Err(format!("worker {id}: delete: {e}")),
        }
        ctx.holding.lock().remove(&id);
        ctx.checkpoint(id, KillPoint::AfterDelete, pid, &notices).await;
    }
}

/// The payments of one run, from its seed.
fn payments(config: &PaymentConfig) -> Vec<PaymentRequest> {
    let mut rng = fastrand::Rng::with_seed(config.seed ^ 0x5041_594d_454e_5453);
    (0..config.payments)
        .map(|i| PaymentRequest {
            payment_id: format!("p{i:06}"),
            account: format!("acct_{:03}", rng.u32(0..100)),
            amount_cents: rng.u64(100..=99_999),
        })
        .collect()
}

/// The kill plan: distinct payments, `config.planned(point)` for each point.
fn kill_plan(config: &PaymentConfig, payments: &[PaymentRequest]) -> HashMap<String, KillPoint> {
    let mut rng = fastrand::Rng::with_seed(config.seed ^ 0x4b49_4c4c_504c_414e);
    let mut order: Vec<usize> = (0..payments.len()).collect();
    rng.shuffle(&mut order);
    let mut picks = order.into_iter();
    let mut plan = HashMap::new();
    for point in KillPoint::PLANNED {
        for index in picks.by_ref().take(config.planned(point)) {
            plan.insert(payments[index].payment_id.clone(), point);
        }
    }
    plan
}

/// Runs one payment run against the KV store at `kv_url` and the queue at `queue_addr`.
pub async fn run_payments(kv_url: &str, queue_addr: &str, config: PaymentConfig) -> Result<PaymentRun, DemoError> {
    assert!(config.workers > 0 && config.payments > 0, "a run needs workers and payments");
    let run = format!("pay-{}-{:08x}", config.seed, fastrand::u32(..));
    let requested = payments(&config);
    let plan = kill_plan(&config, &requested);

    // Put every payment first, so the run measures processing, not producing.
    let mut producer = Client::connect(queue_addr).await?;
    producer.use_tube(&run).await?;
    let bodies: Vec<Vec<u8>> = requested
        .iter()
        .map(serde_json::to_vec)
        .collect::<Result<_, _>>()
        .map_err(|e| DemoError::Scenario(e.to_string()))?;
    for chunk in bodies.chunks(PUT_BATCH) {
        let puts: Vec<Command> =
            chunk.iter().map(|body| Command::Put { pri: PRIORITY, delay: 0, ttr: config.ttr_seconds, body }).collect();
        for reply in producer.pipeline(&puts).await? {
            reply.and_then(Reply::into_inserted)?;
        }
    }

    let ctx = Arc::new(Context {
        queue_addr: queue_addr.to_string(),
        kv_url: kv_url.to_string(),
        tube: run.clone(),
        ledger_keys: LedgerKeys::new(&run),
        variant: config.variant,
        provider: Arc::new(PaymentProvider::new(config.provider)),
        counters: Counters::default(),
        plan,
        fired: Mutex::new(HashSet::new()),
        holding: Mutex::new(HashMap::new()),
        doing: Mutex::new(HashMap::new()),
        heartbeat: Mutex::new(HashMap::new()),
        done_at: Mutex::new(HashMap::new()),
        processing: Mutex::new(LatencyHistogram::new()),
    });

    let started = Instant::now();
    let (notices_tx, mut notices) = mpsc::unbounded_channel::<KillNotice>();
    let mut tasks: JoinSet<(u64, Result<(), String>)> = JoinSet::new();
    // Live workers; a hung or killed one leaves the map, so nobody kills it twice.
    let mut live: HashMap<u64, AbortHandle> = HashMap::new();
    // Hung workers, still connected and holding their job, until the watchdog kills them.
    let mut hung_workers: HashMap<u64, AbortHandle> = HashMap::new();
    // Hung payment → when the watchdog killed its worker.
    let mut watchdog_freed: HashMap<String, Instant> = HashMap::new();
    let mut watchdog_kills = 0u64;
    let mut next_id = 0u64;
    let mut spawn = |tasks: &mut JoinSet<(u64, Result<(), String>)>, live: &mut HashMap<u64, AbortHandle>| {
        let id = next_id;
        next_id += 1;
        let (ctx, notices) = (Arc::clone(&ctx), notices_tx.clone());
        live.insert(id, tasks.spawn(async move { (id, worker(id, ctx, notices).await) }));
    };
    for _ in 0..config.workers {
        spawn(&mut tasks, &mut live);
    }

    let mut rng = fastrand::Rng::with_seed(config.seed ^ 0x414e_5957_4845_5245);
    let next_anywhere =
        |rng: &mut fastrand::Rng| config.anywhere_every.map(|every| Instant::now() + every.mul_f64(0.5 + rng.f64()));
    let mut anywhere_at = next_anywhere(&mut rng);
    let mut kills: BTreeMap<KillPoint, u64> = BTreeMap::new();
    let mut killed: Vec<(String, Instant, bool)> = Vec::new(); // (payment, when, hung)
    let mut worker_errors = Vec::new();
    let mut poll = tokio::time::interval(POLL_EVERY);
    let finished = loop {
        let wake = anywhere_at;
        let anywhere_sleep = async move {
            match wake {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(notice) = notices.recv() => {
                *kills.entry(notice.point).or_default() += 1;
                let hung = notice.point == KillPoint::HangAfterCharge;
                if notice.point != KillPoint::AfterDelete {
                    killed.push((notice.payment_id, notice.at, hung));
                }
                // A worker a random kill already took needs no second replacement.
                if let Some(handle) = live.remove(&notice.worker) {
                    if hung {
                        hung_workers.insert(notice.worker, handle);
                    } else {
                        handle.abort();
                        ctx.holding.lock().remove(&notice.worker);
                    }
                    spawn(&mut tasks, &mut live);
                }
            }
            Some(joined) = tasks.join_next() => {
                if let Ok((id, Err(e))) = joined {
                    // Ended on its own: an error talking to a backend.
                    live.remove(&id);
                    worker_errors.push(e);
                    if worker_errors.len() > MAX_WORKER_ERRORS {
                        tasks.shutdown().await;
                        let last = worker_errors.last().cloned().unwrap_or_default();
                        return Err(DemoError::Scenario(format!("payment workers keep failing; the last: {last}")));
                    }
                    spawn(&mut tasks, &mut live);
                }
            }
            _ = anywhere_sleep => {
                anywhere_at = next_anywhere(&mut rng);
                let ids: Vec<u64> = live.keys().copied().collect();
                if !ids.is_empty() {
                    let victim = ids[rng.usize(..ids.len())];
                    if let Some(handle) = live.remove(&victim) {
                        handle.abort();
                        *kills.entry(KillPoint::Anywhere).or_default() += 1;
                        if let Some(payment) = ctx.holding.lock().remove(&victim) {
                            killed.push((payment, Instant::now(), false));
                        }
                        spawn(&mut tasks, &mut live);
                    }
                }
            }
            _ = poll.tick() => {
                // The watchdog: a worker that has not started a step for `stall_timeout`
                // is stuck. Killing it closes its connections, which frees its job even
                // where the TTR did not.
                let stalled: Vec<u64> = {
                    let heartbeat = ctx.heartbeat.lock();
                    let stale = |id: &u64| heartbeat.get(id).is_some_and(|at| at.elapsed() > config.stall_timeout);
                    live.keys().chain(hung_workers.keys()).copied().filter(stale).collect()
                };
                for id in stalled {
                    watchdog_kills += 1;
                    let payment = ctx.holding.lock().remove(&id);
                    if let Some(handle) = hung_workers.remove(&id) {
                        handle.abort();
                        if let Some(payment) = payment {
                            watchdog_freed.insert(payment, Instant::now());
                        }
                    } else if let Some(handle) = live.remove(&id) {
                        handle.abort();
                        spawn(&mut tasks, &mut live);
                    }
                }
                if tube_counts(&mut producer, &run).await?.active() == 0 {
                    break true;
                }
                if started.elapsed() > config.deadline {
                    break false;
                }
            }
        }
    };
    let elapsed = started.elapsed();
    let workers_started = next_id;
    let live_workers: Vec<String> = {
        let doing = ctx.doing.lock();
        let mut ids: Vec<u64> = live.keys().copied().collect();
        ids.sort_unstable();
        ids.iter().map(|id| format!("{id}: {}", doing.get(id).copied().unwrap_or("starting"))).collect()
    };
    tasks.shutdown().await;

    let left = tube_counts(&mut producer, &run).await?;
    let mut kv = redis::Client::open(kv_url)?.get_multiplexed_async_connection().await?;
    let journal = ledger::read_journal(&mut kv, &ctx.ledger_keys)
        .await
        .map_err(|e| DemoError::Scenario(format!("reading the journal: {e}")))?;
    let audit = audit::audit(&requested, &ctx.provider.charges(), &journal, left.total());
    let ids: Vec<String> = requested.iter().map(|p| p.payment_id.clone()).collect();
    ledger::delete(&mut kv, &ctx.ledger_keys, &ids)
        .await
        .map_err(|e| DemoError::Scenario(format!("deleting the run's ledger: {e}")))?;

    let c = &ctx.counters;
    let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let stats = WorkerStats {
        reservations: get(&c.reservations),
        lost_replies: get(&c.lost_replies),
        provider_replays: get(&c.provider_replays),
        appended: get(&c.appended),
        already_recorded: get(&c.already_recorded),
        conflicting_records: get(&c.conflicting_records),
        deleted: get(&c.deleted),
        delete_not_found: get(&c.delete_not_found),
        buried: get(&c.buried),
    };
    let mut recovery_after_kill = LatencyHistogram::new();
    let mut recovery_after_hang = LatencyHistogram::new();
    let (mut hangs_freed_by_ttr, mut hangs_freed_by_watchdog) = (0u64, 0u64);
    {
        let done_at = ctx.done_at.lock();
        for (payment, _, _) in killed.iter().filter(|(_, _, hung)| *hung) {
            // Done before the watchdog fired (or it never had to): the TTR took it back.
            match (done_at.get(payment), watchdog_freed.get(payment)) {
                (Some(done), Some(freed)) if done < freed => hangs_freed_by_ttr += 1,
                (Some(_), None) => hangs_freed_by_ttr += 1,
                (_, Some(_)) => hangs_freed_by_watchdog += 1,
                (None, None) => {}
            }
        }
        for (payment, at, hung) in &killed {
            if let Some(done) = done_at.get(payment).filter(|done| **done > *at) {
                let histogram = if *hung { &mut recovery_after_hang } else { &mut recovery_after_kill };
                histogram.record(done.duration_since(*at));
            }
        }
    }
    let processing = ctx.processing.lock().clone();
    Ok(PaymentRun {
        config,
        audit,
        kills,
        workers_started,
        worker_errors,
        finished,
        left,
        live_workers,
        watchdog_kills,
        hangs_freed_by_ttr,
        hangs_freed_by_watchdog,
        hung_payments: killed.iter().filter(|(_, _, hung)| *hung).map(|(p, _, _)| p.clone()).collect(),
        elapsed,
        stats,
        provider: ctx.provider.stats(),
        processing,
        recovery_after_kill,
        recovery_after_hang,
    })
}

/// Runs the scenario: the correct worker under kills, then the two broken workers under
/// the same kind of kills, and reports the audits.
pub async fn demo(demo: Demo) -> Result<Report, DemoError> {
    let kv_url = demo.kv_url()?.to_string();
    let queue_addr = demo.queue_addr()?.to_string();
    let mut report = demo.report("payment", "an idempotent payment processor whose workers are killed");

    let config = PaymentConfig::for_scale(demo.scale, Variant::Correct, demo.seed);
    let mut correct = run_payments(&kv_url, &queue_addr, config).await?;
    let broken_key = PaymentConfig::for_scale(demo.scale, Variant::ChargeWithoutKey, demo.seed);
    let broken_key = run_payments(&kv_url, &queue_addr, broken_key).await?;
    let broken_ledger = PaymentConfig::for_scale(demo.scale, Variant::RecordWithoutCheck, demo.seed);
    let broken_ledger = run_payments(&kv_url, &queue_addr, broken_ledger).await?;

    report.section("the correct worker, killed");
    report.line("payments / workers", format!("{} / {}", config.payments, config.workers));
    report.line("ttr", format!("{} s", config.ttr_seconds));
    report.line(
        "planned kills per point",
        format!(
            "{} ({:.1}% of payments), hangs {}",
            config.planned(KillPoint::BeforeCharge),
            config.kill_fraction * 100.0,
            config.planned(KillPoint::HangAfterCharge)
        ),
    );
    if let Some(every) = config.anywhere_every {
        report.line("random-moment kills", format!("about every {every:?}"));
    }
    report.line("provider lost replies", format!("{:.0}% of calls", config.provider.lost_reply_probability * 100.0));
    let rows = correct.kills.iter().map(|(point, n)| vec![point.describe().to_string(), n.to_string()]).collect();
    report.table(&["where", "kills"], rows);
    report.line("workers started", correct.workers_started);
    report.line("reservations", correct.stats.reservations);
    report.line("lost replies (released)", correct.stats.lost_replies);
    report.line("provider replays (by key)", correct.stats.provider_replays);
    report
        .line("ledger: appended / already", format!("{} / {}", correct.stats.appended, correct.stats.already_recorded));
    report.line("deleted / not found (TTR)", format!("{} / {}", correct.stats.deleted, correct.stats.delete_not_found));
    report.line(
        "hangs freed by TTR / watchdog",
        format!(
            "{} / {} (stall timeout {:?})",
            correct.hangs_freed_by_ttr, correct.hangs_freed_by_watchdog, config.stall_timeout
        ),
    );
    report.line("provider charges", correct.provider.charges);
    report.line("elapsed", format!("{:.1?}", correct.elapsed));
    report.line("throughput", format!("{:.0} payments/s", config.payments as f64 / correct.elapsed.as_secs_f64()));
    report.histogram("processing (reserve->delete)", &mut correct.processing);
    report.histogram("recovery after a kill", &mut correct.recovery_after_kill);
    report.histogram("recovery after a hang", &mut correct.recovery_after_hang);
    for error in correct.worker_errors.iter().take(3) {
        report.text(format!("worker error: {error}"));
    }
    for example in &correct.audit.examples {
        report.text(format!("audit: {example}"));
    }
    for run in [&correct, &broken_key, &broken_ledger].into_iter().filter(|run| !run.finished) {
        report.text(format!(
            "{}: not drained after {:?}: {:?} left; hung: {:?}; live workers: {}",
            run.config.variant.name(),
            run.elapsed,
            run.left,
            run.hung_payments,
            run.live_workers.join(", ")
        ));
    }

    report.section("broken workers, same kinds of kills");
    let row = |run: &PaymentRun| {
        let a = &run.audit;
        vec![
            run.config.variant.name().to_string(),
            a.requested.to_string(),
            run.kills.values().sum::<u64>().to_string(),
            format!("{} (+{})", a.double_charged, a.extra_charges),
            a.double_recorded.to_string(),
            (a.never_charged + a.never_recorded).to_string(),
            if a.is_clean() { "clean".into() } else { "CAUGHT".into() },
        ]
    };
    report.table(
        &["worker", "payments", "kills", "double charged", "double recorded", "lost", "audit"],
        vec![row(&correct), row(&broken_key), row(&broken_ledger)],
    );
    for example in broken_key.audit.examples.iter().take(2).chain(broken_ledger.audit.examples.iter().take(2)) {
        report.text(format!("audit: {example}"));
    }

    let a = &correct.audit;
    report.check(
        correct.finished,
        format!("the queue drained in {:.1?} (deadline {:?})", correct.elapsed, config.deadline),
    );
    let planned_points = KillPoint::PLANNED.iter().filter(|p| correct.kills.get(p).copied().unwrap_or(0) > 0).count();
    report.check(
        planned_points == KillPoint::PLANNED.len(),
        format!("workers died at {planned_points}/{} planned points", KillPoint::PLANNED.len()),
    );
    report.check(
        a.double_charged == 0 && a.wrong_amount == 0 && a.unrequested_charges == 0,
        format!("zero double charges: {}/{} payments charged exactly once", a.charged_once, a.requested),
    );
    report.check(a.never_charged == 0, format!("zero lost payments: {} never charged", a.never_charged));
    report.check(
        a.recorded_once == a.requested
            && a.mismatched_records == 0
            && a.unrequested_records == 0
            && a.unreadable_records == 0,
        format!(
            "ledger: {}/{} payments recorded exactly once with their charge ({} mismatched)",
            a.recorded_once, a.requested, a.mismatched_records
        ),
    );
    report.check(a.jobs_left == 0, format!("{} jobs left in the queue", a.jobs_left));
    report.check(
        broken_key.finished && broken_key.audit.double_charged > 0,
        format!("the audit catches the keyless worker: {} payments double charged", broken_key.audit.double_charged),
    );
    report.check(
        broken_ledger.finished && broken_ledger.audit.double_recorded > 0 && broken_ledger.audit.double_charged == 0,
        format!(
            "the audit catches the unchecked ledger write: {} payments recorded twice, {} double charged",
            broken_ledger.audit.double_recorded, broken_ledger.audit.double_charged
        ),
    );
    report.verdict(if report.passed() {
        "every payment charged once and recorded once despite the kills; both broken workers were caught"
    } else {
        "the pattern did not hold: see the failed checks"
    });
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kill_plan_is_exact_distinct_and_fixed_by_the_seed() {
        let config = PaymentConfig::for_scale(Scale::Quick, Variant::Correct, 9);
        let requested = payments(&config);
        let plan = kill_plan(&config, &requested);
        for point in KillPoint::PLANNED {
            let n = plan.values().filter(|p| **p == point).count();
            assert_eq!(n, config.planned(point), "{point:?}");
            assert!(n >= 1);
        }
        assert_eq!(plan, kill_plan(&config, &requested));
        let other = PaymentConfig { seed: 10, ..config };
        assert_ne!(plan, kill_plan(&other, &payments(&other)));
        assert_eq!(payments(&config), requested, "payments are fixed by the seed");
    }
}
