//! A sys-map read from a local JSON file: the same endpoints as the HTTP service, plus which backends to use.
//!
//! ```json
//! {
//!   "backends": {
//!     "broker": "memory",
//!     "objects": { "dir": ".slingshot/objects" },
//!     "database": { "sqlite": ".slingshot/pipeline.db" }
//!   },
//!   "endpoints": {
//!     "ingest":    { "in": "ingest", "out": [{ "case": true, "queues": ["resize"] }] },
//!     "ingest/in": "uploads"
//!   }
//! }
//! ```
//!
//! `endpoints` maps each path of the HTTP protocol to the body it answers: a
//! JSON value, or a string for the plain-text bucket endpoints. Relative
//! paths in `backends` are relative to the file's directory. `backends` may
//! name the real services instead (`"rabbitmq"`, `"s3"`, `"postgres"`), which
//! then read the `rabbitmq`, `object-storage` and `db` endpoints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde_json::Value;

use super::{Backends, BrokerBackend, DatabaseBackend, ObjectsBackend, SysMapError, SysMapSource};

/// A sys-map held in a local file, read once at start-up.
#[derive(Debug, Clone)]
pub struct FileSysMap {
    path: PathBuf,
    endpoints: BTreeMap<String, Value>,
    backends: Backends,
}

impl FileSysMap {
    /// Reads and validates the file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, SysMapError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| SysMapError::Unavailable {
            source_name: format!("sys-map file {}", path.display()),
            path: String::new(),
            message: match std::env::current_dir() {
                Ok(cwd) if path.is_relative() => format!("{e} (relative to {})", cwd.display()),
                _ => e.to_string(),
            },
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base, &path.display().to_string())
    }

    /// Parses a sys-map document; relative backend paths resolve against `base`.
    pub fn parse(text: &str, base: &Path, name: &str) -> Result<Self, SysMapError> {
        let source_name = format!("sys-map file {name}");
        let invalid = |got: String, expected: &str| SysMapError::Invalid {
            source_name: source_name.clone(),
            path: String::new(),
            got,
            expected: expected.into(),
        };
        let doc: Value = serde_json::from_str(text).map_err(|e| invalid(e.to_string(), "a JSON document"))?;
        let Value::Object(mut doc) = doc else {
            return Err(invalid(
                "a non-object".into(),
                r#"an object {"backends": {...}, "endpoints": {...}}"#,
            ));
        };
        if let Some(key) = doc.keys().find(|k| *k != "backends" && *k != "endpoints") {
            return Err(invalid(
                format!("key {key:?}"),
                r#"only the keys "backends" and "endpoints""#,
            ));
        }
        let endpoints = match doc.remove("endpoints") {
            Some(Value::Object(map)) => map
                .into_iter()
                .map(|(k, v)| (k.trim_start_matches('/').to_string(), v))
                .collect(),
            _ => {
                return Err(invalid(
                    "no \"endpoints\" object".into(),
                    "an \"endpoints\" object mapping paths to bodies",
                ))
            }
        };
        let backends = match doc.remove("backends") {
            None => Backends {
                broker: BrokerBackend::Memory,
                objects: ObjectsBackend::Dir(base.join(".slingshot/objects")),
                database: DatabaseBackend::Sqlite(base.join(".slingshot/slingshot.db")),
            },
            Some(v) => parse_backends(&v, base).map_err(|expected| invalid(v.to_string(), &expected))?,
        };
        Ok(FileSysMap {
            path: PathBuf::from(name),
            endpoints,
            backends,
        })
    }

    /// Every endpoint path the file defines.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.endpoints.keys().map(String::as_str)
    }

    /// The body of `path`, if the file defines it (what the HTTP server sends).
    pub fn body(&self, path: &str) -> Option<String> {
        self.endpoints.get(path.trim_start_matches('/')).map(|v| match v {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        })
    }
}

fn parse_backends(value: &Value, base: &Path) -> Result<Backends, String> {
    const SHAPE: &str = r#"backends {"broker": "memory"|"rabbitmq", "objects": {"dir": PATH}|"s3", "database": {"sqlite": PATH}|"postgres"}"#;
    let object = value.as_object().ok_or(SHAPE)?;
    if let Some(key) = object
        .keys()
        .find(|k| !["broker", "objects", "database"].contains(&k.as_str()))
    {
        return Err(format!("{SHAPE}; unknown key {key:?}"));
    }
    let path_in =
        |v: Option<&Value>, key: &str| -> Option<PathBuf> { v?.as_object()?.get(key)?.as_str().map(|p| base.join(p)) };
    let broker = match object.get("broker").and_then(Value::as_str) {
        None | Some("memory") => BrokerBackend::Memory,
        Some("rabbitmq") => BrokerBackend::RabbitMq,
        Some(other) => {
            return Err(format!(
                "{SHAPE}; broker {other:?} is neither \"memory\" nor \"rabbitmq\""
            ))
        }
    };
    let objects = match object.get("objects") {
        None => ObjectsBackend::Dir(base.join(".slingshot/objects")),
        Some(Value::String(s)) if s == "s3" => ObjectsBackend::S3,
        v => ObjectsBackend::Dir(
            path_in(v, "dir").ok_or_else(|| format!("{SHAPE}; objects must be {{\"dir\": PATH}} or \"s3\""))?,
        ),
    };
    let database = match object.get("database") {
        None => DatabaseBackend::Sqlite(base.join(".slingshot/slingshot.db")),
        Some(Value::String(s)) if s == "postgres" => DatabaseBackend::Postgres,
        v => DatabaseBackend::Sqlite(
            path_in(v, "sqlite")
                .ok_or_else(|| format!("{SHAPE}; database must be {{\"sqlite\": PATH}} or \"postgres\""))?,
        ),
    };
    Ok(Backends {
        broker,
        objects,
        database,
    })
}

#[async_trait]
impl SysMapSource for FileSysMap {
    async fn get(&self, path: &str) -> Result<String, SysMapError> {
        self.body(path).ok_or_else(|| SysMapError::Missing {
            source_name: self.describe(),
            path: path.to_string(),
            hint: format!(
                "; add it under \"endpoints\" (defined: {})",
                self.endpoints
                    .keys()
                    .map(|k| format!("{k:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
    }

    fn backends(&self) -> Backends {
        self.backends.clone()
    }

    fn describe(&self) -> String {
        format!("sys-map file {}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_embedded_and_relative_to_the_file() {
        let map = FileSysMap::parse(
            r#"{"endpoints": {"/a": {"in": "a"}, "a/in": "bucket"}}"#,
            Path::new("/srv"),
            "t",
        )
        .unwrap();
        assert_eq!(map.backends.broker, BrokerBackend::Memory);
        assert_eq!(
            map.backends.objects,
            ObjectsBackend::Dir("/srv/.slingshot/objects".into())
        );
        assert_eq!(map.body("a").as_deref(), Some(r#"{"in":"a"}"#));
        assert_eq!(map.body("/a/in").as_deref(), Some("bucket"));
        assert_eq!(map.body("b"), None);
    }

    #[test]
    fn real_backends_can_be_named() {
        let map = FileSysMap::parse(
            r#"{"backends": {"broker": "rabbitmq", "objects": "s3", "database": "postgres"}, "endpoints": {}}"#,
            Path::new("."),
            "t",
        )
        .unwrap();
        assert_eq!(map.backends.broker, BrokerBackend::RabbitMq);
        assert_eq!(map.backends.objects, ObjectsBackend::S3);
        assert_eq!(map.backends.database, DatabaseBackend::Postgres);
    }

    #[test]
    fn mistakes_are_reported() {
        for (doc, needle) in [
            ("[]", "an object"),
            (r#"{"endpoint": {}}"#, "only the keys"),
            (r#"{"backends": {}}"#, "endpoints"),
            (r#"{"backends": {"broker": "kafka"}, "endpoints": {}}"#, "kafka"),
            (
                r#"{"backends": {"objects": "gcs"}, "endpoints": {}}"#,
                "objects must be",
            ),
            (r#"{"backends": {"cache": 1}, "endpoints": {}}"#, "unknown key"),
        ] {
            let err = FileSysMap::parse(doc, Path::new("."), "t").unwrap_err().to_string();
            assert!(err.contains(needle), "{doc}: {err}");
        }
    }
}
