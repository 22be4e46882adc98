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
        /// Whether the sys-map could not be reached or failed (an outage),
        /// rather than answering that there is no such reference.
        unavailable: bool,
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

    /// Whether the store (or the local disk, or the sys-map naming the
    /// bucket) failed, so that the same request may succeed later; a missing
    /// object or bucket reference will not.
    pub fn is_transient(&self) -> bool {
        match self {
            ObjectError::Bucket { unavailable, .. } => *unavailable,
            other => matches!(other, ObjectError::Io { .. } | ObjectError::Backend { .. }),
        }
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

/// An object being written, returned by `write_file`. It is uploaded after
/// `process` returns successfully; close it (drop it) before returning.
///
/// The bytes stay in memory up to [`staging::MEMORY_LIMIT`] and spill to a
/// private staged file past it, so small objects cost no disk I/O and memory
/// stays flat whatever the object's size.
pub struct ObjectWriter {
    buffer: Buffer,
    spool: staging::Spool,
}

enum Buffer {
    Memory(io::Cursor<Vec<u8>>),
    File(std::fs::File),
}

impl ObjectWriter {
    pub(crate) fn new(spool: staging::Spool) -> Self {
        ObjectWriter {
            buffer: Buffer::Memory(io::Cursor::new(Vec::new())),
            spool,
        }
    }

    /// The staged file itself, for APIs that want a `std::fs::File`: what was
    /// written so far moves to it (at the same position), and everything
    /// written from then on goes to it.
    pub fn file(&mut self) -> io::Result<&mut std::fs::File> {
        self.spill()?;
        match &mut self.buffer {
            Buffer::File(file) => Ok(file),
            Buffer::Memory(_) => unreachable!("spilled above"),
        }
    }

    /// Moves the buffered bytes to the staged file.
    fn spill(&mut self) -> io::Result<()> {
        if let Buffer::Memory(cursor) = &self.buffer {
            let mut file = self.spool.create_file()?;
            file.write_all(cursor.get_ref())?;
            file.seek(SeekFrom::Start(cursor.position()))?;
            self.buffer = Buffer::File(file);
        }
        Ok(())
    }
}

impl std::fmt::Debug for ObjectWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let place = match &self.buffer {
            Buffer::Memory(cursor) => format!("memory ({} bytes)", cursor.get_ref().len()),
            Buffer::File(_) => "staged file".to_string(),
        };
        f.debug_struct("ObjectWriter").field("buffer", &place).finish()
    }
}

impl Write for ObjectWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Buffer::Memory(cursor) = &self.buffer {
            if cursor.position().saturating_add(buf.len() as u64) > staging::MEMORY_LIMIT {
                self.spill()?;
            }
        }
        match &mut self.buffer {
            Buffer::Memory(cursor) => cursor.write(buf),
            Buffer::File(file) => file.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.buffer {
            Buffer::Memory(_) => Ok(()),
            Buffer::File(file) => file.flush(),
        }
    }
}

impl Seek for ObjectWriter {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        match &mut self.buffer {
            Buffer::Memory(cursor) => cursor.seek(pos),
            Buffer::File(file) => file.seek(pos),
        }
    }
}

impl Drop for ObjectWriter {
    /// Hands what was written to the request's staging, for the upload.
    fn drop(&mut self) {
        let buffer = std::mem::replace(&mut self.buffer, Buffer::Memory(io::Cursor::new(Vec::new())));
        self.spool.close(match buffer {
            Buffer::Memory(cursor) => staging::Closed::Memory(cursor.into_inner()),
            Buffer::File(file) => {
                drop(file);
                staging::Closed::File
            }
        });
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
