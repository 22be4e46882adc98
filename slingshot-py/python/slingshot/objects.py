"""Typed objects: JSON documents read and validated as Pydantic v2 models.

A ``process`` parameter annotated ``Annotated[Model, slingshot.Object("in")]``
gets object ``request`` of the bucket behind ``in``, validated as ``Model``
before ``process`` runs; :func:`read_model` and :func:`write_model` do the
same inside ``process`` for any key and ID::

    from typing import Annotated
    import pydantic, slingshot

    class Invoice(pydantic.BaseModel):
        customer: str
        lines: list[Line]

    @slingshot.microservice(name="billing", sys_map="sys-map.example.com")
    def process(request: int, invoice: Annotated[Invoice, slingshot.Object("in")]):
        slingshot.write_model("out", request, Total(amount=sum(l.amount for l in invoice.lines)))
        yield request, True

A document that is not JSON, or not a valid ``Model``, raises
:class:`slingshot.InvalidInput`: the request is dead-lettered at once (failure
kind ``invalid-input``, never retried), with a message naming the object, the
model, the offending field's path (``lines[2].amount``) and Pydantic's words.
A parameter ``Annotated[slingshot.ModelWriter[Total], slingshot.Object("out")]``
gets a :class:`ModelWriter` that writes ``Total`` models to ``out``. Each
parameter's model's JSON Schema is registered with the service, read or
written (the AsyncAPI document and ``NAME schema`` show it).

Pydantic is imported only when a model is used: ``pip install 'pydantic>=2'``.
"""

from __future__ import annotations

import contextvars
import dataclasses
import json
import typing
from typing import Any, Generic, TypeVar

from . import _native

__all__ = ["Object", "ModelWriter", "InvalidInput", "read_model", "write_model"]

InvalidInput = _native.InvalidInput

M = TypeVar("M")

#: The ``_native.Files`` of the request being processed (set by ``_runtime.call``).
_files: contextvars.ContextVar[Any] = contextvars.ContextVar("slingshot_files", default=None)

#: At most this many further errors are named after the first one.
_MORE = 3


@dataclasses.dataclass(frozen=True)
class Object:
    """Marks a ``process`` parameter as the typed object ``request`` of the
    bucket behind ``reference``: ``invoice: Annotated[Invoice,
    slingshot.Object("in")]``, where ``Invoice`` is a Pydantic v2 model."""

    #: The bucket reference (``"in"``), as ``read_file`` takes it.
    reference: str

    def __post_init__(self) -> None:
        if not isinstance(self.reference, str) or not self.reference:
            raise TypeError(
                f"slingshot.Object(reference): reference must be a non-empty str bucket reference such as 'in', "
                f"not {self.reference!r}"
            )


class ModelWriter(Generic[M]):
    """What a parameter ``Annotated[slingshot.ModelWriter[Total],
    slingshot.Object("out")]`` gets: :meth:`write` stages a ``Total`` as
    JSON for object ``request`` (or another ID) of the bucket behind
    ``out``, uploaded when ``process`` succeeds. ``Total``'s JSON Schema is
    registered as an object the service writes. Works only while
    ``process`` runs."""

    def __init__(self, files, model: type[M], reference: str, request: int) -> None:
        self._files = files
        #: The Pydantic model written.
        self.model = model
        #: The bucket reference written to.
        self.reference = reference
        self._request = request

    def write(self, value: M, id: int | None = None) -> int:
        """Writes ``value``, a ``model``, as object ``id`` (the request's ID
        unless given); answers the number of bytes written. ``TypeError``
        for a value of another type."""
        if not isinstance(value, self.model):
            raise TypeError(
                f"ModelWriter[{self.model.__name__}] for {self.reference!r} writes {self.model.__name__}, "
                f"not {type(value).__name__}"
            )
        id = self._request if id is None else id
        _check(f"ModelWriter[{self.model.__name__}].write(value, id)", self.reference, id)
        return write(self._files, self.reference, id, value)

    def __repr__(self) -> str:
        return f"<slingshot.ModelWriter[{self.model.__name__}] {self.reference}/{self._request}>"


@dataclasses.dataclass(frozen=True)
class Typed:
    """A typed-object parameter: the bucket reference, the model, and
    whether ``process`` reads it (the model's instance is passed) or writes
    it (a :class:`ModelWriter` is)."""

    reference: str
    model: type
    direction: str  # "read" or "write"

    def schema(self) -> str:
        """The model's JSON Schema as JSON text: of what validates (read) or what is written (write)."""
        mode = "validation" if self.direction == "read" else "serialization"
        return json.dumps(self.model.model_json_schema(mode=mode))

    def argument(self, files, request: int) -> Any:
        """What the parameter gets for ``request``."""
        if self.direction == "read":
            return read(files, self.model, self.reference, request)
        return ModelWriter(files, self.model, self.reference, request)


def pydantic():
    """The ``pydantic`` module (v2), imported now; ``ImportError`` saying what to install otherwise."""
    try:
        import pydantic as module
    except ImportError:
        raise ImportError(
            "slingshot's typed objects (slingshot.Object, read_model, write_model) validate with Pydantic v2, "
            "which is not installed: pip install 'pydantic>=2'"
        ) from None
    if not module.VERSION.startswith("2."):
        raise ImportError(
            f"slingshot's typed objects need Pydantic v2, and pydantic {module.VERSION} is installed: "
            "pip install 'pydantic>=2,<3'"
        )
    return module


def object_of(annotation: Any) -> Typed | None:
    """The typed object of an annotation ``Annotated[Model,
    Object(reference)]`` (read) or ``Annotated[ModelWriter[Model],
    Object(reference)]`` (written), ``None`` for another annotation;
    ``TypeError`` (or ``ImportError`` without Pydantic) for a
    ``slingshot.Object`` on what is not a Pydantic v2 model."""
    if typing.get_origin(annotation) is not typing.Annotated:
        return None
    model, *metadata = typing.get_args(annotation)
    marks = [m for m in metadata if isinstance(m, Object)]
    if not marks:
        return None
    if len(marks) > 1:
        raise TypeError(f"{_show(annotation)} has {len(marks)} slingshot.Object marks: keep one")
    direction = "read"
    if model is ModelWriter:
        raise TypeError(
            f"slingshot.Object({marks[0].reference!r}) annotates ModelWriter without its model: "
            "write ModelWriter[Model]"
        )
    if typing.get_origin(model) is ModelWriter:
        (model,) = typing.get_args(model)
        direction = "write"
    check_model(model, f"slingshot.Object({marks[0].reference!r})")
    return Typed(marks[0].reference, model, direction)


def check_model(model: Any, where: str) -> None:
    """``TypeError`` unless ``model`` is a Pydantic v2 model class."""
    base = pydantic().BaseModel
    if not (isinstance(model, type) and issubclass(model, base)):
        shown = model.__name__ if isinstance(model, type) else repr(model)
        raise TypeError(
            f"{where} annotates {shown}, which is not a Pydantic v2 model: "
            "annotate a subclass of pydantic.BaseModel (pydantic.RootModel for a list or a scalar)"
        )


def _show(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or repr(annotation)


def path(loc: tuple) -> str:
    """Pydantic's ``loc`` as a path: ``("lines", 2, "amount")`` is
    ``lines[2].amount``; the empty ``loc`` (the document itself) is ``.``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "."


def _current(what: str):
    files = _files.get()
    if files is None:
        raise RuntimeError(f"slingshot.{what} works only while process runs, for the request being processed")
    return files


def _check(what: str, key: Any, id: Any) -> None:
    if not isinstance(key, str):
        raise TypeError(f"{what}: key must be a str bucket reference such as 'in', not {type(key).__name__}")
    if isinstance(id, bool) or not isinstance(id, int) or not 0 <= id < 2**64:
        raise TypeError(f"{what}: id must be an int request ID in 0..2**64-1, not {id!r}")


def read(files, model: type[M], key: str, id: int) -> M:
    """Object ``id`` of the bucket behind ``key``, validated as ``model``
    from its bytes (no text decoding, no intermediate buffers)."""
    ValidationError = pydantic().ValidationError
    reader = files.open_read(key, id)
    try:
        data = reader.read(-1)
    finally:
        reader.close()
    try:
        return model.model_validate_json(data)
    except ValidationError as e:
        errors = e.errors(include_url=False, include_input=False)
        first = errors[0]
        message = first["msg"]
        if len(errors) > 1:
            more = ", ".join(path(error["loc"]) for error in errors[1:1 + _MORE])
            etc = ", …" if len(errors) > 1 + _MORE else ""
            message += f"; {len(errors) - 1} more error{'s' if len(errors) > 2 else ''} at {more}{etc}"
        # Pydantic's own error follows in the logged traceback, every error of it.
        raise reader.invalid(model.__name__, path(first["loc"]), message) from e


def read_model(model: type[M], key: str, id: int) -> M:
    """Reads object ``id`` of the bucket behind reference ``key`` and
    validates it as the Pydantic v2 model ``model`` (``model_validate_json``,
    straight from the object's bytes). Only inside ``process``.

    Raises :class:`slingshot.InvalidInput` (the request is dead-lettered at
    once, kind ``invalid-input``) if the object is not JSON or not a valid
    ``model``: its message names the object, the model, the path of the
    offending field and what is wrong there. A missing object raises
    :class:`slingshot.ObjectNotFound`, as ``read_file`` does."""
    _check("read_model(model, key, id)", key, id)
    check_model(model, "read_model(model, key, id)")
    return read(_current("read_model"), model, key, id)


def write_model(key: str, id: int, model: Any) -> int:
    """Writes ``model`` (a Pydantic v2 model instance) as JSON to object
    ``id`` of the bucket behind reference ``key``: staged, and uploaded when
    ``process`` succeeds, as ``write_file``'s objects are. Answers the
    number of bytes written. Only inside ``process``."""
    _check("write_model(key, id, model)", key, id)
    check_model(type(model), "write_model(key, id, model)")
    return write(_current("write_model"), key, id, model)


def write(files, key: str, id: int, model: Any) -> int:
    """Stages ``model`` as JSON for object ``id`` of the bucket behind ``key``."""
    # The model's own serializer gives bytes: no str in between.
    data = type(model).__pydantic_serializer__.to_json(model)
    writer = files.open_write(key, id)
    try:
        return writer.write(data)
    finally:
        writer.close()
