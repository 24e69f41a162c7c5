//! `/metrics` on the admin port reports what the issue asks for: bytes and records in
//! and out per topic, request latency by API, log end offsets and consumer-group lag.

mod support;

use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use support::{batch, TestBroker};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    out
}

fn name(text: &str) -> TopicName {
    TopicName(StrBytes::from_string(text.into()))
}

#[tokio::test]
async fn metrics_cover_traffic_latency_offsets_and_lag() {
    let broker = TestBroker::start().await;
    let admin = broker.running.as_ref().unwrap().admin_addr.expect("admin endpoint on");
    let mut client = broker.client().await;

    let metadata = MetadataRequest::default()
        .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default().with_name(Some(name("metered")))]));
    assert_eq!(client.call(12, &metadata).await.topics[0].error_code, 0);
    let records = batch(10, Compression::None);
    let produce =
        ProduceRequest::default().with_acks(1).with_topic_data(vec![produce_request::TopicProduceData::default()
            .with_name(name("metered"))
            .with_partition_data(vec![produce_request::PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records.clone()))])]);
    assert_eq!(client.call(9, &produce).await.responses[0].partition_responses[0].error_code, 0);
    let fetch = FetchRequest::default().with_max_bytes(1 << 20).with_topics(vec![fetch_request::FetchTopic::default()
        .with_topic(name("metered"))
        .with_partitions(vec![fetch_request::FetchPartition::default().with_partition_max_bytes(1 << 20)])]);
    assert_eq!(client.call(12, &fetch).await.responses[0].partitions[0].error_code, 0);
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("readers")))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![offset_commit_request::OffsetCommitRequestTopic::default()
            .with_name(name("metered"))
            .with_partitions(vec![
                offset_commit_request::OffsetCommitRequestPartition::default().with_committed_offset(4)
            ])]);
    assert_eq!(client.call(8, &commit).await.topics[0].partitions[0].error_code, 0);

    let text = scrape(admin).await;
    let bytes = records.len();
    for line in [
        format!("minilog_bytes_in_total{{topic=\"metered\"}} {bytes}"),
        "minilog_records_in_total{topic=\"metered\"} 10".to_string(),
        format!("minilog_bytes_out_total{{topic=\"metered\"}} {bytes}"),
        "minilog_records_out_total{topic=\"metered\"} 10".to_string(),
        "minilog_log_end_offset{partition=\"0\",topic=\"metered\"} 10".to_string(),
        "minilog_consumer_group_lag{group=\"readers\",partition=\"0\",topic=\"metered\"} 6".to_string(),
        "minilog_request_duration_seconds_count{api=\"Produce\"} 1".to_string(),
        "minilog_request_duration_seconds_count{api=\"Fetch\"} 1".to_string(),
        "minilog_request_duration_seconds_count{api=\"Metadata\"} 1".to_string(),
    ] {
        assert!(text.contains(&line), "missing `{line}` in:\n{text}");
    }
}
