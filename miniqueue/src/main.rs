//! The `miniqueue` binary: beanstalkd's flags (see `miniqueue -h`), then
//! [`miniqueue::start`].

use clap::Parser;
use miniqueue::config::Config;

fn main() {
    let config = Config::parse();
    let default_level = match config.verbose {
        0 => "info",
        1 => "miniqueue=debug,info",
        _ => "miniqueue=trace,info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_level.into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Err(e) = config.validate() {
        eprintln!("miniqueue: {e}");
        std::process::exit(2);
    }
    // One thread: tokio's current-thread runtime, the leanest loop (epoll, then the
    // ready tasks), as close as tokio gets to beanstalkd's event loop.
    let mut runtime = if config.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(config.threads);
        builder
    };
    let runtime = match runtime.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("miniqueue: can't start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(async {
        let running = miniqueue::start(config).await?;
        running.shutdown.trigger_on_signals().map_err(|e| e.to_string())?;
        running.wait().await;
        Ok::<(), String>(())
    });
    if let Err(e) = result {
        eprintln!("miniqueue: {e}");
        std::process::exit(1);
    }
}
