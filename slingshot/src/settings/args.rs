//! The clap definition of every setting, and how they resolve into
//! [`Settings`]: what one flag cannot check alone, and the defaults derived
//! from others.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::RangedU64ValueParser;
use clap::Args;

use super::{QueueMode, S3Scheme, Settings, MIN_DEFAULT_PREFETCH};
use crate::broker::QueueType;
use crate::error::Error;
use crate::storage::s3::S3Timeouts;

/// The settings as clap reads them. Resolve them with
/// [`SettingsArgs::resolve`]; binaries with a command line of their own can
/// `#[command(flatten)]` this struct into it.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
#[command(next_help_heading = "Settings (flags or environment variables)")]
pub struct SettingsArgs {
    /// Requests processed at the same time.
    #[arg(long, global = true, env = "SLINGSHOT_CONCURRENCY", value_name = "N", default_value_t = 4,
          value_parser = RangedU64ValueParser::<usize>::new().range(1..=1024))]
    pub concurrency: usize,

    /// Unacknowledged deliveries the broker may send ahead [default: 2 x
    /// concurrency, at least 32]. A request whose outputs await the broker's
    /// confirms frees its slot but still counts here, so a fast service needs
    /// room beyond its concurrency; lower it for slow requests shared by many
    /// instances, where deliveries waiting in one would idle another.
    #[arg(long, global = true, env = "SLINGSHOT_PREFETCH", value_name = "N",
          value_parser = RangedU64ValueParser::<u16>::new().range(1..=65535))]
    pub prefetch: Option<u16>,

    /// Tries of a request before it is dead-lettered.
    #[arg(long, global = true, env = "SLINGSHOT_MAX_ATTEMPTS", value_name = "N", default_value_t = 5,
          value_parser = RangedU64ValueParser::<u32>::new().range(1..=u64::from(u32::MAX)))]
    pub max_attempts: u32,

    /// First retry delay in milliseconds; it doubles with each attempt.
    #[arg(
        long,
        global = true,
        env = "SLINGSHOT_RETRY_BASE_MS",
        value_name = "MS",
        default_value_t = 500
    )]
    pub retry_base_ms: u64,

    /// Longest retry delay in milliseconds.
    #[arg(
        long,
        global = true,
        env = "SLINGSHOT_RETRY_MAX_MS",
        value_name = "MS",
        default_value_t = 30_000
    )]
    pub retry_max_ms: u64,

    /// Where `write_file` stages output [default: the system temp dir].
    #[arg(long, global = true, env = "SLINGSHOT_STAGING_DIR", value_name = "DIR")]
    pub staging_dir: Option<PathBuf>,

    /// Where each instance keeps its crash journal [default: the staging
    /// dir]. Keep it across restarts (a volume, in a container) so that a
    /// message that keeps killing the process is dead-lettered.
    #[arg(long, global = true, env = "SLINGSHOT_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Deliveries of one message that may end with the process dying while
    /// `process` runs (an abort, the OOM killer) before it is dead-lettered
    /// as `crash-loop`.
    #[arg(long, global = true, env = "SLINGSHOT_MAX_CRASHES", value_name = "N", default_value_t = 3,
          value_parser = RangedU64ValueParser::<u32>::new().range(1..=1000))]
    pub max_crashes: u32,

    /// Seconds after which a `process` call counts as stuck: /healthz
    /// answers 503 once every slot holds a stuck call (0: never).
    #[arg(
        long,
        global = true,
        env = "SLINGSHOT_STUCK_SECS",
        value_name = "SECS",
        default_value_t = 600
    )]
    pub stuck_secs: u64,

    /// Effectively once for every service of the process (`true`) or none
    /// (`false`) [default: as `#[microservice(once = ...)]` says]: an inbox
    /// and outbox in the service's database commit with `process`'s writes.
    #[arg(long, global = true, env = "SLINGSHOT_ONCE", value_name = "BOOL")]
    pub once: Option<bool>,

    /// Seconds a once-mode service remembers a finished message (its inbox
    /// row); a duplicate that arrives later runs again.
    #[arg(long, global = true, env = "SLINGSHOT_ONCE_RETENTION_SECS", value_name = "SECS",
          default_value_t = 7 * 24 * 3600,
          value_parser = RangedU64ValueParser::<u64>::new().range(1..))]
    pub once_retention_secs: u64,

    /// Seconds an outbox row waits before the relay publishes it in place of
    /// the stage that wrote it (which died, or cannot reach the broker).
    #[arg(
        long,
        global = true,
        env = "SLINGSHOT_ONCE_RELAY_GRACE_SECS",
        value_name = "SECS",
        default_value_t = 10
    )]
    pub once_relay_grace_secs: u64,

    /// Seconds in-flight requests get to finish on SIGTERM/SIGINT.
    #[arg(
        long,
        global = true,
        env = "SLINGSHOT_SHUTDOWN_SECS",
        value_name = "SECS",
        default_value_t = 30
    )]
    pub shutdown_secs: u64,

    /// Write the legacy `x-slingshot-trace-id` header on every output, for
    /// services built with slingshot before W3C tracing, which follow only
    /// it. It is always read, and carried on unchanged when the inbound
    /// message had one; W3C `traceparent` carries the same trace.
    #[arg(long, global = true, env = "SLINGSHOT_LEGACY_TRACE_HEADER", value_name = "BOOL",
          default_value_t = false, action = clap::ArgAction::Set)]
    pub legacy_trace_header: bool,

    /// How inbound and outbound queues are declared.
    #[arg(long, global = true, env = "SLINGSHOT_QUEUE_MODE", value_enum, default_value_t = QueueMode::Durable)]
    pub queue_mode: QueueMode,

    /// RabbitMQ queue type of the queues the service declares: `quorum`
    /// (replicated, for clusters) needs the durable queue mode.
    #[arg(long, global = true, env = "SLINGSHOT_QUEUE_TYPE", value_enum, default_value_t = QueueType::Classic)]
    pub queue_type: QueueType,

    /// The AMQP frame size asked of RabbitMQ, in bytes. A message's
    /// properties and headers travel in one frame, so keep it at the
    /// broker's `frame_max` (RabbitMQ's default, 131072) to take whatever
    /// other producers publish; a smaller one saves memory (lapin's buffers
    /// hold 64 frames per connection) and refuses larger headers.
    #[arg(long, global = true, env = "SLINGSHOT_AMQP_FRAME_MAX", value_name = "BYTES",
          default_value_t = crate::broker::rabbitmq::DEFAULT_FRAME_MAX,
          value_parser = RangedU64ValueParser::<u32>::new().range(4096..=(1 << 30)))]
    pub amqp_frame_max: u32,

    /// RabbitMQ virtual host.
    #[arg(
        long,
        global = true,
        env = "SLINGSHOT_AMQP_VHOST",
        value_name = "VHOST",
        default_value = "/"
    )]
    pub amqp_vhost: String,

    /// Scheme for an object-storage host the sys-map gives without one.
    #[arg(long, global = true, env = "SLINGSHOT_S3_SCHEME", value_enum, default_value_t = S3Scheme::Https)]
    pub s3_scheme: S3Scheme,

    /// S3 region.
    #[arg(
        long,
        global = true,
        env = "SLINGSHOT_S3_REGION",
        value_name = "REGION",
        default_value = "garage"
    )]
    pub s3_region: String,

    /// Seconds an S3 connection may take to establish.
    #[arg(long, global = true, env = "SLINGSHOT_S3_CONNECT_TIMEOUT_SECS", value_name = "SECS", default_value_t = 10,
          value_parser = RangedU64ValueParser::<u64>::new().range(1..=86_400))]
    pub s3_connect_timeout_secs: u64,

    /// Seconds from sending an S3 request, its body included, to the first
    /// byte of the answer (an upload sends four 16 MiB parts at a time: they
    /// must get through within it); also the longest pause in a download.
    #[arg(long, global = true, env = "SLINGSHOT_S3_READ_TIMEOUT_SECS", value_name = "SECS", default_value_t = 60,
          value_parser = RangedU64ValueParser::<u64>::new().range(1..=86_400))]
    pub s3_read_timeout_secs: u64,

    /// Seconds one S3 HTTP attempt may take as a whole.
    #[arg(long, global = true, env = "SLINGSHOT_S3_ATTEMPT_TIMEOUT_SECS", value_name = "SECS", default_value_t = 120,
          value_parser = RangedU64ValueParser::<u64>::new().range(1..=86_400))]
    pub s3_attempt_timeout_secs: u64,

    /// Seconds one S3 operation may take, the SDK's retries of its attempts
    /// included.
    #[arg(long, global = true, env = "SLINGSHOT_S3_OPERATION_TIMEOUT_SECS", value_name = "SECS", default_value_t = 300,
          value_parser = RangedU64ValueParser::<u64>::new().range(1..=86_400))]
    pub s3_operation_timeout_secs: u64,

    /// Directory of mounted secrets, read after the SLINGSHOT_SECRET_* variables and before `pass`.
    #[arg(
        long,
        global = true,
        env = "SLINGSHOT_SECRETS_DIR",
        value_name = "DIR",
        default_value = "/run/secrets"
    )]
    pub secrets_dir: PathBuf,

    /// Seconds `pass show` may take to resolve a secret before it is killed
    /// and the secret counts as not found.
    #[arg(long, global = true, env = "SLINGSHOT_SECRET_TIMEOUT_SECS", value_name = "SECS", default_value_t = 10,
          value_parser = RangedU64ValueParser::<u64>::new().range(1..=3600))]
    pub secret_timeout_secs: u64,

    /// Seconds to wait for a TCP connection to the sys-map.
    #[arg(long, global = true, env = "SLINGSHOT_SYS_MAP_CONNECT_TIMEOUT_SECS", value_name = "SECS",
          default_value_t = 5, value_parser = RangedU64ValueParser::<u64>::new().range(1..=3600))]
    pub sys_map_connect_timeout_secs: u64,

    /// Seconds a sys-map request may take in all (connecting, sending,
    /// reading the answer).
    #[arg(long, global = true, env = "SLINGSHOT_SYS_MAP_TIMEOUT_SECS", value_name = "SECS", default_value_t = 15,
          value_parser = RangedU64ValueParser::<u64>::new().range(1..=3600))]
    pub sys_map_timeout_secs: u64,

    /// Seconds to open a PostgreSQL connection, authentication included
    /// (libpq's `connect_timeout`).
    #[arg(long, global = true, env = "SLINGSHOT_DB_CONNECT_TIMEOUT_SECS", value_name = "SECS",
          default_value_t = 10, value_parser = RangedU64ValueParser::<u64>::new().range(2..=3600))]
    pub db_connect_timeout_secs: u64,

    /// Seconds a request waits for a pooled PostgreSQL connection, the ping
    /// that tests it included; past it the request is retried as an outage.
    #[arg(long, global = true, env = "SLINGSHOT_DB_CHECKOUT_TIMEOUT_SECS", value_name = "SECS",
          default_value_t = 10, value_parser = RangedU64ValueParser::<u64>::new().range(1..=3600))]
    pub db_checkout_timeout_secs: u64,

    /// Seconds after which a PostgreSQL connection whose server stopped
    /// answering on the network (host down, route black-holed) fails: TCP
    /// keepalives probe an idle connection from a quarter of it on, and
    /// `tcp_user_timeout` fails one whose sent data stays unacknowledged
    /// this long. 0 leaves both to the operating system.
    #[arg(long, global = true, env = "SLINGSHOT_DB_TCP_TIMEOUT_SECS", value_name = "SECS", default_value_t = 60,
          value_parser = RangedU64ValueParser::<u64>::new().range(0..=86_400))]
    pub db_tcp_timeout_secs: u64,

    /// Seconds one SQL statement may run on PostgreSQL before the server
    /// cancels it (`statement_timeout`), which fails the request; 0 for no
    /// limit.
    #[arg(long, global = true, env = "SLINGSHOT_DB_STATEMENT_TIMEOUT_SECS", value_name = "SECS",
          default_value_t = 300, value_parser = RangedU64ValueParser::<u64>::new().range(0..=2_147_483))]
    pub db_statement_timeout_secs: u64,
}

impl SettingsArgs {
    /// A command line holding only the settings (for reading them from the
    /// environment, or for tests).
    pub fn command() -> clap::Command {
        SettingsArgs::augment_args(clap::Command::new("slingshot").no_binary_name(false))
    }

    /// Checks what one setting cannot check alone and fills in derived
    /// defaults.
    pub fn resolve(self) -> Result<Settings, Error> {
        let prefetch = self
            .prefetch
            .unwrap_or_else(|| u16::try_from((self.concurrency * 2).max(MIN_DEFAULT_PREFETCH)).unwrap_or(u16::MAX));
        if usize::from(prefetch) < self.concurrency {
            return Err(Error::Config(format!(
                "SLINGSHOT_PREFETCH={prefetch} is below SLINGSHOT_CONCURRENCY={}; workers would sit idle",
                self.concurrency
            )));
        }
        if self.retry_max_ms < self.retry_base_ms {
            return Err(Error::Config(format!(
                "SLINGSHOT_RETRY_MAX_MS={} is below SLINGSHOT_RETRY_BASE_MS={}",
                self.retry_max_ms, self.retry_base_ms
            )));
        }
        if (1..4).contains(&self.db_tcp_timeout_secs) {
            return Err(Error::Config(format!(
                "SLINGSHOT_DB_TCP_TIMEOUT_SECS={} is too short: give 0 (the operating system's) or at least 4 \
                 (keepalive probes go out every quarter of it)",
                self.db_tcp_timeout_secs
            )));
        }
        let s3_timeouts = S3Timeouts {
            connect: Duration::from_secs(self.s3_connect_timeout_secs),
            read: Duration::from_secs(self.s3_read_timeout_secs),
            attempt: Duration::from_secs(self.s3_attempt_timeout_secs),
            operation: Duration::from_secs(self.s3_operation_timeout_secs),
        };
        if s3_timeouts.operation < s3_timeouts.attempt {
            return Err(Error::Config(format!(
                "SLINGSHOT_S3_OPERATION_TIMEOUT_SECS={} is below SLINGSHOT_S3_ATTEMPT_TIMEOUT_SECS={}; no attempt could finish",
                self.s3_operation_timeout_secs, self.s3_attempt_timeout_secs
            )));
        }
        if self.queue_type == QueueType::Quorum && self.queue_mode == QueueMode::Compatible {
            return Err(Error::Config(
                "SLINGSHOT_QUEUE_TYPE=quorum needs SLINGSHOT_QUEUE_MODE=durable: quorum queues are always durable, \
                 the compatible mode declares transient queues"
                    .into(),
            ));
        }
        Ok(Settings {
            concurrency: self.concurrency,
            prefetch,
            max_attempts: self.max_attempts,
            retry_base: Duration::from_millis(self.retry_base_ms),
            retry_max: Duration::from_millis(self.retry_max_ms),
            state_dir: self
                .state_dir
                .or_else(|| self.staging_dir.clone())
                .unwrap_or_else(std::env::temp_dir),
            staging_dir: self.staging_dir.unwrap_or_else(std::env::temp_dir),
            max_crashes: self.max_crashes,
            stuck_after: (self.stuck_secs > 0).then(|| Duration::from_secs(self.stuck_secs)),
            once: self.once,
            once_retention: Duration::from_secs(self.once_retention_secs),
            once_relay_grace: Duration::from_secs(self.once_relay_grace_secs),
            amqp_frame_max: self.amqp_frame_max,
            shutdown_deadline: Duration::from_secs(self.shutdown_secs),
            legacy_trace_header: self.legacy_trace_header,
            queue_mode: self.queue_mode,
            queue_type: self.queue_type,
            amqp_vhost: self.amqp_vhost,
            s3_scheme: self.s3_scheme,
            s3_region: self.s3_region,
            s3_timeouts,
            secrets_dir: self.secrets_dir,
            secret_timeout: Duration::from_secs(self.secret_timeout_secs),
            sys_map_connect_timeout: Duration::from_secs(self.sys_map_connect_timeout_secs),
            sys_map_timeout: Duration::from_secs(self.sys_map_timeout_secs),
            db_connect_timeout: Duration::from_secs(self.db_connect_timeout_secs),
            db_checkout_timeout: Duration::from_secs(self.db_checkout_timeout_secs),
            db_tcp_timeout: Duration::from_secs(self.db_tcp_timeout_secs),
            db_statement_timeout: Duration::from_secs(self.db_statement_timeout_secs),
        })
    }
}
