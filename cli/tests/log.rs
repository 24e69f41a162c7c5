//! `mini log` against a real minilog broker: create a topic, produce with a key and a
//! header, list topics with their offsets, consume as a group, list the group with its
//! committed offsets and lag, delete the topic.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The broker Cargo built next to `mini` (`cargo build --workspace` builds both).
fn minilog_binary() -> PathBuf {
    let minilog = PathBuf::from(env!("CARGO_BIN_EXE_mini")).with_file_name("minilog");
    assert!(minilog.is_file(), "{} is missing: run cargo build -p minilog first", minilog.display());
    minilog
}

struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mini(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_mini")).args(args).stdin(Stdio::null()).output().expect("run mini");
    assert!(out.status.success(), "mini {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn topics_produce_consume_groups_and_delete() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let bootstrap = format!("127.0.0.1:{port}");
    let child = Command::new(minilog_binary())
        .args(["--listen", &bootstrap, "--admin-port", "0", "--dir"])
        .arg(dir.path().join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start minilog");
    let _broker = Broker(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&bootstrap).is_err() {
        assert!(Instant::now() < deadline, "minilog did not start listening on {bootstrap}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let b = bootstrap.as_str();

    let created = mini(&["log", "-b", b, "topics", "create", "orders", "-p", "2", "-c", "retention.ms=60000"]);
    assert!(created.contains("created orders with 2 partitions"), "{created}");

    let produced = mini(&["log", "-b", b, "produce", "orders", "a", "b", "-k", "k1", "-p", "1", "-H", "h=v"]);
    assert_eq!(produced.lines().count(), 2, "{produced}");
    assert!(produced.contains("partition 1 offset 1"), "{produced}");

    let topics = mini(&["log", "-b", b, "topics"]);
    assert!(topics.contains("topic \"orders\" with 2 partitions"), "{topics}");
    assert!(topics.contains("partition 1, leader 1, offsets 0..2 (2 records)"), "{topics}");

    let consumed = mini(&["log", "-b", b, "consume", "orders", "-G", "readers", "--from-beginning", "--exit"]);
    assert_eq!(consumed.lines().collect::<Vec<_>>(), ["1 0 k1 a h=v", "1 1 k1 b h=v"], "{consumed}");

    let groups = mini(&["log", "-b", b, "groups", "readers"]);
    assert!(groups.contains("group \"readers\""), "{groups}");
    assert!(groups.contains("orders[1] committed 2 end 2 lag 0"), "the group's commit on close:\n{groups}");

    let deleted = mini(&["log", "-b", b, "topics", "delete", "orders"]);
    assert!(deleted.contains("deleted orders"), "{deleted}");
    assert!(!mini(&["log", "-b", b, "topics"]).contains("\"orders\""));
}
