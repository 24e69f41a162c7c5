//! What the server reports about itself: INFO sections and the Prometheus families.
//!
//! Both read the same sources (per-command stats, keyspace counters, the AOF, the
//! allocator count), so `/metrics` and `INFO` never disagree.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use prometheus::proto::MetricFamily;

use crate::memory;
use crate::metrics::{rss_bytes, Families};
use crate::server::{unix_us, Server};

/// INFO's sections, in Redis's order; `default` and `all` select from these.
pub const SECTIONS: &[&str] = &[
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "commandstats",
    "keyspace",
];

/// Sections in the default reply (Redis leaves out commandstats and a few more).
const DEFAULT: &[&str] = &[
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "keyspace",
];

/// Renders the requested sections (already lower-cased). Unknown names are ignored, as
/// in Redis.
pub fn info_text(server: &Server, requested: &[String]) -> String {
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
        let _ = writeln!(out, "# {}\r", capitalize(section));
        section_body(server, section, &mut out);
    }
    out
}

fn capitalize(s: &str) -> String {
    match s {
        "cpu" => "CPU".to_string(),
        "commandstats" => "Commandstats".to_string(),
        _ => {
            let mut c = s.chars();
            c.next()
                .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                .unwrap_or_default()
        }
    }
}

fn line(out: &mut String, key: &str, value: impl std::fmt::Display) {
    let _ = write!(out, "{key}:{value}\r\n");
}

fn section_body(server: &Server, section: &str, out: &mut String) {
    let live = &server.config.live;
    match section {
        "server" => {
            line(out, "redis_version", crate::REDIS_VERSION);
            line(out, "minikv_version", env!("CARGO_PKG_VERSION"));
            line(out, "redis_mode", "standalone");
            line(out, "os", std::env::consts::OS);
            line(out, "arch_bits", 64);
            line(out, "multiplexing_api", "epoll");
            line(out, "process_id", std::process::id());
            line(out, "run_id", &server.run_id);
            line(out, "tcp_port", server.port.load(Ordering::Relaxed));
            line(out, "server_time_usec", unix_us());
            line(out, "uptime_in_seconds", server.uptime_secs());
            line(out, "uptime_in_days", server.uptime_secs() / 86400);
            line(out, "hz", live.hz.load(Ordering::Relaxed));
            line(
                out,
                "io_threads_active",
                server.config.with_settings(|s| s.io_threads),
            );
            line(out, "keyspace_shards", crate::keyspace::SHARDS);
        }
        "clients" => {
            line(out, "connected_clients", server.clients.len());
            line(out, "maxclients", live.maxclients.load(Ordering::Relaxed));
            line(out, "blocked_clients", server.clients.blocked());
            line(out, "pubsub_clients", server.clients.pubsub_clients());
        }
        "memory" => {
            let used = memory::used_memory();
            let rss = rss_bytes();
            let max = live.maxmemory.load(Ordering::Relaxed);
            line(out, "used_memory", used);
            line(out, "used_memory_human", memory::human(used));
            line(out, "used_memory_rss", rss);
            line(out, "used_memory_rss_human", memory::human(rss));
            line(out, "maxmemory", max);
            line(out, "maxmemory_human", memory::human(max));
            line(out, "maxmemory_policy", live.policy().name());
            line(
                out,
                "mem_fragmentation_ratio",
                format!(
                    "{:.2}",
                    if used > 0 {
                        rss as f64 / used as f64
                    } else {
                        0.0
                    }
                ),
            );
            line(
                out,
                "mem_allocator",
                if memory::is_counting() {
                    "libc (counted)"
                } else {
                    "libc"
                },
            );
        }
        "persistence" => {
            let aof = server.aof();
            line(out, "loading", server.loading.load(Ordering::Relaxed) as u8);
            line(
                out,
                "rdb_changes_since_last_save",
                server.keyspace.dirty.load(Ordering::Relaxed),
            );
            line(out, "rdb_bgsave_in_progress", 0);
            line(out, "aof_enabled", aof.is_some() as u8);
            match aof {
                Some(aof) => {
                    let st = aof.status();
                    let ls = aof.log_stats();
                    line(out, "aof_rewrite_in_progress", st.in_progress as u8);
                    line(out, "aof_rewrite_scheduled", 0);
                    line(
                        out,
                        "aof_last_rewrite_time_sec",
                        st.last_duration.map_or(-1, |d| d.as_secs() as i64),
                    );
                    line(
                        out,
                        "aof_last_bgrewrite_status",
                        if st.last_ok { "ok" } else { "err" },
                    );
                    line(out, "aof_rewrites", st.rewrites);
                    line(
                        out,
                        "aof_last_write_status",
                        if aof.failure().is_none() { "ok" } else { "err" },
                    );
                    line(out, "aof_current_size", aof.size_bytes());
                    line(out, "aof_base_size", aof.base_size());
                    line(out, "aof_fsyncs", ls.fsyncs);
                    line(out, "aof_appendfsync", aof.policy().name());
                }
                None => {
                    line(out, "aof_rewrite_in_progress", 0);
                    line(out, "aof_last_bgrewrite_status", "ok");
                }
            }
        }
        "stats" => {
            let ks = server.keyspace.stats();
            line(
                out,
                "total_connections_received",
                server.clients.total_connections.load(Ordering::Relaxed),
            );
            line(
                out,
                "total_commands_processed",
                server.commands.total_calls(),
            );
            line(
                out,
                "total_net_input_bytes",
                server.stats.net_input_bytes.load(Ordering::Relaxed),
            );
            line(
                out,
                "total_net_output_bytes",
                server.stats.net_output_bytes.load(Ordering::Relaxed),
            );
            line(
                out,
                "rejected_connections",
                server.clients.rejected_connections.load(Ordering::Relaxed),
            );
            line(out, "expired_keys", ks.expired_keys);
            line(out, "evicted_keys", ks.evicted_keys);
            line(out, "keyspace_hits", ks.keyspace_hits);
            line(out, "keyspace_misses", ks.keyspace_misses);
            line(out, "pubsub_channels", server.pubsub.channels(None).len());
            line(out, "pubsub_patterns", server.pubsub.numpat());
            line(
                out,
                "expire_cycle_cpu_milliseconds",
                server.stats.expire_cycle_time_us.load(Ordering::Relaxed) / 1000,
            );
            line(
                out,
                "client_output_buffer_limit_disconnections",
                server
                    .stats
                    .output_limit_disconnections
                    .load(Ordering::Relaxed),
            );
        }
        "replication" => {
            line(out, "role", "master");
            line(out, "connected_slaves", 0);
        }
        "cpu" => {
            // SAFETY: getrusage only writes into the struct we pass.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
            let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
            line(out, "used_cpu_sys", format!("{:.6}", secs(ru.ru_stime)));
            line(out, "used_cpu_user", format!("{:.6}", secs(ru.ru_utime)));
        }
        "commandstats" => {
            for s in server
                .commands
                .snapshot()
                .iter()
                .filter(|s| s.calls > 0 || s.rejected > 0)
            {
                let usec = s.nanos / 1000;
                let per = if s.calls > 0 {
                    usec as f64 / s.calls as f64
                } else {
                    0.0
                };
                let _ = write!(
                    out,
                    "cmdstat_{}:calls={},usec={},usec_per_call={:.2},rejected_calls={},failed_calls={}\r\n",
                    s.name, s.calls, usec, per, s.rejected, s.failed
                );
            }
        }
        "keyspace" => {
            for (db, (keys, expires)) in server.keyspace.db_sizes().into_iter().enumerate() {
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
        f.counter(
            "minikv_commands_total",
            "Commands executed, by name.",
            &[("cmd", s.name.clone())],
            s.calls as f64,
        );
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
    f.gauge(
        "minikv_connected_clients",
        "Connected clients.",
        &[],
        server.clients.len() as f64,
    );
    f.gauge(
        "minikv_blocked_clients",
        "Clients blocked on BLPOP and friends.",
        &[],
        server.clients.blocked() as f64,
    );
    for (db, (keys, expires)) in server.keyspace.db_sizes().into_iter().enumerate() {
        if keys > 0 {
            f.gauge(
                "minikv_keys",
                "Keys per database.",
                &[("db", db.to_string())],
                keys as f64,
            );
            f.gauge(
                "minikv_keys_with_ttl",
                "Keys with a TTL per database.",
                &[("db", db.to_string())],
                expires as f64,
            );
        }
    }
    let ks = server.keyspace.stats();
    f.counter(
        "minikv_expired_keys_total",
        "Keys removed because their TTL passed.",
        &[],
        ks.expired_keys as f64,
    );
    f.counter(
        "minikv_evicted_keys_total",
        "Keys evicted by the maxmemory policy.",
        &[],
        ks.evicted_keys as f64,
    );
    f.counter(
        "minikv_keyspace_hits_total",
        "Successful key lookups by read commands.",
        &[],
        ks.keyspace_hits as f64,
    );
    f.counter(
        "minikv_keyspace_misses_total",
        "Failed key lookups by read commands.",
        &[],
        ks.keyspace_misses as f64,
    );
    f.gauge(
        "minikv_used_memory_bytes",
        "Bytes allocated by the server (what maxmemory limits).",
        &[],
        memory::used_memory() as f64,
    );
    f.gauge(
        "minikv_rss_bytes",
        "Resident set size of the process.",
        &[],
        rss_bytes() as f64,
    );
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
    if let Some(aof) = server.aof() {
        f.gauge(
            "minikv_aof_size_bytes",
            "AOF size: base plus incremental log.",
            &[],
            aof.size_bytes() as f64,
        );
        f.counter(
            "minikv_aof_rewrites_total",
            "Completed AOF rewrites.",
            &[],
            aof.status().rewrites as f64,
        );
        f.histogram(
            "minikv_aof_fsync_duration_seconds",
            "Duration of AOF fsyncs.",
            &aof.fsync_latency,
        );
    }
    f.0
}
