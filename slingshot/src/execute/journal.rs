//! Which deliveries were in `process` when the process died: a small file per
//! running instance, read back at the next start, so that a message that keeps
//! killing the process is told apart from one that only waited in the
//! prefetch.
//!
//! RabbitMQ marks every delivery it takes back from a dead consumer
//! `redelivered`, whether the consumer was processing it or had only
//! prefetched it; classic queues count nothing. So each instance keeps a
//! journal under `SLINGSHOT_STATE_DIR`: one 8-byte slot per `process` call in
//! progress, holding the fingerprint of its message (written before the call,
//! cleared after it). A process that dies leaves its slots filled. The next
//! instance to start reads every journal no live instance holds (each is
//! locked for its owner's life), and when one of those messages comes back
//! redelivered it is a *suspect*: the worker counts the crash in the message
//! and publishes it again, or dead-letters it at `SLINGSHOT_MAX_CRASHES`.
//!
//! The journal must outlive the process to work: in a container, put
//! `SLINGSHOT_STATE_DIR` on a volume that survives a container restart (a
//! Kubernetes `emptyDir` does).

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Bytes of one slot: a fingerprint, little-endian; 0 is an empty slot.
const SLOT: u64 = 8;

/// The journal of this instance, and the suspects its predecessors left.
#[derive(Debug)]
pub(crate) struct Journal {
    /// Locked for this process's life.
    file: File,
    path: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Slots not in use.
    free: Vec<u64>,
    /// The next slot never used.
    next: u64,
    /// Fingerprints of messages that were in `process` when an earlier
    /// instance died, not yet seen again.
    suspects: HashSet<u64>,
}

impl Journal {
    /// Opens this instance's journal of `service` under `dir` and reads the
    /// journals that dead instances left there. Blocking: file I/O.
    pub(crate) fn open(dir: &Path, service: &str) -> io::Result<Journal> {
        std::fs::create_dir_all(dir)?;
        let prefix = format!("slingshot-{service}.");
        let mut existing: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| {
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                name.starts_with(&prefix) && name.ends_with(".journal")
            })
            .collect();
        existing.sort();
        let mut suspects = HashSet::new();
        let mut mine: Option<(File, PathBuf)> = None;
        for path in &existing {
            let file = match OpenOptions::new().read(true).write(true).open(path) {
                Ok(file) => file,
                // Removed by another instance starting at the same time.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            match file.try_lock() {
                Ok(()) => {}
                // A live instance's.
                Err(std::fs::TryLockError::WouldBlock) => continue,
                Err(std::fs::TryLockError::Error(e)) => return Err(e),
            }
            suspects.extend(read_slots(&file)?);
            if mine.is_none() {
                file.set_len(0)?;
                mine = Some((file, path.clone()));
            } else {
                // Read; nobody needs it any more.
                std::fs::remove_file(path)?;
            }
        }
        let (file, path) = match mine {
            Some(mine) => mine,
            None => create(dir, &prefix)?,
        };
        if !suspects.is_empty() {
            tracing::warn!(
                service,
                journal = %path.display(),
                suspects = suspects.len(),
                "an earlier instance died while processing; its messages are counted as crashes when they come back"
            );
        }
        Ok(Journal {
            file,
            path,
            state: Mutex::new(State {
                suspects,
                ..State::default()
            }),
        })
    }

    /// Records that `process` is about to handle the message `fingerprint`;
    /// the record is cleared when the returned entry drops. Blocking (a
    /// write to the page cache): call it on the thread that runs `process`.
    pub(crate) fn enter(self: &Arc<Self>, fingerprint: u64) -> Entry {
        let slot = {
            let mut state = self.lock();
            match state.free.pop() {
                Some(slot) => slot,
                None => {
                    state.next += 1;
                    state.next - 1
                }
            }
        };
        self.write(slot, fingerprint);
        Entry {
            journal: self.clone(),
            slot,
        }
    }

    /// Whether `fingerprint` is a message an earlier instance was processing
    /// when it died; it is a suspect only once.
    pub(crate) fn take_suspect(&self, fingerprint: u64) -> bool {
        self.lock().suspects.remove(&fingerprint)
    }

    /// The file.
    #[cfg(test)]
    fn path(&self) -> &Path {
        &self.path
    }

    fn write(&self, slot: u64, fingerprint: u64) {
        if let Err(e) = self.file.write_at(&fingerprint.to_le_bytes(), slot * SLOT) {
            tracing::warn!(journal = %self.path.display(), error = %e, "cannot write the crash journal");
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A `process` call in progress, recorded in the journal until it drops.
#[derive(Debug)]
pub(crate) struct Entry {
    journal: Arc<Journal>,
    slot: u64,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.journal.write(self.slot, 0);
        self.journal.lock().free.push(self.slot);
    }
}

/// A new journal file `{prefix}{n}.journal`, locked.
fn create(dir: &Path, prefix: &str) -> io::Result<(File, PathBuf)> {
    for n in 0u32.. {
        let path = dir.join(format!("{prefix}{n}.journal"));
        match OpenOptions::new().read(true).write(true).create_new(true).open(&path) {
            Ok(file) => {
                file.try_lock().map_err(io::Error::from)?;
                return Ok((file, path));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("no free journal name"))
}

/// The fingerprints in a journal's filled slots.
fn read_slots(mut file: &File) -> io::Result<Vec<u64>> {
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes
        .chunks_exact(SLOT as usize)
        .filter_map(|slot| slot.try_into().ok().map(u64::from_le_bytes))
        .filter(|fingerprint| *fingerprint != 0)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_instances_calls_in_progress_become_suspects_once() {
        let dir = tempfile::tempdir().unwrap();
        // What an instance killed with two calls in progress leaves: its
        // journal, unlocked, slots 22 and 33 filled (11 was cleared).
        let dead = dir.path().join("slingshot-svc.5.journal");
        let slots: Vec<u8> = [22u64, 0, 33].iter().flat_map(|f| f.to_le_bytes()).collect();
        std::fs::write(&dead, slots).unwrap();

        let first = Arc::new(Journal::open(dir.path(), "svc").unwrap());
        assert_eq!(first.path(), dead, "the dead instance's journal is taken over");
        assert!(first.take_suspect(22));
        assert!(!first.take_suspect(22), "a suspect once");
        assert!(first.take_suspect(33));
        assert!(!first.take_suspect(11), "finished calls are not suspects");

        // A second live instance gets a journal of its own, and no suspects:
        // the first holds its journal locked.
        let second = Journal::open(dir.path(), "svc").unwrap();
        assert_ne!(second.path(), first.path());
        assert!(!second.take_suspect(33));

        // A call in progress is in the file until it ends.
        let entry = first.enter(44);
        assert_eq!(read_slots(&File::open(first.path()).unwrap()).unwrap(), [44]);
        drop(entry);
        assert!(read_slots(&File::open(first.path()).unwrap()).unwrap().is_empty());

        // Another service's journals are its own.
        let elsewhere = Journal::open(dir.path(), "svc2").unwrap();
        assert!(!elsewhere.take_suspect(22));
        assert!(elsewhere
            .path()
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("slingshot-svc2.")));
    }

    #[test]
    fn journals_of_other_dead_instances_are_read_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        for (n, fingerprint) in [(0u64, 7u64), (1, 8)] {
            let path = dir.path().join(format!("slingshot-svc.{n}.journal"));
            std::fs::write(path, fingerprint.to_le_bytes()).unwrap();
        }
        let journal = Journal::open(dir.path(), "svc").unwrap();
        assert!(journal.take_suspect(7) && journal.take_suspect(8));
        assert!(!dir.path().join("slingshot-svc.1.journal").exists());
    }

    #[test]
    fn slots_are_reused_and_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Arc::new(Journal::open(dir.path(), "svc").unwrap());
        for round in 1..=3 {
            let a = journal.enter(round);
            let b = journal.enter(round + 100);
            drop((a, b));
        }
        assert_eq!(std::fs::metadata(journal.path()).unwrap().len(), 2 * SLOT);
        assert!(read_slots(&File::open(journal.path()).unwrap()).unwrap().is_empty());
    }
}
