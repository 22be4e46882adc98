//! OTLP/HTTP export of slingshot's spans, configured by the standard `OTEL_*` variables (off when unset).
//!
//! Spans always get W3C IDs, exported or not, so every published message
//! carries a `traceparent` and every log line of a request its trace and span
//! IDs. Export starts only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; the OpenTelemetry SDK reads
//! the rest (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_EXPORTER_OTLP_HEADERS`,
//! `OTEL_BSP_*`...). Spans follow the messaging semantic conventions: a
//! CONSUMER span per delivery, a PRODUCER span per publish.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

use crate::base::chain::error_chain;
use crate::base::redact;

/// Every `OTEL_*` variable slingshot reads or hands to the OpenTelemetry SDK,
/// with what it does: `--help` lists them.
pub(crate) const VARIABLES: [(&str, &str); 14] = [
    (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTLP/HTTP collector base URL; set it to export spans (off when unset)",
    ),
    (
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "the full traces URL, instead of the base URL + /v1/traces",
    ),
    (
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "http/protobuf, the one protocol supported",
    ),
    ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "the same, for traces only"),
    (
        "OTEL_EXPORTER_OTLP_HEADERS",
        "headers sent with every export (key=value,...)",
    ),
    ("OTEL_EXPORTER_OTLP_TIMEOUT", "export timeout in milliseconds"),
    ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "the same, for traces only"),
    ("OTEL_TRACES_EXPORTER", "otlp (the default) or none"),
    ("OTEL_SDK_DISABLED", "true turns export off"),
    (
        "OTEL_SERVICE_NAME",
        "the service.name resource attribute (default: the service's name)",
    ),
    ("OTEL_RESOURCE_ATTRIBUTES", "more resource attributes (key=value,...)"),
    ("OTEL_TRACES_SAMPLER", "the sampler (parentbased_always_on by default)"),
    ("OTEL_TRACES_SAMPLER_ARG", "the sampler's argument"),
    ("OTEL_BSP_*", "the batch span processor's queue, batch size and delays"),
];

/// Where spans go, as the `OTEL_*` variables say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Export {
    /// Not exported: no OTLP endpoint is set, or `OTEL_SDK_DISABLED=true`,
    /// or `OTEL_TRACES_EXPORTER=none`. Spans still get IDs for headers and logs.
    Off,
    /// OTLP over HTTP/protobuf to this URL (`…/v1/traces`).
    Otlp(String),
}

impl Export {
    /// Reads the export settings through `var` (the environment, in a
    /// service). Only OTLP over HTTP/protobuf is built in; another protocol
    /// or exporter is an error that says so.
    pub(crate) fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Export, String> {
        let set = |name: &str| var(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(Export::Off);
        }
        match set("OTEL_TRACES_EXPORTER").as_deref() {
            None | Some("otlp") => {}
            Some("none") => return Ok(Export::Off),
            Some(other) => {
                return Err(format!(
                    "OTEL_TRACES_EXPORTER={other}: slingshot exports traces with `otlp` (or `none`)"
                ))
            }
        }
        let url = match (
            set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            set("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(traces), _) => traces,
            (None, Some(base)) => traces_url(&base)?,
            (None, None) => return Ok(Export::Off),
        };
        for name in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
            if let Some(protocol) = set(name) {
                if protocol != "http/protobuf" {
                    return Err(format!(
                        "{name}={protocol}: slingshot exports OTLP over http/protobuf only (a collector's port 4318)"
                    ));
                }
                break;
            }
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "OTLP endpoint {:?}: not an http:// or https:// URL",
                redact::url(&url)
            ));
        }
        Ok(Export::Otlp(url))
    }
}

/// The traces URL under the base URL `base` (`OTEL_EXPORTER_OTLP_ENDPOINT`):
/// `v1/traces` appended to its path, its query (an API key, say) kept.
fn traces_url(base: &str) -> Result<String, String> {
    let not_http = || format!("OTLP endpoint {:?}: not an http:// or https:// URL", redact::url(base));
    let mut url = url::Url::parse(base).map_err(|_| not_http())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(not_http());
    }
    url.path_segments_mut()
        .map_err(|()| not_http())?
        .pop_if_empty()
        .extend(["v1", "traces"]);
    Ok(url.to_string())
}

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// The OTLP URL spans are exported to, for scrubbing its secrets from the
/// exporter's messages.
static ENDPOINT: OnceLock<String> = OnceLock::new();

/// `text` with the secrets of the OTLP endpoint redacted.
fn scrub(text: &str) -> String {
    match ENDPOINT.get() {
        Some(endpoint) => redact::in_text(text, endpoint),
        None => text.to_string(),
    }
}

/// The tracer provider of this process, built once as `export` says; spans
/// of `service` name it unless `OTEL_SERVICE_NAME` or
/// `OTEL_RESOURCE_ATTRIBUTES` does.
pub(crate) fn provider(service: Option<&str>, export: &Export) -> Result<SdkTracerProvider, String> {
    if let Some(provider) = PROVIDER.get() {
        return Ok(provider.clone());
    }
    let mut resource = Resource::builder();
    let named = std::env::var_os("OTEL_SERVICE_NAME").is_some_and(|v| !v.is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    if let (Some(service), false) = (service, named) {
        resource = resource.with_service_name(service.to_string());
    }
    let mut builder = SdkTracerProvider::builder().with_resource(resource.build());
    if let Export::Otlp(url) = export {
        let _ = ENDPOINT.set(url.clone());
        // The endpoint is the one `Export::from_vars` resolved (the
        // exporter's own joining of a base URL would append the path after
        // its query); the exporter reads the headers and timeout from the
        // `OTEL_*` variables.
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(url.clone())
            .with_protocol(Protocol::HttpBinary)
            .with_http_client(OtlpClient::new(export_timeout()))
            .build()
            .map_err(|e| scrub(&format!("OTLP exporter: {e}")))?;
        builder = builder.with_batch_exporter(exporter);
    }
    Ok(PROVIDER.get_or_init(|| builder.build()).clone())
}

/// Exports what is left and stops the exporter. Blocking: call it from the
/// main thread once the async runtime has finished its work, not from an
/// async task.
pub(crate) fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        if let Err(e) = provider.shutdown() {
            eprintln!("warning: exporting the last spans failed: {}", scrub(&e.to_string()));
        }
    }
}

/// `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` or `OTEL_EXPORTER_OTLP_TIMEOUT`
/// (milliseconds), 10 s by default.
fn export_timeout() -> Duration {
    ["OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"]
        .iter()
        .find_map(|name| std::env::var(name).ok()?.trim().parse::<u64>().ok())
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(10))
}

/// The OTLP exporter's HTTP client: slingshot's reqwest on a small runtime of
/// its own. The SDK exports from a dedicated thread that is not a tokio
/// thread, so the client brings the reactor it needs; no async thread of the
/// service ever waits for the collector. A failing export is logged once,
/// when it starts failing, and again when it works again.
#[derive(Debug)]
struct OtlpClient {
    client: reqwest::Client,
    timeout: Duration,
    runtime: OnceLock<Result<tokio::runtime::Runtime, String>>,
    failing: AtomicBool,
}

impl OtlpClient {
    fn new(timeout: Duration) -> Self {
        OtlpClient {
            client: reqwest::Client::new(),
            timeout,
            runtime: OnceLock::new(),
            failing: AtomicBool::new(false),
        }
    }

    /// Logs a change between exporting and failing to: `problem` is why an
    /// export failed, `None` after one that worked.
    fn report(&self, problem: Option<String>) {
        match problem {
            Some(problem) if !self.failing.swap(true, Ordering::Relaxed) => {
                tracing::warn!("exporting spans failed: {problem}; spans are dropped until the collector takes them");
            }
            None if self.failing.swap(false, Ordering::Relaxed) => {
                tracing::info!("exporting spans works again");
            }
            _ => {}
        }
    }
}

#[async_trait::async_trait]
impl HttpClient for OtlpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let runtime = self
            .runtime
            .get_or_init(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("cannot start the exporter's runtime: {e}"))
            })
            .as_ref()
            .map_err(|e| HttpError::from(e.clone()))?;
        let (parts, body) = request.into_parts();
        let shown = redact::url(&parts.uri.to_string());
        let sent = self
            .client
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .timeout(self.timeout)
            .body(body);
        // reqwest's errors name the URL, credentials and all: shown redacted.
        let failed = |e: reqwest::Error| -> HttpError {
            let url = e.url().map(|u| redact::url(u.as_str())).unwrap_or_default();
            scrub(&format!("POST {url}: {}", error_chain(&e.without_url()))).into()
        };
        let answered = runtime.block_on(async move {
            let response = sent.send().await.map_err(failed)?;
            let mut answer = Response::builder().status(response.status());
            if let Some(headers) = answer.headers_mut() {
                headers.extend(response.headers().clone());
            }
            let body = response.bytes().await.map_err(failed)?;
            Ok::<_, HttpError>(answer.body(body)?)
        });
        self.report(match &answered {
            Ok(answer) if answer.status().is_success() => None,
            Ok(answer) => Some(format!("POST {shown} answered {}", answer.status())),
            Err(e) => Some(e.to_string()),
        });
        answered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn export(vars: &[(&str, &str)]) -> Result<Export, String> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Export::from_vars(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn export_is_off_unless_an_endpoint_is_set() {
        assert_eq!(export(&[]), Ok(Export::Off));
        assert_eq!(export(&[("OTEL_SERVICE_NAME", "x")]), Ok(Export::Off));
        assert_eq!(export(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]), Ok(Export::Off));
        let on = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")];
        assert_eq!(export(&on), Ok(Export::Otlp("http://collector:4318/v1/traces".into())));
        assert_eq!(
            export(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://traces.example/x"),
            ]),
            Ok(Export::Otlp("https://traces.example/x".into())),
            "the traces endpoint is used as it is"
        );
        for off in [("OTEL_SDK_DISABLED", "TRUE"), ("OTEL_TRACES_EXPORTER", "none")] {
            assert_eq!(export(&[on[0], off]), Ok(Export::Off), "{off:?}");
        }
        assert_eq!(
            export(&[on[0], ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]),
            Ok(Export::Otlp("http://collector:4318/v1/traces".into()))
        );
    }

    #[test]
    fn unsupported_export_settings_say_what_is_supported() {
        let on = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        let grpc = export(&[on, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).unwrap_err();
        assert!(grpc.contains("http/protobuf only"), "{grpc}");
        // The traces variable wins over the general one.
        let mixed = export(&[
            on,
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ])
        .unwrap_err();
        assert!(
            mixed.starts_with("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=http/json"),
            "{mixed}"
        );
        let zipkin = export(&[on, ("OTEL_TRACES_EXPORTER", "zipkin")]).unwrap_err();
        assert!(zipkin.contains("`otlp`"), "{zipkin}");
        let bare = export(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")]).unwrap_err();
        assert!(bare.contains("not an http"), "{bare}");
    }

    #[test]
    fn a_base_endpoint_keeps_its_query_and_errors_hide_its_secrets() {
        assert_eq!(
            export(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://u:otelpass@c:4318/?api_key=k3y")]),
            Ok(Export::Otlp("http://u:otelpass@c:4318/v1/traces?api_key=k3y".into()))
        );
        assert_eq!(
            export(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c/prefix/")]),
            Ok(Export::Otlp("https://c/prefix/v1/traces".into()))
        );
        for (name, value) in [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://u:otelpass@c/?api_key=k3y"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "u:otelpass@c?api_key=k3y"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "u:otelpass@c/v1/traces?api_key=k3y",
            ),
        ] {
            let err = export(&[(name, value)]).unwrap_err();
            assert!(err.contains("not an http"), "{err}");
            assert!(!err.contains("otelpass") && !err.contains("k3y"), "{err}");
        }
    }
}
