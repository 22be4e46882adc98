//! The sys-map over HTTP: `GET {base}/{path}`, with timeouts, and errors that say which URL answered what.

use std::time::Duration;

use async_trait::async_trait;

use super::{Backends, BrokerBackend, DatabaseBackend, ObjectsBackend, SysMapError, SysMapSource};

/// Connect timeout of sys-map requests.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Whole-request timeout of sys-map requests.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// The configuration service of existing deployments. Services configured
/// by it run on RabbitMQ, S3 and PostgreSQL.
#[derive(Debug, Clone)]
pub struct HttpSysMap {
    base: String,
    client: reqwest::Client,
}

impl HttpSysMap {
    /// A client of the sys-map at `base` (`http(s)://host[:port][/prefix]`).
    pub fn new(base: &str) -> Result<Self, SysMapError> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("slingshot/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SysMapError::Unavailable {
                source_name: base.to_string(),
                path: String::new(),
                message: format!("cannot build an HTTP client: {e}"),
            })?;
        Ok(HttpSysMap {
            base: base.trim_end_matches('/').to_string(),
            client,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base, path.trim_start_matches('/'))
    }
}

#[async_trait]
impl SysMapSource for HttpSysMap {
    async fn get(&self, path: &str) -> Result<String, SysMapError> {
        let url = self.url(path);
        let unavailable = |message: String| SysMapError::Unavailable {
            source_name: self.describe(),
            path: path.to_string(),
            message,
        };
        let response = self.client.get(&url).send().await.map_err(|e| {
            let why = if e.is_timeout() {
                format!("GET {url} timed out")
            } else if e.is_connect() {
                format!("GET {url}: cannot connect ({e})")
            } else {
                format!("GET {url}: {e}")
            };
            unavailable(why)
        })?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| unavailable(format!("GET {url}: reading the body: {e}")))?;
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(SysMapError::Missing {
                source_name: self.describe(),
                path: path.to_string(),
                hint: format!(" (GET {url} answered 404)"),
            });
        }
        if !status.is_success() {
            let snippet: String = body.chars().take(200).collect();
            return Err(unavailable(format!("GET {url} answered {status}: {snippet}")));
        }
        Ok(body)
    }

    fn backends(&self) -> Backends {
        Backends {
            broker: BrokerBackend::RabbitMq,
            objects: ObjectsBackend::S3,
            database: DatabaseBackend::Postgres,
        }
    }

    fn describe(&self) -> String {
        format!("sys-map {}", self.base)
    }
}
