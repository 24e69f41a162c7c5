//! One handler per Kafka API. Each file has the same two steps: read the decoded
//! request, apply it to the broker, and build the response for the request's version.
//!
//! Handlers never fail as a whole: per-topic and per-partition problems become error
//! codes in the response, as in Kafka, so one bad partition does not fail a request
//! that names twenty.

pub mod api_versions;
pub mod create_topics;
pub mod delete_topics;
pub mod describe_configs;
pub mod describe_groups;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod metadata;
pub mod offset_commit;
pub mod offset_fetch;
pub mod produce;
pub mod sync_group;

use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

/// A Kafka error code.
pub fn code(error: ResponseError) -> i16 {
    error.code()
}

/// A response string from an owned or borrowed Rust string.
pub fn str_bytes(text: impl Into<String>) -> StrBytes {
    StrBytes::from_string(text.into())
}
