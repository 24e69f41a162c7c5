//! The partition log on disk, laid out as Kafka lays it out: a directory per partition,
//! holding segments named by their first offset, each a `.log` of record batches exactly
//! as producers sent them plus a sparse `.index` (offset → byte position) and `.timeindex`
//! (timestamp → offset).
//!
//! ```text
//! orders-0/
//!   00000000000000000000.log        batches with offsets 0 .. 368768
//!   00000000000000000000.index
//!   00000000000000000000.timeindex
//!   00000000000000368769.log        the active segment: appends go here
//!   00000000000000368769.index      (preallocated while active)
//!   00000000000000368769.timeindex
//! ```
//!
//! - [`batch`]: the v2 record batch header; validation and in-place offset assignment.
//! - `sparse_index`: the memory-mapped, preallocated file of fixed-width entries that
//!   both indexes are; `index`, `time_index`: what their entries mean.
//! - `segment`: one `.log` and its indexes; append, read, lookup, recovery scan.
//! - [`log`]: [`PartitionLog`], the segments together; rolling, retention, flushing, recovery.
//!
//! The broker never decodes records: a produce is validated header by header, given
//! offsets in place and written with one `write`; a fetch is one `pread` of whole batches.
//! When an append is durable is the caller's decision; see [`log`]'s module docs.
//!
//! # Example
//!
//! ```
//! use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
//! use minilog::storage::{LogConfig, PartitionLog};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let (mut log, report) = PartitionLog::open(&dir.path().join("orders-0"), LogConfig::default(), 0)?;
//! assert_eq!(report.log_end_offset, 0);
//!
//! // What a producer sends: one v2 batch with two records.
//! let record = |offset: i64, value: &'static str| Record {
//!     transactional: false, control: false, delete_horizon: false, partition_leader_epoch: 0,
//!     producer_id: -1, producer_epoch: -1, timestamp_type: TimestampType::Creation, offset,
//!     sequence: offset as i32 - 1, timestamp: 1_700_000_000_000, key: None, value: Some(value.into()),
//!     headers: Default::default(),
//! };
//! let mut batch = bytes::BytesMut::new();
//! let options = RecordEncodeOptions { version: 2, compression: Compression::None };
//! RecordBatchEncoder::encode(&mut batch, &[record(0, "hello"), record(1, "world")], &options)?;
//!
//! let appended = log.append(&mut batch, 1_700_000_000_000)?;
//! assert_eq!((appended.base_offset, appended.last_offset), (0, 1));
//!
//! // Durable only once an fsync covers it; the broker runs this outside its lock.
//! let target = log.flush_target();
//! target.sync()?;
//! log.mark_flushed(target.end_offset);
//!
//! // A fetch gets the stored bytes back, byte for byte.
//! let fetched = log.read(1, 1 << 20)?;
//! assert_eq!(&fetched[..], &batch[..]);
//! log.close()?;
//! # Ok(())
//! # }
//! ```

pub mod batch;
mod index;
pub mod log;
mod segment;
mod sparse_index;
mod time_index;

pub use batch::{assign_offsets, validate_batches, BatchError, BatchHeader, Compression, TimestampType};
pub use log::{AppendError, AppendInfo, FlushTarget, LogConfig, PartitionLog, ReadError, RecoveryReport};
