//! The `process` contract in types: what each parameter may be and what the function may return.
//!
//! `#[slingshot::microservice]` checks the *shape* of a signature (a `u64`
//! first, references after it, a return type); everything about *types* is
//! checked by rustc through the traits here, whose `on_unimplemented`
//! messages are what a user sees for a wrong parameter or return type.

use crate::case::{Case, CaseDomain, CaseValue};
use crate::error::AnyError;
use crate::storage::{ObjectError, ObjectReader, ObjectWriter};

/// `read_file(key, id)`: opens object `id` of the bucket behind reference
/// `key` (`"in"`, `"out"`, ...) for reading. The reader streams: memory does
/// not grow with the object's size.
pub type ReadFileFn = dyn Fn(&str, u64) -> Result<ObjectReader, ObjectError> + Send + Sync;

/// `write_file(key, id)`: opens a local file staged for object `id` of the
/// bucket behind `key`. It is uploaded only after `process` returns
/// successfully, and never if it fails.
pub type WriteFileFn = dyn Fn(&str, u64) -> Result<ObjectWriter, ObjectError> + Send + Sync;

/// Facts about the request being processed, for `process` functions that
/// take `&RequestContext`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RequestContext {
    /// The service processing the request.
    pub service: &'static str,
    /// The request ID.
    pub request: u64,
    /// 1 on the first try, 2 on the first retry, and so on.
    pub attempt: u32,
    /// Whether the broker delivered this message before (to a consumer that
    /// did not acknowledge it).
    pub redelivered: bool,
    /// An ID that follows the request through the pipeline.
    pub trace_id: String,
}

/// Everything a `process` call may borrow by shared reference.
#[doc(hidden)]
pub struct Parts<'a> {
    pub read_file: &'a ReadFileFn,
    pub write_file: &'a WriteFileFn,
    pub context: &'a RequestContext,
}

/// A type `process` may take by shared reference.
#[diagnostic::on_unimplemented(
    message = "slingshot cannot pass `&{Self}` to `process`",
    label = "unsupported parameter",
    note = "after the request ID, `process` may take `&ReadFileFn`, `&WriteFileFn` and `&RequestContext`",
    note = "a database connection is passed as `&mut`: `&mut diesel::PgConnection`, `&mut diesel::SqliteConnection` or `&mut slingshot::AnyConnection`"
)]
pub trait RefParam {
    #[doc(hidden)]
    fn from_parts<'a>(parts: &Parts<'a>) -> &'a Self;
}

#[diagnostic::do_not_recommend]
impl RefParam for ReadFileFn {
    fn from_parts<'a>(parts: &Parts<'a>) -> &'a Self {
        parts.read_file
    }
}

#[diagnostic::do_not_recommend]
impl RefParam for WriteFileFn {
    fn from_parts<'a>(parts: &Parts<'a>) -> &'a Self {
        parts.write_file
    }
}

#[diagnostic::do_not_recommend]
impl RefParam for RequestContext {
    fn from_parts<'a>(parts: &Parts<'a>) -> &'a Self {
        parts.context
    }
}

/// The request parameter's type: `u64`.
#[diagnostic::on_unimplemented(
    message = "the request ID is a `u64`, not `{Self}`",
    label = "expected `u64`",
    note = "the first parameter of `process` receives the request ID: `request: u64`"
)]
pub trait RequestId {
    #[doc(hidden)]
    fn from_id(id: u64) -> Self;
}

#[diagnostic::do_not_recommend]
impl RequestId for u64 {
    fn from_id(id: u64) -> Self {
        id
    }
}

/// What `process` returns when it is not a `Result`: the output IDs, each
/// with its case variable. Any `IntoIterator` of `(u64, Case)` pairs works:
/// `Vec`, arrays, `Option`, iterators.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a collection of `(u64, Case)` outputs",
    label = "`process` must return its output IDs with their case variables",
    note = "return e.g. `Vec<(u64, bool)>`, `[(u64, &'static str); N]`, `Option<(u64, i32)>` or `Result<Vec<(u64, String)>, AnyError>`",
    note = "a case variable is a `bool`, an integer, a `String`/`&'static str`, or an enum with `#[derive(slingshot::Case)]`"
)]
pub trait Outputs {
    /// The case variable's type.
    type Case: Case;
    /// Converts the outputs for routing.
    fn into_outputs(self) -> Vec<(u64, CaseValue)>;
}

impl<I, K> Outputs for I
where
    I: IntoIterator<Item = (u64, K)>,
    K: Case,
{
    type Case = K;
    fn into_outputs(self) -> Vec<(u64, CaseValue)> {
        self.into_iter().map(|(id, case)| (id, case.to_case())).collect()
    }
}

/// `Result<T, E>` seen through its parts, so aliases such as
/// `anyhow::Result<T>` work.
#[doc(hidden)]
pub trait ResultLike {
    type Ok;
    type Err;
    fn into_result(self) -> Result<Self::Ok, Self::Err>;
}

impl<T, E> ResultLike for Result<T, E> {
    type Ok = T;
    type Err = E;
    fn into_result(self) -> Result<T, E> {
        self
    }
}

/// An error type `process` may fail with: anything that converts into
/// [`AnyError`](crate::AnyError).
#[diagnostic::on_unimplemented(
    message = "`process` cannot fail with `{Self}`: it does not convert into `slingshot::AnyError`",
    label = "this error type cannot become `Box<dyn Error + Send + Sync>`",
    note = "use `slingshot::AnyError`, `anyhow::Error`, or a type implementing `std::error::Error + Send + Sync + 'static`"
)]
pub trait ProcessError {
    #[doc(hidden)]
    fn into_any(self) -> AnyError;
}

impl<E> ProcessError for E
where
    E: Into<AnyError>,
{
    fn into_any(self) -> AnyError {
        self.into()
    }
}

/// A `process` return value made uniform: the outputs, or the error.
pub type Outcome = Result<Vec<(u64, CaseValue)>, AnyError>;

/// How generated code handles a return type `R`: converting a value and
/// naming the case type's domain. Built by one generic function per return
/// form, so a wrong type is reported once, at the user's return type.
#[doc(hidden)]
pub struct Returns<R> {
    convert: fn(R) -> Outcome,
    domain: fn() -> CaseDomain,
}

impl<R> Returns<R> {
    /// Converts a returned value.
    pub fn convert(&self, value: R) -> Outcome {
        (self.convert)(value)
    }

    /// The values the case type can take.
    pub fn domain(&self) -> CaseDomain {
        (self.domain)()
    }
}

/// For `Result<C, E>` return types (aliases such as `anyhow::Result<C>` included).
#[doc(hidden)]
pub fn returns_result<R>() -> Returns<R>
where
    R: ResultLike,
    R::Ok: Outputs,
    R::Err: ProcessError,
{
    Returns {
        convert: |value| {
            value
                .into_result()
                .map(Outputs::into_outputs)
                .map_err(ProcessError::into_any)
        },
        domain: <<R::Ok as Outputs>::Case as Case>::domain,
    }
}

/// For return types that are the outputs themselves.
#[doc(hidden)]
pub fn returns_outputs<C: Outputs>() -> Returns<C> {
    Returns {
        convert: |value| Ok(value.into_outputs()),
        domain: <C::Case as Case>::domain,
    }
}
