//! ApiVersions (key 18): which APIs and versions this broker serves.
//!
//! The first request every modern client sends. A client that asks with a version we
//! do not serve gets error 35 with a v0 body, which every client can parse; it then
//! retries with the highest version both sides have (KIP-511).

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::Encodable;
use kafka_protocol::ResponseError;

use super::code;
use crate::protocol::{RequestContext, SUPPORTED};
use crate::server::Server;

fn ranges() -> Vec<ApiVersion> {
    SUPPORTED
        .iter()
        .map(|&(key, min, max)| {
            ApiVersion::default().with_api_key(key as i16).with_min_version(min).with_max_version(max)
        })
        .collect()
}

pub async fn handle(_server: &Server, _ctx: &RequestContext, _request: ApiVersionsRequest) -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(ranges())
}

/// The whole reply frame for an ApiVersions version we do not serve: error 35, our
/// ranges, encoded as v0 after a v0 response header.
pub fn unsupported_version_reply(correlation_id: i32) -> BytesMut {
    let body =
        ApiVersionsResponse::default().with_error_code(code(ResponseError::UnsupportedVersion)).with_api_keys(ranges());
    let mut out = BytesMut::with_capacity(256);
    out.put_i32(0);
    out.put_i32(correlation_id);
    body.encode(&mut out, 0).expect("a v0 ApiVersions response always encodes");
    let size = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&size.to_be_bytes());
    out
}
