//! A sys-map server: serves a sys-map file's endpoints over HTTP, for tests and local clusters.
//!
//! `GET /{path}` answers the endpoint's body: JSON for objects, plain text
//! for the bucket endpoints, 404 for anything else. Run it with the
//! `slingshot-sysmap` binary or embed it with [`serve`].

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use super::file::FileSysMap;

/// The HTTP app serving `map`.
pub fn router(map: FileSysMap) -> Router {
    Router::new().route("/{*path}", get(endpoint)).with_state(Arc::new(map))
}

async fn endpoint(State(map): State<Arc<FileSysMap>>, Path(path): Path<String>) -> Response {
    match map.body(&path) {
        Some(body) => {
            let kind = if body.trim_start().starts_with(['{', '[']) {
                "application/json"
            } else {
                "text/plain; charset=utf-8"
            };
            ([(header::CONTENT_TYPE, kind)], body).into_response()
        }
        None => (StatusCode::NOT_FOUND, format!("no sys-map endpoint /{path}\n")).into_response(),
    }
}

/// Serves `map` on `listener` until the task is dropped or the listener fails.
pub async fn serve(map: FileSysMap, listener: TcpListener) -> std::io::Result<()> {
    axum::serve(listener, router(map)).await
}
