//! The DLQ's HTTP face (axum): what an operator's tool or a runbook calls to look at the
//! dead letters and put them back once the cause is fixed.
//!
//! | request                    | answer                                                |
//! |----------------------------|-------------------------------------------------------|
//! | `GET /dlq`                 | `200` a [`Listing`]: every envelope, oldest first     |
//! | `POST /dlq/{id}/replay`    | `200` a [`Replayed`]; `404` no such letter; `409` busy; `422` not an envelope |
//! | `POST /dlq/replay`         | `200` a [`ReplayedAll`]                               |
//! | `POST /dlq/purge`          | `200` `{"purged": n}`                                 |
//!
//! Every answer is JSON; errors are `{"error": "..."}` with a message that says what to
//! do next, and a queue failure is `502`. [`DlqApi`] is the matching client, used by
//! the scenario and the tests so they go through HTTP like an operator would.
//!
//! Left out: authentication (an endpoint that can replay a million notifications must
//! have it in production), and `DELETE` of a single letter (purge, or replay then let
//! the poison check put it back, covers the demo).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};

use super::dlq::{DeadLetterQueue, DlqError, Listing, Replayed, ReplayedAll};
use crate::framework::http::{HttpClient, HttpResponse};
use crate::framework::DemoError;

/// The router serving `dlq`.
pub fn router(dlq: Arc<DeadLetterQueue>) -> Router {
    Router::new()
        .route("/dlq", get(list))
        .route("/dlq/replay", post(replay_all))
        .route("/dlq/purge", post(purge))
        .route("/dlq/{id}/replay", post(replay_one))
        .with_state(dlq)
}

/// `{"purged": n}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purged {
    pub purged: u64,
}

#[derive(Serialize, Deserialize)]
struct ErrorBody {
    error: String,
}

fn json(status: StatusCode, value: &impl Serialize) -> Response {
    match serde_json::to_string(value) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("can't encode the answer: {e}")).into_response(),
    }
}

fn error(e: DlqError) -> Response {
    let status = match &e {
        DlqError::NoSuchLetter { .. } => StatusCode::NOT_FOUND,
        DlqError::Busy(_) => StatusCode::CONFLICT,
        DlqError::Unreadable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        DlqError::BadTube(_) => StatusCode::INTERNAL_SERVER_ERROR,
        DlqError::Queue(_) => StatusCode::BAD_GATEWAY,
    };
    json(status, &ErrorBody { error: e.to_string() })
}

async fn list(State(dlq): State<Arc<DeadLetterQueue>>) -> Response {
    match dlq.list().await {
        Ok(listing) => json(StatusCode::OK, &listing),
        Err(e) => error(e),
    }
}

async fn replay_one(State(dlq): State<Arc<DeadLetterQueue>>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        let message = format!("{id:?} is not a job id; GET /dlq lists the dead letters with their dlq_job_id");
        return json(StatusCode::BAD_REQUEST, &ErrorBody { error: message });
    };
    match dlq.replay(id).await {
        Ok(replayed) => json(StatusCode::OK, &replayed),
        Err(e) => error(e),
    }
}

async fn replay_all(State(dlq): State<Arc<DeadLetterQueue>>) -> Response {
    match dlq.replay_all().await {
        Ok(replayed) => json(StatusCode::OK, &replayed),
        Err(e) => error(e),
    }
}

async fn purge(State(dlq): State<Arc<DeadLetterQueue>>) -> Response {
    match dlq.purge().await {
        Ok(purged) => json(StatusCode::OK, &Purged { purged }),
        Err(e) => error(e),
    }
}

/// A client of the endpoint at `base` (`http://127.0.0.1:PORT`).
#[derive(Clone)]
pub struct DlqApi {
    http: HttpClient,
    base: String,
}

impl DlqApi {
    pub fn new(base: impl Into<String>) -> DlqApi {
        DlqApi { http: HttpClient::new(), base: base.into() }
    }

    pub async fn list(&self) -> Result<Listing, DemoError> {
        decode(self.http.get(&format!("{}/dlq", self.base)).await?)
    }

    pub async fn replay(&self, dlq_job_id: u64) -> Result<Replayed, DemoError> {
        decode(self.post(&format!("/dlq/{dlq_job_id}/replay")).await?)
    }

    pub async fn replay_all(&self) -> Result<ReplayedAll, DemoError> {
        decode(self.post("/dlq/replay").await?)
    }

    pub async fn purge(&self) -> Result<Purged, DemoError> {
        decode(self.post("/dlq/purge").await?)
    }

    /// A POST to `path` under the base, answered whatever its status (for the tests of
    /// the error answers).
    pub async fn post(&self, path: &str) -> Result<HttpResponse, DemoError> {
        Ok(self.http.post(&format!("{}{path}", self.base), &[], bytes::Bytes::new()).await?)
    }
}

/// A `200` answer's JSON as `T`; any other status is an error carrying the server's
/// message.
fn decode<T: for<'de> Deserialize<'de>>(response: HttpResponse) -> Result<T, DemoError> {
    if response.status != 200 {
        let message = serde_json::from_slice::<ErrorBody>(&response.body).map(|e| e.error).unwrap_or(response.text());
        return Err(DemoError::Http(format!("the DLQ endpoint answered {}: {message}", response.status)));
    }
    serde_json::from_slice(&response.body)
        .map_err(|e| DemoError::Http(format!("the DLQ endpoint's answer is not what was expected: {e}")))
}
