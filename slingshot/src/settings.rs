//! Run-time settings: one clap definition per setting (flag, environment variable, default, range, help), from which `--help`, validation and the resolved [`Settings`] all come.
//!
//! Every setting is a flag of the generated binary and an environment
//! variable (`--concurrency 8` or `SLINGSHOT_CONCURRENCY=8`); containers use
//! the variables. The only variables not defined here are the secrets,
//! `SLINGSHOT_SECRET_<REF>`, whose names depend on the sys-map.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::RangedU64ValueParser;
use clap::{Args, FromArgMatches, ValueEnum};

use crate::broker::{Durability, QueueType};
use crate::error::Error;
use crate::storage::s3::S3Timeouts;

/// The least prefetch derived from the concurrency: room for the requests
/// whose outputs await their confirms (at concurrency 4, prefetch 32 moved
/// 1.4 to 1.7 times as many no-op requests as 8: `noop_c4_p*` of
/// slingshot-bench).
pub const MIN_DEFAULT_PREFETCH: usize = 32;

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

    /// Seconds in-flight requests get to finish on SIGTERM/SIGINT.
    #[arg(
        long,
        global = true,
        env = "SLINGSHOT_SHUTDOWN_SECS",
        value_name = "SECS",
        default_value_t = 30
    )]
    pub shutdown_secs: u64,

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

/// How a service consumes, retries, shuts down and reaches its backends,
/// resolved and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Requests processed at the same time.
    pub concurrency: usize,
    /// Unacknowledged deliveries the broker may send ahead.
    pub prefetch: u16,
    /// Tries of a request before it is dead-lettered.
    pub max_attempts: u32,
    /// First retry delay; it doubles each attempt.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Where `write_file` stages output.
    pub staging_dir: PathBuf,
    /// Where each instance keeps its crash journal.
    pub state_dir: PathBuf,
    /// Deliveries that end with the process dying before a message is
    /// dead-lettered as `crash-loop`.
    pub max_crashes: u32,
    /// After how long a `process` call counts as stuck (`None`: never).
    pub stuck_after: Option<Duration>,
    /// How long in-flight requests may take to finish on shutdown.
    pub shutdown_deadline: Duration,
    /// How the service declares its inbound and outbound queues.
    pub queue_mode: QueueMode,
    /// The RabbitMQ queue type of the queues the service declares.
    pub queue_type: QueueType,
    /// The AMQP frame size asked of RabbitMQ, in bytes.
    pub amqp_frame_max: u32,
    /// RabbitMQ virtual host.
    pub amqp_vhost: String,
    /// Scheme for an object-storage host given without one.
    pub s3_scheme: S3Scheme,
    /// S3 region.
    pub s3_region: String,
    /// How long S3 calls may wait.
    pub s3_timeouts: S3Timeouts,
    /// Directory of mounted secrets.
    pub secrets_dir: PathBuf,
    /// How long `pass show` may take.
    pub secret_timeout: Duration,
    /// How long connecting to the sys-map may take.
    pub sys_map_connect_timeout: Duration,
    /// How long a sys-map request may take in all.
    pub sys_map_timeout: Duration,
    /// How long opening a PostgreSQL connection may take.
    pub db_connect_timeout: Duration,
    /// How long a request may wait for a tested pooled connection.
    pub db_checkout_timeout: Duration,
    /// How long a PostgreSQL server silent on the network goes unnoticed;
    /// zero leaves it to the operating system.
    pub db_tcp_timeout: Duration,
    /// How long one statement may run on PostgreSQL; zero for no limit.
    pub db_statement_timeout: Duration,
}

impl Default for Settings {
    /// The defaults of [`SettingsArgs`], whatever the environment says.
    fn default() -> Self {
        let defaults_only = SettingsArgs::command().mut_args(|arg| arg.env(None::<&'static str>));
        let parsed = defaults_only
            .try_get_matches_from(["slingshot"])
            .and_then(|matches| SettingsArgs::from_arg_matches(&matches));
        // Both can only fail if the definitions above are wrong, which the
        // unit tests would show.
        let args = parsed.unwrap_or_else(|e| unreachable!("the defaults parse: {e}"));
        args.resolve()
            .unwrap_or_else(|e| unreachable!("the defaults are valid: {e}"))
    }
}

/// How a service declares the queues it consumes and publishes to.
///
/// Either way, a queue that already exists is used as it is, and the
/// dead-letter queue, which only slingshot uses, is always durable.
#[derive(ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum QueueMode {
    /// Durable queues: messages survive a broker restart. For deployments
    /// where every service sharing a queue runs on slingshot.
    #[default]
    Durable,
    /// Transient queues with no arguments, exactly as the original
    /// slingshot-microservice declares them, so that original services
    /// sharing a queue can still declare it, whichever starts first.
    /// Messages in these queues do not survive a broker restart.
    Compatible,
}

impl QueueMode {
    /// The durability of the queues this mode declares.
    pub fn durability(self) -> Durability {
        match self {
            QueueMode::Durable => Durability::Durable,
            QueueMode::Compatible => Durability::Transient,
        }
    }

    /// `durable` or `compatible`, as `SLINGSHOT_QUEUE_MODE` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueMode::Durable => "durable",
            QueueMode::Compatible => "compatible",
        }
    }
}

impl std::fmt::Display for QueueMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The scheme of an object-storage host.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3Scheme {
    /// Plain HTTP (a local Garage).
    Http,
    /// HTTPS.
    Https,
}

impl S3Scheme {
    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            S3Scheme::Http => "http",
            S3Scheme::Https => "https",
        }
    }
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
            amqp_frame_max: self.amqp_frame_max,
            shutdown_deadline: Duration::from_secs(self.shutdown_secs),
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

impl Settings {
    /// Settings from the `SLINGSHOT_*` environment variables, defaults for
    /// the rest. A malformed value is an error naming the variable.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_args(std::iter::empty::<String>())
    }

    /// Settings from flags (`--concurrency 8`), then the environment, then
    /// the defaults.
    ///
    /// ```
    /// use slingshot::Settings;
    /// let settings = Settings::from_args(["--concurrency", "24"])?;
    /// assert_eq!(settings.prefetch, 48, "twice the concurrency (at least 32) unless set");
    /// let err = Settings::from_args(["--prefetch", "0"]).unwrap_err();
    /// assert!(err.to_string().contains("0 is not in 1..=65535"));
    /// # Ok::<(), slingshot::Error>(())
    /// ```
    pub fn from_args<I, T>(args: I) -> Result<Self, Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let command = SettingsArgs::command();
        let matches = command
            .clone()
            .try_get_matches_from(std::iter::once("slingshot".into()).chain(args.into_iter().map(Into::into)))
            .map_err(|e| Error::Config(describe_clap_error(&command, &e)))?;
        SettingsArgs::from_arg_matches(&matches)
            .map_err(|e| Error::Config(describe_clap_error(&command, &e)))?
            .resolve()
    }

    /// The bounds of an HTTP sys-map's requests.
    pub fn sys_map_timeouts(&self) -> crate::sysmap::http::HttpTimeouts {
        crate::sysmap::http::HttpTimeouts {
            connect: self.sys_map_connect_timeout,
            request: self.sys_map_timeout,
        }
    }

    /// The delay before attempt `attempt + 1`: base × 2^(attempt-1), capped.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.retry_base.saturating_mul(factor).min(self.retry_max)
    }
}

/// A clap error about a value in one line, naming the environment variable
/// when the value came from one (clap names only the flag): e.g.
/// `SLINGSHOT_CONCURRENCY="0": 0 is not in 1..=1024`.
pub fn describe_clap_error(command: &clap::Command, error: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    let context = |kind| match error.get(kind) {
        Some(ContextValue::String(text)) => Some(text.clone()),
        _ => None,
    };
    let (Some(arg), Some(value)) = (context(ContextKind::InvalidArg), context(ContextKind::InvalidValue)) else {
        return error.to_string().trim().trim_start_matches("error: ").to_string();
    };
    // `--concurrency <N>`: the flag is the first word.
    let flag = arg.split_whitespace().next().unwrap_or(&arg);
    let from_env = command
        .get_arguments()
        .find(|a| a.get_long().is_some_and(|long| flag == format!("--{long}")))
        .and_then(|a| a.get_env())
        .filter(|var| std::env::var_os(var).is_some_and(|v| v == value.as_str()));
    let source = match from_env {
        Some(var) => format!("{}={value:?}", var.to_string_lossy()),
        None => format!("{flag} {value:?}"),
    };
    let why = std::error::Error::source(error)
        .map(ToString::to_string)
        .unwrap_or_else(|| "not a valid value".into());
    let valid = match error.get(ContextKind::ValidValue) {
        Some(ContextValue::Strings(values)) => format!(" (use one of: {})", values.join(", ")),
        _ => String::new(),
    };
    format!("{source}: {why}{valid}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Held by every test that reads the environment, so that the one test
    /// that sets a variable cannot be seen by the others.
    static ENVIRONMENT: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn with(args: &[&str]) -> Result<Settings, Error> {
        let _environment = ENVIRONMENT.lock().unwrap_or_else(|p| p.into_inner());
        Settings::from_args(args.iter().copied())
    }

    #[test]
    fn defaults_and_derived_prefetch() {
        let defaults = with(&[]).unwrap();
        assert_eq!(defaults, Settings::default());
        assert_eq!(
            (defaults.concurrency, defaults.prefetch, defaults.max_attempts),
            (4, 32, 5)
        );
        assert_eq!(defaults.queue_mode, QueueMode::Durable);
        assert_eq!(defaults.amqp_vhost, "/");
        assert_eq!(with(&["--concurrency", "16"]).unwrap().prefetch, 32);
        assert_eq!(
            with(&["--concurrency", "64"]).unwrap().prefetch,
            128,
            "twice the concurrency"
        );
        assert_eq!(with(&["--concurrency", "1"]).unwrap().prefetch, 32, "at least 32");
        assert_eq!(with(&["--concurrency", "4", "--prefetch", "4"]).unwrap().prefetch, 4);
    }

    #[test]
    fn defaults_ignore_the_environment() {
        let _environment = ENVIRONMENT.lock().unwrap_or_else(|p| p.into_inner());
        std::env::set_var("SLINGSHOT_MAX_ATTEMPTS", "9");
        let from_env = Settings::from_env().map(|s| s.max_attempts);
        let default = Settings::default().max_attempts;
        std::env::remove_var("SLINGSHOT_MAX_ATTEMPTS");
        assert_eq!((from_env.ok(), default), (Some(9), 5));
    }

    #[test]
    fn queue_modes() {
        let compatible = with(&["--queue-mode", "compatible"]).unwrap().queue_mode;
        assert_eq!(compatible, QueueMode::Compatible);
        assert_eq!(compatible.durability(), Durability::Transient);
        assert_eq!(QueueMode::Durable.durability(), Durability::Durable);
    }

    #[test]
    fn queue_types() {
        assert_eq!(with(&[]).unwrap().queue_type, QueueType::Classic);
        assert_eq!(with(&["--queue-type", "quorum"]).unwrap().queue_type, QueueType::Quorum);
        let err = with(&["--queue-type", "quorum", "--queue-mode", "compatible"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("SLINGSHOT_QUEUE_TYPE=quorum needs SLINGSHOT_QUEUE_MODE=durable"),
            "{err}"
        );
    }

    #[test]
    fn malformed_values_are_named() {
        for (args, needle) in [
            (
                &["--concurrency", "many"][..],
                "--concurrency \"many\": invalid digit found in string",
            ),
            (&["--concurrency", "0"], "not in 1..=1024"),
            (&["--prefetch", "0"], "not in 1..=65535"),
            (
                &["--concurrency", "8", "--prefetch", "4"],
                "SLINGSHOT_PREFETCH=4 is below",
            ),
            (&["--max-attempts", "0"], "--max-attempts \"0\""),
            (
                &["--retry-base-ms", "10", "--retry-max-ms", "5"],
                "below SLINGSHOT_RETRY_BASE_MS=10",
            ),
            (
                &["--queue-mode", "transient"],
                "--queue-mode \"transient\": not a valid value (use one of: durable, compatible)",
            ),
        ] {
            let err = with(args).unwrap_err().to_string();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn waits_have_bounds_by_default() {
        let defaults = with(&[]).unwrap();
        assert_eq!(
            defaults.sys_map_timeouts(),
            crate::sysmap::http::HttpTimeouts::default()
        );
        let secs = |d: Duration| d.as_secs();
        assert_eq!(
            (
                secs(defaults.secret_timeout),
                secs(defaults.db_connect_timeout),
                secs(defaults.db_checkout_timeout),
                secs(defaults.db_tcp_timeout),
                secs(defaults.db_statement_timeout)
            ),
            (10, 10, 10, 60, 300)
        );
        let off = with(&["--db-tcp-timeout-secs", "0", "--db-statement-timeout-secs", "0"]).unwrap();
        assert_eq!(
            (off.db_tcp_timeout, off.db_statement_timeout),
            (Duration::ZERO, Duration::ZERO)
        );
        let err = with(&["--db-tcp-timeout-secs", "3"]).unwrap_err().to_string();
        assert!(err.contains("SLINGSHOT_DB_TCP_TIMEOUT_SECS=3 is too short"), "{err}");
        for (flag, least) in [
            ("--secret-timeout-secs", "1"),
            ("--db-checkout-timeout-secs", "1"),
            ("--db-connect-timeout-secs", "2"),
            ("--sys-map-timeout-secs", "1"),
        ] {
            let err = with(&[flag, "0"]).unwrap_err().to_string();
            assert!(err.contains(&format!("0 is not in {least}..=")), "{flag}: {err}");
        }
    }

    #[test]
    fn s3_timeouts() {
        assert_eq!(with(&[]).unwrap().s3_timeouts, S3Timeouts::default());
        let set = with(&[
            "--s3-connect-timeout-secs",
            "2",
            "--s3-read-timeout-secs",
            "3",
            "--s3-attempt-timeout-secs",
            "4",
            "--s3-operation-timeout-secs",
            "8",
        ])
        .unwrap()
        .s3_timeouts;
        assert_eq!(
            [set.connect, set.read, set.attempt, set.operation].map(|d| d.as_secs()),
            [2, 3, 4, 8]
        );
        for (args, needle) in [
            (&["--s3-read-timeout-secs", "0"][..], "not in 1..=86400"),
            (
                &["--s3-attempt-timeout-secs", "60", "--s3-operation-timeout-secs", "30"],
                "SLINGSHOT_S3_OPERATION_TIMEOUT_SECS=30 is below SLINGSHOT_S3_ATTEMPT_TIMEOUT_SECS=60",
            ),
        ] {
            let err = with(args).unwrap_err().to_string();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn backoff_doubles_then_caps() {
        let s = with(&["--retry-base-ms", "100", "--retry-max-ms", "350"]).unwrap();
        let delays: Vec<u128> = (1..=5).map(|a| s.backoff(a).as_millis()).collect();
        assert_eq!(delays, [100, 200, 350, 350, 350]);
        assert_eq!(s.backoff(u32::MAX).as_millis(), 350);
    }

    #[test]
    fn the_readme_lists_every_setting() {
        let readme = include_str!("../../README.md");
        for arg in SettingsArgs::command().get_arguments() {
            if let Some(var) = arg.get_env() {
                let var = var.to_string_lossy();
                assert!(
                    readme.contains(&format!("`{var}`")),
                    "README's settings table lacks {var}"
                );
            }
        }
    }
}
