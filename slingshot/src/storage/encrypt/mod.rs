//! Client-side encryption of objects: key rings, and [`EncryptedStore`], a
//! decorator over any [`ObjectStore`] that encrypts the objects of the
//! buckets it has a key ring for and decrypts them as they are read.
//!
//! The format is in [`format`]. This module never sees a sys-map or a secret
//! reference: the runtime resolves those and hands it keys.

pub mod format;

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

use self::format::{EncryptWriter, FormatError, MasterKey, Segments, Start};
use super::{ObjectError, ObjectReader, ObjectStore, PendingUpload};

/// What reading a plain (unencrypted) object through an encrypted bucket
/// does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PlainObjects {
    /// An error (the default): every object must be encrypted.
    #[default]
    Reject,
    /// Its bytes are returned as they are: for migrating a bucket that
    /// holds plain objects (sys-map `"plain": "read"`).
    Read,
}

/// The keys of one bucket: every key objects may be encrypted under, by key
/// ID, and the one new objects are written under.
pub struct KeyRing {
    keys: BTreeMap<String, MasterKey>,
    write: String,
    plain: PlainObjects,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .field("write", &self.write)
            .field("plain", &self.plain)
            .finish()
    }
}

impl KeyRing {
    /// A ring of `keys` writing under `write`, which must be one of them.
    pub fn new(
        keys: impl IntoIterator<Item = (String, MasterKey)>,
        write: &str,
        plain: PlainObjects,
    ) -> Result<KeyRing, String> {
        let keys: BTreeMap<String, MasterKey> = keys.into_iter().collect();
        if let Some(bad) = keys.keys().find(|id| id.is_empty() || id.len() > 255) {
            return Err(format!("key ID {bad:?}: a key ID is 1 to 255 bytes"));
        }
        if !keys.contains_key(write) {
            return Err(format!(
                "the write key {write:?} is not one of the keys ({})",
                keys.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
            ));
        }
        Ok(KeyRing {
            keys,
            write: write.to_string(),
            plain,
        })
    }

    /// The key ID new objects are written under.
    pub fn write_key_id(&self) -> &str {
        &self.write
    }

    /// Whether plain objects may be read.
    pub fn plain(&self) -> PlainObjects {
        self.plain
    }

    fn write_key(&self) -> &MasterKey {
        // `new` checked that the write key is in the ring.
        &self.keys[&self.write]
    }

    /// Encrypts `plaintext` under the write key.
    pub fn encrypt_bytes(&self, plaintext: &[u8]) -> io::Result<Vec<u8>> {
        format::encrypt_bytes(self.write_key(), &self.write, plaintext)
    }

    /// Encrypts everything `input` yields into `output` under the write key,
    /// one segment in memory at a time, and returns the plaintext's size.
    pub fn encrypt_stream(&self, input: &mut impl Read, output: impl Write) -> io::Result<u64> {
        let mut writer = EncryptWriter::new(
            BufWriter::with_capacity(256 * 1024, output),
            self.write_key(),
            &self.write,
        )?;
        let size = io::copy(input, &mut writer)?;
        writer.finish()?.into_inner().map_err(|e| e.into_error())?;
        Ok(size)
    }
}

/// What an object in an encrypted bucket is, from its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sealed {
    /// Not encrypted.
    Plain,
    /// Encrypted under this key ID.
    Under(String),
}

/// Decrypts an object as it is read; an object that does not decrypt makes
/// `read` fail with an [`ObjectError::Encryption`] inside the I/O error.
struct DecryptReader {
    state: State,
    ring: Arc<KeyRing>,
    bucket: String,
    key: String,
}

enum State {
    /// The header is not read yet.
    Start(ObjectReader),
    /// A plain object read through (`plain: read`): the bytes read while
    /// looking for a header, then the rest.
    Plain(io::Chain<io::Cursor<Vec<u8>>, ObjectReader>),
    Encrypted(Segments<ObjectReader>),
    /// Failed for good: every later read fails the same way.
    Failed(String),
    Taken,
}

impl DecryptReader {
    fn error(&self, message: String) -> ObjectError {
        ObjectError::Encryption {
            op: "decrypt",
            bucket: self.bucket.clone(),
            key: self.key.clone(),
            message,
        }
    }

    fn fail(&mut self, e: FormatError) -> io::Error {
        let message = format!("the object {e}");
        self.state = State::Failed(message.clone());
        self.error(message).into_io_error()
    }

    /// Reads the header and decides how to read the rest.
    fn start(&mut self, mut inner: ObjectReader) -> io::Result<()> {
        let start = match format::read_start(&mut inner)? {
            Ok(start) => start,
            Err(e) => return Err(self.fail(e)),
        };
        self.state = match start {
            Start::Plain(read) if self.ring.plain == PlainObjects::Read => {
                State::Plain(io::Cursor::new(read).chain(inner))
            }
            Start::Plain(_) => {
                let message = "the object is not encrypted (no SLSE header), and its bucket reference reads \
                               only encrypted objects (set \"plain\": \"read\" to migrate plain objects)"
                    .to_string();
                self.state = State::Failed(message.clone());
                return Err(self.error(message).into_io_error());
            }
            Start::Encrypted(header) => match self.ring.keys.get(&header.key_id) {
                Some(master) => State::Encrypted(Segments::new(inner, header, master)?),
                None => {
                    let known = self.ring.keys.keys().map(String::as_str).collect::<Vec<_>>().join(", ");
                    let e = FormatError::UnknownKey(header.key_id);
                    let message = format!("the object {e} (it holds {known})");
                    self.state = State::Failed(message.clone());
                    return Err(self.error(message).into_io_error());
                }
            },
        };
        Ok(())
    }
}

impl Read for DecryptReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match std::mem::replace(&mut self.state, State::Taken) {
                State::Start(inner) => self.start(inner)?,
                State::Plain(mut r) => {
                    let n = r.read(buf);
                    self.state = State::Plain(r);
                    return n;
                }
                State::Encrypted(mut segments) => {
                    let n = segments.read_plain(buf);
                    self.state = State::Encrypted(segments);
                    return match n? {
                        Ok(n) => Ok(n),
                        Err(e) => Err(self.fail(e)),
                    };
                }
                State::Failed(message) => {
                    self.state = State::Failed(message.clone());
                    return Err(self.error(message).into_io_error());
                }
                State::Taken => {
                    return Err(self
                        .error("the reader failed while reading the header".into())
                        .into_io_error());
                }
            }
        }
    }
}

/// An [`ObjectStore`] that encrypts the objects of some buckets (by real
/// bucket name) before they reach `inner`, and decrypts them as they are
/// read. Other buckets pass through untouched.
///
/// ```
/// use std::sync::Arc;
/// use slingshot::storage::{dir::DirStore, ObjectStore};
/// use slingshot::storage::encrypt::{format::MasterKey, EncryptedStore, KeyRing, PlainObjects};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), slingshot::AnyError> {
/// let root = tempfile::tempdir()?;
/// let ring = KeyRing::new([("k1".to_string(), MasterKey::from_bytes([7; 32]))], "k1", PlainObjects::Reject)?;
/// let store = EncryptedStore::new(Arc::new(DirStore::new(root.path())), [("private".to_string(), ring)]);
/// store.put_bytes("private", "1", b"hello".to_vec()).await?;
/// assert_ne!(std::fs::read(root.path().join("private/1"))?, b"hello");
/// # Ok(()) }
/// ```
pub struct EncryptedStore {
    inner: Arc<dyn ObjectStore>,
    rings: HashMap<String, Arc<KeyRing>>,
}

impl std::fmt::Debug for EncryptedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptedStore")
            .field("inner", &self.inner.describe())
            .field("rings", &self.rings)
            .finish()
    }
}

impl EncryptedStore {
    /// Encrypts the buckets `rings` names (real bucket names) on `inner`.
    pub fn new(inner: Arc<dyn ObjectStore>, rings: impl IntoIterator<Item = (String, KeyRing)>) -> Self {
        EncryptedStore {
            inner,
            rings: rings
                .into_iter()
                .map(|(bucket, ring)| (bucket, Arc::new(ring)))
                .collect(),
        }
    }

    /// The store underneath, which holds the encrypted bytes.
    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    /// The key ring of `bucket`, if it is encrypted.
    pub fn ring(&self, bucket: &str) -> Option<&Arc<KeyRing>> {
        self.rings.get(bucket)
    }

    fn error(op: &'static str, bucket: &str, key: &str, message: String) -> ObjectError {
        ObjectError::Encryption {
            op,
            bucket: bucket.into(),
            key: key.into(),
            message,
        }
    }

    /// What `bucket/key` is, from its header: plain, or encrypted under which
    /// key. Reads only the header. A header this build cannot read is an
    /// [`ObjectError::Encryption`].
    pub async fn sealed(&self, bucket: &str, key: &str) -> Result<Sealed, ObjectError> {
        let mut reader = self.inner.open(bucket, key).await?;
        let io_err = |source| ObjectError::Io {
            op: "read header",
            bucket: bucket.into(),
            key: key.into(),
            source,
        };
        let start = tokio::task::spawn_blocking(move || format::read_start(&mut reader))
            .await
            .map_err(|e| io_err(io::Error::other(e)))?
            .map_err(|e| match ObjectError::in_io_error(&e) {
                // A download that broke: kept an outage or a refusal.
                Some(inner) if inner.is_transient() => ObjectError::Backend {
                    op: "read header",
                    bucket: bucket.into(),
                    key: key.into(),
                    message: inner.to_string(),
                },
                Some(inner) => ObjectError::Refused {
                    op: "read header",
                    bucket: bucket.into(),
                    key: key.into(),
                    message: inner.to_string(),
                },
                None => io_err(e),
            })?;
        match start {
            Ok(Start::Plain(_)) => Ok(Sealed::Plain),
            Ok(Start::Encrypted(header)) => Ok(Sealed::Under(header.key_id)),
            Err(e) => Err(Self::error("read header", bucket, key, format!("the object {e}"))),
        }
    }

    /// Encrypts the file at `path` into a temporary file beside it (in the
    /// same private directory), returning it and the plaintext's size.
    async fn encrypt_file(
        ring: Arc<KeyRing>,
        bucket: &str,
        key: &str,
        path: &Path,
    ) -> Result<(tempfile::TempPath, u64), ObjectError> {
        let source = path.to_path_buf();
        let dir = path.parent().map_or_else(std::env::temp_dir, Path::to_path_buf);
        let done = tokio::task::spawn_blocking(move || -> io::Result<(tempfile::TempPath, u64)> {
            let mut input = BufReader::with_capacity(256 * 1024, std::fs::File::open(&source)?);
            let sealed = tempfile::Builder::new().prefix(".sealed-").tempfile_in(&dir)?;
            let size = ring.encrypt_stream(&mut input, sealed.as_file())?;
            Ok((sealed.into_temp_path(), size))
        })
        .await
        .map_err(io::Error::other)
        .and_then(|r| r);
        done.map_err(|source| ObjectError::Io {
            op: "encrypt staged file",
            bucket: bucket.into(),
            key: key.into(),
            source,
        })
    }
}

#[async_trait]
impl ObjectStore for EncryptedStore {
    async fn open(&self, bucket: &str, key: &str) -> Result<ObjectReader, ObjectError> {
        let reader = self.inner.open(bucket, key).await?;
        match self.rings.get(bucket) {
            None => Ok(reader),
            Some(ring) => Ok(ObjectReader::new(DecryptReader {
                state: State::Start(reader),
                ring: ring.clone(),
                bucket: bucket.into(),
                key: key.into(),
            })),
        }
    }

    /// Encrypts the staged file into a temporary file beside it, uploads
    /// that, and returns the plaintext's size.
    async fn put_file(&self, bucket: &str, key: &str, path: &Path) -> Result<u64, ObjectError> {
        let Some(ring) = self.rings.get(bucket) else {
            return self.inner.put_file(bucket, key, path).await;
        };
        let (sealed, size) = Self::encrypt_file(ring.clone(), bucket, key, path).await?;
        self.inner.put_file(bucket, key, &sealed).await?;
        // Removing the temporary file touches the disk: off the async threads.
        let _ = tokio::task::spawn_blocking(move || drop(sealed)).await;
        Ok(size)
    }

    async fn put_bytes(&self, bucket: &str, key: &str, bytes: Vec<u8>) -> Result<(), ObjectError> {
        let Some(ring) = self.rings.get(bucket).cloned() else {
            return self.inner.put_bytes(bucket, key, bytes).await;
        };
        let sealed = tokio::task::spawn_blocking(move || ring.encrypt_bytes(&bytes))
            .await
            .map_err(io::Error::other)
            .and_then(|r| r)
            .map_err(|e| Self::error("encrypt", bucket, key, e.to_string()))?;
        self.inner.put_bytes(bucket, key, sealed).await
    }

    async fn list(&self, bucket: &str) -> Result<Vec<String>, ObjectError> {
        self.inner.list(bucket).await
    }

    fn journal_uploads_in(&self, dir: &Path) {
        self.inner.journal_uploads_in(dir);
    }

    async fn abort_upload(&self, upload: &PendingUpload) -> Result<(), ObjectError> {
        self.inner.abort_upload(upload).await
    }

    fn sweep_abandoned(&self) -> Result<usize, ObjectError> {
        self.inner.sweep_abandoned()
    }

    fn describe(&self) -> String {
        let mut buckets: Vec<&str> = self.rings.keys().map(String::as_str).collect();
        buckets.sort_unstable();
        format!("{} (encrypting {})", self.inner.describe(), buckets.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::dir::DirStore;

    fn ring(keys: &[(&str, u8)], write: &str, plain: PlainObjects) -> KeyRing {
        let keys = keys
            .iter()
            .map(|(id, b)| (id.to_string(), MasterKey::from_bytes([*b; 32])));
        KeyRing::new(keys, write, plain).unwrap()
    }

    async fn read(store: &EncryptedStore, key: &str) -> io::Result<Vec<u8>> {
        let mut reader = store.open("b", key).await.map_err(ObjectError::into_io_error)?;
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            reader.read_to_end(&mut out).map(|_| out)
        })
        .await
        .unwrap()
    }

    fn message(e: &io::Error) -> String {
        let inner = ObjectError::in_io_error(e).expect("an ObjectError inside");
        assert!(!inner.is_transient());
        inner.to_string()
    }

    #[tokio::test]
    async fn round_trip_rotation_unknown_keys_and_plain_objects() {
        let root = tempfile::tempdir().unwrap();
        let dir: Arc<dyn ObjectStore> = Arc::new(DirStore::new(root.path()));
        let v1 = EncryptedStore::new(
            dir.clone(),
            [("b".into(), ring(&[("k1", 1)], "k1", PlainObjects::Reject))],
        );
        v1.put_bytes("b", "1", b"one".to_vec()).await.unwrap();
        let staged = root.path().join("staged");
        std::fs::write(&staged, vec![9u8; 200_000]).unwrap();
        assert_eq!(v1.put_file("b", "2", &staged).await.unwrap(), 200_000);
        assert_eq!(read(&v1, "1").await.unwrap(), b"one");
        assert_eq!(read(&v1, "2").await.unwrap(), vec![9u8; 200_000]);
        assert_eq!(v1.sealed("b", "2").await.unwrap(), Sealed::Under("k1".into()));
        // No sealed temporary file is left beside the staged one.
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 2);

        // Rotation: k2 writes, k1 still reads.
        let v2 = EncryptedStore::new(
            dir.clone(),
            [("b".into(), ring(&[("k1", 1), ("k2", 2)], "k2", PlainObjects::Reject))],
        );
        v2.put_bytes("b", "3", b"three".to_vec()).await.unwrap();
        assert_eq!(read(&v2, "1").await.unwrap(), b"one");
        assert_eq!(v2.sealed("b", "3").await.unwrap(), Sealed::Under("k2".into()));
        // A ring without k2 names the key ID it lacks.
        let why = message(&read(&v1, "3").await.unwrap_err());
        assert!(why.contains("\"k2\"") && why.contains("b/3"), "{why}");
        // The same key ID with other key material fails authentication.
        let wrong = EncryptedStore::new(
            dir.clone(),
            [("b".into(), ring(&[("k1", 9)], "k1", PlainObjects::Reject))],
        );
        let why = message(&read(&wrong, "1").await.unwrap_err());
        assert!(why.contains("integrity"), "{why}");

        // Plain objects: rejected, unless the migration flag is set.
        dir.put_bytes("b", "4", b"plain text".to_vec()).await.unwrap();
        let why = message(&read(&v1, "4").await.unwrap_err());
        assert!(why.contains("not encrypted"), "{why}");
        let migrating = EncryptedStore::new(
            dir.clone(),
            [("b".into(), ring(&[("k1", 1)], "k1", PlainObjects::Read))],
        );
        assert_eq!(read(&migrating, "4").await.unwrap(), b"plain text");
        assert_eq!(migrating.sealed("b", "4").await.unwrap(), Sealed::Plain);

        // A tampered object is an error on every read, never an early end.
        let path = root.path().join("b/2");
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let mut reader = v1.open("b", "2").await.unwrap();
        tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; 300_000];
            let mut total = 0;
            let first = loop {
                match reader.read(&mut buf) {
                    Ok(0) => panic!("a tampered object read to its end"),
                    Ok(n) => total += n,
                    Err(e) => break e,
                }
            };
            assert!(total < 200_000);
            assert!(message(&first).contains("segment"));
            assert!(reader.read(&mut buf).is_err());
        })
        .await
        .unwrap();
    }

    #[test]
    fn a_ring_must_hold_its_write_key() {
        let err = KeyRing::new(
            [("k1".to_string(), MasterKey::from_bytes([1; 32]))],
            "k2",
            PlainObjects::Reject,
        )
        .unwrap_err();
        assert!(err.contains("\"k2\"") && err.contains("k1"), "{err}");
    }
}
