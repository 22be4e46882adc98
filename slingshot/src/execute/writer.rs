//! The writer `write_file` returns: in memory up to a limit, then a private staged file, handed to the request's staging when closed.

use std::io::{self, Seek, SeekFrom, Write};

/// Bytes a writer may hold in memory before it spills to its staged file.
pub(crate) const MEMORY_LIMIT: u64 = 4 * 1024 * 1024;

/// What a closed writer left for the upload.
#[derive(Debug)]
pub(crate) enum Closed {
    /// The writer is still open.
    Open,
    /// The whole object, never spilled.
    Memory(Vec<u8>),
    /// The object is the staged file.
    File,
}

/// Where a writer spills, and where it leaves its bytes when closed: the
/// request's staging (`super::staging`).
pub(crate) trait Spool: Send {
    /// Creates (or truncates) the staged file.
    fn create_file(&self) -> io::Result<std::fs::File>;
    /// Hands what the writer left over.
    fn close(&self, closed: Closed);
    /// A failure to stage the object as the I/O error `process` sees.
    fn failed(&self, source: io::Error) -> io::Error;
}

/// An object being written, returned by `write_file`. It is uploaded after
/// `process` returns successfully; close it (drop it) before returning.
///
/// The bytes stay in memory up to 4 MiB (`MEMORY_LIMIT`) and spill to a
/// private staged file past it, so small objects cost no disk I/O and memory
/// stays flat whatever the object's size.
pub struct ObjectWriter {
    buffer: Buffer,
    spool: Box<dyn Spool>,
}

enum Buffer {
    Memory(io::Cursor<Vec<u8>>),
    File(std::fs::File),
}

impl ObjectWriter {
    pub(crate) fn new(spool: Box<dyn Spool>) -> Self {
        ObjectWriter {
            buffer: Buffer::Memory(io::Cursor::new(Vec::new())),
            spool,
        }
    }

    /// The staged file itself, for APIs that want a `std::fs::File`: what was
    /// written so far moves to it (at the same position), and everything
    /// written from then on goes to it.
    pub fn file(&mut self) -> io::Result<&mut std::fs::File> {
        self.spill().map_err(|e| self.spool.failed(e))?;
        match &mut self.buffer {
            Buffer::File(file) => Ok(file),
            Buffer::Memory(_) => unreachable!("spilled above"),
        }
    }

    /// Moves the buffered bytes to the staged file.
    fn spill(&mut self) -> io::Result<()> {
        if let Buffer::Memory(cursor) = &self.buffer {
            let mut file = self.spool.create_file()?;
            file.write_all(cursor.get_ref())?;
            file.seek(SeekFrom::Start(cursor.position()))?;
            self.buffer = Buffer::File(file);
        }
        Ok(())
    }
}

impl std::fmt::Debug for ObjectWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let place = match &self.buffer {
            Buffer::Memory(cursor) => format!("memory ({} bytes)", cursor.get_ref().len()),
            Buffer::File(_) => "staged file".to_string(),
        };
        f.debug_struct("ObjectWriter").field("buffer", &place).finish()
    }
}

/// Its I/O errors carry an [`ObjectError::Io`](crate::storage::ObjectError::Io) (see
/// [`ObjectError::in_io_error`](crate::storage::ObjectError::in_io_error)), so that a full disk is an outage and a
/// permission is not, however `process` passes them on.
impl Write for ObjectWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Buffer::Memory(cursor) = &self.buffer {
            if cursor.position().saturating_add(buf.len() as u64) > MEMORY_LIMIT {
                self.spill().map_err(|e| self.spool.failed(e))?;
            }
        }
        let written = match &mut self.buffer {
            Buffer::Memory(cursor) => cursor.write(buf),
            Buffer::File(file) => file.write(buf),
        };
        written.map_err(|e| self.spool.failed(e))
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.buffer {
            Buffer::Memory(_) => Ok(()),
            Buffer::File(file) => file.flush().map_err(|e| self.spool.failed(e)),
        }
    }
}

impl Seek for ObjectWriter {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let sought = match &mut self.buffer {
            Buffer::Memory(cursor) => cursor.seek(pos),
            Buffer::File(file) => file.seek(pos),
        };
        sought.map_err(|e| self.spool.failed(e))
    }
}

impl Drop for ObjectWriter {
    /// Hands what was written to the request's staging, for the upload.
    fn drop(&mut self) {
        let buffer = std::mem::replace(&mut self.buffer, Buffer::Memory(io::Cursor::new(Vec::new())));
        self.spool.close(match buffer {
            Buffer::Memory(cursor) => Closed::Memory(cursor.into_inner()),
            Buffer::File(file) => {
                drop(file);
                Closed::File
            }
        });
    }
}
