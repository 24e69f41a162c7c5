//! The `miniraft` server as real processes, driven by the `redis` crate (a client we did
//! not write): the commands' semantics, errors, pipelining, redirection to the leader,
//! durability across `kill -9` of every node, snapshots, leader transfer and removal.
//!
//! Run: `cargo test -p miniraft --test server`.

mod support;

use std::time::{Duration, Instant};

use redis::{Commands, RedisResult, Value};
use support::cluster::{Cluster, ClusterOptions, NodeId};

/// Long enough for an election after a kill, on a loaded machine, in a debug build.
const LEADER_TIMEOUT: Duration = Duration::from_secs(20);

fn cluster(nodes: usize, extra_args: &[&str]) -> Cluster {
    Cluster::start(ClusterOptions {
        nodes,
        extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
        ..ClusterOptions::default()
    })
}

/// The error code and detail of a reply that must be an error.
fn error_of<T: std::fmt::Debug>(result: RedisResult<T>) -> (String, String) {
    let error = result.expect_err("an error reply");
    (error.code().unwrap_or("").to_string(), error.detail().unwrap_or("").to_string())
}

/// Retries `op` while the cluster settles (a fresh leader answers TRYAGAIN until it has
/// committed an entry of its term).
fn settled<T>(mut op: impl FnMut() -> RedisResult<T>) -> T {
    let deadline = Instant::now() + LEADER_TIMEOUT;
    loop {
        match op() {
            Ok(value) => return value,
            Err(e) if Instant::now() < deadline && e.code() == Some("TRYAGAIN") => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => panic!("the request failed: {e}"),
        }
    }
}

#[test]
fn one_node_serves_get_set_del_cas_and_pipelines() {
    let cluster = cluster(1, &[]);
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT);
    assert_eq!(leader, 1);
    let mut c = cluster.connect(1);

    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
    let echo: String = redis::cmd("PING").arg("hello").query(&mut c).unwrap();
    assert_eq!(echo, "hello");

    settled(|| c.set::<_, _, ()>("k", "v1"));
    assert_eq!(c.get::<_, Option<String>>("k").unwrap(), Some("v1".into()));
    assert_eq!(c.get::<_, Option<String>>("missing").unwrap(), None);
    // Binary-safe keys and values.
    let key = b"bin\x00\r\nkey".to_vec();
    let value = vec![0u8, 255, 13, 10, 7];
    c.set::<_, _, ()>(&key, &value).unwrap();
    assert_eq!(c.get::<_, Vec<u8>>(&key).unwrap(), value);

    assert_eq!(c.del::<_, i64>("k").unwrap(), 1);
    assert_eq!(c.del::<_, i64>("k").unwrap(), 0);
    assert_eq!(c.get::<_, Option<String>>("k").unwrap(), None);

    // CAS: `-` expects the key absent.
    let cas = |c: &mut redis::Connection, expected: &str, new: &str| -> i64 {
        redis::cmd("CAS").arg("c").arg(expected).arg(new).query(c).unwrap()
    };
    assert_eq!(cas(&mut c, "x", "a"), 0, "no swap when the key is absent and x was expected");
    assert_eq!(cas(&mut c, "-", "a"), 1, "swap when absent was expected");
    assert_eq!(cas(&mut c, "-", "b"), 0, "no swap: the key exists now");
    assert_eq!(cas(&mut c, "a", "b"), 1);
    assert_eq!(c.get::<_, String>("c").unwrap(), "b");

    // Errors in Redis's wording; the connection stays usable after each.
    let (code, detail) = error_of(redis::cmd("NOSUCH").arg("a").query::<Value>(&mut c));
    assert_eq!(code, "ERR");
    assert!(detail.starts_with("unknown command 'NOSUCH'"), "{detail}");
    let (code, detail) = error_of(redis::cmd("GET").query::<Value>(&mut c));
    assert_eq!((code.as_str(), detail.as_str()), ("ERR", "wrong number of arguments for 'get' command"));
    let (code, detail) = error_of(redis::cmd("SET").arg("k").arg("v").arg("EX").arg(10).query::<Value>(&mut c));
    assert_eq!((code.as_str(), detail.as_str()), ("ERR", "syntax error"));
    let (code, _) = error_of(redis::cmd("CAS").arg("k").arg("v").query::<Value>(&mut c));
    assert_eq!(code, "ERR");
    let (code, _) = error_of(redis::cmd("RAFT.TRANSFER").arg("zero").query::<Value>(&mut c));
    assert_eq!(code, "ERR");

    // Pipelining: 200 writes and reads in one round trip; the answers come back in order.
    let mut pipe = redis::pipe();
    for i in 0..100 {
        pipe.cmd("SET").arg(format!("p{i}")).arg(format!("v{i}"));
        pipe.cmd("GET").arg(format!("p{i}"));
    }
    pipe.cmd("PING");
    let answers: Vec<Value> = pipe.query(&mut c).unwrap();
    assert_eq!(answers.len(), 201);
    for i in 0..100 {
        assert_eq!(answers[2 * i], Value::Okay, "answer to SET p{i}");
        assert_eq!(answers[2 * i + 1], Value::BulkString(format!("v{i}").into_bytes()), "answer to GET p{i}");
    }
    assert_eq!(answers[200], Value::SimpleString("PONG".into()));

    let status: String = redis::cmd("RAFT.STATUS").query(&mut c).unwrap();
    let parsed = support::cluster::Status::parse(&status).expect("RAFT.STATUS parses");
    assert_eq!((parsed.id, parsed.role.as_str(), parsed.leader), (1, "leader", Some(1)), "{status}");
    // 108 writes and the leader's Noop, every one applied.
    assert!(parsed.commit == 109 && parsed.applied == parsed.commit, "{status}");
    assert!(status.starts_with("id=1 role=leader term="), "{status}");
}

#[test]
fn followers_answer_notleader_with_the_leaders_id() {
    let cluster = cluster(3, &[]);
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT);
    let mut on_leader = cluster.connect(leader);
    settled(|| on_leader.set::<_, _, ()>("k", "v"));
    for follower in cluster.ids().into_iter().filter(|id| *id != leader) {
        let mut c = cluster.connect(follower);
        let (code, detail) = error_of(c.set::<_, _, ()>("k", "other"));
        assert_eq!((code.as_str(), detail.as_str()), ("NOTLEADER", leader.to_string().as_str()));
        let (code, detail) = error_of(c.get::<_, Option<String>>("k"));
        assert_eq!((code.as_str(), detail.as_str()), ("NOTLEADER", leader.to_string().as_str()));
        let status = cluster.status(follower).expect("the follower answers RAFT.STATUS");
        assert_eq!((status.role.as_str(), status.leader), ("follower", Some(leader)));
    }
    // The refused writes were not applied.
    assert_eq!(on_leader.get::<_, String>("k").unwrap(), "v");
}

/// Writes every key, each acknowledged before the next is sent.
fn write_keys(cluster: &Cluster, leader: NodeId, keys: std::ops::Range<u32>) {
    let mut c = cluster.connect(leader);
    for i in keys {
        settled(|| c.set::<_, _, ()>(format!("key{i}"), format!("value{i}")));
    }
}

/// Reads every key on the current leader and checks its value.
fn check_keys(cluster: &Cluster, keys: std::ops::Range<u32>) {
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT);
    let mut c = cluster.connect(leader);
    for i in keys {
        let value: Option<String> = settled(|| c.get(format!("key{i}")));
        assert_eq!(value, Some(format!("value{i}")), "key{i} after the restart (leader {leader})");
    }
}

#[test]
fn acknowledged_writes_survive_kill9_of_every_node() {
    for nodes in [1, 3] {
        let mut cluster = cluster(nodes, &[]);
        let leader = cluster.wait_for_leader(LEADER_TIMEOUT);
        write_keys(&cluster, leader, 0..50);
        for id in cluster.ids() {
            cluster.kill9(id);
        }
        for id in cluster.ids() {
            cluster.start_node(id);
        }
        check_keys(&cluster, 0..50);
        // And the cluster still takes writes.
        let leader = cluster.wait_for_leader(LEADER_TIMEOUT);
        write_keys(&cluster, leader, 50..55);
        check_keys(&cluster, 0..55);
    }
}

#[test]
fn a_node_that_missed_compacted_entries_catches_up_from_a_snapshot() {
    let mut cluster = cluster(3, &["--snapshot-count", "20"]);
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT);
    let lagging = cluster.ids().into_iter().find(|id| *id != leader).expect("a follower");
    cluster.kill9(lagging);
    write_keys(&cluster, leader, 0..120);
    let status = cluster.status(leader).expect("leader status");
    assert!(status.snapshot >= 100, "the leader compacted its log: {status:?}");
    cluster.start_node(lagging);
    // The restarted follower gets the leader's snapshot plus the entries after it.
    let deadline = Instant::now() + LEADER_TIMEOUT;
    loop {
        let leader_status = cluster.status(leader).expect("leader status");
        let follower = cluster.status(lagging).expect("follower status");
        if follower.applied >= leader_status.commit && follower.snapshot > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the follower did not catch up: {follower:?} vs {leader_status:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Make it the leader, so it serves reads from what it received.
    let mut c = cluster.connect(leader);
    let reply: String = redis::cmd("RAFT.TRANSFER").arg(lagging).query(&mut c).unwrap();
    assert_eq!(reply, "OK");
    assert_eq!(cluster.wait_for_leader(LEADER_TIMEOUT), lagging);
    check_keys(&cluster, 0..120);
    // The snapshot is on its disk too: it restarts from it.
    cluster.kill9(lagging);
    cluster.start_node(lagging);
    check_keys(&cluster, 0..120);
}

#[test]
fn leadership_transfer_and_removal_of_the_leader() {
    let cluster = cluster(3, &[]);
    let first = cluster.wait_for_leader(LEADER_TIMEOUT);
    write_keys(&cluster, first, 0..5);
    let target = cluster.ids().into_iter().find(|id| *id != first).expect("a follower");
    let mut c = cluster.connect(first);
    let reply: String = redis::cmd("RAFT.TRANSFER").arg(target).query(&mut c).unwrap();
    assert_eq!(reply, "OK");
    assert_eq!(cluster.wait_for_leader(LEADER_TIMEOUT), target);
    // The old leader now redirects.
    let (code, detail) = error_of(c.set::<_, _, ()>("k", "v"));
    assert_eq!((code.as_str(), detail.as_str()), ("NOTLEADER", target.to_string().as_str()));

    // Remove the leader itself: it commits its own removal, steps down, and the other two
    // elect a leader among themselves.
    let mut c = cluster.connect(target);
    let reply: String = settled(|| redis::cmd("RAFT.REMOVE").arg(target).query(&mut c));
    assert_eq!(reply, "OK");
    let deadline = Instant::now() + LEADER_TIMEOUT;
    let remaining: Vec<NodeId> = cluster.ids().into_iter().filter(|id| *id != target).collect();
    let new_leader = loop {
        let statuses: Vec<_> = remaining.iter().filter_map(|id| cluster.status(*id)).collect();
        if let Some(leader) = statuses.iter().find(|s| s.role == "leader") {
            if statuses.len() == 2 && statuses.iter().all(|s| s.leader == Some(leader.id)) {
                assert!(!leader.voters.contains(&target), "the removed node is not a voter: {leader:?}");
                break leader.id;
            }
        }
        assert!(Instant::now() < deadline, "no new leader after removing {target}: {statuses:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_ne!(new_leader, target);
    let mut c = cluster.connect(new_leader);
    settled(|| c.set::<_, _, ()>("after-removal", "yes"));
    assert_eq!(c.get::<_, String>("after-removal").unwrap(), "yes");
    for i in 0..5 {
        assert_eq!(c.get::<_, String>(format!("key{i}")).unwrap(), format!("value{i}"));
    }
}

#[test]
fn sigterm_stops_a_node_cleanly() {
    let mut cluster = cluster(1, &[]);
    cluster.wait_for_leader(LEADER_TIMEOUT);
    write_keys(&cluster, 1, 0..3);
    let code = cluster.nodes[0].terminate(Duration::from_secs(15));
    assert_eq!(code, Some(0), "exit status after SIGTERM; log:\n{}", cluster.logs());
    cluster.start_node(1);
    check_keys(&cluster, 0..3);
}

#[test]
fn a_leader_cut_off_from_its_followers_acknowledges_nothing() {
    let cluster = cluster(3, &[]);
    let old = cluster.wait_for_leader(LEADER_TIMEOUT);
    write_keys(&cluster, old, 0..3);
    let others: Vec<NodeId> = cluster.ids().into_iter().filter(|id| *id != old).collect();
    // Its entries reach nobody; the followers still reach it (so it learns it was deposed).
    for &other in &others {
        cluster.cut(old, other);
    }
    let mut c = cluster.connect(old);
    let result = c.set::<_, _, ()>("lost", "never acknowledged");
    let (code, _) = error_of(result);
    assert!(code == "UNKNOWN" || code == "NOTLEADER", "a write without a quorum got {code}");

    // The other two elect a leader, which never saw the write.
    let deadline = Instant::now() + LEADER_TIMEOUT;
    let new = loop {
        let statuses: Vec<_> = others.iter().filter_map(|id| cluster.status(*id)).collect();
        if let Some(leader) = statuses.iter().find(|s| s.role == "leader") {
            break leader.id;
        }
        assert!(Instant::now() < deadline, "no new leader: {statuses:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut c = cluster.connect(new);
    assert_eq!(settled(|| c.get::<_, Option<String>>("lost")), None);
    cluster.heal_all();
    assert_eq!(cluster.wait_for_leader(LEADER_TIMEOUT), new, "the old leader rejoins as a follower");
    assert_eq!(settled(|| c.get::<_, Option<String>>("lost")), None, "its uncommitted entry was dropped");
    check_keys(&cluster, 0..3);
}
