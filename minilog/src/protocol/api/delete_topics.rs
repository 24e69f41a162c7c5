//! DeleteTopics (key 20): delete topics and their data, by name.

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};
use kafka_protocol::ResponseError;

use super::{code, str_bytes};
use crate::broker::OFFSETS_TOPIC;
use crate::protocol::RequestContext;
use crate::server::Server;

pub async fn handle(server: &Server, _ctx: &RequestContext, request: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let mut responses = Vec::new();
    for name in request.topic_names {
        let text = name.0.to_string();
        let result = DeletableTopicResult::default().with_name(Some(name));
        let result = if text == OFFSETS_TOPIC {
            result
                .with_error_code(code(ResponseError::InvalidTopicException))
                .with_error_message(Some(str_bytes("the internal offsets topic cannot be deleted")))
        } else {
            match server.broker.delete_topic(&text) {
                Ok(true) => result,
                Ok(false) => result.with_error_code(code(ResponseError::UnknownTopicOrPartition)),
                Err(e) => result
                    .with_error_code(code(ResponseError::KafkaStorageError))
                    .with_error_message(Some(str_bytes(e.to_string()))),
            }
        };
        responses.push(result);
    }
    DeleteTopicsResponse::default().with_responses(responses)
}
