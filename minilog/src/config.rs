//! The broker's flags and the per-topic settings they default.
//!
//! Flag names follow the issue that specified minilog (`--listen`, `--dir`,
//! `--segment-bytes`, ...); each one names the Kafka property it stands for, so a Kafka
//! user can map `server.properties` onto it. Per-topic overrides arrive through
//! CreateTopics with Kafka's own property names (`retention.ms`, `segment.bytes`, ...)
//! and are parsed by [`TopicConfig::apply`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// When an acknowledged produce is on disk. Chosen with `--flush`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushPolicy {
    /// `--flush always`: every produce is fsynced before its acknowledgement. Produces
    /// that arrive while an fsync runs share the next one (group commit), so the cost
    /// is one fsync per partition per round, not one per request.
    Always,
    /// `--flush interval:N`: a flusher fsyncs every dirty partition every N ms; an
    /// acknowledgement waits for the fsync that covers it. Everything written in one
    /// interval shares one fsync (group commit): fewer fsyncs than `always`, up to N ms
    /// more latency, the same promise.
    Interval(Duration),
    /// `--flush os` (Kafka's default): acknowledge once the batch is in the page cache and
    /// let the kernel write it back. Survives a kill -9 of the broker, not a power loss.
    Os,
}

impl FlushPolicy {
    pub fn parse(text: &str) -> Result<FlushPolicy, String> {
        match text {
            "always" => Ok(FlushPolicy::Always),
            "os" => Ok(FlushPolicy::Os),
            other => match other.strip_prefix("interval:") {
                Some(ms) => match ms.parse::<u64>() {
                    Ok(ms) if ms > 0 => Ok(FlushPolicy::Interval(Duration::from_millis(ms))),
                    _ => Err(format!("'{other}': the interval is a positive number of milliseconds, e.g. interval:5")),
                },
                None => Err(format!("'{other}': expected always, interval:<ms> or os")),
            },
        }
    }

    /// One line for logs and `mini up`: what an acknowledgement promises.
    pub fn promise(&self) -> String {
        match self {
            FlushPolicy::Always => "fsync before every ack: an acked produce survives kill -9 and power loss".into(),
            FlushPolicy::Interval(d) => format!(
                "group fsync every {} ms, acks wait for it: an acked produce survives kill -9 and power loss",
                d.as_millis()
            ),
            FlushPolicy::Os => {
                "acks once in the page cache: an acked produce survives kill -9, not a power loss".into()
            }
        }
    }
}

const FLUSH_HELP: &str = "When an acknowledged produce is on disk:
  always       fsync before every ack (concurrent produces share one fsync). Survives kill -9 and power loss.
  interval:N   fsync every N ms; acks wait for the fsync that covers them. Survives kill -9 and power loss;
               adds up to N ms of produce latency.
  os           ack once written to the page cache, let the kernel flush (Kafka's default). Survives kill -9
               of the broker; a power loss or kernel crash can lose what the kernel had not written yet.";

/// `minilog` flags.
#[derive(Parser, Debug, Clone)]
#[command(name = "minilog", version, about = "A Kafka-compatible log broker (see docs/minilog.md)")]
pub struct BrokerConfig {
    /// Address to accept Kafka clients on (Kafka `listeners`).
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub listen: SocketAddr,

    /// host:port clients are told to connect to (Kafka `advertised.listeners`). Defaults to
    /// the address actually bound.
    #[arg(long)]
    pub advertised_listener: Option<String>,

    /// Directory for partitions and broker metadata (Kafka `log.dirs`).
    #[arg(long, default_value = "./minilog-data")]
    pub dir: PathBuf,

    /// This broker's id in metadata (Kafka `node.id`).
    #[arg(long, default_value_t = 1)]
    pub node_id: i32,

    /// Partitions of an auto-created topic, and of CreateTopics with num_partitions -1
    /// (Kafka `num.partitions`).
    #[arg(long, default_value_t = 1)]
    pub num_partitions: i32,

    /// Create a topic the first time Metadata asks for it (Kafka `auto.create.topics.enable`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_create_topics: bool,

    /// Roll to a new segment once the active one would exceed this (Kafka `log.segment.bytes`).
    #[arg(long, default_value_t = 1 << 30)]
    pub segment_bytes: u64,

    /// Roll to a new segment once the active one is this old (Kafka `log.roll.ms`).
    #[arg(long, default_value_t = 7 * 24 * 3600 * 1000)]
    pub segment_ms: i64,

    /// Delete segments whose newest record is older than this; -1 keeps them forever
    /// (Kafka `log.retention.ms`).
    #[arg(long, default_value_t = 7 * 24 * 3600 * 1000, allow_hyphen_values = true)]
    pub retention_ms: i64,

    /// Delete the oldest segments while a partition is bigger than this; -1 means no size
    /// limit (Kafka `log.retention.bytes`).
    #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
    pub retention_bytes: i64,

    /// How often retention and age-based rolling run (Kafka `log.retention.check.interval.ms`).
    #[arg(long, default_value_t = 300_000)]
    pub retention_check_ms: u64,

    /// Largest record batch a topic accepts (Kafka `message.max.bytes`).
    #[arg(long, default_value_t = 1_048_588)]
    pub max_message_bytes: usize,

    /// Largest request frame; a bigger one closes the connection (Kafka `socket.request.max.bytes`).
    #[arg(long, default_value_t = 100 * 1024 * 1024)]
    pub max_request_bytes: usize,

    #[arg(long, default_value = "os", value_parser = FlushPolicy::parse, long_help = FLUSH_HELP)]
    pub flush: FlushPolicy,

    /// How long a new, empty group waits for more members before its first assignment
    /// (Kafka `group.initial.rebalance.delay.ms`, whose default is 3000).
    #[arg(long, default_value_t = 0)]
    pub group_initial_rebalance_delay_ms: u64,

    /// Port of the HTTP admin endpoint (/metrics, /healthz, /readyz) on the listen
    /// address's host; defaults to the Kafka port + 10000. 0 disables it.
    #[arg(long)]
    pub admin_port: Option<u16>,

    /// Maximum number of client connections.
    #[arg(long, default_value_t = 10_000)]
    pub max_connections: usize,

    /// Worker threads (defaults to the number of cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

impl BrokerConfig {
    /// The defaults, as if no flag were given, with `dir` and `listen` replaced; for tests
    /// and for `mini up`.
    pub fn with_dir(dir: impl Into<PathBuf>, listen: SocketAddr) -> BrokerConfig {
        let mut config = BrokerConfig::parse_from(["minilog"]);
        config.dir = dir.into();
        config.listen = listen;
        config
    }

    /// The settings a topic gets when nothing overrides them.
    pub fn topic_defaults(&self) -> TopicConfig {
        TopicConfig {
            segment_bytes: self.segment_bytes,
            segment_ms: self.segment_ms,
            retention_ms: self.retention_ms,
            retention_bytes: self.retention_bytes,
            max_message_bytes: self.max_message_bytes,
        }
    }
}

/// A topic's settings, named as Kafka names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicConfig {
    /// `segment.bytes`
    pub segment_bytes: u64,
    /// `segment.ms`
    pub segment_ms: i64,
    /// `retention.ms`; -1 is unlimited.
    pub retention_ms: i64,
    /// `retention.bytes`; -1 is unlimited.
    pub retention_bytes: i64,
    /// `max.message.bytes`
    pub max_message_bytes: usize,
}

/// A topic property we do not know or cannot take.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidConfig(pub String);

impl TopicConfig {
    /// The property names CreateTopics accepts and DescribeConfigs reports.
    pub const NAMES: [&'static str; 7] = [
        "cleanup.policy",
        "max.message.bytes",
        "message.timestamp.type",
        "retention.bytes",
        "retention.ms",
        "segment.bytes",
        "segment.ms",
    ];

    /// Applies one `name=value` override.
    pub fn apply(&mut self, name: &str, value: &str) -> Result<(), InvalidConfig> {
        fn number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, InvalidConfig> {
            value.trim().parse().map_err(|_| InvalidConfig(format!("{name}: '{value}' is not a valid number")))
        }
        match name {
            "segment.bytes" => {
                let v: u64 = number(name, value)?;
                if v < 14 {
                    return Err(InvalidConfig("segment.bytes must be at least 14".into()));
                }
                self.segment_bytes = v;
            }
            "segment.ms" => {
                let v: i64 = number(name, value)?;
                if v < 1 {
                    return Err(InvalidConfig("segment.ms must be at least 1".into()));
                }
                self.segment_ms = v;
            }
            "retention.ms" => {
                let v: i64 = number(name, value)?;
                if v < -1 {
                    return Err(InvalidConfig("retention.ms must be -1 (forever) or more".into()));
                }
                self.retention_ms = v;
            }
            "retention.bytes" => self.retention_bytes = number(name, value)?,
            "max.message.bytes" => self.max_message_bytes = number(name, value)?,
            // Accepted for compatibility with tools that always send them; only the values
            // minilog implements are allowed.
            "cleanup.policy" if value == "delete" => {}
            "message.timestamp.type" if value == "CreateTime" => {}
            "cleanup.policy" | "message.timestamp.type" => {
                return Err(InvalidConfig(format!(
                    "{name}={value} is not supported by minilog (only cleanup.policy=delete and \
                     message.timestamp.type=CreateTime)"
                )))
            }
            _ => return Err(InvalidConfig(format!("unknown or unsupported topic config '{name}'"))),
        }
        Ok(())
    }

    /// The value DescribeConfigs reports for one of [`TopicConfig::NAMES`].
    pub fn value_of(&self, name: &str) -> Option<String> {
        Some(match name {
            "cleanup.policy" => "delete".into(),
            "max.message.bytes" => self.max_message_bytes.to_string(),
            "message.timestamp.type" => "CreateTime".into(),
            "retention.bytes" => self.retention_bytes.to_string(),
            "retention.ms" => self.retention_ms.to_string(),
            "segment.bytes" => self.segment_bytes.to_string(),
            "segment.ms" => self.segment_ms.to_string(),
            _ => return None,
        })
    }

    /// The storage engine's view of these settings.
    pub fn log_config(&self) -> crate::storage::LogConfig {
        crate::storage::LogConfig {
            segment_bytes: self.segment_bytes,
            segment_ms: self.segment_ms,
            retention_ms: (self.retention_ms >= 0).then_some(self.retention_ms),
            retention_bytes: (self.retention_bytes >= 0).then_some(self.retention_bytes as u64),
            max_batch_bytes: self.max_message_bytes,
            ..crate::storage::LogConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flush_policies_parse() {
        assert_eq!(FlushPolicy::parse("always"), Ok(FlushPolicy::Always));
        assert_eq!(FlushPolicy::parse("os"), Ok(FlushPolicy::Os));
        assert_eq!(FlushPolicy::parse("interval:5"), Ok(FlushPolicy::Interval(Duration::from_millis(5))));
        assert!(FlushPolicy::parse("interval:0").is_err());
        assert!(FlushPolicy::parse("sometimes").is_err());
    }

    #[test]
    fn topic_overrides_are_validated() {
        let mut config = BrokerConfig::parse_from(["minilog"]).topic_defaults();
        config.apply("retention.ms", "60000").unwrap();
        assert_eq!(config.retention_ms, 60_000);
        assert!(config.apply("retention.ms", "soon").is_err());
        assert!(config.apply("cleanup.policy", "compact").is_err());
        assert!(config.apply("compression.type", "zstd").is_err());
        assert_eq!(config.value_of("retention.ms").as_deref(), Some("60000"));
    }

    proptest::proptest! {
        /// Flag values and topic configs come from users and clients: any text gets an
        /// answer or an error that names the setting, never a panic.
        #[test]
        fn arbitrary_settings_never_panic(name in "\\PC{0,24}", value in "\\PC{0,24}") {
            let _ = FlushPolicy::parse(&value);
            let mut config = BrokerConfig::parse_from(["minilog"]).topic_defaults();
            if let Err(e) = config.apply(&name, &value) {
                proptest::prop_assert!(!e.0.is_empty());
            }
            for known in TopicConfig::NAMES {
                let mut config = BrokerConfig::parse_from(["minilog"]).topic_defaults();
                if let Err(e) = config.apply(known, &value) {
                    proptest::prop_assert!(e.0.contains(known), "{e} should name {known}");
                }
            }
        }
    }
}
