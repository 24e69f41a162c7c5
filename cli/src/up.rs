//! `mini up`: every system, in this process, with defaults that work out of the box.
//!
//! Each system is a [`Service`]: a name and a `start` function that returns how to
//! reach it and how to stop it. [`SERVICES`] lists them; adding a system to `mini up`
//! is adding one entry. `mini up` starts them in order, prints their endpoints, waits
//! for Ctrl-C or SIGTERM, then stops them all gracefully (each one's own shutdown:
//! minikv drains its clients and syncs its AOF, minilog drains and fsyncs its
//! partitions) and exits 0.
//!
//! Data lives under `--dir` (default `./.mini/`), one directory per system, so a
//! second `mini up` finds the data of the first.
//!
//! Left out: running systems as separate processes, and choosing which to start.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;

#[derive(clap::Args, Debug, Clone)]
pub struct UpArgs {
    /// Data directory; each system keeps its data in a subdirectory (minikv: DIR/minikv).
    #[arg(long, value_name = "DIR", default_value = ".mini")]
    pub dir: PathBuf,
    /// minikv's Redis port; its admin HTTP endpoint (/metrics, /healthz, /readyz) listens
    /// on this port + 10000.
    #[arg(long, default_value_t = 7379)]
    pub port: u16,
    /// minikv's admin HTTP port [default: --port + 10000]; 0 turns the endpoint off.
    #[arg(long, value_name = "PORT")]
    pub admin_port: Option<u16>,
    /// minilog's Kafka port.
    #[arg(long, default_value_t = 9092)]
    pub kafka_port: u16,
    /// minilog's admin HTTP port [default: --kafka-port + 10000]; 0 turns it off.
    #[arg(long, value_name = "PORT")]
    pub kafka_admin_port: Option<u16>,
    /// miniqueue's beanstalk port.
    #[arg(long, default_value_t = 11300)]
    pub queue_port: u16,
    /// miniqueue's admin HTTP port (/metrics, /healthz, /dlq) [default: --queue-port + 10000];
    /// 0 turns it off.
    #[arg(long, value_name = "PORT")]
    pub queue_admin_port: Option<u16>,
}

/// A system `mini up` runs.
struct Service {
    name: &'static str,
    start: fn(&UpArgs) -> Starting,
}

/// A service starting up (binding ports, loading its data).
type Starting = Pin<Box<dyn Future<Output = Result<Started, String>> + Send>>;

/// A running service: what to tell the user, and how to stop it.
struct Started {
    /// `(what, where)`, e.g. `("redis", "redis://127.0.0.1:7379")`.
    endpoints: Vec<(&'static str, String)>,
    /// Further lines for the user: the durability promise, a command to try.
    notes: Vec<String>,
    /// Asks the service to shut down gracefully. Idempotent.
    stop: Box<dyn Fn() + Send>,
    /// Completes once the service has stopped: after `stop`, or on its own (a client
    /// sent SHUTDOWN).
    stopped: tokio::task::JoinHandle<()>,
}

impl Started {
    /// A service stopped through its `Shutdown`, finished when `wait` completes.
    fn new(
        endpoints: Vec<(&'static str, String)>,
        notes: Vec<String>,
        shutdown: minicore::lifecycle::Shutdown,
        wait: impl Future<Output = ()> + Send + 'static,
    ) -> Started {
        Started { endpoints, notes, stop: Box::new(move || shutdown.trigger()), stopped: tokio::spawn(wait) }
    }
}

/// Every system `mini up` starts, in start order.
const SERVICES: &[Service] = &[
    Service { name: "minikv", start: start_minikv },
    Service { name: "minilog", start: start_minilog },
    Service { name: "miniqueue", start: start_miniqueue },
];

/// minikv with the embedded defaults: port 7379 (admin 17379), AOF on with
/// `appendfsync everysec`, data in `<dir>/minikv`.
fn start_minikv(args: &UpArgs) -> Starting {
    let dir = args.dir.join("minikv");
    let port = args.port;
    let admin_port = args.admin_port;
    Box::pin(async move {
        std::fs::create_dir_all(&dir).map_err(|e| format!("can't create {}: {e}", dir.display()))?;
        let config = minikv::config::Config::new();
        let mut settings = vec![
            ("port", port.to_string()),
            ("dir", dir.display().to_string()),
            ("appendonly", "yes".to_string()),
            ("appendfsync", "everysec".to_string()),
        ];
        if let Some(admin) = admin_port {
            settings.push(("admin-port", admin.to_string()));
        }
        for (name, value) in settings {
            config.set(name, &value, false).map_err(|e| format!("{name} {value}: {e}"))?;
        }
        let running = minikv::start(config).await?;
        let mut endpoints = vec![("redis", format!("redis://{}", running.addr))];
        if let Some(admin) = running.admin_addr {
            for path in ["/metrics", "/healthz", "/readyz"] {
                endpoints.push(("admin", http_url(admin, path)));
            }
        }
        let notes = vec![
            format!(
                "durability: appendonly yes, appendfsync everysec: a write reaches the AOF in {} before \
                 its reply and is fsynced within a second, so a killed process loses nothing and a power \
                 loss at most about the last second of acknowledged writes",
                shown(&dir.join("appendonlydir"))
            ),
            format!("try: redis-cli -p {} set hello world", running.addr.port()),
        ];
        Ok(Started::new(endpoints, notes, running.server.shutdown.clone(), running.wait()))
    })
}

/// minilog with the embedded defaults: port 9092 (admin 19092), one partition per
/// auto-created topic, `--flush os` (Kafka's default), data in `<dir>/minilog`.
fn start_minilog(args: &UpArgs) -> Starting {
    let dir = args.dir.join("minilog");
    let listen = SocketAddr::from(([127, 0, 0, 1], args.kafka_port));
    let admin_port = args.kafka_admin_port;
    Box::pin(async move {
        std::fs::create_dir_all(&dir).map_err(|e| format!("can't create {}: {e}", dir.display()))?;
        let mut config = minilog::config::BrokerConfig::with_dir(&dir, listen);
        config.admin_port = admin_port;
        let promise = config.flush.promise();
        let running = minilog::start(config).await?;
        let mut endpoints = vec![("kafka", running.addr.to_string())];
        if let Some(admin) = running.admin_addr {
            endpoints.push(("admin", http_url(admin, "/metrics")));
        }
        let notes = vec![
            format!("durability: --flush os: {promise}; segments in {}", shown(&dir)),
            format!("try: mini log -b {0} produce demo hello && kcat -b {0} -C -t demo -e", running.addr),
        ];
        Ok(Started::new(endpoints, notes, running.server.shutdown.clone(), running.wait()))
    })
}

/// miniqueue with beanstalkd's defaults for a durable queue: port 11300 (admin 21300),
/// a write-ahead log in `<dir>/miniqueue` fsynced at most every 50 ms (`-b DIR`, `-f` left
/// at its default).
fn start_miniqueue(args: &UpArgs) -> Starting {
    let dir = args.dir.join("miniqueue");
    let listen = SocketAddr::from(([127, 0, 0, 1], args.queue_port));
    let admin_port = match args.queue_admin_port {
        Some(0) => None,
        Some(port) => Some(port),
        None => args.queue_port.checked_add(10000),
    };
    Box::pin(async move {
        std::fs::create_dir_all(&dir).map_err(|e| format!("can't create {}: {e}", dir.display()))?;
        let mut config = miniqueue::config::Config::in_memory(listen);
        config.wal_dir = Some(dir.clone());
        config.admin_port = admin_port;
        let promise = config.durability();
        let running = miniqueue::start(config).await?;
        let mut endpoints = vec![("queue", format!("beanstalk://{}", running.addr))];
        if let Some(admin) = running.admin_addr {
            endpoints.push(("admin", http_url(admin, "/metrics")));
            endpoints.push(("dlq", http_url(admin, "/dlq")));
        }
        let notes = vec![
            format!("durability: {promise}; write-ahead log in {}", shown(&dir)),
            format!("try: mini queue --addr {0} put hello && mini queue --addr {0} work --count 1", running.addr),
        ];
        Ok(Started::new(endpoints, notes, running.shutdown.clone(), running.wait()))
    })
}

fn http_url(addr: SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

/// A path as the user should see it: absolute when it can be resolved.
fn shown(path: &Path) -> String {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()).display().to_string()
}

/// Runs `mini up`; returns the process exit code.
pub fn run(args: UpArgs) -> i32 {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mini up: can't start the runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("mini up: {e}");
            1
        }
    }
}

async fn serve(args: UpArgs) -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};
    // Listen before starting anything, so that a Ctrl-C during start-up is not lost.
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut terminate = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;

    let mut running: Vec<(&'static str, Started)> = Vec::new();
    for service in SERVICES {
        match (service.start)(&args).await {
            Ok(started) => running.push((service.name, started)),
            Err(e) => {
                stop_all(running).await;
                return Err(format!("{} did not start: {e}", service.name));
            }
        }
    }

    println!();
    for (name, started) in &running {
        println!("{name}");
        for (what, url) in &started.endpoints {
            println!("  {what:<6} {url}");
        }
        for note in &started.notes {
            println!("  {note}");
        }
        println!();
    }
    println!("data in {}; Ctrl-C stops everything", shown(&args.dir));

    // Wait for a signal, or for any service to stop on its own (SHUTDOWN).
    let (finished_tx, mut finished_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut stops = Vec::new();
    let mut waits = Vec::new();
    for (name, started) in running {
        stops.push(started.stop);
        let tx = finished_tx.clone();
        let stopped = started.stopped;
        waits.push(tokio::spawn(async move {
            let _ = stopped.await;
            let _ = tx.send(name);
        }));
    }
    drop(finished_tx);
    tokio::select! {
        _ = interrupt.recv() => tracing::info!("Ctrl-C: stopping"),
        _ = terminate.recv() => tracing::info!("SIGTERM: stopping"),
        Some(name) = finished_rx.recv() => tracing::info!("{name} stopped; stopping the rest"),
    }
    for stop in stops.iter().rev() {
        stop();
    }
    for wait in waits {
        let _ = wait.await;
    }
    println!("stopped");
    Ok(())
}

/// Stops services that did start when a later one failed to.
async fn stop_all(running: Vec<(&'static str, Started)>) {
    for (_, started) in running.into_iter().rev() {
        (started.stop)();
        let _ = started.stopped.await;
    }
}
