//! A service as the macro defines it: the `Handler` it generates and the
//! `ServiceDef` registered with `inventory`. Running requests is `execute`'s;
//! classifying their failures is `failure`'s.

use std::sync::Arc;

use crate::base::case::CaseDomain;
use crate::db::{ConnectionKind, DbConnection};
use crate::error::Error;
use crate::execute::contract::{Outcome, Parts};
use crate::execute::typed::ObjectSchema;
use crate::execute::{Backing, Executor};

/// What `#[slingshot::microservice]` implements for the annotated function.
#[doc(hidden)]
pub trait Handler: Send + Sync + 'static {
    /// The connection type `process` takes (`NoConnection` if none).
    type Connection: DbConnection;
    /// Calls `process`. Runs on a blocking thread.
    fn call(&self, request: u64, parts: &Parts<'_>, connection: &mut Self::Connection) -> Outcome;
    /// The values the function's case type can take, if its return type names it.
    fn case_domain() -> Option<CaseDomain>;
}

/// A service linked into this binary, registered by `#[slingshot::microservice]`.
#[derive(Clone, Copy)]
pub struct ServiceDef {
    /// The service's name: its sys-map endpoint.
    pub name: &'static str,
    /// The sys-map given in the attribute (`SLINGSHOT_SYS_MAP` overrides it).
    pub sys_map: &'static str,
    /// The annotated function's name.
    pub function: &'static str,
    /// The database the function's connection parameter needs.
    pub connection: ConnectionKind,
    /// Whether it runs in once mode unless `SLINGSHOT_ONCE` says otherwise
    /// (`#[microservice(once = true)]`).
    pub once: bool,
    #[doc(hidden)]
    pub prepare: fn(Backing) -> Result<Arc<dyn Executor>, Error>,
    #[doc(hidden)]
    pub case_domain: fn() -> Option<CaseDomain>,
    /// The typed objects it reads and writes, with their schemas.
    #[doc(hidden)]
    pub objects: fn(&ServiceDef) -> Vec<ObjectSchema>,
}

impl std::fmt::Debug for ServiceDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceDef")
            .field("name", &self.name)
            .field("sys_map", &self.sys_map)
            .field("function", &self.function)
            .field("connection", &self.connection)
            .field("once", &self.once)
            .finish_non_exhaustive()
    }
}

inventory::collect!(ServiceDef);

/// Services registered while the program runs (Python services), beside the
/// ones `#[slingshot::microservice]` links in.
static REGISTERED: std::sync::Mutex<Vec<&'static ServiceDef>> = std::sync::Mutex::new(Vec::new());

fn registered() -> Vec<&'static ServiceDef> {
    // A poisoned lock only means a panic elsewhere while pushing; the list is intact.
    REGISTERED.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

impl ServiceDef {
    /// The typed objects the service reads and writes, with their JSON
    /// Schemas, by bucket reference.
    pub fn object_schemas(&self) -> Vec<ObjectSchema> {
        let mut schemas = (self.objects)(self);
        schemas.sort_by(|a, b| (&a.reference, a.direction).cmp(&(&b.reference, b.direction)));
        schemas
    }

    /// Registers a service defined at run time (a Python service). A later
    /// registration of the same name takes the place of the earlier one. Its
    /// name must follow the rule `#[microservice]` enforces at compile time.
    #[doc(hidden)]
    pub fn register(def: ServiceDef) -> Result<&'static ServiceDef, Error> {
        if let Err(why) = slingshot_names::check_service_name(def.name) {
            return Err(Error::Config(slingshot_names::invalid(def.name, why)));
        }
        let mut list = REGISTERED.lock().unwrap_or_else(|e| e.into_inner());
        // Leaked on purpose: a service definition lives as long as the program.
        let def: &'static ServiceDef = Box::leak(Box::new(def));
        list.retain(|d| d.name != def.name);
        list.push(def);
        Ok(def)
    }

    /// Every service linked into this binary or registered at run time, by name.
    pub fn all() -> Vec<&'static ServiceDef> {
        let mut all: Vec<_> = inventory::iter::<ServiceDef>.into_iter().collect();
        all.extend(registered());
        all.sort_by_key(|d| d.name);
        all
    }

    /// The service called `name`, if one is linked in or registered.
    pub fn named(name: &str) -> Option<&'static ServiceDef> {
        registered()
            .into_iter()
            .rev()
            .find(|d| d.name == name)
            .or_else(|| inventory::iter::<ServiceDef>.into_iter().find(|d| d.name == name))
    }

    /// Like [`ServiceDef::named`], with an error that lists the services there are.
    pub fn find(name: &str) -> Result<&'static ServiceDef, Error> {
        Self::named(name).ok_or_else(|| {
            let known: Vec<_> = Self::all().iter().map(|d| d.name).collect();
            Error::Config(format!(
                "no service {name:?} is linked into this binary (services: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))
        })
    }
}
