//! The framework under the exercises: the backends it starts answer over their wire
//! protocols (with clients we did not write for the KV: the `redis` crate), stop when
//! dropped, and the HTTP client tells a timeout from a refused connection.

use std::time::Duration;

use exercises::framework::backends::{MiniKv, MiniQueue, RealBeanstalkd, RealRedis};
use exercises::framework::http::{self, HttpClient, HttpError};
use exercises::framework::{self, DemoError, DemoOptions, Exercise, Needs, Report, Theme};
use minibench::queue::client::Client;

async fn kv_round_trip(url: &str) {
    let mut conn = redis::Client::open(url).expect("url").get_multiplexed_async_connection().await.expect("connects");
    let _: () = redis::cmd("SET").arg("framework:k").arg("v").query_async(&mut conn).await.expect("SET");
    let value: String = redis::cmd("GET").arg("framework:k").query_async(&mut conn).await.expect("GET");
    assert_eq!(value, "v");
}

async fn queue_round_trip(addr: &str) {
    let mut client = Client::connect(addr).await.expect("connects");
    client.use_tube("framework").await.expect("use");
    client.watch("framework").await.expect("watch");
    let id = client.put(0, 0, 60, b"hello").await.expect("put");
    let job = client.reserve_with_timeout(1).await.expect("reserve");
    assert_eq!(job.id, id);
    client.delete(id).await.expect("delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_backends_serve_and_stop_when_dropped() {
    let kv = MiniKv::start().await.expect("minikv starts");
    let url = kv.url();
    kv_round_trip(&url).await;
    let queue = MiniQueue::start().await.expect("miniqueue starts");
    let addr = queue.addr();
    queue_round_trip(&addr).await;

    let kv_addr = kv.endpoint().addr;
    drop(kv);
    drop(queue);
    // Shutdown is asynchronous; the listeners close within moments.
    for addr in [kv_addr, addr] {
        let mut closed = false;
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(&addr).await.is_err() {
                closed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(closed, "{addr} still accepts connections after its server was dropped");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_servers_start_where_installed() {
    match RealRedis::start().await.expect("redis-server starts") {
        Some(redis) => kv_round_trip(&redis.url()).await,
        None => eprintln!("redis-server is not installed: skipped"),
    }
    match RealBeanstalkd::start().await.expect("beanstalkd starts") {
        Some(beanstalkd) => queue_round_trip(&beanstalkd.addr()).await,
        None => eprintln!("beanstalkd is not installed: skipped"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_client_tells_timeouts_from_refused_connections() {
    use axum::routing::get;
    let router = axum::Router::new().route("/ok", get(|| async { ([("x-answer", "42")], "fine") })).route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            "late"
        }),
    );
    let server = http::serve(router).await.expect("serves");
    let client = HttpClient::new().with_timeout(Duration::from_millis(300));

    let response = client.get(&server.url("/ok")).await.expect("answers");
    assert_eq!((response.status, response.text().as_str(), response.header("X-Answer")), (200, "fine", Some("42")));
    assert_eq!(client.get(&server.url("/missing")).await.expect("answers").status, 404);
    assert_eq!(client.get(&server.url("/slow")).await.unwrap_err(), HttpError::Timeout(Duration::from_millis(300)));

    let url = server.url("/ok");
    server.stop().await;
    match client.get(&url).await {
        Err(HttpError::Connect(_)) => {}
        other => panic!("a stopped server should refuse the connection, got {other:?}"),
    }
}

/// A scenario that reports what it was given, to check `framework::run`'s wiring.
fn echo_endpoints(demo: framework::Demo) -> framework::DemoFuture {
    Box::pin(async move {
        let mut report: Report = demo.report("echo", "what the scenario was given");
        let url = demo.kv_url()?.to_string();
        kv_round_trip(&url).await;
        report.check(demo.queue.is_none(), "no queue for a KV-only exercise");
        Ok(report)
    })
}

const ECHO: Exercise =
    Exercise { name: "echo", theme: Theme::Caching, summary: "test only", needs: Needs::KV, run: echo_endpoints };

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_starts_what_is_needed_and_refuses_what_is_not() {
    let report = framework::run(&ECHO, DemoOptions::default()).await.expect("runs");
    assert!(report.passed(), "{report}");
    assert!(report.value("kv").expect("kv line").ends_with("(minikv, in-process)"), "{report}");
    assert_eq!(report.value("seed"), Some("42"));

    let refused =
        framework::run(&ECHO, DemoOptions { queue: Some("beanstalk://127.0.0.1:1".into()), ..Default::default() })
            .await
            .unwrap_err();
    assert!(matches!(refused, DemoError::NotNeeded(..)), "{refused}");

    let kv = MiniKv::start().await.expect("minikv starts");
    let given = framework::run(&ECHO, DemoOptions { kv: Some(kv.url()), seed: Some(9), ..Default::default() })
        .await
        .expect("runs against a given endpoint");
    assert_eq!(given.value("kv"), Some(kv.url().as_str()));
    assert_eq!(given.value("seed"), Some("9"));
}
