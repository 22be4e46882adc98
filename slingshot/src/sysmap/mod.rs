//! The sys-map protocol: the `SysMapSource` seam (where the JSON comes from) and the typed, cached client every service uses.
//!
//! A source answers a path (`thumbnailer`, `thumbnailer/in`, `rabbitmq`,
//! `db`, `object-storage`) with the body the HTTP sys-map would send. The
//! parsing and validation here is shared, so a local file and the HTTP
//! service are held to exactly the same protocol.

pub mod file;
pub mod http;
pub mod secrets;
pub mod server;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::Value;

use crate::case::CaseValue;

/// Why the sys-map could not be used. Messages name the endpoint, what it
/// answered, and what was expected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SysMapError {
    /// The source could not be reached or read.
    #[error("{source_name}: cannot read {path:?}: {message}")]
    Unavailable {
        /// Which sys-map.
        source_name: String,
        /// The endpoint path.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The source has no such endpoint (HTTP 404, or no entry in the file).
    #[error("{source_name}: no endpoint {path:?}{hint}")]
    Missing {
        /// Which sys-map.
        source_name: String,
        /// The endpoint path.
        path: String,
        /// A hint, e.g. the endpoints that do exist.
        hint: String,
    },
    /// The endpoint answered something the protocol does not allow.
    #[error("{source_name}: endpoint {path:?} answered {got}, expected {expected}")]
    Invalid {
        /// Which sys-map.
        source_name: String,
        /// The endpoint path.
        path: String,
        /// What it answered (shortened; never a secret).
        got: String,
        /// What the protocol expects.
        expected: String,
    },
    /// A secret reference could not be resolved.
    #[error("{0}")]
    Secret(#[from] secrets::SecretError),
}

/// The seam to wherever the sys-map lives.
#[async_trait]
pub trait SysMapSource: Send + Sync + 'static {
    /// The body the endpoint `path` (no leading slash) answers.
    async fn get(&self, path: &str) -> Result<String, SysMapError>;

    /// Which backends services configured by this source use.
    fn backends(&self) -> Backends;

    /// One line naming the source, for logs and messages.
    fn describe(&self) -> String;
}

/// Which implementation of each seam a service runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backends {
    /// The message broker.
    pub broker: BrokerBackend,
    /// The object store.
    pub objects: ObjectsBackend,
    /// The database behind `&mut AnyConnection` (a `PgConnection` always
    /// means PostgreSQL, a `SqliteConnection` always SQLite).
    pub database: DatabaseBackend,
}

/// The message broker to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerBackend {
    /// The in-process broker: every service of the process shares it.
    Memory,
    /// RabbitMQ, as described by the `rabbitmq` endpoint.
    RabbitMq,
}

/// The object store to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectsBackend {
    /// A local directory, one sub-directory per bucket.
    Dir(PathBuf),
    /// S3, as described by the `object-storage` endpoint.
    S3,
}

/// The database to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseBackend {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// PostgreSQL, as described by the `db` endpoint.
    Postgres,
}

/// One `out` entry: the queues a case routes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The case variable, as written in the sys-map.
    pub case: CaseValue,
    /// Every queue an output with this case is sent to.
    pub queues: Vec<String>,
}

/// A service's wiring: the `{name}` endpoint.
///
/// Parsing accepts every document the original `slingshot-microservice`
/// accepts and routes it the same way; where that means tolerating something
/// that is probably a mistake, [`ServiceWiring::warnings`] says what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceWiring {
    /// The queue the service consumes.
    pub inbound: String,
    /// Where outputs go, by case: each case once.
    pub routes: Vec<Route>,
    /// What the document holds that was tolerated rather than used as
    /// written: a case listed twice (the last entry wins, as in the
    /// original), a case no case variable can equal. Logged at start-up and
    /// shown by `check`.
    pub warnings: Vec<String>,
}

/// The `rabbitmq` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RabbitMqEndpoint {
    /// Broker host.
    pub host: String,
    /// AMQP port.
    pub port: u16,
    /// User name.
    pub username: String,
    /// Secret reference of the password.
    pub pass: String,
}

/// The `db` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbEndpoint {
    /// Database host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// User name.
    pub username: String,
    /// Database name.
    pub database: String,
    /// Secret reference of the password.
    pub pass: String,
}

/// The `object-storage` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectStorageEndpoint {
    /// Host, or URL with scheme and port.
    pub host: String,
    /// Secret reference of the access key ID.
    pub access_key: String,
    /// Secret reference of the secret key.
    pub secret_key: String,
}

/// The typed sys-map client: validates every answer against the protocol
/// and caches bucket names.
#[derive(Clone)]
pub struct SysMap {
    source: Arc<dyn SysMapSource>,
    buckets: Arc<Mutex<HashMap<(String, String), String>>>,
}

impl std::fmt::Debug for SysMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SysMap")
            .field("source", &self.source.describe())
            .finish()
    }
}

impl SysMap {
    /// A client reading from `source`.
    pub fn new(source: Arc<dyn SysMapSource>) -> Self {
        SysMap {
            source,
            buckets: Arc::default(),
        }
    }

    /// Opens the sys-map named by `location`, as the attribute's `sys_map`
    /// or `SLINGSHOT_SYS_MAP` give it: `file:PATH` (or a path ending in
    /// `.json`) reads a local file; `http://…` and `https://…` are used as
    /// they are; anything else is a host and gets `https://` in front.
    pub fn open(location: &str) -> Result<SysMap, SysMapError> {
        let source: Arc<dyn SysMapSource> = match file_location(location) {
            Some(path) => Arc::new(file::FileSysMap::load(path)?),
            None => Arc::new(http::HttpSysMap::new(&http_url(location))?),
        };
        Ok(SysMap::new(source))
    }

    /// The source's backends.
    pub fn backends(&self) -> Backends {
        self.source.backends()
    }

    /// One line naming the source.
    pub fn describe(&self) -> String {
        self.source.describe()
    }

    async fn json(&self, path: &str) -> Result<Value, SysMapError> {
        let body = self.source.get(path).await?;
        serde_json::from_str(&body).map_err(|e| self.invalid(path, &body, format!("JSON ({e})")))
    }

    fn invalid(&self, path: &str, got: &str, expected: impl Into<String>) -> SysMapError {
        SysMapError::Invalid {
            source_name: self.source.describe(),
            path: path.into(),
            got: shorten(got),
            expected: expected.into(),
        }
    }

    /// The `{name}` endpoint: inbound queue and routes.
    pub async fn service(&self, name: &str) -> Result<ServiceWiring, SysMapError> {
        let value = self.json(name).await?;
        parse_wiring(&value).map_err(|expected| self.invalid(name, &value.to_string(), expected))
    }

    /// The `{name}/{key}` endpoint: the real bucket behind reference `key`,
    /// cached for the life of the process.
    pub async fn bucket(&self, name: &str, key: &str) -> Result<String, SysMapError> {
        let cache_key = (name.to_string(), key.to_string());
        if let Some(hit) = self.lock_buckets().get(&cache_key) {
            return Ok(hit.clone());
        }
        let path = format!("{name}/{key}");
        let body = self.source.get(&path).await?;
        let bucket = body.trim();
        if !valid_bucket_name(bucket) {
            return Err(self.invalid(
                &path,
                &body,
                "a plain-text bucket name (3 to 63 characters: a-z, 0-9, '.', '-')",
            ));
        }
        self.lock_buckets().insert(cache_key, bucket.to_string());
        Ok(bucket.to_string())
    }

    /// The bucket behind `key`, if it was looked up before.
    pub fn cached_bucket(&self, name: &str, key: &str) -> Option<String> {
        self.lock_buckets().get(&(name.to_string(), key.to_string())).cloned()
    }

    fn lock_buckets(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), String>> {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The `rabbitmq` endpoint.
    pub async fn rabbitmq(&self) -> Result<RabbitMqEndpoint, SysMapError> {
        let path = "rabbitmq";
        let v = self.json(path).await?;
        let f = Fields::new(self, path, &v)?;
        Ok(RabbitMqEndpoint {
            host: f.string("host")?,
            port: f.port("port")?,
            username: f.string("username")?,
            pass: f.string("pass")?,
        })
    }

    /// The `db` endpoint.
    pub async fn db(&self) -> Result<DbEndpoint, SysMapError> {
        let path = "db";
        let v = self.json(path).await?;
        let f = Fields::new(self, path, &v)?;
        Ok(DbEndpoint {
            host: f.string("host")?,
            port: f.port("port")?,
            username: f.string("username")?,
            database: f.string("database")?,
            pass: f.string("pass")?,
        })
    }

    /// The `object-storage` endpoint.
    pub async fn object_storage(&self) -> Result<ObjectStorageEndpoint, SysMapError> {
        let path = "object-storage";
        let v = self.json(path).await?;
        let f = Fields::new(self, path, &v)?;
        Ok(ObjectStorageEndpoint {
            host: f.string("host")?,
            access_key: f.string("pass:access-key")?,
            secret_key: f.string("pass:secret-key")?,
        })
    }
}

/// The file path in a `file:` (or `*.json`) sys-map location.
pub(crate) fn file_location(location: &str) -> Option<&str> {
    if let Some(path) = location.strip_prefix("file:") {
        return Some(path.strip_prefix("//").unwrap_or(path));
    }
    if location.starts_with("http://") || location.starts_with("https://") {
        return None;
    }
    location.ends_with(".json").then_some(location)
}

/// The base URL of an HTTP sys-map location: as is with a scheme, else `https://`.
pub(crate) fn http_url(location: &str) -> String {
    let base = if location.starts_with("http://") || location.starts_with("https://") {
        location.to_string()
    } else {
        format!("https://{location}")
    };
    base.trim_end_matches('/').to_string()
}

/// The fields of the `rabbitmq`, `db` and `object-storage` endpoints: each
/// an array holding exactly one value.
struct Fields<'a> {
    map: &'a SysMap,
    path: &'a str,
    object: &'a serde_json::Map<String, Value>,
}

impl<'a> Fields<'a> {
    fn new(map: &'a SysMap, path: &'a str, value: &'a Value) -> Result<Self, SysMapError> {
        let object = value
            .as_object()
            .ok_or_else(|| map.invalid(path, &value.to_string(), "a JSON object"))?;
        Ok(Fields { map, path, object })
    }

    fn one(&self, field: &str) -> Result<&'a Value, SysMapError> {
        let expected = || format!("field {field:?} to be an array holding exactly one value");
        match self.object.get(field) {
            None => Err(self.map.invalid(
                self.path,
                &format!("an object with fields {:?}", self.object.keys().collect::<Vec<_>>()),
                expected(),
            )),
            Some(Value::Array(items)) if items.len() == 1 => Ok(&items[0]),
            // Field values may hold secret references; show only their shape.
            Some(other) => Err(self
                .map
                .invalid(self.path, &format!("{field:?}: {}", shape(other)), expected())),
        }
    }

    fn string(&self, field: &str) -> Result<String, SysMapError> {
        match self.one(field)? {
            Value::String(s) if !s.is_empty() => Ok(s.clone()),
            other => Err(self.map.invalid(
                self.path,
                &format!("{field:?}: [{}]", shape(other)),
                format!("field {field:?} to hold one non-empty string"),
            )),
        }
    }

    fn port(&self, field: &str) -> Result<u16, SysMapError> {
        let value = self.one(field)?;
        let port = match value {
            Value::Number(n) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
            Value::String(s) => s.parse::<u16>().ok(),
            _ => None,
        };
        port.filter(|p| *p != 0).ok_or_else(|| {
            self.map.invalid(
                self.path,
                &format!("{field:?}: [{value}]"),
                format!("field {field:?} to hold one port number (1-65535)"),
            )
        })
    }
}

fn shape(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(a) if a.is_empty() => "an empty array",
        Value::Array(_) => "an array of several values",
        Value::Object(_) => "an object",
    }
}

fn shorten(text: &str) -> String {
    const MAX: usize = 200;
    let text = text.trim();
    if text.is_empty() {
        return "an empty body".into();
    }
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("`{}…`", &text[..cut]),
        None => format!("`{text}`"),
    }
}

fn parse_wiring(value: &Value) -> Result<ServiceWiring, String> {
    const SHAPE: &str =
        r#"{"in": "<queue>", "out": [{"case": <bool|integer|string>, "queues": ["<queue>", ...]}, ...]}"#;
    let object = value.as_object().ok_or_else(|| SHAPE.to_string())?;
    let mut warnings = Vec::new();
    let inbound = match object.get("in") {
        Some(Value::String(q)) => q.clone(),
        _ => return Err(format!("{SHAPE} (field \"in\" must be a queue name)")),
    };
    check_queue_name(&inbound, &mut warnings).map_err(|why| format!("a valid inbound queue name: {why}"))?;
    let entries = match object.get("out") {
        Some(Value::Array(entries)) => entries.as_slice(),
        None => &[],
        Some(_) => return Err(format!("{SHAPE} (field \"out\" must be an array)")),
    };
    let mut routes: Vec<Route> = Vec::with_capacity(entries.len());
    // Where each route's entry is, for messages about duplicates.
    let mut sources: Vec<usize> = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let Some(raw_case) = entry.get("case") else {
            return Err(format!("out[{i}] to have a \"case\" (a bool, an integer or a string)"));
        };
        let queues = match entry.get("queues") {
            Some(Value::Array(qs)) => qs
                .iter()
                .enumerate()
                .map(|(j, q)| match q {
                    Value::String(q) => check_queue_name(q, &mut warnings)
                        .map(|()| q.clone())
                        .map_err(|why| format!("out[{i}].queues[{j}] to be a valid queue name: {why}")),
                    _ => Err(format!("out[{i}].queues[{j}] to be a string (a queue name)")),
                })
                .collect::<Result<Vec<_>, _>>()?,
            _ => return Err(format!("out[{i}].queues to be an array of queue names")),
        };
        // The original keys its routes by the case's JSON text, so it takes
        // any JSON value; one that is not a bool, an integer or a string can
        // never equal a case variable, so the entry can never be used.
        let Some(case) = CaseValue::from_json(raw_case) else {
            warnings.push(format!(
                "out[{i}].case is {raw_case}, which no case variable can equal (a case is a bool, an integer or a string): entry ignored"
            ));
            continue;
        };
        match routes.iter().position(|r| r.case == case) {
            // As the original did: each entry replaces an earlier one with
            // the same case, so the last one wins.
            Some(earlier) => {
                warnings.push(format!(
                    "case {case} is listed at out[{}] and again at out[{i}]; as in the original slingshot-microservice the last entry wins: case {case} routes to {queues:?}, not to {:?}",
                    sources[earlier], routes[earlier].queues
                ));
                routes[earlier].queues = queues;
                sources[earlier] = i;
            }
            None => {
                routes.push(Route { case, queues });
                sources.push(i);
            }
        }
    }
    Ok(ServiceWiring {
        inbound,
        routes,
        warnings,
    })
}

/// Whether `name` can be a queue name: RabbitMQ refuses empty names (it
/// would make up one), names over 255 bytes and names starting with `amq.`.
/// Anything else it accepts, and so does the original crate; a name that is
/// probably a typo (whitespace or control characters) adds a warning.
pub fn check_queue_name(name: &str, warnings: &mut Vec<String>) -> Result<(), String> {
    if name.is_empty() {
        return Err("a queue name cannot be empty".into());
    }
    if name.len() > 255 {
        return Err(format!("{name:?} is longer than 255 bytes"));
    }
    if name.starts_with("amq.") {
        return Err(format!("{name:?} starts with \"amq.\", which RabbitMQ reserves"));
    }
    if let Some(c) = name.chars().find(|c| c.is_control() || c.is_whitespace()) {
        warnings.push(format!(
            "queue name {name:?} contains {c:?}; RabbitMQ accepts it, but is it a typo?"
        ));
    }
    Ok(())
}

fn valid_bucket_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && !name.starts_with(['.', '-'])
        && !name.ends_with(['.', '-'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert_eq!(file_location("file:examples/a.json"), Some("examples/a.json"));
        assert_eq!(file_location("file:///etc/sysmap.json"), Some("/etc/sysmap.json"));
        assert_eq!(file_location("local/sysmap.json"), Some("local/sysmap.json"));
        assert_eq!(file_location("sys-map.example.com"), None);
        assert_eq!(file_location("http://host/x.json"), None);
        assert_eq!(http_url("sys-map.example.com"), "https://sys-map.example.com");
        assert_eq!(http_url("http://127.0.0.1:8080/"), "http://127.0.0.1:8080");
    }

    #[test]
    fn wiring_parses_every_case_kind() {
        let v: Value = serde_json::from_str(
            r#"{"in": "a", "out": [{"case": true, "queues": ["b", "c"]}, {"case": 3, "queues": []}, {"case": "x", "queues": ["d"]}]}"#,
        )
        .unwrap();
        let w = parse_wiring(&v).unwrap();
        assert_eq!(w.inbound, "a");
        assert_eq!(w.routes.len(), 3);
        assert_eq!(w.routes[0].case, CaseValue::Bool(true));
        assert_eq!(w.routes[0].queues, ["b", "c"]);
        assert_eq!(w.routes[1].case, CaseValue::Int(3));
        assert_eq!(w.routes[2].case, CaseValue::Str("x".into()));
    }

    #[test]
    fn wiring_errors_say_what_was_expected() {
        let bad = [
            (r#"[]"#, "\"in\""),
            (r#"{"out": []}"#, "field \"in\""),
            (r#"{"in": ""}"#, "cannot be empty"),
            (r#"{"in": "a", "out": {}}"#, "\"out\" must be an array"),
            (r#"{"in": "a", "out": [{"queues": []}]}"#, "out[0] to have a \"case\""),
            (r#"{"in": "a", "out": [{"case": 1, "queues": "q"}]}"#, "out[0].queues"),
            (r#"{"in": "a", "out": [{"case": 1}]}"#, "out[0].queues"),
            (
                r#"{"in": "a", "out": [{"case": 1, "queues": ["b", 1]}]}"#,
                "out[0].queues[1] to be a string",
            ),
            (
                r#"{"in": "a", "out": [{"case": 1, "queues": [""]}]}"#,
                "out[0].queues[0] to be a valid",
            ),
            (r#"{"in": "amq.x"}"#, "reserves"),
            (r#"{"in": 7}"#, "field \"in\""),
        ];
        for (json, needle) in bad {
            let v: Value = serde_json::from_str(json).unwrap();
            let err = parse_wiring(&v).unwrap_err();
            assert!(err.contains(needle), "{json}: {err:?} lacks {needle:?}");
        }
    }

    fn lenient(json: &str) -> ServiceWiring {
        let v: Value = serde_json::from_str(json).unwrap();
        parse_wiring(&v).unwrap_or_else(|e| panic!("{json}: {e}"))
    }

    #[test]
    fn a_case_listed_twice_routes_by_the_last_entry_and_warns() {
        let w = lenient(
            r#"{"in": "a", "out": [{"case": 1, "queues": ["a1", "b"]}, {"case": true, "queues": ["t"]}, {"case": 1, "queues": ["c"]}]}"#,
        );
        assert_eq!(
            w.routes,
            [
                Route {
                    case: CaseValue::Int(1),
                    queues: vec!["c".into()]
                },
                Route {
                    case: CaseValue::Bool(true),
                    queues: vec!["t".into()]
                },
            ]
        );
        assert_eq!(w.warnings.len(), 1, "{:?}", w.warnings);
        assert!(
            w.warnings[0].contains("case 1 is listed at out[0] and again at out[2]")
                && w.warnings[0].contains("last entry wins: case 1 routes to [\"c\"], not to [\"a1\", \"b\"]"),
            "{:?}",
            w.warnings
        );
    }

    #[test]
    fn what_the_original_tolerates_is_accepted() {
        // Unknown fields anywhere, integer cases across i64 and u64, a
        // missing "out", and cases that are not bool/integer/string.
        let w = lenient(
            r#"{"in": "a", "owner": "team", "out": [
                {"case": -9223372036854775808, "queues": ["min"], "note": "x"},
                {"case": 18446744073709551615, "queues": ["max"]},
                {"case": 1.5, "queues": ["f"]},
                {"case": null, "queues": []},
                {"case": {"k": 1}, "queues": []}
            ]}"#,
        );
        assert_eq!(w.routes.len(), 2);
        assert_eq!(w.routes[0].case, CaseValue::Int(i128::from(i64::MIN)));
        assert_eq!(w.routes[1].case, CaseValue::Int(i128::from(u64::MAX)));
        assert_eq!(w.warnings.len(), 3, "{:?}", w.warnings);
        assert!(w.warnings[0].contains("out[2].case is 1.5, which no case variable can equal"));
        assert!(w.warnings[1].contains("out[3].case is null"));
        assert!(lenient(r#"{"in": "a"}"#).routes.is_empty());
        let spaced = lenient(r#"{"in": "a b", "out": []}"#);
        assert_eq!(spaced.inbound, "a b");
        assert!(spaced.warnings[0].contains("contains ' '"), "{:?}", spaced.warnings);
    }

    #[test]
    fn bucket_names() {
        assert!(valid_bucket_name("raw-images"));
        assert!(!valid_bucket_name("ab"));
        assert!(!valid_bucket_name("Has-Caps"));
        assert!(!valid_bucket_name("a/b/c"));
    }
}
