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
use serde::Deserialize;
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
        let invalid = |got: String| SysMapError::Invalid {
            source_name: format!("sys-map file {name}"),
            path: String::new(),
            got,
            expected: FILE_SHAPE.into(),
        };
        let mut json = serde_json::Deserializer::from_str(text);
        let doc: FileDoc = serde_path_to_error::deserialize(&mut json).map_err(|e| match e.path().to_string() {
            root if root == "." => invalid(e.inner().to_string()),
            at => invalid(format!("{at}: {}", e.inner())),
        })?;
        json.end().map_err(|e| invalid(e.to_string()))?;
        let backends = doc.backends.unwrap_or_default();
        let backends = Backends {
            broker: match backends.broker {
                BrokerDoc::Memory => BrokerBackend::Memory,
                BrokerDoc::Rabbitmq => BrokerBackend::RabbitMq,
            },
            objects: match backends.objects {
                None => ObjectsBackend::Dir(base.join(".slingshot/objects")),
                Some(ObjectsDoc::Named(S3Name::S3)) => ObjectsBackend::S3,
                Some(ObjectsDoc::Dir { dir }) => ObjectsBackend::Dir(base.join(dir)),
            },
            database: match backends.database {
                None => DatabaseBackend::Sqlite(base.join(".slingshot/slingshot.db")),
                Some(DatabaseDoc::Named(PostgresName::Postgres)) => DatabaseBackend::Postgres,
                Some(DatabaseDoc::Sqlite { sqlite }) => DatabaseBackend::Sqlite(base.join(sqlite)),
            },
        };
        Ok(FileSysMap {
            path: PathBuf::from(name),
            endpoints: doc
                .endpoints
                .into_iter()
                .map(|(k, v)| (k.trim_start_matches('/').to_string(), v))
                .collect(),
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

const FILE_SHAPE: &str = r#"{"backends": {"broker": "memory"|"rabbitmq", "objects": {"dir": PATH}|"s3", "database": {"sqlite": PATH}|"postgres"}, "endpoints": {PATH: BODY, ...}}"#;

/// The file's document.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an object with \"endpoints\" and optionally \"backends\""
)]
struct FileDoc {
    backends: Option<BackendsDoc>,
    endpoints: BTreeMap<String, Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct BackendsDoc {
    #[serde(default)]
    broker: BrokerDoc,
    objects: Option<ObjectsDoc>,
    database: Option<DatabaseDoc>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "lowercase")]
enum BrokerDoc {
    #[default]
    Memory,
    Rabbitmq,
}

#[derive(Deserialize)]
#[serde(untagged, expecting = r#""s3" or {"dir": PATH}"#)]
enum ObjectsDoc {
    Named(S3Name),
    Dir { dir: PathBuf },
}

#[derive(Deserialize)]
enum S3Name {
    #[serde(rename = "s3")]
    S3,
}

#[derive(Deserialize)]
#[serde(untagged, expecting = r#""postgres" or {"sqlite": PATH}"#)]
enum DatabaseDoc {
    Named(PostgresName),
    Sqlite { sqlite: PathBuf },
}

#[derive(Deserialize)]
enum PostgresName {
    #[serde(rename = "postgres")]
    Postgres,
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
            ("[]", "answered invalid length 0, expected an object with \"endpoints\""),
            ("{", "EOF while parsing an object"),
            (r#"{"endpoints": {}} x"#, "trailing characters"),
            (
                r#"{"endpoint": {}}"#,
                "unknown field `endpoint`, expected `backends` or `endpoints`",
            ),
            (r#"{"backends": {}}"#, "missing field `endpoints`"),
            (
                r#"{"backends": {"broker": "kafka"}, "endpoints": {}}"#,
                "backends.broker: unknown variant `kafka`, expected `memory` or `rabbitmq`",
            ),
            (
                r#"{"backends": {"objects": "gcs"}, "endpoints": {}}"#,
                r#"backends.objects: "s3" or {"dir": PATH}"#,
            ),
            (
                r#"{"backends": {"database": {"sqlite": 3}}, "endpoints": {}}"#,
                r#"backends.database: "postgres" or {"sqlite": PATH}"#,
            ),
            (
                r#"{"backends": {"cache": 1}, "endpoints": {}}"#,
                "backends.cache: unknown field `cache`, expected one of `broker`, `objects`, `database`",
            ),
        ] {
            let err = FileSysMap::parse(doc, Path::new("."), "t").unwrap_err().to_string();
            assert!(err.contains(needle), "{doc}: {err}");
        }
    }
}
