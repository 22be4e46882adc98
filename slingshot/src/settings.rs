//! Run-time settings of a service, read from the environment with defaults, rejected loudly when malformed.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::broker::Durability;
use crate::error::Error;

/// How a service consumes, retries and shuts down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Requests processed at the same time (`SLINGSHOT_CONCURRENCY`, default 4).
    pub concurrency: usize,
    /// Unacknowledged deliveries the broker may send ahead
    /// (`SLINGSHOT_PREFETCH`, default twice the concurrency).
    pub prefetch: u16,
    /// Tries of a request before it is dead-lettered (`SLINGSHOT_MAX_ATTEMPTS`, default 5).
    pub max_attempts: u32,
    /// First retry delay; it doubles each attempt (`SLINGSHOT_RETRY_BASE_MS`, default 500).
    pub retry_base: Duration,
    /// Longest retry delay (`SLINGSHOT_RETRY_MAX_MS`, default 30000).
    pub retry_max: Duration,
    /// Where `write_file` stages output (`SLINGSHOT_STAGING_DIR`, default the system temp dir).
    pub staging_dir: PathBuf,
    /// How long in-flight requests may take to finish on shutdown (`SLINGSHOT_SHUTDOWN_SECS`, default 30).
    pub shutdown_deadline: Duration,
    /// How the service declares its inbound and outbound queues
    /// (`SLINGSHOT_QUEUE_MODE`, default `durable`).
    pub queue_mode: QueueMode,
}

/// How a service declares the queues it consumes and publishes to.
///
/// Either way, a queue that already exists is used as it is, and the
/// dead-letter queue, which only slingshot uses, is always durable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum QueueMode {
    /// Durable queues: messages survive a broker restart. For deployments
    /// where every service sharing a queue runs on slingshot.
    #[default]
    Durable,
    /// Transient queues with no arguments, exactly as the original
    /// `slingshot-microservice` declares them, so that original services
    /// sharing a queue can still declare it, whichever service starts first.
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

impl FromStr for QueueMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "durable" => Ok(QueueMode::Durable),
            "compatible" => Ok(QueueMode::Compatible),
            _ => Err(format!(
                "SLINGSHOT_QUEUE_MODE={text:?} is not a queue mode: use durable (queues survive a broker restart) \
                 or compatible (transient, as the original slingshot-microservice declares them)"
            )),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            concurrency: 4,
            prefetch: 8,
            max_attempts: 5,
            retry_base: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
            staging_dir: std::env::temp_dir(),
            shutdown_deadline: Duration::from_secs(30),
            queue_mode: QueueMode::Durable,
        }
    }
}

/// Every environment variable [`Settings::from_env`] reads, with its meaning.
pub const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "SLINGSHOT_SYS_MAP",
        "sys-map location, overriding the attribute's sys_map (file:PATH, http(s)://URL or host)",
    ),
    (
        "SLINGSHOT_CONCURRENCY",
        "requests processed at the same time (default 4)",
    ),
    (
        "SLINGSHOT_PREFETCH",
        "unacknowledged deliveries in flight (default 2 x concurrency)",
    ),
    (
        "SLINGSHOT_MAX_ATTEMPTS",
        "tries before a request is dead-lettered (default 5)",
    ),
    (
        "SLINGSHOT_RETRY_BASE_MS",
        "first retry delay in ms, doubling per attempt (default 500)",
    ),
    ("SLINGSHOT_RETRY_MAX_MS", "longest retry delay in ms (default 30000)"),
    (
        "SLINGSHOT_STAGING_DIR",
        "directory for files staged by write_file (default the system temp dir)",
    ),
    (
        "SLINGSHOT_SHUTDOWN_SECS",
        "seconds in-flight requests get to finish on SIGTERM/SIGINT (default 30)",
    ),
    (
        "SLINGSHOT_QUEUE_MODE",
        "durable (default) or compatible: declare queues transient, as original slingshot-microservice services do",
    ),
    (
        "SLINGSHOT_HTTP_ADDR",
        "metrics and probes address (default 0.0.0.0:9090; off to disable)",
    ),
    ("SLINGSHOT_AMQP_VHOST", "RabbitMQ virtual host (default /)"),
    (
        "SLINGSHOT_S3_SCHEME",
        "scheme for an object-storage host given without one: https (default) or http",
    ),
    ("SLINGSHOT_S3_REGION", "S3 region (default garage)"),
    (
        "SLINGSHOT_SECRETS_DIR",
        "directory of mounted secrets (default /run/secrets)",
    ),
    (
        "SLINGSHOT_SECRET_<REF>",
        "a secret by reference, e.g. SLINGSHOT_SECRET_SLINGSHOT_RABBITMQ",
    ),
    (
        "SLINGSHOT_LOG",
        "log filter, e.g. info or slingshot=debug (default info)",
    ),
    (
        "SLINGSHOT_LOG_FORMAT",
        "json for one JSON object per line (default human-readable)",
    ),
];

impl Settings {
    /// Settings from `SLINGSHOT_*` variables, defaults for the rest.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Settings from any lookup (tests use a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        fn parse<T: FromStr>(
            get: &impl Fn(&str) -> Option<String>,
            name: &str,
            what: &str,
        ) -> Result<Option<T>, Error> {
            match get(name) {
                None => Ok(None),
                Some(text) => text
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| Error::Config(format!("{name}={text:?} is not {what}"))),
            }
        }
        let defaults = Settings::default();
        let concurrency: usize =
            parse(&get, "SLINGSHOT_CONCURRENCY", "a whole number from 1 to 1024")?.unwrap_or(defaults.concurrency);
        if !(1..=1024).contains(&concurrency) {
            return Err(Error::Config(format!(
                "SLINGSHOT_CONCURRENCY={concurrency} must be from 1 to 1024"
            )));
        }
        let prefetch: u16 = match parse::<u16>(&get, "SLINGSHOT_PREFETCH", "a whole number from 1 to 65535")? {
            Some(0) => {
                return Err(Error::Config(
                    "SLINGSHOT_PREFETCH=0 would mean unlimited; give a bound from 1 to 65535".into(),
                ))
            }
            Some(p) => p,
            None => u16::try_from(concurrency * 2).unwrap_or(u16::MAX),
        };
        if usize::from(prefetch) < concurrency {
            return Err(Error::Config(format!(
                "SLINGSHOT_PREFETCH={prefetch} is below SLINGSHOT_CONCURRENCY={concurrency}; workers would sit idle"
            )));
        }
        let max_attempts: u32 =
            parse(&get, "SLINGSHOT_MAX_ATTEMPTS", "a whole number of at least 1")?.unwrap_or(defaults.max_attempts);
        if max_attempts == 0 {
            return Err(Error::Config("SLINGSHOT_MAX_ATTEMPTS must be at least 1".into()));
        }
        let ms = |name, default: Duration| -> Result<Duration, Error> {
            Ok(parse::<u64>(&get, name, "a number of milliseconds")?
                .map(Duration::from_millis)
                .unwrap_or(default))
        };
        let retry_base = ms("SLINGSHOT_RETRY_BASE_MS", defaults.retry_base)?;
        let retry_max = ms("SLINGSHOT_RETRY_MAX_MS", defaults.retry_max)?;
        if retry_max < retry_base {
            return Err(Error::Config(
                "SLINGSHOT_RETRY_MAX_MS is below SLINGSHOT_RETRY_BASE_MS".into(),
            ));
        }
        let shutdown_deadline = parse::<u64>(&get, "SLINGSHOT_SHUTDOWN_SECS", "a number of seconds")?
            .map(Duration::from_secs)
            .unwrap_or(defaults.shutdown_deadline);
        let queue_mode = match get("SLINGSHOT_QUEUE_MODE") {
            None => defaults.queue_mode,
            Some(text) => text.parse().map_err(Error::Config)?,
        };
        Ok(Settings {
            concurrency,
            prefetch,
            max_attempts,
            retry_base,
            retry_max,
            staging_dir: get("SLINGSHOT_STAGING_DIR")
                .map(PathBuf::from)
                .unwrap_or(defaults.staging_dir),
            shutdown_deadline,
            queue_mode,
        })
    }

    /// The delay before attempt `attempt + 1`: base × 2^(attempt-1), capped.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.retry_base.saturating_mul(factor).min(self.retry_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with(pairs: &[(&str, &str)]) -> Result<Settings, Error> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_and_derived_prefetch() {
        assert_eq!(with(&[]).unwrap().prefetch, 8);
        assert_eq!(with(&[("SLINGSHOT_CONCURRENCY", "16")]).unwrap().prefetch, 32);
    }

    #[test]
    fn queue_modes() {
        assert_eq!(with(&[]).unwrap().queue_mode, QueueMode::Durable);
        let compatible = with(&[("SLINGSHOT_QUEUE_MODE", "Compatible")]).unwrap().queue_mode;
        assert_eq!(compatible, QueueMode::Compatible);
        assert_eq!(compatible.durability(), Durability::Transient);
        assert_eq!(QueueMode::Durable.durability(), Durability::Durable);
    }

    #[test]
    fn malformed_values_are_named() {
        for (pairs, needle) in [
            (
                vec![("SLINGSHOT_CONCURRENCY", "many")],
                "SLINGSHOT_CONCURRENCY=\"many\"",
            ),
            (vec![("SLINGSHOT_CONCURRENCY", "0")], "from 1 to 1024"),
            (vec![("SLINGSHOT_PREFETCH", "0")], "unlimited"),
            (
                vec![("SLINGSHOT_CONCURRENCY", "8"), ("SLINGSHOT_PREFETCH", "4")],
                "below",
            ),
            (vec![("SLINGSHOT_MAX_ATTEMPTS", "0")], "at least 1"),
            (vec![("SLINGSHOT_QUEUE_MODE", "transient")], "use durable"),
            (
                vec![("SLINGSHOT_RETRY_BASE_MS", "10"), ("SLINGSHOT_RETRY_MAX_MS", "5")],
                "below",
            ),
        ] {
            let err = with(&pairs).unwrap_err().to_string();
            assert!(err.contains(needle), "{pairs:?}: {err}");
        }
    }

    #[test]
    fn backoff_doubles_then_caps() {
        let s = with(&[("SLINGSHOT_RETRY_BASE_MS", "100"), ("SLINGSHOT_RETRY_MAX_MS", "350")]).unwrap();
        let delays: Vec<u128> = (1..=5).map(|a| s.backoff(a).as_millis()).collect();
        assert_eq!(delays, [100, 200, 350, 350, 350]);
        assert_eq!(s.backoff(u32::MAX).as_millis(), 350);
    }
}
