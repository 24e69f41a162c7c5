//! ListOffsets (key 2): the earliest offset, the latest, or the first at or after a
//! timestamp (looked up through each segment's time index).

use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::ResponseError;

use super::code;
use crate::protocol::RequestContext;
use crate::server::Server;

/// Kafka's special timestamps.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;

pub async fn handle(server: &Server, ctx: &RequestContext, request: ListOffsetsRequest) -> ListOffsetsResponse {
    // The leader epoch is a v4 field.
    let epoch = if ctx.api_version >= 4 { 0 } else { -1 };
    let mut topics = Vec::new();
    for topic in request.topics {
        let mut partitions = Vec::new();
        for p in topic.partitions {
            let out = ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index);
            let Some(partition) = server.broker.partition(&topic.name, p.partition_index) else {
                partitions.push(
                    out.with_error_code(code(ResponseError::UnknownTopicOrPartition))
                        .with_offset(-1)
                        .with_timestamp(-1),
                );
                continue;
            };
            let found = match p.timestamp {
                LATEST => Ok(Some((partition.high_watermark(), -1))),
                EARLIEST => Ok(Some((partition.log_start_offset(), -1))),
                ts if ts >= 0 => partition.log.lock().offset_for_timestamp(ts),
                _ => Err(std::io::Error::other("unsupported special timestamp")),
            };
            let out = match found {
                Ok(Some((offset, ts))) => out.with_offset(offset).with_timestamp(ts).with_leader_epoch(epoch),
                // Kafka's answer when no record is that new: offset -1, timestamp -1.
                Ok(None) => out.with_offset(-1).with_timestamp(-1),
                Err(e) if p.timestamp < 0 => {
                    tracing::debug!(error = %e, timestamp = p.timestamp, "ListOffsets");
                    out.with_error_code(code(ResponseError::InvalidRequest)).with_offset(-1).with_timestamp(-1)
                }
                Err(e) => {
                    tracing::error!(error = %e, "time index lookup failed");
                    out.with_error_code(code(ResponseError::KafkaStorageError)).with_offset(-1).with_timestamp(-1)
                }
            };
            partitions.push(out);
        }
        topics.push(ListOffsetsTopicResponse::default().with_name(topic.name).with_partitions(partitions));
    }
    ListOffsetsResponse::default().with_topics(topics)
}
