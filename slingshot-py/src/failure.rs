//! Failures across the binding: the failure kinds Python names, and
//! [`Failed`], the one shape of a failed `process` call on both sides.
//!
//! `slingshot._runtime.call` answers a `Failed` for a `process` that raised,
//! and the harness's `invoke` answers one for a request that failed; the
//! kind is a [`FailureKind`] on both, read with its `FromStr`.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use slingshot::{Failure, FailureKind};

/// Every failure kind's name ([`FailureKind::ALL`]), as the dead-letter
/// headers write it: `slingshot.FailureKind` is built from this list.
pub(crate) fn kind_names() -> Vec<&'static str> {
    FailureKind::ALL.iter().map(|kind| kind.as_str()).collect()
}

/// A failed call of `process`: what failed (`kind`, a failure kind's name),
/// the message, whether an outside system failed rather than the request
/// (`transient`), and the Python traceback when there is one.
#[pyclass(module = "slingshot._native", name = "Failed", frozen)]
pub struct Failed {
    pub(crate) failure: Failure,
    pub(crate) traceback: Option<String>,
}

impl Failed {
    /// `failure` as Python sees it (no traceback: it did not come from Python).
    pub(crate) fn from_failure(failure: Failure) -> Failed {
        Failed {
            failure,
            traceback: None,
        }
    }
}

#[pymethods]
impl Failed {
    /// `kind` must be one of `slingshot.FailureKind` (or its name);
    /// anything else is a `ValueError`.
    #[new]
    #[pyo3(signature = (kind, message, transient, traceback = None))]
    fn new(kind: String, message: String, transient: bool, traceback: Option<String>) -> PyResult<Failed> {
        let kind = kind
            .parse::<FailureKind>()
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(Failed {
            failure: Failure {
                kind,
                message,
                transient,
            },
            traceback,
        })
    }

    /// The failure kind's name (`process-error`, `storage`, `database`…).
    #[getter]
    fn kind(&self) -> &'static str {
        self.failure.kind.as_str()
    }

    /// What failed: for an exception, `Type: message (at file:line in function)`.
    #[getter]
    fn message(&self) -> &str {
        &self.failure.message
    }

    /// Whether an outside system failed (retried without using an attempt).
    #[getter]
    fn transient(&self) -> bool {
        self.failure.transient
    }

    /// The Python traceback, when the failure is an exception of `process`.
    #[getter]
    fn traceback(&self) -> Option<&str> {
        self.traceback.as_deref()
    }

    fn __repr__(&self) -> String {
        format!(
            "Failed(kind={:?}, message={:?}, transient={})",
            self.failure.kind.as_str(),
            self.failure.message,
            if self.failure.transient { "True" } else { "False" }
        )
    }
}
