//! The admin HTTP listener: `/metrics`, `/healthz` and `/readyz`.
//!
//! Every mini server exposes the same three endpoints on a separate port, so that a
//! Prometheus scrape or a health probe never competes with clients for the protocol
//! port:
//!
//! - `/metrics`: the Prometheus text exposition format (version 0.0.4), encoded by
//!   the `prometheus` crate from the server's [`prometheus::Registry`]. A server can
//!   register a hook that refreshes gauges right before each scrape.
//! - `/healthz`: 200 while the process is up and serving HTTP (liveness).
//! - `/readyz`: 200 once the server is ready for clients, 503 before that, for example
//!   while minikv replays its AOF (readiness).
//!
//! Left out: authentication and TLS. The listener binds loopback by default; put it
//! behind something else before exposing it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, TextEncoder};
use tokio::net::TcpListener;

use crate::lifecycle::Shutdown;

/// A hook run before each scrape (refresh gauges from live state).
pub type ScrapeHook = Arc<dyn Fn() + Send + Sync>;

/// What the admin endpoints read.
#[derive(Clone)]
pub struct Admin {
    pub registry: prometheus::Registry,
    /// Flipped to true when the server can take clients.
    pub ready: Arc<AtomicBool>,
    pub before_scrape: Option<ScrapeHook>,
}

impl Admin {
    pub fn new(registry: prometheus::Registry) -> Self {
        Admin { registry, ready: Arc::new(AtomicBool::new(false)), before_scrape: None }
    }

    pub fn router(self) -> Router {
        Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .with_state(self)
    }
}

async fn metrics(State(admin): State<Admin>) -> impl IntoResponse {
    if let Some(hook) = &admin.before_scrape {
        hook();
    }
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    match encoder.encode(&admin.registry.gather(), &mut body) {
        Ok(()) => (StatusCode::OK, [(header::CONTENT_TYPE, encoder.format_type().to_string())], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("encoding metrics failed: {e}\n")).into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(admin): State<Admin>) -> impl IntoResponse {
    if admin.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// Serves the admin endpoints on `listener` until `shutdown` triggers.
pub async fn serve(listener: TcpListener, admin: Admin, shutdown: Shutdown) -> std::io::Result<()> {
    axum::serve(listener, admin.router()).with_graceful_shutdown(async move { shutdown.wait().await }).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_metrics_health_and_readiness() {
        let registry = prometheus::Registry::new();
        let counter = prometheus::IntCounter::new("test_things_total", "Things.").unwrap();
        registry.register(Box::new(counter.clone())).unwrap();
        counter.inc();
        let admin = Admin::new(registry);
        let ready = admin.ready.clone();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let server = tokio::spawn(serve(listener, admin, shutdown.clone()));

        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        ready.store(true, Ordering::Release);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        let metrics = get(addr, "/metrics").await;
        assert!(metrics.contains("test_things_total 1"), "{metrics}");
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
        shutdown.trigger();
        server.await.unwrap().unwrap();
    }
}
