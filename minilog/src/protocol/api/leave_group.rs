//! LeaveGroup (key 13): members leave at once instead of timing out, so the rest of
//! the group rebalances now.

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};
use tokio::time::Instant;

use super::code;
use crate::protocol::RequestContext;
use crate::server::Server;

pub async fn handle(server: &Server, ctx: &RequestContext, request: LeaveGroupRequest) -> LeaveGroupResponse {
    let now = Instant::now();
    if ctx.api_version < 3 {
        return match server.groups.leave(&request.group_id, &request.member_id, now) {
            Ok(()) => LeaveGroupResponse::default(),
            Err(e) => LeaveGroupResponse::default().with_error_code(code(e.0)),
        };
    }
    // v3+ names several members at once.
    let members = request
        .members
        .into_iter()
        .map(|m| {
            let error = server.groups.leave(&request.group_id, &m.member_id, now).err().map(|e| code(e.0)).unwrap_or(0);
            MemberResponse::default()
                .with_member_id(m.member_id)
                .with_group_instance_id(m.group_instance_id)
                .with_error_code(error)
        })
        .collect();
    LeaveGroupResponse::default().with_members(members)
}
