//! HTTP for the exercises that have an HTTP face: a small client over hyper, and
//! [`serve`], which runs an axum router on a free loopback port until dropped.
//!
//! The idempotency exercise serves `POST /orders`, the retry exercise its replay
//! endpoint, the circuit-breaker exercise a flaky upstream; their tests and scenarios
//! call them through [`HttpClient`], a real HTTP/1.1 client with a connection pool, so
//! what is measured includes the HTTP layer a service would have.
//!
//! [`HttpError`] keeps "timed out", "could not connect" and "anything else" apart,
//! because a circuit breaker and a retry policy treat them differently. Left out:
//! TLS, HTTP/2, redirects, and streaming bodies (bodies are collected whole).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::DemoError;

/// The default per-request deadline: generous, because the scenarios that care set
/// their own.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("no response within {0:?}")]
    Timeout(Duration),
    #[error("can't connect: {0}")]
    Connect(String),
    #[error("{0}")]
    Other(String),
}

impl From<HttpError> for DemoError {
    fn from(e: HttpError) -> Self {
        DemoError::Http(e.to_string())
    }
}

/// A response, collected whole.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl HttpResponse {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// An HTTP/1.1 client with a connection pool and a per-request deadline. Cheap to clone
/// (the pool is shared).
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClient {
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(DEFAULT_TIMEOUT));
        let inner = Client::builder(TokioExecutor::new()).build(connector);
        HttpClient { inner, timeout: DEFAULT_TIMEOUT }
    }

    /// The same client (and pool) with another per-request deadline.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        HttpClient { inner: self.inner.clone(), timeout }
    }

    /// Sends one request; the deadline covers connecting, sending and the whole body.
    pub async fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<HttpResponse, HttpError> {
        let method = hyper::Method::from_bytes(method.as_bytes())
            .map_err(|e| HttpError::Other(format!("bad method {method:?}: {e}")))?;
        let mut builder = hyper::Request::builder().method(method).uri(url);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request =
            builder.body(Full::new(body.into())).map_err(|e| HttpError::Other(format!("bad request to {url}: {e}")))?;
        let exchange = async {
            let response = self.inner.request(request).await.map_err(|e| {
                if e.is_connect() {
                    HttpError::Connect(format!("{url}: {e}"))
                } else {
                    HttpError::Other(format!("{url}: {e}"))
                }
            })?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(n, v)| (n.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| HttpError::Other(format!("{url}: reading the body: {e}")))?
                .to_bytes();
            Ok(HttpResponse { status, headers, body })
        };
        tokio::time::timeout(self.timeout, exchange).await.map_err(|_| HttpError::Timeout(self.timeout))?
    }

    pub async fn get(&self, url: &str) -> Result<HttpResponse, HttpError> {
        self.request("GET", url, &[], Bytes::new()).await
    }

    pub async fn post(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<HttpResponse, HttpError> {
        self.request("POST", url, headers, body).await
    }
}

/// An axum router served on a free loopback port. Dropping it stops the server.
pub struct HttpServer {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl HttpServer {
    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops accepting, lets in-flight requests finish, and waits for the server task.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Serves `router` on `127.0.0.1:0` in a background task.
pub async fn serve(router: axum::Router) -> Result<HttpServer, DemoError> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let server = axum::serve(listener, router).with_graceful_shutdown(async {
            let _ = stopped.await;
        });
        if let Err(e) = server.await {
            eprintln!("exercises: the HTTP server on {addr} stopped: {e}");
        }
    });
    Ok(HttpServer { addr, stop: Some(stop), task: Some(task) })
}
