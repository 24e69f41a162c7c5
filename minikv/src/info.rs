//! What the server reports about itself: INFO sections and the Prometheus families.
//!
//! Both read the same sources (per-command stats, keyspace counters, the AOF, the
//! allocator count), so `/metrics` and `INFO` never disagree.
//!
//! INFO uses Redis 7.0's section names, field names and order for every field minikv
//! can fill truthfully, because clients parse it (redis-py's `info()`, redis-cli
//! `--stat`, monitoring agents). Fields about machinery minikv does not have (RDB
//! forks, replication backlogs, Lua, active defrag) are left out rather than faked;
//! where the honest answer is a constant (no replicas, no forks) the field is kept
//! with that constant. Fields that exist only in minikv are prefixed
//! `minikv_` or are named for what they are (`keyspace_shards`).
//!
//! Left out: the Errorstats and Latencystats sections (errors are not counted by
//! prefix, and the latency histograms are too coarse for Redis's percentiles; the
//! `/metrics` histograms have them), `instantaneous_*` rates, and `avg_ttl`, which is
//! printed as 0 ("not estimated") as Redis does for a database it has not sampled.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::proto::MetricFamily;

use crate::keyspace::{Shard, ShardStats};
use crate::memory;
use crate::metrics::{rss_bytes, Families};
use crate::server::{unix_us, Server};

/// INFO's sections, in Redis's order; `all` and `everything` select all of them.
pub const SECTIONS: &[&str] = &[
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "modules",
    "commandstats",
    "cluster",
    "keyspace",
];

/// Sections in the default reply (Redis leaves out commandstats).
const DEFAULT: &[&str] =
    &["server", "clients", "memory", "persistence", "stats", "replication", "cpu", "modules", "cluster", "keyspace"];

/// Highest `used_memory` seen when INFO or `/metrics` read it (Redis's
/// `used_memory_peak` is also sampled, by its cron and by INFO).
static PEAK_MEMORY: AtomicU64 = AtomicU64::new(0);

fn used_memory_sampled() -> u64 {
    let used = memory::used_memory();
    PEAK_MEMORY.fetch_max(used, Ordering::Relaxed);
    used
}

/// Keys per database and the keyspace counters, summed over the shards.
///
/// The caller gathers it, because only the caller knows which shard locks it already
/// holds: INFO inside EXEC runs with every shard locked and must read them through
/// its guards (`Keys::for_each_shard`); `/metrics` holds none and locks each in turn
/// ([`KeyspaceSnapshot::take`]).
#[derive(Debug, Default, Clone)]
pub struct KeyspaceSnapshot {
    /// `(keys, keys with a TTL)` per database.
    pub dbs: Vec<(usize, usize)>,
    pub stats: ShardStats,
    /// (key, tracking client) pairs in the client-side caching table.
    pub tracking_items: usize,
}

impl KeyspaceSnapshot {
    /// Adds one shard's tables and counters.
    pub fn add_shard(&mut self, shard: &Shard) {
        if self.dbs.len() < shard.dbs.len() {
            self.dbs.resize(shard.dbs.len(), (0, 0));
        }
        for (db, table) in shard.dbs.iter().enumerate() {
            self.dbs[db].0 += table.len();
            self.dbs[db].1 += table.volatile_len();
        }
        self.tracking_items += shard.tracking.items();
        let s = shard.stats;
        self.stats.expired_keys += s.expired_keys;
        self.stats.evicted_keys += s.evicted_keys;
        self.stats.keyspace_hits += s.keyspace_hits;
        self.stats.keyspace_misses += s.keyspace_misses;
    }

    /// Reads every shard, locking each in turn. The caller must hold no shard lock.
    pub fn take(server: &Server) -> KeyspaceSnapshot {
        let mut snapshot = KeyspaceSnapshot::default();
        for i in 0..crate::keyspace::SHARDS {
            snapshot.add_shard(&server.keyspace.lock_shard(i));
        }
        snapshot
    }
}

/// Renders the requested sections (already lower-cased). Unknown names are ignored, as
/// in Redis; no section at all is `default`.
pub fn info_text(server: &Server, requested: &[String], keyspace: &KeyspaceSnapshot) -> String {
    let mut wanted: Vec<&str> = Vec::new();
    if requested.is_empty() {
        wanted.extend(DEFAULT);
    }
    for r in requested {
        match r.as_str() {
            "default" => wanted.extend(DEFAULT),
            "all" | "everything" => wanted.extend(SECTIONS),
            s => {
                if let Some(known) = SECTIONS.iter().find(|k| **k == s) {
                    wanted.push(known);
                }
            }
        }
    }
    let mut out = String::new();
    for section in SECTIONS.iter().filter(|s| wanted.contains(s)) {
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        let _ = write!(out, "# {}\r\n", title(section));
        section_body(server, keyspace, section, &mut out);
    }
    out
}

/// A section's title as Redis prints it: `# Server`, `# CPU`, `# Commandstats`.
fn title(section: &str) -> String {
    if section == "cpu" {
        return "CPU".to_string();
    }
    let mut c = section.chars();
    c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
}

fn line(out: &mut String, key: &str, value: impl std::fmt::Display) {
    let _ = write!(out, "{key}:{value}\r\n");
}

/// `sysname release machine` from uname(2), as Redis's `os` field.
fn os_name() -> String {
    // SAFETY: uname only writes into the struct we pass; the fields are NUL-terminated.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return std::env::consts::OS.to_string();
    }
    let field = |f: &[libc::c_char]| -> String {
        let bytes: Vec<u8> = f.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    format!("{} {} {}", field(&u.sysname), field(&u.release), field(&u.machine))
}

/// Physical memory of the machine (Redis's `total_system_memory`).
fn total_system_memory() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let (pages, page) = unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
    if pages > 0 && page > 0 {
        pages as u64 * page as u64
    } else {
        0
    }
}

fn cpu_times(who: libc::c_int) -> (f64, f64) {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(who, &mut ru) } != 0 {
        return (0.0, 0.0);
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(ru.ru_stime), secs(ru.ru_utime))
}

fn section_body(server: &Server, keyspace: &KeyspaceSnapshot, section: &str, out: &mut String) {
    let live = &server.config.live;
    match section {
        "server" => {
            let uptime = server.uptime_secs();
            let io_threads = server.config.with_settings(|s| s.io_threads);
            line(out, "redis_version", crate::REDIS_VERSION);
            line(out, "redis_git_sha1", "00000000");
            line(out, "redis_git_dirty", 0);
            line(out, "redis_mode", "standalone");
            line(out, "os", os_name());
            line(out, "arch_bits", usize::BITS);
            line(out, "multiplexing_api", "epoll");
            line(out, "process_id", std::process::id());
            line(out, "process_supervised", "no");
            line(out, "run_id", &server.run_id);
            line(out, "tcp_port", server.port.load(Ordering::Relaxed));
            line(out, "server_time_usec", unix_us());
            line(out, "uptime_in_seconds", uptime);
            line(out, "uptime_in_days", uptime / 86400);
            line(out, "hz", live.hz.load(Ordering::Relaxed));
            line(out, "configured_hz", live.hz.load(Ordering::Relaxed));
            if let Ok(exe) = std::env::current_exe() {
                line(out, "executable", exe.display());
            }
            // Redis: whether I/O threads are in use. Every minikv worker is an event
            // loop of its own, so they are "active" whenever there is more than one.
            line(out, "io_threads_active", (io_threads > 1) as u8);
            line(out, "minikv_version", env!("CARGO_PKG_VERSION"));
            line(out, "minikv_io_threads", io_threads);
            line(out, "keyspace_shards", crate::keyspace::SHARDS);
        }
        "clients" => {
            line(out, "connected_clients", server.clients.len());
            line(out, "cluster_connections", 0);
            line(out, "maxclients", live.maxclients.load(Ordering::Relaxed));
            line(out, "blocked_clients", server.clients.blocked());
            line(out, "tracking_clients", server.keyspace.tracking.stats().clients);
            line(out, "pubsub_clients", server.clients.pubsub_clients());
        }
        "memory" => {
            let used = used_memory_sampled();
            let peak = PEAK_MEMORY.load(Ordering::Relaxed).max(used);
            let rss = rss_bytes();
            let system = total_system_memory();
            let max = live.maxmemory.load(Ordering::Relaxed);
            line(out, "used_memory", used);
            line(out, "used_memory_human", memory::human(used));
            line(out, "used_memory_rss", rss);
            line(out, "used_memory_rss_human", memory::human(rss));
            line(out, "used_memory_peak", peak);
            line(out, "used_memory_peak_human", memory::human(peak));
            let perc = if peak > 0 { used as f64 * 100.0 / peak as f64 } else { 0.0 };
            line(out, "used_memory_peak_perc", format!("{perc:.2}%"));
            line(out, "total_system_memory", system);
            line(out, "total_system_memory_human", memory::human(system));
            line(out, "maxmemory", max);
            line(out, "maxmemory_human", memory::human(max));
            line(out, "maxmemory_policy", live.policy().name());
            let frag = if used > 0 { rss as f64 / used as f64 } else { 0.0 };
            line(out, "mem_fragmentation_ratio", format!("{frag:.2}"));
            line(out, "mem_fragmentation_bytes", rss as i64 - used as i64);
            // Redis prints "jemalloc-x.y.z" or "libc"; ours is the system allocator,
            // wrapped to count bytes when the binary installs it (memory.rs).
            line(out, "mem_allocator", "libc");
            line(out, "minikv_memory_counted", memory::is_counting() as u8);
        }
        "persistence" => {
            let aof = server.aof();
            let status = aof.as_ref().map(|a| a.status()).unwrap_or_default();
            line(out, "loading", server.loading.load(Ordering::Relaxed) as u8);
            line(out, "async_loading", 0);
            line(out, "rdb_changes_since_last_save", server.keyspace.dirty.load(Ordering::Relaxed));
            // No RDB: nothing in progress, and the "last save" is the start, as LASTSAVE.
            line(out, "rdb_bgsave_in_progress", 0);
            line(out, "rdb_last_save_time", server.started_unix_ms / 1000);
            line(out, "rdb_last_bgsave_status", "ok");
            line(out, "rdb_last_bgsave_time_sec", -1);
            line(out, "rdb_current_bgsave_time_sec", -1);
            line(out, "rdb_saves", 0);
            line(out, "aof_enabled", aof.is_some() as u8);
            line(out, "aof_rewrite_in_progress", status.in_progress as u8);
            line(out, "aof_rewrite_scheduled", status.scheduled as u8);
            line(out, "aof_last_rewrite_time_sec", status.last_duration.map_or(-1, |d| d.as_secs() as i64));
            let last_ok = aof.is_none() || status.last_ok || status.rewrites == 0;
            line(out, "aof_last_bgrewrite_status", if last_ok { "ok" } else { "err" });
            line(out, "aof_rewrites", status.rewrites);
            let write_ok = aof.as_ref().is_none_or(|a| a.failure().is_none());
            line(out, "aof_last_write_status", if write_ok { "ok" } else { "err" });
            if let Some(aof) = aof {
                line(out, "aof_current_size", aof.size_bytes());
                line(out, "aof_base_size", aof.base_size());
                line(out, "minikv_aof_fsyncs", aof.log_stats().fsyncs);
                line(out, "minikv_aof_appendfsync", aof.policy().name());
            }
        }
        "stats" => {
            let ks = keyspace.stats;
            line(out, "total_connections_received", server.clients.total_connections.load(Ordering::Relaxed));
            line(out, "total_commands_processed", server.commands.total_calls());
            line(out, "total_net_input_bytes", server.stats.net_input_bytes.load(Ordering::Relaxed));
            line(out, "total_net_output_bytes", server.stats.net_output_bytes.load(Ordering::Relaxed));
            line(out, "rejected_connections", server.clients.rejected_connections.load(Ordering::Relaxed));
            line(out, "sync_full", 0);
            line(out, "sync_partial_ok", 0);
            line(out, "sync_partial_err", 0);
            line(out, "expired_keys", ks.expired_keys);
            line(
                out,
                "expire_cycle_cpu_milliseconds",
                server.stats.expire_cycle_time_us.load(Ordering::Relaxed) / 1000,
            );
            line(out, "evicted_keys", ks.evicted_keys);
            line(out, "evicted_clients", 0);
            line(out, "keyspace_hits", ks.keyspace_hits);
            line(out, "keyspace_misses", ks.keyspace_misses);
            line(out, "pubsub_channels", server.pubsub.channels(None).len());
            line(out, "pubsub_patterns", server.pubsub.numpat());
            line(out, "pubsubshard_channels", 0);
            line(out, "latest_fork_usec", 0);
            line(out, "total_forks", 0);
            let tracking = server.keyspace.tracking.stats();
            line(out, "tracking_total_keys", tracking.keys);
            line(out, "tracking_total_items", keyspace.tracking_items);
            line(out, "tracking_total_prefixes", tracking.prefixes);
            line(
                out,
                "client_output_buffer_limit_disconnections",
                server.stats.output_limit_disconnections.load(Ordering::Relaxed),
            );
        }
        "replication" => {
            line(out, "role", "master");
            line(out, "connected_slaves", 0);
            line(out, "master_failover_state", "no-failover");
            line(out, "master_repl_offset", 0);
            line(out, "second_repl_offset", -1);
            line(out, "repl_backlog_active", 0);
            line(out, "repl_backlog_first_byte_offset", 0);
            line(out, "repl_backlog_histlen", 0);
        }
        "cpu" => {
            let (sys, user) = cpu_times(libc::RUSAGE_SELF);
            let (sys_children, user_children) = cpu_times(libc::RUSAGE_CHILDREN);
            line(out, "used_cpu_sys", format!("{sys:.6}"));
            line(out, "used_cpu_user", format!("{user:.6}"));
            line(out, "used_cpu_sys_children", format!("{sys_children:.6}"));
            line(out, "used_cpu_user_children", format!("{user_children:.6}"));
        }
        "modules" => {}
        "commandstats" => {
            for s in server.commands.snapshot().iter().filter(|s| s.calls > 0 || s.failed > 0 || s.rejected > 0) {
                let usec = s.nanos / 1000;
                let per = if s.calls > 0 { usec as f64 / s.calls as f64 } else { 0.0 };
                let _ = write!(
                    out,
                    "cmdstat_{}:calls={},usec={},usec_per_call={:.2},rejected_calls={},failed_calls={}\r\n",
                    s.name, s.calls, usec, per, s.rejected, s.failed
                );
            }
        }
        "cluster" => line(out, "cluster_enabled", 0),
        "keyspace" => {
            for (db, &(keys, expires)) in keyspace.dbs.iter().enumerate() {
                if keys > 0 {
                    let _ = write!(out, "db{db}:keys={keys},expires={expires},avg_ttl=0\r\n");
                }
            }
        }
        _ => {}
    }
}

/// Everything `/metrics` exports, read fresh at scrape time.
pub fn metric_families(server: &Server) -> Vec<MetricFamily> {
    let mut f = Families(Vec::new());
    let snapshot = server.commands.snapshot();
    for s in snapshot.iter().filter(|s| s.calls > 0) {
        f.counter("minikv_commands_total", "Commands executed, by name.", &[("cmd", s.name.clone())], s.calls as f64);
    }
    for s in snapshot.iter().filter(|s| s.failed + s.rejected > 0) {
        f.counter(
            "minikv_command_errors_total",
            "Commands that answered or were refused with an error.",
            &[("cmd", s.name.clone())],
            (s.failed + s.rejected) as f64,
        );
    }
    f.command_histograms(&snapshot);
    f.gauge("minikv_connected_clients", "Connected clients.", &[], server.clients.len() as f64);
    f.gauge("minikv_blocked_clients", "Clients blocked on BLPOP and friends.", &[], server.clients.blocked() as f64);
    for (db, (keys, expires)) in server.keyspace.db_sizes().into_iter().enumerate() {
        if keys > 0 {
            f.gauge("minikv_keys", "Keys per database.", &[("db", db.to_string())], keys as f64);
            f.gauge("minikv_keys_with_ttl", "Keys with a TTL per database.", &[("db", db.to_string())], expires as f64);
        }
    }
    let ks = server.keyspace.stats();
    f.counter("minikv_expired_keys_total", "Keys removed because their TTL passed.", &[], ks.expired_keys as f64);
    f.counter("minikv_evicted_keys_total", "Keys evicted by the maxmemory policy.", &[], ks.evicted_keys as f64);
    f.counter("minikv_keyspace_hits_total", "Successful key lookups by read commands.", &[], ks.keyspace_hits as f64);
    f.counter("minikv_keyspace_misses_total", "Failed key lookups by read commands.", &[], ks.keyspace_misses as f64);
    f.gauge(
        "minikv_used_memory_bytes",
        "Bytes allocated by the server (what maxmemory limits).",
        &[],
        used_memory_sampled() as f64,
    );
    f.gauge("minikv_rss_bytes", "Resident set size of the process.", &[], rss_bytes() as f64);
    f.gauge(
        "minikv_maxmemory_bytes",
        "The maxmemory setting (0 = no limit).",
        &[],
        server.config.live.maxmemory.load(Ordering::Relaxed) as f64,
    );
    f.counter(
        "minikv_net_input_bytes_total",
        "Bytes read from clients.",
        &[],
        server.stats.net_input_bytes.load(Ordering::Relaxed) as f64,
    );
    f.counter(
        "minikv_net_output_bytes_total",
        "Bytes written to clients.",
        &[],
        server.stats.net_output_bytes.load(Ordering::Relaxed) as f64,
    );
    f.gauge("minikv_uptime_seconds", "Seconds since the server started.", &[], server.uptime_secs() as f64);
    let tracking = server.keyspace.tracking.stats();
    f.gauge("minikv_tracking_clients", "Clients with CLIENT TRACKING on.", &[], tracking.clients as f64);
    f.gauge(
        "minikv_tracking_keys",
        "Keys in the client-side caching table (bounded by tracking-table-max-keys).",
        &[],
        tracking.keys as f64,
    );
    f.counter(
        "minikv_connections_received_total",
        "Client connections accepted.",
        &[],
        server.clients.total_connections.load(Ordering::Relaxed) as f64,
    );
    f.counter(
        "minikv_connections_rejected_total",
        "Client connections refused because maxclients was reached.",
        &[],
        server.clients.rejected_connections.load(Ordering::Relaxed) as f64,
    );
    f.gauge(
        "minikv_pubsub_channels",
        "Channels with at least one subscriber.",
        &[],
        server.pubsub.channels(None).len() as f64,
    );
    f.gauge("minikv_pubsub_patterns", "Pattern subscriptions.", &[], server.pubsub.numpat() as f64);
    if let Some(aof) = server.aof() {
        f.gauge("minikv_aof_size_bytes", "AOF size: base plus incremental log.", &[], aof.size_bytes() as f64);
        f.gauge(
            "minikv_aof_rewrite_in_progress",
            "1 while a background AOF rewrite runs.",
            &[],
            aof.status().in_progress as u8 as f64,
        );
        f.counter("minikv_aof_rewrites_total", "Completed AOF rewrites.", &[], aof.status().rewrites as f64);
        f.histogram("minikv_aof_fsync_duration_seconds", "Duration of AOF fsyncs.", &aof.fsync_latency);
    }
    f.0
}
