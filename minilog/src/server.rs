//! The TCP server: accepts Kafka clients, reads frames, runs handlers, writes answers;
//! and the background tasks (group timers, retention, the interval flusher, the admin
//! endpoint).
//!
//! Requests on one connection are handled one at a time, in order, as Kafka does (it
//! stops reading a connection while a request is in flight), so responses can never
//! be reordered. Pipelining still pays: while a request is handled, the next ones wait
//! in the socket buffer, and responses are flushed only when no request is waiting.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use minicore::lifecycle::{ConnectionLimit, Service, Shutdown, Slot};
use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};

use crate::broker::Broker;
use crate::config::{BrokerConfig, FlushPolicy};
use crate::group::{Coordinator, OffsetStore};
use crate::metrics::Metrics;
use crate::protocol::frame::read_frame;
use crate::protocol::{handle_frame, Outcome};

/// Everything a request handler can reach.
pub struct Server {
    pub broker: Arc<Broker>,
    pub groups: Coordinator,
    pub offsets: OffsetStore,
    pub shutdown: Shutdown,
}

impl Server {
    /// Refreshes the gauges that are read from live state.
    fn refresh_gauges(&self) {
        let metrics = &self.broker.metrics;
        for topic in self.broker.topics() {
            for p in &topic.partitions {
                let labels = [&*topic.name, &p.index.to_string()];
                let log = p.log.lock();
                metrics.log_end_offset.with_label_values(&labels).set(log.log_end_offset());
                metrics.log_start_offset.with_label_values(&labels).set(log.log_start_offset());
                metrics.log_size_bytes.with_label_values(&labels).set(log.size_bytes() as i64);
            }
        }
        for (group, topic, partition, committed) in self.offsets.snapshot() {
            if let Some(p) = self.broker.partition(&topic, partition) {
                let lag = (p.high_watermark() - committed).max(0);
                metrics.group_lag.with_label_values(&[&group, &topic, &partition.to_string()]).set(lag);
            }
        }
    }
}

/// A started broker.
pub struct Running {
    pub server: Arc<Server>,
    /// The address clients connect to (resolves `--listen 127.0.0.1:0`).
    pub addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Waits for shutdown to be triggered, then for connections to drain and the final
    /// fsync.
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Opens the data directory (recovering every partition), binds, and starts serving.
pub async fn start(config: BrokerConfig) -> Result<Running, String> {
    let listener =
        TcpListener::bind(config.listen).await.map_err(|e| format!("can't listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let advertised = match &config.advertised_listener {
        Some(text) => parse_host_port(text)?,
        None => (addr.ip().to_string(), addr.port() as i32),
    };
    let metrics = Metrics::new();
    let admin = minicore::admin::Admin::new(metrics.registry.clone());
    let ready = admin.ready.clone();
    let shutdown = Shutdown::new();
    let admin_port = match config.admin_port {
        Some(0) => None,
        Some(port) => Some(port),
        None if addr.port() == 0 || config.listen.port() == 0 => Some(0),
        None => Some(addr.port().saturating_add(10_000)),
    };
    let admin_listener = match admin_port {
        Some(port) => Some(
            TcpListener::bind((addr.ip(), port))
                .await
                .map_err(|e| format!("can't bind the admin endpoint {}:{port}: {e} (set --admin-port)", addr.ip()))?,
        ),
        None => None,
    };
    let admin_addr = admin_listener.as_ref().and_then(|l| l.local_addr().ok());

    let started = std::time::Instant::now();
    let broker_config = config.clone();
    let broker = tokio::task::spawn_blocking(move || Broker::open(broker_config, advertised, metrics))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("can't open {}: {e}", config.dir.display()))?;
    let broker = Arc::new(broker);
    let offsets = OffsetStore::load(&broker).map_err(|e| format!("can't load committed offsets: {e}"))?;
    tracing::info!(
        dir = %config.dir.display(), topics = broker.topics().len(), elapsed_ms = started.elapsed().as_millis() as u64,
        "opened the log directory"
    );
    let server = Arc::new(Server {
        broker: broker.clone(),
        groups: Coordinator::new(Duration::from_millis(config.group_initial_rebalance_delay_ms)),
        offsets,
        shutdown: shutdown.clone(),
    });

    if let Some(listener) = admin_listener {
        let mut admin = admin;
        let gauges = server.clone();
        admin.before_scrape = Some(Arc::new(move || gauges.refresh_gauges()));
        tokio::spawn(minicore::admin::serve(listener, admin, shutdown.clone()));
    }
    spawn_background(&server, &config);
    ready.store(true, Ordering::Release);
    tracing::info!(%addr, advertised = %format!("{}:{}", broker.advertised_host, broker.advertised_port),
        flush = %config.flush.promise(), "minilog is ready");

    let limit = ConnectionLimit::new(config.max_connections);
    let service = Arc::new(KafkaService { server: server.clone(), max_request_bytes: config.max_request_bytes });
    let done = server.clone();
    let task = tokio::spawn(async move {
        let left = minicore::lifecycle::serve(vec![listener], service, limit, shutdown, Default::default()).await;
        if left > 0 {
            tracing::warn!(connections = left, "shut down with connections still open");
        }
        done.broker.sync_all().await;
        tracing::info!("minilog synced its logs and is exiting");
    });
    Ok(Running { server, addr, admin_addr, task })
}

fn spawn_background(server: &Arc<Server>, config: &BrokerConfig) {
    let ticking = server.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = ticking.shutdown.wait() => break,
                _ = tick.tick() => ticking.groups.tick(tokio::time::Instant::now()),
            }
        }
    });
    let retaining = server.clone();
    let every = Duration::from_millis(config.retention_check_ms.max(10));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = retaining.shutdown.wait() => break,
                _ = tick.tick() => {
                    let broker = retaining.broker.clone();
                    let _ = tokio::task::spawn_blocking(move || broker.enforce_retention()).await;
                }
            }
        }
    });
    if let FlushPolicy::Interval(every) = config.flush {
        let flushing = server.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = flushing.shutdown.wait() => {}
                _ = flushing.broker.clone().run_interval_flusher(every) => {}
            }
        });
    }
}

/// `host:port` from `--advertised-listener`, with an optional `PLAINTEXT://` prefix.
fn parse_host_port(text: &str) -> Result<(String, i32), String> {
    let bare = text.strip_prefix("PLAINTEXT://").unwrap_or(text);
    let (host, port) =
        bare.rsplit_once(':').ok_or_else(|| format!("--advertised-listener '{text}': expected host:port"))?;
    let port: u16 = port.parse().map_err(|_| format!("--advertised-listener '{text}': bad port"))?;
    if host.is_empty() {
        return Err(format!("--advertised-listener '{text}': empty host"));
    }
    Ok((host.trim_matches(['[', ']']).to_string(), port as i32))
}

struct KafkaService {
    server: Arc<Server>,
    max_request_bytes: usize,
}

impl Service for KafkaService {
    async fn connection(self: Arc<Self>, stream: TcpStream, peer: SocketAddr, _slot: Slot) {
        let _ = stream.set_nodelay(true);
        let host = peer.ip().to_string();
        let (read, write) = stream.into_split();
        let mut reader = BufReader::with_capacity(64 * 1024, read);
        let mut writer = BufWriter::with_capacity(64 * 1024, write);
        let shutdown = self.server.shutdown.clone();
        loop {
            let frame = tokio::select! {
                _ = shutdown.wait() => break,
                frame = read_frame(&mut reader, self.max_request_bytes) => frame,
            };
            let frame = match frame {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "closing connection");
                    break;
                }
            };
            let outcome = tokio::select! {
                _ = shutdown.wait() => break,
                outcome = handle_frame(&self.server, &host, frame) => outcome,
            };
            match outcome {
                Outcome::Reply(bytes) => {
                    if writer.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                Outcome::NoReply => {}
                Outcome::Close(reason) => {
                    tracing::info!(%peer, reason, "closing connection");
                    break;
                }
            }
            if reader.buffer().is_empty() && writer.flush().await.is_err() {
                break;
            }
        }
        let _ = writer.flush().await;
    }

    async fn rejected(self: Arc<Self>, stream: TcpStream, peer: SocketAddr) {
        tracing::warn!(%peer, "connection limit reached; closing the new connection");
        drop(stream);
    }
}
