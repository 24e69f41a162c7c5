//! The `minilog` broker binary: flags (see `minilog --help`), then [`minilog::start`].

use clap::Parser;
use minilog::config::BrokerConfig;

/// The system allocator, with huge requests mapped lazily: a malformed frame can make
/// the Kafka codec ask for a vast capacity, which must not abort the broker (see
/// `minicore::alloc`).
#[global_allocator]
static ALLOC: minicore::alloc::ReserveHuge<std::alloc::System> = minicore::alloc::ReserveHuge(std::alloc::System);

fn main() {
    let config = BrokerConfig::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = config.threads {
        runtime.worker_threads(threads.max(1));
    }
    let runtime = match runtime.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("minilog: can't start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(async {
        let running = minilog::start(config).await?;
        running.server.shutdown.trigger_on_signals().map_err(|e| e.to_string())?;
        running.wait().await;
        Ok::<(), String>(())
    });
    if let Err(e) = result {
        eprintln!("minilog: {e}");
        std::process::exit(1);
    }
}
