//! Fetch (key 1): read record batches from partitions, long polling for new ones.
//!
//! The fetch path: for each partition, find the segment and the batch that holds the
//! fetch offset (offset index, then a scan of batch headers), and return whole batches
//! straight from the segment file, never decoded or re-encoded. If fewer than
//! `min_bytes` are ready, the request waits, up to `max_wait_ms`, for appends, then
//! reads again: that is long polling, and it is why an idle consumer costs no CPU.
//!
//! Limits, as in Kafka (KIP-74): `partition_max_bytes` per partition and `max_bytes` for
//! the response, except that the first batch returned is always whole even if it is
//! larger, so a consumer can never get stuck behind a big batch.
//!
//! With one broker and no transactions, the high watermark and the last stable offset
//! are both the log end offset.

use std::time::Duration;

use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};
use kafka_protocol::ResponseError;
use tokio::time::Instant;

use super::code;
use crate::protocol::RequestContext;
use crate::server::Server;
use crate::storage::ReadError;

/// Waits longer than this are cut short, so a client's typo cannot park a request for
/// days; Kafka clients use 500 ms by default.
const MAX_WAIT: Duration = Duration::from_secs(30);

pub async fn handle(server: &Server, _ctx: &RequestContext, request: FetchRequest) -> FetchResponse {
    let wait = Duration::from_millis(request.max_wait_ms.max(0) as u64).min(MAX_WAIT);
    let deadline = Instant::now() + wait;
    let min_bytes = request.min_bytes.max(0) as usize;
    let mut appends = server.broker.watch_appends();
    loop {
        appends.borrow_and_update();
        let (response, bytes, errors) = read_once(server, &request);
        if bytes >= min_bytes || errors || Instant::now() >= deadline {
            count_out(server, &response);
            return response;
        }
        // Nothing (or not enough) yet: wait for an append anywhere, or the deadline.
        match tokio::time::timeout_at(deadline, appends.changed()).await {
            Ok(Ok(())) => continue,
            Ok(Err(_)) | Err(_) => {
                let (response, _, _) = read_once(server, &request);
                count_out(server, &response);
                return response;
            }
        }
    }
}

/// One pass over the requested partitions: the response, the bytes it carries, and
/// whether any partition had an error (which answers immediately, as in Kafka).
fn read_once(server: &Server, request: &FetchRequest) -> (FetchResponse, usize, bool) {
    let mut budget = request.max_bytes.max(0) as usize;
    let mut total = 0usize;
    let mut errors = false;
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in &request.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in &topic.partitions {
            let out = PartitionData::default()
                .with_partition_index(p.partition)
                .with_aborted_transactions(Some(Vec::new()))
                .with_preferred_read_replica(BrokerId(-1));
            let Some(partition) = server.broker.partition(&topic.topic, p.partition) else {
                errors = true;
                partitions.push(
                    out.with_error_code(code(ResponseError::UnknownTopicOrPartition))
                        .with_high_watermark(-1)
                        .with_last_stable_offset(-1)
                        .with_log_start_offset(-1),
                );
                continue;
            };
            let limit = (p.partition_max_bytes.max(0) as usize).min(budget);
            let log = partition.log.lock();
            let (start, end) = (log.log_start_offset(), log.log_end_offset());
            // At least one whole batch for the first partition with data, even when the
            // budget is spent: never let a big batch stall a consumer.
            let max = if total == 0 { limit.max(1) } else { limit };
            let read = if max == 0 && p.fetch_offset >= start && p.fetch_offset <= end {
                Ok(bytes::Bytes::new())
            } else {
                log.read(p.fetch_offset, max)
            };
            drop(log);
            let out = out.with_high_watermark(end).with_last_stable_offset(end).with_log_start_offset(start);
            match read {
                Ok(records) => {
                    total += records.len();
                    budget = budget.saturating_sub(records.len());
                    partitions.push(out.with_records(Some(records)));
                }
                Err(ReadError::OffsetOutOfRange { .. }) => {
                    errors = true;
                    partitions.push(out.with_error_code(code(ResponseError::OffsetOutOfRange)));
                }
                Err(ReadError::Io(e)) => {
                    errors = true;
                    tracing::error!(topic = %&*topic.topic, partition = p.partition, error = %e, "read failed");
                    partitions.push(out.with_error_code(code(ResponseError::KafkaStorageError)));
                }
            }
        }
        topics.push(FetchableTopicResponse::default().with_topic(topic.topic.clone()).with_partitions(partitions));
    }
    (FetchResponse::default().with_responses(topics), total, errors)
}

fn count_out(server: &Server, response: &FetchResponse) {
    for topic in &response.responses {
        for p in &topic.partitions {
            if let Some(records) = &p.records {
                if !records.is_empty() {
                    server.broker.metrics.record_out(&topic.topic, records.len() as u64, count_records(records));
                }
            }
        }
    }
}

/// Records in a run of whole batches, from each batch header's record count.
fn count_records(mut bytes: &[u8]) -> u64 {
    let mut records = 0u64;
    while bytes.len() >= 61 {
        let len = i32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        let total = 12 + len.max(0) as usize;
        records += i32::from_be_bytes([bytes[57], bytes[58], bytes[59], bytes[60]]).max(0) as u64;
        if total > bytes.len() {
            break;
        }
        bytes = &bytes[total..];
    }
    records
}
