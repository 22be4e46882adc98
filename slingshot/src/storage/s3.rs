//! The S3 object store (aws-sdk-s3): path-style addressing, streaming reads bridged to a synchronous reader, uploads after success (multipart above a threshold).

use std::io::{self, Read};
use std::path::Path;
use std::sync::mpsc;

use async_trait::async_trait;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use aws_smithy_types::error::display::DisplayErrorContext;
use futures::{StreamExt, TryStreamExt};

use super::{ObjectError, ObjectReader, ObjectStore};

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
            .field("endpoint", &crate::redact::url(&self.endpoint))
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
}

impl S3Store {
    /// A store for `config`. Checksums are computed only when an operation
    /// requires them, which S3-compatible servers such as Garage need over
    /// plain HTTP.
    pub fn new(config: &S3Config) -> Self {
        let conf = aws_sdk_s3::Config::builder()
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
            endpoint: crate::redact::url(&config.endpoint),
        }
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
            Err(e) => Err(backend("create bucket", bucket, "", e)),
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
            .map_err(|e| backend("check bucket", bucket, "", e))
    }

    async fn put_multipart(&self, bucket: &str, key: &str, path: &Path, size: u64) -> Result<(), ObjectError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| backend("start multipart upload", bucket, key, e))?;
        let Some(upload_id) = created.upload_id().map(str::to_string) else {
            return Err(ObjectError::Backend {
                op: "start multipart upload",
                bucket: bucket.into(),
                key: key.into(),
                message: "the service returned no upload ID".into(),
            });
        };
        let parts = size.div_ceil(PART_SIZE);
        let uploaded = futures::stream::iter(0..parts)
            .map(|index| {
                let upload_id = upload_id.clone();
                async move {
                    let offset = index * PART_SIZE;
                    let length = PART_SIZE.min(size - offset);
                    let body = ByteStream::read_from()
                        .path(path)
                        .offset(offset)
                        .length(Length::Exact(length))
                        .build()
                        .await
                        .map_err(|e| io_err("read staged part", bucket, key, io::Error::other(e)))?;
                    let part_number = i32::try_from(index + 1).map_err(|_| ObjectError::Backend {
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
                        .map_err(|e| backend("upload part", bucket, key, e))?;
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
                .map_err(|e| backend("complete multipart upload", bucket, key, e)),
            Err(e) => Err(e),
        };
        if completed.is_err() {
            // Free the parts already stored; the request will be retried whole.
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        completed
    }
}

fn backend<E>(op: &'static str, bucket: &str, key: &str, e: SdkError<E>) -> ObjectError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    ObjectError::Backend {
        op,
        bucket: bucket.into(),
        key: key.into(),
        message: sdk_message(&e),
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
            Some(connector) => format!("cannot reach the service: {}", crate::error::error_chain(connector)),
            None => format!("cannot reach the service: {}", DisplayErrorContext(e)),
        },
        other => DisplayErrorContext(other).to_string(),
    }
}

fn backend_io(op: &'static str, bucket: &str, key: &str, source: io::Error) -> ObjectError {
    ObjectError::Backend {
        op,
        bucket: bucket.into(),
        key: key.into(),
        message: source.to_string(),
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
            Err(e) => return Err(backend("read", bucket, key, e)),
        };
        let length = output.content_length().and_then(|l| u64::try_from(l).ok());
        let mut body = output.body;
        if length.is_some_and(|l| l <= IN_MEMORY_LIMIT) {
            let bytes = body
                .collect()
                .await
                .map_err(|e| backend_io("read", bucket, key, io::Error::other(e)))?
                .into_bytes();
            return Ok(ObjectReader::new(io::Cursor::new(bytes)));
        }
        // A task pulls the body and hands coalesced chunks to the synchronous
        // reader through a small bounded channel: memory stays flat whatever
        // the size.
        let (tx, rx) = mpsc::sync_channel(READ_AHEAD);
        tokio::spawn(async move {
            let mut pending = bytes::BytesMut::new();
            loop {
                let next = body.try_next().await;
                let (done, failed) = match next {
                    Ok(Some(chunk)) => {
                        pending.extend_from_slice(&chunk);
                        (false, None)
                    }
                    Ok(None) => (true, None),
                    Err(e) => (true, Some(io::Error::other(e))),
                };
                if (pending.len() >= CHUNK || done) && !pending.is_empty() {
                    // The reader was dropped: stop downloading.
                    if tx.send(Ok(pending.split().freeze())).is_err() {
                        return;
                    }
                }
                if let Some(e) = failed {
                    let _ = tx.send(Err(e));
                }
                if done {
                    return;
                }
            }
        });
        Ok(ObjectReader::new(ChunkReader {
            chunks: rx,
            current: bytes_empty(),
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
                return self.put_multipart(bucket, key, path, size).await.map(|()| size)
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
            .map_err(|e| backend("upload", bucket, key, e))
    }

    /// Uploads from memory in one request (through a staged file, in parts,
    /// past the multipart threshold).
    async fn put_bytes(&self, bucket: &str, key: &str, bytes: Vec<u8>) -> Result<(), ObjectError> {
        if bytes.len() as u64 > MULTIPART_THRESHOLD {
            let staged = tokio::task::spawn_blocking(move || -> io::Result<tempfile::NamedTempFile> {
                let mut file = tempfile::NamedTempFile::new()?;
                io::Write::write_all(&mut file, &bytes)?;
                Ok(file)
            })
            .await
            .map_err(|e| io_err("stage", bucket, key, io::Error::other(e)))?
            .map_err(|e| io_err("stage", bucket, key, e))?;
            return self.put_file(bucket, key, staged.path()).await.map(drop);
        }
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map(drop)
            .map_err(|e| backend("upload", bucket, key, e))
    }

    fn describe(&self) -> String {
        format!("S3 {}", self.endpoint)
    }
}

fn bytes_empty() -> bytes::Bytes {
    bytes::Bytes::new()
}

/// A synchronous reader over chunks sent by the download task.
struct ChunkReader {
    chunks: mpsc::Receiver<io::Result<bytes::Bytes>>,
    current: bytes::Bytes,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.recv() {
                Ok(Ok(chunk)) => self.current = chunk,
                Ok(Err(e)) => return Err(e),
                // The task finished: end of object.
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}
