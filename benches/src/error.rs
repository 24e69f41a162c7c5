//! Why a benchmark could not run, each with what to do about it.
//!
//! A test that fails inside a run (an unknown command, a timeout) is not an error
//! here: it is a result, recorded in the report next to the tests that worked. These
//! are the failures that stop the whole run.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(
        "`{tool}` was not found on PATH; install Redis 7.0 (Debian/Ubuntu: apt-get install redis-server redis-tools)"
    )]
    ToolMissing { tool: &'static str },

    #[error("the minikv binary was not found at {}; build it with `cargo build --release -p minikv` (it must sit next to `mini`), or point MINIKV_BIN at it", .0.display())]
    MinikvMissing(PathBuf),

    #[error("{server} did not start: {reason}\n--- last lines of its log ---\n{log}")]
    ServerStart { server: String, reason: String, log: String },

    #[error("interrupted; every process the benchmark started has been stopped")]
    Interrupted,

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl BenchError {
    /// Wraps an I/O error with what the harness was doing at the time.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
        let context = context.into();
        move |source| BenchError::Io { context, source }
    }
}
