//! The connection loop: read, parse, execute, reply.
//!
//! ```text
//!   ┌──────────── wait until readable (or a push in the outbox, or a blocked-key wake-up)
//!   │   read once into the query buffer
//!   │   parse and execute every complete command, appending replies to one buffer,
//!   │     with queued pushes (pub/sub, invalidations) between replies, never inside one
//!   │   BCAST invalidations for the keys the batch changed
//!   │   AOF: make the batch's records as durable as appendfsync promises
//!   │   write the reply buffer with one write(2)
//!   └── loop
//! ```
//!
//! Pushes other connections queue for this one ([`crate::outbox`]) are written while
//! the connection waits for input, and before and after each command it runs. So an
//! invalidation this client's own write caused follows that write's reply, and one
//! queued before a command arrived precedes its reply, which is the order Redis
//! produces.
//!
//! Replies to a pipelined batch go out in one write, not one write per reply; that is
//! what makes `redis-benchmark -P 16` fast. And with `appendfsync always` the whole
//! batch shares one fsync (and, through the log's group commit, shares it with other
//! connections' batches too).
//!
//! Readiness: we use tokio's `AsyncFd` directly instead of `TcpStream`. A read that
//! returns fewer bytes than the buffer had room for means the kernel's receive queue
//! was empty at that moment, so we clear read readiness ourselves instead of issuing
//! one more `read(2)` just to see EAGAIN, which is what a generic reader must do. On a
//! busy server that saves a system call per request. (`clear_ready` is race free:
//! tokio only clears readiness it has not been told about again since the guard was
//! taken.)
//!
//! Bad input: a protocol error is answered with `-ERR Protocol error: ...` and the
//! connection is closed, because the stream cannot be resynchronised. A client whose
//! unparsed input exceeds `client-query-buffer-limit` is closed too.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::blocking::Waiter;
use crate::cmd::{execute, Action, Batch};
use crate::resp::{ArgBuf, Limits, OwnedArgs, Parsed, Reply};
use crate::server::Server;
use crate::session::Session;

/// Initial and minimum free space of the query buffer (Redis's PROTO_IOBUF_LEN).
const READ_CHUNK: usize = 16 * 1024;
/// A reply buffer larger than this is freed after it is written, so one big reply
/// (LRANGE of a million elements) does not pin memory for the connection's lifetime.
const KEEP_OUTPUT_CAPACITY: usize = 64 * 1024;

/// The query buffer: bytes `start..end` of `buf` are read but not yet parsed.
struct QueryBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl QueryBuf {
    fn new() -> Self {
        QueryBuf { buf: vec![0; READ_CHUNK], start: 0, end: 0 }
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn pending_len(&self) -> usize {
        self.end - self.start
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        debug_assert!(self.start <= self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Makes room for at least `READ_CHUNK` more bytes (and for a whole frame of
    /// `frame` bytes when the parser knows it), moving unparsed bytes to the front.
    fn reserve(&mut self, frame: Option<usize>) {
        let want = frame.unwrap_or(0).max(self.pending_len() + READ_CHUNK);
        if self.buf.len() - self.end >= READ_CHUNK && self.buf.len() - self.start >= want {
            return;
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() < want {
            self.buf.resize(want.next_power_of_two(), 0);
        }
    }

    /// Gives back a large buffer once it is empty.
    fn shrink_if_idle(&mut self) {
        if self.pending_len() == 0 && self.buf.len() > 4 * READ_CHUNK {
            self.buf = vec![0; READ_CHUNK];
            self.start = 0;
            self.end = 0;
        }
    }
}

/// Why the loop ended.
enum Exit {
    Closed,
    Error,
}

/// Serves one client connection until it closes. Runs on one of the I/O workers.
pub async fn serve(server: Arc<Server>, std_stream: std::net::TcpStream, peer: SocketAddr) {
    let local = std_stream.local_addr().unwrap_or(peer);
    if let Err(e) = std_stream.set_nonblocking(true) {
        tracing::debug!(error = %e, "set_nonblocking failed");
        return;
    }
    let _ = std_stream.set_nodelay(true);
    let fd = std_stream.as_raw_fd();
    // SAFETY: a std TcpStream owns its descriptor and returns the same one from
    // as_raw_fd() until it is dropped, which happens only when the AsyncFd is dropped.
    let registered = unsafe { AsyncFd::register_with_interest(std_stream, Interest::READABLE | Interest::WRITABLE) };
    let sock = match registered {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "registering socket failed");
            return;
        }
    };
    let info = server.clients.register(peer, local, fd);
    let auth_required = server.config.live.auth_required.load(Ordering::Relaxed);
    let mut client = ClientGuard { server: &server, session: Session::new(info, !auth_required) };
    let mut conn = Conn {
        server: &server,
        sock: &sock,
        query: QueryBuf::new(),
        out: Vec::with_capacity(READ_CHUNK),
        args: ArgBuf::new(),
        pending_lsn: 0,
    };
    if let Exit::Error = conn.run(&mut client.session).await {
        tracing::debug!(client = client.session.id, "connection closed after an error");
    }
    // `client` cleans up here, then `sock` closes the socket.
    drop(client);
    drop(sock);
}

/// Frees a client the way Redis does (transactions, subscriptions, tracking, registry)
/// when its connection ends, also if a bug made a command panic: a dead connection
/// must not leave a ghost in CLIENT LIST, a watch flag in a shard, a subscription or
/// a tracking table entry behind.
struct ClientGuard<'a> {
    server: &'a Server,
    session: Session,
}

impl Drop for ClientGuard<'_> {
    fn drop(&mut self) {
        // First, so that from now on writers skip this client and trackers that
        // redirect to it see their redirect broken.
        self.session.info.mark_gone();
        crate::cmd::transactions::unwatch_all(self.server, &mut self.session);
        crate::cmd::pubsub::unsubscribe_everything(self.server, &mut self.session);
        crate::tracking::forget_client(self.server, &mut self.session);
        self.server.clients.unregister(self.session.id);
        self.session.info.forget_fd();
    }
}

struct Conn<'a> {
    server: &'a Arc<Server>,
    sock: &'a AsyncFd<std::net::TcpStream>,
    query: QueryBuf,
    out: Vec<u8>,
    args: ArgBuf,
    /// One past the last AOF record this connection must make durable before it
    /// replies; 0 when there is none.
    pending_lsn: u64,
}

impl Conn<'_> {
    async fn run(&mut self, session: &mut Session) -> Exit {
        loop {
            // Wait for input, or deliver pub/sub messages while waiting.
            match self.read(session).await {
                Ok(true) => {}
                Ok(false) => return Exit::Closed,
                Err(_) => return Exit::Error,
            }
            let action = match self.process(session) {
                Ok(a) => a,
                Err(()) => {
                    let _ = self.flush().await;
                    return Exit::Closed;
                }
            };
            if self.flush().await.is_err() {
                return Exit::Error;
            }
            match action {
                None => {}
                Some(Action::Close) => return Exit::Closed,
                Some(Action::Shutdown) => {
                    self.server.shutdown.trigger();
                    return Exit::Closed;
                }
                Some(Action::Sleep(d)) => tokio::time::sleep(d).await,
                Some(Action::Block { waiter, timeout, retry }) => {
                    match self.block(session, waiter, retry, timeout).await {
                        Ok(true) => {}
                        Ok(false) => return Exit::Closed,
                        Err(_) => return Exit::Error,
                    }
                    // Commands pipelined behind the blocking one run now.
                    match self.process(session) {
                        Ok(Some(Action::Close)) | Err(()) => {
                            let _ = self.flush().await;
                            return Exit::Closed;
                        }
                        _ => {}
                    }
                    if self.flush().await.is_err() {
                        return Exit::Error;
                    }
                }
            }
            if self.server.stopping.load(Ordering::Relaxed) {
                return Exit::Closed;
            }
            self.query.shrink_if_idle();
            if self.out.capacity() > KEEP_OUTPUT_CAPACITY {
                self.out = Vec::with_capacity(READ_CHUNK);
            }
        }
    }

    /// Reads once. Returns false at end of stream. Pushes (pub/sub messages,
    /// invalidations) that arrive while waiting are written out as they come.
    async fn read(&mut self, session: &mut Session) -> io::Result<bool> {
        loop {
            self.query.reserve(None);
            // Socket first, then the outbox, polled by hand rather than with
            // `select!`: this wait happens once per request at -P 1.
            let outbox = &session.info.outbox;
            let sock = self.sock;
            let woken = std::future::poll_fn(|cx| {
                if let Poll::Ready(guard) = sock.poll_read_ready(cx) {
                    return Poll::Ready(Some(guard));
                }
                outbox.poll_ready(cx).map(|()| None)
            })
            .await;
            let mut guard = match woken {
                Some(guard) => guard?,
                None => {
                    session.drain_outbox(&mut self.out);
                    self.flush().await?;
                    continue;
                }
            };
            let space = self.query.buf.len() - self.query.end;
            let end = self.query.end;
            let result = guard.try_io(|s| s.get_ref().read(&mut self.query.buf[end..]));
            match result {
                Ok(Ok(0)) => return Ok(false),
                Ok(Ok(n)) => {
                    if n < space {
                        // A short read drained the socket; skip the EAGAIN read.
                        guard.clear_ready_matching(tokio::io::Ready::READABLE);
                    }
                    self.query.end += n;
                    self.server.stats.net_input_bytes.fetch_add(n as u64, Ordering::Relaxed);
                    return Ok(true);
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// Executes every complete command in the query buffer. Stops early at a command
    /// that needs the connection loop (QUIT, a blocking command, DEBUG SLEEP).
    /// `Err(())` means the connection must close after flushing (protocol error, query
    /// buffer limit).
    fn process(&mut self, session: &mut Session) -> Result<Option<Action>, ()> {
        let server = &**self.server;
        let live = &server.config.live;
        let limits = Limits {
            max_bulk_len: live.proto_max_bulk_len.load(Ordering::Relaxed),
            max_multibulk_len: live.proto_max_multibulk_len.load(Ordering::Relaxed),
            unauthenticated: !session.authenticated && live.auth_required.load(Ordering::Relaxed),
        };
        let mut batch = Batch::new(server);
        let mut action = None;
        loop {
            let pending = self.query.pending();
            if pending.is_empty() {
                break;
            }
            match self.args.parse(pending, &limits) {
                Ok(Parsed::Command { consumed }) => {
                    // Pushes queued before this command was read precede its reply.
                    session.drain_outbox(&mut self.out);
                    let args = self.args.args(pending);
                    let result = execute(server, session, &args, &mut self.out, &mut batch);
                    self.query.consume(consumed);
                    if result.is_some() {
                        action = result;
                        break;
                    }
                }
                Ok(Parsed::Nothing { consumed }) => self.query.consume(consumed),
                Ok(Parsed::Incomplete { at_least }) => {
                    let limit = live.client_query_buffer_limit.load(Ordering::Relaxed);
                    if self.query.pending_len() > limit || at_least.is_some_and(|n| n > limit) {
                        tracing::warn!(client = session.id, "closing client that reached max query buffer length");
                        return Err(());
                    }
                    self.query.reserve(at_least);
                    break;
                }
                Err(e) => {
                    tracing::debug!(client = session.id, error = %e, "protocol error");
                    Reply::new(&mut self.out, session.proto).error(&format!("ERR {e}"));
                    return Err(());
                }
            }
        }
        self.end_batch(session, &mut batch);
        Ok(action)
    }

    /// After a batch of commands: BCAST invalidations for what it changed, then every
    /// push queued meanwhile (this client's own invalidations among them) after the
    /// batch's replies; and the AOF position to make durable before they are written.
    fn end_batch(&mut self, session: &mut Session, batch: &mut Batch<'_>) {
        batch.broadcast(self.server);
        session.drain_outbox(&mut self.out);
        self.note_aof(batch);
    }

    /// Remembers the highest AOF record a batch appended; `flush` makes it durable
    /// before any reply of the batch is sent.
    fn note_aof(&mut self, batch: &Batch<'_>) {
        self.pending_lsn = self.pending_lsn.max(batch.aof_lsn);
    }

    /// Waits as a blocked client until served, timed out, or disconnected.
    /// Returns false if the client went away.
    async fn block(
        &mut self,
        session: &mut Session,
        mut waiter: Arc<Waiter>,
        retry: OwnedArgs,
        timeout: Option<Duration>,
    ) -> io::Result<bool> {
        let server = &**self.server;
        let info = session.info.clone();
        session.info.blocked.store(true, Ordering::Relaxed);
        let mut deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let connected = loop {
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = waiter.notify.notified() => {
                    if waiter.is_delivered() {
                        self.out.extend_from_slice(&waiter.take_reply());
                        break true;
                    }
                    if waiter.is_claimed() {
                        // Claimed, reply on its way: the next notification brings it.
                        continue;
                    }
                    // Poked: data arrived that the pusher could not move for us. Leave
                    // the queues and run the command again as a normal command.
                    if !waiter.cancel() {
                        continue;
                    }
                    crate::blocking::unregister(&server.keyspace, &waiter);
                    let mut batch = Batch::new(server);
                    let action = execute(server, session, &retry.as_args(), &mut self.out, &mut batch);
                    self.end_batch(session, &mut batch);
                    match action {
                        Some(Action::Block { waiter: again, .. }) => {
                            waiter = again;
                            continue;
                        }
                        _ => break true,
                    }
                }
                () = info.outbox.ready() => {
                    // Blocked clients still get their pushes (a RESP3 client can BLPOP
                    // while subscribed or tracking), between replies as always.
                    session.drain_outbox(&mut self.out);
                    self.flush().await?;
                }
                _ = sleep => {
                    if waiter.cancel() {
                        Reply::new(&mut self.out, session.proto).null_array();
                        break true;
                    }
                    // Served at the last moment; wait for the reply.
                    deadline = None;
                }
                ready = self.sock.readable() => {
                    // Keep reading while blocked, to notice a client that leaves. What
                    // it sends meanwhile waits in the query buffer.
                    let mut guard = ready?;
                    self.query.reserve(None);
                    let space = self.query.buf.len() - self.query.end;
                    let end = self.query.end;
                    match guard.try_io(|s| s.get_ref().read(&mut self.query.buf[end..])) {
                        Ok(Ok(0)) => {
                            waiter.cancel();
                            break false;
                        }
                        Ok(Ok(n)) => {
                            if n < space {
                                guard.clear_ready_matching(tokio::io::Ready::READABLE);
                            }
                            self.query.end += n;
                        }
                        Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                        Ok(Err(e)) => {
                            waiter.cancel();
                            crate::blocking::unregister(&server.keyspace, &waiter);
                            session.info.blocked.store(false, Ordering::Relaxed);
                            return Err(e);
                        }
                        Err(_would_block) => {}
                    }
                }
            }
        };
        crate::blocking::unregister(&server.keyspace, &waiter);
        session.info.blocked.store(false, Ordering::Relaxed);
        Ok(connected)
    }

    /// Writes the reply buffer. First makes this batch's AOF records as durable as
    /// `appendfsync` promises: written to the OS for everysec/no, fsynced for always.
    async fn flush(&mut self) -> io::Result<()> {
        let lsn = std::mem::take(&mut self.pending_lsn);
        if let (Some(aof), true) = (self.server.aof(), lsn > 0) {
            if let Err(e) = aof.commit(lsn).await {
                tracing::error!(error = %e, "AOF commit failed; closing client without acknowledging");
                return Err(io::Error::other(e));
            }
        }
        let mut written = 0;
        while written < self.out.len() {
            let mut guard = self.sock.writable().await?;
            match guard.try_io(|s| s.get_ref().write(&self.out[written..])) {
                Ok(Ok(n)) => written += n,
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
        self.server.stats.net_output_bytes.fetch_add(written as u64, Ordering::Relaxed);
        self.out.clear();
        Ok(())
    }
}

/// The I/O workers: one thread per core, each running its own single-threaded tokio
/// runtime, i.e. its own event loop, like a Redis event loop per core.
///
/// Accepted connections are handed out round-robin and stay on their worker for life.
/// Nothing is stolen between workers, so a ready socket never costs a cross-thread
/// wake-up; the only state the workers share is the keyspace's shard locks (and the
/// AOF buffer's). A work-stealing runtime spends measurable time in futex wake-ups on a
/// machine whose cores are also busy with clients.
pub struct Workers {
    handles: Vec<tokio::runtime::Handle>,
    next: std::sync::atomic::AtomicUsize,
    stop: Arc<tokio::sync::Notify>,
    threads: parking_lot::Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Workers {
    pub fn start(count: usize) -> io::Result<Workers> {
        assert!(count >= 1);
        let stop = Arc::new(tokio::sync::Notify::new());
        let mut handles = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        for i in 0..count {
            let (tx, rx) = std::sync::mpsc::channel();
            let stop = stop.clone();
            let thread = std::thread::Builder::new().name(format!("minikv-io-{i}")).spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let _ = tx.send(Ok(runtime.handle().clone()));
                // Run until the server has drained its clients.
                runtime.block_on(stop.notified());
            })?;
            handles.push(rx.recv().map_err(|e| io::Error::other(e.to_string()))??);
            threads.push(thread);
        }
        Ok(Workers { handles, next: Default::default(), stop, threads: parking_lot::Mutex::new(threads) })
    }

    fn pick(&self) -> &tokio::runtime::Handle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        &self.handles[i]
    }

    /// Stops the worker threads (after the lifecycle has drained every connection).
    pub fn stop(&self) {
        self.stop.notify_waiters();
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
    }
}

/// The service minicore's lifecycle runs: each connection goes to an I/O worker.
pub struct KvService {
    pub server: Arc<Server>,
    pub workers: Arc<Workers>,
}

impl minicore::lifecycle::Service for KvService {
    async fn connection(self: Arc<Self>, stream: TcpStream, peer: SocketAddr, slot: minicore::lifecycle::Slot) {
        // Move the socket from the accept loop's reactor to the worker's.
        let std_stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "into_std failed");
                return;
            }
        };
        let task = self.workers.pick().spawn(serve(self.server.clone(), std_stream, peer));
        let _ = task.await;
        drop(slot);
    }
    async fn rejected(self: Arc<Self>, stream: TcpStream, _peer: SocketAddr) {
        use tokio::io::AsyncWriteExt;
        self.server.clients.rejected_connections.fetch_add(1, Ordering::Relaxed);
        let mut stream = stream;
        let _ = stream.write_all(b"-ERR max number of clients reached\r\n").await;
        let _ = stream.shutdown().await;
    }

    fn shutting_down(&self) {
        // Each client finishes the commands it has received, flushes its replies and
        // exits: `stopping` is checked after every batch, and the half-close wakes
        // connections that are idle in a read.
        self.server.stopping.store(true, Ordering::Release);
        self.server.clients.stop_all();
    }
}
