//! Run-time settings: one clap definition per setting, from which `--help`, validation and [`Settings`] come.
//!
//! Each definition ([`SettingsArgs`]) has the flag, environment variable,
//! default, range and help of one setting.
//!
//! Every setting is a flag of the generated binary and an environment
//! variable (`--concurrency 8` or `SLINGSHOT_CONCURRENCY=8`); containers use
//! the variables. The only variables not defined here are the secrets,
//! `SLINGSHOT_SECRET_<REF>`, whose names depend on the sys-map.

use std::path::PathBuf;
use std::time::Duration;

use clap::{FromArgMatches, ValueEnum};

use crate::broker::{Durability, QueueType};
use crate::error::Error;
use crate::storage::s3::S3Timeouts;

mod args;

pub use self::args::SettingsArgs;

/// The least prefetch derived from the concurrency: room for the requests
/// whose outputs await their confirms (the README's Benchmarks section has
/// the measurements behind it).
pub const MIN_DEFAULT_PREFETCH: usize = 32;

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
    /// Once mode for every service, whatever its attribute says (`None`:
    /// as the attribute says).
    pub once: Option<bool>,
    /// How long a once-mode service remembers a message it finished: a
    /// duplicate arriving later runs again.
    pub once_retention: Duration,
    /// How old an outbox row must be before the relay publishes it: the
    /// stage that wrote it publishes it itself unless it died.
    pub once_relay_grace: Duration,
    /// How long in-flight requests may take to finish on shutdown.
    pub shutdown_deadline: Duration,
    /// Whether every output carries the legacy `x-slingshot-trace-id`
    /// (else only outputs of a message that carried one).
    pub legacy_trace_header: bool,
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
        let readme = include_str!("../../../README.md");
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
