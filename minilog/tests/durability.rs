//! The flush policies' promise, checked at the moment of acknowledgement: under
//! `always` and `interval:N`, every produce the broker acknowledges is already covered by
//! an fsync; concurrent produces share fsyncs (group commit). The same check run against
//! `os`, which makes no such promise, fails, which shows the check can fail.

mod support;

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::records::Compression;
use minilog::broker::Broker;
use minilog::config::{BrokerConfig, FlushPolicy};

const PRODUCERS: usize = 16;
const BATCHES_EACH: usize = 20;

/// Runs `PRODUCERS` concurrent producers; returns (acknowledgements that were not yet
/// covered by an fsync, fsync rounds run, batches appended).
async fn produce_concurrently(flush: FlushPolicy) -> (usize, u64, usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = BrokerConfig::with_dir(dir.path(), "127.0.0.1:0".parse().unwrap());
    config.flush = flush;
    let broker = Arc::new(Broker::open(config, ("127.0.0.1".into(), 0), Default::default()).unwrap());
    broker.create_topic("durable", 1, 1, &[], false).unwrap();
    if let FlushPolicy::Interval(every) = flush {
        tokio::spawn(broker.clone().run_interval_flusher(every));
    }
    let partition = broker.partition("durable", 0).unwrap();
    let mut tasks = Vec::new();
    for _ in 0..PRODUCERS {
        let (broker, partition) = (broker.clone(), partition.clone());
        tasks.push(tokio::spawn(async move {
            let mut early = 0;
            for _ in 0..BATCHES_EACH {
                let mut records = support::batch(10, Compression::None).to_vec();
                let appended = broker.append(&partition, &mut records).unwrap();
                let end = appended.info.last_offset + 1;
                broker.durable(&partition, end).await.unwrap();
                // The acknowledgement would be sent now: is it on disk?
                if partition.flushed_offset() < end {
                    early += 1;
                }
            }
            early
        }));
    }
    let mut early = 0;
    for task in tasks {
        early += task.await.unwrap();
    }
    (early, partition.fsyncs(), PRODUCERS * BATCHES_EACH)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_acknowledges_only_fsynced_produces_and_shares_fsyncs() {
    let (early, fsyncs, batches) = produce_concurrently(FlushPolicy::Always).await;
    assert_eq!(early, 0, "an acknowledgement went out before its fsync");
    assert!(fsyncs < batches as u64, "{fsyncs} fsyncs for {batches} produces: concurrent produces should share fsyncs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_acknowledges_only_after_the_covering_fsync() {
    let (early, fsyncs, batches) = produce_concurrently(FlushPolicy::Interval(Duration::from_millis(5))).await;
    assert_eq!(early, 0, "an acknowledgement went out before its fsync");
    assert!(fsyncs < batches as u64, "{fsyncs} fsyncs for {batches} produces");
}

/// The deliberately broken variant: `os` acknowledges before any fsync, and the same
/// check catches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_catches_acknowledgements_before_fsync() {
    let (early, fsyncs, batches) = produce_concurrently(FlushPolicy::Os).await;
    assert_eq!(fsyncs, 0);
    assert_eq!(early, batches, "under os no acknowledgement waits for an fsync");
}
