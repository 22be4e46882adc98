//! Property tests of the sys-map parsers: arbitrary JSON values and arbitrary text as every endpoint's document and as a sys-map file never panic, and every rejection is an error value that names the endpoint (or the file) without quoting a secret reference.
//!
//! Each property runs [`CASES`] cases with a random seed; the five take
//! about 0.2 s together in a debug build, one thread
//! (`cargo test -p slingshot --lib sysmap::properties -- --test-threads=1`).

use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{json, Map, Value};

use super::documents::valid_bucket_name;
use super::file::FileSysMap;
use super::{check_queue_name, SysMap, SysMapError};

/// Cases per property: enough to find the shapes the parsers trip on,
/// few enough to keep the unit tests fast.
const CASES: u32 = 256;

/// [`CASES`] cases, a random seed each run, nothing written to the source
/// tree (a failure prints its minimal input).
fn config() -> Config {
    Config {
        failure_persistence: None,
        ..Config::with_cases(CASES)
    }
}

/// A secret reference no error message may quote.
const SECRET: &str = "SEKRET-ref";

/// The field names of every endpoint document, so that arbitrary documents
/// often hit the fields the parsers read.
const FIELDS: [&str; 11] = [
    "in",
    "out",
    "case",
    "queues",
    "host",
    "port",
    "username",
    "database",
    "pass",
    "pass:access-key",
    "pass:secret-key",
];

/// Text: arbitrary, or one of the values the parsers treat specially.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z0-9.\\- ]{0,70}",
        prop::sample::select(vec![
            "",
            " ",
            "amq.x",
            "5672",
            "0",
            "65536",
            "q",
            "a b",
            "bucket-name",
            "x.dead-letter",
        ])
        .prop_map(String::from),
    ]
}

/// An arbitrary JSON value, up to four levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("a JSON number", |f| serde_json::Number::from_f64(f).map(Value::Number)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6).prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// An object key: mostly a field some parser reads.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(FIELDS.to_vec()).prop_map(String::from),
        1 => text(),
    ]
}

/// An endpoint document close to the protocol's shapes: each field present
/// or not, as one value, an array of values, or anything; the password
/// fields hold [`SECRET`] somewhere.
fn document() -> impl Strategy<Value = Value> {
    let field = prop_oneof![
        json_value(),
        text().prop_map(|t| json!([t])),
        any::<u16>().prop_map(|p| json!([p])),
        prop::collection::vec(text(), 0..4).prop_map(|t| json!(t)),
    ];
    let secret = prop_oneof![
        Just(json!([SECRET])),
        Just(json!(SECRET)),
        Just(json!([SECRET, SECRET])),
        Just(json!([[SECRET]])),
        Just(json!([{ SECRET: SECRET }])),
        Just(json!({ SECRET: [SECRET] })),
    ];
    (
        prop::collection::vec((prop::sample::select(FIELDS.to_vec()), field), 0..8),
        prop::collection::vec(
            (
                prop::sample::select(vec!["pass", "pass:access-key", "pass:secret-key"]),
                secret,
            ),
            0..3,
        ),
    )
        .prop_map(|(fields, secrets)| {
            let mut doc = Map::new();
            for (name, value) in fields {
                doc.insert(name.to_string(), value);
            }
            for (name, value) in secrets {
                doc.insert(name.to_string(), value);
            }
            Value::Object(doc)
        })
}

/// A service's wiring close to the protocol's shape.
fn wiring() -> impl Strategy<Value = Value> {
    let route =
        (json_value(), prop::collection::vec(text(), 0..4), any::<bool>()).prop_map(
            |(case, queues, whole)| match whole {
                true => json!({"case": case, "queues": queues}),
                false => json!({"case": case}),
            },
        );
    (text(), prop::collection::vec(route, 0..6)).prop_map(|(inbound, out)| json!({"in": inbound, "out": out}))
}

/// A sys-map file whose endpoint `path` answers `body` (a JSON string is
/// answered as its text, as the bucket endpoints are).
fn answering(path: &str, body: Value) -> SysMap {
    let doc = json!({"endpoints": {path: body}});
    let map = FileSysMap::parse(&doc.to_string(), Path::new("."), "prop").expect("a file sys-map");
    SysMap::new(Arc::new(map))
}

/// Asserts `result` is a value or an error that names endpoint `path`;
/// for the endpoints that hold secret references, one that quotes none.
fn named<T>(path: &str, result: Result<T, SysMapError>) -> Result<Option<T>, TestCaseError> {
    let err = match result {
        Ok(value) => return Ok(Some(value)),
        Err(err) => err,
    };
    let text = err.to_string();
    match &err {
        SysMapError::Invalid { path: at, .. } => prop_assert_eq!(at, path, "{}", text),
        other => prop_assert!(false, "not a rejection of the document: {other:?}"),
    }
    prop_assert!(text.contains(&format!("endpoint {path:?}")), "{}", text);
    // The wiring and bucket endpoints hold no secrets: their errors quote the body.
    if ["rabbitmq", "db", "object-storage"].contains(&path) {
        prop_assert!(!text.contains(SECRET), "quotes a secret reference: {}", text);
    }
    Ok(None)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a test runtime")
}

/// Every endpoint read from `body`: nothing panics, each answer is a value
/// or an error naming its endpoint; what is accepted holds the protocol.
/// Returns how many endpoints accepted it.
fn every_endpoint(rt: &tokio::runtime::Runtime, body: Value) -> Result<usize, TestCaseError> {
    let mut accepted = 0;
    if let Some(wiring) = named("svc", rt.block_on(answering("svc", body.clone()).service("svc")))? {
        accepted += 1;
        let mut warnings = Vec::new();
        prop_assert!(check_queue_name(&wiring.inbound, &mut warnings).is_ok());
        for (i, route) in wiring.routes.iter().enumerate() {
            prop_assert!(
                !wiring.routes[..i].iter().any(|r| r.case == route.case),
                "case listed twice"
            );
            for queue in &route.queues {
                prop_assert!(check_queue_name(queue, &mut warnings).is_ok());
            }
        }
    }
    if let Some(rabbitmq) = named("rabbitmq", rt.block_on(answering("rabbitmq", body.clone()).rabbitmq()))? {
        accepted += 1;
        prop_assert!(!rabbitmq.nodes.is_empty());
        prop_assert_eq!(
            (&rabbitmq.nodes[0].0, rabbitmq.nodes[0].1),
            (&rabbitmq.host, rabbitmq.port)
        );
        prop_assert!(rabbitmq.nodes.iter().all(|(host, port)| !host.is_empty() && *port != 0));
        prop_assert!(!rabbitmq.pass.is_empty() && !rabbitmq.username.is_empty());
    }
    if let Some(db) = named("db", rt.block_on(answering("db", body.clone()).db()))? {
        accepted += 1;
        prop_assert!(db.port != 0 && !db.host.is_empty() && !db.pass.is_empty() && !db.database.is_empty());
    }
    if let Some(storage) = named(
        "object-storage",
        rt.block_on(answering("object-storage", body.clone()).object_storage()),
    )? {
        accepted += 1;
        prop_assert!(!storage.host.is_empty() && !storage.access_key.is_empty() && !storage.secret_key.is_empty());
    }
    if let Some(bucket) = named("svc/in", rt.block_on(answering("svc/in", body).bucket("svc", "in")))? {
        accepted += 1;
        prop_assert!(valid_bucket_name(&bucket), "{}", bucket);
    }
    Ok(accepted)
}

/// Runs `every_endpoint` on each body `strategy` makes; returns how many
/// endpoint answers were accepted, so that a test can check its strategy
/// reaches the parsers' success paths and not only their first error.
fn run_every_endpoint(strategy: impl Strategy<Value = Value>) -> usize {
    let rt = runtime();
    let accepted = std::cell::Cell::new(0);
    proptest!(config(), |(body in strategy)| {
        accepted.set(accepted.get() + every_endpoint(&rt, body)?);
    });
    accepted.get()
}

#[test]
fn arbitrary_json_as_any_endpoint_is_a_value_or_an_error_naming_it() {
    run_every_endpoint(json_value());
}

#[test]
fn arbitrary_text_as_any_endpoint_is_a_value_or_an_error_naming_it() {
    // A JSON string is answered as its text: the endpoint parses the text.
    let accepted = run_every_endpoint(text().prop_map(Value::String));
    assert!(accepted > 0, "no text was a bucket name or a document");
}

#[test]
fn documents_of_nearly_the_right_shape_never_quote_a_secret() {
    run_every_endpoint(document());
}

#[test]
fn wirings_of_nearly_the_right_shape_are_routed_or_rejected() {
    let accepted = run_every_endpoint(wiring());
    assert!(
        accepted > 0,
        "no wiring was accepted: the strategy misses the parser's success path"
    );
}

/// Asserts a file sys-map parse is a value or an error naming the file.
fn file_named(result: Result<FileSysMap, SysMapError>) -> Result<(), TestCaseError> {
    if let Err(err) = result {
        let text = err.to_string();
        prop_assert!(
            matches!(&err, SysMapError::Invalid { source_name, .. } if source_name == "sys-map file prop.json"),
            "{:?}",
            err
        );
        prop_assert!(text.starts_with("sys-map file prop.json: "), "{}", text);
    }
    Ok(())
}

#[test]
fn arbitrary_sys_map_files_are_read_or_rejected_naming_the_file() {
    let file = prop_oneof![
        json_value().prop_map(|v| v.to_string()),
        (json_value(), json_value())
            .prop_map(|(backends, endpoints)| { json!({"backends": backends, "endpoints": endpoints}).to_string() }),
        any::<String>(),
    ];
    proptest!(config(), |(text in file)| {
        let parsed = FileSysMap::parse(&text, Path::new("/srv"), "prop.json");
        if let Ok(map) = &parsed {
            // Every endpoint it defines answers a body.
            for path in map.paths() {
                prop_assert!(map.body(path).is_some(), "{}", path);
            }
        }
        file_named(parsed)?;
    });
}
