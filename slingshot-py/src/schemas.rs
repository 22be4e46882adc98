//! The typed objects of Python services (`slingshot.Object` parameters and
//! their Pydantic models' JSON Schemas), by service name: what
//! `ServiceDef::object_schemas` answers for a service registered at run time.

use std::collections::HashMap;
use std::sync::Mutex;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use slingshot::{Direction, ObjectSchema};

static SCHEMAS: Mutex<Option<HashMap<String, Vec<ObjectSchema>>>> = Mutex::new(None);

/// `(reference, "read" | "write", type name, JSON Schema as JSON text)` as
/// [`ObjectSchema`]s; `ValueError` for a direction or schema that is neither.
pub(crate) fn parse(objects: Vec<(String, String, String, String)>) -> PyResult<Vec<ObjectSchema>> {
    objects
        .into_iter()
        .map(|(reference, direction, type_name, schema)| {
            let direction = match direction.as_str() {
                "read" => Direction::Read,
                "write" => Direction::Write,
                other => {
                    return Err(PyValueError::new_err(format!(
                        "typed object {reference:?}: direction {other:?} is neither \"read\" nor \"write\""
                    )))
                }
            };
            let schema = serde_json::from_str(&schema).map_err(|e| {
                PyValueError::new_err(format!("typed object {reference:?}: its JSON Schema is not JSON: {e}"))
            })?;
            Ok(ObjectSchema {
                reference,
                direction,
                type_name,
                schema,
            })
        })
        .collect()
}

/// Records the typed objects of service `name` (in place of earlier ones).
pub(crate) fn set(name: &str, objects: Vec<ObjectSchema>) {
    let mut schemas = SCHEMAS.lock().unwrap_or_else(|e| e.into_inner());
    schemas
        .get_or_insert_with(HashMap::new)
        .insert(name.to_string(), objects);
}

/// `ServiceDef::objects` of every Python service.
pub(crate) fn of(name: &str) -> Vec<ObjectSchema> {
    SCHEMAS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .and_then(|schemas| schemas.get(name).cloned())
        .unwrap_or_default()
}

/// `[{"reference", "direction", "type", "schema"}...]`, as `NAME schema` prints them.
pub(crate) fn to_json(objects: &[ObjectSchema]) -> serde_json::Value {
    objects
        .iter()
        .map(|object| {
            serde_json::json!({
                "reference": object.reference,
                "direction": object.direction.as_str(),
                "type": object.type_name,
                "schema": object.schema,
            })
        })
        .collect()
}
