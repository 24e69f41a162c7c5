//! InitProducerId (key 22): a producer id for an idempotent producer.
//!
//! Ids come from a counter persisted in `producer-ids` under `--dir`, handed out in
//! blocks like Kafka's controller does: the end of the block is made durable before any
//! id in it is used, so no id is handed out twice, even across a crash (a crash wastes
//! the rest of the block). A producer that asks again with its id and epoch (v3+,
//! KIP-360) keeps the id and gets the next epoch, which fences its older self.
//!
//! Transactional producers are refused: minilog has no transaction coordinator.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use super::code;
use crate::protocol::RequestContext;
use crate::server::Server;

pub async fn handle(server: &Server, ctx: &RequestContext, request: InitProducerIdRequest) -> InitProducerIdResponse {
    if request.transactional_id.is_some() {
        return InitProducerIdResponse::default()
            .with_error_code(code(ResponseError::TransactionalIdAuthorizationFailed))
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
    }
    if ctx.api_version >= 3 && request.producer_id.0 >= 0 {
        if request.producer_epoch == i16::MAX {
            // The epoch is exhausted: a fresh id, as Kafka does.
        } else if request.producer_epoch >= 0 {
            return InitProducerIdResponse::default()
                .with_producer_id(request.producer_id)
                .with_producer_epoch(request.producer_epoch + 1);
        }
    }
    match server.broker.producer_ids.next_id() {
        Ok(id) => InitProducerIdResponse::default().with_producer_id(ProducerId(id)).with_producer_epoch(0),
        Err(e) => {
            tracing::error!(error = %e, "can't persist the producer id block");
            InitProducerIdResponse::default()
                .with_error_code(code(ResponseError::KafkaStorageError))
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
        }
    }
}
