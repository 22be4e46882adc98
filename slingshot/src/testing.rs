//! An in-memory harness to unit-test a `process` function: give it objects and
//! routes, invoke IDs, inspect outputs, routes and written objects.
//!
//! ```
//! # #[slingshot::microservice(name = "shout", sys_map = "file:unused.json", main = false)]
//! # fn shout(request: u64, read_file: &slingshot::ReadFileFn, write_file:
//! &slingshot::WriteFileFn) -> Result<Vec<(u64, bool)>, slingshot::AnyError> {
//! #     let mut s = String::new();
//! #     std::io::Read::read_to_string(&mut read_file("in", request)?, &mut s)?;
//! #     std::io::Write::write_all(&mut write_file("out", request)?, s.to_uppercase().as_bytes())?;
//! #     Ok(vec![(request, true)])
//! # }
//! use slingshot::testing::Harness;
//!
//! let harness = Harness::new("shout").route(true, &["loud"]).object("in", 7, "hi");
//! let run = harness.invoke(7).unwrap();
//! assert_eq!(run.routes, [("loud".to_string(), 7)]);
//! assert_eq!(harness.read("out", 7).unwrap(), b"HI");
//! ```
//!
//! Everything lives in a temporary directory: objects in a directory store,
//! the database (for `SqliteConnection` and `AnyConnection`) in SQLite.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::base::case::{Case, CaseValue};
use crate::base::failure::Failure;
use crate::broker::memory::MemoryBroker;
use crate::execute::service::ServiceDef;
use crate::runtime::{Invocation, Runtime};
use crate::settings::Settings;
use crate::storage::dir::DirStore;
use crate::storage::ObjectStore;
use crate::sysmap::file::FileSysMap;
use crate::sysmap::SysMap;

/// A test bench for one service; see the [module docs](self).
pub struct Harness {
    def: &'static ServiceDef,
    dir: tempfile::TempDir,
    routes: Vec<(CaseValue, Vec<String>)>,
    buckets: Map<String, Value>,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("service", &self.def.name)
            .finish_non_exhaustive()
    }
}

impl Harness {
    /// A harness for the service called `name`. Panics, listing the services
    /// there are, if no such service is linked into the test binary.
    pub fn new(name: &str) -> Harness {
        let def = match ServiceDef::find(name) {
            Ok(def) => def,
            Err(e) => panic!("{e}"),
        };
        let dir = match tempfile::Builder::new().prefix("slingshot-harness-").tempdir() {
            Ok(dir) => dir,
            Err(e) => panic!("cannot create the harness's temporary directory: {e}"),
        };
        Harness {
            def,
            dir,
            routes: Vec::new(),
            buckets: Map::new(),
        }
    }

    /// Routes outputs with `case` to `queues`.
    pub fn route(mut self, case: impl Case, queues: &[&str]) -> Self {
        self.routes
            .push((case.to_case(), queues.iter().map(|q| q.to_string()).collect()));
        self
    }

    /// Maps bucket reference `reference` to `bucket` (by default a reference
    /// `r` maps to bucket `test-r`).
    pub fn bucket(mut self, reference: &str, bucket: &str) -> Self {
        self.buckets.insert(reference.into(), Value::String(bucket.into()));
        self
    }

    /// Stores `content` as object `id` of the bucket behind `reference`.
    pub fn object(self, reference: &str, id: u64, content: impl AsRef<[u8]>) -> Self {
        let path = self.objects_dir().join(self.bucket_of(reference)).join(id.to_string());
        let written = path
            .parent()
            .map(std::fs::create_dir_all)
            .transpose()
            .and_then(|_| std::fs::write(&path, content.as_ref()));
        if let Err(e) = written {
            panic!("cannot store test object {}: {e}", path.display());
        }
        self
    }

    /// The bytes of object `id` in the bucket behind `reference`, if it exists.
    pub fn read(&self, reference: &str, id: u64) -> Option<Vec<u8>> {
        std::fs::read(self.objects_dir().join(self.bucket_of(reference)).join(id.to_string())).ok()
    }

    /// The SQLite file behind `SqliteConnection`/`AnyConnection`, to inspect or prepare.
    pub fn database_path(&self) -> PathBuf {
        self.dir.path().join("harness.db")
    }

    fn objects_dir(&self) -> PathBuf {
        self.dir.path().join("objects")
    }

    fn bucket_of(&self, reference: &str) -> String {
        match self.buckets.get(reference) {
            Some(Value::String(bucket)) => bucket.clone(),
            _ => format!("test-{reference}"),
        }
    }

    fn sysmap(&self) -> SysMap {
        let name = self.def.name;
        let out: Vec<Value> = self
            .routes
            .iter()
            .map(|(case, queues)| {
                let case = match case {
                    CaseValue::Bool(b) => json!(b),
                    // As the sys-map writes integers: i64, then u64; what
                    // JSON cannot hold as a number (no case can equal it)
                    // goes as text.
                    CaseValue::Int(i) => i64::try_from(*i)
                        .map(|i| json!(i))
                        .or_else(|_| u64::try_from(*i).map(|u| json!(u)))
                        .unwrap_or_else(|_| json!(i.to_string())),
                    CaseValue::Huge(u) => u64::try_from(*u)
                        .map(|u| json!(u))
                        .unwrap_or_else(|_| json!(u.to_string())),
                    CaseValue::Str(s) => json!(s),
                };
                json!({"case": case, "queues": queues})
            })
            .collect();
        let mut endpoints = Map::new();
        endpoints.insert(name.into(), json!({"in": format!("{name}-in"), "out": out}));
        for reference in ["in", "out"]
            .iter()
            .map(|r| r.to_string())
            .chain(self.buckets.keys().cloned())
        {
            endpoints.insert(format!("{name}/{reference}"), Value::String(self.bucket_of(&reference)));
        }
        let doc = json!({
            "backends": {
                "broker": "memory",
                "objects": {"dir": self.objects_dir()},
                "database": {"sqlite": self.database_path()},
            },
            "endpoints": endpoints,
        });
        match FileSysMap::parse(&doc.to_string(), self.dir.path(), "(test harness)") {
            Ok(map) => SysMap::new(Arc::new(map)),
            Err(e) => panic!("harness sys-map is invalid: {e}"),
        }
    }

    /// Runs `process` for `id` as the service would: the object store and
    /// database of the harness, files uploaded on success; the routes are
    /// computed but nothing is published. Call from async tests.
    pub async fn run(&self, id: u64) -> Result<Invocation, Failure> {
        let store: Arc<dyn ObjectStore> = Arc::new(DirStore::new(self.objects_dir()));
        let settings = Settings {
            concurrency: 1,
            prefetch: 1,
            staging_dir: self.dir.path().join("staging"),
            ..Settings::default()
        };
        let runtime = Runtime::from_parts(self.sysmap(), Arc::new(MemoryBroker::new()), store, settings);
        match runtime.invoke(self.def, &[id]).await {
            Ok(mut results) => results.remove(0),
            Err(e) => panic!("the harness could not prepare {}: {e}", self.def.name),
        }
    }

    /// [`Harness::run`] for synchronous tests.
    pub fn invoke(&self, id: u64) -> Result<Invocation, Failure> {
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => panic!("cannot start a runtime for the harness: {e}"),
        };
        runtime.block_on(self.run(id))
    }
}
