//! The container image of `examples/Dockerfile`, run without a Docker engine:
//! its root filesystem (built by `scripts/image-check.sh` from the same
//! Debian release, with the Dockerfile's own RUN commands) holds the release
//! binary where COPY puts it; this test starts it in a chroot as the
//! Dockerfile's USER, with its ENV, ENTRYPOINT and CMD, against the real
//! RabbitMQ, S3 and sys-map, and checks that it consumes and routes
//! requests, answers its probes, and exits 0 on SIGTERM.
//!
//! Not part of `cargo test --workspace` (`test = false`: it needs root and
//! the root filesystem); `scripts/image-check.sh` runs it, and
//! `scripts/test.sh` runs that script.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use slingshot::broker::{Durability, Message};
use slingshot::storage::ObjectStore;
use slingshot_tests::probe::{free_port, get, wait_status_showing};
use slingshot_tests::process::ServiceProcess;
use slingshot_tests::{
    drain_ids, shared_amqp_url, test_broker, wait_for_count, Backend, Fixture, Services, SECRET_REFS,
};

/// What the Dockerfile's runtime stage says about running the image.
#[derive(Debug, Default)]
struct Image {
    user: String,
    env: Vec<(String, String)>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
}

/// The runtime stage (after the last FROM) of the Dockerfile at `path`.
fn read_dockerfile(path: &Path) -> Image {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                lines.push(std::mem::take(&mut current));
            }
        }
    }
    let stage = lines
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .expect("the Dockerfile has a FROM");
    let exec_form = |value: &str| -> Vec<String> {
        let parsed: Value =
            serde_json::from_str(value.trim()).unwrap_or_else(|e| panic!("{value:?} is not the exec (JSON) form: {e}"));
        parsed
            .as_array()
            .expect("a JSON array")
            .iter()
            .map(|v| v.as_str().expect("strings").to_string())
            .collect()
    };
    let mut image = Image::default();
    for line in &lines[stage..] {
        let (instruction, value) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        match instruction {
            "USER" => image.user = value.trim().to_string(),
            "ENV" => {
                for pair in value.split_whitespace() {
                    let (k, v) = pair.split_once('=').expect("ENV key=value");
                    image.env.push((k.to_string(), v.to_string()));
                }
            }
            "ENTRYPOINT" => image.entrypoint = exec_form(value),
            "CMD" => image.cmd = exec_form(value),
            _ => {}
        }
    }
    assert!(!image.user.is_empty(), "the runtime stage sets no USER");
    assert!(!image.entrypoint.is_empty(), "the runtime stage has no ENTRYPOINT");
    image
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_runs_as_its_user_and_serves_a_pipeline() {
    let root = PathBuf::from(std::env::var("SLINGSHOT_IMAGE_ROOT").expect(
        "SLINGSHOT_IMAGE_ROOT is not set: run this test through scripts/image-check.sh, which builds the image's root filesystem",
    ));
    let image = read_dockerfile(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/Dockerfile"));
    let binary = root.join(image.entrypoint[0].trim_start_matches('/'));
    assert!(binary.is_file(), "no {} in the image", binary.display());

    // The classifier's wiring with this test's queues and bucket.
    let f = Fixture::new(Backend::Real, "image");
    let sysmap = f
        .serve_sysmap(json!({
            "binary-classification": {"in": f.q("in"), "out": [
                {"case": true, "queues": [f.q("yes")]},
                {"case": false, "queues": [f.q("no")]},
            ]},
            "binary-classification/in": f.bucket("docs"),
        }))
        .await;
    let services = Services::from_env();
    let broker = test_broker(&shared_amqp_url()).await;
    for q in ["in", "yes", "no"] {
        broker.declare(&f.q(q), Durability::Durable).await.unwrap();
    }
    let s3 = services.s3();
    s3.put_bytes(&f.bucket("docs"), "1", b"all about slingshot".to_vec())
        .await
        .unwrap();
    s3.put_bytes(&f.bucket("docs"), "2", b"nothing to see".to_vec())
        .await
        .unwrap();

    // `docker run -e ...`: the image's ENV, then what the operator passes.
    // The probe port is free rather than the image's 9090, which another
    // process on this machine may hold.
    let port = free_port();
    let mut env: Vec<(String, String)> = image.env.clone();
    env.push(("SLINGSHOT_SYS_MAP".into(), sysmap.clone()));
    env.push(("SLINGSHOT_HTTP_ADDR".into(), format!("0.0.0.0:{port}")));
    env.push(("SLINGSHOT_LOG".into(), "info".into()));
    for reference in SECRET_REFS {
        let var = slingshot::sysmap::secrets::env_var_name(reference);
        env.push((
            var.clone(),
            std::env::var(&var).unwrap_or_else(|_| panic!("{var} is not set")),
        ));
    }
    // Its output goes to `image.log`, the log of the service called `image`.
    let out = std::fs::File::create(f.dir.path().join("image.log")).unwrap();
    let mut command = tokio::process::Command::new("chroot");
    command
        .arg(format!("--userspec={}", image.user))
        .arg(&root)
        .arg("/usr/bin/env")
        .arg("-i")
        .args(env.iter().map(|(k, v)| format!("{k}={v}")))
        .args(&image.entrypoint)
        .args(&image.cmd)
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .kill_on_drop(true);
    let service = ServiceProcess::start(command, "image", f.dir.path());
    let pid = service.pid();

    let base = format!("http://127.0.0.1:{port}");
    wait_status_showing(&format!("{base}/readyz"), 200, Duration::from_secs(60), || {
        service.log()
    })
    .await;
    assert_eq!(
        get(&format!("{base}/healthz")).await.unwrap(),
        (200, "ok\n".to_string())
    );

    // It is the image's binary, in the image's root, as the image's user.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let (uid, gid) = image.user.split_once(':').unwrap_or((&image.user, &image.user));
    let ids = |key: &str| -> Vec<String> {
        let line = status.lines().find(|l| l.starts_with(key)).unwrap();
        line.split_whitespace().skip(1).map(str::to_string).collect()
    };
    assert_eq!(ids("Uid:"), [uid; 4], "{status}");
    assert_eq!(ids("Gid:"), [gid; 4], "{status}");
    assert_eq!(std::fs::read_link(format!("/proc/{pid}/root")).unwrap(), root);
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/exe")).unwrap(),
        binary,
        "the process runs the image's ENTRYPOINT"
    );

    for id in [1, 2] {
        broker.publish(&f.q("in"), Message::id(id)).await.unwrap();
    }
    wait_for_count(broker.as_ref(), &f.q("yes"), 1, Duration::from_secs(60)).await;
    wait_for_count(broker.as_ref(), &f.q("no"), 1, Duration::from_secs(60)).await;
    assert_eq!(drain_ids(broker.as_ref(), &f.q("yes")).await, [1]);
    assert_eq!(drain_ids(broker.as_ref(), &f.q("no")).await, [2]);
    assert_eq!(broker.ready_count(&f.q("in")).await.unwrap(), 0);

    let output = service.stop().await;
    // SLINGSHOT_LOG_FORMAT=json from the image: every log line is JSON.
    let lines: Vec<&str> = output.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "the service logged nothing");
    for line in &lines {
        assert!(
            serde_json::from_str::<Value>(line).is_ok(),
            "not a JSON log line: {line}\n{output}"
        );
    }
    assert!(output.contains("stopped cleanly"), "{output}");
    println!(
        "image: {} ran as {} in {}: routed 1 -> yes, 2 -> no, /healthz and /readyz 200, exit 0 on SIGTERM",
        image.entrypoint.join(" "),
        image.user,
        root.display()
    );
}
