//! `mini log`: quick use of a Kafka broker (minilog, or a real Kafka) from the shell.
//!
//! Every subcommand goes through librdkafka (the `rdkafka` crate), the client most
//! Kafka tools are built on, so what works here works with any Kafka client. The kcat
//! equivalent of each command is in its help text and in `docs/minilog.md`.
//!
//! ```text
//! mini log topics                           kcat -b 127.0.0.1:9092 -L
//! mini log topics create orders -p 3        (kcat cannot create topics)
//! mini log produce orders hello world       echo hello | kcat -b ... -P -t orders
//! mini log consume orders --from-beginning  kcat -b ... -C -t orders -o beginning
//! mini log groups                           kcat -b ... -L (groups: kafka-consumer-groups.sh)
//! ```

use std::io::BufRead;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

/// librdkafka reports the end of a partition as an error event too; with `--exit` it
/// is how we know to stop, not something to log. Everything else is printed.
struct QuietEof;

impl ClientContext for QuietEof {
    fn error(&self, error: KafkaError, reason: &str) {
        if !matches!(error, KafkaError::PartitionEOF(_)) {
            eprintln!("mini log: {error}: {reason}");
        }
    }
}

impl ConsumerContext for QuietEof {}

/// How long a metadata or admin request may take before we give up.
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(clap::Args, Debug)]
pub struct LogArgs {
    /// Broker to bootstrap from.
    #[arg(long, short = 'b', default_value = "127.0.0.1:9092", global = true)]
    pub bootstrap: String,
    #[command(subcommand)]
    pub command: LogCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum LogCommand {
    /// List topics with their partitions and offsets (kcat -L), or create/delete one.
    Topics {
        #[command(subcommand)]
        action: Option<TopicAction>,
    },
    /// Produce values given as arguments, or one per stdin line (echo v | kcat -P -t TOPIC).
    Produce {
        topic: String,
        /// Values; without any, each line of stdin is one record.
        values: Vec<String>,
        /// Record key (kcat -k / -K).
        #[arg(long, short = 'k')]
        key: Option<String>,
        /// Target partition (kcat -p); by default the client's partitioner picks.
        #[arg(long, short = 'p')]
        partition: Option<i32>,
        /// Header name=value, repeatable (kcat -H).
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
    },
    /// Print records as `partition offset key value` (kcat -C -t TOPIC -f '%p %o %k %s\n').
    Consume {
        topic: String,
        /// Start at the first stored record (kcat -o beginning); the default is the end.
        #[arg(long, conflicts_with = "offset")]
        from_beginning: bool,
        /// Start at this offset on every partition (kcat -o N).
        #[arg(long)]
        offset: Option<i64>,
        /// Consume as a member of this group and commit (kcat -G GROUP TOPIC).
        #[arg(long, short = 'G')]
        group: Option<String>,
        /// Exit at the end of every partition instead of waiting (kcat -e).
        #[arg(long, short = 'e')]
        exit: bool,
        /// Stop after this many records (kcat -c N).
        #[arg(long, short = 'c')]
        count: Option<u64>,
    },
    /// List consumer groups with their state and members, and each group's lag.
    Groups {
        /// Only this group.
        group: Option<String>,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum TopicAction {
    /// Create a topic.
    Create {
        name: String,
        #[arg(long, short = 'p', default_value_t = 1)]
        partitions: i32,
        /// Topic config name=value, repeatable (retention.ms=60000, segment.bytes=1048576, ...).
        #[arg(long = "config", short = 'c')]
        configs: Vec<String>,
    },
    /// Delete a topic and its data.
    Delete { name: String },
}

/// Runs `mini log`; returns the exit code.
pub fn run(args: LogArgs) -> i32 {
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mini log: can't start the runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(dispatch(args)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("mini log: {e}");
            1
        }
    }
}

async fn dispatch(args: LogArgs) -> Result<(), String> {
    let bootstrap = args.bootstrap;
    match args.command {
        LogCommand::Topics { action: None } => list_topics(&bootstrap),
        LogCommand::Topics { action: Some(TopicAction::Create { name, partitions, configs }) } => {
            create_topic(&bootstrap, &name, partitions, &configs).await
        }
        LogCommand::Topics { action: Some(TopicAction::Delete { name }) } => delete_topic(&bootstrap, &name).await,
        LogCommand::Produce { topic, values, key, partition, headers } => {
            produce(&bootstrap, &topic, values, key, partition, &headers).await
        }
        LogCommand::Consume { topic, from_beginning, offset, group, exit, count } => {
            let start = match (offset, from_beginning) {
                (Some(n), _) => Offset::Offset(n),
                (None, true) => Offset::Beginning,
                (None, false) => Offset::End,
            };
            tokio::task::spawn_blocking(move || consume(&bootstrap, &topic, start, group, exit, count))
                .await
                .map_err(|e| e.to_string())?
        }
        LogCommand::Groups { group } => list_groups(&bootstrap, group.as_deref()),
    }
}

fn client_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap).set("client.id", "mini-log");
    config
}

fn error(what: &str, e: KafkaError) -> String {
    format!("{what}: {e}")
}

fn metadata_consumer(bootstrap: &str) -> Result<BaseConsumer, String> {
    client_config(bootstrap).create().map_err(|e| error("can't create a client", e))
}

fn list_topics(bootstrap: &str) -> Result<(), String> {
    let consumer = metadata_consumer(bootstrap)?;
    let metadata = consumer.fetch_metadata(None, TIMEOUT).map_err(|e| error("metadata request failed", e))?;
    for broker in metadata.brokers() {
        println!("broker {} at {}:{}", broker.id(), broker.host(), broker.port());
    }
    let mut topics: Vec<_> = metadata.topics().iter().collect();
    topics.sort_by_key(|t| t.name());
    for topic in topics {
        println!("topic \"{}\" with {} partitions:", topic.name(), topic.partitions().len());
        for p in topic.partitions() {
            let (low, high) = consumer
                .fetch_watermarks(topic.name(), p.id(), TIMEOUT)
                .map_err(|e| error("watermark request failed", e))?;
            println!("  partition {}, leader {}, offsets {low}..{high} ({} records)", p.id(), p.leader(), high - low);
        }
    }
    Ok(())
}

fn admin(bootstrap: &str) -> Result<AdminClient<DefaultClientContext>, String> {
    client_config(bootstrap).create().map_err(|e| error("can't create an admin client", e))
}

async fn create_topic(bootstrap: &str, name: &str, partitions: i32, configs: &[String]) -> Result<(), String> {
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for config in configs {
        let (k, v) = config.split_once('=').ok_or_else(|| format!("--config {config}: expected name=value"))?;
        topic = topic.set(k, v);
    }
    let results = admin(bootstrap)?
        .create_topics(&[topic], &AdminOptions::new().operation_timeout(Some(TIMEOUT)))
        .await
        .map_err(|e| error("CreateTopics failed", e))?;
    for result in results {
        result.map_err(|(topic, code)| format!("can't create {topic}: {code}"))?;
    }
    println!("created {name} with {partitions} partitions");
    Ok(())
}

async fn delete_topic(bootstrap: &str, name: &str) -> Result<(), String> {
    let results = admin(bootstrap)?
        .delete_topics(&[name], &AdminOptions::new().operation_timeout(Some(TIMEOUT)))
        .await
        .map_err(|e| error("DeleteTopics failed", e))?;
    for result in results {
        result.map_err(|(topic, code)| format!("can't delete {topic}: {code}"))?;
    }
    println!("deleted {name}");
    Ok(())
}

async fn produce(
    bootstrap: &str,
    topic: &str,
    values: Vec<String>,
    key: Option<String>,
    partition: Option<i32>,
    headers: &[String],
) -> Result<(), String> {
    let producer: FutureProducer =
        client_config(bootstrap).set("linger.ms", "5").create().map_err(|e| error("can't create a producer", e))?;
    let mut owned_headers = OwnedHeaders::new();
    for header in headers {
        let (name, value) = header.split_once('=').ok_or_else(|| format!("--header {header}: expected name=value"))?;
        owned_headers = owned_headers.insert(Header { key: name, value: Some(value) });
    }
    let values: Vec<String> = if values.is_empty() {
        std::io::stdin().lock().lines().collect::<Result<_, _>>().map_err(|e| format!("reading stdin: {e}"))?
    } else {
        values
    };
    let mut pending = Vec::with_capacity(values.len());
    for value in &values {
        let mut record = FutureRecord::to(topic).payload(value.as_str()).headers(owned_headers.clone());
        if let Some(k) = &key {
            record = record.key(k.as_str());
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        match producer.send_result(record) {
            Ok(delivery) => pending.push(delivery),
            Err((e, _)) => return Err(error("can't queue a record", e)),
        }
    }
    for delivery in pending {
        match delivery.await {
            Ok(Ok(d)) => println!("delivered to {topic} partition {} offset {}", d.partition, d.offset),
            Ok(Err((e, _))) => return Err(error("delivery failed", e)),
            Err(_) => return Err("the producer went away before delivering".into()),
        }
    }
    Ok(())
}

fn consume(
    bootstrap: &str,
    topic: &str,
    start: Offset,
    group: Option<String>,
    exit: bool,
    count: Option<u64>,
) -> Result<(), String> {
    let mut config = client_config(bootstrap);
    config.set("enable.partition.eof", if exit { "true" } else { "false" });
    let reset = if matches!(start, Offset::Beginning) { "earliest" } else { "latest" };
    config.set("auto.offset.reset", reset);
    let consumer: BaseConsumer<QuietEof> = match &group {
        Some(g) => config.set("group.id", g).create_with_context(QuietEof),
        None => {
            config.set("group.id", "mini-log-unused").set("enable.auto.commit", "false").create_with_context(QuietEof)
        }
    }
    .map_err(|e| error("can't create a consumer", e))?;
    let partitions = {
        let metadata =
            consumer.fetch_metadata(Some(topic), TIMEOUT).map_err(|e| error("metadata request failed", e))?;
        let t = metadata.topics().first().ok_or_else(|| format!("no metadata for {topic}"))?;
        if let Some(e) = t.error() {
            return Err(format!("topic {topic}: {e:?}"));
        }
        t.partitions().len()
    };
    match group {
        Some(_) => consumer.subscribe(&[topic]).map_err(|e| error("subscribe failed", e))?,
        None => {
            let mut assignment = TopicPartitionList::new();
            for p in 0..partitions as i32 {
                assignment.add_partition_offset(topic, p, start).map_err(|e| error("bad offset", e))?;
            }
            consumer.assign(&assignment).map_err(|e| error("assign failed", e))?;
        }
    }
    let mut at_end = std::collections::HashSet::new();
    let mut seen = 0u64;
    loop {
        if count.is_some_and(|c| seen >= c) {
            return Ok(());
        }
        match consumer.poll(Duration::from_millis(500)) {
            None => {}
            Some(Ok(message)) => {
                seen += 1;
                at_end.remove(&message.partition());
                let key = message.key().map(String::from_utf8_lossy).unwrap_or_default();
                let value = message.payload().map(String::from_utf8_lossy).unwrap_or_default();
                let mut line = format!("{} {} {key} {value}", message.partition(), message.offset());
                if let Some(headers) = message.headers() {
                    for h in headers.iter() {
                        let v = h.value.map(String::from_utf8_lossy).unwrap_or_default();
                        line.push_str(&format!(" {}={v}", h.key));
                    }
                }
                println!("{line}");
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
                if exit && at_end.len() >= partitions {
                    return Ok(());
                }
            }
            Some(Err(e)) => return Err(error("consume failed", e)),
        }
    }
}

fn list_groups(bootstrap: &str, only: Option<&str>) -> Result<(), String> {
    let consumer = metadata_consumer(bootstrap)?;
    let groups = consumer.fetch_group_list(only, TIMEOUT).map_err(|e| error("ListGroups failed", e))?;
    let metadata = consumer.fetch_metadata(None, TIMEOUT).map_err(|e| error("metadata request failed", e))?;
    for group in groups.groups() {
        println!(
            "group \"{}\" state {} protocol {} members {}",
            group.name(),
            group.state(),
            group.protocol(),
            group.members().len()
        );
        for m in group.members() {
            println!("  member {} client {} host {}", m.id(), m.client_id(), m.client_host());
        }
        // Lag: committed offset vs log end, for every partition the group has committed.
        let reader: BaseConsumer = client_config(bootstrap)
            .set("group.id", group.name())
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|e| error("can't create a consumer", e))?;
        let mut all = TopicPartitionList::new();
        for topic in metadata.topics().iter().filter(|t| !t.name().starts_with("__")) {
            for p in topic.partitions() {
                all.add_partition(topic.name(), p.id());
            }
        }
        let committed = reader.committed_offsets(all, TIMEOUT).map_err(|e| error("OffsetFetch failed", e))?;
        for element in committed.elements() {
            if let Offset::Offset(at) = element.offset() {
                let (_, high) = reader
                    .fetch_watermarks(element.topic(), element.partition(), TIMEOUT)
                    .map_err(|e| error("watermark request failed", e))?;
                println!("  {}[{}] committed {at} end {high} lag {}", element.topic(), element.partition(), high - at);
            }
        }
    }
    Ok(())
}
