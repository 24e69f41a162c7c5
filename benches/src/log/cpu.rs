//! Who was busy during a phase: the server's CPU time (from /proc) and the harness's
//! own (getrusage: the client library and its threads), each divided by the phase's
//! wall time, in cores.
//!
//! On a two-core machine client and server compete for the same cores, so a figure
//! means more when the reader can see which side ran out: a server at 1.0 core with a
//! client at 0.3 is the server's limit; a server at 0.2 with a client at 0.9 is the
//! client's.

use std::time::Instant;

use serde::Serialize;

/// CPU seconds used so far by the server and by the harness, and when they were read.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    server: f64,
    client: f64,
    at: Instant,
}

/// Cores busy on average over a phase.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Cores {
    pub server: f64,
    /// The harness process: the client library, its threads and the checks.
    pub client: f64,
}

impl Sample {
    /// Reads both clocks now; `None` if the server's /proc entry is gone (it died).
    pub fn take(server_pid: u32) -> Option<Sample> {
        let stat = std::fs::read_to_string(format!("/proc/{server_pid}/stat")).ok()?;
        Some(Sample { server: process_cpu_seconds(&stat)?, client: own_cpu_seconds(), at: Instant::now() })
    }

    /// The cores busy between `self` and `later`.
    pub fn cores_until(&self, later: &Sample) -> Option<Cores> {
        let wall = later.at.duration_since(self.at).as_secs_f64();
        (wall > 0.0)
            .then(|| Cores { server: (later.server - self.server) / wall, client: (later.client - self.client) / wall })
    }
}

/// utime + stime of a process, in seconds, from the text of its /proc/<pid>/stat.
pub fn process_cpu_seconds(stat: &str) -> Option<f64> {
    // The command name (field 2) is in parentheses and may hold spaces or parentheses
    // itself; the fields after its closing parenthesis start with field 3, the state.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: f64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: f64 = fields.get(15 - 3)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks > 0).then(|| (utime + stime) / ticks as f64)
}

/// User + system CPU seconds of the harness process, all threads.
fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return f64::NAN;
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_time_past_an_awkward_command_name() {
        // Fields 14 and 15 are 250 and 50 ticks; the name holds a space and a ')'.
        let stat = "42 (odd) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1000 0 0";
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        assert_eq!(process_cpu_seconds(stat), Some(300.0 / ticks));
        assert_eq!(process_cpu_seconds("42 (short) S 1"), None);
    }

    #[test]
    fn our_own_process_can_be_sampled() {
        let pid = std::process::id();
        let before = Sample::take(pid).expect("our /proc entry exists");
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let after = Sample::take(pid).expect("still there");
        let cores = before.cores_until(&after).expect("time passed");
        assert!(cores.client >= 0.0 && cores.server >= 0.0, "{cores:?}");
        assert!(Sample::take(u32::MAX).is_none(), "no such process");
    }
}
