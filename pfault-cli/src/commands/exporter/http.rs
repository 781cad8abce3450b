//! The HTTP side: handlers that ask the exporter's task through a channel, and their limits.

use std::time::Duration;

use axum::{
    extract::{Query, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use tokio::sync::{mpsc, oneshot};

/// What a handler asks the exporter's task for.
pub(super) enum Job {
    Metrics(oneshot::Sender<String>),
    Profile {
        seconds: u64,
        reply: oneshot::Sender<Result<Vec<u8>, (StatusCode, String)>>,
    },
}

/// Longest profile a request may ask for, seconds.
pub(super) const MAX_PROFILE: u64 = 300;
/// In-flight requests at once; more wait.
pub(super) const MAX_REQUESTS: usize = 8;
/// The most a /metrics request waits for the exporter's task.
pub(super) const METRICS_TIMEOUT: Duration = Duration::from_secs(10);

/// `/metrics` and `/debug/pprof/faults`; any other path is 404.
pub(super) fn router(jobs: mpsc::Sender<Job>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/debug/pprof/faults", get(profile))
        .with_state(jobs)
        .layer(tower::limit::ConcurrencyLimitLayer::new(MAX_REQUESTS))
}

async fn metrics(State(jobs): State<mpsc::Sender<Job>>) -> Response {
    let (reply, answer) = oneshot::channel();
    if jobs.send(Job::Metrics(reply)).await.is_err() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    match tokio::time::timeout(METRICS_TIMEOUT, answer).await {
        Ok(Ok(text)) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        _ => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// How long a profile runs: as Go's /debug/pprof/profile, 30 s unless asked; anything but a
/// whole number of seconds from 1 to [`MAX_PROFILE`] is refused, not quietly changed. The
/// query comes as pairs, which any query string is, so a bad value is answered in words and
/// not in serde's.
fn profile_seconds(query: &[(String, String)]) -> Result<u64, String> {
    let Some((_, given)) = query.iter().rev().find(|(k, _)| k == "seconds") else {
        return Ok(30);
    };
    match given.trim().parse::<u64>() {
        Ok(s) if (1..=MAX_PROFILE).contains(&s) => Ok(s),
        _ => Err(format!(
            "seconds={given}: give a whole number of seconds from 1 to {MAX_PROFILE}\n"
        )),
    }
}

async fn profile(
    State(jobs): State<mpsc::Sender<Job>>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let seconds = match profile_seconds(&query) {
        Ok(s) => s,
        Err(text) => return (StatusCode::BAD_REQUEST, text).into_response(),
    };
    let (reply, answer) = oneshot::channel();
    if jobs.send(Job::Profile { seconds, reply }).await.is_err() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    match tokio::time::timeout(Duration::from_secs(seconds) + METRICS_TIMEOUT, answer).await {
        Ok(Ok(Ok(body))) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"faults.pb.gz\"",
                ),
            ],
            body,
        )
            .into_response(),
        Ok(Ok(Err((status, text)))) => (status, text).into_response(),
        _ => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}
