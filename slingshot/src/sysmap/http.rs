//! The sys-map over HTTP: `GET {base}/{path}`, with timeouts, and errors that say which URL answered what.

use std::time::Duration;

use async_trait::async_trait;

use super::{Backends, BrokerBackend, DatabaseBackend, ObjectsBackend, SysMapError, SysMapSource};

/// The bounds of a sys-map request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpTimeouts {
    /// Connecting (TCP and TLS).
    pub connect: Duration,
    /// The whole request: connecting, sending, reading the answer.
    pub request: Duration,
}

impl Default for HttpTimeouts {
    /// 5 s to connect, 15 s in all: the defaults of
    /// `SLINGSHOT_SYS_MAP_CONNECT_TIMEOUT_SECS` and `SLINGSHOT_SYS_MAP_TIMEOUT_SECS`.
    fn default() -> Self {
        HttpTimeouts {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(15),
        }
    }
}

/// The configuration service of existing deployments. Services configured
/// by it run on RabbitMQ, S3 and PostgreSQL.
#[derive(Debug, Clone)]
pub struct HttpSysMap {
    base: String,
    client: reqwest::Client,
}

impl HttpSysMap {
    /// A client of the sys-map at `base` (`http(s)://host[:port][/prefix]`),
    /// with the default timeouts.
    pub fn new(base: &str) -> Result<Self, SysMapError> {
        Self::with_timeouts(base, HttpTimeouts::default())
    }

    /// A client of the sys-map at `base` whose requests are bounded by `timeouts`.
    pub fn with_timeouts(base: &str, timeouts: HttpTimeouts) -> Result<Self, SysMapError> {
        let client = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .timeout(timeouts.request)
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
            let message = format!("GET {url} answered {status}: {snippet}");
            // A server failing, or asking to be asked later, is an outage;
            // any other refusal is an answer that waiting will not change.
            let later = status.is_server_error()
                || status == reqwest::StatusCode::REQUEST_TIMEOUT
                || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
            return Err(match later {
                true => unavailable(message),
                false => SysMapError::Refused {
                    source_name: self.describe(),
                    path: path.to_string(),
                    message,
                },
            });
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
