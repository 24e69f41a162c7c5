//! Sorted sets: Redis's skiplist with spans, plus a member -> score dict.
//!
//! A sorted set answers two kinds of questions. "What is the score of `m`?" is a hash
//! lookup, so every member is in a [`Dict`] (ZSCORE, ZADD's "is it new?", ZSCAN,
//! ZRANDMEMBER). "Which members are between rank 10 and 20, or between score 1.5 and
//! 3?" needs the members in (score, member) order, with a cheap way to count
//! positions; that is a skiplist whose links carry *spans*, exactly Redis's design.
//!
//! # The skiplist
//!
//! Level 0 is a sorted, doubly linked list. Each node also has a random number of
//! higher levels; a link on level `i` skips to the next node that reaches level `i`.
//! A search starts on the highest level at the header and moves right while the next
//! node sorts before the target, then drops a level: O(log n) steps on average.
//! Every forward link records its *span*: how many level-0 steps it jumps. Summing the
//! spans along a search path gives the rank of the node it ends on, so ZRANK, "the
//! element at rank 500" and ZCOUNT (rank of the last minus rank of the first) are all
//! O(log n) too, without walking the list.
//!
//! ```text
//!   level 2   HEAD -----------------3-----------------> c ---------1----------> end
//!   level 1   HEAD ----1----> a ----------2-----------> c ----1----> d ---0---> end
//!   level 0   HEAD ----1----> a ----1----> b ----1----> c ----1----> d ---0---> end
//!   rank      0               1            2            3            4
//!                             <----------- backward links, level 0 only -----
//!
//!   rank(d): HEAD -3-> c on level 2, then c -1-> d on level 1: 3 + 1 = 4.
//! ```
//!
//! A link with no next node has the span "distance to the end" (`len - rank`), so
//! every span stays exact as nodes come and go; [`ZSet::check_invariants`] checks all
//! of them. The backward links on level 0 serve the reverse walks (ZREVRANGE, REV).
//!
//! # Why levels are random
//!
//! A new node gets level 1, then one more level with probability p = 1/4, again and
//! again, up to 32 (Redis's `ZSKIPLIST_P` and `ZSKIPLIST_MAXLEVEL`). Because a node's
//! height is decided by a coin and never by its neighbours, an insert or a delete
//! only rewires the links that point at that node: no rotations, no rebalancing, and
//! the expected shape is the same whatever order members arrive in. p = 1/4 rather
//! than 1/2 trades a few more comparisons per search for fewer links (1.33 links per
//! node on average); 32 levels with p = 1/4 cover 4^32 = 2^64 elements.
//!
//! # In safe Rust
//!
//! Nodes live in an arena (a `Vec`) and point at each other by index; freed slots go
//! on a free list and are reused. When more than half of the arena is free it is
//! compacted, renumbering the nodes in list order. Level-0 links are stored inline in
//! the node; the higher levels, which three nodes in four do not have, are a boxed
//! slice, so most nodes cost no allocation beyond the arena.
//!
//! # Left out
//!
//! - The listpack encoding Redis uses for small sets (up to 128 members of up to 64
//!   bytes): a flat array that is smaller but O(n) to update. Every set here is a
//!   skiplist. What clients can *see* of that encoding is kept, though: a set
//!   remembers whether Redis would still hold it as a listpack
//!   ([`ZSet::listpack_sized`]), because ZSCAN returns such a set whole, a listpack
//!   stores a `-0` score as `0`, and OBJECT ENCODING names the encoding.
//! - Sharing one string between the dict and the list (Redis stores one sds in
//!   both): members longer than 22 bytes are stored twice here.
//! - Lexicographic ranges assume that all members have the same score, as Redis
//!   documents; with mixed scores the result follows the list walk and is
//!   unspecified (but never a panic).

use super::compact::CompactBytes;
use super::dict::{hash_bytes, Dict};

/// Redis keeps a sorted set as a listpack up to this many members
/// (`zset-max-listpack-entries`, default 128)...
pub const LISTPACK_MAX_MEMBERS: usize = 128;
/// ...and while no member is longer than this (`zset-max-listpack-value`, default 64).
pub const LISTPACK_MAX_MEMBER_LEN: usize = 64;

/// The most levels a node can have (Redis's `ZSKIPLIST_MAXLEVEL`).
pub const MAX_LEVEL: usize = 32;

/// A node gets one more level when 16 random bits fall under this: p = 1/4, the
/// value of Redis's `ZSKIPLIST_P`.
const LEVEL_UP_BELOW: u32 = 0x1_0000 / 4;

/// "No node": the end of a level, or the backward link of the first node.
const NIL: u32 = u32::MAX;

/// The header node: not an element, it holds the first link of every level.
const HEADER: u32 = 0;

/// One forward link of a node on one level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Link {
    /// The next node that reaches this level, or `NIL`.
    forward: u32,
    /// Level-0 steps from this node to `forward` (to the end of the list when
    /// `forward` is `NIL`). Summed along a search path, spans give ranks.
    span: u32,
}

const EMPTY_LINK: Link = Link { forward: NIL, span: 0 };

#[derive(Clone, Debug)]
struct Node {
    member: CompactBytes,
    score: f64,
    /// The previous node on level 0, `NIL` for the first node: reverse walks.
    backward: u32,
    /// The level-0 link, inline because every node has one.
    first: Link,
    /// Links on levels 1.. (empty for three nodes in four: no allocation).
    upper: Box<[Link]>,
}

impl Node {
    /// An arena slot that holds no element (free, or replaced during compaction).
    fn vacant() -> Node {
        Node { member: CompactBytes::EMPTY, score: 0.0, backward: NIL, first: EMPTY_LINK, upper: Box::default() }
    }

    fn height(&self) -> usize {
        1 + self.upper.len()
    }

    #[inline]
    fn link(&self, level: usize) -> Link {
        if level == 0 {
            self.first
        } else {
            self.upper[level - 1]
        }
    }

    #[inline]
    fn link_mut(&mut self, level: usize) -> &mut Link {
        if level == 0 {
            &mut self.first
        } else {
            &mut self.upper[level - 1]
        }
    }

    /// Whether this node sorts before `(score, member)`. Scores compare as IEEE
    /// doubles, like Redis (so -0 and 0 tie and the member decides).
    #[inline]
    fn precedes(&self, score: f64, member: &[u8]) -> bool {
        self.score < score || (self.score == score && self.member.as_slice() < member)
    }
}

/// The ordered half of a sorted set. Ranks in this type are 1-based, like Redis's
/// (the header has rank 0); [`ZSet`] converts to the 0-based ranks commands use.
#[derive(Clone)]
struct SkipList {
    /// `nodes[0]` is the header; the other slots are elements or free.
    nodes: Vec<Node>,
    /// Free slots of `nodes`, reused before the arena grows.
    free: Vec<u32>,
    /// The last element, `NIL` when empty: the start of reverse walks.
    tail: u32,
    /// Levels in use (at least 1): searches start at `level - 1`.
    level: usize,
    len: usize,
    /// Draws node heights. Per set, so a test can seed it and replay a failure.
    rng: fastrand::Rng,
}

impl SkipList {
    fn new(rng: fastrand::Rng) -> SkipList {
        let header = Node { upper: vec![EMPTY_LINK; MAX_LEVEL - 1].into_boxed_slice(), ..Node::vacant() };
        SkipList { nodes: vec![header], free: Vec::new(), tail: NIL, level: 1, len: 0, rng }
    }

    #[inline]
    fn node(&self, id: u32) -> &Node {
        &self.nodes[id as usize]
    }

    #[inline]
    fn node_mut(&mut self, id: u32) -> &mut Node {
        &mut self.nodes[id as usize]
    }

    #[inline]
    fn forward(&self, id: u32, level: usize) -> u32 {
        self.node(id).link(level).forward
    }

    /// The first element, or `NIL`.
    fn head(&self) -> u32 {
        self.forward(HEADER, 0)
    }

    fn random_level(&mut self) -> usize {
        let mut level = 1;
        while level < MAX_LEVEL && (self.rng.u32(..) & 0xFFFF) < LEVEL_UP_BELOW {
            level += 1;
        }
        level
    }

    fn alloc(&mut self, node: Node) -> u32 {
        match self.free.pop() {
            Some(id) => {
                self.nodes[id as usize] = node;
                id
            }
            None => {
                let id = self.nodes.len();
                assert!(id < NIL as usize, "a sorted set holds at most 2^32-2 members");
                self.nodes.push(node);
                id as u32
            }
        }
    }

    fn release(&mut self, id: u32) -> Node {
        debug_assert_ne!(id, HEADER);
        self.free.push(id);
        std::mem::replace(&mut self.nodes[id as usize], Node::vacant())
    }

    /// For each level in use, the last node that sorts before `(score, member)`
    /// (Redis's `update[]`), and the rank of that node (`rank[]`).
    fn search(&self, score: f64, member: &[u8]) -> ([u32; MAX_LEVEL], [u32; MAX_LEVEL]) {
        let mut update = [HEADER; MAX_LEVEL];
        let mut rank = [0u32; MAX_LEVEL];
        let mut x = HEADER;
        let mut traversed = 0u32;
        for i in (0..self.level).rev() {
            loop {
                let link = self.node(x).link(i);
                if link.forward == NIL || !self.node(link.forward).precedes(score, member) {
                    break;
                }
                traversed += link.span;
                x = link.forward;
            }
            update[i] = x;
            rank[i] = traversed;
        }
        (update, rank)
    }

    /// Links a new element; the caller has checked that the member is absent.
    fn insert(&mut self, score: f64, member: CompactBytes) -> u32 {
        assert!(!score.is_nan(), "a NaN score reached the skiplist");
        let (mut update, mut rank) = self.search(score, &member);
        let height = self.random_level();
        if height > self.level {
            for i in self.level..height {
                rank[i] = 0;
                update[i] = HEADER;
                // The header's link on a new level jumps to the end of the list.
                self.node_mut(HEADER).link_mut(i).span = self.len as u32;
            }
            self.level = height;
        }
        let id = self.alloc(Node {
            member,
            score,
            backward: NIL,
            first: EMPTY_LINK,
            upper: vec![EMPTY_LINK; height - 1].into_boxed_slice(),
        });
        for i in 0..height {
            let before = self.node(update[i]).link(i);
            // Level-0 steps from update[i] to the new node's predecessor.
            let gap = rank[0] - rank[i];
            *self.node_mut(id).link_mut(i) = Link { forward: before.forward, span: before.span - gap };
            *self.node_mut(update[i]).link_mut(i) = Link { forward: id, span: gap + 1 };
        }
        // Levels above the new node now jump over one more element.
        for (i, &u) in update.iter().enumerate().take(self.level).skip(height) {
            self.node_mut(u).link_mut(i).span += 1;
        }
        self.node_mut(id).backward = if update[0] == HEADER { NIL } else { update[0] };
        match self.forward(id, 0) {
            NIL => self.tail = id,
            next => self.node_mut(next).backward = id,
        }
        self.len += 1;
        id
    }

    /// Unlinks element `x`, whose predecessors on each level are `update`.
    fn unlink(&mut self, x: u32, update: &[u32; MAX_LEVEL]) {
        for (i, &u) in update.iter().enumerate().take(self.level) {
            let link = self.node(u).link(i);
            if link.forward == x {
                let skipped = self.node(x).link(i);
                *self.node_mut(u).link_mut(i) = Link { forward: skipped.forward, span: link.span + skipped.span - 1 };
            } else {
                self.node_mut(u).link_mut(i).span -= 1;
            }
        }
        let (next, back) = (self.forward(x, 0), self.node(x).backward);
        match next {
            NIL => self.tail = back,
            next => self.node_mut(next).backward = back,
        }
        while self.level > 1 && self.forward(HEADER, self.level - 1) == NIL {
            self.level -= 1;
        }
        self.len -= 1;
    }

    /// Removes the element `(score, member)`; returns its member string.
    fn delete(&mut self, score: f64, member: &[u8]) -> Option<CompactBytes> {
        let (update, _) = self.search(score, member);
        let x = self.forward(update[0], 0);
        if x == NIL || self.node(x).score != score || self.node(x).member.as_slice() != member {
            return None;
        }
        self.unlink(x, &update);
        Some(self.release(x).member)
    }

    /// Changes an element's score (Redis's `zslUpdateScore`). When the element keeps
    /// its place the score is updated in place; otherwise it is moved.
    fn update_score(&mut self, current: f64, member: &[u8], new: f64) {
        let (update, _) = self.search(current, member);
        let x = self.forward(update[0], 0);
        assert!(
            x != NIL && self.node(x).score == current && self.node(x).member.as_slice() == member,
            "dict and skiplist disagree on a member's score"
        );
        let (back, next) = (self.node(x).backward, self.forward(x, 0));
        if (back == NIL || self.node(back).score < new) && (next == NIL || self.node(next).score > new) {
            self.node_mut(x).score = new;
            return;
        }
        self.unlink(x, &update);
        let node = self.release(x);
        self.insert(new, node.member);
    }

    /// The 1-based rank of `(score, member)`, which must be present.
    fn rank_of(&self, score: f64, member: &[u8]) -> Option<usize> {
        let mut x = HEADER;
        let mut rank = 0usize;
        for i in (0..self.level).rev() {
            loop {
                let link = self.node(x).link(i);
                if link.forward == NIL {
                    break;
                }
                let next = self.node(link.forward);
                if !(next.score < score || (next.score == score && next.member.as_slice() <= member)) {
                    break;
                }
                rank += link.span as usize;
                x = link.forward;
            }
            if x != HEADER && self.node(x).member.as_slice() == member {
                return Some(rank);
            }
        }
        None
    }

    /// The element at 1-based `rank`.
    fn at_rank(&self, rank: usize) -> Option<u32> {
        if rank == 0 || rank > self.len {
            return None;
        }
        let mut x = HEADER;
        let mut traversed = 0usize;
        for i in (0..self.level).rev() {
            loop {
                let link = self.node(x).link(i);
                if link.forward == NIL || traversed + link.span as usize > rank {
                    break;
                }
                traversed += link.span as usize;
                x = link.forward;
            }
            if traversed == rank {
                return Some(x);
            }
        }
        None
    }

    /// The first element that reaches `bounds`' minimum, with its 1-based rank, if it
    /// is also within the maximum (Redis's `zslFirstInRange` / `zslFirstInLexRange`).
    fn first_in<B: Bounds>(&self, bounds: &B) -> Option<(u32, usize)> {
        if bounds.is_empty() || self.len == 0 {
            return None;
        }
        let mut x = HEADER;
        let mut rank = 0usize;
        for i in (0..self.level).rev() {
            loop {
                let link = self.node(x).link(i);
                if link.forward == NIL || bounds.above_min(self.node(link.forward)) {
                    break;
                }
                rank += link.span as usize;
                x = link.forward;
            }
        }
        let first = self.forward(x, 0);
        (first != NIL && bounds.below_max(self.node(first))).then_some((first, rank + 1))
    }

    /// The last element within `bounds`' maximum, with its rank, if it also reaches
    /// the minimum (Redis's `zslLastInRange` / `zslLastInLexRange`).
    fn last_in<B: Bounds>(&self, bounds: &B) -> Option<(u32, usize)> {
        if bounds.is_empty() || self.len == 0 {
            return None;
        }
        let mut x = HEADER;
        let mut rank = 0usize;
        for i in (0..self.level).rev() {
            loop {
                let link = self.node(x).link(i);
                if link.forward == NIL || !bounds.below_max(self.node(link.forward)) {
                    break;
                }
                rank += link.span as usize;
                x = link.forward;
            }
        }
        (x != HEADER && bounds.above_min(self.node(x))).then_some((x, rank))
    }

    /// Removes the elements from the first one that reaches the minimum while they
    /// stay within the maximum, handing each member to `removed`.
    fn delete_in<B: Bounds>(&mut self, bounds: &B, mut removed: impl FnMut(CompactBytes)) -> usize {
        let mut update = [HEADER; MAX_LEVEL];
        let mut x = HEADER;
        for i in (0..self.level).rev() {
            loop {
                let next = self.forward(x, i);
                if next == NIL || bounds.above_min(self.node(next)) {
                    break;
                }
                x = next;
            }
            update[i] = x;
        }
        let mut x = self.forward(x, 0);
        let mut count = 0;
        while x != NIL && bounds.below_max(self.node(x)) {
            let next = self.forward(x, 0);
            self.unlink(x, &update);
            removed(self.release(x).member);
            count += 1;
            x = next;
        }
        count
    }

    /// Removes the elements of 1-based ranks `start..=end`.
    fn delete_ranks(&mut self, start: usize, end: usize, mut removed: impl FnMut(CompactBytes)) -> usize {
        let mut update = [HEADER; MAX_LEVEL];
        let mut x = HEADER;
        let mut traversed = 0usize;
        for i in (0..self.level).rev() {
            loop {
                let link = self.node(x).link(i);
                if link.forward == NIL || traversed + link.span as usize >= start {
                    break;
                }
                traversed += link.span as usize;
                x = link.forward;
            }
            update[i] = x;
        }
        traversed += 1;
        let mut x = self.forward(x, 0);
        let mut count = 0;
        while x != NIL && traversed <= end {
            let next = self.forward(x, 0);
            self.unlink(x, &update);
            removed(self.release(x).member);
            count += 1;
            traversed += 1;
            x = next;
        }
        count
    }

    /// Renumbers the nodes in list order once more than half of the arena is free,
    /// giving the memory of a shrunken set back. Amortised O(1) per removal.
    fn maybe_compact(&mut self) {
        if self.free.len() < 32 || self.free.len() * 2 < self.nodes.len() {
            return;
        }
        let mut renumber = vec![NIL; self.nodes.len()];
        let mut order = Vec::with_capacity(self.len + 1);
        let mut x = HEADER;
        while x != NIL {
            renumber[x as usize] = order.len() as u32;
            order.push(x);
            x = self.forward(x, 0);
        }
        let map = |id: u32| if id == NIL { NIL } else { renumber[id as usize] };
        let mut nodes = Vec::with_capacity(order.len());
        for id in order {
            let mut node = std::mem::replace(&mut self.nodes[id as usize], Node::vacant());
            node.backward = map(node.backward);
            node.first.forward = map(node.first.forward);
            for link in node.upper.iter_mut() {
                link.forward = map(link.forward);
            }
            nodes.push(node);
        }
        self.tail = map(self.tail);
        self.nodes = nodes;
        self.free = Vec::new();
    }
}

/// A range of elements between a minimum and a maximum: [`ScoreRange`] or
/// [`LexRange`]. The list is ordered by both, so one walk serves both.
pub trait Bounds {
    /// No element can be inside (min above max, or equal with an exclusive end).
    fn is_empty(&self) -> bool;
    /// The element is at or past the minimum.
    fn reaches_min(&self, score: f64, member: &[u8]) -> bool;
    /// The element is at or before the maximum.
    fn within_max(&self, score: f64, member: &[u8]) -> bool;

    fn contains(&self, score: f64, member: &[u8]) -> bool {
        self.reaches_min(score, member) && self.within_max(score, member)
    }
}

trait NodeBounds {
    fn above_min(&self, node: &Node) -> bool;
    fn below_max(&self, node: &Node) -> bool;
}

impl<B: Bounds> NodeBounds for B {
    #[inline]
    fn above_min(&self, node: &Node) -> bool {
        self.reaches_min(node.score, &node.member)
    }

    #[inline]
    fn below_max(&self, node: &Node) -> bool {
        self.within_max(node.score, &node.member)
    }
}

/// A score interval, each end inclusive or exclusive (ZRANGEBYSCORE's `(1.5`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScoreRange {
    pub min: f64,
    pub min_exclusive: bool,
    pub max: f64,
    pub max_exclusive: bool,
}

impl ScoreRange {
    pub fn inclusive(min: f64, max: f64) -> ScoreRange {
        ScoreRange { min, min_exclusive: false, max, max_exclusive: false }
    }
}

impl Bounds for ScoreRange {
    fn is_empty(&self) -> bool {
        self.min > self.max || (self.min == self.max && (self.min_exclusive || self.max_exclusive))
    }

    #[inline]
    fn reaches_min(&self, score: f64, _member: &[u8]) -> bool {
        if self.min_exclusive {
            score > self.min
        } else {
            score >= self.min
        }
    }

    #[inline]
    fn within_max(&self, score: f64, _member: &[u8]) -> bool {
        if self.max_exclusive {
            score < self.max
        } else {
            score <= self.max
        }
    }
}

/// One end of a lexicographic range, as ZRANGEBYLEX writes it: `-`, `+`, `[a`, `(a`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LexBound<'a> {
    /// `-`: before every string.
    Min,
    /// `+`: after every string.
    Max,
    /// `[a`: `a` itself is in the range.
    Inclusive(&'a [u8]),
    /// `(a`: `a` itself is not.
    Exclusive(&'a [u8]),
}

/// A point on the line `-` < every byte string (memcmp order) < `+`; the derived
/// order of the variants is that order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum LexPoint<'a> {
    Bottom,
    At(&'a [u8]),
    Top,
}

impl<'a> LexBound<'a> {
    /// Parses one end like Redis's `zslParseLexRangeItem`. `-` and `+` must stand
    /// alone; as in C, a NUL byte right after them ends the string.
    pub fn parse(arg: &'a [u8]) -> Option<LexBound<'a>> {
        let alone = arg.len() == 1 || arg.get(1) == Some(&0);
        match arg.first()? {
            b'-' if alone => Some(LexBound::Min),
            b'+' if alone => Some(LexBound::Max),
            b'[' => Some(LexBound::Inclusive(&arg[1..])),
            b'(' => Some(LexBound::Exclusive(&arg[1..])),
            _ => None,
        }
    }

    fn point(&self) -> LexPoint<'a> {
        match *self {
            LexBound::Min => LexPoint::Bottom,
            LexBound::Max => LexPoint::Top,
            LexBound::Inclusive(s) | LexBound::Exclusive(s) => LexPoint::At(s),
        }
    }

    /// `-` and `+` count as exclusive, as in Redis (`- -` is an empty range).
    fn exclusive(&self) -> bool {
        !matches!(self, LexBound::Inclusive(_))
    }
}

/// A lexicographic range of members (ZRANGEBYLEX, ZLEXCOUNT, ZREMRANGEBYLEX).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LexRange<'a> {
    pub min: LexBound<'a>,
    pub max: LexBound<'a>,
}

impl<'a> LexRange<'a> {
    /// Parses `min max` like Redis's `zslParseLexRange`.
    pub fn parse(min: &'a [u8], max: &'a [u8]) -> Option<LexRange<'a>> {
        Some(LexRange { min: LexBound::parse(min)?, max: LexBound::parse(max)? })
    }
}

impl Bounds for LexRange<'_> {
    fn is_empty(&self) -> bool {
        let (min, max) = (self.min.point(), self.max.point());
        min > max || (min == max && (self.min.exclusive() || self.max.exclusive()))
    }

    #[inline]
    fn reaches_min(&self, _score: f64, member: &[u8]) -> bool {
        let m = LexPoint::At(member);
        if self.min.exclusive() {
            m > self.min.point()
        } else {
            m >= self.min.point()
        }
    }

    #[inline]
    fn within_max(&self, _score: f64, member: &[u8]) -> bool {
        let m = LexPoint::At(member);
        if self.max.exclusive() {
            m < self.max.point()
        } else {
            m <= self.max.point()
        }
    }
}

/// A sorted set: a dict for member -> score, a skiplist for order and ranks. Both
/// always hold the same elements ([`ZSet::check_invariants`]).
#[derive(Clone)]
pub struct ZSet {
    scores: Dict<CompactBytes, f64>,
    list: SkipList,
    /// Redis would still hold this set as a listpack: it never had more than
    /// [`LISTPACK_MAX_MEMBERS`] members nor one longer than [`LISTPACK_MAX_MEMBER_LEN`].
    /// Like Redis's encoding it only ever turns false. See the module docs.
    listpack_sized: bool,
}

impl Default for ZSet {
    fn default() -> Self {
        ZSet::with_rng(fastrand::Rng::new())
    }
}

impl ZSet {
    fn with_rng(rng: fastrand::Rng) -> ZSet {
        ZSet { scores: Dict::new(), list: SkipList::new(rng), listpack_sized: true }
    }

    /// A set whose node heights come from a seeded generator: the same operations
    /// build the same list, so a failing test replays exactly.
    pub fn with_seed(seed: u64) -> ZSet {
        ZSet::with_rng(fastrand::Rng::with_seed(seed))
    }

    /// A set about to receive `members` members, the first `first_len` bytes long:
    /// as Redis's `zsetTypeCreate`, a big first ZADD starts out as a skiplist.
    pub fn for_new_key(members: usize, first_len: usize) -> ZSet {
        ZSet {
            listpack_sized: members <= LISTPACK_MAX_MEMBERS && first_len <= LISTPACK_MAX_MEMBER_LEN,
            ..ZSet::default()
        }
    }

    /// Whether Redis would hold this set as a listpack (see the module docs).
    pub fn listpack_sized(&self) -> bool {
        self.listpack_sized
    }

    /// What OBJECT ENCODING reports for this set in Redis.
    pub fn encoding(&self) -> &'static str {
        if self.listpack_sized {
            "listpack"
        } else {
            "skiplist"
        }
    }

    pub fn len(&self) -> usize {
        self.scores.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    pub fn score(&self, member: &[u8]) -> Option<f64> {
        self.scores.get(member).copied()
    }

    /// The member -> score dict, for sampling (ZRANDMEMBER) and cursors (ZSCAN).
    pub fn members(&self) -> &Dict<CompactBytes, f64> {
        &self.scores
    }

    /// Inserts or updates; returns the previous score. A score equal to the current
    /// one (`0` and `-0` are equal, as in Redis) changes nothing.
    pub fn insert(&mut self, member: &[u8], score: f64) -> Option<f64> {
        assert!(!score.is_nan(), "sorted set scores are never NaN");
        let hash = hash_bytes(member);
        let found = self.scores.find_hashed(hash, member);
        if found.is_none() && (self.len() >= LISTPACK_MAX_MEMBERS || member.len() > LISTPACK_MAX_MEMBER_LEN) {
            self.listpack_sized = false;
        }
        // A listpack keeps `-0` as the integer 0.
        let score = if self.listpack_sized && score == 0.0 { 0.0 } else { score };
        match found {
            Some(pos) => {
                let current = self.scores.at_mut(pos).1;
                let old = *current;
                if old != score {
                    *current = score;
                    self.list.update_score(old, member, score);
                }
                Some(old)
            }
            None => {
                let member = CompactBytes::new(member);
                self.list.insert(score, member.clone());
                self.scores.insert_new_hashed(hash, member, score);
                None
            }
        }
    }

    pub fn remove(&mut self, member: &[u8]) -> Option<f64> {
        let score = self.scores.remove(member)?;
        let removed = self.list.delete(score, member);
        assert!(removed.is_some(), "dict and skiplist disagree on a member");
        self.list.maybe_compact();
        Some(score)
    }

    /// Removes and returns the member with the lowest score.
    pub fn pop_min(&mut self) -> Option<(CompactBytes, f64)> {
        let first = self.list.head();
        if first == NIL {
            return None;
        }
        // Nothing precedes the first element: its predecessor is the header on
        // every level.
        self.list.unlink(first, &[HEADER; MAX_LEVEL]);
        Some(self.forget(first))
    }

    /// Removes and returns the member with the highest score.
    pub fn pop_max(&mut self) -> Option<(CompactBytes, f64)> {
        let last = self.list.tail;
        if last == NIL {
            return None;
        }
        let node = self.list.node(last);
        let (update, _) = self.list.search(node.score, &node.member);
        self.list.unlink(last, &update);
        Some(self.forget(last))
    }

    /// Frees an unlinked node and drops its member from the dict.
    fn forget(&mut self, id: u32) -> (CompactBytes, f64) {
        let node = self.list.release(id);
        let score = self.scores.remove(&node.member);
        assert_eq!(score, Some(node.score), "dict and skiplist disagree on a score");
        self.list.maybe_compact();
        (node.member, node.score)
    }

    /// Members in ascending (score, member) order; `.rev()` for descending.
    pub fn iter(&self) -> Iter<'_> {
        Iter { list: &self.list, front: self.list.head(), back: self.list.tail, remaining: self.list.len }
    }

    /// The 0-based rank of `member` in ascending order.
    pub fn rank(&self, member: &[u8]) -> Option<usize> {
        let score = self.score(member)?;
        let rank = self.list.rank_of(score, member);
        assert!(rank.is_some(), "dict and skiplist disagree on a member");
        rank.map(|r| r - 1)
    }

    /// The element at 0-based ascending `rank`.
    pub fn get_by_rank(&self, rank: usize) -> Option<(&CompactBytes, f64)> {
        let id = self.list.at_rank(rank.checked_add(1)?)?;
        let node = self.list.node(id);
        Some((&node.member, node.score))
    }

    /// The elements of 0-based ascending ranks `start..=end` (clamped to the set);
    /// `.rev()` walks them from `end` down.
    pub fn range_by_rank(&self, start: usize, end: usize) -> Iter<'_> {
        let end = end.min(self.len().saturating_sub(1));
        if start > end || start >= self.len() {
            return Iter::empty(&self.list);
        }
        let front = self.list.at_rank(start + 1);
        let back = self.list.at_rank(end + 1);
        let (Some(front), Some(back)) = (front, back) else {
            unreachable!("ranks {start}..={end} of a set of {}", self.len());
        };
        Iter { list: &self.list, front, back, remaining: end - start + 1 }
    }

    /// The elements inside `bounds`: from the first one upwards, or with `rev` from
    /// the last one downwards (ZRANGEBYSCORE, ZREVRANGEBYLEX, ...).
    pub fn range<B: Bounds>(&self, bounds: B, rev: bool) -> Walk<'_, B> {
        let start = if rev { self.list.last_in(&bounds) } else { self.list.first_in(&bounds) };
        Walk { list: &self.list, node: start.map_or(NIL, |(id, _)| id), rev, bounds }
    }

    /// How many elements `bounds` holds (ZCOUNT, ZLEXCOUNT): two O(log n) searches.
    pub fn count<B: Bounds>(&self, bounds: &B) -> usize {
        match (self.list.first_in(bounds), self.list.last_in(bounds)) {
            (Some((_, first)), Some((_, last))) if last >= first => last - first + 1,
            _ => 0,
        }
    }

    /// Removes the elements inside `bounds`; returns how many.
    pub fn remove_range<B: Bounds>(&mut self, bounds: &B) -> usize {
        let scores = &mut self.scores;
        let n = self.list.delete_in(bounds, |member| {
            let removed = scores.remove(&member);
            assert!(removed.is_some(), "dict and skiplist disagree on a member");
        });
        self.list.maybe_compact();
        n
    }

    /// Removes the elements of 0-based ranks `start..=end` (clamped); returns how many.
    pub fn remove_range_by_rank(&mut self, start: usize, end: usize) -> usize {
        if start >= self.len() || start > end {
            return 0;
        }
        let scores = &mut self.scores;
        let n = self.list.delete_ranks(start + 1, end.saturating_add(1), |member| {
            let removed = scores.remove(&member);
            assert!(removed.is_some(), "dict and skiplist disagree on a member");
        });
        self.list.maybe_compact();
        n
    }

    /// Checks every structural promise; panics on the first one broken. Tests call
    /// it after each operation.
    ///
    /// - level 0 is sorted by (score, member), strictly, with consistent backward
    ///   links and tail;
    /// - every span equals the rank difference it jumps (to the end for the last
    ///   link of a level), so spans sum to ranks;
    /// - each level is a sub-list of the one below, nodes appear on exactly the
    ///   levels they have;
    /// - the dict and the list hold the same members with bit-identical scores;
    /// - the arena's slots are the header, the elements and the free list.
    pub fn check_invariants(&self) {
        let list = &self.list;
        assert_eq!(list.node(HEADER).height(), MAX_LEVEL);
        assert!(list.level >= 1 && list.level <= MAX_LEVEL);
        assert_eq!(list.len, self.scores.len(), "list and dict lengths differ");
        self.scores.check_invariants();

        // Level 0: order, backward links, ranks.
        let mut rank_of = vec![usize::MAX; list.nodes.len()];
        rank_of[HEADER as usize] = 0;
        let mut prev = NIL;
        let mut x = list.head();
        let mut rank = 0;
        while x != NIL {
            rank += 1;
            assert!(rank <= list.len, "level 0 has a cycle or too many nodes");
            let node = list.node(x);
            assert_eq!(node.backward, prev, "backward link of rank {rank}");
            if prev != NIL {
                assert!(
                    list.node(prev).precedes(node.score, &node.member),
                    "ranks {} and {rank} are out of order",
                    rank - 1
                );
            }
            let dict_score = self.scores.get(&node.member);
            assert!(
                dict_score.is_some_and(|s| s.to_bits() == node.score.to_bits()),
                "member {:?}: dict has {dict_score:?}, list has {}",
                node.member,
                node.score
            );
            rank_of[x as usize] = rank;
            prev = x;
            x = node.first.forward;
        }
        assert_eq!(rank, list.len, "level 0 length");
        assert_eq!(list.tail, prev, "tail");

        // Every level: spans, sub-list order, heights.
        for level in 0..list.level {
            let mut x = HEADER;
            let mut on_level = 0;
            loop {
                let link = list.node(x).link(level);
                let from = rank_of[x as usize];
                if link.forward == NIL {
                    assert_eq!(link.span as usize, list.len - from, "end span on level {level}");
                    break;
                }
                let to = rank_of[link.forward as usize];
                assert!(to != usize::MAX && to > from, "level {level} links a free or earlier node");
                assert_eq!(link.span as usize, to - from, "span on level {level} from rank {from}");
                assert!(list.node(link.forward).height() > level);
                on_level += 1;
                x = link.forward;
            }
            let expected =
                (1..list.nodes.len()).filter(|&i| rank_of[i] != usize::MAX && list.nodes[i].height() > level).count();
            assert_eq!(on_level, expected, "nodes missing from level {level}");
        }
        for level in list.level..MAX_LEVEL {
            assert_eq!(list.forward(HEADER, level), NIL, "unused level {level} is linked");
        }
        if list.level > 1 {
            assert_ne!(list.forward(HEADER, list.level - 1), NIL, "top level is empty");
        }

        if self.listpack_sized {
            assert!(self.len() <= LISTPACK_MAX_MEMBERS, "too big to be listpack-sized");
            for (m, s) in self.iter() {
                assert!(m.len() <= LISTPACK_MAX_MEMBER_LEN, "member too long to be listpack-sized");
                assert!(s != 0.0 || s.is_sign_positive(), "-0 in a listpack-sized set");
            }
        }

        // Arena: header + elements + free slots, and free slots are not linked.
        assert_eq!(list.nodes.len(), 1 + list.len + list.free.len(), "arena accounting");
        for &f in &list.free {
            assert_eq!(rank_of[f as usize], usize::MAX, "free slot {f} is linked");
        }
    }
}

/// Elements in ascending order between two ends (both inclusive), double-ended.
pub struct Iter<'a> {
    list: &'a SkipList,
    front: u32,
    back: u32,
    remaining: usize,
}

impl<'a> Iter<'a> {
    fn empty(list: &'a SkipList) -> Iter<'a> {
        Iter { list, front: NIL, back: NIL, remaining: 0 }
    }
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a CompactBytes, f64);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        let node = self.list.node(self.front);
        self.remaining -= 1;
        self.front = node.first.forward;
        Some((&node.member, node.score))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        let node = self.list.node(self.back);
        self.remaining -= 1;
        self.back = node.backward;
        Some((&node.member, node.score))
    }
}

impl ExactSizeIterator for Iter<'_> {}

/// A walk through the elements inside a range, upwards or downwards, stopping at the
/// first element past the far end (Redis's range loops).
pub struct Walk<'a, B> {
    list: &'a SkipList,
    node: u32,
    rev: bool,
    bounds: B,
}

impl<B> Walk<'_, B> {
    /// Steps over `n` elements without checking the far end, as Redis applies
    /// LIMIT's offset before it starts checking the range.
    pub fn skip_unchecked(&mut self, n: usize) {
        for _ in 0..n {
            if self.node == NIL {
                return;
            }
            let node = self.list.node(self.node);
            self.node = if self.rev { node.backward } else { node.first.forward };
        }
    }
}

impl<'a, B: Bounds> Iterator for Walk<'a, B> {
    type Item = (&'a CompactBytes, f64);

    fn next(&mut self) -> Option<Self::Item> {
        if self.node == NIL {
            return None;
        }
        let node = self.list.node(self.node);
        let inside = if self.rev { self.bounds.above_min(node) } else { self.bounds.below_max(node) };
        if !inside {
            self.node = NIL;
            return None;
        }
        self.node = if self.rev { node.backward } else { node.first.forward };
        Some((&node.member, node.score))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// The model: (score, member) in order, with IEEE-equal scores tied by member.
    /// Scores are small integers in the tests, so `total_cmp` agrees with `<`.
    fn model_order(model: &BTreeMap<Vec<u8>, f64>) -> Vec<(Vec<u8>, f64)> {
        let mut v: Vec<(Vec<u8>, f64)> = model.iter().map(|(m, s)| (m.clone(), *s)).collect();
        v.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        v
    }

    fn collect<'a>(it: impl Iterator<Item = (&'a CompactBytes, f64)>) -> Vec<(Vec<u8>, f64)> {
        it.map(|(m, s)| (m.to_vec(), s)).collect()
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, i8),
        Remove(u8),
        PopMin,
        PopMax,
        RemoveRanks(u8, u8),
        RemoveScores(i8, bool, i8, bool),
        RemoveLex(u8, u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (any::<u8>(), -20i8..20).prop_map(|(m, s)| Op::Insert(m, s)),
            2 => any::<u8>().prop_map(Op::Remove),
            1 => Just(Op::PopMin),
            1 => Just(Op::PopMax),
            1 => (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Op::RemoveRanks(a % 40, b % 40)),
            1 => (-20i8..20, any::<bool>(), -20i8..20, any::<bool>())
                .prop_map(|(a, ax, b, bx)| Op::RemoveScores(a, ax, b, bx)),
            1 => (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Op::RemoveLex(a, b)),
        ]
    }

    fn member(m: u8) -> Vec<u8> {
        // Some long members too, so heap-stored CompactBytes are exercised.
        let mut v = format!("m{:03}", m % 64).into_bytes();
        if m.is_multiple_of(7) {
            v.extend_from_slice(&[b'x'; 30]);
        }
        v
    }

    /// Queries compared against the model after every operation.
    fn check_queries(z: &ZSet, model: &BTreeMap<Vec<u8>, f64>) -> Result<(), TestCaseError> {
        z.check_invariants();
        let order = model_order(model);
        prop_assert_eq!(z.len(), order.len());
        prop_assert_eq!(collect(z.iter()), order.clone());
        let mut rev = order.clone();
        rev.reverse();
        prop_assert_eq!(collect(z.iter().rev()), rev);
        for (rank, (m, s)) in order.iter().enumerate() {
            prop_assert_eq!(z.rank(m), Some(rank));
            prop_assert_eq!(z.score(m), Some(*s));
            let at = z.get_by_rank(rank).map(|(m, s)| (m.to_vec(), s));
            prop_assert_eq!(at, Some((m.clone(), *s)));
        }
        prop_assert_eq!(z.get_by_rank(order.len()), None);
        prop_assert_eq!(z.rank(b"absent"), None);
        Ok(())
    }

    /// A score range `(a, ax, b, bx)` and a rank range `(s, e)` to compare.
    type Probe = (i8, i8, bool, bool, usize, usize);

    fn check_ranges(z: &ZSet, model: &BTreeMap<Vec<u8>, f64>, probe: Probe) -> Result<(), TestCaseError> {
        let (a, b, ax, bx, s, e) = probe;
        let order = model_order(model);
        // Score range, both directions, and its count.
        let range = ScoreRange { min: a as f64, min_exclusive: ax, max: b as f64, max_exclusive: bx };
        let expected: Vec<_> = order.iter().filter(|(m, s)| range.contains(*s, m)).cloned().collect();
        prop_assert_eq!(collect(z.range(range, false)), expected.clone());
        let mut rev = expected.clone();
        rev.reverse();
        prop_assert_eq!(collect(z.range(range, true)), rev);
        prop_assert_eq!(z.count(&range), expected.len());
        // Rank range, both directions.
        let expected: Vec<_> = order.iter().skip(s).take((e + 1).saturating_sub(s)).cloned().collect();
        prop_assert_eq!(collect(z.range_by_rank(s, e)), expected.clone());
        let mut rev = expected;
        rev.reverse();
        prop_assert_eq!(collect(z.range_by_rank(s, e).rev()), rev);
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// A random mix of writes, each followed by rank, order and range queries,
        /// must agree with a BTreeMap model and keep every invariant.
        #[test]
        fn behaves_like_the_model(
            seed in any::<u64>(),
            ops in prop::collection::vec(op(), 0..250),
            probes in prop::collection::vec((-20i8..20, -20i8..20, any::<bool>(), any::<bool>(), 0usize..40, 0usize..40), 1..4),
        ) {
            let mut z = ZSet::with_seed(seed);
            let mut model: BTreeMap<Vec<u8>, f64> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(m, s) => {
                        let m = member(m);
                        prop_assert_eq!(z.insert(&m, s as f64), model.insert(m, s as f64));
                    }
                    Op::Remove(m) => {
                        let m = member(m);
                        prop_assert_eq!(z.remove(&m), model.remove(&m));
                    }
                    Op::PopMin => {
                        let expected = model_order(&model).first().cloned();
                        if let Some((m, _)) = &expected { model.remove(m); }
                        prop_assert_eq!(z.pop_min().map(|(m, s)| (m.to_vec(), s)), expected);
                    }
                    Op::PopMax => {
                        let expected = model_order(&model).last().cloned();
                        if let Some((m, _)) = &expected { model.remove(m); }
                        prop_assert_eq!(z.pop_max().map(|(m, s)| (m.to_vec(), s)), expected);
                    }
                    Op::RemoveRanks(a, b) => {
                        let order = model_order(&model);
                        let doomed: Vec<_> = order.iter().skip(a as usize).take((b as usize + 1).saturating_sub(a as usize)).collect();
                        for (m, _) in &doomed { model.remove(m); }
                        prop_assert_eq!(z.remove_range_by_rank(a as usize, b as usize), doomed.len());
                    }
                    Op::RemoveScores(a, ax, b, bx) => {
                        let range = ScoreRange { min: a as f64, min_exclusive: ax, max: b as f64, max_exclusive: bx };
                        let before = model.len();
                        model.retain(|m, s| !range.contains(*s, m));
                        prop_assert_eq!(z.remove_range(&range), before - model.len());
                    }
                    Op::RemoveLex(a, b) => {
                        // Lex ranges are meaningful when scores are equal: compare
                        // against the model only then, but always run them.
                        let (lo, hi) = (member(a), member(b));
                        let range = LexRange { min: LexBound::Inclusive(&lo), max: LexBound::Exclusive(&hi) };
                        let same_score = model.values().all(|s| *s == 0.0);
                        let before = model.len();
                        let removed = z.remove_range(&range);
                        if same_score {
                            model.retain(|m, _| !range.contains(0.0, m));
                            prop_assert_eq!(removed, before - model.len());
                        } else {
                            model = collect(z.iter()).into_iter().collect();
                        }
                    }
                }
                z.check_invariants();
            }
            check_queries(&z, &model)?;
            for probe in probes {
                check_ranges(&z, &model, probe)?;
            }
        }

        /// Lexicographic ranges over members that all share one score.
        #[test]
        fn lex_ranges_match_the_model(
            seed in any::<u64>(),
            members in prop::collection::btree_set(prop::collection::vec(b'a'..b'e', 0..4), 0..60),
            lo in prop::collection::vec(b'a'..b'e', 0..4),
            hi in prop::collection::vec(b'a'..b'e', 0..4),
            kinds in (0u8..4, 0u8..4),
        ) {
            let mut z = ZSet::with_seed(seed);
            for m in &members {
                z.insert(m, 1.0);
            }
            fn bound(kind: u8, s: &[u8]) -> LexBound<'_> {
                match kind {
                    0 => LexBound::Min,
                    1 => LexBound::Max,
                    2 => LexBound::Inclusive(s),
                    _ => LexBound::Exclusive(s),
                }
            }
            let range = LexRange { min: bound(kinds.0, &lo), max: bound(kinds.1, &hi) };
            let expected: Vec<Vec<u8>> = members.iter().filter(|m| range.contains(1.0, m)).cloned().collect();
            let got: Vec<Vec<u8>> = z.range(range, false).map(|(m, _)| m.to_vec()).collect();
            prop_assert_eq!(&got, &expected);
            let mut rev = expected.clone();
            rev.reverse();
            let got: Vec<Vec<u8>> = z.range(range, true).map(|(m, _)| m.to_vec()).collect();
            prop_assert_eq!(got, rev);
            prop_assert_eq!(z.count(&range), expected.len());
            prop_assert_eq!(z.remove_range(&range), expected.len());
            z.check_invariants();
            prop_assert_eq!(z.len(), members.len() - expected.len());
        }
    }

    #[test]
    fn scores_update_in_place_or_move() {
        let mut z = ZSet::with_seed(7);
        for (i, m) in [b"a", b"b", b"c", b"d"].iter().enumerate() {
            z.insert(*m, i as f64);
        }
        // b stays between a (0) and c (2): updated in place.
        assert_eq!(z.insert(b"b", 1.5), Some(1.0));
        // a jumps past d.
        assert_eq!(z.insert(b"a", 10.0), Some(0.0));
        z.check_invariants();
        let order: Vec<_> = z.iter().map(|(m, _)| m.to_vec()).collect();
        assert_eq!(order, [&b"b"[..], b"c", b"d", b"a"]);
        // -0 equals 0: nothing changes, the stored score keeps its sign.
        z.insert(b"z", 0.0);
        assert_eq!(z.insert(b"z", -0.0), Some(0.0));
        assert!(z.score(b"z").is_some_and(|s| s.is_sign_positive()));
        z.check_invariants();
    }

    #[test]
    fn listpack_sized_sets_follow_redis_encoding() {
        let mut z = ZSet::with_seed(9);
        z.insert(b"a", -0.0);
        assert!(z.listpack_sized() && z.score(b"a").is_some_and(|s| s.is_sign_positive()));
        for i in 0..LISTPACK_MAX_MEMBERS - 1 {
            z.insert(format!("m{i}").as_bytes(), i as f64);
        }
        assert_eq!(z.encoding(), "listpack");
        z.insert(b"one too many", 1.0);
        assert_eq!(z.encoding(), "skiplist");
        // Sticky, as in Redis: shrinking does not convert back.
        z.remove_range_by_rank(0, 100);
        assert_eq!(z.encoding(), "skiplist");
        z.insert(b"neg zero", -0.0);
        assert!(z.score(b"neg zero").is_some_and(|s| s.is_sign_negative()));
        z.check_invariants();
        let mut long = ZSet::with_seed(9);
        long.insert(&[b'x'; LISTPACK_MAX_MEMBER_LEN + 1], 1.0);
        assert_eq!(long.encoding(), "skiplist");
        assert_eq!(ZSet::for_new_key(129, 1).encoding(), "skiplist");
        assert_eq!(ZSet::for_new_key(2, 65).encoding(), "skiplist");
        assert_eq!(ZSet::for_new_key(2, 64).encoding(), "listpack");
    }

    #[test]
    fn infinite_scores_and_exclusive_bounds() {
        let mut z = ZSet::with_seed(1);
        z.insert(b"lo", f64::NEG_INFINITY);
        z.insert(b"mid", 0.0);
        z.insert(b"hi", f64::INFINITY);
        let all = ScoreRange::inclusive(f64::NEG_INFINITY, f64::INFINITY);
        assert_eq!(z.count(&all), 3);
        let open = ScoreRange { min_exclusive: true, max_exclusive: true, ..all };
        assert_eq!(collect(z.range(open, false)), vec![(b"mid".to_vec(), 0.0)]);
        assert!(ScoreRange { min: 1.0, min_exclusive: true, max: 1.0, max_exclusive: false }.is_empty());
        assert_eq!(z.remove_range(&open), 1);
        z.check_invariants();
    }

    #[test]
    fn lex_bounds_parse_like_redis() {
        assert_eq!(LexBound::parse(b"-"), Some(LexBound::Min));
        assert_eq!(LexBound::parse(b"+"), Some(LexBound::Max));
        assert_eq!(LexBound::parse(b"+\0x"), Some(LexBound::Max));
        assert_eq!(LexBound::parse(b"[a"), Some(LexBound::Inclusive(b"a")));
        assert_eq!(LexBound::parse(b"("), Some(LexBound::Exclusive(b"")));
        for bad in [&b""[..], b"a", b"-a", b"++"] {
            assert_eq!(LexBound::parse(bad), None);
        }
        let range = |a: &'static [u8], b: &'static [u8]| LexRange::parse(a, b).unwrap();
        assert!(range(b"-", b"-").is_empty());
        assert!(range(b"+", b"-").is_empty());
        assert!(range(b"(a", b"[a").is_empty());
        assert!(!range(b"[a", b"[a").is_empty());
        assert!(!range(b"-", b"+").is_empty());
    }

    #[test]
    fn arena_is_compacted_after_mass_removal() {
        let mut z = ZSet::with_seed(3);
        for i in 0..1000 {
            z.insert(format!("m{i}").as_bytes(), i as f64);
        }
        assert_eq!(z.remove_range_by_rank(0, 899), 900);
        z.check_invariants();
        assert!(z.list.nodes.len() < 200, "arena kept {} slots", z.list.nodes.len());
        assert_eq!(z.get_by_rank(0).map(|(m, _)| m.to_vec()), Some(b"m900".to_vec()));
        for _ in 0..100 {
            assert!(z.pop_max().is_some());
        }
        z.check_invariants();
        assert!(z.is_empty());
    }

    /// A test that can fail: a list whose span is off by one is caught.
    #[test]
    #[should_panic(expected = "span")]
    fn a_corrupted_span_is_caught() {
        let mut z = ZSet::with_seed(5);
        for i in 0..50 {
            z.insert(format!("m{i}").as_bytes(), i as f64);
        }
        let id = z.list.head();
        z.list.node_mut(id).first.span += 1;
        z.check_invariants();
    }
}
