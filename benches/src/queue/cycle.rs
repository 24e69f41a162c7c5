//! The measured workload: N clients, each one connection doing put → reserve →
//! delete in a loop. One job = one such cycle, and its latency is the cycle's, from
//! sending the put to reading DELETED.
//!
//! **Tubes.** By default each client has a tube of its own (`use` and `watch`
//! `bench-<i>`, `ignore default`), so its reserve gets back the job it just put: every
//! cycle checks that the job returned is that job, byte for byte, and a server that
//! loses or mixes up jobs fails the run instead of posting a good number. It also
//! means a reserve never waits for another client's put, so the figure is the
//! server's cost per job, not a queueing effect of the workload. [`Tubes::Shared`]
//! puts every client on one tube (`bench`), the contended case: a reserve takes
//! whichever job is first, so the check is weaker (a well-formed body from some
//! client) and a reserve may wait for a put, which is the point of that variant.
//!
//! **Bounds.** A run stops when its clients have done their share of the job count or
//! when its time is up, whichever comes first, and either is a normal end: a durable
//! beanstalkd does a few hundred jobs a second, miniqueue may do tens of thousands,
//! and one count could not fit both. A run that outlives its time by
//! [`HANG_SLACK`] (a reserve that never returned: a lost job) fails, and Ctrl-C stops
//! it within [`POLL`].
//!
//! **Pipelining.** With a depth d > 1 a client sends d puts in one write, then d
//! reserves, then d deletes, and each of the d jobs gets the batch's latency.
//!
//! After the run a fresh connection checks the server's own count (`stats`):
//! `total-jobs` equals the jobs the clients did, and none is left ready, reserved,
//! delayed or buried.

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinSet;

use super::client::{Client, Command, Job, Reply};
use crate::interrupt;
use crate::log::latency::Histogram;
use crate::log::payload;

/// The priority of every job: beanstalk clients' usual default (below 1024 counts as
/// "urgent" in the stats; either way every job has the same one).
pub const PRIORITY: u32 = 1024;

/// Time to run: long enough never to expire during a cycle.
pub const TTR: u32 = 60;

/// How long a run may outlive its time bound before it counts as hung.
pub const HANG_SLACK: Duration = Duration::from_secs(20);

/// How often the harness looks at Ctrl-C and the deadline while clients run.
const POLL: Duration = Duration::from_millis(50);

/// Bits of a job's 8-byte stamp that hold the client's sequence number; the client's
/// index sits above them.
const SEQ_BITS: u32 = 40;

/// How the clients share tubes; see the module comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tubes {
    /// Tube `bench-<i>` for client i.
    PerClient,
    /// Tube `bench` for every client.
    Shared,
}

impl Tubes {
    pub fn describe(self) -> &'static str {
        match self {
            Tubes::PerClient => "a tube per client (each reserve gets back the job its client just put)",
            Tubes::Shared => "one tube shared by every client (a reserve takes whichever job is first)",
        }
    }

    fn tube(self, client: usize) -> String {
        match self {
            Tubes::PerClient => format!("bench-{client}"),
            Tubes::Shared => "bench".to_string(),
        }
    }
}

/// What one run does.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    pub clients: usize,
    /// Jobs for the whole run, split evenly over the clients.
    pub jobs: u64,
    /// The run's time bound.
    pub max_time: Duration,
    pub job_bytes: usize,
    pub tubes: Tubes,
    /// Commands per write: 1 is request/reply.
    pub pipeline: usize,
}

impl Workload {
    /// Client `i`'s share of the jobs: the remainder goes to the first clients.
    fn share(&self, i: usize) -> u64 {
        let clients = self.clients as u64;
        self.jobs / clients + u64::from((i as u64) < self.jobs % clients)
    }
}

/// Which bound ended a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoppedBy {
    Count,
    Time,
}

/// A finished run.
#[derive(Debug)]
pub struct Measured {
    /// Jobs put, reserved and deleted, every one checked.
    pub jobs: u64,
    /// From the first put to the last client's last delete.
    pub elapsed: Duration,
    /// Per job: its cycle (or its pipelined batch's).
    pub latency: Histogram,
    pub stopped_by: StoppedBy,
}

/// One client's result: its jobs and its latencies, as (nanoseconds, jobs) pairs,
/// folded into one histogram once every client is done.
struct ClientDone {
    jobs: u64,
    latencies: Vec<(u64, u64)>,
    stopped_by: StoppedBy,
}

/// Runs the workload against the server on 127.0.0.1:`port`. A failure is a message
/// for the report.
pub async fn run(port: u16, workload: &Workload) -> Result<Measured, String> {
    assert!(workload.clients >= 1 && workload.pipeline >= 1, "{workload:?}");
    assert!(workload.job_bytes >= payload::MIN_RECORD_BYTES, "a job holds its 8-byte stamp");
    let addr = format!("127.0.0.1:{port}");
    // Connected and subscribed before the clock starts: the figure is jobs, not
    // handshakes.
    let mut clients = Vec::with_capacity(workload.clients);
    for i in 0..workload.clients {
        let mut client = Client::connect(&addr).await.map_err(|e| format!("client {i}: {e}"))?;
        let tube = workload.tubes.tube(i);
        let setup = async {
            client.use_tube(&tube).await?;
            client.watch(&tube).await?;
            client.ignore("default").await
        };
        tokio::time::timeout(HANG_SLACK, setup)
            .await
            .map_err(|_| format!("client {i}: no reply to use/watch/ignore within {} s", HANG_SLACK.as_secs()))?
            .map_err(|e| format!("client {i}: setting up tube {tube}: {e}"))?;
        clients.push(client);
    }
    let started = Instant::now();
    let deadline = started + workload.max_time;
    let mut tasks = JoinSet::new();
    for (i, client) in clients.into_iter().enumerate() {
        let workload = *workload;
        tasks.spawn(async move { cycle(client, i, workload, workload.share(i), deadline).await });
    }
    let hang = deadline + HANG_SLACK;
    let mut done = Vec::with_capacity(workload.clients);
    while !tasks.is_empty() {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                Some(Ok(Ok(client))) => done.push(client),
                Some(Ok(Err(e))) => return Err(e),
                Some(Err(e)) => return Err(format!("a client task failed: {e}")),
                None => break,
            },
            _ = tokio::time::sleep(POLL) => {
                if interrupt::requested() {
                    return Err("interrupted".into());
                }
                if Instant::now() >= hang {
                    let finished: u64 = done.iter().map(|c| c.jobs).sum();
                    return Err(format!(
                        "{} of {} clients still running {} s after the time bound ({finished} jobs done by the \
                         others): a reserve that never returned, so a lost job?",
                        tasks.len(), workload.clients, HANG_SLACK.as_secs()
                    ));
                }
            }
        }
    }
    let elapsed = started.elapsed();
    let mut latency = Histogram::default();
    for (nanos, jobs) in done.iter().flat_map(|c| c.latencies.iter()) {
        latency.record(*nanos, *jobs);
    }
    let jobs: u64 = done.iter().map(|c| c.jobs).sum();
    assert_eq!(latency.count(), jobs, "every job has its latency");
    let stopped_by =
        if done.iter().any(|c| c.stopped_by == StoppedBy::Time) { StoppedBy::Time } else { StoppedBy::Count };
    verify(&addr, jobs).await?;
    Ok(Measured { jobs, elapsed, latency, stopped_by })
}

/// One client's loop: put → reserve → delete (or batches of each) until its share is
/// done or the deadline passes.
async fn cycle(
    mut client: Client,
    index: usize,
    workload: Workload,
    share: u64,
    deadline: Instant,
) -> Result<ClientDone, String> {
    let depth = workload.pipeline;
    let mut bodies: Vec<Vec<u8>> = (0..depth).map(|_| payload::template(workload.job_bytes)).collect();
    let mut latencies = Vec::with_capacity(share.div_ceil(depth as u64).min(1 << 20) as usize);
    let mut jobs = 0u64;
    let stopped_by = loop {
        if jobs >= share {
            break StoppedBy::Count;
        }
        if Instant::now() >= deadline {
            break StoppedBy::Time;
        }
        if interrupt::requested() {
            return Err("interrupted".into());
        }
        let batch = depth.min((share - jobs) as usize);
        for (k, body) in bodies.iter_mut().take(batch).enumerate() {
            payload::stamp(body, ((index as u64) << SEQ_BITS) | (jobs + k as u64));
        }
        let start = Instant::now();
        let puts: Vec<Command> =
            bodies[..batch].iter().map(|body| Command::Put { pri: PRIORITY, delay: 0, ttr: TTR, body }).collect();
        let ids = replies(&mut client, &puts, Reply::into_inserted).await.map_err(|e| failed(index, jobs, "put", e))?;
        let reserves = vec![Command::Reserve; batch];
        let reserved = replies(&mut client, &reserves, Reply::into_reserved)
            .await
            .map_err(|e| failed(index, jobs, "reserve", e))?;
        for (k, job) in reserved.iter().enumerate() {
            check(job, workload, &ids[k], &bodies[k]).map_err(|e| failed(index, jobs, "reserve", e))?;
        }
        let deletes: Vec<Command> = reserved.iter().map(|job| Command::Delete(job.id)).collect();
        replies(&mut client, &deletes, Reply::into_deleted).await.map_err(|e| failed(index, jobs, "delete", e))?;
        latencies.push((start.elapsed().as_nanos() as u64, batch as u64));
        jobs += batch as u64;
    };
    Ok(ClientDone { jobs, latencies, stopped_by })
}

/// A client's failure, with where it happened.
fn failed(client: usize, jobs: u64, what: &str, error: String) -> String {
    format!("client {client}, after {jobs} jobs: {what}: {error}")
}

/// Sends `commands` as one pipeline and maps every reply with `expect`.
async fn replies<T>(
    client: &mut Client,
    commands: &[Command<'_>],
    expect: fn(Reply) -> Result<T, super::client::Error>,
) -> Result<Vec<T>, String> {
    let replies = client.pipeline(commands).await.map_err(|e| e.to_string())?;
    replies.into_iter().map(|r| r.and_then(expect).map_err(|e| e.to_string())).collect()
}

/// Checks that a reserved job is one this workload put: on a tube of its own, the very
/// job the client put in that slot of the batch; on a shared tube, a well-formed job
/// of some client.
fn check(job: &Job, workload: Workload, put_id: &u64, put_body: &[u8]) -> Result<(), String> {
    match workload.tubes {
        Tubes::PerClient => {
            if job.id != *put_id {
                return Err(format!("got job {} back, not job {put_id} just put on this client's own tube", job.id));
            }
            if job.body != put_body {
                return Err(format!("job {} came back with a different body ({} bytes)", job.id, job.body.len()));
            }
        }
        Tubes::Shared => {
            // Every body has the same filler after its stamp: compare it to this one's.
            let client = payload::sequence(&job.body).map(|seq| seq >> SEQ_BITS);
            if job.body.len() != put_body.len() || job.body[8..] != put_body[8..] {
                return Err(format!("job {} came back with a body this workload did not put", job.id));
            }
            if client.is_none_or(|c| c >= workload.clients as u64) {
                return Err(format!("job {} carries a stamp of no client of this run", job.id));
            }
        }
    }
    Ok(())
}

/// Checks the server's count after a run: every job the clients did was created once,
/// and none is left behind.
async fn verify(addr: &str, jobs: u64) -> Result<(), String> {
    let check = async {
        let mut client = Client::connect(addr).await.map_err(|e| e.to_string())?;
        client.stats().await.map_err(|e| e.to_string())
    };
    let stats = tokio::time::timeout(HANG_SLACK, check)
        .await
        .map_err(|_| "no reply to stats after the run".to_string())?
        .map_err(|e| format!("stats after the run: {e}"))?;
    let count = |key: &str| stats.get_u64(key).ok_or_else(|| format!("stats after the run has no {key}"));
    let total = count("total-jobs")?;
    if total != jobs {
        return Err(format!("the server created {total} jobs, the clients put and deleted {jobs}"));
    }
    for state in ["ready", "reserved", "delayed", "buried"] {
        let left = count(&format!("current-jobs-{state}"))?;
        if left != 0 {
            return Err(format!("{left} jobs left {state} after every job was deleted"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(clients: usize, jobs: u64, tubes: Tubes) -> Workload {
        Workload { clients, jobs, max_time: Duration::from_secs(1), job_bytes: 100, tubes, pipeline: 1 }
    }

    #[test]
    fn jobs_are_shared_out_with_the_remainder_first() {
        let w = workload(3, 10, Tubes::PerClient);
        assert_eq!((0..3).map(|i| w.share(i)).collect::<Vec<_>>(), [4, 3, 3]);
        let w = workload(64, 10, Tubes::PerClient);
        assert_eq!((0..64).map(|i| w.share(i)).sum::<u64>(), 10);
    }

    #[test]
    fn a_wrong_job_fails_the_check() {
        let w = workload(2, 2, Tubes::PerClient);
        let mut body = payload::template(100);
        payload::stamp(&mut body, 1);
        let job = Job { id: 7, body: body.clone() };
        assert!(check(&job, w, &7, &body).is_ok());
        assert!(check(&job, w, &8, &body).is_err_and(|e| e.contains("not job 8")));
        let mut other = body.clone();
        payload::stamp(&mut other, 2);
        assert!(check(&job, w, &7, &other).is_err());

        let shared = workload(2, 2, Tubes::Shared);
        assert!(check(&job, shared, &99, &other).is_ok(), "any client's job will do on a shared tube");
        let mut stranger = body.clone();
        payload::stamp(&mut stranger, 5 << SEQ_BITS);
        assert!(check(&Job { id: 7, body: stranger }, shared, &7, &body).is_err_and(|e| e.contains("no client")));
        assert!(check(&Job { id: 7, body: body[..50].to_vec() }, shared, &7, &body).is_err());
    }

    #[test]
    fn tube_names_are_per_client_or_shared() {
        assert_eq!(Tubes::PerClient.tube(3), "bench-3");
        assert_eq!(Tubes::Shared.tube(3), "bench");
    }
}
