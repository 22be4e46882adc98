//! Staging of `write_file` output: private local files per request, uploaded only after `process` succeeded, removed on every path.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

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

/// Bytes a writer may hold in memory before it spills to its staged file.
pub const MEMORY_LIMIT: u64 = 4 * 1024 * 1024;

/// What a closed writer left for the upload.
#[derive(Debug)]
pub(crate) enum Closed {
    /// The writer is still open.
    Open,
    /// The whole object, never spilled.
    Memory(Vec<u8>),
    /// The object is the staged file.
    File,
}

/// The request's private staging directory, created on the first spill.
#[derive(Debug)]
struct LazyDir {
    base: PathBuf,
    dir: OnceLock<TempDir>,
}

impl LazyDir {
    fn get(&self) -> std::io::Result<&Path> {
        if let Some(dir) = self.dir.get() {
            return Ok(dir.path());
        }
        std::fs::create_dir_all(&self.base)?;
        let created = tempfile::Builder::new().prefix("slingshot-").tempdir_in(&self.base)?;
        // Only the request's own thread stages files, so a lost race is
        // impossible; if it happened the spare directory is simply dropped.
        Ok(self.dir.get_or_init(|| created).path())
    }
}

/// One writer's link to the request's staging: where it spills and where it
/// leaves its bytes when closed.
pub(crate) struct Spool {
    dir: Arc<LazyDir>,
    name: String,
    closed: Arc<Mutex<Closed>>,
}

impl Spool {
    /// Creates (or truncates) the staged file.
    pub(crate) fn create_file(&self) -> std::io::Result<std::fs::File> {
        std::fs::File::create(self.dir.get()?.join(&self.name))
    }

    pub(crate) fn close(&self, closed: Closed) {
        *self.closed.lock().unwrap_or_else(|p| p.into_inner()) = closed;
    }
}

#[derive(Debug)]
struct Staged {
    bucket: String,
    key: String,
    name: String,
    closed: Arc<Mutex<Closed>>,
}

/// The objects one request wrote. Dropping it deletes the staged files,
/// whether they were uploaded or not, so an error or a panic in `process`
/// leaves nothing behind.
#[derive(Debug)]
pub(crate) struct Staging {
    dir: Arc<LazyDir>,
    files: Mutex<Vec<Staged>>,
    created: AtomicUsize,
}

impl Staging {
    /// Staging under `base`; the request's private directory (mode 0700) is
    /// created when a writer first spills to disk.
    pub(crate) fn new(base: &Path) -> Self {
        Staging {
            dir: Arc::new(LazyDir {
                base: base.to_path_buf(),
                dir: OnceLock::new(),
            }),
            files: Mutex::new(Vec::new()),
            created: AtomicUsize::new(0),
        }
    }

    #[cfg(test)]
    fn dir(&self) -> std::io::Result<&Path> {
        self.dir.get()
    }

    /// A writer of `bucket/key`; writing the same object again replaces what
    /// an earlier writer wrote.
    pub(crate) fn create(&self, bucket: &str, key: &str) -> Result<ObjectWriter, ObjectError> {
        let name = format!("{}.staged", self.created.fetch_add(1, Ordering::Relaxed));
        let closed = Arc::new(Mutex::new(Closed::Open));
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        files.retain(|s| !(s.bucket == bucket && s.key == key));
        files.push(Staged {
            bucket: bucket.into(),
            key: key.into(),
            name: name.clone(),
            closed: closed.clone(),
        });
        Ok(ObjectWriter::new(Spool {
            dir: self.dir.clone(),
            name,
            closed,
        }))
    }

    /// Uploads every written object, concurrently, and reports what was
    /// written. A writer `process` kept open is an error: its object may be
    /// incomplete.
    pub(crate) async fn upload(&self, store: &dyn ObjectStore) -> Result<Vec<WrittenObject>, ObjectError> {
        enum Source {
            Memory(Vec<u8>),
            File(PathBuf),
        }
        let mut staged = Vec::new();
        for s in self.files.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let mut closed = s.closed.lock().unwrap_or_else(|p| p.into_inner());
            let source = match std::mem::replace(&mut *closed, Closed::File) {
                Closed::Memory(bytes) => Source::Memory(bytes),
                Closed::File => match self.dir.dir.get() {
                    Some(dir) => Source::File(dir.path().join(&s.name)),
                    None => Source::Memory(Vec::new()),
                },
                Closed::Open => {
                    *closed = Closed::Open;
                    return Err(ObjectError::Io {
                        op: "upload",
                        bucket: s.bucket.clone(),
                        key: s.key.clone(),
                        source: std::io::Error::other(
                            "the writer from write_file was still open when process returned; drop it before returning",
                        ),
                    });
                }
            };
            staged.push((s.bucket.clone(), s.key.clone(), source));
        }
        try_join_all(staged.into_iter().map(|(bucket, key, source)| {
            let span = crate::execute::object_span("PutObject", &bucket, &key);
            let put = async move {
                let put = match source {
                    Source::Memory(bytes) => {
                        let size = bytes.len() as u64;
                        store.put_bytes(&bucket, &key, bytes).await.map(|()| size)
                    }
                    Source::File(path) => store.put_file(&bucket, &key, &path).await,
                };
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
    use std::io::{Seek, SeekFrom, Write};

    fn closed(staging: &Staging, index: usize) -> String {
        let files = staging.files.lock().unwrap();
        let closed = files[index].closed.lock().unwrap();
        match &*closed {
            Closed::Open => "open".into(),
            Closed::Memory(bytes) => format!("memory {:?}", String::from_utf8_lossy(bytes)),
            Closed::File => "file".into(),
        }
    }

    #[test]
    fn small_objects_stay_in_memory_and_touch_no_disk() {
        let base = tempfile::tempdir().unwrap();
        let staging = Staging::new(&base.path().join("staging"));
        let mut w = staging.create("out", "1").unwrap();
        w.write_all(b"hello").unwrap();
        assert_eq!(closed(&staging, 0), "open");
        drop(w);
        assert_eq!(closed(&staging, 0), "memory \"hello\"");
        assert!(
            !base.path().join("staging").exists(),
            "no staging directory for a small object"
        );
    }

    #[test]
    fn large_objects_spill_to_a_file_that_dropping_removes() {
        let base = tempfile::tempdir().unwrap();
        let staging = Staging::new(base.path());
        let mut w = staging.create("out", "1").unwrap();
        let chunk = vec![7u8; 1 << 20];
        for _ in 0..=(MEMORY_LIMIT >> 20) {
            w.write_all(&chunk).unwrap();
        }
        drop(w);
        assert_eq!(closed(&staging, 0), "file");
        let dir = staging.dir().unwrap().to_path_buf();
        let staged = dir.join("0.staged");
        assert_eq!(std::fs::metadata(&staged).unwrap().len(), MEMORY_LIMIT + (1 << 20));
        drop(staging);
        assert!(!dir.exists());
    }

    #[test]
    fn file_moves_what_was_written_and_keeps_the_position() {
        let base = tempfile::tempdir().unwrap();
        let staging = Staging::new(base.path());
        let mut w = staging.create("out", "1").unwrap();
        w.write_all(b"hello world").unwrap();
        w.seek(SeekFrom::Start(6)).unwrap();
        w.file().unwrap().write_all(b"there").unwrap();
        w.write_all(b"!").unwrap();
        drop(w);
        let path = staging.dir().unwrap().join("0.staged");
        assert_eq!(std::fs::read(path).unwrap(), b"hello there!");
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
        assert_eq!(staging.files.lock().unwrap().len(), 1);
        assert_eq!(closed(&staging, 0), "memory \"second\"");
    }
}
