//! Heartbeat (key 12): a member is alive; REBALANCE_IN_PROGRESS tells it to rejoin.

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};
use tokio::time::Instant;

use super::code;
use crate::protocol::RequestContext;
use crate::server::Server;

pub async fn handle(server: &Server, _ctx: &RequestContext, request: HeartbeatRequest) -> HeartbeatResponse {
    match server.groups.heartbeat(&request.group_id, request.generation_id, &request.member_id, Instant::now()) {
        Ok(()) => HeartbeatResponse::default(),
        Err(e) => HeartbeatResponse::default().with_error_code(code(e.0)),
    }
}
