//! The Raft core's hot paths, with no I/O: a 3-node cluster in memory, messages
//! delivered by hand and persistence a no-op, so the figure is the core's own cost of
//! committing a proposal (propose → AppendEntries → responses → commit → apply, on the
//! leader and, one batch later, on both followers), the ceiling the runtime's disk and
//! network then pull down. Plus the
//! codec (a heartbeat and a 64-entry AppendEntries, encode and decode) and the
//! linearizability checker on a fixed history.
//!
//! Throughput is per committed entry (or per message, per operation), so the figures
//! read as "entries/s through the core".
//!
//! Run: `cargo bench -p minibench --bench raft` (`-- --quick` for a smoke run).

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use miniraft::check::{check_kv, CheckBudget, History};
use miniraft::codec::{decode_frame, encode_message};
use miniraft::kv::{KvCommand, KvResponse};
use miniraft::raft::Raft;
use miniraft::{Config, Entry, EntryPayload, Membership, Message, MessageBody, Restored, Role};

/// Entries kept in memory before the bench compacts every node (outside the timed part),
/// as a real node's snapshots would: without it a long run grows the log without bound.
const COMPACT_EVERY: u64 = 4096;

/// The command every proposal carries: a 100-byte SET, like the side-by-side benchmark's.
fn set_command() -> Bytes {
    KvCommand::Put { key: Bytes::from_static(b"key:000001"), value: Bytes::from(vec![b'v'; 100]) }.encode()
}

/// Three nodes, node 1 elected leader.
struct Cluster {
    nodes: Vec<Raft>,
    /// Reused between rounds of delivery.
    in_flight: Vec<Message>,
    /// Entries handed out to apply, summed over the nodes.
    applied: u64,
}

impl Cluster {
    fn new() -> Cluster {
        let membership = Membership::with_voters([1, 2, 3]);
        let nodes = (1..=3)
            .map(|id| {
                let restored = Restored { initial_membership: membership.clone(), ..Restored::default() };
                Raft::new(Config::new(id), restored).expect("a valid config")
            })
            .collect();
        let mut cluster = Cluster { nodes, in_flight: Vec::new(), applied: 0 };
        cluster.nodes[0].campaign();
        cluster.settle();
        assert_eq!(cluster.nodes[0].role(), Role::Leader, "node 1 wins an election nobody contests");
        cluster
    }

    /// Runs every node's Ready loop and delivers messages until nothing moves.
    /// Persistence is a no-op: the Ready's entries are "durable" at once.
    fn settle(&mut self) {
        loop {
            let mut moved = false;
            for node in &mut self.nodes {
                while node.has_ready() {
                    let ready = node.ready();
                    moved = true;
                    self.in_flight.extend(ready.messages_now);
                    self.in_flight.extend(ready.messages);
                    self.applied += ready.committed.len() as u64;
                    black_box(&ready.committed);
                    node.advance();
                }
            }
            if !moved && self.in_flight.is_empty() {
                return;
            }
            for message in self.in_flight.drain(..) {
                let to = message.to as usize - 1;
                self.nodes[to].step(message);
            }
        }
    }

    /// Proposes `batch` commands at the leader and runs the cluster until the leader has
    /// committed and applied them. Followers learn that commit index with the next
    /// AppendEntries, so in steady state each iteration also applies the previous batch
    /// on both followers: the same work per iteration, one batch behind.
    fn commit(&mut self, batch: usize, command: &Bytes) {
        let mut last = 0;
        for _ in 0..batch {
            (_, last) = self.nodes[0].propose(command.clone()).expect("the leader accepts");
        }
        self.settle();
        assert!(self.nodes[0].applied_index() >= last, "the leader applied the batch");
    }

    /// Compacts every node through its applied index (the state machine's bytes do not
    /// matter to the core).
    fn compact(&mut self) {
        for node in &mut self.nodes {
            let applied = node.applied_index();
            if applied > node.first_index() {
                node.compact(applied, Bytes::from_static(b"snapshot")).expect("applied entries compact");
            }
        }
    }
}

fn propose_commit_apply(c: &mut Criterion) {
    let command = set_command();
    let mut group = c.benchmark_group("raft_core_3_nodes");
    for batch in [1usize, 64] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("commit_batch_{batch}"), |b| {
            let mut cluster = Cluster::new();
            b.iter_custom(|iterations| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iterations {
                    let start = Instant::now();
                    cluster.commit(batch, &command);
                    elapsed += start.elapsed();
                    if cluster.nodes[0].last_index() - cluster.nodes[0].first_index() > COMPACT_EVERY {
                        cluster.compact();
                    }
                }
                elapsed
            });
        });
    }
    group.finish();
}

fn append_entries(entries: usize) -> Message {
    let command = set_command();
    Message {
        from: 1,
        to: 2,
        term: 5,
        body: MessageBody::AppendEntries {
            prev_log_index: 1000,
            prev_log_term: 5,
            entries: (0..entries as u64)
                .map(|i| Entry { term: 5, index: 1001 + i, payload: EntryPayload::Command(command.clone()) })
                .collect(),
            leader_commit: 999,
            round: 77,
        },
    }
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("raft_codec");
    group.throughput(Throughput::Elements(1));
    for (name, message) in [("heartbeat", append_entries(0)), ("append_64", append_entries(64))] {
        let mut frame = Vec::new();
        encode_message(&message, &mut frame);
        group.bench_function(format!("encode_{name}"), |b| {
            let mut out = Vec::with_capacity(frame.len());
            b.iter(|| {
                out.clear();
                encode_message(black_box(&message), &mut out);
                black_box(out.len())
            })
        });
        group.bench_function(format!("decode_{name}"), |b| {
            b.iter(|| {
                let decoded = decode_frame(black_box(&frame)).expect("valid").expect("complete");
                black_box(decoded.1)
            })
        });
    }
    group.finish();
}

/// A linearizable history of `ops` operations over 4 keys: op i is called at 10·i and
/// returns at 10·i + 15, so each overlaps its neighbours, and the responses are those of
/// applying the operations in index order (one valid linearization).
fn fixed_history(ops: u64) -> History {
    let mut state: [Option<Bytes>; 4] = Default::default();
    let mut history = History::new();
    for i in 0..ops {
        let k = (i * 7 % 4) as usize;
        let key = Bytes::from(format!("k{k}"));
        let value = Bytes::from(format!("v{i}"));
        let (command, response) = match i % 4 {
            0 | 1 => {
                state[k] = Some(value.clone());
                (KvCommand::Put { key, value }, KvResponse::Ok)
            }
            2 => (KvCommand::Get { key }, KvResponse::Value(state[k].clone())),
            _ => {
                let expected = state[k].clone();
                state[k] = Some(value.clone());
                (KvCommand::Cas { key, expected, new: value }, KvResponse::Cas(true))
            }
        };
        let op = history.invoke(i % 3, command, i * 10);
        history.complete(op, response, i * 10 + 15);
    }
    history
}

fn checker(c: &mut Criterion) {
    let history = fixed_history(1000);
    assert!(check_kv(&history, CheckBudget::default()).is_linearizable(), "the fixed history is linearizable");
    let mut group = c.benchmark_group("raft_checker");
    group.throughput(Throughput::Elements(history.len() as u64));
    group.bench_function("check_kv_1000_ops_4_keys", |b| {
        b.iter(|| black_box(check_kv(black_box(&history), CheckBudget::default()).is_linearizable()))
    });
    group.finish();
}

criterion_group!(benches, propose_commit_apply, codec, checker);
criterion_main!(benches);
