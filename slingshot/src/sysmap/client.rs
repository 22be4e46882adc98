//! The typed, cached sys-map client every service uses: one method per
//! endpoint, each answer checked against the protocol.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::documents::{shorten, valid_bucket_name, DbDoc, ObjectStorageDoc, RabbitMqDoc, WiringDoc, WIRING_SHAPE};
use super::wiring::{DbEndpoint, ObjectStorageEndpoint, RabbitMqEndpoint, ServiceWiring};
use super::{file, http, Backends, SysMapError, SysMapSource};

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
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let file = dir.path().join("sysmap.json");
    /// std::fs::write(&file, r#"{"endpoints": {"resize": {"in": "images", "out": []}, "resize/in": "uploads"}}"#)?;
    /// let sysmap = slingshot::sysmap::SysMap::open(&format!("file:{}", file.display()))?;
    /// assert_eq!(sysmap.service("resize").await?.inbound, "images");
    /// assert_eq!(sysmap.bucket("resize", "in").await?, "uploads");
    /// # Ok(()) }
    /// ```
    pub fn open(location: &str) -> Result<SysMap, SysMapError> {
        Self::open_with(location, http::HttpTimeouts::default())
    }

    /// [`SysMap::open`], an HTTP sys-map's requests bounded by `timeouts`
    /// (`SLINGSHOT_SYS_MAP_CONNECT_TIMEOUT_SECS`, `SLINGSHOT_SYS_MAP_TIMEOUT_SECS`).
    pub fn open_with(location: &str, timeouts: http::HttpTimeouts) -> Result<SysMap, SysMapError> {
        let source: Arc<dyn SysMapSource> = match file_location(location) {
            Some(path) => Arc::new(file::FileSysMap::load(path)?),
            None => Arc::new(http::HttpSysMap::with_timeouts(&http_url(location), timeouts)?),
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

    /// The JSON document at `path`, deserialized as `T` and checked by
    /// `check`. A mistake is reported with where it is (`out[1].queues[0]`),
    /// what is there and what the protocol expects (`shape`); with
    /// `quote_body` the body is quoted too (never for the endpoints that hold
    /// secret references).
    async fn document<T: DeserializeOwned, U>(
        &self,
        path: &str,
        shape: &str,
        quote_body: bool,
        check: impl FnOnce(T) -> Result<U, String>,
    ) -> Result<U, SysMapError> {
        let body = self.source.get(path).await?;
        let found = |problem: String| {
            if quote_body {
                format!("{} ({problem})", shorten(&body))
            } else {
                format!("a document ({problem})")
            }
        };
        let value: Value = serde_json::from_str(&body)
            .map_err(|e| self.invalid_verbatim(path, found(format!("text is not JSON: {e}")), shape.to_string()))?;
        let doc: T = serde_path_to_error::deserialize(value).map_err(|e| {
            let at = match e.path().to_string() {
                root if root == "." => String::new(),
                field => format!("{field}: "),
            };
            self.invalid_verbatim(path, found(format!("{at}{}", e.inner())), shape.to_string())
        })?;
        check(doc).map_err(|problem| self.invalid_verbatim(path, found(problem), shape.to_string()))
    }

    fn invalid(&self, path: &str, got: &str, expected: impl Into<String>) -> SysMapError {
        self.invalid_verbatim(path, shorten(got), expected.into())
    }

    fn invalid_verbatim(&self, path: &str, got: String, expected: String) -> SysMapError {
        SysMapError::Invalid {
            source_name: self.source.describe(),
            path: path.into(),
            got,
            expected,
        }
    }

    /// The `{name}` endpoint: inbound queue and routes.
    pub async fn service(&self, name: &str) -> Result<ServiceWiring, SysMapError> {
        self.document(name, WIRING_SHAPE, true, WiringDoc::validate).await
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
        const SHAPE: &str =
            r#"{"host": ["<host>", ...], "port": [<port>, ...], "username": ["<user>"], "pass": ["<secret ref>"]}"#;
        let doc: RabbitMqDoc = self
            .document("rabbitmq", SHAPE, false, |doc: RabbitMqDoc| {
                let (hosts, ports) = (doc.host.0.len(), doc.port.0.len());
                match ports == 1 || ports == hosts {
                    true => Ok(doc),
                    false => Err(format!(
                        "port lists {ports} ports for {hosts} hosts; give one port for every host, or one for all"
                    )),
                }
            })
            .await?;
        let ports: Vec<u16> = doc.port.0.iter().map(|p| p.0).collect();
        let nodes: Vec<(String, u16)> = doc
            .host
            .0
            .into_iter()
            .enumerate()
            .map(|(i, host)| (host.0, ports.get(i).copied().unwrap_or(ports[0])))
            .collect();
        Ok(RabbitMqEndpoint {
            host: nodes[0].0.clone(),
            port: nodes[0].1,
            nodes,
            username: doc.username.0 .0,
            pass: doc.pass.0 .0,
        })
    }

    /// The `db` endpoint.
    pub async fn db(&self) -> Result<DbEndpoint, SysMapError> {
        const SHAPE: &str = r#"{"host": ["<host>"], "port": [<port>], "username": ["<user>"], "database": ["<name>"], "pass": ["<secret ref>"]}"#;
        let doc: DbDoc = self.document("db", SHAPE, false, Ok).await?;
        Ok(DbEndpoint {
            host: doc.host.0 .0,
            port: doc.port.0 .0,
            username: doc.username.0 .0,
            database: doc.database.0 .0,
            pass: doc.pass.0 .0,
        })
    }

    /// The `object-storage` endpoint.
    pub async fn object_storage(&self) -> Result<ObjectStorageEndpoint, SysMapError> {
        const SHAPE: &str =
            r#"{"host": ["<host or URL>"], "pass:access-key": ["<secret ref>"], "pass:secret-key": ["<secret ref>"]}"#;
        let doc: ObjectStorageDoc = self.document("object-storage", SHAPE, false, Ok).await?;
        Ok(ObjectStorageEndpoint {
            host: doc.host.0 .0,
            access_key: doc.access_key.0 .0,
            secret_key: doc.secret_key.0 .0,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::case::CaseValue;
    use crate::sysmap::Route;

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

    /// A sys-map whose endpoint `path` answers `body`.
    fn answering(path: &str, body: &str) -> SysMap {
        let doc = format!(r#"{{"endpoints": {{{path:?}: {body}}}}}"#);
        let map = file::FileSysMap::parse(&doc, std::path::Path::new("."), "test").expect("test sys-map");
        SysMap::new(Arc::new(map))
    }

    fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("test runtime")
            .block_on(future)
    }

    fn wiring(json: &str) -> Result<ServiceWiring, String> {
        block_on(answering("svc", json).service("svc")).map_err(|e| e.to_string())
    }

    fn lenient(json: &str) -> ServiceWiring {
        wiring(json).unwrap_or_else(|e| panic!("{json}: {e}"))
    }

    #[test]
    fn wiring_parses_every_case_kind() {
        let w = lenient(
            r#"{"in": "a", "out": [{"case": true, "queues": ["b", "c"]}, {"case": 3, "queues": []}, {"case": "x", "queues": ["d"]}]}"#,
        );
        assert_eq!(w.inbound, "a");
        assert_eq!(w.routes.len(), 3);
        assert_eq!(w.routes[0].case, CaseValue::Bool(true));
        assert_eq!(w.routes[0].queues, ["b", "c"]);
        assert_eq!(w.routes[1].case, CaseValue::Int(3));
        assert_eq!(w.routes[2].case, CaseValue::Str("x".into()));
    }

    #[test]
    fn wiring_errors_name_the_endpoint_the_field_and_the_shape() {
        let bad = [
            (
                r#"[]"#,
                "answered `[]` (invalid length 0, expected an object with \"in\" and \"out\")",
            ),
            (
                r#"7"#,
                "answered `7` (invalid type: integer `7`, expected an object with \"in\" and \"out\")",
            ),
            (r#"{"out": []}"#, "(missing field `in`)"),
            (r#"{"in": ""}"#, "(in: a queue name cannot be empty)"),
            (
                r#"{"in": "a", "out": {}}"#,
                "(out: invalid type: map, expected a sequence)",
            ),
            (
                r#"{"in": "a", "out": [{"queues": []}]}"#,
                "(out[0]: missing field `case`)",
            ),
            (
                r#"{"in": "a", "out": [{"case": 1, "queues": "q"}]}"#,
                "(out[0].queues: invalid type: string \"q\", expected a sequence)",
            ),
            (
                r#"{"in": "a", "out": [{"case": 1}]}"#,
                "(out[0]: missing field `queues`)",
            ),
            (
                r#"{"in": "a", "out": [{"case": 1, "queues": ["b", 1]}]}"#,
                "(out[0].queues[1]: invalid type: integer `1`, expected a string)",
            ),
            (
                r#"{"in": "a", "out": [{"case": 1, "queues": [""]}]}"#,
                "out[0].queues[0]: a queue name cannot be empty",
            ),
            (
                r#"{"in": "amq.x"}"#,
                "in: \"amq.x\" starts with \"amq.\", which RabbitMQ reserves",
            ),
            (r#"{"in": 7}"#, "(in: invalid type: integer `7`, expected a string)"),
        ];
        for (json, needle) in bad {
            let err = wiring(json).unwrap_err();
            assert!(err.contains(needle), "{json}: {err:?} lacks {needle:?}");
            assert!(
                err.starts_with("sys-map file test: endpoint \"svc\" answered "),
                "{err}"
            );
            assert!(err.ends_with(&format!("expected {WIRING_SHAPE}")), "{err}");
        }
    }

    #[test]
    fn encrypt_entries_parse_and_their_errors_name_the_field() {
        let w = lenient(
            r#"{"in": "a", "encrypt": {"out": {"keys": {"k2": "s/two", "k1": "s/one"}, "write": "k2", "plain": "read"}}}"#,
        );
        assert_eq!(w.encrypt.len(), 1);
        assert_eq!(w.encrypt[0].reference, "out");
        assert_eq!(
            w.encrypt[0].keys,
            [("k1".into(), "s/one".into()), ("k2".into(), "s/two".into())]
        );
        assert_eq!(w.encrypt[0].write, "k2");
        assert!(w.encrypt[0].read_plain);
        assert!(lenient(r#"{"in": "a"}"#).encrypt.is_empty());
        let k = r#""keys": {"k1": "s/one"}"#;
        let bad = [
            (
                format!(r#"{{{k}, "write": "k9"}}"#),
                "encrypt.out.write: key ID \"k9\" is not one of encrypt.out.keys (k1)",
            ),
            (
                r#"{"keys": {}, "write": "k1"}"#.to_string(),
                "encrypt.out.keys is empty",
            ),
            (
                r#"{"keys": {"k 1": "s"}, "write": "k 1"}"#.to_string(),
                "encrypt.out.keys: key ID \"k 1\"",
            ),
            (
                r#"{"keys": {"k1": ""}, "write": "k1"}"#.to_string(),
                "encrypt.out.keys.k1: an empty secret reference",
            ),
            (
                format!(r#"{{{k}, "write": "k1", "plain": "maybe"}}"#),
                "encrypt.out.plain: unknown variant `maybe`",
            ),
            (
                format!(r#"{{{k}, "writ": "k1"}}"#),
                "encrypt.out.writ: unknown field `writ`, expected one of `keys`, `write`, `plain`",
            ),
            (format!(r#"{{{k}}}"#), "encrypt.out: missing field `write`"),
        ];
        for (entry, needle) in bad {
            let json = format!(r#"{{"in": "a", "encrypt": {{"out": {entry}}}}}"#);
            let err = wiring(&json).unwrap_err();
            assert!(err.contains(needle), "{json}: {err:?} lacks {needle:?}");
        }
    }

    #[test]
    fn rabbitmq_hosts_and_ports_may_list_the_nodes_of_a_cluster() {
        let endpoint = |body: &str| block_on(answering("rabbitmq", body).rabbitmq());
        let one = endpoint(r#"{"host": ["h"], "port": [5672], "username": ["u"], "pass": ["p"]}"#).unwrap();
        assert_eq!(one.nodes, vec![("h".to_string(), 5672)]);
        let paired =
            endpoint(r#"{"host": ["a", "b", "c"], "port": [1, "2", 3], "username": ["u"], "pass": ["p"]}"#).unwrap();
        assert_eq!(
            paired.nodes,
            vec![("a".to_string(), 1), ("b".to_string(), 2), ("c".to_string(), 3)]
        );
        assert_eq!((paired.host.as_str(), paired.port), ("a", 1));
        let shared = endpoint(r#"{"host": ["a", "b"], "port": [5672], "username": ["u"], "pass": ["p"]}"#).unwrap();
        assert_eq!(shared.nodes, vec![("a".to_string(), 5672), ("b".to_string(), 5672)]);
        for (body, needle) in [
            (
                r#"{"host": ["a", "b", "c"], "port": [1, 2], "username": ["u"], "pass": ["p"]}"#,
                "port lists 2 ports for 3 hosts",
            ),
            (
                r#"{"host": [], "port": [1], "username": ["u"], "pass": ["p"]}"#,
                "host: invalid length 0, expected an array holding one value or more",
            ),
            (
                r#"{"host": ["a", ""], "port": [1], "username": ["u"], "pass": ["p"]}"#,
                "host[1]: invalid value: string \"\", expected a non-empty string",
            ),
            (
                r#"{"host": ["a"], "port": [1], "username": ["u", "v"], "pass": ["p"]}"#,
                "username: invalid length 2, expected an array holding exactly one value",
            ),
        ] {
            let err = endpoint(body).unwrap_err().to_string();
            assert!(err.contains(needle), "{body}: {err:?} lacks {needle:?}");
        }
    }

    #[test]
    fn endpoint_fields_hold_one_value_and_never_show_a_secret() {
        let ok = block_on(
            answering(
                "rabbitmq",
                r#"{"host": ["h"], "port": ["5673"], "username": ["u"], "pass": ["ref"], "vhost": ["ignored"]}"#,
            )
            .rabbitmq(),
        )
        .unwrap();
        assert_eq!((ok.host.as_str(), ok.port, ok.pass.as_str()), ("h", 5673, "ref"));
        let db = block_on(
            answering(
                "db",
                r#"{"host": ["h"], "port": [5432], "username": ["u"], "database": ["d"], "pass": ["ref"]}"#,
            )
            .db(),
        )
        .unwrap();
        assert_eq!((db.port, db.database.as_str()), (5432, "d"));
        let rabbit = |body: &str| {
            block_on(answering("rabbitmq", body).rabbitmq())
                .unwrap_err()
                .to_string()
        };
        let base = r#""host": ["h"], "username": ["u"]"#;
        for (fields, needle) in [
            (r#""port": [5672]"#, "(missing field `pass`)"),
            (
                r#""port": [5672], "pass": ["a", "b"]"#,
                "pass: invalid length 2, expected an array holding exactly one value",
            ),
            (
                r#""port": [5672], "pass": []"#,
                "pass: invalid length 0, expected an array holding exactly one value",
            ),
            (
                r#""port": [5672], "pass": "hunter2""#,
                "pass: invalid type: a string, expected an array holding exactly one value",
            ),
            (
                r#""port": [5672], "pass": [""]"#,
                "pass[0]: invalid value: string \"\", expected a non-empty string",
            ),
            (
                r#""port": [0], "pass": ["p"]"#,
                "port[0]: invalid value: integer `0`, expected a port number (1-65535)",
            ),
            (
                r#""port": [70000], "pass": ["p"]"#,
                "port[0]: invalid value: integer `70000`, expected a port number",
            ),
            (
                r#""port": ["amqp"], "pass": ["p"]"#,
                "port[0]: invalid value: string \"amqp\", expected a port number",
            ),
        ] {
            let err = rabbit(&format!("{{{base}, {fields}}}"));
            assert!(err.contains(needle), "{fields}: {err:?} lacks {needle:?}");
            assert!(err.contains("endpoint \"rabbitmq\" answered a document ("), "{err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
        let storage =
            block_on(answering("object-storage", r#"{"host": ["h"], "pass:access-key": ["a"]}"#).object_storage())
                .unwrap_err()
                .to_string();
        assert!(storage.contains("missing field `pass:secret-key`"), "{storage}");
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
