//! The outbox: out-of-band messages on their way to one connection.
//!
//! Only a connection's own task writes to its socket, and it writes between replies,
//! never inside one. Other connections reach a client by queueing a [`Push`] in its
//! outbox instead: PUBLISH queues `message`s for subscribers ([`crate::pubsub`]), and
//! client-side caching queues `invalidate` pushes for tracking clients and their
//! redirect targets ([`crate::tracking`]).
//!
//! ```text
//!   writer's command ──send──> Outbox (in the receiver's ClientInfo) ──wake──> its task
//!                                 │ drained by the owner only:
//!                                 │  · while idle (a send wakes it)
//!                                 │  · before and after each command
//!                                 ▼
//!                   encode() in the owner's protocol, between replies
//! ```
//!
//! Every connection gets its outbox when it connects, because any client may become
//! somebody's redirect target (`CLIENT TRACKING on REDIRECT <id>`) without doing
//! anything itself. A push is encoded by the owner when it is written, not by the
//! sender, because only the owner knows its protocol and subscriptions at that moment:
//! RESP3 gets a `>` push, a subscribed RESP2 client gets a pub/sub `message`, anyone
//! else gets nothing (RESP2 has no way to deliver a push in band).
//!
//! The bytes queued and not yet drained are counted, so a sender can apply Redis's
//! `client-output-buffer-limit`: a subscriber that stops reading would otherwise make
//! the server buffer without bound.
//!
//! Left out: a bound on the queue itself. The limits are checked by the senders that
//! can produce unbounded streams (PUBLISH, redirected and broadcast invalidations); a
//! default-mode tracking client gets at most one invalidation per key it read.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;

use crate::config::OutputLimit;
use crate::resp::{Protocol, Reply};

/// The pub/sub channel RESP2 redirect targets receive invalidations on.
pub const INVALIDATE_CHANNEL: &[u8] = b"__redis__:invalidate";

/// A message published to a channel, on its way to one subscriber.
#[derive(Debug, Clone)]
pub struct Message {
    /// The pattern that matched, for PSUBSCRIBE deliveries.
    pub pattern: Option<Arc<[u8]>>,
    pub channel: Arc<[u8]>,
    pub payload: Arc<[u8]>,
}

/// One out-of-band message.
#[derive(Debug, Clone)]
pub enum Push {
    /// A PUBLISH delivery.
    Message(Message),
    /// Client-side caching: the keys named in `keys` may have changed. `keys` is the
    /// RESP value already encoded, an array of key names or a null ("every key", after
    /// a flush), because Redis builds it from the *tracking* client's protocol, which
    /// may differ from the receiver's (a RESP2 tracker redirecting to a RESP3 client
    /// makes that client read `$-1`).
    Invalidate {
        keys: Arc<[u8]>,
        /// Sent to a redirect target: a subscribed RESP2 receiver then gets it as a
        /// `message` on `__redis__:invalidate`.
        redirected: bool,
    },
    /// The client's redirect target has gone (`tracking-redir-broken`, RESP3 only).
    RedirectBroken { id: u64 },
}

impl Push {
    /// Approximate encoded size, for the output buffer limit.
    pub fn size(&self) -> usize {
        match self {
            Push::Message(m) => m.channel.len() + m.payload.len() + m.pattern.as_ref().map_or(0, |p| p.len()) + 48,
            Push::Invalidate { keys, .. } => keys.len() + 48,
            Push::RedirectBroken { .. } => 56,
        }
    }
}

/// What became of a push handed to [`Outbox::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Queued,
    /// The connection has ended; nobody will read it.
    Closed,
    /// The receiver is over its output buffer limit: the sender must disconnect it.
    OverLimit,
}

/// A connection's queue of pushes, shared through its [`crate::clients::ClientInfo`]:
/// any connection sends, only the owner receives.
///
/// Not a tokio channel: the owner polls for pushes every time it waits for input, and
/// an mpsc receive (cooperative budget, waker registration, list walk) cost hundreds
/// of instructions per wait, i.e. per request at `-P 1` (measured with callgrind). Here
/// waiting costs a relaxed load plus, only when nothing is queued, an uncontended lock
/// to leave the waker; sending is a lock, a push and a wake.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Pushes in the order they were sent. A `parking_lot` mutex: held for a push or a
    /// pop only, never across an await.
    queue: Mutex<VecDeque<Push>>,
    /// Bytes queued and not yet drained by the owner. Raised before a push is queued,
    /// so it is never lower than what the queue holds.
    queued: AtomicUsize,
    /// When `queued` first went over the soft limit (Unix ms), 0 while it is under.
    over_soft_since: AtomicU64,
    /// The owner's task, registered the first time it waits (see [`Outbox::poll_ready`])
    /// and kept: a connection is polled by one task for life, so later waits need not
    /// take the lock.
    waker: Mutex<Option<Waker>>,
    /// `waker` holds a waker (written by the owner only).
    waker_set: AtomicBool,
    /// The connection has ended: sends are refused.
    closed: AtomicBool,
}

impl Outbox {
    /// Queues `push`, first checking `limit` (Redis's rule: over the hard limit at
    /// once, or over the soft limit for longer than the soft period). `None` means no
    /// limit applies.
    pub fn send(&self, push: Push, limit: Option<OutputLimit>, now_ms: u64) -> Delivery {
        if self.closed.load(Ordering::Acquire) {
            return Delivery::Closed;
        }
        let size = push.size();
        let queued = self.queued.fetch_add(size, Ordering::AcqRel) + size;
        if let Some(limit) = limit {
            if limit.hard > 0 && queued as u64 > limit.hard {
                self.queued.fetch_sub(size, Ordering::AcqRel);
                return Delivery::OverLimit;
            }
            if limit.soft > 0 && queued as u64 > limit.soft {
                let since = self.over_soft_since.load(Ordering::Relaxed);
                if since == 0 {
                    self.over_soft_since.store(now_ms, Ordering::Relaxed);
                } else if now_ms.saturating_sub(since) > limit.soft_secs * 1000 {
                    self.queued.fetch_sub(size, Ordering::AcqRel);
                    return Delivery::OverLimit;
                }
            } else {
                self.over_soft_since.store(0, Ordering::Relaxed);
            }
        }
        self.queue.lock().push_back(push);
        // After the push: a woken owner finds it.
        if let Some(waker) = self.waker.lock().as_ref() {
            waker.wake_by_ref();
        }
        Delivery::Queued
    }

    /// Whether something may be waiting. One relaxed load: the connection asks before
    /// every command, so it must cost nothing when nobody sends it anything.
    #[inline]
    pub fn has_queued(&self) -> bool {
        self.queued.load(Ordering::Relaxed) > 0
    }

    /// Bytes queued and not drained yet.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// The next queued push, without waiting (the owner only).
    pub fn try_recv(&self) -> Option<Push> {
        if !self.has_queued() {
            return None;
        }
        let push = self.queue.lock().pop_front()?;
        let prev = self.queued.fetch_sub(push.size(), Ordering::AcqRel);
        debug_assert!(prev >= push.size(), "outbox accounting went negative");
        Some(push)
    }

    /// Ready once something is queued (the owner only, while it waits for input). The
    /// first call leaves the owner's waker; a sender wakes it after every push, so from
    /// then on a wait is one load. Must be polled from one task only (the connection's).
    #[inline]
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.has_queued() {
            return Poll::Ready(());
        }
        if self.waker_set.load(Ordering::Relaxed) {
            return Poll::Pending;
        }
        *self.waker.lock() = Some(cx.waker().clone());
        self.waker_set.store(true, Ordering::Relaxed);
        // Checked again after the waker is in place: a sender that queued before saw
        // no waker, and this sees its bytes; one that queues after wakes it.
        if self.queued.load(Ordering::Acquire) > 0 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// [`Outbox::poll_ready`] as a future.
    pub fn ready(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| self.poll_ready(cx))
    }

    /// The connection has ended: refuse further pushes, free the queued ones.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.queue.lock().clear();
        self.queued.store(0, Ordering::Release);
        *self.waker.lock() = None;
        self.waker_set.store(false, Ordering::Relaxed);
    }
}

/// Appends `push` to `out` the way this connection must see it. Returns whether
/// anything was written: a RESP2 client that is not subscribed cannot receive a push.
pub fn encode(push: &Push, proto: Protocol, subscribed: bool, out: &mut Vec<u8>) -> bool {
    let mut r = Reply::new(out, proto);
    match push {
        Push::Message(msg) => {
            match &msg.pattern {
                Some(pattern) => {
                    r.push(4);
                    r.bulk(b"pmessage");
                    r.bulk(pattern);
                }
                None => {
                    r.push(3);
                    r.bulk(b"message");
                }
            }
            r.bulk(&msg.channel);
            r.bulk(&msg.payload);
        }
        Push::Invalidate { keys, redirected } => {
            if proto == Protocol::Resp3 {
                r.push(2);
                r.bulk(b"invalidate");
            } else if *redirected && subscribed {
                r.push(3);
                r.bulk(b"message");
                r.bulk(INVALIDATE_CHANNEL);
            } else {
                return false;
            }
            r.buf.extend_from_slice(keys);
        }
        Push::RedirectBroken { id } => {
            if proto != Protocol::Resp3 {
                return false;
            }
            r.push(2);
            r.bulk(b"tracking-redir-broken");
            r.int(*id as i64);
        }
    }
    true
}

/// The RESP array of one key name, the payload of a default-mode invalidation.
pub fn one_key(key: &[u8]) -> Arc<[u8]> {
    let mut out = Vec::with_capacity(key.len() + 16);
    let mut r = Reply::new(&mut out, Protocol::Resp2);
    r.array(1);
    r.bulk(key);
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(push: &Push, proto: Protocol, subscribed: bool) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        encode(push, proto, subscribed, &mut out).then_some(out)
    }

    #[test]
    fn invalidations_take_the_receivers_form() {
        let push = Push::Invalidate { keys: one_key(b"k"), redirected: false };
        assert_eq!(encoded(&push, Protocol::Resp3, false).unwrap(), b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n");
        // RESP2 without redirection has no way to carry it.
        assert_eq!(encoded(&push, Protocol::Resp2, true), None);
        let redirected = Push::Invalidate { keys: one_key(b"k"), redirected: true };
        assert_eq!(
            encoded(&redirected, Protocol::Resp2, true).unwrap(),
            b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n*1\r\n$1\r\nk\r\n"
        );
        assert_eq!(encoded(&redirected, Protocol::Resp2, false), None, "a RESP2 target must be subscribed");
        let broken = Push::RedirectBroken { id: 7 };
        assert_eq!(encoded(&broken, Protocol::Resp3, false).unwrap(), b">2\r\n$21\r\ntracking-redir-broken\r\n:7\r\n");
        assert_eq!(encoded(&broken, Protocol::Resp2, false), None);
    }

    #[test]
    fn queued_bytes_follow_sends_and_drains() {
        let outbox = Outbox::default();
        assert!(!outbox.has_queued());
        assert!(outbox.try_recv().is_none());
        let push = Push::Invalidate { keys: one_key(b"key"), redirected: false };
        assert_eq!(outbox.send(push.clone(), None, 0), Delivery::Queued);
        assert_eq!(outbox.send(Push::RedirectBroken { id: 3 }, None, 0), Delivery::Queued);
        assert_eq!(outbox.queued(), push.size() + 56);
        assert!(matches!(outbox.try_recv(), Some(Push::Invalidate { .. })), "in the order sent");
        assert!(matches!(outbox.try_recv(), Some(Push::RedirectBroken { id: 3 })));
        assert!(!outbox.has_queued());
        let limit = OutputLimit { hard: 10, soft: 0, soft_secs: 0 };
        assert_eq!(outbox.send(push.clone(), Some(limit), 0), Delivery::OverLimit);
        assert!(!outbox.has_queued(), "a refused push is not counted");
        outbox.close();
        assert_eq!(outbox.send(push, None, 0), Delivery::Closed);
    }

    #[test]
    fn a_send_wakes_the_waiting_owner() {
        let outbox = Arc::new(Outbox::default());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            let sender = outbox.clone();
            let waiter = tokio::spawn(async move {
                sender.ready().await;
                sender.try_recv()
            });
            tokio::task::yield_now().await;
            assert!(!waiter.is_finished(), "nothing queued yet");
            outbox.send(Push::RedirectBroken { id: 9 }, None, 0);
            let got = tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await;
            assert!(matches!(got, Ok(Ok(Some(Push::RedirectBroken { id: 9 })))), "{got:?}");
        });
    }
}
