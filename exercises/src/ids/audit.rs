//! The audit of a set of issued IDs: duplicates across all nodes, order within each
//! node, and IDs that carry the wrong node id.
//!
//! The scenario and the tests judge every run (the correct generator and the broken
//! variants alike) with this one function, so the check that passes the correct one is
//! the same check that catches the broken ones.
//!
//! A batch in order is already sorted, so duplicates are found by merging the batches
//! (a heap over one cursor per batch), without copying them; only a batch out of order
//! (a broken variant) is copied and sorted first. That keeps a run of millions of IDs
//! at 8 bytes per ID. A production stream would check order online and sample for
//! duplicates instead.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::snowflake::SnowflakeId;

/// The IDs one generator issued, in the order it issued them.
#[derive(Clone, Debug, Default)]
pub struct NodeBatch {
    /// The node id the generator was given (its lease).
    pub node: u16,
    pub ids: Vec<u64>,
}

/// What the audit found. A correct run has every count but `total` at zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdAudit {
    pub total: usize,
    /// IDs equal to an earlier one (anywhere, any node): `n` copies count `n - 1`.
    pub duplicates: usize,
    /// Places where a node's ID is not above the one it issued before.
    pub order_violations: usize,
    /// IDs whose node bits differ from the generator's node id.
    pub wrong_node: usize,
}

impl IdAudit {
    pub fn is_clean(&self) -> bool {
        self.duplicates == 0 && self.order_violations == 0 && self.wrong_node == 0
    }
}

/// Audits `batches`.
pub fn audit(batches: &[NodeBatch]) -> IdAudit {
    let mut result = IdAudit::default();
    let mut sorted: Vec<Cow<'_, [u64]>> = Vec::with_capacity(batches.len());
    for batch in batches {
        result.total += batch.ids.len();
        let violations = batch.ids.windows(2).filter(|pair| pair[1] <= pair[0]).count();
        result.order_violations += violations;
        result.wrong_node += batch.ids.iter().filter(|&&id| SnowflakeId(id).node() != batch.node).count();
        sorted.push(if violations == 0 {
            Cow::Borrowed(batch.ids.as_slice())
        } else {
            let mut copy = batch.ids.clone();
            copy.sort_unstable();
            Cow::Owned(copy)
        });
    }
    // Merge: every ID comes out in global order, so equal IDs (from one batch or
    // several) come out next to each other.
    let mut heap: BinaryHeap<Reverse<(u64, usize, usize)>> =
        sorted.iter().enumerate().filter_map(|(b, ids)| ids.first().map(|&id| Reverse((id, b, 0)))).collect();
    let mut previous = None;
    let mut merged = 0;
    while let Some(Reverse((id, b, i))) = heap.pop() {
        merged += 1;
        if previous == Some(id) {
            result.duplicates += 1;
        }
        previous = Some(id);
        if let Some(&next) = sorted[b].get(i + 1) {
            heap.push(Reverse((next, b, i + 1)));
        }
    }
    assert_eq!(merged, result.total, "the merge must visit every ID once");
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ts: u64, node: u16, seq: u16) -> u64 {
        SnowflakeId::compose(ts, node, seq).0
    }

    #[test]
    fn each_fault_is_counted() {
        let clean = [
            NodeBatch { node: 1, ids: vec![id(1, 1, 0), id(1, 1, 1), id(2, 1, 0)] },
            NodeBatch { node: 2, ids: vec![id(1, 2, 0), id(2, 2, 0)] },
        ];
        assert_eq!(audit(&clean), IdAudit { total: 5, ..IdAudit::default() });
        assert!(audit(&clean).is_clean());

        let broken = [
            NodeBatch { node: 1, ids: vec![id(2, 1, 0), id(1, 1, 0), id(2, 1, 0)] },
            NodeBatch { node: 2, ids: vec![id(1, 1, 0)] },
        ];
        let found = audit(&broken);
        assert_eq!(found, IdAudit { total: 4, duplicates: 2, order_violations: 1, wrong_node: 1 });
        assert!(!found.is_clean());
    }

    #[test]
    fn the_merge_counts_what_a_full_sort_counts() {
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..200 {
            let batches: Vec<NodeBatch> = (0..rng.usize(1..5))
                .map(|node| {
                    let mut ids: Vec<u64> = (0..rng.usize(0..50)).map(|_| rng.u64(0..60)).collect();
                    if rng.bool() {
                        ids.sort_unstable();
                        ids.dedup();
                    }
                    NodeBatch { node: node as u16, ids }
                })
                .collect();
            let mut all: Vec<u64> = batches.iter().flat_map(|b| b.ids.iter().copied()).collect();
            all.sort_unstable();
            let expected = all.windows(2).filter(|pair| pair[0] == pair[1]).count();
            assert_eq!(audit(&batches).duplicates, expected, "{batches:?}");
        }
    }
}
