//! The no-op and latency sections again on RabbitMQ 4, when the test suite's 4.x broker is available.
//!
//! `scripts/rabbitmq4.sh start` runs RabbitMQ 4.0.5 beside the host's 3.10
//! and `scripts/rabbitmq4.sh env` exports its URL,
//! `SLINGSHOT_TEST_RABBITMQ4_URL`. With it set and the node answering, both
//! sections run a second time on that node (slingshot's service through a
//! sys-map whose `rabbitmq` endpoint names it, the raw baseline and the load
//! generator connected to it) and add their figures with the suffix
//! `_rmq4`, the broker's CPU measured on the process listening on its port.
//! Otherwise one line of the output says why they did not run: the bench
//! still measures everything else, as it does without RabbitMQ 4 installed.

use anyhow::Context as _;
use lapin::uri::AMQPUri;
use serde_json::json;
use slingshot_tests::test_broker;

use crate::harness::Bench;
use crate::raw;
use crate::report::Report;
use crate::sections;

/// The variable `scripts/rabbitmq4.sh env` exports.
const URL_VAR: &str = "SLINGSHOT_TEST_RABBITMQ4_URL";

/// The secret reference of the RabbitMQ 4 endpoint's password.
const SECRET_REF: &str = "bench/rabbitmq4";

/// The suffix of the figures measured on RabbitMQ 4.
pub(crate) const SUFFIX: &str = "_rmq4";

/// Puts the RabbitMQ 4 password where the sys-map's secret reference
/// resolves it from (its environment variable). Call it before any other
/// thread starts: it changes this process's environment.
pub(crate) fn export_secret() {
    if let Ok(Ok(uri)) = std::env::var(URL_VAR).map(|url| url.parse::<AMQPUri>()) {
        std::env::set_var(
            slingshot::sysmap::secrets::env_var_name(SECRET_REF),
            uri.authority.userinfo.password,
        );
    }
}

/// RabbitMQ 4's URL and its parts, or the line that says why the sections
/// do not run on it.
fn url() -> Result<(String, AMQPUri), String> {
    let how = format!("scripts/rabbitmq4.sh start && eval \"$(scripts/rabbitmq4.sh env)\" sets {URL_VAR}");
    let url = std::env::var(URL_VAR).map_err(|_| format!("{URL_VAR} is not set ({how})"))?;
    if std::env::var("SLINGSHOT_TEST_AMQP_URL").is_ok_and(|shared| shared == url) {
        return Err("SLINGSHOT_TEST_AMQP_URL is RabbitMQ 4 already: the figures without the suffix are its".into());
    }
    let uri = url
        .parse::<AMQPUri>()
        .map_err(|e| format!("{URL_VAR} is not an AMQP URL: {e}"))?;
    if uri.vhost != "/" {
        return Err(format!(
            "{URL_VAR} names virtual host {:?}; the bench's sys-map reaches only \"/\"",
            uri.vhost
        ));
    }
    Ok((url, uri))
}

/// Runs the wanted ones of the no-op and latency sections on RabbitMQ 4, or
/// says why not; then watches `watched` (the 3.10 broker's port) again.
pub(crate) async fn run(
    bench: &Bench,
    report: &mut Report,
    noop: bool,
    latency: bool,
    watched: Option<u16>,
) -> anyhow::Result<()> {
    let (url, uri) = match url() {
        Ok(url) => url,
        Err(why) => {
            report.note(format!("RabbitMQ 4: no-op and latency not measured: {why}"));
            return Ok(());
        }
    };
    let (host, port) = (uri.authority.host.clone(), uri.authority.port);
    let redacted = format!("{host}:{port}");
    if let Err(e) = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
        .await
        .map(|conn| drop(conn.close(200, "probe".into())))
    {
        report.note(format!(
            "RabbitMQ 4: no-op and latency not measured: no broker answers at {redacted} ({URL_VAR}): {e}; \
             scripts/rabbitmq4.sh start runs it"
        ));
        return Ok(());
    }
    eprintln!("\n==> the no-op and latency sections on RabbitMQ 4 at {redacted} (figures suffixed {SUFFIX})");
    match raw::watch_broker(port) {
        Ok(pid) => eprintln!("broker CPU: process {pid}"),
        Err(e) => eprintln!("broker CPU not measured on RabbitMQ 4: {e}"),
    }
    let four = Bench {
        amqp: url.clone(),
        broker: test_broker(&url).await,
        s3: bench.s3.clone(),
        rabbitmq: Some(json!({
            "host": [host], "port": [port], "username": [uri.authority.userinfo.username], "pass": [SECRET_REF],
        })),
    };
    report.suffix = SUFFIX.to_string();
    let measured = async {
        if noop {
            sections::noop::run(&four, report)
                .await
                .context("no-op on RabbitMQ 4")?;
        }
        if latency {
            sections::latency::run(&four, report)
                .await
                .context("latency on RabbitMQ 4")?;
        }
        anyhow::Ok(())
    }
    .await;
    report.suffix.clear();
    if let Some(port) = watched {
        let _ = raw::watch_broker(port);
    }
    measured
}
