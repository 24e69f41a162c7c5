//! OffsetCommit (key 8): record how far a group has consumed, durably, in
//! `__consumer_offsets` (see [`crate::group::offsets`]).

use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};
use kafka_protocol::ResponseError;

use super::code;
use crate::group::offsets::{commit_now, MAX_METADATA_BYTES};
use crate::protocol::RequestContext;
use crate::server::Server;

pub async fn handle(server: &Server, _ctx: &RequestContext, request: OffsetCommitRequest) -> OffsetCommitResponse {
    let group = request.group_id.0.to_string();
    let allowed = server.groups.validate_commit(&group, request.generation_id_or_member_epoch, &request.member_id);
    let mut topics = Vec::new();
    let mut accepted = Vec::new();
    for topic in &request.topics {
        let mut partitions = Vec::new();
        for p in &topic.partitions {
            let metadata = p.committed_metadata.as_ref().map(|m| m.to_string()).unwrap_or_default();
            let error = if let Err(e) = allowed {
                Some(e.0)
            } else if server.broker.partition(&topic.name, p.partition_index).is_none() {
                Some(ResponseError::UnknownTopicOrPartition)
            } else if metadata.len() > MAX_METADATA_BYTES {
                Some(ResponseError::OffsetMetadataTooLarge)
            } else {
                accepted.push((
                    (topic.name.0.to_string(), p.partition_index),
                    commit_now(p.committed_offset, p.committed_leader_epoch, metadata),
                ));
                None
            };
            partitions.push(
                OffsetCommitResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(error.map(code).unwrap_or(0)),
            );
        }
        topics.push(OffsetCommitResponseTopic::default().with_name(topic.name.clone()).with_partitions(partitions));
    }
    if let Err(e) = server.offsets.commit(&server.broker, &group, accepted).await {
        tracing::error!(group, error = %e, "offset commit failed");
        for topic in &mut topics {
            for p in &mut topic.partitions {
                if p.error_code == 0 {
                    p.error_code = code(ResponseError::KafkaStorageError);
                }
            }
        }
    }
    OffsetCommitResponse::default().with_topics(topics)
}
