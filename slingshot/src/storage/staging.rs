//! Staging of `write_file` output: private local files per request, uploaded only after `process` succeeded, removed on every path.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use futures::future::try_join_all;
use tempfile::TempDir;

use super::{ObjectError, ObjectStore, ObjectWriter};

/// An object written by `process` and uploaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenObject {
    /// The real bucket name.
    pub bucket: String,
    /// The object key (the decimal ID).
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
}

#[derive(Debug)]
struct Staged {
    bucket: String,
    key: String,
    path: PathBuf,
}

/// The files one request staged. Dropping it deletes them, whether they were
/// uploaded or not, so an error or a panic in `process` leaves nothing behind.
#[derive(Debug)]
pub(crate) struct Staging {
    base: PathBuf,
    dir: OnceLock<TempDir>,
    files: Mutex<Vec<Staged>>,
}

impl Staging {
    /// Staging under `base`; the request's private directory (mode 0700) is
    /// created on the first `write_file`.
    pub(crate) fn new(base: &Path) -> Self {
        Staging {
            base: base.to_path_buf(),
            dir: OnceLock::new(),
            files: Mutex::new(Vec::new()),
        }
    }

    fn dir(&self) -> std::io::Result<&Path> {
        if let Some(dir) = self.dir.get() {
            return Ok(dir.path());
        }
        std::fs::create_dir_all(&self.base)?;
        let created = tempfile::Builder::new().prefix("slingshot-").tempdir_in(&self.base)?;
        // Only the request's own thread stages files, so a lost race is
        // impossible; if it happened the spare directory is simply dropped.
        Ok(self.dir.get_or_init(|| created).path())
    }

    /// Opens (creating or truncating) the staged file for `bucket/key`.
    pub(crate) fn create(&self, bucket: &str, key: &str) -> Result<ObjectWriter, ObjectError> {
        let io_err = |op, source| ObjectError::Io {
            op,
            bucket: bucket.into(),
            key: key.into(),
            source,
        };
        let dir = self.dir().map_err(|e| io_err("create staging directory", e))?;
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        let path = match files.iter().find(|s| s.bucket == bucket && s.key == key) {
            Some(existing) => existing.path.clone(),
            None => {
                let path = dir.join(format!("{}.staged", files.len()));
                files.push(Staged {
                    bucket: bucket.into(),
                    key: key.into(),
                    path: path.clone(),
                });
                path
            }
        };
        let file = std::fs::File::create(&path).map_err(|e| io_err("stage", e))?;
        Ok(ObjectWriter::new(file))
    }

    /// Uploads every staged file, concurrently, and reports what was written.
    pub(crate) async fn upload(&self, store: &dyn ObjectStore) -> Result<Vec<WrittenObject>, ObjectError> {
        let staged: Vec<(String, String, PathBuf)> = {
            let files = self.files.lock().unwrap_or_else(|p| p.into_inner());
            files
                .iter()
                .map(|s| (s.bucket.clone(), s.key.clone(), s.path.clone()))
                .collect()
        };
        try_join_all(staged.into_iter().map(|(bucket, key, path)| {
            let span = crate::execute::object_span("PutObject", &bucket, &key);
            let put = async move {
                let put = store.put_file(&bucket, &key, &path).await;
                if let Err(e) = &put {
                    let span = tracing::Span::current();
                    span.record("otel.status_code", "error");
                    span.record("otel.status_description", e.to_string());
                }
                Ok(WrittenObject {
                    bucket,
                    key,
                    size: put?,
                })
            };
            tracing::Instrument::instrument(put, span)
        }))
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn dropping_removes_the_staged_files() {
        let base = tempfile::tempdir().unwrap();
        let staging = Staging::new(base.path());
        let mut w = staging.create("out", "1").unwrap();
        w.write_all(b"hello").unwrap();
        let dir = staging.dir().unwrap().to_path_buf();
        assert!(dir.join("0.staged").exists());
        drop(staging);
        assert!(!dir.exists());
    }

    #[test]
    fn nothing_is_created_until_a_file_is_written() {
        let base = tempfile::tempdir().unwrap();
        let staging = Staging::new(&base.path().join("never"));
        drop(staging);
        assert!(!base.path().join("never").exists());
    }

    #[test]
    fn writing_the_same_object_twice_stages_it_once() {
        let base = tempfile::tempdir().unwrap();
        let staging = Staging::new(base.path());
        staging.create("out", "1").unwrap().write_all(b"first").unwrap();
        staging.create("out", "1").unwrap().write_all(b"second").unwrap();
        let files = staging.files.lock().unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(std::fs::read(&files[0].path).unwrap(), b"second");
    }
}
