//! `mini bench ...`: the side-by-side benchmarks. The harness is `minibench`; this
//! module turns flags into its options and its report into output.

use std::path::PathBuf;

use minibench::{kv, report, BenchError};

#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// minikv vs redis-server 7.0 with redis-benchmark, persistence off and AOF everysec,
    /// -P 1 and -P 16, plus memory for 1M keys. Needs redis-server, redis-benchmark and
    /// redis-cli on PATH and the minikv binary next to `mini` (or MINIKV_BIN).
    Kv(KvArgs),
}

#[derive(clap::Args, Debug)]
pub struct KvArgs {
    /// Print the results as JSON on stdout instead of markdown tables.
    #[arg(long)]
    json: bool,
    /// Requests per test at -P 1; -P 16 runs ten times as many [default: 500000, or
    /// 2000 with --quick].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    requests: Option<u64>,
    /// Rounds per server; each test reports the median [default: 3, or 1 with --quick].
    #[arg(long, value_name = "R", value_parser = clap::value_parser!(u64).range(1..=100))]
    rounds: Option<u64>,
    /// redis-benchmark client threads (--threads T), 2 as the benchmark is specified.
    /// With --threads, redis-benchmark 7.0 rounds each test's duration up to a
    /// multiple of 250 ms, so short runs are coarse; 1 runs its classic
    /// single-threaded client, whose timing is exact.
    #[arg(long, value_name = "T", default_value_t = kv::CLIENT_THREADS, value_parser = clap::value_parser!(u32).range(1..=64))]
    client_threads: u32,
    /// A smoke test: tiny loads, one round, 20000 keys for the memory test.
    #[arg(long)]
    quick: bool,
    /// Also write the markdown tables to FILE.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// Runs a benchmark; returns the process exit code.
pub fn run(command: BenchCommand) -> i32 {
    match command {
        BenchCommand::Kv(args) => match bench_kv(&args) {
            Ok(()) => 0,
            Err(BenchError::Interrupted) => {
                eprintln!("mini bench kv: {}", BenchError::Interrupted);
                130
            }
            Err(e) => {
                eprintln!("mini bench kv: {e}");
                1
            }
        },
    }
}

fn options(args: &KvArgs) -> kv::Options {
    let mut options = if args.quick { kv::Options::quick() } else { kv::Options::full() };
    if let Some(n) = args.requests {
        options.requests_p1 = n;
        options.requests_p16 = n.saturating_mul(10);
    }
    if let Some(r) = args.rounds {
        options.rounds = r as usize;
    }
    options.client_threads = args.client_threads;
    options
}

fn bench_kv(args: &KvArgs) -> Result<(), BenchError> {
    let report = kv::run(&options(args))?;
    let markdown = report::render_markdown(&report);
    if let Some(path) = &args.out {
        std::fs::write(path, &markdown).map_err(BenchError::io(format!("can't write {}", path.display())))?;
        eprintln!("wrote {}", path.display());
    }
    if args.json {
        let json = serde_json::to_string_pretty(&report)
            .map_err(|e| BenchError::Io { context: "can't encode the report".into(), source: e.into() })?;
        println!("{json}");
    } else {
        println!("{markdown}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(subcommand)]
        command: BenchCommand,
    }

    fn parse(line: &[&str]) -> KvArgs {
        let argv = std::iter::once("bench").chain(line.iter().copied());
        match Wrapper::try_parse_from(argv).map(|w| w.command) {
            Ok(BenchCommand::Kv(args)) => args,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn defaults_are_the_full_benchmark() {
        let o = options(&parse(&["kv"]));
        assert_eq!((o.requests_p1, o.requests_p16, o.rounds, o.memory_keys), (500_000, 5_000_000, 3, 1_000_000));
        assert_eq!(o.client_threads, 2);
        assert_eq!(options(&parse(&["kv", "--client-threads", "1"])).client_threads, 1);
    }

    #[test]
    fn requests_scale_the_pipelined_run_and_quick_can_be_overridden() {
        let o = options(&parse(&["kv", "--requests", "5000", "--rounds", "2"]));
        assert_eq!((o.requests_p1, o.requests_p16, o.rounds), (5000, 50_000, 2));
        let o = options(&parse(&["kv", "--quick", "--rounds", "2"]));
        assert_eq!((o.rounds, o.requests_p1), (2, kv::Options::quick().requests_p1));
    }

    #[test]
    fn zero_rounds_or_requests_are_refused() {
        let refused =
            |line: &[&str]| Wrapper::try_parse_from(std::iter::once("bench").chain(line.iter().copied())).is_err();
        assert!(refused(&["kv", "--rounds", "0"]));
        assert!(refused(&["kv", "--requests", "0"]));
        assert!(refused(&["kv", "--client-threads", "0"]));
    }
}
