//! `NAME objects reencrypt REF`: moves every object of an encrypted bucket to
//! its current key (and plain ones, when the migration flag allows reading
//! them), streaming each through decrypt → encrypt → upload.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;

use crate::error::Error;
use crate::runtime::{encryption, Runtime};
use crate::settings::Settings;
use crate::storage::encrypt::{EncryptedStore, PlainObjects, Sealed};
use crate::storage::{ObjectError, ObjectStore};
use crate::sysmap::SysMap;

/// What became of a bucket's objects.
#[derive(Debug, Default)]
struct Tally {
    current: usize,
    /// Moved (or, in a dry run, to move), by the key they were under
    /// (`plain` for plain objects).
    moved: BTreeMap<String, usize>,
    plain_left: usize,
    failed: usize,
}

/// Runs `reencrypt` for the bucket behind `reference` of service `name`.
pub(crate) async fn run(
    name: &str,
    location: &str,
    settings: Settings,
    reference: &str,
    dry_run: bool,
) -> Result<ExitCode, Error> {
    let sysmap = SysMap::open_with(location, settings.sys_map_timeouts())?;
    let wiring = sysmap.service(name).await?;
    if !wiring.encrypt.iter().any(|e| e.reference == reference) {
        let known: Vec<&str> = wiring.encrypt.iter().map(|e| e.reference.as_str()).collect();
        return Err(Error::Config(format!(
            "bucket reference {reference:?} is not encrypted: the sys-map entry of {name} has no encrypt.{reference} \
             (encrypted references: {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )));
    }
    let bucket = sysmap.bucket(name, reference).await?;
    let raw = Runtime::store_from(&sysmap, &settings).await?;
    let rings = encryption::key_rings(&sysmap, &settings, name, &wiring).await?;
    let store = EncryptedStore::new(raw.clone(), rings);
    let Some(ring) = store.ring(&bucket).cloned() else {
        return Err(Error::Config(format!("bucket {bucket:?} has no key ring")));
    };
    let write = ring.write_key_id().to_string();
    let keys = raw.list(&bucket).await?;
    println!(
        "{name}: {} object(s) in bucket {bucket} ({reference}); current key {write}{}",
        keys.len(),
        if dry_run { " (dry run: nothing is changed)" } else { "" }
    );
    let mut tally = Tally::default();
    for key in &keys {
        let from = match store.sealed(&bucket, key).await {
            Ok(Sealed::Under(id)) if id == write => {
                tally.current += 1;
                continue;
            }
            Ok(Sealed::Plain) if ring.plain() == PlainObjects::Reject => {
                println!("  {key}: plain, left as it is (\"plain\" is \"reject\"; set \"read\" to migrate it)");
                tally.plain_left += 1;
                continue;
            }
            Ok(Sealed::Plain) => "plain".to_string(),
            Ok(Sealed::Under(id)) => id,
            // Deleted since it was listed.
            Err(ObjectError::NotFound { .. }) => continue,
            Err(e) => {
                println!("  {key}: FAILED: {e}");
                tally.failed += 1;
                continue;
            }
        };
        if !dry_run {
            if let Err(e) = move_object(&store, &raw, &bucket, key, &from).await {
                println!("  {key}: FAILED: {e}");
                tally.failed += 1;
                continue;
            }
        }
        println!("  {key}: {from} -> {write}{}", if dry_run { " (dry run)" } else { "" });
        *tally.moved.entry(from).or_default() += 1;
    }
    let moved: Vec<String> = tally.moved.iter().map(|(k, n)| format!("{n} from {k}")).collect();
    println!(
        "{name}: bucket {bucket}: {} already under {write}; {} {}{}; {} plain left; {} failed",
        tally.current,
        if dry_run { "would move" } else { "moved" },
        tally.moved.values().sum::<usize>(),
        if moved.is_empty() {
            String::new()
        } else {
            format!(" ({})", moved.join(", "))
        },
        tally.plain_left,
        tally.failed,
    );
    Ok(if tally.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Decrypts `bucket/key` and uploads it encrypted under the current key.
/// Only ciphertext touches the disk. Just before the upload the object's
/// header is read again: one a service rewrote meanwhile is left alone.
async fn move_object(
    store: &EncryptedStore,
    raw: &Arc<dyn ObjectStore>,
    bucket: &str,
    key: &str,
    from: &str,
) -> Result<(), ObjectError> {
    let Some(ring) = store.ring(bucket).cloned() else {
        return Ok(());
    };
    let mut reader = store.open(bucket, key).await?;
    let io_err = |source| ObjectError::Io {
        op: "re-encrypt",
        bucket: bucket.into(),
        key: key.into(),
        source,
    };
    let sealed = tokio::task::spawn_blocking(move || -> std::io::Result<tempfile::TempPath> {
        let file = tempfile::Builder::new().prefix(".reencrypt-").tempfile()?;
        ring.encrypt_stream(&mut reader, file.as_file())?;
        Ok(file.into_temp_path())
    })
    .await
    .map_err(|e| io_err(std::io::Error::other(e)))?
    .map_err(|e| match ObjectError::in_io_error(&e) {
        Some(inner) => ObjectError::Encryption {
            op: "re-encrypt",
            bucket: bucket.into(),
            key: key.into(),
            message: inner.to_string(),
        },
        None => io_err(e),
    })?;
    let still = match store.sealed(bucket, key).await? {
        Sealed::Plain => from == "plain",
        Sealed::Under(id) => id == from,
    };
    if still {
        raw.put_file(bucket, key, &sealed).await?;
    }
    let _ = tokio::task::spawn_blocking(move || drop(sealed)).await;
    Ok(())
}
