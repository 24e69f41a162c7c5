//! Metadata (key 3): brokers, the controller, topics and who leads each partition.
//!
//! Clients call it to learn where to send produces and fetches. A topic that does not
//! exist is created here when `--auto-create-topics` is on and the client allows it
//! (always before v4; the `allow_auto_topic_creation` flag from v4), as in Kafka.

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::ResponseError;

use super::{code, str_bytes};
use crate::broker::{CreateTopicError, Topic};
use crate::protocol::RequestContext;
use crate::server::Server;

pub async fn handle(server: &Server, ctx: &RequestContext, request: MetadataRequest) -> MetadataResponse {
    let broker = &server.broker;
    let version = ctx.api_version;
    // v0 uses an empty list for "all topics"; v1+ uses null.
    let requested: Option<Vec<String>> = match request.topics {
        None => None,
        Some(list) if list.is_empty() && version == 0 => None,
        Some(list) => Some(list.into_iter().filter_map(|t| t.name.map(|n| n.0.to_string())).collect()),
    };
    let allow_create = broker.config.auto_create_topics && (version < 4 || request.allow_auto_topic_creation);
    let topics = match requested {
        None => broker.topics().iter().map(|t| describe(t, version)).collect(),
        Some(names) => names
            .into_iter()
            .map(|name| match broker.topic(&name) {
                Some(topic) => describe(&topic, version),
                None if allow_create => match broker.create_topic(&name, -1, -1, &[], false) {
                    Ok(topic) => describe(&topic, version),
                    Err(CreateTopicError::Exists(_)) => match broker.topic(&name) {
                        Some(topic) => describe(&topic, version),
                        None => missing(&name, ResponseError::UnknownTopicOrPartition),
                    },
                    Err(CreateTopicError::InvalidName(_)) => missing(&name, ResponseError::InvalidTopicException),
                    Err(e) => {
                        tracing::warn!(topic = name, error = %e, "auto-create failed");
                        missing(&name, ResponseError::UnknownTopicOrPartition)
                    }
                },
                None => missing(&name, ResponseError::UnknownTopicOrPartition),
            })
            .collect(),
    };
    MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(broker.node_id))
            .with_host(str_bytes(broker.advertised_host.clone()))
            .with_port(broker.advertised_port)])
        .with_cluster_id(if version >= 2 { Some(str_bytes(broker.cluster_id.clone())) } else { None })
        .with_controller_id(BrokerId(if version >= 1 { broker.node_id } else { -1 }))
        .with_topics(topics)
}

/// A topic's entry; fields newer than `version` are left at their defaults, which the
/// codec requires.
fn describe(topic: &Topic, version: i16) -> MetadataResponseTopic {
    let partitions = topic
        .partitions
        .iter()
        .map(|p| {
            let leader = BrokerId(p.leadership.leader_id);
            MetadataResponsePartition::default()
                .with_partition_index(p.index)
                .with_leader_id(leader)
                .with_leader_epoch(if version >= 7 { p.leadership.leader_epoch } else { -1 })
                .with_replica_nodes(vec![leader])
                .with_isr_nodes(vec![leader])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(&*topic.name))))
        .with_topic_id(if version >= 10 { topic.id } else { uuid::Uuid::nil() })
        .with_is_internal(version >= 1 && topic.internal)
        .with_partitions(partitions)
}

fn missing(name: &str, error: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default().with_name(Some(TopicName(str_bytes(name)))).with_error_code(code(error))
}
