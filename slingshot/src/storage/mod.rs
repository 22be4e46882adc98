//! Object storage: the `ObjectStore` seam, the reader `process` gets, and the errors it can tell apart.
//!
//! Implementations: [`dir::DirStore`] (a local directory, the embedded
//! default) and [`s3::S3Store`] (S3, e.g. Garage). What `write_file` stages
//! before the upload is the executor's (`execute::staging`).

pub mod dir;
pub mod encrypt;
pub mod s3;

use std::fs::File;
use std::io::{self, Read};
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
///
/// Each error is classified where it is created, by what it is:
/// [`ObjectError::is_transient`] tells an outage (the store or the local
/// disk failed; the same request may succeed later) from a failure that
/// waiting will not fix (a refusal, a missing object or bucket, a writer left
/// open).
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
    /// Local I/O failed (staging a file, reading the directory store). An
    /// outage (a full disk, a failing device) unless the error says the
    /// operation can never succeed as it stands (see
    /// [`ObjectError::is_transient`]).
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
    /// The storage service failed or could not be reached: a 5xx answer,
    /// throttling (429, `SlowDown`), a timeout, a broken connection. An
    /// outage.
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
    /// The storage service refused the request and will refuse it again:
    /// access denied (403), a bad signature or unknown key, a missing
    /// bucket, any other 4xx answer. A failure of the request.
    #[error("{op} {}: refused: {message}", location(.bucket, .key))]
    Refused {
        /// What was being done.
        op: &'static str,
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
        /// What the service said.
        message: String,
    },
    /// A writer from `write_file` was still open when `process` returned:
    /// its object may be incomplete. A bug of the function.
    #[error(
        "the writer of {} from write_file was still open when process returned; drop it before returning",
        location(.bucket, .key)
    )]
    WriterOpen {
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
    },
    /// A typed object (`Json<T>`, `read_json`, a Python model) does not
    /// parse as, or validate as, the type `process` asked for. A failure of
    /// the request (kind `invalid-input`), dead-lettered at once.
    #[error("{} is not a valid {type_name}: {message} (at {path})", location(.bucket, .key))]
    Invalid {
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
        /// The type it should hold, as the schema names it.
        type_name: String,
        /// Where in the document: a path such as `lines[2].amount`, or `.`
        /// for the document itself.
        path: String,
        /// What is wrong there.
        message: String,
    },
    /// An object of an encrypted bucket reference could not be encrypted or
    /// decrypted: it failed its integrity check (modified, truncated,
    /// reordered), names a key ID the key ring does not hold, was written
    /// under other key material, or is plain where only encrypted objects
    /// are read. A failure of the request: waiting will not fix it. The
    /// message never holds key material.
    #[error("{op} {}: {message}", location(.bucket, .key))]
    Encryption {
        /// What was being done.
        op: &'static str,
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
        /// What failed.
        message: String,
    },
    /// A reader was used after the request that opened it had ended.
    #[error(
        "{} was opened by a request that has ended: readers work only while process runs",
        location(.bucket, .key)
    )]
    RequestEnded {
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
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
    /// Whether the object does not hold what its type says (see
    /// [`ObjectError::Invalid`]).
    pub fn is_invalid(&self) -> bool {
        matches!(self, ObjectError::Invalid { .. })
    }

    /// Whether the object does not exist (as opposed to any other failure).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ObjectError::NotFound { .. })
    }

    /// Whether the store, the local disk or the sys-map naming the bucket
    /// failed, so that the same request may succeed later (an outage,
    /// retried without using an attempt).
    ///
    /// Transient: [`ObjectError::Backend`], [`ObjectError::Io`] unless the
    /// I/O error says waiting cannot help (permission denied, a read-only
    /// file system, a file too large, a path that is not what it should
    /// be), and [`ObjectError::Bucket`] when the sys-map could not be reached
    /// or failed. Everything else — a refusal, a missing object, a bucket
    /// reference the sys-map does not know, a writer left open — is a
    /// failure of the request.
    pub fn is_transient(&self) -> bool {
        match self {
            ObjectError::Backend { .. } => true,
            ObjectError::Io { source, .. } => local_io_is_transient(source),
            ObjectError::Bucket { unavailable, .. } => *unavailable,
            ObjectError::NotFound { .. }
            | ObjectError::Refused { .. }
            | ObjectError::WriterOpen { .. }
            | ObjectError::Invalid { .. }
            | ObjectError::Encryption { .. }
            | ObjectError::RequestEnded { .. } => false,
        }
    }

    /// The `ObjectError` an I/O error of an [`ObjectReader`] carries: a
    /// download that failed midway says what failed and whether it is
    /// transient. `None` for other I/O errors.
    pub fn in_io_error(error: &io::Error) -> Option<&ObjectError> {
        error.get_ref()?.downcast_ref()
    }

    /// Whether an I/O error of a reader or writer `process` got is an
    /// outage: what the [`ObjectError`] inside says, else (local I/O) unless
    /// waiting cannot help. For bindings that classify errors themselves.
    pub fn io_error_is_transient(error: &io::Error) -> bool {
        ObjectError::in_io_error(error).map_or_else(|| local_io_is_transient(error), ObjectError::is_transient)
    }

    /// This error as an I/O error (for [`Read`] implementations), from which
    /// [`ObjectError::in_io_error`] recovers it.
    pub fn into_io_error(self) -> io::Error {
        io::Error::other(self)
    }
}

/// Whether a local I/O failure may go away by itself: a full disk or a
/// failing device may, a permission, a read-only file system or a path of the
/// wrong kind will not.
fn local_io_is_transient(error: &io::Error) -> bool {
    use io::ErrorKind::*;
    !matches!(
        error.kind(),
        PermissionDenied | ReadOnlyFilesystem | FileTooLarge | IsADirectory | NotADirectory | InvalidInput
    )
}

/// A streaming, synchronous reader of one object, returned by `read_file`.
///
/// Reading blocks the calling thread while the object's bytes arrive: read
/// it where `process` runs (a blocking thread), never from an async task of
/// the service's runtime.
pub struct ObjectReader {
    inner: Box<dyn Read + Send>,
    /// The bucket and key it reads, when the runtime opened it.
    location: Option<(String, String)>,
}

impl ObjectReader {
    /// Wraps any reader; object stores use this to hand out their streams.
    pub fn new(inner: impl Read + Send + 'static) -> Self {
        ObjectReader {
            inner: Box::new(inner),
            location: None,
        }
    }

    /// This reader, saying that it reads object `key` of `bucket`.
    pub fn with_location(mut self, bucket: impl Into<String>, key: impl Into<String>) -> Self {
        self.location = Some((bucket.into(), key.into()));
        self
    }

    /// The bucket and key it reads, when known: the runtime's `read_file`
    /// says them, for messages such as [`ObjectError::Invalid`]'s.
    pub fn location(&self) -> Option<(&str, &str)> {
        self.location
            .as_ref()
            .map(|(bucket, key)| (bucket.as_str(), key.as_str()))
    }
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }

    /// The store's own: an object held in memory is copied once, into a
    /// buffer reserved at its size (not grown read by read).
    fn read_to_end(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        self.inner.read_to_end(buf)
    }
}

impl std::fmt::Debug for ObjectReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ObjectReader")
    }
}

/// Takes an exclusive lock (`flock(2)`) on `file` without waiting:
/// `Ok(false)` if another open file holds it. The lock goes with the file,
/// and with the process however it ends.
pub(crate) fn try_lock(file: &File) -> io::Result<bool> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(std::fs::TryLockError::WouldBlock) => Ok(false),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// An upload a process started and did not finish (a multipart upload on
/// S3), recorded so that if the process dies the next start-up can abort it
/// and free what it stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingUpload {
    /// The bucket.
    pub bucket: String,
    /// The object key.
    pub key: String,
    /// The store's ID of the upload.
    pub upload_id: String,
}

impl PendingUpload {
    /// The record as a journal file holds it: three lines.
    pub fn to_record(&self) -> String {
        format!("{}\n{}\n{}\n", self.bucket, self.key, self.upload_id)
    }

    /// Reads a record written by [`PendingUpload::to_record`]; `None` if it
    /// is not one (a journal file cut short by a crash).
    pub fn from_record(text: &str) -> Option<PendingUpload> {
        let mut lines = text.split('\n');
        let (bucket, key, upload_id) = (lines.next()?, lines.next()?, lines.next()?);
        let complete = lines.next() == Some("") && lines.next().is_none();
        (complete && ![bucket, key, upload_id].contains(&"")).then(|| PendingUpload {
            bucket: bucket.into(),
            key: key.into(),
            upload_id: upload_id.into(),
        })
    }
}

/// The seam to an object store (S3 in production, a directory when embedded).
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Opens `bucket/key` for streaming reads. A download that fails midway
    /// makes `read` fail (with an [`ObjectError`] inside the I/O error, see
    /// [`ObjectError::in_io_error`]); it never looks like the end of the
    /// object.
    async fn open(&self, bucket: &str, key: &str) -> Result<ObjectReader, ObjectError>;

    /// Uploads the local file at `path` as `bucket/key`, replacing any object
    /// there, and returns its size. Readers never see a partly written object.
    /// An upload cut short (the future dropped at the shutdown deadline, an
    /// error) leaves nothing behind in the store.
    async fn put_file(&self, bucket: &str, key: &str, path: &Path) -> Result<u64, ObjectError>;

    /// Stores `bytes` as `bucket/key` (small outputs, seeding inputs, tools,
    /// tests), without staging them on disk.
    async fn put_bytes(&self, bucket: &str, key: &str, bytes: Vec<u8>) -> Result<(), ObjectError>;

    /// The keys of every object in `bucket`, in the store's order (S3:
    /// lexicographic), for tools such as `reencrypt`. Stores that cannot
    /// list answer [`ObjectError::Refused`].
    async fn list(&self, bucket: &str) -> Result<Vec<String>, ObjectError> {
        Err(ObjectError::Refused {
            op: "list",
            bucket: bucket.into(),
            key: String::new(),
            message: format!("{} cannot list its objects", self.describe()),
        })
    }

    /// Records the uploads this store starts and has not finished yet in
    /// files under `dir` (a directory this process owns and removes), so that
    /// after a crash the next start-up finds them there and aborts them with
    /// [`ObjectStore::abort_upload`]. Stores without such uploads ignore it.
    fn journal_uploads_in(&self, dir: &Path) {
        let _ = dir;
    }

    /// Aborts an upload a process that died left unfinished.
    async fn abort_upload(&self, upload: &PendingUpload) -> Result<(), ObjectError> {
        let _ = upload;
        Ok(())
    }

    /// Removes what writers of processes that died left in the store (the
    /// directory store's `.partial-*` files) and returns how many. Blocking:
    /// called once at start-up, on a blocking thread.
    fn sweep_abandoned(&self) -> Result<usize, ObjectError> {
        Ok(0)
    }

    /// One line naming the store, for logs (never credentials).
    fn describe(&self) -> String;
}
