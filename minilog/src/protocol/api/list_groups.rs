//! ListGroups (key 16): every group with members or committed offsets.

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use super::str_bytes;
use crate::protocol::RequestContext;
use crate::server::Server;

pub async fn handle(server: &Server, _ctx: &RequestContext, request: ListGroupsRequest) -> ListGroupsResponse {
    let mut groups: Vec<(String, String, &'static str)> =
        server.groups.list().into_iter().map(|(id, kind, state)| (id, kind, state.name())).collect();
    // A group that only has committed offsets is Empty, as Kafka reports it.
    for id in server.offsets.groups() {
        if !groups.iter().any(|(g, _, _)| *g == id) {
            groups.push((id, "consumer".into(), "Empty"));
        }
    }
    groups.sort();
    let wanted = |state: &str| request.states_filter.is_empty() || request.states_filter.iter().any(|s| &**s == state);
    ListGroupsResponse::default().with_groups(
        groups
            .into_iter()
            .filter(|(_, _, state)| wanted(state))
            .map(|(id, kind, state)| {
                ListedGroup::default()
                    .with_group_id(GroupId(str_bytes(id)))
                    .with_protocol_type(str_bytes(kind))
                    .with_group_state(str_bytes(state))
            })
            .collect(),
    )
}
