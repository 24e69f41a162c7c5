//! JoinGroup (key 11): become a member of a group, and wait for the rebalance.

use std::time::Duration;

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::ResponseError;
use tokio::time::Instant;

use super::{code, str_bytes};
use crate::group::coordinator::JoinRequest;
use crate::protocol::RequestContext;
use crate::server::Server;

pub async fn handle(server: &Server, ctx: &RequestContext, request: JoinGroupRequest) -> JoinGroupResponse {
    let session_timeout = Duration::from_millis(request.session_timeout_ms.max(0) as u64);
    // v0 has no rebalance timeout; Kafka uses the session timeout then.
    let rebalance_timeout = if ctx.api_version >= 1 {
        Duration::from_millis(request.rebalance_timeout_ms.max(0) as u64)
    } else {
        session_timeout
    };
    let join = JoinRequest {
        group_id: request.group_id.0.to_string(),
        member_id: request.member_id.to_string(),
        client_id: ctx.client_id.clone(),
        client_host: ctx.client_host.clone(),
        session_timeout,
        rebalance_timeout,
        protocol_type: request.protocol_type.to_string(),
        protocols: request.protocols.into_iter().map(|p| (p.name.to_string(), p.metadata)).collect(),
    };
    let failed = |error: ResponseError| {
        JoinGroupResponse::default()
            .with_error_code(code(error))
            .with_generation_id(-1)
            .with_member_id(request.member_id.clone())
            .with_protocol_name(if ctx.api_version >= 7 { None } else { Some(str_bytes("")) })
    };
    let reply = match server.groups.join(join, Instant::now()) {
        Ok(reply) => reply,
        Err(e) => return failed(e.0),
    };
    match reply.await {
        Ok(Ok(outcome)) => {
            let mut response = JoinGroupResponse::default()
                .with_generation_id(outcome.generation)
                .with_protocol_name(Some(str_bytes(outcome.protocol_name)))
                .with_leader(str_bytes(outcome.leader))
                .with_member_id(str_bytes(outcome.member_id))
                .with_members(
                    outcome
                        .members
                        .into_iter()
                        .map(|(id, metadata)| {
                            JoinGroupResponseMember::default().with_member_id(str_bytes(id)).with_metadata(metadata)
                        })
                        .collect(),
                );
            if ctx.api_version >= 7 {
                response = response.with_protocol_type(Some(str_bytes(outcome.protocol_type)));
            }
            response
        }
        Ok(Err(e)) => failed(e.0),
        // The coordinator dropped the request: the member was removed meanwhile.
        Err(_) => failed(ResponseError::UnknownMemberId),
    }
}
