//! SyncGroup (key 14): the leader hands in the assignment; every member gets its part.

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};
use kafka_protocol::ResponseError;
use tokio::time::Instant;

use super::{code, str_bytes};
use crate::protocol::RequestContext;
use crate::server::Server;

pub async fn handle(server: &Server, ctx: &RequestContext, request: SyncGroupRequest) -> SyncGroupResponse {
    let assignments = request.assignments.into_iter().map(|a| (a.member_id.to_string(), a.assignment)).collect();
    let reply =
        server.groups.sync(&request.group_id, request.generation_id, &request.member_id, assignments, Instant::now());
    let result = match reply {
        Ok(reply) => reply.await.unwrap_or(Err(crate::group::GroupError(ResponseError::UnknownMemberId))),
        Err(e) => Err(e),
    };
    let mut response = match result {
        Ok(assignment) => SyncGroupResponse::default().with_assignment(assignment),
        Err(e) => SyncGroupResponse::default().with_error_code(code(e.0)),
    };
    if ctx.api_version >= 5 {
        if let Some(description) = server.groups.describe(&request.group_id) {
            response = response
                .with_protocol_type(Some(str_bytes(description.protocol_type)))
                .with_protocol_name(Some(str_bytes(description.protocol_name)));
        }
    }
    response
}
