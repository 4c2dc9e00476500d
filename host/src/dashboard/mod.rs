//! `jobbox dashboard`: a web page served by jobbox itself over a NATS connection —
//! queues, workers, jobs (search, recent failures, one job's trail), batches,
//! handlers and dead letters, updated live with server-sent events from the events stream.
//!
//! The page is static HTML, JS and CSS embedded with `include_str!` (no build
//! chain). It renders every string with `textContent`, never `innerHTML`, and is
//! served with a Content-Security-Policy that allows only its own script, so a job
//! whose payload, logs or error hold markup shows it as text. Actions that change
//! something (replay, cancel a job or a batch, rollback) need the token given at
//! start, sent as `Authorization: Bearer <token>`.

mod actions;
mod api;
mod assets;
mod auth;
mod live;
mod views;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::routing::{get, post};
use jobbox::Client;
use tokio_util::sync::CancellationToken;

pub use auth::Token;

/// What every request handler of the dashboard shares.
#[derive(Debug)]
pub(crate) struct AppState {
    pub client: Client,
    pub token: Token,
    pub live: live::Live,
}

/// A dashboard bound to its address, ready to serve.
#[derive(Debug)]
pub struct Dashboard {
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
}

impl Dashboard {
    /// Binds `addr` and starts following the events stream for live updates.
    pub async fn bind(client: Client, addr: SocketAddr, token: Token) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("failed to listen for the dashboard on {addr}"))?;
        let live = live::Live::default();
        Ok(Self {
            listener,
            state: Arc::new(AppState {
                client,
                token,
                live,
            }),
        })
    }

    /// The address the dashboard listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `stop`.
    pub async fn serve(self, stop: CancellationToken) -> anyhow::Result<()> {
        let Self { listener, state } = self;
        tokio::spawn(live::follow(Arc::clone(&state), stop.clone()));
        let app = router(state);
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
            .context("the dashboard server failed")
    }
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(assets::index))
        .route("/app.js", get(assets::script))
        .route("/style.css", get(assets::style))
        .route("/api/overview", get(api::overview))
        .route("/api/jobs/{id}", get(api::job))
        .route("/api/failures", get(api::failures))
        .route("/api/handlers", get(api::handlers))
        .route("/api/dlq", get(api::dead_letters))
        .route("/api/batches", get(api::batches))
        .route("/api/batches/{id}", get(api::batch))
        .route("/api/live", get(live::stream))
        .route("/api/jobs/{id}/cancel", post(actions::cancel))
        .route("/api/batches/{id}/cancel", post(actions::cancel_batch))
        .route("/api/dlq/{sequence}/replay", post(actions::replay))
        .route("/api/handlers/{job_type}/rollback", post(actions::rollback))
        .layer(axum::middleware::map_response(assets::security_headers))
        .with_state(state)
}
