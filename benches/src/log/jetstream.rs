//! NATS JetStream, driven by async-nats: asynchronous publishes with their acks
//! awaited in a bounded window to produce, a pull consumer fetching big batches to
//! consume.
//!
//! The stream is file-backed, one replica, one subject, created fresh on a fresh
//! server. Produce: `publish` returns as soon as the message is in the client's write
//! buffer, handing back a future for its PubAck; up to the shared window of them are
//! outstanding, awaited oldest first, and each PubAck's stream sequence is checked
//! against the record's number. A record's latency runs from the `publish` call to
//! its PubAck.
//!
//! Consume: an ephemeral pull consumer from the first sequence, no acks (like the
//! Kafka consumer, which commits nothing), read through async-nats' `messages()`
//! stream, which keeps pull requests of [`PULL_BATCH`] messages in flight ahead of the
//! reader, the way librdkafka prefetches.
//!
//! Left out: replicas, deduplication (`Nats-Msg-Id`), push and ordered consumers.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::context::{ContextBuilder, PublishAckFuture};
use async_nats::jetstream::stream::{self, StorageType};
use bytes::BytesMut;
use futures_util::StreamExt;

use super::latency::Histogram;
use super::payload;
use super::phase::{Consumed, Produced, Watch, Workload};

/// The stream every run writes, and its one subject.
pub const STREAM: &str = "minibench";

/// Messages per pull request; the client keeps the next request in flight.
pub const PULL_BATCH: usize = 10_000;

/// Bytes per pull request: enough for [`PULL_BATCH`] 1 KiB records.
const PULL_BYTES: usize = 16 << 20;

/// The deadline for one API request or PubAck, which a healthy server sends in
/// milliseconds.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the consumer waits for a message before the loop looks at its watch.
const POLL: Duration = Duration::from_millis(100);

/// How many records the consumer reads between two looks at the watch.
const CHECK_EVERY: u64 = 4096;

/// Records are carved out of buffers this big, so that handing each one to the client
/// as its own `Bytes` costs no allocation per record.
const CHUNK: usize = 1 << 20;

async fn connect(port: u16, window: u64) -> Result<async_nats::jetstream::Context, String> {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(REPLY_TIMEOUT))
        .connect(format!("127.0.0.1:{port}"))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    // The client's own cap on outstanding acks sits above the harness's window, which
    // is the one that binds.
    Ok(ContextBuilder::new()
        .timeout(REPLY_TIMEOUT)
        .max_ack_inflight(window as usize + 1)
        .backpressure_on_inflight(true)
        .build(client))
}

/// A publish whose PubAck has not been seen yet: its ack future, when it was sent, and
/// the record's number.
type Pending = (PublishAckFuture, Instant, u64);

/// Waits for the oldest outstanding PubAck, checks its sequence and counts its latency.
async fn settle_oldest(
    pending: &mut VecDeque<Pending>,
    latency: &mut Histogram,
    watch: &mut Watch,
) -> Result<(), String> {
    let Some((ack, sent, seq)) = pending.pop_front() else { return Ok(()) };
    let ack = ack.await.map_err(|e| format!("PubAck of record {seq}: {e}"))?;
    latency.record(sent.elapsed().as_nanos() as u64, 1);
    // Stream sequences start at 1.
    if ack.sequence != seq + 1 {
        return Err(format!("record {seq} was stored at stream sequence {}, not {}", ack.sequence, seq + 1));
    }
    if latency.count().is_multiple_of(CHECK_EVERY) {
        watch.check(latency.count())?;
    }
    Ok(())
}

/// Creates the stream and produces the workload into it.
pub async fn produce(port: u16, workload: &Workload, watch: &mut Watch) -> Result<Produced, String> {
    let js = connect(port, workload.window).await?;
    js.create_stream(stream::Config {
        name: STREAM.to_string(),
        subjects: vec![STREAM.to_string()],
        storage: StorageType::File,
        num_replicas: 1,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("creating the stream: {e}"))?;

    let mut pending: VecDeque<Pending> = VecDeque::with_capacity(workload.window as usize);
    let mut latency = Histogram::default();
    let mut record = payload::template(workload.record_bytes);
    let mut chunk = BytesMut::with_capacity(CHUNK);
    let started = Instant::now();
    for seq in 0..workload.records {
        if pending.len() as u64 >= workload.window {
            settle_oldest(&mut pending, &mut latency, watch).await?;
        }
        payload::stamp(&mut record, seq);
        if chunk.capacity() < record.len() {
            chunk = BytesMut::with_capacity(CHUNK);
        }
        chunk.extend_from_slice(&record);
        let message = chunk.split().freeze();
        let sent = Instant::now();
        let ack = js.publish(STREAM, message).await.map_err(|e| format!("publish of record {seq}: {e}"))?;
        pending.push_back((ack, sent, seq));
    }
    while !pending.is_empty() {
        settle_oldest(&mut pending, &mut latency, watch).await?;
    }
    let elapsed = started.elapsed();
    assert_eq!(latency.count(), workload.records, "one PubAck per record");
    Ok(Produced { records: latency.count(), elapsed, latency })
}

/// Reads the stream back from its first message and checks every record.
pub async fn consume(port: u16, workload: &Workload, watch: &mut Watch) -> Result<Consumed, String> {
    let js = connect(port, workload.window).await?;
    let started = Instant::now();
    let stream = js.get_stream(STREAM).await.map_err(|e| format!("looking up the stream: {e}"))?;
    let consumer = stream
        .create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::None,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("creating the pull consumer: {e}"))?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(PULL_BATCH)
        .max_bytes_per_batch(PULL_BYTES)
        .messages()
        .await
        .map_err(|e| format!("starting to pull: {e}"))?;
    let mut next = 0u64;
    while next < workload.records {
        match tokio::time::timeout(POLL, messages.next()).await {
            Ok(Some(Ok(message))) => {
                payload::check(&message.payload, workload.record_bytes, next)?;
                next += 1;
                if next.is_multiple_of(CHECK_EVERY) {
                    watch.check(next)?;
                }
            }
            Ok(Some(Err(e))) => return Err(format!("pulling after {next} records: {e}")),
            Ok(None) => return Err(format!("the consumer stopped after {next} of {} records", workload.records)),
            Err(_) => watch.check(next)?,
        }
    }
    Ok(Consumed { records: next, elapsed: started.elapsed() })
}
