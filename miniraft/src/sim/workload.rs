//! The clients of a simulated run: each issues Put, Get, Cas and Delete on a few keys, one
//! operation at a time, to the node it believes leads, and records every operation in a
//! [`History`] for the linearizability checker, with virtual times.
//!
//! The outcomes follow what a real client can know:
//!
//! - a response: `Returned` at the virtual time it arrives;
//! - `NotLeader` or a refusal before proposing: `Failed` (definitely not applied), and the
//!   client tries again, as a *new* operation, at the hinted leader or another node;
//! - a timeout, or a connection that drops after the request was sent: `Unknown`.
//!
//! Every written value is unique (`c<client>-<n>`), so a read names the one write it saw,
//! which keeps the checker's search small and makes a lost or resurrected write visible.
//! At the end of a run a last client reads every key, retrying until it succeeds, so that a
//! lost committed write cannot hide behind the absence of later reads.
//!
//! What it leaves out: pipelined clients (one operation in flight per client keeps the
//! history easy to read) and sessions (a retried write is a new operation, not a
//! deduplicated one).

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::check::{History, OpId};
use crate::kv::{KvCommand, KvResponse};
use crate::types::NodeId;

use super::node::{ClientReply, ClientRequest, ReplyResult, RequestId};
use super::rng::SimRng;

/// How the clients behave in one run.
#[derive(Clone, Debug)]
pub struct WorkloadSettings {
    pub clients: usize,
    pub ops_per_client: usize,
    /// The keys operations pick from.
    pub keys: usize,
    /// Pause between a client's operations, uniform in `0..=think_max_us`.
    pub think_max_us: u64,
    /// Pause after a refusal before the retry; it doubles with each refusal in a row (up
    /// to [`MAX_BACKOFF_DOUBLINGS`] times), as a real client backs off while there is no
    /// leader, and resets when an operation returns.
    pub retry_backoff_us: u64,
    /// How long a client waits for a response before recording `Unknown`.
    pub timeout_us: u64,
    /// A client that got a response from a node keeps sending to it; with this many per
    /// million it picks a random node instead (clients with stale ideas of the leader).
    pub wander_per_million: u32,
}

/// The most times a client doubles its retry pause.
pub const MAX_BACKOFF_DOUBLINGS: u32 = 5;

/// A client's operation in flight.
#[derive(Clone, Debug)]
struct InFlight {
    request: RequestId,
    op: OpId,
    command: KvCommand,
    target: NodeId,
}

#[derive(Clone, Debug)]
struct Client {
    id: u64,
    ops_left: usize,
    current: Option<InFlight>,
    /// Where it sends next.
    leader_guess: Option<NodeId>,
    /// Numbers its written values.
    counter: u64,
    /// The last value it saw per key, for Cas's `expected`.
    seen: BTreeMap<Bytes, Option<Bytes>>,
    /// For the final reader: the keys it still has to read.
    final_keys: Vec<Bytes>,
    /// Refusals in a row, for the backoff.
    refusals: u32,
}

/// A request the cluster must deliver, and when the client gives up on it.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub target: NodeId,
    pub request: ClientRequest,
    pub timeout_at: u64,
}

/// What happened to an operation, for the trace.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub client: u64,
    /// When the client should wake for its next operation (None: it is finished).
    pub next_at: Option<u64>,
}

/// All clients and the history they record.
pub struct Workload {
    settings: WorkloadSettings,
    clients: Vec<Client>,
    keys: Vec<Bytes>,
    pub history: History,
    next_request: RequestId,
    /// Operations that returned, for the report.
    pub completed: u64,
}

/// Nanoseconds, the checker's unit, from virtual microseconds.
fn ns(us: u64) -> u64 {
    us * 1_000
}

impl Workload {
    /// Clients that have not started.
    pub fn new(settings: WorkloadSettings) -> Workload {
        let keys = (0..settings.keys.max(1)).map(|k| Bytes::from(format!("k{k}"))).collect();
        let clients = (0..settings.clients)
            .map(|i| Client {
                id: i as u64 + 1,
                ops_left: settings.ops_per_client,
                current: None,
                leader_guess: None,
                counter: 0,
                seen: BTreeMap::new(),
                final_keys: Vec::new(),
                refusals: 0,
            })
            .collect();
        Workload { settings, clients, keys, history: History::new(), next_request: 1, completed: 0 }
    }

    /// The number of clients, the final reader included once added.
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// When every client has used up its operations and none is in flight.
    pub fn is_done(&self) -> bool {
        self.clients.iter().all(|client| client.ops_left == 0 && client.current.is_none())
    }

    /// Stops every client from starting new operations (the run's time is up); those in
    /// flight still finish.
    pub fn stop(&mut self) {
        for client in &mut self.clients {
            client.ops_left = 0;
            client.final_keys.clear();
        }
    }

    /// Adds the final reader, which reads every key once, retrying until each read
    /// returns. Returns its index, to wake it.
    pub fn add_final_reader(&mut self) -> usize {
        let id = self.clients.len() as u64 + 1;
        self.clients.push(Client {
            id,
            ops_left: self.keys.len(),
            current: None,
            leader_guess: None,
            counter: 0,
            seen: BTreeMap::new(),
            final_keys: self.keys.iter().rev().cloned().collect(),
            refusals: 0,
        });
        self.clients.len() - 1
    }

    /// Whether the final reader has read every key.
    pub fn final_reads_done(&self) -> bool {
        self.clients.iter().all(|client| client.final_keys.is_empty() && client.current.is_none())
    }

    /// Client `index` wakes up: it starts its next operation, if it has one left.
    pub fn wake(&mut self, index: usize, now: u64, nodes: &[NodeId], rng: &mut SimRng) -> Option<Outgoing> {
        let settings = self.settings.clone();
        let client = &mut self.clients[index];
        if client.current.is_some() || client.ops_left == 0 {
            return None;
        }
        let command = if let Some(key) = client.final_keys.last() {
            KvCommand::Get { key: key.clone() }
        } else {
            let key = rng.choose(&self.keys).cloned()?;
            client.counter += 1;
            let value = Bytes::from(format!("c{}-{}", client.id, client.counter));
            match rng.below(100) {
                0..=29 => KvCommand::Put { key, value },
                30..=64 => KvCommand::Get { key },
                65..=84 => {
                    let expected = if rng.chance(800_000) { client.seen.get(&key).cloned().flatten() } else { None };
                    KvCommand::Cas { key, expected, new: value }
                }
                _ => KvCommand::Delete { key },
            }
        };
        let target = match client.leader_guess {
            Some(node) if !rng.chance(settings.wander_per_million) => node,
            _ => *rng.choose(nodes)?,
        };
        let op = self.history.invoke(client.id, command.clone(), ns(now));
        let request = self.next_request;
        self.next_request += 1;
        client.current = Some(InFlight { request, op, command: command.clone(), target });
        Some(Outgoing {
            target,
            request: ClientRequest { id: request, client: index as u64, command },
            timeout_at: now + settings.timeout_us,
        })
    }

    /// A reply arrived at its client. Returns None if the client had given up on it.
    pub fn on_reply(&mut self, reply: &ClientReply, now: u64, nodes: &[NodeId], rng: &mut SimRng) -> Option<Resolved> {
        let settings = self.settings.clone();
        let index = reply.client as usize;
        let client = self.clients.get_mut(index)?;
        let current = client.current.as_ref()?;
        if current.request != reply.request {
            return None;
        }
        let current = client.current.take()?;
        let mut delay = rng.range(0, settings.think_max_us);
        let backoff = settings.retry_backoff_us << client.refusals.min(MAX_BACKOFF_DOUBLINGS);
        match &reply.result {
            ReplyResult::Ok(response) => {
                self.history.complete(current.op, response.clone(), ns(now));
                self.completed += 1;
                client.ops_left = client.ops_left.saturating_sub(1);
                client.leader_guess = Some(reply.from);
                client.refusals = 0;
                remember(client, &current.command, response);
                if client.final_keys.last() == Some(current.command.key()) {
                    client.final_keys.pop();
                }
            }
            ReplyResult::NotLeader(hint) => {
                self.history.fail(current.op);
                client.leader_guess = match hint {
                    Some(leader) if *leader != current.target => Some(*leader),
                    _ => rng.choose(nodes).copied(),
                };
                // A hint is worth following at once; without one, back off.
                delay = if hint.is_some() { backoff / 4 } else { backoff };
                client.refusals += 1;
            }
            ReplyResult::Failed(_) => {
                self.history.fail(current.op);
                client.leader_guess = rng.choose(nodes).copied();
                delay = backoff;
                client.refusals += 1;
            }
            ReplyResult::Unknown(_) => {
                self.history.unknown(current.op);
                // The final reader retries until it has read every key.
                if client.final_keys.is_empty() {
                    client.ops_left = client.ops_left.saturating_sub(1);
                }
                client.leader_guess = rng.choose(nodes).copied();
            }
        }
        Some(Resolved { client: client.id, next_at: self.next_wake(index, now + delay) })
    }

    /// Client `index`'s timer for `request` fired. Returns None if it had moved on.
    pub fn on_timeout(
        &mut self,
        index: usize,
        request: RequestId,
        now: u64,
        nodes: &[NodeId],
        rng: &mut SimRng,
    ) -> Option<Resolved> {
        let client = self.clients.get_mut(index)?;
        if client.current.as_ref().map(|current| current.request) != Some(request) {
            return None;
        }
        let current = client.current.take()?;
        self.history.unknown(current.op);
        // The final reader retries until it has read every key.
        if client.final_keys.is_empty() {
            client.ops_left = client.ops_left.saturating_sub(1);
        }
        client.leader_guess = rng.choose(nodes).copied();
        Some(Resolved { client: client.id, next_at: self.next_wake(index, now) })
    }

    fn next_wake(&self, index: usize, at: u64) -> Option<u64> {
        let client = &self.clients[index];
        (client.ops_left > 0).then_some(at)
    }

    /// Resolves every operation still in flight as unknown (the run ended under them).
    pub fn abandon(&mut self) {
        for client in &mut self.clients {
            if let Some(current) = client.current.take() {
                self.history.unknown(current.op);
            }
        }
    }

    /// Clients with an operation in flight.
    pub fn in_flight(&self) -> usize {
        self.clients.iter().filter(|client| client.current.is_some()).count()
    }
}

/// Updates what a client believes a key holds after a response.
fn remember(client: &mut Client, command: &KvCommand, response: &KvResponse) {
    let key = command.key().clone();
    match (command, response) {
        (KvCommand::Put { value, .. }, KvResponse::Ok) => {
            client.seen.insert(key, Some(value.clone()));
        }
        (KvCommand::Get { .. }, KvResponse::Value(value)) => {
            client.seen.insert(key, value.clone());
        }
        (KvCommand::Cas { new, .. }, KvResponse::Cas(true)) => {
            client.seen.insert(key, Some(new.clone()));
        }
        (KvCommand::Delete { .. }, KvResponse::Deleted(_)) => {
            client.seen.insert(key, None);
        }
        _ => {}
    }
}
