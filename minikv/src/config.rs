//! Configuration: one table of parameters behind the command line, redis.conf and
//! CONFIG GET/SET.
//!
//! Every parameter is declared once in [`PARAMS`] with its Redis name, its default and
//! whether it can change at run time. The `minikv` flags (`--port 7379`), a config file
//! (`port 7379`) and `CONFIG SET port ...` all go through [`Config::set`], so they
//! accept the same values and give the same errors.
//!
//! Values that the hot path reads on every command (limits, maxmemory) live in
//! [`Live`] as atomics, so reading them takes no lock. Values read rarely live under a
//! `RwLock` in [`Config`].
//!
//! Left out: every redis.conf directive minikv has no use for (replication, cluster,
//! RDB snapshots, TLS, modules...). They are rejected with an error naming the
//! directive, so a user never believes a setting took effect when it did not.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use parking_lot::RwLock;

/// `maxmemory-policy`: what happens when a write would exceed `maxmemory`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvictionPolicy {
    NoEviction,
    AllKeysLru,
    AllKeysLfu,
    AllKeysRandom,
    VolatileLru,
    VolatileLfu,
    VolatileRandom,
    VolatileTtl,
}

impl EvictionPolicy {
    pub const ALL: [EvictionPolicy; 8] = [
        EvictionPolicy::NoEviction,
        EvictionPolicy::AllKeysLru,
        EvictionPolicy::AllKeysLfu,
        EvictionPolicy::AllKeysRandom,
        EvictionPolicy::VolatileLru,
        EvictionPolicy::VolatileLfu,
        EvictionPolicy::VolatileRandom,
        EvictionPolicy::VolatileTtl,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EvictionPolicy::NoEviction => "noeviction",
            EvictionPolicy::AllKeysLru => "allkeys-lru",
            EvictionPolicy::AllKeysLfu => "allkeys-lfu",
            EvictionPolicy::AllKeysRandom => "allkeys-random",
            EvictionPolicy::VolatileLru => "volatile-lru",
            EvictionPolicy::VolatileLfu => "volatile-lfu",
            EvictionPolicy::VolatileRandom => "volatile-random",
            EvictionPolicy::VolatileTtl => "volatile-ttl",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name().eq_ignore_ascii_case(s))
    }

    pub fn is_lfu(self) -> bool {
        matches!(self, EvictionPolicy::AllKeysLfu | EvictionPolicy::VolatileLfu)
    }

    /// Volatile policies only evict keys that have a TTL.
    pub fn volatile_only(self) -> bool {
        matches!(
            self,
            EvictionPolicy::VolatileLru
                | EvictionPolicy::VolatileLfu
                | EvictionPolicy::VolatileRandom
                | EvictionPolicy::VolatileTtl
        )
    }
}

/// `appendfsync`: when the AOF is fsynced relative to the client's reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendFsync {
    /// fsync before replying (group commit across clients).
    Always,
    /// write before replying, fsync once a second in the background.
    EverySec,
    /// write before replying, let the OS flush when it likes.
    No,
}

impl AppendFsync {
    pub fn name(self) -> &'static str {
        match self {
            AppendFsync::Always => "always",
            AppendFsync::EverySec => "everysec",
            AppendFsync::No => "no",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "always" => Some(AppendFsync::Always),
            "everysec" => Some(AppendFsync::EverySec),
            "no" => Some(AppendFsync::No),
            _ => None,
        }
    }
}

/// One `client-output-buffer-limit` class: disconnect when over `hard` bytes, or over
/// `soft` bytes for `soft_secs` seconds. Zero disables a limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputLimit {
    pub hard: u64,
    pub soft: u64,
    pub soft_secs: u64,
}

/// Values read on the hot path, as atomics.
#[derive(Debug)]
pub struct Live {
    pub maxmemory: AtomicU64,
    policy: AtomicU8,
    pub maxmemory_samples: AtomicU32,
    pub lfu_log_factor: AtomicU32,
    pub lfu_decay_time: AtomicU32,
    pub maxclients: AtomicUsize,
    pub proto_max_bulk_len: AtomicUsize,
    pub proto_max_multibulk_len: AtomicUsize,
    pub client_query_buffer_limit: AtomicUsize,
    pub hz: AtomicU32,
    pub auth_required: AtomicBool,
    pub active_expire: AtomicBool,
    pub timeout_secs: AtomicU64,
    /// Most keys the client-side caching table may hold (0: no limit); checked after
    /// every command that added keys to it.
    pub tracking_table_max_keys: AtomicU64,
}

impl Live {
    pub fn policy(&self) -> EvictionPolicy {
        EvictionPolicy::ALL[self.policy.load(Ordering::Relaxed) as usize]
    }

    fn set_policy(&self, p: EvictionPolicy) {
        let idx = EvictionPolicy::ALL.iter().position(|x| *x == p).unwrap_or(0);
        self.policy.store(idx as u8, Ordering::Relaxed);
    }
}

/// Values read rarely.
#[derive(Debug, Clone)]
pub struct Settings {
    pub port: u16,
    pub bind: Vec<String>,
    pub dir: PathBuf,
    pub appendonly: bool,
    pub appendfsync: AppendFsync,
    pub appenddirname: String,
    pub requirepass: Option<String>,
    pub databases: usize,
    pub auto_aof_rewrite_percentage: u64,
    pub auto_aof_rewrite_min_size: u64,
    pub aof_load_corrupt: bool,
    pub pubsub_output_limit: OutputLimit,
    pub normal_output_limit: OutputLimit,
    pub loglevel: String,
    pub io_threads: usize,
    pub admin_port: Option<u16>,
}

pub struct Config {
    pub live: Live,
    settings: RwLock<Settings>,
}

/// A value parsed according to its parameter's [`Kind`].
enum Parsed<'v> {
    Int(i64),
    Memory(u64),
    Bool(bool),
    Text(&'v str),
}

/// How a parameter's value is typed.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Bool,
    Int { min: i64, max: i64 },
    Memory { min: u64, max: u64 },
    Str,
    Enum(&'static [&'static str]),
    Special,
}

struct Param {
    name: &'static str,
    kind: Kind,
    /// Whether CONFIG SET may change it (the rest are start-up only, as in Redis).
    mutable: bool,
}

const fn p(name: &'static str, kind: Kind, mutable: bool) -> Param {
    Param { name, kind, mutable }
}

/// In Redis's order, which its error message lists.
const POLICIES: &[&str] = &[
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "noeviction",
];

const I32: i64 = i32::MAX as i64;
const I64: u64 = i64::MAX as u64;
const MB: u64 = 1024 * 1024;

const fn int(min: i64, max: i64) -> Kind {
    Kind::Int { min, max }
}

const fn memory(min: u64, max: u64) -> Kind {
    Kind::Memory { min, max }
}

/// Every parameter minikv understands. Anything else is rejected.
#[rustfmt::skip]
const PARAMS: &[Param] = &[
    p("port", int(0, 65535), false),
    p("bind", Kind::Special, false),
    p("dir", Kind::Str, false),
    p("appendonly", Kind::Bool, false),
    // Fixed at start-up: the open AOF log keeps the policy it was opened with.
    p("appendfsync", Kind::Enum(&["always", "everysec", "no"]), false),
    p("appenddirname", Kind::Str, false),
    p("maxmemory", memory(0, u64::MAX / 2), true),
    p("maxmemory-policy", Kind::Enum(POLICIES), true),
    p("maxmemory-samples", int(1, 64), true),
    p("lfu-log-factor", int(0, I32), true),
    p("lfu-decay-time", int(0, I32), true),
    p("requirepass", Kind::Str, true),
    p("databases", int(1, 1024), false),
    p("hz", int(1, 500), true),
    p("maxclients", int(1, u32::MAX as i64), true),
    p("timeout", int(0, I32), true),
    p("proto-max-bulk-len", memory(MB, I64), true),
    p("proto-max-multibulk-len", int(1, I32), true),
    p("client-query-buffer-limit", memory(MB, I64), true),
    p("client-output-buffer-limit", Kind::Special, true),
    p("auto-aof-rewrite-percentage", int(0, I32), true),
    p("auto-aof-rewrite-min-size", memory(0, I64), true),
    p("aof-load-corrupt", Kind::Bool, true),
    p("save", Kind::Special, true),
    p("loglevel", Kind::Enum(&["debug", "verbose", "notice", "warning", "nothing"]), true),
    p("io-threads", int(1, 128), false),
    p("admin-port", int(0, 65535), false),
    p("tracking-table-max-keys", int(0, i64::MAX), true),
];

/// A configuration error, worded like Redis's where Redis has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("Unknown option or number of arguments for CONFIG SET - '{0}'")]
    Unknown(String),
    #[error("CONFIG SET failed (possibly related to argument '{name}') - {reason}")]
    Invalid { name: String, reason: String },
    #[error("CONFIG SET failed (possibly related to argument '{0}') - can't set immutable config")]
    Immutable(String),
}

impl Default for Config {
    fn default() -> Self {
        Config::new()
    }
}

impl Config {
    pub fn new() -> Self {
        let live = Live {
            maxmemory: AtomicU64::new(0),
            policy: AtomicU8::new(0),
            maxmemory_samples: AtomicU32::new(5),
            lfu_log_factor: AtomicU32::new(10),
            lfu_decay_time: AtomicU32::new(1),
            maxclients: AtomicUsize::new(10_000),
            proto_max_bulk_len: AtomicUsize::new(512 * 1024 * 1024),
            proto_max_multibulk_len: AtomicUsize::new(i32::MAX as usize),
            client_query_buffer_limit: AtomicUsize::new(1024 * 1024 * 1024),
            hz: AtomicU32::new(10),
            auth_required: AtomicBool::new(false),
            active_expire: AtomicBool::new(true),
            timeout_secs: AtomicU64::new(0),
            tracking_table_max_keys: AtomicU64::new(1_000_000),
        };
        let settings = Settings {
            port: 7379,
            bind: vec!["127.0.0.1".to_string()],
            dir: PathBuf::from("."),
            appendonly: false,
            appendfsync: AppendFsync::EverySec,
            appenddirname: "appendonlydir".to_string(),
            requirepass: None,
            databases: 16,
            auto_aof_rewrite_percentage: 100,
            auto_aof_rewrite_min_size: 64 * 1024 * 1024,
            aof_load_corrupt: false,
            pubsub_output_limit: OutputLimit { hard: 32 << 20, soft: 8 << 20, soft_secs: 60 },
            normal_output_limit: OutputLimit { hard: 0, soft: 0, soft_secs: 0 },
            loglevel: "notice".to_string(),
            io_threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            admin_port: None,
        };
        Config { live, settings: RwLock::new(settings) }
    }

    pub fn settings(&self) -> Settings {
        self.settings.read().clone()
    }

    pub fn with_settings<T>(&self, f: impl FnOnce(&Settings) -> T) -> T {
        f(&self.settings.read())
    }

    /// The admin HTTP port: `admin-port`, or `port + 10000` when unset; `None` when
    /// set to 0.
    pub fn admin_port(&self) -> Option<u16> {
        let s = self.settings.read();
        match s.admin_port {
            Some(0) => None,
            Some(p) => Some(p),
            None => s.port.checked_add(10_000),
        }
    }

    /// Sets `name` to `value` (start-up: any parameter; `runtime`: mutable ones only).
    pub fn set(&self, name: &str, value: &str, runtime: bool) -> Result<(), ConfigError> {
        let lname = name.to_ascii_lowercase();
        let Some(param) = PARAMS.iter().find(|p| p.name == lname) else {
            return Err(ConfigError::Unknown(name.to_string()));
        };
        if runtime && !param.mutable {
            return Err(ConfigError::Immutable(param.name.to_string()));
        }
        let invalid = |reason: &str| ConfigError::Invalid { name: param.name.to_string(), reason: reason.to_string() };
        // Parse by the declared kind, so each range lives in one place: the table.
        let parsed = match param.kind {
            Kind::Int { min, max } => {
                let v: i64 = value.parse().map_err(|_| invalid("argument couldn't be parsed into an integer"))?;
                if v < min || v > max {
                    return Err(invalid(&format!("argument must be between {min} and {max} inclusive")));
                }
                Parsed::Int(v)
            }
            Kind::Memory { min, max } => match parse_memory(value) {
                Some(v) if v >= min && v <= max => Parsed::Memory(v),
                Some(_) if min > 0 => {
                    return Err(invalid(&format!("argument must be a memory value of at least {min} bytes")))
                }
                _ => return Err(invalid("argument must be a memory value")),
            },
            Kind::Bool => match value.to_ascii_lowercase().as_str() {
                "yes" => Parsed::Bool(true),
                "no" => Parsed::Bool(false),
                _ => return Err(invalid("argument must be 'yes' or 'no'")),
            },
            Kind::Enum(options) => {
                if !options.iter().any(|o| o.eq_ignore_ascii_case(value)) {
                    return Err(invalid(&format!("argument(s) must be one of the following: {}", options.join(", "))));
                }
                Parsed::Text(value)
            }
            Kind::Str | Kind::Special => Parsed::Text(value),
        };
        let live = &self.live;
        let mut s = self.settings.write();
        match (param.name, parsed) {
            ("port", Parsed::Int(v)) => s.port = v as u16,
            ("bind", Parsed::Text(v)) => {
                let addrs: Vec<String> = v.split_whitespace().map(str::to_string).collect();
                if addrs.is_empty() {
                    return Err(invalid("bind needs at least one address"));
                }
                s.bind = addrs;
            }
            ("dir", Parsed::Text(v)) => s.dir = PathBuf::from(v),
            ("appendonly", Parsed::Bool(v)) => s.appendonly = v,
            ("appendfsync", Parsed::Text(v)) => {
                s.appendfsync = AppendFsync::parse(v).ok_or_else(|| invalid("bad value"))?
            }
            ("appenddirname", Parsed::Text(v)) => {
                if v.is_empty() || v.contains('/') {
                    return Err(invalid("appenddirname can't be a path, just a directory name"));
                }
                s.appenddirname = v.to_string();
            }
            ("maxmemory", Parsed::Memory(v)) => live.maxmemory.store(v, Ordering::Relaxed),
            ("maxmemory-policy", Parsed::Text(v)) => {
                live.set_policy(EvictionPolicy::parse(v).ok_or_else(|| invalid("bad policy"))?)
            }
            ("maxmemory-samples", Parsed::Int(v)) => live.maxmemory_samples.store(v as u32, Ordering::Relaxed),
            ("lfu-log-factor", Parsed::Int(v)) => live.lfu_log_factor.store(v as u32, Ordering::Relaxed),
            ("lfu-decay-time", Parsed::Int(v)) => live.lfu_decay_time.store(v as u32, Ordering::Relaxed),
            ("requirepass", Parsed::Text(v)) => {
                s.requirepass = if v.is_empty() { None } else { Some(v.to_string()) };
                live.auth_required.store(s.requirepass.is_some(), Ordering::Relaxed);
            }
            ("databases", Parsed::Int(v)) => s.databases = v as usize,
            ("hz", Parsed::Int(v)) => live.hz.store(v as u32, Ordering::Relaxed),
            ("maxclients", Parsed::Int(v)) => live.maxclients.store(v as usize, Ordering::Relaxed),
            ("timeout", Parsed::Int(v)) => live.timeout_secs.store(v as u64, Ordering::Relaxed),
            ("proto-max-bulk-len", Parsed::Memory(v)) => live.proto_max_bulk_len.store(v as usize, Ordering::Relaxed),
            ("proto-max-multibulk-len", Parsed::Int(v)) => {
                live.proto_max_multibulk_len.store(v as usize, Ordering::Relaxed)
            }
            ("client-query-buffer-limit", Parsed::Memory(v)) => {
                live.client_query_buffer_limit.store(v as usize, Ordering::Relaxed)
            }
            ("client-output-buffer-limit", Parsed::Text(v)) => {
                let words: Vec<&str> = v.split_whitespace().collect();
                if words.is_empty() || !words.len().is_multiple_of(4) {
                    return Err(invalid("Wrong number of arguments in buffer limit configuration."));
                }
                let mut pubsub = s.pubsub_output_limit;
                let mut normal = s.normal_output_limit;
                for chunk in words.chunks(4) {
                    let parse = |w: &str| {
                        parse_memory(w).ok_or_else(|| {
                            invalid("Error in hard, soft or soft_seconds setting in buffer limit configuration.")
                        })
                    };
                    let limit =
                        OutputLimit { hard: parse(chunk[1])?, soft: parse(chunk[2])?, soft_secs: parse(chunk[3])? };
                    match chunk[0].to_ascii_lowercase().as_str() {
                        "pubsub" => pubsub = limit,
                        "normal" => normal = limit,
                        "replica" | "slave" => {}
                        _ => return Err(invalid("Invalid client class specified in buffer limit configuration.")),
                    }
                }
                s.pubsub_output_limit = pubsub;
                s.normal_output_limit = normal;
            }
            ("auto-aof-rewrite-percentage", Parsed::Int(v)) => s.auto_aof_rewrite_percentage = v as u64,
            ("auto-aof-rewrite-min-size", Parsed::Memory(v)) => s.auto_aof_rewrite_min_size = v,
            ("aof-load-corrupt", Parsed::Bool(v)) => s.aof_load_corrupt = v,
            ("save", Parsed::Text(v)) => {
                // minikv has no RDB snapshots; only "no snapshotting" is meaningful.
                if !v.trim().is_empty() {
                    return Err(invalid("minikv persists with the AOF only (appendonly yes); 'save' must be empty"));
                }
            }
            ("loglevel", Parsed::Text(v)) => s.loglevel = v.to_ascii_lowercase(),
            ("io-threads", Parsed::Int(v)) => s.io_threads = v as usize,
            ("admin-port", Parsed::Int(v)) => s.admin_port = Some(v as u16),
            ("tracking-table-max-keys", Parsed::Int(v)) => {
                live.tracking_table_max_keys.store(v as u64, Ordering::Relaxed)
            }
            (name, _) => unreachable!("parameter {name} declared with a kind its setter does not handle"),
        }
        Ok(())
    }

    /// The current value of `name`, formatted as CONFIG GET prints it.
    pub fn get(&self, name: &str) -> Option<String> {
        let live = &self.live;
        let s = self.settings.read();
        let yes_no = |b: bool| if b { "yes" } else { "no" }.to_string();
        let limit = |l: OutputLimit| format!("{} {} {}", l.hard, l.soft, l.soft_secs);
        Some(match name {
            "port" => s.port.to_string(),
            "bind" => s.bind.join(" "),
            "dir" => std::fs::canonicalize(&s.dir).unwrap_or_else(|_| s.dir.clone()).display().to_string(),
            "appendonly" => yes_no(s.appendonly),
            "appendfsync" => s.appendfsync.name().to_string(),
            "appenddirname" => s.appenddirname.clone(),
            "maxmemory" => live.maxmemory.load(Ordering::Relaxed).to_string(),
            "maxmemory-policy" => live.policy().name().to_string(),
            "maxmemory-samples" => live.maxmemory_samples.load(Ordering::Relaxed).to_string(),
            "lfu-log-factor" => live.lfu_log_factor.load(Ordering::Relaxed).to_string(),
            "lfu-decay-time" => live.lfu_decay_time.load(Ordering::Relaxed).to_string(),
            "requirepass" => s.requirepass.clone().unwrap_or_default(),
            "databases" => s.databases.to_string(),
            "hz" => live.hz.load(Ordering::Relaxed).to_string(),
            "maxclients" => live.maxclients.load(Ordering::Relaxed).to_string(),
            "timeout" => live.timeout_secs.load(Ordering::Relaxed).to_string(),
            "proto-max-bulk-len" => live.proto_max_bulk_len.load(Ordering::Relaxed).to_string(),
            "proto-max-multibulk-len" => live.proto_max_multibulk_len.load(Ordering::Relaxed).to_string(),
            "client-query-buffer-limit" => live.client_query_buffer_limit.load(Ordering::Relaxed).to_string(),
            "client-output-buffer-limit" => format!(
                "normal {} slave 268435456 67108864 60 pubsub {}",
                limit(s.normal_output_limit),
                limit(s.pubsub_output_limit)
            ),
            "auto-aof-rewrite-percentage" => s.auto_aof_rewrite_percentage.to_string(),
            "auto-aof-rewrite-min-size" => s.auto_aof_rewrite_min_size.to_string(),
            "aof-load-corrupt" => yes_no(s.aof_load_corrupt),
            "save" => String::new(),
            "loglevel" => s.loglevel.clone(),
            "io-threads" => s.io_threads.to_string(),
            "admin-port" => s.admin_port.unwrap_or(s.port.saturating_add(10_000)).to_string(),
            "tracking-table-max-keys" => live.tracking_table_max_keys.load(Ordering::Relaxed).to_string(),
            _ => return None,
        })
    }

    /// Names of all parameters matching a CONFIG GET glob, in table order.
    pub fn matching(&self, pattern: &[u8]) -> Vec<&'static str> {
        PARAMS.iter().filter(|p| crate::glob::matches(pattern, p.name.as_bytes(), true)).map(|p| p.name).collect()
    }

    /// Whether CONFIG SET may change `name` at run time.
    pub fn is_mutable(name: &str) -> bool {
        PARAMS.iter().any(|p| p.mutable && p.name.eq_ignore_ascii_case(name))
    }

    /// Whether `name` is a known parameter.
    pub fn is_known(name: &str) -> bool {
        PARAMS.iter().any(|p| p.name.eq_ignore_ascii_case(name))
    }

    /// Loads a redis.conf-style file: one `name value...` directive per line, `#`
    /// comments, quoted values as in Redis. Errors name the line.
    pub fn load_file(&self, path: &std::path::Path) -> Result<(), String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("can't read config file '{}': {e}", path.display()))?;
        self.load_text(&text).map_err(|e| format!("in config file '{}': {e}", path.display()))
    }

    pub fn load_text(&self, text: &str) -> Result<(), String> {
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut out = Vec::new();
            let mut spans = Vec::new();
            crate::resp::split_args(line.as_bytes(), &mut out, &mut spans)
                .map_err(|crate::resp::UnbalancedQuotes| format!("line {}: unbalanced quotes in '{line}'", n + 1))?;
            let words: Vec<String> =
                spans.iter().map(|s| String::from_utf8_lossy(&out[s.clone()]).into_owned()).collect();
            let Some((name, values)) = words.split_first() else {
                continue;
            };
            if !Config::is_known(name) {
                return Err(format!(
                    "line {}: Bad directive or wrong number of arguments: '{name}' is not a parameter minikv supports (see docs/minikv.md)",
                    n + 1
                ));
            }
            self.set(name, &values.join(" "), false).map_err(|e| format!("line {}: {e}", n + 1))?;
        }
        Ok(())
    }
}

/// Parses a memory amount the way Redis's `memtoull` does: `100`, `1k` (1000),
/// `1kb` (1024), `m`, `mb`, `g`, `gb`, case-insensitive. Negative is rejected.
pub fn parse_memory(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if digits_end == 0 {
        return None;
    }
    let n: u64 = s[..digits_end].parse().ok()?;
    let mul: u64 = match s[digits_end..].to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1024,
        "m" => 1000 * 1000,
        "mb" => 1024 * 1024,
        "g" => 1000 * 1000 * 1000,
        "gb" => 1024 * 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(mul)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_units_follow_redis() {
        assert_eq!(parse_memory("100"), Some(100));
        assert_eq!(parse_memory("1k"), Some(1000));
        assert_eq!(parse_memory("1KB"), Some(1024));
        assert_eq!(parse_memory("2gb"), Some(2 << 30));
        assert_eq!(parse_memory("-1"), None);
        assert_eq!(parse_memory("1tb"), None);
    }

    #[test]
    fn file_flags_and_config_set_share_one_table() {
        let c = Config::new();
        c.load_text("# comment\nport 7400\nmaxmemory 100mb\nmaxmemory-policy allkeys-lru\nappendonly yes\n").unwrap();
        assert_eq!(c.get("port").unwrap(), "7400");
        assert_eq!(c.live.maxmemory.load(Ordering::Relaxed), 100 << 20);
        assert_eq!(c.live.policy(), EvictionPolicy::AllKeysLru);
        assert!(c.load_text("replicaof 1.2.3.4 6379").unwrap_err().contains("replicaof"));
        assert!(matches!(c.set("port", "1", true), Err(ConfigError::Immutable(_))));
        assert!(matches!(c.set("maxmemory-policy", "lol", true), Err(ConfigError::Invalid { .. })));
        assert_eq!(c.matching(b"maxmemory*"), vec!["maxmemory", "maxmemory-policy", "maxmemory-samples"]);
    }
}
