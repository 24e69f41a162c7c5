//! CreateTopics (key 19): create topics with a partition count and config overrides.

use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::ResponseError;

use super::{code, str_bytes};
use crate::broker::CreateTopicError;
use crate::protocol::RequestContext;
use crate::server::Server;

pub async fn handle(server: &Server, ctx: &RequestContext, request: CreateTopicsRequest) -> CreateTopicsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let configs: Vec<(String, String)> = topic
            .configs
            .iter()
            .filter_map(|c| c.value.as_ref().map(|v| (c.name.to_string(), v.to_string())))
            .collect();
        let result = if !topic.assignments.is_empty() {
            Err((ResponseError::InvalidReplicaAssignment, "manual replica assignment is not supported".to_string()))
        } else {
            server
                .broker
                .create_topic(&name, topic.num_partitions, topic.replication_factor, &configs, request.validate_only)
                .map_err(|e| {
                    let error = match &e {
                        CreateTopicError::Exists(_) => ResponseError::TopicAlreadyExists,
                        CreateTopicError::InvalidName(_) => ResponseError::InvalidTopicException,
                        CreateTopicError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
                        CreateTopicError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
                        CreateTopicError::InvalidConfig(_) => ResponseError::InvalidConfig,
                        CreateTopicError::Io(_) => ResponseError::KafkaStorageError,
                    };
                    (error, e.to_string())
                })
        };
        let mut out = CreatableTopicResult::default().with_name(topic.name);
        match result {
            // Fields newer than the request's version stay at their defaults.
            Ok(created) if ctx.api_version >= 5 => {
                let partitions = if created.partitions.is_empty() {
                    // validate_only: nothing was opened; report what would have been.
                    if topic.num_partitions == -1 {
                        server.broker.config.num_partitions
                    } else {
                        topic.num_partitions
                    }
                } else {
                    created.partitions.len() as i32
                };
                out = out.with_num_partitions(partitions).with_replication_factor(1);
                if ctx.api_version >= 7 {
                    out = out.with_topic_id(created.id);
                }
            }
            Ok(_) => {}
            Err((error, message)) => {
                out = out.with_error_code(code(error)).with_error_message(Some(str_bytes(message)));
            }
        }
        results.push(out);
    }
    CreateTopicsResponse::default().with_topics(results)
}
