//! A service's encrypted buckets, built from its wiring's `encrypt` entries:
//! bucket references resolved to real buckets, secret references to keys.

use std::sync::Arc;

use crate::error::Error;
use crate::runtime::connect::resolve_secret;
use crate::settings::Settings;
use crate::storage::encrypt::format::MasterKey;
use crate::storage::encrypt::{EncryptedStore, KeyRing, PlainObjects};
use crate::storage::ObjectStore;
use crate::sysmap::{Encryption, ServiceWiring, SysMap};

/// The key ring of every encrypted bucket of service `name`, by real
/// bucket name. Resolves each key's secret reference (off the async
/// threads); an error names the field and the reference, never the value.
pub(crate) async fn key_rings(
    sysmap: &SysMap,
    settings: &Settings,
    name: &str,
    wiring: &ServiceWiring,
) -> Result<Vec<(String, KeyRing)>, Error> {
    let mut rings: Vec<(String, KeyRing)> = Vec::with_capacity(wiring.encrypt.len());
    let mut seen: Vec<(String, &Encryption)> = Vec::new();
    for entry in &wiring.encrypt {
        let at = format!("service {name}: encrypt.{}", entry.reference);
        let bucket = sysmap.bucket(name, &entry.reference).await?;
        // Two references to one bucket must agree on its keys.
        if let Some((_, other)) = seen.iter().find(|(b, _)| *b == bucket) {
            let same = other.keys == entry.keys && other.write == entry.write && other.read_plain == entry.read_plain;
            if !same {
                return Err(Error::Config(format!(
                    "{at} and encrypt.{} both name bucket {bucket:?} with different keys: give them the same entry",
                    other.reference
                )));
            }
            continue;
        }
        let mut keys = Vec::with_capacity(entry.keys.len());
        for (id, reference) in &entry.keys {
            let text = resolve_secret(reference.clone(), settings).await?;
            let key = MasterKey::parse(&text)
                .map_err(|why| Error::Config(format!("{at}.keys.{id}: the secret {reference:?} {why}")))?;
            keys.push((id.clone(), key));
        }
        let plain = match entry.read_plain {
            true => PlainObjects::Read,
            false => PlainObjects::Reject,
        };
        let ring = KeyRing::new(keys, &entry.write, plain).map_err(|why| Error::Config(format!("{at}: {why}")))?;
        seen.push((bucket.clone(), entry));
        rings.push((bucket, ring));
    }
    Ok(rings)
}

/// `store` as service `name` sees it: encrypting the buckets its wiring
/// names, or `store` itself when it names none.
pub(crate) async fn store_for(
    sysmap: &SysMap,
    settings: &Settings,
    name: &str,
    wiring: &ServiceWiring,
    store: &Arc<dyn ObjectStore>,
) -> Result<Arc<dyn ObjectStore>, Error> {
    if wiring.encrypt.is_empty() {
        return Ok(store.clone());
    }
    let rings = key_rings(sysmap, settings, name, wiring).await?;
    let encrypted = EncryptedStore::new(store.clone(), rings);
    tracing::info!(service = name, objects = %encrypted.describe(), "client-side encryption");
    Ok(Arc::new(encrypted))
}
