//! minikv: a sharded, Redis-compatible key-value store.
//!
//! minikv speaks RESP2 and RESP3, so redis-cli, redis-benchmark, redis-py and the
//! `redis` crate work against it unchanged. Read `docs/minikv.md` for the tour; the
//! short version of a command's path:
//!
//! ```text
//!  socket ─> connection.rs ─> resp.rs (parse) ─> cmd/mod.rs (dispatch, lock shards)
//!         ─> cmd/<family>.rs (apply via keyspace::Keys) ─> aof.rs (log) ─> reply
//! ```
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> Result<(), String> {
//! let config = minikv::config::Config::new();
//! config.set("port", "0", false).map_err(|e| e.to_string())?;
//! let running = minikv::start(config).await?;
//! println!("try: redis-cli -p {} ping", running.addr.port());
//! running.shutdown();
//! running.wait().await;
//! # Ok(()) }
//! ```

pub mod aof;
pub mod blocking;
pub mod clients;
pub mod cmd;
pub mod config;
pub mod connection;
pub mod cron;
pub mod eviction;
pub mod expiry;
pub mod glob;
pub mod info;
pub mod keyspace;
pub mod memory;
pub mod metrics;
pub mod numeric;
pub mod outbox;
pub mod pubsub;
pub mod resp;
pub mod server;
pub mod session;
pub mod tracking;
pub mod transaction;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use config::Config;
use server::Server;

/// The Redis version minikv reports (HELLO, INFO): the version whose behaviour it
/// follows, so clients pick the right features.
pub const REDIS_VERSION: &str = "7.0.15";

/// A started server.
pub struct Running {
    /// Where clients connect (the first bind address).
    pub addr: SocketAddr,
    /// The admin HTTP endpoint, if enabled.
    pub admin_addr: Option<SocketAddr>,
    pub server: Arc<Server>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Starts a graceful shutdown (as SIGTERM or SHUTDOWN would).
    pub fn shutdown(&self) {
        self.server.shutdown.trigger();
    }

    /// Waits until the server has drained its clients and synced the AOF.
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Binds the listeners, loads the AOF, and starts serving in the background.
/// Must be called inside a tokio runtime.
pub async fn start(config: Config) -> Result<Running, String> {
    let settings = config.settings();
    let server = Server::new(config);
    let mut listeners = Vec::new();
    for addr in &settings.bind {
        let listener = tokio::net::TcpListener::bind((addr.as_str(), settings.port))
            .await
            .map_err(|e| format!("can't bind {addr}:{}: {e}", settings.port))?;
        listeners.push(listener);
    }
    let addr = listeners.first().ok_or("no bind address configured")?.local_addr().map_err(|e| e.to_string())?;
    server.port.store(addr.port() as u64, Ordering::Relaxed);

    let registry = prometheus::Registry::new();
    let gather_server = server.clone();
    registry
        .register(Box::new(metrics::KvCollector::new(Arc::new(move || info::metric_families(&gather_server)))))
        .map_err(|e| e.to_string())?;
    let admin = minicore::admin::Admin::new(registry);
    let ready = admin.ready.clone();
    let admin_addr = match server.config.admin_port() {
        Some(port) => {
            let port = if settings.port == 0 { 0 } else { port };
            let bind = settings.bind.first().cloned().unwrap_or_else(|| "127.0.0.1".into());
            let listener = tokio::net::TcpListener::bind((bind.as_str(), port))
                .await
                .map_err(|e| format!("can't bind the admin endpoint {bind}:{port}: {e} (set --admin-port)"))?;
            let local = listener.local_addr().map_err(|e| e.to_string())?;
            tokio::spawn(minicore::admin::serve(listener, admin, server.shutdown.clone()));
            Some(local)
        }
        None => None,
    };

    if settings.appendonly {
        let dir = settings.dir.join(&settings.appenddirname);
        let (aof, truncated) = aof::Aof::open(&dir, settings.appendfsync, settings.aof_load_corrupt)?;
        if let Some(t) = truncated {
            tracing::warn!("AOF: {t}");
        }
        server.loading.store(true, Ordering::Release);
        let report = aof.load(&server)?;
        server.loading.store(false, Ordering::Release);
        tracing::info!(
            base_records = report.base_records,
            log_records = report.log_records,
            commands = report.commands,
            elapsed_ms = report.elapsed.as_millis() as u64,
            "AOF loaded"
        );
        if report.errors > 0 {
            tracing::warn!(errors = report.errors, first = ?report.first_error, "some AOF commands failed on replay");
        }
        if server.aof.set(Arc::new(aof)).is_err() {
            return Err("the AOF was opened twice".to_string());
        }
    }
    ready.store(true, Ordering::Release);

    tokio::spawn(cron::run(server.clone()));
    let workers =
        Arc::new(connection::Workers::start(settings.io_threads).map_err(|e| format!("can't start I/O workers: {e}"))?);
    let service = Arc::new(connection::KvService { server: server.clone(), workers: workers.clone() });
    let limit = server.limit.clone();
    let shutdown = server.shutdown.clone();
    let done = server.clone();
    let task = tokio::spawn(async move {
        let left = minicore::lifecycle::serve(listeners, service, limit, shutdown, Default::default()).await;
        if left > 0 {
            tracing::warn!(connections = left, "shut down with connections still open");
        }
        let stopping = workers.clone();
        let _ = tokio::task::spawn_blocking(move || stopping.stop()).await;
        if let Some(aof) = done.aof() {
            match aof.sync_all() {
                Ok(()) => tracing::info!("AOF synced"),
                Err(e) => tracing::error!(error = %e, "AOF sync at shutdown failed"),
            }
        }
        tracing::info!("minikv is now ready to exit, bye bye...");
    });
    tracing::info!(%addr, admin = ?admin_addr, "ready to accept connections");
    Ok(Running { addr, admin_addr, server, task })
}
