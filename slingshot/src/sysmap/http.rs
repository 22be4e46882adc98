//! The sys-map over HTTP: `GET {base}/{path}`, with timeouts, and errors that say which URL answered what (credentials redacted).

use std::time::Duration;

use async_trait::async_trait;

use super::{Backends, BrokerBackend, DatabaseBackend, ObjectsBackend, SysMapError, SysMapSource};
use crate::base::chain::error_chain;
use crate::base::redact;

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
///
/// The base URL may carry credentials: a user and password (sent as HTTP
/// basic authentication) and query parameters (kept on every request, e.g.
/// `?token=...`). Whatever it shows (its description, its errors) has them
/// redacted by the crate's URL redaction.
#[derive(Debug, Clone)]
pub struct HttpSysMap {
    base: url::Url,
    /// The base as it may be shown.
    shown: String,
    client: reqwest::Client,
}

impl HttpSysMap {
    /// A client of the sys-map at `base`
    /// (`http(s)://[user:password@]host[:port][/prefix][?query]`), with the
    /// default timeouts.
    pub fn new(base: &str) -> Result<Self, SysMapError> {
        Self::with_timeouts(base, HttpTimeouts::default())
    }

    /// A client of the sys-map at `base` whose requests are bounded by `timeouts`.
    pub fn with_timeouts(base: &str, timeouts: HttpTimeouts) -> Result<Self, SysMapError> {
        let shown = redact::url(base.trim_end_matches('/'));
        let unavailable = |message: String| SysMapError::Unavailable {
            source_name: format!("sys-map {shown}"),
            path: String::new(),
            message,
        };
        let parsed = url::Url::parse(base).map_err(|e| unavailable(format!("not a URL: {e}")))?;
        if parsed.cannot_be_a_base() || !matches!(parsed.scheme(), "http" | "https") {
            return Err(unavailable("not an http:// or https:// URL".into()));
        }
        let client = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .timeout(timeouts.request)
            .user_agent(concat!("slingshot/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                unavailable(format!(
                    "cannot build an HTTP client: {}",
                    error_chain(&e.without_url())
                ))
            })?;
        Ok(HttpSysMap {
            base: parsed,
            shown,
            client,
        })
    }

    /// The URL of endpoint `path`: the base's path extended by `path`'s
    /// segments, its query kept.
    fn url(&self, path: &str) -> url::Url {
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(path.trim_start_matches('/').split('/'));
        }
        url
    }
}

#[async_trait]
impl SysMapSource for HttpSysMap {
    async fn get(&self, path: &str) -> Result<String, SysMapError> {
        let url = self.url(path);
        let raw = url.to_string();
        let shown = redact::url(&raw);
        // Whatever the server or a library puts in a message is scrubbed too.
        let unavailable = |message: String| SysMapError::Unavailable {
            source_name: self.describe(),
            path: path.to_string(),
            message: redact::in_text(&message, &raw),
        };
        // reqwest's errors name the URL: they are shown without it.
        let response = self.client.get(url).send().await.map_err(|e| {
            let why = if e.is_timeout() {
                format!("GET {shown} timed out")
            } else if e.is_connect() {
                format!("GET {shown}: cannot connect ({})", error_chain(&e.without_url()))
            } else {
                format!("GET {shown}: {}", error_chain(&e.without_url()))
            };
            unavailable(why)
        })?;
        let status = response.status();
        let body = response.text().await.map_err(|e| {
            unavailable(format!(
                "GET {shown}: reading the body: {}",
                error_chain(&e.without_url())
            ))
        })?;
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(SysMapError::Missing {
                source_name: self.describe(),
                path: path.to_string(),
                hint: format!(" (GET {shown} answered 404)"),
            });
        }
        if !status.is_success() {
            let snippet: String = body.chars().take(200).collect();
            let message = redact::in_text(&format!("GET {shown} answered {status}: {snippet}"), &raw);
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
        format!("sys-map {}", self.shown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use axum::extract::{Path, RawQuery};
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::get;

    const SECRETS: [&str; 2] = ["s3cr3t", "t0k3n"];

    fn assert_redacted(text: &str, host: &str) {
        for secret in SECRETS {
            assert!(!text.contains(secret), "shows {secret}: {text}");
        }
        assert!(text.contains(host), "does not name {host}: {text}");
    }

    /// A sys-map that answers only requests with the user, password and
    /// token of `sysmap_url`; `/broken` answers 500 with the URL it was asked.
    async fn server() -> (String, tokio::task::JoinHandle<()>) {
        async fn endpoint(
            Path(path): Path<String>,
            RawQuery(raw): RawQuery,
            headers: HeaderMap,
        ) -> (StatusCode, String) {
            // user:s3cr3t in base64.
            let authorized =
                headers.get("authorization").and_then(|v| v.to_str().ok()) == Some("Basic dXNlcjpzM2NyM3Q=");
            if !authorized || raw.as_deref() != Some("token=t0k3n") {
                return (StatusCode::UNAUTHORIZED, "who are you?".into());
            }
            match path.as_str() {
                "prefix/svc" => (StatusCode::OK, r#"{"in": "q"}"#.into()),
                "prefix/broken" => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot serve /{path}?{}", raw.unwrap_or_default()),
                ),
                _ => (StatusCode::NOT_FOUND, String::new()),
            }
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let app = axum::Router::new().route("/{*path}", get(endpoint));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (host, task)
    }

    #[tokio::test]
    async fn credentials_are_sent_and_never_shown() {
        let (host, server) = server().await;
        let map = HttpSysMap::new(&format!("http://user:s3cr3t@{host}/prefix/?token=t0k3n")).unwrap();
        assert_eq!(
            map.describe(),
            format!("sys-map http://user:***@{host}/prefix/?token=***")
        );
        assert_eq!(map.get("svc").await.unwrap(), r#"{"in": "q"}"#);
        assert_eq!(map.get("/svc").await.unwrap(), r#"{"in": "q"}"#);

        let missing = map.get("absent").await.unwrap_err().to_string();
        assert!(missing.contains("answered 404"), "{missing}");
        assert_redacted(&missing, &host);
        let broken = map.get("broken").await.unwrap_err().to_string();
        assert!(
            broken.contains("answered 500 Internal Server Error: cannot serve /prefix/broken?token=***"),
            "{broken}"
        );
        assert_redacted(&broken, &host);
        server.abort();
    }

    #[tokio::test]
    async fn a_sys_map_that_cannot_be_reached_is_named_without_its_credentials() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let map = HttpSysMap::new(&format!("http://user:s3cr3t@127.0.0.1:{port}?token=t0k3n")).unwrap();
        let err = map.get("svc").await.unwrap_err().to_string();
        assert!(err.contains("cannot connect"), "{err}");
        assert!(
            err.contains(&format!(
                "GET http://user:***@127.0.0.1:{port}/svc?token=***: cannot connect"
            )),
            "{err}"
        );
        assert_redacted(&err, &format!("127.0.0.1:{port}"));
    }

    #[test]
    fn a_location_that_is_not_an_http_url_is_refused_without_its_credentials() {
        for base in [
            "ftp://user:s3cr3t@host/?token=t0k3n",
            "http://user:s3cr3t@bad host/?token=t0k3n",
        ] {
            let err = HttpSysMap::new(base).unwrap_err().to_string();
            assert!(!err.contains("s3cr3t") && !err.contains("t0k3n"), "{err}");
            assert!(err.contains("host"), "{err}");
        }
    }
}
