//! `Session`: the state of one client connection that commands read and change.
//!
//! Owned by the connection task, never shared: the selected database, the protocol
//! version, authentication, a transaction being queued, watched keys and pub/sub
//! subscriptions. What other connections may see of a client lives in
//! [`crate::clients::ClientInfo`].

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::clients::ClientInfo;
use crate::pubsub::Subscriber;
use crate::resp::Protocol;
use crate::transaction::{MultiState, WatchState};

/// A client's subscriptions, and the queue its messages arrive on.
pub struct Subscriptions {
    pub subscriber: Arc<Subscriber>,
    /// Messages published to this client, drained by the connection loop.
    pub rx: tokio::sync::mpsc::UnboundedReceiver<crate::pubsub::Message>,
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
