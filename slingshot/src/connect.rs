//! Reaching the real backends the sys-map names: secrets resolved, credentials percent-encoded into URLs, the RabbitMQ broker, the S3 configuration and the database target.

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
        let url = format!(
            "{url}?application_name={}",
            encode_component(&format!("slingshot {service}"))
        );
        Ok::<_, Error>(DbTarget::Postgres { url, display })
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
    let dir = settings.secrets_dir.clone();
    tokio::task::spawn_blocking(move || secrets::resolve(&reference, &dir))
        .await
        .map_err(|e| Error::Crashed {
            what: "resolving a secret".into(),
            message: e.to_string(),
        })?
        .map_err(|e| Error::SysMap(e.into()))
}

#[cfg(test)]
mod tests {
    use super::{encode_component, server_url};

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
