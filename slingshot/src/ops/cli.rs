//! The generated binary's entry point: its command line (clap), the runtime,
//! the operations endpoint, signals and exit codes.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::broker::dead_letter_queue;
use crate::error::Error;
use crate::execute::service::ServiceDef;
use crate::ops::deadletter::{self, Selection};
use crate::ops::probes::{self, Probe};
use crate::ops::topology::Topology;
use crate::runtime::Runtime;
use crate::settings::{describe_clap_error, Settings, SettingsArgs};
use crate::sysmap::SysMap;
use crate::telemetry::logs::LogArgs;

#[derive(Parser, Debug)]
#[command(disable_version_flag = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    service: ServiceArgs,
    #[command(flatten)]
    log: LogArgs,
    #[command(flatten)]
    settings: SettingsArgs,
}

/// Where the service finds its wiring and serves its operations endpoint.
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Service (flags or environment variables)")]
struct ServiceArgs {
    /// Sys-map location: file:PATH, http(s)://URL or a host [default: the attribute's sys_map].
    #[arg(long, env = "SLINGSHOT_SYS_MAP", value_name = "LOCATION", global = true)]
    sys_map: Option<String>,
    /// Metrics (/metrics) and probes (/healthz, /readyz) address; `off` disables them.
    #[arg(
        long,
        env = "SLINGSHOT_HTTP_ADDR",
        value_name = "ADDR",
        default_value = "0.0.0.0:9090",
        global = true
    )]
    http_addr: String,
}

impl ServiceArgs {
    /// The sys-map location: the flag or variable, else the attribute's.
    fn sys_map(&self, def: &ServiceDef) -> String {
        self.sys_map
            .clone()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| def.sys_map.to_string())
    }

    /// Where the operations endpoint listens, unless it is `off`.
    fn ops_address(&self) -> Option<&str> {
        Some(self.http_addr.as_str()).filter(|addr| !addr.eq_ignore_ascii_case("off") && !addr.trim().is_empty())
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Consume the inbound queue until SIGTERM/SIGINT (the default).
    Run,
    /// Process IDs here and now: run `process`, upload what it writes, print
    /// the routes its outputs would take. Consumes and publishes nothing.
    Invoke {
        /// Request IDs.
        #[arg(required = true)]
        ids: Vec<u64>,
    },
    /// Fetch the sys-map, resolve secrets, connect to each backend and print
    /// the service's topology; exit 1 with what to fix if anything is wrong.
    Check,
    /// Send IDs to a service and print what became of each: its routes,
    /// objects, or why it failed. `--follow` waits for every stage each ID
    /// reaches. On the embedded default, this binary's services run here.
    Call {
        /// Request IDs, called concurrently.
        #[arg(required = true)]
        ids: Vec<u64>,
        /// The service to call [default: this one].
        #[arg(long, value_name = "NAME")]
        service: Option<String>,
        /// How long to wait for each ID (30s, 500ms, 2m).
        #[arg(long, default_value = "30s", value_parser = crate::ops::call::parse_duration)]
        timeout: std::time::Duration,
        /// Follow each ID through every stage its routes reach.
        #[arg(long)]
        follow: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// A request nobody takes within the timeout still runs later
        /// (by default it expires).
        #[arg(long, conflicts_with = "follow")]
        run_late: bool,
    },
    /// Inspect or replay the dead-letter queue.
    DeadLetters {
        #[command(subcommand)]
        action: DeadLetterAction,
    },
    /// Tools for the objects of the service's buckets.
    Objects {
        #[command(subcommand)]
        action: ObjectsAction,
    },
    /// Draw the pipeline: this service, or every service of a sys-map file.
    Topology {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Mermaid)]
        format: Format,
        /// Other services to include (their sys-map endpoints).
        services: Vec<String>,
    },
    /// Print the pipeline's AsyncAPI 3.0 document (JSON): this service, or
    /// every service named, with their queues, routes and message headers.
    Asyncapi {
        /// Other services to include (their sys-map endpoints).
        services: Vec<String>,
    },
    /// Print the JSON Schemas of the typed objects this service reads and
    /// writes (`#[object("...")]` parameters), as a JSON list; with a bucket
    /// reference, that object's schema alone. Needs no sys-map.
    Schema {
        /// A bucket reference (`in`, `out`...).
        reference: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum DeadLetterAction {
    /// Show the dead letters; they stay in the queue.
    List,
    /// Send dead letters back to the inbound queue with fresh attempts.
    Replay {
        /// Replay every dead letter.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// Replay the dead letters of these request IDs.
        #[arg(required_unless_present = "all")]
        ids: Vec<u64>,
    },
}

#[derive(Subcommand, Debug)]
enum ObjectsAction {
    /// Move every object of the encrypted bucket behind REF that is not
    /// under its current key (and plain ones, with `"plain": "read"`) to the
    /// current key, streaming, and print counts per old key. Idempotent;
    /// safe while services run.
    Reencrypt {
        /// The bucket reference (`in`, `out`, ...) with an `encrypt` entry.
        #[arg(value_name = "REF")]
        reference: String,
        /// Print what would move; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// A topology output format.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// Mermaid flowchart.
    Mermaid,
    /// Graphviz DOT.
    Dot,
    /// Standalone SVG.
    Svg,
}

fn command_for(def: &ServiceDef) -> clap::Command {
    Cli::command()
        .name(def.name)
        .bin_name(def.name)
        .about(format!(
            "{}: a slingshot microservice (function `{}`, sys-map {:?} unless SLINGSHOT_SYS_MAP is set)",
            def.name,
            def.function,
            crate::base::redact::url(def.sys_map)
        ))
        .after_help(after_help())
}

/// What `--help` says after the settings: secrets and the `OTEL_*`
/// variables, which are not settings of slingshot's own.
fn after_help() -> String {
    let mut text = String::from(
        "Secrets: a reference REF of the sys-map resolves from $SLINGSHOT_SECRET_<REF> (upper-cased, \
         non-alphanumerics as _), then the file REF under --secrets-dir, then `pass show REF`.\n\n\
         Tracing (OpenTelemetry's standard variables):\n",
    );
    for (variable, what) in crate::telemetry::export::VARIABLES {
        text.push_str(&format!("  {variable:<36} {what}\n"));
    }
    text
}

/// `main` of a binary generated by `#[slingshot::microservice]`: runs the
/// command line of this process for `def`.
pub fn main(def: &'static ServiceDef) -> ExitCode {
    main_with_args(def, std::env::args().skip(1).collect())
}

/// `main` generated by `#[slingshot::microservice]`: [`main`] for the
/// service registered as `name`. By name, because the macro puts the
/// registration inside an item `main` cannot name (the one item rustc
/// rejects when the attribute is on an associated function, so that mistake
/// is one error); the name is also what picks a service on a command line.
#[doc(hidden)]
pub fn main_named(name: &str) -> ExitCode {
    if ServiceDef::all().iter().filter(|def| def.name == name).count() > 1 {
        eprintln!("error: several services linked into this binary are called {name:?}; give each its own `name`");
        return ExitCode::FAILURE;
    }
    match ServiceDef::find(name) {
        Ok(def) => main(def),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Like [`main`], with the arguments given: for binaries that hold several
/// services and pick one, e.g. `pipeline service ingest invoke 7`.
pub fn main_with_args(def: &'static ServiceDef, args: Vec<String>) -> ExitCode {
    let command = command_for(def);
    let matches = match command
        .clone()
        .try_get_matches_from(std::iter::once(def.name.to_string()).chain(args))
    {
        Ok(matches) => matches,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // A bad setting says where it came from: the flag or the variable.
            use clap::error::{ContextKind, ContextValue};
            let setting =
                matches!(e.get(ContextKind::InvalidArg), Some(ContextValue::String(arg)) if arg.starts_with("--"));
            if setting {
                eprintln!("error: {}: {}", def.name, describe_clap_error(&command, &e));
            } else {
                let _ = e.print();
            }
            return ExitCode::from(2);
        }
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(2);
        }
    };
    let command = cli.command.unwrap_or(Command::Run);
    cli.log.init_service(
        Some(def.name),
        match command {
            Command::Run => crate::telemetry::logs::Output::Stdout,
            _ => crate::telemetry::logs::Output::Stderr,
        },
    );
    // Settings one flag cannot check alone (prefetch against concurrency...).
    let settings = match cli.settings.resolve() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("error: {}: {e}", def.name);
            return ExitCode::from(2);
        }
    };
    let service = cli.service;
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let location = service.sys_map(def);
        match command {
            Command::Run => run(def, &location, service.ops_address(), settings).await,
            Command::Invoke { ids } => invoke(def, &location, settings, &ids).await,
            Command::Check => check(def, &location, &settings).await,
            Command::Call {
                ids,
                service,
                timeout,
                follow,
                json,
                run_late,
            } => {
                let args = crate::ops::call::CallArgs {
                    ids,
                    service: service.unwrap_or_else(|| def.name.to_string()),
                    timeout,
                    follow,
                    json,
                    run_late,
                };
                crate::ops::call::run(&location, settings, args).await
            }
            Command::DeadLetters { action } => dead_letters(def, &location, settings, action).await,
            Command::Objects {
                action: ObjectsAction::Reencrypt { reference, dry_run },
            } => crate::ops::reencrypt::run(def.name, &location, settings, &reference, dry_run).await,
            Command::Topology { format, services } => topology(def, &location, format, services).await,
            Command::Asyncapi { services } => asyncapi(def, &location, &settings, services).await,
            Command::Schema { reference } => schema(def, reference.as_deref()),
        }
    });
    // A `process` call stuck past the shutdown deadline runs on a blocking
    // thread nothing can stop; dropping the runtime would wait for it
    // forever. Its request was given up and returns to the queue.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    // The last spans, exported from this thread once the work is done.
    crate::telemetry::shutdown();
    match result {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(service = def.name, "{e}");
            eprintln!("error: {}: {e}", def.name);
            ExitCode::FAILURE
        }
    }
}

/// How long the async runtime may take to stop once the work is done or
/// given up; threads still running a stuck `process` are left behind.
const RUNTIME_SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(1);

/// The exit code of a service that stopped on SIGTERM/SIGINT but gave up
/// requests still running at the shutdown deadline (they return to the
/// queue): `EX_TEMPFAIL`.
pub(crate) const EXIT_ABANDONED: u8 = 75;

async fn run(
    def: &'static ServiceDef,
    location: &str,
    ops_address: Option<&str>,
    settings: Settings,
) -> Result<ExitCode, Error> {
    let probe = Probe::default().with_stuck_after(settings.stuck_after);
    let runtime = Runtime::connect(location, settings).await?;
    if let Some(addr) = ops_address {
        let bound = probes::serve(addr, probe.clone())
            .await
            .map_err(|e| Error::Config(format!("SLINGSHOT_HTTP_ADDR={addr}: cannot listen: {e}")))?;
        tracing::info!(service = def.name, %bound, "metrics on /metrics, probes on /healthz and /readyz");
    }
    // Before the service consumes: from here on SIGTERM and SIGINT shut it
    // down gracefully (one arriving while it starts, once it started), never
    // with the default disposition, which kills the process.
    let shutdown = shutdown_signal();
    let mut service = runtime.start(def).await?;
    probe.watch(def.name, service.stats.clone());
    tokio::select! {
        result = service.finished() => {
            result?;
            // A worker only ends by itself with an error; never exit 0 silently.
            return Err(Error::Stopped(def.name.to_string()));
        }
        signal = shutdown => tracing::info!(service = def.name, signal, "shutting down"),
    }
    probe.stopping();
    runtime.shutdown();
    service.finished().await?;
    let abandoned = service.stats.abandoned.load(std::sync::atomic::Ordering::Relaxed);
    if abandoned > 0 {
        tracing::warn!(
            service = def.name,
            abandoned,
            exit_code = EXIT_ABANDONED,
            "stopped, giving up requests still running at the shutdown deadline; they return to the queue"
        );
        return Ok(ExitCode::from(EXIT_ABANDONED));
    }
    tracing::info!(service = def.name, "stopped cleanly");
    Ok(ExitCode::SUCCESS)
}

/// Which of SIGTERM and SIGINT arrived first. The handlers are installed
/// when this is called, not when it is first awaited.
fn shutdown_signal() -> impl std::future::Future<Output = &'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let terminate = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        match (terminate, interrupt) {
            (Ok(mut term), Ok(mut int)) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            },
            _ => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
}

async fn check(def: &'static ServiceDef, location: &str, settings: &Settings) -> Result<ExitCode, Error> {
    let report = crate::ops::check::check(def, location, settings).await;
    print!("{report}");
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The topology of this service and `services`, read from the sys-map.
async fn load_topology(
    def: &'static ServiceDef,
    sysmap: &SysMap,
    mut services: Vec<String>,
) -> Result<Topology, Error> {
    services.insert(0, def.name.to_string());
    let mut seen = std::collections::HashSet::new();
    services.retain(|s| seen.insert(s.clone()));
    let references: Vec<String> = crate::ops::check::BUCKET_REFERENCES
        .iter()
        .map(|r| r.to_string())
        .collect();
    Ok(Topology::from_sysmap(sysmap, &services, &references).await?)
}

async fn topology(
    def: &'static ServiceDef,
    location: &str,
    format: Format,
    services: Vec<String>,
) -> Result<ExitCode, Error> {
    let sysmap = SysMap::open(location)?;
    let topology = load_topology(def, &sysmap, services).await?;
    print!(
        "{}",
        match format {
            Format::Mermaid => topology.mermaid(),
            Format::Dot => topology.dot(),
            Format::Svg => topology.svg(),
        }
    );
    Ok(ExitCode::SUCCESS)
}

async fn asyncapi(
    def: &'static ServiceDef,
    location: &str,
    settings: &Settings,
    services: Vec<String>,
) -> Result<ExitCode, Error> {
    let sysmap = SysMap::open(location)?;
    let topology = load_topology(def, &sysmap, services).await?;
    // The broker as the sys-map names it (a file sys-map may name none).
    let server = match sysmap.rabbitmq().await {
        Ok(rabbitmq) => Some(format!("{}:{}", rabbitmq.host, rabbitmq.port)),
        Err(crate::sysmap::SysMapError::Missing { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let options = crate::ops::asyncapi::Options {
        source: Some(sysmap.describe()),
        durable: settings.queue_mode.durability() == crate::broker::Durability::Durable,
        vhost: settings.amqp_vhost.clone(),
        server,
        ..crate::ops::asyncapi::Options::new(&format!("{} pipeline", def.name))
    };
    let document = crate::ops::asyncapi::document(&topology, &options);
    let text = serde_json::to_string_pretty(&document)
        .map_err(|e| Error::Config(format!("cannot write the AsyncAPI document: {e}")))?;
    println!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// Prints the typed objects' schemas: every one as a list, or the one of
/// `reference` (the schema it reads if it also writes one).
fn schema(def: &'static ServiceDef, reference: Option<&str>) -> Result<ExitCode, Error> {
    let objects = def.object_schemas();
    let document = match reference {
        None => serde_json::Value::Array(
            objects
                .iter()
                .map(|o| {
                    serde_json::json!({
                        "reference": o.reference,
                        "direction": o.direction.as_str(),
                        "type": o.type_name,
                        "schema": o.schema,
                    })
                })
                .collect(),
        ),
        Some(reference) => {
            let found = objects
                .iter()
                .filter(|o| o.reference == reference)
                .min_by_key(|o| o.direction);
            match found {
                Some(object) => object.schema.clone(),
                None => {
                    let known: Vec<&str> = objects.iter().map(|o| o.reference.as_str()).collect();
                    return Err(Error::Config(format!(
                        "{} has no typed object behind bucket reference {reference:?} (typed references: {}); \
                         a typed object is an `#[object(\"...\")]` parameter",
                        def.name,
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    )));
                }
            }
        }
    };
    let text =
        serde_json::to_string_pretty(&document).map_err(|e| Error::Config(format!("cannot write the schema: {e}")))?;
    println!("{text}");
    Ok(ExitCode::SUCCESS)
}

async fn dead_letters(
    def: &'static ServiceDef,
    location: &str,
    settings: Settings,
    action: DeadLetterAction,
) -> Result<ExitCode, Error> {
    let runtime = Runtime::connect(location, settings).await?;
    let inbound = runtime.sysmap().service(def.name).await?.inbound;
    let broker = runtime.broker().as_ref();
    match action {
        DeadLetterAction::List => {
            // Printed as they are read: the queue may be long.
            let count = deadletter::list(broker, &inbound, |letter| {
                let id = match letter.id {
                    Some(id) => id.to_string(),
                    None => format!("{:?}", String::from_utf8_lossy(&letter.body)),
                };
                println!(
                    "  {id}  kind={} attempts={} failed_at={}  {}",
                    letter.record.kind, letter.record.attempts, letter.record.failed_at, letter.record.error
                );
            })
            .await?;
            println!(
                "{}: {count} dead letter(s) in {}",
                def.name,
                dead_letter_queue(&inbound)
            );
        }
        DeadLetterAction::Replay { all, ids } => {
            let selection = if all { Selection::All } else { Selection::Ids(ids) };
            let (replayed, left) = deadletter::replay(broker, &inbound, &selection).await?;
            println!(
                "{}: replayed {replayed} to {inbound}; {left} left in {}",
                def.name,
                dead_letter_queue(&inbound)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn invoke(def: &'static ServiceDef, location: &str, settings: Settings, ids: &[u64]) -> Result<ExitCode, Error> {
    let runtime = Runtime::connect(location, settings).await?;
    let progress = ids.len() > 1 && std::io::stderr().is_terminal();
    let mut failed = 0;
    for (done, (id, result)) in ids.iter().zip(runtime.invoke(def, ids).await?).enumerate() {
        if progress {
            eprint!("\r{}: {}/{} invoked", def.name, done + 1, ids.len());
        }
        match result {
            Ok(invocation) => {
                println!("{}: request {id}: ok", def.name);
                for (output, case) in &invocation.executed.outputs {
                    if invocation.unrouted.iter().any(|(u, c)| u == output && c == case) {
                        println!("  output {output} case {case} -> (no route)");
                        continue;
                    }
                    let queues: Vec<&str> = invocation
                        .routes
                        .iter()
                        .filter(|(_, routed)| routed == output)
                        .map(|(q, _)| q.as_str())
                        .collect();
                    println!("  output {output} case {case} -> {}", queues.join(", "));
                }
                for object in &invocation.executed.written {
                    println!("  wrote {}/{} ({} bytes)", object.bucket, object.key, object.size);
                }
            }
            Err(failure) => {
                failed += 1;
                println!("{}: request {id}: FAILED {failure}", def.name);
            }
        }
    }
    if progress {
        eprintln!();
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service definition for the command line alone.
    fn def() -> ServiceDef {
        ServiceDef {
            name: "svc",
            sys_map: "file:x.json",
            function: "process",
            connection: crate::db::ConnectionKind::None,
            once: false,
            prepare: |_| Err(Error::Config("unused".into())),
            case_domain: || None,
            objects: |_| Vec::new(),
        }
    }

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        let def = def();
        let matches = command_for(&def).try_get_matches_from(std::iter::once("svc").chain(args.iter().copied()))?;
        Cli::from_arg_matches(&matches).map(|cli| cli.command.unwrap_or(Command::Run))
    }

    #[test]
    fn commands() {
        assert!(matches!(parse(&[]), Ok(Command::Run)));
        assert!(matches!(parse(&["run"]), Ok(Command::Run)));
        assert!(matches!(parse(&["invoke", "1", "2"]), Ok(Command::Invoke { ids }) if ids == [1, 2]));
        assert!(matches!(parse(&["check"]), Ok(Command::Check)));
        // Settings go before or after the command.
        assert!(matches!(parse(&["--concurrency", "8", "run"]), Ok(Command::Run)));
        assert!(matches!(
            parse(&["run", "--queue-mode", "compatible"]),
            Ok(Command::Run)
        ));
        assert!(matches!(
            parse(&["dead-letters", "list"]),
            Ok(Command::DeadLetters {
                action: DeadLetterAction::List
            })
        ));
        assert!(matches!(
            parse(&["dead-letters", "replay", "--all"]),
            Ok(Command::DeadLetters {
                action: DeadLetterAction::Replay { all: true, .. }
            })
        ));
        assert!(matches!(
            parse(&["dead-letters", "replay", "4", "5"]),
            Ok(Command::DeadLetters { action: DeadLetterAction::Replay { all: false, ids } }) if ids == [4, 5]
        ));
        assert!(matches!(
            parse(&["topology", "--format", "svg", "other"]),
            Ok(Command::Topology { format: Format::Svg, services }) if services == ["other"]
        ));
        assert!(matches!(
            parse(&["asyncapi", "a", "b"]),
            Ok(Command::Asyncapi { services }) if services == ["a", "b"]
        ));
    }

    #[test]
    fn mistakes_are_usage_errors() {
        for args in [
            &["invoke"][..],
            &["invoke", "x"],
            &["serve"],
            &["run", "extra"],
            &["dead-letters"],
            &["dead-letters", "replay"],
            &["dead-letters", "replay", "--all", "3"],
            &["topology", "--format", "png"],
            &["asyncapi", "--format", "svg"],
        ] {
            let err = parse(args).err().unwrap_or_else(|| panic!("{args:?} parsed"));
            assert!(err.use_stderr(), "{args:?}: {err}");
        }
    }

    #[test]
    fn help_documents_every_environment_variable() {
        let def = def();
        let command = command_for(&def);
        let help = command.clone().render_long_help().to_string();
        let vars: Vec<String> = command
            .get_arguments()
            .filter_map(|a| a.get_env().map(|v| v.to_string_lossy().into_owned()))
            .collect();
        assert!(vars.len() >= 16, "{vars:?}");
        for var in &vars {
            assert!(help.contains(&format!("[env: {var}=")), "--help lacks {var}");
        }
        assert!(help.contains("SLINGSHOT_SECRET_<REF>"), "--help lacks the secrets");
        for (variable, _) in crate::telemetry::export::VARIABLES {
            assert!(help.contains(variable), "--help lacks {variable}");
        }
        // Every OTEL_* variable the README documents is in --help.
        let readme = include_str!("../../../README.md");
        let mut rest = readme;
        while let Some(at) = rest.find("OTEL_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || *c == '_' || c.is_ascii_digit())
                .collect();
            let listed = name == "OTEL_"
                || help.contains(&name)
                || (name.starts_with("OTEL_BSP_") && help.contains("OTEL_BSP_*"));
            assert!(listed, "--help lacks {name}, which the README documents");
            rest = &rest[at + name.len().max(5)..];
        }
        for command in ["run", "invoke", "check", "dead-letters", "topology", "asyncapi"] {
            assert!(help.contains(command), "--help lacks {command}");
        }
    }
}
