//! Three real `miniraft` processes on loopback, a proxy on every directed link, clients
//! recording a history, and a nemesis that `kill -9`s nodes (the leader too), restarts
//! them, and cuts and heals links (one way and both ways) for about 25 seconds. Then the
//! links heal, the cluster must recover, and the history must be linearizable.
//!
//! This is the same property the simulator checks (`tests/sim.rs`), with real fsyncs,
//! real sockets, real timers and real crashes instead of simulated ones.
//!
//! Clients follow `-NOTLEADER <id>` to the leader. What each outcome means for the
//! history (see `miniraft::check`): a reply is `Returned`; `-NOTLEADER`/`-TRYAGAIN` are
//! `Failed` (definitely not applied); `-UNKNOWN`, a timeout or a lost connection after
//! the request was sent are `Unknown` for writes. A read that got no value constrains
//! nothing, so it is `Failed` whatever happened.
//!
//! Seeded: the seed (printed) drives the nemesis and the clients' choices; timing on a real
//! machine is not reproducible, so a replay reproduces the fault schedule, not the
//! interleaving. `MINIRAFT_NEMESIS_SECONDS` lengthens the run (a soak), and
//! `MINIRAFT_NODE_ARGS` adds flags to every node (`--read-mode lease`, `--unsafe-no-fsync`).
//!
//! Run: `cargo test -p miniraft --test processes -- --nocapture`.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use miniraft::check::{check_kv, CheckBudget, CheckResult, History};
use miniraft::kv::{KvCommand, KvResponse};
use redis::Value;
use support::cluster::{Cluster, ClusterOptions, NodeId};

/// Concurrent clients.
const CLIENTS: u64 = 6;
/// Keys the clients share (few, so operations on one key overlap and conflict).
const KEYS: usize = 6;
/// How long one operation may take before the client gives up on it (the node's own
/// request timeout, 2 s, normally answers first).
const OP_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the nemesis runs (by default).
const NEMESIS_SECONDS: u64 = 25;
/// Operations that must have returned, so the test fails when nothing works.
const MIN_RETURNED: usize = 300;
/// Operations that must return after everything healed (the cluster recovered).
const MIN_RETURNED_AFTER_HEAL: usize = 30;

#[derive(Default, Debug)]
struct ClientStats {
    returned: usize,
    returned_after_heal: usize,
    unknown: usize,
    failed: usize,
    /// Replies no correct server sends (`-ERR` to a well-formed command, a wrong type).
    unexpected: Vec<String>,
}

/// What one run produced.
struct Run {
    history: History,
    returned: usize,
    returned_after_heal: usize,
    unknown: usize,
    failed: usize,
    unexpected: Vec<String>,
    /// The nodes' log tails, for failure messages.
    logs: String,
}

/// Starts a cluster with `extra_args`, runs the clients and `nemesis` (one fault per call)
/// for `nemesis_seconds`, heals, waits for a leader, lets the clients run 4 more seconds,
/// and returns the history.
fn run(
    seed: u64,
    extra_args: &[&str],
    nemesis_seconds: u64,
    mut nemesis: impl FnMut(&mut Cluster, &mut fastrand::Rng) -> String,
) -> Run {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut cluster = Cluster::start(ClusterOptions {
        extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
        ..ClusterOptions::default()
    });
    cluster.wait_for_leader(Duration::from_secs(30));

    let start = Instant::now();
    let history = Arc::new(Mutex::new(History::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let healed = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let world = ClientWorld {
                addrs: cluster.clients.clone(),
                history: history.clone(),
                stop: stop.clone(),
                healed: healed.clone(),
                start,
            };
            cluster.runtime.spawn(run_client(client, seed, world))
        })
        .collect();

    // The nemesis, on this thread (it spawns the children, which die with this thread).
    let nemesis_end = Instant::now() + Duration::from_secs(nemesis_seconds);
    let mut faults = 0;
    while Instant::now() < nemesis_end {
        let at = start.elapsed().as_millis();
        let fault = nemesis(&mut cluster, &mut rng);
        eprintln!("nemesis at {at:>6} ms: {fault}");
        faults += 1;
        std::thread::sleep(Duration::from_millis(300 + rng.u64(0..1200)));
    }

    // Heal everything and wait for the cluster to come back.
    cluster.heal_all();
    for id in cluster.ids() {
        if !cluster.node(id).is_running() {
            cluster.start_node(id);
        }
    }
    let leader = cluster.wait_for_leader(Duration::from_secs(30));
    eprintln!("healed at {} ms; leader {leader}", start.elapsed().as_millis());
    healed.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::SeqCst);

    let stats: Vec<ClientStats> = cluster.runtime.block_on(async {
        let mut all = Vec::new();
        for client in clients {
            all.push(client.await.expect("a client task panicked"));
        }
        all
    });
    let total = |f: fn(&ClientStats) -> usize| stats.iter().map(f).sum::<usize>();
    let history = history.lock().unwrap().clone();
    eprintln!(
        "the nodes logged {} compactions and {} snapshots installed from a leader",
        cluster.count_in_logs("compacted the log"),
        cluster.count_in_logs("installed the leader's snapshot")
    );
    let run = Run {
        returned: total(|s| s.returned),
        returned_after_heal: total(|s| s.returned_after_heal),
        unknown: total(|s| s.unknown),
        failed: total(|s| s.failed),
        unexpected: stats.into_iter().flat_map(|s| s.unexpected).collect(),
        history,
        logs: cluster.logs(),
    };
    eprintln!(
        "{} operations: {} returned ({} after the heal), {} unknown, {} failed; {faults} faults",
        run.history.len(),
        run.returned,
        run.returned_after_heal,
        run.unknown,
        run.failed,
    );
    assert_eq!(run.history.pending_count(), 0, "every operation was resolved");
    run
}

/// Checks the history and prints the verdict and any violations.
fn check(run: &Run) -> miniraft::check::KvCheckReport {
    let checked_at = Instant::now();
    let report = check_kv(&run.history, CheckBudget::default());
    eprintln!(
        "checked {} keys, {} operations ({} dropped) in {:?}: {:?}",
        report.keys,
        report.operations,
        report.dropped,
        checked_at.elapsed(),
        report.result
    );
    for violation in &report.violations {
        eprintln!("{violation}");
    }
    report
}

#[test]
fn histories_stay_linearizable_under_kill9_and_partitions() {
    let seed = support::cluster::seed("processes");
    let nemesis_seconds =
        std::env::var("MINIRAFT_NEMESIS_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(NEMESIS_SECONDS);
    // Snapshots every 1000 entries: a node restarted after a kill often catches up through
    // InstallSnapshot, and every node restarts from a snapshot plus a log suffix.
    let mut args = vec!["--snapshot-count".to_string(), "1000".to_string()];
    // More flags for every node, e.g. MINIRAFT_NODE_ARGS="--read-mode lease".
    if let Ok(extra) = std::env::var("MINIRAFT_NODE_ARGS") {
        args.extend(extra.split_whitespace().map(str::to_string));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = run(seed, &args, nemesis_seconds, nemesis_step);
    assert!(run.unexpected.is_empty(), "unexpected replies (seed {seed}): {:?}\n{}", run.unexpected, run.logs);
    let report = check(&run);
    assert!(
        report.violations.is_empty() && report.result == CheckResult::Linearizable,
        "the history is not linearizable (seed {seed}): {report}\n{}",
        run.logs
    );
    assert!(run.returned >= MIN_RETURNED, "only {} operations returned (seed {seed})\n{}", run.returned, run.logs);
    assert!(
        run.returned_after_heal >= MIN_RETURNED_AFTER_HEAL,
        "only {} operations returned after the heal (seed {seed})\n{}",
        run.returned_after_heal,
        run.logs
    );
}

/// The same test against a driver that applies entries before they commit
/// (`RuntimeBug::ApplyBeforeCommit`): cutting the leader off makes it acknowledge writes
/// the next leader never sees, and the checker must say so.
///
/// Run: `cargo test -p miniraft --features broken --test processes`.
#[cfg(feature = "broken")]
#[test]
fn the_checker_catches_a_driver_that_applies_before_commit() {
    let seed = support::cluster::seed("processes-broken");
    let run = run(seed, &["--inject-bug", "apply-before-commit"], 20, |cluster, rng| {
        // Only the fault this bug needs: the leader alone, its clients still connected.
        let victim =
            cluster.ids().into_iter().find(|id| cluster.status(*id).is_some_and(|s| s.role == "leader")).unwrap_or(1);
        for other in cluster.ids().into_iter().filter(|id| *id != victim) {
            cluster.cut(victim, other);
            cluster.cut(other, victim);
        }
        let cut = Duration::from_millis(1500 + rng.u64(0..1000));
        std::thread::sleep(cut);
        cluster.heal_all();
        format!("isolated node {victim} for {} ms", cut.as_millis())
    });
    let report = check(&run);
    assert_eq!(
        report.result,
        CheckResult::NotLinearizable,
        "the broken driver went unnoticed (seed {seed}); {} operations returned",
        run.returned
    );
}

/// One fault, applied and (for the timed ones) undone before returning. Returns what it did.
fn nemesis_step(cluster: &mut Cluster, rng: &mut fastrand::Rng) -> String {
    let ids = cluster.ids();
    let random_node = |rng: &mut fastrand::Rng| ids[rng.usize(0..ids.len())];
    let current_leader = |cluster: &Cluster| {
        cluster.ids().into_iter().find(|id| cluster.status(*id).is_some_and(|s| s.role == "leader"))
    };
    let hold = |rng: &mut fastrand::Rng| Duration::from_millis(800 + rng.u64(0..2200));
    match rng.u8(0..5) {
        0 | 1 => {
            // kill -9, the leader half of the time.
            let leader = current_leader(cluster);
            let victim = match rng.bool() {
                true => leader.unwrap_or_else(|| random_node(rng)),
                false => random_node(rng),
            };
            cluster.kill9(victim);
            let down = hold(rng);
            std::thread::sleep(down);
            cluster.start_node(victim);
            let role = if leader == Some(victim) { " (the leader)" } else { "" };
            format!("kill -9 node {victim}{role}, restarted after {} ms", down.as_millis())
        }
        2 => {
            let from = random_node(rng);
            let to = loop {
                let to = random_node(rng);
                if to != from {
                    break to;
                }
            };
            cluster.cut(from, to);
            let cut = hold(rng);
            std::thread::sleep(cut);
            cluster.heal_all();
            format!("cut {from} -> {to} (one way) for {} ms", cut.as_millis())
        }
        3 => {
            // Isolate one node (the leader, if there is one): a deposed leader must not
            // serve reads or acknowledge writes.
            let victim = current_leader(cluster).unwrap_or_else(|| random_node(rng));
            for other in ids.iter().copied().filter(|id| *id != victim) {
                cluster.cut(victim, other);
                cluster.cut(other, victim);
            }
            let cut = hold(rng);
            std::thread::sleep(cut);
            cluster.heal_all();
            format!("isolated node {victim} for {} ms", cut.as_millis())
        }
        _ => {
            // The leader can send but not hear: its heartbeats arrive, the answers do not.
            let victim = current_leader(cluster).unwrap_or_else(|| random_node(rng));
            for other in ids.iter().copied().filter(|id| *id != victim) {
                cluster.cut(other, victim);
            }
            let cut = hold(rng);
            std::thread::sleep(cut);
            cluster.heal_all();
            format!("node {victim} deaf (inbound links cut) for {} ms", cut.as_millis())
        }
    }
}

/// What the client tasks share with the test.
struct ClientWorld {
    addrs: Arc<Mutex<BTreeMap<NodeId, Option<SocketAddr>>>>,
    history: Arc<Mutex<History>>,
    stop: Arc<AtomicBool>,
    healed: Arc<AtomicBool>,
    start: Instant,
}

impl ClientWorld {
    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}

async fn connect(addr: SocketAddr) -> Option<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://{addr}/")).ok()?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Duration::from_secs(1))
        .set_response_timeout(OP_TIMEOUT);
    client.get_multiplexed_async_connection_with_config(&config).await.ok()
}

/// How a request ended, from the history's point of view.
enum Ended {
    Returned(KvResponse),
    /// Not applied; with the leader to try next if the node named one.
    Failed {
        leader: Option<NodeId>,
    },
    /// Maybe applied; the connection is suspect.
    Unknown,
}

async fn run_client(client: u64, seed: u64, world: ClientWorld) -> ClientStats {
    let mut rng = fastrand::Rng::with_seed(seed ^ (client + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let nodes: Vec<NodeId> = world.addrs.lock().unwrap().keys().copied().collect();
    let mut target = nodes[client as usize % nodes.len()];
    let mut connection: Option<redis::aio::MultiplexedConnection> = None;
    let mut stats = ClientStats::default();
    // The last value this client saw for each key: what its CAS expects (often stale).
    let mut seen: BTreeMap<usize, Option<Bytes>> = BTreeMap::new();
    let mut sequence = 0u64;
    let other_node = |rng: &mut fastrand::Rng, current: NodeId| loop {
        let next = nodes[rng.usize(0..nodes.len())];
        if next != current {
            return next;
        }
    };
    while !world.stop.load(Ordering::SeqCst) {
        let Some(addr) = world.addrs.lock().unwrap().get(&target).copied().flatten() else {
            target = other_node(&mut rng, target);
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if connection.is_none() {
            connection = connect(addr).await;
            if connection.is_none() {
                target = other_node(&mut rng, target);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        }
        let Some(conn) = connection.as_mut() else { continue };

        let key_index = rng.usize(0..KEYS);
        let key = Bytes::from(format!("key{key_index}"));
        sequence += 1;
        let value = Bytes::from(format!("c{client}-{sequence}"));
        let command = match rng.u8(0..100) {
            0..=39 => KvCommand::Get { key },
            40..=74 => KvCommand::Put { key, value },
            75..=94 => KvCommand::Cas { key, expected: seen.get(&key_index).cloned().flatten(), new: value },
            _ => KvCommand::Delete { key },
        };
        let request = match &command {
            KvCommand::Get { key } => redis::cmd("GET").arg(key.as_ref()).to_owned(),
            KvCommand::Put { key, value } => redis::cmd("SET").arg(key.as_ref()).arg(value.as_ref()).to_owned(),
            KvCommand::Cas { key, expected, new } => redis::cmd("CAS")
                .arg(key.as_ref())
                .arg(expected.as_ref().map_or(&b"-"[..], |e| e.as_ref()))
                .arg(new.as_ref())
                .to_owned(),
            KvCommand::Delete { key } => redis::cmd("DEL").arg(key.as_ref()).to_owned(),
        };
        let op = world.history.lock().unwrap().invoke(client, command.clone(), world.now());
        let reply = tokio::time::timeout(OP_TIMEOUT, request.query_async::<Value>(conn)).await;
        let at = world.now();
        let ended = match reply {
            Err(_) => Ended::Unknown,
            Ok(Ok(value)) => match decode(&command, value) {
                Ok(response) => Ended::Returned(response),
                Err(why) => {
                    stats.unexpected.push(why);
                    Ended::Unknown
                }
            },
            Ok(Err(error)) => match error.code() {
                Some("NOTLEADER") => {
                    Ended::Failed { leader: error.detail().and_then(|d| d.trim().parse::<NodeId>().ok()) }
                }
                Some("TRYAGAIN") => Ended::Failed { leader: None },
                Some("UNKNOWN") => Ended::Unknown,
                Some(code) => {
                    stats.unexpected.push(format!("{command:?}: -{code} {}", error.detail().unwrap_or("")));
                    Ended::Unknown
                }
                // Not a server reply: the connection broke after the request went out.
                None => Ended::Unknown,
            },
        };
        match ended {
            Ended::Returned(response) => {
                match (&command, &response) {
                    (KvCommand::Get { .. }, KvResponse::Value(value)) => {
                        seen.insert(key_index, value.clone());
                    }
                    (KvCommand::Put { value, .. }, _) | (KvCommand::Cas { new: value, .. }, KvResponse::Cas(true)) => {
                        seen.insert(key_index, Some(value.clone()));
                    }
                    (KvCommand::Delete { .. }, _) => {
                        seen.insert(key_index, None);
                    }
                    _ => {}
                }
                world.history.lock().unwrap().complete(op, response, at);
                stats.returned += 1;
                if world.healed.load(Ordering::SeqCst) {
                    stats.returned_after_heal += 1;
                }
            }
            Ended::Failed { leader } => {
                world.history.lock().unwrap().fail(op);
                stats.failed += 1;
                target = match leader {
                    Some(leader) if leader != target && nodes.contains(&leader) => leader,
                    _ => {
                        // No leader known here yet: give the election a moment, then look elsewhere.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        other_node(&mut rng, target)
                    }
                };
                connection = None;
            }
            Ended::Unknown => {
                // A read's unknown outcome constrains nothing: it changed nothing and
                // nobody saw what it read.
                if command.is_read() {
                    world.history.lock().unwrap().fail(op);
                    stats.failed += 1;
                } else {
                    world.history.lock().unwrap().unknown(op);
                    stats.unknown += 1;
                }
                connection = None;
                target = other_node(&mut rng, target);
            }
        }
    }
    stats
}

/// The reply as the map's response, or why it is not one this command can get.
fn decode(command: &KvCommand, value: Value) -> Result<KvResponse, String> {
    match (command, value) {
        (KvCommand::Get { .. }, Value::BulkString(bytes)) => Ok(KvResponse::Value(Some(Bytes::from(bytes)))),
        (KvCommand::Get { .. }, Value::Nil) => Ok(KvResponse::Value(None)),
        (KvCommand::Put { .. }, Value::Okay) => Ok(KvResponse::Ok),
        (KvCommand::Cas { .. }, Value::Int(n @ (0 | 1))) => Ok(KvResponse::Cas(n == 1)),
        (KvCommand::Delete { .. }, Value::Int(n @ (0 | 1))) => Ok(KvResponse::Deleted(n == 1)),
        (command, value) => Err(format!("{command:?} answered {value:?}")),
    }
}
