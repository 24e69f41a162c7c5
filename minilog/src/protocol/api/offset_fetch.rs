//! OffsetFetch (key 9): a group's committed offsets; -1 where nothing is committed.

use kafka_protocol::messages::offset_fetch_response::{OffsetFetchResponsePartition, OffsetFetchResponseTopic};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};

use super::str_bytes;
use crate::protocol::RequestContext;
use crate::server::Server;

pub async fn handle(server: &Server, ctx: &RequestContext, request: OffsetFetchRequest) -> OffsetFetchResponse {
    let group = request.group_id.0.to_string();
    let entry = |partition: i32, committed: Option<crate::group::CommittedOffset>| {
        let out = OffsetFetchResponsePartition::default().with_partition_index(partition);
        match committed {
            Some(c) => out
                .with_committed_offset(c.offset)
                .with_committed_leader_epoch(if ctx.api_version >= 5 { c.leader_epoch } else { -1 })
                .with_metadata(Some(str_bytes(c.metadata))),
            None => out.with_committed_offset(-1).with_committed_leader_epoch(-1).with_metadata(Some(str_bytes(""))),
        }
    };
    let topics = match request.topics {
        Some(topics) => topics
            .into_iter()
            .map(|t| {
                let partitions =
                    t.partition_indexes.iter().map(|&p| entry(p, server.offsets.fetch(&group, &t.name, p))).collect();
                OffsetFetchResponseTopic::default().with_name(t.name).with_partitions(partitions)
            })
            .collect(),
        // v2+: null topics means every partition the group has committed.
        None => {
            let mut by_topic: Vec<OffsetFetchResponseTopic> = Vec::new();
            for ((topic, partition), committed) in server.offsets.group(&group) {
                if by_topic.last().is_none_or(|t| *t.name.0 != *topic) {
                    by_topic.push(OffsetFetchResponseTopic::default().with_name(TopicName(str_bytes(topic))));
                }
                if let Some(last) = by_topic.last_mut() {
                    last.partitions.push(entry(partition, Some(committed)));
                }
            }
            by_topic
        }
    };
    OffsetFetchResponse::default().with_topics(topics)
}
