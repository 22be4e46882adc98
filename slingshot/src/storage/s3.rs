//! The S3 object store (aws-sdk-s3): path-style addressing, every wait bounded, errors classified as outages or refusals, streaming reads bridged to a synchronous reader, uploads after success (multipart above a threshold, aborted when cut short).

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use aws_smithy_types::error::display::DisplayErrorContext;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::mpsc;

use super::{ObjectError, ObjectReader, ObjectStore, PendingUpload};

/// Files larger than this are uploaded in parts.
pub const MULTIPART_THRESHOLD: u64 = 16 * 1024 * 1024;
/// Size of each part of a multipart upload (S3's minimum is 5 MiB).
pub const PART_SIZE: u64 = 16 * 1024 * 1024;
/// Parts uploaded at the same time.
const PART_CONCURRENCY: usize = 4;
/// Objects up to this size are read or uploaded in one piece from memory;
/// larger ones stream, so memory stays flat whatever their size.
pub const IN_MEMORY_LIMIT: u64 = 4 * 1024 * 1024;
/// Chunks a streaming reader may have buffered ahead of `read`.
const READ_AHEAD: usize = 4;
/// Network chunks are coalesced up to this size before crossing to the
/// reader's thread: one hand-off per 256 KiB instead of one per packet.
const CHUNK: usize = 256 * 1024;

/// How long S3 calls may wait. A wait that runs out is an outage: the
/// request is retried, nothing is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct S3Timeouts {
    /// Establishing a connection.
    pub connect: Duration,
    /// From sending a request, its body included (a part of an upload; four
    /// go at a time), to the first byte of the answer; also the longest pause
    /// in the body of a download.
    pub read: Duration,
    /// One HTTP attempt as a whole.
    pub attempt: Duration,
    /// One operation, the SDK's own retries of its attempts included.
    pub operation: Duration,
}

impl Default for S3Timeouts {
    /// 10 s to connect, 60 s to read, 120 s an attempt, 300 s an operation
    /// (the defaults of the `SLINGSHOT_S3_*_TIMEOUT_SECS` settings).
    fn default() -> Self {
        S3Timeouts {
            connect: Duration::from_secs(10),
            read: Duration::from_secs(60),
            attempt: Duration::from_secs(120),
            operation: Duration::from_secs(300),
        }
    }
}

/// Where and how to reach an S3 service.
#[derive(Clone)]
pub struct S3Config {
    /// Endpoint URL with scheme, e.g. `http://127.0.0.1:3900`.
    pub endpoint: String,
    /// Region (Garage's is `garage`).
    pub region: String,
    /// Access key ID.
    pub access_key: String,
    /// Secret key.
    pub secret_key: String,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &crate::base::redact::url(&self.endpoint))
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// An S3 bucket store.
#[derive(Clone, Debug)]
pub struct S3Store {
    client: Client,
    /// The endpoint as it may be shown (credentials redacted).
    endpoint: String,
    timeouts: S3Timeouts,
    /// Where unfinished multipart uploads are recorded, if anywhere.
    journal: Arc<OnceLock<PathBuf>>,
}

/// Names of the upload records this process writes.
static RECORDS: AtomicU64 = AtomicU64::new(0);

impl S3Store {
    /// A store for `config` with the default [`S3Timeouts`].
    pub fn new(config: &S3Config) -> Self {
        Self::with_timeouts(config, S3Timeouts::default())
    }

    /// A store for `config` whose calls wait at most as long as `timeouts`
    /// say. Checksums are computed only when an operation requires them,
    /// which S3-compatible servers such as Garage need over plain HTTP.
    pub fn with_timeouts(config: &S3Config, timeouts: S3Timeouts) -> Self {
        let conf = aws_sdk_s3::Config::builder()
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(timeouts.connect)
                    .read_timeout(timeouts.read)
                    .operation_attempt_timeout(timeouts.attempt)
                    .operation_timeout(timeouts.operation)
                    .build(),
            )
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .endpoint_url(config.endpoint.clone())
            .credentials_provider(Credentials::new(
                config.access_key.clone(),
                config.secret_key.clone(),
                None,
                None,
                "slingshot-sys-map",
            ))
            .force_path_style(true)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        S3Store {
            client: Client::from_conf(conf),
            endpoint: crate::base::redact::url(&config.endpoint),
            timeouts,
            journal: Arc::default(),
        }
    }

    /// The timeouts its calls run under.
    pub fn timeouts(&self) -> S3Timeouts {
        self.timeouts
    }

    /// The SDK client, for operations beyond the seam (tools, tests).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Creates `bucket` if it does not exist (tools and tests; services expect their buckets).
    pub async fn create_bucket(&self, bucket: &str) -> Result<(), ObjectError> {
        match self.client.create_bucket().bucket(bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_bucket_already_owned_by_you()) => Ok(()),
            Err(e) => Err(classify("create bucket", bucket, "", e)),
        }
    }

    /// Checks that `bucket` exists and the credentials may use it.
    pub async fn check_bucket(&self, bucket: &str) -> Result<(), ObjectError> {
        self.client
            .head_bucket()
            .bucket(bucket)
            .send()
            .await
            .map(drop)
            .map_err(|e| classify("check bucket", bucket, "", e))
    }

    /// Uploads `size` bytes from `source` in parts. The upload is recorded
    /// in the journal while it runs, and aborted if it fails or its future is
    /// dropped (the shutdown deadline), so that no stored parts are left.
    async fn put_multipart(&self, bucket: &str, key: &str, source: Source<'_>, size: u64) -> Result<(), ObjectError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| classify("start multipart upload", bucket, key, e))?;
        let Some(upload_id) = created.upload_id().map(str::to_string) else {
            return Err(ObjectError::Backend {
                op: "start multipart upload",
                bucket: bucket.into(),
                key: key.into(),
                message: "the service returned no upload ID".into(),
            });
        };
        let pending = PendingUpload {
            bucket: bucket.into(),
            key: key.into(),
            upload_id,
        };
        let record = self.record(&pending).await;
        let mut guard = AbortOnDrop {
            client: self.client.clone(),
            upload: Some(pending),
            record,
        };
        let upload_id = guard.upload.as_ref().map(|u| u.upload_id.clone()).unwrap_or_default();
        let parts = size.div_ceil(PART_SIZE);
        let uploaded = futures::stream::iter(0..parts)
            .map(|index| {
                let (upload_id, source) = (upload_id.clone(), &source);
                async move {
                    let offset = index * PART_SIZE;
                    let length = PART_SIZE.min(size - offset);
                    let body = match source {
                        Source::File(path) => ByteStream::read_from()
                            .path(path)
                            .offset(offset)
                            .length(Length::Exact(length))
                            .build()
                            .await
                            .map_err(|e| io_err("read staged part", bucket, key, io::Error::other(e)))?,
                        Source::Memory(bytes) => {
                            let range = usize::try_from(offset).unwrap_or(usize::MAX)
                                ..usize::try_from(offset + length).unwrap_or(usize::MAX);
                            ByteStream::from(bytes.slice(range))
                        }
                    };
                    let part_number = i32::try_from(index + 1).map_err(|_| ObjectError::Refused {
                        op: "upload part",
                        bucket: bucket.into(),
                        key: key.into(),
                        message: "more than 2^31 parts".into(),
                    })?;
                    let part = self
                        .client
                        .upload_part()
                        .bucket(bucket)
                        .key(key)
                        .upload_id(&upload_id)
                        .part_number(part_number)
                        .body(body)
                        .send()
                        .await
                        .map_err(|e| classify("upload part", bucket, key, e))?;
                    Ok::<_, ObjectError>(
                        CompletedPart::builder()
                            .part_number(part_number)
                            .set_e_tag(part.e_tag().map(str::to_string))
                            .build(),
                    )
                }
            })
            .buffered(PART_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await;
        let completed = match uploaded {
            Ok(parts) => self
                .client
                .complete_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
                .send()
                .await
                .map(drop)
                .map_err(|e| classify("complete multipart upload", bucket, key, e)),
            Err(e) => Err(e),
        };
        match &completed {
            Ok(()) => guard.finished().await,
            // Free the parts already stored; the request will be retried whole.
            Err(_) => guard.abort().await,
        }
        completed
    }

    /// Records `upload` in the journal, if there is one, and returns the
    /// record's path. A record that cannot be written is logged: the upload
    /// goes on, only a crash would leave it behind.
    async fn record(&self, upload: &PendingUpload) -> Option<PathBuf> {
        let dir = self.journal.get()?.clone();
        let path = dir.join(format!("{}.upload", RECORDS.fetch_add(1, Ordering::Relaxed)));
        let written = async {
            match tokio::fs::create_dir(&dir).await {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                _ => {}
            }
            tokio::fs::write(&path, upload.to_record()).await
        }
        .await;
        match written {
            Ok(()) => Some(path),
            Err(e) => {
                tracing::warn!(journal = %dir.display(), error = %e, bucket = %upload.bucket, key = %upload.key,
                    "cannot record the multipart upload; a crash during it would leave its parts on the store");
                None
            }
        }
    }
}

/// Where the parts of a multipart upload come from.
enum Source<'a> {
    /// A staged file.
    File(&'a Path),
    /// Bytes in memory.
    Memory(bytes::Bytes),
}

/// A multipart upload in progress: aborted (on a task of its own) if it is
/// dropped before it finished, as when the shutdown deadline drops the
/// request's future.
struct AbortOnDrop {
    client: Client,
    upload: Option<PendingUpload>,
    /// Its record in the journal, removed once it finished or was aborted.
    record: Option<PathBuf>,
}

impl AbortOnDrop {
    /// The upload completed.
    async fn finished(&mut self) {
        self.upload = None;
        forget(self.record.take()).await;
    }

    /// Aborts the upload now.
    async fn abort(&mut self) {
        if let Some(upload) = self.upload.take() {
            abort(&self.client, &upload, self.record.take()).await;
        }
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        let Some(upload) = self.upload.take() else { return };
        let (client, record) = (self.client.clone(), self.record.take());
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { abort(&client, &upload, record).await });
            }
            // No runtime to abort it on: the record stays for the next
            // start-up's sweep.
            Err(_) => tracing::warn!(bucket = %upload.bucket, key = %upload.key, upload_id = %upload.upload_id,
                "a multipart upload was cut short outside the runtime; the next start-up aborts it"),
        }
    }
}

/// Aborts `upload`, then removes its record; a failed abort keeps the record
/// for the next start-up.
async fn abort(client: &Client, upload: &PendingUpload, record: Option<PathBuf>) {
    match abort_multipart(client, upload).await {
        Ok(()) => forget(record).await,
        Err(e) => tracing::warn!(upload_id = %upload.upload_id, error = %e,
            "cannot abort an unfinished multipart upload; the next start-up tries again"),
    }
}

/// Aborts `upload`, freeing its parts; one that is gone already (completed
/// or aborted) leaves nothing to free.
async fn abort_multipart(client: &Client, upload: &PendingUpload) -> Result<(), ObjectError> {
    let aborted = client
        .abort_multipart_upload()
        .bucket(&upload.bucket)
        .key(&upload.key)
        .upload_id(&upload.upload_id)
        .send()
        .await;
    match aborted {
        Ok(_) => Ok(()),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_upload()) => Ok(()),
        Err(e) => Err(classify("abort multipart upload", &upload.bucket, &upload.key, e)),
    }
}

/// Removes an upload record.
async fn forget(record: Option<PathBuf>) {
    if let Some(path) = record {
        if let Err(e) = tokio::fs::remove_file(&path).await {
            tracing::debug!(record = %path.display(), error = %e, "cannot remove an upload record");
        }
    }
}

/// Whether an error answer of the service is an outage: a server error,
/// throttling, a request that timed out on the server's side. Anything else
/// it answered (403, 404, 400, ...) it will answer again.
fn answer_is_transient(status: u16, code: Option<&str>) -> bool {
    let transient_code = matches!(
        code,
        Some(
            "SlowDown"
                | "Throttling"
                | "ThrottlingException"
                | "TooManyRequests"
                | "RequestTimeout"
                | "InternalError"
                | "ServiceUnavailable"
                | "OperationAborted"
        )
    );
    transient_code || status >= 500 || status == 429 || status == 408
}

/// An SDK error as an [`ObjectError`], classified by what it is: the
/// service unreachable, too slow, failing or throttling is an outage
/// ([`ObjectError::Backend`]); a refusal it will repeat (access denied, a bad
/// signature or key, a missing bucket, any other 4xx) or a request that
/// cannot be built is [`ObjectError::Refused`].
fn classify<E>(op: &'static str, bucket: &str, key: &str, e: SdkError<E>) -> ObjectError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let transient = match &e {
        SdkError::ServiceError(service) => answer_is_transient(service.raw().status().as_u16(), service.err().code()),
        SdkError::ConstructionFailure(_) => false,
        SdkError::DispatchFailure(failure) => !failure.is_user(),
        // Timeouts, unreadable answers, and whatever else the SDK may add.
        _ => true,
    };
    let (bucket, key, message) = (bucket.to_string(), key.to_string(), sdk_message(&e));
    if transient {
        ObjectError::Backend {
            op,
            bucket,
            key,
            message,
        }
    } else {
        ObjectError::Refused {
            op,
            bucket,
            key,
            message,
        }
    }
}

/// One line for an SDK error: the service's code, message and HTTP status,
/// or why the service could not be reached.
fn sdk_message<E>(e: &SdkError<E>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match e {
        SdkError::ServiceError(service) => {
            let err = service.err();
            let status = service.raw().status().as_u16();
            match (err.code(), err.message()) {
                (Some(code), Some(message)) => format!("{code}: {message} (HTTP {status})"),
                (Some(code), None) => format!("{code} (HTTP {status})"),
                _ => format!("HTTP {status}"),
            }
        }
        SdkError::TimeoutError(_) => "the request timed out".into(),
        SdkError::DispatchFailure(failure) => match failure.as_connector_error() {
            Some(connector) => format!(
                "cannot reach the service: {}",
                crate::base::chain::error_chain(connector)
            ),
            None => format!("cannot reach the service: {}", DisplayErrorContext(e)),
        },
        other => DisplayErrorContext(other).to_string(),
    }
}

fn io_err(op: &'static str, bucket: &str, key: &str, source: io::Error) -> ObjectError {
    ObjectError::Io {
        op,
        bucket: bucket.into(),
        key: key.into(),
        source,
    }
}

/// A download that failed midway: an outage.
fn broken_download(bucket: &str, key: &str, message: String) -> ObjectError {
    ObjectError::Backend {
        op: "read",
        bucket: bucket.into(),
        key: key.into(),
        message,
    }
}

/// The next piece of a download's body, waiting at most `idle` for it.
async fn next_piece(body: &mut ByteStream, idle: Duration) -> Result<Option<bytes::Bytes>, String> {
    match tokio::time::timeout(idle, body.try_next()).await {
        Ok(Ok(piece)) => Ok(piece),
        Ok(Err(e)) => Err(format!("the download broke off: {}", DisplayErrorContext(e))),
        Err(_) => Err(format!("the download stalled: no data for {idle:?}")),
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn open(&self, bucket: &str, key: &str) -> Result<ObjectReader, ObjectError> {
        let output = match self.client.get_object().bucket(bucket).key(key).send().await {
            Ok(output) => output,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                return Err(ObjectError::NotFound {
                    bucket: bucket.into(),
                    key: key.into(),
                })
            }
            Err(e) => return Err(classify("read", bucket, key, e)),
        };
        let idle = self.timeouts.read;
        let length = output.content_length().and_then(|l| u64::try_from(l).ok());
        let mut body = output.body;
        if let Some(length) = length.filter(|&l| l <= IN_MEMORY_LIMIT) {
            let mut bytes = bytes::BytesMut::with_capacity(usize::try_from(length).unwrap_or(0));
            while let Some(piece) = next_piece(&mut body, idle)
                .await
                .map_err(|message| broken_download(bucket, key, message))?
            {
                bytes.extend_from_slice(&piece);
            }
            return Ok(ObjectReader::new(io::Cursor::new(bytes.freeze())));
        }
        // A task pulls the body and hands coalesced chunks to the synchronous
        // reader through a small bounded channel: memory stays flat whatever
        // the size. The task waits for room asynchronously (never blocking a
        // runtime thread) and stops when the reader is dropped; the reader
        // sees the end of the object only when the task reached it.
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        let (b, k) = (bucket.to_string(), key.to_string());
        tokio::spawn(async move {
            let mut pending = bytes::BytesMut::new();
            loop {
                let next = tokio::select! {
                    biased;
                    // The reader was dropped: stop downloading.
                    () = tx.closed() => return,
                    next = next_piece(&mut body, idle) => next,
                };
                let (done, failed) = match next {
                    Ok(Some(chunk)) => {
                        pending.extend_from_slice(&chunk);
                        (false, None)
                    }
                    Ok(None) => (true, None),
                    Err(message) => (true, Some(message)),
                };
                if (pending.len() >= CHUNK || done)
                    && !pending.is_empty()
                    && tx.send(Ok(Piece::Data(pending.split().freeze()))).await.is_err()
                {
                    return;
                }
                if let Some(message) = failed {
                    let _ = tx.send(Err(broken_download(&b, &k, message))).await;
                    return;
                }
                if done {
                    let _ = tx.send(Ok(Piece::End)).await;
                    return;
                }
            }
        });
        Ok(ObjectReader::new(ChunkReader {
            chunks: rx,
            current: bytes::Bytes::new(),
            ended: false,
            bucket: bucket.into(),
            key: key.into(),
        }))
    }

    async fn put_file(&self, bucket: &str, key: &str, path: &Path) -> Result<u64, ObjectError> {
        // One trip to the blocking pool: the size, and the bytes themselves
        // when the file is small enough to upload from memory.
        let file = path.to_path_buf();
        let staged = tokio::task::spawn_blocking(move || -> io::Result<(u64, Option<Vec<u8>>)> {
            let size = std::fs::metadata(&file)?.len();
            let bytes = if size <= IN_MEMORY_LIMIT {
                Some(std::fs::read(&file)?)
            } else {
                None
            };
            Ok((size, bytes))
        })
        .await
        .map_err(|e| io_err("read staged file", bucket, key, io::Error::other(e)))?
        .map_err(|e| io_err("read staged file", bucket, key, e))?;
        let staged_size = staged.0;
        let body = match staged {
            (size, _) if size > MULTIPART_THRESHOLD => {
                return self
                    .put_multipart(bucket, key, Source::File(path), size)
                    .await
                    .map(|()| size)
            }
            (_, Some(bytes)) => ByteStream::from(bytes),
            (_, None) => ByteStream::from_path(path)
                .await
                .map_err(|e| io_err("read staged file", bucket, key, io::Error::other(e)))?,
        };
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(body)
            .send()
            .await
            .map(|_| staged_size)
            .map_err(|e| classify("upload", bucket, key, e))
    }

    /// Uploads from memory: in one request, or in parts past the multipart
    /// threshold. Nothing is staged on disk.
    async fn put_bytes(&self, bucket: &str, key: &str, bytes: Vec<u8>) -> Result<(), ObjectError> {
        let size = bytes.len() as u64;
        if size > MULTIPART_THRESHOLD {
            return self
                .put_multipart(bucket, key, Source::Memory(bytes::Bytes::from(bytes)), size)
                .await;
        }
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map(drop)
            .map_err(|e| classify("upload", bucket, key, e))
    }

    fn journal_uploads_in(&self, dir: &Path) {
        // The first directory given stays: services of one process share
        // the store, and any directory the process owns will do.
        let _ = self.journal.set(dir.to_path_buf());
    }

    async fn abort_upload(&self, upload: &PendingUpload) -> Result<(), ObjectError> {
        abort_multipart(&self.client, upload).await
    }

    fn describe(&self) -> String {
        format!("S3 {}", self.endpoint)
    }
}

/// What the download task hands the reader.
enum Piece {
    /// The next bytes of the object.
    Data(bytes::Bytes),
    /// The object ended here.
    End,
}

/// A synchronous reader over chunks sent by the download task.
struct ChunkReader {
    chunks: mpsc::Receiver<Result<Piece, ObjectError>>,
    current: bytes::Bytes,
    ended: bool,
    bucket: String,
    key: String,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.current.is_empty() {
            if self.ended {
                return Ok(0);
            }
            // Waits on this (blocking) thread; `futures`' executor rather than
            // `blocking_recv`, which panics inside a runtime (an `async fn
            // process` runs in one on its blocking thread).
            match futures::executor::block_on(self.chunks.recv()) {
                Some(Ok(Piece::Data(chunk))) => self.current = chunk,
                Some(Ok(Piece::End)) => self.ended = true,
                Some(Err(e)) => return Err(e.into_io_error()),
                // The task went away without reaching the end (the runtime
                // shut down, the task panicked): never a clean end of object.
                None => {
                    return Err(broken_download(
                        &self.bucket,
                        &self.key,
                        "the download stopped before the end of the object".into(),
                    )
                    .into_io_error())
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(pieces: Vec<Result<Piece, ObjectError>>) -> ChunkReader {
        let (tx, rx) = mpsc::channel(pieces.len().max(1));
        for piece in pieces {
            tx.try_send(piece)
                .unwrap_or_else(|_| unreachable!("room for every piece"));
        }
        ChunkReader {
            chunks: rx,
            current: bytes::Bytes::new(),
            ended: false,
            bucket: "b".into(),
            key: "1".into(),
        }
    }

    fn data(text: &str) -> Result<Piece, ObjectError> {
        Ok(Piece::Data(bytes::Bytes::copy_from_slice(text.as_bytes())))
    }

    #[test]
    fn a_download_that_reached_the_end_reads_to_a_clean_end() {
        let mut r = reader(vec![data("hello "), data("world"), Ok(Piece::End)]);
        let mut text = String::new();
        r.read_to_string(&mut text).unwrap();
        assert_eq!(text, "hello world");
        assert_eq!(r.read(&mut [0u8; 4]).unwrap(), 0, "and stays at the end");
    }

    #[test]
    fn a_download_that_vanished_is_an_error_never_the_end() {
        let mut r = reader(vec![data("hello")]);
        let mut text = String::new();
        let e = r.read_to_string(&mut text).unwrap_err();
        assert_eq!(text, "hello");
        let object = ObjectError::in_io_error(&e).expect("an ObjectError inside");
        assert!(object.is_transient(), "{object}");
        assert!(e.to_string().contains("stopped before the end"), "{e}");
    }

    #[test]
    fn a_download_that_broke_off_is_a_transient_error_after_its_data() {
        let failed = Err(broken_download("b", "1", "connection reset".into()));
        let mut r = reader(vec![data("hel"), failed]);
        let mut buf = [0u8; 8];
        assert_eq!(r.read(&mut buf).unwrap(), 3);
        let e = r.read(&mut buf).unwrap_err();
        assert!(
            ObjectError::in_io_error(&e).is_some_and(ObjectError::is_transient),
            "{e}"
        );
        assert!(r.read(&mut buf).is_err(), "still an error, not an end");
    }

    #[test]
    fn answers_are_outages_or_refusals_by_what_they_are() {
        for (status, code) in [
            (500, Some("InternalError")),
            (503, Some("SlowDown")),
            (503, None),
            (429, None),
            (400, Some("RequestTimeout")),
            (409, Some("OperationAborted")),
        ] {
            assert!(answer_is_transient(status, code), "{status} {code:?} is an outage");
        }
        for (status, code) in [
            (403, Some("AccessDenied")),
            (403, Some("InvalidAccessKeyId")),
            (403, Some("SignatureDoesNotMatch")),
            (404, Some("NoSuchBucket")),
            (400, Some("InvalidArgument")),
            (400, None),
            (301, Some("PermanentRedirect")),
        ] {
            assert!(!answer_is_transient(status, code), "{status} {code:?} is a refusal");
        }
    }
}
