//! The S3 object store (aws-sdk-s3): path-style addressing, every wait bounded, uploads after success.
//!
//! Errors are classified where they are created, as outages or refusals
//! (`answers`); reads stream through a bounded channel to a synchronous
//! reader (`download`); large uploads go in parts, aborted when cut short
//! (`multipart`).

mod answers;
mod download;
mod multipart;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use tokio::sync::mpsc;

use self::answers::{broken_download, classify, io_err};
use self::download::{next_piece, ChunkReader, Piece};
use self::multipart::{abort_multipart, Source};
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

/// The body of an upload from a staged file: `length` bytes from `offset`,
/// read in [`CHUNK`]s. The SDK's default reads 4 KiB at a time, each a trip
/// to the blocking pool: 262,144 trips for 1 GiB, which grew the pool to
/// 64 to 114 threads (each with its stack and allocator arena) during one
/// 1 GiB copy.
async fn staged_body(path: &Path, offset: u64, length: u64) -> io::Result<ByteStream> {
    ByteStream::read_from()
        .path(path)
        .offset(offset)
        .length(aws_sdk_s3::primitives::Length::Exact(length))
        .buffer_size(CHUNK)
        .build()
        .await
        .map_err(io::Error::other)
}

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
            (size, None) => staged_body(path, 0, size)
                .await
                .map_err(|e| io_err("read staged file", bucket, key, e))?,
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

    /// ListObjectsV2, a page (up to 1000 keys) at a time.
    async fn list(&self, bucket: &str) -> Result<Vec<String>, ObjectError> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(bucket)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| classify("list", bucket, "", e))?;
            keys.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_string)));
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_string()),
                _ => return Ok(keys),
            }
        }
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
