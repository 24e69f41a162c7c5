//! `mini demo`: run one exercise's scenario and print its report.
//!
//! ```text
//! mini demo --list                         one exercise per line: name, then what it shows
//! mini demo token-bucket                   against minikv, served in this process
//! mini demo token-bucket --kv redis://127.0.0.1:6379     against a real Redis
//! mini demo retry-dlq --queue beanstalk://127.0.0.1:11300 against a real beanstalkd
//! ```
//!
//! Everything is in the `exercises` crate; this file parses flags and maps the report's
//! verdict to the exit code: 0 when every check held, 1 when one failed, 2 when the
//! scenario could not run.

use clap::Args;
use exercises::framework::{self, DemoOptions, Scale};

#[derive(Args)]
#[command(after_help = "Run `mini demo --list` for the catalogue; docs/exercises/README.md explains each one.")]
pub struct DemoArgs {
    /// The exercise to run (see --list).
    #[arg(required_unless_present = "list")]
    name: Option<String>,
    /// Print the catalogue: one exercise per line, its name and a one-line description.
    #[arg(long)]
    list: bool,
    /// Use this KV store instead of an in-process minikv (redis://host:port: minikv, `mini up`, or a real Redis).
    #[arg(long, value_name = "URL")]
    kv: Option<String>,
    /// Use this queue instead of an in-process miniqueue (beanstalk://host:port: miniqueue or a real beanstalkd).
    #[arg(long, value_name = "URL")]
    queue: Option<String>,
    /// Seed for every random choice the scenario makes (jitter, fault points), to repeat a run.
    #[arg(long, default_value_t = framework::DEFAULT_SEED)]
    seed: u64,
    /// The same scenario at a smaller size (what the tests run): a few seconds instead of up to 30.
    #[arg(long)]
    quick: bool,
}

pub fn run(args: DemoArgs) -> i32 {
    if args.list {
        let catalogue: Vec<_> = exercises::catalogue().collect();
        let width = catalogue.iter().map(|e| e.name.len()).max().unwrap_or(0);
        for exercise in catalogue {
            println!("{:<width$}  {}", exercise.name, exercise.summary);
        }
        return 0;
    }
    let Some(name) = args.name else {
        eprintln!("mini demo: name an exercise, or --list to see them");
        return 2;
    };
    let Some(exercise) = exercises::find(&name) else {
        let names: Vec<&str> = exercises::catalogue().map(|e| e.name).collect();
        eprintln!("mini demo: no exercise called {name:?}; the exercises are: {}", names.join(", "));
        return 2;
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("mini demo: can't start the runtime: {e}");
            return 2;
        }
    };
    let options = DemoOptions {
        kv: args.kv,
        queue: args.queue,
        seed: Some(args.seed),
        scale: if args.quick { Scale::Quick } else { Scale::Full },
    };
    match runtime.block_on(framework::run(exercise, options)) {
        Ok(report) => {
            print!("{report}");
            if report.passed() {
                0
            } else {
                1
            }
        }
        Err(e) => {
            eprintln!("mini demo {name}: {e}");
            2
        }
    }
}
