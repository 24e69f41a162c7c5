//! minilog, driven by librdkafka (through the `rdkafka` crate): a client we did not
//! write, the one most Kafka clients in other languages wrap.
//!
//! Produce: a [`ThreadedProducer`] fed from the harness's thread, one topic with one partition
//! created fresh through CreateTopics, acks=1, batches of up to 1 MB that linger 5 ms.
//! Each record's send time rides along as its delivery opaque, so the delivery
//! callback computes the record's latency without a lookup table; the callback also
//! checks that record `n` was acknowledged at offset `n`.
//!
//! Consume: a [`BaseConsumer`] assigned partition 0 from offset 0 (no group
//! membership: `group.id` is only set because librdkafka's assign requires one, and
//! nothing is committed), with fetches of up to 10 MiB a partition and 50 MiB a
//! request, prefetching. Messages are taken from librdkafka's queue ten thousand at a
//! time ([`BatchQueue`]); the loop checks each record's offset and payload and
//! allocates nothing. librdkafka itself allocates a message per record, and that cost
//! is part of the figure.
//!
//! Left out: more partitions, producers or consumers; idempotence and transactions;
//! compression.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::bindings as rdsys;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

use super::latency::Histogram;
use super::payload;
use super::phase::{Consumed, Produced, Watch, Workload};

/// The topic every run writes: one partition, created fresh on a fresh broker.
pub const TOPIC: &str = "minibench";

/// The producer's settings beyond `bootstrap.servers`, as the report lists them.
pub const PRODUCER_CONFIG: [(&str, &str); 8] = [
    ("acks", "1"),
    ("enable.idempotence", "false"),
    ("compression.type", "none"),
    ("linger.ms", "5"),
    // The batch is also capped by the client's message.max.bytes (1,000,000 by
    // default), which stays under minilog's 1,048,588-byte max batch.
    ("batch.size", "1048576"),
    ("batch.num.messages", "100000"),
    // librdkafka's own queue never fills before the harness's window does.
    ("queue.buffering.max.messages", "2000000"),
    ("queue.buffering.max.kbytes", "2097152"),
];

/// The consumer's settings beyond `bootstrap.servers`, as the report lists them.
pub const CONSUMER_CONFIG: [(&str, &str); 8] = [
    // Required by librdkafka's assign(); no group is joined and nothing is committed.
    ("group.id", "minibench"),
    ("enable.auto.commit", "false"),
    ("enable.auto.offset.store", "false"),
    ("fetch.max.bytes", "52428800"),
    ("max.partition.fetch.bytes", "10485760"),
    // Prefetch up to 256 MiB or 2M records, so the next fetch is in flight while this
    // one is read; past that, librdkafka (2.6 and later) waits fetch.queue.backoff.ms
    // before fetching again, 1000 ms by default, which would idle the consumer.
    ("queued.max.messages.kbytes", "262144"),
    ("queued.min.messages", "2000000"),
    ("fetch.queue.backoff.ms", "5"),
];

/// How long the send loop sleeps while its window (or librdkafka's queue) is full: a
/// fraction of a batch's round trip.
const WINDOW_WAIT: Duration = Duration::from_micros(100);

/// How long the consumer waits for messages before the loop looks at its watch.
const POLL: Duration = Duration::from_millis(100);

/// How many records the send loop sends between two looks at the watch.
const CHECK_EVERY: u64 = 4096;

/// The deadline for CreateTopics, which a healthy broker answers in milliseconds.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);

/// How many of librdkafka's warnings and errors a client keeps, to explain a failure.
const NOTES_KEPT: usize = 8;

/// The librdkafka version the rdkafka crate was built with, e.g. "2.12.1".
pub fn librdkafka_version() -> String {
    rdkafka::util::get_rdkafka_version().1
}

/// Where librdkafka's callbacks land: deliveries, and the warnings that explain a
/// failure. One type serves the admin client, the producer and the consumer.
struct Context {
    /// The clock send times are measured on: a delivery opaque is nanoseconds since it.
    epoch: Instant,
    /// Records acknowledged at their own offset. Atomic because the send loop reads it
    /// for every record while the producer's polling thread advances it.
    acked: AtomicU64,
    /// Records that failed, or were acknowledged at another offset than their number.
    failed: AtomicU64,
    /// Latencies and the first failure, touched only by the polling thread (and read
    /// once at the end): the std Mutex is never contended in the hot loop.
    deliveries: Mutex<Deliveries>,
    /// The last [`NOTES_KEPT`] warnings and errors librdkafka reported. Kept instead of
    /// logged, so they don't tear through the progress bar, and shown when a phase fails.
    notes: Mutex<Vec<String>>,
}

#[derive(Default)]
struct Deliveries {
    latency: Histogram,
    /// The first failed or misplaced delivery, word for word.
    first_failure: Option<String>,
}

impl Context {
    fn new() -> Context {
        Context {
            epoch: Instant::now(),
            acked: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            deliveries: Mutex::new(Deliveries::default()),
            notes: Mutex::new(Vec::new()),
        }
    }

    fn note(&self, line: String) {
        let mut notes = lock(&self.notes);
        if notes.len() == NOTES_KEPT {
            notes.remove(0);
        }
        notes.push(line);
    }

    /// `message`, followed by what librdkafka said lately, if anything.
    fn explain(&self, message: String) -> String {
        let notes = lock(&self.notes);
        if notes.is_empty() {
            message
        } else {
            format!("{message}; librdkafka said: {}", notes.join(" / "))
        }
    }

    fn nanos_since_epoch(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Records whose delivery report arrived, acknowledged or not.
    fn settled(&self) -> u64 {
        self.acked.load(Ordering::Acquire) + self.failed.load(Ordering::Acquire)
    }

    /// `Err` describing the failed deliveries, if there were any.
    fn failures(&self) -> Result<(), String> {
        match self.failed.load(Ordering::Acquire) {
            0 => Ok(()),
            failed => {
                let first = lock(&self.deliveries).first_failure.clone().unwrap_or_default();
                Err(self.explain(format!("{failed} record(s) not acknowledged as sent; the first: {first}")))
            }
        }
    }
}

/// Locks `mutex`, also after a panic elsewhere (the data is counters, always valid).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        if (level as i32) <= RDKafkaLogLevel::Warning as i32 {
            self.note(format!("{facility}: {message}"));
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.note(format!("{error}: {reason}"));
    }
}

impl ConsumerContext for Context {}

impl ProducerContext for Context {
    /// The record's send time, in nanoseconds since [`Context::epoch`].
    type DeliveryOpaque = usize;

    /// Runs on the producer's polling thread, as soon as a produce response arrives.
    fn delivery(&self, result: &DeliveryResult<'_>, sent_at: usize) {
        let now = self.nanos_since_epoch();
        let failure = match result {
            Ok(message) => {
                let seq = message.payload().and_then(payload::sequence);
                if seq == Some(message.offset() as u64) {
                    lock(&self.deliveries).latency.record(now.saturating_sub(sent_at as u64), 1);
                    self.acked.fetch_add(1, Ordering::Release);
                    return;
                }
                format!("record {seq:?} was acknowledged at offset {}, not at its own number", message.offset())
            }
            Err((error, _)) => format!("delivery failed: {error}"),
        };
        lock(&self.deliveries).first_failure.get_or_insert(failure);
        self.failed.fetch_add(1, Ordering::Release);
    }
}

fn client_config(port: u16, settings: &[(&str, &str)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", format!("127.0.0.1:{port}")).set("client.id", "minibench");
    for (key, value) in settings {
        config.set(*key, *value);
    }
    config.set_log_level(RDKafkaLogLevel::Warning);
    config
}

/// Creates [`TOPIC`] with one partition through CreateTopics.
async fn create_topic(port: u16) -> Result<(), String> {
    let context = Context::new();
    let admin: AdminClient<Context> =
        client_config(port, &[]).create_with_context(context).map_err(|e| format!("admin client: {e}"))?;
    let topic = NewTopic::new(TOPIC, 1, TopicReplication::Fixed(1));
    let options = AdminOptions::new().request_timeout(Some(ADMIN_TIMEOUT)).operation_timeout(Some(ADMIN_TIMEOUT));
    let results = admin.create_topics([&topic], &options).await.map_err(|e| format!("CreateTopics: {e}"))?;
    for result in results {
        if let Err((name, code)) = result {
            return Err(format!("CreateTopics refused {name}: {code}"));
        }
    }
    Ok(())
}

/// Produces the workload into a fresh topic.
///
/// librdkafka's threads do the I/O and a [`ThreadedProducer`]'s thread runs the
/// delivery callbacks as the acknowledgements arrive, so a latency is taken when its
/// acknowledgement lands, not when the send loop gets round to polling. The send loop
/// itself is synchronous; the function is `async` only to await CreateTopics, and
/// blocking the harness's single-threaded runtime is fine with nothing else on it.
pub async fn produce(port: u16, workload: &Workload, watch: &mut Watch) -> Result<Produced, String> {
    create_topic(port).await?;
    let producer: ThreadedProducer<Context> = client_config(port, &PRODUCER_CONFIG)
        .create_with_context(Context::new())
        .map_err(|e| format!("producer: {e}"))?;
    let context = producer.context().clone();
    let mut record = payload::template(workload.record_bytes);
    let started = Instant::now();
    for seq in 0..workload.records {
        payload::stamp(&mut record, seq);
        // Keep at most `window` records unacknowledged.
        while seq - context.settled() >= workload.window {
            std::thread::sleep(WINDOW_WAIT);
            watch.check(context.acked.load(Ordering::Relaxed)).map_err(|e| context.explain(e))?;
        }
        loop {
            let sent_at = context.nanos_since_epoch() as usize;
            let message = BaseRecord::<(), [u8], usize>::with_opaque_to(TOPIC, sent_at).partition(0).payload(&record);
            match producer.send(message) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => std::thread::sleep(WINDOW_WAIT),
                Err((e, _)) => return Err(context.explain(format!("send of record {seq} failed: {e}"))),
            }
        }
        if seq % CHECK_EVERY == 0 {
            context.failures()?;
            watch.check(context.acked.load(Ordering::Relaxed)).map_err(|e| context.explain(e))?;
        }
    }
    // The last batch lingers up to linger.ms, then its acknowledgement arrives.
    while context.settled() < workload.records {
        std::thread::sleep(WINDOW_WAIT);
        watch.check(context.acked.load(Ordering::Relaxed)).map_err(|e| context.explain(e))?;
    }
    let elapsed = started.elapsed();
    context.failures()?;
    let latency = std::mem::take(&mut lock(&context.deliveries).latency);
    assert_eq!(latency.count(), workload.records, "one latency per acknowledged record");
    Ok(Produced { records: workload.records, elapsed, latency })
}

/// Messages taken from librdkafka's queue per call: a tenth of a fetch at 100 bytes.
const CONSUME_BATCH: usize = 10_000;

/// A consumer's queue, read with librdkafka's batch call, `rd_kafka_consume_batch_queue`
/// (what confluent-kafka-python's `consume(num_messages)` uses). The rdkafka crate's
/// safe API only polls one message at a time, wrapping each in an event and an `Arc`;
/// at two million records a second that wrapper, not the broker, sets the pace.
struct BatchQueue<'a> {
    queue: *mut rdsys::rd_kafka_queue_t,
    /// Room for one batch of message pointers, reused.
    slots: Vec<*mut rdsys::rd_kafka_message_t>,
    /// The queue belongs to this consumer and must not outlive it.
    _consumer: std::marker::PhantomData<&'a BaseConsumer<Context>>,
}

impl<'a> BatchQueue<'a> {
    fn of(consumer: &'a BaseConsumer<Context>) -> Result<BatchQueue<'a>, String> {
        // SAFETY: the client pointer is valid for as long as `consumer`, which this value
        // borrows; the returned queue is a new reference, released in `drop`.
        let queue = unsafe { rdsys::rd_kafka_queue_get_consumer(consumer.client().native_ptr()) };
        if queue.is_null() {
            return Err("librdkafka has no consumer queue (is group.id set?)".to_string());
        }
        Ok(BatchQueue { queue, slots: vec![std::ptr::null_mut(); CONSUME_BATCH], _consumer: std::marker::PhantomData })
    }

    /// Takes up to `max` messages, waiting at most `timeout` for them, hands each to
    /// `visit` (payload, offset) and returns how many there were. Every message is
    /// released, whatever `visit` says. librdkafka waits until it has `max` messages or
    /// the timeout passes, so `max` must not exceed what is left to read, or the last
    /// call would idle until its timeout.
    fn drain(
        &mut self,
        max: usize,
        timeout: Duration,
        mut visit: impl FnMut(&[u8], i64) -> Result<(), String>,
    ) -> Result<usize, String> {
        let timeout_ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        let room = max.min(self.slots.len());
        // SAFETY: `slots` has room for `room` pointers; librdkafka fills the first `n`
        // of them with messages we now own.
        let n = unsafe { rdsys::rd_kafka_consume_batch_queue(self.queue, timeout_ms, self.slots.as_mut_ptr(), room) };
        if n < 0 {
            return Err("rd_kafka_consume_batch_queue failed".to_string());
        }
        assert!(n as usize <= room, "librdkafka returned {n} messages for {room} slots");
        let mut outcome = Ok(n as usize);
        for &message in &self.slots[..n as usize] {
            if outcome.is_ok() {
                // SAFETY: a message librdkafka handed us, alive until destroyed below; its
                // payload is `len` bytes (or null when empty).
                let m = unsafe { &*message };
                outcome = if m.err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                    Err(format!("consumer error: {}", RDKafkaErrorCode::from(m.err)))
                } else {
                    let payload: &[u8] = if m.payload.is_null() {
                        &[]
                    } else {
                        unsafe { std::slice::from_raw_parts(m.payload as *const u8, m.len) }
                    };
                    visit(payload, m.offset).map(|()| n as usize)
                };
            }
            // SAFETY: each message is released exactly once, and not used afterwards.
            unsafe { rdsys::rd_kafka_message_destroy(message) };
        }
        outcome
    }
}

impl Drop for BatchQueue<'_> {
    fn drop(&mut self) {
        // SAFETY: the reference taken in `of`, released once.
        unsafe { rdsys::rd_kafka_queue_destroy(self.queue) };
    }
}

/// Reads the topic back from offset 0 and checks every record.
pub async fn consume(port: u16, workload: &Workload, watch: &mut Watch) -> Result<Consumed, String> {
    let consumer: BaseConsumer<Context> = client_config(port, &CONSUMER_CONFIG)
        .create_with_context(Context::new())
        .map_err(|e| format!("consumer: {e}"))?;
    let explain = |message: String| consumer.context().explain(message);
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(TOPIC, 0, Offset::Offset(0)).map_err(|e| format!("assignment: {e}"))?;
    let mut queue = BatchQueue::of(&consumer)?;
    let started = Instant::now();
    consumer.assign(&assignment).map_err(|e| explain(format!("assign: {e}")))?;
    let mut next = 0u64;
    while next < workload.records {
        let left = usize::try_from(workload.records - next).unwrap_or(usize::MAX);
        queue
            .drain(left, POLL, |record, offset| {
                if offset != next as i64 {
                    return Err(format!("expected offset {next} next, got offset {offset}"));
                }
                payload::check(record, workload.record_bytes, next)?;
                next += 1;
                Ok(())
            })
            .map_err(|e| explain(format!("after {next} records: {e}")))?;
        watch.check(next).map_err(explain)?;
    }
    Ok(Consumed { records: next, elapsed: started.elapsed() })
}
