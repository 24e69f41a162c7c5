//! Sorted sets: members ordered by (score, member), with a member-to-score index.
//!
//! This first version orders members with a `BTreeSet`; rank queries walk it.
//! A skiplist with spans (Redis's structure, O(log n) ranks) replaces it.

use std::collections::BTreeSet;

use super::compact::CompactBytes;
use super::dict::Dict;

/// A score with a total order (scores are never NaN: every parse rejects it).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Score(pub f64);

impl Eq for Score {}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Score {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

#[derive(Clone, Default)]
pub struct ZSet {
    scores: Dict<CompactBytes, f64>,
    order: BTreeSet<(Score, CompactBytes)>,
}

impl ZSet {
    pub fn len(&self) -> usize {
        self.scores.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    pub fn score(&self, member: &[u8]) -> Option<f64> {
        self.scores.get(member).copied()
    }

    /// Inserts or updates; returns the previous score.
    pub fn insert(&mut self, member: &[u8], score: f64) -> Option<f64> {
        debug_assert!(!score.is_nan());
        let m = CompactBytes::new(member);
        let old = self.scores.insert(m.clone(), score);
        if let Some(old) = old {
            self.order.remove(&(Score(old), m.clone()));
        }
        self.order.insert((Score(score), m));
        old
    }

    pub fn remove(&mut self, member: &[u8]) -> Option<f64> {
        let old = self.scores.remove(member)?;
        self.order.remove(&(Score(old), CompactBytes::new(member)));
        Some(old)
    }

    /// Removes and returns the member with the lowest score.
    pub fn pop_min(&mut self) -> Option<(CompactBytes, f64)> {
        let (score, member) = self.order.pop_first()?;
        self.scores.remove(&member);
        Some((member, score.0))
    }

    /// Removes and returns the member with the highest score.
    pub fn pop_max(&mut self) -> Option<(CompactBytes, f64)> {
        let (score, member) = self.order.pop_last()?;
        self.scores.remove(&member);
        Some((member, score.0))
    }

    /// Members in ascending (score, member) order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&CompactBytes, f64)> {
        self.order.iter().map(|(s, m)| (m, s.0))
    }
}
