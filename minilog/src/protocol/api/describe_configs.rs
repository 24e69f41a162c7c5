//! DescribeConfigs (key 32): a topic's settings (retention, segments, message size)
//! and the broker's defaults for them.

use kafka_protocol::messages::describe_configs_response::{DescribeConfigsResourceResult, DescribeConfigsResult};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::ResponseError;

use super::{code, str_bytes};
use crate::config::TopicConfig;
use crate::protocol::RequestContext;
use crate::server::Server;

/// Kafka's ConfigResource types.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// Kafka's ConfigSource values.
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

/// Kafka's ConfigType values (v3+).
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;

pub async fn handle(server: &Server, ctx: &RequestContext, request: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let broker = &server.broker;
    let mut results = Vec::new();
    for resource in request.resources {
        let wanted =
            |name: &str| resource.configuration_keys.as_ref().is_none_or(|keys| keys.iter().any(|k| &**k == name));
        let result = DescribeConfigsResult::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone());
        let entry = |name: &str, value: String, source: i8| {
            let kind = match name {
                "cleanup.policy" | "message.timestamp.type" => TYPE_STRING,
                "max.message.bytes" | "segment.bytes" => TYPE_INT,
                _ => TYPE_LONG,
            };
            let mut e = DescribeConfigsResourceResult::default()
                .with_name(str_bytes(name))
                .with_value(Some(str_bytes(value)))
                .with_config_source(source);
            if ctx.api_version >= 3 {
                e = e.with_config_type(kind);
            }
            e
        };
        let result = match resource.resource_type {
            RESOURCE_TOPIC => match broker.topic(&resource.resource_name) {
                Some(topic) => result.with_configs(
                    TopicConfig::NAMES
                        .iter()
                        .filter(|n| wanted(n))
                        .filter_map(|n| {
                            let source =
                                if topic.overrides.contains_key(*n) { SOURCE_DYNAMIC_TOPIC } else { SOURCE_DEFAULT };
                            topic.config.value_of(n).map(|v| entry(n, v, source))
                        })
                        .collect(),
                ),
                None => result.with_error_code(code(ResponseError::UnknownTopicOrPartition)).with_error_message(Some(
                    str_bytes(format!("topic '{}' does not exist", &*resource.resource_name)),
                )),
            },
            RESOURCE_BROKER => {
                let defaults = broker.config.topic_defaults();
                let names = [
                    ("log.segment.bytes", "segment.bytes"),
                    ("log.roll.ms", "segment.ms"),
                    ("log.retention.ms", "retention.ms"),
                    ("log.retention.bytes", "retention.bytes"),
                    ("message.max.bytes", "max.message.bytes"),
                ];
                let mut configs: Vec<_> = names
                    .iter()
                    .filter(|(n, _)| wanted(n))
                    .filter_map(|(broker_name, topic_name)| {
                        defaults.value_of(topic_name).map(|v| entry(broker_name, v, SOURCE_STATIC_BROKER))
                    })
                    .collect();
                if wanted("num.partitions") {
                    configs.push(entry(
                        "num.partitions",
                        broker.config.num_partitions.to_string(),
                        SOURCE_STATIC_BROKER,
                    ));
                }
                result.with_configs(configs)
            }
            other => result.with_error_code(code(ResponseError::InvalidRequest)).with_error_message(Some(str_bytes(
                format!("resource type {other} is not supported; use 2 (topic) or 4 (broker)"),
            ))),
        };
        results.push(result);
    }
    DescribeConfigsResponse::default().with_results(results)
}
