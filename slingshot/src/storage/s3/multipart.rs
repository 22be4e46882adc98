//! Multipart uploads: parts uploaded a few at a time, the upload recorded
//! while it runs so a crash can be cleaned up, and aborted when it fails or is
//! cut short.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use futures::{StreamExt, TryStreamExt};

use super::answers::{classify, io_err};
use super::{staged_body, S3Store, PART_CONCURRENCY, PART_SIZE};

/// Numbers the journal records of this process's uploads.
static RECORDS: AtomicU64 = AtomicU64::new(0);
use crate::storage::{ObjectError, PendingUpload};

impl S3Store {
    /// Uploads `size` bytes from `source` in parts. The upload is recorded
    /// in the journal while it runs, and aborted if it fails or its future is
    /// dropped (the shutdown deadline), so that no stored parts are left.
    pub(super) async fn put_multipart(
        &self,
        bucket: &str,
        key: &str,
        source: Source<'_>,
        size: u64,
    ) -> Result<(), ObjectError> {
        let mut guard = self.start(bucket, key).await?;
        let upload_id = guard.upload.as_ref().map(|u| u.upload_id.clone()).unwrap_or_default();
        let parts = size.div_ceil(PART_SIZE);
        let uploaded = futures::stream::iter(0..parts)
            .map(|index| {
                let (upload_id, source) = (upload_id.clone(), &source);
                async move {
                    let offset = index * PART_SIZE;
                    let length = PART_SIZE.min(size - offset);
                    let body = match source {
                        Source::File(path) => staged_body(path, offset, length)
                            .await
                            .map_err(|e| io_err("read staged part", bucket, key, e))?,
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

    /// Starts a multipart upload and records it. The start runs on a task of
    /// its own: a caller dropped while the start is on the wire (after the
    /// service created the upload, before its ID came back) leaves the task to
    /// finish, and the guard it returns, dropped unclaimed with its output,
    /// aborts the upload.
    async fn start(&self, bucket: &str, key: &str) -> Result<AbortOnDrop, ObjectError> {
        let store = self.clone();
        let (bucket, key) = (bucket.to_string(), key.to_string());
        let failed = (bucket.clone(), key.clone());
        let starting = tokio::spawn(async move {
            let created = store
                .client
                .create_multipart_upload()
                .bucket(&bucket)
                .key(&key)
                .send()
                .await
                .map_err(|e| classify("start multipart upload", &bucket, &key, e))?;
            let Some(upload_id) = created.upload_id().map(str::to_string) else {
                return Err(ObjectError::Backend {
                    op: "start multipart upload",
                    bucket,
                    key,
                    message: "the service returned no upload ID".into(),
                });
            };
            let upload = PendingUpload { bucket, key, upload_id };
            let record = store.record(&upload).await;
            Ok(AbortOnDrop {
                client: store.client.clone(),
                upload: Some(upload),
                record,
            })
        });
        starting.await.unwrap_or_else(|e| {
            Err(ObjectError::Backend {
                op: "start multipart upload",
                bucket: failed.0,
                key: failed.1,
                message: format!("the task starting the upload ended without an answer: {e}"),
            })
        })
    }

    /// Records `upload` in the journal, if there is one, and returns the
    /// record's path. A record that cannot be written is logged: the upload
    /// goes on, only a crash would leave it behind.
    pub(super) async fn record(&self, upload: &PendingUpload) -> Option<PathBuf> {
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
pub(super) enum Source<'a> {
    /// A staged file.
    File(&'a Path),
    /// Bytes in memory.
    Memory(bytes::Bytes),
}

/// A multipart upload in progress: aborted (on a task of its own) if it is
/// dropped before it finished, as when the shutdown deadline drops the
/// request's future.
pub(super) struct AbortOnDrop {
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
pub(super) async fn abort(client: &Client, upload: &PendingUpload, record: Option<PathBuf>) {
    match abort_multipart(client, upload).await {
        Ok(()) => forget(record).await,
        Err(e) => tracing::warn!(upload_id = %upload.upload_id, error = %e,
            "cannot abort an unfinished multipart upload; the next start-up tries again"),
    }
}

/// Aborts `upload`, freeing its parts; one that is gone already (completed
/// or aborted) leaves nothing to free.
pub(super) async fn abort_multipart(client: &Client, upload: &PendingUpload) -> Result<(), ObjectError> {
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
pub(super) async fn forget(record: Option<PathBuf>) {
    if let Some(path) = record {
        if let Err(e) = tokio::fs::remove_file(&path).await {
            tracing::debug!(record = %path.display(), error = %e, "cannot remove an upload record");
        }
    }
}
