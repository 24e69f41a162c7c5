//! Child processes that cannot outlive the benchmark, and waits that cannot hang.
//!
//! Every process the harness starts (the two servers, redis-benchmark, redis-cli) is
//! a [`Guarded`]: dropping it kills that process, by its pid (`Child::kill`, SIGKILL),
//! and reaps it. Errors, Ctrl-C and panics all leave through a drop, so nothing is
//! left running. Two more lines of defence:
//!
//! - each child runs in its own process group, so a Ctrl-C in the terminal reaches
//!   only the harness, which then stops the children itself instead of having them
//!   die under it mid-measurement;
//! - each child asks the kernel to SIGKILL it when the harness dies
//!   (`PR_SET_PDEATHSIG`), which covers a `kill -9` of the harness, where no
//!   destructor runs.
//!
//! [`Guarded::wait_bounded`] is the only way the harness waits for a child: it polls,
//! so it notices both its deadline and a Ctrl-C.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::{interrupt, BenchError};

/// How often a wait looks at the child, the clock and the Ctrl-C flag. Short enough
/// that a Ctrl-C feels immediate, long enough to cost nothing.
const POLL: Duration = Duration::from_millis(20);

/// Why [`Guarded::wait_bounded`] gave up on a child (which it then killed).
#[derive(Debug)]
pub enum Stopped {
    TimedOut(Duration),
    Interrupted,
    /// The OS could not tell whether the child is alive (`waitpid` failed).
    Lost(String),
}

/// A child process that is killed when this value is dropped.
pub struct Guarded {
    child: Child,
    /// What the child is, for error messages ("minikv", "redis-benchmark").
    name: String,
    /// Already reaped: its pid may belong to someone else now, so never signal it.
    reaped: bool,
}

impl Guarded {
    /// Spawns `command` in its own process group, tied to the harness's life.
    pub fn spawn(name: &str, mut command: Command) -> Result<Guarded, BenchError> {
        command.process_group(0);
        // SAFETY: prctl is async-signal-safe, which is all `pre_exec` requires.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(BenchError::io(format!("can't start {name}")))?;
        Ok(Guarded { child, name: name.to_string(), reaped: false })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The exit status if the child has exited, without waiting.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.reaped {
            return None;
        }
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.reaped = true;
                Some(status)
            }
            _ => None,
        }
    }

    /// Waits for the child to exit, for at most `timeout`. On a timeout or a Ctrl-C
    /// the child is killed before this returns.
    pub fn wait_bounded(&mut self, timeout: Duration) -> Result<ExitStatus, Stopped> {
        let start = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.reaped = true;
                    return Ok(status);
                }
                Ok(None) => {}
                Err(e) => {
                    self.kill();
                    return Err(Stopped::Lost(e.to_string()));
                }
            }
            if interrupt::requested() {
                self.kill();
                return Err(Stopped::Interrupted);
            }
            if start.elapsed() >= timeout {
                self.kill();
                return Err(Stopped::TimedOut(timeout));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Kills the child (SIGKILL, by pid) and reaps it. Idempotent.
    pub fn kill(&mut self) {
        if self.reaped {
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.reaped = true;
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sleeps for `duration`, waking up early with `Err` on Ctrl-C.
pub fn sleep(duration: Duration) -> Result<(), BenchError> {
    let end = Instant::now() + duration;
    loop {
        interrupt::check()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep(POLL.min(end - now));
    }
}

/// The full path of `tool` on PATH, like `command -v`.
pub fn find_on_path(tool: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(tool)).find(|candidate| is_executable(candidate))
}

/// A server binary this workspace builds (minikv, minilog): `$env_var` if set, else
/// `name` next to the running executable, because `cargo build --release -p <name> -p
/// mini-cli` puts both in target/release. Whether it exists is the caller's check, so
/// that its error can say how to build that binary.
pub fn locate_built(name: &str, env_var: &str) -> Result<std::path::PathBuf, BenchError> {
    if let Some(path) = std::env::var_os(env_var) {
        return Ok(std::path::PathBuf::from(path));
    }
    let exe = std::env::current_exe().map_err(BenchError::io("can't find the running executable"))?;
    Ok(exe.with_file_name(name))
}

fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hung_child_is_killed_at_its_deadline() {
        let mut command = Command::new("sleep");
        command.arg("30");
        let mut child = Guarded::spawn("sleep", command).expect("sleep runs");
        let start = Instant::now();
        let result = child.wait_bounded(Duration::from_millis(200));
        assert!(matches!(result, Err(Stopped::TimedOut(_))));
        assert!(start.elapsed() < Duration::from_secs(5));
        // Reaped: the pid no longer names our child.
        assert!(child.reaped);
    }

    #[test]
    fn dropping_the_guard_kills_the_child() {
        let mut command = Command::new("sleep");
        command.arg("30");
        let child = Guarded::spawn("sleep", command).expect("sleep runs");
        let pid = child.pid();
        drop(child);
        // The process is gone and reaped: /proc has no entry for it (unless the pid
        // was already reused, which cannot happen this fast in practice).
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn a_finished_child_reports_its_status() {
        let mut command = Command::new("sh");
        command.args(["-c", "exit 3"]);
        let mut child = Guarded::spawn("sh", command).expect("sh runs");
        let status = child.wait_bounded(Duration::from_secs(10)).expect("exits");
        assert_eq!(status.code(), Some(3));
    }
}
