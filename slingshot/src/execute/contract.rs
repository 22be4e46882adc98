//! The `process` contract in types: what each parameter may be and what the function may return.
//!
//! `#[slingshot::microservice]` checks the *shape* of a signature (a `u64`
//! first, references after it, a return type); everything about *types* is
//! checked by rustc through the traits here, whose `on_unimplemented`
//! messages are what a user sees for a wrong parameter or return type.

use std::marker::PhantomData;

use super::writer::ObjectWriter;
use crate::base::case::{Case, CaseDomain, CaseValue};
use crate::error::AnyError;
use crate::storage::{ObjectError, ObjectReader};

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
    /// An ID that follows the request through the pipeline: the W3C trace
    /// ID (32 hex digits), or the legacy `x-slingshot-trace-id` the message
    /// came with.
    pub trace_id: String,
    /// The events `process` emitted, published if it succeeds.
    pub(crate) events: EventLog,
}

impl RequestContext {
    /// Facts about one request, for the runtime (and language bindings).
    #[doc(hidden)]
    pub fn new(service: &'static str, request: u64, attempt: u32, redelivered: bool, trace_id: String) -> Self {
        RequestContext {
            service,
            request,
            attempt,
            redelivered,
            trace_id,
            events: EventLog::default(),
        }
    }

    /// Emits the named event (`progress`, `invalid-input`...) about this
    /// request, with optional text `data`. Once `process` succeeded and its
    /// outputs are confirmed, each event is published to the topic exchange
    /// the service's sys-map entry names under `events`, with routing key
    /// `<service>.<event>` and the request ID as body, so any number of
    /// services subscribe to it. Nothing is published if `process` fails:
    /// a retry emits its own.
    ///
    /// A name is 1 to 64 of `a-z`, `0-9`, `-` and `_`; `data` is at most
    /// [`MAX_EVENT_DATA`] bytes.
    pub fn emit(&self, event: &str, data: &str) -> Result<(), InvalidEvent> {
        let valid = !event.is_empty()
            && event.len() <= 64
            && event
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !valid {
            return Err(InvalidEvent(format!(
                "event name {event:?}: use 1 to 64 of a-z, 0-9, - and _"
            )));
        }
        if data.len() > MAX_EVENT_DATA {
            return Err(InvalidEvent(format!(
                "event {event:?}: its data takes {} bytes, over {MAX_EVENT_DATA}",
                data.len()
            )));
        }
        self.events.push(Event {
            name: event.to_string(),
            data: data.to_string(),
        });
        Ok(())
    }
}

/// The largest `data` an event carries (it travels in a header).
pub const MAX_EVENT_DATA: usize = 4096;

/// An event name or data that cannot be emitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidEvent(String);

/// One emitted event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Its name.
    pub name: String,
    /// Its data (may be empty).
    pub data: String,
}

/// The events of one request, shared between its context and the worker.
#[derive(Debug, Clone, Default)]
pub(crate) struct EventLog(std::sync::Arc<std::sync::Mutex<Vec<Event>>>);

impl EventLog {
    fn push(&self, event: Event) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(event);
    }

    /// The events emitted, leaving none.
    pub(crate) fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

/// Everything a `process` call may borrow by shared reference. The file
/// functions are shared so that a language binding can hand out handles that
/// own them.
#[doc(hidden)]
pub struct Parts<'a> {
    pub read_file: &'a std::sync::Arc<ReadFileFn>,
    pub write_file: &'a std::sync::Arc<WriteFileFn>,
    pub context: &'a RequestContext,
}

impl std::fmt::Debug for Parts<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parts")
            .field("context", self.context)
            .finish_non_exhaustive()
    }
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
        &**parts.read_file
    }
}

#[diagnostic::do_not_recommend]
impl RefParam for WriteFileFn {
    fn from_parts<'a>(parts: &Parts<'a>) -> &'a Self {
        &**parts.write_file
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

/// What `process` returns when it is not a `Result`, and what a `Result`
/// holds when it is `Ok`: the output IDs, each with its case variable. Any
/// `IntoIterator` of [`Output`]s works: `Vec`, arrays, `Option`, maps from
/// ID to case, iterators.
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

impl<I> Outputs for I
where
    I: IntoIterator,
    I::Item: Output,
{
    type Case = <I::Item as Output>::Case;
    fn into_outputs(self) -> Vec<(u64, CaseValue)> {
        self.into_iter().map(Output::into_output).collect()
    }
}

/// One output of `process`: `(id, case)`, the ID to send on and the case
/// variable that picks its queues.
#[diagnostic::on_unimplemented(
    message = "`process` returns `(u64, Case)` pairs, not `{Self}`",
    label = "each output is an ID with its case variable",
    note = "pair every output ID with the case variable the sys-map routes it by, e.g. `Vec<(u64, bool)>` and `(id, true)`",
    note = "a case variable is a `bool`, an integer, a `String`/`&'static str`, or an enum with `#[derive(slingshot::Case)]`"
)]
pub trait Output {
    /// The case variable's type.
    type Case: Case;
    /// The ID and its case value.
    fn into_output(self) -> (u64, CaseValue);
}

impl<K: Case> Output for (u64, K) {
    type Case = K;
    fn into_output(self) -> (u64, CaseValue) {
        let (id, case) = self;
        (id, case.to_case())
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

/// The form of a return type that is a `Result<C, E>`, whatever it is
/// called: `anyhow::Result<C>`, `std::io::Result<C>`, a user's alias.
#[doc(hidden)]
#[derive(Debug)]
pub struct Fallible;

/// The form of a return type that is the outputs themselves.
#[doc(hidden)]
#[derive(Debug)]
pub struct Plain;

/// A return type split into its outputs and its error, in one of two forms.
///
/// Why a form, and not one trait implemented for `Result<C, E>` and for
/// every `C: Outputs`: a `Result` is itself an `IntoIterator` (of its `Ok`
/// value), so `Result<(u64, K), E>` would be both and coherence rejects the
/// two impls; leaving the form for rustc to infer fails on that same type
/// ("type annotations needed"). So generated code asks a [`FormProbe`], which
/// tells a `Result` by what it is, under any name. The impls have no
/// bounds: the bounds of [`returns`] are what a wrong type fails, each with
/// its own message at the user's return type.
#[doc(hidden)]
pub trait Returns<Form> {
    /// `C`: the outputs.
    type Outputs;
    /// `E`, or [`Infallible`](core::convert::Infallible) for plain outputs.
    type Error;
    /// Splits a returned value.
    fn into_result(self) -> Result<Self::Outputs, Self::Error>;
}

impl<C, E> Returns<Fallible> for Result<C, E> {
    type Outputs = C;
    type Error = E;
    fn into_result(self) -> Result<C, E> {
        self
    }
}

impl<C> Returns<Plain> for C {
    type Outputs = C;
    type Error = core::convert::Infallible;
    fn into_result(self) -> Result<C, core::convert::Infallible> {
        Ok(self)
    }
}

/// Finds the form of a return type `R` by what it is, not by what it is
/// called: `FormProbe::<R>::new().form()` is [`Fallible`] when `R` is a
/// `Result` (the inherent method, which method resolution prefers) and
/// [`Plain`] otherwise ([`PlainForm::form`], which every probe has).
#[doc(hidden)]
#[derive(Debug)]
pub struct FormProbe<R>(PhantomData<fn() -> R>);

impl<R> FormProbe<R> {
    /// A probe for a type generated code can name.
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        FormProbe(PhantomData)
    }

    /// A probe for the type of `value` (an `impl Trait` cannot be named).
    pub fn of(_value: &R) -> Self {
        FormProbe(PhantomData)
    }
}

impl<C, E> FormProbe<Result<C, E>> {
    /// A `Result` is [`Fallible`].
    pub fn form(&self) -> Fallible {
        Fallible
    }
}

/// The form of everything that is not a `Result`. Generated code imports
/// it so that `form()` falls back to it.
#[doc(hidden)]
pub trait PlainForm {
    /// Anything else is [`Plain`].
    fn form(&self) -> Plain {
        Plain
    }
}

impl<R> PlainForm for FormProbe<R> {}

/// How generated code handles a return type `R`: converting a value and
/// naming the case type's domain. Built by [`returns`], so that a wrong
/// type is reported once, at the user's return type.
#[doc(hidden)]
#[derive(Debug)]
pub struct Conversion<R> {
    convert: fn(R) -> Outcome,
    domain: fn() -> CaseDomain,
}

impl<R> Conversion<R> {
    /// Converts a returned value.
    pub fn convert(&self, value: R) -> Outcome {
        (self.convert)(value)
    }

    /// The values the case type can take.
    pub fn domain(&self) -> CaseDomain {
        (self.domain)()
    }
}

/// The conversion of return type `R` in `form` (from a [`FormProbe`]): its
/// outputs must be [`Outputs`] and its error a [`ProcessError`].
#[doc(hidden)]
pub fn returns<R, F>(_form: F) -> Conversion<R>
where
    R: Returns<F>,
    R::Outputs: Outputs,
    R::Error: ProcessError,
{
    Conversion {
        convert: |value| {
            value
                .into_result()
                .map(Outputs::into_outputs)
                .map_err(ProcessError::into_any)
        },
        domain: <<R::Outputs as Outputs>::Case as Case>::domain,
    }
}

/// [`returns`] for an `impl Trait` return type, which generated code
/// cannot name: converts `value`, whose type is the return type.
#[doc(hidden)]
pub fn convert<R, F>(form: F, value: R) -> Outcome
where
    R: Returns<F>,
    R::Outputs: Outputs,
    R::Error: ProcessError,
{
    returns::<R, F>(form).convert(value)
}
