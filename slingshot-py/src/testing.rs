//! `slingshot.testing.Harness`'s native half: `slingshot::testing::Harness` for a registered Python service.

use std::sync::Mutex;

use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyInt, PyList, PyString};

use slingshot::testing::Harness as RustHarness;
use slingshot::CaseValue;
use slingshot::ServiceDef;

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

fn case_of(value: &Bound<'_, PyAny>) -> PyResult<CaseValue> {
    if value.is_instance_of::<PyBool>() {
        Ok(CaseValue::Bool(value.extract()?))
    } else if value.is_instance_of::<PyInt>() {
        Ok(CaseValue::Int(value.extract()?))
    } else if value.is_instance_of::<PyString>() {
        Ok(CaseValue::Str(value.extract::<String>()?.into()))
    } else {
        Err(PyTypeError::new_err(format!(
            "a case is a bool, an int or a str, not {}",
            value.get_type().name()?
        )))
    }
}

fn case_to_py<'py>(py: Python<'py>, case: &CaseValue) -> PyResult<Bound<'py, PyAny>> {
    Ok(match case {
        CaseValue::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        CaseValue::Int(i) => i.into_pyobject(py)?.into_any(),
        CaseValue::Huge(u) => u.into_pyobject(py)?.into_any(),
        CaseValue::Str(s) => PyString::new(py, s).into_any(),
    })
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
        let case = case_of(case)?;
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

    /// Runs `process` for `id`. Answers `("ok", outputs, routes, unrouted,
    /// written)` or `("failed", kind, message, transient)`.
    fn invoke<'py>(&self, py: Python<'py>, id: u64) -> PyResult<Bound<'py, PyAny>> {
        let result = py.detach(|| self.with(|h| h.invoke(id)))?;
        match result {
            Ok(run) => {
                let outputs = PyList::empty(py);
                for (id, case) in &run.executed.outputs {
                    outputs.append((id, case_to_py(py, case)?))?;
                }
                let unrouted = PyList::empty(py);
                for (id, case) in &run.unrouted {
                    unrouted.append((id, case_to_py(py, case)?))?;
                }
                let written: Vec<(String, String, u64)> = run
                    .executed
                    .written
                    .iter()
                    .map(|w| (w.bucket.clone(), w.key.clone(), w.size))
                    .collect();
                Ok(("ok", outputs, run.routes, unrouted, written)
                    .into_pyobject(py)?
                    .into_any())
            }
            Err(failure) => Ok(("failed", failure.kind.as_str(), failure.message, failure.transient)
                .into_pyobject(py)?
                .into_any()),
        }
    }
}
