//! `Session`: the state of one client connection that commands read and change.
//!
//! Owned by the connection task, never shared: the selected database, the protocol
//! version, authentication, a transaction being queued, watched keys, pub/sub
//! subscriptions, the receiving end of its outbox and its `CLIENT TRACKING` options.
//! What other connections may see of a client lives in [`crate::clients::ClientInfo`].

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::clients::ClientInfo;
use crate::pubsub::Subscriber;
use crate::resp::Protocol;
use crate::tracking::SessionTracking;
use crate::transaction::{MultiState, WatchState};

/// A client's subscriptions. The messages arrive in the session's outbox.
pub struct Subscriptions {
    pub subscriber: Arc<Subscriber>,
    pub channels: HashSet<Vec<u8>>,
    pub patterns: HashSet<Vec<u8>>,
}

impl Subscriptions {
    pub fn count(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }
}

pub struct Session {
    pub id: u64,
    pub info: Arc<ClientInfo>,
    pub db: usize,
    pub proto: Protocol,
    pub authenticated: bool,
    pub multi: Option<MultiState>,
    pub watch: Option<WatchState>,
    pub subs: Option<Subscriptions>,
    /// `CLIENT TRACKING` state only this connection reads (the rest is in
    /// `info.tracking`, where writers see it).
    pub tracking: SessionTracking,
}

impl Session {
    pub fn new(info: Arc<ClientInfo>, authenticated: bool) -> Self {
        Session {
            id: info.id,
            info,
            db: 0,
            proto: Protocol::Resp2,
            authenticated,
            multi: None,
            watch: None,
            subs: None,
            tracking: SessionTracking::default(),
        }
    }

    /// Whether this client has subscriptions (RESP2 receives redirected invalidations
    /// only then).
    pub fn is_subscribed(&self) -> bool {
        self.subs.as_ref().is_some_and(|s| s.count() > 0)
    }

    /// Appends every out-of-band message queued for this client (its outbox, in
    /// `info`) to `out`, in this client's protocol. Called between replies only, so a
    /// push never lands inside a reply.
    #[inline]
    pub fn drain_outbox(&self, out: &mut Vec<u8>) {
        if !self.info.outbox.has_queued() {
            return;
        }
        let subscribed = self.is_subscribed();
        while let Some(push) = self.info.outbox.try_recv() {
            crate::outbox::encode(&push, self.proto, subscribed, out);
        }
    }

    /// In RESP2, a client with subscriptions may only run the pub/sub commands.
    pub fn in_pubsub_context(&self) -> bool {
        self.proto == Protocol::Resp2 && self.subs.as_ref().is_some_and(|s| s.count() > 0)
    }

    pub fn select(&mut self, db: usize) {
        self.db = db;
        self.info.db.store(db, Ordering::Relaxed);
    }

    pub fn set_proto(&mut self, proto: Protocol) {
        self.proto = proto;
        self.info.resp.store(if proto == Protocol::Resp3 { 3 } else { 2 }, Ordering::Relaxed);
    }
}
