//! Redis Streams, driven by redis-rs: `XADD` in pipelines to produce, `XRANGE` in big
//! batches to consume.
//!
//! Produce: pipelines of [`PIPELINE`] `XADD minibench * d <record>` on one multiplexed
//! connection, several in flight at once (up to the shared window), so Redis always
//! has the next pipeline in its socket buffer. A record's latency is its pipeline's:
//! from handing the pipeline to the connection to its last reply. Redis assigns the
//! IDs (`*`), as a real producer would let it.
//!
//! Consume: `XRANGE minibench (<last id> + COUNT` [`READ_BATCH`], one batch after the
//! other. A Redis stream consumer cannot ask for the next batch before it knows the
//! last ID of this one (IDs are timestamps, not dense offsets), so unlike librdkafka
//! it cannot prefetch; that is how Redis streams are read, and it is part of the figure.
//! redis-rs parses each reply into a [`redis::Value`] tree, allocating per entry; that
//! client-side cost is in the figure too.
//!
//! Left out: consumer groups (`XREADGROUP`, `XACK`), trimming (`MAXLEN`), cluster.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};

use super::latency::Histogram;
use super::payload;
use super::phase::{Consumed, Produced, Watch, Workload};

/// The stream every run writes.
pub const KEY: &str = "minibench";

/// The one field of each entry; its value is the record.
const FIELD: &str = "d";

/// `XADD`s per pipeline: enough to amortise a round trip and a syscall, small enough
/// that the shared window holds many pipelines.
pub const PIPELINE: u64 = 1000;

/// Entries per `XRANGE`: about 1 MB of reply for 100-byte records.
pub const READ_BATCH: u64 = 10_000;

/// The deadline for one reply, which a healthy Redis sends in milliseconds.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

async fn connect(port: u16) -> Result<MultiplexedConnection, String> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).map_err(|e| e.to_string())?;
    let config =
        AsyncConnectionConfig::new().set_connection_timeout(Duration::from_secs(5)).set_response_timeout(REPLY_TIMEOUT);
    client.get_multiplexed_async_connection_with_config(&config).await.map_err(|e| format!("connect: {e}"))
}

/// A pipeline on its way: when it was handed over, how many records it holds, and the
/// task that awaits its replies.
struct InFlight {
    sent: Instant,
    records: u64,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

/// Waits for the oldest pipeline and counts its latency.
async fn settle(pipeline: InFlight, latency: &mut Histogram) -> Result<u64, String> {
    pipeline.task.await.map_err(|e| format!("pipeline task: {e}"))??;
    latency.record(pipeline.sent.elapsed().as_nanos() as u64, pipeline.records);
    Ok(pipeline.records)
}

/// Produces the workload with pipelined `XADD`s.
pub async fn produce(port: u16, workload: &Workload, watch: &mut Watch) -> Result<Produced, String> {
    let connection = connect(port).await?;
    let max_in_flight = (workload.window / PIPELINE).max(1) as usize;
    let mut in_flight: VecDeque<InFlight> = VecDeque::with_capacity(max_in_flight);
    let mut latency = Histogram::default();
    let mut record = payload::template(workload.record_bytes);
    let mut acked = 0;
    let started = Instant::now();
    let mut seq = 0;
    while seq < workload.records {
        let records = PIPELINE.min(workload.records - seq);
        let mut pipe = redis::pipe();
        for _ in 0..records {
            payload::stamp(&mut record, seq);
            pipe.cmd("XADD").arg(KEY).arg("*").arg(FIELD).arg(&record[..]);
            seq += 1;
        }
        if in_flight.len() == max_in_flight {
            let oldest = in_flight.pop_front().expect("the window is full");
            acked += settle(oldest, &mut latency).await?;
            watch.check(acked)?;
        }
        let mut connection = connection.clone();
        let sent = Instant::now();
        let task = tokio::spawn(async move {
            let ids: Vec<Value> = pipe.query_async(&mut connection).await.map_err(|e| format!("XADD pipeline: {e}"))?;
            match ids.iter().find(|id| !matches!(id, Value::BulkString(_) | Value::SimpleString(_))) {
                _ if ids.len() as u64 != records => Err(format!("{} replies to {records} XADDs", ids.len())),
                Some(odd) => Err(format!("XADD answered {odd:?}, not an entry ID")),
                None => Ok(()),
            }
        });
        in_flight.push_back(InFlight { sent, records, task });
    }
    while let Some(oldest) = in_flight.pop_front() {
        acked += settle(oldest, &mut latency).await?;
        watch.check(acked)?;
    }
    let elapsed = started.elapsed();
    assert_eq!(acked, workload.records, "every XADD answered");
    Ok(Produced { records: acked, elapsed, latency })
}

/// Reads the stream back from the start and checks every record.
pub async fn consume(port: u16, workload: &Workload, watch: &mut Watch) -> Result<Consumed, String> {
    let mut connection = connect(port).await?;
    let started = Instant::now();
    let mut start = "-".to_string();
    let mut next = 0u64;
    while next < workload.records {
        let reply: Value = redis::cmd("XRANGE")
            .arg(KEY)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(READ_BATCH)
            .query_async(&mut connection)
            .await
            .map_err(|e| format!("XRANGE after {next} records: {e}"))?;
        let Value::Array(entries) = reply else {
            return Err(format!("XRANGE answered {reply:?}, not an array of entries"));
        };
        if entries.is_empty() {
            return Err(format!("the stream ended after {next} of {} records", workload.records));
        }
        let mut last_id = None;
        for entry in &entries {
            let (id, record) = entry_parts(entry).ok_or_else(|| format!("not a stream entry: {entry:?}"))?;
            payload::check(record, workload.record_bytes, next)?;
            next += 1;
            last_id = Some(id);
        }
        // Exclusive start (Redis 6.2+): the entry after the last one read.
        start = format!("({}", String::from_utf8_lossy(last_id.expect("the batch is not empty")));
        watch.check(next)?;
    }
    Ok(Consumed { records: next, elapsed: started.elapsed() })
}

/// The ID and the record of an `XRANGE` entry: `[id, [field, value]]`.
fn entry_parts(entry: &Value) -> Option<(&[u8], &[u8])> {
    let Value::Array(parts) = entry else { return None };
    let [Value::BulkString(id), Value::Array(fields)] = parts.as_slice() else { return None };
    let [Value::BulkString(field), Value::BulkString(value)] = fields.as_slice() else { return None };
    (field == FIELD.as_bytes()).then_some((id.as_slice(), value.as_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_xrange_entry() {
        let entry = Value::Array(vec![
            Value::BulkString(b"1700000000000-0".to_vec()),
            Value::Array(vec![Value::BulkString(b"d".to_vec()), Value::BulkString(b"record".to_vec())]),
        ]);
        assert_eq!(entry_parts(&entry), Some((&b"1700000000000-0"[..], &b"record"[..])));
        let other_field = Value::Array(vec![
            Value::BulkString(b"1-0".to_vec()),
            Value::Array(vec![Value::BulkString(b"x".to_vec()), Value::BulkString(b"record".to_vec())]),
        ]);
        assert_eq!(entry_parts(&other_field), None);
        assert_eq!(entry_parts(&Value::Nil), None);
    }
}
