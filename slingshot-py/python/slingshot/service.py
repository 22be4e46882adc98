"""The modern form of a Python service: ``@slingshot.microservice(name=..., sys_map=...)`` on a function whose parameters are matched by annotation or name and checked when the decorator runs."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import sys
import typing
from typing import Any, Callable, Optional, Sequence

from . import _native, _runtime, objects
from .typing import ReadFileFn, WriteFileFn

__all__ = ["microservice", "Service", "RequestContext"]


@dataclasses.dataclass(frozen=True)
class RequestContext:
    """Facts about the request being processed, for a ``context`` parameter."""

    #: The service processing the request.
    service: str
    #: The request ID.
    request: int
    #: 1 on the first try, 2 on the first retry, and so on.
    attempt: int
    #: Whether the broker delivered this message before.
    redelivered: bool
    #: An ID that follows the request through the pipeline (in the logs too).
    trace_id: str
    #: The runtime's side of :meth:`emit`.
    _emit: Optional[Callable[[str, str], None]] = dataclasses.field(default=None, repr=False, compare=False)

    def emit(self, event: str, data: str = "") -> None:
        """Emits the named event (``progress``, ``invalid-input``...) about
        this request, with optional text ``data`` (at most 4 KiB). Once
        ``process`` succeeded, it is published to the topic exchange the
        service's sys-map entry names under ``events``, with routing key
        ``<service>.<event>``; nothing is published if ``process`` fails.
        A name is 1 to 64 of a-z, 0-9, ``-`` and ``_``: another raises
        ``ValueError``."""
        if self._emit is None:
            raise RuntimeError("this context belongs to no request being processed: nothing can be emitted")
        self._emit(event, data)


#: What slingshot can pass, and the parameter names that ask for each.
_NAMES = {
    "request": ("request", "request_id", "id"),
    "read_file": ("read_file",),
    "write_file": ("write_file",),
    "connection": ("connection", "conn", "db"),
    "context": ("context", "ctx"),
}
_HOW = (
    "name it request, read_file, write_file, connection or context, or annotate it with "
    "int, slingshot.ReadFileFn, slingshot.WriteFileFn, sqlalchemy.Connection or slingshot.RequestContext, "
    "or with Annotated[Model, slingshot.Object(\"in\")] or Annotated[slingshot.ModelWriter[Model], "
    "slingshot.Object(\"out\")] for a typed object (a Pydantic v2 model)"
)
#: Return annotations that cannot be (id, case) pairs.
_NOT_OUTPUTS = (int, str, bytes, float, bool, dict)


def _role_by_annotation(annotation: Any) -> str | None:
    if annotation is inspect.Parameter.empty:
        return None
    if isinstance(annotation, str):
        # An annotation that could not be evaluated: go by its spelling.
        tail = annotation.rsplit(".", 1)[-1].strip()
        return {
            "int": "request",
            "ReadFileFn": "read_file",
            "WriteFileFn": "write_file",
            "Connection": "connection",
            "RequestContext": "context",
        }.get(tail)
    if annotation is int:
        return "request"
    if annotation is ReadFileFn:
        return "read_file"
    if annotation is WriteFileFn:
        return "write_file"
    if annotation is RequestContext:
        return "context"
    if isinstance(annotation, type) and annotation.__name__ == "Connection" and annotation.__module__.startswith("sqlalchemy"):
        return "connection"
    return None


def _role_by_name(name: str) -> str | None:
    for role, names in _NAMES.items():
        if name in names:
            return role
    return None


def _signature(function: Callable) -> inspect.Signature:
    try:
        return inspect.signature(function, eval_str=True)
    except (NameError, TypeError, SyntaxError):
        # Forward references that cannot be resolved yet: keep them as strings.
        return inspect.signature(function)


def _plan(function: Callable, where: str, typed: dict[str, objects.Typed] | None = None) -> dict[str, str]:
    """Maps each parameter of ``function`` to what slingshot passes, or
    raises ``TypeError`` saying how to fix the signature. A typed object's
    parameter maps to ``"object"``, and its :class:`objects.Typed` goes into
    ``typed``."""
    signature = _signature(function)
    plan: dict[str, str] = {}
    taken: dict[str, str] = {}
    references: dict[tuple[str, str], str] = {}
    typed = {} if typed is None else typed
    for parameter in signature.parameters.values():
        name = parameter.name
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            raise TypeError(f"{where}: `*{name}` cannot be filled: list the parameters process needs ({_HOW})")
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            raise TypeError(f"{where}: `**{name}` cannot be filled: list the parameters process needs ({_HOW})")
        if parameter.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise TypeError(f"{where}: parameter {name!r} is positional-only; slingshot passes parameters by name: remove the `/`")
        if name == "self" and not plan:
            raise TypeError(
                f"{where}: process is a method (its first parameter is `self`); decorate a plain function instead"
            )
        if isinstance(parameter.annotation, str) and "Object(" in parameter.annotation:
            raise TypeError(
                f"{where}: the annotation of parameter {name!r}, {parameter.annotation!r}, cannot be evaluated: "
                "a typed object's model and slingshot must be importable from the module's globals "
                "(define the model at module level)"
            )
        try:
            found = objects.object_of(parameter.annotation)
        except TypeError as e:
            raise TypeError(f"{where}: parameter {name!r}: {e}") from None
        if found is not None:
            if _role_by_name(name):
                raise TypeError(
                    f"{where}: parameter {name!r} is named like the {_role_by_name(name)} but annotated as a "
                    "typed object; rename it or fix its annotation"
                )
            both = (found.reference, found.direction)
            if both in references:
                raise TypeError(
                    f"{where}: parameters {references[both]!r} and {name!r} both {found.direction} "
                    f"object {found.reference!r}; keep one"
                )
            references[both] = name
            typed[name] = found
            plan[name] = "object"
            continue
        by_annotation = _role_by_annotation(parameter.annotation)
        by_name = _role_by_name(name)
        if by_annotation and by_name and by_annotation != by_name:
            raise TypeError(
                f"{where}: parameter {name!r} is named like the {by_name} but annotated as the {by_annotation}; "
                "rename it or fix its annotation"
            )
        role = by_annotation or by_name
        if role is None:
            if parameter.default is not inspect.Parameter.empty:
                continue  # has a default: left to it
            raise TypeError(f"{where}: slingshot cannot fill parameter {name!r}: {_HOW}")
        if role in taken:
            raise TypeError(f"{where}: parameters {taken[role]!r} and {name!r} both ask for the {role}; keep one")
        taken[role] = name
        plan[name] = role
    if "request" not in taken:
        raise TypeError(f"{where}: process must take the request ID: add a parameter `request: int`")
    returns = signature.return_annotation
    if returns in _NOT_OUTPUTS or typing.get_origin(returns) is dict:
        shown = returns.__name__ if isinstance(returns, type) else repr(returns)
        raise TypeError(
            f"{where}: process is annotated to return {shown}, but it must return or yield (id, case) pairs, "
            "e.g. `-> Iterator[tuple[int, bool]]` or `-> list[tuple[int, str]]`"
        )
    return plan


class Service:
    """A Python service registered with the slingshot runtime. Calling it
    calls the decorated function unchanged (for unit tests); ``main()`` runs
    the service's command line."""

    def __init__(
        self,
        function: Callable,
        name: str,
        sys_map: str,
        plan: dict[str, str],
        once: bool = False,
        typed: dict[str, objects.Typed] | None = None,
    ) -> None:
        self.function = function
        self.name = name
        self.sys_map = sys_map
        self.once = once
        self._plan = plan
        typed = dict(typed or {})
        self._typed = typed
        functools.update_wrapper(self, function)

        # What slingshot passes, by role, in the order `_runtime.call` gives it.
        slots = {"request": 0, "read_file": 1, "write_file": 2, "connection": 3, "context": 4}
        wanted = tuple((parameter, slots[role]) for parameter, role in plan.items() if role != "object")
        wants_context = "context" in plan.values()

        def adapter(request, read_file, write_file, connection, context):
            # Typed objects first: an invalid one fails the request before process runs.
            if typed:
                files = objects._current("Object")
                arguments = {parameter: o.argument(files, request) for parameter, o in typed.items()}
            else:
                arguments = {}
            given = (
                request,
                read_file,
                write_file,
                connection,
                RequestContext(
                    context.service, context.request, context.attempt, context.redelivered, context.trace_id, context.emit
                )
                if wants_context
                else None,
            )
            for parameter, slot in wanted:
                arguments[parameter] = given[slot]
            return function(**arguments)

        schemas = [(o.reference, o.direction, o.model.__name__, o.schema()) for o in typed.values()]
        _native.register(name, sys_map, adapter, _runtime.call, "connection" in plan.values(), once, schemas)

    def __call__(self, *args, **kwargs):
        return self.function(*args, **kwargs)

    def object_schemas(self) -> list[dict]:
        """The service's typed objects, as ``NAME schema`` prints them:
        ``[{"reference": "in", "direction": "read", "type": "Invoice",
        "schema": {...}}, ...]``, the JSON Schema of each model."""
        return json.loads(_native.object_schemas(self.name))

    def start(self, argv: Sequence[str] | None = None) -> None:
        """Runs the command line (``sys.argv`` unless ``argv`` is given; ``run``
        by default) and returns when the service stops. Raises
        ``RuntimeError`` if it fails."""
        code = self._main(argv)
        if code != 0:
            raise RuntimeError(f"service {self.name} failed (exit status {code}); its log says why")

    def main(self, argv: Sequence[str] | None = None) -> None:
        """Runs the command line and exits the interpreter with its status, like a Rust service's binary."""
        sys.exit(self._main(argv))

    def _main(self, argv: Sequence[str] | None) -> int:
        return _native.main(self.name, list(sys.argv[1:] if argv is None else argv))

    def __repr__(self) -> str:
        return f"<slingshot.Service {self.name!r} ({self.function.__qualname__})>"


def microservice(
    function: Callable | None = None, /, *, name: str | None = None, sys_map: str | None = None, once: bool = False
):
    """Makes ``function`` a slingshot service called ``name`` (its sys-map
    endpoint), wired by the sys-map at ``sys_map`` (``SLINGSHOT_SYS_MAP``
    overrides it)::

        @slingshot.microservice(name="shout", sys_map="sys-map.example.com")
        def process(request: int, read_file: ReadFileFn, write_file: WriteFileFn):
            text = read_file("in", request).read()
            write_file("out", request).write(text.upper())
            yield request, True

        if __name__ == "__main__":
            process.main()

    Parameters are matched by annotation or by name: ``request`` (``int``),
    ``read_file``, ``write_file``, ``connection`` (a pooled SQLAlchemy
    ``Connection``; what is not committed is rolled back) and ``context``
    (:class:`RequestContext`); and typed objects, by annotation only:
    ``invoice: Annotated[Invoice, slingshot.Object("in")]`` gets object
    ``request`` of ``in`` validated as the Pydantic v2 model ``Invoice``
    before ``process`` runs (an invalid one is dead-lettered at once, kind
    ``invalid-input``), and ``out: Annotated[slingshot.ModelWriter[Total],
    slingshot.Object("out")]`` a writer of ``Total`` models to ``out``
    (see :mod:`slingshot.objects`). ``process`` may be a plain function, a
    generator, ``async def`` or an async generator. Mistakes raise
    ``TypeError`` here, with how to fix them; a name the sys-map URL cannot
    carry (anything but letters, digits, ``-``, ``_`` and ``.``) raises
    ``ValueError``, as ``#[slingshot::microservice]`` refuses it.

    ``once=True`` runs the service in once mode (see the README's
    "Effectively-once stages"): the inbox record, ``process``'s writes on
    ``connection`` and the outbox rows commit together, by slingshot, so
    ``process`` must take a ``connection`` and must not commit or roll it
    back itself (``connection.begin_nested()`` is fine).
    """
    if function is not None:
        raise TypeError(
            "@slingshot.microservice needs its arguments: write "
            "@slingshot.microservice(name=\"my-service\", sys_map=\"sys-map.example.com\")"
        )
    if not isinstance(name, str):
        raise TypeError("@slingshot.microservice(name=...) must be a str: the service's endpoint in the sys-map")
    # The rule and the words of the Rust macro: a ValueError here, not at start().
    _native.check_service_name(name)
    if not isinstance(once, bool):
        raise TypeError("@slingshot.microservice(once=...) must be True or False")
    if not isinstance(sys_map, str) or not sys_map.strip():
        raise TypeError(
            "@slingshot.microservice(sys_map=...) must be a non-empty str: the sys-map's host "
            "(or file:PATH / http://... ; SLINGSHOT_SYS_MAP overrides it)"
        )

    def decorate(process: Callable) -> Service:
        if isinstance(process, Service):
            raise TypeError(f"@slingshot.microservice: {process.name!r} is already a service; apply the decorator once")
        if isinstance(process, (staticmethod, classmethod)):
            raise TypeError("@slingshot.microservice: decorate a plain function, not a static or class method")
        if isinstance(process, type) or not callable(process):
            raise TypeError(f"@slingshot.microservice decorates a function, not {type(process).__name__}")
        where = f"@slingshot.microservice on {getattr(process, '__qualname__', repr(process))}"
        typed: dict[str, objects.Typed] = {}
        plan = _plan(process, where, typed)
        if once and "connection" not in plan.values():
            raise TypeError(
                f"{where}: once=True needs a database: the inbox, the outbox and process's writes commit in "
                "one transaction; add a connection parameter (connection: sqlalchemy.Connection)"
            )
        return Service(process, name, sys_map, plan, once, typed)

    return decorate
