//! A pool of KV connections handed out one caller at a time, for `WATCH`/`MULTI`/`EXEC`.
//!
//! `WATCH` is per connection: the server remembers the watched keys on the TCP
//! connection, and the next `EXEC` on that connection fails if any of them changed. A
//! `redis::aio::MultiplexedConnection` shares one TCP connection between all its
//! clones, so two requests doing check-and-set through clones of one connection would
//! watch each other's keys and run each other's `EXEC`s. Each transaction therefore
//! checks out a connection of its own from here, and gives it back when the
//! transaction is over (`EXEC`, `DISCARD` or `UNWATCH` leave it clean).
//!
//! A checked-out connection whose holder did not say it is clean (an error, a
//! cancelled future half-way through `WATCH … EXEC`) is closed on drop instead of
//! being returned, so a stale `WATCH` or an open `MULTI` never leaks into the next
//! caller's transaction.
//!
//! Left out: health checks of idle connections (a broken one fails its next command
//! and is then dropped) and idle timeouts.

use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use tokio::sync::{Semaphore, SemaphorePermit};

/// Connections open at once; a caller beyond that waits for one to come back. Enough
/// for the scenario's concurrency; a real service sizes it to its request concurrency.
pub const MAX_OPEN: usize = 64;

/// A pool of exclusive connections to one KV store.
pub struct ConnectionPool {
    client: redis::Client,
    /// Idle, clean connections. A parking_lot mutex, not a tokio one: it is held for a
    /// push or a pop, never across an await.
    idle: Mutex<Vec<MultiplexedConnection>>,
    /// One permit per open connection, so the pool never holds more than [`MAX_OPEN`].
    open: Semaphore,
}

impl ConnectionPool {
    pub fn new(url: &str) -> redis::RedisResult<ConnectionPool> {
        Ok(ConnectionPool {
            client: redis::Client::open(url)?,
            idle: Mutex::new(Vec::new()),
            open: Semaphore::new(MAX_OPEN),
        })
    }

    /// A connection only the caller uses until it is dropped.
    pub async fn checkout(&self) -> redis::RedisResult<Exclusive<'_>> {
        let permit =
            self.open.acquire().await.map_err(|_| {
                redis::RedisError::from((redis::ErrorKind::ClientError, "the connection pool is closed"))
            })?;
        let idle = self.idle.lock().pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.client.get_multiplexed_async_connection().await?,
        };
        Ok(Exclusive { pool: self, conn: Some(conn), clean: false, _permit: permit })
    }

    /// Idle connections, for tests.
    pub fn idle_count(&self) -> usize {
        self.idle.lock().len()
    }
}

/// A connection checked out of a [`ConnectionPool`].
pub struct Exclusive<'a> {
    pool: &'a ConnectionPool,
    conn: Option<MultiplexedConnection>,
    /// Set by [`Exclusive::release`] once no `WATCH` or `MULTI` is pending.
    clean: bool,
    _permit: SemaphorePermit<'a>,
}

impl Exclusive<'_> {
    pub fn conn(&mut self) -> &mut MultiplexedConnection {
        self.conn.as_mut().expect("present until dropped")
    }

    /// Returns the connection to the pool: call it only when the last command left no
    /// `WATCH` or `MULTI` behind (after `EXEC`, `DISCARD` or `UNWATCH`).
    pub fn release(mut self) {
        self.clean = true;
    }
}

impl Drop for Exclusive<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if self.clean {
                self.pool.idle.lock().push(conn);
            }
            // Otherwise dropping the last handle closes the TCP connection, and the
            // server forgets its WATCH and any open MULTI with it.
        }
    }
}
