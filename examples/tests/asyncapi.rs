//! The examples' generated binaries print AsyncAPI 3.0 documents of their
//! pipelines, and those documents validate against the official AsyncAPI
//! 3.0 JSON Schema (@asyncapi/specs) and the AsyncAPI parser
//! (@asyncapi/parser), run by `tests/asyncapi/validate.mjs`.
//!
//! Needs the `services` feature. The validator is installed by
//! `scripts/test.sh` (`npm ci --prefix tests/asyncapi`); without it (or
//! without `node`) these tests fail, saying how to install it.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The validator's directory: `tests/asyncapi` of the workspace.
fn validator_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/asyncapi")
}

/// `node validate.mjs files...`: (success, output). Panics, saying how to
/// install it, if the validator is missing.
fn validate(files: &[&Path]) -> (bool, String) {
    let dir = validator_dir();
    let parser = dir.join("node_modules/@asyncapi/parser/package.json");
    assert!(
        parser.is_file(),
        "the AsyncAPI validator is not installed ({} is missing): run `npm ci --prefix tests/asyncapi` \
         (scripts/test.sh does)",
        parser.display()
    );
    let node = std::env::var("SLINGSHOT_NODE").unwrap_or_else(|_| "node".into());
    let output = Command::new(&node)
        .arg(dir.join("validate.mjs"))
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {node:?} (Node.js, needed to validate AsyncAPI documents): {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn sysmap(name: &str) -> String {
    format!("file:{}/sysmaps/{name}.json", env!("CARGO_MANIFEST_DIR"))
}

/// Runs `binary args...` with the sys-map `map` and returns the document it
/// prints.
fn asyncapi(binary: &str, args: &[&str], map: &str) -> Value {
    let output = Command::new(binary)
        .args(args)
        .env("SLINGSHOT_SYS_MAP", map)
        .env("SLINGSHOT_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{binary} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{binary} {args:?} printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

fn write(dir: &Path, name: &str, doc: &Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(doc).unwrap()).unwrap();
    path
}

/// The queue names of a document's channels.
fn queues(doc: &Value) -> Vec<String> {
    let mut queues: Vec<String> = doc["channels"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| c["bindings"]["amqp"]["queue"]["name"].as_str().unwrap().to_string())
        .collect();
    queues.sort();
    queues
}

#[test]
fn the_generated_documents_validate_as_asyncapi_3() {
    let dir = tempfile::tempdir().unwrap();
    // The whole pipeline, from one stage's binary.
    let pipeline = asyncapi(
        env!("CARGO_BIN_EXE_pipeline"),
        &["service", "ingest", "asyncapi", "tokenize", "catalog"],
        &sysmap("pipeline"),
    );
    assert_eq!(pipeline["asyncapi"], "3.0.0");
    assert_eq!(
        queues(&pipeline),
        [
            "catalog",
            "catalog.dead-letter",
            "featured",
            "ingest",
            "ingest.dead-letter",
            "published",
            "rejected",
            "review",
            "tokenize",
            "tokenize.dead-letter"
        ]
    );
    let operations = pipeline["operations"].as_object().unwrap();
    for id in [
        "ingest.receive",
        "ingest.send.true.tokenize",
        "ingest.send.false.rejected",
        "tokenize.send.long.review",
        "catalog.send.1.featured",
        "catalog.retry",
        "catalog.deadLetter",
    ] {
        assert!(operations.contains_key(id), "no operation {id}");
    }
    assert_eq!(operations["catalog.send.1.featured"]["x-slingshot-case"], 1);
    assert_eq!(operations["tokenize.receive"]["x-slingshot-buckets"]["out"], "tokens");
    assert_eq!(pipeline["servers"]["rabbitmq"]["host"], "127.0.0.1:5672");
    let headers = &pipeline["components"]["schemas"]["requestHeaders"]["properties"];
    for header in [
        "traceparent",
        "tracestate",
        "x-slingshot-trace-id",
        "x-slingshot-attempt",
    ] {
        assert!(headers[header].is_object(), "no header {header}");
    }

    // A service alone, its queues declared as the original crate declares
    // them, and a sys-map without a `rabbitmq` endpoint.
    let classifier = asyncapi(
        env!("CARGO_BIN_EXE_classifier"),
        &["asyncapi", "--queue-mode", "compatible", "--amqp-vhost", "staging"],
        &sysmap("classifier"),
    );
    assert_eq!(
        classifier["channels"]["binary-classification-inbound"]["bindings"]["amqp"]["queue"]["durable"],
        false
    );
    assert_eq!(
        classifier["channels"]["binary-classification-inbound"]["bindings"]["amqp"]["queue"]["vhost"],
        "staging"
    );
    assert!(classifier.get("servers").is_none());
    let simple = asyncapi(env!("CARGO_BIN_EXE_simple"), &["asyncapi"], &sysmap("simple"));

    // The pipeline with events: tokenize emits to a topic exchange that
    // catalog subscribes to.
    let mut with_events: Value =
        serde_json::from_str(&std::fs::read_to_string(sysmap("pipeline").trim_start_matches("file:")).unwrap())
            .unwrap();
    with_events["endpoints"]["tokenize"]["events"] = "pipeline.events".into();
    with_events["endpoints"]["catalog"]["subscribe"] =
        serde_json::json!([{"exchange": "pipeline.events", "events": ["tokenize.progress", "*.invalid-input"]}]);
    let events_map = write(dir.path(), "pipeline-events-sysmap.json", &with_events);
    let events = asyncapi(
        env!("CARGO_BIN_EXE_pipeline"),
        &["service", "ingest", "asyncapi", "tokenize", "catalog"],
        &format!("file:{}", events_map.display()),
    );
    let exchange = &events["channels"]["exchange.pipeline.events"];
    assert_eq!(exchange["bindings"]["amqp"]["is"], "routingKey");
    assert_eq!(exchange["bindings"]["amqp"]["exchange"]["type"], "topic");
    assert_eq!(events["operations"]["tokenize.emit"]["action"], "send");
    let subscribe = &events["operations"]["catalog.subscribe.pipeline.events"];
    assert_eq!(subscribe["action"], "receive");
    assert_eq!(subscribe["x-slingshot-bindings"][1], "*.invalid-input");
    assert!(events["components"]["messages"]["event"].is_object());

    // A typed stage: its objects' JSON Schemas are components, their
    // `$defs` hoisted beside them.
    let invoices = asyncapi(env!("CARGO_BIN_EXE_invoices"), &["asyncapi"], &sysmap("invoices"));
    let objects = &invoices["operations"]["invoice-totals.receive"]["x-slingshot-objects"];
    assert_eq!(objects[0]["reference"], "in");
    assert_eq!(objects[0]["bucket"], "invoices");
    assert_eq!(objects[0]["schema"]["$ref"], "#/components/schemas/object.Invoice");
    assert_eq!(objects[1]["direction"], "write");
    let schemas = &invoices["components"]["schemas"];
    assert_eq!(
        schemas["object.Invoice"]["properties"]["lines"]["items"]["$ref"],
        "#/components/schemas/object.Invoice.Line"
    );
    assert_eq!(schemas["object.Invoice.Line"]["required"][1], "amount");
    assert!(schemas["object.Total"]["properties"]["total"].is_object());

    let files = [
        write(dir.path(), "invoices.json", &invoices),
        write(dir.path(), "pipeline.json", &pipeline),
        write(dir.path(), "classifier.json", &classifier),
        write(dir.path(), "simple.json", &simple),
        write(dir.path(), "events.json", &events),
    ];
    let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let (ok, report) = validate(&paths);
    assert!(ok, "{report}");
    for file in &files {
        let name = file.display();
        assert!(
            report.contains(&format!("{name}: valid against the AsyncAPI 3.0.0 JSON Schema")),
            "{report}"
        );
        assert!(report.contains(&format!("{name}: parsed: ")), "{report}");
    }
    assert!(!report.contains(": error:"), "{report}");
    println!("{report}");
}

#[test]
fn the_validator_rejects_broken_documents() {
    let dir = tempfile::tempdir().unwrap();
    let good = asyncapi(
        env!("CARGO_BIN_EXE_pipeline"),
        &["service", "catalog", "asyncapi"],
        &sysmap("pipeline"),
    );
    // An operation on a channel that is not there.
    let mut dangling = good.clone();
    dangling["channels"].as_object_mut().unwrap().remove("featured");
    // A delivery mode AMQP does not have.
    let mut binding = good.clone();
    binding["operations"]["catalog.retry"]["bindings"]["amqp"]["deliveryMode"] = Value::from(3);
    // An AsyncAPI 2 shape in a 3.0 document.
    let mut shape = good.clone();
    shape["channels"]["catalog"]["subscribe"] = serde_json::json!({"message": {"payload": {"type": "string"}}});

    for (name, doc, says) in [
        ("dangling.json", &dangling, "does not exist"),
        ("binding.json", &binding, "deliveryMode"),
        ("shape.json", &shape, "additional properties"),
    ] {
        let file = write(dir.path(), name, doc);
        let (ok, report) = validate(&[&file]);
        assert!(!ok, "{name} passed:\n{report}");
        assert!(report.contains(": error:"), "{report}");
        assert!(report.contains(says), "{name}: expected {says:?} in\n{report}");
    }
}
