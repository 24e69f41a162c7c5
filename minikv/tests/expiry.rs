//! Active expiry: keys nobody reads still go away, and their memory with them.
//!
//! Lazy expiry (a read finds the key past its deadline and deletes it) covers keys
//! that are read. Keys that are written once and never read again, the common case of
//! a cache, rely on the active cycle: `hz` times a second it samples keys with a TTL
//! and deletes the expired ones. Without it they would stay in memory forever.
//!
//! The second test is the broken variant: the same keys with the cycle switched off
//! (`DEBUG SET-ACTIVE-EXPIRE 0`) stay, which shows that it is the cycle, and nothing
//! else, that removed them in the first test.
//!
//! Left out: the cycle's time budget and its adaptive effort (unit tests of
//! `src/expiry.rs` cover the pure sampling loop).

mod support;

use std::time::{Duration, Instant};

use support::{info_u64, wait_until, Server};

/// Keys in the big test (the brief: 100k keys).
const KEYS: usize = 100_000;
/// How long all of them may take to disappear once their deadlines passed.
const EXPIRE_DEADLINE: Duration = Duration::from_secs(10);

fn dbsize(con: &mut redis::Connection) -> u64 {
    redis::cmd("DBSIZE").query(con).unwrap()
}

fn used_memory(con: &mut redis::Connection) -> u64 {
    info_u64(con, "memory", "used_memory")
}

/// Writes `count` keys `prefix:i` with a 16-byte value and a TTL drawn from `ttl_ms`,
/// in pipelines of 1000.
fn write_volatile(
    con: &mut redis::Connection,
    rng: &mut fastrand::Rng,
    prefix: &str,
    count: usize,
    ttl_ms: std::ops::RangeInclusive<u64>,
) {
    for start in (0..count).step_by(1000) {
        let mut pipe = redis::pipe();
        for i in start..(start + 1000).min(count) {
            pipe.cmd("SET")
                .arg(format!("{prefix}:{i}"))
                .arg("0123456789abcdef")
                .arg("PX")
                .arg(rng.u64(ttl_ms.clone()))
                .ignore();
        }
        let () = pipe.query(con).unwrap();
    }
}

/// 100k keys whose TTLs (PX) run out 0.3-0.8 s after the last of them is written,
/// and which nobody reads: all gone within 10 s, and used_memory back near where it
/// started.
#[test]
fn unread_keys_expire_and_free_their_memory() {
    let seed = support::seed("unread_keys_expire");
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let mut con = server.client();
    // A first INFO so that whatever it allocates once is part of the baseline.
    let _ = used_memory(&mut con);
    let baseline = used_memory(&mut con);

    // Writing 100k keys takes a while in a debug build, so the TTL of each key counts
    // from when the whole batch is written: each one gets PX (time left until the end
    // of writing, as estimated from a first timed batch) + 300..800 ms. Nothing of the
    // key's TTL is special-cased: it is a plain PX on a SET.
    let started = Instant::now();
    write_volatile(&mut con, &mut rng, "warm", 1000, 60_000..=60_000);
    let per_key = started.elapsed().as_secs_f64() / 1000.0;
    let _: u64 =
        redis::cmd("DEL").arg((0..1000).map(|i| format!("warm:{i}")).collect::<Vec<_>>()).query(&mut con).unwrap();
    let write_ms = (per_key * KEYS as f64 * 1000.0 * 1.5) as u64;
    let written_at = Instant::now();
    for start in (0..KEYS).step_by(1000) {
        let elapsed = written_at.elapsed().as_millis() as u64;
        let until_end = write_ms.saturating_sub(elapsed);
        let mut pipe = redis::pipe();
        for i in start..start + 1000 {
            pipe.cmd("SET")
                .arg(format!("key:{i}"))
                .arg("0123456789abcdef")
                .arg("PX")
                .arg(until_end + rng.u64(300..=800))
                .ignore();
        }
        let () = pipe.query(&mut con).unwrap();
    }
    let peak_keys = dbsize(&mut con);
    let peak = used_memory(&mut con);
    let write_time = written_at.elapsed();
    eprintln!(
        "wrote {KEYS} keys in {write_time:?} (estimated {write_ms} ms); {peak_keys} present, \
         used_memory {baseline} -> {peak}"
    );
    assert!(
        peak_keys > KEYS as u64 / 2,
        "only {peak_keys} of {KEYS} keys were alive after writing; the test would prove little"
    );

    let gone = wait_until(EXPIRE_DEADLINE, Duration::from_millis(100), || dbsize(&mut con) == 0);
    assert!(gone, "{} keys still present {EXPIRE_DEADLINE:?} after their TTLs (nobody read them)", dbsize(&mut con));
    let expired = info_u64(&mut con, "stats", "expired_keys");
    assert!(expired >= peak_keys, "expired_keys is {expired}, but {peak_keys} keys expired");

    // Memory: back within 1 MiB (or 10% of what the keys took, if more) of the
    // baseline. A leak of the values, or tables that never shrink after emptying,
    // would leave several MiB behind.
    let tolerance = (1u64 << 20).max((peak - baseline) / 10);
    let released = wait_until(Duration::from_secs(3), Duration::from_millis(100), || {
        used_memory(&mut con) <= baseline + tolerance
    });
    let after = used_memory(&mut con);
    assert!(
        peak > baseline + 4 * tolerance,
        "the keys took too little memory ({baseline} -> {peak}) for the check to mean anything"
    );
    assert!(
        released,
        "used_memory {after} after expiry, baseline {baseline}, peak {peak}: \
         {} bytes not released (tolerance {tolerance})",
        after.saturating_sub(baseline)
    );
}

/// The broken variant: with the active cycle off, expired keys that nobody reads stay
/// (DBSIZE unchanged, no expired_keys). A read removes the one it touches; switching
/// the cycle back on removes the rest.
#[test]
fn without_the_active_cycle_unread_keys_stay() {
    const COUNT: usize = 20_000;
    let seed = support::seed("without_active_cycle");
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let mut con = server.client();
    let () = redis::cmd("DEBUG").arg("SET-ACTIVE-EXPIRE").arg(0).query(&mut con).unwrap();
    write_volatile(&mut con, &mut rng, "k", COUNT, 100..=300);
    // Every deadline has passed after this, with two seconds of cycles (hz 10) to
    // remove them if the cycle were running.
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(dbsize(&mut con), COUNT as u64, "keys disappeared with the active cycle off");
    assert_eq!(info_u64(&mut con, "stats", "expired_keys"), 0);

    // Lazy expiry: reading 100 of them deletes exactly those.
    let mut pipe = redis::pipe();
    for i in 0..100 {
        pipe.cmd("GET").arg(format!("k:{i}"));
    }
    let values: Vec<Option<String>> = pipe.query(&mut con).unwrap();
    assert!(values.iter().all(Option::is_none), "an expired key was returned");
    assert_eq!(dbsize(&mut con), COUNT as u64 - 100);
    assert_eq!(info_u64(&mut con, "stats", "expired_keys"), 100);

    // The cycle back on: the rest goes without anyone reading it.
    let () = redis::cmd("DEBUG").arg("SET-ACTIVE-EXPIRE").arg(1).query(&mut con).unwrap();
    let gone = wait_until(EXPIRE_DEADLINE, Duration::from_millis(100), || dbsize(&mut con) == 0);
    assert!(gone, "{} keys left after switching the cycle back on", dbsize(&mut con));
    assert_eq!(info_u64(&mut con, "stats", "expired_keys"), COUNT as u64);
}
