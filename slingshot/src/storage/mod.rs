//! Object storage: the `ObjectStore` seam, the readers and writers `process` gets, and the errors it can tell apart.
//!
//! Implementations: [`dir::DirStore`] (a local directory, the embedded
//! default) and [`s3::S3Store`] (S3, e.g. Garage). Staging of `write_file`
//! output lives in [`staging`].

pub mod dir;
pub mod s3;
pub mod staging;

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use async_trait::async_trait;

/// Why an object could not be read or written.
///
/// `process` can tell a missing object apart from other failures:
///
/// ```
/// # fn f(read_file: &slingshot::ReadFileFn) -> Result<(), slingshot::AnyError> {
/// match read_file("in", 7) {
///     Ok(reader) => { /* ... */ }
///     Err(e) if e.is_not_found() => { /* skip this request */ }
///     Err(e) => return Err(e.into()),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ObjectError {
    /// The object does not exist.
    #[error("object {key:?} not found in bucket {bucket:?}")]
    NotFound {
        /// The real bucket name.
        bucket: String,
        /// The object key.
        key: String,
    },
    /// A bucket reference (`"in"`, `"out"`, ...) could not be resolved.
    #[error("bucket reference {reference:?} could not be resolved: {reason}")]
    Bucket {
        /// The reference `process` passed.
        reference: String,
        /// What the sys-map said.
        reason: String,
    },
    /// Local I/O failed (staging a file, reading the directory store).
    #[error("{op} {}: {source}", location(.bucket, .key))]
    Io {
        /// What was being done.
        op: &'static str,
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
        /// The I/O error.
        source: io::Error,
    },
    /// The storage service failed or refused.
    #[error("{op} {}: {message}", location(.bucket, .key))]
    Backend {
        /// What was being done.
        op: &'static str,
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
        /// What the service said.
        message: String,
    },
}

/// `bucket/key`, or just the bucket for bucket-level operations.
fn location(bucket: &str, key: &str) -> String {
    if key.is_empty() {
        bucket.to_string()
    } else {
        format!("{bucket}/{key}")
    }
}

impl ObjectError {
    /// Whether the object does not exist (as opposed to any other failure).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ObjectError::NotFound { .. })
    }

    /// Whether the store (or the local disk) failed, so that the same request
    /// may succeed later; a missing object or bucket reference will not.
    pub fn is_transient(&self) -> bool {
        matches!(self, ObjectError::Io { .. } | ObjectError::Backend { .. })
    }
}

/// A streaming, synchronous reader of one object, returned by `read_file`.
pub struct ObjectReader {
    inner: Box<dyn Read + Send>,
}

impl ObjectReader {
    /// Wraps any reader; object stores use this to hand out their streams.
    pub fn new(inner: impl Read + Send + 'static) -> Self {
        ObjectReader { inner: Box::new(inner) }
    }
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl std::fmt::Debug for ObjectReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ObjectReader")
    }
}

/// A local file staged for upload, returned by `write_file`. It is uploaded
/// after `process` returns successfully; close it (drop it) before returning.
#[derive(Debug)]
pub struct ObjectWriter {
    file: std::fs::File,
}

impl ObjectWriter {
    pub(crate) fn new(file: std::fs::File) -> Self {
        ObjectWriter { file }
    }

    /// The staged file itself, for APIs that want a `std::fs::File`.
    pub fn file(&self) -> &std::fs::File {
        &self.file
    }
}

impl Write for ObjectWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Seek for ObjectWriter {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.file.seek(pos)
    }
}

/// The seam to an object store (S3 in production, a directory when embedded).
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Opens `bucket/key` for streaming reads.
    async fn open(&self, bucket: &str, key: &str) -> Result<ObjectReader, ObjectError>;

    /// Uploads the local file at `path` as `bucket/key`, replacing any object
    /// there, and returns its size. Readers never see a partly written object.
    async fn put_file(&self, bucket: &str, key: &str, path: &Path) -> Result<u64, ObjectError>;

    /// Stores `bytes` as `bucket/key` (seeding inputs, tools, tests).
    async fn put_bytes(&self, bucket: &str, key: &str, bytes: Vec<u8>) -> Result<(), ObjectError> {
        let io_err = |source| ObjectError::Io {
            op: "stage",
            bucket: bucket.into(),
            key: key.into(),
            source,
        };
        let staged = tokio::task::spawn_blocking(move || -> io::Result<tempfile::NamedTempFile> {
            let mut file = tempfile::NamedTempFile::new()?;
            file.write_all(&bytes)?;
            file.flush()?;
            Ok(file)
        })
        .await
        .map_err(|e| io_err(io::Error::other(e)))?
        .map_err(io_err)?;
        self.put_file(bucket, key, staged.path()).await.map(drop)
    }

    /// One line naming the store, for logs (never credentials).
    fn describe(&self) -> String;
}
