//! FindCoordinator (key 10): which broker coordinates a group. With one broker, this one.

use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::ResponseError;

use super::{code, str_bytes};
use crate::protocol::RequestContext;
use crate::server::Server;

/// Kafka's coordinator key types.
const KEY_TYPE_GROUP: i8 = 0;

pub async fn handle(
    server: &Server,
    _ctx: &RequestContext,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let broker = &server.broker;
    if request.key_type != KEY_TYPE_GROUP {
        return FindCoordinatorResponse::default()
            .with_error_code(code(ResponseError::CoordinatorNotAvailable))
            .with_error_message(Some(str_bytes("minilog has no transaction coordinator")))
            .with_node_id(BrokerId(-1))
            .with_port(-1);
    }
    FindCoordinatorResponse::default()
        .with_node_id(BrokerId(broker.node_id))
        .with_host(str_bytes(broker.advertised_host.clone()))
        .with_port(broker.advertised_port)
}
