//! The client front end of the `miniraft` server: RESP2 over TCP, so `redis-cli` and any
//! Redis client library can talk to the replicated map.
//!
//! | command | reply |
//! |---|---|
//! | `PING [message]` | `+PONG` or the message |
//! | `GET key` | the value or a null bulk; a linearizable read (ReadIndex or the lease) |
//! | `SET key value` | `+OK` once the write is committed and applied (see [`crate::node`]) |
//! | `DEL key` | `:1` if the key existed, `:0` if not (one key: each key is one entry) |
//! | `CAS key expected new` | `:1` swapped, `:0` not; `expected` = `-` means "absent" |
//! | `RAFT.STATUS` | `id=1 role=leader term=3 leader=1 commit=42 applied=42 last=42 …` |
//! | `RAFT.TRANSFER id` | `+OK` once `id` leads |
//! | `RAFT.ADDLEARNER id`, `RAFT.PROMOTE id`, `RAFT.REMOVE id` | `+OK` once committed |
//! | `QUIT` | `+OK`, then the connection closes |
//!
//! Errors, by what the client may conclude:
//!
//! - `-NOTLEADER <id>` (or `-NOTLEADER ?` when no leader is known) and `-TRYAGAIN <reason>`:
//!   the command was **not** applied and never will be; send it again (to the leader).
//! - `-UNKNOWN <reason>`: the write may or may not be applied (leadership was lost after
//!   the entry was appended, or no answer came in time). Read before retrying a CAS.
//! - `-ERR ...`: a bad request (Redis's wording for unknown commands and wrong arity);
//!   `-ERR Protocol error: ...` closes the connection, which cannot be resynchronised.
//!
//! A value of `-` cannot be the `expected` of a CAS (it means "absent"); every other byte
//! string can. Only `GET` reads, so a client that wants a value it can compare-and-swap
//! against reads it with `GET` first.
//!
//! Pipelining: each connection has a reader that parses requests and queues them at the
//! node at once, and a writer that sends the answers strictly in request order, in one
//! write for all the answers that are ready, so a pipeline of SETs shares the log's
//! batching and fsyncs. A connection sees its own requests in order (a pipelined GET after
//! a SET reads it): see [`kv`] for the price, paid only where reads and writes alternate.
//!
//! Left out: RESP3 (`HELLO`), `AUTH`, `SELECT`, `MULTI`, keys with several values, TTLs,
//! and redirecting clients to the leader's client address (the error names the leader's
//! id; clients know the id-to-address map, as etcd clients do from `MEMBER LIST`).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use minicore::lifecycle::{serve as serve_connections, ConnectionLimit, ServeOptions, Service, Shutdown, Slot};
use minikv::resp::{ArgBuf, Args, Limits, Parsed, Protocol, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::kv::{KvCommand, KvResponse, MAX_KV_BYTES};
use crate::node::{NodeHandle, Pending, RequestError};
use crate::types::{MembershipChange, NodeId};

/// The most client connections served at once; more get `-ERR max number of clients
/// reached` (Redis's `maxclients` default).
pub const MAX_CLIENTS: usize = 10_000;

/// The most requests a connection may have queued ahead of their answers. A client that
/// pipelines more waits (its reader stops reading) until the oldest answers are written.
pub const MAX_PIPELINE: usize = 1024;

/// The most arguments one request may have (the longest command, CAS, has 4).
pub const MAX_ARGS: usize = 64;

/// How much to read at a time.
const READ_CHUNK: usize = 16 * 1024;

/// Serves clients on `listener` until `shutdown` triggers, then lets connections finish
/// the answers they owe. Returns the number of connections still open at the drain timeout.
pub async fn serve(listener: TcpListener, node: NodeHandle, shutdown: Shutdown) -> usize {
    let service = Arc::new(ClientService { node, shutdown: shutdown.clone() });
    serve_connections(vec![listener], service, ConnectionLimit::new(MAX_CLIENTS), shutdown, ServeOptions::default())
        .await
}

struct ClientService {
    node: NodeHandle,
    /// Stops the readers; the writers then drain what they owe.
    shutdown: Shutdown,
}

impl Service for ClientService {
    async fn connection(self: Arc<Self>, stream: TcpStream, _peer: SocketAddr, slot: Slot) {
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let (queue, answers) = mpsc::channel(MAX_PIPELINE);
        let writer = tokio::spawn(write_answers(write, answers));
        read_requests(read, &self.node, &self.shutdown, queue).await;
        let _ = writer.await;
        drop(slot);
    }

    async fn rejected(self: Arc<Self>, mut stream: TcpStream, _peer: SocketAddr) {
        let _ = stream.write_all(b"-ERR max number of clients reached\r\n").await;
    }
}

/// One answer owed to the client, in request order: already encoded, or on its way.
enum Answer {
    Now(Vec<u8>),
    Later(Pin<Box<dyn Future<Output = Vec<u8>> + Send>>),
    /// Write what is owed, then close (QUIT, protocol errors).
    Close(Vec<u8>),
}

async fn read_requests(
    mut read: tokio::net::tcp::OwnedReadHalf,
    node: &NodeHandle,
    shutdown: &Shutdown,
    queue: mpsc::Sender<Answer>,
) {
    let limits = Limits { max_bulk_len: MAX_KV_BYTES, max_multibulk_len: MAX_ARGS, unauthenticated: false };
    let mut parser = ArgBuf::new();
    let session = Session::default();
    let mut input: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    loop {
        // Every complete request in the buffer, in order.
        let mut start = 0;
        loop {
            match parser.parse(&input[start..], &limits) {
                Ok(Parsed::Command { consumed }) => {
                    let answer = {
                        let args = parser.args(&input[start..]);
                        execute(&args, node, &session).await
                    };
                    start += consumed;
                    let closing = matches!(answer, Answer::Close(_));
                    if queue.send(answer).await.is_err() || closing {
                        return;
                    }
                }
                Ok(Parsed::Nothing { consumed }) => start += consumed,
                Ok(Parsed::Incomplete { .. }) => break,
                Err(e) => {
                    let mut out = Vec::new();
                    Reply::new(&mut out, Protocol::Resp2).error(&format!("ERR {e}"));
                    let _ = queue.send(Answer::Close(out)).await;
                    return;
                }
            }
        }
        input.drain(..start);
        input.reserve(READ_CHUNK);
        let read_more = tokio::select! {
            _ = shutdown.wait() => return,
            read_more = read.read_buf(&mut input) => read_more,
        };
        match read_more {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Writes answers in request order. Answers that are ready go out together in one write;
/// before waiting for one that is not, what is already encoded is flushed, so a slow write
/// never holds back the answer to an earlier PING.
async fn write_answers(mut write: OwnedWriteHalf, mut answers: mpsc::Receiver<Answer>) {
    let mut out = Vec::with_capacity(READ_CHUNK);
    while let Some(first) = answers.recv().await {
        let mut next = Some(first);
        let mut closing = false;
        while let Some(answer) = next.take() {
            match answer {
                Answer::Now(bytes) => out.extend_from_slice(&bytes),
                Answer::Close(bytes) => {
                    out.extend_from_slice(&bytes);
                    closing = true;
                    break;
                }
                Answer::Later(mut future) => match poll_once(&mut future) {
                    Some(bytes) => out.extend_from_slice(&bytes),
                    None => {
                        if !out.is_empty() {
                            if write.write_all(&out).await.is_err() {
                                return;
                            }
                            out.clear();
                        }
                        out.extend_from_slice(&future.await);
                    }
                },
            }
            next = answers.try_recv().ok();
        }
        if write.write_all(&out).await.is_err() {
            return;
        }
        out.clear();
        if closing {
            let _ = write.shutdown().await;
            return;
        }
    }
}

/// Polls a future once without a waker: `Some` if it is already done.
fn poll_once<T>(future: &mut Pin<Box<dyn Future<Output = T> + Send>>) -> Option<T> {
    let mut context = Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut context) {
        Poll::Ready(value) => Some(value),
        Poll::Pending => None,
    }
}

fn error(message: &str) -> Vec<u8> {
    let mut out = Vec::new();
    Reply::new(&mut out, Protocol::Resp2).error(message);
    out
}

fn simple(message: &str) -> Vec<u8> {
    let mut out = Vec::new();
    Reply::new(&mut out, Protocol::Resp2).simple(message);
    out
}

/// The reply for a request the node did not answer successfully.
pub fn request_error(error: &RequestError) -> Vec<u8> {
    match error {
        RequestError::NotLeader { leader: Some(leader) } => error_line(&format!("NOTLEADER {leader}")),
        RequestError::NotLeader { leader: None } => error_line("NOTLEADER ?"),
        RequestError::TryAgain(reason) => error_line(&format!("TRYAGAIN {reason}")),
        RequestError::Unknown(reason) => error_line(&format!("UNKNOWN {reason}")),
    }
}

fn error_line(message: &str) -> Vec<u8> {
    error(message)
}

fn arity(name: &str) -> Answer {
    Answer::Now(error(&format!("ERR wrong number of arguments for '{name}' command")))
}

/// Parses one request and queues it at the node (waiting for room in its queue); the
/// answer comes later for everything that goes through Raft.
async fn execute(args: &Args<'_>, node: &NodeHandle, session: &Session) -> Answer {
    let name = args.get(0).to_ascii_lowercase();
    let argc = args.len();
    match name.as_slice() {
        b"ping" => match argc {
            1 => Answer::Now(simple("PONG")),
            2 => {
                let mut out = Vec::new();
                Reply::new(&mut out, Protocol::Resp2).bulk(args.get(1));
                Answer::Now(out)
            }
            _ => arity("ping"),
        },
        b"quit" => Answer::Close(simple("OK")),
        b"get" => {
            if argc != 2 {
                return arity("get");
            }
            let command = KvCommand::Get { key: Bytes::copy_from_slice(args.get(1)) };
            kv(node, session, command, |response| match response {
                KvResponse::Value(Some(value)) => {
                    let mut out = Vec::new();
                    Reply::new(&mut out, Protocol::Resp2).bulk(&value);
                    Some(out)
                }
                KvResponse::Value(None) => Some(b"$-1\r\n".to_vec()),
                _ => None,
            })
            .await
        }
        b"set" => {
            if argc < 3 {
                return arity("set");
            }
            if argc > 3 {
                // SET's options (EX, NX, GET, ...) are not supported.
                return Answer::Now(error("ERR syntax error"));
            }
            let command =
                KvCommand::Put { key: Bytes::copy_from_slice(args.get(1)), value: Bytes::copy_from_slice(args.get(2)) };
            kv(node, session, command, |response| matches!(response, KvResponse::Ok).then(|| simple("OK"))).await
        }
        b"del" => {
            if argc < 2 {
                return arity("del");
            }
            if argc > 2 {
                return Answer::Now(error(
                    "ERR DEL takes one key here (each key is its own log entry); send one DEL per key",
                ));
            }
            let command = KvCommand::Delete { key: Bytes::copy_from_slice(args.get(1)) };
            kv(node, session, command, |response| match response {
                KvResponse::Deleted(existed) => Some(format!(":{}\r\n", u8::from(existed)).into_bytes()),
                _ => None,
            })
            .await
        }
        b"cas" => {
            if argc != 4 {
                return arity("cas");
            }
            let expected = match args.get(2) {
                b"-" => None,
                value => Some(Bytes::copy_from_slice(value)),
            };
            let command = KvCommand::Cas {
                key: Bytes::copy_from_slice(args.get(1)),
                expected,
                new: Bytes::copy_from_slice(args.get(3)),
            };
            kv(node, session, command, |response| match response {
                KvResponse::Cas(swapped) => Some(format!(":{}\r\n", u8::from(swapped)).into_bytes()),
                _ => None,
            })
            .await
        }
        b"raft.status" => {
            if argc != 1 {
                return arity("raft.status");
            }
            let node = node.clone();
            later(async move {
                match node.status().await {
                    Ok(status) => {
                        let mut out = Vec::new();
                        Reply::new(&mut out, Protocol::Resp2).bulk(status.to_string().as_bytes());
                        out
                    }
                    Err(e) => request_error(&e),
                }
            })
        }
        b"raft.transfer" => {
            if argc != 2 {
                return arity("raft.transfer");
            }
            let Some(to) = node_id(args.get(1)) else {
                return Answer::Now(error("ERR the node id must be a positive integer"));
            };
            let pending = node.submit_transfer(to).await;
            later(async move { unit_reply(pending.wait().await) })
        }
        b"raft.addlearner" | b"raft.promote" | b"raft.remove" => {
            let command = String::from_utf8_lossy(&name).into_owned();
            if argc != 2 {
                return arity(&command);
            }
            let Some(id) = node_id(args.get(1)) else {
                return Answer::Now(error("ERR the node id must be a positive integer"));
            };
            let change = match name.as_slice() {
                b"raft.addlearner" => MembershipChange::AddLearner(id),
                b"raft.promote" => MembershipChange::PromoteLearner(id),
                _ => MembershipChange::Remove(id),
            };
            let pending = node.submit_membership(change).await;
            later(async move { unit_reply(pending.wait().await) })
        }
        _ => Answer::Now(unknown_command(args)),
    }
}

/// Redis's reply to an unknown command, with up to 128 bytes of its arguments.
fn unknown_command(args: &Args<'_>) -> Vec<u8> {
    let mut message = b"ERR unknown command '".to_vec();
    message.extend(args.get(0).iter().take(128));
    message.extend_from_slice(b"', with args beginning with: ");
    let mut room = 128usize;
    for arg in args.iter().skip(1) {
        if room == 0 {
            break;
        }
        let take = arg.len().min(room);
        message.push(b'\'');
        message.extend_from_slice(&arg[..take]);
        message.extend_from_slice(b"' ");
        room -= take;
    }
    let mut out = Vec::new();
    Reply::new(&mut out, Protocol::Resp2).error_bytes(&message);
    out
}

fn node_id(arg: &[u8]) -> Option<NodeId> {
    std::str::from_utf8(arg).ok()?.parse::<NodeId>().ok().filter(|id| *id != 0)
}

fn later(future: impl Future<Output = Vec<u8>> + Send + 'static) -> Answer {
    Answer::Later(Box::pin(future))
}

/// A connection's requests in flight, by kind, for the session order (see [`kv`]).
#[derive(Default)]
struct Session {
    reads: Arc<AtomicUsize>,
    writes: Arc<AtomicUsize>,
}

/// One request counted in flight until its answer is encoded (or the connection drops it).
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(counter: &Arc<AtomicUsize>) -> InFlight {
        counter.fetch_add(1, Ordering::SeqCst);
        InFlight(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Queues a GET (a read) or a write; `encode` turns the map's response into the reply.
///
/// The session order: a pipelined `SET k v` then `GET k` must read `v`, as with Redis. The
/// node serves reads and writes through different paths (ReadIndex and the log) that do
/// not order one against the other, so a request of one kind that follows unanswered
/// requests of the other kind on this connection is queued at the node only once the
/// writer reaches it, that is once every earlier answer is in. Requests of one kind in a
/// row go to the node at once: writes keep their order in the log, and reads commute.
async fn kv(
    node: &NodeHandle,
    session: &Session,
    command: KvCommand,
    encode: impl FnOnce(KvResponse) -> Option<Vec<u8>> + Send + 'static,
) -> Answer {
    let read = command.is_read();
    let (mine, other) = if read { (&session.reads, &session.writes) } else { (&session.writes, &session.reads) };
    let in_flight = InFlight::new(mine);
    let bytes = command.encode();
    if other.load(Ordering::SeqCst) == 0 {
        let pending = submit(node, read, bytes).await;
        later(async move {
            let reply = kv_reply(pending.wait().await, encode);
            drop(in_flight);
            reply
        })
    } else {
        let node = node.clone();
        later(async move {
            let pending = submit(&node, read, bytes).await;
            let reply = kv_reply(pending.wait().await, encode);
            drop(in_flight);
            reply
        })
    }
}

async fn submit(node: &NodeHandle, read: bool, command: Bytes) -> Pending<Bytes> {
    if read {
        node.submit_read(command).await
    } else {
        node.submit_propose(command).await
    }
}

fn kv_reply(result: Result<Bytes, RequestError>, encode: impl FnOnce(KvResponse) -> Option<Vec<u8>>) -> Vec<u8> {
    match result {
        Ok(bytes) => match KvResponse::decode(&bytes).ok().and_then(encode) {
            Some(reply) => reply,
            // The map answered something the command cannot answer: a bug, not bad input.
            None => error("ERR internal error: the state machine gave an unexpected response"),
        },
        Err(e) => request_error(&e),
    }
}

fn unit_reply(result: Result<(), RequestError>) -> Vec<u8> {
    match result {
        Ok(()) => simple("OK"),
        Err(e) => request_error(&e),
    }
}
