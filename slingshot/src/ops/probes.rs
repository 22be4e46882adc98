//! The operations endpoint: Prometheus metrics, liveness and readiness over HTTP.
//!
//! - `GET /metrics`: every service's metrics in the Prometheus text format;
//! - `GET /healthz`: 200 while the process can make progress (liveness);
//!   503 once every slot of a service holds a `process` call running longer
//!   than `SLINGSHOT_STUCK_SECS`: only a restart frees a call stuck in
//!   `loop {}` or a wait without end, and what it held returns to the queue;
//! - `GET /readyz`: 200 only while every service is consuming; 503 while one
//!   is reconnecting or the process is shutting down (readiness).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use prometheus_client::registry::Registry;

use crate::base::stats::Stats;
use crate::ops::metrics::{self, Watched};

/// What the endpoint reports on.
#[derive(Clone)]
pub(crate) struct Probe {
    services: Watched,
    stopping: Arc<AtomicBool>,
    /// After how long a call counts as stuck; `None`: never.
    stuck_after: Option<Duration>,
    /// Reads `services` at each scrape, those watched later included.
    registry: Arc<Registry>,
}

impl Default for Probe {
    fn default() -> Self {
        let services = Watched::default();
        Probe {
            registry: Arc::new(metrics::registry(services.clone())),
            services,
            stopping: Arc::default(),
            stuck_after: None,
        }
    }
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe").finish_non_exhaustive()
    }
}

impl Probe {
    /// A probe whose liveness fails once every slot of a service holds a
    /// call running longer than `stuck_after`.
    pub(crate) fn with_stuck_after(mut self, stuck_after: Option<Duration>) -> Self {
        self.stuck_after = stuck_after;
        self
    }

    /// `None` while every service can make progress, else why not: all
    /// its slots hold calls running past the stuck threshold.
    pub(crate) fn not_live(&self) -> Option<String> {
        let threshold = self.stuck_after?;
        let services = self.lock();
        let stuck: Vec<String> = services
            .iter()
            .filter_map(|(name, stats)| {
                let slots = stats.concurrency.load(Ordering::Relaxed);
                let stuck = stats.stuck(threshold);
                (slots > 0 && stuck >= slots).then(|| format!("{name}: {stuck} of {slots} slots"))
            })
            .collect();
        (!stuck.is_empty()).then(|| {
            format!(
                "stuck: every slot holds a process call running over {}s ({})",
                threshold.as_secs(),
                stuck.join("; ")
            )
        })
    }

    /// Reports on `service` too.
    pub(crate) fn watch(&self, service: &'static str, stats: Arc<Stats>) {
        self.lock().push((service, stats));
    }

    /// From now on the process is not ready: it is shutting down.
    pub(crate) fn stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(&'static str, Arc<Stats>)>> {
        self.services.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `None` when ready, else why not.
    pub(crate) fn not_ready(&self) -> Option<String> {
        if self.stopping.load(Ordering::Relaxed) {
            return Some("shutting down".into());
        }
        let services = self.lock();
        if services.is_empty() {
            return Some("no service started yet".into());
        }
        let waiting: Vec<&str> = services
            .iter()
            .filter(|(_, stats)| !stats.consuming.load(Ordering::Relaxed))
            .map(|(name, _)| *name)
            .collect();
        (!waiting.is_empty()).then(|| format!("not consuming: {}", waiting.join(", ")))
    }

    fn metrics(&self) -> Result<String, std::fmt::Error> {
        metrics::render(&self.registry)
    }
}

/// The HTTP app serving `probe`.
pub(crate) fn router(probe: Probe) -> Router {
    Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(live))
        .route("/readyz", get(ready))
        .with_state(probe)
}

async fn metrics_page(State(probe): State<Probe>) -> impl IntoResponse {
    match probe.metrics() {
        Ok(page) => (StatusCode::OK, [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], page),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode the metrics");
            let text = "text/plain; charset=utf-8";
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, text)],
                "cannot encode the metrics\n".into(),
            )
        }
    }
}

async fn live(State(probe): State<Probe>) -> impl IntoResponse {
    match probe.not_live() {
        None => (StatusCode::OK, "ok\n".to_string()),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

async fn ready(State(probe): State<Probe>) -> impl IntoResponse {
    match probe.not_ready() {
        None => (StatusCode::OK, "ready\n".to_string()),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

/// Binds `addr` now (so a taken port fails start-up) and serves `probe` in
/// the background. Returns the bound address.
pub(crate) async fn serve(addr: &str, probe: Probe) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(probe)).await {
            tracing::error!(error = %e, "the operations endpoint stopped");
        }
    });
    Ok(bound)
}
