//! `check`: probes everything a service needs (sys-map, secrets, broker, buckets, database) and says what to fix, without consuming or publishing.

use std::fmt;

use crate::broker::Broker;
use crate::db::ConnectionKind;
use crate::error::Error;
use crate::routing::RouteTable;
use crate::runtime::{database_target, rabbitmq_from, s3_config_from};
use crate::service::ServiceDef;
use crate::storage::s3::S3Store;
use crate::sysmap::{BrokerBackend, ObjectsBackend, SysMap, SysMapError};
use crate::topology::{ServiceNode, Topology};

/// Bucket references `check` and `topology` look for.
pub const BUCKET_REFERENCES: [&str; 2] = ["in", "out"];

/// One probe and its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// What was checked.
    pub what: String,
    /// What was found, or what is wrong and how to fix it.
    pub result: Result<String, String>,
}

/// Everything `check` found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Each probe, in order.
    pub probes: Vec<Probe>,
    /// The service's topology, when its wiring could be read.
    pub topology: Option<Topology>,
}

impl Report {
    /// Whether every probe passed.
    pub fn ok(&self) -> bool {
        self.probes.iter().all(|p| p.result.is_ok())
    }

    fn pass(&mut self, what: &str, found: impl Into<String>) {
        self.probes.push(Probe {
            what: what.into(),
            result: Ok(found.into()),
        });
    }

    fn fail(&mut self, what: &str, problem: impl Into<String>) {
        self.probes.push(Probe {
            what: what.into(),
            result: Err(problem.into()),
        });
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for probe in &self.probes {
            match &probe.result {
                Ok(found) => writeln!(f, "ok      {}: {found}", probe.what)?,
                Err(problem) => writeln!(f, "FAILED  {}: {problem}", probe.what)?,
            }
        }
        if let Some(topology) = &self.topology {
            writeln!(f, "\ntopology (Mermaid):\n{}", topology.mermaid())?;
        }
        let failed = self.probes.iter().filter(|p| p.result.is_err()).count();
        match failed {
            0 => writeln!(f, "all {} checks passed", self.probes.len()),
            n => writeln!(f, "{n} of {} checks failed", self.probes.len()),
        }
    }
}

/// Checks `def` against the sys-map at `location`.
pub async fn check(def: &'static ServiceDef, location: &str) -> Report {
    let mut report = Report::default();
    let sysmap = match SysMap::open(location) {
        Ok(sysmap) => {
            report.pass("sys-map", sysmap.describe());
            sysmap
        }
        Err(e) => {
            report.fail(
                "sys-map",
                format!("{e}; set SLINGSHOT_SYS_MAP or the attribute's sys_map"),
            );
            return report;
        }
    };
    let backends = sysmap.backends();

    match sysmap.service(def.name).await {
        Ok(wiring) => {
            report.pass(
                "wiring",
                format!("consumes {:?}, {} route(s)", wiring.inbound, wiring.routes.len()),
            );
            if let Some(domain) = (def.case_domain)() {
                for route in RouteTable::new(&wiring).unreachable(&domain) {
                    report.fail(
                        "routes",
                        format!(
                            "case {} (to {:?}) can never match: `{}` returns cases of {domain}; fix the sys-map's \"out\" entry",
                            route.case, route.queues, def.function
                        ),
                    );
                }
            }
            let mut buckets = Vec::new();
            for reference in BUCKET_REFERENCES {
                match sysmap.bucket(def.name, reference).await {
                    Ok(bucket) => buckets.push((reference.to_string(), bucket)),
                    Err(SysMapError::Missing { .. }) => {}
                    Err(e) => report.fail(&format!("bucket {reference:?}"), e.to_string()),
                }
            }
            report.topology = Some(Topology {
                services: vec![ServiceNode {
                    name: def.name.to_string(),
                    wiring,
                    buckets,
                }],
            });
        }
        Err(e) => report.fail("wiring", format!("{e}; add the service's endpoint to the sys-map")),
    }

    match backends.broker {
        BrokerBackend::Memory => report.pass("broker", "in-process (nothing to connect to)"),
        BrokerBackend::RabbitMq => match rabbitmq_from(&sysmap).await {
            Ok(broker) => {
                report.pass("broker", broker.describe());
                if let Some(topology) = &report.topology {
                    let inbound = topology.services[0].wiring.inbound.clone();
                    match broker.ready_count(&inbound).await {
                        Ok(n) => report.pass("inbound queue", format!("{inbound:?} holds {n} ready message(s)")),
                        Err(_) => report.pass(
                            "inbound queue",
                            format!("{inbound:?} does not exist yet; it is declared at start"),
                        ),
                    }
                }
            }
            Err(e) => report.fail(
                "broker",
                format!("{e}; check the rabbitmq endpoint and its password secret"),
            ),
        },
    }

    let buckets: Vec<(String, String)> = report
        .topology
        .as_ref()
        .map(|t| t.services[0].buckets.clone())
        .unwrap_or_default();
    match backends.objects {
        ObjectsBackend::Dir(root) => report.pass("object storage", format!("directory {}", root.display())),
        ObjectsBackend::S3 => match s3_config_from(&sysmap).await {
            Ok(config) => {
                let store = S3Store::new(&config);
                report.pass(
                    "object storage",
                    format!("S3 {} (region {})", config.endpoint, config.region),
                );
                for (reference, bucket) in buckets {
                    match store.check_bucket(&bucket).await {
                        Ok(()) => report.pass(&format!("bucket {reference:?}"), format!("{bucket} is reachable")),
                        Err(e) => report.fail(
                            &format!("bucket {reference:?}"),
                            format!("{e}; create bucket {bucket:?} or grant the key access to it"),
                        ),
                    }
                }
            }
            Err(e) => report.fail(
                "object storage",
                format!("{e}; check the object-storage endpoint and key secrets"),
            ),
        },
    }

    if def.connection != ConnectionKind::None {
        match database_target(&sysmap, def.connection, def.name).await {
            Ok(Some(target)) => {
                let shown = target.display();
                let prepare = def.prepare;
                // Preparing the service opens its pool, which checks out a
                // tested connection; nothing is processed.
                let backing = crate::service::Backing {
                    name: def.name,
                    sysmap: sysmap.clone(),
                    store: std::sync::Arc::new(crate::storage::dir::DirStore::new(std::env::temp_dir())),
                    database: Some(target),
                    pool_size: 1,
                    staging_dir: std::env::temp_dir(),
                    handle: tokio::runtime::Handle::current(),
                    stats: Default::default(),
                };
                let opened = tokio::task::spawn_blocking(move || prepare(backing).map(drop))
                    .await
                    .map_err(|e| Error::Config(e.to_string()))
                    .and_then(|r| r);
                match opened {
                    Ok(()) => report.pass("database", shown),
                    Err(e) => report.fail("database", format!("{e}; check the db endpoint, its password secret, and that the database accepts connections")),
                }
            }
            Ok(None) => report.fail("database", "no database is configured"),
            Err(e) => report.fail("database", e.to_string()),
        }
    }
    report
}
