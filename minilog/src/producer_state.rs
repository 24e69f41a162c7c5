//! Idempotent producers: the sequence numbers that let a producer retry without
//! writing a batch twice.
//!
//! A producer that enables idempotence (the default in the Java client since 3.0, in
//! kafka-python 3, and `enable.idempotence=true` in librdkafka) first asks for a
//! producer id ([InitProducerId](crate::protocol::api::init_producer_id)), then numbers
//! its batches per partition: sequence 0, then the next after the last record of the
//! previous batch, and so on. For each partition the broker remembers, per producer,
//! its epoch and its last few batches, and checks each new batch:
//!
//! - the next sequence: append it;
//! - a batch it already has (a retry after a lost acknowledgement): do not write it
//!   again, answer with the offset it got the first time;
//! - a gap or an old batch it no longer remembers: OUT_OF_ORDER_SEQUENCE_NUMBER;
//! - an epoch older than the last one seen: INVALID_PRODUCER_EPOCH (a newer instance of
//!   the producer fenced this one).
//!
//! The state is rebuilt on start by reading the partition's batch headers, so a retry
//! that crosses a broker restart is still recognised. Kafka keeps periodic snapshots to
//! avoid rescanning; minilog reads every batch header of the log at start (one small read
//! per big batch, never the records), so start-up time grows with the number of batches.
//!
//! Left out: transactions (a transactional batch is refused) and expiring producers
//! that have gone quiet (Kafka's `transactional.id.expiration.ms`); the table holds one
//! small entry per producer id ever seen on the partition.

use std::collections::{HashMap, VecDeque};

/// Batches remembered per producer: Kafka's limit on in-flight requests for an
/// idempotent producer, so any retry the client can make is still recognised.
pub const REMEMBERED_BATCHES: usize = 5;

/// The sequence numbers and offsets of one appended batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SequencedBatch {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_sequence: i32,
    /// `first_sequence + last_offset_delta`, wrapping at `i32::MAX` as Kafka's do.
    pub last_sequence: i32,
    pub base_offset: i64,
}

/// What to do with a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Append,
    /// Already written, at this base offset.
    Duplicate {
        base_offset: i64,
    },
}

/// Why a batch was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    #[error("producer {producer_id} epoch {epoch} is older than its current epoch {current}")]
    StaleEpoch { producer_id: i64, epoch: i16, current: i16 },
    #[error("producer {producer_id}: expected sequence {expected}, got {got}")]
    OutOfOrder { producer_id: i64, expected: i32, got: i32 },
}

#[derive(Clone, Debug)]
struct Producer {
    epoch: i16,
    /// Newest last; at most [`REMEMBERED_BATCHES`].
    recent: VecDeque<SequencedBatch>,
}

/// Every idempotent producer's state on one partition.
#[derive(Clone, Debug, Default)]
pub struct ProducerStates {
    producers: HashMap<i64, Producer>,
}

/// The sequence after `last`, wrapping from `i32::MAX` to 0.
pub fn next_sequence(last: i32) -> i32 {
    if last == i32::MAX {
        0
    } else {
        last + 1
    }
}

/// The last sequence of a batch that starts at `first` and spans `last_offset_delta`.
pub fn last_sequence(first: i32, last_offset_delta: i32) -> i32 {
    ((first as i64 + last_offset_delta as i64) % (i32::MAX as i64 + 1)) as i32
}

impl ProducerStates {
    pub fn new() -> ProducerStates {
        ProducerStates::default()
    }

    /// Decides what to do with a batch from `producer_id` at `epoch` carrying sequences
    /// `first..=last`, without changing anything.
    pub fn check(&self, producer_id: i64, epoch: i16, first: i32, last: i32) -> Result<Verdict, SequenceError> {
        let Some(producer) = self.producers.get(&producer_id) else {
            // A producer we know nothing of: its earlier batches may have been deleted by
            // retention, so any starting sequence is accepted (as Kafka does since 2.5).
            return Ok(Verdict::Append);
        };
        if epoch < producer.epoch {
            return Err(SequenceError::StaleEpoch { producer_id, epoch, current: producer.epoch });
        }
        if epoch > producer.epoch {
            // A new epoch restarts the sequence.
            return if first == 0 {
                Ok(Verdict::Append)
            } else {
                Err(SequenceError::OutOfOrder { producer_id, expected: 0, got: first })
            };
        }
        if let Some(seen) = producer.recent.iter().find(|b| b.first_sequence == first && b.last_sequence == last) {
            return Ok(Verdict::Duplicate { base_offset: seen.base_offset });
        }
        let newest = producer.recent.back().expect("a known producer has at least one batch");
        let expected = next_sequence(newest.last_sequence);
        if first == expected {
            Ok(Verdict::Append)
        } else {
            Err(SequenceError::OutOfOrder { producer_id, expected, got: first })
        }
    }

    /// Records an appended batch (after [`ProducerStates::check`] said `Append`, or when
    /// rebuilding from the log).
    pub fn record(&mut self, batch: SequencedBatch) {
        let producer = self
            .producers
            .entry(batch.producer_id)
            .or_insert_with(|| Producer { epoch: batch.epoch, recent: VecDeque::new() });
        if batch.epoch != producer.epoch {
            assert!(batch.epoch > producer.epoch, "record() of a batch from a fenced epoch");
            producer.epoch = batch.epoch;
            producer.recent.clear();
        }
        producer.recent.push_back(batch);
        while producer.recent.len() > REMEMBERED_BATCHES {
            producer.recent.pop_front();
        }
    }

    /// Producers known on this partition.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(first: i32, last: i32, base_offset: i64) -> SequencedBatch {
        SequencedBatch { producer_id: 7, epoch: 0, first_sequence: first, last_sequence: last, base_offset }
    }

    #[test]
    fn accepts_the_next_sequence_and_recognises_retries() {
        let mut states = ProducerStates::new();
        assert_eq!(states.check(7, 0, 0, 9), Ok(Verdict::Append));
        states.record(batch(0, 9, 100));
        assert_eq!(states.check(7, 0, 10, 19), Ok(Verdict::Append));
        states.record(batch(10, 19, 110));
        assert_eq!(states.check(7, 0, 0, 9), Ok(Verdict::Duplicate { base_offset: 100 }));
        assert_eq!(states.check(7, 0, 10, 19), Ok(Verdict::Duplicate { base_offset: 110 }));
        assert_eq!(
            states.check(7, 0, 25, 30),
            Err(SequenceError::OutOfOrder { producer_id: 7, expected: 20, got: 25 })
        );
        assert_eq!(states.check(7, 0, 5, 9), Err(SequenceError::OutOfOrder { producer_id: 7, expected: 20, got: 5 }));
    }

    #[test]
    fn only_the_last_few_batches_are_remembered() {
        let mut states = ProducerStates::new();
        for i in 0..(REMEMBERED_BATCHES as i32 + 2) {
            states.record(batch(i * 10, i * 10 + 9, i as i64 * 10));
        }
        assert!(
            matches!(states.check(7, 0, 0, 9), Err(SequenceError::OutOfOrder { .. })),
            "forgotten, not re-appended"
        );
        let last = REMEMBERED_BATCHES as i32 + 1;
        assert_eq!(
            states.check(7, 0, last * 10, last * 10 + 9),
            Ok(Verdict::Duplicate { base_offset: last as i64 * 10 })
        );
    }

    #[test]
    fn epochs_fence_old_producers_and_restart_sequences() {
        let mut states = ProducerStates::new();
        states.record(SequencedBatch { epoch: 3, ..batch(0, 4, 0) });
        assert_eq!(states.check(7, 2, 5, 9), Err(SequenceError::StaleEpoch { producer_id: 7, epoch: 2, current: 3 }));
        assert_eq!(states.check(7, 4, 0, 4), Ok(Verdict::Append));
        assert!(states.check(7, 4, 5, 9).is_err(), "a new epoch starts at sequence 0");
        states.record(SequencedBatch { epoch: 4, ..batch(0, 4, 5) });
        assert!(states.check(7, 3, 5, 9).is_err(), "the old epoch is fenced now");
    }

    #[test]
    fn sequences_wrap_like_kafkas() {
        assert_eq!(next_sequence(i32::MAX), 0);
        assert_eq!(last_sequence(i32::MAX - 1, 3), 1);
        let mut states = ProducerStates::new();
        states.record(batch(i32::MAX - 4, i32::MAX, 0));
        assert_eq!(states.check(7, 0, 0, 9), Ok(Verdict::Append));
    }

    #[test]
    fn unknown_producers_may_start_anywhere() {
        assert_eq!(ProducerStates::new().check(9, 0, 1234, 1240), Ok(Verdict::Append));
    }
}
