//! `slingshot.Client`'s native half: [`slingshot::Client`] on a tokio runtime of the client's own, outcomes handed to Python as the JSON services send, and [`CallError`] raised as `slingshot.CallError` and its subclasses.
//!
//! Each client owns a small tokio runtime (one worker thread,
//! `slingshot-client`): the broker connection, its heartbeats and the reply
//! queue's consumer run there between calls, so replies that come late are
//! still acknowledged. A call blocks the calling Python thread without
//! holding the interpreter, waking every [`SIGNAL_CHECK`] to let Python
//! handle Ctrl-C (which abandons the call). Closing the client, or the last
//! reference to it going away, stops that runtime: its connection ends, and
//! RabbitMQ deletes the reply queue with it.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use serde::Serialize;

use slingshot::client::Submission as RustSubmission;
use slingshot::sysmap::BrokerBackend;
use slingshot::{CallError, CallOptions, Runtime, ServiceDef, Settings};

/// The Python module that defines `CallError` and its subclasses.
const ERRORS: &str = "slingshot.client";

/// How long a wait runs, detached from the interpreter, before it lets
/// Python handle a pending signal (Ctrl-C raises `KeyboardInterrupt` and
/// abandons the call).
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

/// A lock that a panic elsewhere cannot make unusable: the data behind it is
/// a handle that is either there or not.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A tokio runtime that, when dropped, stops without waiting for its tasks
/// (the broker connection's and the reply queue's, which never end by
/// themselves), so that dropping it never blocks the interpreter.
struct Tokio(Option<tokio::runtime::Runtime>);

impl Tokio {
    /// Runs `future` to its end on this runtime, from this Python thread;
    /// see [`wait`].
    fn wait<F>(&self, py: Python<'_>, future: F) -> PyResult<F::Output>
    where
        F: Future + Send,
        F::Output: Send,
    {
        let tokio = self.0.as_ref().ok_or_else(|| closed(py))?;
        wait(py, tokio, future)
    }
}

impl Drop for Tokio {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// What an open client calls with. Calls and submissions in progress hold
/// it too: closing the client lets them end before the runtime stops.
struct Live {
    /// Calls services.
    client: slingshot::Client,
    /// Owns the broker and the sys-map client behind `client`.
    _runtime: Runtime,
    /// Runs both; declared last, so it stops after they are dropped.
    tokio: Tokio,
}

/// Runs `future` on `tokio` from this Python thread, without holding the
/// interpreter, letting Python handle signals every [`SIGNAL_CHECK`]: an
/// exception a signal handler raises (`KeyboardInterrupt`) drops the future.
fn wait<F>(py: Python<'_>, tokio: &tokio::runtime::Runtime, future: F) -> PyResult<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    let mut future = std::pin::pin!(future);
    loop {
        // The timer is made inside `block_on`: tokio's timers need its context.
        let slice = py.detach(|| tokio.block_on(async { tokio::time::timeout(SIGNAL_CHECK, future.as_mut()).await }));
        match slice {
            Ok(output) => return Ok(output),
            Err(_elapsed) => py.check_signals()?,
        }
    }
}

/// Calls services: `slingshot.Client`'s native half (see `slingshot/client.py`).
#[pyclass(module = "slingshot._native", name = "Client", frozen)]
pub struct Client {
    /// `None` once closed.
    live: Mutex<Option<Arc<Live>>>,
    /// The sys-map location, for `repr`.
    location: String,
}

impl Client {
    fn live(&self, py: Python<'_>) -> PyResult<Arc<Live>> {
        lock(&self.live).clone().ok_or_else(|| closed(py))
    }
}

#[pymethods]
impl Client {
    /// Opens the sys-map at `sys_map` (`SLINGSHOT_SYS_MAP` overrides it, as
    /// it does a service's) with the settings of the `SLINGSHOT_*`
    /// environment variables, connects to its RabbitMQ, and follows
    /// submitted requests through `services` (`None`: every service
    /// registered in this process so far).
    #[new]
    #[pyo3(signature = (sys_map, services = None))]
    fn new(py: Python<'_>, sys_map: &str, services: Option<Vec<String>>) -> PyResult<Client> {
        let location = std::env::var("SLINGSHOT_SYS_MAP")
            .ok()
            .filter(|location| !location.trim().is_empty())
            .unwrap_or_else(|| sys_map.to_string());
        let settings = Settings::from_env().map_err(|e| PyValueError::new_err(e.to_string()))?;
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("slingshot-client")
            .enable_all()
            .build()
            .map_err(|e| call_error_text(py, format!("cannot start the client's tokio runtime: {e}")))?;
        let tokio = Tokio(Some(tokio));
        let runtime = tokio
            .wait(py, Runtime::connect(&location, settings))?
            .map_err(|e| call_error_text(py, e.to_string()))?;
        if matches!(runtime.sysmap().backends().broker, BrokerBackend::Memory) {
            return Err(call_error_text(
                py,
                format!(
                    "{}: the sys-map names no RabbitMQ, and a client reaches services only through RabbitMQ \
                     (the embedded default's in-process broker would be the client's own, shared by no service)",
                    runtime.sysmap().describe()
                ),
            ));
        }
        let services = services.unwrap_or_else(|| ServiceDef::all().iter().map(|def| def.name.to_string()).collect());
        let client = runtime.client_following(services);
        Ok(Client {
            live: Mutex::new(Some(Arc::new(Live {
                client,
                _runtime: runtime,
                tokio,
            }))),
            location,
        })
    }

    /// Sends `id` to `service` and returns its outcome as the JSON the
    /// service sent, parsed. Raises `NeverPickedUp`, `StillRunning`,
    /// `RepliesLost`, or `CallError` for the sys-map or the broker.
    #[pyo3(signature = (service, id, timeout = 30.0, run_late = false))]
    fn call(&self, py: Python<'_>, service: &str, id: u64, timeout: f64, run_late: bool) -> PyResult<Py<PyAny>> {
        let mut options = CallOptions::new(seconds(timeout)?);
        options.run_late = run_late;
        let live = self.live(py)?;
        let outcome = live
            .tokio
            .wait(py, live.client.call_with(service, id, options))?
            .map_err(|e| call_error(py, e))?;
        Ok(to_python(py, &outcome)?.unbind())
    }

    /// Sends `id` to `service`, asking every stage it reaches to report.
    fn submit(&self, py: Python<'_>, service: &str, id: u64) -> PyResult<Submission> {
        let live = self.live(py)?;
        let submission = live
            .tokio
            .wait(py, live.client.submit(service, id))?
            .map_err(|e| call_error(py, e))?;
        Ok(Submission {
            inner: Mutex::new(Some(submission)),
            live,
            service: service.to_string(),
            id,
        })
    }

    /// Makes no more calls; calls and submissions in progress end first,
    /// then the connection closes. Closing again does nothing.
    fn close(&self) {
        let live = lock(&self.live).take();
        drop(live);
    }

    /// Whether `close` was called.
    #[getter]
    fn closed(&self) -> bool {
        lock(&self.live).is_none()
    }

    fn __repr__(&self) -> String {
        let state = if self.closed() { ", closed" } else { "" };
        format!("<slingshot.Client {:?}{state}>", self.location)
    }
}

/// A request submitted with `Client.submit`: `slingshot.Submission`'s native half.
#[pyclass(module = "slingshot._native", name = "Submission", frozen)]
pub struct Submission {
    /// `None` while a wait for it runs.
    inner: Mutex<Option<RustSubmission>>,
    /// The client's connection, which the reports arrive on.
    live: Arc<Live>,
    /// The first stage.
    service: String,
    /// The ID submitted.
    id: u64,
}

#[pymethods]
impl Submission {
    /// Waits until every stage the request reached reported and none has
    /// work left for it: `{"stages": [...], "ended_at": [...]}`. Raises
    /// `Unfinished` after `timeout` seconds; waiting again goes on from there.
    #[pyo3(signature = (timeout = 60.0))]
    fn wait_until_done(&self, py: Python<'_>, timeout: f64) -> PyResult<Py<PyAny>> {
        let timeout = seconds(timeout)?;
        let mut submission = lock(&self.inner).take().ok_or_else(|| {
            call_error_text(
                py,
                format!(
                    "request {} to {}: another wait for it is running, or one was interrupted",
                    self.id, self.service
                ),
            )
        })?;
        let (submission, done) = self.live.tokio.wait(py, async move {
            let done = submission.wait_until_done(timeout).await;
            (submission, done)
        })?;
        *lock(&self.inner) = Some(submission);
        let done = done.map_err(|e| call_error(py, e))?;
        Ok(to_python(py, &done)?.unbind())
    }

    /// The service the request was sent to.
    #[getter]
    fn service(&self) -> &str {
        &self.service
    }

    /// The request ID.
    #[getter]
    fn id(&self) -> u64 {
        self.id
    }

    fn __repr__(&self) -> String {
        format!("<slingshot.Submission {} to {:?}>", self.id, self.service)
    }
}

/// `seconds` as a timeout, or `ValueError`.
fn seconds(seconds: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(seconds).map_err(|_| {
        PyValueError::new_err(format!(
            "timeout must be a finite number of seconds >= 0, not {seconds}"
        ))
    })
}

/// `value` serialised as JSON, then read by Python's `json.loads`: exactly
/// the wire format, as dicts and lists.
fn to_python<'py, T: Serialize>(py: Python<'py>, value: &T) -> PyResult<Bound<'py, PyAny>> {
    let text = serde_json::to_string(value).map_err(|e| call_error_text(py, format!("cannot serialise: {e}")))?;
    py.import("json")?.getattr("loads")?.call1((text,))
}

/// The error `slingshot.client.<class>(message)`, with `attributes` set on it.
fn raise<'py>(
    py: Python<'py>,
    class: &str,
    message: String,
    attributes: &[(&'static str, Bound<'py, PyAny>)],
) -> PyErr {
    let made = (|| -> PyResult<PyErr> {
        let error = py.import(ERRORS)?.getattr(class)?.call1((message,))?;
        for (name, value) in attributes {
            error.setattr(*name, value)?;
        }
        Ok(PyErr::from_value(error))
    })();
    made.unwrap_or_else(|e| e)
}

/// `slingshot.CallError(message)`.
fn call_error_text(py: Python<'_>, message: String) -> PyErr {
    raise(py, "CallError", message, &[])
}

/// Using a client after `close`.
fn closed(py: Python<'_>) -> PyErr {
    call_error_text(py, "the client is closed".into())
}

/// The attributes of an exception: name and value.
type Attributes<'py> = Vec<(&'static str, Bound<'py, PyAny>)>;

/// `error` as the Python exception of its kind; its message is the Rust
/// error's, its details are attributes.
fn call_error<'py>(py: Python<'py>, error: CallError) -> PyErr {
    let message = error.to_string();
    let attributes = (|| -> PyResult<(&str, Attributes<'py>)> {
        Ok(match error {
            CallError::NeverPickedUp {
                service,
                queue,
                id,
                timeout,
                expires,
                ..
            } => (
                "NeverPickedUp",
                vec![
                    ("service", service.into_pyobject(py)?.into_any()),
                    ("queue", queue.into_pyobject(py)?.into_any()),
                    ("id", id.into_pyobject(py)?.into_any()),
                    ("timeout", timeout.as_secs_f64().into_pyobject(py)?.into_any()),
                    ("expires", expires.into_pyobject(py)?.to_owned().into_any()),
                ],
            ),
            CallError::StillRunning {
                service,
                id,
                attempt,
                timeout,
                ..
            } => (
                "StillRunning",
                vec![
                    ("service", service.into_pyobject(py)?.into_any()),
                    ("id", id.into_pyobject(py)?.into_any()),
                    ("attempt", attempt.into_pyobject(py)?.into_any()),
                    ("timeout", timeout.as_secs_f64().into_pyobject(py)?.into_any()),
                ],
            ),
            CallError::Unfinished {
                done, waiting, timeout, ..
            } => (
                "Unfinished",
                vec![
                    ("done", to_python(py, &done)?),
                    ("waiting", to_python(py, &waiting)?),
                    ("timeout", timeout.as_secs_f64().into_pyobject(py)?.into_any()),
                ],
            ),
            CallError::RepliesLost { id, .. } => ("RepliesLost", vec![("id", id.into_pyobject(py)?.into_any())]),
            _ => ("CallError", Vec::new()),
        })
    })();
    match attributes {
        Ok((class, attributes)) => raise(py, class, message, &attributes),
        Err(e) => e,
    }
}
