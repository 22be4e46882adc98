//! Staging of `write_file` output: private local files per request, uploaded only after `process` succeeded, removed on every path.

use std::fs::File;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use futures::future::try_join_all;
use tempfile::TempDir;

use super::writer::{Closed, ObjectWriter, Spool};
use crate::storage::{try_lock, ObjectError, ObjectStore, PendingUpload};

/// Prefix of the directory each process stages in, under
/// `SLINGSHOT_STAGING_DIR`.
pub(crate) const ROOT_PREFIX: &str = "slingshot-staging-";
/// The sub-directory of a process's staging directory that records its
/// unfinished uploads (see [`ObjectStore::journal_uploads_in`]).
pub(crate) const JOURNAL_DIR: &str = "uploads";

/// Mode 0700: staged files are nobody else's business.
fn private() -> std::fs::Permissions {
    std::os::unix::fs::PermissionsExt::from_mode(0o700)
}

/// Whether `path` still names the file `file` has open.
fn names(path: &Path, file: &File) -> io::Result<bool> {
    let (held, named) = (file.metadata()?, std::fs::symlink_metadata(path)?);
    Ok(held.dev() == named.dev() && held.ino() == named.ino())
}

/// What a start-up sweep found of processes that died.
#[derive(Debug, Default)]
pub(crate) struct Swept {
    /// Staging directories removed.
    pub dirs: usize,
    /// Uploads they had recorded as unfinished, to abort.
    pub uploads: Vec<PendingUpload>,
}

/// The staging directory one process owns under `SLINGSHOT_STAGING_DIR`:
/// `slingshot-staging-<pid>-<random>`, mode 0700, holding an exclusive
/// `flock(2)` for the process's life. A directory of this name that nobody
/// holds belongs to a process that died: the next process to start sweeps
/// it, staged files, upload records and all. Requests stage in
/// sub-directories of it, removed when they end; the process removes the
/// directory itself when it stops.
#[derive(Debug)]
pub(crate) struct StagingRoot {
    path: PathBuf,
    /// The directory, open and locked (a new one if it had to be created again).
    lock: Mutex<File>,
}

impl StagingRoot {
    /// Sweeps the staging directories under `base` whose owner is gone,
    /// then creates and locks this process's own. Blocking.
    pub(crate) fn claim(base: &Path) -> io::Result<(StagingRoot, Swept)> {
        std::fs::create_dir_all(base)?;
        let swept = sweep(base);
        let (path, lock) = create_locked(base)?;
        Ok((
            StagingRoot {
                path,
                lock: Mutex::new(lock),
            },
            swept,
        ))
    }

    /// The directory, created again (and locked) if something removed it.
    pub(crate) fn dir(&self) -> io::Result<&Path> {
        let mut lock = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if !names(&self.path, &lock).unwrap_or(false) {
            let base = self.path.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(base)?;
            match std::fs::DirBuilder::new().mode(0o700).create(&self.path) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                _ => {}
            }
            let dir = File::open(&self.path)?;
            if !try_lock(&dir)? || !names(&self.path, &dir)? {
                return Err(io::Error::other(format!(
                    "the staging directory {} was removed and is held by another process",
                    self.path.display()
                )));
            }
            *lock = dir;
        }
        Ok(&self.path)
    }

    /// Where this process records its unfinished uploads.
    pub(crate) fn journal(&self) -> PathBuf {
        self.path.join(JOURNAL_DIR)
    }
}

impl Drop for StagingRoot {
    /// The process is done staging: the directory goes (what requests
    /// staged is gone already), unless it still records unfinished uploads
    /// (an abort still running at exit, or one that failed): it then stays,
    /// unlocked, for the next start-up to abort them and sweep it.
    fn drop(&mut self) {
        let journal = self.journal();
        let pending = std::fs::read_dir(&journal).is_ok_and(|mut records| records.next().is_some());
        let removed = if pending {
            tracing::info!(dir = %self.path.display(), "unfinished uploads recorded; the next start-up aborts them");
            std::fs::read_dir(&self.path).and_then(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.path() != journal)
                    .try_for_each(|e| std::fs::remove_dir_all(e.path()).or_else(|_| std::fs::remove_file(e.path())))
            })
        } else {
            std::fs::remove_dir_all(&self.path)
        };
        if let Err(e) = removed {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.path.display(), error = %e, "cannot remove the staging directory");
            }
        }
    }
}

/// Creates `base/slingshot-staging-<pid>-<random>` and locks it.
fn create_locked(base: &Path) -> io::Result<(PathBuf, File)> {
    for _ in 0..16 {
        // A fresh name, mode 0700; kept (not removed on drop) from here on.
        let name = tempfile::Builder::new()
            .prefix(&format!("{ROOT_PREFIX}{}-", std::process::id()))
            .permissions(private())
            .tempdir_in(base)?
            .keep();
        let dir = match File::open(&name) {
            Ok(dir) => dir,
            // A sweeper took it between the mkdir and the open: another name.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        // A sweeper that locked it before this process could is removing it;
        // one that removed it already left the name to someone else.
        if try_lock(&dir)? && names(&name, &dir).unwrap_or(false) {
            return Ok((name, dir));
        }
    }
    Err(io::Error::other(format!(
        "cannot create a staging directory in {}: every try was swept away",
        base.display()
    )))
}

/// Removes every `slingshot-staging-*` directory under `base` that no live
/// process holds, collecting the unfinished uploads each recorded. What
/// cannot be removed is logged and left for the next sweep.
fn sweep(base: &Path) -> Swept {
    let mut swept = Swept::default();
    let Ok(entries) = std::fs::read_dir(base) else {
        return swept;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let ours =
            entry.file_name().to_string_lossy().starts_with(ROOT_PREFIX) && entry.file_type().is_ok_and(|t| t.is_dir());
        if !ours {
            continue;
        }
        // Held: its process is alive. Gone meanwhile: someone else swept it.
        let Ok(dir) = File::open(&path) else { continue };
        if !matches!(try_lock(&dir), Ok(true)) {
            continue;
        }
        swept.uploads.extend(journaled(&path.join(JOURNAL_DIR)));
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {
                swept.dirs += 1;
                tracing::info!(dir = %path.display(), "swept the staging directory of a process that died");
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(dir = %path.display(), error = %e, "cannot sweep the staging directory of a process that died")
            }
        }
    }
    swept
}

/// The upload records in `journal`.
fn journaled(journal: &Path) -> Vec<PendingUpload> {
    let Ok(entries) = std::fs::read_dir(journal) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|text| PendingUpload::from_record(&text))
        .collect()
}

/// An object written by `process` and uploaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenObject {
    /// The real bucket name.
    pub bucket: String,
    /// The object key (the decimal ID).
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
}

/// The request's private staging directory, created on the first spill.
#[derive(Debug)]
struct LazyDir {
    root: Arc<StagingRoot>,
    dir: OnceLock<TempDir>,
}

impl LazyDir {
    fn get(&self) -> std::io::Result<&Path> {
        if let Some(dir) = self.dir.get() {
            return Ok(dir.path());
        }
        let created = tempfile::Builder::new()
            .prefix("request-")
            .permissions(private())
            .tempdir_in(self.root.dir()?)?;
        // Only the request's own thread stages files, so a lost race is
        // impossible; if it happened the spare directory is simply dropped.
        Ok(self.dir.get_or_init(|| created).path())
    }
}

/// One writer's link to the request's staging: where it spills and where it
/// leaves its bytes when closed.
struct StagedFile {
    dir: Arc<LazyDir>,
    name: String,
    closed: Arc<Mutex<Closed>>,
    bucket: String,
    key: String,
}

impl Spool for StagedFile {
    /// Carries an [`ObjectError::Io`]: a full disk is an outage, a
    /// permission is not.
    fn failed(&self, source: std::io::Error) -> std::io::Error {
        ObjectError::Io {
            op: "stage",
            bucket: self.bucket.clone(),
            key: self.key.clone(),
            source,
        }
        .into_io_error()
    }

    fn create_file(&self) -> std::io::Result<std::fs::File> {
        std::fs::File::create(self.dir.get()?.join(&self.name))
    }

    fn close(&self, closed: Closed) {
        *self.closed.lock().unwrap_or_else(|p| p.into_inner()) = closed;
    }
}

#[derive(Debug)]
struct Staged {
    bucket: String,
    key: String,
    name: String,
    closed: Arc<Mutex<Closed>>,
}

/// The objects one request wrote. Dropping it deletes the staged files,
/// whether they were uploaded or not, so an error or a panic in `process`
/// leaves nothing behind.
#[derive(Debug)]
pub(crate) struct Staging {
    dir: Arc<LazyDir>,
    files: Mutex<Vec<Staged>>,
    created: AtomicUsize,
}

impl Staging {
    /// Staging in the process's `root`; the request's private directory
    /// (mode 0700) is created when a writer first spills to disk.
    pub(crate) fn new(root: Arc<StagingRoot>) -> Self {
        Staging {
            dir: Arc::new(LazyDir {
                root,
                dir: OnceLock::new(),
            }),
            files: Mutex::new(Vec::new()),
            created: AtomicUsize::new(0),
        }
    }

    #[cfg(test)]
    fn dir(&self) -> std::io::Result<&Path> {
        self.dir.get()
    }

    /// A writer of `bucket/key`; writing the same object again replaces what
    /// an earlier writer wrote.
    pub(crate) fn create(&self, bucket: &str, key: &str) -> Result<ObjectWriter, ObjectError> {
        let name = format!("{}.staged", self.created.fetch_add(1, Ordering::Relaxed));
        let closed = Arc::new(Mutex::new(Closed::Open));
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        files.retain(|s| !(s.bucket == bucket && s.key == key));
        files.push(Staged {
            bucket: bucket.into(),
            key: key.into(),
            name: name.clone(),
            closed: closed.clone(),
        });
        Ok(ObjectWriter::new(Box::new(StagedFile {
            dir: self.dir.clone(),
            name,
            closed,
            bucket: bucket.into(),
            key: key.into(),
        })))
    }

    /// Uploads every written object, concurrently, and reports what was
    /// written. A writer `process` kept open is an error: its object may be
    /// incomplete.
    pub(crate) async fn upload(&self, store: &dyn ObjectStore) -> Result<Vec<WrittenObject>, ObjectError> {
        enum Source {
            Memory(Vec<u8>),
            File(PathBuf),
        }
        let mut staged = Vec::new();
        for s in self.files.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let mut closed = s.closed.lock().unwrap_or_else(|p| p.into_inner());
            let source = match std::mem::replace(&mut *closed, Closed::File) {
                Closed::Memory(bytes) => Source::Memory(bytes),
                Closed::File => match self.dir.dir.get() {
                    Some(dir) => Source::File(dir.path().join(&s.name)),
                    None => Source::Memory(Vec::new()),
                },
                Closed::Open => {
                    *closed = Closed::Open;
                    return Err(ObjectError::WriterOpen {
                        bucket: s.bucket.clone(),
                        key: s.key.clone(),
                    });
                }
            };
            staged.push((s.bucket.clone(), s.key.clone(), source));
        }
        try_join_all(staged.into_iter().map(|(bucket, key, source)| {
            let span = crate::telemetry::spans::object("PutObject", &bucket, &key);
            let put = async move {
                let put = match source {
                    Source::Memory(bytes) => {
                        let size = bytes.len() as u64;
                        store.put_bytes(&bucket, &key, bytes).await.map(|()| size)
                    }
                    Source::File(path) => store.put_file(&bucket, &key, &path).await,
                };
                if let Err(e) = &put {
                    crate::telemetry::spans::failed(&tracing::Span::current(), &e.to_string());
                }
                Ok(WrittenObject {
                    bucket,
                    key,
                    size: put?,
                })
            };
            tracing::Instrument::instrument(put, span)
        }))
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::execute::writer::MEMORY_LIMIT;
    use std::io::{Seek, SeekFrom, Write};

    fn closed(staging: &Staging, index: usize) -> String {
        let files = staging.files.lock().unwrap();
        let closed = files[index].closed.lock().unwrap();
        match &*closed {
            Closed::Open => "open".into(),
            Closed::Memory(bytes) => format!("memory {:?}", String::from_utf8_lossy(bytes)),
            Closed::File => "file".into(),
        }
    }

    fn root(base: &Path) -> Arc<StagingRoot> {
        Arc::new(StagingRoot::claim(base).unwrap().0)
    }

    fn entries(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect()
    }

    #[test]
    fn small_objects_stay_in_memory_and_touch_no_disk() {
        let base = tempfile::tempdir().unwrap();
        let root = root(&base.path().join("staging"));
        let staging = Staging::new(root.clone());
        let mut w = staging.create("out", "1").unwrap();
        w.write_all(b"hello").unwrap();
        assert_eq!(closed(&staging, 0), "open");
        drop(w);
        assert_eq!(closed(&staging, 0), "memory \"hello\"");
        assert_eq!(
            entries(&root.path),
            Vec::<PathBuf>::new(),
            "nothing staged for a small object"
        );
    }

    #[test]
    fn large_objects_spill_to_a_file_that_dropping_removes() {
        let base = tempfile::tempdir().unwrap();
        let staging = Staging::new(root(base.path()));
        let mut w = staging.create("out", "1").unwrap();
        let chunk = vec![7u8; 1 << 20];
        for _ in 0..=(MEMORY_LIMIT >> 20) {
            w.write_all(&chunk).unwrap();
        }
        drop(w);
        assert_eq!(closed(&staging, 0), "file");
        let dir = staging.dir().unwrap().to_path_buf();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        let staged = dir.join("0.staged");
        assert_eq!(std::fs::metadata(&staged).unwrap().len(), MEMORY_LIMIT + (1 << 20));
        drop(staging);
        assert!(!dir.exists());
    }

    #[test]
    fn file_moves_what_was_written_and_keeps_the_position() {
        let base = tempfile::tempdir().unwrap();
        let staging = Staging::new(root(base.path()));
        let mut w = staging.create("out", "1").unwrap();
        w.write_all(b"hello world").unwrap();
        w.seek(SeekFrom::Start(6)).unwrap();
        w.file().unwrap().write_all(b"there").unwrap();
        w.write_all(b"!").unwrap();
        drop(w);
        let path = staging.dir().unwrap().join("0.staged");
        assert_eq!(std::fs::read(path).unwrap(), b"hello there!");
    }

    #[test]
    fn nothing_is_created_until_a_file_is_written() {
        let base = tempfile::tempdir().unwrap();
        let root = root(base.path());
        drop(Staging::new(root.clone()));
        assert_eq!(entries(&root.path), Vec::<PathBuf>::new());
    }

    #[test]
    fn writing_the_same_object_twice_stages_it_once() {
        let base = tempfile::tempdir().unwrap();
        let staging = Staging::new(root(base.path()));
        staging.create("out", "1").unwrap().write_all(b"first").unwrap();
        staging.create("out", "1").unwrap().write_all(b"second").unwrap();
        assert_eq!(staging.files.lock().unwrap().len(), 1);
        assert_eq!(closed(&staging, 0), "memory \"second\"");
    }

    #[test]
    fn a_process_stages_in_a_locked_directory_of_its_own_and_removes_it() {
        let base = tempfile::tempdir().unwrap();
        let first = root(base.path());
        let second = root(base.path());
        assert_ne!(first.path, second.path);
        for root in [&first, &second] {
            let name = root.path.file_name().unwrap().to_string_lossy().to_string();
            assert!(
                name.starts_with(&format!("{ROOT_PREFIX}{}-", std::process::id())),
                "{name}"
            );
            let mode = std::fs::metadata(&root.path).unwrap().mode() & 0o777;
            assert_eq!(mode, 0o700, "{name}: {mode:o}");
            // Held: nobody can take it.
            assert!(!try_lock(&File::open(&root.path).unwrap()).unwrap());
        }
        let path = first.path.clone();
        drop(first);
        assert!(!path.exists(), "removed when the process is done with it");
        assert!(second.path.exists());
    }

    #[test]
    fn a_directory_recording_unfinished_uploads_stays_for_the_next_start_up() {
        let base = tempfile::tempdir().unwrap();
        let (root, _) = StagingRoot::claim(base.path()).unwrap();
        let path = root.path.clone();
        std::fs::create_dir_all(path.join("request-x")).unwrap();
        std::fs::create_dir_all(root.journal()).unwrap();
        let upload = PendingUpload {
            bucket: "out".into(),
            key: "9".into(),
            upload_id: "u".into(),
        };
        std::fs::write(root.journal().join("0.upload"), upload.to_record()).unwrap();
        drop(root);
        assert!(!path.join("request-x").exists());
        let (_next, swept) = StagingRoot::claim(base.path()).unwrap();
        assert_eq!((swept.dirs, swept.uploads), (1, vec![upload]));
        assert!(!path.exists());
    }

    #[test]
    fn start_up_sweeps_directories_whose_owner_is_gone_and_keeps_live_ones() {
        let base = tempfile::tempdir().unwrap();
        let live = root(base.path());
        // What a killed process leaves: its directory, unlocked, with a
        // request's staged file and a record of an unfinished upload.
        let dead = base.path().join(format!("{ROOT_PREFIX}1-dead"));
        std::fs::create_dir_all(dead.join("request-x")).unwrap();
        std::fs::write(dead.join("request-x/0.staged"), b"half an object").unwrap();
        std::fs::create_dir_all(dead.join(JOURNAL_DIR)).unwrap();
        let upload = PendingUpload {
            bucket: "out".into(),
            key: "7".into(),
            upload_id: "abc".into(),
        };
        std::fs::write(dead.join(JOURNAL_DIR).join("1.upload"), upload.to_record()).unwrap();
        std::fs::write(dead.join(JOURNAL_DIR).join("2.upload"), "out\n8\n").unwrap();
        // Not ours, whatever is in it.
        let other = base.path().join("slingshot-test-keep");
        std::fs::create_dir_all(&other).unwrap();
        let (third, swept) = StagingRoot::claim(base.path()).unwrap();
        assert_eq!(swept.dirs, 1);
        assert_eq!(swept.uploads, [upload], "the cut-short record is not an upload");
        assert!(!dead.exists());
        assert!(live.path.exists() && third.path.exists() && other.exists());
    }

    #[test]
    fn a_removed_staging_directory_is_created_again() {
        let base = tempfile::tempdir().unwrap();
        let root = root(base.path());
        std::fs::remove_dir_all(&root.path).unwrap();
        let staging = Staging::new(root.clone());
        let mut w = staging.create("out", "1").unwrap();
        w.file().unwrap().write_all(b"spilled").unwrap();
        drop(w);
        assert!(root.path.exists());
        assert!(!try_lock(&File::open(&root.path).unwrap()).unwrap(), "locked again");
    }

    #[test]
    fn a_staging_failure_carries_its_class() {
        let base = tempfile::tempdir().unwrap();
        let root = root(base.path());
        // Something that is not a directory where the staging directory was:
        // waiting will not help.
        std::fs::remove_dir(&root.path).unwrap();
        std::fs::write(&root.path, b"in the way").unwrap();
        let staging = Staging::new(root.clone());
        let mut w = staging.create("out", "1").unwrap();
        let e = w.write_all(&vec![0u8; MEMORY_LIMIT as usize + 1]).unwrap_err();
        let object = ObjectError::in_io_error(&e).expect("an ObjectError inside");
        assert!(matches!(object, ObjectError::Io { op: "stage", .. }), "{object}");
        assert!(!object.is_transient(), "{object}");
        assert!(e.to_string().contains("stage out/1"), "{e}");
        std::fs::remove_file(&root.path).unwrap();
    }

    #[test]
    fn upload_records_survive_only_whole() {
        let upload = PendingUpload {
            bucket: "b".into(),
            key: "1".into(),
            upload_id: "x~y".into(),
        };
        assert_eq!(PendingUpload::from_record(&upload.to_record()), Some(upload.clone()));
        let record = upload.to_record();
        for cut in 0..record.len() {
            assert_eq!(PendingUpload::from_record(&record[..cut]), None, "{cut}");
        }
    }
}
