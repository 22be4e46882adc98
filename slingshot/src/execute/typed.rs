//! Typed objects: the JSON documents a service reads and writes as Rust (or Python) values, and the schemas that describe them.

/// One typed object of a service: a bucket reference whose objects hold
/// documents of one type, with that type's JSON Schema. The AsyncAPI
/// document and `NAME schema` show them.
#[derive(Debug, Clone, PartialEq)]
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

/// Whether a service reads or writes a typed object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// `process` reads it (`Json<T>`, `read_json`, a Python model parameter).
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
