//! The embedded object store: a local directory with one sub-directory per bucket.

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::{ObjectError, ObjectReader, ObjectStore};

/// Objects stored as files: `{root}/{bucket}/{key}`. Writes go to a temporary
/// file in the bucket directory and are renamed into place, so a reader sees
/// the old object or the new one, never half of it.
#[derive(Debug, Clone)]
pub struct DirStore {
    root: PathBuf,
}

impl DirStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DirStore { root: root.into() }
    }

    /// The directory holding every bucket.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn object_path(&self, bucket: &str, key: &str) -> Result<PathBuf, ObjectError> {
        for (what, part) in [("bucket", bucket), ("key", key)] {
            if part.is_empty() || part.contains(['/', '\\']) || part == "." || part == ".." {
                return Err(ObjectError::Backend {
                    op: "resolve",
                    bucket: bucket.into(),
                    key: key.into(),
                    message: format!("{what} {part:?} cannot name a file in the directory store"),
                });
            }
        }
        Ok(self.root.join(bucket).join(key))
    }
}

#[async_trait]
impl ObjectStore for DirStore {
    async fn open(&self, bucket: &str, key: &str) -> Result<ObjectReader, ObjectError> {
        let path = self.object_path(bucket, key)?;
        match tokio::fs::File::open(&path).await {
            Ok(file) => Ok(ObjectReader::new(std::io::BufReader::new(file.into_std().await))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ObjectError::NotFound {
                bucket: bucket.into(),
                key: key.into(),
            }),
            Err(source) => Err(ObjectError::Io {
                op: "open",
                bucket: bucket.into(),
                key: key.into(),
                source,
            }),
        }
    }

    async fn put_file(&self, bucket: &str, key: &str, path: &Path) -> Result<u64, ObjectError> {
        let target = self.object_path(bucket, key)?;
        let io_err = |op, source| ObjectError::Io {
            op,
            bucket: bucket.into(),
            key: key.into(),
            source,
        };
        let dir = target.parent().unwrap_or(&self.root).to_path_buf();
        let source = path.to_path_buf();
        tokio::task::spawn_blocking(move || -> Result<u64, (&'static str, std::io::Error)> {
            std::fs::create_dir_all(&dir).map_err(|e| ("create bucket directory", e))?;
            let mut partial = tempfile::Builder::new()
                .prefix(".partial-")
                .tempfile_in(&dir)
                .map_err(|e| ("create", e))?;
            let mut input = std::fs::File::open(&source).map_err(|e| ("read staged file", e))?;
            let size = std::io::copy(&mut input, partial.as_file_mut()).map_err(|e| ("write", e))?;
            partial.as_file().sync_data().map_err(|e| ("sync", e))?;
            partial.persist(&target).map_err(|e| ("rename into place", e.error))?;
            Ok(size)
        })
        .await
        .map_err(|e| io_err("upload", std::io::Error::other(e)))?
        .map_err(|(op, e)| io_err(op, e))
    }

    fn describe(&self) -> String {
        format!("directory {}", self.root.display())
    }
}
