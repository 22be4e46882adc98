"""slingshot for Python: queue-driven pipeline microservices on the slingshot runtime.

One function, decorated, becomes a service that consumes request IDs from
RabbitMQ, reads and writes S3 objects, uses a pooled PostgreSQL connection and
routes its outputs by case — with the delivery guarantees, retries, dead
letters, ops endpoint and command line of Rust services::

    import slingshot

    @slingshot.microservice(name="shout", sys_map="sys-map.example.com")
    def process(request: int, read_file: slingshot.ReadFileFn, write_file: slingshot.WriteFileFn):
        text = read_file("in", request).read()
        write_file("out", request).write(text.upper())
        yield request, len(text) > 100

    if __name__ == "__main__":
        process.main()

The original API, ``slingshot_microservice.Microservice(name, sys_map,
process).start()``, runs on the same runtime.

JSON objects can be read as Pydantic v2 models, validated before
``process`` runs (see :mod:`slingshot.objects`)::

    @slingshot.microservice(name="billing", sys_map="sys-map.example.com")
    def process(request: int, invoice: Annotated[Invoice, slingshot.Object("in")]):
        slingshot.write_model("out", request, Total(amount=invoice.total()))
        yield request, True

Services are called like functions with :class:`Client` (see
:mod:`slingshot.client`)::

    with slingshot.Client("sys-map.example.com") as client:
        outcome = client.call("shout", 7, timeout=10)   # {"status": "done", "routes": [...], ...}
"""

from ._native import InvalidInput, ObjectNotFound, StorageError
from ._runtime import FailureKind
from .client import (
    CallError,
    Client,
    NeverPickedUp,
    Outcome,
    PipelineOutcome,
    RepliesLost,
    StillRunning,
    Submission,
    Unfinished,
)
from .files import ObjectReader, WriteHandle
from .objects import ModelWriter, Object, read_model, write_model
from .service import RequestContext, Service, microservice
from .typing import CaseVariable, ReadFileFn, WriteFileFn


def __getattr__(name: str):
    # ``ProcessFn`` imports SQLAlchemy: only when asked for (see slingshot.typing).
    if name == "ProcessFn":
        from . import typing

        return typing.ProcessFn
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "microservice",
    "Service",
    "RequestContext",
    "ReadFileFn",
    "WriteFileFn",
    "ProcessFn",
    "CaseVariable",
    "ObjectReader",
    "WriteHandle",
    "StorageError",
    "ObjectNotFound",
    "InvalidInput",
    "Object",
    "ModelWriter",
    "read_model",
    "write_model",
    "FailureKind",
    "Client",
    "Submission",
    "Outcome",
    "PipelineOutcome",
    "CallError",
    "NeverPickedUp",
    "StillRunning",
    "Unfinished",
    "RepliesLost",
]
