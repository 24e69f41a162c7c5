//! The Kafka protocol, message by message, against a broker on loopback.
//!
//! Every API is sent at every version the broker advertises, so an advertised range is
//! a tested range. The bad-input tests check the error forms: error
//! codes where Kafka answers, a closed connection where Kafka closes, and never a panic
//! (the property tests at the end feed the frame handler arbitrary and mutated bytes).

mod support;

/// As in the `minilog` binary: a malformed frame's absurd array count must not abort the
/// process (see `minicore::alloc`); the fuzz tests below found that it did.
#[global_allocator]
static ALLOC: minicore::alloc::ReserveHuge<std::alloc::System> = minicore::alloc::ReserveHuge(std::alloc::System);

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use kafka_protocol::ResponseError;
use minilog::protocol::{supported_range, SUPPORTED};
use support::{batch, batch_at, Client, TestBroker};

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn topic_name(text: &str) -> TopicName {
    TopicName(s(text))
}

fn range(key: ApiKey) -> (i16, i16) {
    supported_range(key).unwrap()
}

async fn create(client: &mut Client, name: &str, partitions: i32, configs: &[(&str, &str)]) -> i16 {
    use create_topics_request::{CreatableTopic, CreatableTopicConfig};
    let topic = CreatableTopic::default()
        .with_name(topic_name(name))
        .with_num_partitions(partitions)
        .with_replication_factor(1)
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| CreatableTopicConfig::default().with_name(s(k)).with_value(Some(s(v))))
                .collect(),
        );
    let response = client
        .call(
            range(ApiKey::CreateTopics).1,
            &CreateTopicsRequest::default().with_topics(vec![topic]).with_timeout_ms(5000),
        )
        .await;
    response.topics[0].error_code
}

async fn produce(client: &mut Client, version: i16, topic: &str, partition: i32, records: Bytes) -> (i16, i64) {
    use produce_request::{PartitionProduceData, TopicProduceData};
    let request =
        ProduceRequest::default().with_acks(1).with_timeout_ms(5000).with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])]);
    let response = client.call(version, &request).await;
    let p = &response.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

fn fetch_request(topic: &str, partition: i32, offset: i64, max_wait_ms: i32, min_bytes: i32) -> FetchRequest {
    use fetch_request::{FetchPartition, FetchTopic};
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(min_bytes)
        .with_max_bytes(50 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default().with_topic(topic_name(topic)).with_partitions(vec![
            FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(10 << 20)
                .with_log_start_offset(-1),
        ])])
}

/// Offsets of every record in a fetch response's records.
fn offsets_in(records: &Option<Bytes>) -> Vec<i64> {
    let mut bytes = records.clone().unwrap_or_default();
    RecordBatchDecoder::decode_all(&mut bytes)
        .unwrap()
        .iter()
        .flat_map(|set| set.records.iter().map(|r| r.offset))
        .collect()
}

#[tokio::test]
async fn api_versions_lists_exactly_the_served_ranges() {
    let broker = TestBroker::start().await;
    let mut client = broker.client().await;
    let (min, max) = range(ApiKey::ApiVersions);
    for version in [min, max] {
        let response = client
            .call(
                version,
                &ApiVersionsRequest::default().with_client_software_name(s("t")).with_client_software_version(s("1")),
            )
            .await;
        assert_eq!(response.error_code, 0);
        let got: Vec<(i16, i16, i16)> =
            response.api_keys.iter().map(|k| (k.api_key, k.min_version, k.max_version)).collect();
        let want: Vec<(i16, i16, i16)> = SUPPORTED.iter().map(|&(k, min, max)| (k as i16, min, max)).collect();
        assert_eq!(got, want, "v{version}");
    }
    // What librdkafka before 2.11 needs in range to enable record batches and groups.
    let contains = |key, v| {
        let (min, max) = range(key);
        min <= v && v <= max
    };
    assert!(contains(ApiKey::Produce, 3) && contains(ApiKey::Fetch, 4) && contains(ApiKey::ApiVersions, 0));
    assert!(contains(ApiKey::ListOffsets, 1) && contains(ApiKey::OffsetFetch, 1) && contains(ApiKey::OffsetCommit, 2));
    for key in [ApiKey::FindCoordinator, ApiKey::JoinGroup, ApiKey::SyncGroup, ApiKey::Heartbeat, ApiKey::LeaveGroup] {
        assert!(contains(key, 0), "{key:?} v0");
    }
}

#[tokio::test]
async fn unsupported_api_versions_version_gets_error_35_with_a_v0_body() {
    let broker = TestBroker::start().await;
    let mut client = broker.client().await;
    // ApiVersions v9, correlation id 77, client id "x", then junk a newer client might send.
    let mut frame = vec![0, 18, 0, 9, 0, 0, 0, 77, 0, 1, b'x', 0, 0xde, 0xad];
    let size = (frame.len() as i32).to_be_bytes();
    frame.splice(0..0, size);
    client.send_raw(&frame).await;
    let mut body = client.read_frame().await.expect("an answer, not a closed connection");
    let header = ResponseHeader::decode_v0(&mut body);
    assert_eq!(header, 77);
    let response = <ApiVersionsResponse as kafka_protocol::protocol::Decodable>::decode(&mut body, 0).unwrap();
    assert_eq!(response.error_code, ResponseError::UnsupportedVersion.code());
    assert_eq!(response.api_keys.len(), SUPPORTED.len());
    // The client then falls back and is served on the same connection.
    let response = client.call(3, &ApiVersionsRequest::default()).await;
    assert_eq!(response.error_code, 0);
}

/// Reads a v0 response header (just the correlation id).
trait DecodeV0 {
    fn decode_v0(body: &mut Bytes) -> i32;
}
impl DecodeV0 for ResponseHeader {
    fn decode_v0(body: &mut Bytes) -> i32 {
        use bytes::Buf;
        body.get_i32()
    }
}

#[tokio::test]
async fn every_api_at_every_served_version() {
    let broker = TestBroker::start_with(|c| c.num_partitions = 2).await;
    let mut client = broker.client().await;
    // Round `pick` sends each API at min + pick, capped at its max: every version of
    // every API is covered by the time the widest range (Metadata 0..=12) is done.
    let widest = SUPPORTED.iter().map(|(_, min, max)| max - min).max().unwrap();
    for pick in 0..=widest {
        let v = |key| {
            let (min, max) = range(key);
            (min + pick).min(max)
        };
        let topic = format!("every-{pick}");

        // CreateTopics with overrides, then DescribeConfigs sees them.
        let created = {
            use create_topics_request::{CreatableTopic, CreatableTopicConfig};
            let t = CreatableTopic::default()
                .with_name(topic_name(&topic))
                .with_num_partitions(3)
                .with_replication_factor(-1)
                .with_configs(vec![CreatableTopicConfig::default()
                    .with_name(s("retention.ms"))
                    .with_value(Some(s("3600000")))]);
            client
                .call(
                    v(ApiKey::CreateTopics),
                    &CreateTopicsRequest::default().with_topics(vec![t]).with_timeout_ms(5000),
                )
                .await
        };
        assert_eq!(created.topics[0].error_code, 0, "CreateTopics v{}", v(ApiKey::CreateTopics));

        let configs = client
            .call(
                v(ApiKey::DescribeConfigs),
                &DescribeConfigsRequest::default().with_resources(vec![
                    describe_configs_request::DescribeConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(s(&topic))
                        .with_configuration_keys(None),
                ]),
            )
            .await;
        let entries = &configs.results[0].configs;
        let value = |name: &str| {
            entries.iter().find(|e| &*e.name == name).and_then(|e| e.value.as_ref()).map(|v| v.to_string())
        };
        assert_eq!(value("retention.ms").as_deref(), Some("3600000"));
        assert_eq!(value("segment.bytes").as_deref(), Some("1073741824"));
        assert!(value("retention.bytes").is_some() && value("segment.ms").is_some());

        // Metadata: the topic with 3 partitions led by broker 1, and an auto-created one.
        let auto = format!("auto-{pick}");
        let mut request = MetadataRequest::default().with_topics(Some(vec![
            metadata_request::MetadataRequestTopic::default().with_name(Some(topic_name(&topic))),
            metadata_request::MetadataRequestTopic::default().with_name(Some(topic_name(&auto))),
        ]));
        if v(ApiKey::Metadata) >= 4 {
            request = request.with_allow_auto_topic_creation(true);
        }
        let metadata = client.call(v(ApiKey::Metadata), &request).await;
        assert_eq!(metadata.brokers.len(), 1);
        assert_eq!(metadata.brokers[0].port, broker.addr.port() as i32);
        assert_eq!(metadata.topics.len(), 2);
        assert_eq!(metadata.topics[0].error_code, 0);
        assert_eq!(metadata.topics[0].partitions.len(), 3);
        assert!(metadata.topics[0]
            .partitions
            .iter()
            .all(|p| p.leader_id == BrokerId(1) && p.isr_nodes == vec![BrokerId(1)]));
        assert_eq!(metadata.topics[1].error_code, 0, "auto-created");
        assert_eq!(metadata.topics[1].partitions.len(), 2, "--num-partitions for auto-created topics");

        // Produce two batches with known timestamps, fetch them back.
        let (error, base) =
            produce(&mut client, v(ApiKey::Produce), &topic, 1, batch_at(5, Compression::None, 1_000)).await;
        assert_eq!((error, base), (0, 0));
        let (error, base) =
            produce(&mut client, v(ApiKey::Produce), &topic, 1, batch_at(5, Compression::None, 2_000)).await;
        assert_eq!((error, base), (0, 5));
        let fetched = client.call(v(ApiKey::Fetch), &fetch_request(&topic, 1, 3, 100, 1)).await;
        let p = &fetched.responses[0].partitions[0];
        assert_eq!(p.error_code, 0);
        let log_start = if v(ApiKey::Fetch) >= 5 { 0 } else { -1 }; // a v5 field
        assert_eq!((p.high_watermark, p.last_stable_offset, p.log_start_offset), (10, 10, log_start));
        let offsets = offsets_in(&p.records);
        assert_eq!(offsets.first(), Some(&0), "whole batches, starting with the one holding offset 3");
        assert_eq!(offsets, (0..10).collect::<Vec<_>>());

        // ListOffsets: latest, earliest, and by timestamp through the time index.
        let lookup = |ts: i64| {
            ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![
                list_offsets_request::ListOffsetsTopic::default().with_name(topic_name(&topic)).with_partitions(vec![
                    list_offsets_request::ListOffsetsPartition::default().with_partition_index(1).with_timestamp(ts),
                ]),
            ])
        };
        for (ts, want) in [(-1, 10), (-2, 0), (0, 0), (1_003, 3), (2_000, 5), (2_004, 9), (9_999, -1)] {
            let listed = client.call(v(ApiKey::ListOffsets), &lookup(ts)).await;
            let p = &listed.topics[0].partitions[0];
            assert_eq!((p.error_code, p.offset), (0, want), "ListOffsets v{} timestamp {ts}", v(ApiKey::ListOffsets));
        }

        // A group of one: find, join, sync, heartbeat, commit, fetch offsets, describe, list, leave.
        let group = GroupId(s(&format!("group-{pick}")));
        let found =
            client.call(v(ApiKey::FindCoordinator), &FindCoordinatorRequest::default().with_key(group.0.clone())).await;
        assert_eq!((found.error_code, found.node_id, found.port), (0, BrokerId(1), broker.addr.port() as i32));
        let joined = client
            .call(
                v(ApiKey::JoinGroup),
                &JoinGroupRequest::default()
                    .with_group_id(group.clone())
                    .with_session_timeout_ms(10_000)
                    .with_rebalance_timeout_ms(10_000)
                    .with_protocol_type(s("consumer"))
                    .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default()
                        .with_name(s("range"))
                        .with_metadata(Bytes::from_static(b"subscription"))]),
            )
            .await;
        assert_eq!(joined.error_code, 0);
        assert_eq!(joined.generation_id, 1);
        assert_eq!(joined.leader, joined.member_id);
        assert_eq!(joined.members.len(), 1);
        assert_eq!(&joined.members[0].metadata[..], b"subscription", "metadata passes through untouched");
        let me = joined.member_id.clone();
        let synced = client
            .call(
                v(ApiKey::SyncGroup),
                &SyncGroupRequest::default()
                    .with_group_id(group.clone())
                    .with_generation_id(1)
                    .with_member_id(me.clone())
                    .with_protocol_type(if v(ApiKey::SyncGroup) >= 5 { Some(s("consumer")) } else { None })
                    .with_protocol_name(if v(ApiKey::SyncGroup) >= 5 { Some(s("range")) } else { None })
                    .with_assignments(vec![sync_group_request::SyncGroupRequestAssignment::default()
                        .with_member_id(me.clone())
                        .with_assignment(Bytes::from_static(b"all of it"))]),
            )
            .await;
        assert_eq!((synced.error_code, &synced.assignment[..]), (0, &b"all of it"[..]));
        let beat = client
            .call(
                v(ApiKey::Heartbeat),
                &HeartbeatRequest::default()
                    .with_group_id(group.clone())
                    .with_generation_id(1)
                    .with_member_id(me.clone()),
            )
            .await;
        assert_eq!(beat.error_code, 0);
        let committed = client
            .call(
                v(ApiKey::OffsetCommit),
                &OffsetCommitRequest::default()
                    .with_group_id(group.clone())
                    .with_generation_id_or_member_epoch(1)
                    .with_member_id(me.clone())
                    .with_topics(vec![offset_commit_request::OffsetCommitRequestTopic::default()
                        .with_name(topic_name(&topic))
                        .with_partitions(vec![offset_commit_request::OffsetCommitRequestPartition::default()
                            .with_partition_index(1)
                            .with_committed_offset(7)
                            .with_committed_metadata(Some(s("meta")))])]),
            )
            .await;
        assert_eq!(committed.topics[0].partitions[0].error_code, 0);
        let fetched = client
            .call(
                v(ApiKey::OffsetFetch),
                &OffsetFetchRequest::default().with_group_id(group.clone()).with_topics(Some(vec![
                    offset_fetch_request::OffsetFetchRequestTopic::default()
                        .with_name(topic_name(&topic))
                        .with_partition_indexes(vec![0, 1]),
                ])),
            )
            .await;
        let parts = &fetched.topics[0].partitions;
        assert_eq!((parts[0].committed_offset, parts[1].committed_offset), (-1, 7));
        assert_eq!(parts[1].metadata.as_deref(), Some("meta"));
        let described = client
            .call(v(ApiKey::DescribeGroups), &DescribeGroupsRequest::default().with_groups(vec![group.clone()]))
            .await;
        let g = &described.groups[0];
        assert_eq!(
            (&*g.group_state, &*g.protocol_type, &*g.protocol_data, g.members.len()),
            ("Stable", "consumer", "range", 1)
        );
        assert_eq!(&g.members[0].member_assignment[..], b"all of it");
        let listed = client.call(v(ApiKey::ListGroups), &ListGroupsRequest::default()).await;
        assert!(listed.groups.iter().any(|l| l.group_id == group));
        let left = if v(ApiKey::LeaveGroup) >= 3 {
            client
                .call(
                    v(ApiKey::LeaveGroup),
                    &LeaveGroupRequest::default()
                        .with_group_id(group.clone())
                        .with_members(vec![leave_group_request::MemberIdentity::default().with_member_id(me.clone())]),
                )
                .await
        } else {
            client
                .call(
                    v(ApiKey::LeaveGroup),
                    &LeaveGroupRequest::default().with_group_id(group.clone()).with_member_id(me.clone()),
                )
                .await
        };
        assert_eq!(left.error_code, 0);
        assert!(left.members.iter().all(|m| m.error_code == 0));
        let described = client
            .call(v(ApiKey::DescribeGroups), &DescribeGroupsRequest::default().with_groups(vec![group.clone()]))
            .await;
        assert_eq!(&*described.groups[0].group_state, "Empty");

        // InitProducerId: a fresh id, then (v3+) the same id with the next epoch.
        let init = client
            .call(
                v(ApiKey::InitProducerId),
                &InitProducerIdRequest::default().with_transactional_id(None).with_transaction_timeout_ms(60_000),
            )
            .await;
        assert_eq!((init.error_code, init.producer_epoch), (0, 0));
        assert!(init.producer_id.0 >= 0);
        if v(ApiKey::InitProducerId) >= 3 {
            let again = client
                .call(
                    v(ApiKey::InitProducerId),
                    &InitProducerIdRequest::default()
                        .with_transactional_id(None)
                        .with_producer_id(init.producer_id)
                        .with_producer_epoch(0),
                )
                .await;
            assert_eq!((again.error_code, again.producer_id, again.producer_epoch), (0, init.producer_id, 1));
        }

        // DeleteTopics: gone from metadata.
        let deleted = client
            .call(
                v(ApiKey::DeleteTopics),
                &DeleteTopicsRequest::default().with_topic_names(vec![topic_name(&topic)]).with_timeout_ms(5000),
            )
            .await;
        assert_eq!(deleted.responses[0].error_code, 0);
        // Auto-create would bring a deleted topic back on v0-3, as in Kafka; v4+ can say no.
        if v(ApiKey::Metadata) >= 4 {
            let metadata = client
                .call(
                    v(ApiKey::Metadata),
                    &MetadataRequest::default()
                        .with_topics(Some(vec![
                            metadata_request::MetadataRequestTopic::default().with_name(Some(topic_name(&topic)))
                        ]))
                        .with_allow_auto_topic_creation(false),
                )
                .await;
            assert_eq!(metadata.topics[0].error_code, ResponseError::UnknownTopicOrPartition.code());
        }
    }
}

#[tokio::test]
async fn corrupt_and_oversized_batches_are_refused_and_nothing_is_written() {
    let broker = TestBroker::start_with(|c| c.max_message_bytes = 4096).await;
    let mut client = broker.client().await;
    assert_eq!(create(&mut client, "strict", 1, &[]).await, 0);
    let version = range(ApiKey::Produce).1;
    let good = batch(3, Compression::None);

    let mut corrupt = good.to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x40;
    let (error, _) = produce(&mut client, version, "strict", 0, Bytes::from(corrupt)).await;
    assert_eq!(error, ResponseError::CorruptMessage.code());

    // A good batch followed by a torn one: all or nothing.
    let mut two = good.to_vec();
    two.extend_from_slice(&good[..good.len() - 5]);
    let (error, _) = produce(&mut client, version, "strict", 0, Bytes::from(two)).await;
    assert_eq!(error, ResponseError::CorruptMessage.code());

    let big = batch(400, Compression::None);
    assert!(big.len() > 4096);
    let (error, _) = produce(&mut client, version, "strict", 0, big).await;
    assert_eq!(error, ResponseError::MessageTooLarge.code());

    let fetched = client.call(range(ApiKey::Fetch).1, &fetch_request("strict", 0, 0, 0, 0)).await;
    assert_eq!(fetched.responses[0].partitions[0].high_watermark, 0, "nothing of the refused batches was written");

    let (error, base) = produce(&mut client, version, "strict", 0, good).await;
    assert_eq!((error, base), (0, 0), "the log is still usable");

    let (error, _) = produce(&mut client, version, "no-such-topic", 0, batch(1, Compression::None)).await;
    assert_eq!(error, ResponseError::UnknownTopicOrPartition.code());
}

#[tokio::test]
async fn bad_frames_close_the_connection_and_the_broker_keeps_serving() {
    let broker = TestBroker::start_with(|c| c.max_request_bytes = 1 << 20).await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("unknown API key", vec![0, 0, 0, 8, 0x7f, 0x00, 0, 0, 0, 0, 0, 1]),
        ("Produce v1 (below the range)", vec![0, 0, 0, 10, 0, 0, 0, 1, 0, 0, 0, 1, 0xff, 0xff]),
        ("Fetch v99", vec![0, 0, 0, 10, 0, 1, 0, 99, 0, 0, 0, 1, 0xff, 0xff]),
        ("frame shorter than a header", vec![0, 0, 0, 3, 1, 2, 3]),
        ("negative size", vec![0xff, 0xff, 0xff, 0xf0]),
        ("larger than --max-request-bytes", (2_000_000i32).to_be_bytes().to_vec()),
        ("Metadata v1 body cut short", vec![0, 0, 0, 14, 0, 3, 0, 1, 0, 0, 0, 1, 0xff, 0xff, 0, 0, 0, 9]),
        // Two billion topics in 18 bytes: the codec reserves the capacity before reading
        // any; this aborted the process until minicore::alloc::ReserveHuge.
        (
            "Metadata v1 claiming 2^31-1 topics",
            vec![0, 0, 0, 14, 0, 3, 0, 1, 0, 0, 0, 1, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff],
        ),
        ("JoinGroup v0 claiming 2^31-1 protocols", {
            let mut f = vec![0, 0, 0, 0, 0, 11, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0, 1, b'g', 0, 0, 0x27, 0x10, 0, 0];
            f.extend_from_slice(&[0, 1, b'c', 0x7f, 0xff, 0xff, 0xff]);
            let size = (f.len() - 4) as i32;
            f[..4].copy_from_slice(&size.to_be_bytes());
            f
        }),
    ];
    for (what, bytes) in cases {
        let mut client = broker.client().await;
        client.send_raw(&bytes).await;
        assert!(client.is_closed().await, "{what}: the connection should be closed");
    }
    let mut client = broker.client().await;
    let response = client.call(0, &ApiVersionsRequest::default()).await;
    assert_eq!(response.error_code, 0, "still serving after every bad frame");
}

#[tokio::test]
async fn fetch_long_polls_until_max_wait_or_an_append() {
    let broker = TestBroker::start().await;
    let mut client = broker.client().await;
    assert_eq!(create(&mut client, "poll", 1, &[]).await, 0);
    let version = range(ApiKey::Fetch).1;

    let started = std::time::Instant::now();
    let empty = client.call(version, &fetch_request("poll", 0, 0, 300, 1)).await;
    let waited = started.elapsed();
    assert!(offsets_in(&empty.responses[0].partitions[0].records).is_empty());
    assert!(waited >= std::time::Duration::from_millis(280), "returned after {waited:?}, before max_wait_ms");

    let started = std::time::Instant::now();
    let zero = client.call(version, &fetch_request("poll", 0, 0, 5_000, 0)).await;
    assert!(offsets_in(&zero.responses[0].partitions[0].records).is_empty());
    assert!(started.elapsed() < std::time::Duration::from_secs(4), "min_bytes 0 answers at once");

    let mut producer = broker.client().await;
    let waiter = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let response = client.call(version, &fetch_request("poll", 0, 0, 20_000, 1)).await;
        (response, started.elapsed())
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let (error, _) = produce(&mut producer, range(ApiKey::Produce).1, "poll", 0, batch(2, Compression::None)).await;
    assert_eq!(error, 0);
    let (response, waited) = waiter.await.unwrap();
    assert_eq!(offsets_in(&response.responses[0].partitions[0].records), vec![0, 1]);
    assert!(waited < std::time::Duration::from_secs(10), "woke on the append, not at max_wait ({waited:?})");
}

#[tokio::test]
async fn offsets_out_of_range_and_log_start_after_retention() {
    let mut broker = TestBroker::start_with(|c| {
        c.segment_bytes = 1024;
        c.retention_ms = -1;
        c.retention_bytes = 2048;
        c.retention_check_ms = 50;
    })
    .await;
    let mut client = broker.client().await;
    assert_eq!(create(&mut client, "small", 1, &[]).await, 0);
    for _ in 0..40 {
        let (error, _) = produce(&mut client, range(ApiKey::Produce).1, "small", 0, batch(5, Compression::None)).await;
        assert_eq!(error, 0);
    }
    // Retention runs every 50 ms, also while the produces above ran; wait until the log
    // start offset has stopped moving (three checks in a row agree).
    let mut seen = Vec::new();
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(60)).await;
        let r = client.call(range(ApiKey::Fetch).1, &fetch_request("small", 0, 199, 0, 0)).await;
        seen.push(r.responses[0].partitions[0].log_start_offset);
        if seen.len() >= 3 && seen[seen.len() - 3..].iter().all(|&s| s == seen[seen.len() - 1]) {
            break;
        }
    }
    let log_start = *seen.last().unwrap();
    assert!(log_start > 0, "retention by size moved the log start offset");
    let r = client.call(range(ApiKey::Fetch).1, &fetch_request("small", 0, 0, 0, 0)).await;
    assert_eq!(r.responses[0].partitions[0].error_code, ResponseError::OffsetOutOfRange.code());
    let r = client.call(range(ApiKey::Fetch).1, &fetch_request("small", 0, 201, 0, 0)).await;
    assert_eq!(r.responses[0].partitions[0].error_code, ResponseError::OffsetOutOfRange.code());
    let r = client.call(range(ApiKey::Fetch).1, &fetch_request("small", 0, log_start, 0, 0)).await;
    let p = &r.responses[0].partitions[0];
    assert_eq!(p.error_code, 0, "fetch at the log start offset {log_start}");
    assert_eq!(offsets_in(&p.records).first(), Some(&log_start));
    broker.stop().await;
}

#[tokio::test]
async fn committed_offsets_and_topics_survive_a_restart() {
    let mut broker = TestBroker::start().await;
    let dir = broker.dir.path().to_path_buf();
    {
        let mut client = broker.client().await;
        assert_eq!(create(&mut client, "kept", 2, &[("segment.bytes", "100000")]).await, 0);
        let (error, _) = produce(&mut client, range(ApiKey::Produce).1, "kept", 1, batch(4, Compression::None)).await;
        assert_eq!(error, 0);
        let committed = client
            .call(
                range(ApiKey::OffsetCommit).1,
                &OffsetCommitRequest::default()
                    .with_group_id(GroupId(s("survivor")))
                    .with_generation_id_or_member_epoch(-1)
                    .with_topics(vec![offset_commit_request::OffsetCommitRequestTopic::default()
                        .with_name(topic_name("kept"))
                        .with_partitions(vec![offset_commit_request::OffsetCommitRequestPartition::default()
                            .with_partition_index(1)
                            .with_committed_offset(3)])]),
            )
            .await;
        assert_eq!(committed.topics[0].partitions[0].error_code, 0);
    }
    broker.stop().await;
    let mut config = minilog::config::BrokerConfig::with_dir(&dir, "127.0.0.1:0".parse().unwrap());
    config.admin_port = Some(0);
    let running = minilog::start(config).await.unwrap();
    let mut client = Client::connect(running.addr).await;
    let fetched = client
        .call(
            range(ApiKey::OffsetFetch).1,
            &OffsetFetchRequest::default().with_group_id(GroupId(s("survivor"))).with_topics(None),
        )
        .await;
    assert_eq!(fetched.topics.len(), 1);
    assert_eq!(
        (fetched.topics[0].partitions[0].partition_index, fetched.topics[0].partitions[0].committed_offset),
        (1, 3)
    );
    let configs = client
        .call(
            range(ApiKey::DescribeConfigs).1,
            &DescribeConfigsRequest::default().with_resources(vec![
                describe_configs_request::DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s("kept"))
                    .with_configuration_keys(Some(vec![s("segment.bytes")])),
            ]),
        )
        .await;
    assert_eq!(configs.results[0].configs[0].value.as_deref(), Some("100000"), "overrides survive a restart");
    let r = client.call(range(ApiKey::Fetch).1, &fetch_request("kept", 1, 0, 0, 0)).await;
    assert_eq!(offsets_in(&r.responses[0].partitions[0].records), vec![0, 1, 2, 3]);
    running.server.shutdown.trigger();
    running.wait().await;
}

async fn join(client: &mut Client, group: &str, member: &str) -> JoinGroupResponse {
    client
        .call(
            range(ApiKey::JoinGroup).1,
            &JoinGroupRequest::default()
                .with_group_id(GroupId(s(group)))
                .with_member_id(s(member))
                .with_session_timeout_ms(1_000)
                .with_rebalance_timeout_ms(5_000)
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default()
                    .with_name(s("range"))
                    .with_metadata(Bytes::copy_from_slice(member.as_bytes()))]),
        )
        .await
}

async fn heartbeat(client: &mut Client, group: &str, generation: i32, member: &str) -> i16 {
    client
        .call(
            range(ApiKey::Heartbeat).1,
            &HeartbeatRequest::default()
                .with_group_id(GroupId(s(group)))
                .with_generation_id(generation)
                .with_member_id(s(member)),
        )
        .await
        .error_code
}

async fn sync(
    client: &mut Client,
    group: &str,
    generation: i32,
    member: &str,
    assignments: &[(&str, &str)],
) -> SyncGroupResponse {
    client
        .call(
            range(ApiKey::SyncGroup).1,
            &SyncGroupRequest::default()
                .with_group_id(GroupId(s(group)))
                .with_generation_id(generation)
                .with_member_id(s(member))
                .with_assignments(
                    assignments
                        .iter()
                        .map(|(m, a)| {
                            sync_group_request::SyncGroupRequestAssignment::default()
                                .with_member_id(s(m))
                                .with_assignment(Bytes::copy_from_slice(a.as_bytes()))
                        })
                        .collect(),
                ),
        )
        .await
}

#[tokio::test]
async fn groups_rebalance_on_join_leave_and_session_timeout() {
    let broker = TestBroker::start().await;
    let (mut a, mut b) = (broker.client().await, broker.client().await);
    let group = "rebalancing";

    let first = join(&mut a, group, "").await;
    assert_eq!((first.error_code, first.generation_id), (0, 1));
    let id_a = first.member_id.to_string();
    assert_eq!(&*sync(&mut a, group, 1, &id_a, &[(&id_a, "p0,p1")]).await.assignment, b"p0,p1");

    // B joins: its JoinGroup parks until A rejoins; A learns through its heartbeat.
    let joining_b = tokio::spawn(async move {
        let r = join(&mut b, group, "").await;
        (b, r)
    });
    let mut seen = 0;
    for _ in 0..50 {
        seen = heartbeat(&mut a, group, 1, &id_a).await;
        if seen != 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(seen, ResponseError::RebalanceInProgress.code());
    let stale = sync(&mut a, group, 1, &id_a, &[]).await;
    assert_eq!(stale.error_code, ResponseError::RebalanceInProgress.code());
    let rejoined = join(&mut a, group, &id_a).await;
    let (mut b, joined_b) = joining_b.await.unwrap();
    assert_eq!((rejoined.generation_id, joined_b.generation_id), (2, 2));
    assert_eq!(rejoined.leader.as_str(), id_a, "the leader stays the leader");
    assert_eq!(rejoined.members.len(), 2, "the leader sees every subscription");
    assert!(joined_b.members.is_empty(), "followers do not");
    let id_b = joined_b.member_id.to_string();

    // B's SyncGroup waits for the leader's assignment.
    let syncing_b = {
        let id_b = id_b.clone();
        tokio::spawn(async move {
            let r = sync(&mut b, group, 2, &id_b, &[]).await;
            (b, r)
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let leader_sync = sync(&mut a, group, 2, &id_a, &[(&id_a, "p0"), (&id_b, "p1")]).await;
    assert_eq!(&*leader_sync.assignment, b"p0");
    let (mut b, follower_sync) = syncing_b.await.unwrap();
    assert_eq!(&*follower_sync.assignment, b"p1");
    assert_eq!(heartbeat(&mut a, group, 1, &id_a).await, ResponseError::IllegalGeneration.code());
    assert_eq!(heartbeat(&mut b, group, 2, "stranger").await, ResponseError::UnknownMemberId.code());

    // B goes silent: after its 1 s session timeout it is removed and A rebalances alone.
    let mut seen = 0;
    for _ in 0..60 {
        seen = heartbeat(&mut a, group, 2, &id_a).await;
        if seen != 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(seen, ResponseError::RebalanceInProgress.code(), "B's session expired");
    let alone = join(&mut a, group, &id_a).await;
    assert_eq!((alone.generation_id, alone.members.len()), (3, 1));
    assert_eq!(heartbeat(&mut b, group, 2, &id_b).await, ResponseError::UnknownMemberId.code());
}

/// Valid request frames of several APIs, to mutate.
fn seed_frames() -> Vec<Vec<u8>> {
    let metadata =
        minilog::protocol::encode_request(ApiKey::Metadata, 12, 1, &MetadataRequest::default().with_topics(None))
            .unwrap();
    let produce = {
        use produce_request::{PartitionProduceData, TopicProduceData};
        let request = ProduceRequest::default().with_acks(1).with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name("fuzz"))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch(2, Compression::None)))])]);
        minilog::protocol::encode_request(ApiKey::Produce, 9, 2, &request).unwrap()
    };
    let fetch = minilog::protocol::encode_request(ApiKey::Fetch, 12, 3, &fetch_request("fuzz", 0, 0, 0, 0)).unwrap();
    let join = minilog::protocol::encode_request(
        ApiKey::JoinGroup,
        0,
        4,
        &JoinGroupRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_session_timeout_ms(5000)
            .with_protocol_type(s("consumer")),
    )
    .unwrap();
    // Without the size prefix: handle_frame takes the frame body.
    [metadata, produce, fetch, join].into_iter().map(|f| f[4..].to_vec()).collect()
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn server() -> (tokio::runtime::Runtime, TestBroker) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let broker = runtime.block_on(async {
            let broker = TestBroker::start().await;
            let mut client = broker.client().await;
            assert_eq!(create(&mut client, "fuzz", 1, &[]).await, 0);
            broker
        });
        (runtime, broker)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Arbitrary bytes as a frame body: an answer or a close, never a panic.
        #[test]
        fn arbitrary_frames_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let (runtime, broker) = server();
            let server = broker.running.as_ref().unwrap().server.clone();
            runtime.block_on(async {
                let _ = minilog::protocol::handle_frame(&server, "127.0.0.1", Bytes::from(body)).await;
            });
        }

        /// Valid frames with bytes flipped, cut or appended reach the decoders and
        /// handlers with nearly valid input: still never a panic.
        #[test]
        fn mutated_frames_never_panic(
            which in 0usize..4,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in proptest::option::of(any::<usize>()),
        ) {
            let (runtime, broker) = server();
            let server = broker.running.as_ref().unwrap().server.clone();
            let mut frame = seed_frames()[which].clone();
            for (at, byte) in flips {
                // Keep the api key and version valid most of the time so decoding goes deep.
                let at = 4 + at % (frame.len() - 4);
                frame[at] ^= byte;
            }
            if let Some(cut) = cut {
                frame.truncate(4 + cut % (frame.len() - 3));
            }
            runtime.block_on(async {
                // Only panics matter here; a long poll or a parked join may simply time out.
                let _ = tokio::time::timeout(
                    std::time::Duration::from_millis(200),
                    minilog::protocol::handle_frame(&server, "127.0.0.1", Bytes::from(frame)),
                )
                .await;
            });
        }
    }
}

/// One batch from an idempotent producer: `n` records with sequences from `first_sequence`.
fn idempotent_batch(n: usize, producer_id: i64, epoch: i16, first_sequence: i32) -> Bytes {
    let producer = support::Producer { id: producer_id, epoch, first_sequence };
    support::producer_batch(n, Compression::None, 1_700_000_000_000, |i| format!("v{i}").into_bytes(), producer)
}

#[tokio::test]
async fn idempotent_producers_are_not_written_twice_even_across_a_restart() {
    let mut broker = TestBroker::start().await;
    let dir = broker.dir.path().to_path_buf();
    let version = range(ApiKey::Produce).1;
    let producer_id;
    {
        let mut client = broker.client().await;
        assert_eq!(create(&mut client, "exactly-once-ish", 1, &[]).await, 0);
        let init = client
            .call(range(ApiKey::InitProducerId).1, &InitProducerIdRequest::default().with_transactional_id(None))
            .await;
        producer_id = init.producer_id.0;
        let topic = "exactly-once-ish";
        assert_eq!(produce(&mut client, version, topic, 0, idempotent_batch(3, producer_id, 0, 0)).await, (0, 0));
        assert_eq!(produce(&mut client, version, topic, 0, idempotent_batch(2, producer_id, 0, 3)).await, (0, 3));
        // A retry of either batch gets its first offset back and writes nothing.
        assert_eq!(produce(&mut client, version, topic, 0, idempotent_batch(3, producer_id, 0, 0)).await, (0, 0));
        assert_eq!(produce(&mut client, version, topic, 0, idempotent_batch(2, producer_id, 0, 3)).await, (0, 3));
        // A gap, and a fenced epoch.
        let (error, _) = produce(&mut client, version, topic, 0, idempotent_batch(1, producer_id, 0, 9)).await;
        assert_eq!(error, ResponseError::OutOfOrderSequenceNumber.code());
        assert_eq!(produce(&mut client, version, topic, 0, idempotent_batch(1, producer_id, 1, 0)).await, (0, 5));
        let (error, _) = produce(&mut client, version, topic, 0, idempotent_batch(1, producer_id, 0, 5)).await;
        assert_eq!(error, ResponseError::InvalidProducerEpoch.code());
        let fetched = client.call(range(ApiKey::Fetch).1, &fetch_request(topic, 0, 0, 0, 0)).await;
        assert_eq!(offsets_in(&fetched.responses[0].partitions[0].records), vec![0, 1, 2, 3, 4, 5], "no duplicates");
    }
    broker.stop().await;

    let mut config = minilog::config::BrokerConfig::with_dir(&dir, "127.0.0.1:0".parse().unwrap());
    config.admin_port = Some(0);
    let running = minilog::start(config).await.unwrap();
    let mut client = Client::connect(running.addr).await;
    let topic = "exactly-once-ish";
    // The retry crosses the restart: the state was rebuilt from the log.
    assert_eq!(produce(&mut client, version, topic, 0, idempotent_batch(1, producer_id, 1, 0)).await, (0, 5));
    assert_eq!(produce(&mut client, version, topic, 0, idempotent_batch(1, producer_id, 1, 1)).await, (0, 6));
    let init = client
        .call(range(ApiKey::InitProducerId).1, &InitProducerIdRequest::default().with_transactional_id(None))
        .await;
    assert!(init.producer_id.0 > producer_id, "ids are never handed out twice, even across restarts");
    running.server.shutdown.trigger();
    running.wait().await;
}

#[tokio::test]
async fn acks_zero_gets_no_answer_and_a_failed_one_closes_the_connection() {
    use produce_request::{PartitionProduceData, TopicProduceData};
    let broker = TestBroker::start().await;
    let mut client = broker.client().await;
    assert_eq!(create(&mut client, "fire-and-forget", 1, &[]).await, 0);
    let version = range(ApiKey::Produce).1;
    let request = |topic: &str, acks: i16| {
        ProduceRequest::default().with_acks(acks).with_timeout_ms(5000).with_topic_data(vec![
            TopicProduceData::default().with_name(topic_name(topic)).with_partition_data(vec![
                PartitionProduceData::default().with_index(0).with_records(Some(batch(3, Compression::None))),
            ]),
        ])
    };
    // acks=0: no response; the next request's answer is the next frame on the wire.
    let frame =
        minilog::protocol::encode_request(ApiKey::Produce, version, 500, &request("fire-and-forget", 0)).unwrap();
    client.send_raw(&frame).await;
    let fetched = client.call(range(ApiKey::Fetch).1, &fetch_request("fire-and-forget", 0, 0, 1000, 1)).await;
    assert_eq!(offsets_in(&fetched.responses[0].partitions[0].records), vec![0, 1, 2], "written without an answer");

    // acks=-1 is answered like acks=1 (one broker is the whole in-sync replica set);
    // any other value is INVALID_REQUIRED_ACKS.
    let all = client.call(version, &request("fire-and-forget", -1)).await;
    assert_eq!(all.responses[0].partition_responses[0].base_offset, 3);
    let two = client.call(version, &request("fire-and-forget", 2)).await;
    assert_eq!(two.responses[0].partition_responses[0].error_code, ResponseError::InvalidRequiredAcks.code());

    // A failed acks=0 produce closes the connection: the client's only way to notice.
    let frame = minilog::protocol::encode_request(ApiKey::Produce, version, 501, &request("no-such-topic", 0)).unwrap();
    client.send_raw(&frame).await;
    assert!(client.is_closed().await, "a failed acks=0 produce closes the connection");
}
