//! `check`: probes everything a service needs (sys-map, secrets, broker,
//! buckets, database) and says what to fix, without consuming or publishing.

use std::fmt;

use crate::broker::{Broker, BrokerError, Durability, QueueState, QueueType};
use crate::consume::routing::RouteTable;
use crate::db::ConnectionKind;
use crate::error::Error;
use crate::execute::service::ServiceDef;
use crate::ops::topology::{ServiceNode, Topology};
use crate::protocol::dead_letter_queue;
use crate::runtime::connect::{database_target, rabbitmq_from, s3_config_from};
use crate::runtime::queues_of;
use crate::settings::{QueueMode, Settings};
use crate::storage::s3::S3Store;
use crate::storage::ObjectStore;
use crate::sysmap::{BrokerBackend, ObjectsBackend, ServiceWiring, SysMap, SysMapError};

/// Bucket references `check` and `topology` look for.
pub(crate) const BUCKET_REFERENCES: [&str; 2] = ["in", "out"];

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// As it should be.
    Ok,
    /// The service runs, but something is not as it should be (a queue
    /// declared differently, a sys-map entry tolerated rather than used).
    Warning,
    /// The service cannot run like this.
    Failed,
}

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finding {
    /// What was checked.
    pub what: String,
    /// How it came out.
    pub status: Status,
    /// What was found, or what is wrong and how to fix it.
    pub detail: String,
}

/// Everything `check` found.
#[derive(Debug, Clone, Default)]
pub(crate) struct Report {
    /// Each finding, in order.
    pub findings: Vec<Finding>,
    /// The service's topology, when its wiring could be read.
    pub topology: Option<Topology>,
}

impl Report {
    /// Whether nothing failed (warnings do not fail a check).
    pub(crate) fn ok(&self) -> bool {
        self.findings.iter().all(|p| p.status != Status::Failed)
    }

    fn add(&mut self, what: &str, status: Status, detail: impl Into<String>) {
        self.findings.push(Finding {
            what: what.into(),
            status,
            detail: detail.into(),
        });
    }

    fn pass(&mut self, what: &str, found: impl Into<String>) {
        self.add(what, Status::Ok, found);
    }

    fn warn(&mut self, what: &str, problem: impl Into<String>) {
        self.add(what, Status::Warning, problem);
    }

    fn fail(&mut self, what: &str, problem: impl Into<String>) {
        self.add(what, Status::Failed, problem);
    }

    fn count(&self, status: Status) -> usize {
        self.findings.iter().filter(|p| p.status == status).count()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for finding in &self.findings {
            let label = match finding.status {
                Status::Ok => "ok",
                Status::Warning => "WARNING",
                Status::Failed => "FAILED",
            };
            writeln!(f, "{label:<8}{}: {}", finding.what, finding.detail)?;
        }
        if let Some(topology) = &self.topology {
            writeln!(f, "\ntopology (Mermaid):\n{}", topology.mermaid())?;
        }
        let total = self.findings.len();
        let warnings = match self.count(Status::Warning) {
            0 => String::new(),
            1 => ", 1 with a warning".to_string(),
            n => format!(", {n} with warnings"),
        };
        match self.count(Status::Failed) {
            0 => writeln!(f, "all {total} checks passed{warnings}"),
            n => writeln!(f, "{n} of {total} checks failed{warnings}"),
        }
    }
}

/// Checks `def` against the sys-map at `location`, with the queue mode of
/// `settings`.
pub(crate) async fn check(def: &'static ServiceDef, location: &str, settings: &Settings) -> Report {
    let mut report = Report::default();
    let sysmap = match SysMap::open_with(location, settings.sys_map_timeouts()) {
        Ok(sysmap) => sysmap,
        Err(e) => {
            report.fail(
                "sys-map",
                format!("{e}; set SLINGSHOT_SYS_MAP or the attribute's sys_map"),
            );
            return report;
        }
    };
    let backends = sysmap.backends();

    // The service's own endpoint first: whether the sys-map answers at all.
    let wiring = sysmap.service(def.name).await;
    match &wiring {
        Err(e) if e.is_outage() => {
            report.fail(
                "sys-map",
                format!(
                    "{e}; is the sys-map running, and reachable from here? (its location is SLINGSHOT_SYS_MAP, \
                     else the attribute's sys_map)"
                ),
            );
            // Every other check asks the sys-map first.
            return report;
        }
        _ => report.pass("sys-map", format!("{} answers", sysmap.describe())),
    }

    match wiring {
        Ok(wiring) => {
            report.pass(
                "wiring",
                format!("consumes {:?}, {} route(s)", wiring.inbound, wiring.routes.len()),
            );
            for warning in &wiring.warnings {
                report.warn("wiring", format!("{warning}; fix the sys-map's \"out\" entries"));
            }
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
            if !wiring.encrypt.is_empty() {
                match crate::runtime::encryption::key_rings(&sysmap, settings, def.name, &wiring).await {
                    Ok(rings) => {
                        let described: Vec<String> = rings
                            .iter()
                            .map(|(bucket, ring)| format!("{bucket} (writes under {})", ring.write_key_id()))
                            .collect();
                        report.pass("encryption", format!("keys resolve for {}", described.join(", ")));
                    }
                    Err(e) => report.fail(
                        "encryption",
                        format!("{e}; fix the sys-map's \"encrypt\" entry or the key"),
                    ),
                }
            }
            report.topology = Some(Topology {
                services: vec![ServiceNode {
                    name: def.name.to_string(),
                    wiring,
                    buckets,
                    objects: def.object_schemas(),
                }],
            });
        }
        Err(e @ SysMapError::Missing { .. }) => {
            report.fail("wiring", format!("{e}; add the service's endpoint to the sys-map"))
        }
        Err(e) => report.fail("wiring", format!("{e}; fix the service's endpoint in the sys-map")),
    }

    match backends.broker {
        BrokerBackend::Memory => report.pass("broker", "in-process (nothing to connect to)"),
        BrokerBackend::RabbitMq => match rabbitmq_from(&sysmap, settings).await {
            Ok(broker) => {
                report.pass("broker", broker.describe());
                match broker.read_server_info().await {
                    Ok(info) => report.pass("broker version", info.to_string()),
                    Err(e) => report.warn(
                        "broker version",
                        format!("{e}; the broker did not say which version it is"),
                    ),
                }
                if let Some(topology) = &report.topology {
                    let wiring = topology.services[0].wiring.clone();
                    check_queues(&mut report, &broker, &wiring, settings).await;
                }
                // Last: a broker that refuses closes the connection.
                if settings.queue_mode == QueueMode::Compatible {
                    match broker.probe_transient_queues().await {
                        Ok(()) => {}
                        // The queue mode's line says it: that is what fails.
                        Err(e @ BrokerError::Deprecated { .. }) => {
                            let detail = format!("compatible (SLINGSHOT_QUEUE_MODE), but {e}");
                            match report.findings.iter_mut().find(|f| f.what == "queue mode") {
                                Some(finding) => {
                                    finding.status = Status::Failed;
                                    finding.detail = detail;
                                }
                                None => report.fail("queue mode", detail),
                            }
                        }
                        Err(e) => report.warn(
                            "queue mode",
                            format!("cannot check that the broker accepts transient queues: {e}"),
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
        ObjectsBackend::S3 => match s3_config_from(&sysmap, settings).await {
            Ok(config) => {
                let store = S3Store::with_timeouts(&config, settings.s3_timeouts);
                report.pass(
                    "object storage",
                    format!("{} (region {})", store.describe(), config.region),
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
        match database_target(&sysmap, settings, def.connection, def.name).await {
            Ok(Some(target)) => {
                let shown = target.display();
                let prepare = def.prepare;
                // Preparing the service opens its pool, which checks out a
                // tested connection; nothing is processed.
                let backing = crate::execute::Backing {
                    name: def.name,
                    sysmap: sysmap.clone(),
                    // Never written: a root of its own, so that preparing
                    // sweeps no other directory store's partial files.
                    store: std::sync::Arc::new(crate::storage::dir::DirStore::new(
                        std::env::temp_dir().join("slingshot-check-no-objects"),
                    )),
                    database: Some(target),
                    pool_size: 1,
                    staging_dir: settings.staging_dir.clone(),
                    handle: tokio::runtime::Handle::current(),
                    stats: Default::default(),
                    journal: None,
                    once: settings.once.unwrap_or(def.once),
                };
                let opened = tokio::task::spawn_blocking(move || prepare(backing))
                    .await
                    .map_err(|e| Error::Crashed {
                        what: "opening the database pool".into(),
                        message: e.to_string(),
                    })
                    .and_then(|r| r);
                match opened {
                    Ok(executor) => {
                        report.pass("database", shown);
                        if let Some(once) = executor.once() {
                            match once.verify().await {
                                Ok(tables) => report.pass("once tables", tables),
                                Err(e) => report.fail(
                                    "once tables",
                                    format!("{e}; the service's database user needs CREATE on its schema once, then SELECT, INSERT and DELETE on both tables"),
                                ),
                            }
                        }
                    }
                    Err(e) => report.fail("database", format!("{e}; check the db endpoint, its password secret, and that the database accepts connections")),
                }
            }
            Ok(None) => report.fail("database", "no database is configured"),
            Err(e) => report.fail("database", e.to_string()),
        }
    }
    report
}

/// Probes every queue the service declares: whether it exists, and whether
/// it is declared as this service (and, in compatible mode, the original
/// services beside it) would declare it.
async fn check_queues(report: &mut Report, broker: &dyn Broker, wiring: &ServiceWiring, settings: &Settings) {
    let mode = settings.queue_mode;
    report.pass(
        "queue mode",
        match mode {
            QueueMode::Durable => "durable (SLINGSHOT_QUEUE_MODE): new queues survive a broker restart",
            QueueMode::Compatible => "compatible (SLINGSHOT_QUEUE_MODE): new queues are transient, as original slingshot-microservice services declare them",
        },
    );
    report.pass(
        "queue type",
        match settings.queue_type {
            QueueType::Classic => "classic (SLINGSHOT_QUEUE_TYPE): new queues live on one RabbitMQ node",
            QueueType::Quorum => "quorum (SLINGSHOT_QUEUE_TYPE): new queues are replicated over the cluster, with a delivery limit of 20 and at-least-once dead-lettering to the dead-letter queue",
        },
    );
    let dead_letters = dead_letter_queue(&wiring.inbound);
    for (queue, durability) in queues_of(wiring, settings) {
        let what = format!("queue {queue:?}");
        let state = match broker.inspect(&queue, durability).await {
            Ok(state) => state,
            Err(e) => {
                report.fail(&what, e.to_string());
                continue;
            }
        };
        let ready = if queue == wiring.inbound {
            match broker.ready_count(&queue).await {
                Ok(n) => format!("; {n} ready message(s)"),
                Err(_) => String::new(),
            }
        } else {
            String::new()
        };
        match state {
            QueueState::Missing => report.pass(&what, format!("does not exist yet; declared {durability} at start")),
            QueueState::Matches => report.pass(&what, format!("exists, {durability}{ready}")),
            QueueState::Differs(broker_says) => {
                let other = match durability {
                    Durability::Durable => Durability::Transient,
                    Durability::Transient => Durability::Durable,
                };
                let only_durability = matches!(broker.inspect(&queue, other).await, Ok(QueueState::Matches));
                let advice = match queue_type_advice(&broker_says, settings.queue_type) {
                    Some(advice) => advice,
                    None => mismatch_advice(&queue, queue == dead_letters, durability, only_durability, mode),
                };
                report.warn(&what, format!("{advice}{ready} (RabbitMQ: {broker_says})"));
            }
        }
    }
}

/// What a queue of another type than `wanted` means, if the broker's
/// refusal says the queue type differs.
fn queue_type_advice(broker_says: &str, wanted: QueueType) -> Option<String> {
    // RabbitMQ names the first argument that differs: for a classic queue
    // declared as quorum, one of the quorum arguments it lacks.
    let lacks_quorum_arguments = wanted == QueueType::Quorum && broker_says.contains("but current is none");
    if !broker_says.contains("inequivalent arg 'x-queue-type'") && !lacks_quorum_arguments {
        return None;
    }
    Some(match wanted {
        QueueType::Quorum => "exists as a classic queue (or without slingshot's quorum arguments), not quorum as SLINGSHOT_QUEUE_TYPE=quorum declares it: \
             the service uses it as it is, but it lives on one node and a cluster does not replicate it. \
             To move it, declare a quorum queue beside it, move the messages (shovel), and point the sys-map at the new one"
            .to_string(),
        QueueType::Classic => "exists as a quorum queue, not classic as SLINGSHOT_QUEUE_TYPE=classic declares it: \
             the service uses it as it is (its delivery limit and dead-letter arguments apply); \
             set SLINGSHOT_QUEUE_TYPE=quorum so that new queues match"
            .to_string(),
    })
}

/// What a queue declared otherwise than `declared` means, and what to do.
fn mismatch_advice(
    queue: &str,
    dead_letters: bool,
    declared: Durability,
    only_durability: bool,
    mode: QueueMode,
) -> String {
    let redeclare = |how: Durability| {
        format!("let it drain, delete it (rabbitmqctl delete_queue '{queue}') and restart this service to redeclare it {how}")
    };
    match (only_durability, declared) {
        (true, Durability::Durable) if dead_letters => format!(
            "exists transient: the service uses it as it is, but dead letters in it are lost if RabbitMQ restarts; replay them (dead-letters replay --all), then {}",
            redeclare(Durability::Durable)
        ),
        (true, Durability::Durable) => format!(
            "exists transient, as the original slingshot-microservice declares its queues: the service uses it as it is, \
             but its messages are lost if RabbitMQ restarts. While original services share it, set SLINGSHOT_QUEUE_MODE=compatible; \
             once none do, {}",
            redeclare(Durability::Durable)
        ),
        (true, Durability::Transient) => format!(
            "exists durable, not transient as SLINGSHOT_QUEUE_MODE=compatible declares it: the service uses it as it is, \
             but an original slingshot-microservice service that declares it stops at start-up with PRECONDITION_FAILED. \
             If original services use it, {}; if none will, set SLINGSHOT_QUEUE_MODE=durable",
            redeclare(Durability::Transient)
        ),
        (false, _) if mode == QueueMode::Compatible && !dead_letters => {
            "exists with other arguments than a plain declaration (e.g. a queue type, TTL or length limit): \
             the service uses it as it is, but an original slingshot-microservice service that declares it stops at start-up with PRECONDITION_FAILED"
                .to_string()
        }
        (false, _) => "exists with other arguments than a plain declaration (e.g. a queue type, TTL or length limit): the service uses it as it is".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service definition for `check` alone.
    fn def() -> &'static ServiceDef {
        Box::leak(Box::new(ServiceDef {
            name: "svc",
            sys_map: "http://127.0.0.1:1",
            function: "process",
            connection: crate::db::ConnectionKind::None,
            once: false,
            prepare: |_| Err(Error::Config("unused".into())),
            case_domain: || None,
            objects: |_| Vec::new(),
        }))
    }

    #[tokio::test]
    async fn an_unreachable_sys_map_is_a_failed_sys_map_with_the_connection_error() {
        // Nothing listens on port 1.
        let report = check(def(), "http://127.0.0.1:1", &Settings::default()).await;
        let text = report.to_string();
        assert!(!report.ok(), "{text}");
        assert_eq!(report.findings.len(), 1, "nothing else can be checked:\n{text}");
        let finding = &report.findings[0];
        assert_eq!(
            (finding.what.as_str(), finding.status),
            ("sys-map", Status::Failed),
            "{text}"
        );
        assert!(finding.detail.contains("cannot connect"), "{text}");
        assert!(finding.detail.contains("is the sys-map running"), "{text}");
        assert!(!text.contains("add the service's endpoint"), "{text}");
    }

    #[test]
    fn a_queue_of_another_type_is_named_with_what_to_do() {
        let refused = "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'q' in vhost '/': \
                       received none but current is the value 'quorum' of type 'longstr'";
        // What RabbitMQ 3.10 answers a quorum declaration of a classic queue.
        let lacking = "PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-exchange' for queue 'q' in vhost '/': \
                       received the value '' of type 'longstr' but current is none";
        let advice = queue_type_advice(lacking, QueueType::Quorum).unwrap();
        assert!(advice.starts_with("exists as a classic queue"), "{advice}");
        let advice = queue_type_advice(refused, QueueType::Classic).unwrap();
        assert!(advice.contains("SLINGSHOT_QUEUE_TYPE=quorum"), "{advice}");
        assert_eq!(queue_type_advice("inequivalent arg 'durable'", QueueType::Quorum), None);
    }
}
