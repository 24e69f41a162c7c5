//! The broker's state: its identity, its topics and their partitions, and the flush
//! machinery that decides when a produce may be acknowledged.
//!
//! Metadata model. A topic has a name, a random id (Kafka's topic id), settings, and
//! partitions. Each partition names its leader broker and leader epoch explicitly even
//! though there is one broker, so that a later issue can add brokers and replication by
//! filling these in rather than by rewriting the produce and fetch paths. With one
//! broker, the in-sync replica set is `{this broker}`, so acks=1 and acks=-1 mean the
//! same thing and the high watermark is the log end offset.
//!
//! On disk, under `--dir`:
//! - `meta.properties`: `cluster.id` and `node.id`, written once, like Kafka's.
//! - `topics/<topic>.properties`: the topic id, the partition count and the config
//!   overrides. A topic exists if and only if this file does.
//! - `<topic>-<partition>/`: one [`PartitionLog`] directory per partition.
//!
//! Left out: partition reassignment, adding partitions to a topic, and replicas.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use uuid::Uuid;

use crate::config::{BrokerConfig, FlushPolicy, InvalidConfig, TopicConfig};
use crate::metrics::Metrics;
use crate::producer_state::{last_sequence, ProducerStates, SequenceError, SequencedBatch, Verdict};
use crate::storage::{AppendError, AppendInfo, BatchHeader, PartitionLog};

/// Kafka's name for the internal topic that holds committed consumer offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Partitions of [`OFFSETS_TOPIC`]. Kafka uses 50 so that coordinators spread over
/// brokers; with one broker every group lives on partition 0.
pub const OFFSETS_TOPIC_PARTITIONS: i32 = 1;

/// Kafka's limit on topic name length.
const MAX_TOPIC_NAME_LEN: usize = 249;

/// Milliseconds since the Unix epoch, the clock Kafka timestamps use.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Who leads a partition. Explicit, so more brokers can be added later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leadership {
    pub leader_id: i32,
    /// Bumped on every leadership change; always 0 with one broker.
    pub leader_epoch: i32,
}

/// One partition: its log and the state that decides when appends are acknowledged.
pub struct Partition {
    pub topic: Arc<str>,
    pub index: i32,
    pub leadership: Leadership,
    /// A parking_lot mutex, not a tokio one: no await happens while it is held, and an
    /// append is a header walk plus one write(2).
    pub log: Mutex<PartitionLog>,
    /// Idempotent producers' sequence numbers. Locked before `log` by appends, so the
    /// check and the write are one step.
    producers: Mutex<ProducerStates>,
    /// The offset below which everything is fsynced. Produces that must wait for
    /// durability watch it.
    flushed: tokio::sync::watch::Sender<i64>,
    /// Held while an fsync of this partition runs. Whoever gets it next checks whether
    /// the previous fsync already covered them: that is the group commit.
    sync_lock: tokio::sync::Mutex<()>,
    /// fsync rounds run, to show (and test) that concurrent produces share them.
    fsyncs: AtomicU64,
}

impl Partition {
    /// The log end offset, which is also the high watermark with one broker.
    pub fn high_watermark(&self) -> i64 {
        self.log.lock().log_end_offset()
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log.lock().log_start_offset()
    }

    /// Returns once everything below `end_offset` is fsynced, running the fsync if no
    /// one else is. Concurrent callers share fsyncs.
    pub async fn sync_through(&self, end_offset: i64) -> io::Result<()> {
        loop {
            if *self.flushed.borrow() >= end_offset {
                return Ok(());
            }
            let _turn = self.sync_lock.lock().await;
            if *self.flushed.borrow() >= end_offset {
                return Ok(());
            }
            let target = self.log.lock().flush_target();
            let covered = target.end_offset;
            self.fsyncs.fetch_add(1, Ordering::Relaxed);
            let target = tokio::task::spawn_blocking(move || target.sync().map(|_| target))
                .await
                .map_err(|e| io::Error::other(format!("fsync task failed: {e}")))??;
            drop(target);
            self.log.lock().mark_flushed(covered);
            let before = self.flushed.send_replace(covered);
            assert!(covered >= before, "the flushed offset went backwards: {before} -> {covered}");
            if covered < end_offset {
                // The log was truncated or deleted under us; nothing more can be synced.
                return Err(io::Error::other("partition log ended before the requested offset"));
            }
        }
    }

    /// fsync rounds run on this partition so far.
    pub fn fsyncs(&self) -> u64 {
        self.fsyncs.load(Ordering::Relaxed)
    }

    /// Everything below this offset is on disk.
    pub fn flushed_offset(&self) -> i64 {
        *self.flushed.borrow()
    }

    /// Waits until everything below `end_offset` is fsynced by the interval flusher.
    async fn wait_flushed(&self, end_offset: i64) {
        let mut flushed = self.flushed.subscribe();
        let _ = flushed.wait_for(|f| *f >= end_offset).await;
    }

    /// Whether bytes were appended that no fsync covers yet.
    fn dirty(&self) -> bool {
        self.high_watermark() > *self.flushed.borrow()
    }
}

/// A topic: its settings and partitions.
pub struct Topic {
    pub name: Arc<str>,
    pub id: Uuid,
    pub config: TopicConfig,
    /// Overrides given at creation, as `name -> value`, for DescribeConfigs.
    pub overrides: BTreeMap<String, String>,
    pub partitions: Vec<Arc<Partition>>,
    pub internal: bool,
}

/// Why a topic could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateTopicError {
    #[error("topic '{0}' already exists")]
    Exists(String),
    #[error("{0}")]
    InvalidName(String),
    #[error("number of partitions must be between 1 and 10000, got {0}")]
    InvalidPartitions(i32),
    #[error("replication factor {0} is larger than the 1 broker of this cluster")]
    InvalidReplicationFactor(i16),
    #[error(transparent)]
    InvalidConfig(#[from] InvalidConfig),
    #[error("storage error: {0}")]
    Io(#[from] io::Error),
}

/// Why a produce to one partition failed.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error(transparent)]
    Append(#[from] AppendError),
    #[error(transparent)]
    Sequence(#[from] SequenceError),
    #[error("transactional and control batches need a transaction coordinator, which minilog does not have")]
    Transactional,
    #[error("fsync failed: {0}")]
    Sync(io::Error),
}

/// What an append did.
#[derive(Clone, Copy, Debug)]
pub struct Appended {
    pub info: AppendInfo,
    /// The batch was a retry of one already in the log (same producer and sequences):
    /// nothing was written and `info.base_offset` is where the original went.
    pub duplicate: bool,
}

/// The whole broker.
pub struct Broker {
    pub config: BrokerConfig,
    pub node_id: i32,
    /// host and port clients are told to connect to.
    pub advertised_host: String,
    pub advertised_port: i32,
    pub cluster_id: String,
    topics: RwLock<HashMap<Arc<str>, Arc<Topic>>>,
    /// Bumped after every append; long-polling fetches wait for it to move. One counter
    /// for the broker: a real broker keys its waiting fetches by partition (Kafka's
    /// purgatory), which matters with thousands of idle consumers, not here.
    appended: tokio::sync::watch::Sender<u64>,
    pub metrics: Metrics,
    pub producer_ids: ProducerIds,
}

/// Hands out producer ids from blocks whose end is persisted before use.
pub struct ProducerIds {
    path: PathBuf,
    /// (next id to hand out, end of the persisted block).
    state: Mutex<(i64, i64)>,
}

impl ProducerIds {
    /// Ids persisted per block: a crash wastes at most this many.
    const BLOCK: i64 = 1000;

    fn open(dir: &Path) -> io::Result<ProducerIds> {
        let path = dir.join("producer-ids");
        let start = match fs::read_to_string(&path) {
            Ok(text) => text
                .trim()
                .parse::<i64>()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        // Everything below the persisted end may have been handed out before a crash.
        Ok(ProducerIds { path, state: Mutex::new((start, start)) })
    }

    /// The next unused producer id.
    pub fn next_id(&self) -> io::Result<i64> {
        let mut state = self.state.lock();
        if state.0 >= state.1 {
            let end = state.0 + Self::BLOCK;
            write_atomically(&self.path, format!("{end}\n").as_bytes())?;
            state.1 = end;
        }
        let id = state.0;
        state.0 += 1;
        assert!(state.0 <= state.1, "handed out an id beyond the persisted block");
        Ok(id)
    }
}

impl Broker {
    /// Opens (or creates) the broker's directory: reads its identity and topics and
    /// recovers every partition log.
    pub fn open(config: BrokerConfig, advertised: (String, i32), metrics: Metrics) -> io::Result<Broker> {
        fs::create_dir_all(config.dir.join("topics"))?;
        let cluster_id = read_or_create_identity(&config.dir, config.node_id)?;
        let broker = Broker {
            node_id: config.node_id,
            advertised_host: advertised.0,
            advertised_port: advertised.1,
            cluster_id,
            topics: RwLock::new(HashMap::new()),
            appended: tokio::sync::watch::channel(0).0,
            metrics,
            producer_ids: ProducerIds::open(&config.dir)?,
            config,
        };
        broker.remove_deleted_leftovers()?;
        let mut names = Vec::new();
        for entry in fs::read_dir(broker.config.dir.join("topics"))? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) == Some("properties") {
                if let Some(name) = path.file_stem().and_then(|s| s.to_str()) {
                    names.push((name.to_string(), path.clone()));
                }
            }
        }
        names.sort();
        for (name, path) in names {
            let topic = broker.load_topic(&name, &path)?;
            broker.topics.write().insert(topic.name.clone(), Arc::new(topic));
        }
        if broker.topic(OFFSETS_TOPIC).is_none() {
            broker.create_topic_inner(OFFSETS_TOPIC, OFFSETS_TOPIC_PARTITIONS, &[], true).map_err(io::Error::other)?;
        }
        Ok(broker)
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().get(name).cloned()
    }

    pub fn partition(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        let topic = self.topic(topic)?;
        usize::try_from(index).ok().and_then(|i| topic.partitions.get(i).cloned())
    }

    /// All topics, sorted by name.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        let mut all: Vec<_> = self.topics.read().values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Checks a topic name against Kafka's rules.
    pub fn validate_topic_name(name: &str) -> Result<(), CreateTopicError> {
        let invalid = |why: &str| Err(CreateTopicError::InvalidName(format!("topic name '{name}' {why}")));
        if name.is_empty() {
            return invalid("is empty");
        }
        if name == "." || name == ".." {
            return invalid("cannot be '.' or '..'");
        }
        if name.len() > MAX_TOPIC_NAME_LEN {
            return invalid("is longer than 249 characters");
        }
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-') {
            return invalid("contains characters other than ASCII letters, digits, '.', '_' and '-'");
        }
        Ok(())
    }

    /// Creates a topic. `configs` are Kafka property overrides.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &[(String, String)],
        validate_only: bool,
    ) -> Result<Arc<Topic>, CreateTopicError> {
        Self::validate_topic_name(name)?;
        if name == OFFSETS_TOPIC {
            return Err(CreateTopicError::Exists(name.into()));
        }
        let partitions = if partitions == -1 { self.config.num_partitions } else { partitions };
        if !(1..=10_000).contains(&partitions) {
            return Err(CreateTopicError::InvalidPartitions(partitions));
        }
        if replication_factor != -1 && replication_factor != 1 {
            return Err(CreateTopicError::InvalidReplicationFactor(replication_factor));
        }
        let mut config = self.config.topic_defaults();
        for (k, v) in configs {
            config.apply(k, v)?;
        }
        if self.topic(name).is_some() {
            return Err(CreateTopicError::Exists(name.into()));
        }
        if validate_only {
            return Ok(Arc::new(Topic {
                name: name.into(),
                id: Uuid::nil(),
                config,
                overrides: configs.iter().cloned().collect(),
                partitions: Vec::new(),
                internal: false,
            }));
        }
        self.create_topic_inner(name, partitions, configs, false)
    }

    fn create_topic_inner(
        &self,
        name: &str,
        partitions: i32,
        configs: &[(String, String)],
        internal: bool,
    ) -> Result<Arc<Topic>, CreateTopicError> {
        // Hold the write lock across the check and the insert so two creators of the same
        // name cannot both succeed.
        let mut topics = self.topics.write();
        if topics.contains_key(name) {
            return Err(CreateTopicError::Exists(name.into()));
        }
        let id = Uuid::from_u64_pair(fastrand::u64(..), fastrand::u64(1..));
        let mut config = self.config.topic_defaults();
        for (k, v) in configs {
            config.apply(k, v)?;
        }
        let mut props = format!("topic.id={id}\npartitions={partitions}\ninternal={internal}\n");
        for (k, v) in configs {
            props.push_str(&format!("config.{k}={v}\n"));
        }
        let topic = self.build_topic(name, id, partitions, config, configs.iter().cloned().collect(), internal)?;
        write_atomically(&self.topic_file(name), props.as_bytes())?;
        let topic = Arc::new(topic);
        topics.insert(topic.name.clone(), topic.clone());
        tracing::info!(topic = name, partitions, "created topic");
        Ok(topic)
    }

    fn build_topic(
        &self,
        name: &str,
        id: Uuid,
        partitions: i32,
        config: TopicConfig,
        overrides: BTreeMap<String, String>,
        internal: bool,
    ) -> io::Result<Topic> {
        let name: Arc<str> = name.into();
        let mut opened = Vec::with_capacity(partitions as usize);
        for index in 0..partitions {
            let dir = self.partition_dir(&name, index);
            let (log, report) = PartitionLog::open(&dir, config.log_config(), now_ms())?;
            if report.truncated_bytes > 0 || !report.rebuilt_indexes.is_empty() {
                tracing::warn!(
                    topic = &*name,
                    partition = index,
                    truncated_bytes = report.truncated_bytes,
                    rebuilt_indexes = report.rebuilt_indexes.len(),
                    "recovered partition"
                );
            }
            let flushed = log.flushed_offset();
            let producers = rebuild_producer_states(&log)?;
            if !producers.is_empty() {
                tracing::info!(
                    topic = &*name,
                    partition = index,
                    producers = producers.len(),
                    "rebuilt producer state"
                );
            }
            opened.push(Arc::new(Partition {
                topic: name.clone(),
                index,
                leadership: Leadership { leader_id: self.node_id, leader_epoch: 0 },
                log: Mutex::new(log),
                producers: Mutex::new(producers),
                flushed: tokio::sync::watch::channel(flushed).0,
                sync_lock: tokio::sync::Mutex::new(()),
                fsyncs: AtomicU64::new(0),
            }));
        }
        Ok(Topic { name, id, config, overrides, partitions: opened, internal })
    }

    fn load_topic(&self, name: &str, path: &Path) -> io::Result<Topic> {
        let text = fs::read_to_string(path)?;
        let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {why}", path.display()));
        let mut id = None;
        let mut partitions = None;
        let mut internal = false;
        let mut overrides = BTreeMap::new();
        for line in text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')) {
            let (k, v) = line.split_once('=').ok_or_else(|| bad(format!("line '{line}' is not key=value")))?;
            match k {
                "topic.id" => id = Some(Uuid::parse_str(v).map_err(|e| bad(format!("topic.id: {e}")))?),
                "partitions" => partitions = Some(v.parse::<i32>().map_err(|e| bad(format!("partitions: {e}")))?),
                "internal" => internal = v == "true",
                _ => {
                    if let Some(name) = k.strip_prefix("config.") {
                        overrides.insert(name.to_string(), v.to_string());
                    }
                }
            }
        }
        let (Some(id), Some(partitions)) = (id, partitions) else {
            return Err(bad("topic.id or partitions missing".into()));
        };
        let mut config = self.config.topic_defaults();
        for (k, v) in &overrides {
            config.apply(k, v).map_err(|e| bad(e.0))?;
        }
        self.build_topic(name, id, partitions, config, overrides, internal)
    }

    /// Deletes a topic and its data. The properties file goes first: once it is gone the
    /// topic is gone, even if the broker dies before the directories are removed (they
    /// are renamed `*.deleted` and cleared at the next start).
    pub fn delete_topic(&self, name: &str) -> io::Result<bool> {
        let Some(topic) = self.topics.write().remove(name) else {
            return Ok(false);
        };
        assert!(!topic.internal || name != OFFSETS_TOPIC, "the offsets topic is never deleted");
        fs::remove_file(self.topic_file(name))?;
        for partition in &topic.partitions {
            let dir = self.partition_dir(name, partition.index);
            let doomed = dir.with_file_name(format!("{}-{}.{}.deleted", name, partition.index, topic.id.simple()));
            if dir.exists() {
                fs::rename(&dir, &doomed)?;
                fs::remove_dir_all(&doomed)?;
            }
        }
        self.metrics.forget_topic(name);
        tracing::info!(topic = name, "deleted topic");
        Ok(true)
    }

    fn remove_deleted_leftovers(&self) -> io::Result<()> {
        for entry in fs::read_dir(&self.config.dir)? {
            let path = entry?.path();
            if path.is_dir() && path.extension().and_then(|e| e.to_str()) == Some("deleted") {
                tracing::info!(path = %path.display(), "removing the rest of a deleted topic");
                fs::remove_dir_all(&path)?;
            }
        }
        Ok(())
    }

    fn topic_file(&self, name: &str) -> PathBuf {
        self.config.dir.join("topics").join(format!("{name}.properties"))
    }

    fn partition_dir(&self, topic: &str, index: i32) -> PathBuf {
        self.config.dir.join(format!("{topic}-{index}"))
    }

    /// Appends a produce's batches to a partition. `records` is modified in place
    /// (offsets assigned). The data is in the page cache when this returns; call
    /// [`Broker::durable`] before acknowledging.
    ///
    /// Batches from idempotent producers are checked against their sequence numbers
    /// first (see [`crate::producer_state`]): a retry of a batch already in the log is
    /// not written again.
    pub fn append(&self, partition: &Partition, records: &mut [u8]) -> Result<Appended, ProduceError> {
        let sequenced = sequenced_batches(records)?;
        let mut producers = partition.producers.lock();
        if let Some(first) = sequenced.first() {
            let mut scratch = if sequenced.len() > 1 { Some(producers.clone()) } else { None };
            for (i, (batch, offset_delta)) in sequenced.iter().enumerate() {
                let view = scratch.as_ref().unwrap_or(&producers);
                match view.check(batch.producer_id, batch.epoch, batch.first_sequence, batch.last_sequence)? {
                    Verdict::Append => {}
                    // A retry: the whole request is the one already written.
                    Verdict::Duplicate { base_offset } if i == 0 => {
                        let info = AppendInfo {
                            base_offset,
                            last_offset: base_offset + i64::from(*offset_delta),
                            record_count: 0,
                            bytes: 0,
                            max_timestamp: -1,
                        };
                        tracing::debug!(producer_id = first.0.producer_id, base_offset, "duplicate batch not appended");
                        return Ok(Appended { info, duplicate: true });
                    }
                    Verdict::Duplicate { .. } => {
                        return Err(SequenceError::OutOfOrder {
                            producer_id: batch.producer_id,
                            expected: batch.first_sequence,
                            got: batch.first_sequence,
                        }
                        .into())
                    }
                }
                if let Some(scratch) = scratch.as_mut() {
                    scratch.record(*batch);
                }
            }
        }
        let info = partition.log.lock().append(records, now_ms())?;
        if !sequenced.is_empty() {
            // The offsets were just assigned in place; read them back from the headers.
            for header in walk_headers(records) {
                if header.producer_id >= 0 {
                    producers.record(sequenced_from(&header));
                }
            }
        }
        drop(producers);
        self.appended.send_modify(|n| *n += 1);
        Ok(Appended { info, duplicate: false })
    }

    /// Returns once the flush policy allows acknowledging everything below `end_offset`.
    pub async fn durable(&self, partition: &Partition, end_offset: i64) -> Result<(), ProduceError> {
        match self.config.flush {
            FlushPolicy::Os => Ok(()),
            FlushPolicy::Always => partition.sync_through(end_offset).await.map_err(ProduceError::Sync),
            FlushPolicy::Interval(_) => {
                partition.wait_flushed(end_offset).await;
                Ok(())
            }
        }
    }

    /// A receiver that changes after every append, for long polling.
    pub fn watch_appends(&self) -> tokio::sync::watch::Receiver<u64> {
        self.appended.subscribe()
    }

    /// The `--flush interval:N` flusher: fsyncs every dirty partition each interval.
    /// Runs until the broker is dropped.
    pub async fn run_interval_flusher(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for topic in self.topics() {
                for partition in &topic.partitions {
                    if partition.dirty() {
                        let end = partition.high_watermark();
                        if let Err(e) = partition.sync_through(end).await {
                            tracing::error!(topic = &*topic.name, partition = partition.index, error = %e, "fsync failed");
                        }
                    }
                }
            }
        }
    }

    /// Rolls old segments and applies retention on every partition.
    pub fn enforce_retention(&self) {
        let now = now_ms();
        for topic in self.topics() {
            for partition in &topic.partitions {
                match partition.log.lock().enforce_retention(now) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(
                        topic = &*topic.name,
                        partition = partition.index,
                        segments = n,
                        "retention deleted segments"
                    ),
                    Err(e) => tracing::error!(topic = &*topic.name, partition = partition.index, error = %e,
                        "retention failed"),
                }
            }
        }
    }

    /// fsyncs every partition; used at shutdown.
    pub async fn sync_all(&self) {
        for topic in self.topics() {
            for partition in &topic.partitions {
                let end = partition.high_watermark();
                if let Err(e) = partition.sync_through(end).await {
                    tracing::error!(topic = &*topic.name, partition = partition.index, error = %e, "final fsync failed");
                }
            }
        }
    }
}

/// The batch headers in `records`, up to the first that does not parse (the log's own
/// validation rejects such input before anything is written).
fn walk_headers(records: &[u8]) -> impl Iterator<Item = BatchHeader> + '_ {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let header = BatchHeader::parse(records.get(at..)?).ok()?;
        at = at.checked_add(header.batch_len.max(1))?;
        Some(header)
    })
}

fn sequenced_from(header: &BatchHeader) -> SequencedBatch {
    SequencedBatch {
        producer_id: header.producer_id,
        epoch: header.producer_epoch,
        first_sequence: header.base_sequence,
        last_sequence: last_sequence(header.base_sequence, header.last_offset_delta),
        base_offset: header.base_offset,
    }
}

/// The batches of idempotent producers in a produce, with their last offset delta.
/// Transactional and control batches are refused: they need a transaction coordinator.
fn sequenced_batches(records: &[u8]) -> Result<Vec<(SequencedBatch, i32)>, ProduceError> {
    let mut out = Vec::new();
    for header in walk_headers(records) {
        if header.is_transactional() || header.is_control() {
            return Err(ProduceError::Transactional);
        }
        if header.producer_id >= 0 {
            out.push((sequenced_from(&header), header.last_offset_delta));
        }
    }
    Ok(out)
}

/// Reads every batch header of a partition (headers only: one small read per big batch)
/// to rebuild its producers' state.
fn rebuild_producer_states(log: &PartitionLog) -> io::Result<ProducerStates> {
    let mut states = ProducerStates::new();
    log.for_each_batch_header(|header| {
        if header.producer_id >= 0 && !header.is_control() {
            states.record(sequenced_from(header));
        }
    })?;
    Ok(states)
}

/// Reads `meta.properties`, or writes a new one with a fresh cluster id.
fn read_or_create_identity(dir: &Path, node_id: i32) -> io::Result<String> {
    let path = dir.join("meta.properties");
    if let Ok(text) = fs::read_to_string(&path) {
        let mut cluster_id = None;
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("cluster.id=") {
                cluster_id = Some(v.to_string());
            }
            if let Some(v) = line.strip_prefix("node.id=") {
                if v.parse::<i32>().ok() != Some(node_id) {
                    return Err(io::Error::other(format!(
                        "{} belongs to node.id {v}, but this broker is --node-id {node_id}",
                        path.display()
                    )));
                }
            }
        }
        return cluster_id.ok_or_else(|| io::Error::other(format!("{}: no cluster.id", path.display())));
    }
    // Kafka cluster ids are 16 random bytes in URL-safe base64 without padding (22 chars).
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let cluster_id: String = (0..22).map(|_| ALPHABET[fastrand::usize(..64)] as char).collect();
    write_atomically(&path, format!("version=1\ncluster.id={cluster_id}\nnode.id={node_id}\n").as_bytes())?;
    Ok(cluster_id)
}

/// Writes a small file so that a crash leaves either the old or the new contents.
fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = fs::File::create(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}
