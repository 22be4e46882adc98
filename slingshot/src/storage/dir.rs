//! The embedded object store: a local directory with one sub-directory per bucket.

use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::try_lock;
use super::{ObjectError, ObjectReader, ObjectStore};

/// Prefix of the files objects are written to before they are renamed into
/// place.
pub const PARTIAL_PREFIX: &str = ".partial-";

/// Objects stored as files: `{root}/{bucket}/{key}`. Writes go to a
/// `.partial-*` file in the bucket directory and are renamed into place, so a
/// reader sees the old object or the new one, never half of it; the partial
/// files of a writer that died are swept at the next start-up.
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

impl DirStore {
    /// Stores `bucket/key` from what `fill` writes into a partial file in the
    /// bucket directory, synced and then renamed into place. The partial
    /// file is locked (`flock(2)`) while it is written, so that
    /// [`ObjectStore::sweep_abandoned`] removes only those of writers that died.
    async fn store<F>(&self, bucket: &str, key: &str, fill: F) -> Result<u64, ObjectError>
    where
        F: FnOnce(&mut std::fs::File) -> Result<u64, (&'static str, std::io::Error)> + Send + 'static,
    {
        let target = self.object_path(bucket, key)?;
        let io_err = |op, source| ObjectError::Io {
            op,
            bucket: bucket.into(),
            key: key.into(),
            source,
        };
        let dir = target.parent().unwrap_or(&self.root).to_path_buf();
        tokio::task::spawn_blocking(move || -> Result<u64, (&'static str, std::io::Error)> {
            std::fs::create_dir_all(&dir).map_err(|e| ("create bucket directory", e))?;
            let mut partial = tempfile::Builder::new()
                .prefix(PARTIAL_PREFIX)
                .tempfile_in(&dir)
                .map_err(|e| ("create", e))?;
            // A sweep that took the fresh file before this lock removed it:
            // the rename below then fails, and the request is retried.
            try_lock(partial.as_file()).map_err(|e| ("lock", e))?;
            let size = fill(partial.as_file_mut())?;
            partial.as_file().sync_data().map_err(|e| ("sync", e))?;
            partial.persist(&target).map_err(|e| ("rename into place", e.error))?;
            Ok(size)
        })
        .await
        .map_err(|e| io_err("upload", std::io::Error::other(e)))?
        .map_err(|(op, e)| io_err(op, e))
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
        let source = path.to_path_buf();
        self.store(bucket, key, move |partial| {
            let mut input = std::fs::File::open(&source).map_err(|e| ("read staged file", e))?;
            std::io::copy(&mut input, partial).map_err(|e| ("write", e))
        })
        .await
    }

    /// Writes the bytes straight into the bucket directory (through a
    /// partial file, like [`DirStore::put_file`]): nothing is staged.
    async fn put_bytes(&self, bucket: &str, key: &str, bytes: Vec<u8>) -> Result<(), ObjectError> {
        self.store(bucket, key, move |partial| {
            partial.write_all(&bytes).map_err(|e| ("write", e))?;
            Ok(bytes.len() as u64)
        })
        .await
        .map(drop)
    }

    /// The files of the bucket directory, sorted, without partial files; an
    /// empty list if the directory does not exist.
    async fn list(&self, bucket: &str) -> Result<Vec<String>, ObjectError> {
        let dir = self.root.join(bucket);
        let listed = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<String>> {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(e),
            };
            let mut keys = Vec::new();
            for entry in entries {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if entry.file_type()?.is_file() && !name.starts_with(PARTIAL_PREFIX) {
                    keys.push(name);
                }
            }
            keys.sort_unstable();
            Ok(keys)
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
        listed.map_err(|source| ObjectError::Io {
            op: "list",
            bucket: bucket.into(),
            key: String::new(),
            source,
        })
    }

    /// Removes the `.partial-*` files of writers that died (no process holds
    /// their lock) from every bucket directory.
    fn sweep_abandoned(&self) -> Result<usize, ObjectError> {
        let io_err = |bucket: &str, source| ObjectError::Io {
            op: "sweep partial files",
            bucket: bucket.into(),
            key: String::new(),
            source,
        };
        let buckets = match std::fs::read_dir(&self.root) {
            Ok(buckets) => buckets,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io_err("", e)),
        };
        let mut swept = 0;
        for bucket in buckets.flatten() {
            if !bucket.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = bucket.file_name().to_string_lossy().into_owned();
            let entries = std::fs::read_dir(bucket.path()).map_err(|e| io_err(&name, e))?;
            for entry in entries.flatten() {
                if !entry.file_name().to_string_lossy().starts_with(PARTIAL_PREFIX) {
                    continue;
                }
                // Held: a live writer is filling it. Gone: swept meanwhile.
                let Ok(file) = std::fs::File::open(entry.path()) else {
                    continue;
                };
                if !matches!(try_lock(&file), Ok(true)) {
                    continue;
                }
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => swept += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err(&name, e)),
                }
            }
        }
        Ok(swept)
    }

    fn describe(&self) -> String {
        format!("directory {}", self.root.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[tokio::test]
    async fn put_bytes_writes_into_the_bucket_directory_and_leaves_no_partial_file() {
        let root = tempfile::tempdir().unwrap();
        let store = DirStore::new(root.path());
        store.put_bytes("b", "1", b"hello".to_vec()).await.unwrap();
        let mut text = String::new();
        store.open("b", "1").await.unwrap().read_to_string(&mut text).unwrap();
        assert_eq!(text, "hello");
        let names: Vec<_> = std::fs::read_dir(root.path().join("b"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["1"]);
        store.put_bytes("b", "10", b"x".to_vec()).await.unwrap();
        std::fs::write(root.path().join("b").join(".partial-x"), b"half").unwrap();
        assert_eq!(store.list("b").await.unwrap(), ["1", "10"]);
        assert!(store.list("none").await.unwrap().is_empty());
    }

    #[test]
    fn the_sweep_removes_partial_files_nobody_writes_and_keeps_the_rest() {
        let root = tempfile::tempdir().unwrap();
        let bucket = root.path().join("b");
        std::fs::create_dir_all(&bucket).unwrap();
        // Left by a writer that died: nobody holds it.
        std::fs::write(bucket.join(".partial-dead"), b"half").unwrap();
        // Being written: its writer holds the lock.
        let live = bucket.join(".partial-live");
        let writer = std::fs::File::create(&live).unwrap();
        assert!(try_lock(&writer).unwrap());
        std::fs::write(bucket.join("7"), b"an object").unwrap();
        let store = DirStore::new(root.path());
        assert_eq!(store.sweep_abandoned().unwrap(), 1);
        assert!(!bucket.join(".partial-dead").exists());
        assert!(live.exists() && bucket.join("7").exists());
        assert_eq!(DirStore::new(root.path().join("none")).sweep_abandoned().unwrap(), 0);
    }
}
