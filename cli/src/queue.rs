//! `mini queue`: quick use of a beanstalk server (miniqueue, or a real beanstalkd)
//! from the shell, through minibench's beanstalk client.
//!
//! ```text
//! mini queue put --tube emails hello world     two jobs (or one per stdin line)
//! mini queue work --tube emails --count 2      print each job, then delete it
//! mini queue work --exec 'wc -c'               run a command per job (body on stdin):
//!                                              exit 0 deletes it, anything else fails it
//! mini queue stats [emails]                    the server's, or one tube's, stats
//! mini queue dlq --tube emails                 dead-letter jobs (miniqueue)
//! mini queue replay --tube emails [ID]         dead or buried jobs back to ready
//! ```
//!
//! `put`, `work`, `stats` and `replay` use only beanstalkd 1.12's commands, so they
//! work against either server. Failing a job (`work --fail-every`, `work --exec`) uses
//! miniqueue's `fail`, which applies the tube's retry policy; on a plain beanstalkd,
//! which has no `fail`, the job is released instead, as a worker would there. The dead
//! letter queue is miniqueue's: `dlq` reads it through the protocol (the next buried
//! job of each tube, with `stats-job`'s dead mark) or, complete, through miniqueue's
//! admin HTTP endpoint with `--admin`.

use std::io::BufRead;
use std::time::Duration;

use minibench::queue::client::{self, Client, Failed, Job};
use minibench::queue::yaml::Dict;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The default address, beanstalkd's port on this machine.
const DEFAULT_ADDR: &str = "127.0.0.1:11300";

/// The priority of `put` jobs when none is given: beanstalk clients' usual default.
const DEFAULT_PRIORITY: u32 = 1024;

/// How long an admin HTTP request may take before we give up.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest admin reply read: a dead-letter list of many big jobs, still bounded.
const MAX_ADMIN_REPLY_BYTES: u64 = 256 * 1024 * 1024;

#[derive(clap::Args, Debug)]
pub struct QueueArgs {
    /// The beanstalk server (miniqueue or beanstalkd), host:port.
    #[arg(long, default_value = DEFAULT_ADDR, global = true)]
    pub addr: String,
    #[command(subcommand)]
    pub command: QueueCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum QueueCommand {
    /// Put jobs: each BODY is one job; without any, each line of stdin is one.
    Put {
        /// The tube to put into (beanstalk `use`).
        #[arg(long, short = 't', default_value = "default")]
        tube: String,
        /// Priority: smaller runs first, 0 is the most urgent.
        #[arg(long, default_value_t = DEFAULT_PRIORITY)]
        pri: u32,
        /// Seconds before the job becomes ready.
        #[arg(long, default_value_t = 0)]
        delay: u32,
        /// Seconds a worker has to finish the job before the server takes it back.
        #[arg(long, default_value_t = 60)]
        ttr: u32,
        bodies: Vec<String>,
    },
    /// Reserve jobs and print each as `<id> <body>`, then delete it (or fail it).
    Work {
        /// The tube to take jobs from (beanstalk `watch`; `default` is ignored if another
        /// is given).
        #[arg(long, short = 't', default_value = "default")]
        tube: String,
        /// Stop after this many jobs [default: run until Ctrl-C].
        #[arg(long, short = 'c', value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
        /// Fail every K-th job instead of deleting it (miniqueue's `fail`: the tube's
        /// retry policy decides between a retry and the dead-letter queue).
        #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(1..))]
        fail_every: Option<u64>,
        /// Run `sh -c CMD` for each job, with the body on its stdin and MINI_QUEUE_JOB_ID
        /// and MINI_QUEUE_TUBE set: exit status 0 deletes the job, any other fails it.
        #[arg(long, value_name = "CMD")]
        exec: Option<String>,
        /// Stop once no job has come for this many seconds [default: wait for ever].
        #[arg(long, value_name = "SECONDS")]
        wait: Option<u32>,
    },
    /// Print the server's stats, or one tube's (beanstalk `stats` / `stats-tube`).
    Stats {
        /// A tube; without it, the whole server.
        tube: Option<String>,
    },
    /// List dead-letter jobs: with --admin, all of them from miniqueue's /dlq; without,
    /// the next buried job of each tube (or of --tube) with its failure history.
    Dlq {
        /// Only this tube.
        #[arg(long, short = 't')]
        tube: Option<String>,
        /// miniqueue's admin HTTP address (http://127.0.0.1:PORT, from --admin-port).
        #[arg(long, value_name = "URL")]
        admin: Option<String>,
    },
    /// Put dead (and buried) jobs back to ready: one job by ID (kick-job), or every
    /// buried job of the tube (kick). With --admin, only dead-letter jobs, through /dlq.
    Replay {
        /// The tube whose jobs to replay when no ID is given.
        #[arg(long, short = 't', default_value = "default")]
        tube: String,
        id: Option<u64>,
        /// miniqueue's admin HTTP address (http://127.0.0.1:PORT).
        #[arg(long, value_name = "URL")]
        admin: Option<String>,
    },
}

/// Why a `mini queue` command failed, with what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("{what}: {source}")]
    Server {
        what: String,
        #[source]
        source: client::Error,
    },
    #[error("admin endpoint {url}: {reason}")]
    Admin { url: String, reason: String },
    #[error("reading stdin: {0}")]
    Stdin(#[source] std::io::Error),
    #[error("--exec {command}: {reason}")]
    Exec { command: String, reason: String },
}

/// Wraps a client error with what was being done: `on("put", e)`.
fn on(what: impl Into<String>) -> impl FnOnce(client::Error) -> QueueError {
    let what = what.into();
    move |source| QueueError::Server { what, source }
}

/// Runs `mini queue`; returns the exit code.
pub fn run(args: QueueArgs) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mini queue: can't start the runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(dispatch(args)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("mini queue: {e}");
            1
        }
    }
}

async fn dispatch(args: QueueArgs) -> Result<(), QueueError> {
    let addr = args.addr;
    match args.command {
        QueueCommand::Put { tube, pri, delay, ttr, bodies } => put(&addr, &tube, pri, delay, ttr, bodies).await,
        QueueCommand::Work { tube, count, fail_every, exec, wait } => {
            work(&addr, &tube, count, fail_every, exec.as_deref(), wait).await
        }
        QueueCommand::Stats { tube } => stats(&addr, tube.as_deref()).await,
        QueueCommand::Dlq { tube, admin: Some(url) } => dlq_admin(&url, tube.as_deref()).await,
        QueueCommand::Dlq { tube, admin: None } => dlq(&addr, tube.as_deref()).await,
        QueueCommand::Replay { tube, id, admin: Some(url) } => replay_admin(&url, &tube, id).await,
        QueueCommand::Replay { tube, id, admin: None } => replay(&addr, &tube, id).await,
    }
}

async fn connect(addr: &str) -> Result<Client, QueueError> {
    Client::connect(addr).await.map_err(on("connect"))
}

async fn put(addr: &str, tube: &str, pri: u32, delay: u32, ttr: u32, bodies: Vec<String>) -> Result<(), QueueError> {
    let bodies = if bodies.is_empty() {
        std::io::stdin().lock().lines().collect::<Result<Vec<_>, _>>().map_err(QueueError::Stdin)?
    } else {
        bodies
    };
    let mut client = connect(addr).await?;
    client.use_tube(tube).await.map_err(on(format!("use {tube}")))?;
    for body in &bodies {
        let id = client.put(pri, delay, ttr, body.as_bytes()).await.map_err(on("put"))?;
        println!("inserted {id}");
    }
    Ok(())
}

/// What became of one job a worker ran.
enum Outcome {
    Done,
    Failed(String),
}

async fn work(
    addr: &str,
    tube: &str,
    count: Option<u64>,
    fail_every: Option<u64>,
    exec: Option<&str>,
    wait: Option<u32>,
) -> Result<(), QueueError> {
    let mut client = connect(addr).await?;
    client.watch(tube).await.map_err(on(format!("watch {tube}")))?;
    if tube != "default" {
        client.ignore("default").await.map_err(on("ignore default"))?;
    }
    let mut seen = 0u64;
    while count.is_none_or(|c| seen < c) {
        let reserved = match wait {
            Some(seconds) => client.reserve_with_timeout(seconds).await,
            None => client.reserve().await,
        };
        let job = match reserved {
            Ok(job) => job,
            Err(client::Error::TimedOut) => {
                eprintln!("no job for {} s; stopping after {seen} job(s)", wait.unwrap_or(0));
                return Ok(());
            }
            Err(e) => return Err(on("reserve")(e)),
        };
        seen += 1;
        println!("{} {}", job.id, String::from_utf8_lossy(&job.body));
        let outcome = match exec {
            Some(command) => run_exec(command, tube, &job).await?,
            None if fail_every.is_some_and(|k| seen.is_multiple_of(k)) => {
                Outcome::Failed(format!("failed by mini queue work --fail-every {}", fail_every.unwrap_or(1)))
            }
            None => Outcome::Done,
        };
        match outcome {
            Outcome::Done => client.delete(job.id).await.map_err(on(format!("delete {}", job.id)))?,
            Outcome::Failed(reason) => fail(&mut client, &job, &reason).await?,
        }
    }
    Ok(())
}

/// Runs `--exec` for one job: `sh -c CMD` with the body on stdin; its output goes
/// where ours goes.
async fn run_exec(command: &str, tube: &str, job: &Job) -> Result<Outcome, QueueError> {
    let failed = |reason: String| QueueError::Exec { command: command.to_string(), reason };
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("MINI_QUEUE_JOB_ID", job.id.to_string())
        .env("MINI_QUEUE_TUBE", tube)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| failed(format!("can't start sh: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its stdin closes the pipe: not an error of ours.
        let _ = stdin.write_all(&job.body).await;
    }
    let status = child.wait().await.map_err(|e| failed(format!("waiting for it: {e}")))?;
    Ok(if status.success() { Outcome::Done } else { Outcome::Failed(format!("--exec exited with {status}")) })
}

/// Fails a job with miniqueue's `fail`; on a server without it (beanstalkd), releases
/// it at its own priority, which is what `fail` does on a tube with no policy.
async fn fail(client: &mut Client, job: &Job, reason: &str) -> Result<(), QueueError> {
    let reason = one_line_reason(reason);
    match client.fail(job.id, &reason).await {
        Ok(Failed::Retrying(delay)) => {
            eprintln!("job {} failed ({reason}): retrying in {} ms", job.id, delay.as_millis())
        }
        Ok(Failed::Dead) => eprintln!("job {} failed ({reason}): out of attempts, now dead-lettered", job.id),
        Err(client::Error::UnknownCommand) => {
            let pri = client.stats_job(job.id).await.map_err(on(format!("stats-job {}", job.id)))?;
            let pri = pri.get_u64("pri").and_then(|p| u32::try_from(p).ok()).unwrap_or(DEFAULT_PRIORITY);
            client.release(job.id, pri, 0).await.map_err(on(format!("release {}", job.id)))?;
            eprintln!("job {} failed ({reason}): released (this server has no fail command)", job.id);
        }
        Err(e) => return Err(on(format!("fail {}", job.id))(e)),
    }
    Ok(())
}

/// `reason` as `fail` takes it: one line, at most [`client::MAX_REASON_BYTES`] bytes,
/// cut at a character boundary.
fn one_line_reason(reason: &str) -> String {
    let mut line = reason.replace(['\r', '\n'], " ");
    let mut end = line.len().min(client::MAX_REASON_BYTES);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line.truncate(end);
    line
}

async fn stats(addr: &str, tube: Option<&str>) -> Result<(), QueueError> {
    let mut client = connect(addr).await?;
    let dict = match tube {
        Some(t) => client.stats_tube(t).await.map_err(on(format!("stats-tube {t}")))?,
        None => client.stats().await.map_err(on("stats"))?,
    };
    print_dict(&dict);
    Ok(())
}

fn print_dict(dict: &Dict) {
    for (key, value) in dict.iter() {
        println!("{key}: {value}");
    }
}

/// The dead-letter queue through the protocol: for each tube with buried jobs, the
/// next one (`peek-buried`; the protocol has no way to list them all) and its
/// `stats-job`, which on miniqueue carries the dead mark and the failure history.
async fn dlq(addr: &str, only: Option<&str>) -> Result<(), QueueError> {
    let mut client = connect(addr).await?;
    let tubes = match only {
        Some(t) => vec![t.to_string()],
        None => client.list_tubes().await.map_err(on("list-tubes"))?,
    };
    let mut any = false;
    for tube in &tubes {
        let stats = client.stats_tube(tube).await.map_err(on(format!("stats-tube {tube}")))?;
        let buried = stats.get_u64("current-jobs-buried").unwrap_or(0);
        if buried == 0 {
            continue;
        }
        any = true;
        // current-jobs-dead is miniqueue's; beanstalkd has no dead-letter state.
        let dead = stats.get_u64("current-jobs-dead").map_or(String::new(), |d| format!(", {d} dead"));
        println!("tube {tube}: {buried} buried{dead}");
        client.use_tube(tube).await.map_err(on(format!("use {tube}")))?;
        let job = match client.peek_buried().await {
            Ok(job) => job,
            // Kicked or deleted since the stats: nothing left to show.
            Err(client::Error::NotFound) => continue,
            Err(e) => return Err(on("peek-buried")(e)),
        };
        let job_stats = client.stats_job(job.id).await.map_err(on(format!("stats-job {}", job.id)))?;
        println!("  {}", describe_job(job.id, &job_stats));
        println!("    {}", String::from_utf8_lossy(&job.body));
        if buried > 1 {
            println!(
                "  ({} more: the protocol shows the next buried job only; --admin URL lists them all)",
                buried - 1
            );
        }
    }
    if !any {
        println!("no buried or dead jobs{}", only.map(|t| format!(" in {t}")).unwrap_or_default());
    }
    Ok(())
}

/// One line about a buried job from its `stats-job`: dead or just buried, and its
/// failures when it has any.
fn describe_job(id: u64, stats: &Dict) -> String {
    let mut line = format!("job {id}");
    if stats.get_bool("dead") {
        line.push_str(&format!(": dead ({})", stats.get("dead-reason").unwrap_or("no reason given")));
        if let Some(at) = stats.get("dead-at") {
            line.push_str(&format!(" at {at}"));
        }
    } else {
        line.push_str(": buried (not dead-lettered)");
    }
    if let (Some(attempts), Some(failures)) = (stats.get("attempts"), stats.get("failures")) {
        line.push_str(&format!(", attempts {attempts}, failures {failures}"));
    }
    if let Some(error) = stats.get("last-error") {
        line.push_str(&format!(", last error {error:?}"));
    }
    line
}

/// Replays through the protocol: `kick-job ID`, or `kick` as many as the tube has
/// buried (never more, because `kick` on a tube with none buried kicks delayed jobs).
async fn replay(addr: &str, tube: &str, id: Option<u64>) -> Result<(), QueueError> {
    let mut client = connect(addr).await?;
    if let Some(id) = id {
        client.kick_job(id).await.map_err(on(format!("kick-job {id}")))?;
        println!("replayed job {id}");
        return Ok(());
    }
    let stats = client.stats_tube(tube).await.map_err(on(format!("stats-tube {tube}")))?;
    let buried = stats.get_u64("current-jobs-buried").unwrap_or(0);
    if buried == 0 {
        println!("nothing to replay in {tube}");
        return Ok(());
    }
    client.use_tube(tube).await.map_err(on(format!("use {tube}")))?;
    let bound = u32::try_from(buried).unwrap_or(u32::MAX);
    let kicked = client.kick(bound).await.map_err(on(format!("kick {bound}")))?;
    println!("replayed {kicked} job(s) from {tube}");
    Ok(())
}

async fn dlq_admin(url: &str, tube: Option<&str>) -> Result<(), QueueError> {
    let path = match tube {
        Some(t) => format!("/dlq?tube={}", percent_encode(t)),
        None => "/dlq".to_string(),
    };
    let reply = admin_request(url, "GET", &path).await?;
    let jobs = reply["jobs"].as_array().ok_or_else(|| admin_error(url, format!("no \"jobs\" list in {reply}")))?;
    if jobs.is_empty() {
        println!("no dead jobs{}", tube.map(|t| format!(" in {t}")).unwrap_or_default());
    }
    for job in jobs {
        let field = |name: &str| job[name].to_string();
        println!(
            "job {} in {}: dead ({}) at {}, attempts {}, failures {}, last error {}",
            field("id"),
            job["tube"].as_str().unwrap_or("?"),
            job["dead_reason"].as_str().unwrap_or("no reason given"),
            field("dead_at"),
            field("attempts"),
            field("failures"),
            field("last_error"),
        );
        println!("    {}", job["body"].as_str().unwrap_or(""));
    }
    Ok(())
}

async fn replay_admin(url: &str, tube: &str, id: Option<u64>) -> Result<(), QueueError> {
    let path = match id {
        Some(id) => format!("/dlq/{id}/replay"),
        None => format!("/dlq/replay?tube={}", percent_encode(tube)),
    };
    let reply = admin_request(url, "POST", &path).await?;
    let replayed = reply["replayed"].as_u64().ok_or_else(|| admin_error(url, format!("no \"replayed\" in {reply}")))?;
    match id {
        Some(id) => println!("replayed job {id}"),
        None => println!("replayed {replayed} dead job(s) from {tube}"),
    }
    Ok(())
}

fn admin_error(url: &str, reason: String) -> QueueError {
    QueueError::Admin { url: url.to_string(), reason }
}

/// One HTTP/1.1 request to miniqueue's admin endpoint, its JSON reply parsed. A tiny
/// client, because this is all `mini` needs of HTTP: no TLS, no keep-alive, no
/// redirects.
async fn admin_request(url: &str, method: &str, path: &str) -> Result<serde_json::Value, QueueError> {
    let fail = |reason: String| admin_error(url, reason);
    let host = admin_host(url).map_err(fail)?;
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(&host).await.map_err(|e| format!("can't connect: {e}"))?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.map_err(|e| format!("can't send the request: {e}"))?;
        let mut raw = Vec::new();
        stream
            .take(MAX_ADMIN_REPLY_BYTES)
            .read_to_end(&mut raw)
            .await
            .map_err(|e| format!("reading the reply: {e}"))?;
        Ok::<_, String>(raw)
    };
    let raw = tokio::time::timeout(ADMIN_TIMEOUT, exchange)
        .await
        .map_err(|_| fail(format!("no reply within {} s", ADMIN_TIMEOUT.as_secs())))?
        .map_err(fail)?;
    let (status, body) = parse_http_reply(&raw).map_err(fail)?;
    let json: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        fail(format!("{method} {path}: HTTP {status}, not JSON ({e}): {}", String::from_utf8_lossy(&body)))
    })?;
    if status != 200 {
        let reason = json["error"].as_str().map_or_else(|| json.to_string(), str::to_string);
        return Err(fail(format!("{method} {path}: HTTP {status}: {reason}")));
    }
    Ok(json)
}

/// `host:port` from `http://host:port[/]` or a bare `host:port`.
fn admin_host(url: &str) -> Result<String, String> {
    if url.starts_with("https://") {
        return Err("https is not supported: miniqueue's admin endpoint is plain HTTP".into());
    }
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || !host.contains(':') {
        return Err(format!("expected http://HOST:PORT, got {url:?}"));
    }
    Ok(host.to_string())
}

/// The status and the body of a whole HTTP/1.1 reply, de-chunked if need be.
fn parse_http_reply(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no end of the HTTP headers")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|_| status_line.starts_with("HTTP/1."))
        .ok_or_else(|| format!("not an HTTP reply: {status_line:?}"))?;
    let chunked = lines.any(|l| {
        l.split_once(':').is_some_and(|(name, value)| {
            name.eq_ignore_ascii_case("transfer-encoding") && value.trim().eq_ignore_ascii_case("chunked")
        })
    });
    Ok((status, if chunked { dechunk(body)? } else { body.to_vec() }))
}

/// Decodes a chunked body: `<hex size>\r\n<bytes>\r\n` ... `0\r\n\r\n`.
fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let end = body.windows(2).position(|w| w == b"\r\n").ok_or("a chunk size line without CRLF")?;
        let size_text = String::from_utf8_lossy(&body[..end]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| format!("a bad chunk size {size_text:?}"))?;
        body = &body[end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = body.get(..size).ok_or("a chunk cut off")?;
        out.extend_from_slice(chunk);
        body = body.get(size + 2..).ok_or("a chunk without its CRLF")?;
    }
}

/// Percent-encodes a query value: tube names may hold `+`, `/`, `;`, `$`, `(` and `)`,
/// which a query string would otherwise read differently.
fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: QueueArgs,
    }

    fn parse(line: &[&str]) -> QueueArgs {
        Wrapper::try_parse_from(std::iter::once("queue").chain(line.iter().copied()))
            .map(|w| w.args)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn defaults_are_beanstalks() {
        let args = parse(&["put", "a", "b"]);
        assert_eq!(args.addr, "127.0.0.1:11300");
        let QueueCommand::Put { tube, pri, delay, ttr, bodies } = args.command else { panic!("not put") };
        assert_eq!((tube.as_str(), pri, delay, ttr), ("default", 1024, 0, 60));
        assert_eq!(bodies, ["a", "b"]);
        let args = parse(&["work", "--addr", "127.0.0.1:9", "--tube", "t", "--count", "3", "--fail-every", "2"]);
        assert_eq!(args.addr, "127.0.0.1:9", "--addr goes anywhere");
        let QueueCommand::Work { tube, count, fail_every, exec, wait } = args.command else { panic!("not work") };
        assert_eq!((tube.as_str(), count, fail_every, exec, wait), ("t", Some(3), Some(2), None, None));
        assert!(Wrapper::try_parse_from(["queue", "work", "--fail-every", "0"]).is_err());
    }

    #[test]
    fn describes_dead_and_buried_jobs() {
        let dead = minibench::queue::yaml::parse_dict(
            b"---\nid: 7\nstate: buried\nattempts: 3\nfailures: 3\nlast-error: \"boom\"\ndead: true\ndead-at: 17\n\
              dead-reason: \"max attempts (3) reached\"\n",
        )
        .expect("parses");
        assert_eq!(
            describe_job(7, &dead),
            "job 7: dead (max attempts (3) reached) at 17, attempts 3, failures 3, last error \"boom\""
        );
        let buried = minibench::queue::yaml::parse_dict(b"---\nid: 8\nstate: buried\n").expect("parses");
        assert_eq!(describe_job(8, &buried), "job 8: buried (not dead-lettered)");
    }

    #[test]
    fn reads_http_replies_plain_and_chunked() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 13\r\n\r\n{\"replayed\":1}";
        assert_eq!(parse_http_reply(plain), Ok((200, b"{\"replayed\":1}".to_vec())));
        let chunked =
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n";
        assert_eq!(parse_http_reply(chunked), Ok((404, b"{\"a\":1}".to_vec())));
        assert!(parse_http_reply(b"SSH-2.0\r\n\r\n").is_err());
        assert!(parse_http_reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err());
        assert!(parse_http_reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nab").is_err());
    }

    #[test]
    fn fail_reasons_are_cut_to_one_short_line() {
        assert_eq!(one_line_reason("exit\nstatus 1"), "exit status 1");
        assert_eq!(one_line_reason(&"x".repeat(300)).len(), 200);
        let cut = one_line_reason(&"é".repeat(150));
        assert!(cut.len() <= 200 && cut.chars().all(|c| c == 'é'), "{cut}");
    }

    #[test]
    fn admin_urls_and_query_values() {
        assert_eq!(admin_host("http://127.0.0.1:8080"), Ok("127.0.0.1:8080".to_string()));
        assert_eq!(admin_host("http://127.0.0.1:8080/"), Ok("127.0.0.1:8080".to_string()));
        assert_eq!(admin_host("127.0.0.1:8080"), Ok("127.0.0.1:8080".to_string()));
        assert!(admin_host("https://x:1").is_err());
        assert!(admin_host("http://nohost").is_err());
        assert_eq!(percent_encode("a+b/c(d)"), "a%2Bb%2Fc%28d%29");
    }
}
