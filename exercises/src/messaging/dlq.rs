//! The dead-letter queue: a second tube, `<tube>.dlq`, that nobody watches, holding one
//! [`DeadLetter`] envelope per dead job; and the operations an operator needs on it
//! (list, replay one, replay all, purge), with plain beanstalkd 1.12 commands.
//!
//! Why a tube of envelopes rather than beanstalk's buried state: `bury` keeps the body
//! but not *why* the job died, how often it was tried or what the provider said last,
//! and an operator deciding whether to replay needs exactly that. Why a tube rather than
//! a KV list: the dead letters stay in the same server, under the same durability, as
//! the jobs they came from, and `stats-tube <tube>.dlq` is the depth to alert on.
//!
//! Beanstalk has no "list a tube" command, so listing reserves every ready envelope
//! (`reserve-with-timeout 0` on a connection that watches only the DLQ tube) and
//! releases them all back. While a listing runs, its entries are reserved, so the
//! operations are serialised by one connection behind an async mutex, and the
//! envelopes' TTR is long ([`DLQ_TTR_SECS`]) so none times out mid-listing. A listing
//! interrupted by a dropped connection loses nothing: the server puts a closed
//! connection's reserved jobs back to ready.
//!
//! **Replay** is a put of the original body to the main tube (a fresh job: new id,
//! counters at zero, so it gets all its attempts again), then a delete of the envelope.
//! Put first: a crash between the two leaves the message both replayed and still in
//! the DLQ (replayed twice if the operator replays again: at-least-once), never lost.
//!
//! Left out: filtering the listing by reason, paging beyond [`MAX_LISTED`], and
//! authentication of the HTTP face ([`super::replay_endpoint`]).

use minibench::queue::client::{self, Client, Job};
use serde::{Deserialize, Serialize};

use super::letter::DeadLetter;
use crate::framework::DemoError;

/// The DLQ tube of `tube`.
pub fn dlq_tube(tube: &str) -> String {
    format!("{tube}.dlq")
}

/// Every envelope is put with this priority (beanstalk's conventional default), so a
/// listing can release them back as they were.
pub const DLQ_PRIORITY: u32 = 1024;

/// An envelope's TTR: the lister holds envelopes reserved while it reads them, and must
/// never see one time out (or hear DEADLINE_SOON) half-way through.
pub const DLQ_TTR_SECS: u32 = 3_600;

/// The most envelopes one listing returns (the rest are there, reported as truncated).
pub const MAX_LISTED: usize = 1_000;

/// The most envelopes one replay-all or purge call takes: a producer dead-lettering
/// faster than the purge runs would otherwise keep it going for ever.
pub const MAX_BATCH: usize = 10_000;

/// Where [`move_to_dlq`] put the job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Moved {
    /// In the DLQ tube, as envelope job `id`; the original is deleted.
    ToDlq(u64),
    /// The envelope was too big for the server (`JOB_TOO_BIG`), so the original was
    /// buried in its own tube instead: its body is safe, its reason is not recorded.
    Buried,
}

/// Dead-letters `job_id`, which `client` holds reserved: puts `letter` on the tube
/// `client` uses (the DLQ tube), then deletes the original.
pub async fn move_to_dlq(
    client: &mut Client,
    job_id: u64,
    pri: u32,
    letter: &DeadLetter,
) -> Result<Moved, client::Error> {
    match client.put(DLQ_PRIORITY, 0, DLQ_TTR_SECS, &letter.encode()).await {
        Ok(dlq_job_id) => {
            client.delete(job_id).await?;
            Ok(Moved::ToDlq(dlq_job_id))
        }
        Err(client::Error::JobTooBig) => {
            client.bury(job_id, pri).await?;
            Ok(Moved::Buried)
        }
        Err(e) => Err(e),
    }
}

/// One envelope in a listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub dlq_job_id: u64,
    /// `None` when the job in the DLQ tube is not an envelope (see `unreadable`).
    pub letter: Option<DeadLetter>,
    pub unreadable: Option<String>,
}

/// What a listing returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    pub tube: String,
    pub entries: Vec<Entry>,
    /// Whether more envelopes than [`MAX_LISTED`] were ready.
    pub truncated: bool,
}

/// One replayed envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replayed {
    pub dlq_job_id: u64,
    /// The job it came from (deleted when it was dead-lettered).
    pub source_job_id: u64,
    /// The fresh job in the main tube.
    pub new_job_id: u64,
}

/// What a replay-all did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayedAll {
    pub replayed: Vec<Replayed>,
    /// Jobs in the DLQ tube that are not envelopes, left where they are.
    pub skipped: Vec<u64>,
}

/// Why a DLQ operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("no dead letter {id} in tube {tube} (replayed or purged already? list the DLQ for current ids)")]
    NoSuchLetter { id: u64, tube: String },
    #[error("dead letter {0} is reserved by another connection right now; try again in a moment")]
    Busy(u64),
    #[error("job {id} in the DLQ tube is not a replayable envelope ({why}); inspect it with peek {id} and delete it by hand")]
    Unreadable { id: u64, why: String },
    #[error("the tube name {0:?} cannot have a DLQ: `<tube>.dlq` must be a beanstalk name of at most 200 bytes")]
    BadTube(String),
    #[error("queue: {0}")]
    Queue(#[from] client::Error),
}

impl DlqError {
    /// Whether the connection is no longer usable (so the next call reconnects).
    fn breaks_connection(&self) -> bool {
        matches!(self, DlqError::Queue(e) if !e.is_server_reply())
    }
}

impl From<DlqError> for DemoError {
    fn from(e: DlqError) -> Self {
        DemoError::Scenario(format!("dead-letter queue: {e}"))
    }
}

/// The DLQ of one tube, on its own connection.
pub struct DeadLetterQueue {
    addr: String,
    tube: String,
    dlq_tube: String,
    /// A tokio mutex, not a std one: it is held across the awaits of a whole operation,
    /// which is the point: it serialises listings, replays and purges (see the module
    /// docs). `None` until first use, and after an error that broke the connection.
    conn: tokio::sync::Mutex<Option<Client>>,
}

impl DeadLetterQueue {
    /// The DLQ of `tube` on the queue at `addr` (`host:port`). Connects on first use.
    pub fn new(addr: impl Into<String>, tube: impl Into<String>) -> Result<DeadLetterQueue, DlqError> {
        let tube = tube.into();
        let dlq_tube = dlq_tube(&tube);
        if !client::is_valid_name(&tube) || !client::is_valid_name(&dlq_tube) {
            return Err(DlqError::BadTube(tube));
        }
        Ok(DeadLetterQueue { addr: addr.into(), tube, dlq_tube, conn: tokio::sync::Mutex::new(None) })
    }

    pub fn tube(&self) -> &str {
        &self.tube
    }

    pub fn dlq_tube(&self) -> &str {
        &self.dlq_tube
    }

    /// Connects: watches only the DLQ tube, uses the main tube (replays put there).
    async fn connect(&self) -> Result<Client, client::Error> {
        let mut client = Client::connect(&self.addr).await?;
        client.watch(&self.dlq_tube).await?;
        client.ignore("default").await?;
        client.use_tube(&self.tube).await?;
        Ok(client)
    }

    /// The connection in `slot`, opened if there is none. Each operation then hands
    /// its result to [`DeadLetterQueue::settle`], which forgets a connection the
    /// operation broke (a plain function pair rather than one taking the operation as
    /// a closure: the operation borrows the client across awaits).
    async fn client<'a>(&self, slot: &'a mut Option<Client>) -> Result<&'a mut Client, DlqError> {
        let client = match slot.take() {
            Some(client) => client,
            None => self.connect().await?,
        };
        Ok(slot.insert(client))
    }

    fn settle<T>(slot: &mut Option<Client>, result: Result<T, DlqError>) -> Result<T, DlqError> {
        if let Err(e) = &result {
            if e.breaks_connection() {
                // Dropping the connection returns any envelope it holds to ready.
                *slot = None;
            }
        }
        result
    }

    /// Every ready envelope, oldest first (up to [`MAX_LISTED`]).
    pub async fn list(&self) -> Result<Listing, DlqError> {
        let mut slot = self.conn.lock().await;
        let result = async {
            let client = self.client(&mut slot).await?;
            let jobs = reserve_all(client, MAX_LISTED + 1).await?;
            let truncated = jobs.len() > MAX_LISTED;
            // Give them all back before anything else can fail.
            for job in &jobs {
                client.release(job.id, DLQ_PRIORITY, 0).await?;
            }
            let entries = jobs
                .iter()
                .take(MAX_LISTED)
                .map(|job| match DeadLetter::parse(&job.body) {
                    Ok(letter) => Entry { dlq_job_id: job.id, letter: Some(letter), unreadable: None },
                    Err(why) => Entry { dlq_job_id: job.id, letter: None, unreadable: Some(why) },
                })
                .collect();
            Ok(Listing { tube: self.dlq_tube.clone(), entries, truncated })
        }
        .await;
        Self::settle(&mut slot, result)
    }

    /// Replays envelope `dlq_job_id`: its body back to the main tube as a fresh job.
    pub async fn replay(&self, dlq_job_id: u64) -> Result<Replayed, DlqError> {
        let mut slot = self.conn.lock().await;
        let result = async {
            let client = self.client(&mut slot).await?;
            // A job never changes tubes, so checking its tube before reserving it is
            // race-free; without the check, `reserve-job` would happily take (and a
            // replay would duplicate) a job of any tube.
            let stats = match client.stats_job(dlq_job_id).await {
                Ok(stats) => stats,
                Err(client::Error::NotFound) => {
                    return Err(DlqError::NoSuchLetter { id: dlq_job_id, tube: self.dlq_tube.clone() })
                }
                Err(e) => return Err(e.into()),
            };
            if stats.get("tube") != Some(self.dlq_tube.as_str()) {
                return Err(DlqError::NoSuchLetter { id: dlq_job_id, tube: self.dlq_tube.clone() });
            }
            let job = match client.reserve_job(dlq_job_id).await {
                Ok(job) => job,
                Err(client::Error::NotFound) => return Err(DlqError::Busy(dlq_job_id)),
                Err(e) => return Err(e.into()),
            };
            replay_reserved(client, &job).await?.map_err(|why| DlqError::Unreadable { id: dlq_job_id, why })
        }
        .await;
        Self::settle(&mut slot, result)
    }

    /// Replays every ready envelope (up to [`MAX_BATCH`]). The envelopes are all
    /// reserved first and replayed after, so a replayed message that dies again at
    /// once (poison) lands in the DLQ as a new envelope this call does not take.
    pub async fn replay_all(&self) -> Result<ReplayedAll, DlqError> {
        let mut slot = self.conn.lock().await;
        let result = async {
            let client = self.client(&mut slot).await?;
            let jobs = reserve_all(client, MAX_BATCH).await?;
            let mut outcome = ReplayedAll::default();
            for job in &jobs {
                match replay_reserved(client, job).await? {
                    Ok(replayed) => outcome.replayed.push(replayed),
                    Err(_) => outcome.skipped.push(job.id),
                }
            }
            Ok(outcome)
        }
        .await;
        Self::settle(&mut slot, result)
    }

    /// Deletes every ready job of the DLQ tube (up to [`MAX_BATCH`]); returns how many.
    pub async fn purge(&self) -> Result<u64, DlqError> {
        let mut slot = self.conn.lock().await;
        let result = async {
            let client = self.client(&mut slot).await?;
            let jobs = reserve_all(client, MAX_BATCH).await?;
            for job in &jobs {
                client.delete(job.id).await?;
            }
            Ok(jobs.len() as u64)
        }
        .await;
        Self::settle(&mut slot, result)
    }
}

/// Reserves ready jobs from the watched (DLQ) tube until none is left or `limit` are
/// held. `DEADLINE_SOON` (a foreign job with a short TTR among them) ends the sweep too.
async fn reserve_all(client: &mut Client, limit: usize) -> Result<Vec<Job>, client::Error> {
    let mut jobs = Vec::new();
    while jobs.len() < limit {
        match client.reserve_with_timeout(0).await {
            Ok(job) => jobs.push(job),
            Err(client::Error::TimedOut | client::Error::DeadlineSoon) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(jobs)
}

/// Replays an envelope this connection holds: put the body to the used (main) tube,
/// then delete the envelope. The main tube is the DLQ's own, not the envelope's
/// `source_tube`: a hand-edited envelope cannot send a replay elsewhere. One that is not an envelope is released back and its
/// reason returned as the inner `Err`.
async fn replay_reserved(client: &mut Client, job: &Job) -> Result<Result<Replayed, String>, client::Error> {
    let parsed = DeadLetter::parse(&job.body).and_then(|letter| {
        letter.body.bytes().map(|body| (letter, body)).ok_or_else(|| "its hex body is not hex".into())
    });
    let (letter, body) = match parsed {
        Ok(parsed) => parsed,
        Err(why) => {
            client.release(job.id, DLQ_PRIORITY, 0).await?;
            return Ok(Err(why));
        }
    };
    // A TTR of 0 is raised to 1 by the server anyway; keep what the job had.
    let new_job_id = client.put(letter.pri, 0, letter.ttr.max(1), &body).await?;
    client.delete(job.id).await?;
    Ok(Ok(Replayed { dlq_job_id: job.id, source_job_id: letter.source_job_id, new_job_id }))
}
