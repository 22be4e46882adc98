//! `slingshot.testing.Harness`'s native half: `slingshot::testing::Harness` for a registered Python service.

use std::sync::Mutex;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyList;

use slingshot::testing::Harness as RustHarness;
use slingshot::CaseValue;
use slingshot::ServiceDef;

use crate::case;
use crate::failure::Failed;

/// A temporary object store, SQLite database and routes for one service;
/// `invoke(id)` runs `process` as the service would.
#[pyclass(module = "slingshot._native", name = "Harness", frozen)]
pub struct Harness {
    inner: Mutex<Option<RustHarness>>,
}

impl Harness {
    fn update(&self, f: impl FnOnce(RustHarness) -> RustHarness) -> PyResult<()> {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let harness = guard
            .take()
            .ok_or_else(|| PyRuntimeError::new_err("the harness is unusable after an earlier error"))?;
        *guard = Some(f(harness));
        Ok(())
    }

    fn with<T>(&self, f: impl FnOnce(&RustHarness) -> T) -> PyResult<T> {
        let guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        guard
            .as_ref()
            .map(f)
            .ok_or_else(|| PyRuntimeError::new_err("the harness is unusable after an earlier error"))
    }
}

/// What one `invoke` did: `slingshot.testing.Invocation`.
#[pyclass(module = "slingshot._native", name = "Invocation", frozen, get_all)]
pub struct Invocation {
    /// The `(id, case)` pairs `process` produced.
    outputs: Py<PyList>,
    /// `(queue, id)` the outputs route to (nothing is sent).
    routes: Py<PyList>,
    /// Outputs whose case has no route.
    unrouted: Py<PyList>,
    /// `(bucket, key, size)` of every object uploaded.
    written: Py<PyList>,
}

#[pymethods]
impl Invocation {
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "Invocation(outputs={}, routes={}, unrouted={}, written={})",
            self.outputs.bind(py).repr()?,
            self.routes.bind(py).repr()?,
            self.unrouted.bind(py).repr()?,
            self.written.bind(py).repr()?
        ))
    }
}

/// `(id, case)` pairs as a Python list.
fn pairs<'py>(py: Python<'py>, pairs: &[(u64, CaseValue)]) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for (id, case) in pairs {
        list.append((id, case::to_py(py, case)?))?;
    }
    Ok(list)
}

#[pymethods]
impl Harness {
    #[new]
    fn new(name: &str) -> PyResult<Harness> {
        ServiceDef::find(name).map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        Ok(Harness {
            inner: Mutex::new(Some(RustHarness::new(name))),
        })
    }

    /// Routes outputs with `case` to `queues`.
    fn route(&self, case: &Bound<'_, PyAny>, queues: Vec<String>) -> PyResult<()> {
        let case = case::from_py(case)?;
        let queues: Vec<&str> = queues.iter().map(String::as_str).collect();
        self.update(|h| match case {
            CaseValue::Bool(b) => h.route(b, &queues),
            CaseValue::Int(i) => h.route(i, &queues),
            CaseValue::Huge(u) => h.route(u, &queues),
            CaseValue::Str(s) => h.route(s.into_owned(), &queues),
        })
    }

    /// Maps bucket reference `reference` to `bucket`.
    fn bucket(&self, reference: &str, bucket: &str) -> PyResult<()> {
        self.update(|h| h.bucket(reference, bucket))
    }

    /// Stores `content` as object `id` of the bucket behind `reference`.
    fn object(&self, reference: &str, id: u64, content: Vec<u8>) -> PyResult<()> {
        self.update(|h| h.object(reference, id, content))
    }

    /// The bytes of object `id` behind `reference`, or `None`.
    fn read(&self, reference: &str, id: u64) -> PyResult<Option<Vec<u8>>> {
        self.with(|h| h.read(reference, id))
    }

    /// The SQLite file the service's connection opens.
    fn database_path(&self) -> PyResult<String> {
        self.with(|h| h.database_path().display().to_string())
    }

    /// Runs `process` for `id`. Answers an [`Invocation`], or a [`Failed`]
    /// when the request failed.
    fn invoke<'py>(&self, py: Python<'py>, id: u64) -> PyResult<Bound<'py, PyAny>> {
        let result = py.detach(|| self.with(|h| h.invoke(id)))?;
        match result {
            Ok(run) => {
                let written: Vec<(String, String, u64)> = run
                    .executed
                    .written
                    .iter()
                    .map(|w| (w.bucket.clone(), w.key.clone(), w.size))
                    .collect();
                let invocation = Invocation {
                    outputs: pairs(py, &run.executed.outputs)?.unbind(),
                    routes: PyList::new(py, run.routes)?.unbind(),
                    unrouted: pairs(py, &run.unrouted)?.unbind(),
                    written: PyList::new(py, written)?.unbind(),
                };
                Ok(Bound::new(py, invocation)?.into_any())
            }
            Err(failure) => Ok(Bound::new(py, Failed::from_failure(failure))?.into_any()),
        }
    }
}
