//! A started in-process broker and a tiny Kafka request/response channel, for tests
//! that exercise the protocol message by message.
//!
//! The requests are encoded by the `kafka-protocol` crate, the same codec a Rust client
//! would use, so these tests check our handlers, not a codec we wrote twice.

#![allow(dead_code)]

use bytes::{Buf, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::{Decodable, HeaderVersion, Request};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct TestBroker {
    pub running: Option<minilog::Running>,
    pub addr: std::net::SocketAddr,
    pub dir: tempfile::TempDir,
}

impl TestBroker {
    pub async fn start() -> TestBroker {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut minilog::config::BrokerConfig)) -> TestBroker {
        let dir = tempfile::tempdir().unwrap();
        let mut config = minilog::config::BrokerConfig::with_dir(dir.path(), "127.0.0.1:0".parse().unwrap());
        // With --listen on port 0 and no --admin-port, the admin endpoint gets a free port too.
        config.admin_port = None;
        tweak(&mut config);
        let running = minilog::start(config).await.unwrap();
        TestBroker { addr: running.addr, running: Some(running), dir }
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.addr).await
    }

    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.server.shutdown.trigger();
            running.wait().await;
        }
    }
}

pub struct Client {
    pub stream: TcpStream,
    next_id: i32,
}

impl Client {
    pub async fn connect(addr: std::net::SocketAddr) -> Client {
        Client { stream: TcpStream::connect(addr).await.unwrap(), next_id: 1 }
    }

    /// Sends one request at `version` and decodes its response.
    pub async fn call<R: Request>(&mut self, version: i16, request: &R) -> R::Response {
        let key = ApiKey::try_from(R::KEY).unwrap();
        let id = self.next_id;
        self.next_id += 1;
        let frame = minilog::protocol::encode_request(key, version, id, request)
            .unwrap_or_else(|e| panic!("the test built a {key:?} v{version} request that cannot be encoded: {e}"));
        self.stream.write_all(&frame).await.unwrap();
        let mut body = self.read_frame().await.expect("the broker closed the connection instead of answering");
        let header = ResponseHeader::decode(&mut body, R::Response::header_version(version)).unwrap();
        assert_eq!(header.correlation_id, id, "responses come back in order");
        let response = R::Response::decode(&mut body, version).unwrap();
        assert!(!body.has_remaining(), "{key:?} v{version}: {} bytes left after the response", body.remaining());
        response
    }

    /// Sends raw bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Reads one response frame, or None if the broker closed the connection.
    pub async fn read_frame(&mut self) -> Option<bytes::Bytes> {
        let mut size = [0u8; 4];
        let read = tokio::time::timeout(std::time::Duration::from_secs(10), self.stream.read_exact(&mut size))
            .await
            .expect("no answer within 10 s");
        if read.is_err() {
            return None;
        }
        let mut body = BytesMut::zeroed(i32::from_be_bytes(size) as usize);
        self.stream.read_exact(&mut body).await.ok()?;
        Some(body.freeze())
    }

    /// Whether the broker closed the connection (reads EOF within 5 s).
    pub async fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(std::time::Duration::from_secs(5), self.stream.read(&mut byte)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

/// One v2 record batch of `n` records `key-i` / `value-i`, encoded by kafka-protocol.
pub fn batch(n: usize, compression: Compression) -> bytes::Bytes {
    batch_at(n, compression, 1_700_000_000_000)
}

/// [`batch`] with the timestamps `timestamp, timestamp + 1, ...`.
pub fn batch_at(n: usize, compression: Compression, timestamp: i64) -> bytes::Bytes {
    batch_with(n, compression, timestamp, |i| format!("value-{i}").into_bytes())
}

/// One uncompressed batch of `n` records with `value_len`-byte values, for tests where the
/// size of a batch matters (segment rolls, index intervals, reads bounded by bytes).
pub fn sized_batch(n: usize, value_len: usize, timestamp: i64) -> bytes::Bytes {
    assert!(n > 0, "a batch holds at least one record");
    batch_with(n, Compression::None, timestamp, |i| vec![(i % 251) as u8; value_len])
}

/// The builder the others share: one v2 batch of `n` records, record `i` with key `key-i`,
/// value `value(i)` and timestamp `timestamp + i`, encoded by kafka-protocol (the codec a
/// Rust client would use, so the broker is checked against code it does not share).
pub fn batch_with(
    n: usize,
    compression: Compression,
    timestamp: i64,
    value: impl Fn(usize) -> Vec<u8>,
) -> bytes::Bytes {
    producer_batch(n, compression, timestamp, value, Producer::NONE)
}

/// Who wrote a batch: an idempotent producer's id, epoch and first sequence, or none.
#[derive(Clone, Copy, Debug)]
pub struct Producer {
    pub id: i64,
    pub epoch: i16,
    pub first_sequence: i32,
}

impl Producer {
    /// A producer without idempotence: no id, no epoch, base sequence -1.
    pub const NONE: Producer = Producer { id: -1, epoch: -1, first_sequence: -1 };
}

/// [`batch_with`] written by `producer`.
pub fn producer_batch(
    n: usize,
    compression: Compression,
    timestamp: i64,
    value: impl Fn(usize) -> Vec<u8>,
    producer: Producer,
) -> bytes::Bytes {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: producer.id,
            producer_epoch: producer.epoch,
            timestamp_type: TimestampType::Creation,
            // The encoder starts a new batch whenever offset - sequence changes, so the
            // sequences count up with the offsets from the producer's first sequence.
            offset: i as i64,
            sequence: producer.first_sequence + i as i32,
            timestamp: timestamp + i as i64,
            key: Some(format!("key-{i}").into()),
            value: Some(value(i).into()),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression }).unwrap();
    buf.freeze()
}
