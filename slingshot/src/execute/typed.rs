//! Typed objects: the JSON documents a service reads and writes as Rust (or Python) values, and the schemas that describe them.
//!
//! `read_json` and `write_json` stream a document between an object and a
//! serde type; `Json<T>` and `JsonWriter<T>`, bound to a bucket reference
//! with `#[object("in")]`, do it for a `process` parameter, and give the
//! service's schema document each type's JSON Schema. A document that does
//! not parse as its type is an [`ObjectError::Invalid`] naming the field: a
//! failure of kind `invalid-input`, dead-lettered at once.

use std::io::{self, BufReader, BufWriter, Write};
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::contract::{Parts, ReadFileFn, WriteFileFn};
use crate::storage::ObjectError;

/// One typed object of a service: a bucket reference whose objects hold
/// documents of one type, with that type's JSON Schema. The AsyncAPI
/// document and `NAME schema` show them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectSchema {
    /// The bucket reference (`"in"`, `"out"`...).
    pub reference: String,
    /// Whether the service reads or writes the objects.
    pub direction: Direction,
    /// The type's name (`Invoice`).
    pub type_name: String,
    /// The type's JSON Schema (draft 2020-12).
    pub schema: serde_json::Value,
}

impl ObjectSchema {
    /// The schema of `T`, read or written through `reference`.
    pub fn of<T: schemars::JsonSchema>(reference: &str, direction: Direction) -> ObjectSchema {
        ObjectSchema {
            reference: reference.to_string(),
            direction,
            type_name: T::schema_name().into_owned(),
            schema: schemars::schema_for!(T).to_value(),
        }
    }
}

/// Whether a service reads or writes a typed object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// `process` reads it (`Json<T>`, a Python model parameter).
    Read,
    /// `process` writes it (`JsonWriter<T>`).
    Write,
}

impl Direction {
    /// `read` or `write`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Read => "read",
            Direction::Write => "write",
        }
    }
}

/// Reads object `id` of the bucket behind `key` as a JSON document of type
/// `T`, streaming it from the store (the document is never held as bytes).
///
/// A document that is not JSON, or not a `T`, is an
/// [`ObjectError::Invalid`] with the path of the offending field
/// (`lines[2].amount`); returned from `process`, it fails the request with
/// kind `invalid-input`, dead-lettered at once. A download that fails midway
/// is the store's error, an outage retried as any other.
///
/// ```
/// # fn f(read_file: &slingshot::ReadFileFn, request: u64) -> Result<(), slingshot::AnyError> {
/// #[derive(serde::Deserialize)]
/// struct Invoice { total: u64 }
/// let invoice: Invoice = slingshot::read_json(read_file, "in", request)?;
/// # Ok(()) }
/// ```
pub fn read_json<T: DeserializeOwned>(read_file: &ReadFileFn, key: &str, id: u64) -> Result<T, ObjectError> {
    let reader = read_file(key, id)?;
    let (bucket, object) = match reader.location() {
        Some((bucket, object)) => (bucket.to_string(), object.to_string()),
        None => (key.to_string(), id.to_string()),
    };
    let mut document = serde_json::Deserializer::from_reader(BufReader::with_capacity(64 * 1024, reader));
    let parsed = match serde_path_to_error::deserialize(&mut document) {
        // Anything after the document is no part of a `T` either.
        Ok(value) => document.end().map(|()| value).map_err(|e| (".".to_string(), e)),
        Err(error) => Err((error.path().to_string(), error.into_inner())),
    };
    parsed.map_err(|(path, inner)| {
        if inner.is_io() {
            // The download or the disk failed, not the document.
            let io = io::Error::from(inner);
            return match io.get_ref().is_some_and(|e| e.is::<ObjectError>()) {
                true => match io.into_inner().map(|e| e.downcast::<ObjectError>()) {
                    Some(Ok(object_error)) => *object_error,
                    _ => unreachable!("checked to hold an ObjectError"),
                },
                false => ObjectError::Io {
                    op: "read",
                    bucket,
                    key: object,
                    source: io,
                },
            };
        }
        ObjectError::Invalid {
            bucket,
            key: object,
            type_name: short_type_name::<T>(),
            path,
            message: inner.to_string(),
        }
    })
}

/// Writes `value` as a JSON document to object `id` of the bucket behind
/// `key`, staged like any `write_file` output: uploaded once `process`
/// returns successfully. Streams the document out as it is serialized.
///
/// The error is an I/O error, as a writer's: a failure to stage carries the
/// [`ObjectError`] inside (see [`ObjectError::in_io_error`]); a value serde
/// cannot write as JSON (a map with non-string keys) is `InvalidData`.
pub fn write_json<T: Serialize + ?Sized>(write_file: &WriteFileFn, key: &str, id: u64, value: &T) -> io::Result<()> {
    let mut writer = write_file(key, id).map_err(ObjectError::into_io_error)?;
    let mut buffered = BufWriter::with_capacity(64 * 1024, &mut writer);
    serde_json::to_writer(&mut buffered, value).map_err(io::Error::from)?;
    buffered.flush()
}

/// The last segment of `T`'s path, with its generics: `Invoice`,
/// `Vec<Line>`.
fn short_type_name<T: ?Sized>() -> String {
    let full = std::any::type_name::<T>();
    let head = full.split('<').next().unwrap_or(full);
    let start = head.rfind("::").map_or(0, |i| i + 2);
    full[start..].to_string()
}

/// A typed input object: the document `process` gets, read from object
/// `request` of the bucket reference its `#[object("...")]` names and
/// parsed as `T` before `process` runs. A document that is not a `T` fails
/// the request with kind `invalid-input` (dead-lettered at once, never
/// retried) and `process` is not called.
///
/// ```
/// use slingshot::{Json, JsonWriter};
///
/// #[derive(serde::Deserialize, schemars::JsonSchema)]
/// struct Invoice { customer: String, lines: Vec<u64> }
///
/// #[derive(serde::Serialize, schemars::JsonSchema)]
/// struct Total { customer: String, total: u64 }
///
/// #[slingshot::microservice(name = "totals", sys_map = "file:sysmap.json", main = false)]
/// fn process(
///     request: u64,
///     #[object("in")] invoice: Json<Invoice>,
///     #[object("out")] totals: JsonWriter<Total>,
/// ) -> Result<Vec<(u64, bool)>, slingshot::AnyError> {
///     let Invoice { customer, lines } = invoice.into_inner();
///     totals.write(request, &Total { customer, total: lines.iter().sum() })?;
///     Ok(vec![(request, true)])
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Json<T>(pub T);

impl<T> Json<T> {
    /// The document.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for Json<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> std::ops::DerefMut for Json<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

/// A typed output object: writes documents of type `T` to the bucket
/// reference its `#[object("...")]` names, staged like any `write_file`
/// output (uploaded once `process` returns successfully). See [`Json`].
pub struct JsonWriter<T: ?Sized> {
    write_file: Arc<WriteFileFn>,
    reference: &'static str,
    _type: PhantomData<fn(&T)>,
}

impl<T: Serialize + ?Sized> JsonWriter<T> {
    /// Writes `value` as object `id` (see [`write_json`]).
    pub fn write(&self, id: u64, value: &T) -> io::Result<()> {
        write_json(&*self.write_file, self.reference, id, value)
    }

    /// The bucket reference it writes to.
    pub fn reference(&self) -> &'static str {
        self.reference
    }
}

impl<T: ?Sized> std::fmt::Debug for JsonWriter<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonWriter")
            .field("reference", &self.reference)
            .field("type", &short_type_name::<T>())
            .finish()
    }
}

/// A type `process` may take as an object parameter, `#[object("in")]`.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "slingshot cannot bind `{Self}` to an object",
    label = "not a typed object",
    note = "an `#[object(\"...\")]` parameter is `slingshot::Json<T>` (read and checked before `process` runs) or `slingshot::JsonWriter<T>` (written by `process`)",
    note = "for the bytes of an object, take `&ReadFileFn` or `&WriteFileFn` instead"
)]
pub trait ObjectParam: Sized {
    /// The value for object `request` of `reference`.
    fn bind(parts: &Parts<'_>, reference: &'static str, request: u64) -> Result<Self, ObjectError>;
    /// Its schema, for the service's schema document.
    fn schema(reference: &'static str) -> ObjectSchema;
}

impl<T: DeserializeOwned + schemars::JsonSchema> ObjectParam for Json<T> {
    fn bind(parts: &Parts<'_>, reference: &'static str, request: u64) -> Result<Self, ObjectError> {
        read_json(&**parts.read_file, reference, request).map(Json)
    }

    fn schema(reference: &'static str) -> ObjectSchema {
        ObjectSchema::of::<T>(reference, Direction::Read)
    }
}

impl<T: Serialize + schemars::JsonSchema> ObjectParam for JsonWriter<T> {
    fn bind(parts: &Parts<'_>, reference: &'static str, _request: u64) -> Result<Self, ObjectError> {
        Ok(JsonWriter {
            write_file: parts.write_file.clone(),
            reference,
            _type: PhantomData,
        })
    }

    fn schema(reference: &'static str) -> ObjectSchema {
        ObjectSchema::of::<T>(reference, Direction::Write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_are_their_last_segment() {
        assert_eq!(short_type_name::<String>(), "String");
        assert_eq!(short_type_name::<Vec<u64>>(), "Vec<u64>");
        assert_eq!(short_type_name::<ObjectSchema>(), "ObjectSchema");
    }
}
