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
A parameter's model's JSON Schema is registered with the service (the AsyncAPI
document and ``NAME schema`` show it).

Pydantic is imported only when a model is used: ``pip install 'pydantic>=2'``.
"""

from __future__ import annotations

import contextvars
import dataclasses
import json
import typing
from typing import Any, TypeVar

from . import _native

__all__ = ["Object", "InvalidInput", "read_model", "write_model"]

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


def object_of(annotation: Any) -> tuple[str, type] | None:
    """``(reference, model)`` of an annotation ``Annotated[Model, Object(reference)]``,
    ``None`` for another annotation; ``TypeError`` (or ``ImportError``
    without Pydantic) for a ``slingshot.Object`` on what is not a Pydantic v2 model."""
    if typing.get_origin(annotation) is not typing.Annotated:
        return None
    model, *metadata = typing.get_args(annotation)
    marks = [m for m in metadata if isinstance(m, Object)]
    if not marks:
        return None
    if len(marks) > 1:
        raise TypeError(f"{_show(annotation)} has {len(marks)} slingshot.Object marks: keep one")
    check_model(model, f"slingshot.Object({marks[0].reference!r})")
    return marks[0].reference, model


def check_model(model: Any, where: str) -> None:
    """``TypeError`` unless ``model`` is a Pydantic v2 model class."""
    base = pydantic().BaseModel
    if not (isinstance(model, type) and issubclass(model, base)):
        shown = model.__name__ if isinstance(model, type) else repr(model)
        raise TypeError(
            f"{where} annotates {shown}, which is not a Pydantic v2 model: "
            "annotate a subclass of pydantic.BaseModel (pydantic.RootModel for a list or a scalar)"
        )


def schema_of(model: type) -> str:
    """``model``'s JSON Schema (for validation), as JSON text."""
    return json.dumps(model.model_json_schema())


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
    files = _current("write_model")
    # The model's own serializer gives bytes: no str in between.
    data = type(model).__pydantic_serializer__.to_json(model)
    writer = files.open_write(key, id)
    try:
        return writer.write(data)
    finally:
        writer.close()
