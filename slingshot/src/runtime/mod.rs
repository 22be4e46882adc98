//! The runtime: builds the backends a sys-map names, starts services on them,
//! and runs several services of one process side by side.

pub(crate) mod connect;
pub(crate) mod encryption;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::base::failure::Failure;
use crate::broker::dead_letter_queue;
use crate::broker::memory::MemoryBroker;
use crate::broker::{Broker, Durability, Message};
use crate::consume::routing::RouteTable;
use crate::consume::supervise::keep_consuming;
use crate::consume::worker::{Stats, Worker};
use crate::db::{ConnectionKind, DbTarget};
use crate::error::Error;
use crate::execute::contract::RequestContext;
use crate::execute::journal::Journal;
use crate::execute::service::ServiceDef;
use crate::execute::{Backing, Executed, Executor, Job};
use crate::runtime::connect::{database_target, rabbitmq_from, s3_config_from};
use crate::settings::Settings;
use crate::storage::dir::DirStore;
use crate::storage::s3::S3Store;
use crate::storage::ObjectStore;
use crate::sysmap::{BrokerBackend, ObjectsBackend, ServiceWiring, SysMap};

/// The backends of one process, and the services running on them.
///
/// Two services of one process on the embedded default, wired by a sys-map
/// file: IDs sent to `double` come out of `halve` unchanged.
///
/// ```
/// use slingshot::{Runtime, ServiceDef, Settings};
///
/// #[slingshot::microservice(name = "double", sys_map = "file:unused.json", main = false)]
/// fn double(request: u64) -> Vec<(u64, bool)> {
///     vec![(request * 2, true)]
/// }
///
/// #[slingshot::microservice(name = "halve", sys_map = "file:unused.json", main = false)]
/// fn halve(request: u64) -> Vec<(u64, bool)> {
///     vec![(request / 2, true)]
/// }
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let sysmap = dir.path().join("sysmap.json");
/// std::fs::write(&sysmap, r#"{"endpoints": {
///     "double": {"in": "numbers", "out": [{"case": true, "queues": ["doubled"]}]},
///     "halve": {"in": "doubled", "out": [{"case": true, "queues": ["results"]}]}
/// }}"#)?;
/// let runtime = Runtime::connect(&format!("file:{}", sysmap.display()), Settings::default()).await?;
/// let first = runtime.start(ServiceDef::find("double")?).await?;
/// let second = runtime.start(ServiceDef::find("halve")?).await?;
/// runtime.broker().declare("results", slingshot::broker::Durability::Durable).await?;
/// runtime.send("numbers", 1..=10).await?;
/// runtime.run_until_idle(&[&first, &second]).await?;
/// assert_eq!(runtime.broker().ready_count("results").await?, 10);
/// # Ok(()) }
/// ```
pub struct Runtime {
    sysmap: SysMap,
    broker: Arc<dyn Broker>,
    store: Arc<dyn ObjectStore>,
    settings: Settings,
    shutdown: watch::Sender<bool>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("sysmap", &self.sysmap.describe())
            .field("broker", &self.broker.describe())
            .field("store", &self.store.describe())
            .finish()
    }
}

/// A service started by [`Runtime::start`].
pub struct RunningService {
    /// The service's definition.
    pub def: &'static ServiceDef,
    /// Its wiring, as the sys-map gave it.
    pub wiring: ServiceWiring,
    /// Its live counters.
    pub stats: Arc<Stats>,
    /// Routes of the sys-map whose case the function can never return
    /// (reported at start-up; the service runs regardless).
    pub unreachable: Vec<crate::sysmap::Route>,
    task: JoinHandle<Result<(), Error>>,
}

impl std::fmt::Debug for RunningService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningService")
            .field("name", &self.def.name)
            .finish_non_exhaustive()
    }
}

impl RunningService {
    /// Waits until the service stops: `Ok` after a requested shutdown, `Err`
    /// if it failed. Call it again only if an earlier call was cancelled
    /// before it returned.
    pub async fn finished(&mut self) -> Result<(), Error> {
        match (&mut self.task).await {
            Ok(result) => result,
            Err(e) => Err(Error::Crashed {
                what: format!("service {}", self.def.name),
                message: e.to_string(),
            }),
        }
    }

    /// Whether the service's task has ended.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// What a service did for one request run with [`Runtime::invoke`].
#[derive(Debug, Clone, Default)]
pub struct Invocation {
    /// Outputs and uploaded objects.
    pub executed: Executed,
    /// `(queue, id)` the outputs route to (not sent by `invoke`).
    pub routes: Vec<(String, u64)>,
    /// Outputs whose case has no route.
    pub unrouted: Vec<(u64, crate::base::case::CaseValue)>,
}

/// A service ready to consume.
struct Prepared {
    wiring: ServiceWiring,
    routes: Arc<RouteTable>,
    executor: Arc<dyn Executor>,
    unreachable: Vec<crate::sysmap::Route>,
}

impl Runtime {
    /// Opens the sys-map at `location` and builds the backends it names.
    pub async fn connect(location: &str, settings: Settings) -> Result<Runtime, Error> {
        let sysmap = SysMap::open_with(location, settings.sys_map_timeouts())?;
        Self::with_sysmap(sysmap, settings).await
    }

    /// Builds the backends `sysmap` names.
    pub async fn with_sysmap(sysmap: SysMap, settings: Settings) -> Result<Runtime, Error> {
        let backends = sysmap.backends();
        let broker: Arc<dyn Broker> = match backends.broker {
            BrokerBackend::Memory => Arc::new(MemoryBroker::new()),
            BrokerBackend::RabbitMq => Arc::new(rabbitmq_from(&sysmap, &settings).await?),
        };
        let store = Self::store_from(&sysmap, &settings).await?;
        Ok(Self::from_parts(sysmap, broker, store, settings))
    }

    /// The object store `sysmap` names (tools that need no broker).
    pub(crate) async fn store_from(sysmap: &SysMap, settings: &Settings) -> Result<Arc<dyn ObjectStore>, Error> {
        Ok(match sysmap.backends().objects {
            ObjectsBackend::Dir(root) => Arc::new(DirStore::new(root)),
            ObjectsBackend::S3 => Arc::new(S3Store::with_timeouts(
                &s3_config_from(sysmap, settings).await?,
                settings.s3_timeouts,
            )),
        })
    }

    /// A runtime on backends built by the caller (tests, custom setups).
    pub fn from_parts(
        sysmap: SysMap,
        broker: Arc<dyn Broker>,
        store: Arc<dyn ObjectStore>,
        settings: Settings,
    ) -> Runtime {
        Runtime {
            sysmap,
            broker,
            store,
            settings,
            shutdown: watch::Sender::new(false),
        }
    }

    /// The broker all services of this runtime share.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.broker
    }

    /// A client calling services through this runtime's broker (on the
    /// embedded default, the services this runtime started), following
    /// requests through every service linked into this binary.
    pub fn client(&self) -> crate::client::Client {
        let services = ServiceDef::all().iter().map(|def| def.name.to_string()).collect();
        self.client_following(services)
    }

    /// [`Runtime::client`], following requests through `services`.
    pub fn client_following(&self, services: Vec<String>) -> crate::client::Client {
        crate::client::Client::new(self.broker.clone(), self.sysmap.clone(), services)
    }

    /// The object store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The sys-map client.
    pub fn sysmap(&self) -> &SysMap {
        &self.sysmap
    }

    /// The settings services start with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// A connection to the database the sys-map configures, for set-up work
    /// such as migrations (services get theirs from their pool).
    pub async fn connect_database(&self) -> Result<crate::db::AnyConnection, Error> {
        let target = database_target(&self.sysmap, &self.settings, ConnectionKind::Any, "set-up").await?;
        let Some(target) = target else {
            return Err(Error::Config("no database is configured".into()));
        };
        tokio::task::spawn_blocking(move || crate::db::establish_any(&target))
            .await
            .map_err(|e| Error::Crashed {
                what: "the database set-up".into(),
                message: e.to_string(),
            })?
            .map_err(Error::from)
    }

    async fn database_for(&self, def: &ServiceDef) -> Result<Option<DbTarget>, Error> {
        database_target(&self.sysmap, &self.settings, def.connection, def.name).await
    }
}

impl Runtime {
    /// Everything `def` needs before it can process: wiring, routes checked
    /// against its case type, queues declared, the executor with its pool.
    async fn prepare(
        &self,
        def: &'static ServiceDef,
        stats: Arc<Stats>,
        journal: Option<Arc<Journal>>,
    ) -> Result<Prepared, Error> {
        let wiring = self.sysmap.service(def.name).await?;
        for warning in &wiring.warnings {
            tracing::warn!(service = def.name, sys_map = %self.sysmap.describe(), "sys-map: {warning}");
        }
        let routes = Arc::new(RouteTable::new(&wiring));
        let mut unreachable = Vec::new();
        match (def.case_domain)() {
            Some(domain) => {
                for route in routes.unreachable(&domain) {
                    unreachable.push(route.clone());
                    tracing::warn!(
                        service = def.name,
                        case = %route.case,
                        queues = ?route.queues,
                        "sys-map route can never match: `{}` returns cases of {domain}",
                        def.function
                    );
                }
            }
            None => tracing::debug!(
                service = def.name,
                "case type not nameable (impl Trait); routes not checked"
            ),
        }
        for (queue, durability) in queues_of(&wiring, &self.settings) {
            self.broker.declare(&queue, durability).await?;
        }
        if let Some(exchange) = &wiring.events {
            self.broker.declare_topic(exchange).await?;
        }
        for subscription in &wiring.subscriptions {
            self.broker.declare_topic(&subscription.exchange).await?;
            for pattern in &subscription.events {
                self.broker
                    .bind(&wiring.inbound, &subscription.exchange, pattern)
                    .await?;
            }
        }
        let store = encryption::store_for(&self.sysmap, &self.settings, def.name, &wiring, &self.store).await?;
        let backing = Backing {
            name: def.name,
            sysmap: self.sysmap.clone(),
            store,
            database: self.database_for(def).await?,
            pool_size: u32::try_from(self.settings.concurrency).unwrap_or(u32::MAX),
            staging_dir: self.settings.staging_dir.clone(),
            handle: tokio::runtime::Handle::current(),
            stats,
            journal,
            once: self.settings.once.unwrap_or(def.once),
        };
        let prepare = def.prepare;
        let executor = tokio::task::spawn_blocking(move || prepare(backing))
            .await
            .map_err(|e| Error::Crashed {
                what: format!("preparing service {}", def.name),
                message: e.to_string(),
            })??;
        Ok(Prepared {
            wiring,
            routes,
            executor,
            unreachable,
        })
    }

    /// This instance's crash journal of `def` (see [`crate::journal`]).
    async fn open_journal(&self, def: &'static ServiceDef) -> Result<Arc<Journal>, Error> {
        let dir = self.settings.state_dir.clone();
        let opened = tokio::task::spawn_blocking(move || Journal::open(&dir, def.name).map_err(|e| (dir, e)))
            .await
            .map_err(|e| Error::Crashed {
                what: format!("opening the crash journal of {}", def.name),
                message: e.to_string(),
            })?;
        opened.map(Arc::new).map_err(|(dir, e)| {
            Error::Config(format!(
                "SLINGSHOT_STATE_DIR={}: cannot keep the crash journal there: {e}",
                dir.display()
            ))
        })
    }

    /// Starts consuming for `def`. It runs until [`Runtime::shutdown`].
    pub async fn start(&self, def: &'static ServiceDef) -> Result<RunningService, Error> {
        let stats = Arc::new(Stats::default());
        // Asked before the queues are declared: once they are, the service
        // is as good as started.
        let broker_version = match self.broker.server_info().await {
            Some(info) => info.to_string(),
            None => "unknown".to_string(),
        };
        let journal = self.open_journal(def).await?;
        let Prepared {
            wiring,
            routes,
            executor,
            unreachable,
        } = self.prepare(def, stats.clone(), Some(journal.clone())).await?;
        tracing::info!(
            service = def.name,
            inbound = %wiring.inbound,
            broker = %self.broker.describe(),
            broker_version,
            objects = %self.store.describe(),
            sys_map = %self.sysmap.describe(),
            queues = %self.settings.queue_mode,
            queue_type = %self.settings.queue_type,
            "started"
        );
        let once = executor.clone().once();
        let worker = Arc::new(Worker {
            name: def.name,
            inbound: wiring.inbound.clone(),
            events: wiring.events.clone(),
            executor,
            broker: self.broker.clone(),
            routes,
            settings: self.settings.clone(),
            stats: stats.clone(),
            journal: Some(journal),
            alone: tokio::sync::RwLock::new(()),
            once,
            relay_wake: tokio::sync::Notify::new(),
            sent_rows: std::sync::Mutex::new(Vec::new()),
            sent_wake: tokio::sync::Notify::new(),
        });
        let shutdown = self.shutdown.subscribe();
        let queues = queues_of(&wiring, &self.settings);
        let task = tokio::spawn(keep_consuming(worker, queues, shutdown));
        Ok(RunningService {
            def,
            wiring,
            stats,
            unreachable,
            task,
        })
    }

    /// Processes `ids` with `def` here and now, without consuming or
    /// publishing: `process` runs, its files are uploaded, and the routes the
    /// outputs would take are returned.
    pub async fn invoke(
        &self,
        def: &'static ServiceDef,
        ids: &[u64],
    ) -> Result<Vec<Result<Invocation, Failure>>, Error> {
        let Prepared { routes, executor, .. } = self.prepare(def, Arc::default(), None).await?;
        let mut results = Vec::with_capacity(ids.len());
        for &request in ids {
            let job = Job {
                context: RequestContext::new(def.name, request, 1, false, format!("invoke-{request}")),
                fingerprint: 0,
                // Run here and now, not through the inbox.
                once: None,
            };
            results.push(executor.clone().execute(job).await.map(|executed| {
                let plan = routes.plan(&executed.outputs);
                Invocation {
                    executed,
                    routes: plan.sends,
                    unrouted: plan.unrouted,
                }
            }));
        }
        Ok(results)
    }

    /// Publishes each ID to `queue` (declaring it first, as the settings'
    /// queue mode says).
    pub async fn send(&self, queue: &str, ids: impl IntoIterator<Item = u64>) -> Result<(), Error> {
        self.broker
            .declare(queue, self.settings.queue_mode.durability())
            .await?;
        let publishes: Vec<_> = ids
            .into_iter()
            .map(|id| self.broker.publish(queue, Message::id(id)))
            .collect();
        futures::future::try_join_all(publishes).await?;
        Ok(())
    }

    /// Asks every service of this runtime to stop taking work and finish.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Waits until `services` have nothing left to do (their inbound queues
    /// are empty and nothing is in flight, twice in a row), then shuts them
    /// down and waits for them. For local runs and tests of finite work.
    pub async fn run_until_idle(&self, services: &[&RunningService]) -> Result<(), Error> {
        let mut quiet_rounds = 0;
        while quiet_rounds < 2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if let Some(stopped) = services.iter().find(|s| s.is_finished()) {
                return Err(Error::Stopped(stopped.def.name.to_string()));
            }
            let mut busy = false;
            for service in services {
                busy |= service.stats.in_flight.load(Ordering::Relaxed) > 0
                    || service.stats.consumed.load(Ordering::Relaxed)
                        > service.stats.processed.load(Ordering::Relaxed)
                            + service.stats.retried.load(Ordering::Relaxed)
                            + service.stats.dead_lettered.load(Ordering::Relaxed)
                            + service.stats.expired.load(Ordering::Relaxed)
                    || self.broker.ready_count(&service.wiring.inbound).await? > 0;
            }
            quiet_rounds = if busy { 0 } else { quiet_rounds + 1 };
        }
        self.shutdown();
        Ok(())
    }
}

/// Every queue a service declares, and how: its inbound and outbound queues
/// as the queue mode says, its dead-letter queue (only slingshot uses it)
/// always durable.
pub(crate) fn queues_of(wiring: &ServiceWiring, settings: &Settings) -> Vec<(String, Durability)> {
    let shared = settings.queue_mode.durability();
    let mut queues: Vec<(String, Durability)> = std::iter::once(wiring.inbound.clone())
        .chain(wiring.routes.iter().flat_map(|r| r.queues.iter().cloned()))
        .map(|queue| (queue, shared))
        .collect();
    queues.push((dead_letter_queue(&wiring.inbound), Durability::Durable));
    queues.sort();
    queues.dedup_by(|a, b| a.0 == b.0);
    queues
}
