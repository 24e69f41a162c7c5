//! Pub/sub: who is subscribed to what, and delivery of published messages.
//!
//! Channel subscriptions are split into shards by channel hash, so PUBLISH to
//! different channels does not contend. Pattern subscriptions are few in practice and
//! live in one list that every PUBLISH scans, as in Redis.
//!
//! Delivery goes through each subscriber's outbox ([`crate::outbox`]): PUBLISH queues
//! the message for every matching subscriber and returns; the subscriber's connection
//! task encodes and writes it (a RESP2 array or a RESP3 push) between its replies. The
//! bytes a subscriber has not written yet are counted, and a subscriber that falls too
//! far behind is disconnected, using Redis's `client-output-buffer-limit pubsub` rule:
//! over the hard limit at once, or over the soft limit for longer than the soft period.
//! Without this one slow consumer could make the server buffer without bound.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::clients::ClientInfo;
use crate::config::OutputLimit;
use crate::keyspace::hash_bytes;
use crate::outbox::{Delivery, Push};

const SHARDS: usize = 16;

pub use crate::outbox::Message;

/// A subscribed client, as the channel tables hold it. Messages go into the client's
/// outbox ([`crate::outbox`]), which its connection drains.
#[derive(Debug)]
pub struct Subscriber {
    pub client: Arc<ClientInfo>,
}

impl Subscriber {
    pub fn new(client: Arc<ClientInfo>) -> Arc<Subscriber> {
        Arc::new(Subscriber { client })
    }

    /// Bytes queued for the client and not yet written.
    pub fn pending(&self) -> usize {
        self.client.outbox.queued()
    }

    /// Queues a message, or reports that the subscriber is over its limits.
    fn deliver(&self, msg: Message, limit: OutputLimit, now_ms: u64) -> Delivery {
        self.client.outbox.send(Push::Message(msg), Some(limit), now_ms)
    }
}

/// One shard of the channel table: channel name to its subscribers, in subscription order.
type ChannelShard = Mutex<HashMap<Vec<u8>, Vec<Arc<Subscriber>>>>;

/// Every subscription of the server.
#[derive(Default)]
pub struct PubSub {
    /// Channel subscriptions, sharded by the channel's hash so that PUBLISH to
    /// different channels does not contend.
    channels: [ChannelShard; SHARDS],
    /// Pattern subscriptions, read by every PUBLISH and written only by
    /// PSUBSCRIBE/PUNSUBSCRIBE: a read-write lock, not a mutex.
    patterns: RwLock<Vec<(Vec<u8>, Arc<Subscriber>)>>,
}

fn shard(channel: &[u8]) -> usize {
    (hash_bytes(channel) as usize) % SHARDS
}

impl PubSub {
    /// Adds a channel subscription; false if it already existed.
    pub fn subscribe(&self, channel: &[u8], sub: &Arc<Subscriber>) -> bool {
        let mut map = self.channels[shard(channel)].lock();
        let subs = map.entry(channel.to_vec()).or_default();
        if subs.iter().any(|s| Arc::ptr_eq(s, sub)) {
            return false;
        }
        subs.push(sub.clone());
        true
    }

    pub fn unsubscribe(&self, channel: &[u8], sub: &Arc<Subscriber>) -> bool {
        let mut map = self.channels[shard(channel)].lock();
        let Some(subs) = map.get_mut(channel) else {
            return false;
        };
        let before = subs.len();
        subs.retain(|s| !Arc::ptr_eq(s, sub));
        let removed = subs.len() != before;
        if subs.is_empty() {
            map.remove(channel);
        }
        removed
    }

    pub fn psubscribe(&self, pattern: &[u8], sub: &Arc<Subscriber>) -> bool {
        let mut pats = self.patterns.write();
        if pats.iter().any(|(p, s)| p == pattern && Arc::ptr_eq(s, sub)) {
            return false;
        }
        pats.push((pattern.to_vec(), sub.clone()));
        true
    }

    pub fn punsubscribe(&self, pattern: &[u8], sub: &Arc<Subscriber>) -> bool {
        let mut pats = self.patterns.write();
        let before = pats.len();
        pats.retain(|(p, s)| !(p == pattern && Arc::ptr_eq(s, sub)));
        pats.len() != before
    }

    /// Delivers a message. Returns how many subscribers received it, and how many were
    /// disconnected for being over their output buffer limit.
    pub fn publish(&self, channel: &[u8], payload: &[u8], limit: OutputLimit, now_ms: u64) -> (usize, usize) {
        let channel: Arc<[u8]> = channel.into();
        let payload: Arc<[u8]> = payload.into();
        let mut receivers = 0;
        let mut too_slow = Vec::new();
        {
            let map = self.channels[shard(&channel)].lock();
            if let Some(subs) = map.get(&channel[..]) {
                for s in subs {
                    let msg = Message { pattern: None, channel: channel.clone(), payload: payload.clone() };
                    match s.deliver(msg, limit, now_ms) {
                        Delivery::Queued => receivers += 1,
                        Delivery::OverLimit => too_slow.push(s.clone()),
                        Delivery::Closed => {}
                    }
                }
            }
        }
        {
            let pats = self.patterns.read();
            for (pattern, s) in pats.iter() {
                if crate::glob::matches(pattern, &channel, false) {
                    let msg = Message {
                        pattern: Some(pattern.as_slice().into()),
                        channel: channel.clone(),
                        payload: payload.clone(),
                    };
                    match s.deliver(msg, limit, now_ms) {
                        Delivery::Queued => receivers += 1,
                        Delivery::OverLimit => too_slow.push(s.clone()),
                        Delivery::Closed => {}
                    }
                }
            }
        }
        let dropped = too_slow.len();
        for s in too_slow {
            tracing::warn!(
                client = s.client.id,
                pending = s.pending(),
                "closing pub/sub client over its output buffer limit"
            );
            s.client.kill();
        }
        (receivers, dropped)
    }

    /// Channels with at least one subscriber, optionally matching a pattern.
    pub fn channels(&self, pattern: Option<&[u8]>) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for shard in &self.channels {
            for ch in shard.lock().keys() {
                if pattern.is_none_or(|p| crate::glob::matches(p, ch, false)) {
                    out.push(ch.clone());
                }
            }
        }
        out
    }

    pub fn numsub(&self, channel: &[u8]) -> usize {
        self.channels[shard(channel)].lock().get(channel).map_or(0, |s| s.len())
    }

    /// Number of distinct patterns subscribed (PUBSUB NUMPAT).
    pub fn numpat(&self) -> usize {
        let pats = self.patterns.read();
        let mut uniq: Vec<&Vec<u8>> = pats.iter().map(|(p, _)| p).collect();
        uniq.sort();
        uniq.dedup();
        uniq.len()
    }
}
