//! The TCP server: one task per connection, one timer task, one compaction task.
//!
//! A connection task reads bytes, lets the [`Framer`] cut them into frames, and applies
//! each frame to the [`Engine`] under one mutex (a `parking_lot` mutex, not a tokio one:
//! nothing awaits while it is held, and every engine call is microseconds). Replies go to
//! an output buffer that is flushed when the input holds no further complete command, so
//! a pipelining client gets its replies in one write.
//!
//! **Durability of a reply.** Before the output buffer is flushed, the connection waits
//! for the write-ahead log to make the last record its commands appended as durable as
//! `-f` promises ([`RecordLog::commit_async`]): fsynced under `-f 0`, written to the OS
//! under `-f MS` and `-F`. With `-f 0`, the record log's syncer covers every connection
//! waiting at that moment with one fsync (group commit), so 64 producers cost about as
//! many fsyncs as the disk does in the time they took, not 64 per round.
//!
//! **Blocking reserve.** A `reserve` that finds no job registers the connection with the
//! engine and waits on a oneshot channel; whoever makes a job ready (another connection's
//! put, the timer) hands it over under the same mutex. While waiting, the task still
//! reads the socket so that a client that hangs up is noticed (beanstalkd answers a
//! half-closed waiting connection with `TIMED_OUT`), but it does not run the commands it
//! reads until the reserve is answered, as beanstalkd does.
//!
//! The timer task sleeps until [`Engine::next_wakeup`] and runs [`Engine::tick`];
//! anything that makes a nearer deadline notifies it. The compaction task rewrites live
//! jobs into fresh segments and deletes the old ones (see [`compact`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use minicore::lifecycle::{self, ConnectionLimit, ServeOptions, Service, Shutdown, Slot};
use minicore::record_log::{LogOptions, RecordLog};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Notify};

use crate::commit::CommitRelay;
use crate::config::Config;
use crate::engine::{Engine, FailReply, Journal, NewJob, PutOutcome, ReserveOutcome, Wakeup};
use crate::job::{ConnId, Nanos};
use crate::protocol::{msg, BackoffKind, Command, Frame, Framer, Op, OP_COUNT};
use crate::retry::RetryPolicy;
use crate::stats::{self, ServerFacts};
use crate::wal::Record;

/// The most connections served at once; more are refused with `OUT_OF_MEMORY`, which is
/// what beanstalkd answers when it cannot take a connection's state.
const MAX_CONNECTIONS: usize = 10_000;
/// How often the compaction task looks at the log.
const COMPACTION_CHECK: Duration = Duration::from_millis(500);
/// Jobs rewritten per lock hold during compaction, so clients wait microseconds, not
/// the whole rewrite.
const COMPACTION_CHUNK: usize = 256;

/// Wall-clock nanoseconds since the Unix epoch.
pub fn now() -> Nanos {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as Nanos)
}

/// The engine plus the channels of connections blocked in `reserve`.
pub struct State {
    pub engine: Engine,
    waiters: HashMap<ConnId, oneshot::Sender<Wakeup>>,
}

/// What every task shares.
pub struct Shared {
    pub state: Mutex<State>,
    /// Wakes the timer task when a nearer deadline appears.
    timer: Notify,
    /// The deadline the timer task sleeps until (i64::MAX: none).
    timer_at: AtomicI64,
    pub draining: AtomicBool,
    pub facts: ServerFacts,
    pub log: Option<Arc<RecordLog>>,
    /// Under `-f 0`, the one task that waits on the log for every connection.
    relay: Option<Arc<CommitRelay>>,
    pub metrics: crate::admin::Metrics,
    pub config: Config,
    /// `stats`' `cmd-*` counters: atomics, so counting a command takes no lock.
    ops: [AtomicU64; OP_COUNT],
    /// Counts connections at accept: `stats`' current and total connections.
    limit: Arc<ConnectionLimit>,
}

impl Shared {
    pub fn count_op(&self, op: Op) {
        self.ops[op as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn op_counts(&self) -> [u64; OP_COUNT] {
        std::array::from_fn(|i| self.ops[i].load(Ordering::Relaxed))
    }

    /// Runs `f` on the engine, then delivers the wakeups it produced, re-arms the timer,
    /// and returns the LSN the caller must make durable before replying.
    pub fn with_engine<T>(&self, f: impl FnOnce(&mut Engine, Nanos) -> T) -> (T, Option<u64>) {
        let mut state = self.state.lock();
        let result = f(&mut state.engine, now());
        let lsn = state.engine.take_lsn();
        self.after_change(&mut state);
        (result, lsn)
    }

    fn after_change(&self, state: &mut State) {
        for (conn, wakeup) in state.engine.take_wakeups() {
            if let Some(tx) = state.waiters.remove(&conn) {
                // The receiver is gone only if the connection is closing; its
                // disconnect then releases whatever this handed it.
                let _ = tx.send(wakeup);
            }
        }
        for (tube, nanos) in state.engine.take_deleted_latencies() {
            self.metrics.observe_delete(&tube, nanos);
        }
        let next = state.engine.next_wakeup().unwrap_or(i64::MAX);
        if next < self.timer_at.load(Ordering::Acquire) {
            self.timer_at.store(next, Ordering::Release);
            self.timer.notify_one();
        }
    }

    /// Waits until record `lsn` is as durable as `-f` promises.
    pub async fn commit(&self, lsn: Option<u64>) -> Result<(), String> {
        if let (Some(relay), Some(lsn)) = (&self.relay, lsn) {
            return relay.wait(lsn).await;
        }
        match (&self.log, lsn) {
            (Some(log), Some(lsn)) => log.commit_async(lsn).await.map(|_| ()).map_err(|e| e.to_string()),
            _ => Ok(()),
        }
    }
}

/// A started server.
pub struct Running {
    pub shared: Arc<Shared>,
    pub addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub shutdown: Shutdown,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Waits for shutdown, for connections to finish, and for the final fsync.
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Recovers the write-ahead log (with `-b`), binds, and starts serving.
pub async fn start(config: Config) -> Result<Running, String> {
    config.validate()?;
    let started_at = now();
    let mut engine = Engine::new(started_at as u64);
    let log = match &config.wal_dir {
        Some(dir) => {
            let options = LogOptions {
                segment_bytes: config.wal_file_size,
                fsync: config.fsync_policy(),
                max_record_bytes: (config.max_job_size + 4096).min(u32::MAX as usize) as u32,
                // Fixed-size files, as beanstalkd's binlog: an fsync then flushes data only.
                preallocate: true,
                ..LogOptions::default()
            };
            let dir = dir.clone();
            let (recovered, engine_back) = tokio::task::spawn_blocking(move || {
                let recovered = recover(&dir, options, &mut engine);
                (recovered, engine)
            })
            .await
            .map_err(|e| format!("recovery panicked: {e}"))?;
            engine = engine_back;
            let Recovered(log, replayed) = recovered?;
            tracing::info!(records = replayed, jobs = engine.jobs.len(), "write-ahead log recovered");
            let log = Arc::new(log);
            engine.attach_journal(Journal::new(log.clone()));
            Some(log)
        }
        None => None,
    };
    engine.finish_recovery(now());

    let addr: SocketAddr = format!("{}:{}", config.listen, config.port)
        .parse()
        .map_err(|e| format!("-l {} -p {}: not an address: {e}", config.listen, config.port))?;
    let listener = TcpListener::bind(addr).await.map_err(|e| format!("can't listen on {addr}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let admin_listener = match config.admin_port {
        Some(port) => {
            let admin_addr = SocketAddr::new(addr.ip(), port);
            Some(TcpListener::bind(admin_addr).await.map_err(|e| format!("can't listen on {admin_addr}: {e}"))?)
        }
        None => None,
    };
    let admin_addr = admin_listener.as_ref().and_then(|l| l.local_addr().ok());

    let (hostname, os, platform) = stats::uname();
    let facts = ServerFacts {
        pid: std::process::id(),
        version: format!("1.12 miniqueue-{}", env!("CARGO_PKG_VERSION")),
        started_at,
        max_job_size: config.max_job_size,
        wal_file_size: config.wal_file_size,
        draining: false,
        instance_id: format!("{:016x}", fastrand::u64(..)),
        hostname,
        os,
        platform,
        wal_oldest: 0,
        wal_current: 0,
        connections: None,
    };
    tracing::info!("durability: {}", config.durability());
    let shared = Arc::new(Shared {
        state: Mutex::new(State { engine, waiters: HashMap::new() }),
        timer: Notify::new(),
        timer_at: AtomicI64::new(i64::MAX),
        draining: AtomicBool::new(false),
        facts,
        log: log.clone(),
        relay: match &log {
            Some(log) if config.fsync_policy() == minicore::record_log::FsyncPolicy::Always => {
                Some(CommitRelay::new(log.clone()))
            }
            _ => None,
        },
        metrics: crate::admin::Metrics::new(),
        config: config.clone(),
        ops: std::array::from_fn(|_| AtomicU64::new(0)),
        limit: ConnectionLimit::new(MAX_CONNECTIONS),
    });
    let shutdown = Shutdown::new();

    tokio::spawn(timer_task(shared.clone(), shutdown.clone()));
    if let Some(relay) = &shared.relay {
        tokio::spawn(relay.clone().run(shutdown.clone()));
    }
    tokio::spawn(drain_on_sigusr1(shared.clone(), shutdown.clone()));
    if log.is_some() {
        tokio::spawn(compaction_task(shared.clone(), shutdown.clone()));
    }
    if let Some(listener) = admin_listener {
        let router = crate::admin::router(shared.clone());
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) =
                axum::serve(listener, router).with_graceful_shutdown(async move { shutdown.wait().await }).await
            {
                tracing::error!(error = %e, "admin listener failed");
            }
        });
    }
    eprintln!("miniqueue: listening on {addr}");
    if let Some(admin) = admin_addr {
        eprintln!("miniqueue: admin on {admin}");
    }
    let service = Arc::new(QueueService { shared: shared.clone(), shutdown: shutdown.clone() });
    let serve_shutdown = shutdown.clone();
    let task = tokio::spawn(async move {
        let limit = service.shared.limit.clone();
        let options = ServeOptions { drain_timeout: Duration::from_secs(2) };
        lifecycle::serve(vec![listener], service.clone(), limit, serve_shutdown, options).await;
        if let Some(log) = &service.shared.log {
            let log = log.clone();
            let next = log.next_lsn();
            if next > 0 {
                let _ = tokio::task::spawn_blocking(move || log.sync(next - 1)).await;
            }
        }
    });
    Ok(Running { shared, addr, admin_addr, shutdown, task })
}

/// The recovered log and the number of records replayed.
struct Recovered(RecordLog, u64);

/// Opens the log in `dir` and replays every record into `engine`.
fn recover(dir: &std::path::Path, options: LogOptions, engine: &mut Engine) -> Result<Recovered, String> {
    let (log, report) = RecordLog::open(dir, options)
        .map_err(|e| format!("can't open the write-ahead log in {}: {e}", dir.display()))?;
    if let Some(cut) = &report.truncated {
        tracing::warn!(?cut, "write-ahead log had a torn tail, cut");
    }
    let mut replayed = 0;
    let reader = log.reader(log.first_lsn()).map_err(|e| e.to_string())?;
    for item in reader {
        let (lsn, payload) = item.map_err(|e| format!("reading the write-ahead log: {e}"))?;
        let record = Record::decode(&payload)
            .map_err(|e| format!("write-ahead log record {lsn} in {}: {e}; refusing to start", dir.display()))?;
        engine.replay(record, lsn);
        replayed += 1;
    }
    engine.check_invariants();
    Ok(Recovered(log, replayed))
}

/// Sleeps until the engine's next deadline and processes it.
async fn timer_task(shared: Arc<Shared>, shutdown: Shutdown) {
    loop {
        let next = shared.state.lock().engine.next_wakeup().unwrap_or(i64::MAX);
        shared.timer_at.store(next, Ordering::Release);
        let wait = next.saturating_sub(now());
        if wait > 0 {
            let sleep = if next == i64::MAX { Duration::from_secs(3600) } else { Duration::from_nanos(wait as u64) };
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = shared.timer.notified() => {}
                _ = shutdown.wait() => return,
            }
        }
        let mut state = shared.state.lock();
        state.engine.tick(now());
        // What a tick journals (a TTR expiry) is not waited for by anyone; drop the LSN
        // so the next command does not wait for it either.
        let _ = state.engine.take_lsn();
        shared.after_change(&mut state);
    }
}

/// SIGUSR1 puts the server in drain mode: `put` answers `DRAINING` from then on.
async fn drain_on_sigusr1(shared: Arc<Shared>, shutdown: Shutdown) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
        tracing::warn!("can't listen for SIGUSR1; drain mode is unavailable");
        return;
    };
    // Ends with the server, so that `Shared` (and the write-ahead log) is let go.
    loop {
        tokio::select! {
            signal = usr1.recv() => {
                if signal.is_none() {
                    return;
                }
                tracing::info!("received SIGUSR1: drain mode, new jobs are refused");
                shared.draining.store(true, Ordering::Release);
            }
            _ = shutdown.wait() => return,
        }
    }
}

/// Watches the log and compacts it when most of it is dead weight.
async fn compaction_task(shared: Arc<Shared>, shutdown: Shutdown) {
    let Some(log) = shared.log.clone() else { return };
    let file_size = shared.config.wal_file_size;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(COMPACTION_CHECK) => {}
            _ = shutdown.wait() => return,
        }
        let live = shared.state.lock().engine.live_bytes;
        let size = log.size_bytes();
        // Compact when at least two files' worth is on disk and under half of it is live.
        if size < 2 * file_size || size < 2 * live {
            continue;
        }
        match compact(&shared, &log).await {
            Ok((rewritten, deleted)) => {
                tracing::info!(
                    rewritten,
                    deleted_segments = deleted,
                    before = size,
                    after = log.size_bytes(),
                    "compacted the write-ahead log"
                )
            }
            Err(e) => tracing::error!(error = %e, "compaction failed; will retry"),
        }
    }
}

/// One compaction: roll to a fresh segment at LSN `L`, rewrite every live job whose
/// image is before `L` (in chunks, so clients only wait for one chunk), rewrite policies,
/// unique keys and the id counter, fsync, then delete every segment before `L`.
///
/// Why this is safe: a job's records after its image only change it, so its current
/// image (appended under the engine lock, in order with every other change) replaces
/// everything before it; a job with no image after `L` was deleted, and its delete
/// record is either before `L` (gone with it) or after (skipped at replay). Returns
/// (jobs rewritten, segments deleted).
pub async fn compact(shared: &Arc<Shared>, log: &Arc<RecordLog>) -> Result<(usize, usize), String> {
    let roll_log = log.clone();
    let boundary = tokio::task::spawn_blocking(move || roll_log.roll_segment())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let ids = shared.state.lock().engine.jobs_imaged_before(boundary);
    let mut last = None;
    for chunk in ids.chunks(COMPACTION_CHUNK) {
        let (result, lsn) = shared.with_engine(|engine, _| {
            for &id in chunk {
                engine.rewrite_image(id, boundary)?;
            }
            Ok::<(), crate::engine::JournalError>(())
        });
        result.map_err(|e| e.to_string())?;
        last = lsn.or(last);
        tokio::task::yield_now().await;
    }
    let (result, lsn) = shared.with_engine(|engine, now| engine.rewrite_metadata(now));
    result.map_err(|e| e.to_string())?;
    last = lsn.or(last);
    let sync_log = log.clone();
    let deleted = tokio::task::spawn_blocking(move || {
        if let Some(lsn) = last {
            sync_log.sync(lsn)?;
        }
        sync_log.delete_segments_before(boundary)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    Ok((ids.len(), deleted))
}

/// The per-connection protocol handler.
struct QueueService {
    shared: Arc<Shared>,
    shutdown: Shutdown,
}

impl Service for QueueService {
    async fn connection(self: Arc<Self>, stream: TcpStream, peer: SocketAddr, slot: Slot) {
        let _slot = slot;
        let _ = stream.set_nodelay(true);
        tracing::debug!(%peer, "connection opened");
        let conn = self.shared.with_engine(|engine, _| engine.connect()).0;
        let mut session = Session {
            shared: self.shared.clone(),
            conn,
            framer: Framer::new(self.shared.config.max_job_size),
            input: BytesMut::with_capacity(4096),
            output: BytesMut::with_capacity(4096),
            durable_through: None,
        };
        let result = tokio::select! {
            result = session.run(stream) => result,
            _ = self.shutdown.wait() => Ok(()),
        };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "connection ended");
        }
        let mut state = self.shared.state.lock();
        state.waiters.remove(&conn);
        state.engine.disconnect(conn, now());
        // Nobody waits for what a disconnect journals (failures under a policy).
        let _ = state.engine.take_lsn();
        self.shared.after_change(&mut state);
        tracing::debug!(%peer, "connection closed");
    }

    async fn rejected(self: Arc<Self>, mut stream: TcpStream, _peer: SocketAddr) {
        let _ = stream.write_all(msg::OUT_OF_MEMORY).await;
    }
}

/// What a frame asks of the connection loop.
enum Next {
    Continue,
    /// Block until the engine hands over a job (or the wait ends).
    Wait(oneshot::Receiver<Wakeup>),
    Close,
}

/// One client connection.
struct Session {
    shared: Arc<Shared>,
    conn: ConnId,
    framer: Framer,
    input: BytesMut,
    output: BytesMut,
    /// The last LSN a reply in `output` depends on.
    durable_through: Option<u64>,
}

impl Session {
    async fn run(&mut self, mut stream: TcpStream) -> std::io::Result<()> {
        loop {
            while let Some(frame) = self.framer.next_frame(&mut self.input) {
                match self.handle(frame) {
                    Next::Continue => {}
                    Next::Close => {
                        self.flush(&mut stream).await?;
                        return Ok(());
                    }
                    Next::Wait(rx) => {
                        self.flush(&mut stream).await?;
                        if !self.wait_for_job(&mut stream, rx).await? {
                            return Ok(());
                        }
                    }
                }
            }
            self.flush(&mut stream).await?;
            if self.input.capacity() - self.input.len() < 1024 {
                self.input.reserve(4096);
            }
            let read = match self.busy_poll(&stream).await? {
                Some(read) => read,
                None => stream.read_buf(&mut self.input).await?,
            };
            if read == 0 {
                return Ok(());
            }
        }
    }

    /// When this is the only connection, looks for the client's next command for up to
    /// `--busy-poll-us` before the loop may sleep; `None` if none came (or busy polling
    /// does not apply). Returns what was read, 0 at end of stream.
    ///
    /// Why: on a VM, an event loop that sleeps in `epoll_wait` after every reply pays for
    /// its vCPU to be woken on every command, and with one client that wake-up is most of
    /// the round trip (a C ping-pong on this 2-vCPU VM: about 130–170 µs per round trip
    /// with an epoll server, about 40 µs with a polling one). Each pass yields to the
    /// runtime, which polls the sockets with a zero timeout, so timers, the commit relay
    /// and the admin endpoint still run. With more than one connection the loop has
    /// other work to wake it and polling only took CPU from the clients (measured: about
    /// 15% fewer jobs/s at 16 and 64 clients), so it is left out there. It is left out
    /// under `-f 0` too (the commit relay exists): there the fsync dominates the round
    /// trip, and polling measured about 13% fewer jobs/s for one client, alternating five
    /// runs each, likely because a spinning vCPU competes with the hypervisor's I/O
    /// thread that the fsync needs.
    async fn busy_poll(&mut self, stream: &TcpStream) -> std::io::Result<Option<usize>> {
        let budget = self.shared.config.busy_poll_us;
        if budget == 0 || self.shared.relay.is_some() || self.shared.limit.live() != 1 {
            return Ok(None);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_micros(budget);
        loop {
            match stream.try_read_buf(&mut self.input) {
                Ok(read) => return Ok(Some(read)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if std::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::task::yield_now().await;
        }
    }

    /// Sends what is buffered, after the log made it durable.
    async fn flush(&mut self, stream: &mut TcpStream) -> std::io::Result<()> {
        if let Some(lsn) = self.durable_through.take() {
            if let Err(e) = self.shared.commit(Some(lsn)).await {
                // The log failed after the change was applied in memory: tell the client
                // it is not durable, and stop (every later write fails the same way).
                tracing::error!(error = %e, "write-ahead log commit failed");
                self.output.clear();
                self.output.extend_from_slice(msg::INTERNAL_ERROR);
                stream.write_all(&self.output).await?;
                return Err(std::io::Error::other(e));
            }
        }
        if !self.output.is_empty() {
            stream.write_all(&self.output).await?;
            self.output.clear();
        }
        Ok(())
    }

    /// Waits for a blocked reserve to be answered. Returns false if the client went away.
    async fn wait_for_job(
        &mut self,
        stream: &mut TcpStream,
        mut rx: oneshot::Receiver<Wakeup>,
    ) -> std::io::Result<bool> {
        loop {
            if self.input.capacity() - self.input.len() < 1024 {
                self.input.reserve(4096);
            }
            tokio::select! {
                wakeup = &mut rx => {
                    if let Ok(wakeup) = wakeup {
                        self.write_wakeup(wakeup);
                    }
                    self.flush(stream).await?;
                    return Ok(true);
                }
                read = stream.read_buf(&mut self.input) => {
                    if read? > 0 {
                        // Commands sent while waiting run after the reserve is answered.
                        continue;
                    }
                    // Half-closed while waiting: beanstalkd answers TIMED_OUT.
                    let still_waiting = {
                        let mut state = self.shared.state.lock();
                        state.waiters.remove(&self.conn);
                        state.engine.stop_waiting(self.conn)
                    };
                    if still_waiting {
                        self.output.extend_from_slice(msg::TIMED_OUT);
                    } else if let Ok(wakeup) = rx.try_recv() {
                        self.write_wakeup(wakeup);
                    }
                    let _ = self.flush(stream).await;
                    return Ok(false);
                }
            }
        }
    }

    fn write_wakeup(&mut self, wakeup: Wakeup) {
        match wakeup {
            Wakeup::Reserved { id, body } => self.job_reply(b"RESERVED", id, &body),
            Wakeup::TimedOut => self.output.extend_from_slice(msg::TIMED_OUT),
            Wakeup::DeadlineSoon => self.output.extend_from_slice(msg::DEADLINE_SOON),
        }
    }

    fn word(&mut self, reply: &[u8]) {
        self.output.extend_from_slice(reply);
    }

    /// `WORD <n>\r\n`.
    fn word_num(&mut self, word: &str, n: u64) {
        self.output.extend_from_slice(word.as_bytes());
        self.output.put_u8(b' ');
        self.output.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        self.output.extend_from_slice(b"\r\n");
    }

    /// `WORD <id> <bytes>\r\n<body>\r\n`.
    fn job_reply(&mut self, word: &[u8], id: u64, body: &Bytes) {
        self.output.extend_from_slice(word);
        self.output.put_u8(b' ');
        self.output.extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
        self.output.put_u8(b' ');
        self.output.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        self.output.extend_from_slice(b"\r\n");
        self.output.extend_from_slice(body);
        self.output.extend_from_slice(b"\r\n");
    }

    /// `OK <bytes>\r\n<yaml>\r\n`.
    fn yaml_reply(&mut self, yaml: &str) {
        self.word_num("OK", yaml.len() as u64);
        self.output.extend_from_slice(yaml.as_bytes());
        self.output.extend_from_slice(b"\r\n");
    }

    fn note_lsn(&mut self, lsn: Option<u64>) {
        if lsn.is_some() {
            self.durable_through = lsn;
        }
    }

    /// Applies one frame; replies go to `output`.
    fn handle(&mut self, frame: Frame) -> Next {
        let conn = self.conn;
        let command = match frame {
            Frame::Reply { reply, counted } => {
                if let Some(op) = counted {
                    self.shared.count_op(op);
                }
                self.word(reply);
                return Next::Continue;
            }
            Frame::PutLine { unique, too_big } => {
                if !unique {
                    self.shared.count_op(Op::Put);
                }
                if !too_big {
                    self.shared.state.lock().engine.begin_put(conn);
                }
                return Next::Continue;
            }
            Frame::Job(header, body) => {
                if self.shared.draining.load(Ordering::Acquire) {
                    self.word(msg::DRAINING);
                    return Next::Continue;
                }
                let metrics = &self.shared.metrics;
                let (result, lsn) = self.shared.with_engine(|engine, now| {
                    let new =
                        NewJob { pri: header.pri, delay: header.delay, ttr: header.ttr, body, unique: header.unique };
                    let result = engine.put(conn, new, now);
                    if let (Ok(PutOutcome::Inserted(_)), Some(c)) = (&result, engine.conns.get(&conn)) {
                        metrics.observe_put(&c.use_tube);
                    }
                    result
                });
                self.note_lsn(lsn);
                match result {
                    Ok(PutOutcome::Inserted(id)) => self.word_num("INSERTED", id),
                    Ok(PutOutcome::Duplicate(id)) => self.word_num("DUPLICATE", id),
                    Err(e) => self.internal_error(e),
                }
                return Next::Continue;
            }
            Frame::Command(command) => command,
        };
        self.shared.count_op(command.op());
        match command {
            Command::Put(_) => unreachable!("the framer delivers puts as Frame::Job"),
            Command::Quit => return Next::Close,
            Command::Use(name) => {
                let (name, _) = self.shared.with_engine(|engine, _| engine.use_tube(conn, &name));
                self.output.extend_from_slice(b"USING ");
                self.output.extend_from_slice(name.as_bytes());
                self.output.extend_from_slice(b"\r\n");
            }
            Command::Reserve(timeout) => {
                let mut state = self.shared.state.lock();
                let outcome = state.engine.reserve(conn, timeout, now());
                let rx = if outcome == ReserveOutcome::Waiting {
                    let (tx, rx) = oneshot::channel();
                    state.waiters.insert(conn, tx);
                    Some(rx)
                } else {
                    None
                };
                // A reservation's record is not waited for (see wal.rs): drop its LSN.
                let _ = state.engine.take_lsn();
                self.shared.after_change(&mut state);
                drop(state);
                match outcome {
                    ReserveOutcome::Reserved { id, body } => self.job_reply(b"RESERVED", id, &body),
                    ReserveOutcome::DeadlineSoon => self.word(msg::DEADLINE_SOON),
                    ReserveOutcome::TimedOut => self.word(msg::TIMED_OUT),
                    ReserveOutcome::Waiting => return Next::Wait(rx.expect("set for Waiting")),
                }
            }
            Command::ReserveJob(id) => {
                let (body, _) = self.shared.with_engine(|engine, now| engine.reserve_job(conn, id, now));
                match body {
                    Some(body) => self.job_reply(b"RESERVED", id, &body),
                    None => self.word(msg::NOT_FOUND),
                }
            }
            Command::Delete(id) => {
                let (result, lsn) = self.shared.with_engine(|engine, now| engine.delete(conn, id, now));
                self.note_lsn(lsn);
                self.bool_reply(result, msg::DELETED);
            }
            Command::Release { id, pri, delay } => {
                let (result, lsn) = self.shared.with_engine(|engine, now| engine.release(conn, id, pri, delay, now));
                self.note_lsn(lsn);
                self.bool_reply(result, msg::RELEASED);
            }
            Command::Bury { id, pri } => {
                let (result, lsn) = self.shared.with_engine(|engine, _| engine.bury(conn, id, pri));
                self.note_lsn(lsn);
                self.bool_reply(result, msg::BURIED);
            }
            Command::Touch(id) => {
                let (touched, _) = self.shared.with_engine(|engine, now| engine.touch(conn, id, now));
                self.word(if touched { msg::TOUCHED } else { msg::NOT_FOUND });
            }
            Command::Watch(name) => {
                let (count, _) = self.shared.with_engine(|engine, _| engine.watch(conn, &name));
                self.word_num("WATCHING", count as u64);
            }
            Command::Ignore(name) => {
                let (count, _) = self.shared.with_engine(|engine, _| engine.ignore(conn, &name));
                match count {
                    Some(count) => self.word_num("WATCHING", count as u64),
                    None => self.word(msg::NOT_IGNORED),
                }
            }
            Command::Peek(id) => {
                let body = self.shared.state.lock().engine.peek(id);
                self.found(body.map(|b| (id, b)));
            }
            Command::PeekReady => {
                let found = self.shared.state.lock().engine.peek_ready(conn);
                self.found(found);
            }
            Command::PeekDelayed => {
                let found = self.shared.state.lock().engine.peek_delayed(conn);
                self.found(found);
            }
            Command::PeekBuried => {
                let found = self.shared.state.lock().engine.peek_buried(conn);
                self.found(found);
            }
            Command::Kick(bound) => {
                let (result, lsn) = self.shared.with_engine(|engine, now| engine.kick(conn, bound, now));
                self.note_lsn(lsn);
                match result {
                    Ok(count) => self.word_num("KICKED", u64::from(count)),
                    Err(e) => self.internal_error(e),
                }
            }
            Command::KickJob(id) => {
                let (result, lsn) = self.shared.with_engine(|engine, now| engine.kick_job(id, now));
                self.note_lsn(lsn);
                self.bool_reply(result, msg::KICKED);
            }
            Command::StatsJob(id) => {
                let yaml = {
                    let state = self.shared.state.lock();
                    state.engine.job(id).map(|job| stats::job_yaml(job, now()))
                };
                match yaml {
                    Some(yaml) => self.yaml_reply(&yaml),
                    None => self.word(msg::NOT_FOUND),
                }
            }
            Command::StatsTube(name) => {
                let yaml = {
                    let state = self.shared.state.lock();
                    state.engine.tubes.get(name.as_str()).map(|tube| stats::tube_yaml(tube, now()))
                };
                match yaml {
                    Some(yaml) => self.yaml_reply(&yaml),
                    None => self.word(msg::NOT_FOUND),
                }
            }
            Command::Stats => {
                let yaml = {
                    let state = self.shared.state.lock();
                    let mut facts = self.shared.facts.clone();
                    facts.draining = self.shared.draining.load(Ordering::Acquire);
                    facts.connections = Some((self.shared.limit.live(), self.shared.limit.admitted()));
                    if let Some(log) = &self.shared.log {
                        facts.wal_oldest = log.first_lsn();
                        facts.wal_current = log.next_lsn();
                    }
                    stats::server_yaml(&state.engine, &self.shared.op_counts(), &facts, now())
                };
                self.yaml_reply(&yaml);
            }
            Command::ListTubes => {
                let yaml = {
                    let state = self.shared.state.lock();
                    stats::list_yaml(state.engine.tube_order.iter().map(|t| &**t))
                };
                self.yaml_reply(&yaml);
            }
            Command::ListTubeUsed => {
                let name = self.shared.state.lock().engine.conns[&conn].use_tube.clone();
                self.output.extend_from_slice(b"USING ");
                self.output.extend_from_slice(name.as_bytes());
                self.output.extend_from_slice(b"\r\n");
            }
            Command::ListTubesWatched => {
                let yaml = {
                    let state = self.shared.state.lock();
                    stats::list_yaml(state.engine.conns[&conn].watch.iter().map(|t| &**t))
                };
                self.yaml_reply(&yaml);
            }
            Command::PauseTube { tube, delay } => {
                let (paused, _) = self.shared.with_engine(|engine, now| engine.pause_tube(&tube, delay, now));
                self.word(if paused { msg::PAUSED } else { msg::NOT_FOUND });
            }
            Command::TubePolicy { tube, max_attempts, backoff, base_ms, cap_ms } => {
                let policy = (max_attempts > 0 || backoff != BackoffKind::None).then_some(RetryPolicy {
                    max_attempts,
                    backoff,
                    base_ms,
                    cap_ms,
                });
                let (result, lsn) = self.shared.with_engine(|engine, _| engine.set_policy(&tube, policy));
                self.note_lsn(lsn);
                match result {
                    Ok(()) => self.word(msg::POLICY_SET),
                    Err(e) => self.internal_error(e),
                }
            }
            Command::Fail { id, reason } => {
                let (result, lsn) = self.shared.with_engine(|engine, now| engine.fail(conn, id, &reason, now));
                self.note_lsn(lsn);
                match result {
                    Ok(FailReply::RetryingMs(ms)) => self.word_num("RETRYING", ms),
                    Ok(FailReply::Dead) => self.word(msg::DEAD),
                    Ok(FailReply::NotFound) => self.word(msg::NOT_FOUND),
                    Err(e) => self.internal_error(e),
                }
            }
            Command::PurgeDead(tube) => {
                let (result, lsn) = self.shared.with_engine(|engine, now| engine.purge_dead(&tube, now));
                self.note_lsn(lsn);
                match result {
                    Ok(count) => self.word_num("PURGED", count as u64),
                    Err(e) => self.internal_error(e),
                }
            }
        }
        Next::Continue
    }

    fn bool_reply(&mut self, result: Result<bool, crate::engine::JournalError>, yes: &'static [u8]) {
        match result {
            Ok(true) => self.word(yes),
            Ok(false) => self.word(msg::NOT_FOUND),
            Err(e) => self.internal_error(e),
        }
    }

    fn found(&mut self, found: Option<(u64, Bytes)>) {
        match found {
            Some((id, body)) => self.job_reply(b"FOUND", id, &body),
            None => self.word(msg::NOT_FOUND),
        }
    }

    fn internal_error(&mut self, e: crate::engine::JournalError) {
        tracing::error!(error = %e, "refusing a change the write-ahead log could not take");
        self.word(msg::INTERNAL_ERROR);
    }
}
