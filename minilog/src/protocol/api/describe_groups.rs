//! DescribeGroups (key 15): a group's state, protocol and members with their
//! subscriptions and assignments. An unknown group is reported as `Dead`, as in Kafka.

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};

use super::str_bytes;
use crate::protocol::RequestContext;
use crate::server::Server;

pub async fn handle(server: &Server, _ctx: &RequestContext, request: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let groups = request
        .groups
        .into_iter()
        .map(|id| {
            let out = DescribedGroup::default().with_group_id(id.clone());
            match server.groups.describe(&id) {
                Some(g) => out
                    .with_group_state(str_bytes(g.state.name()))
                    .with_protocol_type(str_bytes(g.protocol_type))
                    .with_protocol_data(str_bytes(g.protocol_name))
                    .with_members(
                        g.members
                            .into_iter()
                            .map(|(member, client, host, metadata, assignment)| {
                                DescribedGroupMember::default()
                                    .with_member_id(str_bytes(member))
                                    .with_client_id(str_bytes(client))
                                    .with_client_host(str_bytes(host))
                                    .with_member_metadata(metadata)
                                    .with_member_assignment(assignment)
                            })
                            .collect(),
                    ),
                None if server.offsets.groups().contains(&id.0.to_string()) => {
                    out.with_group_state(str_bytes("Empty")).with_protocol_type(str_bytes("consumer"))
                }
                None => out.with_group_state(str_bytes("Dead")),
            }
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}
