//! Reaching the real backends the sys-map names: secrets resolved, credentials
//! percent-encoded into URLs, the RabbitMQ broker, the S3 configuration and
//! the database target with its timeouts.

use crate::broker::rabbitmq::RabbitMq;
use crate::db::{ConnectionKind, DbError, DbTarget};
use crate::error::Error;
use crate::settings::Settings;
use crate::storage::s3::S3Config;
use crate::sysmap::{secrets, DatabaseBackend, SysMap};

/// The database a connection of `kind` uses; `service` labels its
/// PostgreSQL connections (`application_name`, seen in `pg_stat_activity`).
pub(crate) async fn database_target(
    sysmap: &SysMap,
    settings: &Settings,
    kind: ConnectionKind,
    service: &str,
) -> Result<Option<DbTarget>, Error> {
    let configured = sysmap.backends().database;
    let postgres = || async {
        let db = sysmap.db().await?;
        let pass = resolve_secret(db.pass.clone(), settings).await?;
        let (url, display) = server_url("postgres", &db.username, &pass, &db.host, db.port, &db.database)?;
        Ok::<_, Error>(DbTarget::Postgres {
            url: postgres_parameters(&url, service, settings)?,
            display,
            checkout_timeout: settings.db_checkout_timeout,
        })
    };
    Ok(match (kind, configured) {
            (ConnectionKind::None, _) => None,
            (ConnectionKind::Postgres, _) | (ConnectionKind::Any, DatabaseBackend::Postgres) => Some(postgres().await?),
            (ConnectionKind::Sqlite | ConnectionKind::Any, DatabaseBackend::Sqlite(path)) => Some(DbTarget::Sqlite(path)),
            (ConnectionKind::Sqlite, DatabaseBackend::Postgres) => {
                return Err(DbError::Mismatch(format!(
                    "service {} takes `&mut SqliteConnection`, but {} configures PostgreSQL; take `&mut PgConnection` or `&mut slingshot::AnyConnection`",
                    service,
                    sysmap.describe()
                ))
                .into())
            }
        })
}

/// `scheme://user:pass@host:port/path` with user, password and path
/// percent-encoded (an IPv6 host in brackets), and the same without the
/// password, for messages.
fn server_url(
    scheme: &str,
    user: &str,
    pass: &str,
    host: &str,
    port: u16,
    path: &str,
) -> Result<(String, String), Error> {
    let bad = |what: &str| Error::Config(format!("cannot build a {scheme} URL for host {host:?}: {what}"));
    let host = match host.contains(':') && !host.starts_with('[') {
        true => format!("[{host}]"),
        false => host.to_string(),
    };
    let mut url = url::Url::parse(&format!("{scheme}://{host}")).map_err(|e| bad(&e.to_string()))?;
    url.set_port(Some(port)).map_err(|()| bad("no port allowed"))?;
    // Components are encoded here, whole: `url` leaves `%` as it is in
    // user information, so a `%` in a password would otherwise be read as
    // an escape.
    url.set_username(&encode_component(user))
        .map_err(|()| bad("no user allowed"))?;
    url.set_path(&format!("/{}", encode_component(path)));
    let display = url.to_string();
    url.set_password(Some(&encode_component(pass)))
        .map_err(|()| bad("no password allowed"))?;
    Ok((url.to_string(), display))
}

/// `url` with the libpq connection parameters of a service's connections:
/// its `application_name`, and the bounds of every wait on the server.
///
/// - `connect_timeout`: opening a connection, authentication included;
/// - `keepalives_idle`, `keepalives_interval`, `keepalives_count` and
///   `tcp_user_timeout`: a connection to a server that went silent on the
///   network fails after `SLINGSHOT_DB_TCP_TIMEOUT_SECS`, idle (probes every
///   quarter of it, the fourth quarter for the last probe's answer) or with
///   data unacknowledged;
/// - `options=-c statement_timeout=…`: the server cancels a statement that
///   runs longer.
///
/// None of them notices a server process that is frozen on a live host (its
/// kernel still acknowledges and answers probes): see [`crate::db`] for what
/// bounds that.
fn postgres_parameters(url: &str, service: &str, settings: &Settings) -> Result<String, Error> {
    let mut url = url::Url::parse(url).map_err(|e| Error::Config(format!("a PostgreSQL URL: {e}")))?;
    {
        let mut query = url.query_pairs_mut();
        query.append_pair("application_name", &format!("slingshot {service}"));
        query.append_pair("connect_timeout", &settings.db_connect_timeout.as_secs().to_string());
        let tcp = settings.db_tcp_timeout.as_secs();
        if tcp > 0 {
            let probe = (tcp / 4).max(1).to_string();
            query.append_pair("keepalives", "1");
            query.append_pair("keepalives_idle", &probe);
            query.append_pair("keepalives_interval", &probe);
            query.append_pair("keepalives_count", "3");
            query.append_pair("tcp_user_timeout", &(tcp * 1000).to_string());
        }
        let statement = settings.db_statement_timeout.as_millis();
        if statement > 0 {
            query.append_pair("options", &format!("-c statement_timeout={statement}"));
        }
    }
    // The query API writes a space as `+` (form encoding), which libpq reads
    // as a plus sign. Every `+` in it is such a space (a `+` in a value is
    // written `%2B`), so `%20` is written instead.
    let query = url.query().map(|q| q.replace('+', "%20"));
    url.set_query(query.as_deref());
    Ok(url.to_string())
}

/// `text` percent-encoded for any part of a URL: everything but ASCII
/// letters, digits and `-._~`.
pub(crate) fn encode_component(text: &str) -> String {
    const COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(text, COMPONENT).to_string()
}

/// The broker of the sys-map's `rabbitmq` endpoint, connected, on the
/// settings' virtual host, declaring queues of the settings' type. When the
/// endpoint lists several nodes (a cluster), the broker connects to the
/// first that answers and fails over to the others.
pub(crate) async fn rabbitmq_from(sysmap: &SysMap, settings: &Settings) -> Result<RabbitMq, Error> {
    let endpoint = sysmap.rabbitmq().await?;
    let pass = resolve_secret(endpoint.pass.clone(), settings).await?;
    let nodes = endpoint
        .nodes
        .iter()
        .map(|(host, port)| server_url("amqp", &endpoint.username, &pass, host, *port, &settings.amqp_vhost))
        .collect::<Result<Vec<_>, _>>()?;
    let broker = RabbitMq::cluster(nodes, "slingshot")
        .with_queue_type(settings.queue_type)
        .with_frame_max(settings.amqp_frame_max);
    broker.connect().await?;
    Ok(broker)
}

/// The S3 settings of the sys-map's `object-storage` endpoint. A host
/// without a scheme gets the settings' scheme.
pub(crate) async fn s3_config_from(sysmap: &SysMap, settings: &Settings) -> Result<S3Config, Error> {
    let endpoint = sysmap.object_storage().await?;
    let url = if endpoint.host.starts_with("http://") || endpoint.host.starts_with("https://") {
        endpoint.host.clone()
    } else {
        format!("{}://{}", settings.s3_scheme.as_str(), endpoint.host)
    };
    Ok(S3Config {
        endpoint: url,
        region: settings.s3_region.clone(),
        access_key: resolve_secret(endpoint.access_key, settings).await?,
        secret_key: resolve_secret(endpoint.secret_key, settings).await?,
    })
}

/// Resolves a secret reference off the async threads.
pub(crate) async fn resolve_secret(reference: String, settings: &Settings) -> Result<String, Error> {
    let (dir, timeout) = (settings.secrets_dir.clone(), settings.secret_timeout);
    tokio::task::spawn_blocking(move || secrets::resolve(&reference, &dir, timeout))
        .await
        .map_err(|e| Error::Crashed {
            what: "resolving a secret".into(),
            message: e.to_string(),
        })?
        .map_err(|e| Error::SysMap(e.into()))
}

#[cfg(test)]
mod tests {
    use super::{encode_component, postgres_parameters, server_url};
    use crate::settings::Settings;

    #[test]
    fn postgres_urls_bound_every_wait() {
        let (url, _) = server_url("postgres", "u", "p+q w", "db", 5432, "d").unwrap();
        let settings = Settings::from_args(["--db-statement-timeout-secs", "90"]).unwrap();
        let url = postgres_parameters(&url, "thumb nailer", &settings).unwrap();
        assert_eq!(
            url,
            "postgres://u:p%2Bq%20w@db:5432/d?application_name=slingshot%20thumb%20nailer&connect_timeout=10\
             &keepalives=1&keepalives_idle=15&keepalives_interval=15&keepalives_count=3&tcp_user_timeout=60000\
             &options=-c%20statement_timeout%3D90000"
        );
        let off = Settings::from_args(["--db-tcp-timeout-secs", "0", "--db-statement-timeout-secs", "0"]).unwrap();
        let url = postgres_parameters("postgres://u@db:5432/d", "s", &off).unwrap();
        assert_eq!(
            url,
            "postgres://u@db:5432/d?application_name=slingshot%20s&connect_timeout=10"
        );
    }

    #[test]
    fn server_urls_encode_credentials_and_hide_the_password() {
        let (url, display) = server_url("amqp", "svc user", "p@ss:/word%41", "broker", 5672, "/").unwrap();
        assert_eq!(url, "amqp://svc%20user:p%40ss%3A%2Fword%2541@broker:5672/%2F");
        assert_eq!(display, "amqp://svc%20user@broker:5672/%2F");
        assert!(!display.contains("p@ss") && !display.contains("p%40ss"));
        let (url, _) = server_url("postgres", "u", "p", "::1", 5432, "db é").unwrap();
        assert_eq!(url, "postgres://u:p@[::1]:5432/db%20%C3%A9");
        assert!(server_url("amqp", "u", "p", "bad host", 5672, "/").is_err());
    }

    #[test]
    fn components_keep_only_unreserved_characters() {
        assert_eq!(encode_component("a b:@/%é"), "a%20b%3A%40%2F%25%C3%A9");
        assert_eq!(encode_component("plain-Text_1.~"), "plain-Text_1.~");
    }
}
