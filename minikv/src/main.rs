//! The `minikv` server binary: flags like redis-server's, then `minikv::start`.
//!
//! ```text
//! minikv [/path/to/minikv.conf] [--port 7379] [--appendonly yes] [--<any parameter> <value>...]
//! ```

use minikv::config::Config;

#[global_allocator]
static ALLOC: minikv::memory::CountingAlloc = minikv::memory::CountingAlloc;

const USAGE: &str = "Usage: minikv [/path/to/minikv.conf] [--<parameter> <value>...]

Like redis-server, every configuration parameter is also a flag:
  --port 7379                 TCP port (0 picks a free one)
  --bind 127.0.0.1            addresses to listen on (space separated)
  --dir .                     working directory for the AOF
  --appendonly no|yes         log every write to the AOF
  --appendfsync everysec      always | everysec | no (see docs/minikv.md, Durability)
  --maxmemory 0               memory limit, e.g. 100mb (0 = none)
  --maxmemory-policy noeviction
                              noeviction allkeys-lru allkeys-lfu allkeys-random
                              volatile-lru volatile-lfu volatile-random volatile-ttl
  --requirepass <password>    require AUTH
  --databases 16              number of databases
  --hz 10                     background task frequency (active expiry)
  --maxclients 10000          maximum connected clients
  --io-threads <cores>        worker threads
  --admin-port <port+10000>   HTTP /metrics, /healthz, /readyz (0 disables)
The config file uses redis.conf syntax for the same parameters.";

fn parse_args(config: &Config) -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    if let Some(first) = args.first() {
        if first == "-h" || first == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        if first == "-v" || first == "--version" {
            println!("minikv {} (Redis {} compatible)", env!("CARGO_PKG_VERSION"), minikv::REDIS_VERSION);
            std::process::exit(0);
        }
        if !first.starts_with("--") {
            config.load_file(std::path::Path::new(first))?;
            i = 1;
        }
    }
    while i < args.len() {
        let Some(name) = args[i].strip_prefix("--") else {
            return Err(format!("unexpected argument '{}'; flags look like --port 7379 (see --help)", args[i]));
        };
        let mut values = Vec::new();
        i += 1;
        while i < args.len() && !args[i].starts_with("--") {
            values.push(args[i].clone());
            i += 1;
        }
        config.set(name, &values.join(" "), false).map_err(|e| format!("--{name}: {e}"))?;
    }
    Ok(())
}

fn main() {
    minikv::memory::mark_installed();
    let config = Config::new();
    if let Err(e) = parse_args(&config) {
        eprintln!("*** FATAL CONFIG ERROR *** {e}");
        std::process::exit(1);
    }
    let settings = config.settings();
    let filter = match settings.loglevel.as_str() {
        "debug" => "debug",
        "verbose" => "info",
        "notice" => "info",
        "warning" => "warn",
        _ => "error",
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| filter.into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime =
        match tokio::runtime::Builder::new_multi_thread().worker_threads(settings.io_threads).enable_all().build() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("can't start the runtime: {e}");
                std::process::exit(1);
            }
        };
    let result = runtime.block_on(async {
        let running = minikv::start(config).await?;
        running.server.shutdown.trigger_on_signals().map_err(|e| e.to_string())?;
        running.wait().await;
        Ok::<(), String>(())
    });
    if let Err(e) = result {
        eprintln!("minikv: {e}");
        std::process::exit(1);
    }
}
