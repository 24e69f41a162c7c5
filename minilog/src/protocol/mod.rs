//! Kafka's wire protocol: framing, the version table, and dispatch to one handler per API.
//!
//! A request is a 4-byte big-endian size, then a request header (api key, api version,
//! correlation id, client id, and tagged fields from header v2), then the body. The
//! message codecs come from the `kafka-protocol` crate; what is ours is the framing
//! ([`frame`]), the decision of which versions to serve ([`SUPPORTED`]), and the
//! handlers in [`api`], one file per API.
//!
//! Errors. An unsupported ApiVersions version gets error 35 (UNSUPPORTED_VERSION) with a
//! v0 body listing our ranges, which is how clients discover what to fall back to.
//! Anything else we cannot decode (unknown API key, a version outside [`SUPPORTED`], a
//! body that does not parse) closes the connection, as Kafka does: the stream cannot be
//! trusted after a frame we did not understand.

pub mod api;
pub mod frame;

use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};

use crate::server::Server;

/// The versions served, per API. Advertised by ApiVersions; anything outside closes the
/// connection. Each range is covered by `minilog/tests/protocol.rs`, which sends every
/// API at every version in its range.
///
/// Constraints that shaped the ranges:
/// - librdkafka before 2.11 (kcat on Debian ships 2.0.2) enables record batches only if
///   Produce 3 and Fetch 4 are in range, consumer groups only if FindCoordinator,
///   JoinGroup, SyncGroup, Heartbeat and LeaveGroup include v0, OffsetCommit overlaps 1-2
///   and OffsetFetch includes 1, and offset lookups only if ListOffsets includes 1.
/// - The upper ends stop before versions that address topics by id only (Fetch 13,
///   Produce 13, DeleteTopics 6) or batch several groups or coordinators in one request
///   (OffsetFetch 8, FindCoordinator 4), which a single-name model does not serve yet.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 6),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::FindCoordinator, 0, 3),
    (ApiKey::JoinGroup, 0, 7),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 4),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 5),
    (ApiKey::DeleteTopics, 1, 5),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::InitProducerId, 0, 4),
];

/// The served range of an API, if it is served at all.
pub fn supported_range(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED.iter().find(|(k, _, _)| *k == key).map(|&(_, min, max)| (min, max))
}

/// What the connection knows about the client, for handlers.
#[derive(Clone, Debug)]
pub struct RequestContext {
    pub api_version: i16,
    pub correlation_id: i32,
    pub client_id: String,
    pub client_host: String,
}

/// What to do after a request.
pub enum Outcome {
    /// Send this frame (size prefix included).
    Reply(BytesMut),
    /// Send nothing: Produce with acks=0.
    NoReply,
    /// Close the connection; the reason is logged.
    Close(String),
}

/// Decodes one frame (without its size prefix), runs its handler and encodes the answer.
pub async fn handle_frame(server: &Server, client_host: &str, mut frame: Bytes) -> Outcome {
    if frame.len() < 8 {
        return Outcome::Close(format!("a {}-byte frame is too short for a request header", frame.len()));
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let Ok(key) = ApiKey::try_from(raw_key) else {
        return Outcome::Close(format!("unknown API key {raw_key}"));
    };
    let Some((min, max)) = supported_range(key) else {
        return Outcome::Close(format!("API {key:?} is not supported by minilog"));
    };
    if version < min || version > max {
        if key == ApiKey::ApiVersions {
            return Outcome::Reply(api::api_versions::unsupported_version_reply(correlation_id));
        }
        return Outcome::Close(format!("{key:?} v{version} is outside the served range {min}..={max}"));
    }
    let header = match RequestHeader::decode(&mut frame, key.request_header_version(version)) {
        Ok(h) => h,
        Err(e) => return Outcome::Close(format!("bad {key:?} v{version} request header: {e}")),
    };
    let ctx = RequestContext {
        api_version: version,
        correlation_id,
        client_id: header.client_id.map(|c| c.to_string()).unwrap_or_default(),
        client_host: client_host.to_string(),
    };
    let started = Instant::now();
    let outcome = dispatch(server, &ctx, key, frame).await;
    server.broker.metrics.observe_request(key, started.elapsed());
    outcome
}

async fn dispatch(server: &Server, ctx: &RequestContext, key: ApiKey, mut body: Bytes) -> Outcome {
    use api::*;
    use kafka_protocol::messages::*;
    macro_rules! serve {
        ($module:ident, $request:ty) => {{
            let request: $request = match decode(&mut body, ctx) {
                Ok(r) => r,
                Err(outcome) => return outcome,
            };
            let response = $module::handle(server, ctx, request).await;
            encode(key, ctx, &response)
        }};
    }
    match key {
        ApiKey::Produce => {
            let request: ProduceRequest = match decode(&mut body, ctx) {
                Ok(r) => r,
                Err(outcome) => return outcome,
            };
            match produce::handle(server, ctx, request).await {
                Ok(Some(response)) => encode(key, ctx, &response),
                Ok(None) => Outcome::NoReply,
                Err(reason) => Outcome::Close(reason),
            }
        }
        ApiKey::Fetch => serve!(fetch, FetchRequest),
        ApiKey::ListOffsets => serve!(list_offsets, ListOffsetsRequest),
        ApiKey::Metadata => serve!(metadata, MetadataRequest),
        ApiKey::OffsetCommit => serve!(offset_commit, OffsetCommitRequest),
        ApiKey::OffsetFetch => serve!(offset_fetch, OffsetFetchRequest),
        ApiKey::FindCoordinator => serve!(find_coordinator, FindCoordinatorRequest),
        ApiKey::JoinGroup => serve!(join_group, JoinGroupRequest),
        ApiKey::Heartbeat => serve!(heartbeat, HeartbeatRequest),
        ApiKey::LeaveGroup => serve!(leave_group, LeaveGroupRequest),
        ApiKey::SyncGroup => serve!(sync_group, SyncGroupRequest),
        ApiKey::DescribeGroups => serve!(describe_groups, DescribeGroupsRequest),
        ApiKey::ListGroups => serve!(list_groups, ListGroupsRequest),
        ApiKey::ApiVersions => {
            let request: ApiVersionsRequest = match decode(&mut body, ctx) {
                Ok(r) => r,
                Err(outcome) => return outcome,
            };
            encode(key, ctx, &api_versions::handle(server, ctx, request).await)
        }
        ApiKey::CreateTopics => serve!(create_topics, CreateTopicsRequest),
        ApiKey::DeleteTopics => serve!(delete_topics, DeleteTopicsRequest),
        ApiKey::DescribeConfigs => serve!(describe_configs, DescribeConfigsRequest),
        ApiKey::InitProducerId => serve!(init_producer_id, InitProducerIdRequest),
        other => Outcome::Close(format!("API {other:?} is not supported by minilog")),
    }
}

fn decode<R: Decodable>(body: &mut Bytes, ctx: &RequestContext) -> Result<R, Outcome> {
    R::decode(body, ctx.api_version)
        .map_err(|e| Outcome::Close(format!("can't decode a v{} request body: {e}", ctx.api_version)))
}

/// Encodes a response frame: size, response header, body.
fn encode<R: Encodable + HeaderVersion>(key: ApiKey, ctx: &RequestContext, response: &R) -> Outcome {
    let header = ResponseHeader::default().with_correlation_id(ctx.correlation_id);
    let mut out = BytesMut::with_capacity(256);
    out.put_i32(0);
    let encoded = header
        .encode(&mut out, R::header_version(ctx.api_version))
        .and_then(|_| response.encode(&mut out, ctx.api_version));
    if let Err(e) = encoded {
        // A handler filled in a field this version cannot carry: our bug, not the client's.
        tracing::error!(api = ?key, version = ctx.api_version, error = %e, "can't encode a response");
        return Outcome::Close(format!("internal error encoding a {key:?} response"));
    }
    let size = i32::try_from(out.len() - 4).unwrap_or(i32::MAX);
    out[..4].copy_from_slice(&size.to_be_bytes());
    Outcome::Reply(out)
}

/// Encodes a request frame the way a client would; for tests and `mini log`.
pub fn encode_request<R: Encodable + HeaderVersion>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    request: &R,
) -> Result<BytesMut, String> {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(kafka_protocol::protocol::StrBytes::from_static_str("minilog-test")));
    let mut out = BytesMut::new();
    out.put_i32(0);
    header.encode(&mut out, R::header_version(version)).map_err(|e| e.to_string())?;
    request.encode(&mut out, version).map_err(|e| e.to_string())?;
    let size = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&size.to_be_bytes());
    Ok(out)
}
