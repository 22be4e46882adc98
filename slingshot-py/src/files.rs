//! The file handles a Python `process` gets: streaming readers and staged
//! writers over the runtime's `read_file`/`write_file`, valid only during the
//! request.

use std::io::{BufWriter, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use slingshot::{ObjectError, ObjectReader, ObjectWriter, ReadFileFn, WriteFileFn};

use crate::{InvalidInput, ObjectNotFound, StorageError};

/// Writes are buffered this much before they reach the staged file.
const WRITE_BUFFER: usize = 64 * 1024;
/// Reads of at most this many bytes go straight into the `bytes` object
/// (the buffered reader's own reads are 256 KiB).
const DIRECT_READ: usize = 256 * 1024;

/// A staged file's writer, shared by its Python handle and the request's
/// [`Files`] (which closes it when the request ends).
type SharedWriter = Arc<Mutex<Option<BufWriter<ObjectWriter>>>>;

/// A lock that a panic elsewhere cannot make unusable: the data behind it is
/// a handle that is either there or not.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// `ObjectError` as the Python exception `process` sees.
fn object_error(error: &ObjectError) -> PyErr {
    let (err, transient) = if error.is_not_found() {
        (ObjectNotFound::new_err(error.to_string()), false)
    } else {
        (StorageError::new_err(error.to_string()), error.is_transient())
    };
    mark(err, transient)
}

/// An I/O error of a reader or writer as a `StorageError`, `transient` as
/// the error says: a download that broke off or a full disk is an outage, a
/// reader of an ended request or a permission is not.
fn io_error(what: &str, error: std::io::Error) -> PyErr {
    let transient = ObjectError::io_error_is_transient(&error);
    mark(StorageError::new_err(format!("{what}: {error}")), transient)
}

fn mark(err: PyErr, transient: bool) -> PyErr {
    Python::attach(|py| {
        // Setting an attribute on a fresh exception instance cannot fail short of memory exhaustion.
        let _ = err.value(py).setattr("transient", transient);
    });
    err
}

fn closed() -> PyErr {
    PyValueError::new_err("I/O operation on closed file")
}

fn ended() -> PyErr {
    PyValueError::new_err("the request this file belongs to has ended: file handles are valid only inside `process`")
}

/// The `read_file`/`write_file` of one request. The runtime ends it when
/// `process` returns ([`Ending`]): writers are flushed and closed, and every
/// handle stops working.
#[pyclass(module = "slingshot._native", frozen)]
pub struct Files {
    read_file: Arc<ReadFileFn>,
    write_file: Arc<WriteFileFn>,
    live: Arc<AtomicBool>,
    writers: Arc<Mutex<Vec<SharedWriter>>>,
}

impl Files {
    pub(crate) fn new(read_file: Arc<ReadFileFn>, write_file: Arc<WriteFileFn>) -> Files {
        Files {
            read_file,
            write_file,
            live: Arc::new(AtomicBool::new(true)),
            writers: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// How the runtime ends these files, kept outside the Python object.
    pub(crate) fn ending(&self) -> Ending {
        Ending {
            live: self.live.clone(),
            writers: self.writers.clone(),
        }
    }
}

/// The end of one request's file access: [`Ending::stop`] when `process`
/// returned (with the interpreter), [`Ending::finish`] after (without it).
pub(crate) struct Ending {
    live: Arc<AtomicBool>,
    writers: Arc<Mutex<Vec<SharedWriter>>>,
}

impl Ending {
    /// Every handle stops working.
    pub(crate) fn stop(&self) {
        self.live.store(false, Ordering::SeqCst);
    }

    /// Stops the handles and flushes and closes every writer still open.
    /// An error is a failed write (the request must not succeed). Blocking.
    pub(crate) fn finish(&self) -> std::io::Result<()> {
        self.stop();
        let mut first_error = None;
        for writer in lock(&self.writers).drain(..) {
            if let Some(mut w) = lock(&writer).take() {
                if let Err(e) = w.flush() {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[pymethods]
impl Files {
    /// Opens object `id` of the bucket behind reference `key` for streaming reads.
    fn open_read(&self, py: Python<'_>, key: String, id: u64) -> PyResult<Reader> {
        if !self.live.load(Ordering::SeqCst) {
            return Err(ended());
        }
        let read_file = self.read_file.clone();
        let opened = py.detach(|| read_file(&key, id));
        let reader = opened.map_err(|e| object_error(&e))?;
        let location = reader
            .location()
            .map(|(bucket, key)| (bucket.to_string(), key.to_string()));
        Ok(Reader {
            inner: Mutex::new(Some(reader)),
            location,
            read_file: self.read_file.clone(),
            live: self.live.clone(),
            key,
            id,
        })
    }

    /// Opens a staged file for object `id` of the bucket behind `key`.
    fn open_write(&self, py: Python<'_>, key: String, id: u64) -> PyResult<Writer> {
        if !self.live.load(Ordering::SeqCst) {
            return Err(ended());
        }
        let write_file = self.write_file.clone();
        let created = py.detach(|| write_file(&key, id));
        let writer = created.map_err(|e| object_error(&e))?;
        let shared = Arc::new(Mutex::new(Some(BufWriter::with_capacity(WRITE_BUFFER, writer))));
        lock(&self.writers).push(shared.clone());
        Ok(Writer {
            inner: shared,
            name: format!("{key}/{id}"),
        })
    }
}

/// A streaming reader of one object. `read` releases the interpreter while
/// it waits for the store.
#[pyclass(module = "slingshot._native", frozen)]
pub struct Reader {
    inner: Mutex<Option<ObjectReader>>,
    /// The bucket and key the runtime says the reader reads.
    location: Option<(String, String)>,
    read_file: Arc<ReadFileFn>,
    live: Arc<AtomicBool>,
    key: String,
    id: u64,
}

#[pymethods]
impl Reader {
    /// Reads up to `size` bytes (all that is left if `size` is negative);
    /// `b""` at the end of the object. A read of at most [`DIRECT_READ`]
    /// bytes (what the buffered reader above asks for) goes straight into
    /// the `bytes` Python gets; a larger one into a buffer of what the
    /// object holds, copied once. Both without the interpreter.
    #[pyo3(signature = (size = -1))]
    fn read<'py>(&self, py: Python<'py>, size: i64) -> PyResult<Bound<'py, PyBytes>> {
        if !self.live.load(Ordering::SeqCst) {
            return Err(ended());
        }
        if let Some(wanted) = usize::try_from(size).ok().filter(|&n| n <= DIRECT_READ) {
            let mut filled = Ok(None);
            let bytes = PyBytes::new_with(py, wanted, |buffer| {
                filled = py.detach(|| self.fill(buffer));
                Ok(())
            })?;
            return match filled {
                Ok(Some(n)) if n == wanted => Ok(bytes),
                // The object ended first.
                Ok(Some(n)) => Ok(PyBytes::new(py, &bytes.as_bytes()[..n])),
                Ok(None) => Err(closed()),
                Err(e) => Err(io_error(&format!("reading {}/{}", self.key, self.id), e)),
            };
        }
        let read = py.detach(|| -> std::io::Result<Option<Vec<u8>>> {
            let mut guard = lock(&self.inner);
            let Some(reader) = guard.as_mut() else {
                return Ok(None);
            };
            // All that is left if `size` is negative; never more than the
            // object holds set aside, however large `size` is.
            let mut data = Vec::new();
            match u64::try_from(size) {
                Ok(limit) => reader.by_ref().take(limit).read_to_end(&mut data)?,
                Err(_) => reader.read_to_end(&mut data)?,
            };
            Ok(Some(data))
        });
        match read {
            Ok(Some(data)) if data.len() < DIRECT_READ => Ok(PyBytes::new(py, &data)),
            Ok(Some(data)) => large_bytes(py, &data),
            Ok(None) => Err(closed()),
            Err(e) => Err(io_error(&format!("reading {}/{}", self.key, self.id), e)),
        }
    }

    /// Starts again from the object's first byte (a new request to the store).
    fn reopen(&self, py: Python<'_>) -> PyResult<()> {
        if !self.live.load(Ordering::SeqCst) {
            return Err(ended());
        }
        let read_file = self.read_file.clone();
        // The old download goes first: two open at once per reader would
        // hold twice the connections and read-ahead for nothing.
        let reopened = py.detach(|| {
            drop(lock(&self.inner).take());
            read_file(&self.key, self.id)
        });
        *lock(&self.inner) = Some(reopened.map_err(|e| object_error(&e))?);
        Ok(())
    }

    /// The `slingshot.InvalidInput` exception (not raised: the caller raises
    /// it) saying that this object is not a valid `type_name`: what is wrong
    /// (`message`) at `path` (`lines[2].amount`, or `.` for the document
    /// itself). Its text is the runtime's [`ObjectError::Invalid`], naming
    /// the bucket and key; the exception carries them as attributes, with
    /// `type_name` and `path`.
    fn invalid(&self, py: Python<'_>, type_name: String, path: String, message: String) -> PyResult<Py<PyAny>> {
        let (bucket, key) = self
            .location
            .clone()
            .unwrap_or_else(|| (self.key.clone(), self.id.to_string()));
        let error = ObjectError::Invalid {
            bucket,
            key,
            type_name,
            path,
            message,
        };
        let exception = InvalidInput::new_err(error.to_string()).into_value(py);
        if let ObjectError::Invalid {
            bucket,
            key,
            type_name,
            path,
            ..
        } = error
        {
            let value = exception.bind(py);
            value.setattr("bucket", bucket)?;
            value.setattr("key", key)?;
            value.setattr("type_name", type_name)?;
            value.setattr("path", path)?;
        }
        Ok(exception.into_any())
    }

    /// Closes the stream. Further reads raise `ValueError`.
    fn close(&self) {
        lock(&self.inner).take();
    }

    /// Whether [`Reader::close`] was called.
    #[getter]
    fn closed(&self) -> bool {
        lock(&self.inner).is_none()
    }
}

/// `data` as a new `bytes`, copied without the interpreter and without
/// zeroing the object first (`PyBytes::new_with` would: a second pass over
/// memory that is fresh, page by page, for a large object).
fn large_bytes<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    let len = pyo3::ffi::Py_ssize_t::try_from(data.len())
        .map_err(|_| pyo3::exceptions::PyOverflowError::new_err("the object is too large for bytes"))?;
    // SAFETY: a new bytes object of `len` bytes (uninitialised contents),
    // owned here and seen by nobody else until it is returned; the copy
    // fills all of it before that. NULL is a raised MemoryError.
    unsafe {
        let bytes = Bound::from_owned_ptr_or_err(py, pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), len))?;
        let target = pyo3::ffi::PyBytes_AsString(bytes.as_ptr()) as usize;
        py.detach(|| std::ptr::copy_nonoverlapping(data.as_ptr(), target as *mut u8, data.len()));
        Ok(bytes.cast_into_unchecked())
    }
}

impl Reader {
    /// Fills `buffer` from the object, as far as it goes: the bytes read,
    /// fewer only at its end; `None` once the reader is closed. Blocking.
    fn fill(&self, buffer: &mut [u8]) -> std::io::Result<Option<usize>> {
        let mut guard = lock(&self.inner);
        let Some(reader) = guard.as_mut() else {
            return Ok(None);
        };
        let mut filled = 0;
        // One read may return less than asked; take what the stream gives before its end.
        while filled < buffer.len() {
            match reader.read(&mut buffer[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Some(filled))
    }
}

/// A staged file for one object, uploaded after `process` returns
/// successfully. `write` releases the interpreter while it writes.
#[pyclass(module = "slingshot._native", frozen)]
pub struct Writer {
    inner: SharedWriter,
    name: String,
}

impl Writer {
    fn with<T>(
        &self,
        py: Python<'_>,
        what: &str,
        f: impl FnOnce(&mut BufWriter<ObjectWriter>) -> std::io::Result<T> + Send,
    ) -> PyResult<T>
    where
        T: Send,
    {
        let done = py.detach(|| lock(&self.inner).as_mut().map(f));
        match done {
            Some(Ok(value)) => Ok(value),
            Some(Err(e)) => Err(io_error(&format!("{what} {}", self.name), e)),
            None => Err(PyValueError::new_err(format!(
                "I/O operation on closed file {}: it was closed, or the request ended",
                self.name
            ))),
        }
    }
}

#[pymethods]
impl Writer {
    /// Writes `data` (bytes) and returns how many bytes were written.
    fn write(&self, py: Python<'_>, data: &Bound<'_, PyBytes>) -> PyResult<usize> {
        let bytes: &[u8] = data.as_bytes();
        self.with(py, "writing", |w| w.write_all(bytes).map(|()| bytes.len()))
    }

    /// Pushes buffered bytes to the staged file.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, "flushing", |w| w.flush())
    }

    /// Flushes and closes the file; it is still uploaded when `process`
    /// succeeds. Closing twice is allowed.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let taken = py.detach(|| lock(&self.inner).take());
        match taken {
            Some(mut w) => py
                .detach(|| w.flush())
                .map_err(|e| io_error(&format!("closing {}", self.name), e)),
            None => Ok(()),
        }
    }

    /// Whether the file is closed.
    #[getter]
    fn closed(&self) -> bool {
        lock(&self.inner).is_none()
    }
}
