//! Properties that hold across shards and over time: atomicity of transactions and
//! multi-key commands under concurrency, automatic AOF rewrite, every eviction policy,
//! and start-up from a config file.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::{info_u64, wait_until, Server};

const ACCOUNTS: usize = 16;
const START_BALANCE: i64 = 1000;

fn start(args: &[&str]) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), args);
    (dir, server)
}

fn account(i: usize) -> String {
    format!("account:{i}")
}

/// How the writers move money between two accounts.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Transfer {
    /// MULTI / DECRBY / INCRBY / EXEC: atomic.
    Transaction,
    /// The deliberately broken variant: the same two commands without MULTI.
    TwoCommands,
}

/// Writers move money between random accounts (the 16 keys fall into different shards)
/// while readers check with MGET, which must see a consistent snapshot, that the total
/// never changes. Returns how many inconsistent totals the readers saw.
fn run_bank(server: &Server, transfer: Transfer, run_for: Duration, seed: u64) -> u64 {
    let mut setup = server.client();
    let mut mset = redis::cmd("MSET");
    for i in 0..ACCOUNTS {
        mset.arg(account(i)).arg(START_BALANCE);
    }
    let () = mset.query(&mut setup).expect("MSET");
    let expected = START_BALANCE * ACCOUNTS as i64;
    let stop = Arc::new(AtomicBool::new(false));
    let bad_totals = Arc::new(AtomicU64::new(0));
    let reads = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for w in 0..2u64 {
        let mut con = server.client();
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || {
            let mut rng = fastrand::Rng::with_seed(seed ^ (w + 1));
            while !stop.load(Ordering::Relaxed) {
                let (from, to) = (rng.usize(..ACCOUNTS), rng.usize(..ACCOUNTS));
                let amount = rng.i64(1..50);
                match transfer {
                    Transfer::Transaction => {
                        let _: () = redis::pipe()
                            .atomic()
                            .cmd("DECRBY")
                            .arg(account(from))
                            .arg(amount)
                            .ignore()
                            .cmd("INCRBY")
                            .arg(account(to))
                            .arg(amount)
                            .ignore()
                            .query(&mut con)
                            .expect("transfer");
                    }
                    Transfer::TwoCommands => {
                        let _: i64 =
                            redis::cmd("DECRBY").arg(account(from)).arg(amount).query(&mut con).expect("decrby");
                        let _: i64 = redis::cmd("INCRBY").arg(account(to)).arg(amount).query(&mut con).expect("incrby");
                    }
                }
            }
        }));
    }
    for _ in 0..2 {
        let mut con = server.client();
        let (stop, bad_totals, reads) = (stop.clone(), bad_totals.clone(), reads.clone());
        threads.push(std::thread::spawn(move || {
            let names: Vec<String> = (0..ACCOUNTS).map(account).collect();
            while !stop.load(Ordering::Relaxed) {
                let balances: Vec<i64> = redis::cmd("MGET").arg(&names).query(&mut con).expect("MGET");
                reads.fetch_add(1, Ordering::Relaxed);
                if balances.iter().sum::<i64>() != expected {
                    bad_totals.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    std::thread::sleep(run_for);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("bank thread");
    }
    assert!(reads.load(Ordering::Relaxed) > 100, "the readers barely ran");
    let total: Vec<i64> =
        redis::cmd("MGET").arg((0..ACCOUNTS).map(account).collect::<Vec<_>>()).query(&mut setup).unwrap();
    assert_eq!(total.iter().sum::<i64>(), expected, "money was created or lost");
    bad_totals.load(Ordering::Relaxed)
}

/// MULTI/EXEC over keys in different shards is atomic: EXEC holds every shard its
/// commands name until it is done, and MGET reads all of its shards at one instant.
#[test]
fn transactions_across_shards_are_atomic() {
    let (_dir, server) = start(&[]);
    let seed = support::seed("transactions_across_shards_are_atomic");
    let bad = run_bank(&server, Transfer::Transaction, Duration::from_millis(1500), seed);
    assert_eq!(bad, 0, "MGET saw {bad} totals that a transaction was half way through (seed {seed})");
}

/// The same check catches a writer that is not atomic, so it can fail.
#[test]
fn the_bank_check_catches_non_atomic_transfers() {
    let (_dir, server) = start(&[]);
    let seed = support::seed("the_bank_check_catches_non_atomic_transfers");
    let bad = run_bank(&server, Transfer::TwoCommands, Duration::from_millis(1500), seed);
    assert!(bad > 0, "two separate commands never showed a broken total: the check cannot fail (seed {seed})");
}

/// The AOF is rewritten by itself once it grows by `auto-aof-rewrite-percentage` past
/// `auto-aof-rewrite-min-size`, and the rewritten AOF loads the same data.
///
/// Automatic rewrites start off (percentage 0) and are switched on with CONFIG SET once
/// the writes are done. With them on during the writes, a loaded machine can start the
/// rewrite early, and the writes after it legitimately grow the AOF to up to twice its
/// post-rewrite size (Redis's rule too), so no size bound would hold.
#[test]
fn aof_rewrites_itself_when_it_grows() {
    let (_dir, mut server) = start(&[
        "--appendonly",
        "yes",
        "--auto-aof-rewrite-percentage",
        "0",
        "--auto-aof-rewrite-min-size",
        "256kb",
        "--hz",
        "50",
    ]);
    let mut con = server.client();
    // Overwrite the same 100 keys: the log grows, the data does not.
    for round in 0..60 {
        let mut pipe = redis::pipe();
        for k in 0..100 {
            pipe.cmd("SET").arg(format!("k{k}")).arg(format!("{round}:{}", "x".repeat(100))).ignore();
        }
        let () = pipe.query(&mut con).expect("SET");
    }
    let grown = info_u64(&mut con, "persistence", "aof_current_size");
    assert!(grown > 512 * 1024, "60 rounds of 100 SETs wrote only {grown} bytes of AOF");
    assert_eq!(info_u64(&mut con, "persistence", "aof_rewrites"), 0, "a rewrite ran while they were off");
    let () = redis::cmd("CONFIG").arg("SET").arg("auto-aof-rewrite-percentage").arg("100").query(&mut con).unwrap();
    let rewrote = wait_until(Duration::from_secs(20), Duration::from_millis(50), || {
        info_u64(&mut con, "persistence", "aof_rewrites") >= 1
            && info_u64(&mut con, "persistence", "aof_rewrite_in_progress") == 0
    });
    assert!(rewrote, "no automatic rewrite after the AOF grew to {grown} bytes, well past 256 KB");
    let size = info_u64(&mut con, "persistence", "aof_current_size");
    assert!(size < 256 * 1024, "the rewritten AOF is still {size} bytes for 100 small keys");
    let () = redis::cmd("SET").arg("after").arg("rewrite").query(&mut con).unwrap();
    server.kill9();
    server.restart();
    let mut con = server.client();
    let last: String = redis::cmd("GET").arg("k42").query(&mut con).unwrap();
    assert!(last.starts_with("59:"), "k42 after restart is {last}");
    let after: String = redis::cmd("GET").arg("after").query(&mut con).unwrap();
    assert_eq!(after, "rewrite");
}

/// Every policy other than noeviction keeps writes succeeding under maxmemory by
/// evicting; volatile policies evict only keys that have a TTL. (noeviction,
/// allkeys-lru and volatile-ttl have finer tests in limits.rs.)
#[test]
fn every_eviction_policy_evicts_within_its_scope() {
    for policy in ["allkeys-lfu", "allkeys-random", "volatile-lru", "volatile-lfu", "volatile-random"] {
        let (_dir, server) = start(&["--maxmemory", "12mb", "--maxmemory-policy", policy]);
        let mut con = server.client();
        let volatile = policy.starts_with("volatile");
        let value = "v".repeat(1000);
        // 2000 keys without TTL (2 MB): a volatile policy must never touch them.
        for i in 0..2000 {
            let () = redis::cmd("SET").arg(format!("keep:{i}")).arg(&value).query(&mut con).unwrap();
        }
        // 30 MB more, with a TTL, into 12 MB.
        for i in 0..30_000 {
            let r: redis::RedisResult<()> =
                redis::cmd("SET").arg(format!("ttl:{i}")).arg(&value).arg("EX").arg(3600).query(&mut con);
            if let Err(e) = r {
                panic!("{policy}: write {i} failed: {e}");
            }
        }
        let evicted = info_u64(&mut con, "stats", "evicted_keys");
        let used = info_u64(&mut con, "memory", "used_memory");
        assert!(evicted > 10_000, "{policy}: only {evicted} keys evicted");
        assert!(used < 14 * 1024 * 1024, "{policy}: used_memory {used} far above 12mb");
        let kept: usize = redis::cmd("EXISTS")
            .arg((0..2000).map(|i| format!("keep:{i}")).collect::<Vec<_>>())
            .query(&mut con)
            .unwrap();
        if volatile {
            assert_eq!(kept, 2000, "{policy} evicted keys that have no TTL");
        }
    }
}

/// redis-server's start-up conventions: a config file in redis.conf syntax, then flags
/// that override it; unknown directives and bad values stop the server with a message
/// naming them.
#[test]
fn config_file_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("minikv.conf");
    std::fs::write(
        &conf,
        "# a comment\nmaxmemory 10mb\nmaxmemory-policy allkeys-lru\nhz 20\nrequirepass \"secret word\"\n",
    )
    .unwrap();
    let exe = env!("CARGO_BIN_EXE_minikv");
    let port = support::free_port();
    // The file must come first, as with redis-server; flags after it override it.
    let mut child = std::process::Command::new(exe)
        .arg(&conf)
        .args(["--port", &port.to_string(), "--admin-port", "0", "--dir"])
        .arg(dir.path())
        .args(["--maxmemory", "20mb", "--requirepass", ""])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    let mut con = None;
    assert!(wait_until(Duration::from_secs(30), Duration::from_millis(20), || {
        con = client.get_connection().ok();
        con.is_some()
    }));
    let mut con = con.unwrap();
    let get = |con: &mut redis::Connection, name: &str| -> String {
        let pair: Vec<String> = redis::cmd("CONFIG").arg("GET").arg(name).query(con).unwrap();
        pair[1].clone()
    };
    assert_eq!(get(&mut con, "maxmemory"), (20 * 1024 * 1024).to_string(), "the flag overrides the file");
    assert_eq!(get(&mut con, "maxmemory-policy"), "allkeys-lru");
    assert_eq!(get(&mut con, "hz"), "20");
    assert_eq!(get(&mut con, "requirepass"), "", "the flag cleared the file's password");
    drop(con);
    child.kill().unwrap();
    child.wait().unwrap();

    std::fs::write(&conf, "replicaof 127.0.0.1 6379\n").unwrap();
    let out = std::process::Command::new(exe).arg(&conf).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("replicaof") && err.contains("line 1"), "{err}");

    let out = std::process::Command::new(exe).args(["--port", "70000"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("port") && err.contains("65535"), "{err}");

    let out = std::process::Command::new(exe).arg("--help").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--appendfsync"));
}
