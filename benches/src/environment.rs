//! What a run was measured on, read the same way by every benchmark: the CPU model,
//! the number of cores, and the version line each binary under test prints. Each
//! report puts these at its top, so that a reader can tell whether the numbers
//! transfer to their own machine.
//!
//! Left out: memory size, the kernel and frequency scaling. Linux only, like the rest
//! of the harness (/proc).

use std::path::Path;

use crate::BenchError;

/// The first line `binary --version` prints, on stdout or, for servers that print it
/// there (nats-server), on stderr.
pub fn version_line(binary: &Path) -> Result<String, BenchError> {
    version_line_with(binary, "--version")
}

/// The first line `binary <flag>` prints, for servers whose version flag is not
/// `--version` (beanstalkd and miniqueue take `-v`, as beanstalkd does).
pub fn version_line_with(binary: &Path, flag: &str) -> Result<String, BenchError> {
    let out = std::process::Command::new(binary)
        .arg(flag)
        .output()
        .map_err(BenchError::io(format!("can't run {} {flag}", binary.display())))?;
    let text = if out.stdout.is_empty() { out.stderr } else { out.stdout };
    Ok(String::from_utf8_lossy(&text).lines().next().unwrap_or("").trim().to_string())
}

/// The CPU's model name from /proc/cpuinfo, or "unknown CPU".
pub fn cpu_model() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    cpuinfo
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(key, _)| key.trim() == "model name")
        .map_or_else(|| "unknown CPU".to_string(), |(_, model)| model.trim().to_string())
}

/// The cores this process may run on: client and servers share them, which caps both.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Where the servers' temporary directories go, and the filesystem there, from
/// /proc/self/mounts: "/tmp (ext4)". Benchmarks that fsync print it, since the
/// filesystem decides what an fsync costs.
pub fn data_dir() -> String {
    let dir = std::env::temp_dir();
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let fs = mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, mount, fs) = (fields.next()?, fields.next()?, fields.next()?);
            dir.starts_with(mount).then_some((mount.len(), fs))
        })
        .max_by_key(|(len, _)| *len)
        .map_or("unknown filesystem", |(_, fs)| fs);
    format!("{} ({fs})", dir.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_a_cpu_and_at_least_one_core() {
        assert!(!cpu_model().is_empty());
        assert!(cores() >= 1);
    }
}
