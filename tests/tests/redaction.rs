//! No URL is ever shown with its credentials: a real service binary runs
//! with a sys-map URL and an OTLP endpoint that carry a password and a token,
//! against the real services, and every output of `run` (until SIGTERM),
//! `check`, `asyncapi`, `topology`, and of runs whose sys-map or OTLP
//! collector cannot be reached, is searched for them.

use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::json;
use slingshot::broker::{Durability, Message};
use slingshot_tests::otlp::OtlpReceiver;
use slingshot_tests::probe::free_port;
use slingshot_tests::process::ServiceProcess;
use slingshot_tests::{drain_ids, shared_amqp_url, test_broker, Backend, Fixture};
use tokio::process::Command;

/// What must never be printed.
const SECRETS: [&str; 4] = ["s3cr3t", "t0k3n", "otelpass", "k3y"];

/// `http://127.0.0.1:PORT` with a user, a password and a token.
fn sysmap_with_secrets(base: &str) -> String {
    let host = base.strip_prefix("http://").expect("an http:// sys-map");
    format!("http://user:s3cr3t@{host}/?token=t0k3n")
}

/// The OTLP base URL `base` with a user, a password and an API key.
fn otlp_with_secrets(base: &str) -> String {
    let host = base.strip_prefix("http://").expect("an http:// receiver");
    format!("http://u:otelpass@{host}/?api_key=k3y")
}

/// `fault-service relay ARGS` with `sysmap`, `otlp` and a verbose log,
/// outputs captured.
fn relay(args: &[&str], sysmap: &str, otlp: &str, dir: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fault-service"));
    command
        .arg("relay")
        .args(args)
        .env("SLINGSHOT_SYS_MAP", sysmap)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp)
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .env("OTEL_EXPORTER_OTLP_TIMEOUT", "3000")
        .env("SLINGSHOT_STAGING_DIR", dir)
        .env("SLINGSHOT_HTTP_ADDR", "off")
        .env("SLINGSHOT_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Everything a finished command printed, stdout then stderr.
fn printed(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Asserts `out` (what `what` printed) shows no secret, and names `host` when given.
fn assert_redacted(what: &str, out: &str, host: Option<&str>) {
    for secret in SECRETS {
        if let Some(at) = out.find(secret) {
            let line = out[..at].rfind('\n').map_or(0, |n| n + 1);
            let end = out[at..].find('\n').map_or(out.len(), |n| at + n);
            panic!("{what} printed {secret:?}:\n{}", &out[line..end]);
        }
    }
    if let Some(host) = host {
        assert!(out.contains(host), "{what} does not name {host}:\n{out}");
    }
}

async fn finished(mut command: Command, what: &str) -> Output {
    tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 60 s"))
        .unwrap_or_else(|e| panic!("{what} could not run: {e}"))
}

/// Reads `pipe` to its end in the background.
fn read_all(pipe: Option<impl tokio::io::AsyncRead + Unpin + Send + 'static>) -> tokio::task::JoinHandle<String> {
    tokio::spawn(async move {
        let mut text = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut pipe, &mut text).await;
        }
        String::from_utf8_lossy(&text).into_owned()
    })
}

/// Runs the service until one request went through it, then SIGTERM; its outputs.
async fn run_one_request(f: &Fixture, sysmap: &str, otlp: &str, id: u64) -> String {
    let broker = test_broker(&shared_amqp_url()).await;
    for q in ["in", "out"] {
        broker.declare(&f.q(q), Durability::Durable).await.expect("declare");
    }
    // Its outputs are piped: it keeps no log file.
    let mut service = ServiceProcess::start(relay(&["run"], sysmap, otlp, f.dir.path()), "relay", f.dir.path());
    // Read as it is written: a full pipe would stop the service.
    let child = service.child_mut();
    let (stdout, stderr) = (read_all(child.stdout.take()), read_all(child.stderr.take()));
    broker.publish(&f.q("in"), Message::id(id)).await.expect("publish");
    let start = std::time::Instant::now();
    let exited = loop {
        if broker.ready_count(&f.q("out")).await.expect("count") > 0 {
            break None;
        }
        if let Some(status) = service.exited() {
            break Some(status);
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "request {id} did not go through within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    if let Some(status) = exited {
        let out = format!("{}{}", stdout.await.expect("stdout"), stderr.await.expect("stderr"));
        assert_redacted("run (stopped by itself)", &out, None);
        panic!("the relay stopped by itself ({status}):\n{out}");
    }
    assert_eq!(drain_ids(broker.as_ref(), &f.q("out")).await, [id]);
    // The exporter sends the spans within its schedule delay (200 ms).
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, _) = service.stop_status().await;
    let out = format!("{}{}", stdout.await.expect("stdout"), stderr.await.expect("stderr"));
    assert!(status.success(), "exit {status} after SIGTERM:\n{out}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_output_shows_the_credentials_of_a_url() {
    let f = Fixture::new(Backend::Real, "redact");
    let base = f
        .serve_sysmap(json!({
            "relay": {"in": f.q("in"), "out": [{"case": true, "queues": [f.q("out")]}]},
            "relay/out": f.bucket("out"),
        }))
        .await;
    let sysmap = sysmap_with_secrets(&base);
    let host = base.trim_start_matches("http://").to_string();
    let receiver = OtlpReceiver::start().await;
    let otlp = otlp_with_secrets(&receiver.url);
    let otlp_host = receiver.url.trim_start_matches("http://").to_string();
    let dir = f.dir.path();

    // `run`, until SIGTERM: its start-up log names both URLs.
    let out = run_one_request(&f, &sysmap, &otlp, 7).await;
    assert_redacted("run", &out, Some(&host));
    assert_redacted("run", &out, Some(&otlp_host));
    // The spans reached the collector: the endpoint's path and query were kept.
    receiver
        .wait_until(Duration::from_secs(30), |spans| {
            spans.iter().any(|s| s.service == "relay")
        })
        .await;

    for (args, needle) in [
        (&["check"][..], "all "),
        (&["asyncapi"], "\"asyncapi\""),
        (&["topology"], "flowchart"),
    ] {
        let output = finished(relay(args, &sysmap, &otlp, dir), args[0]).await;
        let out = printed(&output);
        assert!(output.status.success(), "{args:?} failed:\n{out}");
        assert!(out.contains(needle), "{args:?} lacks {needle:?}:\n{out}");
        // `topology` prints the pipeline only, no URL at all.
        let named = (args[0] != "topology").then_some(host.as_str());
        assert_redacted(args[0], &out, named);
    }

    // A sys-map nobody answers at: the HTTP errors of every command.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let unreachable = sysmap_with_secrets(&nowhere);
    let nowhere_host = nowhere.trim_start_matches("http://").to_string();
    for args in [
        &["run"][..],
        &["check"],
        &["asyncapi"],
        &["topology"],
        &["dead-letters", "list"],
    ] {
        let output = finished(relay(args, &unreachable, &otlp, dir), args[0]).await;
        let out = printed(&output);
        assert!(!output.status.success(), "{args:?} succeeded without a sys-map:\n{out}");
        assert!(out.contains("cannot connect"), "{args:?}:\n{out}");
        assert_redacted(&format!("{args:?} without a sys-map"), &out, Some(&nowhere_host));
    }

    // A collector nobody answers at: the exporter's errors.
    let lost = format!("http://127.0.0.1:{}", free_port());
    let out = run_one_request(&f, &sysmap, &otlp_with_secrets(&lost), 8).await;
    assert!(out.contains("exporting spans failed: POST http://"), "{out}");
    assert_redacted(
        "run without a collector",
        &out,
        Some(lost.trim_start_matches("http://")),
    );

    // An endpoint that is not an HTTP URL: the warning that traces are not exported.
    let output = finished(
        relay(&["check"], &sysmap, "ftp://u:otelpass@127.0.0.1:1/?api_key=k3y", dir),
        "check",
    )
    .await;
    let out = printed(&output);
    assert!(
        out.contains("not an http:// or https:// URL; traces are not exported"),
        "{out}"
    );
    assert_redacted("check with an FTP collector", &out, Some("127.0.0.1:1"));
}
