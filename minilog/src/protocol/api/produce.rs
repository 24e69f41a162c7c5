//! Produce (key 0): append record batches to partitions.
//!
//! The produce path, for each partition in the request:
//! 1. copy the client's bytes into a buffer we may write to;
//! 2. [`PartitionLog::append`](crate::storage::PartitionLog::append) validates every
//!    batch (magic 2, sizes, CRC-32C) before writing any, assigns offsets by rewriting
//!    each batch's base offset in place (a field the CRC does not cover, so compressed
//!    batches stay byte-for-byte what the client sent), and writes them with one write(2);
//! 3. wait for the flush policy ([`Broker::durable`](crate::broker::Broker::durable)),
//!    then acknowledge.
//!
//! Batches from idempotent producers are checked against their sequence numbers before
//! step 2 ([`crate::producer_state`]); a retried batch gets the offset it was first
//! written at and is not written again.
//!
//! acks=0 gets no response at all, as in Kafka. acks=1 and acks=-1 mean the same with
//! one broker: the leader is the whole in-sync replica set.

use bytes::BytesMut;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::ResponseError;

use super::{code, str_bytes};
use crate::broker::{ProduceError, OFFSETS_TOPIC};
use crate::producer_state::SequenceError;
use crate::protocol::RequestContext;
use crate::server::Server;
use crate::storage::AppendError;

/// `Ok(None)`: acks=0, send nothing. `Err`: acks=0 and something failed; Kafka closes
/// the connection then, the only way to tell a client that reads no responses.
pub async fn handle(
    server: &Server,
    ctx: &RequestContext,
    request: ProduceRequest,
) -> Result<Option<ProduceResponse>, String> {
    let broker = &server.broker;
    let acks = request.acks;
    let mut topics = Vec::with_capacity(request.topic_data.len());
    // Step 1: append to every partition. Step 2 (below): wait for durability, so no
    // partition's write waits behind another partition's fsync.
    for topic in request.topic_data {
        // (slot in `partitions`, partition, end offset) of each append to wait for.
        let mut pending = Vec::new();
        let name = topic.name.0.to_string();
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for data in topic.partition_data {
            let out = PartitionProduceResponse::default()
                .with_index(data.index)
                .with_base_offset(-1)
                .with_log_append_time_ms(-1);
            if !matches!(acks, -1..=1) {
                partitions.push(out.with_error_code(code(ResponseError::InvalidRequiredAcks)));
                continue;
            }
            if name == OFFSETS_TOPIC {
                partitions.push(
                    out.with_error_code(code(ResponseError::InvalidTopicException))
                        .with_error_message(Some(str_bytes("clients cannot write to the internal offsets topic"))),
                );
                continue;
            }
            let Some(partition) = broker.partition(&name, data.index) else {
                partitions.push(out.with_error_code(code(ResponseError::UnknownTopicOrPartition)));
                continue;
            };
            let Some(records) = data.records else {
                partitions.push(out.with_error_code(code(ResponseError::CorruptMessage)));
                continue;
            };
            let mut owned = BytesMut::from(&records[..]);
            match broker.append(&partition, &mut owned) {
                Ok(appended) => {
                    let info = appended.info;
                    broker.metrics.record_in(&name, info.bytes as u64, info.record_count);
                    let log_start = partition.log_start_offset();
                    pending.push((partitions.len(), partition, info.last_offset + 1));
                    let log_start = if ctx.api_version >= 5 { log_start } else { -1 };
                    partitions.push(out.with_base_offset(info.base_offset).with_log_start_offset(log_start));
                }
                Err(e) => {
                    tracing::debug!(topic = name, partition = data.index, error = %e, "produce rejected");
                    partitions
                        .push(out.with_error_code(error_code(&e)).with_error_message(Some(str_bytes(e.to_string()))));
                }
            }
        }
        topics.push((TopicProduceResponse::default().with_name(topic.name), partitions, pending));
    }
    let mut responses = Vec::with_capacity(topics.len());
    for (topic, mut partitions, waits) in topics {
        for (slot, partition, end) in waits {
            if let Err(e) = broker.durable(&partition, end).await {
                tracing::error!(partition = partition.index, error = %e, "produce not durable");
                partitions[slot] = PartitionProduceResponse::default()
                    .with_index(partition.index)
                    .with_base_offset(-1)
                    .with_log_append_time_ms(-1)
                    .with_error_code(code(ResponseError::KafkaStorageError))
                    .with_error_message(Some(str_bytes(e.to_string())));
            }
        }
        responses.push(topic.with_partition_responses(partitions));
    }
    if acks == 0 {
        let failed = responses.iter().flat_map(|t| &t.partition_responses).find(|p| p.error_code != 0);
        return match failed {
            Some(p) => Err(format!("an acks=0 produce failed with error {}", p.error_code)),
            None => Ok(None),
        };
    }
    Ok(Some(ProduceResponse::default().with_responses(responses)))
}

fn error_code(error: &ProduceError) -> i16 {
    code(match error {
        ProduceError::Append(AppendError::Corrupt(_)) => ResponseError::CorruptMessage,
        ProduceError::Append(AppendError::TooLarge { .. }) => ResponseError::MessageTooLarge,
        ProduceError::Append(AppendError::Io(_)) | ProduceError::Sync(_) => ResponseError::KafkaStorageError,
        ProduceError::Sequence(SequenceError::StaleEpoch { .. }) => ResponseError::InvalidProducerEpoch,
        ProduceError::Sequence(SequenceError::OutOfOrder { .. }) => ResponseError::OutOfOrderSequenceNumber,
        ProduceError::Transactional => ResponseError::InvalidTxnState,
    })
}
