//! Background work that runs `hz` times a second: active expiry, automatic AOF
//! rewrite, the tracking table's size bound, and closing idle clients (Redis's
//! `serverCron`). Keys the expiry cycle removes are invalidated for tracking clients.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::expiry::{self, FastRand, Random, ROUNDS_PER_TIME_CHECK, SLOW_TIME_PERCENT};
use crate::keyspace::SHARDS;
use crate::server::Server;
use crate::tracking::Pending;

/// Runs until shutdown.
pub async fn run(server: Arc<Server>) {
    let mut cursor = 0usize;
    let mut last_second = Instant::now();
    loop {
        let hz = server.config.live.hz.load(Ordering::Relaxed).clamp(1, 500) as u64;
        let tick = Duration::from_micros(1_000_000 / hz);
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = server.shutdown.wait() => return,
        }
        if server.config.live.active_expire.load(Ordering::Relaxed) && !server.loading.load(Ordering::Relaxed) {
            let budget = tick * SLOW_TIME_PERCENT as u32 / 100;
            let s = server.clone();
            // The cycle takes shard locks; keep it off the async workers' critical path.
            cursor =
                tokio::task::spawn_blocking(move || active_expire_cycle(&s, cursor, budget)).await.unwrap_or(cursor);
        }
        if let Some(aof) = server.aof() {
            aof.maybe_auto_rewrite(&server);
        }
        // A CONFIG SET may have lowered tracking-table-max-keys below the table's size;
        // each call evicts a bounded number of keys.
        if server.keyspace.tracking.over_limit(server.config.live.tracking_table_max_keys.load(Ordering::Relaxed)) {
            let s = server.clone();
            let _ = tokio::task::spawn_blocking(move || crate::tracking::enforce_limit(&s)).await;
        }
        if last_second.elapsed() >= Duration::from_secs(1) {
            last_second = Instant::now();
            close_idle_clients(&server);
        }
    }
}

/// One slow expiry cycle: walks (shard, database) tables from `cursor`, running
/// sampling rounds on each until the time budget is spent. Returns where to resume.
pub fn active_expire_cycle(server: &Server, mut cursor: usize, budget: Duration) -> usize {
    let started = Instant::now();
    let databases = server.keyspace.databases();
    let tables = SHARDS * databases;
    let aof = server.aof();
    let mut rng = FastRand;
    let tracking = &server.keyspace.tracking;
    let mut changes = Pending::default();
    for _ in 0..tables {
        if started.elapsed() >= budget {
            break;
        }
        let (shard_idx, db) = (cursor % SHARDS, (cursor / SHARDS) % databases);
        cursor = (cursor + 1) % tables;
        let mut shard = server.keyspace.lock_shard(shard_idx);
        if shard.dbs[db].volatile_len() == 0 {
            continue;
        }
        let now = crate::server::unix_ms();
        let mut removed = Vec::new();
        let (round, _) =
            expiry::expire_table(&mut shard.dbs[db], now, &mut rng as &mut dyn Random, ROUNDS_PER_TIME_CHECK, |k| {
                removed.push(k)
            });
        if removed.is_empty() {
            continue;
        }
        shard.stats.expired_keys += round.expired as u64;
        let mut record = Vec::new();
        for key in &removed {
            shard.key_changed(db, key, tracking, &mut changes, 0);
            if aof.is_some() {
                if record.is_empty() {
                    record.extend_from_slice(&(db as u16).to_le_bytes());
                }
                crate::resp::encode_command([&b"DEL"[..], key].into_iter(), &mut record);
            }
        }
        // Logged while the shard is still locked, so the DELs take their place in order.
        if let (Some(aof), false) = (&aof, record.is_empty()) {
            if let Err(e) = aof.append(&record) {
                aof.mark_failed(&e);
            }
        }
        if let Some(expired) = changes.get_mut() {
            crate::tracking::deliver(server, &mut expired.invalidated, 0);
        }
    }
    if let Some(mut expired) = changes.take() {
        crate::tracking::broadcast(server, &mut expired.broadcast);
    }
    server.stats.expire_cycles.fetch_add(1, Ordering::Relaxed);
    server.stats.expire_cycle_time_us.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    cursor
}

/// Closes clients idle for longer than `timeout` seconds (0 disables), except
/// subscribers and blocked clients, as Redis does.
fn close_idle_clients(server: &Server) {
    let timeout = server.config.live.timeout_secs.load(Ordering::Relaxed);
    if timeout == 0 {
        return;
    }
    let now = crate::server::unix_ms();
    for c in server.clients.all() {
        let idle = now.saturating_sub(c.last_interaction_ms.load(Ordering::Relaxed));
        let subscribed = c.subscriptions.load(Ordering::Relaxed) + c.pattern_subscriptions.load(Ordering::Relaxed) > 0;
        if idle > timeout * 1000 && !subscribed && !c.blocked.load(Ordering::Relaxed) {
            tracing::debug!(client = c.id, "closing idle client");
            c.kill();
        }
    }
}
