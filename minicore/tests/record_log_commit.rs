//! Tests for the durability API of `minicore::record_log`: group commit (and the
//! sequential baseline that shows the fsync counter is not trivially low), the three
//! fsync policies, the async path on tokio runtimes, the no-blocking promise of `append`,
//! segment rolling, and what happens after an I/O error.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use minicore::record_log::{Durability, FsyncPolicy, LogError, LogOptions, RecordLog};

/// Segments big enough that no test here rolls unless it means to, so the fsync counter
/// counts commits' fsyncs only.
const NO_ROLL_SEGMENT_BYTES: u64 = 1 << 30;

fn open(dir: &Path, fsync: FsyncPolicy) -> RecordLog {
    let options = LogOptions { fsync, segment_bytes: NO_ROLL_SEGMENT_BYTES, ..LogOptions::default() };
    RecordLog::open(dir, options).expect("open the log").0
}

fn read_all(log: &RecordLog) -> Vec<(u64, Vec<u8>)> {
    log.reader(log.first_lsn()).expect("reader").collect::<Result<_, _>>().expect("read every record")
}

#[test]
fn the_log_and_its_async_commit_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>(_: &T) {}
    assert_send_sync::<RecordLog>();
    let dir = tempfile::tempdir().expect("temp dir");
    let log = open(dir.path(), FsyncPolicy::Always);
    let lsn = log.append(b"x").expect("append");
    // A tokio::spawn-able future: no lock guard is held across an await.
    let future = log.commit_async(lsn);
    assert_send(&future);
    drop(future);
}

/// Group commit: 8 threads committing under `Always` at once share fsyncs.
#[test]
fn concurrent_always_commits_share_fsyncs() {
    const THREADS: u64 = 8;
    const COMMITS_PER_THREAD: u64 = 200;
    let dir = tempfile::tempdir().expect("temp dir");
    let log = Arc::new(open(dir.path(), FsyncPolicy::Always));
    let start = Arc::new(Barrier::new(THREADS as usize));
    let committers: Vec<_> = (0..THREADS)
        .map(|thread_id| {
            let log = Arc::clone(&log);
            let start = Arc::clone(&start);
            thread::spawn(move || {
                start.wait();
                for i in 0..COMMITS_PER_THREAD {
                    let lsn = log.append(format!("{thread_id}:{i}").as_bytes()).expect("append");
                    assert_eq!(log.commit(lsn).expect("commit"), Durability::Synced);
                    assert!(log.durable_lsn() > lsn, "commit returned before the record was durable");
                }
            })
        })
        .collect();
    for committer in committers {
        committer.join().expect("committer thread");
    }

    let commits = THREADS * COMMITS_PER_THREAD;
    let stats = log.stats();
    eprintln!("{commits} commits from {THREADS} threads took {} fsyncs", stats.fsyncs);
    assert!(stats.fsyncs < commits, "no group commit: {} fsyncs for {commits} commits", stats.fsyncs);
    assert_eq!(stats.durable_lsn, commits);

    // Every record is there once, and each thread's records are in its own order.
    let records = read_all(&log);
    assert_eq!(records.len() as u64, commits);
    let mut next_per_thread = vec![0u64; THREADS as usize];
    for (_, payload) in records {
        let text = String::from_utf8(payload).expect("utf-8 payload");
        let (thread_id, i) = text.split_once(':').expect("thread:i");
        let thread_id: usize = thread_id.parse().expect("thread id");
        assert_eq!(i.parse::<u64>().expect("index"), next_per_thread[thread_id]);
        next_per_thread[thread_id] += 1;
    }
}

/// The baseline that makes the group-commit test meaningful: one committer at a time pays
/// exactly one fsync per commit, so the counter does reach the number of commits when
/// nothing can be shared.
#[test]
fn sequential_always_commits_pay_one_fsync_each() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = open(dir.path(), FsyncPolicy::Always);
    for i in 0..50u64 {
        let lsn = log.append(&i.to_le_bytes()).expect("append");
        assert_eq!(log.commit(lsn).expect("commit"), Durability::Synced);
    }
    assert_eq!(log.stats().fsyncs, 50);
    // Committing what is already durable costs nothing.
    assert_eq!(log.commit(10).expect("commit"), Durability::Synced);
    assert_eq!(log.stats().fsyncs, 50);
}

#[test]
fn never_policy_commits_are_written_and_sync_on_request() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = open(dir.path(), FsyncPolicy::Never);
    let lsn = log.append(b"hello").expect("append");
    assert_eq!(log.durability_of(lsn), Durability::Buffered);
    assert_eq!(log.commit(lsn).expect("commit"), Durability::Written);
    assert_eq!(log.durability_of(lsn), Durability::Written);
    thread::sleep(Duration::from_millis(50));
    assert_eq!(log.durable_lsn(), 0, "the Never policy does not fsync on its own");
    assert_eq!(log.stats().fsyncs, 0);
    log.sync(lsn).expect("sync");
    assert_eq!(log.durability_of(lsn), Durability::Synced);
    assert_eq!(log.stats().fsyncs, 1);
}

#[test]
fn every_millis_policy_syncs_in_the_background() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = open(dir.path(), FsyncPolicy::EveryMillis(20));
    let committed = log.append(b"committed").expect("append");
    assert_eq!(log.commit(committed).expect("commit"), Durability::Written);
    // Never committed: the background tick writes it too, bounding what a crash loses.
    let uncommitted = log.append(b"uncommitted").expect("append");
    let deadline = Instant::now() + Duration::from_secs(5);
    while log.durable_lsn() <= uncommitted {
        assert!(Instant::now() < deadline, "no background fsync within 5 s: {:?}", log.stats());
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(log.durability_of(committed), Durability::Synced);
    assert!(log.stats().fsyncs >= 1);
    // Nothing new: the ticks stop fsyncing.
    let fsyncs = log.stats().fsyncs;
    thread::sleep(Duration::from_millis(100));
    assert_eq!(log.stats().fsyncs, fsyncs, "fsync only when something was written since the last one");
}

#[test]
fn write_out_skips_the_syscall_when_already_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = open(dir.path(), FsyncPolicy::Never);
    for i in 0..10u8 {
        log.append(&[i; 10]).expect("append");
    }
    log.write_out(9).expect("write out");
    let writes = log.stats().writes;
    assert_eq!(writes, 1, "ten pending records go out in one write(2)");
    log.write_out(3).expect("write out");
    log.write_out(9).expect("write out");
    assert_eq!(log.stats().writes, writes);
}

#[test]
fn lsns_that_were_not_appended_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = open(dir.path(), FsyncPolicy::Always);
    assert!(matches!(log.commit(0), Err(LogError::NotAppended { lsn: 0, next_lsn: 0 })));
    log.append(b"one").expect("append");
    let error = log.sync(5).expect_err("LSN 5 was never appended");
    assert!(error.to_string().contains("pass an LSN that append() returned"), "{error}");
    assert!(matches!(log.write_out(1), Err(LogError::NotAppended { lsn: 1, next_lsn: 1 })));
}

#[test]
fn a_record_over_the_limit_is_refused_and_nothing_is_appended() {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = LogOptions { max_record_bytes: 16, ..LogOptions::default() };
    let (log, _) = RecordLog::open(dir.path(), options).expect("open");
    assert_eq!(log.append(&[7; 16]).expect("exactly the limit is fine"), 0);
    let error = log.append(&[7; 17]).expect_err("over the limit");
    assert!(matches!(error, LogError::RecordTooLarge { len: 17, max_record_bytes: 16 }));
    assert!(error.to_string().contains("max_record_bytes"), "{error}");
    assert_eq!(log.next_lsn(), 1);
}

#[test]
fn segments_roll_at_record_boundaries_and_are_named_by_first_lsn() {
    let dir = tempfile::tempdir().expect("temp dir");
    // 30-byte payloads make 38-byte frames: two fit in 100 bytes, a third does not.
    let options = LogOptions { segment_bytes: 100, fsync: FsyncPolicy::Never, ..LogOptions::default() };
    let (log, _) = RecordLog::open(dir.path(), options).expect("open");
    for _ in 0..5 {
        log.append(&[1; 30]).expect("append");
    }
    log.append(&[2; 300]).expect("a record bigger than a segment"); // LSN 5
    log.append(&[3; 30]).expect("append"); // LSN 6
    log.write_out(6).expect("write out");

    let mut names: Vec<(String, u64)> = fs::read_dir(dir.path())
        .expect("read dir")
        .map(|entry| {
            let entry = entry.expect("entry");
            (entry.file_name().into_string().expect("utf-8"), entry.metadata().expect("metadata").len())
        })
        .collect();
    names.sort();
    let expected = [
        ("00000000000000000000.log", 76),
        ("00000000000000000002.log", 76),
        ("00000000000000000004.log", 38),
        ("00000000000000000005.log", 308),
        ("00000000000000000006.log", 38),
    ];
    let expected: Vec<(String, u64)> = expected.iter().map(|(n, l)| (n.to_string(), *l)).collect();
    assert_eq!(names, expected);
    let stats = log.stats();
    assert_eq!((stats.segments, stats.rolls), (5, 4));
    assert_eq!(stats.size_bytes, 76 + 76 + 38 + 308 + 38);
    // Every closed segment was fsynced before its successor was created.
    assert_eq!(stats.fsyncs, 4);
    assert_eq!(stats.durable_lsn, 6, "records in closed segments are durable");
    assert_eq!(read_all(&log).len(), 7);
}

#[test]
fn dropping_the_log_writes_and_syncs_everything_appended() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = open(dir.path(), FsyncPolicy::Never);
    for i in 0..3u8 {
        log.append(&[i]).expect("append");
    }
    assert_eq!(log.written_lsn(), 0);
    drop(log);
    let (log, report) = RecordLog::open(dir.path(), LogOptions::default()).expect("reopen");
    assert_eq!(report.records, 3);
    assert_eq!(read_all(&log), vec![(0, vec![0]), (1, vec![1]), (2, vec![2])]);
}

/// `append` only takes the in-memory mutex: it keeps going while another thread holds
/// the file mutex through a slow segment roll (its fsync made slow by the observer).
#[test]
fn append_does_not_wait_for_disk_io() {
    const SLOW_FSYNC: Duration = Duration::from_millis(300);
    let dir = tempfile::tempdir().expect("temp dir");
    // Only the first fsync is slow; the rolls that writing the 1000 appends causes later
    // (on drop) run at disk speed.
    let first_fsync = Arc::new(AtomicBool::new(true));
    let options = LogOptions {
        segment_bytes: 64,
        fsync: FsyncPolicy::Never,
        on_fsync: Some(Arc::new(move |_| {
            if first_fsync.swap(false, Ordering::Relaxed) {
                thread::sleep(SLOW_FSYNC);
            }
        })),
        ..LogOptions::default()
    };
    let log = Arc::new(RecordLog::open(dir.path(), options).expect("open").0);
    log.append(&[0; 40]).expect("append");
    log.append(&[1; 40]).expect("append");
    let roller = {
        let log = Arc::clone(&log);
        // Writing both records rolls after the first, fsyncing under the file mutex.
        thread::spawn(move || log.write_out(1).expect("write out"))
    };
    thread::sleep(Duration::from_millis(50));
    let started = Instant::now();
    for i in 0..1000u32 {
        log.append(&i.to_le_bytes()).expect("append");
    }
    let appending = started.elapsed();
    roller.join().expect("roller thread");
    assert!(
        appending < SLOW_FSYNC / 2,
        "1000 appends took {appending:?} while a {SLOW_FSYNC:?} fsync held the file mutex"
    );
}

#[test]
fn an_io_error_stops_the_log_and_later_calls_say_why() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let dir = scratch.path().join("wal");
    let options = LogOptions { segment_bytes: 64, fsync: FsyncPolicy::Always, ..LogOptions::default() };
    let (log, _) = RecordLog::open(&dir, options).expect("open");
    let first = log.append(&[1; 40]).expect("append");
    log.commit(first).expect("commit");
    // Pull the directory out from under the log: the next roll cannot create its segment.
    fs::remove_dir_all(&dir).expect("remove the log directory");
    let second = log.append(&[2; 40]).expect("append is memory-only");
    let error = log.commit(second).expect_err("the roll must fail");
    assert!(matches!(error, LogError::Failed { .. }), "{error}");
    assert!(error.to_string().contains("could not create a segment"), "{error}");
    // From now on every write path refuses, with the original cause.
    let error = log.append(b"more").expect_err("stopped");
    assert!(error.to_string().contains("reopen the log"), "{error}");
    assert!(matches!(log.write_out(second), Err(LogError::Failed { .. })));
    assert_eq!(log.durability_of(second), Durability::Buffered);
    drop(log); // must not hang or panic
}

#[test]
fn async_commits_on_a_multi_thread_runtime_share_fsyncs() {
    const TASKS: u64 = 16;
    const COMMITS_PER_TASK: u64 = 50;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let log = Arc::new(open(dir.path(), FsyncPolicy::Always));
    runtime.block_on(async {
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    for i in 0..COMMITS_PER_TASK {
                        let lsn = log.append(format!("{task}:{i}").as_bytes()).expect("append");
                        let level = log.commit_async(lsn).await.expect("commit");
                        assert_eq!(level, Durability::Synced);
                        assert!(log.durable_lsn() > lsn);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("task");
        }
    });
    let commits = TASKS * COMMITS_PER_TASK;
    let stats = log.stats();
    eprintln!("{commits} async commits took {} fsyncs", stats.fsyncs);
    assert!(stats.fsyncs < commits, "{} fsyncs for {commits} async commits", stats.fsyncs);
    assert_eq!(read_all(&log).len() as u64, commits);
}

#[test]
fn async_commits_under_lazier_policies_are_written() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    for fsync in [FsyncPolicy::Never, FsyncPolicy::EveryMillis(1000)] {
        let dir = tempfile::tempdir().expect("temp dir");
        // Small segments so some commits need a roll and go through the writer thread.
        let options = LogOptions { segment_bytes: 200, fsync, ..LogOptions::default() };
        let (log, _) = RecordLog::open(dir.path(), options).expect("open");
        runtime.block_on(async {
            for i in 0..50u8 {
                let lsn = log.append(&[i; 30]).expect("append");
                let level = log.commit_async(lsn).await.expect("commit");
                assert!(level >= Durability::Written, "{fsync:?}: {level:?}");
                assert!(log.written_lsn() > lsn);
            }
        });
        assert!(log.stats().rolls > 0);
        assert_eq!(read_all(&log).len(), 50);
    }
}

/// On a single-threaded runtime, a task waiting for a slow fsync must leave the thread to
/// other tasks: a ticker keeps ticking while the commit is pending.
#[test]
fn an_async_commit_waiting_on_a_slow_fsync_does_not_block_its_runtime_thread() {
    const SLOW_FSYNC: Duration = Duration::from_millis(300);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let options = LogOptions {
        fsync: FsyncPolicy::Always,
        segment_bytes: NO_ROLL_SEGMENT_BYTES,
        on_fsync: Some(Arc::new(|_| thread::sleep(SLOW_FSYNC))),
        ..LogOptions::default()
    };
    let log = Arc::new(RecordLog::open(dir.path(), options).expect("open").0);
    let ticks = Arc::new(AtomicU64::new(0));
    runtime.block_on(async {
        let ticker = {
            let ticks = Arc::clone(&ticks);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    ticks.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        let lsn = log.append(b"slow").expect("append");
        let level = log.commit_async(lsn).await.expect("commit");
        assert_eq!(level, Durability::Synced);
        ticker.abort();
    });
    let ticks = ticks.load(Ordering::Relaxed);
    assert!(ticks >= 10, "only {ticks} ticks ran during a {SLOW_FSYNC:?} fsync: the commit blocked the runtime");
}
