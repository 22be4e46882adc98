"""A harness for unit-testing a Python service with pytest, as ``slingshot::testing::Harness`` does for Rust: objects in, ``invoke(id)``, then outputs, routes and written objects out."""

from __future__ import annotations

from typing import Union

from . import _native
from ._runtime import FailureKind
from .service import Service

__all__ = ["Harness", "Invocation", "ProcessFailed", "FailureKind"]

#: What one ``invoke`` did: ``outputs``, the ``(id, case)`` pairs ``process``
#: produced; ``routes``, the ``(queue, id)`` they route to (nothing is sent);
#: ``unrouted``, the outputs whose case has no route; ``written``, the
#: ``(bucket, key, size)`` of every object uploaded.
Invocation = _native.Invocation


class ProcessFailed(Exception):
    """``process`` failed; ``kind`` (a :class:`FailureKind`) is what the
    dead-letter headers would say (``process-error``, ``storage``,
    ``database``…), ``transient`` whether an outside system failed rather
    than the request."""

    def __init__(self, kind: Union[FailureKind, str], message: str, transient: bool) -> None:
        kind = FailureKind(kind)
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message
        self.transient = transient


class Harness:
    """A temporary object store (a directory), a SQLite database and the
    routes you give, for one service::

        harness = Harness(process).route(True, ["loud"]).object("in", 7, b"hi")
        run = harness.invoke(7)
        assert run.routes == [("loud", 7)]
        assert harness.read("out", 7) == b"HI"

    A bucket reference ``r`` maps to bucket ``test-r`` unless
    :meth:`bucket` says otherwise.
    """

    def __init__(self, service: Union[Service, str]) -> None:
        name = service.name if isinstance(service, Service) else service
        self._native = _native.Harness(name)

    def route(self, case: Union[bool, int, str], queues: list[str]) -> "Harness":
        """Routes outputs with ``case`` to ``queues``."""
        self._native.route(case, list(queues))
        return self

    def bucket(self, reference: str, bucket: str) -> "Harness":
        """Maps bucket reference ``reference`` to ``bucket``."""
        self._native.bucket(reference, bucket)
        return self

    def object(self, reference: str, id: int, content: Union[bytes, str]) -> "Harness":
        """Stores ``content`` as object ``id`` of the bucket behind ``reference``."""
        if isinstance(content, str):
            content = content.encode("utf-8")
        self._native.object(reference, id, bytes(content))
        return self

    def read(self, reference: str, id: int) -> Union[bytes, None]:
        """The bytes of object ``id`` behind ``reference``, or ``None``."""
        data = self._native.read(reference, id)
        return None if data is None else bytes(data)

    @property
    def database_path(self) -> str:
        """The SQLite file behind ``connection``, to prepare or inspect."""
        return self._native.database_path()

    def invoke(self, id: int) -> Invocation:
        """Runs ``process`` for ``id`` as the service would (files uploaded on
        success, nothing sent). Raises :class:`ProcessFailed` if it fails."""
        answer = self._native.invoke(id)
        if isinstance(answer, _native.Failed):
            raise ProcessFailed(answer.kind, answer.message, answer.transient)
        return answer
