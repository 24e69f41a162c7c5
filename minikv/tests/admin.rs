//! The admin HTTP endpoint: `/metrics` in the Prometheus text format, `/healthz` and
//! `/readyz`.
//!
//! The series names are an interface: dashboards and alerts are written against them,
//! so the test pins the ones the docs promise, with their labels.
//!
//! Left out: the values' exact accounting (INFO and the unit tests of
//! `src/metrics.rs` cover that); here a few values are checked for plausibility.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::{wait_until, Server};

/// A minimal HTTP/1.1 GET: returns (status code, body).
fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the admin port");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = Vec::new();
    s.read_to_end(&mut response).expect("read the HTTP response");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// The value of the first sample line starting with `series` (name plus labels).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.trim().parse().ok()
    })
}

#[test]
fn metrics_health_and_readiness() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_admin(dir.path(), &["--appendonly", "yes", "--appendfsync", "always"]);
    let admin = server.admin_port.expect("admin port");

    assert_eq!(http_get(admin, "/healthz").0, 200, "/healthz");
    assert_eq!(http_get(admin, "/readyz").0, 200, "/readyz once serving");
    assert_eq!(http_get(admin, "/no-such-page").0, 404);

    let mut con = server.client();
    for i in 0..10 {
        let () = redis::cmd("SET").arg(format!("k{i}")).arg(i).query(&mut con).unwrap();
    }
    let _: Option<String> = redis::cmd("GET").arg("k1").query(&mut con).unwrap();
    let () = redis::cmd("SET").arg("ttl").arg("v").arg("PX").arg(50).query(&mut con).unwrap();
    // Let the TTL pass and the key be removed, so the expired counter moves.
    std::thread::sleep(Duration::from_millis(100));
    let _: Option<String> = redis::cmd("GET").arg("ttl").query(&mut con).unwrap();

    let (status, metrics) = http_get(admin, "/metrics");
    assert_eq!(status, 200);
    for needle in [
        "minikv_commands_total{cmd=\"set\"}",
        "minikv_command_duration_seconds_bucket{cmd=\"get\",le=",
        "minikv_connected_clients",
        "minikv_keys{db=\"0\"}",
        "minikv_expired_keys_total",
        "minikv_used_memory_bytes",
        "minikv_aof_size_bytes",
        "minikv_aof_fsync_duration_seconds",
    ] {
        assert!(metrics.contains(needle), "/metrics has no {needle}:\n{metrics}");
    }
    assert_eq!(sample(&metrics, "minikv_commands_total{cmd=\"set\"}"), Some(11.0));
    assert_eq!(sample(&metrics, "minikv_keys{db=\"0\"}"), Some(10.0));
    assert!(sample(&metrics, "minikv_expired_keys_total").unwrap_or(0.0) >= 1.0);
    assert!(sample(&metrics, "minikv_connected_clients").unwrap_or(0.0) >= 1.0);
    assert!(sample(&metrics, "minikv_used_memory_bytes").unwrap_or(0.0) > 0.0);
    assert!(sample(&metrics, "minikv_aof_size_bytes").unwrap_or(0.0) > 0.0);
    // With appendfsync always every acknowledged write was fsynced.
    assert!(
        sample(&metrics, "minikv_aof_fsync_duration_seconds_count").unwrap_or(0.0) >= 1.0,
        "no fsync observed with appendfsync always:\n{metrics}"
    );
    // The histogram's +Inf bucket counts every GET.
    assert_eq!(sample(&metrics, "minikv_command_duration_seconds_bucket{cmd=\"get\",le=\"+Inf\"}"), Some(2.0));
}

#[test]
fn no_aof_metrics_without_aof() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_admin(dir.path(), &[]);
    let admin = server.admin_port.expect("admin port");
    let mut con = server.client();
    let () = redis::cmd("SET").arg("k").arg("v").query(&mut con).unwrap();
    let mut metrics = String::new();
    assert!(wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        metrics = http_get(admin, "/metrics").1;
        metrics.contains("minikv_commands_total{cmd=\"set\"}")
    }));
    assert!(!metrics.contains("minikv_aof_size_bytes"), "AOF metrics exported with appendonly no");
}
