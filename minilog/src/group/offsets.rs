//! Committed consumer offsets, kept in the broker's own log.
//!
//! Like Kafka, every OffsetCommit is appended to the internal topic
//! `__consumer_offsets` as one record per partition, and the latest record for a
//! (group, topic, partition) key wins. On start the broker replays that topic to
//! rebuild the in-memory table, so committed offsets survive a restart with the same
//! durability as any produce under the broker's flush policy.
//!
//! The record layout is Kafka's own: key `OffsetCommitKey` v1 (version i16 = 1, group,
//! topic, partition i32) and value `OffsetCommitValue` v3 (version i16 = 3, offset i64,
//! leader epoch i32, metadata, commit timestamp i64); strings are an i16 length then
//! UTF-8. So `kcat -C -t __consumer_offsets` shows the same bytes as on a real broker.
//!
//! Left out: group metadata records (Kafka also persists members and assignments, so a
//! coordinator failover keeps the generation; here a restart makes members rejoin), and
//! compaction of the topic (it grows by one record per committed partition; retention
//! is the topic's, 7 days by default, which keeps the latest commits of any group that
//! commits at least weekly).

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use parking_lot::Mutex;

use crate::broker::{now_ms, Broker, Partition, ProduceError, OFFSETS_TOPIC};

/// Kafka's limit on commit metadata (`offset.metadata.max.bytes`).
pub const MAX_METADATA_BYTES: usize = 4096;

const KEY_VERSION: i16 = 1;
const VALUE_VERSION: i16 = 3;

/// One committed offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
}

/// A group's committed offsets, by (topic, partition).
pub type GroupOffsets = BTreeMap<(String, i32), CommittedOffset>;

/// The committed-offsets table and the log partition that makes it durable.
pub struct OffsetStore {
    partition: Arc<Partition>,
    /// Group -> offsets. Updated in the same critical section as the append to the log,
    /// so the table and the log agree on which commit came last.
    committed: Mutex<HashMap<String, GroupOffsets>>,
}

impl OffsetStore {
    /// Replays `__consumer_offsets` into the table.
    pub fn load(broker: &Broker) -> io::Result<OffsetStore> {
        let partition = broker
            .partition(OFFSETS_TOPIC, 0)
            .ok_or_else(|| io::Error::other("the offsets topic is missing its partition 0"))?;
        let mut committed: HashMap<String, GroupOffsets> = HashMap::new();
        let mut records = 0usize;
        {
            let log = partition.log.lock();
            let mut offset = log.log_start_offset();
            let end = log.log_end_offset();
            while offset < end {
                let chunk = log.read(offset, 1 << 20).map_err(|e| io::Error::other(e.to_string()))?;
                if chunk.is_empty() {
                    break;
                }
                let mut buf = chunk.clone();
                let sets = RecordBatchDecoder::decode_all(&mut buf)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{OFFSETS_TOPIC}: {e}")))?;
                let mut next = offset;
                for set in sets {
                    for record in set.records {
                        next = next.max(record.offset + 1);
                        records += 1;
                        if let (Some(key), value) = (record.key, record.value) {
                            apply_record(&mut committed, key, value);
                        }
                    }
                }
                assert!(next > offset, "replay of {OFFSETS_TOPIC} made no progress at offset {offset}");
                offset = next;
            }
        }
        if records > 0 {
            tracing::info!(records, groups = committed.len(), "loaded committed offsets from {OFFSETS_TOPIC}");
        }
        Ok(OffsetStore { partition, committed: Mutex::new(committed) })
    }

    /// Appends the commits to the log, updates the table, and returns once the flush
    /// policy says they are durable.
    pub async fn commit(
        &self,
        broker: &Broker,
        group: &str,
        offsets: Vec<((String, i32), CommittedOffset)>,
    ) -> Result<(), ProduceError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let records: Vec<Record> = offsets
            .iter()
            .enumerate()
            .map(|(i, ((topic, partition), c))| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                // Offsets within the batch count up from 0. The encoder keeps records in one
                // batch while offset - sequence stays the same; -1 is "no sequence".
                offset: i as i64,
                sequence: i as i32 - 1,
                timestamp: c.commit_timestamp,
                key: Some(encode_key(group, topic, *partition)),
                value: Some(encode_value(c)),
                headers: Default::default(),
            })
            .collect();
        let mut batch = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut batch,
            &records,
            &RecordEncodeOptions { version: 2, compression: Compression::None },
        )
        .map_err(|e| ProduceError::Sync(io::Error::other(format!("can't encode an offsets batch: {e}"))))?;
        let end = {
            let mut table = self.committed.lock();
            let info = broker.append(&self.partition, &mut batch)?.info;
            let group_offsets = table.entry(group.to_string()).or_default();
            for (key, committed) in offsets {
                group_offsets.insert(key, committed);
            }
            info.last_offset + 1
        };
        broker.durable(&self.partition, end).await
    }

    pub fn fetch(&self, group: &str, topic: &str, partition: i32) -> Option<CommittedOffset> {
        self.committed.lock().get(group)?.get(&(topic.to_string(), partition)).cloned()
    }

    /// Everything a group has committed.
    pub fn group(&self, group: &str) -> GroupOffsets {
        self.committed.lock().get(group).cloned().unwrap_or_default()
    }

    /// Groups that have committed offsets.
    pub fn groups(&self) -> Vec<String> {
        let mut groups: Vec<_> = self.committed.lock().keys().cloned().collect();
        groups.sort();
        groups
    }

    /// Every committed offset, for the lag metric.
    pub fn snapshot(&self) -> Vec<(String, String, i32, i64)> {
        let table = self.committed.lock();
        let mut out = Vec::new();
        for (group, offsets) in table.iter() {
            for ((topic, partition), c) in offsets {
                out.push((group.clone(), topic.clone(), *partition, c.offset));
            }
        }
        out
    }
}

/// A commit time for records committed now.
pub fn commit_now(offset: i64, leader_epoch: i32, metadata: String) -> CommittedOffset {
    CommittedOffset { offset, leader_epoch, metadata, commit_timestamp: now_ms() }
}

fn put_string(out: &mut BytesMut, s: &str) {
    let bytes = &s.as_bytes()[..s.len().min(i16::MAX as usize)];
    out.put_i16(bytes.len() as i16);
    out.put_slice(bytes);
}

fn get_string(buf: &mut Bytes) -> Option<String> {
    if buf.remaining() < 2 {
        return None;
    }
    let len = buf.get_i16();
    if len < 0 || buf.remaining() < len as usize {
        return None;
    }
    String::from_utf8(buf.split_to(len as usize).to_vec()).ok()
}

fn encode_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut out = BytesMut::with_capacity(8 + group.len() + topic.len());
    out.put_i16(KEY_VERSION);
    put_string(&mut out, group);
    put_string(&mut out, topic);
    out.put_i32(partition);
    out.freeze()
}

fn encode_value(c: &CommittedOffset) -> Bytes {
    let mut out = BytesMut::with_capacity(32 + c.metadata.len());
    out.put_i16(VALUE_VERSION);
    out.put_i64(c.offset);
    out.put_i32(c.leader_epoch);
    put_string(&mut out, &c.metadata);
    out.put_i64(c.commit_timestamp);
    out.freeze()
}

fn decode_key(mut key: Bytes) -> Option<(String, String, i32)> {
    if key.remaining() < 2 || key.get_i16() > KEY_VERSION {
        // Version 2 is a group metadata record, which minilog does not write.
        return None;
    }
    let group = get_string(&mut key)?;
    let topic = get_string(&mut key)?;
    (key.remaining() >= 4).then(|| (group, topic, key.get_i32()))
}

fn decode_value(mut value: Bytes) -> Option<CommittedOffset> {
    if value.remaining() < 10 {
        return None;
    }
    let version = value.get_i16();
    let offset = value.get_i64();
    let leader_epoch = if version >= 3 && value.remaining() >= 4 { value.get_i32() } else { -1 };
    let metadata = get_string(&mut value)?;
    let commit_timestamp = if value.remaining() >= 8 { value.get_i64() } else { -1 };
    Some(CommittedOffset { offset, leader_epoch, metadata, commit_timestamp })
}

/// Applies one replayed record: a value sets the offset, a null value (tombstone)
/// removes it.
fn apply_record(table: &mut HashMap<String, GroupOffsets>, key: Bytes, value: Option<Bytes>) {
    let Some((group, topic, partition)) = decode_key(key) else {
        return;
    };
    match value.and_then(decode_value) {
        Some(committed) => {
            table.entry(group).or_default().insert((topic, partition), committed);
        }
        None => {
            if let Some(offsets) = table.get_mut(&group) {
                offsets.remove(&(topic, partition));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_and_value_round_trip() {
        let key = encode_key("g", "orders", 3);
        assert_eq!(decode_key(key), Some(("g".into(), "orders".into(), 3)));
        let c = CommittedOffset { offset: 42, leader_epoch: 0, metadata: "m".into(), commit_timestamp: 7 };
        assert_eq!(decode_value(encode_value(&c)), Some(c));
        assert_eq!(decode_key(Bytes::from_static(&[0, 1, 0])), None);
        assert_eq!(decode_value(Bytes::from_static(&[0, 3, 1])), None);
    }

    proptest::proptest! {
        /// Replayed records are the broker's own, but a damaged log must not take the
        /// broker down at start: any bytes decode to a record or to nothing.
        #[test]
        fn arbitrary_keys_and_values_never_panic(
            key in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            value in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            let mut table = HashMap::new();
            apply_record(&mut table, Bytes::from(key.clone()), Some(Bytes::from(value)));
            apply_record(&mut table, Bytes::from(key), None);
        }

        #[test]
        fn encoded_commits_round_trip(group in ".{0,40}", topic in "[a-z]{1,20}", partition: i32, offset: i64, meta in ".{0,40}") {
            let c = CommittedOffset { offset, leader_epoch: 3, metadata: meta, commit_timestamp: 9 };
            proptest::prop_assert_eq!(decode_key(encode_key(&group, &topic, partition)), Some((group, topic, partition)));
            proptest::prop_assert_eq!(decode_value(encode_value(&c)), Some(c));
        }
    }
}
