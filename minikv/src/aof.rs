//! The append-only file: every change, logged before the client hears about it.
//!
//! # Layout
//!
//! Like Redis 7's multi-part AOF, the AOF is a directory (`appenddirname`, by default
//! `appendonlydir/` under `dir`):
//!
//! ```text
//!   appendonlydir/
//!     manifest            which base to load, and where in the log to resume
//!     base-3/             the last rewrite: a one-segment record log of commands
//!     log/                the incremental log: minicore's segmented record log
//!       00000000000000000000.log
//!       00000000000000052311.log
//! ```
//!
//! Each record (in the base and in the log) holds the database it starts in (2 bytes,
//! little endian) followed by one or more commands in RESP. A command's effects become
//! one record, and a whole MULTI/EXEC becomes one record, so a crash keeps all of a
//! transaction or none of it. Commands are logged in a replay-safe form: relative TTLs
//! as absolute times (`SET k v PXAT ms`), SPOP as SREM, INCRBYFLOAT as SET, expired and
//! evicted keys as DEL.
//!
//! # Durability (when the client's reply is sent, relative to fsync)
//!
//! | appendfsync | before the reply                         | kill -9 loses | power loss loses |
//! |-------------|------------------------------------------|---------------|------------------|
//! | `always`    | records written and fsynced (group commit) | nothing       | nothing          |
//! | `everysec`  | records written to the OS                | nothing       | about 1 s        |
//! | `no`        | records written to the OS                | nothing       | what the OS had not flushed (~30 s) |
//!
//! # Rewrite
//!
//! BGREWRITEAOF (or automatic rewrite once the log grows by `auto-aof-rewrite-percentage`
//! past `auto-aof-rewrite-min-size`) compacts the AOF without stopping clients, the way
//! Redis does: `fork()`. The parent takes every shard lock for an instant, notes the next
//! log position `P` and forks; the child sees a frozen, consistent copy of the keyspace
//! (copy-on-write pages) and writes it as a new base, while the parent goes on serving
//! and logging. Just before, the log starts a new segment, so that when the child
//! finishes and the parent has fsynced the base and pointed the manifest at it and at
//! `P`, every older segment can be deleted. A crash at
//! any step leaves either the old manifest (old base + full log) or the new one; both
//! reload the same data.
//!
//! # Recovery
//!
//! On start the base is loaded, then the log from `P`. Keys do not expire during
//! loading (their deadlines are absolute; the DELs logged when they expired replay in
//! order). A torn tail (a crash mid-write) is cut and reported in the log. Corruption
//! in the middle of the log refuses to start, naming the file and offset, unless
//! `aof-load-corrupt yes` is set, which loads the valid prefix and drops the rest.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use minicore::record_log::{FsyncPolicy, LogError, LogOptions, RecordLog, RecoveryMode};
use parking_lot::Mutex;

use crate::config::AppendFsync;
use crate::keyspace::{Guards, Value};
use crate::metrics::SharedHistogram;
use crate::resp::{encode_command, ArgBuf, Limits, Parsed};
use crate::server::Server;

/// The largest record the AOF writes or reads: a command carrying a value up to
/// `proto-max-bulk-len` (512 MiB) plus its framing.
const MAX_RECORD_BYTES: u32 = 600 * 1024 * 1024;
/// Segment size of the incremental log.
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Elements per command when a rewrite writes out a big aggregate (Redis's
/// AOF_REWRITE_ITEMS_PER_CMD).
const ITEMS_PER_COMMAND: usize = 64;
/// A base record is closed once it grows past this many bytes.
const BASE_RECORD_BYTES: usize = 64 * 1024;

const MANIFEST: &str = "manifest";
const LOG_DIR: &str = "log";

/// What the manifest says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Manifest {
    /// Generation of the current base (`base-<gen>`), 0 when there is none yet.
    base_gen: u64,
    /// First log position not contained in the base.
    log_start: u64,
}

impl Manifest {
    fn read(dir: &Path) -> Result<Manifest, String> {
        let path = dir.join(MANIFEST);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Manifest::default()),
            Err(e) => return Err(format!("can't read AOF manifest {}: {e}", path.display())),
        };
        let mut m = Manifest::default();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let bad = || format!("bad line '{line}' in AOF manifest {}; fix or remove the file", path.display());
            let (key, value) = line.split_once(' ').ok_or_else(bad)?;
            let value: u64 = value.trim().parse().map_err(|_| bad())?;
            match key {
                "version" if value == 1 => {}
                "base" => m.base_gen = value,
                "log-start" => m.log_start = value,
                _ => return Err(bad()),
            }
        }
        Ok(m)
    }

    /// Replaces the manifest atomically: write a temporary file, fsync, rename, fsync
    /// the directory.
    fn write(&self, dir: &Path) -> std::io::Result<()> {
        let tmp = dir.join("manifest.tmp");
        let mut f = fs::File::create(&tmp)?;
        writeln!(f, "# minikv AOF manifest: the base to load and where replay resumes in log/.")?;
        writeln!(f, "version 1")?;
        writeln!(f, "base {}", self.base_gen)?;
        writeln!(f, "log-start {}", self.log_start)?;
        f.sync_all()?;
        fs::rename(&tmp, dir.join(MANIFEST))?;
        fsync_dir(dir)
    }
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

fn base_dir(dir: &Path, gen: u64) -> PathBuf {
    dir.join(format!("base-{gen}"))
}

/// Progress of background rewrites, for INFO persistence.
#[derive(Debug, Default, Clone)]
pub struct RewriteStatus {
    pub in_progress: bool,
    pub last_ok: bool,
    pub last_duration: Option<Duration>,
    pub rewrites: u64,
    /// Base plus log size right after the last rewrite (auto-rewrite's baseline).
    pub size_after_last: u64,
    pub scheduled: bool,
}

/// What loading found, for the start-up log line and INFO.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub base_records: u64,
    pub log_records: u64,
    pub commands: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub truncated: Option<String>,
    pub elapsed: Duration,
}

pub struct Aof {
    dir: PathBuf,
    log: RecordLog,
    policy: AppendFsync,
    manifest: Mutex<Manifest>,
    rewrite: Mutex<RewriteStatus>,
    rewriting: AtomicBool,
    /// Size of the current base, in bytes.
    base_bytes: AtomicU64,
    /// Set after an append failed: writes are refused until a restart.
    failed: Mutex<Option<String>>,
    /// `failed` is set; checked on every write, so it must not take the mutex.
    has_failed: AtomicBool,
    pub fsync_latency: Arc<SharedHistogram>,
}

impl Aof {
    /// Opens (or creates) the AOF directory and its log. The caller then calls
    /// [`Aof::load`] to replay it into the keyspace.
    pub fn open(dir: &Path, policy: AppendFsync, allow_corrupt: bool) -> Result<(Aof, Option<String>), String> {
        fs::create_dir_all(dir).map_err(|e| format!("can't create AOF directory {}: {e}", dir.display()))?;
        let manifest = Manifest::read(dir)?;
        let fsync_latency = Arc::new(SharedHistogram::default());
        let observer = fsync_latency.clone();
        let options = LogOptions {
            segment_bytes: SEGMENT_BYTES,
            fsync: match policy {
                AppendFsync::Always => FsyncPolicy::Always,
                AppendFsync::EverySec => FsyncPolicy::EveryMillis(1000),
                AppendFsync::No => FsyncPolicy::Never,
            },
            max_record_bytes: MAX_RECORD_BYTES,
            recovery: if allow_corrupt { RecoveryMode::TruncateAtCorruption } else { RecoveryMode::Strict },
            on_fsync: Some(Arc::new(move |d: Duration| observer.observe(d.as_nanos() as u64))),
            ..LogOptions::default()
        };
        let log_dir = dir.join(LOG_DIR);
        let (log, report) = RecordLog::open(&log_dir, options).map_err(|e| match e {
            LogError::Corrupt { .. } => format!(
                "{e}\nThe AOF is corrupt in the middle. Restore it from a backup, or start with \
                 `--aof-load-corrupt yes` to load the valid prefix and drop everything after it."
            ),
            other => format!("can't open the AOF log in {}: {other}", log_dir.display()),
        })?;
        let truncated = report.truncated.as_ref().map(|t| t.to_string());
        let base_bytes = dir_size(&base_dir(dir, manifest.base_gen));
        let aof = Aof {
            dir: dir.to_path_buf(),
            log,
            policy,
            manifest: Mutex::new(manifest),
            rewrite: Mutex::new(RewriteStatus { last_ok: true, ..Default::default() }),
            rewriting: AtomicBool::new(false),
            base_bytes: AtomicU64::new(base_bytes),
            failed: Mutex::new(None),
            has_failed: AtomicBool::new(false),
            fsync_latency,
        };
        aof.rewrite.lock().size_after_last = aof.size_bytes();
        Ok((aof, truncated))
    }

    pub fn policy(&self) -> AppendFsync {
        self.policy
    }

    /// Appends one record. Called with the shard locks of the change held, so the log's
    /// order is the order in which changes became visible.
    pub fn append(&self, record: &[u8]) -> Result<u64, String> {
        if let Some(why) = self.failure() {
            return Err(why);
        }
        self.log.append(record).map_err(|e| e.to_string())
    }

    /// Makes records before `end` (exclusive) as durable as `appendfsync` promises. The
    /// connection awaits this before sending the replies of the batch that wrote them.
    pub async fn commit(&self, end: u64) -> Result<(), LogError> {
        debug_assert!(end > 0);
        self.log.commit_async(end - 1).await.map(|_| ())
    }

    /// Writes and fsyncs everything (SHUTDOWN).
    pub fn sync_all(&self) -> Result<(), LogError> {
        let next = self.log.next_lsn();
        if next > 0 {
            self.log.sync(next - 1)?;
        }
        Ok(())
    }

    pub fn mark_failed(&self, why: &str) {
        *self.failed.lock() = Some(format!("MISCONF Errors writing to the AOF file: {why}"));
        self.has_failed.store(true, Ordering::Release);
    }

    /// The error writes get while the AOF is broken.
    pub fn failure(&self) -> Option<String> {
        if !self.has_failed.load(Ordering::Acquire) {
            return None;
        }
        self.failed.lock().clone()
    }

    /// Base plus log, in bytes (INFO `aof_current_size`).
    pub fn size_bytes(&self) -> u64 {
        self.base_bytes.load(Ordering::Relaxed) + self.log.size_bytes()
    }

    pub fn base_size(&self) -> u64 {
        self.base_bytes.load(Ordering::Relaxed)
    }

    pub fn status(&self) -> RewriteStatus {
        let mut s = self.rewrite.lock().clone();
        s.in_progress = self.rewriting.load(Ordering::Acquire);
        s
    }

    pub fn log_stats(&self) -> minicore::record_log::LogStats {
        self.log.stats()
    }

    /// Replays the base and then the log into `server`'s keyspace.
    pub fn load(&self, server: &Server) -> Result<LoadReport, String> {
        let started = Instant::now();
        let manifest = self.manifest.lock().clone();
        let mut report = LoadReport::default();
        let mut loader = Loader::new(server);
        if manifest.base_gen > 0 {
            let path = base_dir(&self.dir, manifest.base_gen);
            let options =
                LogOptions { max_record_bytes: MAX_RECORD_BYTES, fsync: FsyncPolicy::Never, ..LogOptions::default() };
            let (base, base_report) = RecordLog::open(&path, options)
                .map_err(|e| format!("can't open the AOF base {}: {e}; restore it from a backup", path.display()))?;
            if let Some(t) = base_report.truncated {
                return Err(format!(
                    "the AOF base {} is damaged ({t}); a base is fsynced before the manifest names it, \
                     so this is disk corruption: restore it from a backup",
                    path.display()
                ));
            }
            for item in base.reader(0).map_err(|e| e.to_string())? {
                let (_, payload) = item.map_err(|e| format!("reading the AOF base {}: {e}", path.display()))?;
                loader.replay(&payload, &mut report);
                report.base_records += 1;
            }
        }
        let from = manifest.log_start.max(self.log.first_lsn());
        if manifest.log_start < self.log.first_lsn() {
            return Err(format!(
                "the AOF manifest says replay starts at log record {}, but the log starts at {}: \
                 records are missing; restore {} from a backup",
                manifest.log_start,
                self.log.first_lsn(),
                self.dir.display()
            ));
        }
        for item in self.log.reader(from).map_err(|e| e.to_string())? {
            let (_, payload) = item.map_err(|e| format!("reading the AOF log: {e}"))?;
            loader.replay(&payload, &mut report);
            report.log_records += 1;
        }
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// Starts a background rewrite (BGREWRITEAOF). Fails if one is already running.
    pub fn start_rewrite(self: &Arc<Self>, server: &Server) -> Result<(), String> {
        if self.rewriting.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return Err("ERR Background append only file rewriting already in progress".to_string());
        }
        let gen = self.manifest.lock().base_gen + 1;
        let tmp = self.dir.join(format!("base-{gen}.tmp"));
        let _ = fs::remove_dir_all(&tmp);
        if let Err(e) = fs::create_dir_all(&tmp) {
            self.rewriting.store(false, Ordering::Release);
            return Err(format!("ERR can't create {}: {e}", tmp.display()));
        }
        let segment = tmp.join(format!("{:020}.log", 0));
        let started = Instant::now();
        let now_ms = crate::server::unix_ms();
        // Start a fresh log segment first (outside the locks: it fsyncs). The log
        // position noted below falls in it or later, so once the new base is in place
        // every older segment can be deleted, whatever the segment size.
        if let Err(e) = self.log.roll_segment() {
            self.rewriting.store(false, Ordering::Release);
            return Err(format!("ERR can't start a new AOF log segment: {e}"));
        }

        // Freeze the keyspace for the instant of the fork: every change before this
        // point has a log position below `log_start`, every change after, at or above.
        let mut guards = server.keyspace.lock_all();
        let log_start = self.log.next_lsn();
        // SAFETY: fork() in a multi-threaded process. The child only touches memory
        // reachable from `guards` (whose locks this thread holds, so no other thread can
        // be mid-update), allocates (glibc's malloc is made fork-safe by its atfork
        // handlers), writes a file with raw std::fs calls, and leaves with _exit without
        // running destructors or touching the runtime, logging or other locks.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                write_base(&mut guards, &segment, now_ms)
            })) {
                Ok(Ok(())) => 0,
                _ => 1,
            };
            // SAFETY: ends the child immediately, as intended.
            unsafe { libc::_exit(code) };
        }
        drop(guards);
        if pid < 0 {
            self.rewriting.store(false, Ordering::Release);
            let e = std::io::Error::last_os_error();
            return Err(format!("ERR can't fork for the AOF rewrite: {e}"));
        }
        tracing::info!(pid, log_start, "background AOF rewrite started");
        let aof = self.clone();
        std::thread::Builder::new()
            .name("aof-rewrite-wait".into())
            .spawn(move || aof.finish_rewrite(pid, gen, tmp, log_start, started))
            .map_err(|e| format!("ERR can't start the rewrite waiter: {e}"))?;
        Ok(())
    }

    /// Waits for the rewrite child and installs its base.
    fn finish_rewrite(&self, pid: libc::pid_t, gen: u64, tmp: PathBuf, log_start: u64, started: Instant) {
        let mut status = 0;
        // SAFETY: waits for our own child.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        let child_ok = rc == pid && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
        let result = if child_ok {
            self.install_base(gen, &tmp, log_start)
        } else {
            Err(format!("rewrite child exited with status {status}"))
        };
        let mut r = self.rewrite.lock();
        r.last_duration = Some(started.elapsed());
        match result {
            Ok(()) => {
                r.last_ok = true;
                r.rewrites += 1;
                r.size_after_last = self.size_bytes();
                tracing::info!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    size = self.size_bytes(),
                    "background AOF rewrite finished"
                );
            }
            Err(e) => {
                r.last_ok = false;
                let _ = fs::remove_dir_all(&tmp);
                tracing::error!(error = %e, "background AOF rewrite failed; the previous AOF is intact");
            }
        }
        self.rewriting.store(false, Ordering::Release);
    }

    fn install_base(&self, gen: u64, tmp: &Path, log_start: u64) -> Result<(), String> {
        let final_dir = base_dir(&self.dir, gen);
        let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
        fsync_dir(tmp).map_err(|e| io("fsync new base", e))?;
        let _ = fs::remove_dir_all(&final_dir);
        fs::rename(tmp, &final_dir).map_err(|e| io("rename new base", e))?;
        fsync_dir(&self.dir).map_err(|e| io("fsync AOF directory", e))?;
        let old_gen = {
            let mut m = self.manifest.lock();
            let old = m.base_gen;
            let next = Manifest { base_gen: gen, log_start };
            next.write(&self.dir).map_err(|e| io("write manifest", e))?;
            *m = next;
            old
        };
        self.base_bytes.store(dir_size(&final_dir), Ordering::Relaxed);
        if old_gen > 0 && old_gen != gen {
            let _ = fs::remove_dir_all(base_dir(&self.dir, old_gen));
        }
        self.log.delete_segments_before(log_start).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Starts a rewrite if the AOF grew past the auto-rewrite thresholds.
    pub fn maybe_auto_rewrite(self: &Arc<Self>, server: &Server) {
        let (pct, min) = server.config.with_settings(|s| (s.auto_aof_rewrite_percentage, s.auto_aof_rewrite_min_size));
        if pct == 0 || self.rewriting.load(Ordering::Acquire) {
            return;
        }
        let size = self.size_bytes();
        let base = self.rewrite.lock().size_after_last.max(1);
        if size >= min && size > base && (size - base) * 100 / base >= pct {
            tracing::info!(size, base, pct, "starting automatic AOF rewrite");
            if let Err(e) = self.start_rewrite(server) {
                tracing::warn!(error = %e, "automatic AOF rewrite not started");
            }
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn dir_size(dir: &Path) -> u64 {
    fs::read_dir(dir).map(|entries| entries.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum()).unwrap_or(0)
}

/// Writes the keyspace held by `guards` as base records into `segment`. Runs in the
/// rewrite child; see [`Aof::start_rewrite`] for what it may and may not touch.
fn write_base(guards: &mut Guards<'_>, segment: &Path, now_ms: u64) -> std::io::Result<()> {
    let mut file = fs::File::create(segment)?;
    let mut out = Vec::with_capacity(1 << 20);
    let mut record = Vec::with_capacity(BASE_RECORD_BYTES * 2);
    let mut scratch = itoa::Buffer::new();
    for (_, shard) in guards.iter_mut() {
        for (db, table) in shard.dbs.iter().enumerate() {
            for pos in 0..table.len() {
                let expire = table.expire_at(pos);
                if expire.is_some_and(|at| at <= now_ms) {
                    continue;
                }
                if record.is_empty() {
                    record.extend_from_slice(&(db as u16).to_le_bytes());
                }
                let key = table.key_at(pos);
                write_key(&mut record, key, &table.entry(pos).value, expire, &mut scratch);
                if record.len() >= BASE_RECORD_BYTES {
                    minicore::record_log::encode_frame(&record, &mut out);
                    record.clear();
                    if out.len() >= 1 << 20 {
                        file.write_all(&out)?;
                        out.clear();
                    }
                }
            }
            // Records never span databases.
            if !record.is_empty() {
                minicore::record_log::encode_frame(&record, &mut out);
                record.clear();
            }
        }
    }
    file.write_all(&out)?;
    file.sync_all()
}

/// Appends the commands that recreate one key.
fn write_key(out: &mut Vec<u8>, key: &[u8], value: &Value, expire: Option<u64>, scratch: &mut itoa::Buffer) {
    let mut exp = itoa::Buffer::new();
    match value {
        Value::Str(s) => {
            let bytes = s.as_bytes(scratch);
            match expire {
                Some(at) => {
                    encode_command([&b"SET"[..], key, bytes, b"PXAT", exp.format(at).as_bytes()].into_iter(), out)
                }
                None => encode_command([&b"SET"[..], key, bytes].into_iter(), out),
            }
            return;
        }
        Value::List(list) => {
            for chunk in list.iter().collect::<Vec<_>>().chunks(ITEMS_PER_COMMAND) {
                let parts: Vec<&[u8]> =
                    [&b"RPUSH"[..], key].into_iter().chain(chunk.iter().map(|e| e.as_slice())).collect();
                encode_command(parts.into_iter(), out);
            }
        }
        Value::Hash(hash) => {
            let pairs: Vec<_> = hash.iter().collect();
            for chunk in pairs.chunks(ITEMS_PER_COMMAND) {
                let mut parts: Vec<&[u8]> = vec![b"HSET", key];
                for (f, v) in chunk {
                    parts.push(f);
                    parts.push(v);
                }
                encode_command(parts.into_iter(), out);
            }
        }
        Value::Set(set) => {
            let members: Vec<_> = set.keys().collect();
            for chunk in members.chunks(ITEMS_PER_COMMAND) {
                let parts: Vec<&[u8]> =
                    [&b"SADD"[..], key].into_iter().chain(chunk.iter().map(|m| m.as_slice())).collect();
                encode_command(parts.into_iter(), out);
            }
        }
        Value::ZSet(zset) => {
            let items: Vec<(Vec<u8>, Vec<u8>)> =
                zset.iter().map(|(m, s)| (crate::numeric::double_to_vec(s), m.to_vec())).collect();
            for chunk in items.chunks(ITEMS_PER_COMMAND) {
                let mut parts: Vec<&[u8]> = vec![b"ZADD", key];
                for (score, member) in chunk {
                    parts.push(score);
                    parts.push(member);
                }
                encode_command(parts.into_iter(), out);
            }
        }
    }
    if let Some(at) = expire {
        encode_command([&b"PEXPIREAT"[..], key, exp.format(at).as_bytes()].into_iter(), out);
    }
}

/// Replays records through the normal command path, with expiry and logging off.
struct Loader<'s> {
    server: &'s Server,
    session: crate::session::Session,
    args: ArgBuf,
    out: Vec<u8>,
}

impl<'s> Loader<'s> {
    fn new(server: &'s Server) -> Self {
        let info = server.clients.detached("aof-loader");
        Loader { server, session: crate::session::Session::new(info, true), args: ArgBuf::new(), out: Vec::new() }
    }

    fn replay(&mut self, payload: &[u8], report: &mut LoadReport) {
        if payload.len() < 2 {
            report.errors += 1;
            report.first_error.get_or_insert_with(|| "record shorter than its header".to_string());
            return;
        }
        let db = u16::from_le_bytes([payload[0], payload[1]]) as usize;
        self.session.select(db.min(self.server.keyspace.databases() - 1));
        let mut rest = &payload[2..];
        let limits = Limits { max_bulk_len: MAX_RECORD_BYTES as usize, ..Limits::default() };
        let mut batch = crate::cmd::Batch::loading(self.server);
        while !rest.is_empty() {
            match self.args.parse(rest, &limits) {
                Ok(Parsed::Command { consumed }) => {
                    let args = self.args.args(rest);
                    self.out.clear();
                    let _ = crate::cmd::execute(self.server, &mut self.session, &args, &mut self.out, &mut batch);
                    report.commands += 1;
                    if self.out.first() == Some(&b'-') {
                        report.errors += 1;
                        report.first_error.get_or_insert_with(|| {
                            format!(
                                "{} -> {}",
                                String::from_utf8_lossy(args.get(0)),
                                String::from_utf8_lossy(&self.out).trim_end()
                            )
                        });
                    }
                    rest = &rest[consumed..];
                }
                Ok(Parsed::Nothing { consumed }) => rest = &rest[consumed..],
                Ok(Parsed::Incomplete { .. }) | Err(_) => {
                    report.errors += 1;
                    report
                        .first_error
                        .get_or_insert_with(|| "a record holds a truncated or malformed command".to_string());
                    return;
                }
            }
        }
    }
}
