//! `mini`: run the mini systems on your machine, and measure them against the real ones.
//!
//! ```text
//! mini up                      start every system locally, until Ctrl-C
//! mini log topics|produce|consume|groups
//!                              use a Kafka broker (minilog or a real one) from the shell
//! mini bench kv                minikv vs redis-server 7.0, side by side
//! mini bench log               minilog vs Redis Streams and NATS JetStream
//! mini queue put|work|stats|dlq|replay
//!                              use a beanstalk server (miniqueue or beanstalkd) from the shell
//! mini bench queue             miniqueue vs beanstalkd 1.12
//! mini bench cache             minicache's hit ratios vs moka, quick_cache, LRU and optimal
//! mini bench raft              a 3-node miniraft cluster at 1, 16 and 256 proposers
//! mini sim raft --seeds N      miniraft under deterministic simulation with injected faults
//! mini demo --list | NAME      the backend exercises (rate limiting, idempotency, ...) as demos
//! ```
//!
//! This crate only parses the command line and calls the libraries (`minikv`,
//! `minilog`, `miniqueue`, `miniraft`, `minibench`, `exercises`): no system logic lives here, so what you read in a system's crate is
//! all there is to it.

mod bench;
mod demo;
mod log;
mod queue;
mod sim;
mod up;

use clap::{Parser, Subcommand};

// The same counting allocator as the `minikv` binary, so that `used_memory` and
// `maxmemory` work for the minikv that `mini up` runs in this process.
#[global_allocator]
static ALLOC: minikv::memory::CountingAlloc = minikv::memory::CountingAlloc;

#[derive(Parser)]
#[command(name = "mini", version, about = "Run the mini systems locally, and benchmark them against the real ones.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the systems locally (data under ./.mini/) until Ctrl-C.
    Up(up::UpArgs),
    /// Topics, produce, consume and groups on a Kafka broker (minilog or Kafka).
    Log(log::LogArgs),
    /// Put, work, stats and the dead-letter queue on a beanstalk server (miniqueue or beanstalkd).
    Queue(queue::QueueArgs),
    /// Side-by-side benchmarks against the real systems.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Deterministic simulations with injected faults (mini sim raft).
    #[command(subcommand)]
    Sim(sim::SimCommand),
    /// Run a backend exercise's scenario (rate limiting, idempotency, ...) and print its report.
    Demo(demo::DemoArgs),
}

fn main() {
    minikv::memory::mark_installed();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let code = match cli.command {
        Command::Up(args) => up::run(args),
        Command::Log(args) => log::run(args),
        Command::Queue(args) => queue::run(args),
        Command::Bench(command) => bench::run(command),
        Command::Sim(command) => sim::run(command),
        Command::Demo(args) => demo::run(args),
    };
    std::process::exit(code);
}
