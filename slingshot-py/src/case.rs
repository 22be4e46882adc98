//! Case values across the binding: the one converter from a Python object to a
//! [`CaseValue`] (and back), for `process`'s outputs and the harness's routes
//! alike.
//!
//! Python's `True` and `1` are different cases, as `true` and `1` are in the
//! sys-map's JSON: a `bool` is checked before an `int` (of which it is a
//! subclass). An integer case is one the sys-map's JSON can name: it fits in
//! `i64` or `u64`.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyInt, PyString};

use slingshot::CaseValue;

/// Characters of a refused value's `repr` that a message shows.
const SHOWN: usize = 80;

/// A case, converted once by [`from_py`]: what `slingshot._runtime` hands
/// back for each output `process` produced (`_native.Case(value)` raises
/// `TypeError` for a value that is not a case).
#[pyclass(module = "slingshot._native", name = "Case", frozen)]
pub struct Case(pub(crate) CaseValue);

#[pymethods]
impl Case {
    #[new]
    fn new(value: &Bound<'_, PyAny>) -> PyResult<Case> {
        from_py(value).map(Case)
    }

    /// The case as a Python `bool`, `int` or `str`.
    #[getter]
    fn value<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.0)
    }

    fn __repr__(&self) -> String {
        format!("Case({})", self.0)
    }
}

/// The case `value` is: a `bool`, an `int` that fits in `i64` or `u64`, or a
/// `str` (subclasses included). Anything else is a `TypeError` that says
/// what a case is; every place that takes a case from Python comes here.
pub(crate) fn from_py(value: &Bound<'_, PyAny>) -> PyResult<CaseValue> {
    if value.is_instance_of::<PyBool>() {
        return Ok(CaseValue::Bool(value.is_truthy()?));
    }
    if value.is_instance_of::<PyInt>() {
        if let Ok(i) = value.extract::<i64>() {
            return Ok(CaseValue::Int(i.into()));
        }
        if let Ok(u) = value.extract::<u64>() {
            return Ok(CaseValue::Int(u.into()));
        }
    } else if value.is_instance_of::<PyString>() {
        return Ok(CaseValue::Str(value.extract::<String>()?.into()));
    }
    Err(not_a_case(value))
}

/// The one message for a value that is not a case.
fn not_a_case(value: &Bound<'_, PyAny>) -> PyErr {
    let mut shown = value.repr().map(|r| r.to_string()).unwrap_or_else(|_| "?".to_string());
    if let Some((cut, _)) = shown.char_indices().nth(SHOWN) {
        shown.truncate(cut);
        shown.push('…');
    }
    let kind = value
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_string());
    PyTypeError::new_err(format!(
        "{shown} ({kind}) is not a case: a case is a bool, an int that fits in i64 or u64, or a str, \
         as the sys-map's routes are"
    ))
}

/// `case` as a Python `bool`, `int` or `str`.
pub(crate) fn to_py<'py>(py: Python<'py>, case: &CaseValue) -> PyResult<Bound<'py, PyAny>> {
    Ok(match case {
        CaseValue::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        CaseValue::Int(i) => i.into_pyobject(py)?.into_any(),
        CaseValue::Huge(u) => u.into_pyobject(py)?.into_any(),
        CaseValue::Str(s) => PyString::new(py, s).into_any(),
    })
}
